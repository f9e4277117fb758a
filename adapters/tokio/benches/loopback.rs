//! Single-peer fetch over loopback versus a raw tokio socket copy of the same bytes, plus BLAKE3
//! hashing speed, in one run. Prints figures and the ratio.
//!
//! ```text
//! cargo bench -p tierswarm-tokio --bench loopback            # 1 GiB
//! TIERSWARM_BENCH_SIZE=256MiB cargo bench -p tierswarm-tokio --bench loopback
//! ```
#![forbid(unsafe_code)]

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use tierswarm_io::driver::SessionOptions;
use tierswarm_io::{hash_file_root, Outboard, Session};
use tierswarm_tokio::{run, Outcome, RunConfig};
use tokio::net::{TcpListener, TcpStream};

fn mib_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

fn generate(path: &Path, len: u64) {
    let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut block = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for c in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(block.len() as u64) as usize;
        w.write_all(&block[..n]).unwrap();
        left -= n as u64;
    }
    w.flush().unwrap();
}

/// The same bytes, file to socket to file, with 1 MiB buffers and inline std file I/O (as the
/// session does), fsynced at the end (as the session's final persist does).
async fn raw_copy(src: &Path, dst: &Path) -> u64 {
    use std::io::{Read, Write};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let src = src.to_path_buf();
    let sender = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut file = std::fs::File::open(src).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            sock.write_all(&buf[..n]).await.unwrap();
        }
    });
    let mut sock = TcpStream::connect(addr).await.unwrap();
    let mut out = std::fs::File::create(dst).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0;
    loop {
        let n = sock.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n]).unwrap();
        total += n as u64;
    }
    out.sync_all().unwrap();
    sender.await.unwrap();
    total
}

fn main() {
    let size = std::env::var("TIERSWARM_BENCH_SIZE")
        .ok()
        .map(|s| tierswarm_core::units::parse_size(&s).expect("TIERSWARM_BENCH_SIZE"))
        .unwrap_or(1 << 30);
    let dir =
        tempfile::tempdir_in(std::env::var("TIERSWARM_BENCH_DIR").unwrap_or_else(|_| ".".into()))
            .unwrap();
    let src = dir.path().join("src.bin");
    println!(
        "loopback benchmark: {} MiB file in {}",
        size >> 20,
        dir.path().display()
    );
    generate(&src, size);

    // BLAKE3 over the file (page cache), single-threaded as a leecher verifies.
    let t = Instant::now();
    let root = hash_file_root(std::io::BufReader::with_capacity(
        1 << 20,
        std::fs::File::open(&src).unwrap(),
    ))
    .unwrap();
    let hash = t.elapsed();
    let t = Instant::now();
    let ob = Outboard::build(std::fs::File::open(&src).unwrap(), size).unwrap();
    let outboard = t.elapsed();
    assert_eq!(ob.root(), root);
    drop(ob);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let raw_out = dir.path().join("raw.bin");
    let t = Instant::now();
    let n = rt.block_on(raw_copy(&src, &raw_out));
    let raw = t.elapsed();
    assert_eq!(n, size);
    std::fs::remove_file(&raw_out).unwrap();

    let mut seed_opts = SessionOptions::default();
    if let Some(n) = std::env::var("TIERSWARM_BENCH_SLOTS")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        seed_opts.limits.upload_slots_per_peer = n;
    }
    let seeder = Session::seeder(&src, seed_opts).unwrap();
    let manifest = seeder.manifest().clone();
    let out = dir.path().join("out.bin");
    let (leecher, _) = Session::leecher(&manifest, &out, false, SessionOptions::default()).unwrap();
    let t = Instant::now();
    let (outcome, requests) = rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let cfg = RunConfig {
            listener: Some(listener),
            peers: vec![],
            stop_when_complete: false,
        };
        let seed = tokio::spawn(run(
            seeder,
            cfg,
            async {
                let _ = rx.await;
            },
            |_| {},
        ));
        let cfg = RunConfig {
            listener: None,
            peers: vec![addr],
            stop_when_complete: true,
        };
        let (l, outcome) = run(leecher, cfg, std::future::pending(), |_| {}).await;
        let _ = stop.send(());
        seed.await.unwrap();
        (outcome, l.stats().requests)
    });
    let fetch = t.elapsed();
    assert_eq!(outcome, Outcome::Complete);
    let check = hash_file_root(std::io::BufReader::with_capacity(
        1 << 20,
        std::fs::File::open(&out).unwrap(),
    ))
    .unwrap();
    assert_eq!(check, root, "fetched file differs");

    println!(
        "blake3 hash (1 thread):      {:>8.1} MiB/s  ({:.2} s)",
        mib_s(size, hash),
        hash.as_secs_f64()
    );
    println!(
        "outboard build (seeder):     {:>8.1} MiB/s  ({:.2} s)",
        mib_s(size, outboard),
        outboard.as_secs_f64()
    );
    println!(
        "raw tokio socket copy:       {:>8.1} MiB/s  ({:.2} s, file to file)",
        mib_s(size, raw),
        raw.as_secs_f64()
    );
    println!(
        "tierswarm single-peer fetch: {:>8.1} MiB/s  ({:.2} s, {requests} requests, verified)",
        mib_s(size, fetch),
        fetch.as_secs_f64()
    );
    println!(
        "ratio fetch / raw copy:      {:>8.2}",
        raw.as_secs_f64() / fetch.as_secs_f64()
    );
}
