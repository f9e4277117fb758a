//! BLAKE3 verified units.
//!
//! A file is cut into 64 KiB units: unit `i` is bytes `[i·65536, min((i+1)·65536, len))`. The
//! **content root** is the plain BLAKE3 hash of the whole file (what `b3sum` prints). In the BLAKE3
//! tree (1 KiB chunks, left subtrees complete powers of two) every unit is an aligned subtree of
//! up to 64 chunks, so a unit can be checked against the root with the chaining values (CVs) of
//! the subtrees beside its path: a [`UnitProof`].
//!
//! Each proof node carries its **level**: log2 of the sibling's span in chunks *as positioned in
//! the tree* (a unit's own subtree is level [`UNIT_LEVEL`] = 6; a partial subtree on the right
//! edge keeps its positional level). Nodes go bottom-up. Where the tree has no sibling at some
//! level (a right-edge node with nothing to its right), that level is skipped. The sibling at
//! level `L` is on the left iff bit `L` of the unit's first chunk index is 1.
//!
//! A file of a single unit (at most 64 KiB, including the empty file) has an empty proof: the
//! unit is checked by hashing it as the root. Note that the empty file is one empty unit here
//! (BLAKE3 hashes it as one empty chunk), while `tierswarm_core::Geometry::units` counts 0 units
//! for it; nothing is ever transferred for an empty file.
//!
//! - [`Outboard`] hashes a file once and then answers [`Outboard::proof`] in O(log n).
//! - [`verify_unit`] checks a unit received from a peer, rejecting any proof whose shape differs
//!   from what the geometry requires.

mod outboard;
mod verify;

#[cfg(test)]
mod tests;

use std::io::{self, Read};

pub use outboard::Outboard;
pub use verify::verify_unit;
pub use verify::{verify_unit_value, VerifiedUnit};

/// Bytes in one unit (T1): 64 KiB.
pub const UNIT_LEN: u64 = 65536;
/// Bytes in one BLAKE3 chunk: 1 KiB.
pub const CHUNK_LEN: u64 = blake3::CHUNK_LEN as u64;
/// BLAKE3 chunks in one full unit: 64.
pub const CHUNKS_PER_UNIT: u64 = UNIT_LEN / CHUNK_LEN;
/// Level of a unit's own subtree: log2 of [`CHUNKS_PER_UNIT`].
pub const UNIT_LEVEL: u32 = CHUNKS_PER_UNIT.trailing_zeros();

/// One sibling subtree beside a unit's path to the root.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProofNode {
    /// The sibling subtree's BLAKE3 chaining value (non-root hash).
    pub hash: [u8; 32],
    /// log2 of the sibling's span in chunks, as positioned in the tree.
    pub level: u32,
}

/// The proof that one unit belongs to a file with a given content root.
///
/// Maps 1:1 onto the wire's `BaoProof { leaf_start, leaf_count, repeated BaoProofNode proof }`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct UnitProof {
    /// Index of the unit's first chunk: `unit · 64`.
    pub leaf_start: u64,
    /// Chunks in the unit: `ceil(unit_len / 1024)`, and 1 for the empty file (one empty chunk).
    pub leaf_count: u64,
    /// Sibling subtrees, bottom-up, levels strictly increasing.
    pub nodes: Vec<ProofNode>,
}

/// Why a unit or proof was rejected, or a unit index was invalid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ContentError {
    /// The unit index is past the end of the file.
    #[error("unit {unit} is out of range: the file has {units} units")]
    UnitOutOfRange {
        /// The requested unit.
        unit: u64,
        /// Units in the file.
        units: u64,
    },
    /// The unit's data has the wrong length.
    #[error("unit {unit} carries {actual} bytes, expected {expected}")]
    DataLength {
        /// The unit.
        unit: u64,
        /// Its length from the file geometry.
        expected: u64,
        /// Bytes received.
        actual: u64,
    },
    /// The proof's `leaf_start`/`leaf_count` do not describe the unit.
    #[error(
        "proof covers chunks {leaf_start}+{leaf_count}, unit {unit} is chunks {expected_start}+{expected_count}"
    )]
    LeafRange {
        /// The unit.
        unit: u64,
        /// `leaf_start` received.
        leaf_start: u64,
        /// `leaf_count` received.
        leaf_count: u64,
        /// `leaf_start` the unit requires.
        expected_start: u64,
        /// `leaf_count` the unit requires.
        expected_count: u64,
    },
    /// The proof has the wrong number of nodes for this unit.
    #[error("proof has {actual} nodes, unit {unit} needs {expected}")]
    NodeCount {
        /// The unit.
        unit: u64,
        /// Nodes the geometry requires.
        expected: usize,
        /// Nodes received.
        actual: usize,
    },
    /// A proof node sits at the wrong level.
    #[error("proof node {index} has level {actual}, expected {expected}")]
    Level {
        /// Position of the node in the proof.
        index: usize,
        /// Level the geometry requires.
        expected: u32,
        /// Level received.
        actual: u32,
    },
    /// The unit and proof do not hash to the content root.
    #[error("unit {unit} does not hash to the content root")]
    HashMismatch {
        /// The unit.
        unit: u64,
    },
}

/// Units in the hash tree of a file of `file_len` bytes: `ceil(file_len / 65536)`, and 1 for the
/// empty file.
pub const fn tree_unit_count(file_len: u64) -> u64 {
    if file_len == 0 {
        1
    } else {
        file_len.div_ceil(UNIT_LEN)
    }
}

/// Byte length of `unit` in a file of `file_len` bytes, or an error past the end.
pub fn unit_len(file_len: u64, unit: u64) -> Result<u64, ContentError> {
    let units = tree_unit_count(file_len);
    if unit >= units {
        return Err(ContentError::UnitOutOfRange { unit, units });
    }
    // unit < units ≤ 2^48, so the product cannot overflow.
    Ok((file_len - unit * UNIT_LEN).min(UNIT_LEN))
}

/// Chunks in a unit of `unit_len` bytes: `ceil(unit_len / 1024)`, at least 1.
pub const fn unit_chunks(unit_len: u64) -> u64 {
    if unit_len == 0 {
        1
    } else {
        unit_len.div_ceil(CHUNK_LEN)
    }
}

/// The levels a valid proof for `unit` must carry, bottom-up (empty for a single-unit file).
pub fn expected_levels(file_len: u64, unit: u64) -> Result<Vec<u32>, ContentError> {
    unit_len(file_len, unit)?;
    Ok(path(tree_unit_count(file_len), unit)
        .map(|s| s.level())
        .collect())
}

/// BLAKE3 hash of everything `reader` yields: the content root (`b3sum` agrees).
pub fn hash_file_root(reader: impl Read) -> io::Result<[u8; 32]> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(reader)?;
    Ok(*hasher.finalize().as_bytes())
}

/// One step up the path from a unit to the root: the sibling beside it at one layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Step {
    /// Layer above the units (0 = the unit layer); the node's level is `UNIT_LEVEL + layer`.
    layer: u32,
    /// Whether the sibling is the left child of the parent.
    left: bool,
    /// Index of the sibling among the nodes of its layer.
    sibling: u64,
}

impl Step {
    fn level(&self) -> u32 {
        UNIT_LEVEL + self.layer
    }
}

/// The siblings beside `unit`'s path in a tree of `units` units, bottom-up.
///
/// Layer `k` has `ceil(units / 2^k)` positional nodes; a node with no right sibling is carried up
/// unchanged (BLAKE3 makes no parent for it). The walk stops at the layer with one node: the root.
fn path(units: u64, unit: u64) -> Path {
    Path {
        count: units,
        index: unit,
        layer: 0,
    }
}

#[derive(Clone, Debug)]
struct Path {
    /// Nodes in the current layer.
    count: u64,
    /// Index of the path's node in the current layer.
    index: u64,
    layer: u32,
}

impl Iterator for Path {
    type Item = Step;

    fn next(&mut self) -> Option<Step> {
        while self.count > 1 {
            let (index, layer) = (self.index, self.layer);
            let step = if index & 1 == 1 {
                Some(Step {
                    layer,
                    left: true,
                    sibling: index - 1,
                })
            } else if index + 1 < self.count {
                Some(Step {
                    layer,
                    left: false,
                    sibling: index + 1,
                })
            } else {
                None
            };
            self.count = self.count.div_ceil(2);
            self.index = index / 2;
            self.layer += 1;
            if step.is_some() {
                return step;
            }
        }
        None
    }
}
