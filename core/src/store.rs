//! The persisted availability store: pure encode, decode and validate.
//!
//! The adapters write the bytes atomically (temp file, fsync, rename, fsync of the directory);
//! this module only turns state into bytes and back, and refuses anything that does not hang
//! together. Layout (all integers little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `TSAV` |
//! | 4 | 2 | version: 1 (the earlier format: no tier sections) or 2 (current) |
//! | 6 | 2 | reserved, zero |
//! | 8 | 8 | file length in bytes |
//! | 16 | 4 | unit size (65536) |
//! | 20 | 8 | unit count |
//! | 28 | 8 | last-updated time (µs since the embedder's epoch; an input, never read here) |
//! | 36 | 2 | number of sections |
//! | 38 | … | sections: tag (1 byte), length (4 bytes), bitfield bytes |
//! | end − 32 | 32 | BLAKE3 of every byte before it |
//!
//! Section tags: 1 = T1 have, 2 = T1 proven (verified against the content root), 3 = T2 have,
//! 4 = T3 have. Version 1 carries sections 1 and 2; version 2 carries all four. A unit is
//! *available* only when it is both have and proven (proof-authoritative, as WO-001 planned);
//! the tier sections must agree exactly with the available units.
//!
//! ```
//! use tierswarm_core::{store::StoreState, Geometry, LocalTiers};
//! let geo = Geometry::new(5_000_000).unwrap();
//! let mut tiers = LocalTiers::new(geo);
//! tiers.mark_t1_complete(3).unwrap();
//! let bytes = StoreState::from_tiers(&tiers, 1_700_000).encode();
//! let (back, _) = StoreState::decode(&bytes).unwrap();
//! assert_eq!(back.tiers, tiers);
//! assert_eq!(back.updated_at_us, 1_700_000);
//! ```

use crate::availability::{ConsistencyError, LocalTiers};
use crate::bitfield::{Bitfield, BitfieldError};
use crate::tiers::{Geometry, Tier, TierError, T1_SIZE};

const MAGIC: &[u8; 4] = b"TSAV";
/// The version [`StoreState::encode`] writes.
pub const CURRENT_VERSION: u16 = 2;
const HEADER_LEN: usize = 38;
const CHECKSUM_LEN: usize = 32;

const TAG_T1_HAVE: u8 = 1;
const TAG_T1_PROVEN: u8 = 2;
const TAG_T2: u8 = 3;
const TAG_T3: u8 = 4;

fn section_name(tag: u8) -> &'static str {
    match tag {
        TAG_T1_HAVE => "t1_have",
        TAG_T1_PROVEN => "t1_proven",
        TAG_T2 => "t2_have",
        TAG_T3 => "t3_have",
        _ => "unknown",
    }
}

/// Why a store was refused. Each variant says what and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Fewer bytes than a header and checksum.
    #[error("store is {0} bytes, shorter than the smallest valid store")]
    TooShort(usize),
    /// Not a tierswarm store.
    #[error("bad magic at offset 0: not a tierswarm availability store")]
    BadMagic,
    /// A version this build does not know.
    #[error("unsupported store version {0} (this build reads 1 and 2)")]
    UnsupportedVersion(u16),
    /// The checksum does not match the contents.
    #[error("checksum mismatch: the store is corrupt")]
    Checksum,
    /// A header field that disagrees with the geometry.
    #[error("header field {field} at offset {offset} is {found}, expected {expected}")]
    Header {
        /// Field name.
        field: &'static str,
        /// Byte offset of the field.
        offset: usize,
        /// Value found.
        found: u64,
        /// Value expected.
        expected: u64,
    },
    /// The file length is not one this protocol accepts.
    #[error("file length: {0}")]
    FileLen(#[from] TierError),
    /// A section header or body that runs past the end or repeats.
    #[error("section {index} (tag {tag}, {name}) at offset {offset}: {reason}", name = section_name(*.tag))]
    Section {
        /// Position among the sections.
        index: usize,
        /// Its tag.
        tag: u8,
        /// Its byte offset.
        offset: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// A required section is absent.
    #[error("section {0} is missing")]
    MissingSection(&'static str),
    /// A section's bitfield is malformed.
    #[error("section {name}: {source}")]
    Bitfield {
        /// Section name.
        name: &'static str,
        /// What is wrong with it.
        source: BitfieldError,
    },
    /// Tier bits that disagree with the available units.
    #[error("tier sections disagree with T1: {0}")]
    Inconsistent(#[from] ConsistencyError),
    /// Bytes between the last section and the checksum.
    #[error("{0} unexpected bytes after the last section")]
    Trailing(usize),
    /// The store describes a different file than the one being loaded.
    #[error("store is for a file of {found} bytes, expected {expected}")]
    WrongFile {
        /// Length in the store.
        found: u64,
        /// Length expected by the caller.
        expected: u64,
    },
}

/// What loading had to do besides reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoadNotes {
    /// The store had no tier sections (version 1); tiers were rebuilt from T1.
    pub tiers_rebuilt: bool,
    /// Units marked have but not proven: not treated as available.
    pub unproven_ignored: u64,
}

/// The persisted availability state of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreState {
    /// Units present in the data file.
    pub have: Bitfield,
    /// Units verified against the content root.
    pub proven: Bitfield,
    /// Local tiers over the available units (have ∧ proven).
    pub tiers: LocalTiers,
    /// Last-updated time, µs since the embedder's epoch.
    pub updated_at_us: u64,
}

impl StoreState {
    /// State whose have and proven sets are the tiers' T1 units (what the node persists: it
    /// marks a unit only after it was verified).
    pub fn from_tiers(tiers: &LocalTiers, updated_at_us: u64) -> Self {
        let t1 = tiers.bitfield(Tier::T1).clone();
        StoreState {
            have: t1.clone(),
            proven: t1,
            tiers: tiers.clone(),
            updated_at_us,
        }
    }

    /// The geometry of the file.
    pub fn geometry(&self) -> Geometry {
        self.tiers.geometry()
    }

    /// Encodes in the current version.
    pub fn encode(&self) -> Vec<u8> {
        self.encode_version(CURRENT_VERSION)
    }

    /// Encodes in `version` (1 drops the tier sections: the earlier format, kept so that
    /// backward compatibility stays tested).
    pub fn encode_version(&self, version: u16) -> Vec<u8> {
        encode_parts(
            &self.tiers,
            &self.have,
            &self.proven,
            self.updated_at_us,
            version,
        )
    }
}

/// Encodes local tiers as a current-version store without copying them (have = proven = the
/// tiers' T1 units): what the node persists, on its hot path.
pub fn encode_tiers(tiers: &LocalTiers, updated_at_us: u64) -> Vec<u8> {
    let t1 = tiers.bitfield(Tier::T1);
    encode_parts(tiers, t1, t1, updated_at_us, CURRENT_VERSION)
}

fn encode_parts(
    tiers: &LocalTiers,
    have: &Bitfield,
    proven: &Bitfield,
    updated_at_us: u64,
    version: u16,
) -> Vec<u8> {
    let geo = tiers.geometry();
    let mut sections: Vec<(u8, &Bitfield)> = vec![(TAG_T1_HAVE, have), (TAG_T1_PROVEN, proven)];
    if version >= 2 {
        sections.push((TAG_T2, tiers.bitfield(Tier::T2)));
        sections.push((TAG_T3, tiers.bitfield(Tier::T3)));
    }
    let body: usize = sections.iter().map(|(_, b)| 5 + b.as_bytes().len()).sum();
    let mut out = Vec::with_capacity(HEADER_LEN + body + CHECKSUM_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&geo.file_len().to_le_bytes());
    out.extend_from_slice(&(T1_SIZE as u32).to_le_bytes());
    out.extend_from_slice(&geo.units().to_le_bytes());
    out.extend_from_slice(&updated_at_us.to_le_bytes());
    out.extend_from_slice(&(sections.len() as u16).to_le_bytes());
    for (tag, bits) in sections {
        out.push(tag);
        out.extend_from_slice(&(bits.as_bytes().len() as u32).to_le_bytes());
        out.extend_from_slice(bits.as_bytes());
    }
    let sum = blake3::hash(&out);
    out.extend_from_slice(sum.as_bytes());
    out
}

impl StoreState {
    /// Decodes and validates a store; never panics, whatever the bytes.
    pub fn decode(bytes: &[u8]) -> Result<(Self, LoadNotes), StoreError> {
        if bytes.len() < HEADER_LEN + CHECKSUM_LEN {
            return Err(StoreError::TooShort(bytes.len()));
        }
        if &bytes[..4] != MAGIC {
            return Err(StoreError::BadMagic);
        }
        let (content, sum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
        // Checked before anything else is believed: a corrupt length must not steer parsing.
        if blake3::hash(content) != blake3::Hash::from_bytes(sum.try_into().expect("32 bytes")) {
            return Err(StoreError::Checksum);
        }
        let u16_at = |o: usize| u16::from_le_bytes([content[o], content[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes(content[o..o + 4].try_into().expect("4"));
        let u64_at = |o: usize| u64::from_le_bytes(content[o..o + 8].try_into().expect("8"));
        let version = u16_at(4);
        if !(1..=CURRENT_VERSION).contains(&version) {
            return Err(StoreError::UnsupportedVersion(version));
        }
        let header = |field, offset, found: u64, expected: u64| {
            if found == expected {
                Ok(())
            } else {
                Err(StoreError::Header {
                    field,
                    offset,
                    found,
                    expected,
                })
            }
        };
        header("reserved", 6, u16_at(6) as u64, 0)?;
        let geo = Geometry::new(u64_at(8))?;
        header("unit_size", 16, u32_at(16) as u64, T1_SIZE)?;
        header("unit_count", 20, u64_at(20), geo.units())?;
        let updated_at_us = u64_at(28);
        let count = u16_at(36) as usize;

        let mut found: [Option<Bitfield>; 4] = Default::default();
        let mut off = HEADER_LEN;
        for index in 0..count {
            let section_err = |tag, reason| StoreError::Section {
                index,
                tag,
                offset: off,
                reason,
            };
            if content.len() < off + 5 {
                return Err(section_err(0, "header runs past the end"));
            }
            let tag = content[off];
            let len = u32_at(off + 1) as usize;
            let slot = match tag {
                TAG_T1_HAVE..=TAG_T3 => (tag - 1) as usize,
                _ => return Err(section_err(tag, "unknown tag")),
            };
            if found[slot].is_some() {
                return Err(section_err(tag, "repeated"));
            }
            if content.len() - (off + 5) < len {
                return Err(section_err(tag, "body runs past the end"));
            }
            let bits_len = match tag {
                TAG_T1_HAVE | TAG_T1_PROVEN => geo.units(),
                TAG_T2 => geo.blocks(Tier::T2),
                _ => geo.blocks(Tier::T3),
            };
            let bits = Bitfield::from_bytes(&content[off + 5..off + 5 + len], bits_len).map_err(
                |source| StoreError::Bitfield {
                    name: section_name(tag),
                    source,
                },
            )?;
            found[slot] = Some(bits);
            off += 5 + len;
        }
        if off != content.len() {
            return Err(StoreError::Trailing(content.len() - off));
        }
        let [have, proven, t2, t3] = found;
        let have = have.ok_or(StoreError::MissingSection("t1_have"))?;
        let proven = proven.ok_or(StoreError::MissingSection("t1_proven"))?;
        let mut available = have.clone();
        let mut notes = LoadNotes::default();
        for u in have.iter_ones_in(0..have.len()) {
            if !proven.get(u) {
                available.clear(u);
                notes.unproven_ignored += 1;
            }
        }
        let tiers = match (version, t2, t3) {
            (1, None, None) => {
                notes.tiers_rebuilt = true;
                LocalTiers::from_t1(geo, available)?
            }
            (1, _, _) => {
                return Err(StoreError::Section {
                    index: 2,
                    tag: TAG_T2,
                    offset: HEADER_LEN,
                    reason: "tier sections in a version 1 store",
                })
            }
            (_, Some(t2), Some(t3)) => LocalTiers::from_parts(geo, available, t2, t3)?,
            (_, None, _) => return Err(StoreError::MissingSection("t2_have")),
            (_, _, None) => return Err(StoreError::MissingSection("t3_have")),
        };
        Ok((
            StoreState {
                have,
                proven,
                tiers,
                updated_at_us,
            },
            notes,
        ))
    }

    /// Decodes and checks that the store is for a file of `file_len` bytes.
    pub fn decode_for(bytes: &[u8], file_len: u64) -> Result<(Self, LoadNotes), StoreError> {
        let (s, notes) = Self::decode(bytes)?;
        if s.geometry().file_len() != file_len {
            return Err(StoreError::WrongFile {
                found: s.geometry().file_len(),
                expected: file_len,
            });
        }
        Ok((s, notes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tiers::T3_SIZE;
    use proptest::prelude::*;

    fn sample(len: u64, units: &[u64]) -> StoreState {
        let mut t = LocalTiers::new(Geometry::new(len).unwrap());
        for &u in units {
            t.mark_t1_complete(u).unwrap();
        }
        StoreState::from_tiers(&t, 42)
    }

    /// Re-seals a hand-edited store so that validation past the checksum is exercised.
    fn reseal(mut bytes: Vec<u8>) -> Vec<u8> {
        let n = bytes.len() - CHECKSUM_LEN;
        let sum = blake3::hash(&bytes[..n]);
        bytes[n..].copy_from_slice(sum.as_bytes());
        bytes
    }

    #[test]
    fn encoding_tiers_directly_matches_the_state_encoding() {
        let s = sample(T3_SIZE + 5 * T1_SIZE, &[0, 7, 513]);
        assert_eq!(encode_tiers(&s.tiers, 42), s.encode());
    }

    #[test]
    fn earlier_format_loads_with_tiers_rebuilt() {
        let s = sample(T3_SIZE + 5, &(0..513).collect::<Vec<_>>());
        let (back, notes) = StoreState::decode(&s.encode_version(1)).unwrap();
        assert!(notes.tiers_rebuilt);
        assert_eq!(back, s);
        assert!(back.tiers.is_complete());
    }

    #[test]
    fn have_without_proof_is_not_available() {
        let mut s = sample(10 * T1_SIZE, &[1, 2]);
        s.have.set(7);
        let (back, notes) = StoreState::decode(&s.encode()).unwrap();
        assert_eq!(notes.unproven_ignored, 1);
        assert!(!back.tiers.has_at_tier(Tier::T1, 7));
        assert!(back.have.get(7));
    }

    #[test]
    fn each_validation_names_what_and_where() {
        let good = sample(3 * T1_SIZE, &[0]).encode();
        let mut v = good.clone();
        v[4] = 9;
        assert_eq!(
            StoreState::decode(&reseal(v)),
            Err(StoreError::UnsupportedVersion(9))
        );
        let mut v = good.clone();
        v[16] = 1; // unit size
        assert!(matches!(
            StoreState::decode(&reseal(v)),
            Err(StoreError::Header {
                field: "unit_size",
                offset: 16,
                ..
            })
        ));
        let mut v = good.clone();
        v[20] = 4; // unit count
        assert!(matches!(
            StoreState::decode(&reseal(v)),
            Err(StoreError::Header {
                field: "unit_count",
                ..
            })
        ));
        let mut v = good.clone();
        v[HEADER_LEN + 5] = 0b1001_0000; // a spare bit of t1_have
        assert!(matches!(
            StoreState::decode(&reseal(v)),
            Err(StoreError::Bitfield {
                name: "t1_have",
                ..
            })
        ));
        // T2 bit set without its units: 3 units, one T2 block; section 3 at 38 + 6 + 6.
        let mut v = good.clone();
        v[HEADER_LEN + 12 + 5] = 0x80;
        assert!(matches!(
            StoreState::decode(&reseal(v)),
            Err(StoreError::Inconsistent(ConsistencyError::Tier {
                tier: Tier::T2,
                index: 0,
                stored: true
            }))
        ));
        let mut v = good.clone();
        v[HEADER_LEN] = 9;
        assert!(matches!(
            StoreState::decode(&reseal(v)),
            Err(StoreError::Section {
                reason: "unknown tag",
                ..
            })
        ));
        assert_eq!(
            StoreState::decode_for(&good, 5).unwrap_err(),
            StoreError::WrongFile {
                found: 3 * T1_SIZE,
                expected: 5
            }
        );
        assert!(matches!(
            StoreState::decode(&good[..40]),
            Err(StoreError::TooShort(40))
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn round_trip_and_every_single_byte_corruption_is_rejected(
            len in 0u64..3 * T3_SIZE,
            picks in proptest::collection::vec(any::<u64>(), 0..64),
            flip in 1u8..=255,
            at in any::<prop::sample::Index>(),
        ) {
            let geo = Geometry::new(len).unwrap();
            let units: Vec<u64> = if geo.units() == 0 { vec![] } else {
                picks.iter().map(|p| p % geo.units()).collect()
            };
            let s = sample(len, &units);
            let bytes = s.encode();
            let (back, notes) = StoreState::decode(&bytes).unwrap();
            prop_assert_eq!(&back, &s);
            prop_assert_eq!(notes, LoadNotes::default());
            let mut bad = bytes.clone();
            bad[at.index(bytes.len())] ^= flip;
            prop_assert!(StoreState::decode(&bad).is_err());
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = StoreState::decode(&bytes);
            let mut sealed = b"TSAV".to_vec();
            sealed.extend(&bytes);
            sealed.extend([0u8; 32]);
            let _ = StoreState::decode(&reseal(sealed));
        }
    }
}
