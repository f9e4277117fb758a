//! Trace records: every decision the node takes, as data.
//!
//! Records are emitted as [`crate::node::Action::Trace`] when tracing is on, and serialize to
//! one JSON object per line with a fixed field order, so a trace is deterministic and can be
//! snapshot-tested and diffed.

use crate::node::PeerId;
use crate::time::Timestamp;

/// One decision or notable event.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
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
        reason: String,
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
        why: &'static str,
        /// Peers known to have some of it.
        availability: u16,
        /// Blocks passed over first, with why (at most 3).
        passed: Vec<(u64, &'static str)>,
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
        /// `"block"` (coarse-first), `"flat"` (legacy path) or `"endgame"`.
        path: &'static str,
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
        level: &'static str,
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
