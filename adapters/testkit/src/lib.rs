//! Helpers shared by the adapters' loopback tests, so that one scenario runs on every runtime
//! and every transport, and across them. Dev-only: every failure here is a test failure, so it
//! panics freely.
//!
//! A [`Host`] is where a test node runs: a runtime (sessions are spawned on it, not on the one
//! awaiting them, so a tokio test can run async-std and smol peers beside tokio ones) and a
//! [`Net`] (the transports each node gets, and where it listens: TCP, QUIC with a fresh
//! certificate per node, or an in-memory network without sockets). The scenarios below take
//! hosts; each adapter's tests instantiate them.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bench;
pub mod hostile;
pub mod proxy;
pub mod robust;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::channel::{mpsc, oneshot};
use futures::future::{BoxFuture, Either};
use futures::FutureExt;
use tierswarm_core::node::Limits;
use tierswarm_core::store::StoreState;
use tierswarm_core::{Geometry, LocalTiers, Tier};
use tierswarm_io::driver::{recorder, Runtime, SessionOptions};
use tierswarm_io::driver::{
    spawn, store_paths, Outcome, ProofTree, Resume, ResumeNotes, RunConfig, RunHandle,
};
use tierswarm_io::transport::mem::{Mem, MemNet};
use tierswarm_io::transport::{Listener, PeerUrl, Transports};
use tierswarm_io::{hash_file_root, store_file, Manifest, Outboard, Session, SessionEvent};
use tierswarm_quic::Identity;

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

/// A runtime glue's transport set, given a QUIC identity (`tierswarm_tokio::transports`, ...).
pub type MakeTransports = fn(Option<Identity>) -> Transports;

/// How test nodes reach each other: the transports each node gets and where it listens.
#[derive(Clone)]
pub struct Net {
    name: String,
    listen_at: PeerUrl,
    make: Arc<dyn Fn() -> Transports + Send + Sync>,
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

impl Net {
    /// TCP on loopback, with a glue's transports.
    pub fn tcp(make: MakeTransports) -> Net {
        Net {
            name: "tcp".into(),
            listen_at: "tcp://127.0.0.1:0".parse().unwrap(),
            make: Arc::new(move || make(None)),
        }
    }

    /// QUIC on loopback, with a glue's transports; every node gets a fresh certificate.
    pub fn quic(make: MakeTransports) -> Net {
        Net {
            name: "quic".into(),
            listen_at: "quic://127.0.0.1:0".parse().unwrap(),
            make: Arc::new(move || make(Some(Identity::generate()))),
        }
    }

    /// A fresh in-memory network (no sockets): nodes of this `Net` reach each other only.
    pub fn mem() -> Net {
        let net = MemNet::default();
        Net {
            name: "mem".into(),
            listen_at: "mem://0".parse().unwrap(),
            make: Arc::new(move || Transports::new().with(Mem::new(&net))),
        }
    }

    /// `tcp`, `quic` or `mem`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A node's transports.
    pub fn transports(&self) -> Transports {
        (self.make)()
    }

    /// A node's transports and a listener on a fresh address (inside the runtime, for tokio).
    pub fn bind(&self) -> (Transports, Box<dyn Listener>) {
        let transports = self.transports();
        let listener = transports.listen(&self.listen_at).unwrap();
        (transports, listener)
    }
}

type SpawnFn = fn(
    Session,
    RunConfig,
    BoxFuture<'static, ()>,
    Box<dyn FnMut(&SessionEvent) + Send>,
) -> RunHandle;

fn spawn_on<R: Runtime>(
    session: Session,
    cfg: RunConfig,
    shutdown: BoxFuture<'static, ()>,
    on_event: Box<dyn FnMut(&SessionEvent) + Send>,
) -> RunHandle {
    spawn::<R>(session, cfg, shutdown, on_event)
}

fn sleep_on<R: Runtime>(at: Instant) -> BoxFuture<'static, ()> {
    R::sleep_until(at).boxed()
}

/// Where a test node runs: a runtime and a [`Net`].
#[derive(Clone)]
pub struct Host {
    spawn: SpawnFn,
    sleep: fn(Instant) -> BoxFuture<'static, ()>,
    /// The node's transports and listening address.
    pub net: Net,
}

impl Host {
    /// Nodes on runtime `R`, reaching each other over `net`.
    pub fn on<R: Runtime>(net: &Net) -> Host {
        Host {
            spawn: spawn_on::<R>,
            sleep: sleep_on::<R>,
            net: net.clone(),
        }
    }

    /// Resolves after `d`, on the host's runtime (for tests that wait on a condition).
    pub fn pause(&self, d: Duration) -> BoxFuture<'static, ()> {
        (self.sleep)(Instant::now() + d)
    }

    /// Waits until `done` holds, looking every 20 ms (the caller bounds the whole test).
    pub async fn until(&self, mut done: impl FnMut() -> bool) {
        while !done() {
            self.pause(Duration::from_millis(20)).await;
        }
    }

    /// Runs `session` (with `transports`, listening on `listener`, dialling `peers`) until it
    /// returns.
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &self,
        session: Session,
        transports: Transports,
        listener: Option<Box<dyn Listener>>,
        peers: Vec<PeerUrl>,
        stop_when_complete: bool,
        shutdown: impl Future<Output = ()> + Send + 'static,
        on_event: impl FnMut(&SessionEvent) + Send + 'static,
    ) -> Running {
        let cfg = RunConfig {
            transports,
            listeners: listener.into_iter().collect(),
            peers,
            stop_when_complete,
        };
        Running((self.spawn)(
            session,
            cfg,
            shutdown.boxed(),
            Box::new(on_event),
        ))
    }

    /// Runs `session` on a fresh listener (and dialling `peers`) until stopped.
    pub fn serve(&self, session: Session, peers: Vec<PeerUrl>) -> Serving {
        self.serve_with(session, peers, |_| {})
    }

    /// [`serve`](Self::serve), with `on_event` seeing every event.
    pub fn serve_with(
        &self,
        session: Session,
        peers: Vec<PeerUrl>,
        on_event: impl FnMut(&SessionEvent) + Send + 'static,
    ) -> Serving {
        let (transports, listener) = self.net.bind();
        self.serve_on(session, transports, listener, peers, on_event)
    }

    /// [`serve_with`](Self::serve_with) on a listener bound earlier.
    pub fn serve_on(
        &self,
        session: Session,
        transports: Transports,
        listener: Box<dyn Listener>,
        peers: Vec<PeerUrl>,
        on_event: impl FnMut(&SessionEvent) + Send + 'static,
    ) -> Serving {
        let url = listener.url();
        let (stop, rx) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = rx.await;
        };
        let task = self.run(
            session,
            transports,
            Some(listener),
            peers,
            false,
            shutdown,
            on_event,
        );
        Serving { url, stop, task }
    }

    /// A seeder of `path` on a fresh listener.
    pub fn seed(&self, path: &Path, options: SessionOptions) -> (Serving, Manifest) {
        let s = Session::seeder(path, options).unwrap();
        let manifest = s.manifest().clone();
        (self.serve(s, vec![]), manifest)
    }

    /// Fetches `manifest` into `out` from `peers` until complete (or failed).
    pub async fn fetch(
        &self,
        manifest: &Manifest,
        out: &Path,
        peers: Vec<PeerUrl>,
        options: SessionOptions,
    ) -> (Session, Outcome, ResumeNotes) {
        let (s, notes) = Session::leecher(manifest, out, Resume::Check, options).unwrap();
        let transports = self.net.transports();
        let pending = std::future::pending();
        let (s, outcome) = self
            .run(s, transports, None, peers, true, pending, |_| {})
            .join()
            .await;
        (s, outcome, notes)
    }
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

/// A serving session: its URL, a trigger that shuts it down, and its result.
pub struct Serving {
    /// Where it listens.
    pub url: PeerUrl,
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

/// A seeder on `seeder`'s host serves a leecher on `leecher`'s host: the copy is identical, and
/// a second fetch of the complete file asks nothing.
pub async fn verified_fetch(seeder: &Host, leecher: &Host) {
    let dir = tempfile::tempdir().unwrap();
    let src = make_file(dir.path(), "src.bin", 3 * MIB + 12345, 1);
    let (serving, manifest) = seeder.seed(&src, opts("seed", 1));
    assert_eq!(
        manifest.root,
        *blake3_of(&src),
        "the root is the plain BLAKE3 of the file"
    );
    let out = dir.path().join("out.bin");
    let peers = vec![serving.url.clone()];
    let (l, outcome, notes) = leecher
        .fetch(&manifest, &out, peers.clone(), opts("l", 2))
        .await;
    assert_eq!(outcome, Outcome::Complete);
    assert_eq!(notes.units, 0);
    assert!(same_bytes(&src, &out));
    assert_eq!(l.stats().failed_units, 0);
    assert_eq!(l.requested_units().count_ones(), 49);
    // The store says complete; a second fetch has nothing to do and asks nothing.
    let (again, outcome, notes) = leecher.fetch(&manifest, &out, peers, opts("l2", 3)).await;
    assert_eq!(outcome, Outcome::Complete);
    assert_eq!(notes.units, 49);
    assert_eq!(again.requested_units().count_ones(), 0);
    let (s, outcome) = serving.stop().await;
    assert_eq!(outcome, Outcome::Drained);
    assert!(s.stats().units_served >= 49);
}

fn blake3_of(path: &Path) -> Box<[u8; 32]> {
    let f = std::fs::File::open(path).unwrap();
    Box::new(hash_file_root(std::io::BufReader::new(f)).unwrap())
}

/// A fetch killed hard (no drain, no final persist) after some store writes resumes from the
/// store and requests none of the units it had persisted.
pub async fn killed_fetch_resumes_without_refetching_verified_units(host: &Host) {
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
    let partial_seed = host.serve(ps, vec![]);

    let out = dir.path().join("out.bin");
    let mut o = opts("leech", 6);
    o.limits = small_persist_limits();
    let (s, _) = Session::leecher(&manifest, &out, Resume::Check, o).unwrap();
    let (on_event, mut events) = events();
    let peers = vec![partial_seed.url.clone()];
    let pending = std::future::pending();
    let task = host.run(
        s,
        host.net.transports(),
        None,
        peers,
        true,
        pending,
        on_event,
    );
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
    let (seeder, _) = host.seed(&src, opts("seed", 7));
    let peers = vec![seeder.url.clone()];
    let (s, outcome, notes) = host.fetch(&manifest, &out, peers, opts("leech", 8)).await;
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

/// A seeder and a leecher with flight recorders: both records replay identically, and a
/// tampered one is caught.
pub async fn recorded_sessions_replay_identically(host: &Host) {
    let dir = tempfile::tempdir().unwrap();
    let src = make_file(dir.path(), "src.bin", MIB + 999, 5);
    let mut so = opts("seed", 11);
    so.record = Some(dir.path().join("seed.jsonl"));
    let (seeder, manifest) = host.seed(&src, so);
    let mut lo = opts("leech", 12);
    lo.record = Some(dir.path().join("leech.jsonl"));
    let out = dir.path().join("out.bin");
    let peers = vec![seeder.url.clone()];
    let (_, outcome, _) = host.fetch(&manifest, &out, peers, lo).await;
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

/// A peer that sends corrupt units (with well-formed proofs) is dropped after the first, and
/// the download completes from an honest seeder.
pub async fn corrupt_peer_is_dropped_and_download_completes(host: &Host) {
    // On the verify workers whatever the machine (two cores or fewer verify on the loop by
    // default: `default_max_verifying`).
    let leech = SessionOptions {
        max_verifying: tierswarm_io::driver::DEFAULT_MAX_VERIFYING,
        ..opts("leech", 2)
    };
    corrupt_peer_case(host, leech).await;
}

/// [`corrupt_peer_is_dropped_and_download_completes`] with every received unit verified and
/// written on the driver's loop (`max_verifying` 0: the default on two cores or fewer, and the
/// path a loop takes once its workers hold [`SessionOptions::max_verifying`] units): a good
/// unit is written, a bad one drops its sender, as on a worker.
pub async fn units_verified_on_the_loop(host: &Host) {
    let leech = SessionOptions {
        max_verifying: 0,
        ..opts("leech", 2)
    };
    corrupt_peer_case(host, leech).await;
}

async fn corrupt_peer_case(host: &Host, leech: SessionOptions) {
    let dir = tempfile::tempdir().unwrap();
    let len = 2 * MIB + 5;
    let src = make_file(dir.path(), "src.bin", len, 4);
    let (_, hostile_listener) = host.net.bind();
    let hostile_url = hostile_listener.url();
    // The honest seeder's listener is bound but not served until the hostile peer is dropped,
    // so the hostile one gets the first requests.
    let (honest_transports, honest_listener) = host.net.bind();
    let honest_url = honest_listener.url();
    let s = Session::seeder(&src, opts("seed", 1)).unwrap();
    let manifest = s.manifest().clone();
    let out = dir.path().join("out.bin");
    let (l, _) = Session::leecher(&manifest, &out, Resume::Check, leech).unwrap();
    let peers = vec![hostile_url, honest_url];
    let pending = std::future::pending();
    let fetching = host.run(l, host.net.transports(), None, peers, true, pending, |_| {});
    let corrupted = hostile::serve_corrupt_units(hostile_listener, &src).await;
    assert!(corrupted >= 1, "the hostile peer was never asked");
    let seeder = host.serve_on(s, honest_transports, honest_listener, vec![], |_| {});
    let (leecher, outcome) = fetching.join().await;
    assert_eq!(outcome, Outcome::Complete);
    assert!(leecher.stats().failed_units >= 1);
    assert_eq!(
        leecher
            .stats()
            .disconnects
            .get(&tierswarm_core::node::DisconnectKind::FailedVerification),
        Some(&1)
    );
    assert!(same_bytes(&src, &out));
    // Three pieces of 1 MiB, each valued once its last unit was written (bad units are never
    // written), from its units' values: every unit verified and written whole;
    // the final check hashes only pieces written again since.
    let read_back = leecher
        .read_back_stats()
        .expect("a download of three pieces");
    assert_eq!(
        (
            read_back.pieces,
            read_back.pieces_read_back,
            read_back.pieces_merged
        ),
        (3, 3, 3)
    );
    assert!(read_back.pieces_hashed_at_check <= 3);
    seeder.stop().await;
}

/// One seeder (one upload slot, so the leechers must trade) and a leecher per host in
/// `leechers`; leecher `i` dials the seeder and leechers `0..i` at their listening URLs. Every
/// leecher completes with a verified copy, and leechers served each other.
pub async fn swarm_completes(seeder: &Host, leechers: &[Host]) {
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let src = make_file(dir.path(), "src.bin", 6 * MIB + 4321, 9);
    let mut seed_opts = opts("seed", 30);
    seed_opts.limits.upload_slots = 1;
    seed_opts.limits.upload_slots_per_peer = 1;
    let (serving, manifest) = seeder.seed(&src, seed_opts);
    let (done_tx, mut done_rx) = mpsc::unbounded();
    let mut urls = vec![serving.url.clone()];
    let mut peers = Vec::new();
    for (i, host) in leechers.iter().enumerate() {
        let out = dir.path().join(format!("out{i}.bin"));
        let o = opts(&format!("l{i}"), 40 + i as u64);
        let (s, _) = Session::leecher(&manifest, &out, Resume::Check, o).unwrap();
        let (transports, listener) = host.net.bind();
        let url = listener.url();
        let done = done_tx.clone();
        peers.push(
            host.serve_on(s, transports, listener, urls.clone(), move |e| {
                if *e == SessionEvent::Complete {
                    let _ = done.unbounded_send(i);
                }
            }),
        );
        urls.push(url);
    }
    let mut finished = vec![false; leechers.len()];
    for _ in 0..leechers.len() {
        finished[done_rx.next().await.unwrap()] = true;
    }
    assert!(finished.iter().all(|f| *f));
    let mut leechers_served = 0;
    for (i, p) in peers.into_iter().enumerate() {
        let (s, outcome) = p.stop().await;
        assert_eq!(outcome, Outcome::Drained);
        assert!(s.is_complete());
        assert_eq!(s.stats().failed_units, 0);
        leechers_served += s.stats().units_served;
        let out = dir.path().join(format!("out{i}.bin"));
        assert_eq!(
            *blake3_of(&out),
            manifest.root,
            "leecher {i}'s output does not verify"
        );
    }
    assert!(leechers_served > 0, "leechers never served each other");
    serving.stop().await;
}

/// The transport seam's promises, over `net` (driven by the caller's runtime): frames of one
/// class arrive whole and in order whatever else is in flight; each side reads a clean end after
/// the other closes, with nothing lost; a unit cancelled before it is written is not sent if
/// `cancel_stops` (QUIC), and sent anyway otherwise (a byte stream cannot take a frame back).
pub async fn transport_keeps_its_promises(net: &Net, cancel_stops: bool) {
    use std::collections::BTreeSet;
    use tierswarm_core::wire::{encode_frame, Message};
    use tierswarm_io::transport::{Class, Framing, OutFrame};
    let framing = Framing {
        limits: tierswarm_core::wire::FrameLimits::for_geometry(Geometry::new(1 << 30).unwrap()),
        keep_raw: true,
    };
    let frame = |msg: &Message, class, unit| {
        let mut b = bytes::BytesMut::new();
        encode_frame(&[7; 32], msg, &mut b);
        // In two parts, as a unit's header and payload would be.
        let mut f = OutFrame::new(b.split_to(3).freeze(), class, unit);
        f.parts.push(b.freeze());
        f
    };
    let (transports, mut listener) = net.bind();
    let url = listener.url();
    let (a, b) = futures::join!(listener.accept(framing), transports.connect(&url, framing));
    let (mut a, mut b) = (a.unwrap(), b.unwrap());
    b.writer.cancel(7);
    let sending = async {
        // Frames over 1 KiB are accepted only after the peer's handshake.
        let hello = Message::Handshake {
            info_hash: bytes::Bytes::from_static(&[7; 32]),
            peer_id: "b".into(),
            capabilities: None,
        };
        b.writer
            .write(frame(&hello, Class::Control, None))
            .await
            .unwrap();
        for i in 0..40u64 {
            let have = frame(&Message::Have { unit: i }, Class::Control, None);
            b.writer.write(have).await.unwrap();
            if i % 4 == 0 {
                let unit = i / 4;
                let data = vec![unit as u8; 65_536].into();
                let t = Message::Transfer {
                    unit,
                    data,
                    proof: None,
                };
                b.writer
                    .write(frame(&t, Class::Data, Some(unit)))
                    .await
                    .unwrap();
            }
        }
        b.writer.flush().await.unwrap();
        b.writer.close().await.unwrap();
    };
    let receiving = async {
        let (mut haves, mut units) = (Vec::new(), BTreeSet::new());
        while let Some(incoming) = a.reader.next_frame().await.unwrap() {
            assert!(incoming.raw.is_some(), "keep_raw was asked for");
            match incoming.frame.msg {
                Message::Handshake { .. } => {}
                Message::Have { unit } => haves.push(unit),
                Message::Transfer { unit, data, .. } => {
                    assert!(data.iter().all(|&b| b == unit as u8) && data.len() == 65_536);
                    assert!(units.insert(unit), "unit {unit} twice");
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        a.writer.close().await.unwrap();
        (haves, units)
    };
    let ((), (haves, units)) = futures::join!(sending, receiving);
    assert_eq!(
        haves,
        (0..40).collect::<Vec<_>>(),
        "control frames out of order"
    );
    let expected: BTreeSet<u64> = (0..10).filter(|&u| !(cancel_stops && u == 7)).collect();
    assert_eq!(units, expected);
    assert!(b.reader.next_frame().await.unwrap().is_none());
}

/// A `quic://` peer whose certificate is not the one pinned in its URL is refused, and the
/// fetch fails saying so.
pub async fn wrong_fingerprint_is_refused(host: &Host) {
    let dir = tempfile::tempdir().unwrap();
    let src = make_file(dir.path(), "src.bin", MIB, 13);
    let (seeder, manifest) = host.seed(&src, opts("seed", 1));
    assert_eq!(seeder.url.scheme(), "quic");
    let other = Identity::generate().fingerprint().to_string();
    let wrong = PeerUrl::new("quic", seeder.url.authority(), Some(&other)).unwrap();
    let out = dir.path().join("out.bin");
    let (s, outcome, _) = host.fetch(&manifest, &out, vec![wrong], opts("l", 2)).await;
    let Outcome::Failed(reason) = outcome else {
        panic!("a peer with the wrong certificate was trusted: {outcome:?}")
    };
    assert!(
        reason.contains(&format!("not the pinned {other}"))
            && reason.contains(seeder.url.fragment().unwrap()),
        "{reason}"
    );
    assert_eq!(s.progress().0, 0);
    let (served, _) = seeder.stop().await;
    assert_eq!(served.stats().units_served, 0);
}

/// Two nodes that dial each other (a seeder and a leecher, each listening and each given the
/// other's URL) end up with one connection between them, not two: each side keeps the one the
/// node with the smaller peer id dialled (that both sides pick the same one is the driver's
/// unit test), and a second connection is closed before it is reported ready, so the leecher's
/// events never show two ready connections to the seeder at once. The download completes over
/// the one kept. (The node's own list at the end is no witness: once both hold the whole file,
/// the seeder may close the connection before the leecher stops.)
pub async fn crossed_dials_keep_one_connection(host: &Host) {
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let src = make_file(dir.path(), "src.bin", 3 * MIB + 777, 12);
    let seeder = Session::seeder(&src, opts("a-seed", 1)).unwrap();
    let manifest = seeder.manifest().clone();
    let out = dir.path().join("out.bin");
    let (leecher, _) =
        Session::leecher(&manifest, &out, Resume::Check, opts("b-leech", 2)).unwrap();
    let (seed_transports, seed_listener) = host.net.bind();
    let (leech_transports, leech_listener) = host.net.bind();
    let (seed_url, leech_url) = (seed_listener.url(), leech_listener.url());
    let seeding = host.serve_on(
        seeder,
        seed_transports,
        seed_listener,
        vec![leech_url],
        |_| {},
    );
    let (on_event, mut events) = events();
    let leeching = host.serve_on(
        leecher,
        leech_transports,
        leech_listener,
        vec![seed_url],
        on_event,
    );
    // Ready connections now, by connection, with the peer id each handshake gave.
    let mut live = std::collections::BTreeMap::new();
    let mut ready_at_end = 0;
    while let Some(e) = events.next().await {
        match e {
            SessionEvent::PeerReady { peer, remote, .. } => {
                assert_eq!(remote, "a-seed");
                live.insert(peer, remote);
                assert_eq!(
                    live.len(),
                    1,
                    "two ready connections to the seeder: {live:?}"
                );
            }
            SessionEvent::PeerGone { peer, .. } => {
                live.remove(&peer);
            }
            SessionEvent::Complete => {
                ready_at_end = live.len();
                break;
            }
            _ => {}
        }
    }
    assert_eq!(ready_at_end, 1, "completed over {ready_at_end} connections");
    let (_, outcome) = leeching.stop().await;
    assert_eq!(outcome, Outcome::Drained);
    seeding.stop().await;
    assert_eq!(*blake3_of(&out), manifest.root);
}
