//! The loopback benchmark, once for every runtime and transport: a single-peer fetch over
//! loopback versus a raw copy of the same bytes over the same transport on the same runtime,
//! plus BLAKE3 speed, with the process's CPU time for each.
//!
//! Size in `TIERSWARM_BENCH_SIZE` (default 1 GiB), temp files in `TIERSWARM_BENCH_DIR` (default
//! `.`; use a tmpfs such as `/dev/shm` to keep the disk out), runs per measurement in
//! `TIERSWARM_BENCH_RUNS` (default 1; the median and the range are printed), transports in
//! `TIERSWARM_BENCH_TRANSPORTS` (default `tcp,quic`; `none` measures nothing but the setup),
//! seeder upload slots per peer in `TIERSWARM_BENCH_SLOTS`; `TIERSWARM_BENCH_RAW=0` leaves out
//! the raw copies.
//!
//! Instructions per byte of a whole verified transfer (both ends, user space): run under
//! `valgrind --tool=callgrind` at two sizes with `TIERSWARM_BENCH_RAW=0`, and at the same two
//! sizes with `TIERSWARM_BENCH_TRANSPORTS=none`; the fetch's instructions per byte are the
//! difference of the first pair's totals less that of the second pair's, over the difference
//! of the sizes (`dev/scripts/transfer-instructions.sh` does it).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures::channel::oneshot;
use tierswarm_core::tiers::T1_SIZE;
use tierswarm_core::wire::{encode_frame, FrameLimits, Message};
use tierswarm_core::Geometry;
use tierswarm_io::data_file::write_pseudo_random;
use tierswarm_io::driver::{run, Outcome, Resume, RunConfig, Runtime, SessionOptions};
use tierswarm_io::transport::{Class, Framing, OutFrame};
use tierswarm_io::{hash_file_root, Outboard, Session};

use crate::{Host, MakeTransports, Net};

/// A future to run to completion on the benchmark's runtime.
pub type Job = Pin<Box<dyn Future<Output = Duration> + Send>>;

/// Bytes per frame of the raw copy.
const RAW_CHUNK: usize = T1_SIZE as usize;

/// The benchmark's file: generated once, shared by every runtime measured.
pub struct Bench {
    dir: tempfile::TempDir,
    src: PathBuf,
    size: u64,
    root: [u8; 32],
    runs: usize,
}

fn mib_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

/// User + system CPU time of this process so far (Linux: `/proc/self/stat`, in the kernel's
/// fixed 100 Hz ticks); zero elsewhere.
fn cpu_time() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse().ok())
        .collect();
    Duration::from_millis(fields.iter().sum::<u64>() * 10)
}

/// One measurement: wall time and CPU time.
#[derive(Debug, Clone, Copy)]
struct Sample {
    wall: Duration,
    cpu: Duration,
}

fn timed(block_on: &impl Fn(Job) -> Duration, job: Job) -> Sample {
    let cpu = cpu_time();
    let wall = block_on(job);
    Sample {
        wall,
        cpu: cpu_time().saturating_sub(cpu),
    }
}

impl Bench {
    /// Generates the file and prints BLAKE3 figures.
    pub fn setup() -> Bench {
        let size = std::env::var("TIERSWARM_BENCH_SIZE")
            .ok()
            .map(|s| tierswarm_units::parse_size(&s).expect("TIERSWARM_BENCH_SIZE"))
            .unwrap_or(1 << 30);
        let runs = std::env::var("TIERSWARM_BENCH_RUNS")
            .ok()
            .map(|s| s.parse().expect("TIERSWARM_BENCH_RUNS"))
            .unwrap_or(1usize)
            .max(1);
        let base = std::env::var("TIERSWARM_BENCH_DIR").unwrap_or_else(|_| ".".into());
        let dir = tempfile::tempdir_in(base).unwrap();
        let src = dir.path().join("src.bin");
        println!(
            "loopback benchmark: {} MiB file in {}, {runs} run(s) each",
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
            runs,
        }
    }

    /// Measures, on runtime `R`, a raw copy and a single-peer fetch over each transport named
    /// in `TIERSWARM_BENCH_TRANSPORTS`, with the glue's `transports`; `block_on` runs a job on
    /// `R`'s executor (with `R` current).
    pub fn measure_all<R: Runtime>(
        &self,
        runtime: &str,
        transports: MakeTransports,
        block_on: impl Fn(Job) -> Duration,
    ) {
        let wanted = std::env::var("TIERSWARM_BENCH_TRANSPORTS").unwrap_or("tcp,quic".into());
        for name in wanted.split(',').map(str::trim) {
            let net = match name {
                "none" => continue,
                "tcp" => Net::tcp(transports),
                "quic" => Net::quic(transports),
                other => panic!("TIERSWARM_BENCH_TRANSPORTS: unknown transport {other}"),
            };
            self.measure::<R>(&format!("{runtime} {name}"), &net, &block_on);
        }
    }

    /// Measures a raw copy and a single-peer fetch on `R` over `net`.
    pub fn measure<R: Runtime>(&self, name: &str, net: &Net, block_on: &impl Fn(Job) -> Duration) {
        let with_raw = std::env::var("TIERSWARM_BENCH_RAW").map_or(true, |v| v != "0");
        let mut raw = Vec::new();
        let mut fetch = Vec::new();
        let mut requests = 0;
        for _ in 0..self.runs {
            if with_raw {
                raw.push(self.raw_once::<R>(net, block_on));
            }
            let (sample, n) = self.fetch_once::<R>(net, block_on);
            fetch.push(sample);
            requests = n;
        }
        let raw = (!raw.is_empty())
            .then(|| self.summary(&format!("raw {name} copy:"), raw, "file to file"));
        let fetch = self.summary(
            &format!("{name} single-peer fetch:"),
            fetch,
            &format!("{requests} requests, verified"),
        );
        let Some(raw) = raw else {
            return;
        };
        println!(
            "{:<29}{:>8.2}",
            format!("{name} fetch / raw copy:"),
            raw / fetch
        );
    }

    /// Prints the median, range and CPU of `samples`; returns the median wall seconds.
    fn summary(&self, label: &str, mut samples: Vec<Sample>, what: &str) -> f64 {
        samples.sort_by_key(|s| s.wall);
        let median = samples[samples.len() / 2];
        let (lo, hi) = (samples[0].wall, samples[samples.len() - 1].wall);
        let gib = self.size as f64 / (1u64 << 30) as f64;
        let range = if samples.len() > 1 {
            format!(
                ", range {:.1}–{:.1}",
                mib_s(self.size, hi),
                mib_s(self.size, lo)
            )
        } else {
            String::new()
        };
        println!(
            "{label:<29}{:>8.1} MiB/s  ({:.2} s{range}; {what}; cpu {:.2} s/GiB)",
            mib_s(self.size, median.wall),
            median.wall.as_secs_f64(),
            median.cpu.as_secs_f64() / gib,
        );
        median.wall.as_secs_f64()
    }

    fn fetch_once<R: Runtime>(
        &self,
        net: &Net,
        block_on: &impl Fn(Job) -> Duration,
    ) -> (Sample, u64) {
        let mut seed_opts = SessionOptions::default();
        if let Some(n) = std::env::var("TIERSWARM_BENCH_SLOTS")
            .ok()
            .and_then(|s| s.parse().ok())
        {
            seed_opts.limits.upload_slots_per_peer = n;
        }
        let seeder = Session::seeder(&self.src, seed_opts).unwrap();
        let manifest = seeder.manifest().clone();
        let out = self.dir.path().join("out.bin");
        let (leecher, _) =
            Session::leecher(&manifest, &out, Resume::Check, SessionOptions::default()).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let host = Host::on::<R>(net);
        let sample = timed(
            block_on,
            Box::pin(async move {
                let t = Instant::now();
                let seed = host.serve(seeder, vec![]);
                let cfg = RunConfig {
                    transports: host.net.transports(),
                    listeners: vec![],
                    peers: vec![seed.url.clone()],
                    stop_when_complete: true,
                };
                let (l, outcome) = run::<R>(leecher, cfg, std::future::pending(), |_| {}).await;
                let took = t.elapsed();
                seed.stop().await;
                let _ = tx.send((outcome, l.stats().requests));
                took
            }),
        );
        let (outcome, requests) = rx.recv().unwrap();
        assert_eq!(outcome, Outcome::Complete);
        assert_eq!(hash(&out), self.root, "fetched file differs");
        let (store, proofs) = tierswarm_io::driver::store_paths(&out);
        for f in [&out, &store, &proofs] {
            std::fs::remove_file(f).unwrap();
        }
        (sample, requests)
    }

    fn raw_once<R: Runtime>(&self, net: &Net, block_on: &impl Fn(Job) -> Duration) -> Sample {
        let out = self.dir.path().join("raw.bin");
        let job = raw_copy::<R>(net.clone(), self.src.clone(), out.clone());
        let sample = timed(block_on, Box::pin(job));
        assert_eq!(std::fs::metadata(&out).unwrap().len(), self.size);
        std::fs::remove_file(&out).unwrap();
        sample
    }
}

fn hash(path: &Path) -> [u8; 32] {
    let f = std::fs::File::open(path).unwrap();
    hash_file_root(std::io::BufReader::with_capacity(1 << 20, f)).unwrap()
}

/// The same bytes, file to transport to file, as one 64 KiB TRANSFER frame per unit (no proofs, no
/// verification, no protocol) with inline std file I/O (as the session does), fsynced at the
/// end (as the session's final persist does). Returns its time.
async fn raw_copy<R: Runtime>(net: Net, src: PathBuf, dst: PathBuf) -> Duration {
    use std::io::{Read, Write};
    let t = Instant::now();
    let (transports, mut listener) = net.bind();
    // Handshake first, then one TRANSFER per unit: the frames the protocol sends, under its
    // limits, without its proofs, verification or bookkeeping.
    let len = std::fs::metadata(&src).unwrap().len();
    let framing = Framing {
        limits: FrameLimits::for_geometry(Geometry::new(len.max(1)).unwrap()),
        keep_raw: false,
    };
    let url = listener.url();
    let (accepted, connected) =
        futures::join!(listener.accept(framing), transports.connect(&url, framing));
    let sender = accepted.unwrap();
    let (sent_tx, sent) = oneshot::channel();
    R::spawn(async move {
        let w = sender.writer;
        let mut hs = BytesMut::new();
        let hello = Message::Handshake {
            info_hash: bytes::Bytes::from_static(&[0; 32]),
            peer_id: "raw".into(),
            capabilities: None,
        };
        encode_frame(&[0; 32], &hello, &mut hs);
        w.write(OutFrame::new(hs.freeze(), Class::Control, None))
            .await
            .unwrap();
        let mut file = std::fs::File::open(src).unwrap();
        let mut buf = vec![0u8; RAW_CHUNK];
        let mut unit = 0;
        loop {
            let n = file.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            let mut frame = BytesMut::new();
            let msg = Message::Transfer {
                unit,
                data: bytes::Bytes::copy_from_slice(&buf[..n]),
                proof: None,
            };
            encode_frame(&[0; 32], &msg, &mut frame);
            w.write(OutFrame::new(frame.freeze(), Class::Data, Some(unit)))
                .await
                .unwrap();
            unit += 1;
        }
        w.close().await.unwrap();
        // Keep reading until the receiver hangs up, so that closing loses nothing.
        let mut reader = sender.reader;
        while let Ok(Some(_)) = reader.next_frame().await {}
        let _ = sent_tx.send(());
    });
    let mut receiver = connected.unwrap();
    let mut out = std::fs::File::create(dst).unwrap();
    while let Some(incoming) = receiver.reader.next_frame().await.unwrap() {
        if let Message::Transfer { data, .. } = incoming.frame.msg {
            out.write_all(&data).unwrap();
        }
    }
    out.sync_all().unwrap();
    receiver.writer.close().await.unwrap();
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
