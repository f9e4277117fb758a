//! # tierswarm-harness
//!
//! A scripted harness for protocol traces: a handful of real [`Node`]s wired together on a
//! virtual clock, with a fixed one-way latency per message, instant verification, and a hook
//! that lets a script drop, delay or rewrite any message. Everything is deterministic, so a
//! run's log ([`Swarm::log_text`]) is a stable snapshot: the trace tests of `tests/` are written
//! on it, and so can yours be (see `examples/trace_snapshot.rs`, which snapshots its log with
//! `insta`).
//!
//! This is not the simulator (no bandwidth, no seeded faults): it is the smallest embedder that
//! can stage a precise race, such as a refine response arriving just after its timeout. It is
//! also the smallest complete [`Host`] to read when writing an embedder of your own.
//!
//! A script adds nodes ([`Swarm::add`] with a [`config`]), connects them, optionally installs a
//! [`Fate`] hook, runs the clock ([`Swarm::run_until`], [`Swarm::run_until_complete`]) and then
//! asserts on the nodes, the messages on the wire ([`Swarm::count`], [`Swarm::kinds`]) and the
//! log:
//!
//! ```
//! use std::time::Duration;
//! use tierswarm_harness::{config, Fate, Swarm};
//!
//! let len = 3 * 65536 + 100; // four units, the last one partial
//! let mut s = Swarm::new(Duration::from_millis(10));
//! let seed = s.add(config("seed", len, true), None); // holds everything
//! let leech = s.add(config("leech", len, true), Some(&[])); // holds nothing
//! // Lose the first request for unit 2: the leecher must time out and ask again.
//! let mut lost = false;
//! s.hook(move |_, _, msg| match msg {
//!     tierswarm_core::wire::Message::Request { unit: 2, .. } if !lost => {
//!         lost = true;
//!         Fate::Drop
//!     }
//!     _ => Fate::Deliver,
//! });
//! s.connect(seed, leech);
//! assert!(s.run_until_complete(leech, Duration::from_secs(30)));
//! assert_eq!(s.count(leech, seed, "request"), 5, "four units, one asked twice");
//! assert!(s.log_text().contains("dropped request(2)"));
//! ```

use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tierswarm_core::node::{
    drive, Config, DisconnectReason, Event, Host, Input, Node, PeerId, Upload, Verdict,
};
use tierswarm_core::store::LoadNotes;
use tierswarm_core::time::Timestamp;
use tierswarm_core::trace::Stamped;
use tierswarm_core::wire::{Frame, Message, Proof};
use tierswarm_core::{Geometry, LocalTiers};

/// The content root used by every harness node.
pub const ROOT: [u8; 32] = [0x5a; 32];

/// What the hook decides for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// Deliver after the normal latency.
    Deliver,
    /// Lose it.
    Drop,
    /// Deliver after this extra delay.
    Delay(Duration),
    /// Deliver this message instead.
    Replace(Message),
}

/// A message hook: `(from, to, message) -> fate`.
pub type Hook = Box<dyn FnMut(usize, usize, &Message) -> Fate>;

#[derive(Debug)]
enum Pending {
    /// An input for node `.0`.
    Input(usize, Input),
    /// A message node `.0` sends to node `.1` now (a served unit whose upload finished).
    Send(usize, usize, Message),
}

impl Pending {
    fn node(&self) -> usize {
        match self {
            Pending::Input(n, _) | Pending::Send(n, _, _) => *n,
        }
    }
}

/// A few nodes, a clock and a log.
pub struct Swarm {
    /// The nodes; node `i` calls node `j` `PeerId(j)`.
    pub nodes: Vec<Option<Node>>,
    configs: Vec<Config>,
    /// Last persisted store of each node.
    pub stores: Vec<Option<Bytes>>,
    /// Current time.
    pub now: Timestamp,
    latency: Duration,
    queue: BTreeMap<(Timestamp, u64), Pending>,
    seq: u64,
    links: BTreeSet<(usize, usize)>,
    hook: Option<Hook>,
    /// Readable log: trace records and notable actions, one per line.
    pub log: Vec<String>,
    /// Requests seen on the wire: `(from, to, unit)`.
    pub requests: Vec<(usize, usize, u64)>,
    /// Messages sent, by kind name.
    pub sent: BTreeMap<&'static str, u64>,
    /// Log `Send` actions of these kinds too.
    pub log_kinds: BTreeSet<&'static str>,
    /// Trace records (by `ev` name) left out of the log, to keep long runs readable.
    pub hide: BTreeSet<&'static str>,
    /// Every message sent, as the sender sent it (before the hook): `(time, from, to, msg)`.
    pub wire: Vec<(Timestamp, usize, usize, Message)>,
    /// Every trace record every node emitted, in order, with the node's index (the log shows
    /// them as text, less the `hide`n kinds): for assertions on records by their fields.
    pub traces: Vec<(usize, Stamped)>,
    /// Time to upload one served unit: the TRANSFER leaves, and `UnitSent` is reported, this
    /// long after the node's `Serve` (zero: at once).
    pub serve_time: Duration,
    /// Nodes that upload at another pace than `serve_time`: node index → time per unit.
    pub serve_times: BTreeMap<usize, Duration>,
}

/// The swarm as node `i`'s [`Host`]: messages go on the wire after the latency (through the
/// hook), served units after `serve_time`, verification is instant.
struct HarnessHost<'a> {
    swarm: &'a mut Swarm,
    i: usize,
}

impl Host for HarnessHost<'_> {
    fn send(&mut self, peer: PeerId, msg: Message) {
        self.swarm.send_msg(self.i, peer.0 as usize, msg);
    }

    fn serve(&mut self, peer: PeerId, unit: u64) -> Upload {
        let (s, i, j) = (&mut *self.swarm, self.i, peer.0 as usize);
        let msg = Message::Transfer {
            unit,
            data: Bytes::new(),
            proof: None,
        };
        let serve_time = s.serve_times.get(&i).copied().unwrap_or(s.serve_time);
        if serve_time.is_zero() {
            s.send_msg(i, j, msg);
            return Upload::Sent;
        }
        let done = s.now.add(serve_time);
        s.push(done, Pending::Input(i, Input::UnitSent { peer, unit }));
        s.push(done, Pending::Send(i, j, msg));
        Upload::Later
    }

    fn store_unit(&mut self, _: PeerId, _: u64, _: Bytes, _: Option<Proof>) -> Verdict {
        Verdict::Verified
    }

    fn persist(&mut self, store: Bytes) {
        self.swarm.stores[self.i] = Some(store);
    }

    fn disconnect(&mut self, peer: PeerId, reason: DisconnectReason) {
        let (s, i, j) = (&mut *self.swarm, self.i, peer.0 as usize);
        s.log(format!("{i} disconnects {j}: {reason}"));
        if s.links.remove(&(i.min(j), i.max(j))) {
            s.forget_frames(i, j);
            let now = s.now;
            let input = Input::PeerDisconnected {
                peer: PeerId(i as u64),
            };
            s.push(now, Pending::Input(j, input));
        }
    }

    fn event(&mut self, e: Event) {
        if !matches!(e, Event::Progress { .. }) {
            let i = self.i;
            self.swarm.log(format!("{i} event {e:?}"));
        }
    }

    fn trace(&mut self, s: Stamped) {
        let line = s.to_json_line();
        let hidden = self
            .swarm
            .hide
            .iter()
            .any(|ev| line.contains(&format!("\"ev\":\"{ev}\"")));
        let i = self.i;
        if !hidden {
            self.swarm.log(format!("{i} {line}"));
        }
        self.swarm.traces.push((i, s));
    }
}

/// A config for harness node `name` over a file of `file_len` bytes.
pub fn config(name: &str, file_len: u64, hierarchical: bool) -> Config {
    let mut c = Config::new(ROOT, file_len, name);
    c.hierarchical = hierarchical;
    c.trace = true;
    c.seed = name.bytes().map(u64::from).sum();
    c
}

impl Swarm {
    /// An empty swarm with `latency` one way per message.
    pub fn new(latency: Duration) -> Self {
        Swarm {
            nodes: Vec::new(),
            configs: Vec::new(),
            stores: Vec::new(),
            now: Timestamp::ZERO,
            latency,
            queue: BTreeMap::new(),
            seq: 0,
            links: BTreeSet::new(),
            hook: None,
            log: Vec::new(),
            requests: Vec::new(),
            sent: BTreeMap::new(),
            log_kinds: BTreeSet::new(),
            hide: BTreeSet::new(),
            wire: Vec::new(),
            traces: Vec::new(),
            serve_time: Duration::ZERO,
            serve_times: BTreeMap::new(),
        }
    }

    /// Adds a node holding `units` (all units when `None`); returns its index.
    pub fn add(&mut self, cfg: Config, units: Option<&[u64]>) -> usize {
        let geo = Geometry::new(cfg.file_len).expect("valid length");
        let local = match units {
            None => LocalTiers::full(geo),
            Some(us) => {
                let mut l = LocalTiers::new(geo);
                for &u in us {
                    l.mark_t1_complete(u).expect("unit in range");
                }
                l
            }
        };
        self.configs.push(cfg.clone());
        self.nodes.push(Some(Node::new(cfg, local, self.now)));
        self.stores.push(None);
        self.nodes.len() - 1
    }

    /// Installs the message hook.
    pub fn hook(&mut self, h: impl FnMut(usize, usize, &Message) -> Fate + 'static) {
        self.hook = Some(Box::new(h));
    }

    /// Removes the hook.
    pub fn clear_hook(&mut self) {
        self.hook = None;
    }

    fn push(&mut self, at: Timestamp, p: Pending) {
        self.seq += 1;
        self.queue.insert((at, self.seq), p);
    }

    /// Connects `a` and `b` (both see `PeerConnected` now).
    pub fn connect(&mut self, a: usize, b: usize) {
        self.links.insert((a.min(b), a.max(b)));
        let now = self.now;
        self.push(
            now,
            Pending::Input(
                a,
                Input::PeerConnected {
                    peer: PeerId(b as u64),
                },
            ),
        );
        self.push(
            now,
            Pending::Input(
                b,
                Input::PeerConnected {
                    peer: PeerId(a as u64),
                },
            ),
        );
    }

    /// Hands node `i` an input of the script's own now (after what is already queued for this
    /// instant), as an embedder would: `Input::PeerCongested` for a connection that stopped
    /// taking data, `Input::Pressure`, `Input::Drain`, ...
    pub fn input(&mut self, i: usize, input: Input) {
        let now = self.now;
        self.push(now, Pending::Input(i, input));
    }

    /// Cuts the link between `a` and `b`: both see `PeerDisconnected` now; messages still on
    /// the wire between them are lost (a later connection must not receive them).
    pub fn disconnect(&mut self, a: usize, b: usize) {
        if self.links.remove(&(a.min(b), a.max(b))) {
            let now = self.now;
            self.log(format!("cut {a}-{b}"));
            self.forget_frames(a, b);
            self.push(
                now,
                Pending::Input(
                    a,
                    Input::PeerDisconnected {
                        peer: PeerId(b as u64),
                    },
                ),
            );
            self.push(
                now,
                Pending::Input(
                    b,
                    Input::PeerDisconnected {
                        peer: PeerId(a as u64),
                    },
                ),
            );
        }
    }

    /// Drops frames and served units still travelling between `a` and `b`.
    fn forget_frames(&mut self, a: usize, b: usize) {
        let on_link =
            |to: usize, from: u64| (to, from as usize) == (a, b) || (to, from as usize) == (b, a);
        self.queue.retain(|_, p| match p {
            Pending::Input(to, Input::PeerFrame { peer, .. }) => !on_link(*to, peer.0),
            Pending::Input(from, Input::UnitSent { peer, .. }) => !on_link(*from, peer.0),
            Pending::Send(from, to, _) => !on_link(*from, *to as u64),
            Pending::Input(..) => true,
        });
    }

    /// Stops node `i` (a crash: nothing is flushed) and cuts its links.
    pub fn crash(&mut self, i: usize) {
        let others: Vec<(usize, usize)> = self
            .links
            .iter()
            .filter(|(a, b)| *a == i || *b == i)
            .copied()
            .collect();
        for (a, b) in others {
            self.disconnect(a, b);
        }
        self.nodes[i] = None;
        self.queue.retain(|_, p| p.node() != i);
        self.log(format!("crash {i}"));
    }

    /// Restarts node `i` from its last persisted store; returns what loading had to do.
    pub fn restart(&mut self, i: usize) -> LoadNotes {
        let store = self.stores[i].clone().expect("node persisted something");
        let (node, notes) =
            Node::from_store(self.configs[i].clone(), &store, self.now).expect("store loads");
        self.log(format!(
            "restart {i}: {} units from store, tiers rebuilt: {}",
            node.local().units_present(),
            notes.tiers_rebuilt
        ));
        self.nodes[i] = Some(node);
        notes
    }

    /// The node at `i`.
    pub fn node(&self, i: usize) -> &Node {
        self.nodes[i].as_ref().expect("node is up")
    }

    /// Adds a line of the test's own to the log (a marker in the story).
    pub fn note(&mut self, line: &str) {
        self.log(line.to_string());
    }

    /// Messages of `kind` (a [`MessageKind`](tierswarm_core::wire::MessageKind) name) sent from
    /// `from` to `to`.
    pub fn count(&self, from: usize, to: usize, kind: &str) -> usize {
        self.wire
            .iter()
            .filter(|(_, f, t, m)| (*f, *t) == (from, to) && m.kind().name() == kind)
            .count()
    }

    /// Kinds of message sent from `from` to `to`, sorted.
    pub fn kinds(&self, from: usize, to: usize) -> BTreeSet<&'static str> {
        self.wire
            .iter()
            .filter(|(_, f, t, _)| (*f, *t) == (from, to))
            .map(|(_, _, _, m)| m.kind().name())
            .collect()
    }

    fn log(&mut self, line: String) {
        self.log.push(format!("{:>9} {line}", self.now.as_micros()));
    }

    /// Executes every action node `i` has queued, through the core's one action loop.
    fn drain(&mut self, i: usize) {
        let Some(mut node) = self.nodes[i].take() else {
            return;
        };
        drive(&mut node, self.now, &mut HarnessHost { swarm: self, i });
        self.nodes[i] = Some(node);
    }

    /// Puts `msg` from `i` to `j` on the wire (through the hook).
    fn send_msg(&mut self, i: usize, j: usize, msg: Message) {
        let now = self.now;
        let kind = msg.kind().name();
        *self.sent.entry(kind).or_default() += 1;
        if let Message::Request { unit, .. } = msg {
            self.requests.push((i, j, unit));
        }
        self.wire.push((now, i, j, msg.clone()));
        let fate = match self.hook.as_mut() {
            Some(h) => h(i, j, &msg),
            None => Fate::Deliver,
        };
        if fate == Fate::Deliver && self.log_kinds.contains(kind) {
            self.log(format!("{i}->{j} {}", render(&msg)));
        }
        let (msg, at) = match fate {
            Fate::Deliver => (msg, now.add(self.latency)),
            Fate::Drop => {
                self.log(format!("{i}->{j} dropped {}", render(&msg)));
                return;
            }
            Fate::Delay(d) => {
                self.log(format!("{i}->{j} delayed {:?}: {}", d, render(&msg)));
                (msg, now.add(self.latency + d))
            }
            Fate::Replace(m) => {
                self.log(format!("{i}->{j} replaced by {}", render(&m)));
                (m, now.add(self.latency))
            }
        };
        if self.links.contains(&(i.min(j), i.max(j))) {
            let frame = Frame {
                info_hash: Bytes::from_static(&ROOT),
                msg,
            };
            self.push(
                at,
                Pending::Input(
                    j,
                    Input::PeerFrame {
                        peer: PeerId(i as u64),
                        frame,
                    },
                ),
            );
        }
    }

    /// Runs until nothing is pending and no node has a timer before `until`.
    pub fn run_until(&mut self, until: Timestamp) {
        for i in 0..self.nodes.len() {
            self.drain(i);
        }
        loop {
            let next_msg = self.queue.keys().next().map(|(t, _)| *t);
            let next_timer = self
                .nodes
                .iter()
                .enumerate()
                .filter_map(|(i, n)| n.as_ref().and_then(|n| n.poll_timeout()).map(|t| (t, i)))
                .min();
            let next = match (next_msg, next_timer) {
                (Some(m), Some((t, _))) => m.min(t),
                (Some(m), None) => m,
                (None, Some((t, _))) => t,
                (None, None) => return,
            };
            if next > until {
                self.now = until;
                return;
            }
            self.now = next;
            if next_msg == Some(next) {
                match self.queue.pop_first().expect("non-empty").1 {
                    Pending::Input(i, input) => {
                        if let Some(n) = self.nodes[i].as_mut() {
                            n.handle_input(next, input);
                            self.drain(i);
                        }
                    }
                    Pending::Send(i, j, msg) => {
                        if self.nodes[i].is_some() {
                            self.send_msg(i, j, msg);
                        }
                    }
                }
            } else if let Some((_, i)) = next_timer {
                if let Some(n) = self.nodes[i].as_mut() {
                    n.handle_timeout(next);
                    self.drain(i);
                }
            }
        }
    }

    /// Runs until node `i` is complete or `limit` passes; returns whether it completed.
    pub fn run_until_complete(&mut self, i: usize, limit: Duration) -> bool {
        let end = self.now.add(limit);
        let step = Duration::from_millis(50);
        while self.now < end {
            if self.nodes[i].as_ref().is_some_and(|n| n.is_complete()) {
                return true;
            }
            let next = self.now.add(step).min(end);
            self.run_until(next);
        }
        self.nodes[i].as_ref().is_some_and(|n| n.is_complete())
    }

    /// The log as one string.
    pub fn log_text(&self) -> String {
        let mut s = self.log.join("\n");
        s.push('\n');
        s.push_str(&format!("sent: {:?}\n", self.sent));
        s
    }
}

/// A short, stable rendering of a message for logs (its `Display`).
pub fn render(m: &Message) -> String {
    m.to_string()
}
