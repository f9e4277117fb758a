//! Announcements: telling peers what we gained. Legacy peers get a HAVE per unit (the flat
//! protocol); capable peers get a T3 summary delta when a block changes state (empty→partial,
//! partial→all), coalesced per input (or per `batch_delay` under pressure), and a full summary
//! every `summary_refresh` to heal lost deltas. Optionally (`Limits::max_subscriptions` > 0),
//! peers that refined a block at us get its unit-window deltas pushed every `push_interval`;
//! off by default, and then it costs nothing.

use super::backpressure::Backpressure;
use super::peer::PeerId;
use super::timers::Timer;
use super::Node;
use crate::availability::Promotion;
use crate::tiers::Tier;
use crate::wire::Message;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Under batch pressure or worse, pushes wait this many push intervals.
const PUSH_DELAY_UNDER_PRESSURE: u32 = 4;

/// What is waiting to be announced.
#[derive(Debug, Default)]
pub(crate) struct Announcements {
    /// T3 blocks whose state changed since the last summary delta.
    deltas: BTreeSet<u64>,
    /// Units completed since the last push, per T3 block: `(first, last)`.
    pushes: BTreeMap<u64, (u64, u64)>,
    /// T3 blocks each capable peer refined at us and follows (at most
    /// `Limits::max_subscriptions` each, oldest dropped first).
    subscriptions: BTreeMap<PeerId, VecDeque<u64>>,
}

impl Announcements {
    /// Whether summary deltas are waiting.
    pub(crate) fn has_deltas(&self) -> bool {
        !self.deltas.is_empty()
    }

    /// Queues a full summary (every block).
    pub(crate) fn refresh_all(&mut self, blocks: u64) {
        self.deltas.extend(0..blocks);
    }

    /// `peer` follows `block` now, within `max` subscriptions.
    pub(crate) fn subscribe(&mut self, peer: PeerId, block: u64, max: usize) {
        let list = self.subscriptions.entry(peer).or_default();
        if !list.contains(&block) {
            if list.len() >= max {
                list.pop_front();
            }
            list.push_back(block);
        }
    }

    /// Drops `peer`'s subscriptions.
    pub(crate) fn release_peer(&mut self, peer: PeerId) {
        self.subscriptions.remove(&peer);
    }

    /// Heap bytes held for `peer`.
    pub(crate) fn peer_heap_bytes(&self, peer: PeerId) -> usize {
        self.subscriptions
            .get(&peer)
            .map_or(0, |l| 32 + l.capacity() * 8)
    }

    /// Runs of consecutive changed blocks `(start, len)`, taken.
    fn take_delta_runs(&mut self) -> Vec<(u64, u64)> {
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for b in core::mem::take(&mut self.deltas) {
            match runs.last_mut() {
                Some((s, l)) if *s + *l == b => *l += 1,
                _ => runs.push((b, 1)),
            }
        }
        runs
    }
}

impl Node {
    /// Announces a completed unit: HAVEs to legacy peers, a delta when its T3 block changed
    /// state, a pending push for subscribers.
    pub(super) fn announce_completion(&mut self, unit: u64, promo: &Promotion) {
        let b3 = self.geo.parent_of(Tier::T1, unit, Tier::T3);
        let legacy: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.is_ready() && !p.is_capable())
            .map(|(id, _)| *id)
            .collect();
        for id in legacy {
            self.send(id, Message::Have { unit });
        }
        if self.cfg.limits.max_subscriptions > 0 {
            self.queue_push(unit, b3, promo.t3 == Some(b3));
        }
        if promo.t3_started.is_some() || promo.t3.is_some() {
            self.announce.deltas.insert(b3);
        }
    }

    fn queue_push(&mut self, unit: u64, b3: u64, block_whole: bool) {
        if block_whole {
            // The T3 delta tells everyone; subscriptions to the block lapse.
            for list in self.announce.subscriptions.values_mut() {
                list.retain(|&b| b != b3);
            }
            self.announce.pushes.remove(&b3);
            return;
        }
        let e = self.announce.pushes.entry(b3).or_insert((unit, unit));
        *e = (e.0.min(unit), e.1.max(unit));
        let delay = match self.pressure.level() {
            Backpressure::None | Backpressure::Throttle => self.cfg.limits.push_interval,
            _ => self.cfg.limits.push_interval * PUSH_DELAY_UNDER_PRESSURE,
        };
        self.timers
            .arm_once(self.now.add(delay), Timer::FlushPushes);
    }

    /// Sends the pending summary deltas to every capable peer, one summary per run of
    /// consecutive changed blocks.
    pub(super) fn flush_deltas(&mut self) {
        if !self.announce.has_deltas() {
            return;
        }
        let runs = self.announce.take_delta_runs();
        let capable: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.is_capable())
            .map(|(id, _)| *id)
            .collect();
        for (start, len) in runs {
            let s = self
                .local
                .summary(Tier::T3, start, len)
                .expect("blocks exist");
            let (all, partial) = (
                Bytes::copy_from_slice(s.all.as_bytes()),
                Bytes::copy_from_slice(s.partial.as_bytes()),
            );
            for &id in &capable {
                let (all, partial) = (all.clone(), partial.clone());
                let msg = Message::Summary {
                    tier: 3,
                    start,
                    all,
                    partial,
                };
                self.send(id, msg);
            }
        }
    }

    /// Sends each subscriber of a changed block one T1 window covering the units completed
    /// there since the last push.
    pub(super) fn flush_pushes(&mut self) {
        let pushes = core::mem::take(&mut self.announce.pushes);
        for (block, (lo, hi)) in pushes {
            let bits = self.local.bitfield(Tier::T1).window(lo, hi - lo + 1);
            let bits = Bytes::copy_from_slice(bits.as_bytes());
            let subs: Vec<PeerId> = self
                .announce
                .subscriptions
                .iter()
                .filter(|(id, l)| l.contains(&block) && self.peers.contains_key(id))
                .map(|(id, _)| *id)
                .collect();
            for id in subs {
                let msg = Message::Summary {
                    tier: 1,
                    start: lo,
                    all: bits.clone(),
                    partial: Bytes::new(),
                };
                self.send(id, msg);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_coalesce_into_runs() {
        let mut a = Announcements::default();
        for b in [1, 2, 3, 7, 9, 10] {
            a.deltas.insert(b);
        }
        assert_eq!(a.take_delta_runs(), vec![(1, 3), (7, 1), (9, 2)]);
        assert!(!a.has_deltas());
    }

    #[test]
    fn subscriptions_are_capped_oldest_first() {
        let p = PeerId(1);
        let mut a = Announcements::default();
        for b in [5, 6, 5, 7] {
            a.subscribe(p, b, 2);
        }
        assert_eq!(a.subscriptions[&p], VecDeque::from([6, 7]));
        a.release_peer(p);
        assert!(a.subscriptions.is_empty());
    }
}
