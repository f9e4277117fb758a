//! The manifest parser on hostile bytes: never panics, never accepts a length past the protocol's
//! maximum, and whatever it accepts survives a round trip.
//!
//! Shared by the `manifest` fuzz target and `adapters/io/tests/fuzz_corpus.rs`.

use tierswarm_core::tiers::MAX_FILE_LEN;
use tierswarm_io::manifest::{root_from_hex, root_to_hex, MAX_MANIFEST_LEN};
use tierswarm_io::Manifest;

/// Runs every check on `data`; panics on a violation.
pub fn check(data: &[u8]) {
    let Ok(m) = Manifest::from_bytes(data) else {
        return;
    };
    assert!(data.len() as u64 <= MAX_MANIFEST_LEN);
    assert!(m.file_len <= MAX_FILE_LEN);
    let text = m.to_json();
    assert_eq!(
        Manifest::from_json(&text).expect("a written manifest parses"),
        m
    );
    assert_eq!(root_from_hex(&root_to_hex(&m.root)), Ok(m.root));
}
