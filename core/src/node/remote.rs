//! Remote availability: what peers tell us they hold (flat bitfields and HAVEs from legacy
//! peers, T3 summaries and unit-window deltas from capable ones), and the rarity buckets that
//! count, per T3 block and per unit, how many peers hold some of it.

use super::api::DisconnectReason;
use super::holders::Holders;
use super::peer::PeerId;
use super::scheduler::order::shuffled;
use super::Node;
use crate::availability::{Contribution, PeerView};
use crate::bitfield::Bitfield;
use crate::rarity::Rarity;
use crate::tiers::Tier;
use bytes::Bytes;
use rand_core::RngCore;
use rand_xoshiro::Xoshiro256PlusPlus;

/// Availability counts over all connected peers.
#[derive(Debug)]
pub(crate) struct RemoteAvailability {
    /// Peers holding some of each T3 block (capable peers' summaries).
    pub(crate) rarity3: Rarity,
    /// Peers holding each unit (legacy peers' bitfields); built on the first legacy peer, so
    /// a swarm of capable peers never pays for a per-unit structure.
    pub(crate) rarity1: Option<Rarity>,
    /// Per block and unit, how many capable peers are known to hold it.
    pub(crate) holders: Holders,
}

impl RemoteAvailability {
    /// Counts start at zero; `rng` orders equally rare blocks.
    pub(crate) fn new(blocks: u64, max_peers: usize, rng: &mut Xoshiro256PlusPlus) -> Self {
        RemoteAvailability {
            rarity3: Rarity::new(shuffled(blocks, rng), bucket_cap(max_peers)),
            rarity1: None,
            holders: Holders::new(blocks),
        }
    }

    /// Takes away what `view` counted (its peer left).
    pub(crate) fn forget(&mut self, view: &PeerView) {
        match view {
            PeerView::Tiered(v) => {
                for b in v.all_bits().iter_ones_in(0..v.all_bits().len()) {
                    self.rarity3.dec(b);
                }
                for b in v.partial_bits().iter_ones_in(0..v.partial_bits().len()) {
                    self.rarity3.dec(b);
                }
                self.holders.forget(v);
            }
            PeerView::Flat(bits) => {
                if let Some(r) = self.rarity1.as_mut() {
                    for u in bits.iter_ones_in(0..bits.len()) {
                        r.dec(u);
                    }
                }
            }
        }
    }
}

/// Largest count a rarity bucket tracks (`Rarity` counts in `u16`, keeping two values spare).
fn bucket_cap(max_peers: usize) -> u16 {
    max_peers.min(u16::MAX as usize - 2) as u16
}

impl Node {
    /// Brings the holder counts up to date with `peer`'s view (after every change to it).
    pub(super) fn sync_holders(&mut self, peer: PeerId) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        if let Some(PeerView::Tiered(v)) = p.view.as_mut() {
            let changes = v.take_changes();
            let units = |block: u64, c: Contribution| match c {
                Contribution::Whole => self
                    .geo
                    .unit_range(Tier::T3, block)
                    .map_or(0, |r| r.end - r.start),
                Contribution::Units(m) => m.count_ones(),
            };
            let before = p.known_units;
            for &(block, old, new) in &changes {
                p.known_units =
                    (p.known_units + units(block, new)).saturating_sub(units(block, old));
            }
            let after = p.known_units;
            self.remote.holders.apply(&changes);
            self.known_units_changed(peer, before, after);
        }
    }

    /// The per-unit rarity, built on first use over the units not yet claimed. Scattered, so
    /// that nodes reading the same bitfields and HAVEs still walk equally rare units in orders
    /// of their own (else they all ask a seeder for the same units at once).
    fn rarity1(&mut self) -> &mut Rarity {
        if self.remote.rarity1.is_none() {
            let cap = bucket_cap(self.cfg.limits.max_peers);
            let order = shuffled(self.geo.units(), &mut self.rng);
            let mut r = Rarity::scattered(order, cap, self.rng.next_u64());
            for u in self.claims.bits().iter_ones_in(0..self.geo.units()) {
                r.park(u);
            }
            self.remote.rarity1 = Some(r);
        }
        self.remote.rarity1.as_mut().expect("just set")
    }

    pub(super) fn on_bitfield(&mut self, peer: PeerId, capable: bool, bits: Bytes) {
        if capable {
            return self.disconnect(peer, DisconnectReason::BitfieldFromCapable);
        }
        let units = self.geo.units();
        let parsed = match Bitfield::from_bytes(&bits, units) {
            Ok(b) => b,
            Err(e) => return self.disconnect(peer, DisconnectReason::BadBitfield(e)),
        };
        let p = self
            .peers
            .get_mut(&peer)
            .expect("frames come from known peers");
        let Some(PeerView::Flat(have)) = p.view.as_mut() else {
            return;
        };
        if have.count_ones() > 0 {
            return self.disconnect(peer, DisconnectReason::SecondBitfield);
        }
        *have = parsed;
        p.known_units = have.count_ones();
        let after = p.known_units;
        let ones: Vec<u64> = have.iter_ones_in(0..units).collect();
        self.known_units_changed(peer, 0, after);
        let r = self.rarity1();
        for u in ones {
            r.inc(u);
        }
        self.sched.mark_dirty(peer);
    }

    pub(super) fn on_have(&mut self, peer: PeerId, unit: u64) {
        if unit >= self.geo.units() {
            return self.disconnect(peer, DisconnectReason::HavePastEnd);
        }
        let p = self
            .peers
            .get_mut(&peer)
            .expect("frames come from known peers");
        match p.view.as_mut() {
            Some(PeerView::Flat(have)) => {
                let newly = have.set(unit);
                if newly {
                    p.known_units += 1;
                    let after = p.known_units;
                    self.known_units_changed(peer, after - 1, after);
                    self.rarity1().inc(unit);
                }
            }
            Some(PeerView::Tiered(v)) => {
                let result = v.apply_have(unit);
                self.sync_holders(peer);
                match result {
                    Ok(Some(b)) => self.remote.rarity3.inc(b),
                    Ok(None) => {}
                    Err(e) => return self.disconnect(peer, DisconnectReason::Claim(e)),
                }
            }
            None => {}
        }
        self.withdraw_request(peer, unit, Self::HELD);
        self.sched.mark_dirty(peer);
    }

    pub(super) fn on_summary(
        &mut self,
        peer: PeerId,
        tier: u32,
        start: u64,
        all: Bytes,
        partial: Bytes,
    ) {
        let p = self
            .peers
            .get_mut(&peer)
            .expect("frames come from known peers");
        let Some(PeerView::Tiered(v)) = p.view.as_mut() else {
            return;
        };
        let result = match Tier::from_number(tier) {
            Some(Tier::T3) => {
                let r = v.apply_summary(start, &all, &partial);
                // A block it began: its pace there counts from now.
                if let Ok(newly) = &r {
                    for &b in newly.iter().filter(|&&b| !v.has_all(b)) {
                        p.starts.note(b, self.now);
                    }
                }
                r
            }
            Some(t) => {
                let r = v.apply_refined(t, start, &all);
                // News or a push: the sender's window of that block is known as of now.
                if r.is_ok() && t == Tier::T1 {
                    let block = self.geo.parent_of(Tier::T1, start, Tier::T3);
                    let end = start + all.len() as u64 * 8;
                    let within = self
                        .geo
                        .unit_range(Tier::T3, block)
                        .is_ok_and(|u| end <= u.end + 7);
                    if within {
                        let (ttl, _) = super::refinement::refreshed_ttl(
                            v,
                            block,
                            None,
                            &p.starts,
                            p.rtt.srtt(),
                            self.now,
                            &self.cfg.limits,
                        );
                        v.note_refreshed(block, self.now, ttl);
                    }
                }
                r
            }
            None => return self.disconnect(peer, DisconnectReason::UnknownSummaryTier),
        };
        self.sync_holders(peer);
        match result {
            Ok(newly) => {
                for b in newly {
                    self.remote.rarity3.inc(b);
                }
                self.sched.mark_dirty(peer);
            }
            Err(e) => self.disconnect(peer, DisconnectReason::Claim(e)),
        }
    }
}
