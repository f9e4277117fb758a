//! Per-peer state the node keeps besides its ledgers: lifecycle, what the peer holds, the
//! timing that sizes its window and its timeouts, and the blocks being fetched from it.
//!
//! What the node owes a peer or is owed by it lives in the ledgers, keyed by [`PeerId`]:
//! unit requests in [`RequestLedger`](super::requests::RequestLedger), refinements in
//! [`RefineLedger`](super::refinement::RefineLedger), queued serves in
//! [`Uploads`](super::uploads::Uploads), subscriptions in
//! [`Announcements`](super::announce::Announcements). Releasing a peer releases each.

use super::rtt::RttEstimator;
use crate::availability::{PeerView, TieredView};
use crate::bitfield::Bitfield;
use crate::tiers::Geometry;
use crate::time::Timestamp;
use crate::wire::UNSAID_SERVE_QUEUE;
use std::collections::{BTreeMap, VecDeque};

/// A smoothed round trip within this factor of the minimum means nothing of ours is queued at
/// the peer: the window may double per round trip.
const SLOW_START_RTT_RATIO: f64 = 1.25;

/// Blocks a peer began lately, remembered per peer with when ([`BlockStarts`]): a downloader
/// fetches from a few blocks of a peer at once (`Limits::max_current_blocks`, 4).
pub(crate) const BLOCK_STARTS_KEPT: usize = 4;

/// Rejected units remembered per peer.
pub const MAX_REJECTED: usize = 4096;

/// Weight of the newest sample in the throughput average (an EWMA over about five units: quick
/// to follow a peer that speeds up, steady over one slow unit).
const RATE_GAIN: f64 = 0.2;

/// Shortest interval between two units counted for throughput (guards a division by ~0 when
/// two units arrive in the same instant).
const MIN_RATE_INTERVAL_S: f64 = 1e-4;

/// An embedder-chosen handle for one connection. Never reused while the connection lives.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct PeerId(pub u64);

impl core::fmt::Display for PeerId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "p{}", self.0)
    }
}

/// Lifecycle of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Lifecycle {
    /// Connected, handshake not yet received: never scheduled.
    Unconfirmed,
    /// Handshaken; `capable` says which protocol path it takes.
    Ready {
        /// Speaks hierarchical availability.
        capable: bool,
    },
}

/// What the node holds for one remote peer besides its ledgers. Every collection here is
/// capped (see [`crate::node::Limits`]).
#[derive(Debug)]
pub struct Peer {
    pub(crate) id: PeerId,
    pub(crate) state: Lifecycle,
    pub(crate) peer_id: String,
    pub(crate) view: Option<PeerView>,
    pub(crate) rtt: RttEstimator,
    /// Bytes per second received from this peer (EWMA over units).
    pub(crate) rate: f64,
    /// Seconds per unit received from this peer (EWMA of the gaps between its units, each
    /// counted from the later of the previous unit and the unit's request, so time with
    /// nothing asked of the peer does not count). Unlike `rate`, units arriving in the same
    /// instant average in as gaps of zero instead of as near-infinite rates, so it does not
    /// overstate a peer that delivers in bursts (the endgame's expected deliveries use it).
    pub(crate) unit_interval: Option<f64>,
    pub(crate) last_unit_at: Option<Timestamp>,
    /// When the peer last answered one of our requests (transfer or reject): it is alive.
    pub(crate) last_answer_at: Option<Timestamp>,
    /// When the peer last made progress through its queue of our requests: a unit arrived, or
    /// a request it still had to answer was refused. A refusal of a request we withdrew (its
    /// CANCEL answered) is not progress: a peer that reads but no longer serves answers those
    /// at once, and they must not keep our other requests waiting on it.
    pub(crate) last_progress_at: Option<Timestamp>,
    /// Issue number of the latest request the peer answered with its unit.
    pub(crate) last_answered_seq: Option<u64>,
    /// Loss events (timeouts with no answer since) in a row; see [`Peer::note_loss`].
    pub(crate) consecutive_timeouts: u32,
    /// When the last loss event was counted.
    pub(crate) last_loss_at: Option<Timestamp>,
    /// T3 blocks we are downloading from this peer (hysteresis: stay until exhausted). At most
    /// [`Limits::max_current_blocks`](super::Limits::max_current_blocks).
    pub(crate) current_blocks: VecDeque<u64>,
    /// When we last sent it anything.
    pub(crate) last_sent: Timestamp,
    /// Since when its pace in a block is measured, for a window's time-to-live
    /// ([`next_ttl`](super::refinement::next_ttl)).
    pub(crate) starts: BlockStarts,
    /// When we last received anything from it (liveness).
    pub(crate) last_received: Timestamp,
    /// When a wake-up for this peer is already armed (so that re-checks are not duplicated).
    pub(crate) wake_at: Option<Timestamp>,
    /// Units this peer rejected, with when we may ask it again (rejections such as "busy" or
    /// "not available" are transient). At most [`MAX_REJECTED`] entries.
    pub(crate) rejected: BTreeMap<u64, Timestamp>,
    /// Units the peer is known to hold (from its summaries, windows and HAVEs): how far along
    /// it is, as far as we know. Uploads serve the least advanced requester first.
    pub(crate) known_units: u64,
    /// Requests the peer queues from us before it answers "busy" (its handshake's
    /// `serve_queue`): our window to it stays within half of it.
    pub(crate) serve_queue: u32,
}

/// Since when a peer's pace in each block is measured: when its summary said it began the
/// block (its first summary: those it held in part then), for the last [`BLOCK_STARTS_KEPT`]
/// it began, else when it became ready. A block's first refinement measures the pace from
/// there, not from when the peer connected (`dev/SIMULATION.md`, "Fast links").
#[derive(Debug, Clone)]
pub(crate) struct BlockStarts {
    ready_at: Timestamp,
    /// `(block, when we heard)`, newest last.
    begun: VecDeque<(u64, Timestamp)>,
}

impl BlockStarts {
    fn new(now: Timestamp) -> Self {
        BlockStarts {
            ready_at: now,
            begun: VecDeque::new(),
        }
    }

    /// The peer became ready at `at`.
    pub(crate) fn ready(&mut self, at: Timestamp) {
        self.ready_at = at;
    }

    /// The peer's summary said it began `block`; we heard at `at`.
    pub(crate) fn note(&mut self, block: u64, at: Timestamp) {
        if self.begun.len() >= BLOCK_STARTS_KEPT {
            self.begun.pop_front();
        }
        self.begun.push_back((block, at));
    }

    /// Since when the peer's pace in `block` is measured.
    pub(crate) fn since(&self, block: u64) -> Timestamp {
        self.begun
            .iter()
            .rev()
            .find(|&&(b, _)| b == block)
            .map_or(self.ready_at, |&(_, at)| at)
    }

    fn heap_bytes(&self) -> usize {
        self.begun.capacity() * core::mem::size_of::<(u64, Timestamp)>()
    }
}

impl Peer {
    pub(crate) fn new(id: PeerId, now: Timestamp) -> Self {
        Peer {
            id,
            state: Lifecycle::Unconfirmed,
            peer_id: String::new(),
            view: None,
            rtt: RttEstimator::new(),
            rate: 0.0,
            unit_interval: None,
            last_unit_at: None,
            last_answer_at: None,
            last_progress_at: None,
            last_answered_seq: None,
            consecutive_timeouts: 0,
            last_loss_at: None,
            current_blocks: VecDeque::new(),
            last_sent: now,
            starts: BlockStarts::new(now),
            last_received: now,
            wake_at: None,
            rejected: BTreeMap::new(),
            known_units: 0,
            serve_queue: UNSAID_SERVE_QUEUE,
        }
    }

    /// This connection's handle.
    pub fn id(&self) -> PeerId {
        self.id
    }

    /// Where the connection is in its lifecycle.
    pub fn lifecycle(&self) -> Lifecycle {
        self.state
    }

    /// The identity the peer gave in its handshake (at most 64 characters; empty before).
    pub fn peer_id(&self) -> &str {
        &self.peer_id
    }

    /// Round-trip estimate.
    pub fn rtt(&self) -> &RttEstimator {
        &self.rtt
    }

    /// A request or refinement sent at `sent_at` timed out at `now`: the timeout backs off.
    /// Requests sent before the last counted loss belong to that loss event (they were in
    /// flight when it happened), so a burst of timeouts — a window queued behind one stall —
    /// counts as one loss, towards "unresponsive" and in the backoff, not as one per request
    /// (as TCP doubles its timeout once per expiry of its one timer, not once per segment).
    pub(crate) fn note_loss(&mut self, sent_at: Timestamp, now: Timestamp) {
        if self.last_loss_at.is_none_or(|t| sent_at >= t) {
            self.rtt.on_timeout();
            self.consecutive_timeouts += 1;
            self.last_loss_at = Some(now);
        }
    }

    /// Whether the peer rejected `unit` recently enough that we should not ask again yet.
    pub(crate) fn refuses(&self, unit: u64, now: Timestamp) -> bool {
        self.rejected.get(&unit).is_some_and(|&until| until > now)
    }

    /// Remembers that the peer rejected `unit`, not to be asked again before `until`; when the
    /// memory is full, expired entries go first, then the lowest unit.
    pub(crate) fn note_rejected(&mut self, unit: u64, now: Timestamp, until: Timestamp) {
        if self.rejected.len() >= MAX_REJECTED {
            self.rejected.retain(|_, t| *t > now);
            if self.rejected.len() >= MAX_REJECTED {
                self.rejected.pop_first();
            }
        }
        self.rejected.insert(unit, until);
    }

    /// Whether the handshake is done.
    pub fn is_ready(&self) -> bool {
        matches!(self.state, Lifecycle::Ready { .. })
    }

    /// Whether the peer is handshaken and speaks the hierarchical protocol.
    pub fn is_capable(&self) -> bool {
        matches!(self.state, Lifecycle::Ready { capable: true })
    }

    pub(crate) fn init_view(&mut self, geo: Geometry, capable: bool) {
        self.view = Some(if capable {
            let mut v = TieredView::new(geo);
            // The node's holder counts follow every change of this view.
            v.log_changes();
            PeerView::Tiered(v)
        } else {
            PeerView::Flat(Bitfield::new(geo.units()))
        });
    }

    /// Whether the peer is known to hold every unit.
    pub(crate) fn has_everything(&self) -> bool {
        match &self.view {
            Some(PeerView::Tiered(v)) => v.all_bits().is_full(),
            Some(PeerView::Flat(bits)) => bits.is_full(),
            None => false,
        }
    }

    /// Request window in units, within caps: throughput × minimum round trip, plus `min`
    /// (headroom that makes the window grow by `min` per round trip). While answers still come
    /// at about the minimum round trip (nothing of ours waits in the peer's queue), the
    /// throughput part counts twice, so the window doubles per round trip (slow start) on a
    /// long, fast path. Once requests queue at the peer, growth is additive and at most about
    /// `min` of our requests wait there, committed to a peer that is slow to get to them.
    pub(crate) fn window(&self, unit: u64, min: u32, max: u32) -> u32 {
        let bdp = match (self.rtt.min_rtt(), self.rtt.srtt()) {
            (Some(floor), Some(srtt)) if self.rate > 0.0 => {
                let bdp = self.rate * floor.as_secs_f64() / unit as f64;
                let unqueued = srtt.as_secs_f64() <= SLOW_START_RTT_RATIO * floor.as_secs_f64();
                if unqueued {
                    2.0 * bdp
                } else {
                    bdp
                }
            }
            _ => 0.0,
        };
        let w = bdp.ceil().min(f64::from(max)) as u32;
        w.saturating_add(min).clamp(min, max)
    }

    /// The largest window we keep to this peer: `max_window`, within half of the requests the
    /// peer said it queues (beyond its queue, requests are answered "busy" and count towards a
    /// flood; half leaves room for requests still owed an answer after they timed out).
    pub(crate) fn window_cap(&self, max_window: u32) -> u32 {
        max_window.min((self.serve_queue / 2).max(1))
    }

    /// Records a unit of `bytes` received at `now` for the throughput estimates; `asked_at`:
    /// when its request was sent, if it answers one still owed.
    pub(crate) fn note_unit(&mut self, bytes: u64, now: Timestamp, asked_at: Option<Timestamp>) {
        if let Some(prev) = self.last_unit_at {
            let since = asked_at.map_or(prev, |a| a.max(prev));
            let gap = now.since(since).as_secs_f64();
            self.unit_interval = Some(match self.unit_interval {
                None => gap,
                Some(i) => (1.0 - RATE_GAIN) * i + RATE_GAIN * gap,
            });
            let dt = now.since(prev).as_secs_f64().max(MIN_RATE_INTERVAL_S);
            let inst = bytes as f64 / dt;
            self.rate = if self.rate == 0.0 {
                inst
            } else {
                (1.0 - RATE_GAIN) * self.rate + RATE_GAIN * inst
            };
        }
        self.last_unit_at = Some(now);
    }

    /// Heap bytes held in this struct for the peer (the node adds what its ledgers hold, see
    /// [`Node::peer_heap_bytes`](super::Node::peer_heap_bytes)).
    pub(crate) fn heap_bytes(&self) -> usize {
        core::mem::size_of::<Peer>()
            + self.view.as_ref().map_or(0, |v| v.heap_bytes())
            + self.current_blocks.capacity() * 8
            + self.starts.heap_bytes()
            + self.rejected.len() * 32
            + self.peer_id.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::time::Duration;

    #[test]
    fn a_blocks_pace_counts_from_when_the_peer_began_it_within_the_last_few() {
        let t = Timestamp::from_micros;
        let mut starts = BlockStarts::new(t(0));
        starts.ready(t(10));
        assert_eq!(starts.since(3), t(10), "unknown: since it became ready");
        starts.note(3, t(500));
        assert_eq!(starts.since(3), t(500));
        for b in 10..10 + BLOCK_STARTS_KEPT as u64 {
            starts.note(b, t(600 + b));
        }
        assert_eq!(starts.begun.len(), BLOCK_STARTS_KEPT, "bounded");
        assert_eq!(starts.since(3), t(10), "the oldest went first");
        assert_eq!(starts.since(11), t(611));
    }

    #[test]
    fn window_follows_throughput_times_min_rtt_within_caps() {
        let mut p = Peer::new(PeerId(1), Timestamp::ZERO);
        assert_eq!(p.window(65536, 4, 64), 4, "nothing measured: the minimum");
        p.rtt.sample(Duration::from_millis(100));
        // 10 units a second at 100 ms, answered at the base round trip: one unit in flight,
        // counted twice (slow start), plus the minimum.
        p.note_unit(65536, Timestamp::from_micros(0), None);
        p.note_unit(65536, Timestamp::from_micros(100_000), None);
        assert_eq!(p.window(65536, 4, 64), 6);
        // Answers now take four times the base round trip: our requests queue there, so the
        // window is one round trip's worth plus the minimum.
        for _ in 0..40 {
            p.rtt.sample(Duration::from_millis(400));
        }
        assert_eq!(p.window(65536, 4, 64), 5);
        assert_eq!(p.window(65536, 1, 64), 2);
        p.rate = 1e12;
        assert_eq!(p.window(65536, 4, 64), 64, "capped");
    }

    #[test]
    fn the_window_stays_within_half_the_queue_the_peer_said() {
        let mut p = Peer::new(PeerId(1), Timestamp::ZERO);
        assert_eq!(p.window_cap(256), 64, "unsaid: a queue of 128");
        p.serve_queue = 512;
        assert_eq!(p.window_cap(256), 256);
        assert_eq!(p.window_cap(64), 64, "never beyond our own cap");
        p.serve_queue = 1;
        assert_eq!(
            p.window_cap(256),
            1,
            "a queue of one still takes one request"
        );
        p.serve_queue = u32::MAX;
        assert_eq!(p.window_cap(256), 256);
    }

    #[test]
    fn a_burst_of_timeouts_is_one_loss() {
        let t = |ms: u64| Timestamp::from_micros(ms * 1000);
        let mut p = Peer::new(PeerId(1), Timestamp::ZERO);
        // Nine requests sent at 0..=8 ms all time out around 500 ms.
        for k in 0..9 {
            p.note_loss(t(k), t(500 + k));
        }
        assert_eq!(p.consecutive_timeouts, 1);
        // A request sent after that loss, lost too: a second event.
        p.note_loss(t(600), t(1500));
        assert_eq!(p.consecutive_timeouts, 2);
    }

    #[test]
    fn rejected_memory_is_capped_and_expires() {
        let mut p = Peer::new(PeerId(1), Timestamp::ZERO);
        let t = |us| Timestamp::from_micros(us);
        for u in 0..MAX_REJECTED as u64 {
            p.note_rejected(u, t(0), t(10));
        }
        assert!(p.refuses(5, t(5)));
        assert!(!p.refuses(5, t(10)), "expired");
        p.note_rejected(99_999, t(5), t(20));
        assert_eq!(p.rejected.len(), MAX_REJECTED, "full: the lowest unit went");
        assert!(!p.rejected.contains_key(&0));
        p.note_rejected(100_000, t(11), t(20));
        assert_eq!(p.rejected.len(), 2, "the expired ones went first");
    }
}
