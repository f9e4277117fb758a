//! `tierswarm demo`: one seeder and N leechers of a generated file on loopback.

use std::time::{Duration, Instant};

use clap::ValueEnum;
use indicatif::MultiProgress;
use tierswarm::{root_to_hex, Cancel, Event, Node, Outcome, PeerUrl, Transfer};
use tierswarm_io::data_file::write_pseudo_random;

use crate::view::{bytes_bar, format_duration, format_rate, format_size, spinner};
use crate::{Failure, Result, Runtime};

/// How the demo's peers connect.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum Transport {
    /// TCP.
    #[default]
    Tcp,
    /// QUIC.
    Quic,
    /// The seeder listens on both; leechers listen on TCP and QUIC in turn.
    Mixed,
}

impl Transport {
    /// The schemes peer `i` listens on (the seeder is peer 0).
    fn schemes(self, i: usize) -> &'static [&'static str] {
        match self {
            Transport::Tcp => &["tcp"],
            Transport::Quic => &["quic"],
            Transport::Mixed if i == 0 => &["tcp", "quic"],
            Transport::Mixed if i % 2 == 1 => &["tcp"],
            Transport::Mixed => &["quic"],
        }
    }
}

/// Demo peer `i` on `rt`, listening on loopback over `transport`'s schemes for peer `i`.
fn node(rt: tierswarm::Runtime, transport: Transport, i: usize) -> Node {
    transport
        .schemes(i)
        .iter()
        .fold(Node::new().runtime(rt), |n, s| {
            n.listen(format!("{s}://127.0.0.1:0"))
        })
}

/// Runs the demo with peers on `runtime` (`Mixed`: the seeder on tokio, then the leechers on
/// async-std, smol, tokio, ...) connected by `transport` (`Mixed`: leechers dial the seeder
/// over the transport they listen on, and every earlier leecher at its URL, so each has peers
/// of both kinds). Leechers keep serving once complete, until every one is.
pub(crate) fn run(runtime: Runtime, transport: Transport, n: usize, size: u64) -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Failure::failed(format!("temp dir: {e}")))?;
    let src = dir.path().join("demo.bin");
    let io = |e: std::io::Error| Failure::failed(e.to_string());
    let pb = spinner(format!(
        "generating and hashing a {} file",
        format_size(size)
    ));
    write_pseudo_random(&src, size, 0x2545_f491_4f6c_dd1d).map_err(io)?;
    let seeder = node(runtime.of_peer(0), transport, 0).share(&src)?;
    pb.finish_and_clear();
    let manifest = seeder.manifest().clone();
    let seed_urls: Vec<PeerUrl> = seeder.listening().to_vec();
    let on = match runtime {
        Runtime::Mixed => "tokio, async-std and smol in turn".to_string(),
        r => r.of_peer(0).to_string(),
    };
    let over = match transport {
        Transport::Mixed => "TCP and QUIC".to_string(),
        t => format!("{t:?}").to_uppercase(),
    };
    eprintln!(
        "demo: 1 seeder + {n} leechers on loopback ({on}, over {over}), {} file, root {}",
        format_size(size),
        root_to_hex(&manifest.root)
    );
    let bars = MultiProgress::new();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<std::result::Result<usize, String>>();
    let mut urls: Vec<PeerUrl> = Vec::new();
    let mut watchers = Vec::new();
    let mut cancels = Vec::new();
    let started = Instant::now();
    for i in 0..n {
        let out = dir.path().join(format!("leecher{i}.bin"));
        let rt = runtime.of_peer(i + 1);
        let mut leecher = node(rt, transport, i + 1).keep_serving(true);
        let own_scheme = transport.schemes(i + 1)[0];
        for u in seed_urls
            .iter()
            .filter(|u| u.scheme() == own_scheme)
            .chain(&urls)
        {
            leecher = leecher.peer(u.to_string());
        }
        let mut transfer = leecher.fetch(&manifest, &out)?;
        let own = transfer.listening()[0].clone();
        urls.push(own.clone());
        let label = format!("leecher {i} {rt} {}", own.scheme());
        let pb = bars.add(bytes_bar(size).with_message(label));
        let done = done_tx.clone();
        cancels.push(transfer.canceller());
        // Each leecher's events on a thread of its own; the thread hands the transfer back.
        watchers.push(std::thread::spawn(move || {
            while let Some(e) = transfer.next_event() {
                match e {
                    Event::Progress { bytes, .. } => pb.set_position(bytes),
                    Event::Complete => {
                        pb.finish();
                        let _ = done.send(Ok(i));
                    }
                    Event::Done(r) => {
                        if let Outcome::Failed(reason) = &r.outcome {
                            let _ = done.send(Err(reason.clone()));
                        }
                    }
                    _ => {}
                }
            }
            transfer
        }));
    }
    drop(done_tx);
    let limit = Duration::from_secs(120) + Duration::from_secs(size / (20 << 20));
    let mut finished = 0;
    let mut times = Vec::new();
    while finished < n {
        match done_rx.recv_timeout(limit.saturating_sub(started.elapsed())) {
            Ok(Ok(_)) => {
                finished += 1;
                times.push(started.elapsed());
            }
            Ok(Err(r)) => return Err(Failure::failed(r)),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Failure::failed("a leecher stopped early"))
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                return Err(Failure::failed(format!(
                    "only {finished} of {n} leechers finished within {}",
                    format_duration(limit.as_secs_f64())
                )))
            }
        }
    }
    let elapsed = started.elapsed();
    // Leechers serve each other until every one is done; then all drain, and their event
    // threads end with their streams.
    cancels.iter().for_each(Cancel::drain);
    let leechers: Vec<Transfer> = watchers
        .into_iter()
        .map(|w| {
            w.join()
                .map_err(|_| Failure::failed("a leecher's event thread panicked"))
        })
        .collect::<Result<_>>()?;
    seeder.drain();
    let mut served = Vec::new();
    for t in leechers {
        let report = t.wait()?;
        if let Outcome::Failed(r) = report.outcome {
            return Err(Failure::failed(r));
        }
        served.push(report.stats.units_served);
    }
    let seeder_units = seeder.wait()?.stats.units_served;
    bars.clear().ok();
    // Every output against the root.
    for i in 0..n {
        let out = dir.path().join(format!("leecher{i}.bin"));
        if tierswarm::content_root(&out)? != manifest.root {
            return Err(Failure::failed(format!(
                "leecher {i}'s output does not match the root"
            )));
        }
    }
    let total = size.saturating_mul(n as u64);
    let leecher_units: u64 = served.iter().sum();
    println!(
        "demo: {n} leechers fetched {} each ({} in all) in {} — {} aggregate",
        format_size(total / n as u64),
        format_size(total),
        format_duration(elapsed.as_secs_f64()),
        format_rate((total as f64 / elapsed.as_secs_f64().max(1e-6)) as u64)
    );
    println!(
        "      first done after {}, last after {}; units served: seeder {seeder_units}, leechers {leecher_units} ({:?})",
        format_duration(times[0].as_secs_f64()),
        format_duration(elapsed.as_secs_f64()),
        served
    );
    println!(
        "      all {n} outputs match root {}",
        root_to_hex(&manifest.root)
    );
    Ok(())
}
