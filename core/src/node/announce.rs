//! Announcements: telling peers what we gained. Legacy peers get a HAVE per unit (the flat
//! protocol); capable peers get a T3 summary delta when a block changes state (empty→partial,
//! partial→all), coalesced per input (or per `batch_delay` under pressure), and a full summary
//! every `summary_refresh` to heal lost deltas. *News*: a capable peer we serve a unit of a
//! partial block gets, just before the unit, the units we gained in that block since we last
//! told it (a refine answer or earlier news): what its trading partner holds stays known
//! without polling (`Limits::serve_news`, `dev/PROTOCOL.md` §4.3). Optionally
//! (`Limits::max_subscriptions` > 0), peers that refined a block at us get its unit-window
//! deltas pushed every `push_interval`; off by default, and then it costs nothing.

use super::backpressure::Backpressure;
use super::peer::{Peer, PeerId};
use super::timers::Timer;
use super::Node;
use crate::availability::Promotion;
use crate::tiers::Tier;
use crate::wire::Message;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Under batch pressure or worse, pushes wait this many push intervals.
const PUSH_DELAY_UNDER_PRESSURE: u32 = 4;

/// Completions remembered for news: the newest this many. A peer last told of a block before
/// the oldest of them gets the block's whole window instead of a delta.
const RECENT_COMPLETIONS: usize = 1024;

/// Blocks per peer whose last report we remember, least recently reported dropped first (a
/// downloader fetches from at most `Limits::max_current_blocks` of a peer's blocks at once).
const REPORTED_PER_PEER: usize = 8;

/// What a peer has not been told about one of our blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum News {
    /// Nothing new since the last report.
    Nothing,
    /// Units gained since, all within `first..=last`.
    Span(u64, u64),
    /// No report is remembered (or it is older than the completions kept): the whole window.
    Unknown,
}

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
    /// Units completed so far: the sequence number of the newest completion.
    completed: u64,
    /// The newest completions `(sequence number, unit)`, oldest first.
    recent: VecDeque<(u64, u64)>,
    /// Per capable peer: our blocks whose window it was told, with the completion count at
    /// the time, least recently reported first.
    reported: BTreeMap<PeerId, VecDeque<(u64, u64)>>,
    /// Ready peers on the flat path, the ones told each completion by HAVE: with none (a
    /// hierarchical swarm) a completion skips the scan of every peer for them.
    pub(crate) flat_ready: usize,
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

    /// Drops `peer`'s subscriptions and reports.
    pub(crate) fn release_peer(&mut self, peer: PeerId) {
        self.subscriptions.remove(&peer);
        self.reported.remove(&peer);
    }

    /// Heap bytes held for `peer`.
    pub(crate) fn peer_heap_bytes(&self, peer: PeerId) -> usize {
        let subs = self
            .subscriptions
            .get(&peer)
            .map_or(0, |l| 32 + l.capacity() * 8);
        subs + self
            .reported
            .get(&peer)
            .map_or(0, |l| 32 + l.capacity() * 16)
    }

    /// A unit was completed here.
    pub(crate) fn note_completion(&mut self, unit: u64) {
        self.completed += 1;
        if self.recent.len() >= RECENT_COMPLETIONS {
            self.recent.pop_front();
        }
        self.recent.push_back((self.completed, unit));
    }

    /// `peer` now knows our window of `block` as it is.
    pub(crate) fn note_reported(&mut self, peer: PeerId, block: u64) {
        let list = self.reported.entry(peer).or_default();
        list.retain(|&(b, _)| b != block);
        if list.len() >= REPORTED_PER_PEER {
            list.pop_front();
        }
        list.push_back((block, self.completed));
    }

    /// What `peer` has not been told about our block whose units are `units`.
    pub(crate) fn news(&self, peer: PeerId, block: u64, units: core::ops::Range<u64>) -> News {
        let Some(&(_, told)) = self
            .reported
            .get(&peer)
            .and_then(|l| l.iter().find(|&&(b, _)| b == block))
        else {
            return News::Unknown;
        };
        let mut span: Option<(u64, u64)> = None;
        let mut reached = told == self.completed;
        for &(seq, unit) in self.recent.iter().rev() {
            if seq <= told {
                reached = true;
                break;
            }
            if units.contains(&unit) {
                span = Some(span.map_or((unit, unit), |(lo, hi)| (lo.min(unit), hi.max(unit))));
            }
        }
        // Every completion since the report must still be here to trust a delta.
        let complete = reached || self.recent.front().is_some_and(|&(seq, _)| seq == told + 1);
        match (complete, span) {
            (false, _) => News::Unknown,
            (true, None) => News::Nothing,
            (true, Some((lo, hi))) => News::Span(lo, hi),
        }
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
        let flat = |p: &&Peer| p.is_ready() && !p.is_capable();
        debug_assert_eq!(
            self.announce.flat_ready,
            self.peers.values().filter(flat).count(),
            "flat peer count drifted"
        );
        if self.announce.flat_ready > 0 {
            let legacy: Vec<PeerId> = self
                .peers
                .iter()
                .filter(|(_, p)| flat(p))
                .map(|(id, _)| *id)
                .collect();
            for id in legacy {
                self.send(id, Message::Have { unit });
            }
        }
        self.announce.note_completion(unit);
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

    /// Before `unit` is served to `peer`: tells it, as a T1 window, the units of the unit's T3
    /// block we gained since we last told it (the whole window if we do not know what it was
    /// told). Nothing for legacy peers, for a block we have whole (the T3 summary says so), or
    /// when there is no news.
    pub(super) fn send_news(&mut self, peer: PeerId, unit: u64) {
        if !self.cfg.limits.serve_news || !self.peers.get(&peer).is_some_and(|p| p.is_capable()) {
            return;
        }
        let block = self.geo.parent_of(Tier::T1, unit, Tier::T3);
        let Ok(units) = self.geo.unit_range(Tier::T3, block) else {
            return;
        };
        if self.local.has_at_tier(Tier::T3, block) {
            return;
        }
        let (lo, hi) = match self.announce.news(peer, block, units.clone()) {
            News::Nothing => return,
            News::Span(lo, hi) => (lo, hi),
            News::Unknown => (units.start, units.end - 1),
        };
        self.announce.note_reported(peer, block);
        let msg = self.unit_window(lo, hi);
        self.send(peer, msg);
    }

    /// A `tier = 1` summary of our units `lo..=hi` (news and pushed deltas).
    fn unit_window(&self, lo: u64, hi: u64) -> Message {
        let bits = self.local.bitfield(Tier::T1).window(lo, hi - lo + 1);
        Message::Summary {
            tier: 1,
            start: lo,
            all: Bytes::copy_from_slice(bits.as_bytes()),
            partial: Bytes::new(),
        }
    }

    /// Sends each subscriber of a changed block one T1 window covering the units completed
    /// there since the last push.
    pub(super) fn flush_pushes(&mut self) {
        let pushes = core::mem::take(&mut self.announce.pushes);
        for (block, (lo, hi)) in pushes {
            let msg = self.unit_window(lo, hi);
            let subs: Vec<PeerId> = self
                .announce
                .subscriptions
                .iter()
                .filter(|(id, l)| l.contains(&block) && self.peers.contains_key(id))
                .map(|(id, _)| *id)
                .collect();
            for id in subs {
                self.send(id, msg.clone());
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
    fn news_is_what_was_gained_in_the_block_since_the_last_report() {
        let p = PeerId(1);
        let block = 0..512;
        let mut a = Announcements::default();
        assert_eq!(a.news(p, 0, block.clone()), News::Unknown, "never told");
        a.note_completion(7);
        a.note_reported(p, 0);
        assert_eq!(a.news(p, 0, block.clone()), News::Nothing);
        a.note_completion(600);
        assert_eq!(a.news(p, 0, block.clone()), News::Nothing, "another block");
        a.note_completion(40);
        a.note_completion(9);
        assert_eq!(a.news(p, 0, block.clone()), News::Span(9, 40));
        assert_eq!(a.news(PeerId(2), 0, block.clone()), News::Unknown);
        a.note_reported(p, 0);
        assert_eq!(a.news(p, 0, block.clone()), News::Nothing);
        // A report older than every completion kept cannot be trusted for a delta.
        for u in 0..RECENT_COMPLETIONS as u64 {
            a.note_completion(1000 + u);
        }
        assert_eq!(a.news(p, 0, block.clone()), News::Nothing, "exactly kept");
        a.note_completion(2);
        assert_eq!(a.news(p, 0, block), News::Unknown);
    }

    #[test]
    fn reports_per_peer_are_capped_and_released() {
        let p = PeerId(1);
        let mut a = Announcements::default();
        for b in 0..REPORTED_PER_PEER as u64 + 2 {
            a.note_reported(p, b);
        }
        assert_eq!(a.reported[&p].len(), REPORTED_PER_PEER);
        assert_eq!(a.news(p, 0, 0..512), News::Unknown, "the oldest went first");
        assert_eq!(a.news(p, 9, 0..512), News::Nothing);
        a.release_peer(p);
        assert!(a.reported.is_empty());
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
