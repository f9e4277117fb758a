//! # tierswarm-tokio
//!
//! The tokio glue of tierswarm. [`Tokio`] implements `tierswarm-io`'s runtime seam
//! ([`Runtime`]: spawn, sleep) and its TCP sockets ([`TcpSockets`]: adopt, accept, connect,
//! split, for the shared [`Tcp`] transport); [`transports`] gives a node TCP and QUIC on tokio.
//! The loop (connections, dialling, effects, the drain, readers and writers) is
//! [`tierswarm_io::driver::run`], shared with the async-std and smol glues; every protocol
//! decision is the core's. The read half reads straight into the framing's uninitialised
//! buffer (tokio's `read_buf`, no zero-fill), the write half goes through a wrapper of ours that
//! keeps vectored writes vectored.
//!
//! ```no_run
//! # async fn demo(session: tierswarm_io::Session) {
//! use tierswarm_io::driver::{run, RunConfig};
//! use tierswarm_tokio::Tokio;
//! let cfg = RunConfig {
//!     transports: tierswarm_tokio::transports(None),
//!     listeners: vec![],
//!     peers: vec!["tcp://127.0.0.1:7000".parse().unwrap()],
//!     stop_when_complete: true,
//! };
//! let (session, outcome) = run::<Tokio>(session, cfg, std::future::pending(), |_| {}).await;
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{BufMut, BytesMut};
use futures::io::AsyncWrite;
use tierswarm_io::driver::Runtime;
use tierswarm_io::transport::stream::ReadInto;
use tierswarm_io::transport::tcp::{Tcp, TcpSockets};
use tierswarm_io::transport::Transports;
use tierswarm_quic::{Identity, Quic};
use tokio::io::AsyncReadExt;
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};

/// The tokio runtime (the current one: [`Runtime::spawn`] and listening must happen inside it).
#[derive(Debug, Clone, Copy, Default)]
pub struct Tokio;

impl Runtime for Tokio {
    fn spawn(task: impl Future<Output = ()> + Send + 'static) {
        tokio::spawn(task);
    }

    fn sleep_until(at: Instant) -> impl Future<Output = ()> + Send {
        tokio::time::sleep_until(at.into())
    }
}

impl TcpSockets for Tokio {
    type Listener = TcpListener;
    type Stream = TcpStream;

    fn adopt(listener: std::net::TcpListener) -> io::Result<TcpListener> {
        TcpListener::from_std(listener)
    }

    fn accept(
        listener: &TcpListener,
    ) -> impl Future<Output = io::Result<(TcpStream, SocketAddr)>> + Send + '_ {
        listener.accept()
    }

    fn connect(addr: SocketAddr) -> impl Future<Output = io::Result<TcpStream>> + Send {
        TcpStream::connect(addr)
    }

    fn split(
        stream: TcpStream,
    ) -> (
        impl ReadInto + 'static,
        impl AsyncWrite + Unpin + Send + 'static,
    ) {
        let _ = stream.set_nodelay(true);
        let (rd, wr) = stream.into_split();
        (UninitRead(rd), VectoredWrite(wr))
    }
}

/// A tokio read half that reads into a buffer's spare capacity as it is: tokio's `read_buf`
/// takes uninitialised memory (its `ReadBuf`), where a `futures-io` read would have the 64 KiB
/// zero-filled before every read, however few bytes the read brings.
struct UninitRead(OwnedReadHalf);

impl ReadInto for UninitRead {
    async fn read_into(&mut self, buf: &mut BytesMut, max: usize) -> io::Result<usize> {
        // Cancel safe: `read_buf` advances the buffer only by the bytes a completed read brought.
        self.0.read_buf(&mut (&mut *buf).limit(max)).await
    }
}

/// A tokio write half as a `futures-io` writer that keeps vectored writes vectored.
/// `tokio-util`'s compat wrapper does not forward `poll_write_vectored`, so the `futures-io`
/// default wrote only the first non-empty slice per call: a unit's header, data and proof went
/// out as three `send`s (three segments with `TCP_NODELAY`) instead of one `writev`.
struct VectoredWrite<W>(W);

impl<W: tokio::io::AsyncWrite + Unpin> AsyncWrite for VectoredWrite<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// A node's transports on tokio: TCP and QUIC (which can listen only with an `identity`).
pub fn transports(identity: Option<Identity>) -> Transports {
    Transports::new()
        .with(Tcp::<Tokio>::new())
        .with(Quic::tokio(identity))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::AsyncWriteExt;
    use tokio::io::AsyncReadExt;

    /// One vectored write puts every slice on the socket (the compat wrapper took only the
    /// first): what lets a unit's header, data and proof leave in one `writev`.
    #[tokio::test]
    async fn a_vectored_write_takes_every_slice() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (_rd, mut wr) = Tokio::split(client.unwrap());
        let parts: [&[u8]; 3] = [b"head", &[7; 1000], b"tail"];
        let slices = parts.map(IoSlice::new);
        let n = wr.write_vectored(&slices).await.unwrap();
        assert_eq!(n, 1008, "a vectored write stopped after {n} bytes");
        wr.close().await.unwrap();
        let mut got = Vec::new();
        accepted.unwrap().0.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, parts.concat());
    }

    /// A read into spare capacity appends after the bytes already held, takes no more than it
    /// is offered, and reports the end of the stream as 0.
    #[tokio::test]
    async fn a_read_into_appends_at_most_what_it_is_offered() {
        use tokio::io::AsyncWriteExt as _;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (mut rd, _wr) = Tokio::split(client.unwrap());
        let mut peer = accepted.unwrap().0;
        let sent: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        peer.write_all(&sent).await.unwrap();
        peer.shutdown().await.unwrap();
        let mut buf = BytesMut::from(&b"held"[..]);
        loop {
            buf.reserve(1000);
            let before = buf.len();
            let n = rd.read_into(&mut buf, 1000).await.unwrap();
            assert!(n <= 1000, "read {n} bytes when offered 1000");
            assert_eq!(buf.len(), before + n);
            if n == 0 {
                break;
            }
        }
        assert_eq!(&buf[..4], b"held");
        assert_eq!(&buf[4..], &sent[..]);
    }
}
