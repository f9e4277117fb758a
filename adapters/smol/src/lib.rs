//! # tierswarm-smol
//!
//! The smol glue of tierswarm: [`Smol`] implements `tierswarm-io`'s runtime seam ([`Runtime`]:
//! spawn, sleep) and [`transports`] gives a node TCP and QUIC on smol. Only the spawn is smol's
//! own: TCP sockets and the timer are `async-io`'s ([`tierswarm_async_io`], shared with
//! async-std) and the loop is [`tierswarm_io::driver::run`]. smol is async-std's maintained
//! successor.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::future::Future;
use std::time::Instant;

use tierswarm_async_io::AsyncIo;
use tierswarm_io::driver::Runtime;
use tierswarm_io::transport::tcp::Tcp;
use tierswarm_io::transport::Transports;
use tierswarm_quic::{Identity, Quic};

/// The smol runtime: its global executor (threads started on first use; any thread may spawn
/// and `smol::block_on` drives the reactor meanwhile).
#[derive(Debug, Clone, Copy, Default)]
pub struct Smol;

impl Runtime for Smol {
    fn spawn(task: impl Future<Output = ()> + Send + 'static) {
        smol::spawn(task).detach();
    }

    fn sleep_until(at: Instant) -> impl Future<Output = ()> + Send {
        tierswarm_async_io::sleep_until(at)
    }
}

/// A node's transports on smol: TCP and QUIC (which can listen only with an `identity`).
pub fn transports(identity: Option<Identity>) -> Transports {
    Transports::new()
        .with(Tcp::<AsyncIo>::new())
        .with(Quic::smol(identity))
}
