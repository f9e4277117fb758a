//! Unit verification against hostile proofs and data: never panics, and accepts exactly the true
//! unit with its true proof.
//!
//! Shared by the `proof_verify` fuzz target and `adapters/io/tests/fuzz_corpus.rs`. A handful of
//! files (lengths on the tree's edge cases) are hashed once; the input picks a file and a unit,
//! then edits the true data and proof (bit flips in data and hashes, levels, nodes removed or
//! added, leaf ranges, lengths). The edited proof also takes the wire path (TRANSFER frame,
//! decode, `from_wire`) and must get the same verdict.

use std::sync::OnceLock;

use bytes::{Bytes, BytesMut};
use tierswarm_core::wire::{decode_frame, encode_frame, Message, WireError, MAX_PROOF_NODES};
use tierswarm_io::content::{verify_unit, Outboard, ProofNode, UnitProof, UNIT_LEN};
use tierswarm_io::driver::proof::{from_wire, to_wire};

struct File {
    len: u64,
    bytes: Vec<u8>,
    outboard: Outboard,
}

fn files() -> &'static [File] {
    static FILES: OnceLock<Vec<File>> = OnceLock::new();
    FILES.get_or_init(|| {
        [
            0,
            1,
            1024,
            UNIT_LEN,
            UNIT_LEN + 1,
            2 * UNIT_LEN,
            3 * UNIT_LEN + 5,
            8 * UNIT_LEN,
            13 * UNIT_LEN + 1000,
            33 * UNIT_LEN,
        ]
        .into_iter()
        .map(|len| {
            let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ len;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let outboard = Outboard::build(&bytes[..], len).expect("in memory");
            File {
                len,
                bytes,
                outboard,
            }
        })
        .collect()
    })
}

/// Runs every check on `data`; panics on a violation.
pub fn check(data: &[u8]) {
    if data.len() < 3 {
        return;
    }
    let file = &files()[usize::from(data[0]) % files().len()];
    let units = file.len.div_ceil(UNIT_LEN).max(1);
    // Mostly units of the file, sometimes one or two past its end.
    let unit = u64::from(data[1]) % (units + 2);
    let root = file.outboard.root();
    let truth = file.outboard.proof(unit).ok();
    let start = (unit * UNIT_LEN).min(file.len) as usize;
    let end = ((unit + 1) * UNIT_LEN).min(file.len) as usize;
    let true_data = &file.bytes[start..end];
    let mut unit_data = true_data.to_vec();
    let mut proof = truth.clone().unwrap_or_default();
    for op in data[2..].chunks_exact(3) {
        edit(&mut unit_data, &mut proof, op);
    }
    let verdict = verify_unit(&root, file.len, unit, &unit_data, &proof);
    if verdict.is_ok() {
        assert_eq!(
            truth.as_ref(),
            Some(&proof),
            "unit {unit}: a forged proof verified"
        );
        assert_eq!(
            &unit_data[..],
            true_data,
            "unit {unit}: forged data verified"
        );
    } else if data.len() < 5 {
        // No edit at all: the true unit verifies (when it exists).
        assert!(
            truth.is_none(),
            "unit {unit}: the true proof was refused: {verdict:?}"
        );
    }
    // The same proof through a TRANSFER frame gets the same verdict.
    let msg = Message::Transfer {
        unit,
        data: Bytes::copy_from_slice(&unit_data),
        proof: Some(to_wire(&proof)),
    };
    let mut buf = BytesMut::new();
    encode_frame(&root, &msg, &mut buf);
    let decoded = decode_frame(&mut buf, u64::MAX);
    if proof.nodes.len() > MAX_PROOF_NODES as usize {
        // Refused at decoding, before the nodes are collected (and never a valid proof).
        assert!(verdict.is_err());
        assert!(matches!(
            decoded,
            Err(WireError::Malformed {
                what: "BaoProof",
                ..
            })
        ));
        return;
    }
    let frame = decoded.expect("decodes").expect("whole");
    let Message::Transfer {
        data: d, proof: p, ..
    } = frame.msg
    else {
        panic!("not a transfer");
    };
    let back = p
        .as_ref()
        .and_then(from_wire)
        .expect("a proof of 32-byte hashes converts");
    // The wire's leaf fields are int64: larger values saturate (and never verify).
    if i64::try_from(proof.leaf_start).is_ok() && i64::try_from(proof.leaf_count).is_ok() {
        assert_eq!(back, proof);
    }
    assert_eq!(
        verify_unit(&root, file.len, unit, &d, &back).is_ok(),
        verdict.is_ok()
    );
}

fn edit(data: &mut Vec<u8>, proof: &mut UnitProof, op: &[u8]) {
    let (a, b) = (usize::from(op[1]), op[2]);
    let n = proof.nodes.len();
    match op[0] % 8 {
        0 if !data.is_empty() => {
            let at = (a * 256 + usize::from(b)) % data.len();
            data[at] ^= 1 << (b % 8);
        }
        1 if n > 0 => proof.nodes[a % n].hash[usize::from(b) % 32] ^= 1 << (a % 8),
        2 if n > 0 => {
            proof.nodes[a % n].level = proof.nodes[a % n].level.wrapping_add(u32::from(b))
        }
        3 if n > 0 => {
            proof.nodes.remove(a % n);
        }
        4 => proof.nodes.insert(
            a % (n + 1),
            ProofNode {
                hash: [b; 32],
                level: u32::from(b),
            },
        ),
        5 => proof.leaf_start ^= 1 << (b % 64),
        6 => proof.leaf_count = proof.leaf_count.wrapping_add(u64::from(b)),
        7 => {
            if a % 2 == 0 {
                data.truncate(data.len().saturating_sub(usize::from(b) + 1));
            } else {
                data.extend(std::iter::repeat_n(b, usize::from(b) + 1));
            }
        }
        _ => {}
    }
}
