//! # tierswarm-core
//!
//! The sans-IO heart of tierswarm: a peer-to-peer swarm file-transfer protocol whose peers track
//! availability **hierarchically** (T1 = 64 KiB units, T2 = 2 MiB, T3 = 32 MiB) and download
//! **coarse-first with lazy refinement**.
//!
//! This crate never touches a socket, a file, a clock or a thread. Time and randomness come in as
//! inputs; the same inputs give the same outputs, bit for bit. Embedders (the tokio and async-std
//! adapters, the simulator, your own event loop) own all I/O.
//!
//! Modules, one concept each:
//! - [`tiers`]: tier sizes and the arithmetic between offsets, units and blocks.
//! - [`bitfield`]: the bitfield type with the wire's byte encoding.
//! - [`availability`]: local tiers with promotion, and per-peer views of remote availability.
//! - [`store`]: the persisted availability store format (encode, decode, validate).
//! - [`wire`]: the framed protobuf peer protocol.
//! - [`node`]: the protocol state machine (events in, actions out) and its peers.
//! - [`rarity`]: rarest-first availability buckets.
//! - [`timers`]: the deadline queue; [`time`]: timestamps.
//! - [`trace`]: structured records of every decision.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod availability;
pub mod bitfield;
pub mod node;
pub mod rarity;
pub mod store;
pub mod tiers;
pub mod time;
pub mod timers;
pub mod trace;
pub mod wire;

mod mix;

#[cfg(test)]
mod test_support;

pub use availability::LocalTiers;
pub use bitfield::Bitfield;
pub use node::{drive, Action, Config, Event, Host, Input, Node, PeerId};
pub use tiers::{Geometry, Tier};
pub use time::Timestamp;
