//! The persisted availability store: pure encode, decode and validate.
//!
//! The adapters write the bytes atomically (temp file, fsync, rename, fsync of the directory);
//! this module only turns state into bytes and back, and refuses anything that does not hang
//! together. Layout (all integers little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `TSAV` |
//! | 4 | 2 | version: 1, 2 (earlier formats) or 3 (current) |
//! | 6 | 2 | reserved, zero |
//! | 8 | 8 | file length in bytes |
//! | 16 | 4 | unit size (65536) |
//! | 20 | 8 | unit count |
//! | 28 | 8 | last-updated time (µs since the embedder's epoch; an input, never read here) |
//! | 36 | 32 | content root (BLAKE3 of the file) — version 3 only |
//! | 68 (36 before v3) | 2 | number of sections |
//! | 70 (38 before v3) | … | sections: tag (1 byte), length (4 bytes), bitfield bytes |
//! | end − 32 | 32 | BLAKE3 of every byte before it |
//!
//! Section tags: 1 = T1 have, 2 = T1 proven (verified against the content root), 3 = T2 have,
//! 4 = T3 have. Version 1 carries sections 1 and 2; versions 2 and 3 carry all four. A unit is
//! *available* only when it is both have and proven (proof-authoritative, as WO-001 planned);
//! the tier sections must agree exactly with the available units.
//!
//! **Content binding.** Version 3 names the content root it belongs to, and
//! [`StoreState::decode_for`] refuses a store for any other root or length. Versions 1 and 2 did
//! not name it: they still decode ([`StoreState::decode`], with [`StoreState::root`] `None`,
//! every past format is kept loadable by the fixtures in `core/tests/fixtures/`), but
//! [`StoreState::decode_for`] refuses them ([`StoreError::NoRoot`]): nothing in such a store
//! proves that its units belong to the content at hand, so an embedder must re-verify the data
//! against the root (the CLI's `fetch --repair`) rather than trust it.
//!
//! ```
//! use tierswarm_core::{store::StoreState, Geometry, LocalTiers};
//! let geo = Geometry::new(5_000_000).unwrap();
//! let mut tiers = LocalTiers::new(geo);
//! tiers.mark_t1_complete(3).unwrap();
//! let root = [7; 32];
//! let bytes = StoreState::from_tiers(root, &tiers, 1_700_000).encode();
//! let (back, _) = StoreState::decode_for(&bytes, &root, 5_000_000).unwrap();
//! assert_eq!(back.tiers, tiers);
//! assert_eq!(back.root, Some(root));
//! assert_eq!(back.updated_at_us, 1_700_000);
//! assert!(StoreState::decode_for(&bytes, &[8; 32], 5_000_000).is_err());
//! ```

use crate::availability::{ConsistencyError, LocalTiers};
use crate::bitfield::{Bitfield, BitfieldError};
use crate::tiers::{Geometry, Tier, TierError, T1_SIZE};

const MAGIC: &[u8; 4] = b"TSAV";
/// The version [`StoreState::encode`] writes (for a state that names its root).
pub const CURRENT_VERSION: u16 = 3;
/// The first version that names the content root.
pub const ROOT_VERSION: u16 = 3;
/// Header bytes of versions 1 and 2 (no root).
const HEADER_LEN_V2: usize = 38;
/// Header bytes from version 3 on: the root sits before the section count.
const HEADER_LEN: usize = HEADER_LEN_V2 + 32;
const ROOT_OFFSET: usize = 36;
const CHECKSUM_LEN: usize = 32;

fn header_len(version: u16) -> usize {
    if version >= ROOT_VERSION {
        HEADER_LEN
    } else {
        HEADER_LEN_V2
    }
}

/// The first 16 hex digits of a root: enough to tell two apart in a message.
fn short_hex(root: &[u8; 32]) -> String {
    use core::fmt::Write as _;
    root[..8]
        .iter()
        .fold(String::with_capacity(17), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
        + "…"
}

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
    #[error("unsupported store version {0} (this build reads 1 to 3)")]
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
    /// The store belongs to another file than the one being loaded.
    #[error(
        "store belongs to another file (root {}, {found_len} bytes), not to root {} ({expected_len} bytes)",
        short_hex(.found_root), short_hex(.expected_root)
    )]
    WrongContent {
        /// Root named by the store.
        found_root: [u8; 32],
        /// Length in the store.
        found_len: u64,
        /// Root expected by the caller.
        expected_root: [u8; 32],
        /// Length expected by the caller.
        expected_len: u64,
    },
    /// The store is of a format that does not name its content root (versions 1 and 2).
    #[error(
        "store format version {0} does not name the content root, so nothing proves it belongs to this file"
    )]
    NoRoot(u16),
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
    /// The content root the store belongs to: always `Some` from version 3 on, `None` for a
    /// store of an earlier format (which did not name it).
    pub root: Option<[u8; 32]>,
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
    /// State of the content `root` whose have and proven sets are the tiers' T1 units (what the
    /// node persists: it marks a unit only after it was verified).
    pub fn from_tiers(root: [u8; 32], tiers: &LocalTiers, updated_at_us: u64) -> Self {
        let t1 = tiers.bitfield(Tier::T1).clone();
        StoreState {
            root: Some(root),
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

    /// Encodes in the current version. A state without a root (decoded from a store of an
    /// earlier format) is written as version 2, the newest format without one: re-encoding never
    /// invents a root the store did not name.
    pub fn encode(&self) -> Vec<u8> {
        encode_parts(
            self.root.as_ref(),
            &self.tiers,
            &self.have,
            &self.proven,
            self.updated_at_us,
        )
    }
}

/// Encodes local tiers of the content `root` as a current-version store without copying them
/// (have = proven = the tiers' T1 units): what the node persists, on its hot path.
pub fn encode_tiers(root: &[u8; 32], tiers: &LocalTiers, updated_at_us: u64) -> Vec<u8> {
    let t1 = tiers.bitfield(Tier::T1);
    encode_parts(Some(root), tiers, t1, t1, updated_at_us)
}

fn encode_parts(
    root: Option<&[u8; 32]>,
    tiers: &LocalTiers,
    have: &Bitfield,
    proven: &Bitfield,
    updated_at_us: u64,
) -> Vec<u8> {
    let geo = tiers.geometry();
    let version = if root.is_some() { CURRENT_VERSION } else { 2 };
    let sections: [(u8, &Bitfield); 4] = [
        (TAG_T1_HAVE, have),
        (TAG_T1_PROVEN, proven),
        (TAG_T2, tiers.bitfield(Tier::T2)),
        (TAG_T3, tiers.bitfield(Tier::T3)),
    ];
    let body: usize = sections.iter().map(|(_, b)| 5 + b.as_bytes().len()).sum();
    let mut out = Vec::with_capacity(HEADER_LEN + body + CHECKSUM_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&geo.file_len().to_le_bytes());
    out.extend_from_slice(&(T1_SIZE as u32).to_le_bytes());
    out.extend_from_slice(&geo.units().to_le_bytes());
    out.extend_from_slice(&updated_at_us.to_le_bytes());
    if let Some(root) = root {
        out.extend_from_slice(root);
    }
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
        if bytes.len() < HEADER_LEN_V2 + CHECKSUM_LEN {
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
        let header_len = header_len(version);
        if content.len() < header_len {
            return Err(StoreError::TooShort(bytes.len()));
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
        let root = (version >= ROOT_VERSION).then(|| {
            let mut r = [0u8; 32];
            r.copy_from_slice(&content[ROOT_OFFSET..ROOT_OFFSET + 32]);
            r
        });
        let count = u16_at(header_len - 2) as usize;

        let mut found: [Option<Bitfield>; 4] = Default::default();
        let mut off = header_len;
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
                    offset: header_len,
                    reason: "tier sections in a version 1 store",
                })
            }
            (_, Some(t2), Some(t3)) => LocalTiers::from_parts(geo, available, t2, t3)?,
            (_, None, _) => return Err(StoreError::MissingSection("t2_have")),
            (_, _, None) => return Err(StoreError::MissingSection("t3_have")),
        };
        Ok((
            StoreState {
                root,
                have,
                proven,
                tiers,
                updated_at_us,
            },
            notes,
        ))
    }

    /// Decodes and checks that the store belongs to the content `root` of `file_len` bytes: a
    /// store of another root or length is [`StoreError::WrongContent`], and one of a format that
    /// does not name its root is [`StoreError::NoRoot`] (see the [module docs](self)).
    pub fn decode_for(
        bytes: &[u8],
        root: &[u8; 32],
        file_len: u64,
    ) -> Result<(Self, LoadNotes), StoreError> {
        let (s, notes) = Self::decode(bytes)?;
        let Some(found_root) = s.root else {
            return Err(StoreError::NoRoot(u16::from_le_bytes([bytes[4], bytes[5]])));
        };
        let found_len = s.geometry().file_len();
        if found_root != *root || found_len != file_len {
            return Err(StoreError::WrongContent {
                found_root,
                found_len,
                expected_root: *root,
                expected_len: file_len,
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

    const ROOT: [u8; 32] = [0xab; 32];

    fn sample(len: u64, units: &[u64]) -> StoreState {
        let mut t = LocalTiers::new(Geometry::new(len).unwrap());
        for &u in units {
            t.mark_t1_complete(u).unwrap();
        }
        StoreState::from_tiers(ROOT, &t, 42)
    }

    /// Re-seals a hand-edited store so that validation past the checksum is exercised.
    fn reseal(mut bytes: Vec<u8>) -> Vec<u8> {
        if bytes.len() >= CHECKSUM_LEN {
            let n = bytes.len() - CHECKSUM_LEN;
            let sum = blake3::hash(&bytes[..n]);
            bytes[n..].copy_from_slice(sum.as_bytes());
        }
        bytes
    }

    /// The version 1 encoding of a state: the version 2 one without the tier sections.
    fn as_v1(state: &StoreState) -> Vec<u8> {
        let mut old = state.clone();
        old.root = None;
        let v2 = old.encode();
        let geo = state.geometry();
        let t1 = geo.units().div_ceil(8) as usize;
        let mut v1 = v2[..HEADER_LEN_V2 + 2 * (5 + t1)].to_vec();
        v1[4] = 1;
        v1[HEADER_LEN_V2 - 2] = 2;
        v1.extend_from_slice(&[0; CHECKSUM_LEN]);
        reseal(v1)
    }

    #[test]
    fn encoding_tiers_directly_matches_the_state_encoding() {
        let s = sample(T3_SIZE + 5 * T1_SIZE, &[0, 7, 513]);
        assert_eq!(encode_tiers(&ROOT, &s.tiers, 42), s.encode());
    }

    #[test]
    fn a_state_without_root_is_written_in_the_newest_format_without_one() {
        let mut s = sample(3 * T1_SIZE, &[1]);
        s.root = None;
        let bytes = s.encode();
        assert_eq!(u16::from_le_bytes([bytes[4], bytes[5]]), 2);
        assert_eq!(StoreState::decode(&bytes).unwrap().0, s);
        assert_eq!(
            StoreState::decode_for(&bytes, &ROOT, 3 * T1_SIZE).unwrap_err(),
            StoreError::NoRoot(2)
        );
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
        // T2 bit set without its units: 3 units, one T2 block; section 3 at 70 + 6 + 6.
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
        // A version 3 header cut before its section count.
        let mut v = good[..HEADER_LEN - 1].to_vec();
        v.extend_from_slice(&[0; CHECKSUM_LEN]);
        assert!(matches!(
            StoreState::decode(&reseal(v)),
            Err(StoreError::TooShort(_))
        ));
        assert_eq!(
            StoreState::decode_for(&good, &ROOT, 5).unwrap_err(),
            StoreError::WrongContent {
                found_root: ROOT,
                found_len: 3 * T1_SIZE,
                expected_root: ROOT,
                expected_len: 5
            }
        );
        let other = StoreState::decode_for(&good, &[1; 32], 3 * T1_SIZE).unwrap_err();
        assert!(matches!(other, StoreError::WrongContent { .. }));
        assert!(other.to_string().contains("abababababababab…"), "{other}");
        assert!(matches!(
            StoreState::decode(&good[..40]),
            Err(StoreError::TooShort(40))
        ));
    }

    fn arb_state() -> impl Strategy<Value = StoreState> {
        (
            0u64..3 * T3_SIZE,
            proptest::collection::vec(any::<u64>(), 0..64),
            any::<bool>(),
        )
            .prop_map(|(len, picks, rootless)| {
                let geo = Geometry::new(len).unwrap();
                let units: Vec<u64> = if geo.units() == 0 {
                    vec![]
                } else {
                    picks.iter().map(|p| p % geo.units()).collect()
                };
                let mut s = sample(len, &units);
                if rootless {
                    s.root = None;
                }
                s
            })
    }

    /// One edit of an encoded store. Field edits write a little-endian value at an offset;
    /// `Reseal` recomputes the checksum so that the edit reaches the decoder's deeper checks.
    #[derive(Debug, Clone)]
    enum Edit {
        Byte(prop::sample::Index, u8),
        U16(prop::sample::Index, u16),
        U32(prop::sample::Index, u32),
        U64(prop::sample::Index, u64),
        Insert(prop::sample::Index, u8),
        Remove(prop::sample::Index),
        Truncate(prop::sample::Index),
    }

    /// Values that sit on the decoder's boundaries: zero, one, lengths just off, the maxima.
    fn interesting() -> impl Strategy<Value = u64> {
        prop_oneof![
            Just(0u64),
            Just(1),
            Just(2),
            Just(3),
            Just(4),
            Just(5),
            Just(T1_SIZE),
            Just(T3_SIZE),
            Just(crate::tiers::MAX_FILE_LEN),
            Just(crate::tiers::MAX_FILE_LEN + 1),
            Just(u16::MAX as u64),
            Just(u32::MAX as u64),
            Just(u64::MAX),
            any::<u64>(),
        ]
    }

    fn arb_edit() -> impl Strategy<Value = Edit> {
        let at = || any::<prop::sample::Index>();
        prop_oneof![
            (at(), any::<u8>()).prop_map(|(i, b)| Edit::Byte(i, b)),
            (at(), interesting()).prop_map(|(i, v)| Edit::U16(i, v as u16)),
            (at(), interesting()).prop_map(|(i, v)| Edit::U32(i, v as u32)),
            (at(), interesting()).prop_map(|(i, v)| Edit::U64(i, v)),
            (at(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
            at().prop_map(Edit::Remove),
            at().prop_map(Edit::Truncate),
        ]
    }

    /// A valid store of any version (1, 2 or 3), a few edits, resealed nine times out of ten.
    fn arb_mutated_store() -> impl Strategy<Value = Vec<u8>> {
        (
            arb_state(),
            any::<bool>(),
            proptest::collection::vec(arb_edit(), 1..4),
            0u8..10,
        )
            .prop_map(|(state, v1, edits, seal)| {
                let mut bytes = if v1 { as_v1(&state) } else { state.encode() };
                for e in edits {
                    apply(&mut bytes, e);
                }
                if seal > 0 {
                    bytes = reseal(bytes);
                }
                bytes
            })
    }

    fn apply(bytes: &mut Vec<u8>, edit: Edit) {
        let put = |bytes: &mut Vec<u8>, i: &prop::sample::Index, v: &[u8]| {
            if bytes.len() >= v.len() {
                let at = i.index(bytes.len() - v.len() + 1);
                bytes[at..at + v.len()].copy_from_slice(v);
            }
        };
        match edit {
            Edit::Byte(i, b) => put(bytes, &i, &[b]),
            Edit::U16(i, v) => put(bytes, &i, &v.to_le_bytes()),
            Edit::U32(i, v) => put(bytes, &i, &v.to_le_bytes()),
            Edit::U64(i, v) => put(bytes, &i, &v.to_le_bytes()),
            Edit::Insert(i, b) => {
                let at = i.index(bytes.len() + 1);
                bytes.insert(at, b);
            }
            Edit::Remove(i) if !bytes.is_empty() => {
                let at = i.index(bytes.len());
                bytes.remove(at);
            }
            Edit::Truncate(i) => {
                let at = i.index(bytes.len() + 1);
                bytes.truncate(at);
            }
            Edit::Remove(_) => {}
        }
    }

    /// What every successful decode must satisfy: the state re-encodes to a store that decodes
    /// to the same state, and its tiers are exactly the units both present and proven.
    fn check_decoded(state: &StoreState) {
        let again = StoreState::decode(&state.encode()).expect("re-encoding decodes");
        assert_eq!(&again.0, state);
        let mut available = state.have.clone();
        for u in state.have.iter_ones_in(0..state.have.len()) {
            if !state.proven.get(u) {
                available.clear(u);
            }
        }
        assert_eq!(state.tiers.bitfield(Tier::T1), &available);
        assert_eq!(state.have.len(), state.geometry().units());
    }

    /// How far into the decoder an input got.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    enum Depth {
        /// Refused at the length, the magic or the checksum.
        Envelope,
        /// Past the checksum, refused at the version byte.
        Version,
        /// Past the version: refused by a header, section or consistency check.
        Deep,
        /// Accepted.
        Decoded,
    }

    fn depth(r: &Result<(StoreState, LoadNotes), StoreError>) -> Depth {
        match r {
            Ok(_) => Depth::Decoded,
            Err(StoreError::TooShort(_) | StoreError::BadMagic | StoreError::Checksum) => {
                Depth::Envelope
            }
            Err(StoreError::UnsupportedVersion(_)) => Depth::Version,
            Err(_) => Depth::Deep,
        }
    }

    /// The mutated stores must mostly get past the checksum and the version byte, or the
    /// property below tests nothing but the envelope. Prints the shares (quoted in the notes).
    #[test]
    fn mutated_stores_reach_the_deep_checks() {
        let shares = crate::test_support::shares(arb_mutated_store(), 2000, |bytes| {
            depth(&StoreState::decode(&bytes))
        });
        let share = |d| shares.get(&d).copied().unwrap_or(0.0);
        let past_version = share(Depth::Deep) + share(Depth::Decoded);
        eprintln!(
            "store mutations: {:.1}% refused at the envelope, {:.1}% at the version, \
             {:.1}% deeper, {:.1}% decoded",
            100.0 * share(Depth::Envelope),
            100.0 * share(Depth::Version),
            100.0 * share(Depth::Deep),
            100.0 * share(Depth::Decoded)
        );
        assert!(past_version > 0.6, "{shares:?}");
        assert!(share(Depth::Deep) > 0.3, "{shares:?}");
        assert!(share(Depth::Decoded) > 0.05, "{shares:?}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn round_trip_and_every_single_byte_corruption_is_rejected(
            state in arb_state(),
            flip in 1u8..=255,
        ) {
            let bytes = state.encode();
            let (back, notes) = StoreState::decode(&bytes).unwrap();
            prop_assert_eq!(&back, &state);
            prop_assert_eq!(notes, LoadNotes::default());
            for at in 0..bytes.len() {
                let mut bad = bytes.clone();
                bad[at] ^= flip.rotate_left(at as u32);
                prop_assert!(StoreState::decode(&bad).is_err(), "byte {} accepted", at);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn mutated_stores_never_panic_and_what_decodes_is_consistent(
            bytes in arb_mutated_store()
        ) {
            if let Ok((state, _)) = StoreState::decode(&bytes) {
                check_decoded(&state);
            }
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
