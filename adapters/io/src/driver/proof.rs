//! Conversion between [`UnitProof`] (what [`verify_unit`](crate::verify_unit) checks) and the
//! wire's [`Proof`] (`BaoProof`).

use bytes::Bytes;
use tierswarm_core::wire::Proof;

use crate::content::{ProofNode, UnitProof};

/// The wire form of a unit proof.
pub fn to_wire(p: &UnitProof) -> Proof {
    Proof {
        leaf_start: i64::try_from(p.leaf_start).unwrap_or(i64::MAX),
        leaf_count: i64::try_from(p.leaf_count).unwrap_or(i64::MAX),
        nodes: p
            .nodes
            .iter()
            .map(|n| (Bytes::copy_from_slice(&n.hash), n.level))
            .collect(),
    }
}

/// The proof a peer sent, or `None` when it cannot be one (negative ranges, hashes that are not
/// 32 bytes). Its shape and hashes are checked later by [`verify_unit`](crate::verify_unit).
pub fn from_wire(p: &Proof) -> Option<UnitProof> {
    let nodes = p
        .nodes
        .iter()
        .map(|(hash, level)| {
            Some(ProofNode {
                hash: <[u8; 32]>::try_from(&hash[..]).ok()?,
                level: *level,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(UnitProof {
        leaf_start: u64::try_from(p.leaf_start).ok()?,
        leaf_count: u64::try_from(p.leaf_count).ok()?,
        nodes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects() {
        let p = UnitProof {
            leaf_start: 64,
            leaf_count: 3,
            nodes: vec![ProofNode {
                hash: [9; 32],
                level: 6,
            }],
        };
        assert_eq!(from_wire(&to_wire(&p)), Some(p.clone()));
        let mut w = to_wire(&p);
        w.leaf_start = -1;
        assert_eq!(from_wire(&w), None);
        let mut w = to_wire(&p);
        w.nodes[0].0 = Bytes::from_static(b"short");
        assert_eq!(from_wire(&w), None);
    }
}
