//! `cargo +nightly fuzz run proof_verify`: the check lives in `fuzz/checks/proof.rs`, shared with the
//! regression test that replays `fuzz/corpus/proof_verify/` in the default `cargo test`.
#![no_main]

#[path = "../checks/proof.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
