//! # tierswarm-async-std
//!
//! The async-std glue of tierswarm: [`AsyncStd`] implements `tierswarm-io`'s
//! `Runtime` — tasks, one timer and TCP — and nothing else.
//! The loop (connections, dialling, effects, the drain, readers and writers) is
//! [`tierswarm_io::driver::run`] (or [`spawn`](tierswarm_io::driver::spawn)) with [`AsyncStd`],
//! shared with the tokio glue; every protocol decision is the core's.
//!
//! async-std is in maintenance mode and points to smol. Only `async_std::net` and
//! `async_std::task::spawn` are async-std's own here: sockets are `futures-io` streams and the
//! timer is [`async_io::Timer`], both shared with smol (see `adapters/README.md` for what a smol
//! glue would change).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use async_std::net::{TcpListener, TcpStream};
use tierswarm_io::driver::Runtime;

/// The async-std runtime (its global executor, started on first use; any thread may spawn).
#[derive(Debug, Clone, Copy, Default)]
pub struct AsyncStd;

impl Runtime for AsyncStd {
    type Stream = TcpStream;
    type Listener = TcpListener;
    type Reader = TcpStream;
    type Writer = TcpStream;

    fn spawn(task: impl Future<Output = ()> + Send + 'static) {
        // Dropping the handle detaches the task.
        drop(async_std::task::spawn(task));
    }

    async fn sleep_until(at: Instant) {
        async_io::Timer::at(at).await;
    }

    fn connect(addr: SocketAddr) -> impl Future<Output = io::Result<TcpStream>> + Send {
        TcpStream::connect(addr)
    }

    fn accept(
        listener: &TcpListener,
    ) -> impl Future<Output = io::Result<(TcpStream, SocketAddr)>> + Send + '_ {
        listener.accept()
    }

    fn split(stream: TcpStream) -> (TcpStream, TcpStream) {
        let _ = stream.set_nodelay(true);
        // Clones share one socket: one reads, the other writes.
        (stream.clone(), stream)
    }

    fn listener(listener: std::net::TcpListener) -> io::Result<TcpListener> {
        listener.set_nonblocking(true)?;
        Ok(TcpListener::from(listener))
    }
}
