//! `cargo +nightly fuzz run node_frames`: the check lives in `fuzz/checks/node.rs`, shared with the
//! regression test that replays `fuzz/corpus/node_frames/` in the default `cargo test`.
#![no_main]

#[path = "../checks/node.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    check::check(data);
});
