//! Unit requests we sent: the ledger that owns every request counter, and the node's handling
//! of their answers (TRANSFER, REJECT) and timeouts.
//!
//! A request is *active* until it is answered, expires or is cancelled; *owed* until its answer
//! arrives or it is forgotten (an expired or cancelled request still holds a little window room
//! until its answer, or a forget timer, settles it). Settled requests are remembered for a while
//! so that a late or repeated answer is recognised rather than taken as unsolicited. The ledger
//! keeps, at every step, `active` = the number of active requests, and per peer `owed`/`active`
//! = that peer's owed/active requests.
//!
//! A forgotten request may still sit in the peer's queue: a flat-only peer is sent no CANCEL,
//! and serves it, or answers it `held`, whenever it gets there. So each peer also counts its
//! forgotten requests not yet answered: `unanswered`, which an answer matching no record may
//! spend (the recent-answers ring alone held only seconds of a fast download's answers, and at
//! 1 GiB flat leechers disconnected each other for "unit nobody asked for"), and `late`, which
//! still occupies the peer's queue (it counts against the room [`RequestLedger::counts`] leaves,
//! else requests pile up beyond that queue and the server counts them as a flood). A peer
//! answers in issue order, so a unit served for a request issued after every forgotten one means
//! those were answered or lost: `late` is then cleared.

use super::api::DisconnectReason;
use super::outbox::Class;
use super::peer::PeerId;
use super::timers::Timer;
use super::{Action, Node};
use crate::tiers::Tier;
use crate::time::Timestamp;
use crate::trace::Record;
use crate::wire::Message;
use crate::wire::Proof;
use bytes::Bytes;
use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Settled requests remembered (so that their late answers are not taken as unsolicited).
pub(crate) const MAX_SETTLED: usize = 4096;

/// Shortest wait before an expired or cancelled request stops holding window room: at least a
/// couple of seconds even on a fast link, so a late answer usually finds it still owed.
const MIN_FORGET_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReqState {
    Active,
    Expired,
    Cancelled,
}

#[derive(Debug, Clone, Copy)]
struct UnitReq {
    sent_at: Timestamp,
    /// Issue order over the node's requests: a peer answers in this order, even among
    /// requests sent in the same instant.
    seq: u64,
    state: ReqState,
}

/// One peer's request counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PeerRequests {
    /// Requests still owed an answer (active, expired or cancelled).
    pub(crate) owed: u32,
    /// Active requests.
    pub(crate) active: u32,
    /// Forgotten requests that may still wait in the peer's queue (module docs).
    pub(crate) late: u32,
}

/// What a peer's forgotten requests leave behind (module docs).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Forgotten {
    /// Forgotten and never answered: how many answers matching no record it may still send.
    unanswered: u32,
    /// Issue number of the newest forgotten request: a unit served for a later one clears
    /// `late`.
    newest_seq: u64,
}

/// Everything the ledger keeps per peer besides its requests: one map entry, one lookup.
#[derive(Debug, Default, Clone, Copy)]
struct PeerEntry {
    counts: PeerRequests,
    forgotten: Forgotten,
}

/// What an answer (TRANSFER or REJECT) to `(unit, peer)` turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// It answers a request we still held (sent at `sent_at`, issued `seq`-th); `active` if
    /// that request was still active.
    Owed {
        sent_at: Timestamp,
        seq: u64,
        active: bool,
    },
    /// It answers a request settled before (expired and forgotten, or answered already).
    Settled,
    /// Nobody asked.
    Unsolicited,
}

/// Every unit request and its counters.
#[derive(Debug, Default)]
pub(crate) struct RequestLedger {
    requests: BTreeMap<(u64, PeerId), UnitReq>,
    by_peer: BTreeMap<PeerId, PeerEntry>,
    /// Each peer's active requests in issue order: `(seq, unit)`.
    active_by_peer: BTreeMap<PeerId, BTreeSet<(u64, u64)>>,
    /// The next request's issue number.
    next_seq: u64,
    /// Recently settled requests, oldest first; `true` for a forgotten one (not answered yet).
    settled: VecDeque<(u64, PeerId, bool)>,
    active: u32,
}

impl RequestLedger {
    /// Active requests over all peers.
    pub(crate) fn active(&self) -> u32 {
        self.active
    }

    /// `peer`'s counters.
    pub(crate) fn counts(&self, peer: PeerId) -> PeerRequests {
        self.by_peer
            .get(&peer)
            .map(|e| e.counts)
            .unwrap_or_default()
    }

    /// Whether any request (active or not) for `unit` to `peer` is held.
    pub(crate) fn contains(&self, unit: u64, peer: PeerId) -> bool {
        self.requests.contains_key(&(unit, peer))
    }

    /// Whether the request for `unit` to `peer` sent at `sent_at` is still active.
    pub(crate) fn is_active(&self, unit: u64, peer: PeerId, sent_at: Timestamp) -> bool {
        self.active_seq(unit, peer, sent_at).is_some()
    }

    /// The issue number of the request for `unit` to `peer` sent at `sent_at`, if it is still
    /// active.
    fn active_seq(&self, unit: u64, peer: PeerId, sent_at: Timestamp) -> Option<u64> {
        self.requests
            .get(&(unit, peer))
            .filter(|r| r.sent_at == sent_at && r.state == ReqState::Active)
            .map(|r| r.seq)
    }

    /// Whether the request sent to `peer` for `unit` at `sent_at` is held but no longer
    /// active (expired or cancelled): what [`RequestLedger::forget`] would drop.
    pub(crate) fn is_forgettable(&self, unit: u64, peer: PeerId, sent_at: Timestamp) -> bool {
        self.requests
            .get(&(unit, peer))
            .is_some_and(|r| r.sent_at == sent_at && r.state != ReqState::Active)
    }

    /// Active requests for `unit`.
    pub(crate) fn active_for(&self, unit: u64) -> u32 {
        self.requests
            .range((unit, PeerId(0))..=(unit, PeerId(u64::MAX)))
            .filter(|(_, r)| r.state == ReqState::Active)
            .count() as u32
    }

    /// Every held request, by unit then peer: `(unit, peer, active)`.
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, PeerId, bool)> + '_ {
        self.requests
            .iter()
            .map(|(&(u, p), r)| (u, p, r.state == ReqState::Active))
    }

    /// Every peer's queue of active requests, peer by peer: `(peer, head_sent_at, units)`, the
    /// units in issue order (a peer answers in that order, so a unit's index is its place: the
    /// number of our requests the peer answers before it), and `head_sent_at` when the first of
    /// them was sent.
    pub(crate) fn active_queues(
        &self,
    ) -> impl Iterator<Item = (PeerId, Timestamp, impl Iterator<Item = u64> + '_)> + '_ {
        self.active_by_peer.iter().map(move |(&peer, s)| {
            // Only the head's time is looked up: one search per peer, not per request.
            let head_sent_at = s
                .first()
                .and_then(|&(_, unit)| self.requests.get(&(unit, peer)))
                .map_or(Timestamp::ZERO, |r| r.sent_at);
            (peer, head_sent_at, s.iter().map(|&(_, unit)| unit))
        })
    }

    /// Records a request for `unit` sent to `peer` now.
    pub(crate) fn issue(&mut self, unit: u64, peer: PeerId, now: Timestamp) {
        let old = self.requests.insert(
            (unit, peer),
            UnitReq {
                sent_at: now,
                seq: self.next_seq,
                state: ReqState::Active,
            },
        );
        debug_assert!(old.is_none(), "the scheduler never asks twice");
        let c = &mut self.by_peer.entry(peer).or_default().counts;
        c.owed += 1;
        c.active += 1;
        self.active += 1;
        self.active_by_peer
            .entry(peer)
            .or_default()
            .insert((self.next_seq, unit));
        self.next_seq += 1;
    }

    /// An active request stops being active: the counters and the per-peer order follow.
    fn deactivate(&mut self, unit: u64, peer: PeerId, seq: u64) {
        self.active -= 1;
        self.by_peer.entry(peer).or_default().counts.active -= 1;
        if let Some(s) = self.active_by_peer.get_mut(&peer) {
            s.remove(&(seq, unit));
            if s.is_empty() {
                self.active_by_peer.remove(&peer);
            }
        }
    }

    /// The issue number of the request for `unit` held for `peer`.
    #[cfg(test)]
    fn seq_of(&self, unit: u64, peer: PeerId) -> Option<u64> {
        self.requests.get(&(unit, peer)).map(|r| r.seq)
    }

    /// `peer`'s active requests issued in `[from, before)`, oldest first, with their send
    /// times: when `peer` answers the request issued `before`-th, these were overtaken (a peer
    /// answers in order).
    pub(crate) fn active_issued_between(
        &self,
        peer: PeerId,
        from: u64,
        before: u64,
    ) -> Vec<(u64, Timestamp)> {
        let Some(s) = self.active_by_peer.get(&peer) else {
            return Vec::new();
        };
        s.range((from, 0)..(before, 0))
            .filter_map(|&(_, u)| Some((u, self.requests.get(&(u, peer))?.sent_at)))
            .collect()
    }

    /// Settles the request an answer from `peer` for `unit` answers; `served`: the answer is
    /// the unit itself (a TRANSFER), which a peer sends in issue order.
    pub(crate) fn answer(&mut self, unit: u64, peer: PeerId, served: bool) -> Answer {
        let Some(r) = self.requests.remove(&(unit, peer)) else {
            return match self.take_settled(unit, peer) {
                Some(forgotten) => {
                    if forgotten {
                        self.answered_late(peer);
                    }
                    Answer::Settled
                }
                // A forgotten request's record may have left the ring: an answer matching none
                // is one of those while the peer still owes any.
                None if self
                    .by_peer
                    .get(&peer)
                    .is_some_and(|e| e.forgotten.unanswered > 0) =>
                {
                    self.answered_late(peer);
                    Answer::Settled
                }
                None => Answer::Unsolicited,
            };
        };
        let active = r.state == ReqState::Active;
        let e = self.by_peer.entry(peer).or_default();
        e.counts.owed -= 1;
        if served && r.seq > e.forgotten.newest_seq {
            e.counts.late = 0;
        }
        if active {
            self.deactivate(unit, peer, r.seq);
        }
        self.settle(unit, peer, false);
        Answer::Owed {
            sent_at: r.sent_at,
            seq: r.seq,
            active,
        }
    }

    /// The active request for `unit` to `peer` timed out: it no longer counts as active, but is
    /// still owed its answer.
    pub(crate) fn expire(&mut self, unit: u64, peer: PeerId) {
        if let Some(r) = self.requests.get_mut(&(unit, peer)) {
            if r.state == ReqState::Active {
                r.state = ReqState::Expired;
                let seq = r.seq;
                self.deactivate(unit, peer, seq);
            }
        }
    }

    /// Cancels the active requests for `unit` to peers other than `except` (endgame: the unit
    /// arrived). Returns who was asked, and when, in peer order.
    pub(crate) fn cancel_others(
        &mut self,
        unit: u64,
        except: PeerId,
    ) -> smallvec::SmallVec<[(PeerId, Timestamp); 2]> {
        let mut cancelled: smallvec::SmallVec<[(PeerId, Timestamp, u64); 2]> =
            smallvec::SmallVec::new();
        for (&(_, q), r) in self
            .requests
            .range_mut((unit, PeerId(0))..=(unit, PeerId(u64::MAX)))
        {
            if q != except && r.state == ReqState::Active {
                r.state = ReqState::Cancelled;
                cancelled.push((q, r.sent_at, r.seq));
            }
        }
        for &(q, _, seq) in &cancelled {
            self.deactivate(unit, q, seq);
        }
        cancelled.iter().map(|&(q, t, _)| (q, t)).collect()
    }

    /// Stops waiting for the expired or cancelled request sent at `sent_at`: it no longer
    /// holds window room, and its answer, if it still comes, is recognised as late. Returns
    /// whether it was still held.
    pub(crate) fn forget(&mut self, unit: u64, peer: PeerId, sent_at: Timestamp) -> bool {
        let k = (unit, peer);
        let stale = self.is_forgettable(unit, peer, sent_at);
        if stale {
            let seq = self.requests.remove(&k).map_or(0, |r| r.seq);
            self.settle(unit, peer, true);
            let e = self.by_peer.entry(peer).or_default();
            e.counts.owed -= 1;
            e.counts.late = e.counts.late.saturating_add(1);
            e.forgotten.unanswered = e.forgotten.unanswered.saturating_add(1);
            e.forgotten.newest_seq = e.forgotten.newest_seq.max(seq);
        }
        stale
    }

    /// A forgotten request of `peer`'s was answered after all.
    fn answered_late(&mut self, peer: PeerId) {
        if let Some(e) = self.by_peer.get_mut(&peer) {
            e.forgotten.unanswered = e.forgotten.unanswered.saturating_sub(1);
            e.counts.late = e.counts.late.saturating_sub(1);
        }
    }

    /// Drops everything held for `peer`. Returns the units whose active requests were
    /// released, in unit order.
    pub(crate) fn release_peer(&mut self, peer: PeerId) -> Vec<u64> {
        let keys: Vec<(u64, PeerId)> = self
            .requests
            .keys()
            .filter(|(_, q)| *q == peer)
            .copied()
            .collect();
        let mut released = Vec::new();
        for k in keys {
            if let Some(r) = self.requests.remove(&k) {
                if r.state == ReqState::Active {
                    self.active -= 1;
                    released.push(k.0);
                }
            }
        }
        self.by_peer.remove(&peer);
        self.active_by_peer.remove(&peer);
        released
    }

    fn settle(&mut self, unit: u64, peer: PeerId, forgotten: bool) {
        if self.settled.len() >= MAX_SETTLED {
            self.settled.pop_front();
        }
        self.settled.push_back((unit, peer, forgotten));
    }

    /// Whether `(unit, peer)` was settled, and if so whether it was forgotten unanswered;
    /// consumes the record.
    fn take_settled(&mut self, unit: u64, peer: PeerId) -> Option<bool> {
        let i = self
            .settled
            .iter()
            .position(|&(u, p, _)| (u, p) == (unit, peer))?;
        self.settled.remove(i).map(|(_, _, forgotten)| forgotten)
    }

    /// Heap bytes held for `peer` (its share of the request map).
    pub(crate) fn peer_heap_bytes(&self, peer: PeerId) -> usize {
        let held = self.counts(peer).owed as usize;
        held * (core::mem::size_of::<((u64, PeerId), UnitReq)>() + 16)
            + core::mem::size_of::<(PeerId, PeerEntry)>()
    }
}

impl Node {
    pub(super) fn on_transfer(
        &mut self,
        peer: PeerId,
        unit: u64,
        data: Bytes,
        proof: Option<Proof>,
    ) {
        // Never asked of anyone; checked first, since an answer matching no record may pass as
        // a forgotten request's (`RequestLedger::answer`).
        if unit >= self.geo.units() {
            return self.disconnect(peer, DisconnectReason::UnsolicitedTransfer);
        }
        let answer = self.requests.answer(unit, peer, true);
        let (sent_at, active) = match answer {
            Answer::Unsolicited => {
                return self.disconnect(peer, DisconnectReason::UnsolicitedTransfer)
            }
            Answer::Settled => (None, false),
            Answer::Owed {
                sent_at,
                seq,
                active,
            } => (Some((sent_at, seq)), active),
        };
        let now = self.now;
        let len = self.geo.unit_len(unit);
        let p = self.answered_by(peer, true);
        let mut overtaken_since = None;
        if let (true, Some((sent_at, seq))) = (active, sent_at) {
            p.rtt.sample(now.since(sent_at));
            if p.last_answered_seq.is_none_or(|last| seq > last) {
                overtaken_since = Some((p.last_answered_seq.map_or(0, |l| l + 1), seq));
                p.last_answered_seq = Some(seq);
            }
        }
        p.note_unit(len, now, sent_at.map(|(at, _)| at));
        self.download_received(len);
        if let Some((from, before)) = overtaken_since {
            self.time_out_overtaken(peer, from, before);
        }
        self.sched.mark_dirty(peer);
        if self.local.has_at_tier(Tier::T1, unit) || self.claims.is_verifying(unit) {
            self.stats.duplicate_units += 1;
            return;
        }
        self.trace(Record::Received {
            peer,
            unit,
            late: !active,
        });
        self.claim(unit);
        self.claims.start_verifying(unit);
        self.cancel_others(unit, peer);
        self.emit(
            Class::Control,
            Action::StoreUnit {
                peer,
                unit,
                data,
                proof,
            },
        );
    }

    /// `peer` answered one of our requests (a TRANSFER or a REJECT, in time or late). Any
    /// answer shows it alive: only losses with no answer at all in between count towards
    /// "unresponsive". Only `progress` (a unit, or the refusal of a request not withdrawn)
    /// shows it working through its queue, which keeps our requests queued behind waiting.
    fn answered_by(&mut self, peer: PeerId, progress: bool) -> &mut super::Peer {
        let now = self.now;
        let p = self
            .peers
            .get_mut(&peer)
            .expect("frames come from known peers");
        p.last_answer_at = Some(now);
        if progress {
            p.last_progress_at = Some(now);
        }
        p.consecutive_timeouts = 0;
        p
    }

    /// `peer` answered the request issued `before`-th, so its requests still active that were
    /// issued earlier (from `from`, after the last such answer) were lost on the way there or
    /// back: each times out after `min_rto` (a grace for a reordered answer) instead of after
    /// the peer's whole RTO, which a deep serve queue and per-loss doubling stretch to tens of
    /// seconds (a lossy crowd's last unit waited 49 s; `dev/PROTOCOL.md` §6).
    fn time_out_overtaken(&mut self, peer: PeerId, from: u64, before: u64) {
        let at = self.now.add(self.cfg.limits.min_rto);
        for (unit, sent_at) in self.requests.active_issued_between(peer, from, before) {
            self.timers.push(
                at,
                Timer::Request {
                    unit,
                    peer,
                    sent_at,
                },
            );
        }
    }

    /// Cancels the other requests for `unit` (endgame duplicates): each still gets its answer.
    /// CANCEL goes only to peers that speak the hierarchical protocol (the original flat one has
    /// no such kind): a flat-only peer sends the duplicate, which is dropped on arrival.
    fn cancel_others(&mut self, unit: u64, except: PeerId) {
        for (q, sent_at) in self.requests.cancel_others(unit, except) {
            self.arm_forget(unit, q, sent_at);
            if self.peers.get(&q).is_some_and(|p| p.is_capable()) {
                self.send(q, Message::Cancel { unit });
            }
        }
    }

    /// Arms the timer after which an expired or cancelled request stops holding window room.
    /// Its answer may still come later: it is then recognised as settled.
    fn arm_forget(&mut self, unit: u64, peer: PeerId, sent_at: Timestamp) {
        let wait = self
            .peers
            .get(&peer)
            .map_or(self.cfg.limits.max_rto, |p| self.rto(p) * 2)
            .max(MIN_FORGET_WAIT);
        self.timers.push(
            self.now.add(wait),
            Timer::ForgetRequest {
                unit,
                peer,
                sent_at,
            },
        );
    }

    pub(super) fn on_reject(&mut self, peer: PeerId, unit: u64, reason: String) {
        let active = match self.requests.answer(unit, peer, false) {
            Answer::Unsolicited => {
                return self.disconnect(peer, DisconnectReason::UnsolicitedReject)
            }
            Answer::Settled => return,
            Answer::Owed { active, .. } => active,
        };
        let now = self.now;
        let until = now.add(self.cfg.limits.reject_backoff);
        // Every request a capable peer holds that is no longer active was withdrawn with a
        // CANCEL; a flat-only peer gets none, but our HAVE of the unit withdraws it there too
        // (answered "held"). Such a refusal answers the withdrawal, not the peer's queue: it is
        // no sign that the peer is serving.
        let withdrawn = !active
            && (reason == Self::HELD || self.peers.get(&peer).is_some_and(|p| p.is_capable()));
        let p = self.answered_by(peer, !withdrawn);
        if active {
            p.note_rejected(unit, now, until);
            self.timers.push(until, Timer::Wake(peer));
            self.stats.retries += 1;
            self.unclaim_if_free(unit);
            self.trace(Record::Rejected { peer, unit, reason });
            self.sched.mark_dirty(peer);
            self.wake_starved();
        }
    }

    pub(super) fn on_forget_request(&mut self, unit: u64, peer: PeerId, sent_at: Timestamp) {
        if self.requests.forget(unit, peer, sent_at) {
            self.sched.mark_dirty(peer);
        }
    }

    pub(super) fn on_request_timeout(&mut self, unit: u64, peer: PeerId, sent_at: Timestamp) {
        let Some(seq) = self.requests.active_seq(unit, peer, sent_at) else {
            return;
        };
        let p = self
            .peers
            .get(&peer)
            .expect("requests are released with peers");
        let rto = self.rto(p);
        // A peer answers its requests in order, so a request queued behind others is late only
        // if the peer has made no progress for a whole timeout: re-arm from its last progress
        // (not from answers to requests we withdrew, which a peer that stopped serving still
        // sends). The hard limit keeps a unit from waiting forever behind a trickling peer. But
        // if a request sent after this one was answered, this one (or its answer) was lost.
        let overtaken = p.last_answered_seq.is_some_and(|last| last > seq);
        if let Some(last) = p.last_progress_at.filter(|&t| t > sent_at && !overtaken) {
            let again = last.add(rto);
            if again > self.now && self.now.since(sent_at) < self.cfg.limits.max_rto {
                self.timers.push(
                    again,
                    Timer::Request {
                        unit,
                        peer,
                        sent_at,
                    },
                );
                return;
            }
        }
        self.requests.expire(unit, peer);
        self.stats.request_timeouts += 1;
        self.stats.retries += 1;
        let now = self.now;
        let limits = &self.cfg.limits;
        let p = self.peers.get_mut(&peer).expect("present");
        p.note_loss(sent_at, now);
        // Unresponsive: many losses in a row and no answer at all for a while (a peer that
        // answers others but loses some is slow or lossy, not dead).
        let silent = p
            .last_answer_at
            .is_none_or(|t| now.since(t) >= limits.max_rto / 2);
        let unresponsive = p.consecutive_timeouts >= limits.max_consecutive_timeouts && silent;
        let capable = p.is_capable();
        self.arm_forget(unit, peer, sent_at);
        // The request may only be waiting in the peer's queue (others served first, §5): take
        // it back, so that the unit is not sent twice once it is asked of someone else. A lost
        // request finds nothing to cancel; a flat-only peer has no such kind.
        if capable {
            self.send(peer, Message::Cancel { unit });
        }
        self.trace(Record::RequestTimeout {
            peer,
            unit,
            rto_us: now.since(sent_at).as_micros() as u64,
        });
        self.unclaim_if_free(unit);
        if unresponsive {
            self.disconnect(peer, DisconnectReason::Unresponsive);
        } else {
            self.sched.mark_dirty(peer);
        }
        self.wake_starved();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(us: u64) -> Timestamp {
        Timestamp::from_micros(us)
    }

    fn counts(owed: u32, active: u32, late: u32) -> PeerRequests {
        PeerRequests { owed, active, late }
    }

    /// The counters agree with the map after every operation.
    fn check(l: &RequestLedger) {
        let active = l.iter().filter(|(_, _, a)| *a).count() as u32;
        assert_eq!(l.active(), active);
        for (&peer, PeerEntry { counts: c, .. }) in &l.by_peer {
            let owed = l.iter().filter(|(_, p, _)| *p == peer).count() as u32;
            let act = l.iter().filter(|(_, p, a)| *p == peer && *a).count() as u32;
            assert_eq!((c.owed, c.active), (owed, act), "peer {peer}");
        }
        // The per-peer issue order holds exactly the active requests.
        let ordered: usize = l.active_by_peer.values().map(|s| s.len()).sum();
        assert_eq!(ordered as u32, active);
        for (&peer, s) in &l.active_by_peer {
            for &(seq, unit) in s {
                assert_eq!(l.seq_of(unit, peer), Some(seq));
            }
        }
    }

    /// Places follow each peer's issue order and close up as requests settle; settled and
    /// expired requests have none.
    #[test]
    fn places_count_the_requests_a_peer_answers_first() {
        let (a, b) = (PeerId(1), PeerId(2));
        let mut l = RequestLedger::default();
        for (unit, peer, at) in [(30, a, 1), (10, a, 2), (20, b, 3), (40, a, 4), (10, b, 5)] {
            l.issue(unit, peer, t(at));
        }
        let queues = |l: &RequestLedger| -> Vec<(PeerId, u64, Vec<u64>)> {
            l.active_queues()
                .map(|(p, head, units)| (p, head.as_micros(), units.collect()))
                .collect()
        };
        assert_eq!(
            queues(&l),
            vec![(a, 1, vec![30, 10, 40]), (b, 3, vec![20, 10])]
        );
        assert!(matches!(l.answer(30, a, true), Answer::Owed { .. }));
        l.expire(20, b);
        assert_eq!(queues(&l), vec![(a, 2, vec![10, 40]), (b, 5, vec![10])]);
        check(&l);
    }

    #[test]
    fn issue_answer_expire_forget_keep_the_counters() {
        let (a, b) = (PeerId(1), PeerId(2));
        let mut l = RequestLedger::default();
        l.issue(10, a, t(1));
        l.issue(11, a, t(1));
        l.issue(10, b, t(2));
        check(&l);
        assert_eq!(l.active_for(10), 2);
        assert_eq!(
            l.answer(11, a, true),
            Answer::Owed {
                sent_at: t(1),
                seq: 1,
                active: true
            }
        );
        check(&l);
        assert_eq!(
            l.answer(11, a, true),
            Answer::Settled,
            "a repeat is recognised once"
        );
        assert_eq!(l.answer(11, a, true), Answer::Unsolicited);
        l.expire(10, b);
        check(&l);
        assert_eq!(l.counts(b), counts(1, 0, 0));
        assert!(!l.forget(10, b, t(1)), "another request's timer");
        assert!(l.forget(10, b, t(2)));
        check(&l);
        assert_eq!(l.counts(b), counts(0, 0, 1));
        assert_eq!(
            l.answer(10, b, true),
            Answer::Settled,
            "late answer after forgetting"
        );
        assert_eq!(l.counts(b), PeerRequests::default());
        assert_eq!(l.counts(a), counts(1, 1, 0));
    }

    #[test]
    fn overtaken_requests_are_the_active_ones_issued_before_an_answered_one() {
        let (a, b) = (PeerId(1), PeerId(2));
        let mut l = RequestLedger::default();
        // Issue numbers 0..=5; 0, 1, 3 and 5 to `a` (0 and 1 in the same instant).
        l.issue(10, a, t(1));
        l.issue(11, a, t(1));
        l.issue(12, b, t(2));
        l.issue(13, a, t(2));
        l.issue(14, b, t(3));
        l.issue(15, a, t(3));
        assert_eq!(l.seq_of(13, a), Some(3));
        l.expire(11, a);
        assert!(matches!(l.answer(15, a, true), Answer::Owed { seq: 5, .. }));
        check(&l);
        // Answering issue 5 overtook 0 and 3 (1 expired; 2 and 4 are b's).
        assert_eq!(
            l.active_issued_between(a, 0, 5),
            vec![(10, t(1)), (13, t(2))]
        );
        assert_eq!(l.active_issued_between(a, 1, 5), vec![(13, t(2))]);
        assert!(l.active_issued_between(b, 0, 2).is_empty());
        l.release_peer(a);
        assert!(l.active_issued_between(a, 0, 9).is_empty());
        assert_eq!(
            l.active_issued_between(b, 0, 9),
            vec![(12, t(2)), (14, t(3))]
        );
    }

    #[test]
    fn cancel_others_and_release_peer() {
        let (a, b, c) = (PeerId(1), PeerId(2), PeerId(3));
        let mut l = RequestLedger::default();
        for p in [a, b, c] {
            l.issue(5, p, t(p.0));
        }
        l.issue(6, b, t(9));
        let cancelled = l.cancel_others(5, b);
        assert_eq!(cancelled.as_slice(), &[(a, t(1)), (c, t(3))]);
        check(&l);
        assert_eq!(l.active_for(5), 1);
        assert_eq!(l.counts(a), counts(1, 0, 0));
        // A cancelled request still gets its answer, which is not active.
        assert_eq!(
            l.answer(5, a, true),
            Answer::Owed {
                sent_at: t(1),
                seq: 0,
                active: false
            }
        );
        assert_eq!(l.release_peer(b), vec![5, 6]);
        check(&l);
        assert_eq!(l.counts(b), PeerRequests::default());
        assert_eq!(l.active(), 0);
    }

    #[test]
    fn settled_memory_is_bounded() {
        let p = PeerId(1);
        let mut l = RequestLedger::default();
        for u in 0..(MAX_SETTLED as u64 + 10) {
            l.issue(u, p, t(0));
            l.answer(u, p, true);
        }
        assert_eq!(l.settled.len(), MAX_SETTLED);
        assert_eq!(
            l.answer(0, p, true),
            Answer::Unsolicited,
            "the oldest was forgotten"
        );
        assert_eq!(l.answer(MAX_SETTLED as u64, p, true), Answer::Settled);
    }

    /// A forgotten request's late answer is recognised however many answers settled since
    /// (a fast download's answers push its record out of the ring in seconds), but only one
    /// such answer per forgotten request.
    #[test]
    fn a_forgotten_request_is_answered_late_after_its_record_left_the_ring() {
        let (slow, fast) = (PeerId(1), PeerId(2));
        let mut l = RequestLedger::default();
        l.issue(7, slow, t(1));
        l.expire(7, slow);
        assert!(l.forget(7, slow, t(1)));
        for u in 100..=(100 + MAX_SETTLED as u64) {
            l.issue(u, fast, t(2));
            l.answer(u, fast, true);
        }
        assert!(!l.settled.iter().any(|&(u, p, _)| (u, p) == (7, slow)));
        assert_eq!(l.answer(7, slow, false), Answer::Settled, "held, at last");
        assert_eq!(l.answer(7, slow, true), Answer::Unsolicited, "only once");
        assert_eq!(l.answer(100, fast, true), Answer::Unsolicited);
        check(&l);
    }

    /// Forgotten requests keep occupying the peer's queue (`late`) until answered, or until a
    /// unit is served for a request issued after all of them (a peer serves in issue order, so
    /// the rest were lost); rejects come out of order and clear nothing.
    #[test]
    fn forgotten_requests_hold_the_queue_until_a_later_unit_is_served() {
        let p = PeerId(1);
        let mut l = RequestLedger::default();
        for u in [1, 2, 3] {
            l.issue(u, p, t(u));
            l.expire(u, p);
            assert!(l.forget(u, p, t(u)));
        }
        assert_eq!(l.counts(p).late, 3);
        assert_eq!(l.answer(2, p, false), Answer::Settled);
        assert_eq!(l.counts(p).late, 2);
        l.issue(4, p, t(4));
        l.issue(5, p, t(5));
        assert!(matches!(l.answer(5, p, false), Answer::Owed { .. }));
        assert_eq!(l.counts(p).late, 2, "a reject is no sign of order");
        assert!(matches!(l.answer(4, p, true), Answer::Owed { .. }));
        assert_eq!(l.counts(p).late, 0, "served after every forgotten one");
        // The two never answered may still come; an answer matching no record counts as one
        // of them (whose own record, while in the ring, is still recognised).
        assert_eq!(l.answer(9, p, true), Answer::Settled);
        assert_eq!(l.answer(1, p, true), Answer::Settled);
        assert_eq!(l.answer(8, p, true), Answer::Unsolicited);
        assert_eq!(l.answer(3, p, true), Answer::Settled);
        check(&l);
    }
}
