//! Tier sizes and the arithmetic between byte offsets, T1 units and coarse blocks.
//!
//! | tier | size | T1 units per block |
//! |---|---|---|
//! | T1 | 64 KiB | 1 |
//! | T2 | 2 MiB | 32 |
//! | T3 | 32 MiB | 512 |
//!
//! Every tier's last block may be partial; a zero-length file has no blocks at any tier.
//!
//! ```
//! use tierswarm_core::{Geometry, Tier};
//! let g = Geometry::new(100 * 1024 * 1024 + 1).unwrap(); // 100 MiB + 1 byte
//! assert_eq!(g.blocks(Tier::T3), 4);
//! assert_eq!(g.units(), 1601);
//! // The last T3 block holds only the 65 units that exist.
//! assert_eq!(g.unit_range(Tier::T3, 3).unwrap(), 1536..1601);
//! ```

use core::ops::Range;

/// Size of a T1 unit, the unit of transfer: 64 KiB.
pub const T1_SIZE: u64 = 64 * 1024;
/// Size of a T2 block: 2 MiB = 32 T1 units.
pub const T2_SIZE: u64 = 2 * 1024 * 1024;
/// Size of a T3 block: 32 MiB = 16 T2 blocks = 512 T1 units.
pub const T3_SIZE: u64 = 32 * 1024 * 1024;
/// Largest file length the protocol accepts: 64 TiB (2^30 units). Bounds every allocation that a
/// length read from the network or from disk can cause.
pub const MAX_FILE_LEN: u64 = 1 << 46;

/// One of the three availability tiers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Tier {
    /// 64 KiB transfer units.
    T1 = 1,
    /// 2 MiB blocks.
    T2 = 2,
    /// 32 MiB blocks.
    T3 = 3,
}

impl Tier {
    /// All tiers, finest first.
    pub const ALL: [Tier; 3] = [Tier::T1, Tier::T2, Tier::T3];

    /// Block size in bytes.
    pub const fn size(self) -> u64 {
        match self {
            Tier::T1 => T1_SIZE,
            Tier::T2 => T2_SIZE,
            Tier::T3 => T3_SIZE,
        }
    }

    /// Number of T1 units a full block of this tier spans.
    pub const fn units_per_block(self) -> u64 {
        self.size() / T1_SIZE
    }

    /// The tier's number on the wire (1, 2 or 3).
    pub const fn number(self) -> u32 {
        self as u32
    }

    /// The tier with wire number `n`, if any.
    pub const fn from_number(n: u32) -> Option<Tier> {
        match n {
            1 => Some(Tier::T1),
            2 => Some(Tier::T2),
            3 => Some(Tier::T3),
            _ => None,
        }
    }
}

/// Errors of tier arithmetic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TierError {
    /// The file is longer than [`MAX_FILE_LEN`].
    #[error("file length {0} exceeds the maximum of {MAX_FILE_LEN} bytes")]
    FileTooLarge(u64),
    /// A block index past the last block of its tier.
    #[error("{tier:?} block {index} out of range (file has {count} {tier:?} blocks)")]
    IndexOutOfRange {
        /// Tier of the index.
        tier: Tier,
        /// The offending index.
        index: u64,
        /// Number of blocks at that tier.
        count: u64,
    },
    /// A child tier that is not strictly finer than its parent.
    #[error("{child:?} is not finer than {parent:?}")]
    NotFiner {
        /// The parent tier.
        parent: Tier,
        /// The supposed child tier.
        child: Tier,
    },
}

/// Number of blocks of `tier_size` bytes that cover `file_len` bytes (the last may be partial).
///
/// ```
/// use tierswarm_core::tiers::{tier_block_count, T1_SIZE};
/// assert_eq!(tier_block_count(0, T1_SIZE), 0);
/// assert_eq!(tier_block_count(T1_SIZE + 1, T1_SIZE), 2);
/// ```
pub const fn tier_block_count(file_len: u64, tier_size: u64) -> u64 {
    file_len.div_ceil(tier_size)
}

/// Index of the block of `tier_size` bytes that holds byte `offset`.
pub const fn tier_index_for_offset(offset: u64, tier_size: u64) -> u64 {
    offset / tier_size
}

/// Whether `offset` lies on a block boundary of `tier`.
pub const fn is_aligned(offset: u64, tier: Tier) -> bool {
    offset % tier.size() == 0
}

/// The geometry of one file: how its bytes divide into units and blocks at every tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Geometry {
    file_len: u64,
}

impl Geometry {
    /// Geometry of a file of `file_len` bytes; fails above [`MAX_FILE_LEN`].
    pub const fn new(file_len: u64) -> Result<Self, TierError> {
        if file_len > MAX_FILE_LEN {
            return Err(TierError::FileTooLarge(file_len));
        }
        Ok(Geometry { file_len })
    }

    /// File length in bytes.
    pub const fn file_len(&self) -> u64 {
        self.file_len
    }

    /// Number of T1 units.
    pub const fn units(&self) -> u64 {
        tier_block_count(self.file_len, T1_SIZE)
    }

    /// Number of blocks at `tier`.
    pub const fn blocks(&self, tier: Tier) -> u64 {
        tier_block_count(self.file_len, tier.size())
    }

    /// Checks that `index` is a block of `tier`.
    pub const fn check(&self, tier: Tier, index: u64) -> Result<(), TierError> {
        let count = self.blocks(tier);
        if index < count {
            Ok(())
        } else {
            Err(TierError::IndexOutOfRange { tier, index, count })
        }
    }

    /// Byte length of unit `unit` (64 KiB except for a final partial unit); 0 past the end.
    pub const fn unit_len(&self, unit: u64) -> u64 {
        let start = unit.saturating_mul(T1_SIZE);
        if start >= self.file_len {
            0
        } else if self.file_len - start < T1_SIZE {
            self.file_len - start
        } else {
            T1_SIZE
        }
    }

    /// Byte range of block `index` at `tier`, clamped to the file.
    pub fn byte_range(&self, tier: Tier, index: u64) -> Result<Range<u64>, TierError> {
        self.check(tier, index)?;
        let start = index * tier.size();
        Ok(start..(start + tier.size()).min(self.file_len))
    }

    /// The T1 units that block `index` of `tier` spans, clamped to the units that exist.
    pub fn unit_range(&self, tier: Tier, index: u64) -> Result<Range<u64>, TierError> {
        if tier == Tier::T1 {
            self.check(tier, index)?;
            return Ok(index..index + 1);
        }
        self.child_range(tier, index, Tier::T1)
    }

    /// The blocks of the finer tier `child` inside block `index` of `parent`, clamped to the
    /// blocks that exist (the final partial block has fewer children).
    pub fn child_range(
        &self,
        parent: Tier,
        index: u64,
        child: Tier,
    ) -> Result<Range<u64>, TierError> {
        if child >= parent {
            return Err(TierError::NotFiner { parent, child });
        }
        self.check(parent, index)?;
        let per = parent.size() / child.size();
        let start = index * per;
        Ok(start..(start + per).min(self.blocks(child)))
    }

    /// Index of the block of the coarser tier `parent` that contains block `index` of `child`.
    pub const fn parent_of(&self, child: Tier, index: u64, parent: Tier) -> u64 {
        index * child.size() / parent.size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn zero_length_file_has_no_blocks() {
        let g = Geometry::new(0).unwrap();
        for t in Tier::ALL {
            assert_eq!(g.blocks(t), 0);
            assert!(g.check(t, 0).is_err());
        }
        assert_eq!(g.unit_len(0), 0);
    }

    #[test]
    fn exact_multiple_has_no_partial_block() {
        let g = Geometry::new(2 * T3_SIZE).unwrap();
        assert_eq!(g.blocks(Tier::T3), 2);
        assert_eq!(g.blocks(Tier::T2), 32);
        assert_eq!(g.units(), 1024);
        assert_eq!(g.unit_range(Tier::T3, 1).unwrap(), 512..1024);
        assert_eq!(g.child_range(Tier::T3, 1, Tier::T2).unwrap(), 16..32);
        assert_eq!(g.unit_len(1023), T1_SIZE);
    }

    #[test]
    fn partial_last_blocks_are_clamped() {
        let g = Geometry::new(T3_SIZE + T2_SIZE + 10).unwrap();
        assert_eq!(g.blocks(Tier::T3), 2);
        assert_eq!(g.blocks(Tier::T2), 18);
        assert_eq!(g.units(), 512 + 32 + 1);
        assert_eq!(g.child_range(Tier::T3, 1, Tier::T2).unwrap(), 16..18);
        assert_eq!(g.unit_range(Tier::T2, 17).unwrap(), 544..545);
        assert_eq!(g.unit_len(544), 10);
        assert_eq!(
            g.byte_range(Tier::T3, 1).unwrap(),
            T3_SIZE..T3_SIZE + T2_SIZE + 10
        );
    }

    #[test]
    fn errors_are_typed() {
        let g = Geometry::new(T1_SIZE).unwrap();
        assert_eq!(
            g.child_range(Tier::T1, 0, Tier::T2),
            Err(TierError::NotFiner {
                parent: Tier::T1,
                child: Tier::T2
            })
        );
        assert!(matches!(
            g.unit_range(Tier::T3, 1),
            Err(TierError::IndexOutOfRange { count: 1, .. })
        ));
        assert!(Geometry::new(MAX_FILE_LEN + 1).is_err());
        assert!(Tier::from_number(4).is_none());
        assert!(is_aligned(T2_SIZE * 3, Tier::T2) && !is_aligned(T2_SIZE + 1, Tier::T2));
    }

    fn naive_blocks(len: u64, size: u64) -> Vec<Range<u64>> {
        let mut v = Vec::new();
        let mut off = 0;
        while off < len {
            v.push(off..(off + size).min(len));
            off += size;
        }
        v
    }

    proptest! {
        #[test]
        fn tier_math_matches_naive_model(
            len in prop_oneof![
                0u64..4 * T3_SIZE,
                (0u64..8).prop_map(|k| k * T2_SIZE),
                (0u64..4).prop_map(|k| k * T3_SIZE),
                (1u64..4).prop_map(|k| k * T3_SIZE - 1),
            ]
        ) {
            let g = Geometry::new(len).unwrap();
            for tier in Tier::ALL {
                let naive = naive_blocks(len, tier.size());
                prop_assert_eq!(g.blocks(tier), naive.len() as u64);
                for (i, r) in naive.iter().enumerate() {
                    prop_assert_eq!(g.byte_range(tier, i as u64).unwrap(), r.clone());
                    prop_assert_eq!(tier_index_for_offset(r.start, tier.size()), i as u64);
                    prop_assert_eq!(tier_index_for_offset(r.end - 1, tier.size()), i as u64);
                    // Units of a block: exactly those whose bytes start inside it.
                    let units = g.unit_range(tier, i as u64).unwrap();
                    let naive_units: Vec<u64> = (0..g.units())
                        .filter(|u| r.contains(&(u * T1_SIZE)))
                        .collect();
                    prop_assert_eq!(units.clone().collect::<Vec<_>>(), naive_units);
                    for u in units {
                        prop_assert_eq!(g.parent_of(Tier::T1, u, tier), i as u64);
                    }
                }
            }
            let total: u64 = (0..g.units()).map(|u| g.unit_len(u)).sum();
            prop_assert_eq!(total, len);
        }
    }
}
