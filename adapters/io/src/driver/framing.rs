//! Per-connection framing over the core's [`decode_frame`].

use bytes::{Bytes, BytesMut};
use tierswarm_core::wire::{decode_frame, Frame, WireError};

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
/// Allocation is bounded by the frame limit: a length prefix over it is an error before any
/// body is buffered.
#[derive(Debug)]
pub struct FrameReader {
    buf: BytesMut,
    max: u64,
    keep_raw: bool,
}

impl FrameReader {
    /// A reader accepting frames up to `max_frame` bytes (use
    /// [`Session::max_frame_len`](super::Session::max_frame_len)); `keep_raw` keeps each frame's
    /// bytes for the recorder.
    pub fn new(max_frame: u64, keep_raw: bool) -> Self {
        FrameReader {
            buf: BytesMut::with_capacity(64 * 1024),
            max: max_frame,
            keep_raw,
        }
    }

    /// The buffer to read into (append only).
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed, or an error that must
    /// close the connection.
    pub fn next_frame(&mut self) -> Result<Option<Incoming>, WireError> {
        let raw = if self.keep_raw && self.buf.len() >= 4 {
            let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
            let total = 4 + len as usize;
            (len as u64 <= self.max && self.buf.len() >= total)
                .then(|| Bytes::copy_from_slice(&self.buf[..total]))
        } else {
            None
        };
        Ok(decode_frame(&mut self.buf, self.max)?.map(|frame| Incoming { frame, raw }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tierswarm_core::wire::{encode_frame, Message};

    #[test]
    fn splits_frames_fed_byte_by_byte_and_keeps_raw() {
        let mut wire = BytesMut::new();
        encode_frame(&[1; 32], &Message::Have { unit: 3 }, &mut wire);
        encode_frame(&[1; 32], &Message::Request { unit: 4 }, &mut wire);
        let mut r = FrameReader::new(1 << 20, true);
        let mut got = Vec::new();
        for b in wire.iter() {
            r.buffer().extend_from_slice(&[*b]);
            while let Some(f) = r.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].frame.msg, Message::Request { unit: 4 });
        let mut again = BytesMut::from(&got[0].raw.clone().unwrap()[..]);
        assert_eq!(
            decode_frame(&mut again, 1 << 20).unwrap().unwrap(),
            got[0].frame
        );
    }

    #[test]
    fn oversized_prefix_is_an_error() {
        let mut r = FrameReader::new(100, true);
        r.buffer().extend_from_slice(&[0, 0, 1, 0]);
        assert!(r.next_frame().is_err());
    }
}
