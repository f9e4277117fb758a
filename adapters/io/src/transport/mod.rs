//! The transport seam: how a node reaches peers and how frames cross a connection.
//!
//! A [`Transport`] serves one URL scheme (`tcp`, `quic`, `mem`, ...): it binds [`Listener`]s and
//! dials peers, and each side of a connection is a [`Connection`]: a [`FrameRead`] that yields
//! whole frames (cut by [`FrameReader`], bounded by the node's maximum frame) and a
//! [`FrameWrite`] that takes [`OutFrame`]s. Frames are the same length-prefixed protobuf frames
//! over every transport. A node holds its transports in a [`Transports`] set, looked up by the
//! scheme of each [`PeerUrl`], so one node may listen and dial over several at once.
//!
//! Nothing here knows an async runtime: the driver loop ([`crate::driver::run`]) spawns and
//! times with the separate [`Runtime`](crate::driver::Runtime) seam. Byte streams are framed by
//! [`stream::connection`]; [`tcp::Tcp`] is TCP written once over a runtime's sockets
//! ([`tcp::TcpSockets`]: adopt, accept, connect, split); [`mem`] is a transport without
//! sockets.
//!
//! The traits are object safe (futures are boxed: one allocation per frame is noise next to
//! the frame) so a [`Transports`] set can hold transports of different types.

pub mod mem;
pub mod stream;
pub mod tcp;
mod url;

use std::fmt;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use smallvec::SmallVec;
use tierswarm_core::wire::FrameLimits;

pub use crate::driver::{FrameReader, Incoming};
pub use url::{PeerUrl, UrlError};

/// A boxed, `Send` future: what the object-safe traits here return.
pub type BoxFuture<'a, T> = futures::future::BoxFuture<'a, T>;

/// The priority class of an outgoing frame (the core's output classes). A transport may carry
/// classes on separate streams: QUIC sends control and availability on one stream at a higher
/// priority and every TRANSFER (data) on a stream of its own, so control never waits behind
/// data; a byte stream (TCP) interleaves them at frame boundaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    /// Handshakes, requests, rejects, cancels, keep-alives, refinement.
    Control,
    /// Bitfields, HAVEs, summaries.
    Availability,
    /// TRANSFERs: unit payloads and their proofs.
    Data,
    /// Diagnostics a peer may drop first.
    Telemetry,
}

/// One frame to send: its encoded bytes in one or more parts, written in order without being
/// copied together (a unit's header, payload and proof can stay where they are), its class, and
/// the unit it carries if it is a TRANSFER.
#[derive(Debug, Clone)]
pub struct OutFrame {
    /// The frame's bytes, length prefix included, in order.
    pub parts: SmallVec<[Bytes; 3]>,
    /// Its priority class.
    pub class: Class,
    /// The unit of a TRANSFER.
    pub unit: Option<u64>,
}

impl OutFrame {
    /// A frame in one part.
    pub fn new(bytes: Bytes, class: Class, unit: Option<u64>) -> Self {
        OutFrame {
            parts: smallvec::smallvec![bytes],
            class,
            unit,
        }
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.parts.iter().map(Bytes::len).sum()
    }

    /// Whether it has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How a connection's reader cuts frames: the per-kind limits of the file, and whether each
/// frame's raw bytes are kept (for the flight recorder).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    /// Per-kind frame limits (the session's [`frame_limits`](crate::Session::frame_limits)).
    pub limits: FrameLimits,
    /// Keep each frame's bytes ([`Incoming::raw`]).
    pub keep_raw: bool,
}

impl Framing {
    /// A fresh [`FrameReader`] for a connection's (or its control stream's) frames: small
    /// frames only until the peer's handshake.
    pub fn reader(&self) -> FrameReader {
        FrameReader::new(self.limits, self.keep_raw)
    }

    /// A fresh [`FrameReader`] for a stream that carries only TRANSFER frames (QUIC's unit
    /// streams): any other kind is an error.
    pub fn data_reader(&self) -> FrameReader {
        FrameReader::for_data(self.limits, self.keep_raw)
    }
}

/// The receiving half of a connection.
pub trait FrameRead: Send + 'static {
    /// The next frame; `Ok(None)` once the peer has closed the connection cleanly. An error ends
    /// the connection (a frame over the limit or malformed is [`io::ErrorKind::InvalidData`]).
    fn next_frame(&mut self) -> BoxFuture<'_, io::Result<Option<Incoming>>>;
    /// Whether part of a frame has been read and the rest has not (the driver drops a peer
    /// whose frame stays unfinished for [`Limits::frame_timeout`]). The driver asks between
    /// calls of [`next_frame`](Self::next_frame), dropping an unfinished call to do so: a reader
    /// that answers here must keep what it read when its `next_frame` future is dropped. The
    /// default, `false`, leaves unfinished frames to the transport (QUIC's idle timeout).
    ///
    /// [`Limits::frame_timeout`]: tierswarm_core::node::Limits::frame_timeout
    fn mid_frame(&self) -> bool {
        false
    }
}

/// The sending half of a connection. Methods take `&self` so that writes of different classes
/// can be in progress at once (the driver writes control and data from two lanes).
///
/// - Frames of one class arrive in the order of their writes when each write completes before
///   the next of that class starts; frames of different classes may overtake each other
///   ([`Class::Control`] and [`Class::Availability`] keep one order).
/// - Every future may be dropped before it completes (a deadline ran out): the connection may
///   then hold part of a frame, so it must be closed. Dropping the writer ends the connection.
pub trait FrameWrite: Send + Sync + 'static {
    /// Hands `frame` to the transport; resolves once it holds all of it (a send buffer may still
    /// hold the bytes: [`flush`](Self::flush) pushes them out).
    fn write(&self, frame: OutFrame) -> BoxFuture<'_, io::Result<()>>;
    /// Pushes out what earlier writes left in buffers.
    fn flush(&self) -> BoxFuture<'_, io::Result<()>>;
    /// Flushes and closes the connection, telling the peer (it reads a clean end).
    fn close(&self) -> BoxFuture<'_, io::Result<()>>;
    /// The peer cancelled its request for `unit`: a transport that carries each unit apart may
    /// stop sending it (QUIC resets its stream, or skips a write not begun). Byte streams cannot
    /// take back a frame, and ignore it.
    fn cancel(&self, unit: u64) {
        let _ = unit;
    }
}

/// A connection: a frame reader and a frame writer, used from two tasks.
pub struct Connection {
    /// Who is at the other end, for logs.
    pub remote: String,
    /// The receiving half.
    pub reader: Box<dyn FrameRead>,
    /// The sending half.
    pub writer: Arc<dyn FrameWrite>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

/// A bound listener of some transport.
pub trait Listener: Send + 'static {
    /// The URL a peer dials to reach it: the bound address and whatever else a dialler needs
    /// (the certificate fingerprint of QUIC).
    fn url(&self) -> PeerUrl;
    /// The next incoming connection. The future may be dropped and called again without losing
    /// a connection.
    fn accept(&mut self, framing: Framing) -> BoxFuture<'_, io::Result<Connection>>;
}

/// A way to reach peers: one URL scheme.
pub trait Transport: Send + Sync + 'static {
    /// The scheme it serves (`tcp`, `quic`, ...).
    fn scheme(&self) -> &'static str;
    /// Whether `url` names a peer this transport can dial, checked before any dialling (a
    /// `quic://` URL without a fingerprint is refused here); the reason on one line.
    fn check(&self, url: &PeerUrl) -> Result<(), String> {
        url.socket_addr().map(drop).map_err(|e| e.to_string())
    }
    /// Binds a listener at `url` (port 0: any free port). Call it where the transport's runtime
    /// is current (inside the runtime, for tokio).
    fn listen(&self, url: &PeerUrl) -> io::Result<Box<dyn Listener>>;
    /// Connects to `url`: one attempt. A refusal that another attempt cannot change (a wrong
    /// certificate) is [`io::ErrorKind::PermissionDenied`].
    fn connect(
        &self,
        url: &PeerUrl,
        framing: Framing,
    ) -> BoxFuture<'static, io::Result<Connection>>;
    /// Called when a run ends, after its connections were closed: lets the transport finish its
    /// goodbyes (QUIC waits until its endpoints have sent their close frames). The caller
    /// bounds it in time.
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }
}

/// The transports of one node, by scheme.
#[derive(Clone, Default)]
pub struct Transports {
    all: Vec<Arc<dyn Transport>>,
}

impl fmt::Debug for Transports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.all.iter().map(|t| t.scheme()))
            .finish()
    }
}

impl Transports {
    /// No transport.
    pub fn new() -> Self {
        Transports::default()
    }

    /// Adds `transport` (replacing one of the same scheme).
    pub fn with(mut self, transport: impl Transport) -> Self {
        self.all.retain(|t| t.scheme() != transport.scheme());
        self.all.push(Arc::new(transport));
        self
    }

    /// The transport of `url`'s scheme.
    pub fn get(&self, url: &PeerUrl) -> io::Result<&dyn Transport> {
        self.all
            .iter()
            .find(|t| t.scheme() == url.scheme())
            .map(|t| &**t)
            .ok_or_else(|| {
                let known: Vec<_> = self.all.iter().map(|t| t.scheme()).collect();
                io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!(
                        "{url}: no transport for `{}://` here (known: {})",
                        url.scheme(),
                        known.join(", ")
                    ),
                )
            })
    }

    /// Checks that `url` can be dialled ([`Transport::check`]); the reason names the URL.
    pub fn check(&self, url: &PeerUrl) -> Result<(), String> {
        let t = self.get(url).map_err(|e| e.to_string())?;
        t.check(url).map_err(|e| format!("{url}: {e}"))
    }

    /// Binds a listener at `url` with its scheme's transport.
    pub fn listen(&self, url: &PeerUrl) -> io::Result<Box<dyn Listener>> {
        self.get(url)?.listen(url)
    }

    /// Connects to `url` with its scheme's transport.
    pub fn connect(
        &self,
        url: &PeerUrl,
        framing: Framing,
    ) -> BoxFuture<'static, io::Result<Connection>> {
        match self.get(url) {
            Ok(t) => t.connect(url, framing),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    /// [`Transport::shutdown`] of every transport, together.
    pub async fn shutdown(&self) {
        futures::future::join_all(self.all.iter().map(|t| t.shutdown())).await;
    }
}
