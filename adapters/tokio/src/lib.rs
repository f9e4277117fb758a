//! # tierswarm-tokio
//!
//! The tokio glue of tierswarm. [`Tokio`] implements `tierswarm-io`'s runtime seam
//! ([`Runtime`]: spawn, sleep) and its TCP sockets ([`TcpSockets`]: adopt, accept, connect,
//! split, for the shared [`Tcp`] transport); [`transports`] gives a node TCP and QUIC on tokio.
//! The loop (connections, dialling, effects, the drain, readers and writers) is
//! [`tierswarm_io::driver::run`], shared with the async-std and smol glues; every protocol
//! decision is the core's. Socket halves reach the shared framing through `tokio-util`'s
//! `futures-io` compatibility wrappers.
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
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use futures::io::{AsyncRead, AsyncWrite};
use tierswarm_io::driver::Runtime;
use tierswarm_io::transport::tcp::{Tcp, TcpSockets};
use tierswarm_io::transport::Transports;
use tierswarm_quic::{Identity, Quic};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::compat::{TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};

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
        impl AsyncRead + Unpin + Send + 'static,
        impl AsyncWrite + Unpin + Send + 'static,
    ) {
        let _ = stream.set_nodelay(true);
        let (rd, wr) = stream.into_split();
        (rd.compat(), wr.compat_write())
    }
}

/// A node's transports on tokio: TCP and QUIC (which can listen only with an `identity`).
pub fn transports(identity: Option<Identity>) -> Transports {
    Transports::new()
        .with(Tcp::<Tokio>::new())
        .with(Quic::tokio(identity))
}
