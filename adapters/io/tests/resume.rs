//! What a download trusts of what an earlier run left behind, and what a session trusts of its
//! data file when it serves, driven through the session API without a network or a runtime.

use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use tierswarm_core::store::StoreState;
use tierswarm_core::wire::{decode_frame, encode_frame, Capabilities, Message};
use tierswarm_core::{Geometry, LocalTiers, PeerId, Tier};
use tierswarm_io::driver::{
    proof, recorder, store_paths, Effect, Incoming, ProofTree, Resume, ResumeNotes, Session,
    SessionError, SessionEvent, SessionOptions, UnitReadError,
};
use tierswarm_io::{store_file, Manifest, Outboard, UNIT_LEN};

const UNITS: u64 = 200;

struct Fixture {
    _dir: tempfile::TempDir,
    src: Vec<u8>,
    outboard: Outboard,
    manifest: Manifest,
    out: PathBuf,
}

/// A file of 200 units, and at `out` a download that holds the units in `held`, with its
/// store and proof log as a session writes them.
fn fixture(held: impl Iterator<Item = u64>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let len = UNITS * UNIT_LEN - 123;
    let mut x = 0x1234_5678_9abc_def1u64;
    let src: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let outboard = Outboard::build(&src[..], len).unwrap();
    let manifest = Manifest {
        root: outboard.root(),
        file_len: len,
        name: "src".into(),
    };
    let out = dir.path().join("out.bin");
    let mut data = vec![0u8; len as usize];
    let (store, log) = store_paths(&out);
    let mut tree = ProofTree::open(&manifest.root, len, &log).unwrap();
    let mut tiers = LocalTiers::new(Geometry::new(len).unwrap());
    for u in held {
        let r = (u * UNIT_LEN) as usize..((u + 1) * UNIT_LEN).min(len) as usize;
        data[r.clone()].copy_from_slice(&src[r]);
        tree.learn(u, &outboard.proof(u).unwrap()).unwrap();
        tiers.mark_t1_complete(u).unwrap();
    }
    tree.sync().unwrap();
    std::fs::write(&out, &data).unwrap();
    let state = StoreState::from_tiers(manifest.root, &tiers, 0);
    store_file::save(&store, &state.encode()).unwrap();
    Fixture {
        _dir: dir,
        src,
        outboard,
        manifest,
        out,
    }
}

/// `Session::leecher` on the fixture's output with default options.
fn open(f: &Fixture, resume: Resume) -> Result<(Session, ResumeNotes), SessionError> {
    Session::leecher(&f.manifest, &f.out, resume, SessionOptions::default())
}

fn flip_byte(path: &Path, at: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at as usize] ^= 0x20;
    std::fs::write(path, bytes).unwrap();
}

/// Changes bytes of `unit` in place (same length) through a handle of our own, as another
/// program would, and sets the modification time to one the file cannot already have, so that
/// the change shows in its metadata whatever the filesystem's timestamp granularity.
#[cfg(unix)]
fn edit_in_place(path: &Path, unit: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let at = unit * UNIT_LEN + 5;
    let mut byte = [0u8];
    f.read_exact_at(&mut byte, at).unwrap();
    f.write_all_at(&[byte[0] ^ 0x20], at).unwrap();
    let distinct = std::time::UNIX_EPOCH + std::time::Duration::new(1_000_000_007, 123);
    f.set_modified(distinct).unwrap();
}

fn frame(root: &[u8; 32], msg: &Message) -> Incoming {
    let mut buf = BytesMut::new();
    encode_frame(root, msg, &mut buf);
    Incoming {
        frame: decode_frame(&mut buf, u64::MAX).unwrap().unwrap(),
        raw: None,
    }
}

/// A legacy peer `name` connects and shakes hands, its bitfield all `fill` (0: it has nothing,
/// 0xff: everything); returns it.
fn legacy_peer(session: &mut Session, name: &str, fill: u8) -> PeerId {
    let root = session.manifest().root;
    let peer = session.connected();
    let hello = Message::Handshake {
        info_hash: Bytes::copy_from_slice(&root),
        peer_id: name.into(),
        capabilities: None::<Capabilities>,
    };
    session.on_frame(peer, frame(&root, &hello));
    let bits = vec![fill; (UNITS as usize).div_ceil(8)];
    session.on_frame(peer, frame(&root, &Message::Bitfield { bits: bits.into() }));
    peer
}

/// A legacy peer connects, shakes hands and asks for `unit`; returns what the session did.
fn ask_for(session: &mut Session, unit: u64) -> Vec<Effect> {
    let root = session.manifest().root;
    let peer = legacy_peer(session, "asker", 0);
    session.on_frame(peer, frame(&root, &Message::Request { unit, held: 0 }));
    std::iter::from_fn(|| session.poll_effect()).collect()
}

fn served(effects: &[Effect]) -> Vec<u64> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send { unit: Some(u), .. } => Some(*u),
            _ => None,
        })
        .collect()
}

#[test]
fn a_resumed_download_serves_its_units() {
    let f = fixture(0..150);
    let (mut s, notes) = open(&f, Resume::Check).unwrap();
    assert_eq!(notes.units, 150);
    assert_eq!(notes.units_checked, 64);
    assert!(!notes.file_verified);
    assert_eq!(served(&ask_for(&mut s, 7)), vec![7]);
}

/// A unit changed on disk that the resume sample did not read is caught when it is read to be
/// served: it is never sent.
#[test]
fn a_unit_edited_behind_the_store_is_never_served() {
    let f = fixture(0..150);
    // The sample reads the set units of rank ⌊i·149/63⌋: rank 1 (unit 1) is not among them.
    flip_byte(&f.out, UNIT_LEN + 5);
    let (mut s, notes) = open(&f, Resume::Check).unwrap();
    assert_eq!(notes.units_checked, 64);
    assert!(matches!(
        s.read_unit_verified(1),
        Err(UnitReadError::Changed { unit: 1, .. })
    ));
    assert!(s.read_unit_verified(0).is_ok());
    let effects = ask_for(&mut s, 1);
    assert!(served(&effects).is_empty(), "the edited unit was served");
    // The request is answered with a reject (the connection stays), and the user hears why.
    assert!(effects.iter().any(|e| matches!(
        e,
        Effect::Event(SessionEvent::Warning(w)) if w.contains("no longer matches")
    )));
    assert!(!effects.iter().any(|e| matches!(e, Effect::Close { .. })));
    assert_eq!(s.stats().unavailable_units, 1);
}

/// A unit changed on disk that the sample reads refuses the resume, naming the file and
/// `--repair`; repair then keeps every other unit.
#[test]
fn a_sampled_edit_refuses_the_resume_and_repair_keeps_the_rest() {
    let f = fixture(0..150);
    flip_byte(&f.out, 2 * UNIT_LEN + 5); // unit 2: rank 2 is sampled
    let err = open(&f, Resume::Check).unwrap_err();
    assert!(matches!(err, SessionError::Refused { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains(&f.out.display().to_string()) && msg.contains("--repair"),
        "{msg}"
    );
    let (s, notes) = open(&f, Resume::Repair).unwrap();
    assert_eq!(notes.units, 149);
    assert!(!s.node().local().has_at_tier(Tier::T1, 2));
}

/// Stores and logs written before they named their content are refused by default (nothing
/// proves they belong to this file) and recovered by --repair, which verifies every unit.
#[test]
fn an_older_store_and_log_are_recovered_by_repair_only() {
    let f = fixture(0..100);
    let (store, log) = store_paths(&f.out);
    // The same state in the older formats: a version 2 store, a log without its header.
    let (mut state, _) = StoreState::decode(&std::fs::read(&store).unwrap()).unwrap();
    state.root = None;
    store_file::save(&store, &state.encode()).unwrap();
    let err = open(&f, Resume::Check).unwrap_err().to_string();
    assert!(
        err.contains("does not name the content root") && err.contains("--repair"),
        "{err}"
    );
    let bytes = std::fs::read(&log).unwrap();
    std::fs::write(&log, &bytes[tierswarm_io::driver::PROOF_LOG_HEADER_LEN..]).unwrap();
    let (_, notes) = open(&f, Resume::Repair).unwrap();
    assert_eq!(notes.units, 100);
    // Both are now of the current formats: a plain resume trusts them.
    assert_eq!(&std::fs::read(&log).unwrap()[..4], b"TSPL");
    let (_, notes) = open(&f, Resume::Check).unwrap();
    assert_eq!(notes.units, 100);
}

/// A store that says the file is complete is believed only once the file hashes to the root.
#[test]
fn a_complete_store_is_checked_against_the_whole_file() {
    let f = fixture(0..UNITS);
    let (mut s, notes) = open(&f, Resume::Check).unwrap();
    assert!(notes.file_verified);
    assert!(s.verify_file().is_ok());
    assert_eq!(std::fs::read(&f.out).unwrap(), f.src);
    drop(s);
    flip_byte(&f.out, 150 * UNIT_LEN);
    let err = open(&f, Resume::Check).unwrap_err().to_string();
    assert!(err.contains("hashes to"), "{err}");
    let _ = f.outboard;
}

/// A file found complete at resume and changed behind the session afterwards is hashed again
/// at the end, not taken as verified: the download is not reported complete.
#[cfg(unix)]
#[test]
fn a_complete_file_changed_after_the_resume_fails_the_final_check() {
    let f = fixture(0..UNITS);
    let (mut s, notes) = open(&f, Resume::Check).unwrap();
    assert!(notes.file_verified);
    edit_in_place(&f.out, 77);
    let err = s.verify_file().unwrap_err();
    assert!(err.contains("does not hash to the content root"), "{err}");
    assert!(!s.file_trusted());
}

/// `--restart` discards the store, the log and the contents.
#[test]
fn restart_starts_afresh() {
    let f = fixture(0..UNITS);
    let (s, notes) = open(&f, Resume::Restart).unwrap();
    assert_eq!(notes.units, 0);
    assert!(!store_paths(&f.out).0.exists());
    assert!(std::fs::read(&f.out).unwrap().iter().all(|&b| b == 0));
    drop(s);
}

/// A record reaching its cap ends with a note, the session warns and goes on, and the replay
/// checks the record up to the note and says so.
#[test]
fn a_record_stops_at_its_cap_with_a_note() {
    let f = fixture(0..50);
    let rec = f.out.with_extension("jsonl");
    let opts = SessionOptions {
        record: Some(rec.clone()),
        record_limit: 3000,
        ..SessionOptions::default()
    };
    let (mut s, _) = Session::leecher(&f.manifest, &f.out, Resume::Check, opts).unwrap();
    let mut effects = Vec::new();
    for u in 0..10 {
        effects.extend(ask_for(&mut s, u));
    }
    let warnings: Vec<&String> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Event(SessionEvent::Warning(w)) => Some(w),
            _ => None,
        })
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("size cap of 3000 bytes"),
        "{}",
        warnings[0]
    );
    assert_eq!(served(&effects).len(), 10, "serving went on");
    s.flush().unwrap();
    let text = std::fs::read_to_string(&rec).unwrap();
    assert!(text.len() <= 3000, "{} bytes", text.len());
    assert!(text.lines().last().unwrap().contains("\"note\""));
    let report = recorder::replay(&rec).unwrap();
    assert!(report.truncated.unwrap().contains("size cap"));
    assert!(report.inputs > 0);
}

/// A complete download, its whole file hashed to the root on resume and unchanged since, is
/// served without verifying each unit again.
#[cfg(unix)]
#[test]
fn a_complete_resume_is_served_without_the_recheck() {
    let f = fixture(0..UNITS);
    let (mut s, notes) = open(&f, Resume::Check).unwrap();
    assert!(notes.file_verified);
    assert!(s.file_trusted());
    assert_eq!(served(&ask_for(&mut s, 9)), vec![9]);
    assert_eq!(s.units_rechecked(), 0);
    // Repair verifies unit by unit, not the whole file: nothing is trusted before the end.
    drop(s);
    let (mut s, _) = open(&f, Resume::Repair).unwrap();
    assert!(!s.file_trusted());
    assert_eq!(served(&ask_for(&mut s, 9)), vec![9]);
    assert_eq!(s.units_rechecked(), 1);
}

/// A seeder's file hashed at start and unchanged since is served without verifying each unit
/// again.
#[cfg(unix)]
#[test]
fn an_unchanged_seeders_units_are_served_without_the_recheck() {
    let f = fixture(0..UNITS);
    let mut s = Session::seeder(&f.out, SessionOptions::default()).unwrap();
    assert_eq!(s.manifest().root, f.manifest.root);
    assert!(s.file_trusted());
    for unit in [0, 1, 77, UNITS - 1] {
        let (data, _) = s.read_unit_verified(unit).unwrap();
        let r =
            (unit * UNIT_LEN) as usize..((unit + 1) * UNIT_LEN).min(f.src.len() as u64) as usize;
        assert_eq!(&data[..], &f.src[r]);
    }
    assert_eq!(served(&ask_for(&mut s, 5)), vec![5]);
    assert_eq!(s.units_rechecked(), 0);
    assert!(s.file_trusted());
}

/// A seeder whose file is changed in place after it started (same length) notices the change
/// in the file's metadata: from then on it verifies every unit it serves, for the rest of the
/// session, and never serves the changed unit.
#[cfg(unix)]
#[test]
fn a_seeder_never_serves_a_unit_changed_after_start() {
    let f = fixture(0..UNITS);
    let mut s = Session::seeder(&f.out, SessionOptions::default()).unwrap();
    assert_eq!(served(&ask_for(&mut s, 3)), vec![3]);
    assert_eq!(s.units_rechecked(), 0);

    edit_in_place(&f.out, 40);
    // The first serve after the change says the file changed, once.
    let changed = |effects: &[Effect]| {
        effects
            .iter()
            .filter(|e| matches!(e, Effect::Event(SessionEvent::Warning(w)) if w.contains("changed since it was hashed")))
            .count()
    };
    let effects = ask_for(&mut s, 40);
    assert_eq!(changed(&effects), 1);
    assert!(!s.file_trusted());
    assert_eq!(s.units_rechecked(), 1);
    assert!(served(&effects).is_empty(), "the changed unit was served");
    assert!(effects.iter().any(|e| matches!(
        e,
        Effect::Event(SessionEvent::Warning(w)) if w.contains("no longer matches")
    )));
    assert!(matches!(
        s.read_unit_verified(40),
        Err(UnitReadError::Changed { unit: 40, .. })
    ));
    assert_eq!(changed(&ask_for(&mut s, 40)), 0, "told once");
    // The units that did not change are still served, each verified.
    assert_eq!(served(&ask_for(&mut s, 3)), vec![3]);
    assert!(s.read_unit_verified(41).is_ok());
    assert_eq!(s.units_rechecked(), 5);
    assert!(!s.file_trusted(), "trust is never re-established silently");
}

/// `peer` sends `unit` (which the session asked it for); returns what the session did.
fn transfer(s: &mut Session, f: &Fixture, peer: PeerId, unit: u64) -> Vec<Effect> {
    assert!(s.requested_units().get(unit));
    let r = (unit * UNIT_LEN) as usize..((unit + 1) * UNIT_LEN).min(f.src.len() as u64) as usize;
    let msg = Message::Transfer {
        unit,
        data: Bytes::copy_from_slice(&f.src[r]),
        proof: Some(proof::to_wire(&f.outboard.proof(unit).unwrap())),
    };
    s.on_frame(peer, frame(&f.manifest.root, &msg));
    std::iter::from_fn(|| s.poll_effect()).collect()
}

/// A seed offers everything; the session, which lacks only the last unit, asks for it and gets
/// it. Returns what the session did.
fn receive_last(s: &mut Session, f: &Fixture) -> Vec<Effect> {
    let peer = legacy_peer(s, "seed", 0xff);
    transfer(s, f, peer, UNITS - 1)
}

/// Another program's edit of a unit the download wrote, made before the unit's piece is
/// complete, fails the download's final check: the piece is valued from its units' values from
/// verification (never read again), and the edit is seen by the file's stamps around the
/// download's next write (main before 2026-12-03's fix reported success with such a file).
#[cfg(unix)]
#[test]
fn an_edit_between_two_writes_of_the_download_fails_its_final_check() {
    // Pieces of 16 units: 0..176 are eleven whole pieces; the download writes the last two.
    let f = fixture(0..176);
    let (mut s, _) = open(&f, Resume::Check).unwrap();
    let peer = legacy_peer(&mut s, "seed", 0xff);
    // The seed answers the session's requests in turn, lowest unit first (`requested_units`
    // keeps every unit ever asked for).
    let mut sent = vec![false; UNITS as usize];
    let mut next = |s: &Session| {
        let unit = (176..UNITS).find(|&u| s.requested_units().get(u) && !sent[u as usize])?;
        sent[unit as usize] = true;
        Some(unit)
    };
    let first = next(&s).unwrap();
    transfer(&mut s, &f, peer, first);
    edit_in_place(&f.out, first);
    let mut complete = false;
    while let Some(unit) = next(&s) {
        complete |= transfer(&mut s, &f, peer, unit)
            .iter()
            .any(|e| matches!(e, Effect::Event(SessionEvent::Complete)));
    }
    assert!(complete);
    let err = s.verify_file().unwrap_err();
    assert!(err.contains("does not hash to the content root"), "{err}");
}

/// A unit the download verified and wrote itself is served as it is only while no other
/// program has written to the file: changed behind it, it is verified again, and not sent.
#[cfg(unix)]
#[test]
fn a_unit_the_download_wrote_is_rechecked_once_the_file_changes_behind_it() {
    let last = UNITS - 1;
    let f = fixture(0..last);
    let (mut s, _) = open(&f, Resume::Check).unwrap();
    receive_last(&mut s, &f);
    assert!(s.read_unit_verified(last).is_ok());
    assert_eq!(s.units_rechecked(), 0);
    edit_in_place(&f.out, last);
    assert!(matches!(
        s.read_unit_verified(last),
        Err(UnitReadError::Changed { .. })
    ));
    assert_eq!(s.units_rechecked(), 1);
    assert!(served(&ask_for(&mut s, last)).is_empty());
}

/// A download in progress verifies every unit it serves (its own writes change the file);
/// once the whole file hashed to the root at the end, it is trusted like a seeder's.
#[cfg(unix)]
#[test]
fn a_leecher_rechecks_until_its_file_is_verified_whole() {
    let last = UNITS - 1;
    let f = fixture(0..last);
    let (mut s, notes) = open(&f, Resume::Check).unwrap();
    assert!(!notes.file_verified);
    assert!(!s.file_trusted());
    assert_eq!(served(&ask_for(&mut s, 7)), vec![7]);
    assert_eq!(s.units_rechecked(), 1);

    let effects = receive_last(&mut s, &f);
    assert!(effects
        .iter()
        .any(|e| matches!(e, Effect::Event(SessionEvent::Complete))));
    assert!(
        !s.file_trusted(),
        "written since: not trusted before the whole-file check"
    );
    assert_eq!(served(&ask_for(&mut s, 8)), vec![8]);
    assert_eq!(s.units_rechecked(), 2);
    // The unit it verified and wrote itself is served as it is.
    assert_eq!(served(&ask_for(&mut s, last)), vec![last]);
    assert_eq!(s.units_rechecked(), 2);

    s.verify_file().unwrap();
    assert!(s.file_trusted());
    assert_eq!(served(&ask_for(&mut s, 9)), vec![9]);
    assert!(s.read_unit_verified(last).is_ok());
    assert_eq!(s.units_rechecked(), 2);
}
