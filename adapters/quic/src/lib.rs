//! # tierswarm-quic
//!
//! The QUIC transport of tierswarm (`quic://HOST:PORT#FINGERPRINT`), on [`quinn`] with rustls
//! and ring. It implements `tierswarm-io`'s [`Transport`]; the frames are the same
//! length-prefixed protobuf frames as over TCP.
//!
//! - **Identity.** Each node has a self-signed certificate ([`Identity`], made with rcgen and
//!   kept in a file so it survives restarts). A listener's URL carries the certificate's
//!   SHA-256 [`Fingerprint`]; a dialler accepts exactly that certificate and nothing else (see
//!   `adapters/README.md`, "Trust model"). Clients present no certificate.
//! - **Streams.** Each side sends on unidirectional streams only: one long-lived control stream
//!   (handshake, requests, availability — [`Class::Control`] and [`Class::Availability`]) at a
//!   higher priority, and one short stream per TRANSFER ([`Class::Data`]). Control never waits
//!   behind units, a lost packet of one unit holds up no other unit, and a cancelled unit's
//!   stream is reset (or never opened). The reader takes every stream the peer opens and cuts
//!   each with its own `FrameReader`.
//! - **Runtimes.** quinn runs on tokio, async-std and smol; [`Quic::tokio`], [`Quic::async_std`]
//!   and [`Quic::smol`] (behind the features of the same names) pick its runtime.
//!
//! [`Class::Control`]: tierswarm_io::transport::Class::Control
//! [`Class::Availability`]: tierswarm_io::transport::Class::Availability
//! [`Class::Data`]: tierswarm_io::transport::Class::Data
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod identity;
mod verify;

use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as SyncMutex};
use std::time::Duration;

use futures::lock::Mutex;
use futures::stream::FuturesUnordered;
use futures::{select_biased, FutureExt, StreamExt};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{
    ConnectionError, Endpoint, EndpointConfig, RecvStream, SendStream, TransportConfig, VarInt,
};
use rustls::crypto::CryptoProvider;
use tierswarm_io::transport::stream::{StreamReader, Zeroing};
use tierswarm_io::transport::{
    BoxFuture, Class, Connection, FrameRead, FrameWrite, Framing, Incoming, Listener, OutFrame,
    PeerUrl, Transport,
};
use tracing::debug;

pub use identity::{BadFingerprint, Fingerprint, Identity, IdentityError};

/// The application protocol named in the TLS handshake.
const ALPN: &[u8] = b"tierswarm/1";
/// Stream priorities: control before data.
const CONTROL_PRIORITY: i32 = 1;
const DATA_PRIORITY: i32 = 0;
/// Streams a peer may have open towards us at once (its control stream and units in flight).
const MAX_STREAMS: u32 = 64;
/// Per-stream and per-connection flow-control windows, and the bytes a connection may hold
/// unacknowledged: enough for 1 Gbit/s at 100 ms without letting one peer take much memory.
const STREAM_WINDOW: u32 = 2 << 20;
const CONNECTION_WINDOW: u32 = 16 << 20;
/// A connection with no packet for this long is gone; keep-alives are sent well before.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Handshakes in progress on a listener; more incoming connections are refused.
const MAX_HANDSHAKES: usize = 64;
/// Finished unit streams remembered (a CANCEL can still reset them), and cancels remembered
/// for units not yet written.
const RECENT_UNITS: usize = 64;
/// How long a closing side waits for its peer to read everything and close.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Application error codes: a clean close, and a unit stream reset because it was cancelled.
const CLOSED: VarInt = VarInt::from_u32(0);
const CANCELLED: VarInt = VarInt::from_u32(1);

/// The QUIC transport of one node: its identity (needed to listen), the quinn runtime, and the
/// endpoints it made.
pub struct Quic {
    identity: Option<Arc<Identity>>,
    runtime: Arc<dyn quinn::Runtime>,
    provider: Arc<CryptoProvider>,
    transport: Arc<TransportConfig>,
    /// Client endpoints (one per address family), made on the first dial.
    clients: SyncMutex<[Option<Endpoint>; 2]>,
    /// Every endpoint made, to wait for at shutdown.
    endpoints: SyncMutex<Vec<Endpoint>>,
}

impl std::fmt::Debug for Quic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quic")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl Quic {
    /// QUIC on the quinn runtime `runtime`. Without an identity it can dial but not listen.
    pub fn new(identity: Option<Identity>, runtime: Arc<dyn quinn::Runtime>) -> Quic {
        let mut t = TransportConfig::default();
        t.max_concurrent_uni_streams(MAX_STREAMS.into())
            .max_concurrent_bidi_streams(0u32.into())
            .stream_receive_window(STREAM_WINDOW.into())
            .receive_window(CONNECTION_WINDOW.into())
            .send_window(CONNECTION_WINDOW.into())
            .max_idle_timeout(Some(
                IDLE_TIMEOUT.try_into().expect("60 s is a valid timeout"),
            ))
            .keep_alive_interval(Some(KEEP_ALIVE))
            // Units go out in the order they were written, each finished before the next.
            .send_fairness(false);
        Quic {
            identity: identity.map(Arc::new),
            runtime,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            transport: Arc::new(t),
            clients: SyncMutex::new([None, None]),
            endpoints: SyncMutex::new(Vec::new()),
        }
    }

    /// QUIC on tokio (listen and dial inside the tokio runtime).
    #[cfg(feature = "tokio")]
    pub fn tokio(identity: Option<Identity>) -> Quic {
        Quic::new(identity, Arc::new(quinn::TokioRuntime))
    }

    /// QUIC on async-std.
    #[cfg(feature = "async-std")]
    pub fn async_std(identity: Option<Identity>) -> Quic {
        Quic::new(identity, Arc::new(quinn::AsyncStdRuntime))
    }

    /// QUIC on smol.
    #[cfg(feature = "smol")]
    pub fn smol(identity: Option<Identity>) -> Quic {
        Quic::new(identity, Arc::new(quinn::SmolRuntime))
    }

    /// The fingerprint of this node's certificate, if it has one.
    pub fn fingerprint(&self) -> Option<Fingerprint> {
        self.identity.as_ref().map(|i| i.fingerprint())
    }

    fn endpoint(
        &self,
        server: Option<quinn::ServerConfig>,
        at: SocketAddr,
    ) -> io::Result<Endpoint> {
        let socket = std::net::UdpSocket::bind(at)?;
        let e = Endpoint::new(
            EndpointConfig::default(),
            server,
            socket,
            self.runtime.clone(),
        )?;
        self.endpoints.lock().expect("not poisoned").push(e.clone());
        Ok(e)
    }

    /// The client endpoint for dialling `to`'s address family.
    fn client(&self, to: SocketAddr) -> io::Result<Endpoint> {
        let family = usize::from(to.is_ipv6());
        let mut clients = self.clients.lock().expect("not poisoned");
        if let Some(e) = &clients[family] {
            return Ok(e.clone());
        }
        let any = match to {
            SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
        };
        let e = self.endpoint(None, any)?;
        clients[family] = Some(e.clone());
        Ok(e)
    }

    fn server_config(&self, identity: &Identity) -> io::Result<quinn::ServerConfig> {
        let mut crypto = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(io::Error::other)?
            .with_no_client_auth()
            .with_single_cert(vec![identity.cert.clone()], identity.key.clone_key().into())
            .map_err(io::Error::other)?;
        crypto.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = QuicServerConfig::try_from(crypto).map_err(io::Error::other)?;
        let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        cfg.transport_config(self.transport.clone());
        Ok(cfg)
    }

    fn client_config(&self, pinned: verify::Pinned) -> io::Result<quinn::ClientConfig> {
        let mut crypto = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(io::Error::other)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(pinned))
            .with_no_client_auth();
        crypto.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = QuicClientConfig::try_from(crypto).map_err(io::Error::other)?;
        let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
        cfg.transport_config(self.transport.clone());
        Ok(cfg)
    }
}

/// The fingerprint a `quic://` URL pins.
fn pinned(url: &PeerUrl) -> io::Result<Fingerprint> {
    let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
    let f = url.fragment().ok_or_else(|| {
        invalid(
            "no certificate fingerprint: use quic://HOST:PORT#FINGERPRINT, as the peer's \
             `listening on` line prints it"
                .into(),
        )
    })?;
    f.parse()
        .map_err(|e: BadFingerprint| invalid(e.to_string()))
}

impl Transport for Quic {
    fn scheme(&self) -> &'static str {
        "quic"
    }

    fn check(&self, url: &PeerUrl) -> Result<(), String> {
        url.socket_addr().map_err(|e| e.to_string())?;
        pinned(url).map(drop).map_err(|e| e.to_string())
    }

    fn listen(&self, url: &PeerUrl) -> io::Result<Box<dyn Listener>> {
        let identity = self.identity.as_ref().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "listening on QUIC needs a certificate",
            )
        })?;
        if url.fragment().is_some() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{url}: a listening address takes no fingerprint (it is printed)"),
            ));
        }
        let endpoint = self.endpoint(Some(self.server_config(identity)?), url.socket_addr()?)?;
        let bound = endpoint.local_addr()?;
        let fingerprint = identity.fingerprint().to_string();
        Ok(Box::new(QuicListener {
            endpoint,
            runtime: self.runtime.clone(),
            url: PeerUrl::from_addr("quic", bound, Some(&fingerprint)),
            handshakes: FuturesUnordered::new(),
        }))
    }

    fn connect(
        &self,
        url: &PeerUrl,
        framing: Framing,
    ) -> BoxFuture<'static, io::Result<Connection>> {
        let setup = (|| {
            let expected = pinned(url)?;
            let addr = url.socket_addr()?;
            let refused = Arc::new(SyncMutex::new(None));
            let cfg = self.client_config(verify::Pinned {
                expected,
                provider: self.provider.clone(),
                refused: refused.clone(),
            })?;
            Ok((expected, addr, refused, cfg))
        })();
        let client = setup
            .as_ref()
            .map_err(|e: &io::Error| io::Error::new(e.kind(), e.to_string()))
            .and_then(|(_, addr, _, _)| self.client(*addr));
        let remote = url.to_string();
        let runtime = self.runtime.clone();
        Box::pin(async move {
            let (expected, addr, refused, cfg) = setup?;
            let connecting = client?
                .connect_with(cfg, addr, identity::SERVER_NAME)
                .map_err(io::Error::other)?;
            match connecting.await {
                Ok(conn) => Ok(connection(conn, framing, remote, runtime)),
                Err(e) => match refused.lock().ok().and_then(|mut r| r.take()) {
                    Some(got) => Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        format!(
                            "refused: the certificate at {addr} has fingerprint {got}, not the \
                             pinned {expected}"
                        ),
                    )),
                    None => Err(connection_error(e)),
                },
            }
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        let endpoints = self.endpoints.lock().expect("not poisoned").clone();
        Box::pin(async move {
            futures::future::join_all(endpoints.iter().map(Endpoint::wait_idle)).await;
        })
    }
}

fn connection_error(e: ConnectionError) -> io::Error {
    let kind = match e {
        ConnectionError::TimedOut => io::ErrorKind::TimedOut,
        ConnectionError::ApplicationClosed(_) | ConnectionError::ConnectionClosed(_) => {
            io::ErrorKind::ConnectionAborted
        }
        ConnectionError::Reset => io::ErrorKind::ConnectionReset,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, e)
}

struct QuicListener {
    endpoint: Endpoint,
    runtime: Arc<dyn quinn::Runtime>,
    url: PeerUrl,
    handshakes: FuturesUnordered<BoxFuture<'static, Result<quinn::Connection, ConnectionError>>>,
}

impl Listener for QuicListener {
    fn url(&self) -> PeerUrl {
        self.url.clone()
    }

    /// Handshakes run side by side (a slow client holds up no other); the first to finish is
    /// the next connection.
    fn accept(&mut self, framing: Framing) -> BoxFuture<'_, io::Result<Connection>> {
        Box::pin(async move {
            loop {
                select_biased! {
                    done = self.handshakes.select_next_some() => match done {
                        Ok(conn) => {
                            let remote = format!("quic://{}", conn.remote_address());
                            return Ok(connection(conn, framing, remote, self.runtime.clone()));
                        }
                        Err(e) => debug!(error = %e, "QUIC handshake failed"),
                    },
                    incoming = self.endpoint.accept().fuse() => match incoming {
                        Some(incoming) if self.handshakes.len() < MAX_HANDSHAKES => {
                            match incoming.accept() {
                                Ok(connecting) => self.handshakes.push(Box::pin(connecting)),
                                Err(e) => debug!(error = %e, "QUIC connection refused"),
                            }
                        }
                        Some(incoming) => incoming.refuse(),
                        None => {
                            return Err(io::Error::new(
                                io::ErrorKind::NotConnected,
                                "the QUIC endpoint is closed",
                            ))
                        }
                    },
                }
            }
        })
    }
}

/// A connection's reader and writer.
///
/// Closing without losing frames: a QUIC close discards whatever the peer has not read yet, so
/// the side that closes first ([`FrameWrite::close`]) waits until the peer has acknowledged
/// every unit stream, then finishes its control stream and waits for the peer to close. The
/// peer's reader, at the end of that control stream with every other stream read, reports a
/// clean end; its own close then closes the connection at once. Either side gives up waiting
/// after [`CLOSE_GRACE`].
fn connection(
    conn: quinn::Connection,
    framing: Framing,
    remote: String,
    runtime: Arc<dyn quinn::Runtime>,
) -> Connection {
    let peer_done = Arc::new(AtomicBool::new(false));
    Connection {
        remote,
        reader: Box::new(QuicReader {
            conn: conn.clone(),
            framing,
            streams: FuturesUnordered::new(),
            peer_finished: false,
            peer_done: peer_done.clone(),
        }),
        writer: Arc::new(QuicWriter {
            conn,
            control: Mutex::new(None),
            units: SyncMutex::new(Units::default()),
            peer_done,
            runtime,
        }),
    }
}

/// One stream and the result of reading its next frame.
type StreamStep = (
    StreamReader<Zeroing<RecvStream>>,
    io::Result<Option<Incoming>>,
);

struct QuicReader {
    conn: quinn::Connection,
    framing: Framing,
    /// The next frame of every stream the peer has open (at most [`MAX_STREAMS`]).
    streams: FuturesUnordered<BoxFuture<'static, StreamStep>>,
    /// The peer finished its control stream: it is closing.
    peer_finished: bool,
    /// Everything the peer sent has been read (shared with the writer, which may then close).
    peer_done: Arc<AtomicBool>,
}

fn read_next(mut stream: StreamReader<Zeroing<RecvStream>>) -> BoxFuture<'static, StreamStep> {
    Box::pin(async move {
        let next = stream.next().await;
        (stream, next)
    })
}

impl QuicReader {
    /// The end of the connection: clean if the peer (or we) closed it, an error otherwise.
    fn ended(&self, e: io::Error) -> io::Result<Option<Incoming>> {
        match self.conn.close_reason() {
            Some(ConnectionError::ApplicationClosed(_) | ConnectionError::LocallyClosed) => {
                Ok(None)
            }
            Some(reason) => Err(connection_error(reason)),
            None => Err(e),
        }
    }

    fn read_stream(&mut self, s: RecvStream) {
        // The first stream the peer opens is its control stream; the others carry one TRANSFER.
        let frames = if s.id().index() == 0 {
            self.framing.reader()
        } else {
            self.framing.data_reader()
        };
        self.streams
            .push(read_next(StreamReader::new(Zeroing(s), frames)));
    }
}

impl FrameRead for QuicReader {
    fn next_frame(&mut self) -> BoxFuture<'_, io::Result<Option<Incoming>>> {
        Box::pin(async move {
            loop {
                if self.peer_finished && self.streams.is_empty() {
                    // The peer's unit streams were acknowledged before its control stream
                    // ended: any not yet taken is ready now.
                    match self.conn.accept_uni().now_or_never() {
                        Some(Ok(s)) => self.read_stream(s),
                        _ => {
                            self.peer_done.store(true, Ordering::Release);
                            return Ok(None);
                        }
                    }
                }
                select_biased! {
                    (stream, next) = self.streams.select_next_some() => match next {
                        Ok(Some(frame)) => {
                            self.streams.push(read_next(stream));
                            return Ok(Some(frame));
                        }
                        // The first stream the peer opens is its control stream.
                        Ok(None) => self.peer_finished |= stream.get_ref().0.id().index() == 0,
                        // A unit the peer stopped sending (we cancelled it).
                        Err(e) if e.kind() == io::ErrorKind::ConnectionReset
                            && self.conn.close_reason().is_none() => {}
                        Err(e) => return self.ended(e),
                    },
                    opened = self.conn.accept_uni().fuse() => match opened {
                        Ok(s) => self.read_stream(s),
                        Err(e) => return self.ended(io::Error::other(e)),
                    },
                }
            }
        })
    }
}

/// Unit streams recently finished, and cancels for units not yet written.
#[derive(Default)]
struct Units {
    finished: VecDeque<(u64, SendStream)>,
    cancelled: VecDeque<u64>,
}

impl Units {
    /// Whether `unit` was cancelled (forgetting the cancel).
    fn take_cancel(&mut self, unit: u64) -> bool {
        let at = self.cancelled.iter().position(|&u| u == unit);
        at.map(|i| self.cancelled.remove(i)).is_some()
    }
}

struct QuicWriter {
    conn: quinn::Connection,
    /// Our control stream, opened by the first control frame.
    control: Mutex<Option<SendStream>>,
    /// Unit streams finished but perhaps not yet received; at most [`RECENT_UNITS`]. Older ones
    /// were read by the peer: it grants a new stream only for one it has read.
    units: SyncMutex<Units>,
    peer_done: Arc<AtomicBool>,
    runtime: Arc<dyn quinn::Runtime>,
}

impl QuicWriter {
    async fn open(&self, priority: i32) -> io::Result<SendStream> {
        let s = self.conn.open_uni().await.map_err(connection_error)?;
        // Fails only on a stream already closed.
        let _ = s.set_priority(priority);
        Ok(s)
    }

    async fn write_unit(&self, unit: Option<u64>, mut frame: OutFrame) -> io::Result<()> {
        let cancelled = |units: &SyncMutex<Units>| {
            unit.is_some_and(|u| units.lock().expect("not poisoned").take_cancel(u))
        };
        if cancelled(&self.units) {
            return Ok(());
        }
        let mut s = self.open(DATA_PRIORITY).await?;
        s.write_all_chunks(&mut frame.parts)
            .await
            .map_err(io::Error::from)?;
        let _ = s.finish();
        if cancelled(&self.units) {
            let _ = s.reset(CANCELLED);
        } else if let Some(u) = unit {
            let mut units = self.units.lock().expect("not poisoned");
            if units.finished.len() == RECENT_UNITS {
                units.finished.pop_front();
            }
            units.finished.push_back((u, s));
        }
        Ok(())
    }

    /// Resolves after [`CLOSE_GRACE`] (on quinn's runtime's timer).
    fn grace(&self) -> impl std::future::Future<Output = ()> {
        let mut timer = self
            .runtime
            .new_timer(std::time::Instant::now() + CLOSE_GRACE);
        futures::future::poll_fn(move |cx| timer.as_mut().poll(cx))
    }
}

impl FrameWrite for QuicWriter {
    fn write(&self, mut frame: OutFrame) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(async move {
            if frame.class == Class::Data {
                return self.write_unit(frame.unit, frame).await;
            }
            let mut control = self.control.lock().await;
            let s = match &mut *control {
                Some(s) => s,
                none => none.insert(self.open(CONTROL_PRIORITY).await?),
            };
            s.write_all_chunks(&mut frame.parts)
                .await
                .map_err(io::Error::from)
        })
    }

    /// quinn sends what it holds as fast as congestion control allows: nothing to push.
    fn flush(&self) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn close(&self) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(async move {
            let close = async {
                let units = std::mem::take(&mut self.units.lock().expect("not poisoned").finished);
                futures::future::join_all(units.iter().map(|(_, s)| s.stopped())).await;
                let mut control = self.control.lock().await;
                let control = match control.take() {
                    Some(s) => s,
                    None => self.open(CONTROL_PRIORITY).await?,
                };
                let mut control = control;
                let _ = control.finish();
                let _ = control.stopped().await;
                if !self.peer_done.load(Ordering::Acquire) {
                    self.conn.closed().await;
                }
                Ok::<_, io::Error>(())
            };
            let grace = self.grace();
            let result =
                match futures::future::select(std::pin::pin!(close), std::pin::pin!(grace)).await {
                    futures::future::Either::Left((r, _)) => r,
                    futures::future::Either::Right(_) => Ok(()),
                };
            self.conn.close(CLOSED, b"done");
            result
        })
    }

    fn cancel(&self, unit: u64) {
        let mut units = self.units.lock().expect("not poisoned");
        match units.finished.iter().position(|(u, _)| *u == unit) {
            Some(i) => {
                if let Some((_, mut s)) = units.finished.remove(i) {
                    let _ = s.reset(CANCELLED);
                }
            }
            None => {
                if units.cancelled.len() == RECENT_UNITS {
                    units.cancelled.pop_front();
                }
                units.cancelled.push_back(unit);
            }
        }
    }
}
