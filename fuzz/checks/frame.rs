//! A connection's frame reader on a hostile byte stream: never panics, never buffers past the
//! file's largest admitted frame, and every frame it hands out is within its kind's limit and
//! decodes the same again.
//!
//! Shared by the `frame_decoder` fuzz target and `adapters/io/tests/fuzz_corpus.rs`. Input: 8
//! bytes of file length (taken modulo 64 TiB + 1), one byte choosing the read size (see below),
//! then the stream a peer sends.

use bytes::BytesMut;
use tierswarm_core::tiers::MAX_FILE_LEN;
use tierswarm_core::wire::{decode_frame, encode_frame, FrameLimits, Message};
use tierswarm_core::Geometry;
use tierswarm_io::driver::FrameReader;

/// Runs every check on `data`; panics on a violation.
pub fn check(data: &[u8]) {
    if data.len() < 9 {
        return;
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&data[..8]);
    let file_len = u64::from_le_bytes(len) % (MAX_FILE_LEN + 1);
    let limits = FrameLimits::for_geometry(Geometry::new(file_len).expect("within the maximum"));
    // Reads of 1–64 bytes (frames trickling in), or of 1, 4 or 64 KiB (what sockets give).
    let chunk = match data[8] % 4 {
        0 => 1 + usize::from(data[8] >> 2),
        1 => 1024,
        2 => 4096,
        _ => 65536,
    };
    let stream = &data[9..];
    let mut reader = FrameReader::new(limits, true);
    let mut handshaken = false;
    let bound = 4 + limits.max_frame() as usize + chunk;
    for piece in stream.chunks(chunk) {
        reader.buffer().extend_from_slice(piece);
        loop {
            match reader.next_frame() {
                Ok(Some(incoming)) => {
                    let raw = incoming.raw.expect("raw bytes are kept");
                    let frame = incoming.frame;
                    let body = raw.len() - 4;
                    let kind_limit = if handshaken {
                        limits.limit(frame.msg.wire_type())
                    } else {
                        tierswarm_core::wire::CONTROL_FRAME_MAX
                    };
                    assert!(
                        body <= kind_limit as usize,
                        "{:?} of {body} bytes",
                        frame.msg.kind()
                    );
                    if let Message::Bitfield { bits } = &frame.msg {
                        assert_eq!(bits.len() as u64, limits.bitfield_bytes);
                    }
                    if let Message::Transfer { proof: Some(p), .. } = &frame.msg {
                        assert!(p.nodes.len() <= limits.proof_nodes as usize);
                    }
                    // The raw bytes decode to the same frame, and so does its re-encoding.
                    let mut again = BytesMut::from(&raw[..]);
                    let same = decode_frame(&mut again, u64::MAX).expect("raw decodes");
                    assert_eq!(same.as_ref(), Some(&frame));
                    let mut enc = BytesMut::new();
                    encode_frame(&frame.info_hash, &frame.msg, &mut enc);
                    let back = decode_frame(&mut enc, u64::MAX).expect("re-encoding decodes");
                    assert_eq!(back.as_ref(), Some(&frame));
                    handshaken |= matches!(frame.msg, Message::Handshake { .. });
                }
                Ok(None) => break,
                // The connection would be closed here.
                Err(_) => return,
            }
        }
        assert!(
            reader.buffered() <= bound,
            "{} bytes buffered",
            reader.buffered()
        );
        assert!(
            reader.buffer().capacity() <= 2 * bound + 4096,
            "capacity {}",
            reader.buffer().capacity()
        );
    }
}
