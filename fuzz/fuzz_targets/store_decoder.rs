//! `cargo +nightly fuzz run store_decoder`: the check lives in `fuzz/checks/store.rs`, shared with the
//! regression test that replays `fuzz/corpus/store_decoder/` in the default `cargo test`.
#![no_main]

#[path = "../checks/store.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
