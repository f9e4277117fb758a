//! The data path of one unit, without sockets: what a seeder does to serve it (read it, check
//! the file is still trusted or else verify the unit against its proof, lay out its TRANSFER
//! frame) and what a leecher does with it (verify, write). Per 64 KiB unit, on a 64 MiB file in
//! `TIERSWARM_BENCH_DIR` (default: the system's temp dir; use `/dev/shm` to keep the disk out).
//! `serve_unit` serves a file trusted since the seeder hashed it (no per-unit verification);
//! `serve_unit_untrusted` one whose modification time was changed after the seeder started, so
//! that every unit is verified as it is served.
//!
//! ```text
//! TIERSWARM_BENCH_DIR=/dev/shm cargo bench -p tierswarm-io --bench serve
//! ```
//!
//! Instructions per byte, repeatable on a busy machine: `TIERSWARM_SERVE_UNITS=N` skips divan
//! and runs each path over the first N units once; `TIERSWARM_SERVE_PATH=serve` serves only,
//! `untrusted` serves only from the untrusted file, `read-back` serves and receives into an
//! output with read-back on, as a download does (each 1 MiB piece valued from its units' values:
//! `tierswarm_io::read_back`; until 2026-12-04 each unit was also read back and compared),
//! `read-back-hashed` the same with each piece read back and hashed again once complete (as
//! before 2026-12-03), anything else serves and receives (see `dev/BENCHMARKS.md` for the
//! `valgrind --tool=callgrind` command).

use std::path::PathBuf;

use bytes::Bytes;
use divan::counter::BytesCount;
use divan::{black_box, Bencher};
use tierswarm_core::wire::{encode_frame_parts, Message};
use tierswarm_io::content::{verify_unit, verify_unit_value, UnitProof, UNIT_LEN};
use tierswarm_io::data_file::write_pseudo_random;
use tierswarm_io::driver::{proof, SessionOptions};
use tierswarm_io::{DataFile, Session};

const FILE_LEN: u64 = 64 * 1024 * 1024;

struct Fixture {
    _dir: tempfile::TempDir,
    seeder: Session,
    out: DataFile,
    /// An output that reads pieces back as they complete.
    out_read_back: DataFile,
}

/// Built once per thread (a session is not `Sync`; divan runs these benches on one thread).
fn fixture() -> &'static Fixture {
    thread_local! {
        static F: &'static Fixture = Box::leak(Box::new(make_fixture(false)));
    }
    F.with(|f| *f)
}

/// [`fixture`], but its file's modification time changed after the seeder hashed it: the
/// seeder no longer trusts it, and verifies every unit it serves.
fn fixture_untrusted() -> &'static Fixture {
    thread_local! {
        static F: &'static Fixture = Box::leak(Box::new(make_fixture(true)));
    }
    F.with(|f| *f)
}

fn make_fixture(untrusted: bool) -> Fixture {
    let base = std::env::var_os("TIERSWARM_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(base).expect("temp dir");
    let src = dir.path().join("src.bin");
    write_pseudo_random(&src, FILE_LEN, 7).expect("write the file");
    let seeder = Session::seeder(&src, SessionOptions::default()).expect("seeder");
    assert!(
        seeder.file_trusted(),
        "a file unchanged while hashed is trusted"
    );
    if untrusted {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_007);
        let file = std::fs::File::options().write(true).open(&src);
        file.and_then(|f| f.set_modified(at))
            .expect("set the mtime");
        seeder.read_unit_verified(0).expect("still the same bytes");
        assert!(!seeder.file_trusted());
    }
    let out = DataFile::create(dir.path().join("out.bin"), FILE_LEN).expect("output");
    let mut out_read_back =
        DataFile::create(dir.path().join("out-rb.bin"), FILE_LEN).expect("output");
    out_read_back.enable_read_back(|_| false);
    Fixture {
        _dir: dir,
        seeder,
        out,
        out_read_back,
    }
}

/// Serving: read the unit (verified against its proof unless the file is trusted), then lay
/// out its frame (header, data, proof). Returns the frame's parts and the unit's proof.
fn serve(f: &Fixture, unit: u64) -> ([Bytes; 3], UnitProof) {
    let (data, p) = f.seeder.read_unit_verified(unit).expect("serve");
    let msg = Message::Transfer {
        unit,
        data,
        proof: Some(proof::to_wire(&p)),
    };
    (encode_frame_parts(&f.seeder.manifest().root, &msg), p)
}

/// Receiving: verify the unit against its proof, then write it to `out` with its value (a
/// worker's job; into an output with read-back on, each piece is valued from its units' values).
fn receive(f: &Fixture, out: &DataFile, unit: u64, data: &[u8], p: &UnitProof) {
    let m = f.seeder.manifest();
    let verified = verify_unit_value(&m.root, m.file_len, unit, data, p).expect("verifies");
    out.write_verified_unit(verified).expect("write");
}

/// Receiving as before the one-pass read-back: verify, write without the value, so that each
/// piece is read back and hashed again once complete.
fn receive_hashing_again(f: &Fixture, out: &DataFile, unit: u64, data: &[u8], p: &UnitProof) {
    let m = f.seeder.manifest();
    verify_unit(&m.root, m.file_len, unit, data, p).expect("verifies");
    out.write_unit(unit, data).expect("write");
}

fn main() {
    if let Some(n) = std::env::var("TIERSWARM_SERVE_UNITS")
        .ok()
        .and_then(|n| n.parse::<u64>().ok())
    {
        // `serve`: the serve path only; `untrusted`: the same from the untrusted file; anything
        // else: serve, then receive what was served (the receive path's cost is the
        // difference).
        let path = std::env::var("TIERSWARM_SERVE_PATH");
        let f = match path.as_deref() {
            Ok("untrusted") => fixture_untrusted(),
            _ => fixture(),
        };
        let receive_too = !matches!(path.as_deref(), Ok("serve" | "untrusted"));
        let out = match path.as_deref() {
            Ok("read-back" | "read-back-hashed") => &f.out_read_back,
            _ => &f.out,
        };
        let hashing_again = matches!(path.as_deref(), Ok("read-back-hashed"));
        for unit in 0..n.min(FILE_LEN / UNIT_LEN) {
            let (parts, p) = serve(f, unit);
            if receive_too && hashing_again {
                receive_hashing_again(f, out, unit, &parts[1], &p);
            } else if receive_too {
                receive(f, out, unit, &parts[1], &p);
            }
            black_box(parts);
        }
        return;
    }
    divan::main();
}

#[divan::bench]
fn serve_unit(bencher: Bencher) {
    let f = fixture();
    let mut unit = 0;
    bencher.counter(BytesCount::new(UNIT_LEN)).bench_local(|| {
        unit = (unit + 1) % (FILE_LEN / UNIT_LEN);
        serve(f, black_box(unit))
    });
}

#[divan::bench]
fn serve_unit_untrusted(bencher: Bencher) {
    let f = fixture_untrusted();
    let mut unit = 0;
    bencher.counter(BytesCount::new(UNIT_LEN)).bench_local(|| {
        unit = (unit + 1) % (FILE_LEN / UNIT_LEN);
        serve(f, black_box(unit))
    });
}

#[divan::bench]
fn receive_unit(bencher: Bencher) {
    let f = fixture();
    let (data, p) = f.seeder.read_unit_verified(517).expect("read");
    bencher
        .counter(BytesCount::new(UNIT_LEN))
        .bench_local(|| receive(f, &f.out, black_box(517), &data, &p));
}
