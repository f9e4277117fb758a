//! Checking a unit received from a peer against the content root.

use blake3::hazmat::{
    merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode,
};

use super::{
    path, tree_unit_count, unit_chunks, unit_len, ContentError, UnitProof, CHUNKS_PER_UNIT,
    UNIT_LEN,
};

/// Checks that `data` is unit `unit` of the file of `file_len` bytes whose content root is
/// `root`, using `proof`. Never panics; any mismatch is an error.
///
/// In order, it checks: the unit exists; `data` has the unit's exact length; `leaf_start` and
/// `leaf_count` describe the unit; the proof has exactly the nodes at exactly the levels the
/// geometry requires (see [`expected_levels`](super::expected_levels)); and finally that the unit's
/// chaining value, folded with the siblings (non-root merges, the top one as root), equals `root`
/// (`blake3::Hash` equality is constant time). A single-unit file has an empty proof and its unit
/// is hashed as the root.
///
/// ```
/// use tierswarm_io::content::{verify_unit, ContentError, Outboard, UNIT_LEN};
///
/// let file = vec![7u8; 5 * UNIT_LEN as usize];
/// let outboard = Outboard::build(&file[..], file.len() as u64)?;
/// let (root, len) = (outboard.root(), file.len() as u64);
/// let unit_data = &file[..UNIT_LEN as usize]; // unit 0; units 0-4 are identical bytes…
/// let proof = outboard.proof(0)?;
/// verify_unit(&root, len, 0, unit_data, &proof)?;
///
/// // …but each unit is hashed at its own offset, so unit 1's proof does not fit unit 0.
/// let other = outboard.proof(1)?;
/// assert!(verify_unit(&root, len, 0, unit_data, &other).is_err());
///
/// // A dropped node is caught by the shape check before any hashing.
/// let mut short = proof.clone();
/// short.nodes.pop();
/// assert!(matches!(
///     verify_unit(&root, len, 0, unit_data, &short),
///     Err(ContentError::NodeCount { .. })
/// ));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn verify_unit(
    root: &[u8; 32],
    file_len: u64,
    unit: u64,
    data: &[u8],
    proof: &UnitProof,
) -> Result<(), ContentError> {
    verify_unit_value(root, file_len, unit, data, proof).map(|_| ())
}

/// A unit's bytes that verified against the content root, with the unit's own chaining value
/// (its non-root BLAKE3 subtree hash; `None` for a single-unit file, whose unit is the root).
/// Only [`verify_unit_value`] makes one, so the value always belongs to the bytes: a download
/// writes it with [`DataFile::write_verified_unit`](crate::DataFile::write_verified_unit), which
/// values the unit's piece from it without hashing the piece again
/// ([`read_back`](crate::read_back)).
#[derive(Debug, Clone, Copy)]
pub struct VerifiedUnit<'a> {
    unit: u64,
    data: &'a [u8],
    value: Option<ChainingValue>,
}

impl<'a> VerifiedUnit<'a> {
    /// The unit's index.
    pub fn unit(&self) -> u64 {
        self.unit
    }

    /// The unit's bytes.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// The unit's chaining value (`None` for a single-unit file).
    pub fn value(&self) -> Option<ChainingValue> {
        self.value
    }

    /// A unit with any value, for tests of what a wrong value does.
    #[cfg(test)]
    pub(crate) fn forged(unit: u64, data: &'a [u8], value: Option<ChainingValue>) -> Self {
        VerifiedUnit { unit, data, value }
    }
}

/// [`verify_unit`], returning the unit as a [`VerifiedUnit`]: its bytes with its own chaining
/// value, which a download keeps to value the unit's piece without hashing it again.
pub fn verify_unit_value<'a>(
    root: &[u8; 32],
    file_len: u64,
    unit: u64,
    data: &'a [u8],
    proof: &UnitProof,
) -> Result<VerifiedUnit<'a>, ContentError> {
    let expected_len = unit_len(file_len, unit)?;
    let actual_len = data.len() as u64;
    if actual_len != expected_len {
        return Err(ContentError::DataLength {
            unit,
            expected: expected_len,
            actual: actual_len,
        });
    }
    let (expected_start, expected_count) = (unit * CHUNKS_PER_UNIT, unit_chunks(expected_len));
    if proof.leaf_start != expected_start || proof.leaf_count != expected_count {
        return Err(ContentError::LeafRange {
            unit,
            leaf_start: proof.leaf_start,
            leaf_count: proof.leaf_count,
            expected_start,
            expected_count,
        });
    }
    let steps = path(tree_unit_count(file_len), unit);
    let expected_nodes = steps.clone().count();
    if proof.nodes.len() != expected_nodes {
        return Err(ContentError::NodeCount {
            unit,
            expected: expected_nodes,
            actual: proof.nodes.len(),
        });
    }
    for (index, (step, node)) in steps.clone().zip(&proof.nodes).enumerate() {
        if node.level != step.level() {
            return Err(ContentError::Level {
                index,
                expected: step.level(),
                actual: node.level,
            });
        }
    }

    let expected_root = blake3::Hash::from_bytes(*root);
    let mut own = None;
    let computed = if expected_nodes == 0 {
        // Single-unit file: the unit is the whole file.
        blake3::hash(data)
    } else {
        // Multi-unit file: every unit is non-empty and at most one full unit at an aligned offset,
        // which is exactly what `set_input_offset` and `finalize_non_root` require.
        let mut cv = blake3::Hasher::new()
            .set_input_offset(unit * UNIT_LEN)
            .update(data)
            .finalize_non_root();
        own = Some(cv);
        let last = expected_nodes - 1;
        let mut root_hash = None;
        for (i, (step, node)) in steps.zip(&proof.nodes).enumerate() {
            let (left, right) = if step.left {
                (&node.hash, &cv)
            } else {
                (&cv, &node.hash)
            };
            if i == last {
                root_hash = Some(merge_subtrees_root(left, right, Mode::Hash));
            } else {
                cv = merge_subtrees_non_root(left, right, Mode::Hash);
            }
        }
        match root_hash {
            Some(hash) => hash,
            None => return Err(ContentError::HashMismatch { unit }),
        }
    };
    if computed == expected_root {
        Ok(VerifiedUnit {
            unit,
            data,
            value: own,
        })
    } else {
        Err(ContentError::HashMismatch { unit })
    }
}
