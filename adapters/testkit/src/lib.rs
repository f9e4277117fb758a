//! Helpers shared by the runtime adapters' loopback tests, generic over the
//! `Runtime` so that one scenario runs on tokio, on async-std,
//! or across both. Dev-only: every failure here is a test failure, so it panics freely.
//!
//! Sessions are spawned on the runtime they are given (not on the one awaiting them), so a tokio
//! test can run async-std peers beside tokio ones.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bench;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::channel::{mpsc, oneshot};
use futures::future::Either;
use tierswarm_core::node::Limits;
use tierswarm_core::store::StoreState;
use tierswarm_core::{Geometry, LocalTiers, Tier};
use tierswarm_io::driver::{recorder, Runtime, SessionOptions};
use tierswarm_io::driver::{
    spawn, store_paths, Outcome, ProofTree, Resume, ResumeNotes, RunConfig, RunHandle,
};
use tierswarm_io::{store_file, Manifest, Outboard, Session, SessionEvent};

/// Every test is bounded by this.
pub const LIMIT: Duration = Duration::from_secs(60);

const MIB: u64 = 1 << 20;

/// `fut`, or a panic once [`LIMIT`] has passed (timed with `R`'s timer).
pub async fn bounded<R: Runtime, T>(fut: impl Future<Output = T>) -> T {
    let limit = std::pin::pin!(R::sleep_until(Instant::now() + LIMIT));
    match futures::future::select(std::pin::pin!(fut), limit).await {
        Either::Left((v, _)) => v,
        Either::Right(_) => panic!("test did not finish within {LIMIT:?}"),
    }
}

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

/// Session options with a peer id and a seed.
pub fn opts(name: &str, seed: u64) -> SessionOptions {
    SessionOptions {
        peer_id: name.into(),
        seed,
        ..SessionOptions::default()
    }
}

/// Limits that persist the store every 8 units.
pub fn small_persist_limits() -> Limits {
    Limits {
        persist_every: 8,
        ..Limits::default()
    }
}

/// Whether two files hold the same bytes.
pub fn same_bytes(a: &Path, b: &Path) -> bool {
    std::fs::read(a).unwrap() == std::fs::read(b).unwrap()
}

/// The manifest of `o`'s content.
pub fn outboard_manifest(o: &Outboard) -> Manifest {
    Manifest {
        root: o.root(),
        file_len: o.file_len(),
        name: "src.bin".into(),
    }
}

/// A listener on a fresh loopback port (any runtime adopts it with
/// [`Runtime::listener`]).
pub fn listener() -> std::net::TcpListener {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap()
}

/// Runs `session` on `R` (listening on `listener`, dialling `peers`) until it returns.
pub fn spawn_run<R: Runtime>(
    session: Session,
    listener: Option<std::net::TcpListener>,
    peers: Vec<SocketAddr>,
    stop_when_complete: bool,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_event: impl FnMut(&SessionEvent) + Send + 'static,
) -> Running {
    let cfg = RunConfig {
        listener,
        peers,
        stop_when_complete,
    };
    Running(spawn::<R>(session, cfg, shutdown, on_event))
}

/// A session running on some runtime.
pub struct Running(RunHandle);

impl Running {
    /// Its session and outcome, once it returns.
    pub async fn join(self) -> (Session, Outcome) {
        self.0.join().await.expect("the session was killed or lost")
    }

    /// Hard stop, as a crash: the run is dropped where it is (no drain, no final persist).
    /// Returns once it is gone.
    pub async fn kill(self) {
        assert!(
            self.0.kill().await,
            "the session ended before it was killed"
        );
    }
}

/// A serving session: its address, a trigger that shuts it down, and its result.
pub struct Serving {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: Running,
}

impl Serving {
    /// Shuts it down (drain) and returns its session and outcome.
    pub async fn stop(self) -> (Session, Outcome) {
        let _ = self.stop.send(());
        self.task.join().await
    }
}

/// Runs `session` on `R`, on `listener` (and dialling `peers`) until stopped.
pub fn serve<R: Runtime>(
    session: Session,
    listener: std::net::TcpListener,
    peers: Vec<SocketAddr>,
) -> Serving {
    serve_with::<R>(session, listener, peers, |_| {})
}

/// [`serve`], with `on_event` seeing every event.
pub fn serve_with<R: Runtime>(
    session: Session,
    listener: std::net::TcpListener,
    peers: Vec<SocketAddr>,
    on_event: impl FnMut(&SessionEvent) + Send + 'static,
) -> Serving {
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = oneshot::channel::<()>();
    let shutdown = async move {
        let _ = rx.await;
    };
    let task = spawn_run::<R>(session, Some(listener), peers, false, shutdown, on_event);
    Serving { addr, stop, task }
}

/// A seeder of `path` on `R`, on a fresh loopback port.
pub fn seed<R: Runtime>(path: &Path, options: SessionOptions) -> (Serving, Manifest) {
    let s = Session::seeder(path, options).unwrap();
    let manifest = s.manifest().clone();
    (serve::<R>(s, listener(), vec![]), manifest)
}

/// Fetches `manifest` into `out` from `peers` on `R` until complete.
pub async fn fetch<R: Runtime>(
    manifest: &Manifest,
    out: &Path,
    peers: Vec<SocketAddr>,
    options: SessionOptions,
) -> (Session, Outcome, ResumeNotes) {
    let (s, notes) = Session::leecher(manifest, out, Resume::Check, options).unwrap();
    let pending = std::future::pending();
    let (s, outcome) = spawn_run::<R>(s, None, peers, true, pending, |_| {})
        .join()
        .await;
    (s, outcome, notes)
}

/// Sends every event into a channel (for tests that wait on progress).
pub fn events() -> (
    impl FnMut(&SessionEvent) + Send + 'static,
    mpsc::UnboundedReceiver<SessionEvent>,
) {
    let (tx, rx) = mpsc::unbounded();
    (
        move |e: &SessionEvent| drop(tx.unbounded_send(e.clone())),
        rx,
    )
}

/// A fetch killed hard (no drain, no final persist) after some store writes resumes from the
/// store and requests none of the units it had persisted. Every session runs on `R`.
pub async fn killed_fetch_resumes_without_refetching_verified_units<R: Runtime>() {
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let len = 4 * MIB + 100;
    let src = make_file(dir.path(), "src.bin", len, 3);
    let bytes = std::fs::read(&src).unwrap();
    let outboard = Outboard::build(&bytes[..], len).unwrap();
    let geo = Geometry::new(len).unwrap();
    // A partial seeder holding units 0..40 of 65: the first fetch cannot finish.
    let partial = dir.path().join("partial.bin");
    std::fs::copy(&src, &partial).unwrap();
    let (pstore, ptree) = store_paths(&partial);
    let mut tiers = LocalTiers::new(geo);
    let mut tree = ProofTree::open(&outboard.root(), len, &ptree).unwrap();
    for u in 0..40 {
        tiers.mark_t1_complete(u).unwrap();
        tree.learn(u, &outboard.proof(u).unwrap()).unwrap();
    }
    tree.sync().unwrap();
    store_file::save(
        &pstore,
        &StoreState::from_tiers(outboard.root(), &tiers, 0).encode(),
    )
    .unwrap();
    let manifest = outboard_manifest(&outboard);
    let (ps, notes) =
        Session::leecher(&manifest, &partial, Resume::Check, opts("partial", 5)).unwrap();
    assert_eq!(notes.units, 40);
    let partial_seed = serve::<R>(ps, listener(), vec![]);

    let out = dir.path().join("out.bin");
    let mut o = opts("leech", 6);
    o.limits = small_persist_limits();
    let (s, _) = Session::leecher(&manifest, &out, Resume::Check, o).unwrap();
    let (on_event, mut events) = events();
    let pending = std::future::pending();
    let task = spawn_run::<R>(s, None, vec![partial_seed.addr], true, pending, on_event);
    loop {
        match events.next().await.unwrap() {
            SessionEvent::Persisted { units } if units >= 16 => break,
            _ => {}
        }
    }
    task.kill().await;
    let (store, _) = store_paths(&out);
    let saved = store_file::load(&store).unwrap().unwrap();
    let (state, _) = StoreState::decode_for(&saved, &outboard.root(), len).unwrap();
    let before = state.tiers.bitfield(Tier::T1).clone();
    assert!(before.count_ones() >= 16 && before.count_ones() <= 40);

    // Restart against a full seeder: resumes, and asks for none of the persisted units.
    let (seeder, _) = seed::<R>(&src, opts("seed", 7));
    let (s, outcome, notes) =
        fetch::<R>(&manifest, &out, vec![seeder.addr], opts("leech", 8)).await;
    assert_eq!(outcome, Outcome::Complete);
    assert_eq!(notes.units, before.count_ones());
    let asked = s.requested_units();
    for u in before.iter_ones_in(0..geo.units()) {
        assert!(
            !asked.get(u),
            "unit {u} was verified before the kill yet requested again"
        );
    }
    assert_eq!(asked.count_ones() + before.count_ones(), geo.units());
    assert!(same_bytes(&src, &out));
    seeder.stop().await;
    partial_seed.stop().await;
}

/// A seeder and a leecher on `R` with flight recorders: both records replay identically, and a
/// tampered one is caught.
pub async fn recorded_sessions_replay_identically<R: Runtime>() {
    let dir = tempfile::tempdir().unwrap();
    let src = make_file(dir.path(), "src.bin", MIB + 999, 5);
    let mut so = opts("seed", 11);
    so.record = Some(dir.path().join("seed.jsonl"));
    let (seeder, manifest) = seed::<R>(&src, so);
    let mut lo = opts("leech", 12);
    lo.record = Some(dir.path().join("leech.jsonl"));
    let out = dir.path().join("out.bin");
    let (_, outcome, _) = fetch::<R>(&manifest, &out, vec![seeder.addr], lo).await;
    assert_eq!(outcome, Outcome::Complete);
    assert!(same_bytes(&src, &out));
    seeder.stop().await;
    for name in ["seed.jsonl", "leech.jsonl"] {
        let report = recorder::replay(&dir.path().join(name)).unwrap();
        assert!(
            report.inputs > 10 && report.actions > 10,
            "{name}: {report:?}"
        );
    }
    let path = dir.path().join("leech.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let tampered = text.replacen(
        "\"in\":\"complete\",\"unit\":",
        "\"in\":\"complete\",\"unit\":1",
        1,
    );
    assert_ne!(tampered, text);
    std::fs::write(&path, tampered).unwrap();
    assert!(recorder::replay(&path).is_err());
}
