//! The seeded random generator and its independent sub-streams.
//!
//! A run has one root seed. Each consumer takes its own stream with [`SimRng::derive`]
//! (`"network"`, `"crash"`, `"node/17"`, …): a derived stream depends only on the parent's seed
//! and the label, never on how much of any other stream was used, so changing how often the
//! network draws does not shift which peers crash. The generator is Xoshiro256++ seeded through
//! `seed_from_u64`; label mixing is FNV-1a then SplitMix64, fixed forever so traces reproduce.

use rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// A deterministic generator that remembers its seed so it can derive sub-streams.
#[derive(Debug, Clone)]
pub struct SimRng {
    seed: u64,
    inner: Xoshiro256PlusPlus,
}

/// SplitMix64's finaliser: a bijective mix of 64 bits.
fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a over the label's bytes.
fn fnv1a(label: &str) -> u64 {
    label.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

impl SimRng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> SimRng {
        SimRng {
            seed,
            inner: Xoshiro256PlusPlus::seed_from_u64(seed),
        }
    }

    /// The seed this generator started from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// An independent stream named `label`. Depends only on this generator's seed and the
    /// label, not on how many numbers were drawn from it.
    pub fn derive(&self, label: &str) -> SimRng {
        SimRng::new(mix64(self.seed ^ mix64(fnv1a(label))))
    }

    /// A uniformly random `u64`.
    pub fn u64(&mut self) -> u64 {
        self.inner.next_u64()
    }

    /// A uniform `f64` in `[0, 1)` with 53 random bits.
    pub fn unit(&mut self) -> f64 {
        (self.u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// `true` with probability `p` (`p <= 0` or NaN: never; `p >= 1`: always). Always draws
    /// exactly one number, so the stream stays aligned whatever `p` is.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// A uniform integer in `0..n`, without modulo bias; 0 when `n` is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        // Lemire's multiply-and-reject.
        let threshold = n.wrapping_neg() % n;
        loop {
            let product = u128::from(self.u64()) * u128::from(n);
            if (product as u64) >= threshold {
                return (product >> 64) as u64;
            }
        }
    }

    /// Shuffles `items` in place (Fisher–Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }

    /// `k` distinct indices from `0..n`, chosen uniformly, in increasing order
    /// (all of them if `k >= n`).
    pub fn sample(&mut self, n: usize, k: usize) -> Vec<usize> {
        let mut all: Vec<usize> = (0..n).collect();
        let k = k.min(n);
        for i in 0..k {
            let j = i + self.below((n - i) as u64) as usize;
            all.swap(i, j);
        }
        all.truncate(k);
        all.sort_unstable();
        all
    }
}

/// So that protocol nodes taking any `RngCore` can be handed a derived stream.
impl RngCore for SimRng {
    fn next_u32(&mut self) -> u32 {
        self.inner.next_u32()
    }

    fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.inner.fill_bytes(dest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let mut a = SimRng::new(42);
        let mut b = SimRng::new(42);
        for _ in 0..100 {
            assert_eq!(a.u64(), b.u64());
        }
        assert_ne!(SimRng::new(1).u64(), SimRng::new(2).u64());
    }

    #[test]
    fn pinned_values() {
        // Pinned so that an accidental change of generator, seeding, label mixing or the helpers'
        // arithmetic shows up here, not as a mysteriously different trace. The values were
        // cross-checked against an independent implementation of the documented algorithms
        // (Xoshiro256++ seeded by SplitMix64; labels by FNV-1a then SplitMix64's finaliser).
        let streams: [(u64, [u64; 3]); 5] = [
            (
                0,
                [0x53175d61490b23df, 0x61da6f3dc380d507, 0x5c0fdf91ec9a7bfc],
            ),
            (
                1,
                [0xcfc5d07f6f03c29b, 0xbf424132963fe08d, 0x19a37d5757aaf520],
            ),
            (
                7,
                [0x0e2c1a002aae913d, 0x2c0fc8ddfa4e9e14, 0xb7b311b3b0d45872],
            ),
            (
                0xdead_beef,
                [0x0c520eb8fea98ede, 0x2b74a6338b80e0e2, 0xbe238770c3795322],
            ),
            (
                u64::MAX,
                [0x56ccf8ce948e27b2, 0xe68588432e5a5b90, 0xe3e9b5a48119ca8b],
            ),
        ];
        for (seed, first) in streams {
            let mut r = SimRng::new(seed);
            assert_eq!([r.u64(), r.u64(), r.u64()], first, "seed {seed:#x}");
        }
        // (root, label, derived seed, first value of the derived stream)
        let derived: [(u64, &str, u64, u64); 8] = [
            (0, "network", 0xe27c013b7567e0d3, 0x73e3270ac361ca09),
            (0, "crash", 0x7ec8ae806902f5a2, 0x7eac7b8a46e6ac12),
            (0, "node/17", 0x2b82921ebe3ca714, 0xb41e15eecfde134e),
            (0, "", 0x21fa69a58f3d62f5, 0x852bf64e186d32d0),
            (7, "network", 0x4720049dbef84905, 0xf0c35312b367b58f),
            (7, "crash", 0x307608f56fd23a12, 0xf3e729b894297651),
            (7, "node/17", 0x5dda0d9bfa89cba4, 0xb4e25913dad7fdac),
            (u64::MAX, "node/17", 0x6170b949d8323645, 0x9e06f2b90d93cd37),
        ];
        for (root, label, seed, first) in derived {
            let mut d = SimRng::new(root).derive(label);
            assert_eq!(d.seed(), seed, "root {root:#x}, {label:?}");
            assert_eq!(d.u64(), first, "root {root:#x}, {label:?}");
        }
        let mut r = SimRng::new(11);
        let below: Vec<u64> = (0..5).map(|_| r.below(1000)).collect();
        assert_eq!(below, [859, 806, 964, 603, 262]);
        assert_eq!(r.unit(), 0.7131852906722244);
        assert_eq!(r.sample(20, 4), [1, 2, 9, 16]);
    }

    #[test]
    fn derived_streams_are_independent_of_use() {
        let mut root = SimRng::new(9);
        let before = root.derive("crash").u64();
        for _ in 0..10 {
            root.u64();
        }
        let mut net = root.derive("network");
        net.u64();
        assert_eq!(root.derive("crash").u64(), before);
        assert_ne!(root.derive("crash").seed(), root.derive("network").seed());
        assert_ne!(root.derive("node/1").seed(), root.derive("node/2").seed());
    }

    #[test]
    fn helpers_stay_in_range() {
        let mut r = SimRng::new(3);
        assert!(!r.chance(0.0));
        assert!(r.chance(1.0));
        assert!(!r.chance(f64::NAN));
        assert_eq!(r.below(0), 0);
        assert_eq!(r.below(1), 0);
        let mut counts = [0u32; 6];
        for _ in 0..6000 {
            counts[r.below(6) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
        let hits = (0..10_000).filter(|_| r.chance(0.25)).count();
        assert!((2200..2800).contains(&hits), "{hits}");
        let s = r.sample(10, 3);
        assert_eq!(s.len(), 3);
        assert!(s.windows(2).all(|w| w[0] < w[1]) && s[2] < 10);
        assert_eq!(r.sample(4, 9), [0, 1, 2, 3]);
        let mut v: Vec<u32> = (0..50).collect();
        r.shuffle(&mut v);
        let mut sorted = v.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
    }
}
