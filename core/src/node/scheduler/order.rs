//! Deterministic orders: the per-node walk through a block (so peers fetching the same block
//! from the same source ask for different units and can trade them), and seeded shuffles.

use crate::mix::splitmix;
use rand_core::RngCore;
use rand_xoshiro::Xoshiro256PlusPlus;

/// Mixes a block number into the node's seed for its walk (the 32-bit golden ratio, so
/// neighbouring blocks get unrelated walks).
const BLOCK_MIX: u64 = 0x9e37_79b9;

/// A full-cycle walk over `0..len`: `offset, offset + stride, …` modulo `len`, with `stride`
/// coprime to `len`, both drawn from the node's seed and the block. Visits every index once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Walk {
    offset: u64,
    stride: u64,
    len: u64,
}

impl Walk {
    /// This node's walk over a block of `len` units (`len > 0`).
    pub(crate) fn new(seed: u64, block: u64, len: u64) -> Walk {
        let h = splitmix(seed ^ block.wrapping_mul(BLOCK_MIX));
        let offset = h % len;
        let mut stride = ((h >> 32) % len) | 1;
        while gcd(stride, len) != 1 {
            stride += 2;
        }
        Walk {
            offset,
            stride,
            len,
        }
    }

    /// The `k`-th index of the walk.
    pub(crate) fn at(&self, k: u64) -> u64 {
        (self.offset + k * self.stride) % self.len
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// `0..n` in an order drawn from `rng` (Fisher–Yates).
pub(crate) fn shuffled(n: u64, rng: &mut Xoshiro256PlusPlus) -> Vec<u32> {
    let mut v: Vec<u32> = (0..n as u32).collect();
    for i in (1..v.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand_core::SeedableRng;

    proptest! {
        #[test]
        fn a_walk_visits_every_index_once(seed: u64, block in 0u64..1000, len in 1u64..=512) {
            let w = Walk::new(seed, block, len);
            let mut seen = vec![false; len as usize];
            for k in 0..len {
                let j = w.at(k) as usize;
                prop_assert!(!seen[j]);
                seen[j] = true;
            }
        }
    }

    #[test]
    fn walks_differ_between_nodes_and_blocks() {
        let a: Vec<u64> = (0..8).map(|k| Walk::new(1, 0, 512).at(k)).collect();
        let b: Vec<u64> = (0..8).map(|k| Walk::new(2, 0, 512).at(k)).collect();
        let c: Vec<u64> = (0..8).map(|k| Walk::new(1, 1, 512).at(k)).collect();
        assert_ne!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn shuffles_are_permutations_fixed_by_the_seed() {
        let mut r1 = Xoshiro256PlusPlus::seed_from_u64(5);
        let mut r2 = Xoshiro256PlusPlus::seed_from_u64(5);
        let s = shuffled(100, &mut r1);
        assert_eq!(s, shuffled(100, &mut r2));
        let mut sorted = s.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<u32>>());
    }
}
