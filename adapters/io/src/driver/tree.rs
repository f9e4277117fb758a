//! The proof nodes a downloader has verified: enough to serve, and to re-verify, every unit it
//! holds without the whole file.
//!
//! A seeder answers proofs from an [`Outboard`](crate::Outboard) built by hashing the file. A
//! downloader never has the whole file until the end, yet must serve the units it has (and
//! `--repair` must re-check them against the root). Every unit it accepted came with a proof that
//! verified against the root; those proofs' sibling chaining values are kept here, keyed by
//! their position in the tree (layer `level − 6`, index `(unit >> layer) ^ 1`). The proof of any
//! accepted unit can then be rebuilt: its siblings are exactly the nodes its own proof carried.
//!
//! Memory is dense, like the outboard: one slot per tree node above the units
//! (about 66 bytes per unit). On disk (`OUT.tsp`) it is an append-only log of 41-byte records
//! `[layer: u8][index: u64 LE][cv: 32 bytes]`, written as new nodes are learnt and fsynced before
//! each store save; a torn final record is ignored on load. The log is not trusted blindly: a
//! proof rebuilt from it is still checked by [`verify_unit`](crate::verify_unit) (by `--repair`
//! here, by the receiving peer when served).

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

use crate::content::{expected_levels, tree_unit_count, unit_chunks, unit_len};
use crate::content::{ProofNode, UnitProof, CHUNKS_PER_UNIT, UNIT_LEVEL};

const RECORD: usize = 1 + 8 + 32;

/// Sibling chaining values learnt from verified proofs, persisted as an append-only log.
#[derive(Debug)]
pub struct ProofTree {
    file_len: u64,
    /// `layers[k][i]`: node `i` of layer `k` (layer 0 = unit CVs).
    layers: Vec<Vec<Option<[u8; 32]>>>,
    log: Option<BufWriter<File>>,
}

impl ProofTree {
    /// An empty tree for a file of `file_len` bytes, not persisted.
    pub fn new(file_len: u64) -> Self {
        let mut layers = Vec::new();
        let mut count = tree_unit_count(file_len);
        while count > 1 {
            layers.push(vec![None; count as usize]);
            count = count.div_ceil(2);
        }
        ProofTree {
            file_len,
            layers,
            log: None,
        }
    }

    /// Loads the log at `path` (if any) and keeps appending to it. Records that do not fit this
    /// file's tree and a torn final record are ignored.
    pub fn open(file_len: u64, path: &Path) -> io::Result<Self> {
        let mut tree = Self::new(file_len);
        let mut bytes = Vec::new();
        match File::open(path) {
            Ok(mut f) => {
                f.read_to_end(&mut bytes)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        for rec in bytes.chunks_exact(RECORD) {
            let layer = rec[0] as usize;
            let mut idx = [0u8; 8];
            idx.copy_from_slice(&rec[1..9]);
            let index = u64::from_le_bytes(idx);
            let mut cv = [0u8; 32];
            cv.copy_from_slice(&rec[9..]);
            if let Some(slot) = tree
                .layers
                .get_mut(layer)
                .and_then(|l| l.get_mut(usize::try_from(index).ok()?))
            {
                *slot = Some(cv);
            }
        }
        let whole = (bytes.len() / RECORD * RECORD) as u64;
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        if file.metadata()?.len() != whole {
            file.set_len(whole)?; // drop a torn record so appends stay aligned
        }
        tree.log = Some(BufWriter::with_capacity(64 * 1024, file));
        Ok(tree)
    }

    /// Records the siblings of `unit` from its verified `proof`, appending new ones to the log.
    pub fn learn(&mut self, unit: u64, proof: &UnitProof) -> io::Result<()> {
        for node in &proof.nodes {
            let Some(layer) = node.level.checked_sub(UNIT_LEVEL) else {
                continue;
            };
            let index = (unit >> layer.min(63)) ^ 1;
            let Some(slot) = self
                .layers
                .get_mut(layer as usize)
                .and_then(|l| l.get_mut(usize::try_from(index).ok()?))
            else {
                continue;
            };
            if slot.is_none() {
                *slot = Some(node.hash);
                if let Some(log) = self.log.as_mut() {
                    log.write_all(&[layer as u8])?;
                    log.write_all(&index.to_le_bytes())?;
                    log.write_all(&node.hash)?;
                }
            }
        }
        Ok(())
    }

    /// The proof of `unit` rebuilt from learnt nodes, or `None` if one is missing.
    pub fn proof(&self, unit: u64) -> Option<UnitProof> {
        let len = unit_len(self.file_len, unit).ok()?;
        let levels = expected_levels(self.file_len, unit).ok()?;
        let nodes = levels
            .into_iter()
            .map(|level| {
                let layer = level - UNIT_LEVEL;
                let index = (unit >> layer) ^ 1;
                let hash = (*self.layers.get(layer as usize)?.get(index as usize)?)?;
                Some(ProofNode { hash, level })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(UnitProof {
            leaf_start: unit * CHUNKS_PER_UNIT,
            leaf_count: unit_chunks(len),
            nodes,
        })
    }

    /// Flushes and fsyncs the log (call before saving a store that relies on it).
    pub fn sync(&mut self) -> io::Result<()> {
        if let Some(log) = self.log.as_mut() {
            log.flush()?;
            log.get_ref().sync_data()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::{verify_unit, Outboard, UNIT_LEN};

    #[test]
    fn rebuilds_proofs_of_learnt_units_and_survives_reload() {
        let len = 11 * UNIT_LEN + 777;
        let file: Vec<u8> = (0..len).map(|i| (i * 31 % 253) as u8).collect();
        let ob = Outboard::build(&file[..], len).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.tsp");
        let mut t = ProofTree::open(len, &path).unwrap();
        for u in [3u64, 11, 6] {
            t.learn(u, &ob.proof(u).unwrap()).unwrap();
        }
        for u in [3u64, 11, 6] {
            assert_eq!(t.proof(u), Some(ob.proof(u).unwrap()), "unit {u}");
        }
        // Unit 2 would need unit 3's own CV, which no learnt proof carries.
        assert_eq!(t.proof(2), None);
        assert_eq!(t.proof(0), None);
        t.sync().unwrap();
        drop(t);
        // A torn record at the end is ignored.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&[1, 2, 3]);
        std::fs::write(&path, &bytes).unwrap();
        let t = ProofTree::open(len, &path).unwrap();
        let p = t.proof(11).unwrap();
        let data = &file[(11 * UNIT_LEN) as usize..];
        verify_unit(&ob.root(), len, 11, data, &p).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len() % RECORD as u64, 0);
    }

    #[test]
    fn single_unit_file_needs_no_nodes() {
        let t = ProofTree::new(100);
        assert_eq!(t.proof(0).unwrap().nodes.len(), 0);
        assert_eq!(t.proof(1), None);
    }
}
