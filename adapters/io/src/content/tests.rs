use blake3::hazmat::{left_subtree_len, HasherExt};
use proptest::prelude::*;

use super::*;

const LENGTHS: &[u64] = &[
    0,
    1,
    1023,
    1024,
    1025,
    65535,
    65536,
    65537,
    2 * 65536,
    3 * 65536 + 5,
    5 * 65536,
    64 * 65536 + 1,
    1_000_000,
];

/// Deterministic, non-repeating test bytes (xorshift), so no two units are equal.
fn file_bytes(len: u64, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn unit_data(file: &[u8], unit: u64) -> &[u8] {
    let start = (unit * UNIT_LEN) as usize;
    let end = (start + UNIT_LEN as usize).min(file.len());
    &file[start..end]
}

/// Reference proof by recursive descent of the BLAKE3 tree, hashing the siblings directly.
fn reference_proof(file: &[u8], start: u64, end: u64, unit: u64) -> Vec<ProofNode> {
    let (unit_start, unit_end) = (
        unit * UNIT_LEN,
        ((unit + 1) * UNIT_LEN).min(file.len() as u64),
    );
    if (start, end) == (unit_start, unit_end) {
        return Vec::new();
    }
    let left = left_subtree_len(end - start);
    let mid = start + left;
    let level = (left / CHUNK_LEN).trailing_zeros();
    let cv = |a: u64, b: u64| {
        blake3::Hasher::new()
            .set_input_offset(a)
            .update(&file[a as usize..b as usize])
            .finalize_non_root()
    };
    let (mut nodes, hash) = if unit_start < mid {
        (reference_proof(file, start, mid, unit), cv(mid, end))
    } else {
        (reference_proof(file, mid, end, unit), cv(start, mid))
    };
    nodes.push(ProofNode { hash, level });
    nodes
}

fn check_all_units_verify(file: &[u8], reference_every: u64) {
    let len = file.len() as u64;
    let outboard = Outboard::build(file, len).unwrap();
    let root = *blake3::hash(file).as_bytes();
    assert_eq!(outboard.root(), root, "len {len}");
    assert_eq!(hash_file_root(file).unwrap(), root);
    for unit in 0..outboard.unit_count() {
        let proof = outboard.proof(unit).unwrap();
        assert_eq!(
            proof.nodes.iter().map(|n| n.level).collect::<Vec<_>>(),
            expected_levels(len, unit).unwrap()
        );
        if unit % reference_every == 0 || unit + 1 == outboard.unit_count() {
            let expected = if len <= UNIT_LEN {
                Vec::new()
            } else {
                reference_proof(file, 0, len, unit)
            };
            assert_eq!(proof.nodes, expected, "len {len} unit {unit}");
        }
        verify_unit(&root, len, unit, unit_data(file, unit), &proof)
            .unwrap_or_else(|e| panic!("len {len} unit {unit}: {e}"));
    }
    assert!(matches!(
        outboard.proof(outboard.unit_count()),
        Err(ContentError::UnitOutOfRange { .. })
    ));
}

#[test]
fn every_unit_verifies_for_edge_lengths() {
    for &len in LENGTHS {
        check_all_units_verify(&file_bytes(len, len), 1);
    }
}

#[test]
fn single_unit_files_have_empty_proofs() {
    for len in [0, 1, 1024, 65536] {
        let file = file_bytes(len, 3);
        let outboard = Outboard::build(&file[..], len).unwrap();
        let proof = outboard.proof(0).unwrap();
        assert!(proof.nodes.is_empty());
        assert_eq!(proof.leaf_count, unit_chunks(len));
        verify_unit(&outboard.root(), len, 0, &file, &proof).unwrap();
    }
    assert_eq!(unit_chunks(0), 1);
}

/// Every tampering of a valid (unit, data, proof) must be rejected.
fn assert_tampering_fails(file: &[u8], outboard: &Outboard, unit: u64) {
    let (root, len) = (outboard.root(), file.len() as u64);
    let data = unit_data(file, unit);
    let proof = outboard.proof(unit).unwrap();
    let fails = |d: &[u8], p: &UnitProof| verify_unit(&root, len, unit, d, p).is_err();
    assert!(!fails(data, &proof));

    // Data: flip bytes at the edges and the middle, truncate, extend.
    let mut positions = vec![0, data.len() / 2, data.len().saturating_sub(1)];
    positions.dedup();
    for pos in positions.into_iter().filter(|&p| p < data.len()) {
        let mut bad = data.to_vec();
        bad[pos] ^= 0x01;
        assert!(fails(&bad, &proof), "data byte {pos}");
    }
    if !data.is_empty() {
        assert!(fails(&data[..data.len() - 1], &proof));
    }
    assert!(fails(&[data, &[0u8][..]].concat(), &proof));

    // Every byte of every node.
    for n in 0..proof.nodes.len() {
        for b in 0..32 {
            let mut bad = proof.clone();
            bad.nodes[n].hash[b] ^= 0x80;
            assert!(fails(data, &bad), "node {n} byte {b}");
        }
        for level in [
            proof.nodes[n].level.wrapping_add(1),
            proof.nodes[n].level.wrapping_sub(1),
            0,
            u32::MAX,
        ] {
            let mut bad = proof.clone();
            bad.nodes[n].level = level;
            assert!(fails(data, &bad), "node {n} level {level}");
        }
        let mut dropped = proof.clone();
        dropped.nodes.remove(n);
        assert!(fails(data, &dropped), "dropped node {n}");
    }
    // Adding a node anywhere, even at a plausible level.
    let top = proof.nodes.last().map_or(UNIT_LEVEL, |n| n.level + 1);
    for at in 0..=proof.nodes.len() {
        let mut added = proof.clone();
        added.nodes.insert(
            at,
            ProofNode {
                hash: [0; 32],
                level: top,
            },
        );
        assert!(fails(data, &added), "added node at {at}");
    }
    // Leaf range off by one.
    for (ds, dc) in [(1i64, 0i64), (-1, 0), (0, 1), (0, -1)] {
        let mut bad = proof.clone();
        bad.leaf_start = bad.leaf_start.wrapping_add_signed(ds);
        bad.leaf_count = bad.leaf_count.wrapping_add_signed(dc);
        assert!(fails(data, &bad));
    }
    // Another unit's proof: as sent, and with the leaf range rewritten to pass the shape check.
    for other in [unit.wrapping_sub(1), unit + 1] {
        let Ok(other_proof) = outboard.proof(other) else {
            continue;
        };
        assert!(fails(data, &other_proof), "proof of unit {other}");
        let mut relabelled = other_proof;
        relabelled.leaf_start = proof.leaf_start;
        relabelled.leaf_count = proof.leaf_count;
        assert!(fails(data, &relabelled), "relabelled proof of unit {other}");
        // And the other unit's data under this unit's index.
        let other_data = unit_data(file, other);
        assert!(fails(other_data, &proof), "data of unit {other}");
    }
    // Wrong root, wrong file length.
    let mut bad_root = root;
    bad_root[31] ^= 1;
    assert!(verify_unit(&bad_root, len, unit, data, &proof).is_err());
    // A wrong file length fails whenever it changes this unit's length or proof shape. (When it
    // does not, the unit genuinely belongs to the file with this root: the root binds the real
    // length, so only the unit's own geometry matters to its check.)
    for wrong in [len + 1, len.wrapping_sub(1), len + UNIT_LEN, len / 2] {
        let same_shape = unit_len(wrong, unit) == unit_len(len, unit)
            && expected_levels(wrong, unit) == expected_levels(len, unit);
        if wrong != len && !same_shape {
            assert!(
                verify_unit(&root, wrong, unit, data, &proof).is_err(),
                "file_len {wrong}"
            );
        }
    }
}

#[test]
fn tampering_is_rejected_for_edge_lengths() {
    for &len in LENGTHS {
        let file = file_bytes(len, len ^ 0xABCD);
        let outboard = Outboard::build(&file[..], len).unwrap();
        for unit in 0..outboard.unit_count() {
            assert_tampering_fails(&file, &outboard, unit);
        }
    }
}

#[test]
fn hostile_inputs_never_panic() {
    let file = file_bytes(3 * UNIT_LEN + 5, 9);
    let outboard = Outboard::build(&file[..], file.len() as u64).unwrap();
    let root = outboard.root();
    let proof = outboard.proof(1).unwrap();
    for (len, unit) in [
        (0, 0),
        (0, 1),
        (u64::MAX, 0),
        (u64::MAX, u64::MAX),
        (u64::MAX, u64::MAX / UNIT_LEN),
        (file.len() as u64, u64::MAX),
        (file.len() as u64, 4),
    ] {
        for data in [&[][..], &file[..UNIT_LEN as usize], &file[..5]] {
            let _ = verify_unit(&root, len, unit, data, &proof);
            let _ = verify_unit(&root, len, unit, data, &UnitProof::default());
        }
    }
    let huge = UnitProof {
        leaf_start: u64::MAX,
        leaf_count: u64::MAX,
        nodes: vec![
            ProofNode {
                hash: [0xff; 32],
                level: u32::MAX
            };
            1000
        ],
    };
    assert!(verify_unit(&root, file.len() as u64, 1, unit_data(&file, 1), &huge).is_err());
}

#[test]
fn short_reader_is_an_error() {
    let file = file_bytes(3 * UNIT_LEN, 1);
    for claimed in [100, 3 * UNIT_LEN + 1, 40 * UNIT_LEN] {
        let err = Outboard::build(&file[..10.min(file.len())], claimed).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    }
    // Bytes past `len` are not read: the outboard is of the prefix.
    let outboard = Outboard::build(&file[..], 2 * UNIT_LEN).unwrap();
    assert_eq!(
        outboard.root(),
        *blake3::hash(&file[..2 * UNIT_LEN as usize]).as_bytes()
    );
}

#[test]
fn memory_is_about_64_bytes_per_unit() {
    let len = 1000 * UNIT_LEN;
    let outboard = Outboard::build(std::io::repeat(7).take(len), len).unwrap();
    let per_unit = outboard.memory_bytes() as f64 / outboard.unit_count() as f64;
    assert!(
        (60.0..70.0).contains(&per_unit),
        "{per_unit} bytes per unit"
    );
}

#[test]
fn levels_follow_the_left_heavy_tree() {
    // 5 units: ((u0 u1)(u2 u3)) u4 — unit 4 has one sibling at level 8, on the left.
    let len = 5 * UNIT_LEN;
    assert_eq!(expected_levels(len, 0).unwrap(), vec![6, 7, 8]);
    assert_eq!(expected_levels(len, 3).unwrap(), vec![6, 7, 8]);
    assert_eq!(expected_levels(len, 4).unwrap(), vec![8]);
    // 3 units + 5 bytes: (u0 u1)(u2 u3') — all full paths.
    assert_eq!(expected_levels(3 * UNIT_LEN + 5, 3).unwrap(), vec![6, 7]);
    assert_eq!(expected_levels(65536, 0).unwrap(), Vec::<u32>::new());
    assert!(expected_levels(65536, 1).is_err());
}

use std::io::Read as _;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(6))]
    #[test]
    fn random_lengths_verify(len in 0u64..8 * 1024 * 1024, seed in any::<u64>()) {
        let file = file_bytes(len, seed);
        check_all_units_verify(&file, 17);
        let outboard = Outboard::build(&file[..], len).unwrap();
        let units = outboard.unit_count();
        for unit in [0, units / 2, units - 1] {
            assert_tampering_fails(&file, &outboard, unit);
        }
    }
}
