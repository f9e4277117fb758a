//! The node's timers: one deadline queue ([`TimerQueue`]) of named timers. Timers that exist
//! once at most (persist, delta and push flushes) are armed with [`TimerTable::arm_once`],
//! which ignores a second arming until the first fires; per-request timers carry the identity
//! of what they guard, and a fired timer whose subject is gone or changed is ignored (lazy
//! cancellation). After every input the node also drops stale timers from the head of the
//! queue ([`TimerTable::drop_stale_heads`]), so that its `poll_timeout` names a deadline with
//! work to do rather than waking the embedder for an answered request.

use super::peer::PeerId;
use crate::time::Timestamp;
use crate::timers::TimerQueue;

/// What a deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    /// An unconfirmed peer's handshake is due.
    Handshake(PeerId),
    /// A unit request may have timed out.
    Request {
        unit: u64,
        peer: PeerId,
        sent_at: Timestamp,
    },
    /// An expired or cancelled request stops holding window room.
    ForgetRequest {
        unit: u64,
        peer: PeerId,
        sent_at: Timestamp,
    },
    /// A refinement may have timed out.
    Refine(u64),
    /// An expired refinement's late answer is no longer awaited.
    ForgetRefine(u64),
    /// Schedule a peer again (a backoff ended, a window may be refined again).
    Wake(PeerId),
    /// Persist what completed since the last store (once at most).
    Persist,
    /// Resend the full summary (recurring).
    SummaryRefresh,
    /// Send keep-alives to quiet peers (recurring).
    KeepAlive,
    /// Send the coalesced summary deltas (once at most).
    FlushDeltas,
    /// Push unit-window deltas to subscribers (once at most).
    FlushPushes,
    /// The upload pace allows another unit (once at most).
    UploadTokens,
    /// The download pace allows another request (once at most).
    DownloadTokens,
}

impl Timer {
    /// The slot of a timer that is armed once at most.
    fn singleton(self) -> Option<usize> {
        match self {
            Timer::Persist => Some(0),
            Timer::FlushDeltas => Some(1),
            Timer::FlushPushes => Some(2),
            Timer::UploadTokens => Some(3),
            Timer::DownloadTokens => Some(4),
            _ => None,
        }
    }

    /// The peer a timer is about, if any.
    fn peer(self) -> Option<PeerId> {
        match self {
            Timer::Handshake(p) | Timer::Wake(p) => Some(p),
            Timer::Request { peer, .. } | Timer::ForgetRequest { peer, .. } => Some(peer),
            _ => None,
        }
    }
}

/// Every armed timer.
#[derive(Debug, Default)]
pub(crate) struct TimerTable {
    queue: TimerQueue<Timer>,
    armed: [bool; 5],
}

impl TimerTable {
    /// Arms `t` at `at`.
    pub(crate) fn push(&mut self, at: Timestamp, t: Timer) {
        self.queue.push(at, t);
    }

    /// Arms a singleton timer unless it is armed already.
    pub(crate) fn arm_once(&mut self, at: Timestamp, t: Timer) {
        let slot = t.singleton().expect("arm_once takes singleton timers");
        if !self.armed[slot] {
            self.armed[slot] = true;
            self.queue.push(at, t);
        }
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Timestamp> {
        self.queue.next()
    }

    /// The earliest timer due at `now`, disarmed.
    pub(crate) fn pop_due(&mut self, now: Timestamp) -> Option<Timer> {
        let t = self.queue.pop_due(now)?;
        if let Some(slot) = t.singleton() {
            self.armed[slot] = false;
        }
        Some(t)
    }

    /// Drops stale timers from the head of the queue (those for which `stale` holds), so that
    /// [`TimerTable::next`] is a deadline that has work to do. Lazily cancelled request timers
    /// would otherwise wake an embedder for nothing (in a crowd, most of a node's wake-ups).
    pub(crate) fn drop_stale_heads(&mut self, mut stale: impl FnMut(&Timer) -> bool) {
        while let Some(t) = self.queue.peek() {
            if t.singleton().is_some() || !stale(t) {
                break;
            }
            self.queue.pop();
        }
    }

    /// Drops every timer about `peer` (it left: the queue stays bounded by live state).
    pub(crate) fn release_peer(&mut self, peer: PeerId) {
        self.queue.retain(|t| t.peer() != Some(peer));
    }

    /// Timers armed (stale ones included).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(us: u64) -> Timestamp {
        Timestamp::from_micros(us)
    }

    #[test]
    fn singletons_arm_once_until_they_fire() {
        let mut tt = TimerTable::default();
        tt.arm_once(t(5), Timer::Persist);
        tt.arm_once(t(1), Timer::Persist);
        assert_eq!(tt.len(), 1);
        assert_eq!(tt.next(), Some(t(5)));
        assert_eq!(tt.pop_due(t(5)), Some(Timer::Persist));
        tt.arm_once(t(9), Timer::Persist);
        assert_eq!(tt.next(), Some(t(9)), "armed again after firing");
    }

    #[test]
    fn equal_deadlines_fire_in_arming_order_and_peers_release_theirs() {
        let mut tt = TimerTable::default();
        let (a, b) = (PeerId(1), PeerId(2));
        tt.push(t(3), Timer::Wake(b));
        tt.push(t(3), Timer::Handshake(a));
        tt.push(t(3), Timer::KeepAlive);
        tt.push(
            t(2),
            Timer::Request {
                unit: 1,
                peer: a,
                sent_at: t(0),
            },
        );
        tt.release_peer(a);
        let fired: Vec<Timer> = std::iter::from_fn(|| tt.pop_due(t(9))).collect();
        assert_eq!(fired, vec![Timer::Wake(b), Timer::KeepAlive]);
    }

    #[test]
    fn stale_heads_are_dropped_up_to_the_first_live_timer() {
        let mut tt = TimerTable::default();
        let req = |unit| Timer::Request {
            unit,
            peer: PeerId(1),
            sent_at: t(0),
        };
        tt.push(t(1), req(1));
        tt.arm_once(t(2), Timer::Persist);
        tt.push(t(3), req(3));
        tt.push(t(4), req(4));
        // Every request is stale: the singleton at the head stops the drop.
        tt.drop_stale_heads(|_| true);
        assert_eq!(tt.next(), Some(t(2)));
        assert_eq!(tt.pop_due(t(2)), Some(Timer::Persist));
        // Request 3 is live: it stays, and so does the stale one behind it.
        tt.drop_stale_heads(|t| *t != req(3));
        assert_eq!(tt.next(), Some(t(3)));
        assert_eq!(tt.len(), 2);
    }
}
