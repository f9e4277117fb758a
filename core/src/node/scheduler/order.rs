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
    /// The inverse of `stride` modulo `len`: where in the walk an index comes.
    inverse: u64,
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
            inverse: inverse_mod(stride % len, len),
        }
    }

    /// Where index `j` (`< len`) comes in the walk: the `k` with `at(k) == j`.
    pub(crate) fn place(&self, j: u64) -> u64 {
        (j + self.len - self.offset) % self.len * self.inverse % self.len
    }

    /// The `k`-th index of the walk.
    #[cfg(test)]
    pub(crate) fn at(&self, k: u64) -> u64 {
        (self.offset + k * self.stride) % self.len
    }

    /// The indices in walk order (`at(0)`, `at(1)`, …), by addition: no division per step.
    pub(crate) fn iter(&self) -> impl Iterator<Item = u64> {
        let (len, stride) = (self.len, self.stride % self.len.max(1));
        let mut j = self.offset;
        (0..len).map(move |_| {
            let at = j;
            j += stride;
            if j >= len {
                j -= len;
            }
            at
        })
    }
}

/// `x` with `a * x ≡ 1 (mod m)`, for `a` coprime to `m` (extended Euclid); 0 when `m` is 1.
fn inverse_mod(a: u64, m: u64) -> u64 {
    let (mut r0, mut r1) = (m as i64, a as i64);
    let (mut t0, mut t1) = (0i64, 1i64);
    while r1 != 0 {
        let q = r0 / r1;
        (r0, r1) = (r1, r0 - q * r1);
        (t0, t1) = (t1, t0 - q * t1);
    }
    t0.rem_euclid(m as i64) as u64
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

    proptest! {
        #[test]
        fn iterating_a_walk_follows_its_indices(seed: u64, block in 0u64..1000, len in 1u64..=512) {
            let w = Walk::new(seed, block, len);
            let by_index: Vec<u64> = (0..len).map(|k| w.at(k)).collect();
            prop_assert_eq!(w.iter().collect::<Vec<u64>>(), by_index.clone());
            for (k, &j) in by_index.iter().enumerate() {
                prop_assert_eq!(w.place(j), k as u64);
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
