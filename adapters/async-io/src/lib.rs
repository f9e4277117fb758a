//! # tierswarm-async-io
//!
//! What async-std 1.13 and smol 2 share, because both run on the `async-io` reactor: TCP sockets
//! for `tierswarm-io`'s [`Tcp`](tierswarm_io::transport::tcp::Tcp) transport ([`AsyncIo`]) and
//! the timer ([`sleep_until`]). Their glues add only how a task is spawned. `async-io` drives
//! its reactor from whichever thread polls it (or its own thread), so none of this needs a
//! particular executor.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use async_io::{Async, Timer};
use futures::io::{AsyncRead, AsyncWrite};
use tierswarm_io::transport::stream::{ReadInto, Zeroing};
use tierswarm_io::transport::tcp::TcpSockets;

/// TCP sockets on `async-io`: `Tcp<AsyncIo>` is the TCP transport of async-std and smol.
#[derive(Debug, Clone, Copy, Default)]
pub struct AsyncIo;

/// Resolves at `at` (the `async-io` timer, shared by async-std and smol).
pub async fn sleep_until(at: Instant) {
    Timer::at(at).await;
}

impl TcpSockets for AsyncIo {
    type Listener = Async<TcpListener>;
    type Stream = Async<TcpStream>;

    fn adopt(listener: TcpListener) -> io::Result<Async<TcpListener>> {
        Async::new(listener)
    }

    fn accept(
        listener: &Async<TcpListener>,
    ) -> impl Future<Output = io::Result<(Async<TcpStream>, SocketAddr)>> + Send + '_ {
        listener.accept()
    }

    fn connect(addr: SocketAddr) -> impl Future<Output = io::Result<Async<TcpStream>>> + Send {
        Async::<TcpStream>::connect(addr)
    }

    fn split(
        stream: Async<TcpStream>,
    ) -> (
        impl ReadInto + 'static,
        impl AsyncWrite + Unpin + Send + 'static,
    ) {
        let _ = stream.get_ref().set_nodelay(true);
        let shared = Arc::new(stream);
        (Zeroing(Half(shared.clone())), Half(shared))
    }
}

/// One of two handles on a socket: `&Async<TcpStream>` reads and writes, so one half reads
/// while the other writes.
struct Half(Arc<Async<TcpStream>>);

impl AsyncRead for Half {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Half {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self.0).poll_write(cx, buf)
    }

    /// Forwarded, so a unit's header, data and proof go out in one `writev`.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self.0).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self.0).poll_flush(cx)
    }

    /// Flushes, then shuts the socket down for writing (the reader half goes on). `async-io`'s
    /// own close only flushes: the peer would not see the end until both halves are dropped.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(Pin::new(&mut &*self.0).poll_flush(cx))?;
        Poll::Ready(self.0.get_ref().shutdown(std::net::Shutdown::Write))
    }
}
