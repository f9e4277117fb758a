//! `cargo +nightly fuzz run frame_decoder`: the check lives in `fuzz/checks/frame.rs`, shared with the
//! regression test that replays `fuzz/corpus/frame_decoder/` in the default `cargo test`.
#![no_main]

#[path = "../checks/frame.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
