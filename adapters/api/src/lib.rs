//! # tierswarm
//!
//! Share and fetch files over a tierswarm swarm from a program, without assembling the pieces:
//! a [`Node`] builder (peers, listen addresses, runtime, limits and rates, legacy mode, flight
//! record) whose [`share`](Node::share) or [`fetch`](Node::fetch) starts the transfer and returns
//! a [`Transfer`] handle. The handle yields typed progress [`Event`]s, can be drained
//! (gracefully: in-flight requests settle, state is persisted) or aborted, and completes with a
//! [`Report`]: bytes, units from each peer and served to each, timeouts, disconnect reasons, the
//! core's counters by message kind.
//!
//! Everything below it is reachable for programs that need more: the sans-IO core
//! ([`tierswarm_core`]: drive it from any event loop with `node::Host` and `node::drive`) and the
//! runtime-neutral driver ([`tierswarm_io::driver`]).
//!
//! ```
//! # fn main() -> Result<(), tierswarm::Error> {
//! use tierswarm::{Node, Outcome};
//! let dir = tempfile::tempdir().unwrap();
//! let file = dir.path().join("hello.bin");
//! std::fs::write(&file, vec![7u8; 300_000]).unwrap();
//!
//! // A seeder on loopback (port 0: any free port) ...
//! let seeder = Node::new().listen("tcp://127.0.0.1:0").share(&file)?;
//! // ... and a fetcher that dials it.
//! let out = dir.path().join("copy.bin");
//! let fetch = Node::new()
//!     .peer(seeder.listening()[0].to_string())
//!     .fetch(seeder.manifest(), &out)?;
//! let report = fetch.wait()?;
//! assert_eq!(report.outcome, Outcome::Complete);
//! assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&file).unwrap());
//!
//! // Serving ends when asked: drained, it reports what it served.
//! seeder.drain();
//! let served = seeder.wait()?;
//! assert_eq!(served.bytes_uploaded, 300_000);
//! # Ok(()) }
//! ```
//!
//! ## Why a crate of its own
//!
//! The builder chooses among runtimes (tokio, async-std, smol) and transports (TCP, QUIC),
//! whose glue crates depend on `tierswarm-io`; a module inside `tierswarm-io` could not name
//! them without a dependency cycle. The `tierswarm` command line is a thin user of this crate.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod node;
mod transfer;

use std::fmt;
use std::path::Path;
use std::str::FromStr;

pub use node::Node;
pub use transfer::{Cancel, Event, Outcome, Report, Transfer};

pub use tierswarm_core::node::{Limits, Stats};
pub use tierswarm_core::wire::MessageKind;
pub use tierswarm_io::driver::{recorder::ReplayReport, Resume, ResumeNotes};
pub use tierswarm_io::manifest::root_to_hex;
pub use tierswarm_io::transport::PeerUrl;
pub use tierswarm_io::Manifest;
pub use tierswarm_units::{format_rate, format_size, parse_rate, parse_size};

/// The async runtime a node's network runs on.
///
/// The node's tasks run on the runtime's executor: tokio's multi-threaded runtime (the current
/// one when [`share`](Node::share) or [`fetch`](Node::fetch) is called inside one, otherwise one
/// the [`Transfer`] owns), or the global executors of async-std and smol. Peers on different
/// runtimes interoperate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Runtime {
    /// tokio.
    #[default]
    Tokio,
    /// async-std (discontinued upstream; kept for programs already on it).
    AsyncStd,
    /// smol.
    Smol,
}

impl Runtime {
    /// Every runtime, in the order of their names.
    pub const ALL: [Runtime; 3] = [Runtime::Tokio, Runtime::AsyncStd, Runtime::Smol];

    /// `tokio`, `async-std`, `smol`.
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Tokio => "tokio",
            Runtime::AsyncStd => "async-std",
            Runtime::Smol => "smol",
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Runtime {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Runtime::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| format!("unknown runtime {s:?} (tokio, async-std or smol)"))
    }
}

/// Which address of the builder an [`Error::Address`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressRole {
    /// A [`Node::listen`] address.
    Listen,
    /// A [`Node::peer`] address.
    Peer,
}

impl fmt::Display for AddressRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressRole::Listen => "listen",
            AddressRole::Peer => "peer",
        })
    }
}

/// Why a transfer could not start, or could not be waited for. [`Error::exit_code`] maps each
/// to the command line's exit status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An address that cannot be used: not a URL, an unknown scheme, a QUIC peer without its
    /// fingerprint, a listening address with one, a host that does not resolve.
    #[error("{role} {url}: {reason}")]
    Address {
        /// Listen or peer.
        role: AddressRole,
        /// The address as given.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// Bad input: a file, manifest, availability store, proof log, record or identity that
    /// cannot be used as it is (the message names it and the remedy).
    #[error("{0}")]
    Input(String),
    /// The work could not be done (a listener that cannot bind, a file that cannot be read or
    /// hashed, a runtime that cannot start).
    #[error("{0}")]
    Failed(String),
    /// The transfer was [aborted](Cancel::abort), or its runtime went away: no report.
    #[error("the transfer was aborted before it ended")]
    Aborted,
}

impl Error {
    /// The `tierswarm` command line's exit status for this error: 2 for bad input (addresses
    /// included), 1 otherwise, 130 for an abort.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Address { .. } | Error::Input(_) => 2,
            Error::Failed(_) => 1,
            Error::Aborted => 130,
        }
    }
}

/// The content root of the file at `path`: its BLAKE3 hash (what `b3sum` prints).
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let f = dir.path().join("a");
/// std::fs::write(&f, b"abc").unwrap();
/// let root = tierswarm::content_root(&f).unwrap();
/// assert_eq!(root, *blake3::hash(b"abc").as_bytes());
/// ```
pub fn content_root(path: &Path) -> Result<[u8; 32], Error> {
    let shown = path.display();
    let f = std::fs::File::open(path).map_err(|e| Error::Input(format!("{shown}: {e}")))?;
    tierswarm_io::hash_file_root(std::io::BufReader::with_capacity(1 << 20, f))
        .map_err(|e| Error::Failed(format!("{shown}: {e}")))
}

/// Feeds the flight record at `path` (written with [`Node::record`]) to a fresh core and checks
/// that the same actions come out.
///
/// ```
/// # fn main() -> Result<(), tierswarm::Error> {
/// use tierswarm::Node;
/// let dir = tempfile::tempdir().unwrap();
/// let file = dir.path().join("f");
/// std::fs::write(&file, vec![1u8; 100_000]).unwrap();
/// let seeder = Node::new().listen("127.0.0.1:0").share(&file)?;
/// let record = dir.path().join("fetch.jsonl");
/// Node::new()
///     .peer(seeder.listening()[0].to_string())
///     .record(&record)
///     .fetch(seeder.manifest(), dir.path().join("copy"))?
///     .wait()?;
/// let replayed = tierswarm::replay(&record)?;
/// assert!(replayed.inputs > 0 && replayed.truncated.is_none());
/// # Ok(()) }
/// ```
pub fn replay(path: &Path) -> Result<ReplayReport, Error> {
    tierswarm_io::driver::recorder::replay(path).map_err(|e| replay_error(path, e))
}

/// A replay's error as the API's: a record that is not one (a line that does not parse, bytes
/// that are not text) is bad input; a replay that differs, or a file that cannot be read, is
/// work that failed.
fn replay_error(path: &Path, e: tierswarm_io::driver::recorder::ReplayError) -> Error {
    use tierswarm_io::driver::recorder::ReplayError;
    let invalid = match &e {
        ReplayError::Parse { .. } => true,
        ReplayError::Io(io) => io.kind() == std::io::ErrorKind::InvalidData,
        ReplayError::Mismatch { .. } => false,
    };
    let said = format!("{}: {e}", path.display());
    if invalid {
        Error::Input(said)
    } else {
        Error::Failed(said)
    }
}

/// [`replay`], writing to `out` one JSON line per input with what the core did for it (its
/// actions, in order): why a node did what it did, read from its flight record. The format is
/// in `tierswarm_io::driver::recorder::replay_listing`; a replay that differs writes the
/// differing line before it fails.
///
/// ```
/// # fn main() -> Result<(), tierswarm::Error> {
/// use tierswarm::Node;
/// let dir = tempfile::tempdir().unwrap();
/// let file = dir.path().join("f");
/// std::fs::write(&file, vec![1u8; 100_000]).unwrap();
/// let seeder = Node::new().listen("127.0.0.1:0").share(&file)?;
/// let record = dir.path().join("fetch.jsonl");
/// Node::new()
///     .peer(seeder.listening()[0].to_string())
///     .record(&record)
///     .fetch(seeder.manifest(), dir.path().join("copy"))?
///     .wait()?;
/// let mut listing = Vec::new();
/// tierswarm::replay_listing(&record, &mut listing)?;
/// let text = String::from_utf8(listing).unwrap();
/// // The leecher asked the seeder for both units, and stored each as it came.
/// assert!(text.contains(r#"{"send":"request(1)","peer":"#));
/// assert!(text.contains(r#""msg":"transfer(1)""#) && text.contains(r#"{"store_unit":1,"#));
/// # Ok(()) }
/// ```
pub fn replay_listing(path: &Path, out: &mut dyn std::io::Write) -> Result<ReplayReport, Error> {
    tierswarm_io::driver::recorder::replay_listing(path, out).map_err(|e| replay_error(path, e))
}

/// The README's Rust examples run as doc tests, so its copy of the API never rots.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
