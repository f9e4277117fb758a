//! # tierswarm-io
//!
//! The runtime-independent half of tierswarm's network adapters: everything the tokio and
//! async-std and smol drivers share. Nothing here depends on an async runtime: content and
//! files are plain blocking `std` I/O, and the session loop ([`driver::run`]) is written against
//! the runtime-neutral `futures` crate, a small [`driver::Runtime`] trait that each runtime's glue
//! implements, and the [`transport`] traits that TCP, QUIC and the in-memory transport
//! implement.
//!
//! Modules, one concept each:
//! - [`content`]: BLAKE3 verified units — the content root, the [`Outboard`] that produces a
//!   proof for any 64 KiB unit, and [`verify_unit`] that checks a unit from a hostile peer.
//! - [`manifest`]: the `.tsm` manifest file (root, length, suggested name) as JSON.
//! - [`data_file`]: positional unit reads and writes in the data file, and whether its contents
//!   are trusted (hashed whole against the root and unchanged since, by their metadata).
//! - [`store_file`]: atomic persistence of an opaque blob (the availability store).
//! - [`driver`]: the runtime-independent driver — a [`Session`] wrapping the core node with its
//!   content, framing, the clock, the proof tree of a download, the flight recorder, and the
//!   session loop ([`driver::run`]).
//! - [`transport`]: the transport seam — peer URLs, listeners, connections as a frame reader
//!   and a frame writer, framing over any byte stream, and an in-memory transport.
//!
//! ## Hashing: BLAKE3's `hazmat` API rather than `bao-tree`
//!
//! The content root is the plain BLAKE3 hash of the file, so `b3sum` agrees, and a unit's proof
//! is the chaining values beside its path in the standard BLAKE3 tree. `blake3::hazmat` (blake3 ≥
//! 1.8) exposes exactly the three operations this needs — the chaining value of a subtree at an
//! input offset ([`HasherExt::set_input_offset`](blake3::hazmat::HasherExt::set_input_offset) +
//! [`finalize_non_root`](blake3::hazmat::HasherExt::finalize_non_root)), non-root parent merges and
//! the root merge — over the same tree `bao-tree` uses. It is maintained with BLAKE3 itself, adds
//! no dependency (blake3 is already in the workspace) and leaves the proof layout ours, so it maps
//! 1:1 onto the wire's `BaoProof { leaf_start, leaf_count, repeated BaoProofNode { hash, level } }`.
//! `bao-tree` would bring its own outboard and encoding formats and several more crates for the
//! same tree.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod content;
pub mod data_file;
pub mod driver;
pub mod manifest;
pub mod read_back;
pub mod store_file;
pub mod transport;

pub use content::{
    hash_file_root, verify_unit, ContentError, Outboard, ProofNode, UnitProof, UNIT_LEN,
};
pub use data_file::DataFile;
pub use driver::{Effect, Session, SessionEvent, SessionOptions};
pub use manifest::{Manifest, ManifestError};
