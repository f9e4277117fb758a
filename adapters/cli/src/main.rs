//! `tierswarm`: share and fetch files over a tierswarm swarm.
//!
//! ```text
//! tierswarm manifest FILE
//! tierswarm share FILE [--listen URL ...] [--runtime tokio|async-std|smol] [--manifest-out PATH]
//!                 [--record PATH]
//! tierswarm fetch MANIFEST --peer URL [--peer URL ...] --out PATH [--runtime tokio|async-std|smol]
//!                 [--listen URL ...] [--repair | --restart] [--record PATH]
//! tierswarm demo [--peers N] [--size SIZE] [--runtime tokio|async-std|smol|mixed]
//!                [--transport tcp|quic|mixed]
//! tierswarm replay RECORD
//! ```
//!
//! Addresses are URLs: `tcp://HOST:PORT`, `quic://HOST:PORT#FINGERPRINT` (a bare `HOST:PORT` is
//! TCP); a listener prints its URL, the QUIC one with its certificate's fingerprint.
//!
//! Exit codes: 0 success; 1 the work failed (no reachable peer, a disk error during the
//! transfer, a replay that differs, a demo output that does not match); 2 invalid command line,
//! address, manifest, store, proof log, certificate file or output (one that cannot be created,
//! or that was changed outside tierswarm), or `--runtime mixed` outside `demo`; 130 interrupted
//! before the download
//! completed (state persisted: run the same command again to resume).
//!
//! Sessions run as tasks of the chosen runtime ([`Runtimes`]); the main thread binds listeners
//! (inside the runtime where it needs that), waits with `futures`' executor and takes Ctrl-C
//! through `ctrlc`, so nothing but the network driver depends on the runtime.
#![forbid(unsafe_code)]

mod demo;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use futures::channel::oneshot;
use indicatif::{ProgressBar, ProgressStyle};
use tierswarm_async_std::AsyncStd;
use tierswarm_io::driver::{
    self, recorder, Outcome, Resume, RunConfig, SessionError, SessionOptions,
};
use tierswarm_io::manifest::root_to_hex;
use tierswarm_io::transport::{Listener, PeerUrl, Transports};
use tierswarm_io::{hash_file_root, Manifest, Session, SessionEvent};
use tierswarm_quic::{Identity, IdentityError};
use tierswarm_smol::Smol;
use tierswarm_tokio::Tokio;

/// A failure: the exit code and a one-line reason.
pub(crate) struct Failure(u8, String);

impl Failure {
    pub(crate) fn usage(reason: impl Into<String>) -> Self {
        Failure(2, reason.into())
    }
    pub(crate) fn failed(reason: impl Into<String>) -> Self {
        Failure(1, reason.into())
    }
}

type Result<T> = std::result::Result<T, Failure>;

#[derive(Parser)]
#[command(
    name = "tierswarm",
    version,
    about = "Peer-to-peer swarm file transfer"
)]
struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    cmd: Cmd,
}

/// The async runtime driving the network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
enum Runtime {
    /// tokio.
    #[default]
    Tokio,
    /// async-std (discontinued upstream; kept for programs already on it).
    AsyncStd,
    /// smol.
    Smol,
    /// The demo's peers take tokio, async-std and smol in turn (`demo` only).
    Mixed,
}

impl Runtime {
    /// The runtime of peer `i` (the demo's seeder is peer 0): `Mixed` cycles through tokio,
    /// async-std and smol.
    pub(crate) fn of_peer(self, i: usize) -> Runtime {
        match self {
            Runtime::Mixed => [Runtime::Tokio, Runtime::AsyncStd, Runtime::Smol][i % 3],
            r => r,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Runtime::Tokio => "tokio",
            Runtime::AsyncStd => "async-std",
            Runtime::Smol => "smol",
            Runtime::Mixed => "mixed",
        }
    }

    /// A node's transports on this runtime: TCP, and QUIC (listening only with an identity).
    pub(crate) fn transports(self, identity: Option<Identity>) -> Transports {
        match self {
            Runtime::AsyncStd => tierswarm_async_std::transports(identity),
            Runtime::Smol => tierswarm_smol::transports(identity),
            Runtime::Tokio | Runtime::Mixed => tierswarm_tokio::transports(identity),
        }
    }
}

/// The runtimes sessions run on: tokio's is started on first use; the global executors of
/// async-std and smol start themselves.
#[derive(Default)]
pub(crate) struct Runtimes {
    tokio: Option<tokio::runtime::Runtime>,
}

impl Runtimes {
    /// Runs `f` where `runtime` is current (inside tokio's runtime; the others need nothing).
    fn within<T>(&mut self, runtime: Runtime, f: impl FnOnce() -> T) -> Result<T> {
        if matches!(runtime, Runtime::AsyncStd | Runtime::Smol) {
            return Ok(f());
        }
        let rt = match &mut self.tokio {
            Some(rt) => rt,
            slot => slot.insert(
                tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| Failure::failed(format!("cannot start the tokio runtime: {e}")))?,
            ),
        };
        let _in_runtime = rt.enter();
        Ok(f())
    }

    /// Binds a listener at each of `urls` with `transports` (on `runtime`).
    pub(crate) fn listen(
        &mut self,
        runtime: Runtime,
        transports: &Transports,
        urls: &[PeerUrl],
    ) -> Result<Vec<Box<dyn Listener>>> {
        self.within(runtime, || {
            urls.iter()
                .map(|u| {
                    transports
                        .listen(u)
                        .map_err(|e| Failure::failed(format!("--listen {u}: {e}")))
                })
                .collect()
        })?
    }

    /// Runs `session` as a task of `runtime`; the handle gives its end.
    pub(crate) fn spawn(
        &mut self,
        runtime: Runtime,
        session: Session,
        cfg: RunConfig,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
        on_event: impl FnMut(&SessionEvent) + Send + 'static,
    ) -> Result<driver::RunHandle> {
        self.within(runtime, || match runtime {
            Runtime::AsyncStd => driver::spawn::<AsyncStd>(session, cfg, shutdown, on_event),
            Runtime::Smol => driver::spawn::<Smol>(session, cfg, shutdown, on_event),
            Runtime::Tokio | Runtime::Mixed => {
                driver::spawn::<Tokio>(session, cfg, shutdown, on_event)
            }
        })
    }
}

/// Waits for a spawned session on this thread.
pub(crate) fn join(handle: driver::RunHandle) -> Result<(Session, Outcome)> {
    futures::executor::block_on(handle.join())
        .ok_or_else(|| Failure::failed("the session's runtime stopped"))
}

#[derive(Subcommand)]
enum Cmd {
    /// Print the content root of FILE: its BLAKE3 hash, 64 hex digits (as `b3sum` prints).
    Manifest {
        /// The file.
        file: PathBuf,
    },
    /// Write a manifest for FILE and serve it until interrupted (Ctrl-C).
    Share {
        /// The file to serve.
        file: PathBuf,
        /// Where to listen, as a URL: tcp://HOST:PORT or quic://HOST:PORT (a bare HOST:PORT is
        /// TCP; port 0 picks a free one). Repeatable: one node may listen on TCP and QUIC.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: Vec<String>,
        /// Async runtime.
        #[arg(long, value_enum, default_value_t)]
        runtime: Runtime,
        /// Where to write the manifest (default FILE.tsm).
        #[arg(long)]
        manifest_out: Option<PathBuf>,
        /// Flight record of every core input (JSON lines), for `tierswarm replay`.
        #[arg(long)]
        record: Option<PathBuf>,
    },
    /// Download the file of MANIFEST from peers into --out, resuming from OUT.tsa.
    Fetch {
        /// The manifest (`.tsm`).
        manifest: PathBuf,
        /// A peer to connect to, as a URL: tcp://HOST:PORT or quic://HOST:PORT#FINGERPRINT (as
        /// the peer's `listening on` line prints it); a bare HOST:PORT is TCP. Repeatable.
        #[arg(long = "peer", required = true)]
        peers: Vec<String>,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        /// Async runtime.
        #[arg(long, value_enum, default_value_t)]
        runtime: Runtime,
        /// Also accept peers here, as a URL like `--listen` of `share` (to serve what we have
        /// while downloading). Repeatable.
        #[arg(long)]
        listen: Vec<String>,
        /// Rebuild the availability store first: re-verify every unit of the output file
        /// against the content root (units that fail, or lack a proof, are fetched again).
        #[arg(long, conflicts_with = "restart")]
        repair: bool,
        /// Start the output afresh: discard its availability store, its proof log and its
        /// contents (e.g. when they belong to another file).
        #[arg(long)]
        restart: bool,
        /// Flight record of every core input (JSON lines), for `tierswarm replay`.
        #[arg(long)]
        record: Option<PathBuf>,
    },
    /// Run a local swarm on loopback: one seeder and N leechers of a generated file.
    Demo {
        /// Leechers.
        #[arg(long, default_value_t = 4)]
        peers: usize,
        /// File size (e.g. 64MiB, 1GiB).
        #[arg(long, default_value = "64MiB")]
        size: String,
        /// Async runtime(s).
        #[arg(long, value_enum, default_value_t)]
        runtime: Runtime,
        /// Transport(s): `mixed` has the seeder listen on both and the leechers on TCP and
        /// QUIC in turn.
        #[arg(long, value_enum, default_value_t)]
        transport: demo::Transport,
    },
    /// Feed a flight record to a fresh core and check that the same actions come out.
    Replay {
        /// The record (JSON lines).
        record: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(cli.verbose);
    match dispatch(cli.cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(code, reason)) => {
            eprintln!("tierswarm: error: {reason}");
            ExitCode::from(code)
        }
    }
}

fn init_logs(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let level = ["warn", "info", "debug", "trace"][usize::from(verbose.min(3))];
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn dispatch(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Manifest { file } => {
            let f = std::fs::File::open(&file)
                .map_err(|e| Failure::usage(format!("{}: {e}", file.display())))?;
            let root = hash_file_root(std::io::BufReader::with_capacity(1 << 20, f))
                .map_err(|e| Failure::failed(format!("{}: {e}", file.display())))?;
            println!("{}", root_to_hex(&root));
            Ok(())
        }
        Cmd::Share {
            file,
            listen,
            runtime,
            manifest_out,
            record,
        } => share(single(runtime)?, &file, &listen, manifest_out, record),
        Cmd::Fetch {
            manifest,
            peers,
            out,
            runtime,
            listen,
            repair,
            restart,
            record,
        } => fetch(
            single(runtime)?,
            &manifest,
            &peers,
            &out,
            &listen,
            match (repair, restart) {
                (true, _) => Resume::Repair,
                (_, true) => Resume::Restart,
                _ => Resume::Check,
            },
            record,
        ),
        Cmd::Demo {
            peers,
            size,
            runtime,
            transport,
        } => {
            let size = tierswarm_units::parse_size(&size)
                .map_err(|e| Failure::usage(format!("--size: {e}")))?;
            if peers == 0 {
                return Err(Failure::usage("--peers: must be at least 1"));
            }
            demo::run(runtime, transport, peers, size)
        }
        Cmd::Replay { record } => {
            let report = recorder::replay(&record)
                .map_err(|e| Failure::failed(format!("{}: {e}", record.display())))?;
            match &report.truncated {
                None => println!(
                    "replayed {} inputs and {} actions: identical",
                    report.inputs, report.actions
                ),
                Some(note) => println!(
                    "replayed {} inputs and {} actions: identical up to where the record stops ({note})",
                    report.inputs, report.actions
                ),
            }
            Ok(())
        }
    }
}

/// The runtime of a single session: `mixed` only makes sense for the demo's swarm.
fn single(runtime: Runtime) -> Result<Runtime> {
    match runtime {
        Runtime::Mixed => Err(Failure::usage(
            "--runtime mixed: only `demo` runs several peers; choose tokio, async-std or smol",
        )),
        r => Ok(r),
    }
}

/// A seed for the core's random choices and a peer id, different per process.
pub(crate) fn options(record: Option<PathBuf>) -> SessionOptions {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let seed = nanos ^ (u64::from(std::process::id()) << 32);
    SessionOptions {
        peer_id: format!("tierswarm-{:08x}", seed as u32),
        seed,
        record,
        ..SessionOptions::default()
    }
}

/// Resolves after the first Ctrl-C; a second one exits at once. Runtime-neutral: the handler
/// runs on `ctrlc`'s own thread.
pub(crate) fn ctrl_c() -> impl std::future::Future<Output = ()> + Send + 'static {
    let (tx, rx) = oneshot::channel::<()>();
    let mut first = Some(tx);
    let installed = ctrlc::set_handler(move || match first.take() {
        Some(tx) => {
            eprintln!(
                "interrupted: finishing in-flight requests and saving state (Ctrl-C again to quit now)"
            );
            let _ = tx.send(());
        }
        None => {
            eprintln!("tierswarm: interrupted again: exiting without draining");
            std::process::exit(130);
        }
    });
    async move {
        if installed.is_err() || rx.await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// `--listen` URLs: parsed, the host resolved (the first address), a known scheme, no `#`.
fn listen_urls(given: &[String]) -> Result<Vec<PeerUrl>> {
    given
        .iter()
        .map(|text| {
            let bad = |e: String| Failure::usage(format!("--listen {text}: {e}"));
            let url: PeerUrl = text
                .parse()
                .map_err(|e: tierswarm_io::transport::UrlError| bad(e.to_string()))?;
            if !matches!(url.scheme(), "tcp" | "quic") {
                return Err(bad("listen on tcp:// or quic://".into()));
            }
            if url.fragment().is_some() {
                return Err(bad("a listening address takes no `#` part".into()));
            }
            let first = url
                .resolve()
                .map_err(|e| bad(e.to_string()))?
                .swap_remove(0);
            Ok(first)
        })
        .collect()
}

/// `--peer` URLs: parsed, resolved (every address), and checked by their transport (a `quic://`
/// URL needs its fingerprint).
fn peer_urls(given: &[String], transports: &Transports) -> Result<Vec<PeerUrl>> {
    let mut urls = Vec::new();
    for text in given {
        let bad = |e: String| Failure::usage(format!("--peer {text}: {e}"));
        let url: PeerUrl = text
            .parse()
            .map_err(|e: tierswarm_io::transport::UrlError| bad(e.to_string()))?;
        for u in url.resolve().map_err(|e| bad(e.to_string()))? {
            transports
                .check(&u)
                .map_err(|e| Failure::usage(format!("--peer {e}")))?;
            urls.push(u);
        }
    }
    Ok(urls)
}

/// The node's QUIC identity, kept at `path`, when one of `listen` is QUIC (a dialler needs
/// none: clients present no certificate).
fn identity_for(listen: &[PeerUrl], path: &Path) -> Result<Option<Identity>> {
    if !listen.iter().any(|u| u.scheme() == "quic") {
        return Ok(None);
    }
    match Identity::load_or_create(path) {
        Ok(id) => Ok(Some(id)),
        Err(e @ IdentityError::Invalid { .. }) => Err(Failure::usage(e.to_string())),
        Err(e) => Err(Failure::failed(e.to_string())),
    }
}

/// `PATH` with `.tsm` replaced by `.tsk` (or `.tsk` appended): where `share` keeps its QUIC
/// identity, beside the manifest.
fn key_beside_manifest(manifest: &Path) -> PathBuf {
    match manifest.extension() {
        Some(ext) if ext == "tsm" => manifest.with_extension("tsk"),
        _ => {
            let mut p = manifest.as_os_str().to_owned();
            p.push(".tsk");
            PathBuf::from(p)
        }
    }
}

/// Prints one `listening on URL` line per listener (stdout, flushed: scripts read it).
fn print_listening(listeners: &[Box<dyn Listener>]) {
    for l in listeners {
        println!("listening on {}", l.url());
    }
    let _ = std::io::stdout().flush();
}

pub(crate) fn spinner(msg: String) -> ProgressBar {
    let pb = ProgressBar::new_spinner().with_message(msg);
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

pub(crate) fn bytes_bar(len: u64) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(
            "{msg:12} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb
}

/// `4.77 MiB`: sizes for people (the core's `format_size` is exact, for files).
pub(crate) fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.2} {}", UNITS[i])
    }
}

/// `228.31 MiB/s`.
pub(crate) fn format_rate(bytes_per_second: u64) -> String {
    format!("{}/s", format_size(bytes_per_second))
}

/// `1.05 s`, `20.9 ms`.
pub(crate) fn format_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 1.0 {
        format!("{s:.2} s")
    } else {
        format!("{:.1} ms", s * 1000.0)
    }
}

pub(crate) fn unit_bytes(units: u64, file_len: u64) -> u64 {
    units.saturating_mul(65536).min(file_len)
}

fn share(
    runtime: Runtime,
    file: &Path,
    listen: &[String],
    manifest_out: Option<PathBuf>,
    record: Option<PathBuf>,
) -> Result<()> {
    let listen = listen_urls(listen)?;
    let pb = spinner(format!("hashing {}", file.display()));
    let session = Session::seeder(file, options(record)).map_err(|e| match e {
        SessionError::Record { .. } => Failure::usage(e.to_string()),
        e => Failure::failed(e.to_string()),
    })?;
    pb.finish_and_clear();
    let manifest = session.manifest().clone();
    let path = manifest_out.unwrap_or_else(|| {
        let mut p = file.as_os_str().to_owned();
        p.push(".tsm");
        PathBuf::from(p)
    });
    manifest
        .save(&path)
        .map_err(|e| Failure::failed(e.to_string()))?;
    let key = key_beside_manifest(&path);
    let transports = runtime.transports(identity_for(&listen, &key)?);
    let mut runtimes = Runtimes::default();
    let listeners = runtimes.listen(runtime, &transports, &listen)?;
    eprintln!(
        "sharing {} ({}), root {}, manifest {}",
        file.display(),
        format_size(manifest.file_len),
        root_to_hex(&manifest.root),
        path.display()
    );
    if listen.iter().any(|u| u.scheme() == "quic") {
        eprintln!("QUIC certificate and key: {}", key.display());
    }
    print_listening(&listeners);
    let cfg = RunConfig {
        transports,
        listeners,
        peers: vec![],
        stop_when_complete: false,
    };
    let started = Instant::now();
    let peers = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&peers);
    let handle = runtimes.spawn(runtime, session, cfg, ctrl_c(), move |e| match e {
        SessionEvent::PeerReady { .. } => {
            counted.fetch_add(1, Ordering::Relaxed);
        }
        SessionEvent::Warning(w) => eprintln!("tierswarm: warning: {w}"),
        _ => {}
    })?;
    let (session, outcome) = join(handle)?;
    let s = session.stats();
    let sent = s.sent[tierswarm_core::wire::MessageKind::Transfer].bytes;
    eprintln!(
        "served {} units ({}) to {} peers in {}",
        s.units_served,
        format_size(sent),
        peers.load(Ordering::Relaxed),
        format_duration(started.elapsed())
    );
    match outcome {
        Outcome::Failed(reason) => Err(Failure::failed(reason)),
        _ => Ok(()),
    }
}

fn fetch(
    runtime: Runtime,
    manifest_path: &Path,
    peers: &[String],
    out: &Path,
    listen: &[String],
    resume: Resume,
    record: Option<PathBuf>,
) -> Result<()> {
    let manifest = Manifest::load(manifest_path).map_err(|e| Failure::usage(e.to_string()))?;
    let listen = listen_urls(listen)?;
    // The identity lives beside the other state of this download (`OUT.tsk`).
    let mut key = out.as_os_str().to_owned();
    key.push(".tsk");
    let transports = runtime.transports(identity_for(&listen, Path::new(&key))?);
    let dial = peer_urls(peers, &transports)?;
    let (session, notes) = {
        let pb = (resume == Resume::Repair)
            .then(|| spinner(format!("repairing: re-verifying {}", out.display())));
        let r = Session::leecher(&manifest, out, resume, options(record));
        if let Some(pb) = pb {
            pb.finish_and_clear();
        }
        // Whatever stops a download before it starts is its input: the output path, what an
        // earlier run left there, the record path.
        r.map_err(|e| Failure::usage(e.to_string()))?
    };
    if notes.units > 0 || resume == Resume::Repair {
        eprintln!(
            "resuming: {} of {} units already verified{}{}",
            notes.units,
            session.progress().1,
            if notes.dropped_without_proof > 0 {
                format!(
                    " ({} without a proof will be fetched again)",
                    notes.dropped_without_proof
                )
            } else {
                String::new()
            },
            if notes.file_verified {
                " (the whole file hashes to the root)".to_string()
            } else if notes.units_checked > 0 {
                format!(" ({} read back and checked)", notes.units_checked)
            } else {
                String::new()
            }
        );
    }
    let file_len = manifest.file_len;
    let mut runtimes = Runtimes::default();
    let listeners = runtimes.listen(runtime, &transports, &listen)?;
    print_listening(&listeners);
    let cfg = RunConfig {
        transports,
        listeners,
        peers: dial,
        stop_when_complete: true,
    };
    let pb = bytes_bar(file_len).with_message(manifest.name.chars().take(12).collect::<String>());
    let start_bytes = unit_bytes(notes.units, file_len);
    pb.set_position(start_bytes);
    let started = Instant::now();
    let peers = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&peers);
    let bar = pb.clone();
    let handle = runtimes.spawn(runtime, session, cfg, ctrl_c(), move |e| match e {
        SessionEvent::Progress { units, .. } => bar.set_position(unit_bytes(*units, file_len)),
        SessionEvent::PeerReady { .. } => {
            counted.fetch_add(1, Ordering::Relaxed);
        }
        SessionEvent::BadUnit { peer, unit, reason } => {
            bar.suspend(|| eprintln!("peer {peer} sent a bad unit {unit} ({reason}): disconnected"))
        }
        SessionEvent::Warning(w) => bar.suspend(|| eprintln!("tierswarm: warning: {w}")),
        _ => {}
    })?;
    let (session, outcome) = join(handle)?;
    pb.finish_and_clear();
    let s = session.stats();
    let (units, total) = session.progress();
    let got = unit_bytes(units, file_len).saturating_sub(start_bytes);
    let secs = started.elapsed().as_secs_f64().max(1e-6);
    match outcome {
        Outcome::Complete => {
            eprintln!(
                "fetched {} ({}) in {} at {} from {} peers; {} requests, {} retries, {} bad units; \
                 served {} units ({}) to others",
                out.display(),
                format_size(file_len),
                format_duration(started.elapsed()),
                format_rate((got as f64 / secs) as u64),
                peers.load(Ordering::Relaxed),
                s.requests,
                s.retries,
                s.failed_units,
                s.units_served,
                format_size(s.sent[tierswarm_core::wire::MessageKind::Transfer].bytes)
            );
            Ok(())
        }
        Outcome::Drained | Outcome::Interrupted => Err(Failure(
            130,
            format!(
                "interrupted at {units} of {total} units; run the same command again to resume"
            ),
        )),
        Outcome::Failed(reason) => Err(Failure::failed(format!(
            "{reason} ({units} of {total} units verified; run again to resume)"
        ))),
    }
}
