//! Uploads: answering other peers' unit requests. Requests wait in a bounded queue per peer;
//! units are handed to the embedder while upload slots are free (per peer and in total). The
//! next unit goes to the *least advanced* requester (fewest units held, as its REQUEST says and
//! at least what its availability shows), ties round-robin; a peer never holds more than its
//! own slots, so a greedy or lying one cannot take them all. Serving those furthest behind
//! first is what keeps a late joiner from becoming the swarm's last finisher: fair shares
//! favour the peers that joined early and collected the most connections
//! (`dev/SIMULATION.md`, "Least advanced first"). Every request gets exactly one answer: the
//! unit, or a reject (also after a cancel).
//!
//! A peer the embedder reports congested ([`Input::PeerCongested`](super::Input::PeerCongested):
//! its connection is not taking what was handed out) gets no new unit until it drains, and the
//! units it holds do not count against the shared slots: a peer that reads slowly or not at all
//! keeps at most its own `upload_slots_per_peer`, never capacity others could use.

use super::api::DisconnectReason;
use super::backpressure::Backpressure;
use super::outbox::Class;
use super::peer::PeerId;
use super::{Action, Node};
use crate::tiers::{Tier, T1_SIZE};
use crate::trace::Record;
use crate::wire::{Message, MessageKind};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Requesters are ranked by how far along they are in steps of 1/`PROGRESS_STEPS` of the file:
/// one a step or more behind is served first; those within a step of each other share
/// round-robin. Ranking by exact counts served the least advanced alone until it caught up,
/// so an evenly progressing crowd converged to the same progress, lost the diversity that
/// keeps every uploader busy, and timed out requests of those briefly ahead (`mixed-legacy`
/// 0.951 → 0.882 of its bound; sixteenths: 0.958; `dev/SIMULATION.md`, "Least advanced
/// first").
pub(crate) const PROGRESS_STEPS: u64 = 16;

/// Bytes of a TRANSFER besides its payload, as counted when it is handed out to serve (the
/// embedder builds it): the envelope and a full-depth proof, 40 chaining values of 32 bytes
/// (enough for 2^40 chunks of 1 KiB). An estimate for statistics only.
const TRANSFER_ENVELOPE_ESTIMATE: u64 = 64;
const TRANSFER_PROOF_ESTIMATE: u64 = 40 * 32;

#[derive(Debug, Default)]
struct PeerUploads {
    /// Units this peer asked for, waiting for an upload slot.
    queue: VecDeque<u64>,
    /// Units handed to the embedder to send, not yet reported sent.
    serving: u32,
    /// The embedder reported its connection congested: no new unit, and `serving` does not
    /// count against the shared slots.
    congested: bool,
    /// Requests rejected `busy` (queue full) since the queue was last at most half full.
    excess: usize,
    /// Requests for units we do not hold (never advertised to anyone) on this connection.
    unadvertised: usize,
    /// Units the peer's latest request said it holds (0: not said).
    held: u64,
    /// How far along the peer is, in steps of 1/[`PROGRESS_STEPS`] of the file (lower: served
    /// first): kept current as its request or its availability changes
    /// ([`Node::known_units_changed`]).
    rank: u64,
    /// The rank under which the peer is listed in [`Uploads::ready`] (`None`: not ready).
    listed: Option<u64>,
}

impl PeerUploads {
    /// Requests no honest requester sends: for units never advertised on this connection, and
    /// beyond a full queue since it was last at most half full.
    fn strikes(&self) -> usize {
        self.excess + self.unadvertised
    }
}

impl PeerUploads {
    /// A request waiting, a slot of its own free, and a connection taking data.
    fn ready(&self, per_peer: u32) -> bool {
        !self.queue.is_empty() && self.serving < per_peer && !self.congested
    }
}

/// What became of a request ([`Uploads::admit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Queued for a slot.
    Queued,
    /// The peer's queue is full; its strikes (`PeerUploads::strikes`) with this request.
    Busy { strikes: usize },
}

/// Queued requests and upload slots.
#[derive(Debug, Default)]
pub(crate) struct Uploads {
    peers: BTreeMap<PeerId, PeerUploads>,
    /// The peers ready to be served (a request queued, a slot of their own free under
    /// `per_peer`, not congested), by rank then id: the next unit is O(log peers) to find.
    ready: BTreeSet<(u64, PeerId)>,
    /// Slots per peer that `ready` was computed with.
    per_peer: u32,
    queued: u64,
    /// Units handed out to peers that are not congested (what the shared slots bound).
    serving: u32,
    /// The peer served last (round-robin starts after it).
    last: PeerId,
}

impl Uploads {
    /// Requests queued over all peers.
    pub(crate) fn queued(&self) -> u64 {
        self.queued
    }

    /// Lists or unlists `peer` in `ready` after a change to its queue, slots, congestion or
    /// rank.
    fn touch(&mut self, peer: PeerId) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let want = p.ready(self.per_peer).then_some(p.rank);
        if p.listed != want {
            if let Some(r) = p.listed {
                self.ready.remove(&(r, peer));
            }
            if let Some(r) = want {
                self.ready.insert((r, peer));
            }
            p.listed = want;
        }
    }

    /// Recomputes `ready` if the slots per peer changed (a new limit).
    fn use_per_peer(&mut self, per_peer: u32) {
        if per_peer != self.per_peer {
            self.per_peer = per_peer;
            let ids: Vec<PeerId> = self.peers.keys().copied().collect();
            for id in ids {
                self.touch(id);
            }
        }
    }

    /// Queues `unit` for `peer`.
    #[cfg(test)]
    pub(crate) fn enqueue(&mut self, peer: PeerId, unit: u64) {
        self.peers.entry(peer).or_default().queue.push_back(unit);
        self.queued += 1;
        self.touch(peer);
    }

    /// Queues `unit` for `peer` if its queue holds fewer than `cap` requests. A request that
    /// finds the queue full is excess, a strike (counted since the queue was last at most half
    /// full); a refused request returns the peer's strikes. `held` is what the request says
    /// the peer holds; `rank(held)` how far along that makes it (see [`PROGRESS_STEPS`]).
    pub(crate) fn admit(
        &mut self,
        peer: PeerId,
        unit: u64,
        cap: usize,
        held: u64,
        rank: impl FnOnce(u64) -> u64,
    ) -> Admit {
        let p = self.peers.entry(peer).or_default();
        p.held = held;
        p.rank = rank(held);
        if p.queue.len() <= cap / 2 {
            p.excess = 0;
        }
        if p.queue.len() >= cap {
            p.excess += 1;
            let strikes = p.strikes();
            self.touch(peer);
            return Admit::Busy { strikes };
        }
        p.queue.push_back(unit);
        self.queued += 1;
        self.touch(peer);
        Admit::Queued
    }

    /// Sets `peer`'s rank to `rank(held)` (`held`: what its latest request said), if it ever
    /// asked for anything.
    pub(crate) fn rerank(&mut self, peer: PeerId, rank: impl FnOnce(u64) -> u64) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.rank = rank(p.held);
            self.touch(peer);
        }
    }

    /// Counts a request of `peer` for a unit we do not hold (a strike); its strikes.
    pub(crate) fn unadvertised(&mut self, peer: PeerId) -> usize {
        let p = self.peers.entry(peer).or_default();
        p.unadvertised += 1;
        p.strikes()
    }

    /// Removes a queued request of `peer` for `unit`; whether it was queued.
    pub(crate) fn cancel(&mut self, peer: PeerId, unit: u64) -> bool {
        let Some(p) = self.peers.get_mut(&peer) else {
            return false;
        };
        let Some(i) = p.queue.iter().position(|&u| u == unit) else {
            return false;
        };
        p.queue.remove(i);
        self.queued -= 1;
        self.touch(peer);
        true
    }

    /// The embedder finished sending one of `peer`'s units: its slot is free.
    pub(crate) fn sent(&mut self, peer: PeerId) {
        if let Some(p) = self.peers.get_mut(&peer) {
            if p.serving > 0 {
                p.serving -= 1;
                if !p.congested {
                    self.serving = self.serving.saturating_sub(1);
                }
                self.touch(peer);
            }
        }
    }

    /// Marks `peer`'s connection congested or drained; whether that changed anything.
    pub(crate) fn set_congested(&mut self, peer: PeerId, congested: bool) -> bool {
        let p = self.peers.entry(peer).or_default();
        if p.congested == congested {
            return false;
        }
        p.congested = congested;
        if congested {
            self.serving = self.serving.saturating_sub(p.serving);
        } else {
            self.serving += p.serving;
        }
        self.touch(peer);
        true
    }

    /// Whether some unit could be handed out now (a slot free, and a peer with a request and a
    /// free slot of its own).
    pub(crate) fn can_serve(&mut self, per_peer: u32, total: u32) -> bool {
        self.use_per_peer(per_peer);
        self.serving < total && !self.ready.is_empty()
    }

    /// The next unit to hand out, if a slot is free: of the peers with a queued request and a
    /// free slot of their own, the one of lowest rank (the least advanced), and among equals
    /// the first round-robin from the peer served last (the first id after it, wrapping).
    /// O(log peers).
    pub(crate) fn next(&mut self, per_peer: u32, total: u32) -> Option<(PeerId, u64)> {
        if self.serving >= total {
            return None;
        }
        self.use_per_peer(per_peer);
        use core::ops::Bound::{Excluded, Unbounded};
        let &(rank, first) = self.ready.first()?;
        let peer = self
            .ready
            .range((Excluded((rank, self.last)), Unbounded))
            .next()
            .filter(|(r, _)| *r == rank)
            .map_or(first, |&(_, id)| id);
        let p = self.peers.get_mut(&peer)?;
        let unit = p.queue.pop_front()?;
        p.serving += 1;
        self.queued -= 1;
        self.serving += 1;
        self.last = peer;
        self.touch(peer);
        Some((peer, unit))
    }

    /// Drops what `peer` queued and frees its slots.
    pub(crate) fn release_peer(&mut self, peer: PeerId) {
        if let Some(p) = self.peers.remove(&peer) {
            if let Some(r) = p.listed {
                self.ready.remove(&(r, peer));
            }
            self.queued -= p.queue.len() as u64;
            if !p.congested {
                self.serving = self.serving.saturating_sub(p.serving);
            }
        }
    }

    /// Heap bytes held for `peer`.
    pub(crate) fn peer_heap_bytes(&self, peer: PeerId) -> usize {
        self.peers.get(&peer).map_or(0, |p| {
            // Its entry in `ready`, counted whether or not it is listed.
            core::mem::size_of::<PeerUploads>()
                + p.queue.capacity() * 8
                + core::mem::size_of::<(u64, PeerId)>()
        })
    }
}

impl Node {
    pub(super) fn on_request(&mut self, peer: PeerId, unit: u64, held: u64) {
        let cap = self.cfg.limits.max_serve_queue;
        let reason = if unit >= self.geo.units() || !self.local.has_at_tier(Tier::T1, unit) {
            // We never said we hold it, and an honest requester asks only for what it was told:
            // a strike, as is a request beyond a full queue. `max_serve_queue` strikes: a flood.
            if self.uploads.unadvertised(peer) >= cap {
                return self.disconnect(peer, DisconnectReason::RequestFlood);
            }
            Some(if unit >= self.geo.units() {
                "no such unit"
            } else {
                "not available"
            })
        } else if self.pressure.level() == Backpressure::Reject {
            Some("overloaded")
        } else if self.drain.started() {
            Some("draining")
        } else {
            let rank = self.progress_rank(peer);
            match self.uploads.admit(peer, unit, cap, held, rank) {
                Admit::Queued => None,
                Admit::Busy { strikes } if strikes >= cap => {
                    return self.disconnect(peer, DisconnectReason::RequestFlood);
                }
                Admit::Busy { .. } => Some("busy"),
            }
        };
        match reason {
            Some(reason) => {
                self.stats.rejects_sent += 1;
                let reason = reason.into();
                self.send(peer, Message::Reject { unit, reason });
            }
            None => self.pump_serves(),
        }
    }

    /// The reject reason of a request withdrawn with a CANCEL.
    pub(super) const CANCELLED: &'static str = "cancelled";
    /// The reject reason of a request withdrawn by a HAVE of the unit asked for.
    pub(super) const HELD: &'static str = "held";

    /// `peer` withdrew its request for `unit`: with a CANCEL (`reason` "cancelled"), or, as a
    /// flat-only peer that is sent no CANCEL, by announcing the unit with a HAVE after getting it
    /// elsewhere first (an endgame duplicate; `reason` "held", instead of 64 KiB it would drop
    /// on arrival: on `lossy-churn`, 3.8 % of the flat path's serves, `dev/SIMULATION.md`). A
    /// request still waiting in our queue is dropped and answered with that reject (every
    /// request gets exactly one answer); one already handed out to send is sent.
    pub(super) fn withdraw_request(&mut self, peer: PeerId, unit: u64, reason: &str) {
        if self.uploads.cancel(peer, unit) {
            let reason = reason.into();
            self.send(peer, Message::Reject { unit, reason });
        }
    }

    /// The embedder could not serve `unit` to `peer`: the request is answered with a reject, and
    /// its slot freed.
    pub(super) fn on_unit_unavailable(&mut self, peer: PeerId, unit: u64) {
        self.stats.unavailable_units += 1;
        self.uploads.sent(peer);
        if self.peers.contains_key(&peer) {
            self.stats.rejects_sent += 1;
            let reason = "unavailable".into();
            self.send(peer, Message::Reject { unit, reason });
        }
        self.pump_serves();
    }

    pub(super) fn on_unit_sent(&mut self, peer: PeerId) {
        self.uploads.sent(peer);
        self.pump_serves();
    }

    /// The embedder's connection to `peer` stopped taking data, or drained again.
    pub(super) fn on_congestion(&mut self, peer: PeerId, congested: bool) {
        if self.peers.contains_key(&peer) && self.uploads.set_congested(peer, congested) {
            // Congested: its units leave the shared slots to others. Drained: its turn again.
            self.pump_serves();
        }
    }

    /// How far along `peer` is, as a function of what its latest request says it holds: in
    /// steps of 1/[`PROGRESS_STEPS`] of the file, the larger of that and what its availability
    /// shows.
    fn progress_rank(&self, peer: PeerId) -> impl FnOnce(u64) -> u64 {
        let units = self.geo.units().max(1);
        let known = self.peers.get(&peer).map_or(0, |p| p.known_units);
        move |held: u64| held.max(known).min(units) * PROGRESS_STEPS / units
    }

    /// What `peer`'s availability shows it holds went from `before` to `after` units: its
    /// place in the serve order moves only if that crossed a step (most HAVEs do not).
    pub(super) fn known_units_changed(&mut self, peer: PeerId, before: u64, after: u64) {
        let units = self.geo.units().max(1);
        let step = |n: u64| n.min(units) * PROGRESS_STEPS / units;
        if step(before) != step(after) {
            let rank = self.progress_rank(peer);
            self.uploads.rerank(peer, rank);
        }
    }

    /// Hands units to the embedder while upload slots are free.
    pub(super) fn pump_serves(&mut self) {
        let (per_peer, total) = (
            self.cfg.limits.upload_slots_per_peer,
            self.cfg.limits.upload_slots,
        );
        loop {
            // Under an upload limit, a unit goes out only when the pace allows it.
            let paced = self.pacing.upload.is_some();
            if paced && !(self.uploads.can_serve(per_peer, total) && self.upload_allows(T1_SIZE)) {
                break;
            }
            let Some((peer, unit)) = self.uploads.next(per_peer, total) else {
                break;
            };
            self.stats.units_served += 1;
            let bytes =
                self.geo.unit_len(unit) + TRANSFER_ENVELOPE_ESTIMATE + TRANSFER_PROOF_ESTIMATE;
            self.count_sent(MessageKind::Transfer, bytes);
            self.trace(Record::Serve { peer, unit });
            self.send_news(peer, unit);
            self.emit(Class::Data, Action::Serve { peer, unit });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lowest_rank_goes_first_and_equal_ranks_share_round_robin() {
        let (ahead, b, c) = (PeerId(1), PeerId(2), PeerId(3));
        let mut u = Uploads::default();
        for unit in 0..3 {
            assert_eq!(u.admit(ahead, unit, 8, 14, |h| h), Admit::Queued);
            assert_eq!(u.admit(b, 10 + unit, 8, 0, |h| h), Admit::Queued);
            assert_eq!(u.admit(c, 20 + unit, 8, 0, |h| h), Admit::Queued);
        }
        let mut order = Vec::new();
        while let Some((peer, unit)) = u.next(1, 1) {
            order.push(peer);
            u.sent(peer);
            let _ = unit;
        }
        assert_eq!(order, vec![b, c, b, c, b, c, ahead, ahead, ahead]);
        // A peer's latest request sets its rank: `c`, now ahead of `ahead`, waits.
        u.admit(c, 30, 8, 15, |h| h);
        u.admit(ahead, 3, 8, 14, |h| h);
        assert_eq!(u.next(1, 1), Some((ahead, 3)));
        u.sent(ahead);
        assert_eq!(u.next(1, 1), Some((c, 30)));
        u.sent(c);
        // What a peer's availability shows re-ranks it between requests.
        u.admit(c, 31, 8, 15, |h| h);
        u.admit(ahead, 4, 8, 14, |h| h);
        u.rerank(ahead, |held| held + 2);
        assert_eq!(u.next(1, 1), Some((c, 31)));
    }

    #[test]
    fn round_robin_within_per_peer_and_total_slots() {
        let (a, b) = (PeerId(1), PeerId(2));
        let mut u = Uploads::default();
        for unit in 0..3 {
            u.enqueue(a, unit);
            u.enqueue(b, 10 + unit);
        }
        let mut order = Vec::new();
        while let Some(x) = u.next(2, 3) {
            order.push(x);
        }
        assert_eq!(order, vec![(a, 0), (b, 10), (a, 1)], "three slots in all");
        assert_eq!(u.queued(), 3);
        u.sent(a);
        assert_eq!(u.next(2, 3,), Some((b, 11)), "b's turn");
        assert_eq!(u.next(2, 3,), None);
        u.sent(b);
        u.sent(b);
        assert_eq!(u.next(2, 3,), Some((a, 2)), "round-robin: a after b");
        assert_eq!(u.next(2, 3,), Some((b, 12)));
        assert_eq!(u.next(2, 3,), None, "three slots out again");
    }

    #[test]
    fn a_congested_peer_keeps_its_own_slots_but_none_of_the_shared_ones() {
        let (slow, a, b) = (PeerId(1), PeerId(2), PeerId(3));
        let mut u = Uploads::default();
        for unit in 0..4 {
            u.enqueue(slow, unit);
            u.enqueue(a, 10 + unit);
            u.enqueue(b, 20 + unit);
        }
        // Three shared slots, two per peer, handed out round-robin.
        assert_eq!(u.next(2, 3,), Some((slow, 0)));
        assert_eq!(u.next(2, 3,), Some((a, 10)));
        assert_eq!(u.next(2, 3,), Some((b, 20)));
        assert_eq!(u.next(2, 3,), None, "every shared slot out");
        assert!(u.set_congested(slow, true));
        assert!(!u.set_congested(slow, true), "no change");
        assert_eq!(
            u.serving, 2,
            "the congested peer's unit left the shared count"
        );
        assert_eq!(
            u.next(2, 3,),
            Some((a, 11)),
            "its slot went to another peer"
        );
        assert_eq!(u.next(2, 3,), None);
        u.sent(a);
        assert_eq!(
            u.next(2, 3,),
            Some((b, 21)),
            "a congested peer gets nothing new"
        );
        u.sent(slow);
        assert_eq!(
            u.serving, 3,
            "a congested peer's report frees only its own slot"
        );
        assert!(u.set_congested(slow, false));
        assert_eq!(
            u.serving, 3,
            "drained with nothing out: the count is unchanged"
        );
        u.sent(b);
        assert_eq!(
            u.next(2, 3,),
            Some((slow, 1)),
            "its turn again once drained"
        );
        u.set_congested(slow, true);
        u.release_peer(slow);
        assert_eq!(
            u.serving, 2,
            "a congested peer's release leaves the shared count alone"
        );
    }

    #[test]
    fn a_new_per_peer_limit_relists_who_is_ready() {
        let (a, b) = (PeerId(1), PeerId(2));
        let mut u = Uploads::default();
        for unit in 0..3 {
            u.enqueue(a, unit);
        }
        u.enqueue(b, 10);
        assert_eq!(u.next(1, 8), Some((a, 0)));
        assert_eq!(u.next(1, 8), Some((b, 10)));
        assert_eq!(u.next(1, 8), None, "one slot each, both in use");
        assert!(!u.can_serve(1, 8));
        // Two slots per peer: `a` is ready again without any other change.
        assert!(u.can_serve(2, 8));
        assert_eq!(u.next(2, 8), Some((a, 1)));
        assert_eq!(
            u.next(2, 8),
            None,
            "b has nothing queued, a has both slots out"
        );
        // Back to one: `a` stays unready even after one of its two units is sent.
        u.sent(a);
        assert_eq!(u.next(1, 8), None);
        u.sent(a);
        assert_eq!(u.next(1, 8), Some((a, 2)));
    }

    #[test]
    fn cancel_and_release_keep_the_counts() {
        let (a, b) = (PeerId(1), PeerId(2));
        let mut u = Uploads::default();
        u.enqueue(a, 1);
        u.enqueue(a, 2);
        u.enqueue(b, 3);
        assert!(u.cancel(a, 2));
        assert!(!u.cancel(a, 2));
        assert_eq!(u.next(1, 8,), Some((a, 1)));
        u.release_peer(a);
        assert_eq!(u.queued(), 1);
        assert_eq!(u.next(1, 1,), Some((b, 3)), "a's slot was freed");
        u.sent(a);
        assert_eq!(u.serving, 1, "a report for a released peer changes nothing");
    }

    #[test]
    fn strikes_count_unadvertised_units_and_excess_over_a_full_queue() {
        let (a, b) = (PeerId(1), PeerId(2));
        let mut u = Uploads::default();
        for unit in 0..4 {
            assert_eq!(u.admit(a, unit, 4, 0, |h| h), Admit::Queued);
        }
        assert_eq!(u.admit(a, 9, 4, 0, |h| h), Admit::Busy { strikes: 1 });
        assert_eq!(u.admit(a, 9, 4, 0, |h| h), Admit::Busy { strikes: 2 });
        assert_eq!(u.admit(b, 9, 4, 0, |h| h), Admit::Queued, "per peer");
        assert_eq!(u.queued(), 5);
        // Three handed out round-robin: two of a's left, half the cap: it kept its bound again.
        assert_eq!(u.next(8, 16,), Some((a, 0)));
        assert_eq!(u.next(8, 16,), Some((b, 9)));
        assert_eq!(u.next(8, 16,), Some((a, 1)));
        assert_eq!(u.admit(a, 10, 4, 0, |h| h), Admit::Queued);
        assert_eq!(u.admit(a, 11, 4, 0, |h| h), Admit::Queued);
        assert_eq!(
            u.admit(a, 12, 4, 0, |h| h),
            Admit::Busy { strikes: 1 },
            "counted afresh"
        );
        assert_eq!(u.unadvertised(a), 2, "both kinds of strike count together");
        assert_eq!(u.unadvertised(a), 3);
        for _ in 0..2 {
            u.next(8, 16);
        }
        assert_eq!(
            u.admit(a, 14, 4, 0, |h| h),
            Admit::Queued,
            "the queue drained to half"
        );
        assert_eq!(
            u.unadvertised(a),
            3,
            "unadvertised ones are never forgotten"
        );
        u.release_peer(a);
        assert_eq!(u.unadvertised(a), 1, "a new connection starts afresh");
    }
}
