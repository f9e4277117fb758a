//! What a download does with what an earlier run left at its output path: check it, repair it
//! or discard it ([`Resume`](super::Resume)), before anything in it is trusted.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::Path;

use tierswarm_core::store::{StoreError, StoreState};
use tierswarm_core::{Geometry, LocalTiers, Tier};

use super::session::{io_err, refused, ResumeNotes, SessionError, REPAIR, RESTART, RESUME_SAMPLE};
use super::tree::{ProofTree, TreeError};
use crate::content::verify_unit;
use crate::manifest::root_to_hex;
use crate::{store_file, DataFile, Manifest};

/// The output file, the proof tree and the units trusted.
pub(super) type Resumed = (DataFile, ProofTree, LocalTiers);

/// `--restart`: the store goes first (so that a crash half-way leaves nothing trusted), then the
/// proof log, then the output's contents.
pub(super) fn restart(out: &Path, store: &Path, tree: &Path) -> Result<(), SessionError> {
    for path in [store, &store_file::tmp_path(store), tree] {
        match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(io_err(format!("remove {}", path.display()))(e))
            }
            _ => {}
        }
    }
    if out.exists() {
        File::create(out).map_err(io_err(format!("truncate {}", out.display())))?;
    }
    Ok(())
}

/// Opens (creating if absent) the output file at the file's length.
pub(super) fn create_data(out: &Path, len: u64) -> Result<DataFile, SessionError> {
    DataFile::create(out, len).map_err(io_err(format!("create {}", out.display())))
}

/// `--repair`: every unit of the output whose proof the old log holds (whatever the log's
/// format, unless it names other content) is read back and verified against the root; the
/// verified ones make the new store and a fresh proof log, which replaces the old one.
pub(super) fn repair(
    manifest: &Manifest,
    out: &Path,
    store: &Path,
    tree_path: &Path,
) -> Result<Resumed, SessionError> {
    let (root, len) = (manifest.root, manifest.file_len);
    let geo = Geometry::new(len).map_err(tierswarm_core::node::NodeError::from)?;
    let data = create_data(out, len)?;
    let old = ProofTree::salvage(&root, len, tree_path).map_err(|e| match e {
        TreeError::Io(e) => io_err(format!("read {}", tree_path.display()))(e),
        e => refused(tree_path, e.to_string(), RESTART),
    })?;
    let tmp = store_file::tmp_path(tree_path);
    let mut tree =
        ProofTree::create(&root, len, &tmp).map_err(io_err(format!("create {}", tmp.display())))?;
    let mut local = LocalTiers::new(geo);
    let shown = out.display();
    for unit in 0..geo.units() {
        let Some(proof) = old.proof(unit) else {
            continue;
        };
        let bytes = data
            .read_unit(unit)
            .map_err(io_err(format!("read {shown}")))?;
        if verify_unit(&root, len, unit, &bytes, &proof).is_ok() {
            let _ = local.mark_t1_complete(unit);
            tree.learn(unit, &proof)
                .map_err(io_err(format!("write {}", tmp.display())))?;
        }
    }
    drop(old);
    tree.sync()
        .and_then(|()| store_file::replace(&tmp, tree_path))
        .map_err(io_err(format!("write {}", tree_path.display())))?;
    let state = StoreState::from_tiers(root, &local, 0).encode();
    store_file::save(store, &state).map_err(io_err(format!("write {}", store.display())))?;
    Ok((data, tree, local))
}

/// The default: trust the store only once it, the proof log and the output file are shown to
/// belong together and to this content (see [`Session::leecher`](super::Session::leecher)).
pub(super) fn resume_checked(
    manifest: &Manifest,
    out: &Path,
    store: &Path,
    tree_path: &Path,
    notes: &mut ResumeNotes,
) -> Result<Resumed, SessionError> {
    let (root, len) = (manifest.root, manifest.file_len);
    let geo = Geometry::new(len).map_err(tierswarm_core::node::NodeError::from)?;
    let Some(bytes) = load_store(store, geo)? else {
        // Nothing is claimed: whatever is at OUT is overwritten as units arrive, and a proof
        // log no store relies on is started afresh.
        let data = create_data(out, len)?;
        let tree = ProofTree::create(&root, len, tree_path)
            .map_err(io_err(format!("create {}", tree_path.display())))?;
        return Ok((data, tree, LocalTiers::new(geo)));
    };
    let (state, store_notes) = StoreState::decode_for(&bytes, &root, len).map_err(|e| match e {
        StoreError::WrongContent { .. } => refused(store, e.to_string(), RESTART),
        e => refused(store, e.to_string(), REPAIR),
    })?;
    notes.store = Some(store_notes);
    let tree = ProofTree::open(&root, len, tree_path).map_err(|e| match e {
        TreeError::Io(e) => io_err(format!("read {}", tree_path.display()))(e),
        e @ TreeError::Foreign { .. } => refused(tree_path, e.to_string(), RESTART),
        e => refused(tree_path, e.to_string(), REPAIR),
    })?;
    let local = drop_unproven(state.tiers, &tree, notes);
    let claimed = local.units_present();
    // The output must still be the file the store describes: present, at its length.
    match fs::metadata(out) {
        Ok(m) if m.len() == len => {}
        Ok(m) => {
            return Err(refused(
                out,
                format!(
                    "is {} bytes, but the store says it holds {claimed} verified units of a \
                     {len}-byte file (changed outside tierswarm?)",
                    m.len()
                ),
                REPAIR,
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound && claimed > 0 => {
            return Err(refused(
                out,
                format!("is missing, but the store says it holds {claimed} verified units"),
                REPAIR,
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(format!("stat {}", out.display()))(e)),
    }
    let data = create_data(out, len)?;
    if local.is_complete() && claimed > 0 {
        let check = data.begin_trust_check();
        let got = data
            .hash()
            .map_err(io_err(format!("read {}", out.display())))?;
        if got != root {
            return Err(refused(
                out,
                format!(
                    "the store says it is complete, but it hashes to {}…, not to the root {}… \
                     (changed outside tierswarm?)",
                    &root_to_hex(&got)[..16],
                    &root_to_hex(&root)[..16]
                ),
                REPAIR,
            ));
        }
        // Served without re-verifying each unit while its metadata stays as it was hashed.
        data.trust_if_unchanged(check);
        notes.file_verified = true;
        notes.units_checked = claimed;
    } else {
        for unit in sample(local.bitfield(Tier::T1), claimed) {
            let proof = tree
                .proof(unit)
                .expect("units without a proof were dropped");
            let bytes = data
                .read_unit(unit)
                .map_err(io_err(format!("read {}", out.display())))?;
            if let Err(e) = verify_unit(&root, len, unit, &bytes, &proof) {
                return Err(refused(
                    out,
                    format!(
                        "unit {unit} no longer matches its proof ({e}): the file was changed \
                         outside tierswarm"
                    ),
                    REPAIR,
                ));
            }
            notes.units_checked += 1;
        }
    }
    Ok((data, tree, local))
}

/// Reads the store at `path`, refusing one larger than any store of this geometry before
/// reading it; `None` when there is none.
fn load_store(path: &Path, geo: Geometry) -> Result<Option<Vec<u8>>, SessionError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(format!("read {}", path.display()))(e)),
    };
    let bits = |n: u64| 5 + n.div_ceil(8);
    let max =
        70 + 2 * bits(geo.units()) + bits(geo.blocks(Tier::T2)) + bits(geo.blocks(Tier::T3)) + 32;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err(format!("read {}", path.display())))?;
    if bytes.len() as u64 > max {
        return Err(refused(
            path,
            format!(
                "is larger than any availability store of a {}-byte file",
                geo.file_len()
            ),
            REPAIR,
        ));
    }
    Ok(Some(bytes))
}

/// A unit we cannot prove is a unit we cannot serve: the units the store lists without a proof
/// in the log are forgotten (fetched again).
fn drop_unproven(local: LocalTiers, tree: &ProofTree, notes: &mut ResumeNotes) -> LocalTiers {
    let geo = local.geometry();
    let present = local.bitfield(Tier::T1);
    let unproven = present
        .iter_ones_in(0..geo.units())
        .filter(|&u| tree.proof(u).is_none())
        .count() as u64;
    if unproven == 0 {
        return local;
    }
    notes.dropped_without_proof = unproven;
    let mut rebuilt = LocalTiers::new(geo);
    for u in present.iter_ones_in(0..geo.units()) {
        if tree.proof(u).is_some() {
            let _ = rebuilt.mark_t1_complete(u);
        }
    }
    rebuilt
}

/// Up to [`RESUME_SAMPLE`] of the `count` units set in `present`: all of them when few, else
/// the first, the last and others evenly spread. Streams the bitfield (no list of units).
fn sample(present: &tierswarm_core::Bitfield, count: u64) -> Vec<u64> {
    let k = count.min(RESUME_SAMPLE);
    if k == 0 {
        return Vec::new();
    }
    // The i-th pick is the (i·(count−1)/(k−1))-th set unit.
    let pick = |i: u64| if k == 1 { 0 } else { i * (count - 1) / (k - 1) };
    let mut out = Vec::with_capacity(k as usize);
    let mut next = 0;
    for (rank, unit) in present.iter_ones_in(0..present.len()).enumerate() {
        while next < k && pick(next) == rank as u64 {
            out.push(unit);
            next += 1;
        }
        if next == k {
            break;
        }
    }
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_spread_and_bounded() {
        let mut b = tierswarm_core::Bitfield::new(10_000);
        for u in (0..10_000).step_by(3) {
            b.set(u);
        }
        let count = b.count_ones();
        let s = sample(&b, count);
        assert_eq!(s.len(), RESUME_SAMPLE as usize);
        assert_eq!(s[0], 0);
        assert_eq!(*s.last().unwrap(), 9999);
        assert!(s.windows(2).all(|w| w[0] < w[1]));
        let mut few = tierswarm_core::Bitfield::new(100);
        few.set(7);
        few.set(40);
        assert_eq!(sample(&few, 2), vec![7, 40]);
        assert_eq!(sample(&few, 0), Vec::<u64>::new());
    }
}
