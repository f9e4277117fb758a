//! The handle of a running transfer: its events, its cancellation, its report.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::channel::{mpsc, oneshot};
use futures::future::{AbortHandle, Abortable};
use futures::{FutureExt, StreamExt};
use serde::Serialize;
use tierswarm_core::node::Stats;
use tierswarm_io::driver::{self, ResumeNotes, RunConfig};
use tierswarm_io::transport::PeerUrl;
use tierswarm_io::{Manifest, Session, SessionEvent, UNIT_LEN};

use crate::{Error, Runtime};

/// Events buffered for the program before new ones are dropped (and counted in
/// [`Report::events_dropped`]): a program that never reads them costs bounded memory.
const EVENT_QUEUE: usize = 4096;
/// How often [`Event::Rate`] is told.
const TICK: Duration = Duration::from_secs(1);
/// Peers listed one by one in [`Report::units_from`] and [`Report::served_to`]; the rest are
/// summed under peer 0 (connections are numbered from 1).
const MAX_PEERS_LISTED: usize = 4096;
/// Distinct disconnect reasons listed in [`Report::disconnects`]; the rest count as `other`.
const MAX_REASONS_LISTED: usize = 64;

/// News from a running transfer, in the order it happened. Serialises (serde) as one JSON
/// object with an `"event"` key naming the kind in `snake_case` and the fields beside it: the
/// schema of `tierswarm share|fetch --json-events`. Peers are numbered per connection, from 1.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// A listener is bound (first events of a run, one per listener).
    Listening {
        /// Its URL, as peers dial it (QUIC: with the certificate fingerprint).
        url: String,
    },
    /// A peer finished its handshake.
    PeerConnected {
        /// The connection.
        peer: u64,
        /// Whether it speaks the hierarchical protocol with us (false: the flat protocol).
        capable: bool,
    },
    /// A connection ended.
    PeerDisconnected {
        /// The connection.
        peer: u64,
        /// Why, on one line (`connection closed`, or the reason the node dropped the peer).
        reason: String,
    },
    /// A unit from `peer` was verified against the content root and written.
    UnitVerified {
        /// Who sent it.
        peer: u64,
        /// The unit (64 KiB each).
        unit: u64,
    },
    /// Units present changed.
    Progress {
        /// Units present.
        units: u64,
        /// Units in the file.
        total: u64,
        /// Bytes present.
        bytes: u64,
    },
    /// A unit was written to `peer`'s connection.
    UnitServed {
        /// The connection.
        peer: u64,
        /// The unit.
        unit: u64,
        /// Bytes of data it carried.
        bytes: u64,
    },
    /// Once a second: rates over the last second and gauges.
    Rate {
        /// Peers connected now (handshake done).
        peers: u64,
        /// Unit data served per second.
        upload_bytes_per_s: u64,
        /// Unit data verified per second.
        download_bytes_per_s: u64,
        /// Units served since the start.
        units_served: u64,
        /// Peers' requests queued for upload now.
        queued: u64,
        /// Units present.
        units: u64,
        /// Units in the file.
        total: u64,
    },
    /// A unit from `peer` failed verification; the peer is disconnected and the unit fetched
    /// again.
    BadUnit {
        /// Who sent it.
        peer: u64,
        /// The unit.
        unit: u64,
        /// What was wrong.
        reason: String,
    },
    /// The availability store was written.
    Persisted {
        /// Units it records.
        units: u64,
    },
    /// Something went wrong that does not stop the transfer.
    Warning {
        /// What.
        message: String,
    },
    /// Every unit is present, verified, written and persisted.
    Complete,
    /// The transfer ended: the last event, with its report (also [`Transfer::wait`]'s).
    Done(Box<Report>),
}

/// How a transfer ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The file is complete, verified (it hashes to the root) and persisted.
    Complete,
    /// Drained: in-flight requests settled and state persisted.
    Drained,
    /// Drained, but in-flight requests did not settle in time (state persisted up to the
    /// last store write).
    Interrupted,
    /// It could not go on: the reason, on one line.
    Failed(String),
}

/// What a transfer did, once it ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// How it ended.
    pub outcome: Outcome,
    /// From the start to the end, in seconds.
    pub elapsed_s: f64,
    /// Units present at the end.
    pub units: u64,
    /// Units in the file.
    pub total: u64,
    /// Unit data received and verified in this run.
    pub bytes_downloaded: u64,
    /// Unit data served in this run.
    pub bytes_uploaded: u64,
    /// Distinct peers that completed a handshake, by the peer id in their handshake: a peer
    /// connected twice (both dialled) or again after a disconnection counts once.
    pub peers: u64,
    /// Units received and verified, by peer (at most 4096 peers listed; the rest under 0).
    pub units_from: BTreeMap<u64, u64>,
    /// Units served, by peer (listed as `units_from`).
    pub served_to: BTreeMap<u64, u64>,
    /// Unit requests that timed out.
    pub request_timeouts: u64,
    /// Connections that ended, by reason (at most 64 reasons; the rest as `other`).
    pub disconnects: BTreeMap<String, u64>,
    /// Events dropped because the program did not read them in time.
    pub events_dropped: u64,
    /// Units checked against their proofs again as they were read to be served, because the
    /// data file was not trusted then: units a download held at its start (those it verified
    /// and wrote itself are served as they are while no other program writes to its file), or
    /// any unit of a file whose metadata changed after it was hashed. 0 for a seeder whose file
    /// stayed as it was hashed.
    pub units_rechecked: u64,
    /// The core's counters: messages and bytes by kind, requests, retries, ...
    pub stats: Stats,
}

impl Report {
    /// Whether the file is complete (a fetch that succeeded).
    pub fn is_complete(&self) -> bool {
        self.outcome == Outcome::Complete
    }
}

/// Stops a transfer from anywhere (cloneable, usable from another thread or a signal
/// handler's thread).
#[derive(Debug, Clone)]
pub struct Cancel {
    stop: Arc<Mutex<Option<oneshot::Sender<()>>>>,
    abort: AbortHandle,
}

impl Cancel {
    /// Graceful: no new requests; in-flight ones settle (for up to 10 s), state is persisted,
    /// then the transfer ends with [`Outcome::Drained`] (or [`Outcome::Interrupted`]).
    pub fn drain(&self) {
        if let Some(tx) = lock(&self.stop).take() {
            let _ = tx.send(());
        }
    }

    /// At once, as a crash: nothing more is sent or persisted; [`Transfer::wait`] returns
    /// [`Error::Aborted`]. What was persisted before is resumed by the next fetch.
    pub fn abort(&self) {
        self.abort.abort();
    }
}

/// A running share or fetch, from [`Node::share`](crate::Node::share) or
/// [`Node::fetch`](crate::Node::fetch). Read its events with [`next_event`](Self::next_event)
/// (blocking) or [`events`](Self::events) (a `Stream`), stop it with [`drain`](Self::drain) or
/// [`Cancel`], and get its [`Report`] with [`wait`](Self::wait) (blocking) or
/// [`finish`](Self::finish) (async). Dropping the handle aborts the transfer.
///
/// Events wait in a bounded queue (4096): a program that does not keep up loses the excess,
/// counted in [`Report::events_dropped`]; the report itself is never lost.
#[derive(Debug)]
pub struct Transfer {
    manifest: Manifest,
    listening: Vec<PeerUrl>,
    notes: Option<ResumeNotes>,
    events: mpsc::Receiver<Event>,
    done: Option<oneshot::Receiver<Report>>,
    cancel: Cancel,
    /// Dropped last: a tokio runtime this handle started.
    _tokio: TokioRuntime,
}

impl Transfer {
    /// The manifest of the content (a share's was made by hashing its file).
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The URL of each listener, in the order given ([`Node::listen`](crate::Node::listen));
    /// port 0 is replaced by the bound port, a QUIC URL carries its fingerprint.
    pub fn listening(&self) -> &[PeerUrl] {
        &self.listening
    }

    /// What a fetch found at its output when it started (`None` for a share).
    pub fn resumed(&self) -> Option<&ResumeNotes> {
        self.notes.as_ref()
    }

    /// The next event, blocking until there is one; `None` once the transfer has ended and
    /// every event was read. (Not for async code inside a runtime: use
    /// [`events`](Self::events).)
    pub fn next_event(&mut self) -> Option<Event> {
        futures::executor::block_on(self.events.next())
    }

    /// The events as a `futures` [`Stream`](futures::Stream), for async code; it ends after
    /// [`Event::Done`].
    pub fn events(&mut self) -> &mut (impl futures::Stream<Item = Event> + Unpin) {
        &mut self.events
    }

    /// A handle that drains or aborts this transfer from elsewhere.
    pub fn canceller(&self) -> Cancel {
        self.cancel.clone()
    }

    /// [`Cancel::drain`].
    pub fn drain(&self) {
        self.cancel.drain();
    }

    /// [`Cancel::abort`].
    pub fn abort(&self) {
        self.cancel.abort();
    }

    /// Blocks until the transfer ends; its report. A fetch ends when complete (or when it
    /// cannot go on), a share when drained. Events not read by then are discarded.
    pub fn wait(mut self) -> Result<Report, Error> {
        let done = self.done.take().ok_or(Error::Aborted)?;
        futures::executor::block_on(done).map_err(|_| Error::Aborted)
    }

    /// [`wait`](Self::wait) for async code.
    pub async fn finish(mut self) -> Result<Report, Error> {
        let done = self.done.take().ok_or(Error::Aborted)?;
        done.await.map_err(|_| Error::Aborted)
    }
}

impl Drop for Transfer {
    fn drop(&mut self) {
        self.cancel.abort();
    }
}

/// The tokio runtime a transfer on tokio runs on: the current one, or one of its own.
#[derive(Debug)]
pub(crate) enum TokioRuntime {
    /// Not on tokio.
    Unused,
    /// The runtime current when the transfer started.
    Current(tokio::runtime::Handle),
    /// Started for this transfer; shut down (without blocking) when the handle goes.
    Owned(Option<tokio::runtime::Runtime>),
}

impl TokioRuntime {
    pub(crate) fn for_runtime(runtime: Runtime) -> Result<Self, Error> {
        if runtime != Runtime::Tokio {
            return Ok(TokioRuntime::Unused);
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            return Ok(TokioRuntime::Current(handle));
        }
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map(|rt| TokioRuntime::Owned(Some(rt)))
            .map_err(|e| Error::Failed(format!("cannot start the tokio runtime: {e}")))
    }

    /// Runs `f` where tokio is current (binding sockets and spawning need it).
    pub(crate) fn within<T>(&self, f: impl FnOnce() -> T) -> T {
        match self {
            TokioRuntime::Current(h) => {
                let _in = h.enter();
                f()
            }
            TokioRuntime::Owned(Some(rt)) => {
                let _in = rt.enter();
                f()
            }
            TokioRuntime::Unused | TokioRuntime::Owned(None) => f(),
        }
    }
}

impl Drop for TokioRuntime {
    fn drop(&mut self) {
        if let TokioRuntime::Owned(rt) = self {
            // Dropping a runtime blocks, and panics inside async code: shut it down aside.
            if let Some(rt) = rt.take() {
                rt.shutdown_background();
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts `session` on `runtime`; the handle.
pub(crate) fn spawn(
    runtime: Runtime,
    tokio: TokioRuntime,
    session: Session,
    cfg: RunConfig,
    notes: Option<ResumeNotes>,
) -> Transfer {
    let manifest = session.manifest().clone();
    let listening: Vec<PeerUrl> = cfg.listeners.iter().map(|l| l.url()).collect();
    let (tx, events) = mpsc::channel(EVENT_QUEUE);
    let (units, total) = session.progress();
    let mut tracker = Tracker::new(tx, manifest.file_len, units, total);
    for url in &listening {
        tracker.send(Event::Listening {
            url: url.to_string(),
        });
    }
    let tracker = Arc::new(Mutex::new(tracker));
    let (stop, stopped) = oneshot::channel();
    let (done_tx, done) = oneshot::channel();
    let (abort, registration) = AbortHandle::new_pair();
    let args = (session, cfg, stopped, tracker, done_tx);
    tokio.within(|| match runtime {
        Runtime::Tokio => start::<tierswarm_tokio::Tokio>(args, registration),
        Runtime::AsyncStd => start::<tierswarm_async_std::AsyncStd>(args, registration),
        Runtime::Smol => start::<tierswarm_smol::Smol>(args, registration),
    });
    Transfer {
        manifest,
        listening,
        notes,
        events,
        done: Some(done),
        cancel: Cancel {
            stop: Arc::new(Mutex::new(Some(stop))),
            abort,
        },
        _tokio: tokio,
    }
}

type RunArgs = (
    Session,
    RunConfig,
    oneshot::Receiver<()>,
    Arc<Mutex<Tracker>>,
    oneshot::Sender<Report>,
);

/// Spawns the run and its once-a-second ticker on `R`; the run reports when it ends.
fn start<R: driver::Runtime>(args: RunArgs, registration: futures::future::AbortRegistration) {
    let (session, cfg, stopped, tracker, done) = args;
    let started = Instant::now();
    let (ticker, ticks) = AbortHandle::new_pair();
    let rates = Arc::clone(&tracker);
    R::spawn(
        Abortable::new(
            async move {
                let mut next = Instant::now() + TICK;
                loop {
                    R::sleep_until(next).await;
                    next += TICK;
                    lock(&rates).tick();
                }
            },
            ticks,
        )
        .map(drop),
    );
    let events = Arc::clone(&tracker);
    // A dropped `Cancel` (the handle gone) also ends the wait: the handle aborts then anyway.
    let shutdown = stopped.map(drop);
    let run = async move {
        let (session, outcome) =
            driver::run::<R>(session, cfg, shutdown, move |e| lock(&events).on_event(e)).await;
        let mut t = lock(&tracker);
        let report = t.report(&session, outcome, started);
        t.send(Event::Done(Box::new(report.clone())));
        t.tx = None;
        let _ = done.send(report);
    };
    // The ticker stops with the run, however the run ends (an abort included).
    R::spawn(Abortable::new(run, registration).map(move |_| ticker.abort()));
}

/// What the run's events add up to, and the sender of the program's events.
struct Tracker {
    tx: Option<mpsc::Sender<Event>>,
    dropped: u64,
    file_len: u64,
    units: u64,
    total: u64,
    /// Handshaken peers connected now (bounded by the open connections).
    ready: std::collections::BTreeSet<u64>,
    /// Distinct peer ids that completed a handshake (at most [`MAX_PEERS_LISTED`] kept; past
    /// that, every further handshake counts as a new peer).
    remotes: std::collections::BTreeSet<String>,
    peers_seen: u64,
    downloaded: u64,
    uploaded: u64,
    units_served: u64,
    queued: u64,
    units_from: BTreeMap<u64, u64>,
    served_to: BTreeMap<u64, u64>,
    disconnects: BTreeMap<String, u64>,
    /// When the last rate was told, and the byte counts then.
    last: (Instant, u64, u64),
}

impl Tracker {
    fn new(tx: mpsc::Sender<Event>, file_len: u64, units: u64, total: u64) -> Self {
        Tracker {
            tx: Some(tx),
            dropped: 0,
            file_len,
            units,
            total,
            ready: std::collections::BTreeSet::new(),
            remotes: std::collections::BTreeSet::new(),
            peers_seen: 0,
            downloaded: 0,
            uploaded: 0,
            units_served: 0,
            queued: 0,
            units_from: BTreeMap::new(),
            served_to: BTreeMap::new(),
            disconnects: BTreeMap::new(),
            last: (Instant::now(), 0, 0),
        }
    }

    fn send(&mut self, e: Event) {
        if let Some(tx) = self.tx.as_mut() {
            // A full queue drops the event; a closed one (nobody reads) needs no count.
            if let Err(err) = tx.try_send(e) {
                if err.is_full() {
                    self.dropped += 1;
                }
            }
        }
    }

    fn unit_len(&self, unit: u64) -> u64 {
        self.file_len
            .saturating_sub(unit.saturating_mul(UNIT_LEN))
            .min(UNIT_LEN)
    }

    fn on_event(&mut self, e: &SessionEvent) {
        let event = match e.clone() {
            SessionEvent::PeerReady {
                peer,
                capable,
                remote,
            } => {
                self.ready.insert(peer.0);
                // A peer dialled both ways handshakes twice (one connection is then closed):
                // it is one peer.
                if !self.remotes.contains(&remote) {
                    self.peers_seen += 1;
                    if self.remotes.len() < MAX_PEERS_LISTED {
                        self.remotes.insert(remote);
                    }
                }
                Event::PeerConnected {
                    peer: peer.0,
                    capable,
                }
            }
            SessionEvent::PeerGone { peer, reason } => {
                self.ready.remove(&peer.0);
                let key = if self.disconnects.len() < MAX_REASONS_LISTED
                    || self.disconnects.contains_key(&reason)
                {
                    reason.clone()
                } else {
                    "other".to_string()
                };
                *self.disconnects.entry(key).or_default() += 1;
                Event::PeerDisconnected {
                    peer: peer.0,
                    reason,
                }
            }
            SessionEvent::Verified { peer, unit } => {
                self.downloaded += self.unit_len(unit);
                count(&mut self.units_from, peer.0);
                Event::UnitVerified { peer: peer.0, unit }
            }
            SessionEvent::Served {
                peer,
                unit,
                bytes,
                queued,
            } => {
                self.uploaded += bytes;
                self.units_served += 1;
                self.queued = queued;
                count(&mut self.served_to, peer.0);
                Event::UnitServed {
                    peer: peer.0,
                    unit,
                    bytes,
                }
            }
            SessionEvent::Progress { units, total } => {
                self.units = units;
                let bytes = units.saturating_mul(UNIT_LEN).min(self.file_len);
                Event::Progress {
                    units,
                    total,
                    bytes,
                }
            }
            SessionEvent::BadUnit { peer, unit, reason } => Event::BadUnit {
                peer: peer.0,
                unit,
                reason,
            },
            SessionEvent::Persisted { units } => Event::Persisted { units },
            SessionEvent::Complete => Event::Complete,
            SessionEvent::Warning(message) => Event::Warning { message },
            // The end of the run is told by `Done`, with its outcome.
            SessionEvent::Drained | SessionEvent::Fatal(_) => return,
        };
        self.send(event);
    }

    fn tick(&mut self) {
        let now = Instant::now();
        let (at, up, down) = self.last;
        let secs = now.saturating_duration_since(at).as_secs_f64().max(1e-3);
        let per_s = |bytes: u64| (bytes as f64 / secs) as u64;
        let event = Event::Rate {
            peers: self.ready.len() as u64,
            upload_bytes_per_s: per_s(self.uploaded - up),
            download_bytes_per_s: per_s(self.downloaded - down),
            units_served: self.units_served,
            queued: self.queued,
            units: self.units,
            total: self.total,
        };
        self.last = (now, self.uploaded, self.downloaded);
        self.send(event);
    }

    fn report(&self, session: &Session, outcome: driver::Outcome, started: Instant) -> Report {
        let stats = session.stats().clone();
        let (units, total) = session.progress();
        Report {
            outcome: match outcome {
                driver::Outcome::Complete => Outcome::Complete,
                driver::Outcome::Drained => Outcome::Drained,
                driver::Outcome::Interrupted => Outcome::Interrupted,
                driver::Outcome::Failed(reason) => Outcome::Failed(reason),
            },
            elapsed_s: started.elapsed().as_secs_f64(),
            units,
            total,
            bytes_downloaded: self.downloaded,
            bytes_uploaded: self.uploaded,
            peers: self.peers_seen,
            units_from: self.units_from.clone(),
            served_to: self.served_to.clone(),
            request_timeouts: stats.request_timeouts,
            disconnects: self.disconnects.clone(),
            events_dropped: self.dropped,
            units_rechecked: session.units_rechecked(),
            stats,
        }
    }
}

/// One more unit for `peer`, within [`MAX_PEERS_LISTED`].
fn count(map: &mut BTreeMap<u64, u64>, peer: u64) {
    let key = if map.len() < MAX_PEERS_LISTED || map.contains_key(&peer) {
        peer
    } else {
        0
    };
    *map.entry(key).or_default() += 1;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tierswarm_core::PeerId;

    fn ready(peer: u64, remote: &str) -> SessionEvent {
        SessionEvent::PeerReady {
            peer: PeerId(peer),
            capable: true,
            remote: remote.to_string(),
        }
    }

    /// Two nodes that dialled each other handshake twice (one connection is then closed), and a
    /// peer may come back on a new connection: the report counts peers, not handshakes.
    #[test]
    fn peers_are_counted_by_their_id_not_by_handshakes() {
        let (tx, _rx) = mpsc::channel(16);
        let mut t = Tracker::new(tx, 10 * UNIT_LEN, 0, 10);
        for e in [ready(0, "a"), ready(1, "b"), ready(2, "a")] {
            t.on_event(&e);
        }
        t.on_event(&SessionEvent::PeerGone {
            peer: PeerId(1),
            reason: "connection closed".into(),
        });
        t.on_event(&ready(3, "b"));
        t.on_event(&ready(4, "c"));
        assert_eq!(t.peers_seen, 3);
        assert_eq!(t.ready.len(), 4, "connections up: 0, 2, 3, 4");
    }
}
