//! A fixed-length bitfield with the wire's byte encoding.
//!
//! Bit `i` lives at bit `7 - i % 8` of byte `i / 8` (most significant bit first), the encoding is
//! `ceil(len / 8)` bytes and spare bits in the last byte are zero. This is exactly the layout of
//! the protocol's `BitfieldPayload`, so encoding is a borrow of the backing bytes.
//!
//! Operations on a window (extract, merge, iterate, count) cost time proportional to the window,
//! not to the whole bitfield.
//!
//! ```
//! use tierswarm_core::Bitfield;
//! let mut b = Bitfield::new(10);
//! b.set(0);
//! b.set(9);
//! assert_eq!(b.as_bytes(), &[0b1000_0000, 0b0100_0000]);
//! assert_eq!(b.first_zero_in(0..10), Some(1));
//! let back = Bitfield::from_bytes(b.as_bytes(), 10).unwrap();
//! assert_eq!(back, b);
//! ```

use bitvec::prelude::*;
use core::ops::Range;

/// Errors decoding a bitfield from bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BitfieldError {
    /// The byte count does not match `ceil(len / 8)`.
    #[error("bitfield of {bits} bits needs {expected} bytes, got {got}")]
    WrongLength {
        /// Number of bits expected.
        bits: u64,
        /// Bytes expected.
        expected: u64,
        /// Bytes received.
        got: u64,
    },
    /// A spare bit past the end is set.
    #[error("bit {index} is set but the bitfield has only {bits} bits")]
    SpareBitSet {
        /// First set bit at or past `bits`.
        index: u64,
        /// Number of bits.
        bits: u64,
    },
}

/// Up to 512 bits — the units of one T3 block — as eight words, for word-at-a-time set
/// arithmetic on the scheduler's hot path. Bit `j` is bit `63 - j % 64` of word `j / 64`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockMask([u64; 8]);

impl BlockMask {
    /// Bits `0..len` set (`len` ≤ 512).
    pub fn full(len: u64) -> Self {
        let mut m = BlockMask::default();
        for (i, w) in m.0.iter_mut().enumerate() {
            let lo = i as u64 * 64;
            *w = match len.saturating_sub(lo) {
                0 => 0,
                n if n >= 64 => u64::MAX,
                n => !(u64::MAX >> n),
            };
        }
        m
    }

    /// Bit `j`.
    pub fn get(&self, j: u64) -> bool {
        j < 512 && self.0[(j / 64) as usize] >> (63 - j % 64) & 1 == 1
    }

    /// Number of bits set.
    pub fn count_ones(&self) -> u64 {
        self.0.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Whether no bit is set.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&w| w == 0)
    }

    /// `self & other`.
    pub fn and(mut self, other: &BlockMask) -> Self {
        self.0.iter_mut().zip(other.0).for_each(|(a, b)| *a &= b);
        self
    }

    /// `self & !other`.
    pub fn and_not(mut self, other: &BlockMask) -> Self {
        self.0.iter_mut().zip(other.0).for_each(|(a, b)| *a &= !b);
        self
    }

    /// `self | other`.
    pub fn or(mut self, other: &BlockMask) -> Self {
        self.0.iter_mut().zip(other.0).for_each(|(a, b)| *a |= b);
        self
    }

    /// `self ^ other`.
    pub fn xor(mut self, other: &BlockMask) -> Self {
        self.0.iter_mut().zip(other.0).for_each(|(a, b)| *a ^= b);
        self
    }

    /// The set bits, ascending (a word at a time).
    pub fn iter_ones(&self) -> impl Iterator<Item = u64> + '_ {
        self.0.iter().enumerate().flat_map(|(i, &w)| {
            let mut w = w;
            core::iter::from_fn(move || {
                (w != 0).then(|| {
                    let z = w.leading_zeros();
                    w &= !(1u64 << (63 - z));
                    i as u64 * 64 + u64::from(z)
                })
            })
        })
    }
}

/// A fixed-length bitfield (most-significant-bit-first bytes).
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Bitfield {
    bits: BitVec<u8, Msb0>,
}

impl core::fmt::Debug for Bitfield {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Bitfield({}/{} set)", self.count_ones(), self.len())
    }
}

fn clamp(r: Range<u64>, len: u64) -> Range<usize> {
    let end = r.end.min(len);
    let start = r.start.min(end);
    start as usize..end as usize
}

impl Bitfield {
    /// An all-zero bitfield of `len` bits. The bytes come from a zeroed allocation, so a large
    /// bitfield costs no resident memory until bits are set (a file length from a manifest is
    /// not verified until units arrive).
    pub fn new(len: u64) -> Self {
        let mut bits = BitVec::<u8, Msb0>::from_vec(vec![0u8; len.div_ceil(8) as usize]);
        bits.truncate(len as usize);
        Bitfield { bits }
    }

    /// An all-one bitfield of `len` bits.
    pub fn full(len: u64) -> Self {
        let mut bits = bitvec![u8, Msb0; 1; len as usize];
        bits.set_uninitialized(false);
        Bitfield { bits }
    }

    /// Decodes `len` bits from exactly `ceil(len / 8)` bytes whose spare bits are zero.
    pub fn from_bytes(bytes: &[u8], len: u64) -> Result<Self, BitfieldError> {
        let expected = len.div_ceil(8);
        if bytes.len() as u64 != expected {
            return Err(BitfieldError::WrongLength {
                bits: len,
                expected,
                got: bytes.len() as u64,
            });
        }
        let mut bits = BitVec::<u8, Msb0>::from_slice(bytes);
        if let Some(i) = bits[len as usize..].first_one() {
            return Err(BitfieldError::SpareBitSet {
                index: len + i as u64,
                bits: len,
            });
        }
        bits.truncate(len as usize);
        Ok(Bitfield { bits })
    }

    /// Decodes a window of bits whose length is given by the byte count, clamped to `max_len`
    /// bits: any set bit past `max_len` is an error. Used for windows a peer sends us, where the
    /// window may end with spare bits but must never claim anything past the end.
    pub fn from_window_bytes(bytes: &[u8], max_len: u64) -> Result<Self, BitfieldError> {
        let len = (bytes.len() as u64 * 8).min(max_len);
        let bits = BitSlice::<u8, Msb0>::from_slice(bytes);
        if let Some(i) = bits[len as usize..].first_one() {
            return Err(BitfieldError::SpareBitSet {
                index: len + i as u64,
                bits: len,
            });
        }
        Ok(Bitfield::from_aligned_bytes(bytes, len))
    }

    /// The first `len` bits of `bytes` (which hold at least that many), spare bits cleared:
    /// a byte copy, no per-bit work.
    fn from_aligned_bytes(bytes: &[u8], len: u64) -> Bitfield {
        Bitfield::from_byte_vec(bytes[..len.div_ceil(8) as usize].to_vec(), len)
    }

    /// `len` bits held in `v` (exactly `ceil(len / 8)` bytes); clears the spare bits.
    fn from_byte_vec(mut v: Vec<u8>, len: u64) -> Bitfield {
        if len % 8 != 0 {
            if let Some(last) = v.last_mut() {
                *last &= !(0xffu8 >> (len % 8));
            }
        }
        let mut bits = BitVec::<u8, Msb0>::from_vec(v);
        bits.truncate(len as usize);
        Bitfield { bits }
    }

    /// Bits `start .. start + len` as a [`BlockMask`]; `start` must be a multiple of 8 and
    /// `len` at most 512. Bits past the end read as zero. Reads whole bytes: no per-bit work.
    pub fn block_mask(&self, start: u64, len: u64) -> BlockMask {
        debug_assert!(start % 8 == 0 && len <= 512);
        let bytes = self.as_bytes();
        let end = (start + len.min(512)).min(self.len());
        let mut m = BlockMask::default();
        if end <= start {
            return m;
        }
        let first = (start / 8) as usize;
        let last = end.div_ceil(8) as usize;
        let src = &bytes[first..last];
        // Whole words as fixed-size loads; only a short tail goes through a zeroed buffer.
        let mut words = src.chunks_exact(8);
        for (w, chunk) in m.0.iter_mut().zip(&mut words) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            *w = u64::from_be_bytes(word);
        }
        let tail = words.remainder();
        if !tail.is_empty() {
            let mut word = [0u8; 8];
            word[..tail.len()].copy_from_slice(tail);
            m.0[src.len() / 8] = u64::from_be_bytes(word);
        }
        if end - start < 512 {
            m = m.and(&BlockMask::full(end - start));
        }
        m
    }

    /// The encoding: `ceil(len / 8)` bytes, spare bits zero.
    pub fn as_bytes(&self) -> &[u8] {
        self.bits.as_raw_slice()
    }

    /// Number of bits.
    pub fn len(&self) -> u64 {
        self.bits.len() as u64
    }

    /// Whether the bitfield has no bits at all.
    pub fn is_empty(&self) -> bool {
        self.bits.is_empty()
    }

    /// Bit `i`; false past the end.
    pub fn get(&self, i: u64) -> bool {
        self.bits.get(i as usize).is_some_and(|b| *b)
    }

    /// Sets bit `i`; returns whether it was newly set. Ignores indices past the end.
    pub fn set(&mut self, i: u64) -> bool {
        match self.bits.get_mut(i as usize) {
            Some(mut b) => !b.replace(true),
            None => false,
        }
    }

    /// Clears bit `i`; returns whether it was set.
    pub fn clear(&mut self, i: u64) -> bool {
        match self.bits.get_mut(i as usize) {
            Some(mut b) => b.replace(false),
            None => false,
        }
    }

    /// Sets every bit in `range` (clamped to the length).
    pub fn set_range(&mut self, range: Range<u64>) {
        let r = clamp(range, self.len());
        self.bits[r].fill(true);
    }

    /// Number of set bits.
    pub fn count_ones(&self) -> u64 {
        self.bits.count_ones() as u64
    }

    /// Number of set bits in `range` (clamped).
    pub fn count_ones_in(&self, range: Range<u64>) -> u64 {
        let r = clamp(range, self.len());
        self.bits[r].count_ones() as u64
    }

    /// Whether every bit in `range` (clamped) is set; true for an empty range.
    pub fn all_in(&self, range: Range<u64>) -> bool {
        let r = clamp(range, self.len());
        self.bits[r].all()
    }

    /// Whether any bit in `range` (clamped) is set.
    pub fn any_in(&self, range: Range<u64>) -> bool {
        let r = clamp(range, self.len());
        self.bits[r].any()
    }

    /// Whether every bit is set (true for an empty bitfield).
    pub fn is_full(&self) -> bool {
        self.bits.all()
    }

    /// The first clear bit, if any.
    pub fn first_zero(&self) -> Option<u64> {
        self.bits.first_zero().map(|i| i as u64)
    }

    /// The first clear bit inside `range`, if any.
    pub fn first_zero_in(&self, range: Range<u64>) -> Option<u64> {
        let r = clamp(range, self.len());
        let start = r.start as u64;
        self.bits[r].first_zero().map(|i| start + i as u64)
    }

    /// Indices of the set bits inside `range`, ascending.
    pub fn iter_ones_in(&self, range: Range<u64>) -> impl Iterator<Item = u64> + '_ {
        let r = clamp(range, self.len());
        let start = r.start as u64;
        self.bits[r].iter_ones().map(move |i| start + i as u64)
    }

    /// Indices of the clear bits inside `range`, ascending.
    pub fn iter_zeros_in(&self, range: Range<u64>) -> impl Iterator<Item = u64> + '_ {
        let r = clamp(range, self.len());
        let start = r.start as u64;
        self.bits[r].iter_zeros().map(move |i| start + i as u64)
    }

    /// Copy of the bits in `start .. start + len` (clamped to the end) as a new bitfield.
    /// Works a byte at a time at any offset: windows are cut on the data path (news, refine
    /// answers), where a per-bit copy was a tenth of a 1,000-peer simulation.
    pub fn window(&self, start: u64, len: u64) -> Bitfield {
        let r = clamp(start..start.saturating_add(len), self.len());
        let n = r.len() as u64;
        let bytes = self.as_bytes();
        let (first, shift) = (r.start / 8, (r.start % 8) as u32);
        if shift == 0 {
            return Bitfield::from_aligned_bytes(&bytes[first..], n);
        }
        let out: Vec<u8> = (0..n.div_ceil(8) as usize)
            .map(|i| {
                let hi = bytes[first + i] << shift;
                // Bits past the end read as zero (spare bits are zero, or there is no byte).
                let lo = bytes.get(first + i + 1).map_or(0, |b| b >> (8 - shift));
                hi | lo
            })
            .collect();
        Bitfield::from_byte_vec(out, n)
    }

    /// ORs `other` into this bitfield at offset `start`; bits that would land past the end are
    /// ignored. Returns how many bits were newly set. A byte at a time at any offset.
    pub fn merge_window(&mut self, start: u64, other: &Bitfield) -> u64 {
        let r = clamp(start..start.saturating_add(other.len()), self.len());
        let n = r.len() as u64;
        let (first, shift) = (r.start / 8, (r.start % 8) as u32);
        let raw = self.bits.as_raw_mut_slice();
        let mut newly = 0;
        let mut or_into = |at: usize, add: u8| {
            if add != 0 {
                // Only bits inside `r` are ever set here, so `at` is inside the bitfield.
                let t = &mut raw[at];
                newly += u64::from((add & !*t).count_ones());
                *t |= add;
            }
        };
        for (i, &o) in other
            .as_bytes()
            .iter()
            .enumerate()
            .take(n.div_ceil(8) as usize)
        {
            // Only the first `n` bits of `other` land inside the bitfield.
            let left = n - 8 * i as u64;
            let o = if left >= 8 { o } else { o & !(0xffu8 >> left) };
            or_into(first + i, o >> shift);
            if shift > 0 {
                or_into(first + i + 1, o << (8 - shift));
            }
        }
        newly
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn encoding_is_msb_first_with_zero_spare_bits() {
        assert_eq!(Bitfield::full(10).as_bytes(), &[0xff, 0b1100_0000]);
        assert_eq!(
            Bitfield::full(20).window(3, 9).as_bytes(),
            &[0xff, 0b1000_0000]
        );
        let mut b = Bitfield::new(12);
        b.set(0);
        b.set(7);
        b.set(8);
        b.set(11);
        assert_eq!(b.as_bytes(), &[0b1000_0001, 0b1001_0000]);
        assert_eq!(
            Bitfield::from_bytes(&[0, 0b0000_1000], 12),
            Err(BitfieldError::SpareBitSet {
                index: 12,
                bits: 12
            })
        );
        assert!(matches!(
            Bitfield::from_bytes(&[0], 12),
            Err(BitfieldError::WrongLength { expected: 2, .. })
        ));
        assert_eq!(Bitfield::new(0).as_bytes(), &[] as &[u8]);
    }

    #[test]
    fn block_masks_read_whole_bytes() {
        let mut b = Bitfield::new(1100);
        for i in [512, 513, 575, 576, 1023, 1024, 1099] {
            b.set(i);
        }
        let m = b.block_mask(512, 512);
        let got: Vec<u64> = (0..512).filter(|&j| m.get(j)).collect();
        assert_eq!(got, vec![0, 1, 63, 64, 511]);
        let tail = b.block_mask(1024, 512);
        assert_eq!(
            (0..512).filter(|&j| tail.get(j)).collect::<Vec<_>>(),
            vec![0, 75]
        );
        assert_eq!(BlockMask::full(70).0[..2], [u64::MAX, !(u64::MAX >> 6)]);
        assert!(b.block_mask(2048, 512).is_empty());
    }

    #[test]
    fn windows_clamp_and_reject_claims_past_end() {
        let w = Bitfield::from_window_bytes(&[0xff, 0b1100_0000], 10).unwrap();
        assert_eq!(w.len(), 10);
        assert!(w.is_full());
        assert!(Bitfield::from_window_bytes(&[0xff, 0b1110_0000], 10).is_err());
        let mut b = Bitfield::new(10);
        assert_eq!(b.merge_window(8, &w), 2);
        assert_eq!(b.iter_ones_in(0..10).collect::<Vec<_>>(), vec![8, 9]);
        assert!(!b.set(10));
        assert!(!b.get(99));
    }

    proptest! {
        #[test]
        fn block_mask_ones_are_its_set_bits(words: [u64; 8]) {
            let m = BlockMask(words);
            let by_bit: Vec<u64> = (0..512).filter(|&j| m.get(j)).collect();
            prop_assert_eq!(m.iter_ones().collect::<Vec<u64>>(), by_bit.clone());
            prop_assert_eq!(m.count_ones(), by_bit.len() as u64);
        }

        #[test]
        fn windows_and_merges_match_bit_by_bit(
            len in 0u64..700,
            ones in proptest::collection::vec(0u64..700, 0..300),
            start in 0u64..720,
            wlen in 0u64..700,
            other_ones in proptest::collection::vec(0u64..700, 0..300),
            other_len in 0u64..700,
        ) {
            let mut b = Bitfield::new(len);
            for &i in &ones {
                b.set(i);
            }
            // Window: the bits start.. of `b`, clamped, as their own bitfield from bit 0.
            let w = b.window(start, wlen);
            let end = (start + wlen).min(len).max(start.min(len));
            prop_assert_eq!(w.len(), end - start.min(len));
            for i in 0..w.len() {
                prop_assert_eq!(w.get(i), b.get(start + i));
            }
            prop_assert_eq!(Bitfield::from_bytes(w.as_bytes(), w.len()), Ok(w.clone()));
            // Merge: OR `other` in at `start`, nothing past the end, the count of new bits.
            let mut other = Bitfield::new(other_len);
            for &i in &other_ones {
                other.set(i);
            }
            let mut merged = b.clone();
            let newly = merged.merge_window(start, &other);
            let mut expect = b.clone();
            let mut count = 0;
            for i in other.iter_ones_in(0..other_len) {
                if expect.set(start + i) {
                    count += 1;
                }
            }
            prop_assert_eq!(&merged, &expect);
            prop_assert_eq!(newly, count);
            prop_assert_eq!(Bitfield::from_bytes(merged.as_bytes(), len), Ok(merged.clone()));
        }

        #[test]
        fn ops_match_a_vec_of_bools(
            len in 0u64..300,
            ops in proptest::collection::vec((0u64..320, any::<bool>()), 0..200),
            win in (0u64..320, 0u64..320),
        ) {
            let mut b = Bitfield::new(len);
            let mut m = vec![false; len as usize];
            for (i, on) in ops {
                let was = m.get(i as usize).copied();
                if on {
                    prop_assert_eq!(b.set(i), was == Some(false));
                    if let Some(x) = m.get_mut(i as usize) { *x = true; }
                } else {
                    prop_assert_eq!(b.clear(i), was == Some(true));
                    if let Some(x) = m.get_mut(i as usize) { *x = false; }
                }
            }
            let ones: Vec<u64> = (0..len).filter(|&i| m[i as usize]).collect();
            prop_assert_eq!(b.count_ones(), ones.len() as u64);
            prop_assert_eq!(b.first_zero(), (0..len).find(|&i| !m[i as usize]));
            let (s, l) = win;
            let r = s..s + l;
            let in_r: Vec<u64> = ones.iter().copied().filter(|i| r.contains(i)).collect();
            prop_assert_eq!(b.iter_ones_in(r.clone()).collect::<Vec<_>>(), in_r.clone());
            prop_assert_eq!(b.count_ones_in(r.clone()), in_r.len() as u64);
            let zeros: Vec<u64> = (0..len).filter(|i| r.contains(i) && !m[*i as usize]).collect();
            prop_assert_eq!(b.iter_zeros_in(r.clone()).collect::<Vec<_>>(), zeros.clone());
            prop_assert_eq!(b.first_zero_in(r.clone()), zeros.first().copied());
            prop_assert_eq!(b.all_in(r.clone()), zeros.is_empty());
            prop_assert_eq!(b.any_in(r.clone()), !in_r.is_empty());
            // Round trip through the byte encoding, and through window + merge.
            let back = Bitfield::from_bytes(b.as_bytes(), len).unwrap();
            prop_assert_eq!(&back, &b);
            let w = b.window(s, l);
            // The window's encoding is its own bits from bit 0, spare bits zero.
            let wl = w.len();
            let decoded = Bitfield::from_bytes(w.as_bytes(), wl);
            prop_assert_eq!(decoded.as_ref(), Ok(&w));
            for i in 0..wl {
                prop_assert_eq!(w.get(i), b.get(s + i));
            }
            let mut c = Bitfield::new(len);
            c.merge_window(s, &w);
            prop_assert_eq!(c.iter_ones_in(0..len).collect::<Vec<_>>(), in_r);
        }

        #[test]
        fn block_masks_match_bit_by_bit(
            len in 0u64..1200,
            ones in proptest::collection::vec(0u64..1200, 0..300),
            start8 in 0u64..160,
            mask_len in 0u64..=512,
        ) {
            let mut b = Bitfield::new(len);
            for i in ones {
                b.set(i);
            }
            let start = start8 * 8;
            let m = b.block_mask(start, mask_len);
            for j in 0..512 {
                prop_assert_eq!(m.get(j), j < mask_len && b.get(start + j), "bit {}", j);
            }
        }

        #[test]
        fn decoding_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40), len in 0u64..400) {
            let _ = Bitfield::from_bytes(&bytes, len);
            let _ = Bitfield::from_window_bytes(&bytes, len);
        }
    }
}
