//! Framing over byte streams: any `futures-io` read half and write half make a [`Connection`].
//! TCP on every runtime is this plus a connect and an accept; QUIC reads each of its streams
//! with [`StreamReader`].

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
/// Bytes of small frames gathered before they are written (frames are flushed in batches).
const WRITE_BUFFER: usize = 128 * 1024;

/// A connection over a read half and a write half of one byte stream.
pub fn connection(
    remote: String,
    rd: impl AsyncRead + Unpin + Send + 'static,
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

impl<R: AsyncRead + Unpin + Send> StreamReader<R> {
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
            if read_more(&mut self.rd, self.frames.buffer()).await? == 0 {
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

impl<R: AsyncRead + Unpin + Send + 'static> FrameRead for StreamReader<R> {
    fn next_frame(&mut self) -> BoxFuture<'_, io::Result<Option<Incoming>>> {
        Box::pin(self.next())
    }

    fn mid_frame(&self) -> bool {
        self.frames.buffered() > 0
    }
}

/// Reads up to [`READ_CHUNK`] more bytes onto the end of `buf`; `Ok(0)` at end of stream.
/// Cancel safe: dropped before the read completes, `buf` is as it was.
async fn read_more(rd: &mut (impl AsyncRead + Unpin), buf: &mut BytesMut) -> io::Result<usize> {
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
    buf.resize(start + READ_CHUNK, 0);
    let mut filled = Filled { buf, len: start };
    let n = rd.read(&mut filled.buf[start..]).await?;
    filled.len = start + n;
    Ok(n)
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
