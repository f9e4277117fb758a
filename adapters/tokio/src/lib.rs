//! # tierswarm-tokio
//!
//! The tokio glue of tierswarm: TCP listener and connectors, one reader and one writer task per
//! connection, one timer, and the loop that feeds a [`Session`] and executes its [`Effect`]s in
//! order. Every protocol decision is the core's and every byte of content handling is
//! `tierswarm-io`'s; this crate only moves bytes and time.
//!
//! - Readers cut frames with [`FrameReader`] (the core's `decode_frame`, bounded by the node's
//!   maximum frame) and hand them to the loop over a bounded channel, so a slow loop pushes back
//!   on the socket.
//! - Writers get whole frames over a bounded channel per connection and report TRANSFERs once
//!   flushed to the socket ([`Session::on_unit_sent`]). The loop never waits on a writer: a
//!   connection whose queue is full is not reading and is closed.
//! - Unit verification and disk writes run inline in the loop (about 50 µs per 64 KiB unit).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use tierswarm_core::PeerId;
use tierswarm_io::driver::{FrameReader, Incoming};
use tierswarm_io::{Effect, Session, SessionEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{sleep, sleep_until, Instant};
use tracing::{debug, info, warn};

/// Frames queued per connection before it counts as not reading.
const WRITE_QUEUE: usize = 1024;
/// Connection attempts per dial, and redials of a peer that went away on its own.
const DIAL_ATTEMPTS: u32 = 5;
const REDIALS: u32 = 3;
/// How long a drain may take before the loop gives up on in-flight requests.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// Where to connect and what ends the run.
#[derive(Debug, Default)]
pub struct RunConfig {
    /// Accept peers here.
    pub listener: Option<TcpListener>,
    /// Connect to each of these.
    pub peers: Vec<SocketAddr>,
    /// Return [`Outcome::Complete`] as soon as the download is complete (`fetch`); otherwise
    /// keep serving until shut down.
    pub stop_when_complete: bool,
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
    Dialed(SocketAddr, std::io::Result<TcpStream>),
    Frame(PeerId, Incoming),
    Closed(PeerId, String),
    Sent(PeerId, Vec<u64>),
}

/// Bytes to write, and the unit they carry if they are a TRANSFER.
type Out = (Bytes, Option<u64>);

struct Conn {
    tx: mpsc::Sender<Out>,
    reader: JoinHandle<()>,
    dialed: Option<SocketAddr>,
}

/// Runs `session` until it completes (with [`RunConfig::stop_when_complete`]), `shutdown`
/// resolves (then it drains: no new requests, in-flight ones settle, state is persisted), or it
/// cannot go on. `on_event` sees every [`SessionEvent`] as it happens. Returns the session (for
/// its statistics) and how the run ended.
pub async fn run(
    mut session: Session,
    cfg: RunConfig,
    shutdown: impl Future<Output = ()>,
    mut on_event: impl FnMut(&SessionEvent),
) -> (Session, Outcome) {
    let (tx, mut rx) = mpsc::channel::<Msg>(256);
    let mut conns: HashMap<PeerId, Conn> = HashMap::new();
    let mut redials: HashMap<SocketAddr, u32> = HashMap::new();
    let mut dialing = cfg.peers.len();
    for &addr in &cfg.peers {
        tokio::spawn(dial(addr, Duration::ZERO, tx.clone()));
    }
    let keep_raw = session.is_recording();
    let max_frame = session.max_frame_len();
    tokio::pin!(shutdown);
    let mut drain_until: Option<Instant> = None;
    let outcome = 'run: loop {
        while let Some(effect) = session.poll_effect() {
            match effect {
                Effect::Send { peer, bytes, unit } => {
                    let full = conns
                        .get(&peer)
                        .is_some_and(|c| c.tx.try_send((bytes, unit)).is_err());
                    if full {
                        warn!(%peer, "send queue full: closing");
                        close(&mut conns, peer);
                        session.on_disconnected(peer);
                    }
                }
                Effect::Close { peer, reason } => {
                    info!(%peer, %reason, "disconnecting");
                    close(&mut conns, peer);
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
        if drain_until.is_none() && conns.is_empty() && dialing == 0 && cfg.listener.is_none() {
            break Outcome::Failed("no peer is reachable any more".into());
        }
        let deadline = session.next_deadline().map(Instant::from_std);
        tokio::select! {
            biased;
            () = &mut shutdown, if drain_until.is_none() => {
                info!("shutting down: draining");
                drain_until = Some(Instant::now() + DRAIN_LIMIT);
                session.drain();
            }
            Some(msg) = rx.recv() => match msg {
                Msg::Frame(peer, incoming) => session.on_frame(peer, incoming),
                Msg::Sent(peer, units) => units.into_iter().for_each(|u| session.on_unit_sent(peer, u)),
                Msg::Closed(peer, reason) => {
                    if let Some(c) = conns.remove(&peer) {
                        debug!(%peer, %reason, "connection closed");
                        c.reader.abort();
                        session.on_disconnected(peer);
                        let n = c.dialed.map(|a| redials.entry(a).or_default());
                        if let (Some(addr), Some(n)) = (c.dialed, n) {
                            if *n < REDIALS && drain_until.is_none() && !session.is_complete() {
                                *n += 1;
                                dialing += 1;
                                tokio::spawn(dial(addr, Duration::from_millis(500), tx.clone()));
                            }
                        }
                    }
                }
                Msg::Dialed(addr, result) => {
                    dialing -= 1;
                    match result {
                        Ok(stream) => {
                            let peer = attach(&mut session, &mut conns, stream, Some(addr), max_frame, keep_raw, &tx);
                            info!(%peer, %addr, "connected");
                        }
                        Err(e) => warn!(%addr, error = %e, "cannot connect"),
                    }
                }
            },
            accepted = accept(cfg.listener.as_ref()) => match accepted {
                Ok((stream, addr)) => {
                    let peer = attach(&mut session, &mut conns, stream, None, max_frame, keep_raw, &tx);
                    info!(%peer, %addr, "accepted");
                }
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    sleep(Duration::from_millis(50)).await;
                }
            },
            () = sleep_until(deadline.unwrap_or_else(far_future)), if deadline.is_some() => session.on_timeout(),
            () = sleep_until(drain_until.unwrap_or_else(far_future)), if drain_until.is_some() => {
                break Outcome::Interrupted;
            }
        }
    };
    for (_, c) in conns.drain() {
        c.reader.abort();
    }
    if let Err(e) = session.flush() {
        warn!(error = %e, "flush failed");
    }
    (session, outcome)
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400)
}

async fn accept(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

fn close(conns: &mut HashMap<PeerId, Conn>, peer: PeerId) {
    // Dropping the sender lets the writer flush what is queued, then shut the socket down.
    if let Some(c) = conns.remove(&peer) {
        c.reader.abort();
    }
}

fn attach(
    session: &mut Session,
    conns: &mut HashMap<PeerId, Conn>,
    stream: TcpStream,
    dialed: Option<SocketAddr>,
    max_frame: u64,
    keep_raw: bool,
    tx: &mpsc::Sender<Msg>,
) -> PeerId {
    let _ = stream.set_nodelay(true);
    let (rd, wr) = stream.into_split();
    let peer = session.connected();
    let (out_tx, out_rx) = mpsc::channel(WRITE_QUEUE);
    tokio::spawn(writer(wr, out_rx, peer, tx.clone()));
    let reader = tokio::spawn(reader(
        rd,
        peer,
        FrameReader::new(max_frame, keep_raw),
        tx.clone(),
    ));
    conns.insert(
        peer,
        Conn {
            tx: out_tx,
            reader,
            dialed,
        },
    );
    peer
}

async fn dial(addr: SocketAddr, delay: Duration, tx: mpsc::Sender<Msg>) {
    sleep(delay).await;
    let mut wait = Duration::from_millis(100);
    let mut result = TcpStream::connect(addr).await;
    for _ in 1..DIAL_ATTEMPTS {
        if result.is_ok() {
            break;
        }
        sleep(wait).await;
        wait *= 2;
        result = TcpStream::connect(addr).await;
    }
    let _ = tx.send(Msg::Dialed(addr, result)).await;
}

async fn reader(
    mut rd: OwnedReadHalf,
    peer: PeerId,
    mut frames: FrameReader,
    tx: mpsc::Sender<Msg>,
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
        let buf = frames.buffer();
        buf.reserve(64 * 1024);
        match rd.read_buf(buf).await {
            Ok(0) => break "closed by the peer".to_string(),
            Ok(_) => {}
            Err(e) => break e.to_string(),
        }
    };
    let _ = tx.send(Msg::Closed(peer, reason)).await;
}

async fn writer(
    wr: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Out>,
    peer: PeerId,
    tx: mpsc::Sender<Msg>,
) {
    let mut w = BufWriter::with_capacity(128 * 1024, wr);
    let mut sent = Vec::new();
    while let Some(first) = rx.recv().await {
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
    let _ = w.shutdown().await;
}
