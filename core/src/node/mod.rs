//! The sans-IO node: one deterministic state machine per swarm.
//!
//! The embedder owns sockets, files and the clock. It feeds the node [`Input`]s with the time
//! they happened, calls [`Node::handle_timeout`] when [`Node::poll_timeout`] comes due, and
//! executes what the node asks through a [`Host`] with [`drive`]. Same inputs at the same times
//! give the same actions, bit for bit.
//!
//! ```
//! use bytes::Bytes;
//! use tierswarm_core::node::{drive, DisconnectReason, Host, Input, Node, PeerId, Upload, Verdict};
//! use tierswarm_core::wire::{Message, Proof};
//! use tierswarm_core::{Config, Geometry, LocalTiers, Timestamp};
//!
//! /// Two nodes on one wire: messages arrive at once; a real host verifies before it says
//! /// `Verified`.
//! struct Wire(Vec<(PeerId, Message)>);
//! impl Host for Wire {
//!     fn send(&mut self, peer: PeerId, msg: Message) { self.0.push((peer, msg)) }
//!     fn serve(&mut self, peer: PeerId, unit: u64) -> Upload {
//!         let msg = Message::Transfer { unit, data: Bytes::new(), proof: None };
//!         self.0.push((peer, msg));
//!         Upload::Sent
//!     }
//!     fn store_unit(&mut self, _: PeerId, _: u64, _: Bytes, _: Option<Proof>) -> Verdict {
//!         Verdict::Verified
//!     }
//!     fn persist(&mut self, _store: Bytes) {}
//!     fn disconnect(&mut self, _: PeerId, reason: DisconnectReason) {
//!         // Two complete peers part; anything else would be a bug here.
//!         assert!(matches!(reason, DisconnectReason::BothComplete), "{reason}");
//!     }
//! }
//!
//! let geo = Geometry::new(3 * 65536 + 100).unwrap();
//! let cfg = |name: &str| Config::new([7; 32], geo.file_len(), name);
//! let t0 = Timestamp::ZERO;
//! let mut nodes = [
//!     Node::new(cfg("seed"), LocalTiers::full(geo), t0),
//!     Node::new(cfg("leech"), LocalTiers::new(geo), t0),
//! ];
//! // Each side calls the other PeerId(1).
//! for n in &mut nodes {
//!     n.handle_input(t0, Input::PeerConnected { peer: PeerId(1) });
//! }
//! let mut now = t0;
//! loop {
//!     let mut moved = false;
//!     for i in 0..2 {
//!         let mut wire = Wire(Vec::new());
//!         drive(&mut nodes[i], now, &mut wire);
//!         for (_, msg) in wire.0 {
//!             moved = true;
//!             nodes[1 - i].handle_input(now, Input::message(PeerId(1), msg));
//!         }
//!     }
//!     if !moved { break; }
//!     now = now.add(std::time::Duration::from_millis(1));
//! }
//! assert!(nodes[1].is_complete());
//! ```
//!
//! # The node's parts
//!
//! | module | concept |
//! |---|---|
//! | `config` | [`Limits`] and [`Config`] |
//! | `api` | [`Input`], [`Action`], [`Event`], [`DisconnectReason`], [`Stats`] |
//! | [`host`] | [`Host`] and [`drive`]: the one action loop |
//! | `outbox` | priority classes of outgoing actions; the one send path |
//! | `peer`, `rtt` | per-peer state, round-trip estimates |
//! | `connections` | lifecycle: connect, handshake, disconnect, release |
//! | `remote` | what peers hold, and the rarity buckets |
//! | `holders` | per block and unit, how many peers hold it (rare-first in O(log peers)) |
//! | `requests` | the request ledger; answers and timeouts of unit requests |
//! | `refinement` | the refinement ledger; window freshness; refine answers and timeouts |
//! | `refine_answers` | answering other peers' refinements |
//! | `uploads` | answering other peers' unit requests: queues and upload slots |
//! | `claims` | units present, requested or being verified |
//! | `completion` | a unit verified (or not) here |
//! | `announce` | HAVEs, summary deltas, pushes |
//! | `backpressure` | load levels with hysteresis |
//! | `persistence` | when the store is handed out |
//! | `pacing` | token buckets for upload and download rate limits, and the download pace learned from what arrives |
//! | `timers` | the named deadline table |
//! | `scheduler/` | windows, coarse-first plans, the flat path, endgame, per-node orders |
//!
//! `dev/ARCHITECTURE.md` walks one message from the socket to the actions it causes.

mod announce;
mod api;
mod backpressure;
mod claims;
mod completion;
mod config;
mod connections;
mod holders;
pub mod host;
mod outbox;
mod pacing;
mod peer;
mod persistence;
mod refine_answers;
mod refinement;
mod remote;
mod requests;
mod rtt;
mod scheduler;
mod timers;
mod uploads;

pub use api::{
    Action, DisconnectKind, DisconnectReason, DropReason, Event, Input, NodeError, PerKind,
    PressureSnapshot, Stats, Traffic,
};
pub use backpressure::Backpressure;
pub use config::{Config, LearnedPace, Limits};
pub use host::{drive, Host, Upload, Verdict};
pub use peer::{Lifecycle, Peer, PeerId};
pub use rtt::RttEstimator;

use crate::availability::{LocalTiers, PeerView};
use crate::store::{LoadNotes, StoreState};
use crate::tiers::{Geometry, Tier};
use crate::time::Timestamp;
use crate::wire::{Frame, Message};
use announce::Announcements;
use backpressure::Pressure;
use claims::Claims;
use core::time::Duration;
use outbox::{Class, Outbox};
use pacing::Pacing;
use persistence::Persistence;
use rand_core::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use refinement::RefineLedger;
use remote::RemoteAvailability;
use requests::RequestLedger;
use scheduler::Scheduler;
use std::collections::BTreeMap;
use timers::{Timer, TimerTable};
use uploads::Uploads;

/// Where the node is in a drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drain {
    Running,
    /// Asked to drain: no new requests; waiting for in-flight ones.
    Draining,
    /// Drained and persisted.
    Drained,
}

impl Drain {
    fn started(self) -> bool {
        self != Drain::Running
    }
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
    claims: Claims,
    requests: RequestLedger,
    refines: RefineLedger,
    remote: RemoteAvailability,
    uploads: Uploads,
    announce: Announcements,
    sched: Scheduler,
    timers: TimerTable,
    outbox: Outbox,
    persistence: Persistence,
    pressure: Pressure,
    pacing: Pacing,
    drain: Drain,
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
        let remote = RemoteAvailability::new(geo.blocks(Tier::T3), cfg.limits.max_peers, &mut rng);
        let mut node = Node {
            geo,
            now,
            rng,
            claims: Claims::new(&local),
            local,
            peers: BTreeMap::new(),
            requests: RequestLedger::default(),
            refines: RefineLedger::new(&cfg.limits),
            remote,
            uploads: Uploads::default(),
            announce: Announcements::default(),
            sched: Scheduler::default(),
            timers: TimerTable::default(),
            outbox: Outbox::default(),
            persistence: Persistence::default(),
            pressure: Pressure::default(),
            pacing: Pacing::new(
                cfg.limits.max_upload_rate,
                cfg.limits.max_download_rate,
                now,
            ),
            drain: Drain::Running,
            stats: Stats::default(),
            cfg,
        };
        for b in 0..geo.blocks(Tier::T3) {
            if node.claims.block_full(b) {
                node.remote.rarity3.park(b);
            }
        }
        let limits = &node.cfg.limits;
        node.timers
            .push(now.add(limits.summary_refresh), Timer::SummaryRefresh);
        node.timers
            .push(now.add(limits.keepalive), Timer::KeepAlive);
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

    /// The current backpressure level.
    pub fn backpressure(&self) -> Backpressure {
        self.pressure.level()
    }

    /// Largest frame this node accepts: the largest of the per-kind limits of this file
    /// ([`FrameLimits`](crate::wire::FrameLimits), which a connection's reader applies).
    pub fn max_frame_len(&self) -> u64 {
        crate::wire::FrameLimits::for_geometry(self.geo)
            .max_frame()
            .into()
    }

    /// Heap bytes held for one peer, if connected: its state and its share of every ledger
    /// (the per-peer memory figure of `dev/BENCHMARKS.md`).
    pub fn peer_heap_bytes(&self, peer: PeerId) -> Option<usize> {
        self.peers.get(&peer).map(|p| {
            p.heap_bytes()
                + self.requests.peer_heap_bytes(peer)
                + self.refines.peer_heap_bytes(peer)
                + self.uploads.peer_heap_bytes(peer)
                + self.announce.peer_heap_bytes(peer)
        })
    }

    /// Heap bytes of the holder counts shared by all peers (4 bytes per T3 block, plus 64 bytes
    /// per counter plane of each block that peers' refined windows cover: a peer's windows add
    /// at most `MAX_WINDOWS` such blocks).
    pub fn holder_counts_heap_bytes(&self) -> usize {
        self.remote.holders.heap_bytes()
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

    /// The next action, highest priority class first, FIFO within a class. Most embedders
    /// call [`drive`] instead.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.outbox.pop()
    }

    /// Handles one input at time `now` (earlier than the last input's time is taken as equal:
    /// time never goes back).
    pub fn handle_input(&mut self, now: Timestamp, input: Input) {
        self.advance(now);
        match input {
            Input::PeerConnected { peer } => self.on_connected(peer),
            Input::PeerFrame { peer, frame } => self.on_frame(peer, frame),
            Input::PeerDisconnected { peer } => self.on_disconnected(peer),
            Input::PeerDropped { peer, reason } => self.disconnect(peer, reason.into()),
            Input::UnitUnavailable { peer, unit } => self.on_unit_unavailable(peer, unit),
            Input::UnitComplete { unit } => self.on_unit_complete(unit),
            Input::UnitFailed { peer, unit } => self.on_unit_failed(peer, unit),
            Input::UnitSent { peer, unit: _ } => self.on_unit_sent(peer),
            Input::PeerCongested { peer, congested } => self.on_congestion(peer, congested),
            Input::Pressure(p) => self.on_pressure(p),
            Input::Reconfigure(l) => {
                self.cfg.limits = *l;
                let l = &self.cfg.limits;
                let (up, down) = (l.max_upload_rate, l.max_download_rate);
                self.pacing.reconfigure(up, down, self.now);
                self.sched.mark_all_dirty(self.peers.keys().copied());
            }
            Input::Drain => {
                if self.drain == Drain::Running {
                    self.drain = Drain::Draining;
                }
            }
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
        self.refines.earn(0, self.now, &self.cfg.limits);
    }

    /// After every input: schedule dirty peers, flush deltas, check drain, update gauges.
    fn finish(&mut self) {
        let free = (self.cfg.limits.max_requests).saturating_sub(self.requests.active());
        self.sched.wake_capped(free);
        for p in self.sched.take_dirty() {
            self.fill(p);
        }
        if !self.pressure.coalesces_deltas() {
            self.flush_deltas();
        } else if self.announce.has_deltas() {
            let at = self.now.add(self.cfg.limits.batch_delay);
            self.timers.arm_once(at, Timer::FlushDeltas);
        }
        if self.drain == Drain::Draining
            && self.requests.active() == 0
            && self.claims.none_verifying()
        {
            self.drain = Drain::Drained;
            self.persist();
            self.emit(Class::Control, Action::Event(Event::Drained));
        }
        self.stats.in_flight_requests = self.requests.active();
        self.stats.in_flight_refines = self.refines.active();
        self.stats.queued_serves = self.uploads.queued();
        let (requests, refines) = (&self.requests, &self.refines);
        self.timers.drop_stale_heads(|t| match *t {
            Timer::Request {
                unit,
                peer,
                sent_at,
            } => !requests.is_active(unit, peer, sent_at),
            Timer::ForgetRequest {
                unit,
                peer,
                sent_at,
            } => !requests.is_forgettable(unit, peer, sent_at),
            Timer::Refine(id) => !refines.is_awaited(id),
            Timer::ForgetRefine(id) => !refines.is_expired(id),
            _ => false,
        });
    }

    fn rto(&self, p: &Peer) -> Duration {
        let l = &self.cfg.limits;
        p.rtt.rto(l.initial_rto, l.min_rto, l.max_rto)
    }

    /// Routes a frame to its handler, enforcing the lifecycle and the capability split.
    fn on_frame(&mut self, peer: PeerId, frame: Frame) {
        let now = self.now;
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        p.last_received = now;
        let p = &*p;
        self.stats.received[frame.msg.kind()] += 1;
        if !frame.info_hash.is_empty() && frame.info_hash[..] != self.cfg.info_hash[..] {
            return self.disconnect(peer, DisconnectReason::FrameForOtherContent);
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
                    let same = p.peer_id == connections::bounded_peer_id(&peer_id)
                        && capable == self.capable_with(capabilities);
                    if !same {
                        self.disconnect(peer, DisconnectReason::SecondHandshake);
                    }
                } else if info_hash[..] != self.cfg.info_hash[..] {
                    self.disconnect(peer, DisconnectReason::HandshakeForOtherContent);
                } else {
                    self.on_handshake(peer, peer_id, capabilities);
                }
            }
            _ if !ready => self.disconnect(peer, DisconnectReason::BeforeHandshake),
            Message::Bitfield { bits } => {
                self.on_bitfield(peer, capable, bits);
                self.drop_if_both_complete(peer);
            }
            Message::Have { unit } => {
                self.on_have(peer, unit);
                self.drop_if_both_complete(peer);
            }
            Message::Summary {
                tier,
                start,
                all,
                partial,
            } => {
                if !capable {
                    return self.disconnect(peer, DisconnectReason::SummaryFromLegacy);
                }
                self.on_summary(peer, tier, start, all, partial);
                self.drop_if_both_complete(peer);
            }
            Message::RefineRequest {
                from_tier,
                to_tier,
                index,
                id,
            } => {
                if !capable {
                    return self.disconnect(peer, DisconnectReason::RefineFromLegacy);
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
            Message::Request { unit, held } => self.on_request(peer, unit, held),
            Message::Cancel { unit } => self.withdraw_request(peer, unit, Self::CANCELLED),
            Message::Transfer { unit, data, proof } => self.on_transfer(peer, unit, data, proof),
            Message::Reject { unit, reason } => self.on_reject(peer, unit, reason),
            Message::KeepAlive | Message::Unknown { .. } => {}
        }
    }

    /// Routes a fired timer to its handler.
    fn on_timer(&mut self, t: Timer) {
        match t {
            Timer::Handshake(peer) => self.on_handshake_timeout(peer),
            Timer::Request {
                unit,
                peer,
                sent_at,
            } => self.on_request_timeout(unit, peer, sent_at),
            Timer::ForgetRequest {
                unit,
                peer,
                sent_at,
            } => self.on_forget_request(unit, peer, sent_at),
            Timer::Refine(id) => self.on_refine_timeout(id),
            Timer::ForgetRefine(id) => self.refines.forget(id),
            Timer::Wake(peer) => self.sched.mark_dirty(peer),
            Timer::Persist => self.on_persist_timer(),
            Timer::FlushDeltas => self.flush_deltas(),
            Timer::FlushPushes => self.flush_pushes(),
            Timer::UploadTokens => self.pump_serves(),
            Timer::DownloadTokens => self.wake_starved(),
            Timer::SummaryRefresh => {
                self.announce.refresh_all(self.geo.blocks(Tier::T3));
                let at = self.now.add(self.cfg.limits.summary_refresh);
                self.timers.push(at, Timer::SummaryRefresh);
            }
            Timer::KeepAlive => self.on_keepalive_timer(),
        }
    }
}
