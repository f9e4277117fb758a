//! End-to-end tests over real loopback TCP, each bounded in time: async-std on its own, and
//! async-std and tokio peers in one swarm. Cross-runtime tests run in a tokio test; their
//! async-std peers run on async-std's global executor beside it.

use futures::StreamExt;
use tierswarm_async_std::AsyncStd;
use tierswarm_io::driver::Runtime;
use tierswarm_io::driver::{Outcome, Resume};
use tierswarm_io::{hash_file_root, Session, SessionEvent};
use tierswarm_testkit::{
    bounded, fetch, listener, make_file, opts, same_bytes, seed, serve_with, Serving, LIMIT,
};
use tierswarm_tokio::Tokio;

const MIB: u64 = 1 << 20;

/// A seeder on `S` serves a leecher on `L`; the copy is identical, and a second fetch of the
/// complete file asks nothing.
async fn seeder_serves_leecher<S: Runtime, L: Runtime>() {
    let dir = tempfile::tempdir().unwrap();
    let src = make_file(dir.path(), "src.bin", 3 * MIB + 12345, 1);
    let (seeder, manifest) = seed::<S>(&src, opts("seed", 1));
    let out = dir.path().join("out.bin");
    let (leecher, outcome, notes) =
        fetch::<L>(&manifest, &out, vec![seeder.addr], opts("l", 2)).await;
    assert_eq!(outcome, Outcome::Complete);
    assert_eq!(notes.units, 0);
    assert!(same_bytes(&src, &out));
    assert_eq!(leecher.stats().failed_units, 0);
    assert_eq!(leecher.requested_units().count_ones(), 49);
    let (again, outcome, notes) =
        fetch::<L>(&manifest, &out, vec![seeder.addr], opts("l2", 3)).await;
    assert_eq!(outcome, Outcome::Complete);
    assert_eq!(notes.units, 49);
    assert_eq!(again.requested_units().count_ones(), 0);
    let (s, outcome) = seeder.stop().await;
    assert_eq!(outcome, Outcome::Drained);
    assert!(s.stats().units_served >= 49);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_std_seeder_serves_tokio_leecher() {
    tokio::time::timeout(LIMIT, seeder_serves_leecher::<AsyncStd, Tokio>())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_seeder_serves_async_std_leecher() {
    tokio::time::timeout(LIMIT, seeder_serves_leecher::<Tokio, AsyncStd>())
        .await
        .unwrap();
}

#[test]
fn async_std_recorded_sessions_replay_identically() {
    async_std::task::block_on(bounded::<AsyncStd, _>(
        tierswarm_testkit::recorded_sessions_replay_identically::<AsyncStd>(),
    ));
}

#[test]
fn async_std_killed_fetch_resumes_without_refetching_verified_units() {
    async_std::task::block_on(bounded::<AsyncStd, _>(
        tierswarm_testkit::killed_fetch_resumes_without_refetching_verified_units::<AsyncStd>(),
    ));
}

/// Starts leecher `i` of the mixed swarm on `R`, dialling `peers`.
fn start<R: Runtime>(
    s: Session,
    l: std::net::TcpListener,
    peers: Vec<std::net::SocketAddr>,
    i: usize,
    done: futures::channel::mpsc::UnboundedSender<usize>,
) -> Serving {
    serve_with::<R>(s, l, peers, move |e| {
        if *e == SessionEvent::Complete {
            let _ = done.unbounded_send(i);
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_swarm_of_seven_completes_and_every_output_verifies() {
    tokio::time::timeout(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let src = make_file(dir.path(), "src.bin", 6 * MIB + 4321, 9);
        // A slow seeder (one upload slot) on async-std leaves room for the leechers to trade.
        let mut seed_opts = opts("seed", 30);
        seed_opts.limits.upload_slots = 1;
        seed_opts.limits.upload_slots_per_peer = 1;
        let (seeder, manifest) = seed::<AsyncStd>(&src, seed_opts);
        const N: usize = 6;
        let listeners: Vec<_> = (0..N).map(|_| listener()).collect();
        let addrs: Vec<_> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        let (done_tx, mut done_rx) = futures::channel::mpsc::unbounded();
        let mut peers = Vec::new();
        for (i, l) in listeners.into_iter().enumerate() {
            let out = dir.path().join(format!("out{i}.bin"));
            let o = opts(&format!("l{i}"), 40 + i as u64);
            let (s, _) = Session::leecher(&manifest, &out, Resume::Check, o).unwrap();
            let mut dial = vec![seeder.addr];
            dial.extend(&addrs[..i]);
            // Leechers alternate: tokio, async-std, tokio, ...
            peers.push(if i % 2 == 0 {
                start::<Tokio>(s, l, dial, i, done_tx.clone())
            } else {
                start::<AsyncStd>(s, l, dial, i, done_tx.clone())
            });
        }
        let mut finished = [false; N];
        for _ in 0..N {
            finished[done_rx.next().await.unwrap()] = true;
        }
        assert!(finished.iter().all(|f| *f));
        let mut leechers_served = 0;
        for (i, p) in peers.into_iter().enumerate() {
            let (s, outcome) = p.stop().await;
            assert_eq!(outcome, Outcome::Drained);
            assert!(s.is_complete());
            assert_eq!(s.stats().failed_units, 0);
            leechers_served += s.stats().units_served;
            let f = std::fs::File::open(dir.path().join(format!("out{i}.bin"))).unwrap();
            let root = hash_file_root(std::io::BufReader::new(f)).unwrap();
            assert_eq!(root, manifest.root, "leecher {i}'s output does not verify");
        }
        assert!(leechers_served > 0, "leechers never served each other");
        seeder.stop().await;
    })
    .await
    .unwrap();
}
