//! The outboard: a file's unit CVs and interior CVs, enough to answer any proof without hashing.

use std::io::{self, Read};

use blake3::hazmat::{
    merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode,
};

use super::{
    path, tree_unit_count, unit_chunks, unit_len, ContentError, ProofNode, UnitProof,
    CHUNKS_PER_UNIT, UNIT_LEN,
};

/// Units hashed per read while building (1 MiB reads).
const UNITS_PER_READ: usize = 16;

/// A file's BLAKE3 tree above the unit level, built once by hashing the file.
///
/// It keeps the chaining value of every unit and of every interior node below the root, layer by
/// layer, so [`proof`](Outboard::proof) is a walk up the tree: O(log n), no hashing. Memory is
/// about **64 bytes per unit** (32 for the unit CVs, 32 for the interior layers above them,
/// which halve each time): 1 MiB for a 1 GiB file, 1 GiB for a 1 TiB file. See
/// [`memory_bytes`](Outboard::memory_bytes).
///
/// ```
/// use tierswarm_io::content::{verify_unit, Outboard, UNIT_LEN};
///
/// let file: Vec<u8> = (0..3 * UNIT_LEN + 5).map(|i| (i % 251) as u8).collect();
/// let outboard = Outboard::build(&file[..], file.len() as u64)?;
/// assert_eq!(outboard.root(), *blake3::hash(&file).as_bytes());
///
/// let unit = 3; // the short last unit
/// let data = &file[(unit * UNIT_LEN) as usize..];
/// let proof = outboard.proof(unit)?;
/// verify_unit(&outboard.root(), file.len() as u64, unit, data, &proof)?;
///
/// // Anything else is rejected.
/// let mut bad = data.to_vec();
/// bad[0] ^= 1;
/// assert!(verify_unit(&outboard.root(), file.len() as u64, unit, &bad, &proof).is_err());
/// assert!(verify_unit(&outboard.root(), file.len() as u64, 2, data, &proof).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outboard {
    file_len: u64,
    units: u64,
    root: [u8; 32],
    /// All stored layers, concatenated: layer 0 = unit CVs, layer k = `ceil(units / 2^k)` CVs.
    /// Only layers with at least two nodes are kept (the single top node is the root).
    cvs: Vec<ChainingValue>,
    /// Start of each stored layer in `cvs`.
    layer_starts: Vec<usize>,
}

impl Outboard {
    /// Hashes exactly `len` bytes from `reader` (a short reader is an `UnexpectedEof` error; bytes
    /// past `len` are not read) and keeps the tree for proofs.
    pub fn build(mut reader: impl Read, len: u64) -> io::Result<Outboard> {
        let units = tree_unit_count(len);
        if units == 1 {
            // Single unit: no proof nodes, the root is the plain hash.
            let mut data = Vec::with_capacity(to_usize(len)?);
            (&mut reader).take(len).read_to_end(&mut data)?;
            if data.len() as u64 != len {
                return Err(short_read(len));
            }
            return Ok(Outboard {
                file_len: len,
                units,
                root: *blake3::hash(&data).as_bytes(),
                cvs: Vec::new(),
                layer_starts: Vec::new(),
            });
        }

        let layout = layer_layout(units)?;
        let total = *layout.last().unwrap_or(&0);
        let mut cvs: Vec<ChainingValue> = Vec::new();
        cvs.try_reserve_exact(total)
            .map_err(|e| io::Error::new(io::ErrorKind::OutOfMemory, e))?;

        // Layer 0: hash each unit as a subtree at its input offset.
        let mut buf = vec![0u8; UNITS_PER_READ * UNIT_LEN as usize];
        let mut unit = 0u64;
        while unit < units {
            let batch = (units - unit).min(UNITS_PER_READ as u64);
            let bytes = (len - unit * UNIT_LEN).min(batch * UNIT_LEN) as usize;
            reader.read_exact(&mut buf[..bytes]).map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    short_read(len)
                } else {
                    e
                }
            })?;
            for (i, data) in buf[..bytes].chunks(UNIT_LEN as usize).enumerate() {
                let offset = (unit + i as u64) * UNIT_LEN;
                cvs.push(
                    blake3::Hasher::new()
                        .set_input_offset(offset)
                        .update(data)
                        .finalize_non_root(),
                );
            }
            unit += batch;
        }

        // Interior layers: pair up the previous layer; an odd last node is carried up as is.
        for w in layout.windows(3) {
            let (prev_start, start) = (w[0], w[1]);
            for i in (prev_start..start).step_by(2) {
                let cv = if i + 1 < start {
                    merge_subtrees_non_root(&cvs[i], &cvs[i + 1], Mode::Hash)
                } else {
                    cvs[i]
                };
                cvs.push(cv);
            }
        }

        // The top stored layer has exactly two nodes; their root merge is the content root.
        let top = layout[layout.len() - 2];
        let root = merge_subtrees_root(&cvs[top], &cvs[top + 1], Mode::Hash);
        let mut layer_starts = layout;
        layer_starts.pop();
        Ok(Outboard {
            file_len: len,
            units,
            root: *root.as_bytes(),
            cvs,
            layer_starts,
        })
    }

    /// The content root: the BLAKE3 hash of the whole file.
    pub fn root(&self) -> [u8; 32] {
        self.root
    }

    /// Length of the file in bytes.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// Units in the hash tree (1 for the empty file).
    pub fn unit_count(&self) -> u64 {
        self.units
    }

    /// Heap bytes held for the tree (about 64 per unit).
    pub fn memory_bytes(&self) -> usize {
        self.cvs.capacity() * std::mem::size_of::<ChainingValue>()
            + self.layer_starts.capacity() * std::mem::size_of::<usize>()
    }

    /// The proof for `unit`, bottom-up; empty for a single-unit file.
    pub fn proof(&self, unit: u64) -> Result<UnitProof, ContentError> {
        let len = unit_len(self.file_len, unit)?;
        let nodes = path(self.units, unit)
            .map(|step| {
                // The layer and index exist by construction of `layer_starts`.
                let at = self.layer_starts[step.layer as usize] + step.sibling as usize;
                ProofNode {
                    hash: self.cvs[at],
                    level: step.level(),
                }
            })
            .collect();
        Ok(UnitProof {
            leaf_start: unit * CHUNKS_PER_UNIT,
            leaf_count: unit_chunks(len),
            nodes,
        })
    }
}

/// Start offsets of each stored layer (those with ≥ 2 nodes) plus the total, for `units` ≥ 2.
fn layer_layout(units: u64) -> io::Result<Vec<usize>> {
    let mut starts = vec![0usize];
    let mut count = units;
    let mut total = 0u64;
    while count > 1 {
        total = total.checked_add(count).ok_or_else(|| too_large(units))?;
        starts.push(to_usize(total)?);
        count = count.div_ceil(2);
    }
    Ok(starts)
}

fn to_usize(n: u64) -> io::Result<usize> {
    usize::try_from(n).map_err(|_| too_large(n))
}

fn too_large(n: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{n} is too large for this platform's memory"),
    )
}

fn short_read(len: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("file is shorter than its stated length of {len} bytes"),
    )
}
