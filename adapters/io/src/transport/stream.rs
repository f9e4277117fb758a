//! Framing over byte streams: any `futures-io` read half and write half make a [`Connection`].
//! TCP on every runtime is this plus a connect and an accept; QUIC reads each of its streams
//! with [`StreamReader`].

use std::future::Future;
use std::io::{self, IoSlice};
use std::sync::Arc;

use bytes::BytesMut;
use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use futures::lock::Mutex;
use smallvec::SmallVec;

use super::{BoxFuture, Connection, FrameRead, FrameWrite, Framing, Incoming, OutFrame};
use crate::driver::FrameReader;

/// Bytes asked of the stream per read.
const READ_CHUNK: usize = 64 * 1024;
/// Bytes of a fresh read buffer on a stream that carries units. Frames are cut from it and
/// handed on (a unit's bytes stay a slice of it until verified), so once it is full the bytes of
/// a frame not yet complete are copied to a new one. With a buffer of about one frame (what
/// `BytesMut` allocates on its own) that was a copy, an allocation and its page faults for
/// nearly every unit, on the loop; at 512 KiB it is once per ~8 units (a 1 GiB loopback fetch:
/// −14 to −20 % CPU; 1 MiB gained no more; dev/BENCHMARKS.md, "Read buffers"). A stream that
/// has carried no unit keeps reading into buffers of one read (idle and control-only peers cost
/// no more).
const UNIT_READ_BUFFER: usize = 512 * 1024;
/// Bytes of small frames gathered before they are written (frames are flushed in batches).
const WRITE_BUFFER: usize = 128 * 1024;

/// The read half of a byte stream, read onto the end of a `BytesMut`.
///
/// A `futures-io` read needs initialised bytes, so [`Zeroing`] zero-fills the room it reads
/// into: a byte zeroed per byte received, more where reads return less than they were offered
/// (a swarm leecher's reads: `memset` was 6–8.5 % of its CPU samples). A runtime that can read
/// into uninitialised memory (tokio's `read_buf`) implements this trait itself and skips the
/// zeroing: 13 % fewer user-space instructions per byte fetched, though not less time, since
/// the first touch of each fresh buffer page then happens in the kernel's copy instead
/// (dev/BENCHMARKS.md, "Reads into uninitialised memory").
pub trait ReadInto: Unpin + Send {
    /// Appends at most `max` bytes to `buf`, whose spare capacity is at least `max`; `Ok(0)`
    /// at end of stream. Cancel safe: dropped before it completes, `buf` is as it was.
    fn read_into<'a>(
        &'a mut self,
        buf: &'a mut BytesMut,
        max: usize,
    ) -> impl Future<Output = io::Result<usize>> + Send + 'a;
}

/// A `futures-io` reader as a [`ReadInto`]: it zero-fills the bytes it offers each read.
#[derive(Debug)]
pub struct Zeroing<R>(pub R);

impl<R: AsyncRead + Unpin + Send> ReadInto for Zeroing<R> {
    async fn read_into(&mut self, buf: &mut BytesMut, max: usize) -> io::Result<usize> {
        /// Cuts the buffer back to the bytes actually read, also when the read is dropped.
        struct Filled<'a> {
            buf: &'a mut BytesMut,
            len: usize,
        }
        impl Drop for Filled<'_> {
            fn drop(&mut self) {
                self.buf.truncate(self.len);
            }
        }
        let start = buf.len();
        buf.resize(start + max, 0);
        let mut filled = Filled { buf, len: start };
        let n = self.0.read(&mut filled.buf[start..]).await?;
        filled.len = start + n;
        Ok(n)
    }
}

/// A connection over a read half and a write half of one byte stream.
pub fn connection(
    remote: String,
    rd: impl ReadInto + 'static,
    wr: impl AsyncWrite + Unpin + Send + 'static,
    framing: Framing,
) -> Connection {
    Connection {
        remote,
        reader: Box::new(StreamReader::new(rd, framing.reader())),
        writer: Arc::new(StreamWriter::new(wr)),
    }
}

/// Frames from one byte stream, cut by a [`FrameReader`].
#[derive(Debug)]
pub struct StreamReader<R> {
    rd: R,
    frames: FrameReader,
}

impl<R: ReadInto> StreamReader<R> {
    /// Reads `rd` into `frames`.
    pub fn new(rd: R, frames: FrameReader) -> Self {
        StreamReader { rd, frames }
    }

    /// The stream read.
    pub fn get_ref(&self) -> &R {
        &self.rd
    }

    /// The next frame; `Ok(None)` at the end of the stream between frames, an error at an end
    /// within one. Cancel safe: bytes read stay in the buffer.
    pub async fn next(&mut self) -> io::Result<Option<Incoming>> {
        loop {
            if let Some(frame) = self
                .frames
                .next_frame()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
            {
                return Ok(Some(frame));
            }
            let units = self.frames.receiving_units();
            if read_more(&mut self.rd, self.frames.buffer(), units).await? == 0 {
                return match self.frames.buffer().is_empty() {
                    true => Ok(None),
                    false => Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "closed in the middle of a frame",
                    )),
                };
            }
        }
    }
}

impl<R: ReadInto + 'static> FrameRead for StreamReader<R> {
    fn next_frame(&mut self) -> BoxFuture<'_, io::Result<Option<Incoming>>> {
        Box::pin(self.next())
    }

    fn mid_frame(&self) -> bool {
        self.frames.buffered() > 0
    }
}

/// Reads up to [`READ_CHUNK`] more bytes onto the end of `buf` (into a new buffer of
/// [`UNIT_READ_BUFFER`] bytes when `units` flow and `buf` is full); `Ok(0)` at end of stream.
/// Cancel safe, as [`ReadInto::read_into`].
async fn read_more(rd: &mut impl ReadInto, buf: &mut BytesMut, units: bool) -> io::Result<usize> {
    let start = buf.len();
    if buf.capacity() - start < READ_CHUNK {
        let room = match units {
            true => UNIT_READ_BUFFER.max(start + READ_CHUNK),
            false => start + READ_CHUNK,
        };
        buf.reserve(room - start);
    }
    rd.read_into(buf, READ_CHUNK).await
}

/// Frames onto one byte stream: every class in one order, interleaved at frame boundaries
/// (a frame is written whole under a lock, so the lanes never split one another's frames).
///
/// Small frames (control, availability) gather in a buffer that goes out with the next large
/// frame or flush; a large frame (a unit) is never copied: the buffer, its header, its data and
/// its proof go to the socket in vectored writes (one `writev` when the socket takes it all).
#[derive(Debug)]
pub struct StreamWriter<W> {
    w: Mutex<Gather<W>>,
}

#[derive(Debug)]
struct Gather<W> {
    wr: W,
    buf: Vec<u8>,
}

impl<W: AsyncWrite + Unpin + Send> Gather<W> {
    async fn write_buffered(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.wr.write_all(&self.buf).await?;
            self.buf.clear();
        }
        Ok(())
    }
}

impl<W: AsyncWrite + Unpin + Send> StreamWriter<W> {
    /// Writes to `wr`.
    pub fn new(wr: W) -> Self {
        StreamWriter {
            w: Mutex::new(Gather {
                wr,
                buf: Vec::with_capacity(SMALL_FRAME),
            }),
        }
    }
}

/// Frames at least this long are written in place rather than copied into the buffer.
const SMALL_FRAME: usize = 8 * 1024;

/// Writes every byte of `parts`, in order, with as few vectored writes as the stream allows.
async fn write_all_vectored(wr: &mut (impl AsyncWrite + Unpin), parts: &[&[u8]]) -> io::Result<()> {
    let mut slices: SmallVec<[IoSlice<'_>; 4]> = parts.iter().map(|p| IoSlice::new(p)).collect();
    let mut rest = &mut slices[..];
    IoSlice::advance_slices(&mut rest, 0);
    while !rest.is_empty() {
        let n = wr.write_vectored(rest).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut rest, n);
    }
    Ok(())
}

impl<W: AsyncWrite + Unpin + Send + 'static> FrameWrite for StreamWriter<W> {
    fn write(&self, frame: OutFrame) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(async move {
            let mut g = self.w.lock().await;
            let len = frame.len();
            if len < SMALL_FRAME {
                if g.buf.len() + len > WRITE_BUFFER {
                    g.write_buffered().await?;
                }
                frame.parts.iter().for_each(|p| g.buf.extend_from_slice(p));
                return Ok(());
            }
            let Gather { wr, buf } = &mut *g;
            let mut parts: SmallVec<[&[u8]; 4]> = SmallVec::new();
            parts.push(&buf[..]);
            parts.extend(frame.parts.iter().map(|p| &p[..]));
            write_all_vectored(wr, &parts).await?;
            drop(parts);
            buf.clear();
            Ok(())
        })
    }

    fn flush(&self) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(async move {
            let mut g = self.w.lock().await;
            g.write_buffered().await?;
            g.wr.flush().await
        })
    }

    fn close(&self) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(async move {
            let mut g = self.w.lock().await;
            g.write_buffered().await?;
            g.wr.close().await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use futures::executor::block_on;
    use tierswarm_core::wire::{encode_frame, Capabilities, FrameLimits, Message};
    use tierswarm_core::Geometry;

    /// Reads every frame of `msgs` (after a handshake) through a [`StreamReader`]; returns
    /// them and the largest room the read buffer had after a frame.
    fn read_all(msgs: &[Message]) -> (Vec<Message>, usize) {
        read_all_with(msgs, |limits| FrameReader::new(limits, false), true)
    }

    /// [`read_all`] with the frame reader `reader` makes, the handshake first if `handshake`.
    fn read_all_with(
        msgs: &[Message],
        reader: impl FnOnce(FrameLimits) -> FrameReader,
        handshake: bool,
    ) -> (Vec<Message>, usize) {
        read_all_from(msgs, reader, handshake, usize::MAX)
    }

    /// A stream that hands out at most `most` bytes per read.
    struct Uneven {
        data: Vec<u8>,
        at: usize,
        most: usize,
    }

    impl AsyncRead for Uneven {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            out: &mut [u8],
        ) -> std::task::Poll<io::Result<usize>> {
            let n = self.most.min(out.len()).min(self.data.len() - self.at);
            let at = self.at;
            out[..n].copy_from_slice(&self.data[at..at + n]);
            self.at += n;
            std::task::Poll::Ready(Ok(n))
        }
    }

    /// [`read_all_with`], each read bringing at most `most` bytes.
    fn read_all_from(
        msgs: &[Message],
        reader: impl FnOnce(FrameLimits) -> FrameReader,
        handshake: bool,
        most: usize,
    ) -> (Vec<Message>, usize) {
        let mut wire = BytesMut::new();
        let hello = Message::Handshake {
            info_hash: Bytes::from_static(&[1; 32]),
            peer_id: "p".into(),
            capabilities: Some(Capabilities::OURS),
        };
        let first = handshake.then_some(&hello);
        for m in first.into_iter().chain(msgs) {
            encode_frame(&[1; 32], m, &mut wire);
        }
        let limits = FrameLimits::for_geometry(Geometry::new(1 << 30).unwrap());
        let stream = Zeroing(Uneven {
            data: wire.to_vec(),
            at: 0,
            most,
        });
        let mut r = StreamReader::new(stream, reader(limits));
        let (mut got, mut room) = (Vec::new(), 0);
        while let Some(f) = block_on(r.next()).unwrap() {
            room = room.max(r.frames.buffer().capacity());
            got.push(f.frame.msg);
        }
        if handshake {
            got.remove(0);
        }
        (got, room)
    }

    #[test]
    fn units_are_read_into_large_buffers_and_control_frames_are_not() {
        let units: Vec<Message> = (0..12u8)
            .map(|i| Message::Transfer {
                unit: u64::from(i),
                data: vec![i; 65536].into(),
                proof: None,
            })
            .collect();
        let (got, room) = read_all(&units);
        assert_eq!(got, units);
        assert!(room >= UNIT_READ_BUFFER / 2, "room {room}");

        let haves: Vec<Message> = (0..5000).map(|unit| Message::Have { unit }).collect();
        let (got, room) = read_all(&haves);
        assert_eq!(got, haves);
        assert!(room < UNIT_READ_BUFFER / 2, "room {room}");

        // A unit stream of its own (QUIC) is meant for one unit: more do not enlarge its buffer.
        let (got, room) = read_all_with(&units, |l| FrameReader::for_data(l, false), false);
        assert_eq!(got, units);
        assert!(room < UNIT_READ_BUFFER / 2, "room {room}");
    }

    /// Reads of every size, from a few bytes to more than a read buffer, cut the same frames: the
    /// bytes of a frame not yet complete move to the front of each new buffer.
    #[test]
    fn units_survive_reads_of_any_size() {
        let units: Vec<Message> = (0..40u32)
            .map(|i| Message::Transfer {
                unit: u64::from(i),
                data: (0..65536u32)
                    .map(|b| (b ^ i) as u8)
                    .collect::<Vec<u8>>()
                    .into(),
                proof: None,
            })
            .collect();
        for most in [7, 4096, 65_535, 65_536, 65_600, 300_000, 1 << 20] {
            let (got, room) = read_all_from(&units, |l| FrameReader::new(l, false), true, most);
            assert_eq!(got, units, "reads of at most {most} bytes");
            assert!(room >= UNIT_READ_BUFFER / 2, "room {room}");
        }
    }
}
