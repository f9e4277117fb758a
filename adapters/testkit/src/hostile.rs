//! Scripted hostile peers, written against the transport traits so they misbehave over any
//! transport.

use std::path::Path;

use bytes::BytesMut;
use tierswarm_core::wire::{encode_frame, Message};
use tierswarm_core::Geometry;
use tierswarm_io::driver::proof;
use tierswarm_io::transport::{Class, Framing, Listener, OutFrame};
use tierswarm_io::Outboard;

fn frame(root: &[u8; 32], msg: &Message, class: Class, unit: Option<u64>) -> OutFrame {
    let mut out = BytesMut::new();
    encode_frame(root, msg, &mut out);
    OutFrame::new(out.freeze(), class, unit)
}

/// Accepts one connection on `listener` and plays a legacy peer that claims every unit of the
/// file at `path` and answers each REQUEST with the unit's bytes flipped (its proof correctly
/// shaped), until the other side hangs up. Returns how many corrupt units it sent.
pub async fn serve_corrupt_units(mut listener: Box<dyn Listener>, path: &Path) -> usize {
    let bytes = std::fs::read(path).unwrap();
    let len = bytes.len() as u64;
    let outboard = Outboard::build(&bytes[..], len).unwrap();
    let root = outboard.root();
    let units = Geometry::new(len).unwrap().units();
    let framing = Framing {
        limits: tierswarm_core::wire::FrameLimits::for_geometry(Geometry::new(len).unwrap()),
        keep_raw: false,
    };
    let mut conn = listener.accept(framing).await.unwrap();
    let hs = Message::Handshake {
        info_hash: root.to_vec().into(),
        peer_id: "evil".into(),
        capabilities: None,
    };
    let mut bits = vec![0xffu8; units.div_ceil(8) as usize];
    if units % 8 != 0 {
        *bits.last_mut().unwrap() = 0xffu8 << (8 - units % 8);
    }
    let w = conn.writer.clone();
    w.write(frame(&root, &hs, Class::Control, None))
        .await
        .unwrap();
    let bf = Message::Bitfield { bits: bits.into() };
    w.write(frame(&root, &bf, Class::Availability, None))
        .await
        .unwrap();
    w.flush().await.unwrap();
    let mut corrupted = 0;
    while let Ok(Some(incoming)) = conn.reader.next_frame().await {
        let Message::Request { unit } = incoming.frame.msg else {
            continue;
        };
        let s = (unit * 65536) as usize;
        let e = (s + 65536).min(bytes.len());
        let mut data = bytes[s..e].to_vec();
        data[0] ^= 0xff;
        let proof = Some(proof::to_wire(&outboard.proof(unit).unwrap()));
        let t = Message::Transfer {
            unit,
            data: data.into(),
            proof,
        };
        if w.write(frame(&root, &t, Class::Data, Some(unit)))
            .await
            .is_err()
            || w.flush().await.is_err()
        {
            break;
        }
        corrupted += 1;
    }
    corrupted
}
