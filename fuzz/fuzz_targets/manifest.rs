//! `cargo +nightly fuzz run manifest`: the check lives in `fuzz/checks/manifest.rs`, shared with the
//! regression test that replays `fuzz/corpus/manifest/` in the default `cargo test`.
#![no_main]

#[path = "../checks/manifest.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
