//! Trace records: every decision the node takes, as data.
//!
//! Records are emitted as [`crate::node::Action::Trace`] when tracing is on, and serialize to
//! one JSON object per line with a fixed field order, so a trace is deterministic and can be
//! snapshot-tested and diffed.

use crate::node::{Backpressure, DisconnectReason, PeerId};
use crate::time::Timestamp;

/// Why a coarse block was chosen for a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub enum PickReason {
    /// Among the rarest, and the peer has all of it.
    #[serde(rename = "rarest, peer has all")]
    RarestPeerHasAll,
    /// Among the rarest, and a refined window of the peer's shows units to take.
    #[serde(rename = "rarest, refined")]
    RarestRefined,
}

/// Why a candidate block was passed over for a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub enum PassReason {
    /// The peer has none of it.
    #[serde(rename = "peer lacks it")]
    PeerLacksIt,
    /// The peer has it all, but every unit is present, requested or being verified here.
    #[serde(rename = "nothing left to take")]
    NothingLeftToTake,
    /// A refinement of it is in flight at the peer.
    #[serde(rename = "refining")]
    Refining,
    /// Its refined window is used up and still fresh.
    #[serde(rename = "refined window exhausted")]
    WindowExhausted,
    /// Refining it at the peer failed recently.
    #[serde(rename = "refine backing off")]
    RefineBackingOff,
    /// The refinement caps are reached.
    #[serde(rename = "refine cap")]
    RefineCap,
}

/// Which scheduling path requested units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RequestPath {
    /// Coarse-first (capable peer).
    Block,
    /// Flat (legacy peer).
    Flat,
    /// Endgame duplicates.
    Endgame,
}

/// One decision or notable event.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Record {
    /// A peer finished its handshake.
    PeerReady {
        /// The peer.
        peer: PeerId,
        /// Whether it takes the hierarchical path.
        capable: bool,
    },
    /// A peer left; what it held was released.
    PeerGone {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: DisconnectReason,
        /// Unit requests returned to the pool.
        requests_released: u32,
    },
    /// A coarse block was chosen for a peer.
    PickBlock {
        /// The peer.
        peer: PeerId,
        /// T3 block.
        block: u64,
        /// Why this one.
        why: PickReason,
        /// Peers known to have some of it.
        availability: u16,
        /// Blocks passed over first, with why (at most 3).
        passed: Vec<(u64, PassReason)>,
    },
    /// A refinement was sent.
    Refine {
        /// The peer.
        peer: PeerId,
        /// T3 block.
        block: u64,
        /// Request id (fencing token).
        id: u64,
        /// 0 for the first attempt.
        attempt: u32,
    },
    /// A refinement answer arrived.
    Refined {
        /// The peer.
        peer: PeerId,
        /// T3 block.
        block: u64,
        /// Request id.
        id: u64,
        /// Units the peer turned out to have there.
        units: u64,
        /// Whether it came after its timeout.
        late: bool,
    },
    /// A refinement timed out.
    RefineTimeout {
        /// The peer.
        peer: PeerId,
        /// T3 block.
        block: u64,
        /// Request id.
        id: u64,
        /// Attempt that timed out.
        attempt: u32,
        /// Whether another attempt follows (else the block is sought elsewhere).
        retry: bool,
    },
    /// Units were requested from a peer.
    Request {
        /// The peer.
        peer: PeerId,
        /// First unit.
        unit: u64,
        /// Number of consecutive units from `unit` requested in this decision.
        count: u32,
        /// Which path asked.
        path: RequestPath,
        /// Peer's window at the time.
        window: u32,
    },
    /// A unit request timed out.
    RequestTimeout {
        /// The peer.
        peer: PeerId,
        /// The unit.
        unit: u64,
        /// The timeout that expired, µs.
        rto_us: u64,
    },
    /// A peer refused a unit.
    Rejected {
        /// The peer.
        peer: PeerId,
        /// The unit.
        unit: u64,
        /// Its reason.
        reason: String,
    },
    /// A unit arrived and was handed out for verification.
    Received {
        /// The peer.
        peer: PeerId,
        /// The unit.
        unit: u64,
        /// Whether it came after its timeout or cancel.
        late: bool,
    },
    /// A unit was verified and marked.
    Completed {
        /// The unit.
        unit: u64,
        /// T2 block promoted, if any.
        t2: Option<u64>,
        /// T3 block promoted, if any.
        t3: Option<u64>,
    },
    /// A unit was handed to the embedder to send.
    Serve {
        /// The peer.
        peer: PeerId,
        /// The unit.
        unit: u64,
    },
    /// The backpressure level changed.
    Pressure {
        /// New level.
        level: Backpressure,
    },
    /// The store was handed out for persisting.
    Persist {
        /// Units present.
        units: u64,
    },
    /// Every unit is present.
    Complete,
}

/// A record with its time, as written to a trace file.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Stamped {
    /// When, µs.
    pub t: Timestamp,
    /// What.
    #[serde(flatten)]
    pub record: Record,
}

impl Stamped {
    /// One JSON line (no trailing newline).
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("records serialize")
    }
}
