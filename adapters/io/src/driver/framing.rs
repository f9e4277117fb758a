//! Per-connection framing over the core's [`decode_frame_limited`].

use bytes::{Bytes, BytesMut};
use tierswarm_core::wire::{
    admit_frame, decode_frame_limited, Frame, FrameLimits, Message, WireError,
};

/// One frame read from a connection.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// The decoded frame.
    pub frame: Frame,
    /// The frame's bytes as received (length prefix included), kept only when asked for (the
    /// flight recorder stores them).
    pub raw: Option<Bytes>,
}

/// Accumulates bytes read from a connection and cuts them into frames.
///
/// Allocation is bounded by the per-kind limits of the file ([`FrameLimits`]): a frame is
/// admitted from its length prefix and the envelope's first bytes before its body is buffered,
/// and until the peer's handshake has been read every frame is small
/// ([`CONTROL_FRAME_MAX`](tierswarm_core::wire::CONTROL_FRAME_MAX)).
#[derive(Debug)]
pub struct FrameReader {
    buf: BytesMut,
    limits: FrameLimits,
    handshaken: bool,
    /// Only TRANSFER frames (a unit stream).
    data_only: bool,
    keep_raw: bool,
    /// A unit came on this stream: units flow here ([`receiving_units`](Self::receiving_units)).
    units_seen: bool,
}

impl FrameReader {
    /// A reader under `limits` (use [`Session::frame_limits`](super::Session::frame_limits));
    /// `keep_raw` keeps each frame's bytes for the recorder.
    pub fn new(limits: FrameLimits, keep_raw: bool) -> Self {
        FrameReader {
            // Room for control messages; a larger frame reserves its own (admitted) length.
            buf: BytesMut::with_capacity(4096),
            limits,
            handshaken: false,
            data_only: false,
            keep_raw,
            units_seen: false,
        }
    }

    /// A reader of a stream that carries only TRANSFER frames (a QUIC unit stream, opened
    /// beside the connection's control stream): a TRANSFER's limit from the first frame, any
    /// other kind an error.
    pub fn for_data(limits: FrameLimits, keep_raw: bool) -> Self {
        FrameReader {
            handshaken: true,
            data_only: true,
            ..FrameReader::new(limits, keep_raw)
        }
    }

    /// The buffer to read into (append only).
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed, or an error that must
    /// close the connection.
    pub fn next_frame(&mut self) -> Result<Option<Incoming>, WireError> {
        let raw = match admit_frame(&self.buf, &self.limits, self.handshaken)? {
            Some(len) if self.keep_raw && self.buf.len() >= 4 + len => {
                Some(Bytes::copy_from_slice(&self.buf[..4 + len]))
            }
            _ => None,
        };
        let frame = decode_frame_limited(&mut self.buf, &self.limits, self.handshaken)?;
        if let Some(f) = &frame {
            if self.data_only && !matches!(f.msg, Message::Transfer { .. }) {
                return Err(WireError::Malformed {
                    what: "unit stream",
                    reason: format!(
                        "a unit stream carries only TRANSFERs, not {}",
                        f.msg.kind().name()
                    ),
                });
            }
        }
        match &frame {
            Some(Frame {
                msg: Message::Handshake { .. },
                ..
            }) => {
                // The peer's first frame is its handshake (the node drops it otherwise): larger
                // frames are allowed from now on.
                self.handshaken = true;
            }
            Some(Frame {
                msg: Message::Transfer { .. },
                ..
            }) => self.units_seen = true,
            _ => {}
        }
        Ok(frame.map(|frame| Incoming { frame, raw }))
    }

    /// Bytes held for frames not yet complete (bounded by the largest admitted frame).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Whether units have come on this stream and will go on coming (a reader then reads into
    /// a larger buffer): never for a stream that carries only TRANSFERs, a QUIC unit stream,
    /// which brings one unit (a peer that sent more on each of its 64 unit streams and stalled
    /// mid-frame would otherwise hold a large buffer on each: 32 MiB per connection).
    pub fn receiving_units(&self) -> bool {
        self.units_seen && !self.data_only
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tierswarm_core::wire::{decode_frame, encode_frame, Capabilities};
    use tierswarm_core::Geometry;

    fn limits() -> FrameLimits {
        FrameLimits::for_geometry(Geometry::new(1 << 30).unwrap())
    }

    fn handshake() -> Message {
        Message::Handshake {
            info_hash: Bytes::from_static(&[1; 32]),
            peer_id: "p".into(),
            capabilities: Some(Capabilities::OURS),
        }
    }

    #[test]
    fn splits_frames_fed_byte_by_byte_and_keeps_raw() {
        let mut wire = BytesMut::new();
        encode_frame(&[1; 32], &Message::Have { unit: 3 }, &mut wire);
        encode_frame(&[1; 32], &Message::Request { unit: 4, held: 0 }, &mut wire);
        let mut r = FrameReader::new(limits(), true);
        let mut got = Vec::new();
        for b in wire.iter() {
            r.buffer().extend_from_slice(&[*b]);
            while let Some(f) = r.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].frame.msg, Message::Request { unit: 4, held: 0 });
        let mut again = BytesMut::from(&got[0].raw.clone().unwrap()[..]);
        assert_eq!(
            decode_frame(&mut again, 1 << 20).unwrap().unwrap(),
            got[0].frame
        );
    }

    #[test]
    fn large_frames_only_after_the_handshake() {
        let unit = Message::Transfer {
            unit: 0,
            data: vec![0; 65536].into(),
            proof: None,
        };
        let mut wire = BytesMut::new();
        encode_frame(&[1; 32], &unit, &mut wire);
        let mut early = FrameReader::new(limits(), false);
        early.buffer().extend_from_slice(&wire[..8]);
        assert!(matches!(
            early.next_frame(),
            Err(WireError::FrameTooLarge { max: 1024, .. })
        ));

        let mut r = FrameReader::new(limits(), false);
        encode_frame(&[1; 32], &handshake(), r.buffer());
        r.buffer().extend_from_slice(&wire);
        assert!(matches!(
            r.next_frame().unwrap().unwrap().frame.msg,
            Message::Handshake { .. }
        ));
        assert_eq!(r.next_frame().unwrap().unwrap().frame.msg, unit);
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn oversized_prefix_is_an_error_before_any_body() {
        let mut r = FrameReader::new(limits(), true);
        encode_frame(&[1; 32], &handshake(), r.buffer());
        r.next_frame().unwrap().unwrap();
        r.buffer().extend_from_slice(&[0x10, 0, 0, 0]);
        // A 256 MiB prefix alone: the kind is not known yet, and nothing is reserved.
        assert!(r.next_frame().unwrap().is_none());
        assert!(r.buffer().capacity() < 1 << 20);
        // With the envelope's first bytes the kind is known and the 256 MiB frame refused.
        r.buffer().extend_from_slice(&[0x0a, 0x20]);
        r.buffer().extend_from_slice(&[1; 32]);
        r.buffer().extend_from_slice(&[0x10, 0x04]);
        assert!(matches!(
            r.next_frame(),
            Err(WireError::MessageTooLarge { .. })
        ));
        assert!(r.buffer().capacity() < 1 << 20);
    }
}
