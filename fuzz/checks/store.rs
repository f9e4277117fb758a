//! The store decoder on hostile bytes: never panics, and whatever it accepts is consistent.
//!
//! Shared by the `store_decoder` fuzz target and `core/tests/fuzz_corpus.rs`. The input is
//! decoded twice: as it is, and re-sealed (its last 32 bytes replaced by the BLAKE3 of the rest),
//! because a fuzzer almost never forges a checksum and would otherwise stop at it.

use tierswarm_core::store::StoreState;
use tierswarm_core::Tier;

/// Runs every check on `data`; panics on a violation.
pub fn check(data: &[u8]) {
    decode_and_check(data);
    if data.len() >= 32 {
        let mut sealed = data.to_vec();
        let n = sealed.len() - 32;
        let sum = blake3::hash(&sealed[..n]);
        sealed[n..].copy_from_slice(sum.as_bytes());
        decode_and_check(&sealed);
    }
}

fn decode_and_check(bytes: &[u8]) {
    let Ok((state, notes)) = StoreState::decode(bytes) else {
        return;
    };
    // Re-encoding gives a store that decodes to the same state (a format that cannot name a root
    // is written without one).
    let again = StoreState::decode(&state.encode()).expect("a re-encoded store decodes");
    assert_eq!(again.0, state);
    // Available = have ∧ proven, and the notes count the difference.
    let units = state.geometry().units();
    assert_eq!(state.have.len(), units);
    assert_eq!(state.proven.len(), units);
    let t1 = state.tiers.bitfield(Tier::T1);
    let mut unproven = 0;
    for u in 0..units {
        let have = state.have.get(u);
        let proven = state.proven.get(u);
        assert_eq!(t1.get(u), have && proven, "unit {u}");
        unproven += u64::from(have && !proven);
    }
    assert_eq!(notes.unproven_ignored, unproven);
    // A store that names its root is accepted for exactly that root and length.
    if let Some(root) = state.root {
        let len = state.geometry().file_len();
        assert!(StoreState::decode_for(bytes, &root, len).is_ok());
        let mut other = root;
        other[0] ^= 1;
        assert!(StoreState::decode_for(bytes, &other, len).is_err());
    } else {
        assert!(StoreState::decode_for(bytes, &[0; 32], state.geometry().file_len()).is_err());
    }
}
