//! Every store format ever written stays loadable: frozen byte fixtures, one per version, made by
//! the encoder of their time (`core/tests/fixtures/store-vN.tsa`, never regenerated).
//!
//! All three hold the same state: a file of 32 MiB + 5 units + 17 bytes (518 units, 17 T2 blocks,
//! 2 T3 blocks); units 0–511, 513 and 515 present and proven; unit 514 present but never proven
//! (so it must not load as available); last updated at 1.7e15 µs. Version 3 also names its root,
//! `3c` × 32.

use tierswarm_core::store::{StoreError, StoreState};
use tierswarm_core::{Geometry, Tier};

const LEN: u64 = 32 * 1024 * 1024 + 5 * 65536 + 17;
const ROOT: [u8; 32] = [0x3c; 32];

fn fixture(version: u16) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/store-v{version}.tsa",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Checks the decoded state against the facts above, bit by bit.
fn check(version: u16, state: &StoreState) {
    let geo = Geometry::new(LEN).unwrap();
    assert_eq!(state.geometry(), geo);
    assert_eq!(geo.units(), 518);
    let available: Vec<u64> = (0..512).chain([513, 515]).collect();
    let t1 = state.tiers.bitfield(Tier::T1);
    assert_eq!(
        t1.iter_ones_in(0..geo.units()).collect::<Vec<_>>(),
        available,
        "v{version}"
    );
    let mut have = available.clone();
    have.push(514);
    have.sort_unstable();
    assert_eq!(
        state.have.iter_ones_in(0..geo.units()).collect::<Vec<_>>(),
        have
    );
    assert_eq!(
        state
            .proven
            .iter_ones_in(0..geo.units())
            .collect::<Vec<_>>(),
        available
    );
    // T2 blocks 0–15 (units 0–511) are whole, block 16 (units 512–517) is not; T3 block 0 is.
    let t2 = state.tiers.bitfield(Tier::T2);
    assert_eq!(
        t2.iter_ones_in(0..geo.blocks(Tier::T2)).collect::<Vec<_>>(),
        (0..16).collect::<Vec<_>>()
    );
    let t3 = state.tiers.bitfield(Tier::T3);
    assert_eq!(t3.iter_ones_in(0..2).collect::<Vec<_>>(), vec![0]);
    assert_eq!(state.updated_at_us, 1_700_000_000_000_000);
}

#[test]
fn version_1_loads_with_tiers_rebuilt() {
    let bytes = fixture(1);
    let (state, notes) = StoreState::decode(&bytes).unwrap();
    check(1, &state);
    assert!(notes.tiers_rebuilt);
    assert_eq!(notes.unproven_ignored, 1);
    assert_eq!(state.root, None);
}

#[test]
fn version_2_loads_with_its_tier_sections() {
    let bytes = fixture(2);
    let (state, notes) = StoreState::decode(&bytes).unwrap();
    check(2, &state);
    assert!(!notes.tiers_rebuilt);
    assert_eq!(notes.unproven_ignored, 1);
    assert_eq!(state.root, None);
}

#[test]
fn version_3_names_its_root() {
    let bytes = fixture(3);
    let (state, notes) = StoreState::decode_for(&bytes, &ROOT, LEN).unwrap();
    check(3, &state);
    assert!(!notes.tiers_rebuilt);
    assert_eq!(notes.unproven_ignored, 1);
    assert_eq!(state.root, Some(ROOT));
    // Today's encoder still writes exactly these bytes.
    assert_eq!(state.encode(), bytes);
}

/// Stores that do not name their root are never applied to some content: the embedder must
/// re-verify the data instead (`fetch --repair`).
#[test]
fn stores_without_a_root_are_not_bound_to_any_content() {
    for version in [1, 2] {
        assert_eq!(
            StoreState::decode_for(&fixture(version), &ROOT, LEN).unwrap_err(),
            StoreError::NoRoot(version)
        );
    }
    assert!(matches!(
        StoreState::decode_for(&fixture(3), &[0x3d; 32], LEN),
        Err(StoreError::WrongContent { .. })
    ));
}
