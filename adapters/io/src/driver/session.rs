//! The session: one core node plus its content, executed without any runtime.

use std::cell::Cell;
use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tierswarm_core::node::{
    drive, Config, DisconnectReason, DropReason, Host, Limits, NodeError, Stats, Upload, Verdict,
};
use tierswarm_core::store::{LoadNotes, StoreState};
use tierswarm_core::trace::Stamped;
use tierswarm_core::wire::{encode_frame_parts, FrameLimits, Message, Proof};
use tierswarm_core::{Bitfield, Event, Geometry, Input, LocalTiers, Node, PeerId};

use super::clock::{Clock, Epoch, MonotonicClock};
use super::framing::Incoming;
use super::proof;
use super::recorder::DEFAULT_RECORD_LIMIT;
use super::recorder::{Header, Recorded, Recorder};
use super::resume::{create_data, repair, restart, resume_checked};
use super::tree::ProofTree;
use super::workers::{Verified, VerifyFail, VerifyJob};
use crate::content::{verify_unit, verify_unit_value, ContentError, Outboard, UnitProof};
use crate::{store_file, DataFile, Manifest};

/// Whether the session serves a whole file or downloads one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Has the whole file (proofs from an [`Outboard`]).
    Seeder,
    /// Downloads into an output file (proofs from the [`ProofTree`]), serving what it has.
    Leecher,
}

/// How to build a session.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Our identity in handshakes.
    pub peer_id: String,
    /// Seed of the core's random choices (recorded, so replays are exact).
    pub seed: u64,
    /// Speak the hierarchical protocol (false: a legacy, flat-only node).
    pub hierarchical: bool,
    /// The core's limits.
    pub limits: Limits,
    /// Write a flight record (JSON lines) here.
    pub record: Option<PathBuf>,
    /// Largest flight record in bytes: recording stops there, with a note in the record
    /// (default [`DEFAULT_RECORD_LIMIT`], 1 GiB).
    pub record_limit: u64,
    /// Received units handed to the verify workers at a time, at most (default
    /// [`default_max_verifying`]: [`DEFAULT_MAX_VERIFYING`], or 0 on a machine of two cores or
    /// fewer); past it, the driver's loop verifies and writes a unit itself, which slows its
    /// reading of frames (and so, by flow control, the peers) instead of letting units pile up
    /// in memory behind busy workers. 0: every unit on the loop, and no worker threads.
    pub max_verifying: usize,
}

/// Default [`SessionOptions::max_verifying`]: 64 units (4 MiB of unit data waiting at most; a
/// waiting unit keeps the whole read buffer it is a slice of, up to 512 KiB, alive).
/// A unit is settled in the core when its TRANSFER arrives, before it is verified, so the
/// request window does not bound this backlog: on a starved CPU it grew to most of the file
/// (a leecher of a 256 MiB swarm peaked at 187 MiB; dev/BENCHMARKS.md).
pub const DEFAULT_MAX_VERIFYING: usize = 64;

/// [`SessionOptions::max_verifying`] by default on this machine: [`DEFAULT_MAX_VERIFYING`] with
/// three cores or more; 0 (verify and write every unit on the driver's loop, no worker threads)
/// with two or fewer. Handing a unit to a worker and its outcome back costs two thread
/// wake-ups; on two cores, where the other core is as likely busy as idle (a peer on the same
/// host, the kernel's network work, other programs), that cost more than the parallel work
/// gained: a 1 GiB loopback fetch took 17–25 % less CPU and ran 4–5 % faster on the loop
/// (dev/BENCHMARKS.md, "Verify on the loop on two cores").
pub fn default_max_verifying() -> usize {
    match std::thread::available_parallelism() {
        Ok(n) if n.get() > 2 => DEFAULT_MAX_VERIFYING,
        _ => 0,
    }
}

/// The largest request window of a session's peer (`Limits::max_window`); its serve queue is
/// twice that. As large as the node's whole request budget (`Limits::max_requests`, 512): one
/// far peer may take all of it (320 MiB/s at a 100 ms round trip).
pub const SESSION_WINDOW: u32 = 512;

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            peer_id: "tierswarm".into(),
            seed: 0,
            hierarchical: true,
            // On real disks a persist costs three fsyncs (data, proof log, store): at loopback
            // speeds the core's default of one per 256 units spent more time syncing than
            // receiving. Persist once a second (the core's interval) or every 4096 units.
            // A peer's window is its units in flight: the core's 64 allow at most 40 MiB/s at a
            // 100 ms round trip (dev/scripts/rtt-window.sh). Sessions queue 1024 requests per
            // peer and say so in their handshake, and keep their window within half of what
            // each peer says it queues (128 for a peer that does not say: requests beyond a
            // full queue count as a flood), so 512 units (32 MiB, 320 MiB/s at 100 ms) reach a
            // session and 64 an older peer (dev/BENCHMARKS.md, "Peers say their serve queue").
            // The window grows with the measured rate, so the cap matters only on a long, fast
            // path; the queue is 8 bytes per request.
            // The core's window floor of one unit suits slow uploaders shared by a crowd; over
            // a real socket the measured round-trip floor includes both event loops, so one
            // unit beyond it leaves the pipe idle: 1 GiB loopback fetches ran at 0.64–0.88 of
            // their rate with a floor of 4 (dev/BENCHMARKS.md, "The window floor").
            limits: Limits {
                persist_every: 4096,
                min_window: 4,
                max_window: SESSION_WINDOW,
                max_serve_queue: 2 * SESSION_WINDOW as usize,
                ..Limits::default()
            },
            record: None,
            record_limit: DEFAULT_RECORD_LIMIT,
            max_verifying: default_max_verifying(),
        }
    }
}

/// How a download treats what an earlier run left at its output path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Resume {
    /// Resume from the availability store, after checking that it and the proof log name this
    /// content and that the output file still matches them (see [`Session::leecher`]).
    #[default]
    Check,
    /// Rebuild the store: re-verify, against the root, every unit of the output file whose
    /// proof is in the proof log (any format of it); fetch the others again.
    Repair,
    /// Discard the store, the proof log and the output file's contents, and start afresh.
    Restart,
}

/// What the runtime glue must do. Effects come out in the order the core decided them.
#[derive(Debug, Clone)]
pub enum Effect {
    /// Write one frame, `parts` in order, on connection `peer`. When `unit` is set the frame is
    /// a TRANSFER: once written to the socket, call [`Session::on_unit_sent`].
    Send {
        /// The connection.
        peer: PeerId,
        /// The encoded frame, in parts (empty parts are nothing): a TRANSFER is its header, the
        /// unit's data as read from the file (not copied into a frame buffer) and its proof
        /// ([`encode_frame_parts`]).
        parts: [Bytes; 3],
        /// The unit carried, for TRANSFERs.
        unit: Option<u64>,
    },
    /// Close connection `peer` (after writing what was queued before). The session already
    /// forgot it; no [`Session::on_disconnected`] is needed (one is harmless).
    Close {
        /// The connection.
        peer: PeerId,
        /// Why.
        reason: String,
    },
    /// News for the user interface.
    Event(SessionEvent),
    /// Verify and write a received unit off the loop (only with
    /// [`Session::verify_off_loop`]): run [`VerifyJob::run`] anywhere, then hand its outcome to
    /// [`Session::on_verified`].
    Verify(VerifyJob),
}

/// Most characters of a remote peer id kept for [`SessionEvent::PeerReady`] (the core keeps as
/// many).
pub const MAX_REMOTE_ID_CHARS: usize = 64;

/// News from a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// A peer finished its handshake.
    PeerReady {
        /// The connection.
        peer: PeerId,
        /// Whether it speaks the hierarchical protocol.
        capable: bool,
        /// The peer id it gave in its handshake (at most [`MAX_REMOTE_ID_CHARS`] characters):
        /// two connections with the same peer carry the same id.
        remote: String,
    },
    /// A connection ended: closed by the remote or after an error (`reason` says which, as far
    /// as the session knows), or dropped by the node (`reason` is its
    /// [`DisconnectReason`]). Told once per connection that was [`connected`](Session::connected).
    PeerGone {
        /// The connection.
        peer: PeerId,
        /// Why, on one line.
        reason: String,
    },
    /// A unit from `peer` was verified and written ([`Progress`](Self::Progress) follows).
    Verified {
        /// Who sent it.
        peer: PeerId,
        /// The unit.
        unit: u64,
    },
    /// A TRANSFER to `peer` has been written to its connection.
    Served {
        /// The connection.
        peer: PeerId,
        /// The unit.
        unit: u64,
        /// Bytes of unit data it carried.
        bytes: u64,
        /// Requests from peers queued for upload now (served later, as slots and the upload
        /// rate allow).
        queued: u64,
    },
    /// A unit was verified and written.
    Progress {
        /// Units present.
        units: u64,
        /// Units in the file.
        total: u64,
    },
    /// A unit from `peer` failed verification; the peer is disconnected.
    BadUnit {
        /// Who sent it.
        peer: PeerId,
        /// The unit.
        unit: u64,
        /// What was wrong.
        reason: String,
    },
    /// The availability store was written (data and proofs were fsynced first).
    Persisted {
        /// Units it records.
        units: u64,
    },
    /// Every unit is present, verified, written and persisted.
    Complete,
    /// Drain finished (after [`Session::drain`]): nothing in flight, state persisted.
    Drained,
    /// Something went wrong that does not stop the session (e.g. the flight recorder could not
    /// write and stopped recording).
    Warning(String),
    /// A local disk error; the session cannot go on.
    Fatal(String),
}

/// Why a session could not start.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// A file could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// Which file and what was done.
        what: String,
        /// The error.
        source: io::Error,
    },
    /// What an earlier run left (the availability store, the proof log, the output file) cannot
    /// be trusted for this content; `remedy` says which option fixes it.
    #[error("{path}: {reason}; {remedy}")]
    Refused {
        /// The file.
        path: String,
        /// Why.
        reason: String,
        /// What to do: `--repair`, `--restart`, another output.
        remedy: &'static str,
    },
    /// The flight record could not be created.
    #[error("flight record {path}: {source}")]
    Record {
        /// Its path.
        path: String,
        /// The error.
        source: io::Error,
    },
    /// The core refused the configuration.
    #[error(transparent)]
    Node(#[from] NodeError),
}

pub(super) fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> SessionError {
    let what = what.into();
    move |source| SessionError::Io { what, source }
}

/// The remedy for state that may be ours but cannot be trusted as it is.
pub(super) const REPAIR: &str =
    "run with --repair to re-verify the output against the root (or --restart to start afresh)";
/// The remedy for state that belongs to other content.
pub(super) const RESTART: &str = "use another --out, or --restart to discard it and start afresh";

pub(super) fn refused(
    path: &Path,
    reason: impl Into<String>,
    remedy: &'static str,
) -> SessionError {
    SessionError::Refused {
        path: path.display().to_string(),
        reason: reason.into(),
        remedy,
    }
}

/// Present units verified against their proofs when resuming (the rest rely on the store; a
/// unit is verified again whenever it is read to be served until the whole file has hashed to
/// the root, and the whole file when it is complete).
pub const RESUME_SAMPLE: u64 = 64;

/// `(OUT.tsa, OUT.tsp)`: the availability store and the proof-node log of a download.
pub fn store_paths(out: &Path) -> (PathBuf, PathBuf) {
    let with = |ext: &str| {
        let mut s = OsString::from(out.as_os_str());
        s.push(ext);
        PathBuf::from(s)
    };
    (with(".tsa"), with(".tsp"))
}

/// One core [`Node`] with its data file, proofs, store and recorder. See the
/// [module docs](super).
///
/// The glue calls [`connected`](Self::connected), [`on_frame`](Self::on_frame),
/// [`on_disconnected`](Self::on_disconnected), [`on_unit_sent`](Self::on_unit_sent),
/// [`on_timeout`](Self::on_timeout) and [`drain`](Self::drain) as things happen, then executes
/// every [`poll_effect`](Self::poll_effect) in order, and re-arms its single timer at
/// [`next_deadline`](Self::next_deadline).
pub struct Session {
    node: Node,
    io: SessionIo,
    epoch: Epoch,
    clock: Box<dyn Clock>,
    next_peer: u64,
    max_verifying: usize,
}

/// Everything of a session but its node: the node's [`Host`] (content, store, recorder and
/// the effects for the runtime glue).
struct SessionIo {
    role: Role,
    manifest: Manifest,
    /// Shared with the workers that write verified units. Trusted (see
    /// [`DataFile::still_trusted`]) once hashed whole against the root and unchanged since: its
    /// units are then served without being verified again; before that, only the units the
    /// download wrote itself, while no other program writes to it ([`DataFile::vouches_for`]).
    data: Arc<DataFile>,
    /// Received units are verified and written by the glue ([`Effect::Verify`]).
    off_loop: bool,
    outboard: Option<Outboard>,
    tree: Option<ProofTree>,
    store_path: Option<PathBuf>,
    recorder: Option<Recorder>,
    effects: VecDeque<Effect>,
    requested: Bitfield,
    failed: bool,
    /// Units present (from the node's progress events), for [`SessionEvent::Persisted`].
    units_present: u64,
    /// The output file (leecher) or the shared file (seeder), for messages.
    path: PathBuf,
    /// The data file was hashed whole and matched the root, and nothing was written since.
    file_verified: bool,
    /// Units verified against their proofs as they were read to be served.
    units_rechecked: Cell<u64>,
    /// Connections up and not yet reported gone (bounded by the open connections), so that
    /// each gets one [`SessionEvent::PeerGone`].
    live: std::collections::BTreeSet<PeerId>,
    /// The peer id each connection's handshake gave, for [`SessionEvent::PeerReady`] (bounded
    /// by the open connections: dropped when the connection goes).
    remote_ids: std::collections::BTreeMap<PeerId, String>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("role", &self.io.role)
            .field("manifest", &self.io.manifest)
            .field("units", &self.node.local().units_present())
            .finish_non_exhaustive()
    }
}

/// What a leecher found on disk at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResumeNotes {
    /// Units already present (from the store, or verified by repair).
    pub units: u64,
    /// Notes from the store decoder.
    pub store: Option<LoadNotes>,
    /// Units the store claimed but whose proofs were missing (they are fetched again).
    pub dropped_without_proof: u64,
    /// Units read back and verified against their proofs before anything was trusted.
    pub units_checked: u64,
    /// The whole output file was hashed and matched the root (the store claimed it complete).
    pub file_verified: bool,
}

impl Session {
    /// Serves the whole file at `path`: hashes it once (building the [`Outboard`]), through the
    /// handle it serves from. The file is trusted if its metadata was the same before and after
    /// the hash (see [`read_unit_verified`](Self::read_unit_verified)); a file changed while it
    /// was hashed is not, and every unit is verified as it is served.
    pub fn seeder(path: &Path, opts: SessionOptions) -> Result<Session, SessionError> {
        let shown = path.display().to_string();
        let data = DataFile::open(path).map_err(io_err(format!("open {shown}")))?;
        let check = data.begin_trust_check();
        let outboard =
            Outboard::build(data.reader(), data.len()).map_err(io_err(format!("hash {shown}")))?;
        // The root is the hash just taken: the file matches it if it did not change meanwhile.
        data.trust_if_unchanged(check);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let manifest = Manifest {
            root: outboard.root(),
            file_len: data.len(),
            name,
        };
        let geo = Geometry::new(data.len()).map_err(NodeError::from)?;
        let mut s = Self::build(
            Role::Seeder,
            manifest,
            data,
            Some(outboard),
            None,
            None,
            LocalTiers::full(geo),
            opts,
        )?;
        s.io.path = path.to_path_buf();
        s.io.file_verified = true;
        Ok(s)
    }

    /// Downloads `manifest`'s file into `out`, resuming from what an earlier run left there
    /// (`OUT.tsa`, `OUT.tsp`) as `resume` says.
    ///
    /// With [`Resume::Check`] nothing is trusted before it is checked, and nothing is scanned
    /// in full unless the store says the file is complete:
    /// - the store must name this content (root and length): a store or proof log of another
    ///   file is refused (`--restart` discards it), and a store or log of a format that does not
    ///   name its content is refused too (`--repair` re-verifies the data instead);
    /// - the output file must exist with exactly the file's length;
    /// - a store that says the file is complete is believed only once the whole file hashes to
    ///   the root; otherwise up to [`RESUME_SAMPLE`] of the units it lists (the first, the last
    ///   and others evenly spread) are read back and verified against their proofs.
    ///
    /// A file edited behind the store's back in a way the sample misses is still never served
    /// wrong (until the whole file has hashed to the root, here or in
    /// [`verify_file`](Self::verify_file), every unit is verified as it is read to be served;
    /// after, every unit is again once the file's metadata changes, see
    /// [`read_unit_verified`](Self::read_unit_verified)) nor reported complete (the whole file is
    /// hashed at the end, [`Session::verify_file`]). Any failed check refuses
    /// with [`SessionError::Refused`], naming the file and the remedy; nothing is changed on
    /// disk before the checks pass.
    pub fn leecher(
        manifest: &Manifest,
        out: &Path,
        resume: Resume,
        opts: SessionOptions,
    ) -> Result<(Session, ResumeNotes), SessionError> {
        let geo = Geometry::new(manifest.file_len).map_err(NodeError::from)?;
        let (store_path, tree_path) = store_paths(out);
        let mut notes = ResumeNotes::default();
        let (data, tree, local) = match resume {
            Resume::Restart => {
                restart(out, &store_path, &tree_path)?;
                let data = create_data(out, manifest.file_len)?;
                let tree = ProofTree::create(&manifest.root, manifest.file_len, &tree_path)
                    .map_err(io_err(format!("create {}", tree_path.display())))?;
                (data, tree, LocalTiers::new(geo))
            }
            Resume::Repair => repair(manifest, out, &store_path, &tree_path)?,
            Resume::Check => resume_checked(manifest, out, &store_path, &tree_path, &mut notes)?,
        };
        notes.units = local.units_present();
        let mut session = Self::build(
            Role::Leecher,
            manifest.clone(),
            data,
            None,
            Some(tree),
            Some(store_path),
            local,
            opts,
        )?;
        session.io.path = out.to_path_buf();
        session.io.file_verified = notes.file_verified;
        Ok((session, notes))
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        role: Role,
        manifest: Manifest,
        mut data: DataFile,
        outboard: Option<Outboard>,
        tree: Option<ProofTree>,
        store_path: Option<PathBuf>,
        local: LocalTiers,
        opts: SessionOptions,
    ) -> Result<Session, SessionError> {
        let cfg = Config {
            info_hash: manifest.root,
            file_len: manifest.file_len,
            peer_id: opts.peer_id,
            hierarchical: opts.hierarchical,
            seed: opts.seed,
            trace: false,
            limits: opts.limits,
        };
        let recorder = match &opts.record {
            Some(path) => {
                let initial = match role {
                    Role::Seeder => None,
                    Role::Leecher => {
                        Some(StoreState::from_tiers(manifest.root, &local, 0).encode())
                    }
                };
                let header = Header::new(&cfg, initial.as_deref());
                Some(
                    Recorder::create(path, &header, opts.record_limit).map_err(|source| {
                        SessionError::Record {
                            path: path.display().to_string(),
                            source,
                        }
                    })?,
                )
            }
            None => None,
        };
        let units = local.geometry().units();
        let units_present = local.units_present();
        if role == Role::Leecher && !local.is_complete() {
            // The final whole-file check then hashes only what was not read back.
            let held = local.bitfield(tierswarm_core::tiers::Tier::T1);
            data.enable_read_back(|unit| held.get(unit));
        }
        let node = Node::try_new(cfg, local, tierswarm_core::Timestamp::ZERO)?;
        let clock: Box<dyn Clock> = Box::new(MonotonicClock);
        Ok(Session {
            node,
            io: SessionIo {
                role,
                manifest,
                data: Arc::new(data),
                off_loop: false,
                outboard,
                tree,
                store_path,
                recorder,
                effects: VecDeque::new(),
                requested: Bitfield::new(units),
                failed: false,
                units_present,
                path: PathBuf::new(),
                file_verified: false,
                units_rechecked: Cell::new(0),
                live: std::collections::BTreeSet::new(),
                remote_ids: std::collections::BTreeMap::new(),
            },
            epoch: Epoch(clock.now()),
            clock,
            next_peer: 0,
            max_verifying: opts.max_verifying,
        })
    }

    /// Replaces the clock (tests); the session's epoch restarts at the new clock's now.
    pub fn with_clock(mut self, clock: Box<dyn Clock>) -> Self {
        self.epoch = Epoch(clock.now());
        self.clock = clock;
        self
    }

    // ---- inputs ---------------------------------------------------------------------------

    /// A connection is up (either direction): returns its handle.
    pub fn connected(&mut self) -> PeerId {
        self.next_peer += 1;
        let peer = PeerId(self.next_peer);
        self.io.live.insert(peer);
        self.feed(Input::PeerConnected { peer }, None);
        peer
    }

    /// Hands received units to the glue to verify and write ([`Effect::Verify`], outcome to
    /// [`on_verified`](Self::on_verified)) instead of doing it inside
    /// [`on_frame`](Self::on_frame). [`run`](super::run) turns it on and runs the jobs on
    /// worker threads.
    pub fn verify_off_loop(&mut self, on: bool) {
        self.io.off_loop = on;
    }

    /// Received units the glue may have with its verify workers at a time
    /// ([`SessionOptions::max_verifying`]).
    pub fn max_verifying(&self) -> usize {
        self.max_verifying
    }

    /// The outcome of an [`Effect::Verify`] job: the unit is recorded as complete (its proof
    /// learnt) or failed (its sender is dropped).
    pub fn on_verified(&mut self, v: Verified) {
        let Verified {
            peer,
            unit,
            proof,
            result,
        } = v;
        let input = match result {
            Ok(()) => match self
                .io
                .tree
                .as_mut()
                .map_or(Ok(()), |t| t.learn(unit, &proof))
            {
                Ok(()) => {
                    self.io.event(SessionEvent::Verified { peer, unit });
                    Input::UnitComplete { unit }
                }
                Err(e) => return self.io.write_failed(unit, &e),
            },
            Err(VerifyFail::Invalid(reason)) => {
                self.io.event(SessionEvent::BadUnit { peer, unit, reason });
                Input::UnitFailed { peer, unit }
            }
            Err(VerifyFail::Io(e)) => return self.io.write_failed(unit, &e),
        };
        self.feed(input, None);
    }

    /// A frame arrived on `peer`.
    pub fn on_frame(&mut self, peer: PeerId, incoming: Incoming) {
        let Incoming { frame, raw } = incoming;
        if let Message::Handshake { peer_id, .. } = &frame.msg {
            // Kept for the connection's PeerReady (bounded by the open connections).
            let id = peer_id.chars().take(MAX_REMOTE_ID_CHARS).collect();
            self.io.remote_ids.insert(peer, id);
        }
        self.feed(Input::PeerFrame { peer, frame }, raw);
    }

    /// Connection `peer` closed (by the remote, or after an error).
    pub fn on_disconnected(&mut self, peer: PeerId) {
        self.io.gone(peer, "connection closed");
        self.feed(Input::PeerDisconnected { peer }, None);
    }

    /// The driver dropped connection `peer` for `reason` (a stalled write, an unfinished or bad
    /// frame): counted in the node's stats, and everything the peer held is freed.
    pub fn on_dropped(&mut self, peer: PeerId, reason: DropReason) {
        self.feed(Input::PeerDropped { peer, reason }, None);
    }

    /// Connection `peer` stopped taking data (`congested`), or drained again: a congested peer
    /// gets no new unit and holds no shared upload slot.
    pub fn on_congested(&mut self, peer: PeerId, congested: bool) {
        self.feed(Input::PeerCongested { peer, congested }, None);
    }

    /// The node's limits (the driver enforces the socket-level ones).
    pub fn limits(&self) -> &Limits {
        &self.node.config().limits
    }

    /// The TRANSFER of `unit` handed out for `peer` has been written to the socket.
    pub fn on_unit_sent(&mut self, peer: PeerId, unit: u64) {
        self.feed(Input::UnitSent { peer, unit }, None);
        let m = &self.io.manifest;
        let bytes = m
            .file_len
            .saturating_sub(unit.saturating_mul(crate::UNIT_LEN))
            .min(crate::UNIT_LEN);
        let queued = self.node.stats().queued_serves;
        self.io.event(SessionEvent::Served {
            peer,
            unit,
            bytes,
            queued,
        });
    }

    /// Stop requesting, finish what is in flight, persist; [`SessionEvent::Drained`] follows.
    pub fn drain(&mut self) {
        self.feed(Input::Drain, None);
    }

    /// The timer fired: runs the core's due timers (nothing if none is due yet).
    pub fn on_timeout(&mut self) {
        let now = self.now();
        if self.node.poll_timeout().is_some_and(|t| t <= now) {
            if let Some(r) = self.io.recorder.as_mut() {
                r.begin_timeout(now);
            }
            self.node.handle_timeout(now);
            self.run_actions(now);
        }
    }

    /// When [`on_timeout`](Self::on_timeout) must be called next.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.node.poll_timeout().map(|t| self.epoch.instant(t))
    }

    /// The next effect to execute.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.io.effects.pop_front()
    }

    // ---- queries --------------------------------------------------------------------------

    /// The manifest of the content.
    pub fn manifest(&self) -> &Manifest {
        &self.io.manifest
    }

    /// Seeder or leecher.
    pub fn role(&self) -> Role {
        self.io.role
    }

    /// Whether every unit is present.
    pub fn is_complete(&self) -> bool {
        self.node.is_complete()
    }

    /// Units present and in the file.
    pub fn progress(&self) -> (u64, u64) {
        (
            self.node.local().units_present(),
            self.node.geometry().units(),
        )
    }

    /// The core's counters.
    pub fn stats(&self) -> &Stats {
        self.node.stats()
    }

    /// The core node (read-only).
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Units this session has sent a REQUEST for.
    pub fn requested_units(&self) -> &Bitfield {
        &self.io.requested
    }

    /// Largest frame to accept from a peer.
    pub fn max_frame_len(&self) -> u64 {
        self.node.max_frame_len()
    }

    /// Per-kind limits on frames from peers, for each connection's [`FrameReader`](super::FrameReader).
    pub fn frame_limits(&self) -> FrameLimits {
        FrameLimits::for_geometry(self.node.geometry())
    }

    /// Reads `unit` from the data file with its proof, as it is served: a unit that no longer
    /// matches its proof is never served ([`UnitReadError::Changed`]).
    ///
    /// A unit of a *trusted* file is not verified again: a file hashed whole against the root
    /// (the seeder's file at start, a download's in [`verify_file`](Self::verify_file) or on
    /// resuming a complete store) whose metadata — length, modification and status-change times
    /// to the nanosecond, inode, device, from `fstat` on the open handle after the read — is the
    /// same as when it was hashed. Nor is a unit a download in progress verified and wrote
    /// itself while no other program has written to its file
    /// ([`DataFile::vouches_for`](crate::DataFile::vouches_for): the file's metadata around each
    /// of the download's writes and after the read). Any other unit is verified against its
    /// proof (BLAKE3, about 30 µs per 64 KiB; [`units_rechecked`](Self::units_rechecked) counts
    /// them): those a download held at its start, and every unit once the file's metadata has
    /// changed, for the rest of the session (the trust is never re-established silently). A change that leaves all of that metadata equal (within the
    /// filesystem's timestamp granularity) is not noticed: such a unit may be sent, and the
    /// receiving peer, which verifies every unit against the root, rejects it and disconnects
    /// this node ([`data_file`](crate::data_file) describes the limit).
    pub fn read_unit_verified(&self, unit: u64) -> Result<(Bytes, UnitProof), UnitReadError> {
        self.io.read_unit_verified(unit)
    }

    /// Units verified against their proofs as they were read to be served: none while the data
    /// file is trusted (see [`read_unit_verified`](Self::read_unit_verified)).
    pub fn units_rechecked(&self) -> u64 {
        self.io.units_rechecked.get()
    }

    /// What reading the download back piece by piece did ([`read_back`](crate::read_back));
    /// `None` for a seeder, a file of one piece or less, or a download complete at the start.
    pub fn read_back_stats(&self) -> Option<crate::read_back::ReadBackStats> {
        self.io.data.read_back_stats()
    }

    /// Whether the data file is trusted now, as of its last check: hashed whole against the
    /// root and, when last read to be served, unchanged since (see
    /// [`read_unit_verified`](Self::read_unit_verified)).
    pub fn file_trusted(&self) -> bool {
        self.io.data.is_trusted()
    }

    /// Hashes the whole data file (one BLAKE3 pass, after an fsync) and checks it against the
    /// content root — for a download, only the pieces not read back as they completed
    /// ([`read_back`](crate::read_back) says what that leaves out); skipped when that was done and the file is still trusted (nothing written
    /// through this session since, and its metadata unchanged: a file changed behind the
    /// session, e.g. after a resume found it complete, is hashed again). A download is
    /// complete only once this passes ([`run`](super::run) checks it before it reports
    /// [`Outcome::Complete`](super::Outcome::Complete)). Once it passes, the file is trusted if
    /// its metadata was the same before and after the hash (see
    /// [`read_unit_verified`](Self::read_unit_verified)).
    pub fn verify_file(&mut self) -> Result<(), String> {
        let io = &mut self.io;
        if io.file_verified && io.data.still_trusted() {
            return Ok(());
        }
        let shown = io.path.display();
        let check = io.data.begin_trust_check();
        let got = io
            .data
            .sync()
            .and_then(|()| io.data.hash())
            .map_err(|e| format!("reading {shown} to verify it failed: {e}"))?;
        if got != io.manifest.root {
            return Err(format!(
                "{shown} does not hash to the content root {}… after the download (it was \
                 changed while the transfer ran?); run again with --repair",
                &crate::manifest::root_to_hex(&io.manifest.root)[..16]
            ));
        }
        io.data.trust_if_unchanged(check);
        io.file_verified = true;
        Ok(())
    }

    /// Whether a flight recorder is on (the glue then keeps raw frame bytes).
    pub fn is_recording(&self) -> bool {
        self.io.recorder.is_some()
    }

    /// Whether a fatal local error happened.
    pub fn has_failed(&self) -> bool {
        self.io.failed
    }

    /// Flushes the data file, the proof log and the recorder.
    pub fn flush(&mut self) -> io::Result<()> {
        let io = &mut self.io;
        if let Some(r) = io.recorder.as_mut() {
            r.flush()?;
        }
        if let Some(t) = io.tree.as_mut() {
            t.sync()?;
        }
        if io.role == Role::Leecher {
            io.data.sync()?;
        }
        Ok(())
    }

    // ---- execution ------------------------------------------------------------------------

    fn now(&self) -> tierswarm_core::Timestamp {
        self.epoch.stamp(self.clock.now())
    }

    fn feed(&mut self, input: Input, raw: Option<Bytes>) {
        let now = self.now();
        if let Some(r) = self.io.recorder.as_mut() {
            r.begin(now, &input, raw.as_ref());
        }
        self.node.handle_input(now, input);
        self.run_actions(now);
    }

    /// Executes every action the node has ready through the core's one action loop
    /// ([`drive`]): outcomes known at once (a unit verified or failed, a unit that could not be
    /// read) are fed back after the input's actions, each recorded as an input of its own.
    fn run_actions(&mut self, now: tierswarm_core::Timestamp) {
        drive(&mut self.node, now, &mut self.io);
        self.io.end_record();
    }
}

impl SessionIo {
    fn encode(&self, msg: &Message) -> [Bytes; 3] {
        encode_frame_parts(&self.manifest.root, msg)
    }

    fn event(&mut self, e: SessionEvent) {
        self.effects.push_back(Effect::Event(e));
    }

    /// Tells of `peer`'s end once.
    fn gone(&mut self, peer: PeerId, reason: &str) {
        self.remote_ids.remove(&peer);
        if self.live.remove(&peer) {
            let reason = reason.to_string();
            self.event(SessionEvent::PeerGone { peer, reason });
        }
    }

    fn fatal(&mut self, reason: String) {
        if !self.failed {
            self.failed = true;
            self.event(SessionEvent::Fatal(reason));
        }
    }

    /// Closes the flight record's current input line.
    fn end_record(&mut self) {
        if let Some(r) = self.recorder.as_mut() {
            // A record is a diagnostic: losing it must not lose the transfer.
            let path = r.path().display().to_string();
            let stopped = match r.end() {
                Ok(Recorded::Line) => None,
                Ok(Recorded::CapReached) => Some(format!(
                    "flight record {path} reached its size cap of {} bytes; recording stopped",
                    r.limit()
                )),
                Err(e) => Some(format!("flight record {path}: {e}; recording stopped")),
            };
            if let Some(warning) = stopped {
                self.recorder = None;
                self.event(SessionEvent::Warning(warning));
            }
        }
    }

    fn read_unit_verified(&self, unit: u64) -> Result<(Bytes, UnitProof), UnitReadError> {
        let proof = match (&self.outboard, &self.tree) {
            (Some(o), _) => o.proof(unit).ok(),
            (None, Some(t)) => t.proof(unit),
            (None, None) => None,
        }
        .ok_or(UnitReadError::NoProof { unit })?;
        let data = self
            .data
            .read_unit(unit)
            .map_err(|source| UnitReadError::Io { unit, source })?;
        // The stamp after the read: a write racing with it has changed the file's times by then.
        // A download serves the units it verified and wrote itself as they are, as long as no
        // other program has written to its file.
        if self.data.still_trusted() || self.data.vouches_for(unit) {
            return Ok((data, proof));
        }
        self.units_rechecked
            .set(self.units_rechecked.get().saturating_add(1));
        let m = &self.manifest;
        verify_unit(&m.root, m.file_len, unit, &data, &proof).map_err(|source| {
            UnitReadError::Changed {
                unit,
                path: self.path.display().to_string(),
                source,
            }
        })?;
        Ok((data, proof))
    }

    fn read_for_serve(&self, unit: u64) -> Result<Message, String> {
        let (data, proof) = self.read_unit_verified(unit).map_err(|e| e.to_string())?;
        Ok(Message::Transfer {
            unit,
            data,
            proof: Some(proof::to_wire(&proof)),
        })
    }

    fn store_unit(&mut self, unit: u64, data: &[u8], p: Option<&Proof>) -> Result<(), StoreFail> {
        let p = p
            .and_then(proof::from_wire)
            .ok_or_else(|| StoreFail::Invalid("missing or malformed proof".into()))?;
        let m = &self.manifest;
        let verified = verify_unit_value(&m.root, m.file_len, unit, data, &p)
            .map_err(|e| StoreFail::Invalid(e.to_string()))?;
        // The write drops the data file's trust too (before it writes).
        self.file_verified = false;
        self.data
            .write_verified_unit(verified)
            .map_err(StoreFail::Io)?;
        if let Some(t) = self.tree.as_mut() {
            t.learn(unit, &p).map_err(StoreFail::Io)?;
        }
        Ok(())
    }

    fn write_failed(&mut self, unit: u64, e: &io::Error) {
        let shown = self.path.display();
        self.fatal(format!("writing unit {unit} to {shown} failed: {e}"));
    }

    /// Hands a received unit with a well-formed proof to the glue ([`Effect::Verify`]).
    fn verify_later(
        &mut self,
        peer: PeerId,
        unit: u64,
        data: Bytes,
        proof: Option<&Proof>,
    ) -> Verdict {
        let Some(proof) = proof.and_then(proof::from_wire) else {
            let reason = "missing or malformed proof".to_string();
            SessionIo::event(self, SessionEvent::BadUnit { peer, unit, reason });
            return Verdict::Failed;
        };
        // The worker's write drops the data file's trust (before it writes).
        self.file_verified = false;
        self.effects.push_back(Effect::Verify(VerifyJob {
            peer,
            unit,
            data,
            proof,
            root: self.manifest.root,
            file_len: self.manifest.file_len,
            file: Arc::clone(&self.data),
        }));
        Verdict::Later
    }

    fn persist(&mut self, store: &[u8]) {
        let Some(path) = self.store_path.clone() else {
            return;
        };
        // Data and proofs reach the disk before the store that relies on them.
        let result = self
            .data
            .sync()
            .and_then(|()| self.tree.as_mut().map_or(Ok(()), ProofTree::sync))
            .and_then(|()| store_file::save(&path, store));
        match result {
            Ok(()) => {
                let units = self.units_present;
                self.event(SessionEvent::Persisted { units });
            }
            Err(e) => self.fatal(format!(
                "writing the availability store {} failed: {e}",
                path.display()
            )),
        }
    }
}

impl Host for SessionIo {
    fn send(&mut self, peer: PeerId, msg: Message) {
        if let Some(r) = self.recorder.as_mut() {
            r.digest_send(peer, &msg);
        }
        if let Message::Request { unit, .. } = msg {
            self.requested.set(unit);
        }
        let parts = self.encode(&msg);
        self.effects.push_back(Effect::Send {
            peer,
            parts,
            unit: None,
        });
    }

    fn serve(&mut self, peer: PeerId, unit: u64) -> Upload {
        if let Some(r) = self.recorder.as_mut() {
            r.digest_serve(peer, unit);
        }
        let trusted = self.data.is_trusted();
        let read = self.read_for_serve(unit);
        if trusted && !self.data.is_trusted() {
            // Once: the trust is never granted again in this session.
            let shown = self.path.display();
            self.event(SessionEvent::Warning(format!(
                "{shown} changed since it was hashed (its size, times or inode differ): every \
                 unit is verified against its proof as it is served from now on"
            )));
        }
        match read {
            Ok(msg) => {
                let parts = self.encode(&msg);
                self.effects.push_back(Effect::Send {
                    peer,
                    parts,
                    unit: Some(unit),
                });
                Upload::Later
            }
            Err(reason) => {
                // A unit that cannot be read, or no longer matches its proof, is never served:
                // the request gets a reject, and the user hears why.
                self.event(SessionEvent::Warning(format!("not serving: {reason}")));
                Upload::Failed
            }
        }
    }

    fn store_unit(
        &mut self,
        peer: PeerId,
        unit: u64,
        data: Bytes,
        proof: Option<Proof>,
    ) -> Verdict {
        if let Some(r) = self.recorder.as_mut() {
            r.digest_store_unit(peer, unit, &data, proof.as_ref());
        }
        if self.off_loop {
            return self.verify_later(peer, unit, data, proof.as_ref());
        }
        match SessionIo::store_unit(self, unit, &data, proof.as_ref()) {
            Ok(()) => {
                SessionIo::event(self, SessionEvent::Verified { peer, unit });
                Verdict::Verified
            }
            Err(StoreFail::Invalid(reason)) => {
                self.event(SessionEvent::BadUnit { peer, unit, reason });
                Verdict::Failed
            }
            Err(StoreFail::Io(e)) => {
                self.write_failed(unit, &e);
                Verdict::Later
            }
        }
    }

    fn persist(&mut self, store: Bytes) {
        if let Some(r) = self.recorder.as_mut() {
            r.digest_persist(&store);
        }
        SessionIo::persist(self, &store);
    }

    fn disconnect(&mut self, peer: PeerId, reason: DisconnectReason) {
        if let Some(r) = self.recorder.as_mut() {
            r.digest_disconnect(peer, &reason);
        }
        let reason = reason.to_string();
        self.gone(peer, &reason);
        self.effects.push_back(Effect::Close { peer, reason });
    }

    fn event(&mut self, e: Event) {
        if let Some(r) = self.recorder.as_mut() {
            r.digest_event(&e);
        }
        let e = match e {
            Event::PeerReady { peer, capable } => SessionEvent::PeerReady {
                peer,
                capable,
                remote: self.remote_ids.get(&peer).cloned().unwrap_or_default(),
            },
            Event::Progress { units, total } => {
                self.units_present = units;
                SessionEvent::Progress { units, total }
            }
            Event::Complete => SessionEvent::Complete,
            Event::Drained => SessionEvent::Drained,
            _ => return,
        };
        SessionIo::event(self, e);
    }

    fn trace(&mut self, t: Stamped) {
        if let Some(r) = self.recorder.as_mut() {
            r.digest_trace(&t);
        }
    }

    fn follow_up(&mut self, now: tierswarm_core::Timestamp, input: &Input) {
        self.end_record();
        if let Some(r) = self.recorder.as_mut() {
            r.begin(now, input, None);
        }
    }
}

/// Why a unit could not be read to be served.
#[derive(Debug, thiserror::Error)]
pub enum UnitReadError {
    /// No proof is known for the unit.
    #[error("no proof for unit {unit}")]
    NoProof {
        /// The unit.
        unit: u64,
    },
    /// Reading the data file failed.
    #[error("reading unit {unit} failed: {source}")]
    Io {
        /// The unit.
        unit: u64,
        /// The error.
        source: io::Error,
    },
    /// The unit on disk no longer matches its proof: the file changed behind the session.
    #[error("unit {unit} of {path} no longer matches its proof ({source}): the file was changed")]
    Changed {
        /// The unit.
        unit: u64,
        /// The data file.
        path: String,
        /// How it failed.
        source: ContentError,
    },
}

enum StoreFail {
    Invalid(String),
    Io(io::Error),
}
