//! Runs a scenario: drives real `tierswarm-core` nodes over the simulated network.
//!
//! The engine is the nodes' embedder. It executes each node's actions — sends go onto the
//! [`Network`](crate::network), serves become unit payloads modelled by size, persists are kept
//! as the node's last store (a crashed node restarts from exactly those bytes). Every random
//! choice comes from the scenario seed through labelled sub-streams, so the same scenario, seed
//! and strategy replay bit for bit.
//!
//! # Windows
//!
//! Time advances in windows no longer than the smallest path latency between two peers. Inside
//! a window no node can affect another: whatever one sends or closes reaches the other at least
//! that latency later. So each node runs its own events of the window at once, from its own
//! queue (node by node, which keeps a node's state in cache, and on several threads when the
//! run has them), and leaves what it sends in its outbox. At the window's end the engine books
//! those messages on their receivers' downlinks, in the order they were sent (time, then
//! sender, then the sender's own order), and queues their arrivals. The tracker, joins,
//! crashes and restarts touch many nodes at once: they run alone, between windows, at their
//! exact times. A complete peer's call to the tracker, made inside a window, is answered at its
//! end, dialling as of the call's time (the connections come up a path latency later, beyond
//! the window). The result — reports, trace file, trace hash — does not depend on the number of
//! threads.
//!
//! Hostile peers (a group's `behaviour`) are modelled in `engine/hostile.rs`: the embedding of a
//! hostile node rewrites, drops or multiplies its traffic, and the honest side plays the
//! embedder's defences.

mod digest;
mod hostile;
mod node_side;

use digest::TraceDigest;
use node_side::{run_nodes, Ctx};

use crate::bound::{first_join, fluid_bound, Bounds};
use crate::clock::SimTime;
use crate::events::{EventQueue, LocalQueue};
use crate::network::{Departure, Network, Receiver, Sender, Shape};
use crate::perfetto;
use crate::report::{CompletionStats, ExitReason, HonestFigures, LeecherDetail, Report};
use crate::rng::SimRng;
use crate::scenario::{Behaviour, PeerSpec, Protocol, Role};
use crate::svg::render_progress_svg;
use crate::{RunOptions, Scenario, SimError};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};
use tierswarm_core::node::{Config, DropReason, Limits, Node};
use tierswarm_core::wire::{Message, MessageKind};
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
/// Events pending below which a window runs on one thread (threads cost more than they give).
const PARALLEL_MIN_PENDING: usize = 512;
/// Nodes a thread takes at a time from a window's work.
const CHUNK: usize = 8;

/// The content root the simulated swarm shares (payloads are modelled by size, so any value).
const ROOT: [u8; 32] = [0x42; 32];

/// What happens to many nodes at once: run alone, between windows.
#[derive(Debug)]
enum GlobalEv {
    Join(usize),
    Tracker(usize),
    Crash {
        group: usize,
        victims: u32,
        down_for: Duration,
    },
    Restart(usize),
}

/// What happens to one node, in its own queue.
#[derive(Debug)]
enum NodeEv {
    /// The connection `conn` to `peer` is up.
    Connected {
        conn: u64,
        peer: usize,
    },
    Deliver {
        conn: u64,
        from: usize,
        msg: Message,
    },
    /// `from` closed `conn`.
    Closed {
        conn: u64,
        from: usize,
    },
    /// The last byte of `unit` to `to` left this node's uplink.
    UnitSent {
        conn: u64,
        to: usize,
        unit: u64,
    },
    Timer {
        epoch: u32,
        at: SimTime,
    },
    /// This node's embedder drops `peer` (a write that stalled, a frame that did not finish).
    Drop {
        conn: u64,
        peer: usize,
        reason: DropReason,
    },
    /// A flooder's next burst.
    Flood,
}

/// What a node's processing leaves for other nodes, handed over at the end of the window.
#[derive(Debug)]
enum Outgoing {
    /// A message on its way: the receiver's downlink books it, then `then` happens.
    Message {
        dep: Departure,
        sent_at: SimTime,
        to: usize,
        then: Then,
    },
    /// An event for node `to` at `at` (at least one window away).
    Event { to: usize, at: SimTime, ev: NodeEv },
}

/// What a message's arrival does.
#[derive(Debug)]
enum Then {
    /// Each copy is delivered.
    Deliver {
        conn: u64,
        from: usize,
        msg: Message,
    },
    /// Half a frame arrived and the rest never will: the receiver drops `from` `after` the
    /// first copy's arrival.
    DropFrame {
        conn: u64,
        from: usize,
        after: Duration,
    },
}

/// A node's own counters, summed into the report at the end.
#[derive(Default)]
struct Tally {
    /// Messages sent, by kind (indexed by `MessageKind as usize`).
    messages: [u64; MessageKind::ALL.len()],
    availability_bytes: u64,
    data_bytes: u64,
    /// Connections this (honest) node dropped: (the dropped peer's behaviour, reason) → count.
    disconnects: BTreeMap<(Behaviour, &'static str), u64>,
    /// The first invariant this node broke.
    violation: Option<String>,
}

/// What one window's processing tells the engine.
#[derive(Default)]
struct WindowStats {
    /// Honest leechers that completed.
    completions: usize,
    /// The last honest progress.
    last_progress: Option<SimTime>,
    /// The time of the last event run.
    last_event: SimTime,
    /// Some node broke an invariant.
    violation: bool,
}

impl WindowStats {
    fn merge(&mut self, o: WindowStats) {
        self.completions += o.completions;
        self.last_progress = self.last_progress.max(o.last_progress);
        self.last_event = self.last_event.max(o.last_event);
        self.violation |= o.violation;
    }
}

/// The run's fixed facts, read by every node's processing.
struct Shared<'a> {
    scenario: &'a Scenario,
    geo: Geometry,
    /// The limits every node runs with.
    limits: Limits,
    root: Bytes,
    tracing: bool,
    specs: Vec<PeerSpec>,
    shape: Shape,
    /// The window: the smallest path latency between two peers, µs (at least 1).
    window_us: u64,
}

impl Shared<'_> {
    /// When something sent from `i` to `j` can reach `j` at the earliest, after now: the path
    /// latency, and never less than a window.
    fn hop_us(&self, i: usize, j: usize) -> u64 {
        self.shape.path_us(i, j).max(self.window_us)
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
}

struct Slot {
    spec: PeerSpec,
    /// Boxed so that lending the node out while its actions run moves a pointer, not the node.
    node: Option<Box<Node>>,
    /// Bumped on every crash: events for an older life are dropped.
    epoch: u32,
    store: Option<Bytes>,
    timer: Option<SimTime>,
    /// This node's view of its connections: peer → connection id. A close takes effect here at
    /// once, and at the far end when the news arrives.
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
    /// This complete peer asked the tracker for downloaders at this time (it just completed,
    /// as BitTorrent's `event=completed`, or fell below [`TRACKER_PEERS`] connections); the
    /// engine answers at the end of the window ([`Engine::settle`]).
    announce_at: Option<SimTime>,
    /// This node's pending events.
    queue: LocalQueue<NodeEv>,
    /// Its uplink and fault stream.
    sender: Sender,
    /// What it sent this window, for the others.
    out: Vec<Outgoing>,
    /// Its messages' share of the trace hash.
    digest: TraceDigest,
    /// Its trace lines this window (only with a trace file).
    lines: Vec<(SimTime, String)>,
    tally: Tally,
    /// What this node wrote to slow readers that they did not read, by reader.
    unread: BTreeMap<usize, hostile::Unread>,
}

impl Slot {
    /// A complete peer whose connections fell below [`TRACKER_PEERS`] looks for downloaders
    /// now rather than at its next visit: its neighbours completed and parted from it.
    fn announce_if_short(&mut self, now: SimTime) {
        // From the slot, not the node: the node is lent out while its own actions close
        // connections.
        let complete = self.spec.role == Role::Seeder || self.complete_at.is_some();
        if self.conns.len() < TRACKER_PEERS && complete {
            self.announce(now);
        }
    }

    /// Asks the tracker for downloaders (once per window: the first time asked counts).
    fn announce(&mut self, now: SimTime) {
        self.announce_at.get_or_insert(now);
    }

    fn note_progress(&mut self, now: SimTime, have: u64, units: u64) {
        let total = units.max(1);
        if self.spec.role != Role::Leecher {
            return;
        }
        let percent = have * 100 / total;
        if percent != self.last_percent || self.progress.is_empty() {
            self.last_percent = percent;
            self.progress
                .push((now.as_secs_f64(), have as f64 / total as f64));
        }
    }
}

#[derive(Default, Clone, Copy)]
struct Carried {
    refine_requests: u64,
    refine_timeouts: u64,
    retries: u64,
    request_timeouts: u64,
    duplicate_units: u64,
    events: u64,
}

impl Carried {
    fn add(&mut self, n: &Node) {
        let s = n.stats();
        self.refine_requests += s.refine_requests;
        self.refine_timeouts += s.refine_timeouts;
        self.retries += s.retries;
        self.request_timeouts += s.request_timeouts;
        self.duplicate_units += s.duplicate_units;
        self.events += s.events;
    }
}

/// What one node receives at the end of a window, in the order it was gathered.
#[derive(Default)]
struct Inbound {
    messages: Vec<(SimTime, Departure, Then)>,
    events: Vec<(SimTime, NodeEv)>,
}

impl Inbound {
    /// Books the messages on `slot`'s downlink `rx` at `at` (by send time, ties in the order
    /// gathered), queues their arrivals, then the events.
    fn deliver(&mut self, at: SimTime, slot: &mut Slot, rx: &mut Receiver) {
        self.messages.sort_by_key(|m| m.0);
        for (_, dep, then) in self.messages.drain(..) {
            let times = rx.arrive(&dep, at);
            match then {
                Then::Deliver { conn, from, msg } => {
                    if let [first, rest @ ..] = &times[..] {
                        for &t in rest {
                            let msg = msg.clone();
                            slot.queue.push(t, NodeEv::Deliver { conn, from, msg });
                        }
                        debug_assert!(*first >= at, "a delivery inside the window");
                        slot.queue.push(*first, NodeEv::Deliver { conn, from, msg });
                    }
                }
                Then::DropFrame { conn, from, after } => {
                    if let Some(&t) = times.first() {
                        let reason = DropReason::FrameTimeout;
                        let ev = NodeEv::Drop {
                            conn,
                            peer: from,
                            reason,
                        };
                        slot.queue.push(t + after, ev);
                    }
                }
            }
        }
        for (t, ev) in self.events.drain(..) {
            debug_assert!(t >= at, "an event inside the window");
            slot.queue.push(t, ev);
        }
    }
}

/// Runs `f` on every item of `work` on `threads` threads (this one among them), each taking the
/// next item when done with the last; the results in no particular order.
fn on_threads<I, T, R>(threads: usize, work: I, f: impl Fn(T) -> R + Sync) -> Vec<R>
where
    I: Iterator<Item = T> + Send,
    T: Send,
    R: Send,
{
    let work = std::sync::Mutex::new(work);
    let run = || {
        let mut out = Vec::new();
        loop {
            // A poisoned lock means another thread panicked: stop; its panic is resumed below.
            let next = match work.lock() {
                Ok(mut w) => w.next(),
                Err(_) => None,
            };
            match next {
                Some(item) => out.push(f(item)),
                None => return out,
            }
        }
    };
    std::thread::scope(|scope| {
        let handles: Vec<_> = (1..threads).map(|_| scope.spawn(run)).collect();
        let mut all = run();
        for h in handles {
            match h.join() {
                Ok(r) => all.extend(r),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        all
    })
}

struct Engine<'a> {
    sh: Shared<'a>,
    now: SimTime,
    /// Tracker visits, joins, crashes, restarts.
    global: EventQueue<GlobalEv>,
    slots: Vec<Slot>,
    receivers: Vec<Receiver>,
    next_conn: u64,
    tracker_rng: SimRng,
    crash_rng: SimRng,
    trace: Option<std::io::BufWriter<std::fs::File>>,
    trace_path: Option<std::path::PathBuf>,
    last_progress: SimTime,
    violation: Option<String>,
    instants: Vec<perfetto::Instant>,
    /// Honest leechers not yet complete.
    leechers_left: usize,
    /// Threads a window may use.
    threads: usize,
    /// Events pending below which a window runs on one thread.
    parallel_min: usize,
    /// Windows that ran on several threads.
    parallel_windows: u64,
    /// What global events told the engine (they run nodes' actions too).
    global_stats: WindowStats,
    /// What each node receives at the end of the window (reused).
    inbound: Vec<Inbound>,
    /// Trace lines of the window (reused).
    scratch_lines: Vec<(SimTime, String)>,
}

/// Runs `scenario` with `opts` and returns its report (whose exit code says how it ended).
pub fn run(scenario: &Scenario, opts: &RunOptions) -> Result<Report, SimError> {
    let wall = Instant::now();
    let seed = opts.effective_seed(scenario);
    let mut e = build(scenario, opts, seed)?;
    let reason = e.run_loop();
    e.finish(opts, seed, reason, wall)
}

/// The engine for `scenario` under `opts` with every join and crash queued.
fn build<'a>(scenario: &'a Scenario, opts: &RunOptions, seed: u64) -> Result<Engine<'a>, SimError> {
    let root_rng = SimRng::new(seed);
    let peers = scenario.peers(opts.strategy);
    let net = Network::from_scenario(scenario, &peers, root_rng.derive("network"));
    let (shape, senders, receivers) = net.into_parts();
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
        .zip(senders)
        .map(|(spec, sender)| Slot {
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
            announce_at: None,
            queue: LocalQueue::default(),
            sender,
            out: Vec::new(),
            digest: TraceDigest::new(),
            lines: Vec::new(),
            tally: Tally::default(),
            unread: BTreeMap::new(),
        })
        .collect();
    let leechers_left = peers
        .iter()
        .filter(|p| p.role == Role::Leecher && p.behaviour.is_honest())
        .count();
    let window_us = shape.min_path_us().max(1);
    let threads = opts
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    // Every join and crash is queued before the run; the crash stream draws once per crash now,
    // so that the victims do not depend on anything that happens in the run.
    let mut global = EventQueue::new();
    for p in &peers {
        global.push(SimTime::from_duration(p.join_at), GlobalEv::Join(p.id));
    }
    let mut crash_rng = root_rng.derive("crash");
    for c in &scenario.faults.crashes {
        let victims = c.victims(scenario.groups[c.group].count);
        let _ = crash_rng.u64();
        let ev = GlobalEv::Crash {
            group: c.group,
            victims,
            down_for: c.down_for,
        };
        global.push(SimTime::from_duration(c.at), ev);
    }
    Ok(Engine {
        sh: Shared {
            scenario,
            geo,
            limits: Limits::default(),
            root: Bytes::from_static(&ROOT),
            tracing: trace.is_some(),
            specs: peers.clone(),
            shape,
            window_us,
        },
        now: SimTime::ZERO,
        global,
        slots,
        receivers,
        next_conn: 1,
        tracker_rng: root_rng.derive("tracker"),
        crash_rng,
        trace,
        trace_path: opts.trace.clone(),
        last_progress: SimTime::ZERO,
        violation: None,
        instants: Vec::new(),
        leechers_left,
        threads,
        parallel_min: PARALLEL_MIN_PENDING,
        parallel_windows: 0,
        global_stats: WindowStats::default(),
        inbound: (0..peers.len()).map(|_| Inbound::default()).collect(),
        scratch_lines: Vec::new(),
    })
}

impl<'a> Engine<'a> {
    fn run_loop(&mut self) -> ExitReason {
        let limit = SimTime::from_duration(self.sh.scenario.time_limit);
        loop {
            let next_node = self.slots.iter().filter_map(|s| s.queue.peek_time()).min();
            let next_global = self.global.peek_time();
            let Some(start) = next_node.into_iter().chain(next_global).min() else {
                return ExitReason::Stalled;
            };
            if start > limit {
                self.now = limit;
                return ExitReason::TimeLimit;
            }
            if next_global == Some(start) {
                // Global events first at their time: they run alone.
                self.now = start;
                while self.global.peek_time() == Some(start) {
                    let Some((_, ev)) = self.global.pop() else {
                        break;
                    };
                    self.dispatch_global(ev);
                }
                let stats = std::mem::take(&mut self.global_stats);
                self.settle(start, stats);
            } else {
                let end = start
                    .add_micros(self.sh.window_us)
                    .min(next_global.unwrap_or(SimTime::MAX))
                    .min(limit.add_micros(1));
                let stats = self.run_window(end);
                self.now = self.now.max(stats.last_event);
                self.settle(end, stats);
            }
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
    }

    /// Runs every node's events due before `end`, on up to `threads` threads.
    fn run_window(&mut self, end: SimTime) -> WindowStats {
        let sh = &self.sh;
        let pending: usize = if self.threads > 1 {
            self.slots.iter().map(|s| s.queue.len()).sum()
        } else {
            0
        };
        if self.threads == 1 || pending < self.parallel_min {
            return run_nodes(sh, &mut self.slots, 0, end);
        }
        self.parallel_windows += 1;
        let work = self
            .slots
            .chunks_mut(CHUNK)
            .enumerate()
            .map(|(k, c)| (k * CHUNK, c));
        let stats = on_threads(self.threads, work, |(base, chunk)| {
            run_nodes(sh, chunk, base, end)
        });
        stats.into_iter().fold(WindowStats::default(), |mut a, s| {
            a.merge(s);
            a
        })
    }

    /// The end of a window (or of global events) at `at`: messages sent are booked on their
    /// receivers' downlinks and queued, trace lines written, tracker calls answered, and the
    /// run's counts brought up to date.
    fn settle(&mut self, at: SimTime, stats: WindowStats) {
        // What each receiver gets, gathered in sender order (each sender's in its own order).
        let mut lines = std::mem::take(&mut self.scratch_lines);
        let mut sent = 0;
        for slot in &mut self.slots {
            sent += slot.out.len();
            for o in slot.out.drain(..) {
                match o {
                    Outgoing::Message {
                        dep,
                        sent_at,
                        to,
                        then,
                    } => self.inbound[to].messages.push((sent_at, dep, then)),
                    Outgoing::Event { to, at: t, ev } => self.inbound[to].events.push((t, ev)),
                }
            }
            lines.append(&mut slot.lines);
        }
        // Each receiver's downlink books its messages by send time (the sort is stable: equal
        // times keep the gathered order); receivers are independent of each other.
        let work = self
            .slots
            .chunks_mut(CHUNK)
            .zip(self.receivers.chunks_mut(CHUNK))
            .zip(self.inbound.chunks_mut(CHUNK));
        let deliver =
            |((slots, receivers), inbound): ((&mut [Slot], &mut [Receiver]), &mut [Inbound])| {
                for ((slot, rx), inb) in slots.iter_mut().zip(receivers).zip(inbound) {
                    inb.deliver(at, slot, rx);
                }
            };
        if self.threads > 1 && sent >= self.parallel_min {
            on_threads(self.threads, work, deliver);
        } else {
            work.for_each(deliver);
        }
        if !lines.is_empty() {
            lines.sort_by_key(|l| l.0);
            if let Some(w) = self.trace.as_mut() {
                for (_, line) in lines.iter() {
                    if w.write_all(line.as_bytes()).is_err() {
                        self.violation = Some("cannot write the trace file".into());
                        break;
                    }
                }
            }
            lines.clear();
        }
        self.scratch_lines = lines;
        // Tracker calls, by the time they were made (ties: node order): each dials at that
        // time (its connections come up a path latency later, past this window), with the
        // tracker's view of the swarm as it is now.
        let mut calls: Vec<(SimTime, usize)> = (self.slots.iter_mut().enumerate())
            .filter_map(|(i, s)| s.announce_at.take().map(|t| (t, i)))
            .collect();
        if !calls.is_empty() {
            calls.sort_by_key(|c| c.0);
            let now = self.now;
            for (t, i) in calls {
                if self.slots[i].node.is_some() {
                    self.now = t;
                    self.connect_more(i);
                }
            }
            self.now = now;
        }
        self.leechers_left -= stats.completions;
        if let Some(t) = stats.last_progress {
            self.last_progress = self.last_progress.max(t);
        }
        if stats.violation && self.violation.is_none() {
            self.violation = self.slots.iter().find_map(|s| s.tally.violation.clone());
        }
    }

    /// Node `i` as the global events see it, at the engine's time.
    fn ctx(&mut self, i: usize) -> Ctx<'_, 'a> {
        Ctx {
            sh: &self.sh,
            slot: &mut self.slots[i],
            i,
            now: self.now,
            w: &mut self.global_stats,
        }
    }

    fn dispatch_global(&mut self, ev: GlobalEv) {
        match ev {
            GlobalEv::Join(i) => self.join(i),
            GlobalEv::Tracker(i) => {
                if self.slots[i].node.is_some() {
                    self.connect_more(i);
                    self.global
                        .push(self.now + TRACKER_INTERVAL, GlobalEv::Tracker(i));
                }
            }
            GlobalEv::Crash {
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
                let picks = self.crash_rng.sample(members.len(), victims as usize);
                for k in picks {
                    let i = members[k];
                    self.crash(i);
                    self.global.push(self.now + down_for, GlobalEv::Restart(i));
                }
            }
            GlobalEv::Restart(i) => self.restart(i),
        }
    }

    fn config(&self, i: usize) -> Config {
        let s = &self.slots[i];
        let mut c = Config::new(ROOT, self.sh.geo.file_len(), &format!("peer{i}"));
        c.hierarchical = s.spec.protocol == Protocol::Hierarchical;
        c.seed = s.seed;
        c.trace = self.sh.tracing;
        c.limits = self.sh.limits.clone();
        c
    }

    fn join(&mut self, i: usize) {
        let local = match self.slots[i].spec.role {
            Role::Seeder => LocalTiers::full(self.sh.geo),
            Role::Leecher => LocalTiers::new(self.sh.geo),
        };
        let node = Box::new(Node::new(self.config(i), local, self.now.into()));
        let have = node.local().units_present();
        let now = self.now;
        let units = self.sh.geo.units();
        let slot = &mut self.slots[i];
        slot.node = Some(node);
        slot.joined_at = Some(now);
        slot.note_progress(now, have, units);
        if slot.spec.behaviour == Behaviour::Flood {
            slot.queue.push(now + hostile::FLOOD_EVERY, NodeEv::Flood);
        }
        self.connect_more(i);
        self.global
            .push(self.now + TRACKER_INTERVAL, GlobalEv::Tracker(i));
        self.ctx(i).after();
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
        let complete_peers = if complete {
            self.complete_peers()
        } else {
            Vec::new()
        };
        let live: Vec<usize> = self
            .slots
            .iter()
            .filter(|s| {
                s.spec.id != i
                    && s.node.is_some()
                    && !self.slots[i].conns.contains_key(&s.spec.id)
                    && if complete {
                        self.welcomes_seed(s, &complete_peers)
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
            self.slots[i].conns.insert(j, conn);
            self.slots[j].conns.insert(i, conn);
            let rtt = self.slots[i].spec.latency + self.slots[j].spec.latency;
            let at = self.now + rtt;
            self.slots[i]
                .queue
                .push(at, NodeEv::Connected { conn, peer: j });
            self.slots[j]
                .queue
                .push(at, NodeEv::Connected { conn, peer: i });
        }
    }

    /// Which peers are complete, read once for a tracker visit (each is behind a node's
    /// pointer, and [`Engine::welcomes_seed`] asks about every connection of every candidate).
    fn complete_peers(&self) -> Vec<bool> {
        (self.slots.iter())
            .map(|s| s.node.as_ref().is_some_and(|n| n.is_complete()))
            .collect()
    }

    /// Whether downloader `s` takes a complete peer's dial: it is still downloading, has a place
    /// (counting [`SEED_ROOM`]), and the complete peers it has cannot fill its download link.
    /// `complete[k]`: whether peer `k` is complete.
    fn welcomes_seed(&self, s: &Slot, complete: &[bool]) -> bool {
        let downloading = s.node.is_some() && !complete[s.spec.id];
        downloading && s.conns.len() < MAX_CONNECTIONS + SEED_ROOM && {
            let seeds_up: u64 = s
                .conns
                .keys()
                .filter(|&&k| complete[k])
                .map(|&k| self.slots[k].spec.upload_bps)
                .sum();
            seeds_up < s.spec.download_bps
        }
    }

    fn crash(&mut self, i: usize) {
        let Some(node) = self.slots[i].node.take() else {
            return;
        };
        let now = self.now;
        let slot = &mut self.slots[i];
        slot.carried.add(&node);
        slot.epoch += 1;
        slot.timer = None;
        slot.sender.reset(now);
        self.receivers[i].reset(now);
        let conns: Vec<(usize, u64)> = self.slots[i].conns.iter().map(|(j, c)| (*j, *c)).collect();
        for (j, conn) in conns {
            self.ctx(i).close(conn, j);
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
        let geo = self.sh.geo;
        let node = match (&self.slots[i].store, self.slots[i].spec.role) {
            (Some(store), _) => match Node::from_store(cfg.clone(), store, self.now.into()) {
                Ok((n, _)) => n,
                Err(e) => {
                    self.violation = Some(format!("peer {i} cannot load its own store: {e}"));
                    return;
                }
            },
            (None, Role::Seeder) => Node::new(cfg, LocalTiers::full(geo), self.now.into()),
            (None, Role::Leecher) => Node::new(cfg, LocalTiers::new(geo), self.now.into()),
        };
        self.slots[i].node = Some(Box::new(node));
        self.instants.push(perfetto::Instant {
            peer: i,
            name: "restart".into(),
            at_us: self.now.as_micros(),
        });
        self.connect_more(i);
        self.global
            .push(self.now + TRACKER_INTERVAL, GlobalEv::Tracker(i));
        self.ctx(i).after();
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
        let bounds = Bounds::of(self.sh.scenario.file_size, &peers);
        let bound_s = bounds.bound_s();
        let mut totals = Carried::default();
        let mut messages = [0u64; MessageKind::ALL.len()];
        let (mut availability_bytes, mut data_bytes) = (0, 0);
        let mut node_disconnects: BTreeMap<(Behaviour, &'static str), u64> = BTreeMap::new();
        for s in &self.slots {
            for (m, n) in messages.iter_mut().zip(s.tally.messages) {
                *m += n;
            }
            availability_bytes += s.tally.availability_bytes;
            data_bytes += s.tally.data_bytes;
            for (&k, &n) in &s.tally.disconnects {
                *node_disconnects.entry(k).or_default() += n;
            }
            let mut c = s.carried;
            if let Some(n) = &s.node {
                c.add(n);
            }
            totals.refine_requests += c.refine_requests;
            totals.refine_timeouts += c.refine_timeouts;
            totals.retries += c.retries;
            totals.request_timeouts += c.request_timeouts;
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
        let honest_bound_s = Bounds::of(self.sh.scenario.file_size, &honest_peers).bound_s();
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
                .map(|s| {
                    format!(
                        "{} {}",
                        self.sh.scenario.groups[s.spec.group].name, s.spec.id
                    )
                })
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
                group: self.sh.scenario.groups[s.spec.group].name.clone(),
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
        for (&(of, reason), &n) in &node_disconnects {
            disconnects
                .entry(of.to_string())
                .or_default()
                .insert(reason.to_owned(), n);
        }
        Ok(Report {
            scenario: self.sh.scenario.name.clone(),
            seed,
            strategy: opts.strategy,
            file_bytes: self.sh.scenario.file_size,
            leechers: all.leechers,
            seeders: (self.slots.len() - leechers.len()) as u64,
            completed: all.completed,
            all_complete: all.all_complete(),
            completion_s: all.completion_s,
            makespan_s,
            bound_s,
            bound_kr_s: bounds.kumar_ross_s,
            bound_fluid_s: fluid_bound(self.sh.scenario.file_size, &peers),
            efficiency: all.efficiency,
            availability_bytes,
            data_bytes,
            messages: MessageKind::ALL
                .iter()
                .filter(|&&k| messages[k as usize] > 0)
                .map(|&k| (k.name().to_owned(), messages[k as usize]))
                .collect(),
            refine_requests: totals.refine_requests,
            refine_timeouts: totals.refine_timeouts,
            retries: totals.retries,
            request_timeouts: totals.request_timeouts,
            duplicate_units: totals.duplicate_units,
            events: totals.events,
            wall_s: wall.elapsed().as_secs_f64(),
            trace_hash: digest::combine(self.slots.iter().map(|s| &s.digest)),
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
        let mut e = build(s, &opts, s.seed).unwrap();
        e.sh.limits.learned_pace = pace;
        let reason = e.run_loop();
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
        // The unpaced downloader's retries are timeouts, counted apart as well.
        assert!(
            unpaced.request_timeouts > 0 && unpaced.request_timeouts <= unpaced.retries,
            "{} of {}",
            unpaced.request_timeouts,
            unpaced.retries
        );
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

    /// Every fault and every behaviour at once, legacy peers among them.
    const EVERYTHING: &str = r#"
name = "everything"
file_size = "6MiB"
seed = 21
time_limit = "10m"
[[group]]
name = "seed"
count = 1
role = "seeder"
upload = "100Mbit/s"
download = "100Mbit/s"
latency = "5ms"
[[group]]
name = "crowd"
count = 16
role = "leecher"
upload = "20Mbit/s"
download = "50Mbit/s"
latency = "20ms"
join_at = "0s..3s"
[[group]]
name = "old"
count = 4
role = "leecher"
upload = "10Mbit/s"
download = "50Mbit/s"
latency = "30ms"
protocol = "legacy"
[[group]]
name = "liar"
count = 1
role = "leecher"
upload = "20Mbit/s"
download = "50Mbit/s"
latency = "20ms"
behaviour = "liar"
[[group]]
name = "slow"
count = 1
role = "leecher"
upload = "20Mbit/s"
download = "50Mbit/s"
latency = "20ms"
behaviour = "slow-reader"
[[group]]
name = "corrupt"
count = 1
role = "leecher"
upload = "20Mbit/s"
download = "50Mbit/s"
latency = "20ms"
behaviour = "corrupt"
[[group]]
name = "silent"
count = 1
role = "leecher"
upload = "20Mbit/s"
download = "50Mbit/s"
latency = "20ms"
behaviour = "silent"
[[group]]
name = "flood"
count = 1
role = "leecher"
upload = "20Mbit/s"
download = "50Mbit/s"
latency = "20ms"
behaviour = "flood"
[faults]
loss = 0.02
duplicate = 0.01
reorder = 0.02
[[faults.crash]]
group = "crowd"
fraction = 0.25
at = "1s"
down_for = "1s"
[[faults.partition]]
groups = ["seed", "old"]
at = "0.5s"
duration = "1s"
"#;

    /// The whole report of `s` run on `threads` threads, every window on all of them that has
    /// anything to run, and how many windows did; the wall time zeroed.
    fn run_on(s: &Scenario, threads: usize, trace: Option<std::path::PathBuf>) -> (Report, u64) {
        let opts = RunOptions {
            threads: Some(threads),
            trace,
            ..RunOptions::default()
        };
        let mut e = build(s, &opts, s.seed).unwrap();
        e.parallel_min = 1;
        let reason = e.run_loop();
        let windows = e.parallel_windows;
        let mut r = e.finish(&opts, s.seed, reason, Instant::now()).unwrap();
        r.wall_s = 0.0;
        (r, windows)
    }

    /// The result does not depend on how many threads ran the windows: faults, crashes,
    /// partitions, hostile and legacy peers included, trace file and all.
    #[test]
    fn threads_change_nothing_in_a_run() {
        let s = Scenario::from_toml(EVERYTHING).unwrap();
        let dir = std::env::temp_dir().join(format!("tierswarm-threads-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (one, w1) = run_on(&s, 1, Some(dir.join("1.jsonl")));
        assert_eq!(w1, 0);
        assert_eq!(one.exit_reason, ExitReason::Complete, "{}", one.summary());
        assert!(one.messages.get("reject").is_some_and(|&n| n > 0));
        for threads in [2, 3] {
            let path = dir.join(format!("{threads}.jsonl"));
            let (many, windows) = run_on(&s, threads, Some(path.clone()));
            assert!(windows > 100, "{windows} windows on {threads} threads");
            assert_eq!(many, one, "{threads} threads");
            let (a, b) = (
                std::fs::read(dir.join("1.jsonl")).unwrap(),
                std::fs::read(path).unwrap(),
            );
            assert!(
                !a.is_empty() && a == b,
                "trace files differ on {threads} threads"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Every peer joined (each downloader has dialled the tracker's picks), nothing run yet.
    fn joined(s: &Scenario) -> Engine<'_> {
        let mut e = build(s, &RunOptions::default(), s.seed).unwrap();
        for i in 0..e.slots.len() {
            e.join(i);
        }
        e
    }

    fn welcomes(e: &Engine, j: usize) -> bool {
        e.welcomes_seed(&e.slots[j], &e.complete_peers())
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
        assert!(welcomes(&e, l));
        e.slots[l].conns.insert(1, 1);
        assert!(welcomes(&e, l), "60 of its 100 Mbit/s from seeds");
        e.slots[l].conns.insert(0, 0);
        assert!(!welcomes(&e, l), "160 of 100 Mbit/s");
        e.slots[l].conns.remove(&0);
        e.slots[l].conns.extend((70..79).map(|j| (j, j as u64)));
        assert_eq!(e.slots[l].conns.len(), MAX_CONNECTIONS + SEED_ROOM);
        assert!(!welcomes(&e, l), "no place left");
        assert!(!welcomes(&e, 0), "a complete peer is no downloader");
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
            .filter(|&j| j != 1 && welcomes(&e, j))
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
    fn a_complete_peer_short_of_connections_calls_the_tracker_when_asked() {
        let s = Scenario::from_toml(SEEDS_AND_CROWD).unwrap();
        let mut e = joined(&s);
        let t = |ms: u64| SimTime::from_micros(ms * 1000);
        let had = neighbours(&e, 2).len();
        e.slots[2].announce_if_short(t(5));
        e.settle(t(50), WindowStats::default());
        assert_eq!(
            neighbours(&e, 2).len(),
            had,
            "a downloader waits for its tracker visit"
        );
        for j in neighbours(&e, 1) {
            e.slots[j].conns.remove(&1);
        }
        e.slots[1].conns.clear();
        e.slots[1].announce_if_short(t(7));
        e.slots[1].announce_if_short(t(9));
        let queued = e.slots[1].queue.len();
        e.settle(t(50), WindowStats::default());
        let dialled = neighbours(&e, 1);
        assert_eq!(dialled.len(), TRACKER_PEERS, "one call, back to the target");
        assert_eq!(e.slots[1].queue.len(), queued + TRACKER_PEERS);
        // Dialled at the first call's time: each connection comes up a round trip after 7 ms.
        let mut up = BTreeMap::new();
        while let Some((at, ev)) = e.slots[1].queue.pop_before(SimTime::MAX) {
            if let NodeEv::Connected { peer, .. } = ev {
                up.insert(peer, at);
            }
        }
        for &j in &dialled {
            let rtt = e.slots[j].spec.latency + e.slots[1].spec.latency;
            assert_eq!(up.get(&j), Some(&(t(7) + rtt)), "peer {j}");
        }
        assert_eq!(
            e.now,
            SimTime::ZERO,
            "the engine's own time is left as it was"
        );
    }
}
