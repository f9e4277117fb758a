//! The scheduler: which units to request from whom, and which blocks to refine.
//!
//! After every input the node *fills* each peer whose situation changed (it is *dirty*): it
//! sizes the peer's window (throughput × round trip, within caps, shrunk under backpressure),
//! computes a plan from a read-only view of the node ([`SchedView`]) — coarse-first for
//! capable peers ([`blocks`]), rarest-unit-first for legacy ones ([`flat`]), then endgame
//! duplicates ([`endgame`]) — and applies it. Peers that found less to do than their window
//! allowed are *starved*: they are the ones woken when a unit returns to the pool.

pub(crate) mod blocks;
pub(crate) mod endgame;
pub(crate) mod flat;
pub(crate) mod order;

use super::claims::Claims;
use super::config::Limits;
use super::peer::{Peer, PeerId};
use super::refinement::RefineLedger;
use super::remote::RemoteAvailability;
use super::requests::RequestLedger;
use super::timers::Timer;
use super::Node;
use crate::tiers::{Geometry, T1_SIZE};
use crate::time::Timestamp;
use crate::trace::{Record, RequestPath};
use crate::wire::Message;
use rand_xoshiro::Xoshiro256PlusPlus;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Who needs scheduling.
#[derive(Debug, Default)]
pub(crate) struct Scheduler {
    /// Peers to fill after the current input.
    dirty: BTreeSet<PeerId>,
    /// Peers whose last fill found less to request than their window allowed: the only ones
    /// worth waking when a unit returns to the pool.
    starved: BTreeSet<PeerId>,
    /// Peers the global request cap stopped, oldest first, each once. As requests end, one
    /// is woken per free slot: waking every starved peer instead made each answered request
    /// cost O(peers) once the cap was reached.
    capped: VecDeque<PeerId>,
    /// The members of `capped`.
    capped_set: BTreeSet<PeerId>,
}

impl Scheduler {
    pub(crate) fn mark_dirty(&mut self, peer: PeerId) {
        self.dirty.insert(peer);
    }

    pub(crate) fn mark_all_dirty(&mut self, peers: impl Iterator<Item = PeerId>) {
        self.dirty.extend(peers);
    }

    /// A unit went back to the pool: the peers that had nothing to do may have now.
    pub(crate) fn wake_starved(&mut self) {
        self.dirty.extend(self.starved.iter().copied());
    }

    pub(crate) fn take_dirty(&mut self) -> BTreeSet<PeerId> {
        core::mem::take(&mut self.dirty)
    }

    /// `peer` found the global request cap reached: it waits its turn for a free slot.
    fn wait_for_slot(&mut self, peer: PeerId) {
        if self.capped_set.insert(peer) {
            self.capped.push_back(peer);
        }
    }

    /// `free` request slots are free under the global cap: wakes that many of the peers
    /// waiting for one, oldest first (a woken peer that finds the slots taken queues again).
    pub(crate) fn wake_capped(&mut self, free: u32) {
        for _ in 0..free {
            let Some(peer) = self.capped.pop_front() else {
                return;
            };
            self.capped_set.remove(&peer);
            self.dirty.insert(peer);
        }
    }

    pub(crate) fn release_peer(&mut self, peer: PeerId) {
        self.dirty.remove(&peer);
        self.starved.remove(&peer);
        if self.capped_set.remove(&peer) {
            self.capped.retain(|&p| p != peer);
        }
    }
}

/// What a plan may look at: the node's parts, read-only.
pub(crate) struct SchedView<'a> {
    pub(crate) geo: Geometry,
    pub(crate) now: Timestamp,
    pub(crate) seed: u64,
    pub(crate) limits: &'a Limits,
    pub(crate) peers: &'a BTreeMap<PeerId, Peer>,
    pub(crate) claims: &'a Claims,
    pub(crate) requests: &'a RequestLedger,
    pub(crate) refines: &'a RefineLedger,
    pub(crate) remote: &'a RemoteAvailability,
}

impl Node {
    /// The scheduler's read-only view, and the node's generator (the one thing a plan may
    /// change).
    fn sched_view(&mut self) -> (SchedView<'_>, &mut Xoshiro256PlusPlus) {
        let view = SchedView {
            geo: self.geo,
            now: self.now,
            seed: self.cfg.seed,
            limits: &self.cfg.limits,
            peers: &self.peers,
            claims: &self.claims,
            requests: &self.requests,
            refines: &self.refines,
            remote: &self.remote,
        };
        (view, &mut self.rng)
    }

    pub(super) fn wake_starved(&mut self) {
        self.sched.wake_starved();
    }

    /// Issues requests (and refinements) to `peer` up to its window.
    pub(super) fn fill(&mut self, peer: PeerId) {
        if self.drain.started()
            || self.local.is_complete()
            || self.pressure.level() == super::Backpressure::Reject
        {
            return;
        }
        let Some(p) = self.peers.get(&peer).filter(|p| p.is_ready()) else {
            return;
        };
        let l = &self.cfg.limits;
        let max = p.window_cap(l.max_window);
        let min = l.min_window.min(max);
        let window = self.pressure.level().window(p.window(T1_SIZE, min, max));
        // Expired requests still owed an answer do not hold the window (a lossy or partitioned
        // link would otherwise starve it), but they are bounded too, with those forgotten that
        // may still wait in the peer's queue (`window` is at most half of that queue). Those
        // count for at most a window here: their answers may have been lost, and only answers
        // clear them. Against the peer's whole queue they count in full while requests are
        // still owed there, whose answers or timeouts will come (else a requester served last
        // by a busy seeder overfilled its queue: `dev/SIMULATION.md`, "The 1 GiB crowds").
        let c = self.requests.counts(peer);
        let late = if c.owed > 0 {
            c.late
        } else {
            c.late.min(window)
        };
        let room = window
            .saturating_sub(c.active)
            .min((2 * window).saturating_sub(c.owed.saturating_add(c.late.min(window))))
            .min(p.serve_queue.saturating_sub(c.owed.saturating_add(late)));
        let global = l.max_requests.saturating_sub(self.requests.active());
        let capable = p.is_capable();
        // Under a download limit, the pace caps what may be requested now.
        let paced = self.download_allowance().min(u64::from(u32::MAX)) as u32;
        let pace_bound = paced < room.min(global);
        let budget = room.min(global).min(paced) as usize;
        let mut issued = 0;
        if global == 0 {
            self.sched.wait_for_slot(peer);
        }
        if budget > 0 {
            let (picks, path) = if capable {
                (self.apply_block_plan(peer, budget), RequestPath::Block)
            } else {
                let (view, rng) = self.sched_view();
                let p = &view.peers[&peer];
                let picks = flat::plan(&view, p, budget, rng);
                (blocks::Picks::from_vec(picks), RequestPath::Flat)
            };
            self.issue(peer, &picks, path, window);
            issued = picks.len();
            if picks.len() < budget && self.claims.all_claimed() {
                let (view, _) = self.sched_view();
                let dup = endgame::plan(&view, &view.peers[&peer], budget - picks.len());
                self.issue(peer, &dup.units, RequestPath::Endgame, window);
                issued += dup.units.len();
                if let Some(at) = dup.recheck {
                    // Always later than now (`endgame::pace`): a wake-up at now would plan
                    // again at the same instant, forever.
                    debug_assert!(at > self.now, "endgame recheck not in the future");
                    self.wake_at(peer, at);
                }
            }
        }
        // Starved peers are woken when a unit returns to the pool or the download pace allows
        // more; peers stopped by the global cap wait in their own queue.
        if issued < budget || pace_bound {
            self.sched.starved.insert(peer);
        } else {
            self.sched.starved.remove(&peer);
        }
    }

    /// Plans for a capable peer and applies everything but the requests, which it returns.
    fn apply_block_plan(&mut self, peer: PeerId, budget: usize) -> blocks::Picks {
        let plan = {
            let (view, rng) = self.sched_view();
            blocks::plan(&view, &view.peers[&peer], budget, rng)
        };
        let now = self.now;
        self.refines.prune_backoff(peer, now);
        let Some(current) = plan.current_blocks else {
            return plan.picks;
        };
        let kept = &mut self
            .peers
            .get_mut(&peer)
            .expect("filled peers exist")
            .current_blocks;
        kept.clear();
        kept.extend(current);
        for (b, why) in plan.chosen {
            let availability = self.remote.rarity3.count(b);
            self.trace(Record::PickBlock {
                peer,
                block: b,
                why,
                availability,
                passed: plan.passed.clone(),
            });
        }
        for b in plan.to_refine {
            self.send_refine(peer, b);
        }
        if let Some(at) = plan.recheck {
            self.wake_at(peer, at);
        }
        plan.picks
    }

    /// Plans for `peer` again at `at`, unless a wake-up for it is already armed sooner.
    fn wake_at(&mut self, peer: PeerId, at: Timestamp) {
        let now = self.now;
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        if p.wake_at.is_none_or(|w| w <= now || at < w) {
            p.wake_at = Some(at);
            self.timers.push(at, Timer::Wake(peer));
        }
    }

    /// Requests `units` from `peer`; traced as runs of consecutive units.
    fn issue(&mut self, peer: PeerId, units: &[u64], path: RequestPath, window: u32) {
        let Some(p) = self.peers.get(&peer) else {
            return;
        };
        let rto = self.rto(p);
        // How far along we are, for the uploader's least-advanced-first order; only to a peer
        // on the hierarchical path (a legacy peer sees exactly the flat protocol).
        let held = if p.is_capable() {
            self.local.units_present()
        } else {
            0
        };
        let now = self.now;
        let mut run: Option<(u64, u32)> = None;
        for &unit in units {
            self.requests.issue(unit, peer, now);
            self.claim(unit);
            self.stats.requests += 1;
            let timer = Timer::Request {
                unit,
                peer,
                sent_at: now,
            };
            self.timers.push(now.add(rto), timer);
            self.send(peer, Message::Request { unit, held });
            run = match run {
                Some((s, n)) if s + n as u64 == unit => Some((s, n + 1)),
                Some((s, n)) => {
                    self.trace_requests(peer, s, n, path, window);
                    Some((unit, 1))
                }
                None => Some((unit, 1)),
            };
        }
        if let Some((s, n)) = run {
            self.trace_requests(peer, s, n, path, window);
        }
        self.download_spent(units.len());
    }

    fn trace_requests(&mut self, peer: PeerId, unit: u64, count: u32, path: RequestPath, w: u32) {
        self.trace(Record::Request {
            peer,
            unit,
            count,
            path,
            window: w,
        });
    }
}
