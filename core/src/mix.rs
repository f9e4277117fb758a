//! Fixed bit mixing for deterministic choices that need no generator state of their own.

/// The increment of SplitMix64's Weyl sequence (2^64 ÷ the golden ratio).
pub(crate) const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// SplitMix64 at `x`: `x + GOLDEN` through its finaliser. A fixed, well-mixed, bijective hash
/// of a `u64`; stepping `x` by [`GOLDEN`] gives the SplitMix64 sequence.
pub(crate) fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(GOLDEN);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
