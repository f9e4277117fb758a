//! The sans-IO node: one deterministic state machine per swarm.
//!
//! The embedder owns sockets, files and the clock. It feeds the node [`Input`]s with the time
//! they happened, calls [`Node::handle_timeout`] when [`Node::poll_timeout`] comes due, and
//! executes the [`Action`]s that [`Node::poll_action`] hands out, in order. Same inputs at the
//! same times give the same actions, bit for bit.
//!
//! ```
//! use tierswarm_core::node::{Action, Config, Input, Node, PeerId};
//! use tierswarm_core::time::Timestamp;
//! use tierswarm_core::wire::Message;
//! use tierswarm_core::{Geometry, LocalTiers};
//!
//! let geo = Geometry::new(3 * 65536 + 100).unwrap();
//! let cfg = |name: &str| Config::new([7; 32], geo.file_len(), name);
//! let t0 = Timestamp::ZERO;
//! let mut seeder = Node::new(cfg("seed"), LocalTiers::full(geo), t0);
//! let mut leecher = Node::new(cfg("leech"), LocalTiers::new(geo), t0);
//!
//! // Both sides see the connection; each calls the other PeerId(1).
//! let p = PeerId(1);
//! seeder.handle_input(t0, Input::PeerConnected { peer: p });
//! leecher.handle_input(t0, Input::PeerConnected { peer: p });
//!
//! // A minimal embedder: deliver messages at once, serve and verify in place.
//! fn step(src: &mut Node, dst: &mut Node, now: Timestamp) -> bool {
//!     let mut moved = false;
//!     while let Some(action) = src.poll_action() {
//!         moved = true;
//!         match action {
//!             Action::Send { peer, msg } => dst.handle_input(now, Input::message(peer, msg)),
//!             Action::Serve { peer, unit } => {
//!                 let msg = Message::Transfer { unit, data: Default::default(), proof: None };
//!                 dst.handle_input(now, Input::message(peer, msg));
//!                 src.handle_input(now, Input::UnitSent { peer, unit });
//!             }
//!             // A real embedder verifies against the content root and writes first.
//!             Action::StoreUnit { unit, .. } => src.handle_input(now, Input::UnitComplete { unit }),
//!             _ => {}
//!         }
//!     }
//!     moved
//! }
//! let mut now = t0;
//! while step(&mut seeder, &mut leecher, now) | step(&mut leecher, &mut seeder, now) {
//!     now = now.add(std::time::Duration::from_millis(1));
//! }
//! assert!(leecher.is_complete());
//! ```

mod peer;

pub use peer::{Lifecycle, Peer, PeerId, RttEstimator};

use crate::availability::{LocalTiers, PeerView};
use crate::bitfield::{Bitfield, BlockMask};
use crate::rarity::Rarity;
use crate::store::{LoadNotes, StoreError, StoreState};
use crate::tiers::{Geometry, Tier, TierError, T1_SIZE};
use crate::time::Timestamp;
use crate::timers::TimerQueue;
use crate::trace::{Record, Stamped};
use crate::wire::{Capabilities, Frame, Message, MessageKind, Proof};
use bytes::Bytes;
use core::time::Duration;
use rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Tunable limits. Every per-peer and global structure of the node is bounded by one of these.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Connections accepted at once.
    pub max_peers: usize,
    /// Time an unconfirmed peer has to send its handshake.
    pub handshake_timeout: Duration,
    /// Smallest request window per peer (units owed an answer).
    pub min_window: u32,
    /// Largest request window per peer.
    pub max_window: u32,
    /// Active unit requests over all peers.
    pub max_requests: u32,
    /// Refinements in flight per peer.
    pub max_refines_per_peer: u32,
    /// Refinements in flight over all peers.
    pub max_refines: u32,
    /// Retries of a timed-out refinement at one peer before the block is sought elsewhere.
    pub refine_retries: u32,
    /// Base of the refinement retry backoff (doubled per attempt, with jitter).
    pub refine_backoff: Duration,
    /// How long a refined window is trusted before an exhausted one may be refined again.
    pub refine_ttl: Duration,
    /// Timeout before any round trip is measured.
    pub initial_rto: Duration,
    /// Smallest timeout.
    pub min_rto: Duration,
    /// Largest timeout.
    pub max_rto: Duration,
    /// Consecutive request timeouts after which a peer is dropped as unresponsive.
    pub max_consecutive_timeouts: u32,
    /// How long a unit a peer rejected is not asked of that peer again.
    pub reject_backoff: Duration,
    /// T3 blocks downloaded from one peer at once (hysteresis).
    pub max_current_blocks: usize,
    /// Candidate blocks or units examined per decision before falling back to a bounded scan.
    pub max_probes: usize,
    /// Requests for the same unit at once in endgame.
    pub endgame_duplicates: u32,
    /// Requests a peer may queue at us before we reject with "busy".
    pub max_serve_queue: usize,
    /// Units handed to the embedder per peer and not yet reported sent.
    pub upload_slots_per_peer: u32,
    /// Units handed to the embedder over all peers.
    pub upload_slots: u32,
    /// T3 blocks a peer may subscribe to (by refining them) for pushed HAVEs.
    pub max_subscriptions: usize,
    /// Persist after this many newly completed units...
    pub persist_every: u64,
    /// ...or this long after the first unpersisted one.
    pub persist_interval: Duration,
    /// Full T3 summary resent this often (heals lost deltas).
    pub summary_refresh: Duration,
    /// Keep-alive sent when nothing else was for this long.
    pub keepalive: Duration,
    /// Coalescing delay for availability deltas under backpressure.
    pub batch_delay: Duration,
    /// Coalescing delay for the T1 deltas pushed to subscribers of a block: one window message
    /// per block and subscriber per interval instead of one HAVE per unit.
    pub push_interval: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_peers: 200,
            handshake_timeout: Duration::from_secs(10),
            min_window: 4,
            max_window: 64,
            max_requests: 512,
            max_refines_per_peer: 4,
            max_refines: 64,
            refine_retries: 3,
            refine_backoff: Duration::from_millis(500),
            refine_ttl: Duration::from_millis(1000),
            initial_rto: Duration::from_secs(5),
            min_rto: Duration::from_millis(500),
            max_rto: Duration::from_secs(60),
            max_consecutive_timeouts: 8,
            reject_backoff: Duration::from_secs(2),
            max_current_blocks: 4,
            max_probes: 64,
            endgame_duplicates: 2,
            max_serve_queue: 256,
            upload_slots_per_peer: 2,
            upload_slots: 16,
            max_subscriptions: 0,
            persist_every: 256,
            persist_interval: Duration::from_secs(1),
            summary_refresh: Duration::from_secs(30),
            keepalive: Duration::from_secs(30),
            batch_delay: Duration::from_millis(500),
            push_interval: Duration::from_millis(500),
        }
    }
}

/// Node configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Content root (BLAKE3 of the file).
    pub info_hash: [u8; 32],
    /// File length in bytes.
    pub file_len: u64,
    /// Our identity in handshakes.
    pub peer_id: String,
    /// Speak hierarchical availability (false: a legacy node, flat protocol only).
    pub hierarchical: bool,
    /// Seed of every random choice the node makes.
    pub seed: u64,
    /// Emit [`Action::Trace`] records.
    pub trace: bool,
    /// Limits.
    pub limits: Limits,
}

impl Config {
    /// A hierarchical node with default limits, seed 0 and tracing off.
    pub fn new(info_hash: [u8; 32], file_len: u64, peer_id: &str) -> Self {
        Config {
            info_hash,
            file_len,
            peer_id: peer_id.to_string(),
            hierarchical: true,
            seed: 0,
            trace: false,
            limits: Limits::default(),
        }
    }
}

/// Load levels reported by the embedder, each in `0.0..=1.0`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PressureSnapshot {
    /// Network (send queues).
    pub network: f32,
    /// Disk (write queue).
    pub disk: f32,
    /// CPU.
    pub cpu: f32,
    /// Memory.
    pub memory: f32,
}

/// Backpressure level, moved by [`PressureSnapshot`]s with hysteresis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Backpressure {
    /// Normal operation.
    None,
    /// Request windows halved.
    Throttle,
    /// Windows quartered, availability deltas coalesced, telemetry shed.
    Batch,
    /// No new requests issued; incoming requests rejected.
    Reject,
}

impl Backpressure {
    fn name(self) -> &'static str {
        match self {
            Backpressure::None => "none",
            Backpressure::Throttle => "throttle",
            Backpressure::Batch => "batch",
            Backpressure::Reject => "reject",
        }
    }
    fn threshold(self) -> f32 {
        match self {
            Backpressure::None => 0.0,
            Backpressure::Throttle => 0.6,
            Backpressure::Batch => 0.8,
            Backpressure::Reject => 0.95,
        }
    }
}

/// Something that happened, told to the node.
#[derive(Debug, Clone)]
pub enum Input {
    /// A connection is up (either direction). The node sends its handshake.
    PeerConnected {
        /// Handle for this connection.
        peer: PeerId,
    },
    /// A frame arrived on a connection.
    PeerFrame {
        /// The connection.
        peer: PeerId,
        /// The decoded frame.
        frame: Frame,
    },
    /// A connection closed (by the remote or by the embedder).
    PeerDisconnected {
        /// The connection.
        peer: PeerId,
    },
    /// A unit handed out by [`Action::StoreUnit`] (or obtained otherwise) was verified and
    /// written.
    UnitComplete {
        /// The unit.
        unit: u64,
    },
    /// A unit handed out by [`Action::StoreUnit`] failed verification.
    UnitFailed {
        /// The peer it came from.
        peer: PeerId,
        /// The unit.
        unit: u64,
    },
    /// A unit handed out by [`Action::Serve`] has been written to the connection.
    UnitSent {
        /// The connection.
        peer: PeerId,
        /// The unit.
        unit: u64,
    },
    /// Current load.
    Pressure(PressureSnapshot),
    /// New limits (take effect for new decisions).
    Reconfigure(Limits),
    /// Stop requesting, finish what is in flight, persist, then report [`Event::Drained`].
    Drain,
}

impl Input {
    /// A message from `peer` in an envelope naming the right content (a convenience for
    /// embedders that do not keep the envelope, such as tests).
    pub fn message(peer: PeerId, msg: Message) -> Self {
        Input::PeerFrame {
            peer,
            frame: Frame {
                info_hash: Bytes::new(),
                msg,
            },
        }
    }
}

/// Progress and lifecycle news for the embedder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A peer finished its handshake.
    PeerReady {
        /// The peer.
        peer: PeerId,
        /// Whether it takes the hierarchical path.
        capable: bool,
    },
    /// A unit was completed.
    Progress {
        /// Units present.
        units: u64,
        /// Units in the file.
        total: u64,
    },
    /// Every unit is present.
    Complete,
    /// Drain finished: nothing in flight, state persisted.
    Drained,
}

/// Something the embedder must do, in the order handed out.
#[derive(Debug, Clone)]
pub enum Action {
    /// Send a message on a connection.
    Send {
        /// The connection.
        peer: PeerId,
        /// The message.
        msg: Message,
    },
    /// Read `unit`, send it in a TRANSFER with its proof, then report [`Input::UnitSent`].
    Serve {
        /// The connection.
        peer: PeerId,
        /// The unit.
        unit: u64,
    },
    /// Verify `data` against the content root and write it, then report
    /// [`Input::UnitComplete`] or [`Input::UnitFailed`]. Never mark it available before.
    StoreUnit {
        /// Where it came from.
        peer: PeerId,
        /// The unit.
        unit: u64,
        /// Its bytes.
        data: Bytes,
        /// Its proof.
        proof: Option<Proof>,
    },
    /// Close a connection; the node has already released everything it held for it.
    Disconnect {
        /// The connection.
        peer: PeerId,
        /// Why.
        reason: String,
    },
    /// Write this encoded availability store atomically.
    Persist {
        /// The encoded [`StoreState`].
        store: Bytes,
    },
    /// News.
    Event(Event),
    /// A trace record (only with [`Config::trace`]).
    Trace(Stamped),
}

/// Counters and gauges.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Inputs handled (timeouts included).
    pub events: u64,
    /// Messages and bytes sent, by kind.
    pub sent: BTreeMap<&'static str, (u64, u64)>,
    /// Messages received, by kind.
    pub received: BTreeMap<&'static str, u64>,
    /// Unit requests sent.
    pub requests: u64,
    /// Unit requests that timed out (their units went back to the pool: retries).
    pub request_timeouts: u64,
    /// Units requested again after a timeout, reject or failed verification.
    pub retries: u64,
    /// Units received that were already present or being verified.
    pub duplicate_units: u64,
    /// Units that failed verification.
    pub failed_units: u64,
    /// Refine requests sent.
    pub refine_requests: u64,
    /// Refinements that timed out.
    pub refine_timeouts: u64,
    /// Refine responses that came after their timeout.
    pub late_refines: u64,
    /// Units served.
    pub units_served: u64,
    /// Requests rejected by us.
    pub rejects_sent: u64,
    /// Peers disconnected by the node, by reason.
    pub disconnects: BTreeMap<String, u64>,
    /// Persist actions.
    pub persists: u64,
    /// Active unit requests now.
    pub in_flight_requests: u32,
    /// Refinements in flight now.
    pub in_flight_refines: u32,
    /// Requests queued for upload now.
    pub queued_serves: u64,
}

/// Errors building a node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// The file length is not acceptable.
    #[error(transparent)]
    Geometry(#[from] TierError),
    /// The local tiers are for another file length.
    #[error("local state is for {found} bytes, config says {expected}")]
    WrongFile {
        /// Length of the state.
        found: u64,
        /// Length configured.
        expected: u64,
    },
    /// The persisted store was refused.
    #[error("availability store rejected: {0}")]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReqState {
    Active,
    Expired,
    Cancelled,
}

#[derive(Debug, Clone, Copy)]
struct UnitReq {
    sent_at: Timestamp,
    state: ReqState,
}

#[derive(Debug, Clone, Copy)]
struct RefineReq {
    peer: PeerId,
    block: u64,
    sent_at: Timestamp,
    attempt: u32,
    expired: bool,
    /// Units of the block we already knew the peer had when asking.
    known: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Handshake(PeerId),
    Request {
        unit: u64,
        peer: PeerId,
        sent_at: Timestamp,
    },
    ForgetRequest {
        unit: u64,
        peer: PeerId,
        sent_at: Timestamp,
    },
    Refine(u64),
    ForgetRefine(u64),
    Wake(PeerId),
    Persist,
    SummaryRefresh,
    KeepAlive,
    FlushDeltas,
    FlushPushes,
}

/// Per decision: what other peers are known to hold in a T3 block, by block.
type HeldCache = Vec<(u64, BlockMask)>;

/// Forgotten requests remembered (so that their late answers are not taken as unsolicited).
const MAX_FORGOTTEN: usize = 4096;

/// Output priority classes: control is never starved by bulk data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    Control = 0,
    Availability = 1,
    Data = 2,
    Telemetry = 3,
}

/// The protocol state machine for one swarm. See the [module docs](self).
#[derive(Debug)]
pub struct Node {
    cfg: Config,
    geo: Geometry,
    now: Timestamp,
    rng: Xoshiro256PlusPlus,
    local: LocalTiers,
    peers: BTreeMap<PeerId, Peer>,
    /// Units present, requested (actively) or being verified.
    claimed: Bitfield,
    claimed_count: u64,
    /// Claimed units per T3 block.
    claimed3: Vec<u16>,
    requests: BTreeMap<(u64, PeerId), UnitReq>,
    /// Requests we stopped waiting for, whose answers are still accepted as late.
    forgotten: VecDeque<(u64, PeerId)>,
    active_requests: u32,
    verifying: BTreeSet<u64>,
    refines: BTreeMap<u64, RefineReq>,
    refine_attempts: BTreeMap<(PeerId, u64), u32>,
    active_refines: u32,
    next_refine_id: u64,
    rarity3: Rarity,
    rarity1: Option<Rarity>,
    timers: TimerQueue<Timer>,
    outbox: [VecDeque<Action>; 4],
    dirty: BTreeSet<PeerId>,
    /// Peers whose last scheduling pass found less to request than their window allowed: the
    /// only ones worth waking when a unit returns to the pool.
    starved: BTreeSet<PeerId>,
    /// Some peer could not be scheduled because of the global request cap.
    global_blocked: bool,
    queued_serves: u64,
    serving_total: u32,
    serve_rr: PeerId,
    pending_deltas: BTreeSet<u64>,
    deltas_armed: bool,
    /// Units completed since the last push, per T3 block: `(first, last)`.
    pending_pushes: BTreeMap<u64, (u64, u64)>,
    pushes_armed: bool,
    unpersisted: u64,
    persist_armed: bool,
    pressure: Backpressure,
    draining: bool,
    drained: bool,
    stats: Stats,
}

impl Node {
    /// A node over `local` availability (empty for a fresh download, full for a seeder).
    ///
    /// # Panics
    /// If `local` is for a different file length than `cfg.file_len`; use
    /// [`Node::try_new`] to get an error instead.
    pub fn new(cfg: Config, local: LocalTiers, now: Timestamp) -> Self {
        Self::try_new(cfg, local, now).expect("local tiers match the configured file")
    }

    /// A node over `local` availability, checking that it matches the configuration.
    pub fn try_new(cfg: Config, local: LocalTiers, now: Timestamp) -> Result<Self, NodeError> {
        let geo = Geometry::new(cfg.file_len)?;
        if local.geometry() != geo {
            return Err(NodeError::WrongFile {
                found: local.geometry().file_len(),
                expected: cfg.file_len,
            });
        }
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(cfg.seed);
        let cap = cfg.limits.max_peers.min(u16::MAX as usize - 2) as u16;
        let rarity3 = Rarity::new(shuffled(geo.blocks(Tier::T3), &mut rng), cap);
        let mut node = Node {
            geo,
            now,
            rng,
            claimed: local.bitfield(Tier::T1).clone(),
            claimed_count: local.units_present(),
            claimed3: (0..geo.blocks(Tier::T3))
                .map(|b| local.units_in_t3(b) as u16)
                .collect(),
            local,
            peers: BTreeMap::new(),
            requests: BTreeMap::new(),
            forgotten: VecDeque::new(),
            active_requests: 0,
            verifying: BTreeSet::new(),
            refines: BTreeMap::new(),
            refine_attempts: BTreeMap::new(),
            active_refines: 0,
            next_refine_id: 1,
            rarity3,
            rarity1: None,
            timers: TimerQueue::default(),
            outbox: Default::default(),
            dirty: BTreeSet::new(),
            starved: BTreeSet::new(),
            global_blocked: false,
            queued_serves: 0,
            serving_total: 0,
            serve_rr: PeerId(0),
            pending_deltas: BTreeSet::new(),
            deltas_armed: false,
            pending_pushes: BTreeMap::new(),
            pushes_armed: false,
            unpersisted: 0,
            persist_armed: false,
            pressure: Backpressure::None,
            draining: false,
            drained: false,
            stats: Stats::default(),
            cfg,
        };
        for b in 0..geo.blocks(Tier::T3) {
            if node.block_claimed(b) {
                node.rarity3.park(b);
            }
        }
        node.timers.push(
            now.add(node.cfg.limits.summary_refresh),
            Timer::SummaryRefresh,
        );
        node.timers
            .push(now.add(node.cfg.limits.keepalive), Timer::KeepAlive);
        Ok(node)
    }

    /// A node resumed from a persisted store (see [`crate::store`]). Peer refinement caches
    /// are not persisted: they are rebuilt from the peers after restart.
    pub fn from_store(
        cfg: Config,
        store: &[u8],
        now: Timestamp,
    ) -> Result<(Self, LoadNotes), NodeError> {
        let (state, notes) = StoreState::decode_for(store, &cfg.info_hash, cfg.file_len)?;
        Ok((Self::try_new(cfg, state.tiers, now)?, notes))
    }

    /// The file's geometry.
    pub fn geometry(&self) -> Geometry {
        self.geo
    }

    /// Local availability.
    pub fn local(&self) -> &LocalTiers {
        &self.local
    }

    /// Whether every unit is present.
    pub fn is_complete(&self) -> bool {
        self.local.is_complete()
    }

    /// Counters and gauges.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Largest frame this node accepts: the largest of the per-kind limits of this file
    /// ([`FrameLimits`](crate::wire::FrameLimits), which a connection's reader applies).
    pub fn max_frame_len(&self) -> u64 {
        crate::wire::FrameLimits::for_geometry(self.geo)
            .max_frame()
            .into()
    }

    /// Heap bytes held for one peer, if connected.
    pub fn peer_heap_bytes(&self, peer: PeerId) -> Option<usize> {
        self.peers.get(&peer).map(|p| p.heap_bytes())
    }

    /// What we know `peer` holds (None before its handshake or when unknown).
    pub fn peer_view(&self, peer: PeerId) -> Option<&PeerView> {
        self.peers.get(&peer).and_then(|p| p.view.as_ref())
    }

    /// Connected peers.
    pub fn peers(&self) -> impl Iterator<Item = (&PeerId, &Peer)> {
        self.peers.iter()
    }

    /// The next time [`Node::handle_timeout`] must be called, if any.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.timers.next()
    }

    /// The next action, highest priority class first, FIFO within a class.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.outbox.iter_mut().find_map(|q| q.pop_front())
    }

    /// Handles one input at time `now` (earlier than the last input's time is taken as equal:
    /// time never goes back).
    pub fn handle_input(&mut self, now: Timestamp, input: Input) {
        self.advance(now);
        match input {
            Input::PeerConnected { peer } => self.on_connected(peer),
            Input::PeerFrame { peer, frame } => self.on_frame(peer, frame),
            Input::PeerDisconnected { peer } => {
                self.purge_outbox(peer);
                self.release(peer, "connection closed");
            }
            Input::UnitComplete { unit } => self.on_unit_complete(unit),
            Input::UnitFailed { peer, unit } => self.on_unit_failed(peer, unit),
            Input::UnitSent { peer, unit: _ } => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    if p.serving > 0 {
                        p.serving -= 1;
                        self.serving_total = self.serving_total.saturating_sub(1);
                    }
                }
                self.pump_serves();
            }
            Input::Pressure(p) => self.on_pressure(p),
            Input::Reconfigure(l) => {
                self.cfg.limits = l;
                self.dirty.extend(self.peers.keys().copied());
            }
            Input::Drain => self.draining = true,
        }
        self.finish();
    }

    /// Fires every timer due at or before `now`.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.advance(now);
        while let Some(t) = self.timers.pop_due(self.now) {
            self.on_timer(t);
        }
        self.finish();
    }

    fn advance(&mut self, now: Timestamp) {
        self.now = self.now.max(now);
        self.stats.events += 1;
    }

    /// After every input: schedule dirty peers, flush deltas, check drain, update gauges.
    fn finish(&mut self) {
        if self.global_blocked && self.active_requests < self.cfg.limits.max_requests {
            self.global_blocked = false;
            self.wake_starved();
        }
        let dirty = core::mem::take(&mut self.dirty);
        for p in dirty {
            self.fill(p);
        }
        if self.pressure < Backpressure::Batch {
            self.flush_deltas();
        } else if !self.pending_deltas.is_empty() && !self.deltas_armed {
            self.deltas_armed = true;
            self.timers.push(
                self.now.add(self.cfg.limits.batch_delay),
                Timer::FlushDeltas,
            );
        }
        if self.draining && !self.drained && self.active_requests == 0 && self.verifying.is_empty()
        {
            self.drained = true;
            self.persist();
            self.emit(Class::Control, Action::Event(Event::Drained));
        }
        self.stats.in_flight_requests = self.active_requests;
        self.stats.in_flight_refines = self.active_refines;
        self.stats.queued_serves = self.queued_serves;
    }

    // ---- output -------------------------------------------------------------------------

    fn emit(&mut self, class: Class, a: Action) {
        self.outbox[class as usize].push_back(a);
    }

    /// A unit went back to the pool: the peers that had nothing to do may have now.
    fn wake_starved(&mut self) {
        self.dirty.extend(self.starved.iter().copied());
    }

    /// Drops queued sends and serves to `peer`: nothing may be sent on a closed connection.
    fn purge_outbox(&mut self, peer: PeerId) {
        for q in &mut self.outbox {
            q.retain(|a| match a {
                Action::Send { peer: p, .. } | Action::Serve { peer: p, .. } => *p != peer,
                _ => true,
            });
        }
    }

    /// Emits a trace record; under batch pressure or worse telemetry is shed, except the record
    /// of the level change itself.
    fn trace(&mut self, r: Record) {
        let shed = self.pressure >= Backpressure::Batch && !matches!(r, Record::Pressure { .. });
        if self.cfg.trace && !shed {
            let s = Stamped {
                t: self.now,
                record: r,
            };
            self.emit(Class::Telemetry, Action::Trace(s));
        }
    }

    fn send(&mut self, peer: PeerId, msg: Message) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.last_sent = self.now;
        }
        self.queue_send(peer, msg);
    }

    /// Counts and queues a message; the caller keeps the peer's `last_sent` (the scheduler
    /// holds the peer outside the map while it decides).
    fn queue_send(&mut self, peer: PeerId, msg: Message) {
        let kind = msg.kind();
        self.count_sent(kind.name(), msg.frame_len() as u64);
        let class = match kind {
            MessageKind::Bitfield | MessageKind::Have | MessageKind::Summary => Class::Availability,
            _ => Class::Control,
        };
        self.emit(class, Action::Send { peer, msg });
    }

    fn count_sent(&mut self, kind: &'static str, bytes: u64) {
        let e = self.stats.sent.entry(kind).or_default();
        e.0 += 1;
        e.1 += bytes;
    }

    fn disconnect(&mut self, peer: PeerId, reason: &str) {
        if self.peers.contains_key(&peer) {
            self.purge_outbox(peer);
            *self
                .stats
                .disconnects
                .entry(reason.split(':').next().unwrap_or(reason).to_string())
                .or_default() += 1;
            self.release(peer, reason);
            self.emit(
                Class::Control,
                Action::Disconnect {
                    peer,
                    reason: reason.to_string(),
                },
            );
        }
    }

    // ---- connection lifecycle -------------------------------------------------------------

    fn on_connected(&mut self, peer: PeerId) {
        if self.peers.contains_key(&peer) {
            return;
        }
        if self.peers.len() >= self.cfg.limits.max_peers {
            self.emit(
                Class::Control,
                Action::Disconnect {
                    peer,
                    reason: "too many peers".into(),
                },
            );
            return;
        }
        self.peers.insert(peer, Peer::new(peer, self.now));
        self.timers.push(
            self.now.add(self.cfg.limits.handshake_timeout),
            Timer::Handshake(peer),
        );
        let hs = Message::Handshake {
            info_hash: Bytes::copy_from_slice(&self.cfg.info_hash),
            peer_id: self.cfg.peer_id.clone(),
            capabilities: self.cfg.hierarchical.then_some(Capabilities::OURS),
        };
        self.send(peer, hs);
    }

    /// Everything held for `peer` goes: requests back to the pool, refinements, views, queues.
    fn release(&mut self, peer: PeerId, reason: &str) {
        let Some(p) = self.peers.remove(&peer) else {
            return;
        };
        let mut released = 0;
        let keys: Vec<(u64, PeerId)> = self
            .requests
            .iter()
            .filter(|((_, q), _)| *q == peer)
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            if let Some(r) = self.requests.remove(&k) {
                if r.state == ReqState::Active {
                    self.active_requests -= 1;
                    released += 1;
                    self.unclaim_if_free(k.0);
                }
            }
        }
        let ids: Vec<u64> = self
            .refines
            .iter()
            .filter(|(_, r)| r.peer == peer)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(r) = self.refines.remove(&id) {
                if !r.expired {
                    self.active_refines -= 1;
                }
            }
        }
        let stale: Vec<(PeerId, u64)> = self
            .refine_attempts
            .range((peer, 0)..=(peer, u64::MAX))
            .map(|(k, _)| *k)
            .collect();
        for k in stale {
            self.refine_attempts.remove(&k);
        }
        self.serving_total = self.serving_total.saturating_sub(p.serving);
        match &p.view {
            Some(PeerView::Tiered(v)) => {
                for b in v.all_bits().iter_ones_in(0..v.all_bits().len()) {
                    self.rarity3.dec(b);
                }
                for b in v.partial_bits().iter_ones_in(0..v.partial_bits().len()) {
                    self.rarity3.dec(b);
                }
            }
            Some(PeerView::Flat(bits)) => {
                if let Some(r) = self.rarity1.as_mut() {
                    for u in bits.iter_ones_in(0..bits.len()) {
                        r.dec(u);
                    }
                }
            }
            None => {}
        }
        let peer_timers = |t: &Timer| match t {
            Timer::Handshake(q) | Timer::Wake(q) => *q != peer,
            Timer::Request { peer: q, .. } | Timer::ForgetRequest { peer: q, .. } => *q != peer,
            _ => true,
        };
        self.timers.retain(peer_timers);
        self.dirty.remove(&peer);
        self.starved.remove(&peer);
        self.queued_serves -= p.serve_queue.len() as u64;
        // Released units may be wanted from someone else now.
        if released > 0 {
            self.wake_starved();
        }
        self.trace(Record::PeerGone {
            peer,
            reason: reason.to_string(),
            requests_released: released,
        });
        self.pump_serves();
    }

    // ---- messages ---------------------------------------------------------------------------

    fn on_frame(&mut self, peer: PeerId, frame: Frame) {
        let Some(p) = self.peers.get(&peer) else {
            return;
        };
        *self
            .stats
            .received
            .entry(frame.msg.kind().name())
            .or_default() += 1;
        if !frame.info_hash.is_empty() && frame.info_hash[..] != self.cfg.info_hash[..] {
            return self.disconnect(peer, "frame for another info hash");
        }
        let ready = p.is_ready();
        let capable = p.is_capable();
        match frame.msg {
            Message::Handshake {
                info_hash,
                peer_id,
                capabilities,
            } => {
                if ready {
                    // A repeat of the same handshake is harmless; a different one is not.
                    let same = p.peer_id == peer_id.chars().take(64).collect::<String>()
                        && capable
                            == (self.cfg.hierarchical
                                && capabilities.is_some_and(|c| c.max_tier_supported >= 3));
                    if same {
                        return;
                    }
                    return self.disconnect(peer, "protocol: second handshake");
                }
                if info_hash[..] != self.cfg.info_hash[..] {
                    return self.disconnect(peer, "handshake for another info hash");
                }
                self.on_handshake(peer, peer_id, capabilities);
            }
            _ if !ready => self.disconnect(peer, "protocol: message before handshake"),
            Message::Bitfield { bits } => self.on_bitfield(peer, capable, bits),
            Message::Have { unit } => self.on_have(peer, unit),
            Message::Summary {
                tier,
                start,
                all,
                partial,
            } => {
                if !capable {
                    return self.disconnect(peer, "protocol: summary from a legacy peer");
                }
                self.on_summary(peer, tier, start, all, partial);
            }
            Message::RefineRequest {
                from_tier,
                to_tier,
                index,
                id,
            } => {
                if !capable {
                    return self.disconnect(peer, "protocol: refine from a legacy peer");
                }
                self.on_refine_request(peer, from_tier, to_tier, index, id);
            }
            Message::RefineResponse {
                tier,
                start,
                bits,
                id,
                reject,
            } => self.on_refine_response(peer, tier, start, bits, id, reject),
            Message::Request { unit } => self.on_request(peer, unit),
            Message::Cancel { unit } => self.on_cancel(peer, unit),
            Message::Transfer { unit, data, proof } => self.on_transfer(peer, unit, data, proof),
            Message::Reject { unit, reason } => self.on_reject(peer, unit, reason),
            Message::KeepAlive | Message::Unknown { .. } => {}
        }
    }

    fn on_handshake(&mut self, peer: PeerId, peer_id: String, caps: Option<Capabilities>) {
        let capable = self.cfg.hierarchical && caps.is_some_and(|c| c.max_tier_supported >= 3);
        let geo = self.geo;
        let p = self.peers.get_mut(&peer).expect("present");
        p.state = Lifecycle::Ready { capable };
        p.peer_id = peer_id.chars().take(64).collect();
        p.init_view(geo, capable);
        if capable {
            let s = self
                .local
                .summary(Tier::T3, 0, geo.blocks(Tier::T3))
                .expect("whole range is valid");
            self.send(
                peer,
                Message::Summary {
                    tier: 3,
                    start: 0,
                    all: Bytes::copy_from_slice(s.all.as_bytes()),
                    partial: Bytes::copy_from_slice(s.partial.as_bytes()),
                },
            );
        } else {
            let bits = Bytes::copy_from_slice(self.local.bitfield(Tier::T1).as_bytes());
            self.send(peer, Message::Bitfield { bits });
        }
        self.emit(
            Class::Control,
            Action::Event(Event::PeerReady { peer, capable }),
        );
        self.trace(Record::PeerReady { peer, capable });
    }

    fn rarity1(&mut self) -> &mut Rarity {
        if self.rarity1.is_none() {
            let cap = self.cfg.limits.max_peers.min(u16::MAX as usize - 2) as u16;
            let mut r = Rarity::new(shuffled(self.geo.units(), &mut self.rng), cap);
            for u in self.claimed.iter_ones_in(0..self.geo.units()) {
                r.park(u);
            }
            self.rarity1 = Some(r);
        }
        self.rarity1.as_mut().expect("just set")
    }

    fn on_bitfield(&mut self, peer: PeerId, capable: bool, bits: Bytes) {
        if capable {
            return self.disconnect(peer, "protocol: bitfield from a capable peer");
        }
        let units = self.geo.units();
        let parsed = match Bitfield::from_bytes(&bits, units) {
            Ok(b) => b,
            Err(e) => return self.disconnect(peer, &format!("bad bitfield: {e}")),
        };
        let p = self.peers.get_mut(&peer).expect("present");
        let Some(PeerView::Flat(have)) = p.view.as_mut() else {
            return;
        };
        if have.count_ones() > 0 {
            return self.disconnect(peer, "protocol: second bitfield");
        }
        *have = parsed;
        let ones: Vec<u64> = have.iter_ones_in(0..units).collect();
        let r = self.rarity1();
        for u in ones {
            r.inc(u);
        }
        self.dirty.insert(peer);
    }

    fn on_have(&mut self, peer: PeerId, unit: u64) {
        if unit >= self.geo.units() {
            return self.disconnect(peer, "claim: HAVE past the end of the file");
        }
        let p = self.peers.get_mut(&peer).expect("present");
        match p.view.as_mut() {
            Some(PeerView::Flat(have)) => {
                let newly = have.set(unit);
                if newly {
                    self.rarity1().inc(unit);
                }
            }
            Some(PeerView::Tiered(v)) => match v.apply_have(unit) {
                Ok(Some(b)) => self.rarity3.inc(b),
                Ok(None) => {}
                Err(e) => return self.disconnect(peer, &format!("claim: {e}")),
            },
            None => {}
        }
        self.dirty.insert(peer);
    }

    fn on_summary(&mut self, peer: PeerId, tier: u32, start: u64, all: Bytes, partial: Bytes) {
        let p = self.peers.get_mut(&peer).expect("present");
        let Some(PeerView::Tiered(v)) = p.view.as_mut() else {
            return;
        };
        let result = match Tier::from_number(tier) {
            Some(Tier::T3) => v.apply_summary(start, &all, &partial),
            Some(t) => v.apply_refined(t, start, &all),
            None => return self.disconnect(peer, "protocol: summary of an unknown tier"),
        };
        match result {
            Ok(newly) => {
                for b in newly {
                    self.rarity3.inc(b);
                }
                self.dirty.insert(peer);
            }
            Err(e) => self.disconnect(peer, &format!("claim: {e}")),
        }
    }

    fn on_refine_request(&mut self, peer: PeerId, from: u32, to: u32, index: u64, id: u64) {
        let reply = |bits: Bytes, start: u64, reject: Option<&str>| Message::RefineResponse {
            tier: to,
            start,
            bits,
            id,
            reject: reject.map(str::to_string),
        };
        if self.pressure == Backpressure::Reject {
            self.stats.rejects_sent += 1;
            return self.send(peer, reply(Bytes::new(), 0, Some("overloaded")));
        }
        let (Some(from_t), Some(to_t)) = (Tier::from_number(from), Tier::from_number(to)) else {
            return self.send(peer, reply(Bytes::new(), 0, Some("unknown tier")));
        };
        let range = match self.geo.child_range(from_t, index, to_t) {
            Ok(r) => r,
            Err(e) => return self.send(peer, reply(Bytes::new(), 0, Some(&e.to_string()))),
        };
        let bits = self
            .local
            .bitfield(to_t)
            .window(range.start, range.end - range.start);
        self.send(
            peer,
            reply(Bytes::copy_from_slice(bits.as_bytes()), range.start, None),
        );
        // The asker follows this block now: push it HAVEs until the block is whole here.
        let block = self
            .geo
            .parent_of(from_t, index, Tier::T3)
            .min(self.geo.blocks(Tier::T3).saturating_sub(1));
        let max = self.cfg.limits.max_subscriptions;
        let whole = self.local.has_at_tier(Tier::T3, block);
        let p = self.peers.get_mut(&peer).expect("present");
        if max > 0 && !whole && !p.subscriptions.contains(&block) {
            if p.subscriptions.len() >= max {
                p.subscriptions.pop_front();
            }
            p.subscriptions.push_back(block);
        }
    }

    fn on_refine_response(
        &mut self,
        peer: PeerId,
        tier: u32,
        start: u64,
        bits: Bytes,
        id: u64,
        reject: Option<String>,
    ) {
        let Some(r) = self.refines.get(&id).copied().filter(|r| r.peer == peer) else {
            return self.disconnect(peer, "protocol: refine response nobody asked for");
        };
        self.refines.remove(&id);
        let late = r.expired;
        if !late {
            self.active_refines -= 1;
        }
        let limits = self.cfg.limits.clone();
        let now = self.now;
        let p = self.peers.get_mut(&peer).expect("present");
        if !late {
            p.refines -= 1;
            p.rtt.sample(now.since(r.sent_at));
        } else {
            self.stats.late_refines += 1;
        }
        if let Some(reason) = reject {
            p.refine_backoff
                .push((r.block, now.add(limits.refine_backoff * 4)));
            self.trace(Record::Rejected {
                peer,
                unit: r.block,
                reason,
            });
            self.dirty.insert(peer);
            return;
        }
        let Some(PeerView::Tiered(v)) = p.view.as_mut() else {
            return;
        };
        let expected = self.geo.unit_range(Tier::T3, r.block).map(|u| u.start);
        let (Some(Tier::T1), Ok(first)) = (Tier::from_number(tier), expected) else {
            return self.disconnect(peer, "protocol: refine response for another window");
        };
        if start != first || bits.len() as u64 > Tier::T3.units_per_block() / 8 {
            return self.disconnect(peer, "protocol: refine response for another window");
        }
        let newly = match v.apply_refined(Tier::T1, start, &bits) {
            Ok(n) => n,
            Err(e) => return self.disconnect(peer, &format!("claim: {e}")),
        };
        v.note_refined(r.block);
        let units = v.window(r.block).map_or(0, |w| w.count_ones());
        // A refinement that told us nothing new doubles the wait before the next one of this
        // block at this peer (a peer that stays partial is not polled every second).
        let prev_ttl = p
            .refined_at
            .iter()
            .find(|(b, ..)| *b == r.block)
            .map_or(limits.refine_ttl, |(.., ttl)| *ttl);
        let ttl = if units > r.known {
            limits.refine_ttl
        } else {
            (prev_ttl * 2).min(limits.max_rto / 2)
        };
        p.refined_at.retain(|(b, ..)| *b != r.block);
        p.refined_at.push((r.block, now, ttl));
        if p.refined_at.len() > crate::availability::MAX_WINDOWS {
            p.refined_at.remove(0);
        }
        if !late {
            self.refine_attempts.remove(&(peer, r.block));
        }
        for b in newly {
            self.rarity3.inc(b);
        }
        self.trace(Record::Refined {
            peer,
            block: r.block,
            id,
            units,
            late,
        });
        self.dirty.insert(peer);
    }

    fn on_request(&mut self, peer: PeerId, unit: u64) {
        let reason = if unit >= self.geo.units() {
            Some("no such unit")
        } else if !self.local.has_at_tier(Tier::T1, unit) {
            Some("not available")
        } else if self.pressure == Backpressure::Reject {
            Some("overloaded")
        } else if self.draining {
            Some("draining")
        } else if self.peers[&peer].serve_queue.len() >= self.cfg.limits.max_serve_queue {
            Some("busy")
        } else {
            None
        };
        match reason {
            Some(reason) => {
                self.stats.rejects_sent += 1;
                self.send(
                    peer,
                    Message::Reject {
                        unit,
                        reason: reason.into(),
                    },
                );
            }
            None => {
                let p = self.peers.get_mut(&peer).expect("present");
                p.serve_queue.push_back(unit);
                self.queued_serves += 1;
                self.pump_serves();
            }
        }
    }

    fn on_cancel(&mut self, peer: PeerId, unit: u64) {
        let p = self.peers.get_mut(&peer).expect("present");
        if let Some(i) = p.serve_queue.iter().position(|&u| u == unit) {
            p.serve_queue.remove(i);
            self.queued_serves -= 1;
            // Every request gets exactly one answer, even a cancelled one.
            self.send(
                peer,
                Message::Reject {
                    unit,
                    reason: "cancelled".into(),
                },
            );
        }
    }

    /// Hands units to the embedder while upload slots are free, round-robin over peers.
    fn pump_serves(&mut self) {
        let (per_peer, total) = (
            self.cfg.limits.upload_slots_per_peer,
            self.cfg.limits.upload_slots,
        );
        while self.serving_total < total {
            let after = self
                .peers
                .range((
                    core::ops::Bound::Excluded(self.serve_rr),
                    core::ops::Bound::Unbounded,
                ))
                .chain(self.peers.range(..=self.serve_rr))
                .find(|(_, p)| !p.serve_queue.is_empty() && p.serving < per_peer)
                .map(|(id, _)| *id);
            let Some(peer) = after else { break };
            let p = self.peers.get_mut(&peer).expect("present");
            let unit = p.serve_queue.pop_front().expect("non-empty");
            self.queued_serves -= 1;
            p.serving += 1;
            self.serving_total += 1;
            self.serve_rr = peer;
            self.stats.units_served += 1;
            // The embedder builds the TRANSFER: count its payload and a full-depth proof.
            self.count_sent("transfer", self.geo.unit_len(unit) + 64 + 40 * 32);
            self.trace(Record::Serve { peer, unit });
            self.emit(Class::Data, Action::Serve { peer, unit });
        }
    }

    fn on_transfer(&mut self, peer: PeerId, unit: u64, data: Bytes, proof: Option<Proof>) {
        let forgotten = !self.requests.contains_key(&(unit, peer)) && self.forgotten(unit, peer);
        let Some(r) = self
            .requests
            .remove(&(unit, peer))
            .or(forgotten.then_some(UnitReq {
                sent_at: Timestamp::ZERO,
                state: ReqState::Expired,
            }))
        else {
            return self.disconnect(peer, "protocol: unit nobody asked for");
        };
        let now = self.now;
        let len = self.geo.unit_len(unit);
        let p = self.peers.get_mut(&peer).expect("present");
        if !forgotten {
            p.owed -= 1;
        }
        p.last_answer_at = Some(now);
        let late = r.state != ReqState::Active;
        if !late {
            p.active -= 1;
            p.rtt.sample(now.since(r.sent_at));
            p.consecutive_timeouts = 0;
            p.last_answered_sent = p.last_answered_sent.max(r.sent_at);
            self.active_requests -= 1;
        }
        p.note_unit(len, now);
        self.dirty.insert(peer);
        if !forgotten {
            self.settle(unit, peer);
        }
        if self.local.has_at_tier(Tier::T1, unit) || self.verifying.contains(&unit) {
            self.stats.duplicate_units += 1;
            return;
        }
        self.trace(Record::Received { peer, unit, late });
        self.claim(unit);
        self.verifying.insert(unit);
        self.cancel_others(unit, peer);
        self.emit(
            Class::Control,
            Action::StoreUnit {
                peer,
                unit,
                data,
                proof,
            },
        );
    }

    /// Cancels the other requests for `unit` (endgame duplicates): each still gets its answer.
    fn cancel_others(&mut self, unit: u64, except: PeerId) {
        let others: Vec<PeerId> = self
            .requests
            .range((unit, PeerId(0))..=(unit, PeerId(u64::MAX)))
            .filter(|((_, q), r)| *q != except && r.state == ReqState::Active)
            .map(|((_, q), _)| *q)
            .collect();
        for q in others {
            if let Some(r) = self.requests.get_mut(&(unit, q)) {
                r.state = ReqState::Cancelled;
                let sent_at = r.sent_at;
                self.active_requests -= 1;
                if let Some(p) = self.peers.get_mut(&q) {
                    p.active -= 1;
                }
                self.arm_forget(unit, q, sent_at);
                self.send(q, Message::Cancel { unit });
            }
        }
    }

    /// Arms the timer after which an expired or cancelled request stops holding window room.
    /// Its answer may still come later: it is then recognised by [`Node::forgotten`].
    fn arm_forget(&mut self, unit: u64, peer: PeerId, sent_at: Timestamp) {
        let wait = self
            .peers
            .get(&peer)
            .map_or(self.cfg.limits.max_rto, |p| self.rto(p) * 2)
            .max(Duration::from_secs(2));
        self.timers.push(
            self.now.add(wait),
            Timer::ForgetRequest {
                unit,
                peer,
                sent_at,
            },
        );
    }

    /// Remembers that `(unit, peer)` is settled (answered, or given up on), so that a late or
    /// repeated answer is recognised rather than taken as unsolicited.
    fn settle(&mut self, unit: u64, peer: PeerId) {
        if self.forgotten.len() >= MAX_FORGOTTEN {
            self.forgotten.pop_front();
        }
        self.forgotten.push_back((unit, peer));
    }

    /// Whether `(unit, peer)` is a settled request (its answer is late or repeated, not
    /// unsolicited). Consumes the record.
    fn forgotten(&mut self, unit: u64, peer: PeerId) -> bool {
        match self.forgotten.iter().position(|&k| k == (unit, peer)) {
            Some(i) => {
                self.forgotten.remove(i);
                true
            }
            None => false,
        }
    }

    fn on_reject(&mut self, peer: PeerId, unit: u64, reason: String) {
        let Some(r) = self.requests.remove(&(unit, peer)) else {
            if self.forgotten(unit, peer) {
                return;
            }
            return self.disconnect(peer, "protocol: reject nobody asked for");
        };
        self.settle(unit, peer);
        let now = self.now;
        let p = self.peers.get_mut(&peer).expect("present");
        p.owed -= 1;
        p.last_answer_at = Some(now);
        if r.state == ReqState::Active {
            p.active -= 1;
            self.active_requests -= 1;
            if p.rejected.len() >= peer::MAX_REJECTED {
                p.rejected.retain(|_, until| *until > now);
                if p.rejected.len() >= peer::MAX_REJECTED {
                    p.rejected.pop_first();
                }
            }
            p.rejected
                .insert(unit, now.add(self.cfg.limits.reject_backoff));
            self.timers
                .push(now.add(self.cfg.limits.reject_backoff), Timer::Wake(peer));
            self.stats.retries += 1;
            self.unclaim_if_free(unit);
            self.trace(Record::Rejected { peer, unit, reason });
            self.dirty.insert(peer);
            self.wake_starved();
        }
    }

    // ---- local completion ------------------------------------------------------------------

    fn on_unit_complete(&mut self, unit: u64) {
        self.verifying.remove(&unit);
        let promo = match self.local.mark_t1_complete(unit) {
            Ok(p) if p.newly_set => p,
            _ => return,
        };
        self.claim(unit);
        if let Some(r) = self.rarity1.as_mut() {
            r.park(unit);
        }
        self.trace(Record::Completed {
            unit,
            t2: promo.t2,
            t3: promo.t3,
        });
        let b3 = self.geo.parent_of(Tier::T1, unit, Tier::T3);
        // Announce: legacy peers get a HAVE; capable peers subscribed to the block get a HAVE;
        // every capable peer learns block state changes (empty→partial, partial→all).
        let mut haves = Vec::new();
        for (id, p) in self.peers.iter_mut() {
            match p.state {
                Lifecycle::Ready { capable: false } => haves.push(*id),
                Lifecycle::Ready { capable: true } if promo.t3 == Some(b3) => {
                    p.subscriptions.retain(|&b| b != b3);
                }
                _ => {}
            }
        }
        for id in haves {
            self.send(id, Message::Have { unit });
        }
        if promo.t3 == Some(b3) {
            // The T3 delta tells everyone; subscriptions to the block have lapsed.
            self.pending_pushes.remove(&b3);
        } else {
            let e = self.pending_pushes.entry(b3).or_insert((unit, unit));
            *e = (e.0.min(unit), e.1.max(unit));
            if !self.pushes_armed {
                self.pushes_armed = true;
                let delay = match self.pressure {
                    Backpressure::None | Backpressure::Throttle => self.cfg.limits.push_interval,
                    _ => self.cfg.limits.push_interval * 4,
                };
                self.timers.push(self.now.add(delay), Timer::FlushPushes);
            }
        }
        if promo.t3_started.is_some() || promo.t3.is_some() {
            self.pending_deltas.insert(b3);
        }
        let total = self.geo.units();
        let units = self.local.units_present();
        self.emit(
            Class::Control,
            Action::Event(Event::Progress { units, total }),
        );
        self.unpersisted += 1;
        if self.local.is_complete() {
            self.trace(Record::Complete);
            self.persist();
            self.emit(Class::Control, Action::Event(Event::Complete));
        } else if self.unpersisted >= self.cfg.limits.persist_every {
            self.persist();
        } else if !self.persist_armed {
            self.persist_armed = true;
            self.timers.push(
                self.now.add(self.cfg.limits.persist_interval),
                Timer::Persist,
            );
        }
    }

    fn on_unit_failed(&mut self, peer: PeerId, unit: u64) {
        if self.verifying.remove(&unit) {
            self.stats.failed_units += 1;
            self.stats.retries += 1;
            self.unclaim_if_free(unit);
            self.wake_starved();
        }
        self.disconnect(peer, "sent data that failed verification");
    }

    fn persist(&mut self) {
        if self.unpersisted == 0 && self.stats.persists > 0 {
            return;
        }
        self.unpersisted = 0;
        self.stats.persists += 1;
        let store =
            crate::store::encode_tiers(&self.cfg.info_hash, &self.local, self.now.as_micros());
        let units = self.local.units_present();
        self.trace(Record::Persist { units });
        self.emit(
            Class::Control,
            Action::Persist {
                store: store.into(),
            },
        );
    }

    fn flush_deltas(&mut self) {
        if self.pending_deltas.is_empty() {
            return;
        }
        let blocks = core::mem::take(&mut self.pending_deltas);
        let capable: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.is_capable())
            .map(|(id, _)| *id)
            .collect();
        // One summary per run of consecutive changed blocks.
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for b in blocks {
            match runs.last_mut() {
                Some((s, l)) if *s + *l == b => *l += 1,
                _ => runs.push((b, 1)),
            }
        }
        for (start, len) in runs {
            let s = self
                .local
                .summary(Tier::T3, start, len)
                .expect("blocks exist");
            let (all, partial) = (
                Bytes::copy_from_slice(s.all.as_bytes()),
                Bytes::copy_from_slice(s.partial.as_bytes()),
            );
            for &id in &capable {
                self.send(
                    id,
                    Message::Summary {
                        tier: 3,
                        start,
                        all: all.clone(),
                        partial: partial.clone(),
                    },
                );
            }
        }
    }

    /// Sends each subscriber of a changed block one T1 window covering the units completed
    /// there since the last push.
    fn flush_pushes(&mut self) {
        let pushes = core::mem::take(&mut self.pending_pushes);
        for (block, (lo, hi)) in pushes {
            let bits = self.local.bitfield(Tier::T1).window(lo, hi - lo + 1);
            let bits = Bytes::copy_from_slice(bits.as_bytes());
            let subs: Vec<PeerId> = self
                .peers
                .iter()
                .filter(|(_, p)| p.is_capable() && p.subscriptions.contains(&block))
                .map(|(id, _)| *id)
                .collect();
            for id in subs {
                self.send(
                    id,
                    Message::Summary {
                        tier: 1,
                        start: lo,
                        all: bits.clone(),
                        partial: Bytes::new(),
                    },
                );
            }
        }
    }

    fn on_pressure(&mut self, s: PressureSnapshot) {
        let x = s.network.max(s.disk).max(s.cpu).max(s.memory);
        let levels = [
            Backpressure::None,
            Backpressure::Throttle,
            Backpressure::Batch,
            Backpressure::Reject,
        ];
        let up = levels
            .iter()
            .rev()
            .find(|l| x >= l.threshold())
            .copied()
            .unwrap_or(Backpressure::None);
        // Hysteresis: going down needs the load 0.1 below the current level's threshold.
        let next = if up >= self.pressure || x < self.pressure.threshold() - 0.1 {
            up
        } else {
            self.pressure
        };
        if next != self.pressure {
            self.pressure = next;
            self.trace(Record::Pressure { level: next.name() });
            if next < Backpressure::Reject {
                self.dirty.extend(self.peers.keys().copied());
            }
        }
    }

    // ---- timers ------------------------------------------------------------------------------

    fn on_timer(&mut self, t: Timer) {
        match t {
            Timer::Handshake(peer) => {
                if self.peers.get(&peer).is_some_and(|p| !p.is_ready()) {
                    self.disconnect(peer, "handshake timeout");
                }
            }
            Timer::Request {
                unit,
                peer,
                sent_at,
            } => self.on_request_timeout(unit, peer, sent_at),
            Timer::ForgetRequest {
                unit,
                peer,
                sent_at,
            } => {
                let k = (unit, peer);
                if self
                    .requests
                    .get(&k)
                    .is_some_and(|r| r.sent_at == sent_at && r.state != ReqState::Active)
                {
                    self.requests.remove(&k);
                    self.settle(unit, peer);
                    if let Some(p) = self.peers.get_mut(&peer) {
                        p.owed -= 1;
                    }
                    self.dirty.insert(peer);
                }
            }
            Timer::Refine(id) => self.on_refine_timeout(id),
            Timer::ForgetRefine(id) => {
                if self.refines.get(&id).is_some_and(|r| r.expired) {
                    self.refines.remove(&id);
                }
            }
            Timer::Wake(peer) => {
                self.dirty.insert(peer);
            }
            Timer::Persist => {
                self.persist_armed = false;
                if self.unpersisted > 0 {
                    self.persist();
                }
            }
            Timer::FlushDeltas => {
                self.deltas_armed = false;
                self.flush_deltas();
            }
            Timer::FlushPushes => {
                self.pushes_armed = false;
                self.flush_pushes();
            }
            Timer::SummaryRefresh => {
                let n = self.geo.blocks(Tier::T3);
                self.pending_deltas.extend(0..n);
                self.timers.push(
                    self.now.add(self.cfg.limits.summary_refresh),
                    Timer::SummaryRefresh,
                );
            }
            Timer::KeepAlive => {
                let idle = self.cfg.limits.keepalive;
                let now = self.now;
                let quiet: Vec<PeerId> = self
                    .peers
                    .iter()
                    .filter(|(_, p)| p.is_ready() && now.since(p.last_sent) >= idle)
                    .map(|(id, _)| *id)
                    .collect();
                for id in quiet {
                    self.send(id, Message::KeepAlive);
                }
                self.timers.push(now.add(idle), Timer::KeepAlive);
            }
        }
    }

    fn rto(&self, p: &Peer) -> Duration {
        let l = &self.cfg.limits;
        p.rtt.rto(l.initial_rto, l.min_rto, l.max_rto)
    }

    fn on_request_timeout(&mut self, unit: u64, peer: PeerId, sent_at: Timestamp) {
        let k = (unit, peer);
        match self.requests.get(&k) {
            Some(r) if r.sent_at == sent_at && r.state == ReqState::Active => {}
            _ => return,
        }
        // A peer answers its requests in order, so a request queued behind others is late only
        // if the peer has made no progress for a whole timeout: re-arm from its last answer.
        // The hard limit keeps a unit from waiting forever behind a trickling peer.
        let p = self
            .peers
            .get(&peer)
            .expect("requests are released with peers");
        let rto = self.rto(p);
        // Answers come in order: if a request sent after this one was answered, this one (or
        // its answer) was lost.
        let overtaken = p.last_answered_sent > sent_at;
        if let Some(last) = p.last_answer_at.filter(|&t| t > sent_at && !overtaken) {
            let again = last.add(rto);
            if again > self.now && self.now.since(sent_at) < self.cfg.limits.max_rto {
                self.timers.push(
                    again,
                    Timer::Request {
                        unit,
                        peer,
                        sent_at,
                    },
                );
                return;
            }
        }
        if let Some(r) = self.requests.get_mut(&k) {
            r.state = ReqState::Expired;
        }
        self.active_requests -= 1;
        self.stats.request_timeouts += 1;
        self.stats.retries += 1;
        let p = self.peers.get_mut(&peer).expect("present");
        p.active -= 1;
        p.rtt.on_timeout();
        p.consecutive_timeouts += 1;
        // Unresponsive: many timeouts in a row and no answer at all for a while (a peer that
        // answers others but loses some is slow or lossy, not dead).
        let silent = p
            .last_answer_at
            .is_none_or(|t| self.now.since(t) >= self.cfg.limits.max_rto / 2);
        let unresponsive =
            p.consecutive_timeouts >= self.cfg.limits.max_consecutive_timeouts && silent;
        self.arm_forget(unit, peer, sent_at);
        let waited = self.now.since(sent_at);
        self.trace(Record::RequestTimeout {
            peer,
            unit,
            rto_us: waited.as_micros() as u64,
        });
        self.unclaim_if_free(unit);
        if unresponsive {
            self.disconnect(peer, "unresponsive: too many request timeouts");
        } else {
            self.dirty.insert(peer);
        }
        self.wake_starved();
    }

    fn on_refine_timeout(&mut self, id: u64) {
        let Some(r) = self.refines.get_mut(&id) else {
            return;
        };
        if r.expired {
            return;
        }
        r.expired = true;
        let r = *r;
        self.active_refines -= 1;
        self.stats.refine_timeouts += 1;
        let l = self.cfg.limits.clone();
        let attempt = self
            .refine_attempts
            .get(&(r.peer, r.block))
            .copied()
            .unwrap_or(0)
            + 1;
        let retry = attempt <= l.refine_retries;
        // Exponential backoff with deterministic jitter (±25 %) from the node's generator.
        let base = l.refine_backoff * (1 << attempt.min(10));
        let jitter = (self.rng.next_u64() % 501) as f64 / 1000.0 + 0.75;
        let wait = if retry {
            base.mul_f64(jitter)
        } else {
            l.max_rto
        };
        let until = self.now.add(wait);
        if retry {
            self.refine_attempts.insert((r.peer, r.block), attempt);
        } else {
            self.refine_attempts.remove(&(r.peer, r.block));
        }
        let p = self
            .peers
            .get_mut(&r.peer)
            .expect("refines are released with peers");
        p.refines -= 1;
        p.rtt.on_timeout();
        p.refine_backoff.push((r.block, until));
        self.timers.push(until, Timer::Wake(r.peer));
        self.timers
            .push(self.now.add(l.max_rto), Timer::ForgetRefine(id));
        self.trace(Record::RefineTimeout {
            peer: r.peer,
            block: r.block,
            id,
            attempt: r.attempt,
            retry,
        });
        // The block may be sought from someone else meanwhile.
        self.dirty.insert(r.peer);
        self.wake_starved();
    }

    // ---- claims ------------------------------------------------------------------------------

    fn block_len(&self, b: u64) -> u16 {
        self.geo
            .unit_range(Tier::T3, b)
            .map_or(0, |r| (r.end - r.start) as u16)
    }

    fn block_claimed(&self, b: u64) -> bool {
        self.claimed3[b as usize] >= self.block_len(b)
    }

    fn claim(&mut self, unit: u64) {
        if self.claimed.set(unit) {
            self.claimed_count += 1;
            let b = self.geo.parent_of(Tier::T1, unit, Tier::T3);
            self.claimed3[b as usize] += 1;
            if let Some(r) = self.rarity1.as_mut() {
                r.park(unit);
            }
            if self.block_claimed(b) {
                self.rarity3.park(b);
            }
        }
    }

    /// Releases `unit`'s claim unless it is present, being verified or still actively
    /// requested from someone.
    fn unclaim_if_free(&mut self, unit: u64) {
        if self.local.has_at_tier(Tier::T1, unit)
            || self.verifying.contains(&unit)
            || self.active_for(unit) > 0
        {
            return;
        }
        if self.claimed.clear(unit) {
            self.claimed_count -= 1;
            let b = self.geo.parent_of(Tier::T1, unit, Tier::T3);
            self.claimed3[b as usize] -= 1;
            if let Some(r) = self.rarity1.as_mut() {
                r.unpark(unit);
            }
            self.rarity3.unpark(b);
        }
    }

    fn active_for(&self, unit: u64) -> u32 {
        self.requests
            .range((unit, PeerId(0))..=(unit, PeerId(u64::MAX)))
            .filter(|(_, r)| r.state == ReqState::Active)
            .count() as u32
    }

    // ---- scheduling --------------------------------------------------------------------------

    /// Issues requests (and refinements) to `peer` up to its window.
    fn fill(&mut self, peer: PeerId) {
        if self.draining || self.local.is_complete() || self.pressure == Backpressure::Reject {
            return;
        }
        let Some(mut p) = self.peers.remove(&peer) else {
            return;
        };
        if p.is_ready() {
            let l = &self.cfg.limits;
            let mut window = p.window(T1_SIZE, l.min_window, l.max_window);
            window = match self.pressure {
                Backpressure::Throttle => (window / 2).max(1),
                Backpressure::Batch => (window / 4).max(1),
                _ => window,
            };
            // Expired requests still owed an answer do not hold the window (a lossy or
            // partitioned link would otherwise starve it), but they are bounded too.
            let room = window
                .saturating_sub(p.active)
                .min((2 * window).saturating_sub(p.owed));
            let global = l.max_requests.saturating_sub(self.active_requests);
            let budget = room.min(global) as usize;
            let mut issued = 0;
            if global == 0 {
                self.global_blocked = true;
            }
            if budget > 0 {
                let mut picks = Vec::new();
                let path = if p.is_capable() {
                    self.pick_blocks(&mut p, budget, &mut picks);
                    "block"
                } else {
                    self.pick_flat(&p, budget, &mut picks);
                    "flat"
                };
                self.issue(&mut p, &picks, path, window);
                issued = picks.len();
                if picks.len() < budget && self.claimed_count == self.geo.units() {
                    let mut dup = Vec::new();
                    self.pick_endgame(&p, budget - picks.len(), &mut dup);
                    self.issue(&mut p, &dup, "endgame", window);
                    issued += dup.len();
                }
            }
            if issued < budget || global == 0 {
                self.starved.insert(peer);
            } else {
                self.starved.remove(&peer);
            }
        }
        self.peers.insert(peer, p);
    }

    fn issue(&mut self, p: &mut Peer, units: &[u64], path: &'static str, window: u32) {
        let rto = self.rto(p);
        let mut run: Option<(u64, u32)> = None;
        for &unit in units {
            self.requests.insert(
                (unit, p.id),
                UnitReq {
                    sent_at: self.now,
                    state: ReqState::Active,
                },
            );
            self.claim(unit);
            p.owed += 1;
            p.active += 1;
            p.last_sent = self.now;
            self.active_requests += 1;
            self.stats.requests += 1;
            self.timers.push(
                self.now.add(rto),
                Timer::Request {
                    unit,
                    peer: p.id,
                    sent_at: self.now,
                },
            );
            self.queue_send(p.id, Message::Request { unit });
            run = match run {
                Some((s, n)) if s + n as u64 == unit => Some((s, n + 1)),
                Some((s, n)) => {
                    self.trace_request(p, s, n, path, window);
                    Some((unit, 1))
                }
                None => Some((unit, 1)),
            };
        }
        if let Some((s, n)) = run {
            self.trace_request(p, s, n, path, window);
        }
    }

    fn trace_request(&mut self, p: &Peer, unit: u64, count: u32, path: &'static str, w: u32) {
        self.trace(Record::Request {
            peer: p.id,
            unit,
            count,
            path,
            window: w,
        });
    }

    /// Units of T3 block `b` that other connected peers are known to have (the union of their
    /// knowledge), as a window over the block. O(peers).
    fn held_elsewhere(&self, p: PeerId, b: u64) -> BlockMask {
        let range = self.geo.unit_range(Tier::T3, b).unwrap_or(0..0);
        let len = range.end - range.start;
        let mut held = BlockMask::default();
        for (id, q) in &self.peers {
            if *id == p {
                continue;
            }
            match &q.view {
                Some(PeerView::Tiered(v)) if v.has_all(b) => return BlockMask::full(len),
                Some(PeerView::Tiered(v)) => {
                    if let Some(w) = v.window(b) {
                        held = held.or(&w.block_mask(0, len));
                    }
                }
                Some(PeerView::Flat(bits)) => held = held.or(&bits.block_mask(range.start, len)),
                None => {}
            }
        }
        held
    }

    /// Units of T3 block `b` that `p` has and nobody is fetching, up to `max`, in this node's
    /// own order for the block. With `rare_only`, only units no other connected peer is known
    /// to have: a source's upload goes first to what nobody else can give.
    fn takeable(
        &self,
        p: &Peer,
        b: u64,
        max: usize,
        rare_only: Option<&mut HeldCache>,
        out: &mut Vec<u64>,
    ) -> usize {
        let Some(PeerView::Tiered(v)) = &p.view else {
            return 0;
        };
        let Ok(range) = self.geo.unit_range(Tier::T3, b) else {
            return 0;
        };
        let (base, len) = (range.start, range.end - range.start);
        // Word-at-a-time: units we lack and nobody fetches, that the peer has.
        let mut cand = BlockMask::full(len).and_not(&self.claimed.block_mask(base, len));
        if !v.has_all(b) {
            match v.window(b) {
                Some(w) => cand = cand.and(&w.block_mask(0, len)),
                None => return 0,
            }
        }
        if cand.is_empty() {
            return 0;
        }
        if let Some(cache) = rare_only {
            let held = match cache.iter().find(|(x, _)| *x == b) {
                Some((_, m)) => *m,
                None => {
                    let m = self.held_elsewhere(p.id, b);
                    cache.push((b, m));
                    m
                }
            };
            cand = cand.and_not(&held);
            if cand.is_empty() {
                return 0;
            }
        }
        let before = out.len();
        // Each node walks a block in its own pseudo-random order (a full-cycle stride
        // permutation), so that peers fetching the same block from the same source ask for
        // different units and can then trade them.
        let h = splitmix(self.cfg.seed ^ b.wrapping_mul(0x9e37_79b9));
        let offset = h % len;
        let mut stride = ((h >> 32) % len) | 1;
        while gcd(stride, len) != 1 {
            stride += 2;
        }
        for k in 0..len {
            if out.len() - before >= max {
                break;
            }
            let j = (offset + k * stride) % len;
            let u = base + j;
            if cand.get(j)
                && !p.refuses(u, self.now)
                && !self.requests.contains_key(&(u, p.id))
                && !out.contains(&u)
            {
                out.push(u);
            }
        }
        out.len() - before
    }

    /// Coarse-first scheduling for a capable peer. Stage 1 chooses coarse blocks: the blocks
    /// already being fetched from this peer (hysteresis), then the rarest blocks it has whole or
    /// has been refined, from the availability buckets; stage 2 refines partial blocks whose
    /// detail is missing or stale; stage 3 requests units of the chosen blocks, first those no
    /// other peer can give, then any.
    fn pick_blocks(&mut self, p: &mut Peer, budget: usize, out: &mut Vec<u64>) {
        let now = self.now;
        let l = self.cfg.limits.clone();
        p.refine_backoff.retain(|(_, until)| *until > now);
        let mut blocks: Vec<u64> = Vec::new();
        let mut probe = Vec::new();
        // What other peers hold, per block, computed once per decision (O(peers) each).
        let mut held = HeldCache::new();
        let mut found = 0;
        for &b in &p.current_blocks {
            probe.clear();
            if self.takeable(p, b, budget, Some(&mut held), &mut probe) > 0 {
                found += probe.len();
                blocks.push(b);
            } else if self.takeable(p, b, 1, None, &mut probe) > 0 {
                blocks.push(b);
            }
        }
        let mut passed: Vec<(u64, &'static str)> = Vec::new();
        let mut to_refine: Vec<u64> = Vec::new();
        let mut chosen: Vec<(u64, &'static str)> = Vec::new();
        let refine_room =
            l.max_refines_per_peer
                .saturating_sub(p.refines)
                .min(l.max_refines.saturating_sub(self.active_refines)) as usize;
        let Some(PeerView::Tiered(v)) = &p.view else {
            return;
        };
        let note = |passed: &mut Vec<(u64, &'static str)>, b, why| {
            if passed.len() < 3 {
                passed.push((b, why));
            }
        };
        // Candidates: the rarest blocks from the buckets; if the probe limit cuts that list
        // short, also the blocks this peer has (from a random point, a word at a time), so that
        // a peer holding none of the globally rarest blocks is still used. Both bounded.
        let mut recheck: Option<Timestamp> = None;
        let mut cands: Vec<u64> = self.rarity3.candidates().take(l.max_probes).collect();
        if cands.len() == l.max_probes {
            let n3 = self.geo.blocks(Tier::T3);
            let chunks = n3.div_ceil(512);
            let first = self.rng.next_u64() % chunks.max(1);
            'scan: for k in 0..chunks.min(8) {
                let base = ((first + k) % chunks) * 512;
                let len = (n3 - base).min(512);
                let some = v
                    .all_bits()
                    .block_mask(base, len)
                    .or(&v.partial_bits().block_mask(base, len));
                for j in (0..len).filter(|&j| some.get(j)) {
                    let b = base + j;
                    if cands.len() >= 2 * l.max_probes {
                        break 'scan;
                    }
                    if !self.rarity3.parked(b) && !cands.contains(&b) {
                        cands.push(b);
                    }
                }
            }
        }
        for b in cands {
            if found >= budget || blocks.len() >= l.max_current_blocks {
                break;
            }
            if blocks.contains(&b) {
                continue;
            }
            if !v.has_some(b) {
                note(&mut passed, b, "peer lacks it");
                continue;
            }
            probe.clear();
            // From a peer that has the whole block (a seed), count only units nobody else can
            // give, so that its upload spreads over blocks instead of duplicating.
            let rare_only = v.has_all(b) && blocks.len() + 1 < l.max_current_blocks;
            let takes = (v.has_all(b) || v.is_refined(b)) && {
                let rare = if rare_only {
                    self.takeable(p, b, budget, Some(&mut held), &mut probe)
                } else {
                    0
                };
                found += rare;
                rare > 0 || {
                    let any = self.takeable(p, b, budget, None, &mut probe);
                    if !rare_only {
                        found += any;
                    }
                    any > 0
                }
            };
            if takes {
                blocks.push(b);
                let why = if v.has_all(b) {
                    "rarest, peer has all"
                } else {
                    "rarest, refined"
                };
                chosen.push((b, why));
                continue;
            }
            if v.has_all(b) {
                note(&mut passed, b, "nothing left to take");
                continue;
            }
            // Stage 2: the peer has part of it and we lack detail (or it went stale).
            let refreshed = p
                .refined_at
                .iter()
                .find(|(x, ..)| *x == b)
                .map(|(_, at, ttl)| at.add(*ttl));
            let fresh = refreshed.is_some_and(|stale_at| now < stale_at);
            let in_flight = self
                .refines
                .values()
                .any(|r| r.peer == p.id && r.block == b && !r.expired);
            if in_flight {
                note(&mut passed, b, "refining");
            } else if v.is_refined(b) && fresh {
                note(&mut passed, b, "refined window exhausted");
                // Nothing tells us when the peer gains units there (deltas are per block):
                // come back when the window may be refined again.
                let stale_at = refreshed.expect("fresh");
                recheck = Some(recheck.map_or(stale_at, |t: Timestamp| t.min(stale_at)));
            } else if p.refine_backoff.iter().any(|(x, _)| *x == b) {
                note(&mut passed, b, "refine backing off");
            } else if to_refine.len() >= refine_room {
                note(&mut passed, b, "refine cap");
            } else {
                to_refine.push(b);
            }
        }
        // Stage 3.
        for rare_only in [true, false] {
            for &b in &blocks {
                if out.len() >= budget {
                    break;
                }
                let cache = rare_only.then_some(&mut held);
                self.takeable(p, b, budget - out.len(), cache, out);
            }
        }
        p.current_blocks = blocks.iter().copied().collect();
        for (b, why) in chosen {
            let availability = self.rarity3.count(b);
            self.trace(Record::PickBlock {
                peer: p.id,
                block: b,
                why,
                availability,
                passed: passed.clone(),
            });
        }
        for b in to_refine {
            self.send_refine(p, b);
        }
        if let Some(at) = recheck.filter(|_| out.len() < budget) {
            if p.wake_at.is_none_or(|w| w <= now || at < w) {
                p.wake_at = Some(at);
                self.timers.push(at, Timer::Wake(p.id));
            }
        }
    }

    fn send_refine(&mut self, p: &mut Peer, block: u64) {
        let id = self.next_refine_id;
        self.next_refine_id += 1;
        let attempt = self
            .refine_attempts
            .get(&(p.id, block))
            .copied()
            .unwrap_or(0);
        self.refines.insert(
            id,
            RefineReq {
                peer: p.id,
                block,
                sent_at: self.now,
                attempt,
                expired: false,
                known: match &p.view {
                    Some(PeerView::Tiered(v)) => v.window(block).map_or(0, |w| w.count_ones()),
                    _ => 0,
                },
            },
        );
        p.refines += 1;
        self.active_refines += 1;
        self.stats.refine_requests += 1;
        let rto = self.rto(p);
        self.timers.push(self.now.add(rto), Timer::Refine(id));
        self.trace(Record::Refine {
            peer: p.id,
            block,
            id,
            attempt,
        });
        let msg = Message::RefineRequest {
            from_tier: 3,
            to_tier: 1,
            index: block,
            id,
        };
        p.last_sent = self.now;
        self.queue_send(p.id, msg);
    }

    /// The flat path (legacy peers): rarest unit first from the buckets, then a bounded scan of
    /// the peer's bitfield from a random point.
    fn pick_flat(&mut self, p: &Peer, budget: usize, out: &mut Vec<u64>) {
        let Some(PeerView::Flat(have)) = &p.view else {
            return;
        };
        let probes = self.cfg.limits.max_probes;
        if let Some(r) = &self.rarity1 {
            for u in r.candidates().take(probes) {
                if out.len() >= budget {
                    return;
                }
                if have.get(u) && !p.refuses(u, self.now) && !self.requests.contains_key(&(u, p.id))
                {
                    out.push(u);
                }
            }
        }
        // Bounded fallback: 128 chunks of 512 units (64 Ki units) from a random chunk, wrapping,
        // a word at a time: what the peer has and nobody fetches.
        let n = self.geo.units();
        if out.len() >= budget || n == 0 {
            return;
        }
        let chunks = n.div_ceil(512);
        let first = self.rng.next_u64() % chunks;
        for k in 0..chunks.min(128) {
            let base = ((first + k) % chunks) * 512;
            let len = (n - base).min(512);
            let cand = have
                .block_mask(base, len)
                .and_not(&self.claimed.block_mask(base, len));
            if cand.is_empty() {
                continue;
            }
            for j in (0..len).filter(|&j| cand.get(j)) {
                if out.len() >= budget {
                    return;
                }
                let u = base + j;
                if !p.refuses(u, self.now)
                    && !out.contains(&u)
                    && !self.requests.contains_key(&(u, p.id))
                {
                    out.push(u);
                }
            }
        }
    }

    /// Endgame: every missing unit is requested; ask this peer too for in-flight units it has,
    /// up to the duplicate cap.
    fn pick_endgame(&self, p: &Peer, budget: usize, out: &mut Vec<u64>) {
        let cap = self.cfg.limits.endgame_duplicates;
        let mut last = None;
        for ((unit, q), r) in &self.requests {
            if out.len() >= budget {
                break;
            }
            if Some(*unit) == last || *q == p.id || r.state != ReqState::Active {
                continue;
            }
            last = Some(*unit);
            let has = p.view.as_ref().is_some_and(|v| v.has_unit(*unit));
            if has
                && !self.requests.contains_key(&(*unit, p.id))
                && self.active_for(*unit) < cap
                && !self.verifying.contains(unit)
            {
                out.push(*unit);
            }
        }
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// SplitMix64's finaliser: a fixed, well-mixed hash of a `u64`.
fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// `0..n` in an order drawn from `rng` (Fisher–Yates).
fn shuffled(n: u64, rng: &mut Xoshiro256PlusPlus) -> Vec<u32> {
    let mut v: Vec<u32> = (0..n as u32).collect();
    for i in (1..v.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}
