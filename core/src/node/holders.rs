//! Who else holds which units. Per T3 block: how many capable peers have all of it, and, for
//! blocks that peers' refined windows cover in part, per unit how many windows show it, kept as
//! bit-sliced counters (plane `k` holds bit `k` of every unit's count, so adding or removing a
//! whole window is a few word operations).
//!
//! The scheduler's "rare first" asks, on every decision, which units of a block peers other
//! than the one it plans for can give. The union over every other peer's view it replaces
//! cost O(peers) per block; from these counts it costs O(log peers) words, the same at 10
//! peers as at 1,000. Flat (legacy) peers are counted by the per-unit rarity instead.

use crate::availability::{Contribution, ContributionChange, TieredView};
use crate::bitfield::BlockMask;
use smallvec::SmallVec;
use std::collections::BTreeMap;

/// Bit-sliced per-unit counts for one block; never empty while stored.
#[derive(Debug, Clone, Default)]
struct Planes(SmallVec<[BlockMask; 2]>);

impl Planes {
    /// Adds one to the count of every unit in `m`.
    fn add(&mut self, m: &BlockMask) {
        let mut carry = *m;
        for plane in self.0.iter_mut() {
            if carry.is_empty() {
                return;
            }
            let sum = plane.xor(&carry);
            carry = carry.and(plane);
            *plane = sum;
        }
        if !carry.is_empty() {
            self.0.push(carry);
        }
    }

    /// Takes one from the count of every unit in `m` (each was counted at least once).
    fn sub(&mut self, m: &BlockMask) {
        let mut borrow = *m;
        for plane in self.0.iter_mut() {
            if borrow.is_empty() {
                break;
            }
            let diff = plane.xor(&borrow);
            borrow = borrow.and_not(plane);
            *plane = diff;
        }
        debug_assert!(borrow.is_empty(), "a count went below zero");
        while self.0.last().is_some_and(BlockMask::is_empty) {
            self.0.pop();
        }
    }

    /// Units counted at least once, and at least twice.
    fn at_least_one_two(&self) -> (BlockMask, BlockMask) {
        let mut twice = BlockMask::default();
        for plane in self.0.iter().skip(1) {
            twice = twice.or(plane);
        }
        let once = self.0.first().map_or(twice, |p| p.or(&twice));
        (once, twice)
    }
}

/// Holder counts over every connected capable peer's view.
#[derive(Debug, Clone)]
pub(crate) struct Holders {
    /// Per T3 block: capable peers known to have all of it.
    whole: Vec<u32>,
    /// Per T3 block some refined window shows units of: per-unit window counts.
    partial: BTreeMap<u64, Planes>,
}

impl Holders {
    /// Nobody holds anything of `blocks` T3 blocks yet.
    pub(crate) fn new(blocks: u64) -> Self {
        Holders {
            whole: vec![0; blocks as usize],
            partial: BTreeMap::new(),
        }
    }

    /// Applies one peer's contribution changes, in order.
    pub(crate) fn apply(&mut self, changes: &[ContributionChange]) {
        for &(block, old, new) in changes {
            self.count(block, old, false);
            self.count(block, new, true);
        }
    }

    /// Takes away everything `view` contributed (its peer left).
    pub(crate) fn forget(&mut self, view: &TieredView) {
        let all = view.all_bits();
        for b in all.iter_ones_in(0..all.len()) {
            self.count(b, Contribution::Whole, false);
        }
        for (b, bits) in view.windows() {
            let m = bits.block_mask(0, bits.len());
            self.count(b, Contribution::Units(m), false);
        }
    }

    fn count(&mut self, block: u64, c: Contribution, add: bool) {
        match c {
            Contribution::Whole => {
                if let Some(n) = self.whole.get_mut(block as usize) {
                    *n = if add { *n + 1 } else { n.saturating_sub(1) };
                }
            }
            Contribution::Units(m) if m.is_empty() => {}
            Contribution::Units(m) if add => self.partial.entry(block).or_default().add(&m),
            Contribution::Units(m) => {
                if let Some(p) = self.partial.get_mut(&block) {
                    p.sub(&m);
                    if p.0.is_empty() {
                        self.partial.remove(&block);
                    }
                }
            }
        }
    }

    /// Units of `block` (of `len` units) that some capable peer other than the one contributing
    /// `own` is known to have. Costs O(log peers), not O(peers).
    pub(crate) fn held_by_others(&self, block: u64, own: Contribution, len: u64) -> BlockMask {
        let whole = self.whole.get(block as usize).copied().unwrap_or(0);
        let own_whole = u32::from(own == Contribution::Whole);
        if whole > own_whole {
            return BlockMask::full(len);
        }
        let Some(planes) = self.partial.get(&block) else {
            return BlockMask::default();
        };
        let (once, twice) = planes.at_least_one_two();
        match own {
            // Counted twice: someone else has it too; counted once and not ours: someone else.
            Contribution::Units(mine) => twice.or(&once.and_not(&mine)),
            Contribution::Whole => once,
        }
    }

    /// Heap bytes held (a design figure: 4 bytes per T3 block plus 64 bytes per counter plane).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.whole.capacity() * 4
            + self
                .partial
                .values()
                .map(|p| 16 + p.0.len().max(2) * core::mem::size_of::<BlockMask>())
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn mask(bits: &[u64]) -> BlockMask {
        let mut b = crate::bitfield::Bitfield::new(512);
        for &j in bits {
            b.set(j);
        }
        b.block_mask(0, 512)
    }

    #[test]
    fn whole_holders_exclude_only_themselves() {
        let mut h = Holders::new(4);
        h.apply(&[(
            1,
            Contribution::Units(BlockMask::default()),
            Contribution::Whole,
        )]);
        // The one whole holder asking: nobody else.
        assert!(h.held_by_others(1, Contribution::Whole, 512).is_empty());
        // Anyone else: everything.
        assert_eq!(
            h.held_by_others(1, Contribution::Units(mask(&[3])), 512),
            BlockMask::full(512)
        );
    }

    proptest! {
        /// The counts answer exactly what a union over the other peers' contributions would,
        /// through any sequence of changes (including windows shrinking when evicted).
        #[test]
        fn counts_match_the_union_of_the_others(
            steps in prop::collection::vec(
                (0usize..6, prop::option::of(prop::collection::vec(0u64..512, 0..40))),
                1..80,
            ),
            asker in 0usize..6,
        ) {
            let mut h = Holders::new(1);
            let mut state = vec![Contribution::Units(BlockMask::default()); 6];
            for (peer, c) in steps {
                let new = match c {
                    None => Contribution::Whole,
                    Some(bits) => Contribution::Units(mask(&bits)),
                };
                h.apply(&[(0, state[peer], new)]);
                state[peer] = new;
                let mut naive = BlockMask::default();
                for (i, s) in state.iter().enumerate() {
                    if i == asker {
                        continue;
                    }
                    naive = naive.or(&match s {
                        Contribution::Whole => BlockMask::full(512),
                        Contribution::Units(m) => *m,
                    });
                }
                prop_assert_eq!(h.held_by_others(0, state[asker], 512), naive);
            }
            for s in state.iter_mut() {
                h.apply(&[(0, *s, Contribution::Units(BlockMask::default()))]);
                *s = Contribution::Units(BlockMask::default());
            }
            prop_assert!(h.partial.is_empty() && h.whole[0] == 0, "everything returned");
        }
    }
}
