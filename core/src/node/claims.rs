//! Claims: the units this node has, is fetching or is verifying, so that no unit is asked for
//! twice (outside endgame), with a count per T3 block so that the scheduler skips whole blocks
//! at once.

use super::Node;
use crate::availability::LocalTiers;
use crate::bitfield::Bitfield;
use crate::tiers::{Geometry, Tier};
use std::collections::BTreeSet;

/// Units present, requested (actively) or being verified.
#[derive(Debug)]
pub(crate) struct Claims {
    geo: Geometry,
    claimed: Bitfield,
    count: u64,
    /// Claimed units per T3 block.
    per_block: Vec<u16>,
    verifying: BTreeSet<u64>,
}

/// A unit newly claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Claimed {
    /// Its T3 block.
    pub(crate) block: u64,
    /// Every unit of that block is claimed now.
    pub(crate) block_full: bool,
}

impl Claims {
    /// Claims over what `local` holds.
    pub(crate) fn new(local: &LocalTiers) -> Self {
        let geo = local.geometry();
        Claims {
            geo,
            claimed: local.bitfield(Tier::T1).clone(),
            count: local.units_present(),
            per_block: (0..geo.blocks(Tier::T3))
                .map(|b| local.units_in_t3(b) as u16)
                .collect(),
            verifying: BTreeSet::new(),
        }
    }

    /// Whether every unit is claimed (the scheduler's endgame starts).
    pub(crate) fn all_claimed(&self) -> bool {
        self.count == self.geo.units()
    }

    /// The claimed bitfield.
    pub(crate) fn bits(&self) -> &Bitfield {
        &self.claimed
    }

    fn block_len(&self, b: u64) -> u16 {
        self.geo
            .unit_range(Tier::T3, b)
            .map_or(0, |r| (r.end - r.start) as u16)
    }

    /// Whether every unit of T3 block `b` is claimed.
    pub(crate) fn block_full(&self, b: u64) -> bool {
        self.per_block[b as usize] >= self.block_len(b)
    }

    /// Claims `unit`; `None` if it already was.
    pub(crate) fn claim(&mut self, unit: u64) -> Option<Claimed> {
        if !self.claimed.set(unit) {
            return None;
        }
        self.count += 1;
        let block = self.geo.parent_of(Tier::T1, unit, Tier::T3);
        self.per_block[block as usize] += 1;
        Some(Claimed {
            block,
            block_full: self.block_full(block),
        })
    }

    /// Releases `unit`; returns its T3 block if it was claimed.
    pub(crate) fn unclaim(&mut self, unit: u64) -> Option<u64> {
        if !self.claimed.clear(unit) {
            return None;
        }
        self.count -= 1;
        let block = self.geo.parent_of(Tier::T1, unit, Tier::T3);
        self.per_block[block as usize] -= 1;
        Some(block)
    }

    /// Whether `unit` was handed out for verification and not reported back yet.
    pub(crate) fn is_verifying(&self, unit: u64) -> bool {
        self.verifying.contains(&unit)
    }

    pub(crate) fn start_verifying(&mut self, unit: u64) {
        self.verifying.insert(unit);
    }

    /// Returns whether `unit` was being verified.
    pub(crate) fn end_verifying(&mut self, unit: u64) -> bool {
        self.verifying.remove(&unit)
    }

    /// Whether nothing is being verified.
    pub(crate) fn none_verifying(&self) -> bool {
        self.verifying.is_empty()
    }
}

impl Node {
    /// Claims `unit` and takes it (and its block, once full) out of the rarity candidates.
    pub(super) fn claim(&mut self, unit: u64) {
        if let Some(c) = self.claims.claim(unit) {
            if let Some(r) = self.remote.rarity1.as_mut() {
                r.park(unit);
            }
            if c.block_full {
                self.remote.rarity3.park(c.block);
            }
        }
    }

    /// Releases `unit`'s claim unless it is present, being verified or still actively
    /// requested from someone.
    pub(super) fn unclaim_if_free(&mut self, unit: u64) {
        if self.local.has_at_tier(Tier::T1, unit)
            || self.claims.is_verifying(unit)
            || self.requests.active_for(unit) > 0
        {
            return;
        }
        if let Some(block) = self.claims.unclaim(unit) {
            if let Some(r) = self.remote.rarity1.as_mut() {
                r.unpark(unit);
            }
            self.remote.rarity3.unpark(block);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_claims_per_block() {
        // Two T3 blocks: 512 units and 3.
        let geo = Geometry::new(515 * 65536).unwrap();
        let mut c = Claims::new(&LocalTiers::new(geo));
        assert_eq!(
            c.claim(513),
            Some(Claimed {
                block: 1,
                block_full: false
            })
        );
        assert_eq!(c.claim(513), None, "once");
        c.claim(512);
        assert_eq!(
            c.claim(514),
            Some(Claimed {
                block: 1,
                block_full: true
            })
        );
        assert!(c.block_full(1) && !c.block_full(0));
        assert_eq!(c.count, 3);
        assert_eq!(c.unclaim(513), Some(1));
        assert_eq!(c.unclaim(513), None);
        assert!(!c.block_full(1));
        assert!(!c.all_claimed());
    }

    #[test]
    fn starts_from_what_is_held() {
        let geo = Geometry::new(515 * 65536).unwrap();
        let c = Claims::new(&LocalTiers::full(geo));
        assert!(c.all_claimed());
        assert!(c.block_full(0) && c.block_full(1));
    }
}
