//! End-to-end tests of the smol glue over real loopback TCP and QUIC, each bounded in time: on
//! smol alone (driven by `smol::block_on`), and beside tokio peers.

use tierswarm_smol::Smol;
use tierswarm_testkit::{bounded, Host, Net, LIMIT};
use tierswarm_tokio::Tokio;

fn smol_host(net: fn(tierswarm_testkit::MakeTransports) -> Net) -> Host {
    Host::on::<Smol>(&net(tierswarm_smol::transports))
}

#[test]
fn smol_verified_fetch_over_tcp_and_quic() {
    for h in [smol_host(Net::tcp), smol_host(Net::quic)] {
        smol::block_on(bounded::<Smol, _>(tierswarm_testkit::verified_fetch(
            &h, &h,
        )));
    }
}

#[test]
fn smol_transports_keep_their_promises() {
    smol::block_on(bounded::<Smol, _>(async {
        let t = tierswarm_smol::transports;
        tierswarm_testkit::transport_keeps_its_promises(&Net::tcp(t), false).await;
        tierswarm_testkit::transport_keeps_its_promises(&Net::quic(t), true).await;
    }));
}

#[test]
fn smol_killed_fetch_resumes_without_refetching_verified_units() {
    let h = smol_host(Net::tcp);
    smol::block_on(bounded::<Smol, _>(
        tierswarm_testkit::killed_fetch_resumes_without_refetching_verified_units(&h),
    ));
}

#[test]
fn smol_in_memory_transport_fetch() {
    let h = Host::on::<Smol>(&Net::mem());
    smol::block_on(bounded::<Smol, _>(tierswarm_testkit::verified_fetch(
        &h, &h,
    )));
}

/// smol and tokio peers serve each other, over TCP and over QUIC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smol_and_tokio_serve_each_other() {
    tokio::time::timeout(LIMIT, async {
        for net in [Net::tcp as fn(_) -> Net, Net::quic] {
            let smol = smol_host(net);
            let tokio = Host::on::<Tokio>(&net(tierswarm_tokio::transports));
            tierswarm_testkit::verified_fetch(&smol, &tokio).await;
            tierswarm_testkit::verified_fetch(&tokio, &smol).await;
        }
    })
    .await
    .unwrap();
}
