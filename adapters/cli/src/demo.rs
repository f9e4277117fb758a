//! `tierswarm demo`: one seeder and N leechers of a generated file on loopback.

use std::time::{Duration, Instant};

use clap::ValueEnum;
use futures::channel::oneshot;
use futures::FutureExt;
use indicatif::MultiProgress;
use tierswarm_io::data_file::write_pseudo_random;
use tierswarm_io::driver::{Outcome, Resume, RunConfig};
use tierswarm_io::manifest::root_to_hex;
use tierswarm_io::transport::{Listener, PeerUrl};
use tierswarm_io::{hash_file_root, Session, SessionEvent};
use tierswarm_quic::Identity;

use crate::{
    bytes_bar, format_duration, format_rate, format_size, join, options, unit_bytes, Failure,
    Result, Runtime, Runtimes,
};

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

/// Transports and listeners of demo peer `i` on `rt`, on loopback.
fn node(
    runtimes: &mut Runtimes,
    rt: Runtime,
    transport: Transport,
    i: usize,
) -> Result<(tierswarm_io::transport::Transports, Vec<Box<dyn Listener>>)> {
    let schemes = transport.schemes(i);
    let identity = schemes.contains(&"quic").then(Identity::generate);
    let transports = rt.transports(identity);
    let urls: Vec<PeerUrl> = schemes
        .iter()
        .map(|s| PeerUrl::new(s, "127.0.0.1:0", None).expect("a valid URL"))
        .collect();
    let listeners = runtimes.listen(rt, &transports, &urls)?;
    Ok((transports, listeners))
}

/// Runs the demo with peers on `runtime` (`Mixed`: the seeder on tokio, then the leechers on
/// async-std, smol, tokio, ...) connected by `transport` (`Mixed`: leechers dial the seeder
/// over the transport they listen on, and every earlier leecher at its URL, so each has peers
/// of both kinds).
pub(crate) fn run(runtime: Runtime, transport: Transport, n: usize, size: u64) -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Failure::failed(format!("temp dir: {e}")))?;
    let src = dir.path().join("demo.bin");
    let io = |e: std::io::Error| Failure::failed(e.to_string());
    let pb = crate::spinner(format!(
        "generating and hashing a {} file",
        format_size(size)
    ));
    write_pseudo_random(&src, size, 0x2545_f491_4f6c_dd1d).map_err(io)?;
    let seeder =
        Session::seeder(&src, options(None)).map_err(|e| Failure::failed(e.to_string()))?;
    pb.finish_and_clear();
    let manifest = seeder.manifest().clone();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let stop = stop_rx.shared();
    let stopped = || stop.clone().map(drop);
    let mut runtimes = Runtimes::default();
    let (transports, listeners) = node(&mut runtimes, runtime.of_peer(0), transport, 0)?;
    let seed_urls: Vec<PeerUrl> = listeners.iter().map(|l| l.url()).collect();
    let seed_task = runtimes.spawn(
        runtime.of_peer(0),
        seeder,
        RunConfig {
            transports,
            listeners,
            peers: vec![],
            stop_when_complete: false,
        },
        stopped(),
        |_| {},
    )?;
    let on = match runtime {
        Runtime::Mixed => "tokio, async-std and smol in turn".to_string(),
        r => r.name().to_string(),
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
    let mut tasks = Vec::new();
    let started = Instant::now();
    for i in 0..n {
        let out = dir.path().join(format!("leecher{i}.bin"));
        let (s, _) = Session::leecher(&manifest, &out, Resume::Check, options(None))
            .map_err(|e| Failure::failed(e.to_string()))?;
        let rt = runtime.of_peer(i + 1);
        let (transports, listeners) = node(&mut runtimes, rt, transport, i + 1)?;
        let own = listeners[0].url();
        let mut peers: Vec<PeerUrl> = seed_urls
            .iter()
            .filter(|u| u.scheme() == own.scheme())
            .cloned()
            .collect();
        peers.extend(urls.iter().cloned());
        urls.push(own.clone());
        let label = format!("leecher {i} {} {}", rt.name(), own.scheme());
        let pb = bars.add(bytes_bar(size).with_message(label));
        let done = done_tx.clone();
        let cfg = RunConfig {
            transports,
            listeners,
            peers,
            stop_when_complete: false,
        };
        tasks.push(runtimes.spawn(rt, s, cfg, stopped(), move |e| match e {
            SessionEvent::Progress { units, .. } => pb.set_position(unit_bytes(*units, size)),
            SessionEvent::Complete => {
                pb.finish();
                let _ = done.send(Ok(i));
            }
            SessionEvent::Fatal(r) => {
                let _ = done.send(Err(r.clone()));
            }
            _ => {}
        })?);
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
                    format_duration(limit)
                )))
            }
        }
    }
    let elapsed = started.elapsed();
    let _ = stop_tx.send(());
    let mut served = Vec::new();
    for t in tasks {
        let (s, outcome) = join(t)?;
        if let Outcome::Failed(r) = outcome {
            return Err(Failure::failed(r));
        }
        served.push(s.stats().units_served);
    }
    let (seed_session, _) = join(seed_task)?;
    bars.clear().ok();
    // Every output against the root.
    for i in 0..n {
        let out = dir.path().join(format!("leecher{i}.bin"));
        let f = std::fs::File::open(&out).map_err(io)?;
        let root = hash_file_root(std::io::BufReader::with_capacity(1 << 20, f)).map_err(io)?;
        if root != manifest.root {
            return Err(Failure::failed(format!(
                "leecher {i}'s output does not match the root"
            )));
        }
    }
    let total = size.saturating_mul(n as u64);
    let seeder_units = seed_session.stats().units_served;
    let leecher_units: u64 = served.iter().sum();
    println!(
        "demo: {n} leechers fetched {} each ({} in all) in {} — {} aggregate",
        format_size(size),
        format_size(total),
        format_duration(elapsed),
        format_rate((total as f64 / elapsed.as_secs_f64().max(1e-6)) as u64)
    );
    println!(
        "      first done after {}, last after {}; units served: seeder {seeder_units}, leechers {leecher_units} ({:?})",
        format_duration(times[0]),
        format_duration(elapsed),
        served
    );
    println!(
        "      all {n} outputs match root {}",
        root_to_hex(&manifest.root)
    );
    Ok(())
}
