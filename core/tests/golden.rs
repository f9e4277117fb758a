//! Golden byte encodings: every message kind and a small store, frozen as insta snapshots.
//! A change here is a wire or disk format change: review it like one.

use bytes::{Bytes, BytesMut};
use tierswarm_core::store::StoreState;
use tierswarm_core::wire::{encode_frame, Capabilities, Message, Proof};
use tierswarm_core::{Geometry, LocalTiers};

const ROOT: [u8; 32] = [0xab; 32];

fn hex_frame(msg: &Message) -> String {
    let mut buf = BytesMut::new();
    encode_frame(&ROOT, msg, &mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn every_message_kind() {
    let msgs = [
        Message::Handshake {
            info_hash: Bytes::from_static(&ROOT),
            peer_id: "tierswarm".into(),
            capabilities: Some(Capabilities::OURS),
        },
        Message::Handshake {
            info_hash: Bytes::from_static(&ROOT),
            peer_id: "legacy".into(),
            capabilities: None,
        },
        Message::Bitfield {
            bits: Bytes::from_static(&[0b1010_0000]),
        },
        Message::Have { unit: 300 },
        Message::Request { unit: 7, held: 0 },
        Message::Transfer {
            unit: 1,
            data: Bytes::from_static(b"unit bytes"),
            proof: Some(Proof {
                leaf_start: 64,
                leaf_count: 64,
                nodes: vec![(Bytes::from_static(&[0x11; 32]), 6)],
            }),
        },
        Message::Reject {
            unit: 9,
            reason: "not available".into(),
        },
        Message::Summary {
            tier: 3,
            start: 0,
            all: Bytes::from_static(&[0b1000_0000]),
            partial: Bytes::from_static(&[0b0100_0000]),
        },
        Message::RefineRequest {
            from_tier: 3,
            to_tier: 1,
            index: 1,
            id: 42,
        },
        Message::RefineResponse {
            tier: 1,
            start: 512,
            bits: Bytes::from_static(&[0xff, 0x00]),
            id: 42,
            reject: None,
        },
        Message::RefineResponse {
            tier: 1,
            start: 0,
            bits: Bytes::new(),
            id: 43,
            reject: Some("overloaded".into()),
        },
        Message::Cancel { unit: 7 },
        Message::KeepAlive,
    ];
    let text: Vec<String> = msgs
        .iter()
        .map(|m| format!("{:?}\n  {}", m.kind(), hex_frame(m)))
        .collect();
    insta::assert_snapshot!(text.join("\n"));
}

#[test]
fn small_store() {
    // 3 MiB + 100 bytes: 49 units, 2 T2 blocks (one partial), 1 T3 block.
    let geo = Geometry::new(3 * 1024 * 1024 + 100).unwrap();
    let mut t = LocalTiers::new(geo);
    for u in (0..32).chain([40, 48]) {
        t.mark_t1_complete(u).unwrap();
    }
    let bytes = StoreState::from_tiers([0x5a; 32], &t, 1_700_000_000_000_000).encode();
    let hex: Vec<String> = bytes
        .chunks(16)
        .map(|c| {
            c.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    insta::assert_snapshot!(hex.join("\n"));
}
