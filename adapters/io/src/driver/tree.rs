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
//! **Memory** is paged: a page of 64 slots (about 2 KiB) is allocated the first time one of its
//! nodes is learnt, so nothing is allocated up front for the file's length (a manifest claiming
//! 64 TiB costs nothing until units arrive) and a full download costs about 66 bytes per unit,
//! like the outboard. Loading a log allocates at most one page per record, and a log with more
//! records than the tree has nodes is refused.
//!
//! **On disk** (`OUT.tsp`) it is a 48-byte header naming the content —
//! `[magic "TSPL"][version: u16 LE = 1][reserved: u16][file length: u64 LE][content root: 32
//! bytes]` — then an append-only log of 41-byte records `[layer: u8][index: u64 LE][cv: 32
//! bytes]`, written as new nodes are learnt and fsynced before each store save; a torn final
//! record is ignored on load. [`ProofTree::open`] refuses a log that names another root or
//! length ([`TreeError::Foreign`]) and a log without a header (written before logs named their
//! content, [`TreeError::Unbound`]); `--repair` reads such a log with [`ProofTree::salvage`],
//! re-verifies every unit with it and writes a fresh one. The log is not trusted blindly even
//! when its header matches: a proof rebuilt from it is still checked by
//! [`verify_unit`](crate::verify_unit) before the unit is served (and by the receiving peer).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

use crate::content::{expected_levels, tree_unit_count, unit_chunks, unit_len};
use crate::content::{ProofNode, UnitProof, CHUNKS_PER_UNIT, UNIT_LEVEL};
use crate::manifest::root_to_hex;

const RECORD: usize = 1 + 8 + 32;
const MAGIC: &[u8; 4] = b"TSPL";
const LOG_VERSION: u16 = 1;
/// Bytes of the proof log's header.
pub const HEADER_LEN: usize = 4 + 2 + 2 + 8 + 32;
/// Slots per page: 64 × 33 bytes.
const PAGE: u64 = 64;

type Page = Box<[Option<[u8; 32]>]>;

/// Why a proof log was refused.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// The log could not be read or written.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The log names other content.
    #[error("proof log belongs to another file (root {}…, {file_len} bytes)", &root_to_hex(.root)[..16])]
    Foreign {
        /// The root it names.
        root: [u8; 32],
        /// The length it names.
        file_len: u64,
    },
    /// The log has no header (written before logs named their content).
    #[error("proof log does not name the content it belongs to (an older format)")]
    Unbound,
    /// The log holds more records than the tree has nodes.
    #[error("proof log holds more records than the file's tree has nodes: it is corrupt")]
    TooLong,
}

/// One layer of the tree above the units: `len` positional nodes, paged.
#[derive(Debug, Default)]
struct Layer {
    len: u64,
    pages: BTreeMap<u64, Page>,
}

impl Layer {
    fn get(&self, index: u64) -> Option<[u8; 32]> {
        let page = self.pages.get(&(index / PAGE))?;
        page[(index % PAGE) as usize]
    }

    /// The slot of `index`, allocating its page on first use; `None` past the layer's end.
    fn slot(&mut self, index: u64) -> Option<&mut Option<[u8; 32]>> {
        if index >= self.len {
            return None;
        }
        let page = self
            .pages
            .entry(index / PAGE)
            .or_insert_with(|| vec![None; PAGE as usize].into_boxed_slice());
        Some(&mut page[(index % PAGE) as usize])
    }
}

/// Sibling chaining values learnt from verified proofs, persisted as an append-only log.
#[derive(Debug)]
pub struct ProofTree {
    file_len: u64,
    /// `layers[k]`: layer `k` above the units (layer 0 = unit CVs).
    layers: Vec<Layer>,
    log: Option<BufWriter<File>>,
}

impl ProofTree {
    /// An empty tree for a file of `file_len` bytes, not persisted. Allocates nothing per unit.
    pub fn new(file_len: u64) -> Self {
        let mut layers = Vec::new();
        let mut count = tree_unit_count(file_len);
        while count > 1 {
            layers.push(Layer {
                len: count,
                pages: BTreeMap::new(),
            });
            count = count.div_ceil(2);
        }
        ProofTree {
            file_len,
            layers,
            log: None,
        }
    }

    /// Opens the log at `path` for the content `root` of `file_len` bytes: loads its records and
    /// keeps appending to it; creates it (with its header) when absent or empty. Records that do
    /// not fit this file's tree and a torn final record are ignored. A log for other content,
    /// or without a header, is refused.
    pub fn open(root: &[u8; 32], file_len: u64, path: &Path) -> Result<Self, TreeError> {
        let mut tree = Self::new(file_len);
        let whole = match File::open(path) {
            Ok(f) => match read_header(&mut BufReader::new(&f))? {
                Header::Empty => None,
                Header::Unbound => return Err(TreeError::Unbound),
                Header::Named {
                    root: r,
                    file_len: n,
                } if (r, n) != (*root, file_len) => {
                    return Err(TreeError::Foreign {
                        root: r,
                        file_len: n,
                    });
                }
                Header::Named { .. } => Some(tree.load_records(&f, HEADER_LEN as u64)?),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        match whole {
            Some(end) if file.metadata()?.len() != end => file.set_len(end)?, // drop a torn record
            Some(_) => {}
            None => {
                file.set_len(0)?;
                (&file).write_all(&header(root, file_len))?;
                file.sync_data()?;
            }
        }
        tree.log = Some(BufWriter::with_capacity(64 * 1024, file));
        Ok(tree)
    }

    /// A fresh log at `path` for the content `root` (replacing any file there), empty.
    pub fn create(root: &[u8; 32], file_len: u64, path: &Path) -> io::Result<Self> {
        let file = File::create(path)?;
        (&file).write_all(&header(root, file_len))?;
        file.sync_data()?;
        let mut tree = Self::new(file_len);
        tree.log = Some(BufWriter::with_capacity(64 * 1024, file));
        Ok(tree)
    }

    /// Whatever records the log at `path` holds that could belong to the content `root` of
    /// `file_len` bytes — those of a log naming it, or of a log without a header — in memory
    /// and not persisted, for `--repair` to re-verify units with. A log naming other content, or
    /// no log, gives an empty tree.
    pub fn salvage(root: &[u8; 32], file_len: u64, path: &Path) -> Result<Self, TreeError> {
        let mut tree = Self::new(file_len);
        let f = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(tree),
            Err(e) => return Err(e.into()),
        };
        match read_header(&mut BufReader::new(&f))? {
            Header::Named {
                root: r,
                file_len: n,
            } if (r, n) == (*root, file_len) => {
                tree.load_records(&f, HEADER_LEN as u64)?;
            }
            Header::Unbound => {
                tree.load_records(&f, 0)?;
            }
            Header::Named { .. } | Header::Empty => {}
        }
        Ok(tree)
    }

    /// Reads the records of `file` from `start`; returns the offset after the last whole one.
    fn load_records(&mut self, file: &File, start: u64) -> Result<u64, TreeError> {
        use std::io::{Seek, SeekFrom};
        let mut file = file;
        file.seek(SeekFrom::Start(start))?;
        let max_records: u64 = self.layers.iter().map(|l| l.len).sum();
        let mut reader = BufReader::with_capacity(64 * 1024, file);
        let mut rec = [0u8; RECORD];
        let mut records = 0u64;
        // Stops at the end, or at a torn final record.
        while read_full(&mut reader, &mut rec)? == RECORD {
            records += 1;
            if records > max_records {
                return Err(TreeError::TooLong);
            }
            let mut idx = [0u8; 8];
            idx.copy_from_slice(&rec[1..9]);
            let mut cv = [0u8; 32];
            cv.copy_from_slice(&rec[9..]);
            if let Some(slot) = self
                .layers
                .get_mut(rec[0] as usize)
                .and_then(|l| l.slot(u64::from_le_bytes(idx)))
            {
                *slot = Some(cv);
            }
        }
        Ok(start + records * RECORD as u64)
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
                .and_then(|l| l.slot(index))
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
                let hash = self.layers.get(layer as usize)?.get(index)?;
                Some(ProofNode { hash, level })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(UnitProof {
            leaf_start: unit * CHUNKS_PER_UNIT,
            leaf_count: unit_chunks(len),
            nodes,
        })
    }

    /// Heap bytes held by the tree's pages.
    pub fn memory_bytes(&self) -> usize {
        let pages: usize = self.layers.iter().map(|l| l.pages.len()).sum();
        pages * (PAGE as usize * std::mem::size_of::<Option<[u8; 32]>>() + 64)
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

enum Header {
    /// No bytes, or a header torn before it was complete (no record can follow it).
    Empty,
    /// Records from the first byte: a log written before logs had a header.
    Unbound,
    /// A header naming this content.
    Named { root: [u8; 32], file_len: u64 },
}

fn header(root: &[u8; 32], file_len: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(MAGIC);
    h[4..6].copy_from_slice(&LOG_VERSION.to_le_bytes());
    h[8..16].copy_from_slice(&file_len.to_le_bytes());
    h[16..].copy_from_slice(root);
    h
}

fn read_header(r: &mut impl Read) -> io::Result<Header> {
    let mut h = [0u8; HEADER_LEN];
    let n = read_full(r, &mut h)?;
    // A record starts with its layer (< 64), never with the magic's "T".
    if n == 0 || (n < HEADER_LEN && MAGIC.starts_with(&h[..n.min(4)])) {
        return Ok(Header::Empty);
    }
    if &h[..4] != MAGIC {
        return Ok(Header::Unbound);
    }
    if n < HEADER_LEN {
        return Ok(Header::Empty);
    }
    if u16::from_le_bytes([h[4], h[5]]) != LOG_VERSION {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "proof log version {} is not {LOG_VERSION}",
                u16::from_le_bytes([h[4], h[5]])
            ),
        ));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&h[8..16]);
    let mut root = [0u8; 32];
    root.copy_from_slice(&h[16..]);
    Ok(Header::Named {
        root,
        file_len: u64::from_le_bytes(len),
    })
}

/// Reads until `buf` is full or the reader ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::{verify_unit, Outboard, UNIT_LEN};

    fn file(len: u64) -> (Vec<u8>, Outboard) {
        let file: Vec<u8> = (0..len).map(|i| (i * 31 % 253) as u8).collect();
        let ob = Outboard::build(&file[..], len).unwrap();
        (file, ob)
    }

    #[test]
    fn rebuilds_proofs_of_learnt_units_and_survives_reload() {
        let len = 11 * UNIT_LEN + 777;
        let (file, ob) = file(len);
        let root = ob.root();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.tsp");
        let mut t = ProofTree::open(&root, len, &path).unwrap();
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
        assert_eq!(&bytes[..4], b"TSPL");
        bytes.extend_from_slice(&[1, 2, 3]);
        std::fs::write(&path, &bytes).unwrap();
        let t = ProofTree::open(&root, len, &path).unwrap();
        let p = t.proof(11).unwrap();
        let data = &file[(11 * UNIT_LEN) as usize..];
        verify_unit(&root, len, 11, data, &p).unwrap();
        let on_disk = std::fs::metadata(&path).unwrap().len() - HEADER_LEN as u64;
        assert_eq!(on_disk % RECORD as u64, 0);
    }

    #[test]
    fn a_log_for_other_content_or_without_a_header_is_refused() {
        let len = 5 * UNIT_LEN;
        let (_, ob) = file(len);
        let root = ob.root();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.tsp");
        let mut t = ProofTree::open(&root, len, &path).unwrap();
        t.learn(1, &ob.proof(1).unwrap()).unwrap();
        t.sync().unwrap();
        drop(t);
        let other = [9; 32];
        let e = ProofTree::open(&other, len, &path).unwrap_err();
        assert!(matches!(e, TreeError::Foreign { .. }), "{e}");
        assert!(e.to_string().contains("another file"), "{e}");
        assert!(matches!(
            ProofTree::open(&root, len + 1, &path),
            Err(TreeError::Foreign { .. })
        ));
        // Salvage ignores a foreign log, and reads its own.
        assert_eq!(
            ProofTree::salvage(&other, len, &path).unwrap().proof(1),
            None
        );
        assert!(ProofTree::salvage(&root, len, &path)
            .unwrap()
            .proof(1)
            .is_some());

        // An older log: the same records without a header.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[HEADER_LEN..]).unwrap();
        assert!(matches!(
            ProofTree::open(&root, len, &path),
            Err(TreeError::Unbound)
        ));
        let salvaged = ProofTree::salvage(&root, len, &path).unwrap();
        assert_eq!(salvaged.proof(1), Some(ob.proof(1).unwrap()));
    }

    #[test]
    fn an_empty_or_torn_header_starts_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.tsp");
        for torn in [&b""[..], b"TS", b"TSPL\x01\x00\x00"] {
            std::fs::write(&path, torn).unwrap();
            let t = ProofTree::open(&[1; 32], 3 * UNIT_LEN, &path).unwrap();
            drop(t);
            assert_eq!(std::fs::metadata(&path).unwrap().len(), HEADER_LEN as u64);
        }
    }

    #[test]
    fn a_log_longer_than_the_tree_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.tsp");
        let len = 4 * UNIT_LEN; // 4 + 2 nodes
        let mut bytes = header(&[1; 32], len).to_vec();
        for i in 0..7u64 {
            bytes.push(0);
            bytes.extend_from_slice(&(i % 4).to_le_bytes());
            bytes.extend_from_slice(&[2; 32]);
        }
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            ProofTree::open(&[1; 32], len, &path),
            Err(TreeError::TooLong)
        ));
    }

    #[test]
    fn the_largest_file_costs_nothing_up_front() {
        let max = tierswarm_core::tiers::MAX_FILE_LEN;
        let mut t = ProofTree::new(max);
        assert_eq!(t.memory_bytes(), 0);
        assert_eq!(t.layers.len(), 30);
        let proof = UnitProof {
            leaf_start: 0,
            leaf_count: 64,
            nodes: (6..36)
                .map(|level| ProofNode {
                    hash: [1; 32],
                    level,
                })
                .collect(),
        };
        t.learn(0, &proof).unwrap();
        assert!(t.memory_bytes() <= 30 * 2200, "{}", t.memory_bytes());
        assert_eq!(t.proof(0), Some(proof));
    }

    #[test]
    fn single_unit_file_needs_no_nodes() {
        let t = ProofTree::new(100);
        assert_eq!(t.proof(0).unwrap().nodes.len(), 0);
        assert_eq!(t.proof(1), None);
    }
}
