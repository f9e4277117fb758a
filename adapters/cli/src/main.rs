//! `tierswarm`: share and fetch files over a tierswarm swarm.
//!
//! ```text
//! tierswarm manifest FILE
//! tierswarm share FILE [--listen URL ...] [--runtime tokio|async-std|smol] [--manifest-out PATH]
//!                 [--legacy] [--max-upload-rate RATE] [--record PATH] [--json-events]
//! tierswarm fetch MANIFEST --peer URL [--peer URL ...] --out PATH [--runtime tokio|async-std|smol]
//!                 [--listen URL ...] [--legacy] [--max-upload-rate RATE] [--max-download-rate RATE]
//!                 [--repair | --restart] [--record PATH] [--json-events]
//! tierswarm demo [--peers N] [--size SIZE] [--runtime tokio|async-std|smol|mixed]
//!                [--transport tcp|quic|mixed]
//! tierswarm replay RECORD [--actions]
//! ```
//!
//! Addresses are URLs: `tcp://HOST:PORT`, `quic://HOST:PORT#FINGERPRINT` (a bare `HOST:PORT` is
//! TCP); a listener prints its URL, the QUIC one with its certificate's fingerprint. Rates are
//! written `16MiB/s`, `500KiB/s`, `2MB/s`, `100Mbit/s`.
//!
//! Exit codes: 0 success; 1 the work failed (no reachable peer, a disk error during the
//! transfer, a replay that differs, a demo output that does not match); 2 invalid command line,
//! address, rate, manifest, store, proof log, certificate file or output (one that cannot be
//! created, or that was changed outside tierswarm), or `--runtime mixed` outside `demo`; 130
//! interrupted before the download completed (state persisted: run the same command again to
//! resume).
//!
//! Every transfer goes through the `tierswarm` library ([`tierswarm::Node`]): this binary parses
//! flags, shows progress from the transfer's events and maps its report to an exit code.
#![forbid(unsafe_code)]

mod demo;
mod view;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tierswarm::{root_to_hex, Error, Manifest, Node, Outcome, Resume, Transfer};

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

/// Library errors keep their exit code; addresses name the flag they came from.
impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let code = e.exit_code();
        match e {
            Error::Address { role, url, reason } => {
                Failure(code, format!("--{role} {url}: {reason}"))
            }
            e => Failure(code, e.to_string()),
        }
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
    pub(crate) fn of_peer(self, i: usize) -> tierswarm::Runtime {
        match self {
            Runtime::Mixed => tierswarm::Runtime::ALL[i % 3],
            Runtime::Tokio => tierswarm::Runtime::Tokio,
            Runtime::AsyncStd => tierswarm::Runtime::AsyncStd,
            Runtime::Smol => tierswarm::Runtime::Smol,
        }
    }
}

/// What every node of `share` and `fetch` takes from the command line.
#[derive(clap::Args)]
struct NodeArgs {
    /// Async runtime.
    #[arg(long, value_enum, default_value_t)]
    runtime: Runtime,
    /// Speak only the flat protocol (bitfield, HAVE, request, transfer, reject), as a peer of
    /// the original project: no capability fields in the handshake, no hierarchical message.
    #[arg(long)]
    legacy: bool,
    /// Upload at most this rate (e.g. 16MiB/s, 500KiB/s, 2MB/s, 100Mbit/s).
    #[arg(long, value_name = "RATE")]
    max_upload_rate: Option<String>,
    /// Flight record of every core input (JSON lines), for `tierswarm replay`.
    #[arg(long)]
    record: Option<PathBuf>,
    /// Progress as JSON on stdout, one object per line (schema in the README), instead of
    /// the `listening on` lines and the progress display.
    #[arg(long)]
    json_events: bool,
}

impl NodeArgs {
    /// The node these flags describe (rates parsed; the runtime a single one).
    fn node(&self) -> Result<Node> {
        let runtime = single(self.runtime)?;
        let mut node = Node::new().runtime(runtime).legacy(self.legacy);
        if let Some(r) = &self.max_upload_rate {
            node = node.max_upload_rate(rate("--max-upload-rate", r)?);
        }
        if let Some(path) = &self.record {
            node = node.record(path);
        }
        Ok(node)
    }
}

/// A rate flag: bytes per second, at least one.
fn rate(flag: &str, text: &str) -> Result<u64> {
    match tierswarm::parse_rate(text) {
        Ok(0) => Err(Failure::usage(format!(
            "{flag} {text}: a rate limit must be above zero"
        ))),
        Ok(r) => Ok(r),
        Err(e) => Err(Failure::usage(format!("{flag}: {e}"))),
    }
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
        /// Where to write the manifest (default FILE.tsm).
        #[arg(long)]
        manifest_out: Option<PathBuf>,
        #[command(flatten)]
        node: NodeArgs,
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
        /// Also accept peers here, as a URL like `--listen` of `share` (to serve what we have
        /// while downloading). Repeatable.
        #[arg(long)]
        listen: Vec<String>,
        /// Download at most this rate (e.g. 16MiB/s): requests are paced here, so they do not
        /// time out at the peer.
        #[arg(long, value_name = "RATE")]
        max_download_rate: Option<String>,
        /// Rebuild the availability store first: re-verify every unit of the output file
        /// against the content root (units that fail, or lack a proof, are fetched again).
        #[arg(long, conflicts_with = "restart")]
        repair: bool,
        /// Start the output afresh: discard its availability store, its proof log and its
        /// contents (e.g. when they belong to another file).
        #[arg(long)]
        restart: bool,
        #[command(flatten)]
        node: NodeArgs,
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
        /// Also print, on stdout, one JSON line per input with the actions the core took for
        /// it (the summary then goes to stderr).
        #[arg(long)]
        actions: bool,
    },
}

fn main() -> ExitCode {
    one_executor_thread_on_two_cores();
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

/// On a machine of two cores or fewer, the runtimes' executors run one thread each (unless
/// `ASYNC_STD_THREAD_COUNT` or `TOKIO_WORKER_THREADS` says otherwise): with one per core, a
/// transfer's tasks hop between the two, and the wake-ups cost more than the second thread
/// gives (async-std, a 1 GiB loopback fetch: −15 % CPU at both ends, +12 % rate; tokio, an
/// 8-leecher swarm: −6 % time, the single fetch the same; dev/BENCHMARKS.md, "One executor
/// thread on two cores"). Set before any thread starts, while the environment is ours alone.
fn one_executor_thread_on_two_cores() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores > 2 {
        return;
    }
    for var in ["ASYNC_STD_THREAD_COUNT", "TOKIO_WORKER_THREADS"] {
        if std::env::var_os(var).is_none() {
            std::env::set_var(var, "1");
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
        // Colours only for people: a pipe or a file gets plain lines.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn dispatch(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Manifest { file } => {
            println!("{}", root_to_hex(&tierswarm::content_root(&file)?));
            Ok(())
        }
        Cmd::Share {
            file,
            listen,
            manifest_out,
            node,
        } => share(&file, &listen, manifest_out, &node),
        Cmd::Fetch {
            manifest,
            peers,
            out,
            listen,
            max_download_rate,
            repair,
            restart,
            node,
        } => {
            let resume = match (repair, restart) {
                (true, _) => Resume::Repair,
                (_, true) => Resume::Restart,
                _ => Resume::Check,
            };
            let mut n = node.node()?.resume(resume);
            if let Some(r) = &max_download_rate {
                n = n.max_download_rate(rate("--max-download-rate", r)?);
            }
            fetch(n, &manifest, &peers, &out, &listen, node.json_events)
        }
        Cmd::Demo {
            peers,
            size,
            runtime,
            transport,
        } => {
            let size =
                tierswarm::parse_size(&size).map_err(|e| Failure::usage(format!("--size: {e}")))?;
            if peers == 0 {
                return Err(Failure::usage("--peers: must be at least 1"));
            }
            demo::run(runtime, transport, peers, size)
        }
        Cmd::Replay { record, actions } => {
            let report = if actions {
                let stdout = std::io::stdout();
                let mut out = std::io::BufWriter::new(stdout.lock());
                let report = tierswarm::replay_listing(&record, &mut out);
                // What was listed is written even when the replay then differs.
                std::io::Write::flush(&mut out)
                    .map_err(|e| Failure::failed(format!("stdout: {e}")))?;
                report?
            } else {
                tierswarm::replay(&record)?
            };
            let summary = match &report.truncated {
                None => format!(
                    "replayed {} inputs and {} actions: identical",
                    report.inputs, report.actions
                ),
                Some(note) => format!(
                    "replayed {} inputs and {} actions: identical up to where the record stops ({note})",
                    report.inputs, report.actions
                ),
            };
            if actions {
                eprintln!("{summary}");
            } else {
                println!("{summary}");
            }
            Ok(())
        }
    }
}

/// The runtime of a single node: `mixed` only makes sense for the demo's swarm.
fn single(runtime: Runtime) -> Result<tierswarm::Runtime> {
    match runtime {
        Runtime::Mixed => Err(Failure::usage(
            "--runtime mixed: only `demo` runs several peers; choose tokio, async-std or smol",
        )),
        r => Ok(r.of_peer(0)),
    }
}

/// Drains `transfer` at the first Ctrl-C; a second one exits at once.
fn drain_on_ctrl_c(transfer: &Transfer) {
    let cancel = transfer.canceller();
    let mut first = true;
    // Without a handler (one installed already) Ctrl-C keeps its default: exit at once.
    let _ = ctrlc::set_handler(move || {
        if std::mem::take(&mut first) {
            eprintln!(
                "interrupted: finishing in-flight requests and saving state (Ctrl-C again to quit now)"
            );
            cancel.drain();
        } else {
            eprintln!("tierswarm: interrupted again: exiting without draining");
            std::process::exit(130);
        }
    });
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

fn share(
    file: &Path,
    listen: &[String],
    manifest_out: Option<PathBuf>,
    args: &NodeArgs,
) -> Result<()> {
    let path = manifest_out.unwrap_or_else(|| {
        let mut p = file.as_os_str().to_owned();
        p.push(".tsm");
        PathBuf::from(p)
    });
    let key = key_beside_manifest(&path);
    let node = listen
        .iter()
        .fold(args.node()?, |n, url| n.listen(url))
        .quic_identity(&key);
    let pb = view::spinner(format!("hashing {}", file.display()));
    let mut transfer = node.share(file)?;
    pb.finish_and_clear();
    let manifest = transfer.manifest().clone();
    manifest
        .save(&path)
        .map_err(|e| Failure::failed(e.to_string()))?;
    eprintln!(
        "sharing {} ({}), root {}, manifest {}{}",
        file.display(),
        view::format_size(manifest.file_len),
        root_to_hex(&manifest.root),
        path.display(),
        if args.legacy {
            " (legacy: flat protocol only)"
        } else {
            ""
        }
    );
    if transfer.listening().iter().any(|u| u.scheme() == "quic") {
        eprintln!("QUIC certificate and key: {}", key.display());
    }
    drain_on_ctrl_c(&transfer);
    view::share(&mut transfer, args.json_events);
    let report = transfer.wait()?;
    eprintln!(
        "served {} units ({}) to {} in {}",
        report.stats.units_served,
        view::format_size(report.bytes_uploaded),
        view::count(report.peers, "peer"),
        view::format_duration(report.elapsed_s)
    );
    if report.units_rechecked > 0 {
        eprintln!(
            "{} checked against their proofs before they were sent ({} changed while or after it was hashed)",
            view::count(report.units_rechecked, "unit"),
            file.display()
        );
    }
    match report.outcome {
        Outcome::Failed(reason) => Err(Failure::failed(reason)),
        _ => Ok(()),
    }
}

fn fetch(
    node: Node,
    manifest_path: &Path,
    peers: &[String],
    out: &Path,
    listen: &[String],
    json: bool,
) -> Result<()> {
    let manifest = Manifest::load(manifest_path).map_err(|e| Failure::usage(e.to_string()))?;
    // The identity lives beside the other state of this download (`OUT.tsk`).
    let mut key = out.as_os_str().to_owned();
    key.push(".tsk");
    let node = listen.iter().fold(node, |n, url| n.listen(url));
    let node = peers
        .iter()
        .fold(node, |n, url| n.peer(url))
        .quic_identity(key);
    let repairing = view::spinner(format!("checking {}", out.display()));
    let mut transfer = node.fetch(&manifest, out)?;
    repairing.finish_and_clear();
    if let Some(notes) = transfer.resumed() {
        if notes.units > 0 {
            eprintln!(
                "{}",
                view::resumed(notes, manifest.file_len.div_ceil(65536))
            );
        }
    }
    drain_on_ctrl_c(&transfer);
    view::fetch(&mut transfer, json);
    let report = transfer.wait()?;
    let (units, total) = (report.units, report.total);
    match report.outcome {
        Outcome::Complete => {
            let secs = report.elapsed_s.max(1e-6);
            eprintln!(
                "fetched {} ({}) in {} at {} from {}; {} requests, {} retries, {} timeouts, {} bad units, \
                 {} refinements; served {} units ({}) to others",
                out.display(),
                view::format_size(manifest.file_len),
                view::format_duration(report.elapsed_s),
                view::format_rate((report.bytes_downloaded as f64 / secs) as u64),
                view::count(report.peers, "peer"),
                report.stats.requests,
                report.stats.retries,
                report.request_timeouts,
                report.stats.failed_units,
                report.stats.refine_requests,
                report.stats.units_served,
                view::format_size(report.bytes_uploaded)
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
