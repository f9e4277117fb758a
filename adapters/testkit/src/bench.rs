//! The loopback benchmark, once for every runtime: a single-peer fetch over loopback versus a
//! raw socket copy of the same bytes on the same runtime, plus BLAKE3 speed.
//!
//! Size in `TIERSWARM_BENCH_SIZE` (default 1 GiB), temp files in `TIERSWARM_BENCH_DIR` (default
//! `.`), seeder upload slots per peer in `TIERSWARM_BENCH_SLOTS`.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use futures::io::{AsyncReadExt, AsyncWriteExt};
use tierswarm_io::data_file::write_pseudo_random;
use tierswarm_io::driver::{run, Outcome, Resume, RunConfig, Runtime, SessionOptions};
use tierswarm_io::{hash_file_root, Outboard, Session};

/// A future to run to completion on the benchmark's runtime.
pub type Job = Pin<Box<dyn Future<Output = Duration> + Send>>;

/// The benchmark's file: generated once, shared by every runtime measured.
pub struct Bench {
    dir: tempfile::TempDir,
    src: PathBuf,
    size: u64,
    root: [u8; 32],
}

fn mib_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

impl Bench {
    /// Generates the file and prints BLAKE3 figures.
    pub fn setup() -> Bench {
        let size = std::env::var("TIERSWARM_BENCH_SIZE")
            .ok()
            .map(|s| tierswarm_units::parse_size(&s).expect("TIERSWARM_BENCH_SIZE"))
            .unwrap_or(1 << 30);
        let base = std::env::var("TIERSWARM_BENCH_DIR").unwrap_or_else(|_| ".".into());
        let dir = tempfile::tempdir_in(base).unwrap();
        let src = dir.path().join("src.bin");
        println!(
            "loopback benchmark: {} MiB file in {}",
            size >> 20,
            dir.path().display()
        );
        write_pseudo_random(&src, size, 0x9e37_79b9_7f4a_7c15).unwrap();
        // BLAKE3 over the file (page cache), single-threaded as a leecher verifies.
        let t = Instant::now();
        let root = hash(&src);
        let hashed = t.elapsed();
        let t = Instant::now();
        let ob = Outboard::build(std::fs::File::open(&src).unwrap(), size).unwrap();
        let outboard = t.elapsed();
        assert_eq!(ob.root(), root);
        println!(
            "blake3 hash (1 thread):      {:>8.1} MiB/s  ({:.2} s)",
            mib_s(size, hashed),
            hashed.as_secs_f64()
        );
        println!(
            "outboard build (seeder):     {:>8.1} MiB/s  ({:.2} s)",
            mib_s(size, outboard),
            outboard.as_secs_f64()
        );
        Bench {
            dir,
            src,
            size,
            root,
        }
    }

    /// Measures a raw socket copy and a single-peer fetch on `R`; `block_on` runs a job on `R`'s
    /// executor (with `R` current).
    pub fn measure<R: Runtime>(&self, name: &str, block_on: impl Fn(Job) -> Duration) {
        let raw_out = self.dir.path().join("raw.bin");
        let raw = block_on(Box::pin(raw_copy::<R>(self.src.clone(), raw_out.clone())));
        assert_eq!(std::fs::metadata(&raw_out).unwrap().len(), self.size);
        std::fs::remove_file(&raw_out).unwrap();

        let mut seed_opts = SessionOptions::default();
        if let Some(n) = std::env::var("TIERSWARM_BENCH_SLOTS")
            .ok()
            .and_then(|s| s.parse().ok())
        {
            seed_opts.limits.upload_slots_per_peer = n;
        }
        let seeder = Session::seeder(&self.src, seed_opts).unwrap();
        let manifest = seeder.manifest().clone();
        let out = self.dir.path().join(format!("out-{name}.bin"));
        let (leecher, _) =
            Session::leecher(&manifest, &out, Resume::Check, SessionOptions::default()).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let fetch = block_on(Box::pin(async move {
            let t = Instant::now();
            let listener = crate::listener();
            let addr = listener.local_addr().unwrap();
            let (stop, stopped) = oneshot::channel::<()>();
            let seed = crate::spawn_run::<R>(
                seeder,
                Some(listener),
                vec![],
                false,
                async {
                    let _ = stopped.await;
                },
                |_| {},
            );
            let cfg = RunConfig {
                listener: None,
                peers: vec![addr],
                stop_when_complete: true,
            };
            let (l, outcome) = run::<R>(leecher, cfg, std::future::pending(), |_| {}).await;
            let took = t.elapsed();
            let _ = stop.send(());
            seed.join().await;
            let _ = tx.send((outcome, l.stats().requests));
            took
        }));
        let (outcome, requests) = rx.recv().unwrap();
        assert_eq!(outcome, Outcome::Complete);
        assert_eq!(hash(&out), self.root, "fetched file differs");
        let (store, proofs) = tierswarm_io::driver::store_paths(&out);
        for f in [&out, &store, &proofs] {
            std::fs::remove_file(f).unwrap();
        }
        println!(
            "{:<29}{:>8.1} MiB/s  ({:.2} s, file to file)",
            format!("raw {name} socket copy:"),
            mib_s(self.size, raw),
            raw.as_secs_f64()
        );
        println!(
            "{:<29}{:>8.1} MiB/s  ({:.2} s, {requests} requests, verified)",
            format!("{name} single-peer fetch:"),
            mib_s(self.size, fetch),
            fetch.as_secs_f64()
        );
        println!(
            "{:<29}{:>8.2}",
            format!("{name} fetch / raw copy:"),
            raw.as_secs_f64() / fetch.as_secs_f64()
        );
    }
}

fn hash(path: &Path) -> [u8; 32] {
    let f = std::fs::File::open(path).unwrap();
    hash_file_root(std::io::BufReader::with_capacity(1 << 20, f)).unwrap()
}

/// The same bytes, file to socket to file, with 1 MiB buffers and inline std file I/O (as the
/// session does), fsynced at the end (as the session's final persist does). Returns its time.
async fn raw_copy<R: Runtime>(src: PathBuf, dst: PathBuf) -> Duration {
    use std::io::{Read, Write};
    let t = Instant::now();
    let std_listener = crate::listener();
    let addr = std_listener.local_addr().unwrap();
    let listener = R::listener(std_listener).unwrap();
    let (sent_tx, sent) = oneshot::channel();
    let (accepted, connected) = futures::join!(R::accept(&listener), R::connect(addr));
    let (_, mut wr) = R::split(accepted.unwrap().0);
    R::spawn(async move {
        let mut file = std::fs::File::open(src).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            wr.write_all(&buf[..n]).await.unwrap();
        }
        wr.close().await.unwrap();
        let _ = sent_tx.send(());
    });
    let (mut rd, _wr) = R::split(connected.unwrap());
    let mut out = std::fs::File::create(dst).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = rd.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n]).unwrap();
    }
    out.sync_all().unwrap();
    sent.await.unwrap();
    t.elapsed()
}

/// A `block_on` for [`Bench::measure`] on a two-worker tokio runtime.
pub fn on_tokio() -> impl Fn(Job) -> Duration {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    move |job| rt.block_on(job)
}
