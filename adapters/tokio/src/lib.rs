//! # tierswarm-tokio
//!
//! The tokio glue of tierswarm: [`Tokio`] implements `tierswarm-io`'s
//! `Runtime` — tasks, one timer and TCP — and nothing else.
//! The loop (connections, dialling, effects, the drain, readers and writers) is
//! [`tierswarm_io::driver::run`], shared with the async-std glue; every protocol decision is the
//! core's. Socket halves reach the shared loop through `tokio-util`'s `futures-io` compatibility
//! wrappers.
//!
//! ```no_run
//! # async fn demo(session: tierswarm_io::Session) {
//! use tierswarm_io::driver::{run, RunConfig};
//! use tierswarm_tokio::Tokio;
//! let cfg = RunConfig { listener: None, peers: vec!["127.0.0.1:7000".parse().unwrap()], stop_when_complete: true };
//! let (session, outcome) = run::<Tokio>(session, cfg, std::future::pending(), |_| {}).await;
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use tierswarm_io::driver::Runtime;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};

/// The tokio runtime (the current one: [`Runtime::spawn`] and
/// [`Runtime::listener`] must be called inside it).
#[derive(Debug, Clone, Copy, Default)]
pub struct Tokio;

impl Runtime for Tokio {
    type Stream = TcpStream;
    type Listener = TcpListener;
    type Reader = Compat<OwnedReadHalf>;
    type Writer = Compat<OwnedWriteHalf>;

    fn spawn(task: impl Future<Output = ()> + Send + 'static) {
        tokio::spawn(task);
    }

    fn sleep_until(at: Instant) -> impl Future<Output = ()> + Send {
        tokio::time::sleep_until(at.into())
    }

    fn connect(addr: SocketAddr) -> impl Future<Output = io::Result<TcpStream>> + Send {
        TcpStream::connect(addr)
    }

    fn accept(
        listener: &TcpListener,
    ) -> impl Future<Output = io::Result<(TcpStream, SocketAddr)>> + Send + '_ {
        listener.accept()
    }

    fn split(stream: TcpStream) -> (Self::Reader, Self::Writer) {
        let _ = stream.set_nodelay(true);
        let (rd, wr) = stream.into_split();
        (rd.compat(), wr.compat_write())
    }

    fn listener(listener: std::net::TcpListener) -> io::Result<TcpListener> {
        listener.set_nonblocking(true)?;
        TcpListener::from_std(listener)
    }
}
