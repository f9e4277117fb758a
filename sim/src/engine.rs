//! Runs a scenario: drives real `tierswarm-core` nodes over the simulated network.
//!
//! The engine is the nodes' embedder. It is a next-event loop: it pops the earliest event
//! (a message arriving, a node's timer, a join, a crash), hands it to the node concerned, and
//! executes the actions that come out — sends go onto the [`Network`], serves become unit
//! payloads modelled by size, persists are kept as the node's last store (a crashed node restarts
//! from exactly those bytes). Every random choice comes from the scenario seed through labelled
//! sub-streams, so the same scenario, seed and strategy replay bit for bit.
//!
//! Hostile peers (a group's `behaviour`) are modelled in `engine/hostile.rs`: the embedding of a
//! hostile node rewrites, drops or multiplies its traffic, and the honest side plays the
//! embedder's defences.

mod digest;
mod hostile;

use digest::TraceDigest;

use crate::bound::{first_join, fluid_bound, Bounds};
use crate::clock::SimTime;
use crate::events::EventQueue;
use crate::network::{Class, Network};
use crate::perfetto;
use crate::report::{CompletionStats, ExitReason, HonestFigures, LeecherDetail, Report};
use crate::rng::SimRng;
use crate::scenario::{Behaviour, PeerSpec, Protocol, Role};
use crate::svg::render_progress_svg;
use crate::{RunOptions, Scenario, SimError};
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::io::Write;
use std::time::{Duration, Instant};
use tierswarm_core::node::{
    drive, Config, DisconnectReason, DropReason, Event, Host, Input, Limits, Node, PeerId, Upload,
    Verdict,
};
use tierswarm_core::trace::Stamped;
use tierswarm_core::wire::{Frame, Message, MessageKind, Proof};
use tierswarm_core::{Bitfield, Geometry, LocalTiers};

/// Connections a joining peer asks the tracker for.
pub const TRACKER_PEERS: usize = 30;
/// Connections a peer accepts in all.
pub const MAX_CONNECTIONS: usize = 60;
/// Connections a downloader with at least [`TRACKER_PEERS`] asks for per tracker visit.
pub const TRACKER_TOP_UP: usize = 10;
/// Places beyond [`MAX_CONNECTIONS`] a downloader keeps for complete peers that dial it.
pub const SEED_ROOM: usize = 10;
/// How often a peer below its target asks the tracker again.
const TRACKER_INTERVAL: Duration = Duration::from_secs(10);
/// No unit completed anywhere for this long (with leechers left) is a stall.
const STALL_AFTER: Duration = Duration::from_secs(600);

/// The content root the simulated swarm shares (payloads are modelled by size, so any value).
const ROOT: [u8; 32] = [0x42; 32];

#[derive(Debug)]
enum Ev {
    Join(usize),
    Connected {
        conn: u64,
    },
    Deliver {
        conn: u64,
        to: usize,
        from: usize,
        msg: Message,
    },
    Closed {
        conn: u64,
        to: usize,
        from: usize,
    },
    UnitSent {
        conn: u64,
        node: usize,
        to: usize,
        unit: u64,
    },
    Timer {
        node: usize,
        epoch: u32,
        at: SimTime,
    },
    Tracker(usize),
    /// A complete peer asks the tracker for downloaders now: it just completed (BitTorrent's
    /// `event=completed`) or fell below [`TRACKER_PEERS`] connections.
    Announce(usize),
    Crash {
        group: usize,
        victims: u32,
        down_for: Duration,
    },
    Restart(usize),
    /// `node`'s embedder drops `peer` (a write that stalled, a frame that did not finish).
    Drop {
        conn: u64,
        node: usize,
        peer: usize,
        reason: DropReason,
    },
    /// A flooder's next burst.
    Flood(usize),
}

struct Slot {
    spec: PeerSpec,
    /// Boxed so that lending the node out while its actions run moves a pointer, not the node.
    node: Option<Box<Node>>,
    /// Bumped on every crash: events for an older life are dropped.
    epoch: u32,
    store: Option<Bytes>,
    timer: Option<SimTime>,
    conns: BTreeMap<usize, u64>,
    joined_at: Option<SimTime>,
    complete_at: Option<SimTime>,
    progress: Vec<(f64, f64)>,
    last_percent: u64,
    seed: u64,
    /// Stats of earlier lives (before crashes).
    carried: Carried,
    /// Units whose bytes this peer holds on its (simulated) disk: all for a seeder, else those
    /// it received and verified. Survives crashes, as a disk does.
    held: Bitfield,
    /// A hostile peer's state; `None` for an honest one.
    hostile: Option<Box<hostile::PeerState>>,
    /// An [`Ev::Announce`] is queued for this peer.
    announcing: bool,
}

#[derive(Default, Clone, Copy)]
struct Carried {
    refine_requests: u64,
    refine_timeouts: u64,
    retries: u64,
    duplicate_units: u64,
    events: u64,
}

impl Carried {
    fn add(&mut self, n: &Node) {
        let s = n.stats();
        self.refine_requests += s.refine_requests;
        self.refine_timeouts += s.refine_timeouts;
        self.retries += s.retries;
        self.duplicate_units += s.duplicate_units;
        self.events += s.events;
    }
}

/// The engine as node `i`'s [`Host`]: sends go onto the network, serves become payloads
/// modelled by size, verification is instant.
struct SimHost<'e, 'a> {
    e: &'e mut Engine<'a>,
    i: usize,
}

impl Host for SimHost<'_, '_> {
    fn send(&mut self, peer: PeerId, msg: Message) {
        let (i, j) = (self.i, peer.0 as usize);
        if self.e.involves_hostile(i, j) {
            self.e.hostile_send(i, j, msg);
        } else {
            self.e.send(i, j, msg);
        }
    }

    fn serve(&mut self, peer: PeerId, unit: u64) -> Upload {
        let (i, j) = (self.i, peer.0 as usize);
        if self.e.involves_hostile(i, j) {
            self.e.hostile_serve(i, j, unit);
        } else {
            self.e.serve(i, j, unit);
        }
        Upload::Later
    }

    fn store_unit(&mut self, _: PeerId, unit: u64, data: Bytes, _: Option<Proof>) -> Verdict {
        // Verification is instant here (payloads are modelled by size; only a corrupt peer's
        // carry bytes).
        if hostile::is_corrupt(&data) {
            return Verdict::Failed;
        }
        self.e.slots[self.i].held.set(unit);
        Verdict::Verified
    }

    fn persist(&mut self, store: Bytes) {
        self.e.slots[self.i].store = Some(store);
    }

    fn disconnect(&mut self, peer: PeerId, reason: DisconnectReason) {
        let (i, j) = (self.i, peer.0 as usize);
        self.e.note_disconnect(i, j, &reason);
        if self.e.slots[i]
            .hostile
            .as_ref()
            .is_some_and(|h| h.keeps_connections())
        {
            return;
        }
        if let Some(&conn) = self.e.slots[i].conns.get(&j) {
            self.e.close(conn, i, j);
        }
    }

    fn event(&mut self, event: Event) {
        self.e.event(self.i, event);
    }

    fn trace(&mut self, record: Stamped) {
        self.e.write_trace(self.i, &record);
    }
}

struct Engine<'a> {
    scenario: &'a Scenario,
    geo: Geometry,
    now: SimTime,
    queue: EventQueue<Ev>,
    net: Network,
    slots: Vec<Slot>,
    /// Live connections: id → (a, b). Looked up for every message; never iterated, so a hash
    /// map's order cannot leak into the run.
    conns: HashMap<u64, (usize, usize), BuildHasherDefault<ConnIdHasher>>,
    next_conn: u64,
    tracker_rng: SimRng,
    /// Messages sent, by kind (indexed by `MessageKind as usize`).
    messages: [u64; MessageKind::ALL.len()],
    availability_bytes: u64,
    data_bytes: u64,
    hasher: TraceDigest,
    trace: Option<std::io::BufWriter<std::fs::File>>,
    trace_path: Option<std::path::PathBuf>,
    tracing: bool,
    last_progress: SimTime,
    violation: Option<String>,
    instants: Vec<perfetto::Instant>,
    /// Honest leechers not yet complete.
    leechers_left: usize,
    root: Bytes,
    /// The limits every node runs with.
    limits: Limits,
    /// Connections honest nodes dropped: (the dropped peer's behaviour, reason) → count.
    disconnects: BTreeMap<(Behaviour, &'static str), u64>,
}

/// Hashes connection ids (sequential `u64`s) with one multiplication: no keys come from outside
/// the engine, so nothing needs SipHash's defence against chosen keys.
#[derive(Default)]
struct ConnIdHasher(u64);

impl Hasher for ConnIdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = (self.0 ^ id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Runs `scenario` with `opts` and returns its report (whose exit code says how it ended).
pub fn run(scenario: &Scenario, opts: &RunOptions) -> Result<Report, SimError> {
    let wall = Instant::now();
    let seed = opts.effective_seed(scenario);
    let (mut e, crash_rng) = build(scenario, opts, seed)?;
    let reason = e.run_loop(crash_rng);
    e.finish(opts, seed, reason, wall)
}

/// The engine for `scenario` under `opts` with every join and crash queued, and the crash
/// stream the run goes on with.
fn build<'a>(
    scenario: &'a Scenario,
    opts: &RunOptions,
    seed: u64,
) -> Result<(Engine<'a>, SimRng), SimError> {
    let root_rng = SimRng::new(seed);
    let peers = scenario.peers(opts.strategy);
    let net = Network::from_scenario(scenario, &peers, root_rng.derive("network"));
    let mut node_seeds = root_rng.derive("nodes");
    let trace = match &opts.trace {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path).map_err(|source| SimError::Output {
                flag: "--trace",
                path: path.clone(),
                source,
            })?,
        )),
        None => None,
    };
    let geo = Geometry::new(scenario.file_size).map_err(|e| SimError::Output {
        flag: "file_size",
        path: Default::default(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()),
    })?;
    let slots: Vec<Slot> = peers
        .iter()
        .map(|spec| Slot {
            spec: spec.clone(),
            node: None,
            epoch: 0,
            store: None,
            timer: None,
            conns: BTreeMap::new(),
            joined_at: None,
            complete_at: None,
            progress: Vec::new(),
            last_percent: 0,
            seed: node_seeds.u64(),
            carried: Carried::default(),
            held: match spec.role {
                Role::Seeder => Bitfield::full(geo.units()),
                Role::Leecher => Bitfield::new(geo.units()),
            },
            hostile: hostile::PeerState::new(spec, &root_rng),
            announcing: false,
        })
        .collect();
    let leechers_left = peers
        .iter()
        .filter(|p| p.role == Role::Leecher && p.behaviour.is_honest())
        .count();
    let mut e = Engine {
        scenario,
        geo,
        now: SimTime::ZERO,
        queue: EventQueue::new(),
        net,
        slots,
        conns: HashMap::default(),
        next_conn: 1,
        tracker_rng: root_rng.derive("tracker"),
        messages: [0; MessageKind::ALL.len()],
        availability_bytes: 0,
        data_bytes: 0,
        hasher: TraceDigest::new(),
        tracing: trace.is_some(),
        trace,
        trace_path: opts.trace.clone(),
        last_progress: SimTime::ZERO,
        violation: None,
        instants: Vec::new(),
        leechers_left,
        root: Bytes::from_static(&ROOT),
        limits: Limits::default(),
        disconnects: BTreeMap::new(),
    };
    for p in &peers {
        e.queue
            .push(SimTime::from_duration(p.join_at), Ev::Join(p.id));
    }
    let mut crash_rng = root_rng.derive("crash");
    for c in &scenario.faults.crashes {
        let count = scenario.groups[c.group].count;
        let victims = c.victims(count);
        // Draw now so that the victims do not depend on anything that happens in the run.
        let _ = crash_rng.u64();
        e.queue.push(
            SimTime::from_duration(c.at),
            Ev::Crash {
                group: c.group,
                victims,
                down_for: c.down_for,
            },
        );
    }
    Ok((e, crash_rng))
}

impl Engine<'_> {
    fn run_loop(&mut self, mut crash_rng: SimRng) -> ExitReason {
        let limit = SimTime::from_duration(self.scenario.time_limit);
        while let Some((t, ev)) = self.queue.pop() {
            if t > limit {
                self.now = limit;
                return ExitReason::TimeLimit;
            }
            self.now = t;
            self.dispatch(ev, &mut crash_rng);
            if let Some(v) = &self.violation {
                return ExitReason::Invariant(v.clone());
            }
            if self.leechers_left == 0 {
                return ExitReason::Complete;
            }
            if self.now.micros_since(self.last_progress) > STALL_AFTER.as_micros() as u64 {
                return ExitReason::Stalled;
            }
        }
        ExitReason::Stalled
    }

    fn dispatch(&mut self, ev: Ev, crash_rng: &mut SimRng) {
        match ev {
            Ev::Join(i) => self.join(i),
            Ev::Connected { conn } => {
                if let Some(&(a, b)) = self.conns.get(&conn) {
                    self.input(
                        a,
                        Input::PeerConnected {
                            peer: PeerId(b as u64),
                        },
                    );
                    self.input(
                        b,
                        Input::PeerConnected {
                            peer: PeerId(a as u64),
                        },
                    );
                }
            }
            Ev::Deliver {
                conn,
                to,
                from,
                msg,
            } => {
                if self.conns.contains_key(&conn)
                    && (self.slots[to].hostile.is_none() || self.reaches_node(to, from, &msg))
                {
                    let frame = Frame {
                        info_hash: self.root.clone(),
                        msg,
                    };
                    self.input(
                        to,
                        Input::PeerFrame {
                            peer: PeerId(from as u64),
                            frame,
                        },
                    );
                }
            }
            Ev::Closed { conn, to, from } => {
                // Only if `to` has not already reconnected to `from` on a newer connection.
                if self.slots[to].conns.get(&from) == Some(&conn) {
                    self.slots[to].conns.remove(&from);
                    self.announce_if_short(to);
                    self.input(
                        to,
                        Input::PeerDisconnected {
                            peer: PeerId(from as u64),
                        },
                    );
                }
            }
            Ev::UnitSent {
                conn,
                node,
                to,
                unit,
            } => {
                if self.conns.contains_key(&conn) {
                    self.input(
                        node,
                        Input::UnitSent {
                            peer: PeerId(to as u64),
                            unit,
                        },
                    );
                }
            }
            Ev::Timer { node, epoch, at } => {
                let slot = &mut self.slots[node];
                if slot.epoch == epoch && slot.timer == Some(at) {
                    slot.timer = None;
                    if let Some(n) = slot.node.as_mut() {
                        n.handle_timeout(at.into());
                    }
                    self.after(node);
                }
            }
            Ev::Announce(i) => {
                self.slots[i].announcing = false;
                if self.slots[i].node.is_some() {
                    self.connect_more(i);
                }
            }
            Ev::Tracker(i) => {
                if self.slots[i].node.is_some() {
                    self.connect_more(i);
                    self.queue.push(self.now + TRACKER_INTERVAL, Ev::Tracker(i));
                }
            }
            Ev::Crash {
                group,
                victims,
                down_for,
            } => {
                let members: Vec<usize> = self
                    .slots
                    .iter()
                    .filter(|s| s.spec.group == group)
                    .map(|s| s.spec.id)
                    .collect();
                let picks = crash_rng.sample(members.len(), victims as usize);
                for k in picks {
                    let i = members[k];
                    self.crash(i);
                    self.queue.push(self.now + down_for, Ev::Restart(i));
                }
            }
            Ev::Restart(i) => self.restart(i),
            Ev::Drop {
                conn,
                node,
                peer,
                reason,
            } => self.embedder_drop(conn, node, peer, reason),
            Ev::Flood(i) => self.flood(i),
        }
    }

    fn config(&self, i: usize) -> Config {
        let s = &self.slots[i];
        let mut c = Config::new(ROOT, self.geo.file_len(), &format!("peer{i}"));
        c.hierarchical = s.spec.protocol == Protocol::Hierarchical;
        c.seed = s.seed;
        c.trace = self.tracing;
        c.limits = self.limits.clone();
        c
    }

    fn join(&mut self, i: usize) {
        let local = match self.slots[i].spec.role {
            Role::Seeder => LocalTiers::full(self.geo),
            Role::Leecher => LocalTiers::new(self.geo),
        };
        let node = Box::new(Node::new(self.config(i), local, self.now.into()));
        let have = node.local().units_present();
        self.slots[i].node = Some(node);
        self.slots[i].joined_at = Some(self.now);
        self.note_progress(i, have);
        self.connect_more(i);
        self.queue.push(self.now + TRACKER_INTERVAL, Ev::Tracker(i));
        if self.slots[i].spec.behaviour == Behaviour::Flood {
            self.queue
                .push(self.now + hostile::FLOOD_EVERY, Ev::Flood(i));
        }
        self.after(i);
    }

    /// The tracker. A downloader asks for up to [`TRACKER_PEERS`] random live peers it is not
    /// connected to that have room; once it has that many, it still asks for
    /// [`TRACKER_TOP_UP`] more per visit while it has room (as a BitTorrent client keeps
    /// dialling from its peer list up to its connection limit), so that peers whose neighbours
    /// completed find those with capacity to spare.
    ///
    /// A complete peer (a seeder, or a leecher that finished) with fewer than [`TRACKER_PEERS`]
    /// connections dials downloaders back up to that many, as a seed dials the leechers on its
    /// tracker list. A downloader takes such a dial even with all its [`MAX_CONNECTIONS`] places
    /// used (up to [`SEED_ROOM`] more) while the upload capacity of the complete peers it is
    /// connected to is below its own download capacity: a complete neighbour has everything
    /// the downloader lacks, until the downloader's own link is the bottleneck. Without this, the
    /// early joiners of a staggered crowd complete together, part from each other
    /// (`both complete`) and idle with their upload, while the late joiners, their places
    /// filled by other late joiners, never dial them (`dev/SIMULATION.md`, "Stranded seeds").
    fn connect_more(&mut self, i: usize) {
        let have = self.slots[i].conns.len();
        let complete = self.slots[i].node.as_ref().is_some_and(|n| n.is_complete());
        let want = if complete {
            TRACKER_PEERS.saturating_sub(have)
        } else {
            let top_up = if have < MAX_CONNECTIONS {
                TRACKER_TOP_UP
            } else {
                0
            };
            TRACKER_PEERS
                .saturating_sub(have)
                .max(top_up)
                .min(MAX_CONNECTIONS.saturating_sub(have))
        };
        if want == 0 {
            return;
        }
        let live: Vec<usize> = self
            .slots
            .iter()
            .filter(|s| {
                s.spec.id != i
                    && s.node.is_some()
                    && !self.slots[i].conns.contains_key(&s.spec.id)
                    && if complete {
                        self.welcomes_seed(s)
                    } else {
                        s.conns.len() < MAX_CONNECTIONS
                    }
            })
            .map(|s| s.spec.id)
            .collect();
        let picks = self.tracker_rng.sample(live.len(), want.min(live.len()));
        for k in picks {
            let j = live[k];
            let conn = self.next_conn;
            self.next_conn += 1;
            self.conns.insert(conn, (i, j));
            self.slots[i].conns.insert(j, conn);
            self.slots[j].conns.insert(i, conn);
            let rtt = self.slots[i].spec.latency + self.slots[j].spec.latency;
            self.queue.push(self.now + rtt, Ev::Connected { conn });
        }
    }

    /// Whether downloader `s` takes a complete peer's dial: it is still downloading, has a place
    /// (counting [`SEED_ROOM`]), and the complete peers it has cannot fill its download link.
    fn welcomes_seed(&self, s: &Slot) -> bool {
        let downloading = s.node.as_ref().is_some_and(|n| !n.is_complete());
        downloading && s.conns.len() < MAX_CONNECTIONS + SEED_ROOM && {
            let seeds_up: u64 = s
                .conns
                .keys()
                .filter(|&&k| self.slots[k].node.as_ref().is_some_and(|n| n.is_complete()))
                .map(|&k| self.slots[k].spec.upload_bps)
                .sum();
            seeds_up < s.spec.download_bps
        }
    }

    /// Sends complete peer `i` to the tracker now (once, however often it is asked before).
    fn announce(&mut self, i: usize) {
        if !self.slots[i].announcing {
            self.slots[i].announcing = true;
            self.queue.push(self.now, Ev::Announce(i));
        }
    }

    /// A complete peer whose connections fell below [`TRACKER_PEERS`] looks for downloaders
    /// now rather than at its next visit: its neighbours completed and parted from it.
    fn announce_if_short(&mut self, i: usize) {
        // From the slot, not the node: the node is lent out while its own actions close
        // connections.
        let s = &self.slots[i];
        let complete = s.spec.role == Role::Seeder || s.complete_at.is_some();
        if s.conns.len() < TRACKER_PEERS && complete {
            self.announce(i);
        }
    }

    fn crash(&mut self, i: usize) {
        let Some(node) = self.slots[i].node.take() else {
            return;
        };
        self.slots[i].carried.add(&node);
        self.slots[i].epoch += 1;
        self.slots[i].timer = None;
        self.net.reset_peer(i, self.now);
        let conns: Vec<(usize, u64)> = self.slots[i].conns.iter().map(|(j, c)| (*j, *c)).collect();
        for (j, conn) in conns {
            self.close(conn, i, j);
        }
        self.instants.push(perfetto::Instant {
            peer: i,
            name: "crash".into(),
            at_us: self.now.as_micros(),
        });
    }

    fn restart(&mut self, i: usize) {
        if self.slots[i].node.is_some() {
            return;
        }
        let cfg = self.config(i);
        let node = match (&self.slots[i].store, self.slots[i].spec.role) {
            (Some(store), _) => match Node::from_store(cfg.clone(), store, self.now.into()) {
                Ok((n, _)) => n,
                Err(e) => {
                    self.violation = Some(format!("peer {i} cannot load its own store: {e}"));
                    return;
                }
            },
            (None, Role::Seeder) => Node::new(cfg, LocalTiers::full(self.geo), self.now.into()),
            (None, Role::Leecher) => Node::new(cfg, LocalTiers::new(self.geo), self.now.into()),
        };
        self.slots[i].node = Some(Box::new(node));
        self.instants.push(perfetto::Instant {
            peer: i,
            name: "restart".into(),
            at_us: self.now.as_micros(),
        });
        self.connect_more(i);
        self.queue.push(self.now + TRACKER_INTERVAL, Ev::Tracker(i));
        self.after(i);
    }

    /// Closes connection `conn` from `i`'s side: `j` learns after the path latency.
    fn close(&mut self, conn: u64, i: usize, j: usize) {
        if self.conns.remove(&conn).is_none() {
            return;
        }
        self.slots[i].conns.remove(&j);
        self.announce_if_short(i);
        let lat = self.slots[i].spec.latency + self.slots[j].spec.latency;
        self.queue.push(
            self.now + lat,
            Ev::Closed {
                conn,
                to: j,
                from: i,
            },
        );
    }

    fn input(&mut self, i: usize, input: Input) {
        let Some(n) = self.slots[i].node.as_mut() else {
            return;
        };
        n.handle_input(self.now.into(), input);
        self.after(i);
    }

    /// Executes node `i`'s actions through [`drive`], checks its invariants and re-arms its
    /// timer.
    fn after(&mut self, i: usize) {
        let Some(mut node) = self.slots[i].node.take() else {
            return;
        };
        drive(&mut node, self.now.into(), &mut SimHost { e: self, i });
        let epoch = self.slots[i].epoch;
        let s = node.stats();
        let l = &node.config().limits;
        if s.in_flight_requests > l.max_requests || s.in_flight_refines > l.max_refines {
            self.violation = Some(format!(
                "peer {i} exceeds its caps: {} requests, {} refinements in flight",
                s.in_flight_requests, s.in_flight_refines
            ));
        }
        if let Some(t) = node.poll_timeout() {
            let at = SimTime::from(t).max(self.now);
            let slot = &mut self.slots[i];
            if slot.timer.is_none_or(|cur| at < cur) {
                slot.timer = Some(at);
                self.queue.push(at, Ev::Timer { node: i, epoch, at });
            }
        }
        self.slots[i].node = Some(node);
    }

    /// Schedules the arrival of each copy of `msg` on connection `conn`.
    fn deliver(&mut self, conn: u64, from: usize, to: usize, msg: &Message, times: &[SimTime]) {
        for &t in times {
            let msg = msg.clone();
            self.queue.push(
                t,
                Ev::Deliver {
                    conn,
                    to,
                    from,
                    msg,
                },
            );
        }
    }

    fn count(&mut self, kind: MessageKind, bytes: u64) {
        self.messages[kind as usize] += 1;
        if kind.is_availability() {
            self.availability_bytes += bytes;
        }
    }

    fn send(&mut self, i: usize, j: usize, msg: Message) {
        let bytes = msg.frame_len() as u64;
        self.count(msg.kind(), bytes);
        if let Message::Handshake {
            capabilities: Some(_),
            ..
        } = &msg
        {
            // Capability fields: version (2), max tier (2), flag (2).
            self.availability_bytes += 6;
        }
        self.hash_send(i, j, &msg);
        let Some(&conn) = self.slots[i].conns.get(&j) else {
            return;
        };
        if !self.conns.contains_key(&conn) {
            return;
        }
        let d = self.net.send(self.now, i, j, bytes, Class::Control);
        self.deliver(conn, i, j, &msg, &d.times);
    }

    fn serve(&mut self, i: usize, j: usize, unit: u64) {
        self.serve_as(i, j, unit, Bytes::new(), true);
    }

    /// The simulator's own check: a node serves only units whose bytes it received and verified
    /// (or, for a seeder, always had).
    fn holds(&mut self, i: usize, unit: u64) -> bool {
        let held = self.slots[i].held.get(unit);
        if !held {
            self.violation = Some(format!("peer {i} served unit {unit} it lacks"));
        }
        held
    }

    /// Bytes on the wire of `unit`'s TRANSFER: the frame, the payload and a proof of
    /// ~log2(units) chaining values, modelled by size.
    fn transfer_len(&self, unit: u64) -> u64 {
        let empty = Message::Transfer {
            unit,
            data: Bytes::new(),
            proof: None,
        };
        let proof = 40 * (64 - self.geo.units().leading_zeros() as u64);
        empty.frame_len() as u64 + self.geo.unit_len(unit) + proof
    }

    /// Sends `unit` from `i` to `j` in a TRANSFER carrying `data` (empty: the real bytes,
    /// modelled by size), and tells `i` when it has left; `reads`: whether `j` reads it.
    fn serve_as(&mut self, i: usize, j: usize, unit: u64, data: Bytes, reads: bool) {
        if !self.holds(i, unit) {
            return;
        }
        let bytes = self.transfer_len(unit);
        let msg = Message::Transfer {
            unit,
            data,
            proof: None,
        };
        self.count(MessageKind::Transfer, 0);
        self.data_bytes += bytes;
        self.hash_send(i, j, &msg);
        let Some(&conn) = self.slots[i].conns.get(&j) else {
            return;
        };
        let d = self.net.send(self.now, i, j, bytes, Class::Bulk);
        self.queue.push(
            d.left_sender.max(self.now),
            Ev::UnitSent {
                conn,
                node: i,
                to: j,
                unit,
            },
        );
        if reads {
            self.deliver(conn, i, j, &msg, &d.times);
        }
    }

    fn event(&mut self, i: usize, ev: Event) {
        let honest = self.slots[i].hostile.is_none();
        match ev {
            Event::Progress { units, .. } => {
                // Only honest progress keeps a run from counting as stalled.
                if honest {
                    self.last_progress = self.now;
                }
                self.note_progress(i, units);
            }
            Event::Complete => {
                let s = &mut self.slots[i];
                if s.spec.role == Role::Leecher && s.complete_at.is_none() {
                    s.complete_at = Some(self.now);
                    if honest {
                        self.leechers_left -= 1;
                    }
                    // Complete means every unit was verified here (corrupt data never is).
                    if !s.held.is_full() {
                        self.violation = Some(format!(
                            "peer {i} reported complete holding {} of {} verified units",
                            s.held.count_ones(),
                            self.geo.units()
                        ));
                    }
                    self.announce(i);
                }
            }
            Event::PeerReady { peer, .. } => self.hostile_ready(i, peer.0 as usize),
            _ => {}
        }
    }

    fn write_trace(&mut self, i: usize, rec: &Stamped) {
        let json = rec.to_json_line();
        let line = format!("{{\"node\":{i},{}\n", &json[1..]);
        if let Some(w) = self.trace.as_mut() {
            if w.write_all(line.as_bytes()).is_err() {
                self.violation = Some("cannot write the trace file".into());
            }
        }
    }

    /// The trace hash digests every message sent (time, ends, kind, unit), whether or not a
    /// trace file is written, so a sweep's hash can be checked against a traced re-run.
    fn hash_send(&mut self, i: usize, j: usize, msg: &Message) {
        let unit = match msg {
            Message::Have { unit }
            | Message::Request { unit, .. }
            | Message::Transfer { unit, .. }
            | Message::Reject { unit, .. }
            | Message::Cancel { unit } => *unit,
            Message::RefineRequest { index, .. } => *index,
            _ => u64::MAX,
        };
        let mut rec = [0u8; digest::RECORD];
        rec[..8].copy_from_slice(&self.now.as_micros().to_le_bytes());
        rec[8..16].copy_from_slice(&(i as u64).to_le_bytes());
        rec[16..24].copy_from_slice(&(j as u64).to_le_bytes());
        rec[24..32].copy_from_slice(&unit.to_le_bytes());
        rec[32] = msg.kind() as u8;
        self.hasher.record(&rec);
    }

    fn note_progress(&mut self, i: usize, have: u64) {
        let total = self.geo.units().max(1);
        let s = &mut self.slots[i];
        if s.spec.role != Role::Leecher {
            return;
        }
        let percent = have * 100 / total;
        if percent != s.last_percent || s.progress.is_empty() {
            s.last_percent = percent;
            s.progress
                .push((self.now.as_secs_f64(), have as f64 / total as f64));
        }
    }

    fn finish(
        mut self,
        opts: &RunOptions,
        seed: u64,
        reason: ExitReason,
        wall: Instant,
    ) -> Result<Report, SimError> {
        if let Some(mut w) = self.trace.take() {
            w.flush().map_err(|source| SimError::Output {
                flag: "--trace",
                path: self.trace_path.clone().unwrap_or_default(),
                source,
            })?;
        }
        let peers: Vec<PeerSpec> = self.slots.iter().map(|s| s.spec.clone()).collect();
        let bounds = Bounds::of(self.scenario.file_size, &peers);
        let bound_s = bounds.bound_s();
        let mut totals = Carried::default();
        for s in &self.slots {
            let mut c = s.carried;
            if let Some(n) = &s.node {
                c.add(n);
            }
            totals.refine_requests += c.refine_requests;
            totals.refine_timeouts += c.refine_timeouts;
            totals.retries += c.retries;
            totals.duplicate_units += c.duplicate_units;
            totals.events += c.events;
        }
        let leechers: Vec<&Slot> = self
            .slots
            .iter()
            .filter(|s| s.spec.role == Role::Leecher)
            .collect();
        let all = self.figures(
            &leechers,
            first_join(&peers).as_secs_f64(),
            &reason,
            bound_s,
        );
        // The honest swarm (every seeder is honest): its own capacities make its bound, and only
        // its leechers count.
        let honest_peers: Vec<PeerSpec> = peers
            .iter()
            .filter(|p| p.behaviour.is_honest())
            .cloned()
            .collect();
        let honest_leechers: Vec<&Slot> = leechers
            .iter()
            .copied()
            .filter(|s| s.hostile.is_none())
            .collect();
        let honest_bound_s = Bounds::of(self.scenario.file_size, &honest_peers).bound_s();
        let honest = self.figures(
            &honest_leechers,
            first_join(&honest_peers).as_secs_f64(),
            &reason,
            honest_bound_s,
        );
        let makespan_s = all.makespan_s;
        if let Some(path) = &opts.svg {
            let series: Vec<(String, Vec<(f64, f64)>)> = leechers
                .iter()
                .map(|s| (format!("peer{}", s.spec.id), s.progress.clone()))
                .collect();
            let svg = render_progress_svg(&series, bound_s, makespan_s);
            std::fs::write(path, svg).map_err(|source| SimError::Output {
                flag: "--svg",
                path: path.clone(),
                source,
            })?;
        }
        if let Some(path) = &opts.perfetto {
            let names: Vec<String> = self
                .slots
                .iter()
                .map(|s| format!("{} {}", self.scenario.groups[s.spec.group].name, s.spec.id))
                .collect();
            let spans: Vec<perfetto::Span> = self
                .slots
                .iter()
                .filter_map(|s| {
                    let start = s.joined_at?;
                    let end = s.complete_at.unwrap_or(self.now);
                    Some(perfetto::Span {
                        peer: s.spec.id,
                        track: 0,
                        name: if s.complete_at.is_some() {
                            "download".into()
                        } else {
                            "incomplete".into()
                        },
                        start_us: start.as_micros(),
                        dur_us: end.micros_since(start),
                    })
                })
                .collect();
            let json = perfetto::render(&names, &spans, &self.instants);
            std::fs::write(path, json).map_err(|source| SimError::Output {
                flag: "--perfetto",
                path: path.clone(),
                source,
            })?;
        }
        let leechers_detail = self
            .slots
            .iter()
            .filter(|s| s.spec.role == Role::Leecher)
            .map(|s| LeecherDetail {
                group: self.scenario.groups[s.spec.group].name.clone(),
                join_s: SimTime::from_duration(s.spec.join_at).as_secs_f64(),
                complete_s: s.complete_at.map(SimTime::as_secs_f64),
                behaviour: s.spec.behaviour,
            })
            .collect();
        let mut hostile: BTreeMap<String, u64> = BTreeMap::new();
        for s in self.slots.iter().filter(|s| s.hostile.is_some()) {
            *hostile.entry(s.spec.behaviour.to_string()).or_default() += 1;
        }
        let mut disconnects: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for (&(of, reason), &n) in &self.disconnects {
            disconnects
                .entry(of.to_string())
                .or_default()
                .insert(reason.to_owned(), n);
        }
        Ok(Report {
            scenario: self.scenario.name.clone(),
            seed,
            strategy: opts.strategy,
            file_bytes: self.scenario.file_size,
            leechers: all.leechers,
            seeders: (self.slots.len() - leechers.len()) as u64,
            completed: all.completed,
            all_complete: all.all_complete(),
            completion_s: all.completion_s,
            makespan_s,
            bound_s,
            bound_kr_s: bounds.kumar_ross_s,
            bound_fluid_s: fluid_bound(self.scenario.file_size, &peers),
            efficiency: all.efficiency,
            availability_bytes: self.availability_bytes,
            data_bytes: self.data_bytes,
            messages: MessageKind::ALL
                .iter()
                .filter(|&&k| self.messages[k as usize] > 0)
                .map(|&k| (k.name().to_owned(), self.messages[k as usize]))
                .collect(),
            refine_requests: totals.refine_requests,
            refine_timeouts: totals.refine_timeouts,
            retries: totals.retries,
            duplicate_units: totals.duplicate_units,
            events: totals.events,
            wall_s: wall.elapsed().as_secs_f64(),
            trace_hash: self.hasher.finalize_hex(),
            exit_reason: reason,
            leechers_detail,
            hostile,
            disconnects,
            honest,
        })
    }

    /// Completion figures of `leechers` against `bound_s`, the run having ended for `reason`.
    fn figures(
        &self,
        leechers: &[&Slot],
        first_join: f64,
        reason: &ExitReason,
        bound_s: f64,
    ) -> HonestFigures {
        let times: Vec<f64> = leechers
            .iter()
            .filter_map(|s| {
                let done = s.complete_at?;
                let joined = SimTime::from_duration(s.spec.join_at);
                Some(done.as_secs_f64() - joined.as_secs_f64())
            })
            .collect();
        let completed = times.len() as u64;
        let all_done = completed == leechers.len() as u64;
        let last = if *reason == ExitReason::Complete && all_done {
            leechers
                .iter()
                .filter_map(|s| s.complete_at)
                .max()
                .unwrap_or(self.now)
        } else {
            self.now
        };
        let makespan_s = (last.as_secs_f64() - first_join).max(0.0);
        HonestFigures {
            leechers: leechers.len() as u64,
            completed,
            completion_s: CompletionStats::of(&times),
            makespan_s,
            bound_s,
            // Only a run in which every leecher finished has a makespan to compare.
            efficiency: if makespan_s > 0.0 && all_done {
                bound_s / makespan_s
            } else {
                0.0
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    const SMALL: &str = r#"
name = "tiny"
file_size = "8MiB"
seed = 5
time_limit = "10m"
[[group]]
name = "seed"
count = 1
role = "seeder"
upload = "50Mbit/s"
download = "50Mbit/s"
latency = "10ms"
[[group]]
name = "crowd"
count = 4
role = "leecher"
upload = "20Mbit/s"
download = "100Mbit/s"
latency = "20ms"
"#;

    #[test]
    fn tiny_swarm_completes_and_replays() {
        let s = Scenario::from_toml(SMALL).unwrap();
        let a = run(&s, &RunOptions::default()).unwrap();
        assert_eq!(a.exit_reason, ExitReason::Complete, "{}", a.summary());
        assert!(a.all_complete && a.completed == 4);
        assert!(a.efficiency > 0.0 && a.efficiency <= 1.0 + 1e-9);
        let b = run(&s, &RunOptions::default()).unwrap();
        assert_eq!(a.trace_hash, b.trace_hash);
        let c = run(
            &s,
            &RunOptions {
                seed: Some(6),
                ..Default::default()
            },
        )
        .unwrap();
        assert_ne!(a.trace_hash, c.trace_hash);
    }

    /// Seeder A uploads at a downloader's whole download rate, seeder B at less; 120 downloaders.
    const SEEDS_AND_CROWD: &str = r#"
name = "seeds-and-crowd"
file_size = "64MiB"
seed = 3
time_limit = "10m"
[[group]]
name = "a"
count = 1
role = "seeder"
upload = "100Mbit/s"
download = "100Mbit/s"
latency = "10ms"
[[group]]
name = "b"
count = 1
role = "seeder"
upload = "60Mbit/s"
download = "100Mbit/s"
latency = "10ms"
[[group]]
name = "crowd"
count = 120
role = "leecher"
upload = "20Mbit/s"
download = "100Mbit/s"
latency = "20ms"
"#;

    /// Forty seeders, each able to fill the downloader's link: its own downlink is the
    /// bottleneck.
    const DOWNLINK_BOUND: &str = r#"
name = "downlink-bound"
file_size = "32MiB"
seed = 9
time_limit = "10m"
[[group]]
name = "seed"
count = 40
role = "seeder"
upload = "50Mbit/s"
download = "50Mbit/s"
latency = "10ms"
[[group]]
name = "slow"
count = 1
role = "leecher"
upload = "10Mbit/s"
download = "20Mbit/s"
latency = "30ms"
"#;

    fn run_with(s: &Scenario, pace: Option<tierswarm_core::node::LearnedPace>) -> Report {
        let opts = RunOptions::default();
        let (mut e, crash_rng) = build(s, &opts, s.seed).unwrap();
        e.limits.learned_pace = pace;
        let reason = e.run_loop(crash_rng);
        e.finish(&opts, s.seed, reason, Instant::now()).unwrap()
    }

    /// Without the learned pace, 40 peers' request windows queue seconds of units behind the
    /// downloader's link: requests time out there and the units are asked again elsewhere.
    #[test]
    fn a_downloader_paced_at_its_own_link_asks_fewer_units_twice() {
        let s = Scenario::from_toml(DOWNLINK_BOUND).unwrap();
        let paced = run_with(&s, Some(Default::default()));
        let unpaced = run_with(&s, None);
        assert!(paced.all_complete && unpaced.all_complete);
        assert!(paced.efficiency >= 0.95, "{}", paced.summary());
        assert!(paced.makespan_s < unpaced.makespan_s);
        assert!(
            paced.retries * 10 <= unpaced.retries,
            "{} {}",
            paced.retries,
            unpaced.retries
        );
        assert!(
            paced.duplicate_units * 4 <= unpaced.duplicate_units,
            "{} {}",
            paced.duplicate_units,
            unpaced.duplicate_units
        );
    }

    /// Every peer joined (each downloader has dialled the tracker's picks), nothing run yet.
    fn joined(s: &Scenario) -> Engine<'_> {
        let (mut e, _) = build(s, &RunOptions::default(), s.seed).unwrap();
        for i in 0..e.slots.len() {
            e.join(i);
        }
        e
    }

    fn neighbours(e: &Engine, i: usize) -> BTreeSet<usize> {
        e.slots[i].conns.keys().copied().collect()
    }

    #[test]
    fn a_downloader_takes_seeds_until_they_fill_its_download_link() {
        let s = Scenario::from_toml(SEEDS_AND_CROWD).unwrap();
        let mut e = joined(&s);
        let l = 2;
        let conns = &mut e.slots[l].conns;
        conns.clear();
        // 60 downloaders: its places are full, the room for seeds is not.
        conns.extend((10..70).map(|j| (j, j as u64)));
        assert!(e.welcomes_seed(&e.slots[l]));
        e.slots[l].conns.insert(1, 1);
        assert!(
            e.welcomes_seed(&e.slots[l]),
            "60 of its 100 Mbit/s from seeds"
        );
        e.slots[l].conns.insert(0, 0);
        assert!(!e.welcomes_seed(&e.slots[l]), "160 of 100 Mbit/s");
        e.slots[l].conns.remove(&0);
        e.slots[l].conns.extend((70..79).map(|j| (j, j as u64)));
        assert_eq!(e.slots[l].conns.len(), MAX_CONNECTIONS + SEED_ROOM);
        assert!(!e.welcomes_seed(&e.slots[l]), "no place left");
        assert!(
            !e.welcomes_seed(&e.slots[0]),
            "a complete peer is no downloader"
        );
    }

    #[test]
    fn a_complete_peer_dials_downloaders_that_welcome_it_back_to_the_tracker_target() {
        let s = Scenario::from_toml(SEEDS_AND_CROWD).unwrap();
        let mut e = joined(&s);
        // Seeder B loses every connection (its neighbours completed and parted, say).
        for j in neighbours(&e, 1) {
            e.slots[j].conns.remove(&1);
        }
        e.slots[1].conns.clear();
        let welcoming: BTreeSet<usize> = (0..e.slots.len())
            .filter(|&j| j != 1 && e.welcomes_seed(&e.slots[j]))
            .collect();
        let with_a = neighbours(&e, 0);
        assert!(
            welcoming.is_disjoint(&with_a),
            "seeder A fills its neighbours' download links"
        );
        assert!(welcoming.len() > TRACKER_PEERS, "{}", welcoming.len());
        e.connect_more(1);
        let dialled = neighbours(&e, 1);
        assert_eq!(dialled.len(), TRACKER_PEERS);
        assert!(dialled.is_subset(&welcoming));
        for j in dialled {
            assert!(e.slots[j].conns.len() <= MAX_CONNECTIONS + SEED_ROOM);
        }
        // Back at the target: no more dialling.
        e.connect_more(1);
        assert_eq!(neighbours(&e, 1).len(), TRACKER_PEERS);
    }

    #[test]
    fn a_complete_peer_short_of_connections_announces_once() {
        let s = Scenario::from_toml(SEEDS_AND_CROWD).unwrap();
        let mut e = joined(&s);
        let before = e.queue.len();
        e.announce_if_short(2);
        assert_eq!(
            e.queue.len(),
            before,
            "a downloader waits for its tracker visit"
        );
        for j in neighbours(&e, 1) {
            e.slots[j].conns.remove(&1);
        }
        e.slots[1].conns.clear();
        e.announce_if_short(1);
        e.announce_if_short(1);
        assert_eq!(
            e.queue.len(),
            before + 1,
            "one announce however often asked"
        );
    }
}
