//! # tierswarm-async-std
//!
//! The async-std glue of tierswarm: [`AsyncStd`] implements `tierswarm-io`'s runtime seam
//! ([`Runtime`]: spawn, sleep) and [`transports`] gives a node TCP and QUIC on async-std. Only
//! the spawn is async-std's own: TCP sockets and the timer are `async-io`'s
//! ([`tierswarm_async_io`], shared with smol) and the loop is [`tierswarm_io::driver::run`].
//!
//! async-std is discontinued (RUSTSEC-2025-0052) and points to smol (`tierswarm-smol`); this
//! glue stays for programs that already run async-std.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::future::Future;
use std::time::Instant;

use tierswarm_async_io::AsyncIo;
use tierswarm_io::driver::Runtime;
use tierswarm_io::transport::tcp::Tcp;
use tierswarm_io::transport::Transports;
use tierswarm_quic::{Identity, Quic};

/// The async-std runtime (its global executor, started on first use; any thread may spawn).
#[derive(Debug, Clone, Copy, Default)]
pub struct AsyncStd;

impl Runtime for AsyncStd {
    fn spawn(task: impl Future<Output = ()> + Send + 'static) {
        // Dropping the handle detaches the task.
        drop(async_std::task::spawn(task));
    }

    fn sleep_until(at: Instant) -> impl Future<Output = ()> + Send {
        tierswarm_async_io::sleep_until(at)
    }
}

/// A node's transports on async-std: TCP and QUIC (which can listen only with an `identity`).
pub fn transports(identity: Option<Identity>) -> Transports {
    Transports::new()
        .with(Tcp::<AsyncIo>::new())
        .with(Quic::async_std(identity))
}
