//! Refinements we asked for: the ledger that owns refine ids (fencing tokens), retries with
//! backoff, and the policy that keeps refined windows fresh; and the node's handling of refine
//! responses and timeouts.
//!
//! A refined window is a snapshot of which units of a T3 block a peer holds. It lives in the
//! peer's [`TieredView`](crate::availability::TieredView), with when it was refined and for how
//! long it is trusted (one record, evicted with the window). Once used up, it may be refined
//! again after its time-to-live; a refinement that brings nothing new doubles that wait, so a
//! peer that stays partial is not polled (`dev/PROTOCOL.md` §4.3).

use super::api::DisconnectReason;
use super::config::Limits;
use super::peer::{BlockStarts, Peer, PeerId};
use super::timers::Timer;
use super::Node;
use crate::availability::{PeerView, TieredView};
use crate::tiers::Tier;
use crate::time::Timestamp;
use crate::trace::Record;
use crate::wire::Message;
use bytes::Bytes;
use core::time::Duration;
use rand_core::RngCore;
use std::collections::{BTreeMap, BTreeSet};

/// Blocks whose refinement is backing off, remembered per peer (the soonest to expire goes
/// when full).
const MAX_BACKOFFS_PER_PEER: usize = 64;

/// A rejected refinement is not asked again at that peer for this many base backoffs.
const REJECT_BACKOFF_FACTOR: u32 = 4;

/// Retry backoff doubles per attempt up to 2^this.
const MAX_BACKOFF_DOUBLINGS: u32 = 10;

/// Jitter of a retry's backoff: a factor drawn uniformly from 0.75 to 1.25 in steps of 0.001
/// (±25 %, so that peers that timed out together do not retry together).
const JITTER_STEPS: u64 = 501;
const JITTER_MIN: f64 = 0.75;

/// One refinement in flight or expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refinement {
    pub(crate) peer: PeerId,
    pub(crate) block: u64,
    pub(crate) sent_at: Timestamp,
    /// 0 for the first attempt.
    pub(crate) attempt: u32,
    /// Timed out (its answer, if it still comes, is late).
    pub(crate) expired: bool,
    /// Units of the block we already knew the peer had when asking.
    pub(crate) known: u64,
}

#[derive(Debug, Default)]
struct PeerRefines {
    in_flight: u32,
    /// Blocks whose refinement failed or was rejected, with when to try again.
    backoff: Vec<(u64, Timestamp)>,
}

/// Every refinement and its counters.
#[derive(Debug)]
pub(crate) struct RefineLedger {
    by_id: BTreeMap<u64, Refinement>,
    /// `(peer, block)` of every refinement in flight (not expired).
    in_flight: BTreeSet<(PeerId, u64)>,
    attempts: BTreeMap<(PeerId, u64), u32>,
    by_peer: BTreeMap<PeerId, PeerRefines>,
    active: u32,
    next_id: u64,
    /// Refinements we may still send: earned per unit received and per second, spent per
    /// refinement, capped at `Limits::refine_burst`.
    credit: f64,
    /// When `credit` last earned its per-second share.
    credited_at: Option<Timestamp>,
}

impl Default for RefineLedger {
    /// An empty ledger under the default limits.
    fn default() -> Self {
        RefineLedger::new(&Limits::default())
    }
}

impl RefineLedger {
    /// An empty ledger holding a full burst of `l`'s credit.
    pub(crate) fn new(l: &Limits) -> Self {
        RefineLedger {
            by_id: BTreeMap::new(),
            in_flight: BTreeSet::new(),
            attempts: BTreeMap::new(),
            by_peer: BTreeMap::new(),
            active: 0,
            next_id: 1,
            credit: f64::from(l.refine_burst),
            credited_at: None,
        }
    }

    /// Refinements in flight over all peers.
    pub(crate) fn active(&self) -> u32 {
        self.active
    }

    /// Whether a refinement of `block` is in flight at `peer`.
    pub(crate) fn in_flight(&self, peer: PeerId, block: u64) -> bool {
        self.in_flight.contains(&(peer, block))
    }

    /// How many more refinements may be sent to `peer` now: within the caps in flight, and
    /// within the credit.
    pub(crate) fn room(&self, peer: PeerId, l: &Limits) -> usize {
        let mine = self.by_peer.get(&peer).map_or(0, |p| p.in_flight);
        let caps = l
            .max_refines_per_peer
            .saturating_sub(mine)
            .min(l.max_refines.saturating_sub(self.active)) as usize;
        caps.min(self.credit.max(0.0) as usize)
    }

    /// Earns the credit of `units` units received and of the time since the last call.
    pub(crate) fn earn(&mut self, units: u64, now: Timestamp, l: &Limits) {
        let seconds = self.credited_at.map_or(0.0, |t| now.since(t).as_secs_f64());
        self.credited_at = Some(now);
        let earned = units as f64 * l.refines_per_unit + seconds * l.refines_per_second;
        self.credit = (self.credit + earned).min(f64::from(l.refine_burst));
    }

    /// Whether refining `block` at `peer` is backing off at `now`.
    pub(crate) fn backing_off(&self, peer: PeerId, block: u64, now: Timestamp) -> bool {
        self.by_peer.get(&peer).is_some_and(|p| {
            p.backoff
                .iter()
                .any(|&(b, until)| b == block && until > now)
        })
    }

    /// Forgets backoffs that ended.
    pub(crate) fn prune_backoff(&mut self, peer: PeerId, now: Timestamp) {
        if let Some(p) = self.by_peer.get_mut(&peer) {
            p.backoff.retain(|&(_, until)| until > now);
        }
    }

    fn back_off(&mut self, peer: PeerId, block: u64, until: Timestamp) {
        let list = &mut self.by_peer.entry(peer).or_default().backoff;
        if list.len() >= MAX_BACKOFFS_PER_PEER {
            let soonest = (0..list.len()).min_by_key(|&i| list[i].1).expect("full");
            list.remove(soonest);
        }
        list.push((block, until));
    }

    /// Records a refinement of `block` sent to `peer` now; returns its id and attempt number.
    pub(crate) fn start(
        &mut self,
        peer: PeerId,
        block: u64,
        now: Timestamp,
        known: u64,
    ) -> (u64, u32) {
        let id = self.next_id;
        self.next_id += 1;
        let attempt = self.attempts.get(&(peer, block)).copied().unwrap_or(0);
        self.by_id.insert(
            id,
            Refinement {
                peer,
                block,
                sent_at: now,
                attempt,
                expired: false,
                known,
            },
        );
        self.in_flight.insert((peer, block));
        self.by_peer.entry(peer).or_default().in_flight += 1;
        self.active += 1;
        self.credit -= 1.0;
        (id, attempt)
    }

    /// Takes the refinement an answer from `peer` with `id` answers; `None` if we never asked
    /// that peer with that id (the fencing token does not match).
    pub(crate) fn answer(&mut self, id: u64, peer: PeerId) -> Option<Refinement> {
        let r = *self.by_id.get(&id).filter(|r| r.peer == peer)?;
        self.by_id.remove(&id);
        if !r.expired {
            self.settle_in_flight(r.peer, r.block);
        }
        Some(r)
    }

    fn settle_in_flight(&mut self, peer: PeerId, block: u64) {
        self.active -= 1;
        self.in_flight.remove(&(peer, block));
        if let Some(p) = self.by_peer.get_mut(&peer) {
            p.in_flight -= 1;
        }
    }

    /// The refinement answered well: its retries start over.
    pub(crate) fn succeeded(&mut self, peer: PeerId, block: u64) {
        self.attempts.remove(&(peer, block));
    }

    /// The peer refused to refine `block`: not asked again there before `until`.
    pub(crate) fn rejected(&mut self, peer: PeerId, block: u64, until: Timestamp) {
        self.back_off(peer, block, until);
    }

    /// Whether refinement `id` is in flight and not expired (its timeout has work to do).
    pub(crate) fn is_awaited(&self, id: u64) -> bool {
        self.by_id.get(&id).is_some_and(|r| !r.expired)
    }

    /// Whether refinement `id` expired and is still held (its forget timer has work to do).
    pub(crate) fn is_expired(&self, id: u64) -> bool {
        self.by_id.get(&id).is_some_and(|r| r.expired)
    }

    /// Marks refinement `id` expired; returns it if it was in flight.
    pub(crate) fn expire(&mut self, id: u64) -> Option<Refinement> {
        let r = self.by_id.get_mut(&id).filter(|r| !r.expired)?;
        r.expired = true;
        let r = *r;
        self.settle_in_flight(r.peer, r.block);
        Some(r)
    }

    /// After a timeout of `(peer, block)`: the next attempt number and whether it is within
    /// `retries` (if not, the count starts over and the block is sought elsewhere for a while).
    /// The block backs off at that peer until `until` computed by `wait`.
    fn next_attempt(&mut self, peer: PeerId, block: u64, retries: u32) -> (u32, bool) {
        let attempt = self.attempts.get(&(peer, block)).copied().unwrap_or(0) + 1;
        let retry = attempt <= retries;
        if retry {
            self.attempts.insert((peer, block), attempt);
        } else {
            self.attempts.remove(&(peer, block));
        }
        (attempt, retry)
    }

    /// Drops an expired refinement whose answer is no longer awaited.
    pub(crate) fn forget(&mut self, id: u64) {
        if self.is_expired(id) {
            self.by_id.remove(&id);
        }
    }

    /// Drops everything held for `peer`.
    pub(crate) fn release_peer(&mut self, peer: PeerId) {
        let ids: Vec<u64> = self
            .by_id
            .iter()
            .filter(|(_, r)| r.peer == peer)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(r) = self.by_id.remove(&id) {
                if !r.expired {
                    self.active -= 1;
                    self.in_flight.remove(&(peer, r.block));
                }
            }
        }
        self.attempts.retain(|&(p, _), _| p != peer);
        self.by_peer.remove(&peer);
    }

    /// Heap bytes held for `peer`.
    pub(crate) fn peer_heap_bytes(&self, peer: PeerId) -> usize {
        self.by_peer.get(&peer).map_or(0, |p| {
            core::mem::size_of::<PeerRefines>()
                + p.backoff.capacity() * 16
                + p.in_flight as usize * (core::mem::size_of::<Refinement>() + 32)
        })
    }
}

/// Units a peer should have gained in a block before its used-up window there is worth
/// refining again.
const REFINE_WORTH: f64 = 8.0;

/// The time-to-live of `v`'s window of `block`, refreshed at `now` ([`next_ttl`]), and the
/// units the window shows: the refresh taught something unless it shows no more than `known`
/// (the refinement's count when asked; `None` for news, which always does).
pub(crate) fn refreshed_ttl(
    v: &TieredView,
    block: u64,
    known: Option<u64>,
    starts: &BlockStarts,
    srtt: Option<Duration>,
    now: Timestamp,
    l: &Limits,
) -> (Duration, u64) {
    let units = v.window(block).map_or(0, |w| w.count_ones());
    let news = known.is_none_or(|k| units > k);
    let last = v.last_refresh(block);
    let ttl = next_ttl(last, starts.since(block), units, news, now, srtt, l);
    (ttl, units)
}

/// How long a window just refined (or told in news) is trusted before a used-up one may be
/// refined again.
///
/// A refresh that taught nothing doubles the previous wait, to at least `refine_ttl` and at
/// most `max_rto / 2`: a peer that stays partial is not polled. One that taught something
/// trusts the window for about the time the peer takes to gain [`REFINE_WORTH`] more units of
/// the block, at the pace it gained them since `last` (the previous refresh: when, and how many
/// units it showed) or, at the first, since `since` (when its summary said it began the block,
/// else when it became ready), within one round trip (`floor`) and `refine_ttl`. On links of a
/// few Mbit/s that is `refine_ttl`, as before; on a LAN, where a peer gains hundreds of units a
/// second, a fixed second left the downloaders fetching nearly everything from the seeder
/// (`dev/SIMULATION.md`, "Fast links"). The refinement credit still bounds what polling costs
/// per unit received.
pub(crate) fn next_ttl(
    last: Option<(Timestamp, Duration, u64)>,
    since: Timestamp,
    units: u64,
    news: bool,
    now: Timestamp,
    floor: Option<Duration>,
    l: &Limits,
) -> Duration {
    if !news {
        // At least the base: a peer that stopped gaining there (or held its units before it
        // connected, which the first refresh takes for a fast pace) is not polled again soon.
        let previous = last.map_or(l.refine_ttl, |(_, ttl, _)| ttl);
        return (previous * 2).max(l.refine_ttl).min(l.max_rto / 2);
    }
    let (from, before) = last.map_or((since, 0), |(at, _, n)| (at, n));
    let gained = units.saturating_sub(before);
    match floor {
        Some(floor) if gained > 0 => now
            .since(from)
            .mul_f64(REFINE_WORTH / gained as f64)
            .clamp(floor.min(l.refine_ttl), l.refine_ttl),
        _ => l.refine_ttl,
    }
}

/// When `peer`'s refined window of `block` goes stale, if it is still fresh at `now`.
pub(crate) fn fresh_until(p: &Peer, block: u64, now: Timestamp) -> Option<Timestamp> {
    let Some(PeerView::Tiered(v)) = &p.view else {
        return None;
    };
    let (at, ttl) = v.freshness(block)?;
    Some(at.add(ttl)).filter(|&stale_at| now < stale_at)
}

impl Node {
    /// Asks `peer` for the T1 bits of T3 block `block`.
    pub(super) fn send_refine(&mut self, peer: PeerId, block: u64) {
        let Some(p) = self.peers.get(&peer) else {
            return;
        };
        let known = match &p.view {
            Some(PeerView::Tiered(v)) => v.window(block).map_or(0, |w| w.count_ones()),
            _ => 0,
        };
        let rto = self.rto(p);
        let (id, attempt) = self.refines.start(peer, block, self.now, known);
        self.stats.refine_requests += 1;
        self.timers.push(self.now.add(rto), Timer::Refine(id));
        self.trace(Record::Refine {
            peer,
            block,
            id,
            attempt,
        });
        let msg = Message::RefineRequest {
            from_tier: 3,
            to_tier: 1,
            index: block,
            id,
        };
        self.send(peer, msg);
    }

    pub(super) fn on_refine_response(
        &mut self,
        peer: PeerId,
        tier: u32,
        start: u64,
        bits: Bytes,
        id: u64,
        reject: Option<String>,
    ) {
        let Some(r) = self.refines.answer(id, peer) else {
            return self.disconnect(peer, DisconnectReason::UnsolicitedRefineResponse);
        };
        let late = r.expired;
        let now = self.now;
        let p = self
            .peers
            .get_mut(&peer)
            .expect("frames come from known peers");
        if late {
            self.stats.late_refines += 1;
        } else {
            p.rtt.sample(now.since(r.sent_at));
        }
        if let Some(reason) = reject {
            let until = now.add(self.cfg.limits.refine_backoff * REJECT_BACKOFF_FACTOR);
            self.refines.rejected(peer, r.block, until);
            self.trace(Record::Rejected {
                peer,
                unit: r.block,
                reason,
            });
            self.sched.mark_dirty(peer);
            return;
        }
        let Some(PeerView::Tiered(v)) = p.view.as_mut() else {
            return;
        };
        let expected = self.geo.unit_range(Tier::T3, r.block).map(|u| u.start);
        let (Some(Tier::T1), Ok(first)) = (Tier::from_number(tier), expected) else {
            return self.disconnect(peer, DisconnectReason::WrongRefineWindow);
        };
        if start != first || bits.len() as u64 > Tier::T3.units_per_block() / 8 {
            return self.disconnect(peer, DisconnectReason::WrongRefineWindow);
        }
        let newly = match v.apply_refined(Tier::T1, start, &bits) {
            Ok(n) => n,
            Err(e) => {
                self.sync_holders(peer);
                return self.disconnect(peer, DisconnectReason::Claim(e));
            }
        };
        v.note_refined(r.block);
        let (ttl, units) = refreshed_ttl(
            v,
            r.block,
            Some(r.known),
            &p.starts,
            p.rtt.srtt(),
            now,
            &self.cfg.limits,
        );
        v.note_refreshed(r.block, now, ttl);
        self.sync_holders(peer);
        if !late {
            self.refines.succeeded(peer, r.block);
        }
        for b in newly {
            self.remote.rarity3.inc(b);
        }
        self.trace(Record::Refined {
            peer,
            block: r.block,
            id,
            units,
            late,
        });
        self.sched.mark_dirty(peer);
    }

    pub(super) fn on_refine_timeout(&mut self, id: u64) {
        let Some(r) = self.refines.expire(id) else {
            return;
        };
        self.stats.refine_timeouts += 1;
        let l = &self.cfg.limits;
        let (attempt, retry) = self.refines.next_attempt(r.peer, r.block, l.refine_retries);
        // Exponential backoff with deterministic jitter from the node's generator.
        let base = l.refine_backoff * (1 << attempt.min(MAX_BACKOFF_DOUBLINGS));
        let jitter = (self.rng.next_u64() % JITTER_STEPS) as f64 / 1000.0 + JITTER_MIN;
        let wait = if retry {
            base.mul_f64(jitter)
        } else {
            l.max_rto
        };
        let (until, forget_at) = (self.now.add(wait), self.now.add(l.max_rto));
        self.refines.back_off(r.peer, r.block, until);
        let now = self.now;
        self.peers
            .get_mut(&r.peer)
            .expect("refines are released with peers")
            .note_loss(r.sent_at, now);
        self.timers.push(until, Timer::Wake(r.peer));
        self.timers.push(forget_at, Timer::ForgetRefine(id));
        self.trace(Record::RefineTimeout {
            peer: r.peer,
            block: r.block,
            id,
            attempt: r.attempt,
            retry,
        });
        // The block may be sought from someone else meanwhile.
        self.sched.mark_dirty(r.peer);
        self.wake_starved();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(us: u64) -> Timestamp {
        Timestamp::from_micros(us)
    }

    #[test]
    fn ids_fence_answers_to_the_peer_asked() {
        let (a, b) = (PeerId(1), PeerId(2));
        let mut l = RefineLedger::default();
        let (id, attempt) = l.start(a, 7, t(0), 0);
        assert_eq!(attempt, 0);
        assert!(l.in_flight(a, 7));
        assert_eq!(l.answer(id, b), None, "another peer cannot answer it");
        assert_eq!(l.answer(id + 1, a), None, "an id never issued");
        let r = l.answer(id, a).expect("the right peer and id");
        assert!(!r.expired);
        assert_eq!(l.active(), 0);
        assert!(!l.in_flight(a, 7));
        assert_eq!(l.answer(id, a), None, "answered once");
    }

    #[test]
    fn expired_refinements_answer_late_until_forgotten() {
        let a = PeerId(1);
        let mut l = RefineLedger::default();
        let (id, _) = l.start(a, 3, t(0), 0);
        assert!(l.expire(id).is_some());
        assert!(l.expire(id).is_none(), "expires once");
        assert_eq!(l.active(), 0);
        let (id2, _) = l.start(a, 3, t(5), 0);
        assert!(l.in_flight(a, 3), "a retry while the first is expired");
        assert!(l.answer(id, a).expect("late").expired);
        assert!(
            l.in_flight(a, 3),
            "the late answer does not settle the retry"
        );
        l.forget(id2);
        assert!(l.in_flight(a, 3), "forget drops only expired ones");
    }

    #[test]
    fn attempts_count_up_to_the_retries_then_start_over() {
        let a = PeerId(1);
        let mut l = RefineLedger::default();
        assert_eq!(l.next_attempt(a, 1, 2), (1, true));
        assert_eq!(l.next_attempt(a, 1, 2), (2, true));
        assert_eq!(
            l.start(a, 1, t(0), 0).1,
            2,
            "the next refinement is attempt 2"
        );
        assert_eq!(l.next_attempt(a, 1, 2), (3, false));
        assert_eq!(l.next_attempt(a, 1, 2), (1, true), "started over");
        l.succeeded(a, 1);
        assert_eq!(l.start(a, 1, t(0), 0).1, 0);
    }

    #[test]
    fn room_and_release() {
        let (a, b) = (PeerId(1), PeerId(2));
        let lim = Limits {
            max_refines_per_peer: 2,
            max_refines: 3,
            ..Limits::default()
        };
        let mut l = RefineLedger::default();
        l.start(a, 1, t(0), 0);
        l.start(a, 2, t(0), 0);
        assert_eq!(l.room(a, &lim), 0);
        assert_eq!(l.room(b, &lim), 1);
        l.start(b, 1, t(0), 0);
        assert_eq!(l.room(b, &lim), 0, "the global cap");
        l.back_off(a, 9, t(10));
        assert!(l.backing_off(a, 9, t(9)));
        assert!(!l.backing_off(a, 9, t(10)));
        l.release_peer(a);
        assert_eq!(l.active(), 1);
        assert!(!l.in_flight(a, 1));
        assert!(!l.backing_off(a, 9, t(0)));
        assert_eq!(l.room(b, &lim), 1);
    }

    #[test]
    fn credit_is_earned_per_unit_and_per_second_and_capped() {
        let (a, b) = (PeerId(1), PeerId(2));
        let lim = Limits {
            refines_per_unit: 0.5,
            refines_per_second: 1.0,
            refine_burst: 2,
            ..Limits::default()
        };
        let mut l = RefineLedger::new(&lim);
        l.earn(0, t(0), &lim);
        assert_eq!(l.room(a, &lim), 2, "a full burst at the start");
        l.start(a, 1, t(0), 0);
        l.start(b, 1, t(0), 0);
        assert_eq!(l.room(a, &lim), 0, "spent");
        l.earn(1, t(0), &lim);
        assert_eq!(l.room(a, &lim), 0, "half a refinement is none");
        l.earn(1, t(0), &lim);
        assert_eq!(l.room(a, &lim), 1, "two units earn one");
        l.earn(0, t(1_500_000), &lim);
        assert_eq!(l.room(a, &lim), 2, "1.5 s earn more, up to the burst");
        l.earn(100, t(9_000_000), &lim);
        l.start(a, 2, t(9_000_000), 0);
        l.start(a, 3, t(9_000_000), 0);
        assert_eq!(l.room(b, &lim), 0, "never more than the burst held");
    }

    #[test]
    fn backoffs_per_peer_are_capped() {
        let a = PeerId(1);
        let mut l = RefineLedger::default();
        for b in 0..(MAX_BACKOFFS_PER_PEER as u64 + 5) {
            l.back_off(a, b, t(100 + b));
        }
        assert_eq!(l.by_peer[&a].backoff.len(), MAX_BACKOFFS_PER_PEER);
        assert!(!l.backing_off(a, 0, t(0)), "the soonest to end went first");
        assert!(l.backing_off(a, MAX_BACKOFFS_PER_PEER as u64 + 4, t(0)));
    }

    #[test]
    fn ttl_doubles_without_news_up_to_half_the_max_rto() {
        let l = Limits::default();
        let ms = Duration::from_millis;
        let rtt = Some(ms(40));
        let last = |ttl| Some((t(0), ttl, 10));
        assert_eq!(
            next_ttl(None, t(0), 0, false, t(0), rtt, &l),
            l.refine_ttl * 2
        );
        assert_eq!(
            next_ttl(last(l.refine_ttl * 2), t(0), 10, false, t(9), rtt, &l),
            l.refine_ttl * 4
        );
        assert_eq!(
            next_ttl(last(l.max_rto), t(0), 10, false, t(9), rtt, &l),
            l.max_rto / 2
        );
        // After a short wait that taught nothing, the base: a peer that held its units before
        // it connected looks fast at its first refresh, and is not polled for it.
        assert_eq!(
            next_ttl(
                last(Duration::from_millis(20)),
                t(0),
                10,
                false,
                t(9),
                rtt,
                &l
            ),
            l.refine_ttl
        );
    }

    #[test]
    fn ttl_with_news_is_the_time_to_gain_a_few_units_within_a_round_trip_and_the_base() {
        let l = Limits::default();
        let ms = Duration::from_millis;
        let at = |n: u64| t(n * 1000);
        let rtt = Some(ms(2));
        // 16 units gained in the 100 ms since the last refresh: 8 more take 50 ms.
        let last = Some((at(100), ms(50), 4));
        assert_eq!(next_ttl(last, at(0), 20, true, at(200), rtt, &l), ms(50));
        // A slow peer (one unit in two seconds) is trusted for the base time, as before.
        let last = Some((at(0), ms(50), 4));
        assert_eq!(
            next_ttl(last, at(0), 5, true, at(2000), rtt, &l),
            l.refine_ttl
        );
        // A very fast one (512 units in a millisecond) no less than a round trip.
        let last = Some((at(100), ms(50), 0));
        assert_eq!(next_ttl(last, at(0), 512, true, at(101), rtt, &l), ms(2));
        // The first refresh of a block measures from when the peer became ready.
        assert_eq!(next_ttl(None, at(100), 8, true, at(110), rtt, &l), ms(10));
        // No round trip measured yet, or nothing gained: the base time.
        assert_eq!(
            next_ttl(None, at(100), 8, true, at(110), None, &l),
            l.refine_ttl
        );
        let last = Some((at(100), ms(50), 8));
        assert_eq!(
            next_ttl(last, at(0), 8, true, at(110), rtt, &l),
            l.refine_ttl
        );
    }
}
