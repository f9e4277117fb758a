//! The fuzzers' corpora as regression tests: every input `cargo fuzz` kept for the frame reader,
//! the manifest parser and unit verification (`fuzz/corpus/<target>/`, minimised) runs through
//! the same check as its fuzz target, in the default `cargo test`. See dev/FUZZING.md.

#[path = "../../../fuzz/checks/frame.rs"]
mod frame;
#[path = "../../../fuzz/checks/manifest.rs"]
mod manifest;
#[path = "../../../fuzz/checks/proof.rs"]
mod proof;

/// Runs `check` on every file of `fuzz/corpus/<target>`; returns how many there were.
fn replay(target: &str, check: fn(&[u8])) -> usize {
    let dir = format!("{}/../../fuzz/corpus/{target}", env!("CARGO_MANIFEST_DIR"));
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir}: {e}")) {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let run = std::panic::catch_unwind(|| check(&bytes));
        assert!(run.is_ok(), "{} fails its check", path.display());
        n += 1;
    }
    n
}

#[test]
fn frame_decoder_corpus() {
    assert!(replay("frame_decoder", frame::check) >= 4);
}

#[test]
fn manifest_corpus() {
    assert!(replay("manifest", manifest::check) >= 2);
}

#[test]
fn proof_verify_corpus() {
    assert!(replay("proof_verify", proof::check) >= 10);
}
