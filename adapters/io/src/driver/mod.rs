//! Runtime-independent driver logic shared by the tokio and async-std adapters.
//!
//! The runtime glue implements [`Runtime`] (tasks and a timer); connections come from a node's
//! [`Transports`](crate::transport::Transports); everything else lives here:
//!
//! - [`Session`]: the core [`Node`](tierswarm_core::Node) plus the data file, proofs and the
//!   availability store. The glue feeds it connection news, frames, "unit written" reports and
//!   timeouts, and drains a small set of runtime-neutral [`Effect`]s (bytes to write on a
//!   connection, close a connection, progress news). Positional reads, proof lookups and store
//!   persistence happen inside, synchronously; received units are verified and written inside
//!   too, or by the glue on worker threads ([`Session::verify_off_loop`], [`Workers`]).
//! - [`FrameReader`]: per-connection framing over the core's
//!   [`decode_frame_limited`](tierswarm_core::wire::decode_frame_limited).
//! - [`Clock`]: a monotonic clock turned into core [`Timestamp`](tierswarm_core::Timestamp)s.
//! - [`ProofTree`]: the proof nodes a downloader has verified, enough to serve and re-verify
//!   every unit it holds without the whole file (persisted as `OUT.tsp`).
//! - [`run`]: the session loop — connections, dialling, effects, the drain — written once
//!   against the [`Runtime`] trait that each runtime's glue implements and the transport traits
//!   of [`crate::transport`].
//! - [`recorder`]: the flight recorder (`--record`) and its replay.
//! - [`proof`]: conversion between [`UnitProof`](crate::UnitProof) and the wire's
//!   [`Proof`](tierswarm_core::wire::Proof).

mod clock;
mod framing;
pub mod proof;
pub mod recorder;
mod resume;
mod runner;
mod session;
mod tree;
mod workers;

pub use clock::{Clock, MonotonicClock};
pub use framing::{FrameReader, Incoming};
pub use runner::{run, spawn, Outcome, RunConfig, RunHandle, Runtime};
pub use session::{
    default_max_verifying, store_paths, Effect, Resume, ResumeNotes, Role, Session, SessionError,
    SessionEvent, SessionOptions, UnitReadError, DEFAULT_MAX_VERIFYING, MAX_REMOTE_ID_CHARS,
    RESUME_SAMPLE,
};
pub use tree::{ProofTree, TreeError, HEADER_LEN as PROOF_LOG_HEADER_LEN};
pub use workers::{Verified, VerifyJob, Workers};
