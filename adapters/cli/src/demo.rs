//! `tierswarm demo`: one seeder and N leechers of a generated file on loopback.

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::MultiProgress;
use tierswarm_io::manifest::root_to_hex;
use tierswarm_io::{hash_file_root, Session, SessionEvent};
use tierswarm_tokio::{Outcome, RunConfig};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::{
    bytes_bar, format_duration, format_rate, format_size, options, unit_bytes, Failure, Result,
};

fn generate(path: &Path, len: u64) -> std::io::Result<()> {
    let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut left = len;
    let mut block = vec![0u8; 1 << 20];
    while left > 0 {
        for chunk in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(block.len() as u64) as usize;
        w.write_all(&block[..n])?;
        left -= n as u64;
    }
    w.flush()
}

pub(crate) async fn run(n: usize, size: u64) -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Failure::failed(format!("temp dir: {e}")))?;
    let src = dir.path().join("demo.bin");
    let io = |e: std::io::Error| Failure::failed(e.to_string());
    let pb = crate::spinner(format!(
        "generating and hashing a {} file",
        format_size(size)
    ));
    let seeder = tokio::task::block_in_place(|| {
        generate(&src, size)?;
        Session::seeder(&src, options(None)).map_err(std::io::Error::other)
    })
    .map_err(io)?;
    pb.finish_and_clear();
    let manifest = seeder.manifest().clone();
    let bind = || async { TcpListener::bind("127.0.0.1:0").await.map_err(io) };
    let seed_listener = bind().await?;
    let seed_addr = seed_listener.local_addr().map_err(io)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let seed_task = tokio::spawn(tierswarm_tokio::run(
        seeder,
        RunConfig {
            listener: Some(seed_listener),
            peers: vec![],
            stop_when_complete: false,
        },
        stopped(stop_rx.clone()),
        |_| {},
    ));
    eprintln!(
        "demo: 1 seeder + {n} leechers on loopback, {} file, root {}",
        format_size(size),
        root_to_hex(&manifest.root)
    );
    let bars = MultiProgress::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<std::result::Result<usize, String>>();
    let mut addrs = Vec::new();
    let mut tasks = Vec::new();
    let started = Instant::now();
    for i in 0..n {
        let out = dir.path().join(format!("leecher{i}.bin"));
        let (s, _) = Session::leecher(&manifest, &out, false, options(None))
            .map_err(|e| Failure::failed(e.to_string()))?;
        let listener = bind().await?;
        let mut peers = vec![seed_addr];
        peers.extend(&addrs);
        addrs.push(listener.local_addr().map_err(io)?);
        let pb = bars.add(bytes_bar(size).with_message(format!("leecher {i}")));
        let done = done_tx.clone();
        let cfg = RunConfig {
            listener: Some(listener),
            peers,
            stop_when_complete: false,
        };
        tasks.push(tokio::spawn(tierswarm_tokio::run(
            s,
            cfg,
            stopped(stop_rx.clone()),
            move |e| match e {
                SessionEvent::Progress { units, .. } => pb.set_position(unit_bytes(*units, size)),
                SessionEvent::Complete => {
                    pb.finish();
                    let _ = done.send(Ok(i));
                }
                SessionEvent::Fatal(r) => {
                    let _ = done.send(Err(r.clone()));
                }
                _ => {}
            },
        )));
    }
    drop(done_tx);
    let limit = Duration::from_secs(120) + Duration::from_secs(size / (20 << 20));
    let mut finished = 0;
    let mut times = Vec::new();
    while finished < n {
        match tokio::time::timeout(limit.saturating_sub(started.elapsed()), done_rx.recv()).await {
            Ok(Some(Ok(_))) => {
                finished += 1;
                times.push(started.elapsed());
            }
            Ok(Some(Err(r))) => return Err(Failure::failed(r)),
            Ok(None) => return Err(Failure::failed("a leecher stopped early")),
            Err(_) => {
                return Err(Failure::failed(format!(
                    "only {finished} of {n} leechers finished within {}",
                    format_duration(limit)
                )))
            }
        }
    }
    let elapsed = started.elapsed();
    let _ = stop_tx.send(true);
    let mut served = Vec::new();
    for t in tasks {
        let (s, outcome) = t.await.map_err(|e| Failure::failed(e.to_string()))?;
        if let Outcome::Failed(r) = outcome {
            return Err(Failure::failed(r));
        }
        served.push(s.stats().units_served);
    }
    let (seed_session, _) = seed_task
        .await
        .map_err(|e| Failure::failed(e.to_string()))?;
    bars.clear().ok();
    // Every output against the root.
    for i in 0..n {
        let out = dir.path().join(format!("leecher{i}.bin"));
        let f = std::fs::File::open(&out).map_err(io)?;
        let root = tokio::task::block_in_place(|| {
            hash_file_root(std::io::BufReader::with_capacity(1 << 20, f))
        })
        .map_err(io)?;
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
