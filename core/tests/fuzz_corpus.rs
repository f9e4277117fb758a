//! The fuzzers' corpora as regression tests: every input `cargo fuzz` kept for the store decoder
//! and for the node fed frames from several peers (`fuzz/corpus/store_decoder/`,
//! `fuzz/corpus/node_frames/`, minimised) runs through the same check as its fuzz target, in the
//! default `cargo test`. See dev/FUZZING.md.

#[path = "../../fuzz/checks/node.rs"]
mod node;
#[path = "../../fuzz/checks/store.rs"]
mod store;

#[test]
fn store_decoder_corpus() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus/store_decoder");
    let n = replay(dir, store::check);
    assert!(n >= 3, "only {n} inputs in {dir}");
}

#[test]
fn node_frames_corpus() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus/node_frames");
    let mut reached = Vec::new();
    let n = replay(dir, |data| reached.push(node::check(data)));
    assert!(n >= 3, "only {n} inputs in {dir}");
    // The kept inputs go deep: some complete the file, persist and serve.
    let count = |f: fn(&node::Reached) -> bool| reached.iter().filter(|r| f(r)).count();
    let (completed, persisted) = (count(|r| r.completed), count(|r| r.persists > 0));
    let (served, verified) = (count(|r| r.served > 0), count(|r| r.verified > 0));
    eprintln!(
        "{n} inputs: {completed} complete the file, {persisted} persist, {served} serve, \
         {verified} verify units"
    );
    assert!(completed > 0, "no input completes the file");
    assert!(persisted > 0, "no input persists");
    assert!(served > 0, "no input serves");
}

/// Runs `check` on every file of `dir`; returns how many there were.
fn replay(dir: &str, mut check: impl FnMut(&[u8])) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{dir}: {e}")) {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&bytes)));
        assert!(run.is_ok(), "{} fails its check", path.display());
        n += 1;
    }
    n
}
