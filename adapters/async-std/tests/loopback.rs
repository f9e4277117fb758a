//! End-to-end tests over real loopback TCP and QUIC, each bounded in time: async-std on its own,
//! and async-std and tokio peers in one swarm. Cross-runtime tests run in a tokio test; their
//! async-std peers run on async-std's global executor beside it.

use tierswarm_async_std::AsyncStd;
use tierswarm_testkit::{bounded, Host, Net, LIMIT};
use tierswarm_tokio::Tokio;

fn async_std(net: fn(tierswarm_testkit::MakeTransports) -> Net) -> Host {
    Host::on::<AsyncStd>(&net(tierswarm_async_std::transports))
}

fn tokio(net: fn(tierswarm_testkit::MakeTransports) -> Net) -> Host {
    Host::on::<Tokio>(&net(tierswarm_tokio::transports))
}

/// One test per transport: a seeder on one runtime serves a leecher on the other.
macro_rules! across_runtimes {
    ($($name:ident: $seeder:ident -> $leecher:ident;)*) => {$(
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn tcp() {
                let (s, l) = ($seeder(Net::tcp), $leecher(Net::tcp));
                let test = tierswarm_testkit::verified_fetch(&s, &l);
                tokio::time::timeout(LIMIT, test).await.unwrap();
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn quic() {
                let (s, l) = ($seeder(Net::quic), $leecher(Net::quic));
                let test = tierswarm_testkit::verified_fetch(&s, &l);
                tokio::time::timeout(LIMIT, test).await.unwrap();
            }
        }
    )*};
}

across_runtimes! {
    async_std_seeder_serves_tokio_leecher: async_std -> tokio;
    tokio_seeder_serves_async_std_leecher: tokio -> async_std;
}

#[test]
fn async_std_recorded_sessions_replay_identically() {
    let h = async_std(Net::tcp);
    async_std::task::block_on(bounded::<AsyncStd, _>(
        tierswarm_testkit::recorded_sessions_replay_identically(&h),
    ));
}

#[test]
fn async_std_killed_fetch_resumes_without_refetching_verified_units() {
    for h in [async_std(Net::tcp), async_std(Net::quic)] {
        async_std::task::block_on(bounded::<AsyncStd, _>(
            tierswarm_testkit::killed_fetch_resumes_without_refetching_verified_units(&h),
        ));
    }
}

#[test]
fn async_std_corrupt_peer_is_dropped_and_download_completes() {
    let h = async_std(Net::quic);
    async_std::task::block_on(bounded::<AsyncStd, _>(
        tierswarm_testkit::corrupt_peer_is_dropped_and_download_completes(&h),
    ));
}

#[test]
fn async_std_units_verified_on_the_loop() {
    let h = async_std(Net::tcp);
    async_std::task::block_on(bounded::<AsyncStd, _>(
        tierswarm_testkit::units_verified_on_the_loop(&h),
    ));
}

/// A slow async-std seeder and six leechers alternating tokio and async-std, and TCP and QUIC:
/// every leecher trades with peers on both runtimes and both transports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_swarm_of_seven_completes_and_every_output_verifies() {
    let leechers = [
        tokio(Net::tcp),
        async_std(Net::tcp),
        tokio(Net::quic),
        async_std(Net::quic),
        tokio(Net::tcp),
        async_std(Net::quic),
    ];
    let seeder = async_std(Net::tcp);
    let test = tierswarm_testkit::swarm_completes(&seeder, &leechers);
    tokio::time::timeout(LIMIT, test).await.unwrap();
}
