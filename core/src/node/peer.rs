//! Per-peer state: lifecycle, what the peer holds, round-trip and throughput estimates, and the
//! request window they size.

use crate::availability::{PeerView, TieredView};
use crate::bitfield::Bitfield;
use crate::tiers::Geometry;
use crate::time::Timestamp;
use core::time::Duration;
use std::collections::{BTreeMap, VecDeque};

/// Rejected units remembered per peer.
pub const MAX_REJECTED: usize = 4096;

/// An embedder-chosen handle for one connection. Never reused while the connection lives.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct PeerId(pub u64);

impl core::fmt::Display for PeerId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "p{}", self.0)
    }
}

/// Smoothed round-trip estimate (RFC 6298) with exponential backoff on timeouts.
#[derive(Debug, Clone)]
pub struct RttEstimator {
    srtt: Option<Duration>,
    rttvar: Duration,
    min_rtt: Option<Duration>,
    backoff: u32,
}

impl RttEstimator {
    fn new() -> Self {
        RttEstimator {
            srtt: None,
            rttvar: Duration::ZERO,
            min_rtt: None,
            backoff: 0,
        }
    }

    /// Feeds one sample; clears the backoff (the peer answered).
    pub fn sample(&mut self, rtt: Duration) {
        self.min_rtt = Some(self.min_rtt.map_or(rtt, |m| m.min(rtt)));
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(s) => {
                let diff = s.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + diff) / 4;
                self.srtt = Some((s * 7 + rtt) / 8);
            }
        }
        self.backoff = 0;
    }

    /// A timeout: the next timeout doubles (capped by the caller's maximum).
    pub fn on_timeout(&mut self) {
        self.backoff = (self.backoff + 1).min(6);
    }

    /// Smoothed RTT, if sampled.
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// Smallest RTT seen, if sampled.
    pub fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt
    }

    /// Retransmission timeout: `srtt + 4·rttvar`, clamped, doubled per unanswered timeout.
    pub fn rto(&self, initial: Duration, min: Duration, max: Duration) -> Duration {
        let base = match self.srtt {
            None => initial,
            Some(s) => (s + self.rttvar * 4).clamp(min, max),
        };
        (base * (1u32 << self.backoff)).min(max)
    }
}

/// Lifecycle of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// Connected, handshake not yet received: never scheduled.
    Unconfirmed,
    /// Handshaken; `capable` says which protocol path it takes.
    Ready {
        /// Speaks hierarchical availability.
        capable: bool,
    },
}

/// Everything the node holds for one remote peer. Every collection here is capped (see
/// [`crate::node::Limits`]).
#[derive(Debug)]
pub struct Peer {
    pub(crate) id: PeerId,
    pub(crate) state: Lifecycle,
    pub(crate) peer_id: String,
    pub(crate) view: Option<PeerView>,
    pub(crate) rtt: RttEstimator,
    /// Bytes per second received from this peer (EWMA over units).
    pub(crate) rate: f64,
    pub(crate) last_unit_at: Option<Timestamp>,
    /// When the peer last answered one of our requests (transfer or reject).
    pub(crate) last_answer_at: Option<Timestamp>,
    /// Send time of the latest request the peer answered with its unit.
    pub(crate) last_answered_sent: Timestamp,
    /// Requests we sent that are still owed an answer (active, expired or cancelled).
    pub(crate) owed: u32,
    /// Requests we sent that are active (not expired, not cancelled).
    pub(crate) active: u32,
    pub(crate) consecutive_timeouts: u32,
    /// Refinements in flight to this peer.
    pub(crate) refines: u32,
    /// T3 blocks we are downloading from this peer (hysteresis: stay until exhausted).
    pub(crate) current_blocks: VecDeque<u64>,
    /// Units this peer asked for, waiting for an upload slot.
    pub(crate) serve_queue: VecDeque<u64>,
    /// Units handed to the embedder to send, not yet reported sent.
    pub(crate) serving: u32,
    /// T3 blocks this peer refined at us: it gets HAVEs for units completing there.
    pub(crate) subscriptions: VecDeque<u64>,
    /// Blocks whose refinement failed at this peer, with when to try again.
    pub(crate) refine_backoff: Vec<(u64, Timestamp)>,
    /// When we last sent it anything.
    pub(crate) last_sent: Timestamp,
    /// Blocks we last refined at this peer, when, and how long that window stays fresh (paces
    /// re-refinement; doubles while refinements bring nothing new).
    pub(crate) refined_at: Vec<(u64, Timestamp, core::time::Duration)>,
    /// When a wake-up for this peer is already armed (so that re-checks are not duplicated).
    pub(crate) wake_at: Option<Timestamp>,
    /// Units this peer rejected, with when we may ask it again (rejections such as "busy" or
    /// "not available" are transient). At most [`MAX_REJECTED`] entries.
    pub(crate) rejected: BTreeMap<u64, Timestamp>,
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
            last_unit_at: None,
            last_answer_at: None,
            last_answered_sent: Timestamp::ZERO,
            owed: 0,
            active: 0,
            consecutive_timeouts: 0,
            refines: 0,
            current_blocks: VecDeque::new(),
            serve_queue: VecDeque::new(),
            serving: 0,
            subscriptions: VecDeque::new(),
            refine_backoff: Vec::new(),
            last_sent: now,
            refined_at: Vec::new(),
            rejected: BTreeMap::new(),
            wake_at: None,
        }
    }

    /// Whether the peer rejected `unit` recently enough that we should not ask again yet.
    pub(crate) fn refuses(&self, unit: u64, now: Timestamp) -> bool {
        self.rejected.get(&unit).is_some_and(|&until| until > now)
    }

    pub(crate) fn is_ready(&self) -> bool {
        matches!(self.state, Lifecycle::Ready { .. })
    }

    pub(crate) fn is_capable(&self) -> bool {
        matches!(self.state, Lifecycle::Ready { capable: true })
    }

    pub(crate) fn init_view(&mut self, geo: Geometry, capable: bool) {
        self.view = Some(if capable {
            PeerView::Tiered(TieredView::new(geo))
        } else {
            PeerView::Flat(Bitfield::new(geo.units()))
        });
    }

    /// Request window: throughput × minimum RTT in units, plus headroom, within caps.
    pub(crate) fn window(&self, unit: u64, min: u32, max: u32) -> u32 {
        let bdp = match self.rtt.min_rtt() {
            Some(rtt) if self.rate > 0.0 => self.rate * rtt.as_secs_f64() / unit as f64,
            _ => 0.0,
        };
        ((bdp.ceil() as u32).saturating_add(min)).clamp(min, max)
    }

    /// Records a unit of `bytes` received at `now` for the throughput estimate.
    pub(crate) fn note_unit(&mut self, bytes: u64, now: Timestamp) {
        if let Some(prev) = self.last_unit_at {
            let dt = now.since(prev).as_secs_f64().max(1e-4);
            let inst = bytes as f64 / dt;
            self.rate = if self.rate == 0.0 {
                inst
            } else {
                0.8 * self.rate + 0.2 * inst
            };
        }
        self.last_unit_at = Some(now);
    }

    /// Heap bytes held for this peer (the per-peer memory figure of `dev/BENCHMARKS.md`).
    pub fn heap_bytes(&self) -> usize {
        core::mem::size_of::<Peer>()
            + self.view.as_ref().map_or(0, |v| v.heap_bytes())
            + self.current_blocks.capacity() * 8
            + self.serve_queue.capacity() * 8
            + self.subscriptions.capacity() * 8
            + self.refine_backoff.capacity() * 16
            + self.refined_at.capacity() * 32
            + self.rejected.len() * 32
            + self.peer_id.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rto_follows_samples_and_backs_off() {
        let (i, lo, hi) = (
            Duration::from_secs(3),
            Duration::from_millis(200),
            Duration::from_secs(60),
        );
        let mut r = RttEstimator::new();
        assert_eq!(r.rto(i, lo, hi), i);
        r.sample(Duration::from_millis(100));
        assert_eq!(r.rto(i, lo, hi), Duration::from_millis(300));
        r.on_timeout();
        assert_eq!(r.rto(i, lo, hi), Duration::from_millis(600));
        for _ in 0..10 {
            r.on_timeout();
        }
        assert!(r.rto(i, lo, hi) <= hi);
        r.sample(Duration::from_millis(100));
        assert!(r.rto(i, lo, hi) < Duration::from_secs(1));
    }
}
