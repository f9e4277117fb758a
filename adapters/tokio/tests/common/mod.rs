//! Helpers shared by the loopback tests.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tierswarm_core::node::Limits;
use tierswarm_io::driver::{ResumeNotes, SessionOptions};
use tierswarm_io::{Manifest, Session, SessionEvent};
use tierswarm_tokio::{run, Outcome, RunConfig};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Every test is bounded by this.
pub const LIMIT: Duration = Duration::from_secs(60);

/// A file of `len` pseudo-random bytes.
pub fn make_file(dir: &Path, name: &str, len: u64, seed: u64) -> PathBuf {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut data = Vec::with_capacity(len as usize);
    while (data.len() as u64) < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(len as usize);
    let path = dir.join(name);
    std::fs::write(&path, &data).unwrap();
    path
}

pub fn opts(name: &str, seed: u64) -> SessionOptions {
    SessionOptions {
        peer_id: name.into(),
        seed,
        ..SessionOptions::default()
    }
}

/// A serving task: its address, a trigger that shuts it down, and its result.
pub struct Serving {
    pub addr: SocketAddr,
    pub stop: oneshot::Sender<()>,
    pub task: JoinHandle<(Session, Outcome)>,
}

impl Serving {
    pub async fn stop(self) -> (Session, Outcome) {
        let _ = self.stop.send(());
        self.task.await.unwrap()
    }
}

pub async fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

/// Runs `session` on `listener` (and dialing `peers`) until stopped.
pub fn serve(session: Session, listener: TcpListener, peers: Vec<SocketAddr>) -> Serving {
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = oneshot::channel::<()>();
    let cfg = RunConfig {
        listener: Some(listener),
        peers,
        stop_when_complete: false,
    };
    let task = tokio::spawn(run(
        session,
        cfg,
        async move {
            let _ = rx.await;
        },
        |_| {},
    ));
    Serving { addr, stop, task }
}

/// A seeder of `path` on a fresh loopback port.
pub async fn seed(path: &Path, options: SessionOptions) -> (Serving, Manifest) {
    let s = Session::seeder(path, options).unwrap();
    let manifest = s.manifest().clone();
    (serve(s, listener().await, vec![]), manifest)
}

/// Fetches `manifest` into `out` from `peers` until complete.
pub async fn fetch(
    manifest: &Manifest,
    out: &Path,
    peers: Vec<SocketAddr>,
    options: SessionOptions,
) -> (Session, Outcome, ResumeNotes) {
    let (s, notes) = Session::leecher(manifest, out, false, options).unwrap();
    let cfg = RunConfig {
        listener: None,
        peers,
        stop_when_complete: true,
    };
    let (s, outcome) = run(s, cfg, std::future::pending(), |_| {}).await;
    (s, outcome, notes)
}

/// Sends every event into a channel (for tests that wait on progress).
pub fn events() -> (
    impl FnMut(&SessionEvent) + Send + 'static,
    mpsc::UnboundedReceiver<SessionEvent>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    (move |e: &SessionEvent| drop(tx.send(e.clone())), rx)
}

pub fn small_persist_limits() -> Limits {
    Limits {
        persist_every: 8,
        ..Limits::default()
    }
}

pub fn same_bytes(a: &Path, b: &Path) -> bool {
    std::fs::read(a).unwrap() == std::fs::read(b).unwrap()
}
