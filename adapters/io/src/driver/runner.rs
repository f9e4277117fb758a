//! The session loop, written once for every async runtime and every transport.
//!
//! Two seams meet here. A runtime's glue implements [`Runtime`] (spawn a task, sleep until an
//! instant: nothing about sockets); a node's [`Transports`] (TCP, QUIC, in-memory, ...) listen,
//! dial and carry frames. Everything else — the loop's state, dialling and redialling, effect
//! dispatch, connection bookkeeping, the drain, the per-connection reader and writer tasks — is
//! here, on runtime-neutral pieces only: `futures` channels,
//! [`select_biased!`](futures::select_biased) and [`AbortHandle`]s.
//!
//! - One task per listener accepts connections; one task per dial connects (with retries).
//! - A reader task per connection takes whole frames from its [`FrameRead`] (cut by
//!   `FrameReader` under the per-kind limits of the file, checked before a body is buffered)
//!   and hands them to the loop over a bounded channel, so a slow loop pushes back on the
//!   connection.
//! - A writer task per connection runs two lanes over its [`FrameWrite`]: control (and
//!   availability) frames and data (TRANSFER) frames, each from its own bounded queue, so a
//!   control frame never waits behind queued units in the driver; how far the classes stay
//!   apart on the wire is the transport's (QUIC: separate streams; TCP: frame boundaries).
//!   TRANSFERs are reported once written ([`Session::on_unit_sent`]). The loop never waits on a
//!   writer.
//! - Backpressure goes to the core, not over a cliff: a connection with more than
//!   [`CONGESTED_QUEUE`] frames queued, or a write pending for [`CONGESTED_AFTER`], is reported
//!   congested ([`Session::on_congested`]: no new unit for it, and its units in flight leave
//!   the shared upload slots), and drained once its queue is written down to
//!   [`DRAINED_QUEUE`].
//! - Deadlines: a write (or flush) that does not complete within
//!   [`Limits::write_stall`](tierswarm_core::node::Limits::write_stall) drops the peer
//!   ([`DropReason::WriteStalled`]), as does a lane queue overflowing its memory bound; a
//!   frame begun and unfinished for
//!   [`Limits::frame_timeout`](tierswarm_core::node::Limits::frame_timeout) drops it
//!   ([`DropReason::FrameTimeout`]); a frame the reader refuses drops it
//!   ([`DropReason::BadFrame`]). A connection closed for any reason stops reading at once and
//!   its writer gets [`CLOSE_LIMIT`] to flush before it is stopped wherever it is: no task or
//!   socket outlives its peer by more than that.
//! - Accepting: a connection beyond
//!   [`Limits::max_peers`](tierswarm_core::node::Limits::max_peers) (unconfirmed ones count) is
//!   closed by the accept task itself, before any task, buffer of the loop or handshake is
//!   spent on it; a failing accept (out of descriptors) is logged once and retried after
//!   [`ACCEPT_BACKOFF`].
//! - A CANCEL from a peer is passed to its writer ([`FrameWrite::cancel`]) before the session
//!   sees it, so a transport that can stop an in-flight unit does.
//! - Received units are verified and written on worker threads (about 50 µs per 64 KiB unit),
//!   at most [`SessionOptions::max_verifying`](super::SessionOptions::max_verifying) at a time:
//!   past that the loop verifies the unit itself, so a starved CPU slows the reading of frames
//!   rather than piling units up in memory.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::channel::{mpsc, oneshot};
use futures::future::{select, AbortHandle, Abortable, Aborted, Either, FutureExt};
use futures::{pin_mut, select_biased, SinkExt, StreamExt};
use tierswarm_core::node::DropReason;
use tierswarm_core::wire::Message;
use tierswarm_core::PeerId;
use tracing::{debug, info, warn};

use super::framing::Incoming;
use super::session::{Effect, Role, Session, SessionEvent};
use super::workers::{Verified, Workers};
use crate::transport::{
    Class, Connection, FrameRead, FrameWrite, Framing, Listener, OutFrame, PeerUrl, Transports,
};

/// Frames queued per connection and lane at most: a bound on memory, reached only by a peer
/// that keeps asking and does not read the answers (it is dropped as stalled).
const WRITE_QUEUE: usize = 1024;
/// Frames queued on a connection (both lanes) above which it is reported congested...
pub const CONGESTED_QUEUE: usize = 64;
/// ...and at or below which, once a batch is written, it is reported drained.
pub const DRAINED_QUEUE: usize = 8;
/// A write pending this long (at most half of `write_stall`) reports its connection congested.
pub const CONGESTED_AFTER: Duration = Duration::from_secs(1);
/// Connection attempts per dial, and redials of a peer that went away on its own.
const DIAL_ATTEMPTS: u32 = 5;
const REDIALS: u32 = 3;
/// How long a drain may take before the loop gives up on in-flight requests.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);
/// How long a closed connection's writer may take to flush and say goodbye before it is
/// stopped wherever it is (at the end of a run too).
pub const CLOSE_LIMIT: Duration = Duration::from_secs(1);
/// Pause after a failed accept (out of descriptors, say) before the next.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The runtime seam: what [`run`] needs of an async runtime. Implemented by a unit type per
/// runtime (`tierswarm_tokio::Tokio`, `tierswarm_async_std::AsyncStd`, `tierswarm_smol::Smol`);
/// sockets are the [`Transports`]' business, not the runtime's.
pub trait Runtime: 'static {
    /// Runs `task` in the background, detached ([`run`] stops the tasks it spawns with
    /// [`AbortHandle`]s or by closing their channels).
    fn spawn(task: impl Future<Output = ()> + Send + 'static);
    /// Resolves at `at` (at once if it has passed).
    fn sleep_until(at: Instant) -> impl Future<Output = ()> + Send;
}

/// Where to connect and what ends the run.
pub struct RunConfig {
    /// How this node reaches peers: dials go to the transport of each URL's scheme.
    pub transports: Transports,
    /// Accept peers on each of these (bound with [`Transports::listen`]).
    pub listeners: Vec<Box<dyn Listener>>,
    /// Connect to each of these.
    pub peers: Vec<PeerUrl>,
    /// Return [`Outcome::Complete`] as soon as the download is complete (`fetch`); otherwise
    /// keep serving until shut down.
    pub stop_when_complete: bool,
}

impl std::fmt::Debug for RunConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunConfig")
            .field("transports", &self.transports)
            .field(
                "listeners",
                &self.listeners.iter().map(|l| l.url()).collect::<Vec<_>>(),
            )
            .field("peers", &self.peers)
            .field("stop_when_complete", &self.stop_when_complete)
            .finish()
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The file is complete, verified and persisted.
    Complete,
    /// Shut down and drained (state persisted).
    Drained,
    /// Shut down, but in-flight requests did not settle in time (state persisted up to the
    /// last store write).
    Interrupted,
    /// It could not go on: the reason, on one line.
    Failed(String),
}

enum Msg {
    Dialed(PeerUrl, io::Result<Connection>),
    Accepted(Connection),
    Frame(PeerId, Incoming),
    Closed(PeerId, String),
    /// The driver gave up on the connection (a deadline passed, a frame was refused).
    Dropped(PeerId, DropReason),
    /// A batch was written: the TRANSFERs in it (perhaps none, after a slow write or while
    /// the connection is congested).
    Sent(PeerId, Vec<u64>),
    Verified(Verified),
    /// A write has been pending for [`CONGESTED_AFTER`].
    Slow(PeerId),
}

/// The writer lanes of a connection: control (and availability), then data.
const CONTROL: usize = 0;
const DATA: usize = 1;

struct Conn {
    lanes: [mpsc::Sender<OutFrame>; 2],
    writer: Arc<dyn FrameWrite>,
    reader: AbortHandle,
    /// Stops the writer task where it is (its lanes are otherwise left to drain).
    stop_writer: AbortHandle,
    /// Resolves once the writer task has ended.
    written: oneshot::Receiver<()>,
    dialed: Option<PeerUrl>,
    /// The peer id from the remote's handshake, once read.
    remote_id: Option<String>,
    /// What the loop has queued on the connection, shared with its writer.
    backlog: Arc<Backlog>,
}

/// A connection's write backlog, shared by the loop and the connection's writer task.
#[derive(Debug, Default)]
struct Backlog {
    /// Frames handed to the lanes and not yet written.
    queued: AtomicUsize,
    /// Reported congested to the session. While it is, the writer reports every batch it
    /// writes, units or not: a connection made congested by a burst of control frames (an
    /// endgame's cancels and rejects) is sent no unit, so a report of units written alone
    /// would never come and the connection would stay congested, its requesters unserved,
    /// until it closed.
    congested: AtomicBool,
}

impl Conn {
    /// Stops reading; closing the lanes lets the writer flush what is queued, then close the
    /// connection. Returns what ends the writer at once, and what resolves when it has ended.
    fn stop_reading(self) -> (AbortHandle, oneshot::Receiver<()>) {
        self.reader.abort();
        (self.stop_writer, self.written)
    }

    /// Stops reading, and gives the writer [`CLOSE_LIMIT`] to flush and close the connection
    /// before it is stopped where it is (a writer stuck on a peer that does not read).
    fn close<R: Runtime>(self) {
        let (stop, written) = self.stop_reading();
        R::spawn(async move {
            let limit = R::sleep_until(Instant::now() + CLOSE_LIMIT);
            select(written, pin!(limit)).await;
            stop.abort();
        });
    }
}

/// The socket-level limits the driver enforces (from the session's
/// [`Limits`](tierswarm_core::node::Limits)).
#[derive(Debug, Clone, Copy)]
struct Deadlines {
    write_stall: Duration,
    frame_timeout: Duration,
}

/// The loop's state besides the session: connections, dials in progress, redial budgets.
struct Links<R: Runtime> {
    tx: mpsc::Sender<Msg>,
    transports: Transports,
    conns: HashMap<PeerId, Conn>,
    redials: HashMap<PeerUrl, u32>,
    dialing: usize,
    /// Why the latest dial failed (the failure that ends a run with nobody left says it).
    dial_error: Option<String>,
    framing: Framing,
    deadlines: Deadlines,
    /// Connections open (accepted or dialled), shared with the accept tasks, which refuse
    /// connections beyond the peer limit.
    live: Arc<AtomicUsize>,
    _runtime: std::marker::PhantomData<fn() -> R>,
}

impl<R: Runtime> Links<R> {
    fn dial(&mut self, url: PeerUrl, delay: Duration) {
        self.dialing += 1;
        let transports = self.transports.clone();
        R::spawn(dial::<R>(
            transports,
            url,
            self.framing,
            delay,
            self.tx.clone(),
        ));
    }

    /// Takes `peer`'s connection out of the loop's books.
    fn remove(&mut self, peer: PeerId) -> Option<Conn> {
        let c = self.conns.remove(&peer)?;
        self.live.fetch_sub(1, Ordering::AcqRel);
        Some(c)
    }

    fn close(&mut self, peer: PeerId) {
        if let Some(c) = self.remove(peer) {
            c.close::<R>();
        }
    }

    /// Queues `frame` on `peer`'s `lane`; false if the lane is full (the peer does not read).
    /// Reports the connection congested when its queue passes [`CONGESTED_QUEUE`].
    fn enqueue(
        &mut self,
        session: &mut Session,
        peer: PeerId,
        lane: usize,
        frame: OutFrame,
    ) -> bool {
        let Some(c) = self.conns.get_mut(&peer) else {
            return true;
        };
        // Counted before it is queued: the writer may have written it before `try_send` returns.
        let queued = c.backlog.queued.fetch_add(1, Ordering::AcqRel) + 1;
        // Marked before the frame reaches the writer: a writer that drains the queue at once
        // then sees the mark and reports the batch, so the drain is never missed.
        let newly = queued > CONGESTED_QUEUE && !c.backlog.congested.swap(true, Ordering::AcqRel);
        if c.lanes[lane].try_send(frame).is_err() {
            c.backlog.queued.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        if newly {
            session.on_congested(peer, true);
        }
        true
    }

    /// A write on `peer`'s connection has been pending a while: congested.
    fn slow(&mut self, session: &mut Session, peer: PeerId) {
        if let Some(c) = self.conns.get(&peer) {
            if !c.backlog.congested.swap(true, Ordering::AcqRel) {
                session.on_congested(peer, true);
            }
        }
    }

    /// A batch on `peer`'s connection was written: drained once its queue is short again.
    fn written(&mut self, session: &mut Session, peer: PeerId) {
        if let Some(c) = self.conns.get(&peer) {
            let b = &c.backlog;
            if b.congested.load(Ordering::Acquire)
                && b.queued.load(Ordering::Acquire) <= DRAINED_QUEUE
            {
                b.congested.store(false, Ordering::Release);
                session.on_congested(peer, false);
            }
        }
    }

    fn attach(
        &mut self,
        session: &mut Session,
        conn: Connection,
        dialed: Option<PeerUrl>,
    ) -> PeerId {
        let Connection { reader, writer, .. } = conn;
        let peer = session.connected();
        let (control_tx, control_rx) = mpsc::channel(WRITE_QUEUE);
        let (data_tx, data_rx) = mpsc::channel(WRITE_QUEUE);
        let (done, written) = oneshot::channel();
        let (stop_writer, registration) = AbortHandle::new_pair();
        let backlog = Arc::new(Backlog::default());
        let lanes = write_lanes::<R>(
            writer.clone(),
            [control_rx, data_rx],
            peer,
            self.tx.clone(),
            backlog.clone(),
            self.deadlines.write_stall,
        );
        R::spawn(Abortable::new(lanes, registration).map(move |_| drop(done)));
        let (reader_handle, registration) = AbortHandle::new_pair();
        let reading = read_frames::<R>(reader, peer, self.tx.clone(), self.deadlines.frame_timeout);
        R::spawn(Abortable::new(reading, registration).map(drop));
        let conn = Conn {
            lanes: [control_tx, data_tx],
            writer,
            reader: reader_handle,
            stop_writer,
            written,
            dialed,
            remote_id: None,
            backlog,
        };
        self.conns.insert(peer, conn);
        peer
    }

    /// Notes the peer id of `peer`'s handshake; if another connection already carries that
    /// remote (two nodes that dialled each other), returns the one of the two to close.
    fn duplicate(&mut self, peer: PeerId, remote_id: &str, ours: &str) -> Option<PeerId> {
        let dialed = self.conns.get(&peer)?.dialed.is_some();
        let other = self
            .conns
            .iter()
            .find(|(p, c)| **p != peer && c.remote_id.as_deref() == Some(remote_id))
            .map(|(p, c)| (*p, c.dialed.is_some()));
        if let Some(c) = self.conns.get_mut(&peer) {
            c.remote_id = Some(remote_id.to_string());
        }
        let (other, other_dialed) = other?;
        Some(if keep_existing(ours, remote_id, other_dialed, dialed) {
            peer
        } else {
            other
        })
    }

    /// Whether another connection than `peer` carries the same remote.
    fn still_linked(&self, remote_id: Option<&str>) -> bool {
        remote_id.is_some_and(|id| {
            self.conns
                .values()
                .any(|c| c.remote_id.as_deref() == Some(id))
        })
    }
}

/// Of two connections between the same two nodes, whether to keep the one that handshook
/// first (`existing`) rather than the one just handshaken (`new`); each is described by whether
/// we dialled it. Both ends reach the same answer without talking: when the two were dialled
/// from opposite ends, the one dialled by the node with the smaller peer id stays; otherwise
/// (a redial, say) the older one does.
fn keep_existing(ours: &str, theirs: &str, existing_dialed: bool, new_dialed: bool) -> bool {
    if existing_dialed == new_dialed || ours == theirs {
        return true;
    }
    // We keep the one we dialled iff our id is the smaller.
    existing_dialed == (ours < theirs)
}

/// Runs `session` until it completes (with [`RunConfig::stop_when_complete`]), `shutdown`
/// resolves (then it drains: no new requests, in-flight ones settle, state is persisted), or it
/// cannot go on. `on_event` sees every [`SessionEvent`] as it happens. Returns the session (for
/// its statistics) and how the run ended, once its connections are closed (they get a moment to
/// flush and say goodbye).
///
/// Dropping the returned future stops everything at once (a hard stop: nothing more is
/// persisted).
pub async fn run<R: Runtime>(
    mut session: Session,
    cfg: RunConfig,
    shutdown: impl Future<Output = ()>,
    mut on_event: impl FnMut(&SessionEvent),
) -> (Session, Outcome) {
    let (tx, mut rx) = mpsc::channel::<Msg>(256);
    let framing = Framing {
        limits: session.frame_limits(),
        keep_raw: session.is_recording(),
    };
    let RunConfig {
        transports,
        listeners,
        peers,
        stop_when_complete,
    } = cfg;
    let listening = !listeners.is_empty();
    // Received units are verified and written on worker threads; without them, on the loop.
    let workers = match session.max_verifying() {
        0 => None,
        _ => match Workers::new() {
            Ok(w) => Some(w),
            Err(e) => {
                warn!(error = %e, "no worker threads: verifying on the loop");
                None
            }
        },
    };
    session.verify_off_loop(workers.is_some());
    let limits = session.limits();
    let deadlines = Deadlines {
        write_stall: limits.write_stall,
        frame_timeout: limits.frame_timeout,
    };
    let max_peers = limits.max_peers;
    let live = Arc::new(AtomicUsize::new(0));
    let accepting: Vec<AbortHandle> = listeners
        .into_iter()
        .map(|l| {
            let (handle, registration) = AbortHandle::new_pair();
            let task = accept::<R>(l, framing, tx.clone(), live.clone(), max_peers);
            R::spawn(Abortable::new(task, registration).map(drop));
            handle
        })
        .collect();
    let mut links = Links::<R> {
        tx,
        transports,
        conns: HashMap::new(),
        redials: HashMap::new(),
        dialing: 0,
        dial_error: None,
        framing,
        deadlines,
        live,
        _runtime: std::marker::PhantomData,
    };
    for url in peers {
        links.dial(url, Duration::ZERO);
    }
    let shutdown = shutdown.fuse();
    pin_mut!(shutdown);
    let mut drain_until: Option<Instant> = None;
    // Units with the workers now, and at most (`SessionOptions::max_verifying`).
    let mut verifying = 0usize;
    let max_verifying = session.max_verifying();
    let outcome = 'run: loop {
        while let Some(effect) = session.poll_effect() {
            match effect {
                Effect::Send { peer, parts, unit } => {
                    let (lane, class) = match unit {
                        Some(_) => (DATA, Class::Data),
                        None => (CONTROL, Class::Control),
                    };
                    let frame = OutFrame {
                        parts: parts.into_iter().filter(|p| !p.is_empty()).collect(),
                        class,
                        unit,
                    };
                    if !links.enqueue(&mut session, peer, lane, frame) {
                        warn!(%peer, "send queue full: the peer does not read");
                        links.close(peer);
                        session.on_dropped(peer, DropReason::WriteStalled);
                    }
                }
                Effect::Close { peer, reason } => {
                    info!(%peer, %reason, "disconnecting");
                    links.close(peer);
                }
                Effect::Verify(job) => match &workers {
                    Some(w) if verifying < max_verifying => {
                        verifying += 1;
                        let mut tx = links.tx.clone();
                        w.submit(job, move |v| {
                            // The loop is gone when this fails: the unit is fetched again.
                            let _ = futures::executor::block_on(tx.send(Msg::Verified(v)));
                        });
                    }
                    _ => session.on_verified(job.run()),
                },
                Effect::Event(event) => {
                    on_event(&event);
                    match event {
                        SessionEvent::Complete if stop_when_complete => {
                            break 'run Outcome::Complete
                        }
                        SessionEvent::Drained => break 'run Outcome::Drained,
                        SessionEvent::Fatal(reason) => break 'run Outcome::Failed(reason),
                        _ => {}
                    }
                }
            }
        }
        if stop_when_complete && session.is_complete() {
            break Outcome::Complete;
        }
        if drain_until.is_none() && links.conns.is_empty() && links.dialing == 0 && !listening {
            let reason = match &links.dial_error {
                Some(e) => format!("no peer is reachable any more (last: {e})"),
                None => "no peer is reachable any more".to_string(),
            };
            break Outcome::Failed(reason);
        }
        let timer = at::<R>(session.next_deadline()).fuse();
        let drain_over = at::<R>(drain_until).fuse();
        pin_mut!(timer, drain_over);
        select_biased! {
            // Fused: once resolved it never fires again.
            () = shutdown => {
                info!("shutting down: draining");
                drain_until = Some(Instant::now() + DRAIN_LIMIT);
                session.drain();
            }
            msg = rx.next() => match msg {
                Some(Msg::Frame(peer, incoming)) => {
                    if let Message::Cancel { unit } = &incoming.frame.msg {
                        if let Some(c) = links.conns.get(&peer) {
                            c.writer.cancel(*unit);
                        }
                    }
                    let mut feed = true;
                    if let Message::Handshake { peer_id, .. } = &incoming.frame.msg {
                        let ours = &session.node().config().peer_id;
                        if let Some(dup) = links.duplicate(peer, peer_id, ours) {
                            info!(%dup, remote = %peer_id, "second connection to a peer: closing");
                            links.close(dup);
                            session.on_disconnected(dup);
                            feed = dup != peer;
                        }
                    }
                    if feed {
                        session.on_frame(peer, incoming);
                    }
                }
                Some(Msg::Sent(peer, units)) => {
                    units.into_iter().for_each(|u| session.on_unit_sent(peer, u));
                    links.written(&mut session, peer);
                }
                Some(Msg::Slow(peer)) => links.slow(&mut session, peer),
                Some(Msg::Dropped(peer, reason)) => {
                    if let Some(c) = links.remove(peer) {
                        warn!(%peer, ?reason, "dropping");
                        c.close::<R>();
                        session.on_dropped(peer, reason);
                    }
                }
                Some(Msg::Verified(v)) => {
                    verifying = verifying.saturating_sub(1);
                    session.on_verified(v)
                }
                Some(Msg::Closed(peer, reason)) => {
                    if let Some(c) = links.remove(peer) {
                        debug!(%peer, %reason, "connection closed");
                        let dialed = c.dialed.clone();
                        let remote_id = c.remote_id.clone();
                        c.close::<R>();
                        session.on_disconnected(peer);
                        // The remote closed its copy of a doubled connection: we still reach it.
                        let dialed = dialed.filter(|_| !links.still_linked(remote_id.as_deref()));
                        if let Some(url) = dialed {
                            let n = links.redials.entry(url.clone()).or_default();
                            if *n < REDIALS && drain_until.is_none() && !session.is_complete() {
                                *n += 1;
                                links.dial(url, Duration::from_millis(500));
                            }
                        }
                    }
                }
                Some(Msg::Dialed(url, result)) => {
                    links.dialing -= 1;
                    match result {
                        Ok(conn) => {
                            links.live.fetch_add(1, Ordering::AcqRel);
                            let peer = links.attach(&mut session, conn, Some(url.clone()));
                            info!(%peer, %url, "connected");
                        }
                        Err(e) => {
                            warn!(%url, error = %e, "cannot connect");
                            links.dial_error = Some(format!("{url}: {e}"));
                        }
                    }
                }
                // Counted in `live` by the accept task.
                Some(Msg::Accepted(conn)) => {
                    let remote = conn.remote.clone();
                    let peer = links.attach(&mut session, conn, None);
                    info!(%peer, %remote, "accepted");
                }
                // The loop holds a sender: the channel never ends.
                None => {}
            },
            () = timer => session.on_timeout(),
            () = drain_over => break Outcome::Interrupted,
        }
    };
    accepting.iter().for_each(AbortHandle::abort);
    // Units still with the workers are not recorded; the returned session verifies inline.
    drop(workers);
    session.verify_off_loop(false);
    let closing: Vec<_> = links.conns.drain().map(|(_, c)| c.stop_reading()).collect();
    if let Err(e) = session.flush() {
        warn!(error = %e, "flush failed");
    }
    // Queued frames get a moment to go out, and peers to hear goodbye; then the writers stop.
    let (stops, written): (Vec<_>, Vec<_>) = closing.into_iter().unzip();
    let goodbye = async {
        futures::future::join_all(written).await;
        links.transports.shutdown().await;
    };
    let limit = R::sleep_until(Instant::now() + CLOSE_LIMIT);
    futures::future::select(std::pin::pin!(goodbye), std::pin::pin!(limit)).await;
    stops.iter().for_each(AbortHandle::abort);
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

/// [`run`] as a task of `R`. The task runs whether or not the handle is awaited.
pub fn spawn<R: Runtime>(
    session: Session,
    cfg: RunConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_event: impl FnMut(&SessionEvent) + Send + 'static,
) -> RunHandle {
    let (tx, done) = oneshot::channel();
    let (abort, registration) = AbortHandle::new_pair();
    let task = run::<R>(session, cfg, shutdown, on_event);
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

/// Accepts on `listener` until the loop goes away. A connection beyond `max_peers` open ones
/// is closed at once (before the loop spends anything on it); a failing accept is logged once
/// per run of failures and retried after [`ACCEPT_BACKOFF`].
async fn accept<R: Runtime>(
    mut listener: Box<dyn Listener>,
    framing: Framing,
    mut tx: mpsc::Sender<Msg>,
    live: Arc<AtomicUsize>,
    max_peers: usize,
) {
    let mut failing = false;
    loop {
        match listener.accept(framing).await {
            Ok(conn) => {
                failing = false;
                // Counted here, so a burst of connections cannot pass the limit before the
                // loop has seen them.
                if live.fetch_add(1, Ordering::AcqRel) >= max_peers {
                    live.fetch_sub(1, Ordering::AcqRel);
                    debug!(remote = %conn.remote, "refused: at the peer limit");
                    continue;
                }
                if tx.send(Msg::Accepted(conn)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                if !failing {
                    warn!(listener = %listener.url(), error = %e, "accept failing: retrying");
                    failing = true;
                }
                R::sleep_until(Instant::now() + ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Connects to `url`, retrying with a growing pause unless the refusal is final.
async fn dial<R: Runtime>(
    transports: Transports,
    url: PeerUrl,
    framing: Framing,
    delay: Duration,
    mut tx: mpsc::Sender<Msg>,
) {
    R::sleep_until(Instant::now() + delay).await;
    let mut wait = Duration::from_millis(100);
    let mut result = transports.connect(&url, framing).await;
    for _ in 1..DIAL_ATTEMPTS {
        match &result {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => break,
            Err(_) => {}
        }
        R::sleep_until(Instant::now() + wait).await;
        wait *= 2;
        result = transports.connect(&url, framing).await;
    }
    let _ = tx.send(Msg::Dialed(url, result)).await;
}

/// Reads `peer`'s frames into the loop until the connection ends. A frame begun and not
/// finished within `frame_timeout` (looked at every quarter of it) drops the peer, as does a
/// frame the reader refuses.
async fn read_frames<R: Runtime>(
    mut reader: Box<dyn FrameRead>,
    peer: PeerId,
    mut tx: mpsc::Sender<Msg>,
    frame_timeout: Duration,
) {
    let look = (frame_timeout / 4).max(Duration::from_millis(10));
    // When the frame being read was first seen unfinished.
    let mut begun: Option<Instant> = None;
    let end = loop {
        let wake = R::sleep_until(Instant::now() + look);
        let next = match select(reader.next_frame(), pin!(wake)).await {
            Either::Left((next, _)) => Some(next),
            Either::Right(_) => None,
        };
        let next = match next {
            Some(next) => next,
            None => {
                if !reader.mid_frame() {
                    begun = None;
                    continue;
                }
                let now = Instant::now();
                if now.duration_since(*begun.get_or_insert(now)) >= frame_timeout {
                    break Msg::Dropped(peer, DropReason::FrameTimeout);
                }
                continue;
            }
        };
        match next {
            Ok(Some(incoming)) => {
                begun = None;
                if tx.send(Msg::Frame(peer, incoming)).await.is_err() {
                    return;
                }
            }
            Ok(None) => break Msg::Closed(peer, "closed by the peer".to_string()),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                debug!(%peer, error = %e, "refused a frame");
                break Msg::Dropped(peer, DropReason::BadFrame);
            }
            Err(e) => break Msg::Closed(peer, e.to_string()),
        }
    };
    let _ = tx.send(end).await;
}

/// Writes both lanes of a connection until their queues close, then closes it. A write that
/// stalls drops the peer.
async fn write_lanes<R: Runtime>(
    writer: Arc<dyn FrameWrite>,
    [control, data]: [mpsc::Receiver<OutFrame>; 2],
    peer: PeerId,
    tx: mpsc::Sender<Msg>,
    backlog: Arc<Backlog>,
    stall: Duration,
) {
    let lane = |rx| write_lane::<R>(&*writer, rx, peer, tx.clone(), &backlog, stall);
    let lanes = futures::future::try_join(lane(control), lane(data));
    let result = match lanes.await {
        Ok(_) => timed::<R>(writer.close(), stall, None).await,
        Err(e) => Err(e),
    };
    let end = match result {
        Ok(()) => return,
        Err(e) if e.kind() == io::ErrorKind::TimedOut => {
            Msg::Dropped(peer, DropReason::WriteStalled)
        }
        Err(e) => Msg::Closed(peer, e.to_string()),
    };
    let _ = tx.clone().send(end).await;
}

/// Writes one lane's frames in order, flushing after each batch, and reports the TRANSFERs
/// written (and every batch written after a slow write or while the connection is congested,
/// so the loop can see it drain).
async fn write_lane<R: Runtime>(
    writer: &dyn FrameWrite,
    mut rx: mpsc::Receiver<OutFrame>,
    peer: PeerId,
    mut tx: mpsc::Sender<Msg>,
    backlog: &Backlog,
    stall: Duration,
) -> io::Result<()> {
    let mut sent = Vec::new();
    let mut slow = false;
    while let Some(first) = rx.next().await {
        let mut next = Some(first);
        while let Some(frame) = next {
            sent.extend(frame.unit);
            timed::<R>(writer.write(frame), stall, Some((peer, &mut tx, &mut slow))).await?;
            backlog.queued.fetch_sub(1, Ordering::AcqRel);
            next = rx.try_recv().ok();
        }
        timed::<R>(writer.flush(), stall, Some((peer, &mut tx, &mut slow))).await?;
        let drained = std::mem::take(&mut slow) || backlog.congested.load(Ordering::Acquire);
        if (!sent.is_empty() || drained)
            && tx
                .send(Msg::Sent(peer, std::mem::take(&mut sent)))
                .await
                .is_err()
        {
            break;
        }
    }
    Ok(())
}

/// `op` (a write), given up with [`io::ErrorKind::TimedOut`] if it does not complete within
/// `stall`. With `report`, a write pending for [`CONGESTED_AFTER`] (at most half of `stall`)
/// is told to the loop once, and marked in the flag.
async fn timed<R: Runtime>(
    op: impl Future<Output = io::Result<()>>,
    stall: Duration,
    report: Option<(PeerId, &mut mpsc::Sender<Msg>, &mut bool)>,
) -> io::Result<()> {
    let start = Instant::now();
    let mut op = pin!(op);
    if let Some((peer, tx, slow)) = report.filter(|(_, _, slow)| !**slow) {
        let congested = R::sleep_until(start + CONGESTED_AFTER.min(stall / 2));
        match select(op.as_mut(), pin!(congested)).await {
            Either::Left((done, _)) => return done,
            Either::Right(_) => {
                *slow = true;
                let _ = tx.send(Msg::Slow(peer)).await;
            }
        }
    }
    match select(op, pin!(R::sleep_until(start + stall))).await {
        Either::Left((done, _)) => done,
        Either::Right(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "write stalled: the peer does not read",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::{keep_existing, write_lane, Backlog, Msg, Runtime, CONGESTED_QUEUE};
    use crate::transport::{Class, FrameWrite, OutFrame};
    use bytes::Bytes;
    use futures::channel::mpsc;
    use futures::future::BoxFuture;
    use futures::{FutureExt, SinkExt, StreamExt};
    use std::io;
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};
    use tierswarm_core::PeerId;

    /// Writes complete at once; no deadline ever passes.
    struct Instantly;
    impl Runtime for Instantly {
        fn spawn(task: impl std::future::Future<Output = ()> + Send + 'static) {
            drop(task);
        }
        fn sleep_until(_: Instant) -> impl std::future::Future<Output = ()> + Send {
            futures::future::pending()
        }
    }
    struct Sink;
    impl FrameWrite for Sink {
        fn write(&self, _: OutFrame) -> BoxFuture<'_, io::Result<()>> {
            async { Ok(()) }.boxed()
        }
        fn flush(&self) -> BoxFuture<'_, io::Result<()>> {
            async { Ok(()) }.boxed()
        }
        fn close(&self) -> BoxFuture<'_, io::Result<()>> {
            async { Ok(()) }.boxed()
        }
    }

    /// Writes a burst of control frames (no unit among them) on one lane, the connection
    /// congested or not; returns the reports of batches written.
    fn reports_of_a_control_burst(congested: bool) -> Vec<Vec<u64>> {
        let backlog = Backlog::default();
        backlog.congested.store(congested, Ordering::Release);
        let (mut lane_tx, lane_rx) = mpsc::channel(2 * CONGESTED_QUEUE);
        let (tx, rx) = mpsc::channel(64);
        futures::executor::block_on(async {
            for _ in 0..CONGESTED_QUEUE + 6 {
                backlog.queued.fetch_add(1, Ordering::AcqRel);
                let cancel = OutFrame::new(Bytes::from_static(b"cancel"), Class::Control, None);
                lane_tx.send(cancel).await.unwrap();
            }
            drop(lane_tx);
            let lane = write_lane::<Instantly>(
                &Sink,
                lane_rx,
                PeerId(1),
                tx,
                &backlog,
                Duration::from_secs(20),
            );
            lane.await.unwrap();
        });
        assert_eq!(backlog.queued.load(Ordering::Acquire), 0, "all written");
        futures::executor::block_on(rx.collect::<Vec<_>>())
            .into_iter()
            .map(|m| match m {
                Msg::Sent(_, units) => units,
                _ => panic!("only batch reports"),
            })
            .collect()
    }

    /// A connection made congested by control frames alone (an endgame's burst of cancels and
    /// rejects) is sent no unit while it is congested: its writer must still report the
    /// batches it writes, or the loop never sees the queue drain and the peer's requests wait
    /// until the connection closes (8-leecher swarms stalled for 8–60 s, 2026-12-04).
    #[test]
    fn a_congested_connection_reports_its_drain_without_units() {
        let reports = reports_of_a_control_burst(true);
        assert!(!reports.is_empty(), "the drain is reported");
        assert!(reports.iter().all(Vec::is_empty));
        assert!(
            reports_of_a_control_burst(false).is_empty(),
            "an uncongested connection reports units only"
        );
    }

    /// Two nodes that dialled each other each see both connections, in either order; both
    /// must keep the same one (the one dialled by the smaller id), or they would close both.
    #[test]
    fn both_ends_keep_the_same_connection() {
        for (a, b) in [("alice", "bob"), ("bob", "alice"), ("x1", "x10")] {
            // Connection D is dialled by a, connection E by b. Each end sees them in either
            // order; `keep_existing` says which survives, named by who dialled it.
            let kept = |ours: &str, theirs: &str, first_by_us: bool| {
                let keep_first = keep_existing(ours, theirs, first_by_us, !first_by_us);
                let first_dialer = if first_by_us { ours } else { theirs };
                let second_dialer = if first_by_us { theirs } else { ours };
                if keep_first {
                    first_dialer.to_string()
                } else {
                    second_dialer.to_string()
                }
            };
            let smaller = a.min(b).to_string();
            for first_by_us in [true, false] {
                assert_eq!(kept(a, b, first_by_us), smaller, "{a} sees {b}");
                assert_eq!(kept(b, a, first_by_us), smaller, "{b} sees {a}");
            }
        }
    }

    #[test]
    fn same_direction_keeps_the_older() {
        assert!(keep_existing("a", "b", true, true));
        assert!(keep_existing("b", "a", false, false));
        assert!(keep_existing("a", "a", true, false));
    }
}
