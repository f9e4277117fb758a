//! The fuzzers' corpora as regression tests: every input `cargo fuzz` kept for the store decoder
//! (`fuzz/corpus/store_decoder/`, minimised) runs through the same check as the fuzz target, in
//! the default `cargo test`. See dev/FUZZING.md.

#[path = "../../fuzz/checks/store.rs"]
mod store;

#[test]
fn store_decoder_corpus() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus/store_decoder");
    let n = replay(dir, store::check);
    assert!(n >= 3, "only {n} inputs in {dir}");
}

/// Runs `check` on every file of `dir`; returns how many there were.
fn replay(dir: &str, check: fn(&[u8])) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{dir}: {e}")) {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let run = std::panic::catch_unwind(|| check(&bytes));
        assert!(run.is_ok(), "{} fails its check", path.display());
        n += 1;
    }
    n
}
