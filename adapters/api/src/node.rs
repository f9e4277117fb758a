//! The builder: what a node is, then [`Node::share`] or [`Node::fetch`] to start it.

use std::path::{Path, PathBuf};

use tierswarm_core::node::Limits;
use tierswarm_io::driver::{Resume, RunConfig, SessionError, SessionOptions};
use tierswarm_io::transport::{Listener, PeerUrl, Transports};
use tierswarm_io::{Manifest, Session};
use tierswarm_quic::{Identity, IdentityError};

use crate::transfer::{self, Transfer};
use crate::{AddressRole, Error, Runtime};

/// A node to be started: a builder. Every setting has a default; [`share`](Self::share) and
/// [`fetch`](Self::fetch) check the settings, bind the listeners and start the transfer.
///
/// - Addresses are URLs: `tcp://HOST:PORT`, `quic://HOST:PORT#FINGERPRINT` (the peer's pinned
///   certificate fingerprint, as its listener prints it); a bare `HOST:PORT` is TCP.
/// - Rates are bytes per second ([`parse_rate`](crate::parse_rate) reads `16MiB/s`,
///   `500KiB/s`, `2MB/s`, `100Mbit/s`).
///
/// ```
/// # fn main() -> Result<(), tierswarm::Error> {
/// use tierswarm::{Node, Outcome, Runtime};
/// let dir = tempfile::tempdir().unwrap();
/// let file = dir.path().join("data.bin");
/// std::fs::write(&file, vec![42u8; 1 << 20]).unwrap();
/// let seeder = Node::new()
///     .runtime(Runtime::Smol)
///     .listen("tcp://127.0.0.1:0")
///     .max_upload_rate(tierswarm::parse_rate("64MiB/s").unwrap())
///     .share(&file)?;
/// let fetched = Node::new()
///     .runtime(Runtime::AsyncStd)
///     .peer(seeder.listening()[0].to_string())
///     .fetch(seeder.manifest(), dir.path().join("copy.bin"))?
///     .wait()?;
/// assert_eq!(fetched.outcome, Outcome::Complete);
/// assert_eq!(fetched.bytes_downloaded, 1 << 20);
/// assert_eq!(fetched.request_timeouts, 0);
/// seeder.abort();
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Node {
    pub(crate) runtime: Runtime,
    listen: Vec<String>,
    peers: Vec<String>,
    pub(crate) limits: Limits,
    legacy: bool,
    record: Option<PathBuf>,
    identity: Option<PathBuf>,
    seed: Option<u64>,
    resume: Resume,
    pub(crate) keep_serving: bool,
}

impl Default for Node {
    fn default() -> Self {
        Node::new()
    }
}

impl Node {
    /// A node on tokio with the default [`Limits`] (those of `tierswarm-io`'s sessions), no
    /// listener, no peer, hierarchical, no record.
    pub fn new() -> Node {
        Node {
            runtime: Runtime::default(),
            listen: Vec::new(),
            peers: Vec::new(),
            limits: SessionOptions::default().limits,
            legacy: false,
            record: None,
            identity: None,
            seed: None,
            resume: Resume::default(),
            keep_serving: false,
        }
    }

    /// The async runtime of the node's network.
    pub fn runtime(mut self, runtime: Runtime) -> Self {
        self.runtime = runtime;
        self
    }

    /// Accepts peers at `url` (`tcp://127.0.0.1:0` picks a free port; the bound address is in
    /// [`Transfer::listening`]). Repeatable: a node may listen on TCP and QUIC.
    pub fn listen(mut self, url: impl Into<String>) -> Self {
        self.listen.push(url.into());
        self
    }

    /// Connects to the peer at `url` (every address its host resolves to). Repeatable.
    pub fn peer(mut self, url: impl Into<String>) -> Self {
        self.peers.push(url.into());
        self
    }

    /// The core's limits (windows, slots, timeouts, rates). The rate setters below change only
    /// the rates.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Uploads at most `bytes_per_second` (units served are paced by a token bucket).
    pub fn max_upload_rate(mut self, bytes_per_second: u64) -> Self {
        self.limits.max_upload_rate = Some(bytes_per_second);
        self
    }

    /// Downloads at most `bytes_per_second` (requests are paced by a token bucket, so they
    /// wait here rather than time out at the peer).
    pub fn max_download_rate(mut self, bytes_per_second: u64) -> Self {
        self.limits.max_download_rate = Some(bytes_per_second);
        self
    }

    /// Speaks only the flat protocol (a legacy peer: no capability fields in the handshake,
    /// bitfield, HAVE, request, transfer, reject), so the node stands in for a peer of the
    /// original project.
    pub fn legacy(mut self, legacy: bool) -> Self {
        self.legacy = legacy;
        self
    }

    /// Writes a flight record of every core input (JSON lines) at `path`, for
    /// [`replay`](crate::replay).
    pub fn record(mut self, path: impl Into<PathBuf>) -> Self {
        self.record = Some(path.into());
        self
    }

    /// Keeps the node's QUIC certificate and key at `path` (made there on first use), so that
    /// its fingerprint stays the same from run to run. Without it a QUIC listener gets a fresh
    /// certificate each run.
    pub fn quic_identity(mut self, path: impl Into<PathBuf>) -> Self {
        self.identity = Some(path.into());
        self
    }

    /// The seed of the core's random choices (default: from the clock and the process id).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// How a fetch treats what an earlier run left at its output (default: check and resume).
    pub fn resume(mut self, resume: Resume) -> Self {
        self.resume = resume;
        self
    }

    /// Whether a fetch keeps serving once its file is complete (until drained), as a swarm's
    /// leechers do; by default it ends when complete.
    pub fn keep_serving(mut self, keep: bool) -> Self {
        self.keep_serving = keep;
        self
    }

    /// Serves the file at `file` until [drained](Transfer::drain): hashes it once (its manifest
    /// is [`Transfer::manifest`]), binds the listeners and dials the peers.
    ///
    /// ```
    /// # fn main() -> Result<(), tierswarm::Error> {
    /// use tierswarm::{Event, Node};
    /// let dir = tempfile::tempdir().unwrap();
    /// let file = dir.path().join("f.bin");
    /// std::fs::write(&file, vec![3u8; 200_000]).unwrap();
    /// let mut seeder = Node::new().listen("127.0.0.1:0").share(&file)?;
    /// seeder.manifest().save(dir.path().join("f.bin.tsm")).unwrap();
    /// let url = seeder.listening()[0].to_string();
    /// let fetcher = std::thread::spawn(move || {
    ///     let out = tempfile::tempdir().unwrap();
    ///     let manifest = tierswarm::Manifest::load(dir.path().join("f.bin.tsm")).unwrap();
    ///     Node::new().peer(url).fetch(&manifest, out.path().join("f")).unwrap().wait()
    /// });
    /// // The seeder's events: the fetcher connects, is served, and disconnects.
    /// let cancel = seeder.canceller();
    /// while let Some(event) = seeder.next_event() {
    ///     if let Event::PeerDisconnected { .. } = event {
    ///         cancel.drain();
    ///     }
    /// }
    /// assert!(fetcher.join().unwrap()?.is_complete());
    /// assert_eq!(seeder.wait()?.served_to.values().sum::<u64>(), 4);
    /// # Ok(()) }
    /// ```
    pub fn share(self, file: impl AsRef<Path>) -> Result<Transfer, Error> {
        let file = file.as_ref();
        let session = Session::seeder(file, self.options()).map_err(|e| match e {
            SessionError::Record { .. } => Error::Input(e.to_string()),
            e => Error::Failed(e.to_string()),
        })?;
        // A seeder is complete from the start: it serves until drained.
        self.start(session, None, false)
    }

    /// Downloads `manifest`'s file into `out` from the peers, resuming from what an earlier run
    /// left there (`OUT.tsa`, `OUT.tsp`; see [`resume`](Self::resume)); serves what it has to
    /// peers meanwhile. Ends once the file is complete and hashes to the root (unless
    /// [`keep_serving`](Self::keep_serving)).
    ///
    /// ```
    /// # fn main() -> Result<(), tierswarm::Error> {
    /// use tierswarm::{Event, Node, Outcome};
    /// let dir = tempfile::tempdir().unwrap();
    /// let file = dir.path().join("f.bin");
    /// std::fs::write(&file, vec![9u8; 500_000]).unwrap();
    /// let seeder = Node::new().listen("127.0.0.1:0").share(&file)?;
    /// let mut fetch = Node::new()
    ///     .peer(seeder.listening()[0].to_string())
    ///     .fetch(seeder.manifest(), dir.path().join("copy"))?;
    /// let mut verified = 0;
    /// while let Some(event) = fetch.next_event() {
    ///     match event {
    ///         Event::UnitVerified { .. } => verified += 1,
    ///         Event::Done(report) => assert_eq!(report.outcome, Outcome::Complete),
    ///         _ => {}
    ///     }
    /// }
    /// assert_eq!(verified, 8); // 500 000 bytes: eight 64 KiB units
    /// let report = fetch.wait()?;
    /// assert_eq!(report.units_from.values().sum::<u64>(), 8);
    /// # Ok(()) }
    /// ```
    pub fn fetch(self, manifest: &Manifest, out: impl AsRef<Path>) -> Result<Transfer, Error> {
        let (session, notes) =
            Session::leecher(manifest, out.as_ref(), self.resume, self.options())
                // Whatever stops a download before it starts is its input: the output path, what
                // an earlier run left there, the record path.
                .map_err(|e| Error::Input(e.to_string()))?;
        let stop_when_complete = !self.keep_serving;
        self.start(session, Some(notes), stop_when_complete)
    }

    fn options(&self) -> SessionOptions {
        let seed = self.seed.unwrap_or_else(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            nanos ^ (u64::from(std::process::id()) << 32)
        });
        SessionOptions {
            peer_id: format!("tierswarm-{:08x}", seed as u32),
            seed,
            hierarchical: !self.legacy,
            limits: self.limits.clone(),
            record: self.record.clone(),
            ..SessionOptions::default()
        }
    }

    /// Checks the addresses, binds the listeners and spawns the run.
    fn start(
        self,
        session: Session,
        notes: Option<tierswarm_io::driver::ResumeNotes>,
        stop_when_complete: bool,
    ) -> Result<Transfer, Error> {
        let listen = self
            .listen
            .iter()
            .map(|u| listen_url(u))
            .collect::<Result<Vec<_>, _>>()?;
        let identity = self.identity_for(&listen)?;
        let transports = match self.runtime {
            Runtime::Tokio => tierswarm_tokio::transports(identity),
            Runtime::AsyncStd => tierswarm_async_std::transports(identity),
            Runtime::Smol => tierswarm_smol::transports(identity),
        };
        let mut peers = Vec::new();
        for text in &self.peers {
            peers.extend(peer_urls(text, &transports)?);
        }
        let tokio = transfer::TokioRuntime::for_runtime(self.runtime)?;
        let listeners = tokio.within(|| {
            listen
                .iter()
                .map(|u| {
                    transports
                        .listen(u)
                        .map_err(|e| Error::Failed(format!("listen {u}: {e}")))
                })
                .collect::<Result<Vec<Box<dyn Listener>>, Error>>()
        })?;
        let cfg = RunConfig {
            transports,
            listeners,
            peers,
            stop_when_complete,
        };
        Ok(transfer::spawn(self.runtime, tokio, session, cfg, notes))
    }

    /// The QUIC identity when one of `listen` is QUIC (a dialler needs none: clients present
    /// no certificate).
    fn identity_for(&self, listen: &[PeerUrl]) -> Result<Option<Identity>, Error> {
        if !listen.iter().any(|u| u.scheme() == "quic") {
            return Ok(None);
        }
        let Some(path) = &self.identity else {
            return Ok(Some(Identity::generate()));
        };
        match Identity::load_or_create(path) {
            Ok(id) => Ok(Some(id)),
            Err(e @ IdentityError::Invalid { .. }) => Err(Error::Input(e.to_string())),
            Err(e) => Err(Error::Failed(e.to_string())),
        }
    }
}

/// `text` parsed as an address for `role`, with what turns a reason into its error.
fn parse_address(
    role: AddressRole,
    text: &str,
) -> Result<(PeerUrl, impl Fn(String) -> Error + '_), Error> {
    let bad = move |reason: String| Error::Address {
        role,
        url: text.to_string(),
        reason,
    };
    match text.parse::<PeerUrl>() {
        Ok(url) => Ok((url, bad)),
        Err(e) => Err(bad(e.to_string())),
    }
}

/// A listening address: parsed, the host resolved (the first address), a known scheme, no `#`.
fn listen_url(text: &str) -> Result<PeerUrl, Error> {
    let (url, bad) = parse_address(AddressRole::Listen, text)?;
    if !matches!(url.scheme(), "tcp" | "quic") {
        return Err(bad("listen on tcp:// or quic://".into()));
    }
    if url.fragment().is_some() {
        return Err(bad("a listening address takes no `#` part".into()));
    }
    Ok(url
        .resolve()
        .map_err(|e| bad(e.to_string()))?
        .swap_remove(0))
}

/// A peer's addresses: parsed, resolved (every address), and checked by their transport (a
/// `quic://` URL needs its fingerprint).
fn peer_urls(text: &str, transports: &Transports) -> Result<Vec<PeerUrl>, Error> {
    let (url, bad) = parse_address(AddressRole::Peer, text)?;
    let all = url.resolve().map_err(|e| bad(e.to_string()))?;
    for u in &all {
        transports.check(u).map_err(&bad)?;
    }
    Ok(all)
}
