//! Configuration: who the node is, and every bound it keeps.
//!
//! Each per-peer or global structure of the node is capped by one of the [`Limits`]; the
//! defaults are the figures the simulator and the loopback benchmarks were measured with
//! (`dev/SIMULATION.md`, `dev/BENCHMARKS.md`). Both types derive serde, with durations as whole
//! microseconds, so records and configuration files never re-list their fields by hand.

use crate::time::micros;
use core::time::Duration;
use serde::{Deserialize, Serialize};

/// Tunable limits. Every per-peer and global structure of the node is bounded by one of these.
/// Missing fields deserialize to their defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Connections accepted at once.
    pub max_peers: usize,
    /// Time an unconfirmed peer has to send its handshake.
    #[serde(with = "micros")]
    pub handshake_timeout: Duration,
    /// Smallest request window per peer (units owed an answer), and the window's growth per
    /// round trip once requests queue at the peer (`Peer::window`). 1: with tens of peers
    /// each holding a few more of our requests than it can answer in a round trip, requests
    /// wait seconds in their queues, committed to slow peers (`dev/SIMULATION.md`).
    pub min_window: u32,
    /// Largest request window per peer.
    pub max_window: u32,
    /// Active unit requests over all peers.
    pub max_requests: u32,
    /// Refinements in flight per peer.
    pub max_refines_per_peer: u32,
    /// Refinements in flight over all peers.
    pub max_refines: u32,
    /// Retries of a timed-out refinement at one peer before the block is sought elsewhere.
    pub refine_retries: u32,
    /// Base of the refinement retry backoff (doubled per attempt, with jitter).
    #[serde(with = "micros")]
    pub refine_backoff: Duration,
    /// The longest a refined window is trusted before a used-up one may be refined again: the
    /// time-to-live follows the peer's pace in the block, within a round trip and this
    /// (`dev/PROTOCOL.md` §4.3); while refinements of it bring nothing new it doubles instead,
    /// from at least this, up to `max_rto / 2`.
    #[serde(with = "micros")]
    pub refine_ttl: Duration,
    /// Timeout before any round trip is measured.
    #[serde(with = "micros")]
    pub initial_rto: Duration,
    /// Smallest timeout.
    #[serde(with = "micros")]
    pub min_rto: Duration,
    /// Largest timeout.
    #[serde(with = "micros")]
    pub max_rto: Duration,
    /// Consecutive request timeouts after which a peer is dropped as unresponsive.
    pub max_consecutive_timeouts: u32,
    /// How long a unit a peer rejected is not asked of that peer again.
    #[serde(with = "micros")]
    pub reject_backoff: Duration,
    /// T3 blocks downloaded from one peer at once (hysteresis).
    pub max_current_blocks: usize,
    /// Candidate blocks or units examined per decision before falling back to a bounded scan.
    pub max_probes: usize,
    /// Requests for the same unit at once in endgame, counting those at peers that have not
    /// gone quiet (delivered nothing for four units' time and a round trip).
    pub endgame_duplicates: u32,
    /// Requests a peer may queue at us before we reject with "busy". Said in our handshake
    /// (`serve_queue`) unless it is [`UNSAID_SERVE_QUEUE`](crate::wire::UNSAID_SERVE_QUEUE):
    /// a requester keeps its window within half of it, so an honest one never reaches it.
    /// Also the flood limit: a peer that sends as many requests no honest requester sends (for
    /// units we never advertised on this connection, or beyond its full queue since it was
    /// last at most half full) is dropped
    /// ([`DisconnectReason::RequestFlood`](super::DisconnectReason::RequestFlood)).
    pub max_serve_queue: usize,
    /// Units handed to the embedder per peer and not yet reported sent.
    pub upload_slots_per_peer: u32,
    /// Units handed to the embedder over all peers.
    pub upload_slots: u32,
    /// T3 blocks a peer may subscribe to (by refining them) for pushed HAVEs; 0 turns pushes
    /// off (the default: pull with backoff measured better, `dev/PROTOCOL.md` §4.3).
    pub max_subscriptions: usize,
    /// Persist after this many newly completed units...
    pub persist_every: u64,
    /// ...or this long after the first unpersisted one.
    #[serde(with = "micros")]
    pub persist_interval: Duration,
    /// Full T3 summary resent this often (heals lost deltas).
    #[serde(with = "micros")]
    pub summary_refresh: Duration,
    /// Keep-alive sent when nothing else was for this long.
    #[serde(with = "micros")]
    pub keepalive: Duration,
    /// A peer from which nothing at all (not even a keep-alive) arrived for this long is
    /// dropped ([`DisconnectReason::Idle`](super::DisconnectReason::Idle)): liveness is required
    /// of peers, not only offered. Checked at every keep-alive tick, so a silent peer goes
    /// within `liveness + keepalive`. Three keep-alive intervals: two lost keep-alives in a row
    /// do not cost a live connection.
    #[serde(with = "micros")]
    pub liveness: Duration,
    /// Enforced by the embedder: a write to a peer that makes no progress for this long drops
    /// the peer ([`DisconnectReason::WriteStalled`](super::DisconnectReason::WriteStalled)),
    /// freeing its upload slots, queued serves and socket.
    #[serde(with = "micros")]
    pub write_stall: Duration,
    /// Enforced by the embedder: a frame whose first byte arrived must be complete within this
    /// long ([`DisconnectReason::FrameTimeout`](super::DisconnectReason::FrameTimeout)).
    #[serde(with = "micros")]
    pub frame_timeout: Duration,
    /// Bytes per second this node uploads at most (units served, paced by a token bucket);
    /// `None`: unlimited.
    pub max_upload_rate: Option<u64>,
    /// Bytes per second this node requests at most (the request window is paced by a token
    /// bucket, so requests wait here instead of timing out at the peer); `None`: unlimited.
    pub max_download_rate: Option<u64>,
    /// Pacing of requests at the rate this node has been seen to receive (`None`: only
    /// `max_download_rate` paces). Requests beyond what the downlink can take only queue: the
    /// units wait behind each other, their requests time out and are asked again elsewhere,
    /// and uploaders spend their slots on a receiver that cannot take more
    /// (`dev/SIMULATION.md`, "A learned download pace").
    pub learned_pace: Option<LearnedPace>,
    /// Coalescing delay for availability deltas under backpressure.
    #[serde(with = "micros")]
    pub batch_delay: Duration,
    /// Coalescing delay for the T1 deltas pushed to subscribers of a block: one window message
    /// per block and subscriber per interval instead of one HAVE per unit.
    #[serde(with = "micros")]
    pub push_interval: Duration,
    /// Send a capable peer, before each unit served from a block we have in part, the units
    /// gained there since it was last told (news, `dev/PROTOCOL.md` §4.3), so that trading
    /// partners need not poll each other with refinements.
    pub serve_news: bool,
    /// Refinement credit earned per unit received: what knowing our peers may cost, per unit
    /// it brings (`dev/PROTOCOL.md` §4.3).
    pub refines_per_unit: f64,
    /// Refinement credit earned per second whatever arrives, so that a node that receives
    /// nothing can still look.
    pub refines_per_second: f64,
    /// Most refinement credit held at once (and at the start).
    pub refine_burst: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_peers: 200,
            handshake_timeout: Duration::from_secs(10),
            min_window: 1,
            max_window: 64,
            max_requests: 512,
            max_refines_per_peer: 4,
            max_refines: 64,
            refine_retries: 3,
            refine_backoff: Duration::from_millis(500),
            refine_ttl: Duration::from_millis(1000),
            initial_rto: Duration::from_secs(5),
            min_rto: Duration::from_millis(500),
            max_rto: Duration::from_secs(60),
            max_consecutive_timeouts: 8,
            reject_backoff: Duration::from_secs(2),
            max_current_blocks: 4,
            max_probes: 64,
            endgame_duplicates: 2,
            // The queue a peer that says none is taken to have: default handshakes leave it unsaid.
            max_serve_queue: crate::wire::UNSAID_SERVE_QUEUE as usize,
            upload_slots_per_peer: 2,
            upload_slots: 16,
            max_subscriptions: 0,
            persist_every: 256,
            persist_interval: Duration::from_secs(1),
            summary_refresh: Duration::from_secs(30),
            keepalive: Duration::from_secs(30),
            liveness: Duration::from_secs(90),
            write_stall: Duration::from_secs(20),
            frame_timeout: Duration::from_secs(30),
            max_upload_rate: None,
            max_download_rate: None,
            learned_pace: Some(LearnedPace::default()),
            batch_delay: Duration::from_millis(500),
            push_interval: Duration::from_millis(500),
            serve_news: true,
            refines_per_unit: 0.2,
            refines_per_second: 2.0,
            refine_burst: 64,
        }
    }
}

/// Node configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Content root (BLAKE3 of the file).
    pub info_hash: [u8; 32],
    /// File length in bytes.
    pub file_len: u64,
    /// Our identity in handshakes.
    pub peer_id: String,
    /// Speak hierarchical availability (false: a legacy node, flat protocol only).
    pub hierarchical: bool,
    /// Seed of every random choice the node makes.
    pub seed: u64,
    /// Emit [`Action::Trace`](super::Action::Trace) records.
    pub trace: bool,
    /// Limits.
    #[serde(default)]
    pub limits: Limits,
}

impl Config {
    /// A hierarchical node with default limits, seed 0 and tracing off.
    pub fn new(info_hash: [u8; 32], file_len: u64, peer_id: &str) -> Self {
        Config {
            info_hash,
            file_len,
            peer_id: peer_id.to_string(),
            hierarchical: true,
            seed: 0,
            trace: false,
            limits: Limits::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_round_trip_through_json_with_durations_in_micros() {
        let l = Limits {
            refine_ttl: Duration::from_micros(1_234_567),
            ..Limits::default()
        };
        let json = serde_json::to_value(&l).unwrap();
        assert_eq!(json["refine_ttl"], 1_234_567);
        assert_eq!(json["max_peers"], 200);
        let back: Limits = serde_json::from_value(json).unwrap();
        assert_eq!(back, l);
    }

    #[test]
    fn missing_limit_fields_take_their_defaults() {
        let l: Limits = serde_json::from_str(r#"{"max_window": 9}"#).unwrap();
        assert_eq!(l.max_window, 9);
        assert_eq!(l.min_window, Limits::default().min_window);
    }
}

/// How the node learns its download pace (the [`Limits::learned_pace`]): the receive rate is
/// measured over windows of `window`; requests are paced at `growth_gain` × the peak rate while
/// the peak still grows (a slow start that doubles each window at most), and at `steady_gain` ×
/// the peak once `growth_windows` windows in a row brought less than `growth_threshold` × the
/// peak. Once steady, a window above `probe_threshold` × the peak starts the growth again: the
/// requests paced a little above the peak all came back, so the pace, not the link, was the
/// limit (a faster peer arrived). A link that is the limit never gives more than its peak, so
/// it stays steady, with a tenth of its rate in requests ahead of it. The pace applies only to
/// requests beyond `free_queue` of the peak rate in flight. The peak never falls: a rate lost
/// later costs no more than no pace at all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LearnedPace {
    /// The window over which the receive rate is measured.
    #[serde(with = "micros")]
    pub window: Duration,
    /// Pace while the peak grows, as a multiple of the peak.
    pub growth_gain: f64,
    /// Pace once the peak has stopped growing. Above 1, so that a link that speeds up is seen.
    pub steady_gain: f64,
    /// A window's rate above this multiple of the peak counts as growth.
    pub growth_threshold: f64,
    /// Windows in a row without growth that end the slow start.
    pub growth_windows: u32,
    /// Once steady, a window's rate above this multiple of the peak restarts the slow start.
    /// Between 1 and `steady_gain`.
    pub probe_threshold: f64,
    /// Requests in flight may always cover this long at the peak rate; only those beyond wait
    /// for the pace. A queue that short behind the downlink costs nothing, and pacing below it
    /// held back the ramp of a small swarm whose capacity opens up as its peers trade (`smoke`
    /// lost 1 %).
    #[serde(with = "micros")]
    pub free_queue: Duration,
}

impl Default for LearnedPace {
    fn default() -> Self {
        LearnedPace {
            window: Duration::from_millis(250),
            growth_gain: 2.0,
            steady_gain: 1.1,
            growth_threshold: 1.25,
            growth_windows: 2,
            probe_threshold: 1.05,
            free_queue: Duration::from_millis(500),
        }
    }
}
