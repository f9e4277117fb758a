//! The session loop, written once for every async runtime.
//!
//! A runtime's glue implements [`Runtime`] (spawn a task, sleep until an instant, connect,
//! accept, split a stream into `futures-io` halves) and calls [`run`]. Everything else — the
//! loop's state, dialling and redialling, effect dispatch, connection bookkeeping, the drain,
//! the per-connection reader and writer — is here, on runtime-neutral pieces only: `futures`
//! channels, [`select_biased!`](futures::select_biased), `futures-io` traits and
//! [`AbortHandle`]s.
//!
//! - Readers cut frames with [`FrameReader`] (the core's `decode_frame_limited`, under the
//!   per-kind limits of the file) and hand them to the loop over a bounded channel, so a slow loop pushes back
//!   on the socket.
//! - Writers get whole frames over a bounded channel per connection and report TRANSFERs once
//!   flushed to the socket ([`Session::on_unit_sent`]). The loop never waits on a writer: a
//!   connection whose queue is full is not reading and is closed.
//! - Unit verification and disk writes run inline in the loop (about 50 µs per 64 KiB unit).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::channel::{mpsc, oneshot};
use futures::future::{AbortHandle, Abortable, Aborted, FutureExt};
use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use futures::{pin_mut, select_biased, SinkExt, StreamExt};
use tierswarm_core::wire::FrameLimits;
use tierswarm_core::PeerId;
use tracing::{debug, info, warn};

use super::framing::{FrameReader, Incoming};
use super::session::{Effect, Role, Session, SessionEvent};

/// Frames queued per connection before it counts as not reading.
const WRITE_QUEUE: usize = 1024;
/// Connection attempts per dial, and redials of a peer that went away on its own.
const DIAL_ATTEMPTS: u32 = 5;
const REDIALS: u32 = 3;
/// How long a drain may take before the loop gives up on in-flight requests.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);
/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 64 * 1024;

/// What a runtime's glue provides: tasks, one kind of timer and TCP. Implemented by a unit type
/// per runtime (`tierswarm_tokio::Tokio`, `tierswarm_async_std::AsyncStd`); [`run`] does the
/// rest.
pub trait Runtime: 'static {
    /// A connected TCP stream.
    type Stream: Send + 'static;
    /// A bound TCP listener.
    type Listener: Send + Sync;
    /// The read half of a [`Stream`](Self::Stream).
    type Reader: AsyncRead + Unpin + Send + 'static;
    /// The write half of a [`Stream`](Self::Stream); closing it shuts the socket down for
    /// writing.
    type Writer: AsyncWrite + Unpin + Send + 'static;

    /// Runs `task` in the background (detached: [`run`] stops readers with an
    /// [`AbortHandle`], and writers end when their queue is dropped).
    fn spawn(task: impl Future<Output = ()> + Send + 'static);
    /// Resolves at `at` (at once if it has passed).
    fn sleep_until(at: Instant) -> impl Future<Output = ()> + Send;
    /// Connects to `addr` (one attempt).
    fn connect(addr: SocketAddr) -> impl Future<Output = io::Result<Self::Stream>> + Send;
    /// The next incoming connection.
    fn accept(
        listener: &Self::Listener,
    ) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send + '_;
    /// Sets `TCP_NODELAY` (best effort) and splits the stream into halves that can be used
    /// from two tasks.
    fn split(stream: Self::Stream) -> (Self::Reader, Self::Writer);
    /// Adopts a bound `std` listener (which lets callers bind synchronously, without a
    /// runtime). Call it where the runtime is current (inside one of its tasks, for tokio).
    fn listener(listener: std::net::TcpListener) -> io::Result<Self::Listener>;
}

/// Where to connect and what ends the run. `L` is the runtime's listener
/// ([`Runtime::Listener`]).
#[derive(Debug)]
pub struct RunConfig<L> {
    /// Accept peers here.
    pub listener: Option<L>,
    /// Connect to each of these.
    pub peers: Vec<SocketAddr>,
    /// Return [`Outcome::Complete`] as soon as the download is complete (`fetch`); otherwise
    /// keep serving until shut down.
    pub stop_when_complete: bool,
}

impl<L> Default for RunConfig<L> {
    fn default() -> Self {
        RunConfig {
            listener: None,
            peers: Vec::new(),
            stop_when_complete: false,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The file is complete, persisted, and (for a download) hashes to the content root.
    Complete,
    /// Shut down and drained (state persisted).
    Drained,
    /// Shut down, but in-flight requests did not settle in time (state persisted up to the
    /// last store write).
    Interrupted,
    /// It could not go on: the reason, on one line.
    Failed(String),
}

enum Msg<S> {
    Dialed(SocketAddr, io::Result<S>),
    Frame(PeerId, Incoming),
    Closed(PeerId, String),
    Sent(PeerId, Vec<u64>),
}

/// Bytes to write, and the unit they carry if they are a TRANSFER.
type Out = (Bytes, Option<u64>);

struct Conn {
    tx: mpsc::Sender<Out>,
    reader: AbortHandle,
    dialed: Option<SocketAddr>,
}

impl Conn {
    /// Stops reading; dropping the queue lets the writer flush what is queued, then shut the
    /// socket down.
    fn close(self) {
        self.reader.abort();
    }
}

/// The loop's state besides the session: connections, dials in progress, redial budgets.
struct Links<R: Runtime> {
    tx: mpsc::Sender<Msg<R::Stream>>,
    conns: HashMap<PeerId, Conn>,
    redials: HashMap<SocketAddr, u32>,
    dialing: usize,
    limits: FrameLimits,
    keep_raw: bool,
}

impl<R: Runtime> Links<R> {
    fn dial(&mut self, addr: SocketAddr, delay: Duration) {
        self.dialing += 1;
        R::spawn(dial::<R>(addr, delay, self.tx.clone()));
    }

    fn close(&mut self, peer: PeerId) {
        if let Some(c) = self.conns.remove(&peer) {
            c.close();
        }
    }

    fn attach(
        &mut self,
        session: &mut Session,
        stream: R::Stream,
        dialed: Option<SocketAddr>,
    ) -> PeerId {
        let (rd, wr) = R::split(stream);
        let peer = session.connected();
        let (out_tx, out_rx) = mpsc::channel(WRITE_QUEUE);
        R::spawn(writer(wr, out_rx, peer, self.tx.clone()));
        let (reader, registration) = AbortHandle::new_pair();
        let frames = FrameReader::new(self.limits, self.keep_raw);
        let task = Abortable::new(read_frames(rd, peer, frames, self.tx.clone()), registration);
        R::spawn(task.map(drop));
        let conn = Conn {
            tx: out_tx,
            reader,
            dialed,
        };
        self.conns.insert(peer, conn);
        peer
    }
}

/// Runs `session` until it completes (with [`RunConfig::stop_when_complete`]), `shutdown`
/// resolves (then it drains: no new requests, in-flight ones settle, state is persisted), or it
/// cannot go on. `on_event` sees every [`SessionEvent`] as it happens. Returns the session (for
/// its statistics) and how the run ended.
///
/// Dropping the returned future stops everything at once (a hard stop: nothing more is
/// persisted).
pub async fn run<R: Runtime>(
    mut session: Session,
    cfg: RunConfig<R::Listener>,
    shutdown: impl Future<Output = ()>,
    mut on_event: impl FnMut(&SessionEvent),
) -> (Session, Outcome) {
    let (tx, mut rx) = mpsc::channel::<Msg<R::Stream>>(256);
    let mut links = Links::<R> {
        tx,
        conns: HashMap::new(),
        redials: HashMap::new(),
        dialing: 0,
        limits: session.frame_limits(),
        keep_raw: session.is_recording(),
    };
    for &addr in &cfg.peers {
        links.dial(addr, Duration::ZERO);
    }
    let shutdown = shutdown.fuse();
    pin_mut!(shutdown);
    let mut drain_until: Option<Instant> = None;
    let outcome = 'run: loop {
        while let Some(effect) = session.poll_effect() {
            match effect {
                Effect::Send { peer, bytes, unit } => {
                    let full = links
                        .conns
                        .get_mut(&peer)
                        .is_some_and(|c| c.tx.try_send((bytes, unit)).is_err());
                    if full {
                        warn!(%peer, "send queue full: closing");
                        links.close(peer);
                        session.on_disconnected(peer);
                    }
                }
                Effect::Close { peer, reason } => {
                    info!(%peer, %reason, "disconnecting");
                    links.close(peer);
                }
                Effect::Event(event) => {
                    on_event(&event);
                    match event {
                        SessionEvent::Complete if cfg.stop_when_complete => {
                            break 'run Outcome::Complete
                        }
                        SessionEvent::Drained => break 'run Outcome::Drained,
                        SessionEvent::Fatal(reason) => break 'run Outcome::Failed(reason),
                        _ => {}
                    }
                }
            }
        }
        if cfg.stop_when_complete && session.is_complete() {
            break Outcome::Complete;
        }
        if drain_until.is_none()
            && links.conns.is_empty()
            && links.dialing == 0
            && cfg.listener.is_none()
        {
            break Outcome::Failed("no peer is reachable any more".into());
        }
        let timer = at::<R>(session.next_deadline()).fuse();
        let drain_over = at::<R>(drain_until).fuse();
        let accepted = accept::<R>(cfg.listener.as_ref()).fuse();
        pin_mut!(timer, drain_over, accepted);
        select_biased! {
            // Fused: once resolved it never fires again.
            () = shutdown => {
                info!("shutting down: draining");
                drain_until = Some(Instant::now() + DRAIN_LIMIT);
                session.drain();
            }
            msg = rx.next() => match msg {
                Some(Msg::Frame(peer, incoming)) => session.on_frame(peer, incoming),
                Some(Msg::Sent(peer, units)) => {
                    units.into_iter().for_each(|u| session.on_unit_sent(peer, u));
                }
                Some(Msg::Closed(peer, reason)) => {
                    if let Some(c) = links.conns.remove(&peer) {
                        debug!(%peer, %reason, "connection closed");
                        let dialed = c.dialed;
                        c.close();
                        session.on_disconnected(peer);
                        if let Some(addr) = dialed {
                            let n = links.redials.entry(addr).or_default();
                            if *n < REDIALS && drain_until.is_none() && !session.is_complete() {
                                *n += 1;
                                links.dial(addr, Duration::from_millis(500));
                            }
                        }
                    }
                }
                Some(Msg::Dialed(addr, result)) => {
                    links.dialing -= 1;
                    match result {
                        Ok(stream) => {
                            let peer = links.attach(&mut session, stream, Some(addr));
                            info!(%peer, %addr, "connected");
                        }
                        Err(e) => warn!(%addr, error = %e, "cannot connect"),
                    }
                }
                // The loop holds a sender: the channel never ends.
                None => {}
            },
            accepted = accepted => match accepted {
                Ok((stream, addr)) => {
                    let peer = links.attach(&mut session, stream, None);
                    info!(%peer, %addr, "accepted");
                }
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    R::sleep_until(Instant::now() + Duration::from_millis(50)).await;
                }
            },
            () = timer => session.on_timeout(),
            () = drain_over => break Outcome::Interrupted,
        }
    };
    for (_, c) in links.conns.drain() {
        c.close();
    }
    if let Err(e) = session.flush() {
        warn!(error = %e, "flush failed");
    }
    // Complete means the file on disk hashes to the root, not only that every unit verified.
    let outcome = match outcome {
        Outcome::Complete if session.role() == Role::Leecher => match session.verify_file() {
            Ok(()) => Outcome::Complete,
            Err(reason) => Outcome::Failed(reason),
        },
        o => o,
    };
    (session, outcome)
}

/// A [`run`] spawned on a runtime with [`spawn`].
#[derive(Debug)]
pub struct RunHandle {
    done: oneshot::Receiver<Result<(Session, Outcome), Aborted>>,
    abort: AbortHandle,
}

impl RunHandle {
    /// The session and how its run ended; `None` if it was [killed](Self::kill) or its runtime
    /// went away first.
    pub async fn join(self) -> Option<(Session, Outcome)> {
        self.done.await.ok()?.ok()
    }

    /// Hard stop, as a crash: the run is dropped wherever it is (no drain, no final persist).
    /// Returns once it is gone; `false` if it had ended on its own before.
    pub async fn kill(self) -> bool {
        self.abort.abort();
        matches!(self.done.await, Ok(Err(Aborted)) | Err(_))
    }
}

/// [`run`] as a task of `R`, with a `std` listener (bound without any runtime; adopted with
/// [`Runtime::listener`] inside the task, and a failure to adopt it ends the run as
/// [`Outcome::Failed`]). The task runs whether or not the handle is awaited.
pub fn spawn<R: Runtime>(
    session: Session,
    cfg: RunConfig<std::net::TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_event: impl FnMut(&SessionEvent) + Send + 'static,
) -> RunHandle {
    let (tx, done) = oneshot::channel();
    let (abort, registration) = AbortHandle::new_pair();
    let task = async move {
        let RunConfig {
            listener,
            peers,
            stop_when_complete,
        } = cfg;
        let listener = match listener.map(R::listener).transpose() {
            Ok(l) => l,
            Err(e) => return (session, Outcome::Failed(format!("cannot listen: {e}"))),
        };
        let cfg = RunConfig {
            listener,
            peers,
            stop_when_complete,
        };
        run::<R>(session, cfg, shutdown, on_event).await
    };
    R::spawn(Abortable::new(task, registration).map(move |result| drop(tx.send(result))));
    RunHandle { done, abort }
}

/// Resolves at `deadline`; never without one.
async fn at<R: Runtime>(deadline: Option<Instant>) {
    match deadline {
        Some(t) => R::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

async fn accept<R: Runtime>(listener: Option<&R::Listener>) -> io::Result<(R::Stream, SocketAddr)> {
    match listener {
        Some(l) => R::accept(l).await,
        None => std::future::pending().await,
    }
}

async fn dial<R: Runtime>(addr: SocketAddr, delay: Duration, mut tx: mpsc::Sender<Msg<R::Stream>>) {
    R::sleep_until(Instant::now() + delay).await;
    let mut wait = Duration::from_millis(100);
    let mut result = R::connect(addr).await;
    for _ in 1..DIAL_ATTEMPTS {
        if result.is_ok() {
            break;
        }
        R::sleep_until(Instant::now() + wait).await;
        wait *= 2;
        result = R::connect(addr).await;
    }
    let _ = tx.send(Msg::Dialed(addr, result)).await;
}

/// Reads up to [`READ_CHUNK`] more bytes onto the end of `buf`; `Ok(0)` at end of stream.
async fn read_more(rd: &mut (impl AsyncRead + Unpin), buf: &mut BytesMut) -> io::Result<usize> {
    let start = buf.len();
    buf.resize(start + READ_CHUNK, 0);
    let result = rd.read(&mut buf[start..]).await;
    buf.truncate(start + result.as_ref().map_or(0, |n| *n));
    result
}

async fn read_frames<S>(
    mut rd: impl AsyncRead + Unpin,
    peer: PeerId,
    mut frames: FrameReader,
    mut tx: mpsc::Sender<Msg<S>>,
) {
    let reason = loop {
        match frames.next_frame() {
            Ok(Some(incoming)) => {
                if tx.send(Msg::Frame(peer, incoming)).await.is_err() {
                    return;
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => break e.to_string(),
        }
        match read_more(&mut rd, frames.buffer()).await {
            Ok(0) => break "closed by the peer".to_string(),
            Ok(_) => {}
            Err(e) => break e.to_string(),
        }
    };
    let _ = tx.send(Msg::Closed(peer, reason)).await;
}

async fn writer<S>(
    wr: impl AsyncWrite + Unpin,
    mut rx: mpsc::Receiver<Out>,
    peer: PeerId,
    mut tx: mpsc::Sender<Msg<S>>,
) {
    let mut w = BufWriter::with_capacity(128 * 1024, wr);
    let mut sent = Vec::new();
    while let Some(first) = rx.next().await {
        let mut next = Some(first);
        while let Some((bytes, unit)) = next {
            if let Err(e) = w.write_all(&bytes).await {
                let _ = tx.send(Msg::Closed(peer, e.to_string())).await;
                return;
            }
            sent.extend(unit);
            next = rx.try_recv().ok();
        }
        if let Err(e) = w.flush().await {
            let _ = tx.send(Msg::Closed(peer, e.to_string())).await;
            return;
        }
        if !sent.is_empty()
            && tx
                .send(Msg::Sent(peer, std::mem::take(&mut sent)))
                .await
                .is_err()
        {
            return;
        }
    }
    let _ = w.close().await;
}
