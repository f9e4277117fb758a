//! One node fed an arbitrary sequence of frames from several peers, with the embedder's inputs
//! (units verified or not, units sent or unservable, drops, pressure, time, drain) in between;
//! every invariant is checked after every step.
//!
//! Shared by the `node_frames` fuzz target and `core/tests/fuzz_corpus.rs`. The input is read as
//! a program: the first bytes choose the file (1 to 545 units), what the node holds at the start,
//! hierarchical or legacy, small or default limits and tracing; each following op takes an
//! opcode byte and the bytes it needs (reading past the end gives zeros). Messages are built from
//! the bytes with a bias towards what the node expects (answers to its own requests and
//! refinements, the right window), and one op feeds raw bytes through the wire decoder, so both
//! plausible and arbitrary frames reach the node.
//!
//! What is checked, after every step:
//! - no panic;
//! - every action names a connected peer; a request goes only to a peer that advertised the
//!   unit on this connection, for a unit not held; the node serves only units it holds, within
//!   its upload slots; a unit is handed out for verification at most once at a time;
//! - the node's T1 units are exactly its initial ones and those the host reported verified
//!   (nothing is claimed that was not verified); every persisted store decodes for this content
//!   and claims only verified units; `Progress` and `Complete` agree with that set;
//! - the request and refinement gauges stay within their caps and never exceed what the peers
//!   still owe; `persists` counts the stores handed out; peers and serve queues stay within
//!   their caps, and a peer's heap share stays bounded;
//! - no timer survives `handle_timeout` past its due time;
//! - when everyone leaves at the end, every gauge is back to zero.

use bytes::Bytes;
use std::collections::BTreeSet;
use std::time::Duration;
use tierswarm_core::node::{
    drive, Config, DisconnectReason, DropReason, Event, Host, Input, Limits, Node, PeerId,
    PressureSnapshot, Upload, Verdict,
};
use tierswarm_core::store::StoreState;
use tierswarm_core::trace::Stamped;
use tierswarm_core::wire::{decode_body, Capabilities, Frame, Message, Proof};
use tierswarm_core::{Geometry, LocalTiers, Tier, Timestamp};

const ROOT: [u8; 32] = [0x5a; 32];
const PEERS: usize = 4;
const T1: u64 = 65_536;
/// File lengths: one partial unit, a few units, two T2 blocks and a bit, a whole T3 block, and
/// two T3 blocks (the second partial).
const LENGTHS: [u64; 5] = [100, 3 * T1 + 17, 65 * T1 + 9, 512 * T1, 545 * T1 + 1];
/// A generous bound on one peer's heap share for files this small: its structures are capped by
/// the limits and sized by the file, never by what it sends.
const PEER_HEAP_BOUND: usize = 256 * 1024;

/// Reads the program; zeros past the end.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.u8()).collect()
    }
    fn done(&self) -> bool {
        self.0.is_empty()
    }
}

/// What the test knows of one connection.
#[derive(Default)]
struct Conn {
    live: bool,
    /// Units it advertised on this connection, in any message (a superset of what the node may
    /// believe it has).
    advertised: BTreeSet<u64>,
    /// Units the node asked of it, not answered yet (duplicates allowed).
    asked: Vec<u64>,
    /// Refinement ids the node used with it, with the window's first unit.
    refines: Vec<(u64, u64)>,
    /// Units handed out to be sent to it, not reported yet.
    serving: Vec<u64>,
}

/// The checking host: every action is checked against the model as the node hands it out.
struct Model {
    geo: Geometry,
    limits: Limits,
    conns: Vec<Conn>,
    /// Units the node may claim: its initial ones and those reported verified.
    held: BTreeSet<u64>,
    /// `(peer, unit)` handed out for verification, verdict not given yet.
    storing: Vec<(usize, u64)>,
    /// How the host answers the next `serve` / `store_unit`: 0 later, 1 at once (sent /
    /// verified), 2 failed.
    serve_mode: u8,
    verdict_mode: u8,
    persists: u64,
    now: Timestamp,
}

impl Model {
    fn conn(&mut self, peer: PeerId, what: &dyn std::fmt::Debug) -> &mut Conn {
        let c = &mut self.conns[peer.0 as usize];
        assert!(c.live, "{what:?} names p{}, which is not connected", peer.0);
        c
    }

    /// Units a message from a peer claims, over-approximated (partial blocks count whole).
    fn claimed(&self, msg: &Message) -> Vec<u64> {
        let n = self.geo.units();
        let blocks = |tier: Tier, start: u64, bits: &[u8]| -> Vec<u64> {
            let mut out = Vec::new();
            for (i, byte) in bits.iter().enumerate() {
                for j in 0..8 {
                    if byte & (0x80 >> j) != 0 {
                        let b = start.saturating_add((i * 8 + j) as u64);
                        out.extend(self.geo.unit_range(tier, b).unwrap_or(0..0));
                    }
                }
            }
            out
        };
        match msg {
            Message::Bitfield { bits } => blocks(Tier::T1, 0, bits),
            Message::Have { unit } if *unit < n => vec![*unit],
            Message::Summary {
                tier,
                start,
                all,
                partial,
            } => match Tier::from_number(*tier) {
                Some(t) => [blocks(t, *start, all), blocks(t, *start, partial)].concat(),
                None => Vec::new(),
            },
            Message::RefineResponse {
                tier, start, bits, ..
            } => Tier::from_number(*tier)
                .map(|t| blocks(t, *start, bits))
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// Records what `msg` from `p` tells the model (before the node sees it).
    fn note(&mut self, p: usize, msg: &Message) {
        let claimed = self.claimed(msg);
        let c = &mut self.conns[p];
        c.advertised.extend(claimed);
        match msg {
            Message::Transfer { unit, .. } | Message::Reject { unit, .. } => {
                if let Some(i) = c.asked.iter().position(|u| u == unit) {
                    c.asked.remove(i);
                }
            }
            Message::RefineResponse { id, .. } => c.refines.retain(|(i, _)| i != id),
            _ => {}
        }
    }

    fn gone(&mut self, p: usize) {
        self.conns[p] = Conn::default();
    }
}

impl Host for Model {
    fn send(&mut self, peer: PeerId, msg: Message) {
        let held = self.held.contains(&match msg {
            Message::Request { unit, .. } => unit,
            _ => u64::MAX,
        });
        let first_unit = match &msg {
            Message::RefineRequest {
                from_tier, index, ..
            } => Tier::from_number(*from_tier)
                .and_then(|t| self.geo.unit_range(t, *index).ok())
                .map(|r| r.start),
            _ => None,
        };
        let c = self.conn(peer, &msg);
        match msg {
            Message::Request { unit, .. } => {
                assert!(
                    c.advertised.contains(&unit),
                    "request for unit {unit} to p{}, which never advertised it",
                    peer.0
                );
                assert!(!held, "request for unit {unit}, which is held");
                c.asked.push(unit);
            }
            Message::RefineRequest { id, .. } => {
                let start = first_unit.expect("refinement of a block of this file");
                c.refines.push((id, start));
            }
            _ => {}
        }
    }

    fn serve(&mut self, peer: PeerId, unit: u64) -> Upload {
        assert!(self.held.contains(&unit), "serving unit {unit}, not held");
        let (per_peer, total) = (self.limits.upload_slots_per_peer, self.limits.upload_slots);
        let mode = self.serve_mode;
        let c = self.conn(peer, &("serve", unit));
        match mode {
            1 => return Upload::Sent,
            2 => return Upload::Failed,
            _ => c.serving.push(unit),
        }
        assert!(c.serving.len() as u32 <= per_peer, "per-peer upload slots");
        let all: usize = self.conns.iter().map(|c| c.serving.len()).sum();
        assert!(all as u32 <= total, "upload slots");
        Upload::Later
    }

    fn store_unit(&mut self, peer: PeerId, unit: u64, _: Bytes, _: Option<Proof>) -> Verdict {
        assert!(unit < self.geo.units(), "storing unit {unit} past the end");
        assert!(!self.held.contains(&unit), "storing unit {unit}, held");
        assert!(
            !self.storing.iter().any(|(_, u)| *u == unit),
            "unit {unit} handed out for verification twice"
        );
        self.conn(peer, &("store", unit));
        match self.verdict_mode {
            1 => {
                self.held.insert(unit);
                Verdict::Verified
            }
            2 => Verdict::Failed,
            _ => {
                self.storing.push((peer.0 as usize, unit));
                Verdict::Later
            }
        }
    }

    fn persist(&mut self, store: Bytes) {
        self.persists += 1;
        let (state, notes) = StoreState::decode_for(&store, &ROOT, self.geo.file_len())
            .expect("a persisted store decodes for its content");
        assert_eq!(notes.unproven_ignored, 0);
        let t1 = state.tiers.bitfield(Tier::T1);
        for u in t1.iter_ones_in(0..t1.len()) {
            assert!(self.held.contains(&u), "persisted store claims unit {u}");
        }
    }

    fn disconnect(&mut self, peer: PeerId, reason: DisconnectReason) {
        self.conn(peer, &reason);
        self.gone(peer.0 as usize);
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::Progress { units, total } => {
                assert_eq!(total, self.geo.units());
                assert!(
                    units <= self.held.len() as u64,
                    "progress past verified units"
                );
            }
            Event::Complete => assert_eq!(self.held.len() as u64, self.geo.units()),
            _ => {}
        }
    }

    fn trace(&mut self, s: Stamped) {
        assert_eq!(s.t, self.now, "trace stamped off the node's clock");
    }
}

struct Run {
    node: Node,
    m: Model,
}

fn small_limits() -> Limits {
    Limits {
        max_peers: 3,
        min_window: 2,
        max_window: 6,
        max_requests: 9,
        max_refines_per_peer: 2,
        max_refines: 3,
        upload_slots_per_peer: 1,
        upload_slots: 2,
        max_serve_queue: 4,
        max_consecutive_timeouts: 3,
        persist_every: 4,
        ..Limits::default()
    }
}

impl Run {
    fn new(c: &mut Cursor) -> Run {
        let setup = c.u8();
        let geo = Geometry::new(LENGTHS[(setup % 5) as usize]).expect("valid length");
        let n = geo.units();
        let mut local = LocalTiers::new(geo);
        let mut held = BTreeSet::new();
        // 0: nothing, 1: all but a few, 2: a pattern from the next byte; 3: nothing.
        let pattern = c.u8();
        for u in 0..n {
            let keep = match (setup >> 3) & 3 {
                1 => u % 7 != 3,
                2 => (pattern >> (u % 8)) & 1 == 1,
                _ => false,
            };
            if keep {
                local.mark_t1_complete(u).expect("unit of the file");
                held.insert(u);
            }
        }
        let mut cfg = Config::new(ROOT, geo.file_len(), "under-fuzz");
        cfg.hierarchical = setup & 0x20 == 0;
        cfg.trace = setup & 0x80 != 0;
        cfg.seed = u64::from(pattern);
        if setup & 0x40 != 0 {
            cfg.limits = small_limits();
        }
        let limits = cfg.limits.clone();
        Run {
            node: Node::new(cfg, local, Timestamp::ZERO),
            m: Model {
                geo,
                limits,
                conns: (0..PEERS).map(|_| Conn::default()).collect(),
                held,
                storing: Vec::new(),
                serve_mode: 0,
                verdict_mode: 0,
                persists: 0,
                now: Timestamp::ZERO,
            },
        }
    }

    fn input(&mut self, input: Input) {
        self.node.handle_input(self.m.now, input);
        self.settle();
    }

    /// A unit number: mostly one of the file's, sometimes just past it.
    fn unit(&self, c: &mut Cursor) -> u64 {
        u64::from(c.u16()) % (self.m.geo.units() + 2)
    }

    /// A message from peer `p`, built from the program.
    fn message(&self, p: usize, c: &mut Cursor) -> Message {
        let conn = &self.m.conns[p];
        let pick = |c: &mut Cursor, n: usize| (n > 0).then(|| c.u8() as usize % n);
        match c.u8() % 12 {
            0 => {
                let variant = c.u8();
                Message::Handshake {
                    info_hash: Bytes::copy_from_slice(if variant & 4 == 0 {
                        &ROOT
                    } else {
                        &[0; 32]
                    }),
                    peer_id: format!("p{p}"),
                    capabilities: match variant & 3 {
                        0 | 3 => Some(Capabilities::OURS),
                        1 => None,
                        _ => Some(Capabilities {
                            max_tier_supported: 2,
                            ..Capabilities::OURS
                        }),
                    },
                }
            }
            1 => {
                let mode = c.u8();
                let n = self.m.geo.units();
                let len = n.div_ceil(8) as usize;
                let len = match mode % 8 {
                    0 => len + 1,
                    1 => len.saturating_sub(1),
                    _ => len,
                };
                let bits = if mode & 0x80 != 0 {
                    vec![0xff; len]
                } else {
                    c.bytes(len.min(16)).into_iter().cycle().take(len).collect()
                };
                // Spare bits clear (a valid bitfield) unless the mode asks for them.
                Message::Bitfield {
                    bits: if mode % 8 == 3 { bits } else { mask(bits, n) }.into(),
                }
            }
            2 => Message::Have { unit: self.unit(c) },
            3 => {
                let tier = match c.u8() % 8 {
                    0 => 1,
                    1 => 2,
                    2 => 0,
                    3 => 7,
                    _ => 3,
                };
                let mode = c.u8();
                let start = u64::from(mode % 4 / 3);
                let (la, lp) = (c.u8() % 4, c.u8() % 4);
                let (mut all, mut partial) = (c.bytes(la.into()), c.bytes(lp.into()));
                // Bits past the tier's last block clear, unless the mode asks for them.
                if let (Some(t), false) = (Tier::from_number(tier), mode & 0x80 != 0) {
                    let blocks = self.m.geo.blocks(t).saturating_sub(start);
                    all = mask(all, blocks);
                    partial = mask(partial, blocks);
                }
                Message::Summary {
                    tier,
                    start,
                    all: all.into(),
                    partial: partial.into(),
                }
            }
            4 => Message::RefineRequest {
                from_tier: u32::from(c.u8() % 5),
                to_tier: u32::from(c.u8() % 5),
                index: u64::from(c.u8() % 4),
                id: u64::from(c.u16()),
            },
            5 => {
                let (id, start) = match pick(c, conn.refines.len()) {
                    Some(i) if c.u8() & 7 != 0 => conn.refines[i],
                    _ => (u64::from(c.u8()), u64::from(c.u16()) % 1100),
                };
                let len = c.u8() % 72;
                let bits = if len >= 64 {
                    vec![0xff; 64]
                } else {
                    c.bytes(len.into())
                };
                Message::RefineResponse {
                    tier: if c.u8() & 15 == 0 { 2 } else { 1 },
                    start,
                    bits: bits.into(),
                    id,
                    reject: (c.u8() & 7 == 0).then(|| "no".into()),
                }
            }
            6 | 7 => {
                let transfer = c.u8() & 1 == 0;
                let unit = match pick(c, conn.asked.len()) {
                    Some(i) if c.u8() & 15 != 0 => conn.asked[i],
                    _ => self.unit(c),
                };
                if transfer {
                    let len = c.u8();
                    Message::Transfer {
                        unit,
                        data: Bytes::from(vec![len; usize::from(len)]),
                        proof: (len & 1 == 1).then(Proof::default),
                    }
                } else {
                    Message::Reject {
                        unit,
                        reason: "nope".into(),
                    }
                }
            }
            8 => Message::Request {
                unit: self.unit(c),
                held: self.unit(c),
            },
            9 => Message::Cancel { unit: self.unit(c) },
            10 => Message::KeepAlive,
            _ => Message::Unknown {
                kind: i32::from(c.u8()) + 20,
            },
        }
    }

    /// One op of the program.
    fn step(&mut self, c: &mut Cursor) {
        let op = c.u8();
        let p = usize::from(op >> 5) % PEERS;
        let peer = PeerId(p as u64);
        match op % 16 {
            0 | 1 => {
                // A new connection starts with a clean slate (what was sent to a closed one
                // advertises nothing here).
                if !self.m.conns[p].live {
                    self.m.conns[p] = Conn {
                        live: true,
                        ..Conn::default()
                    };
                }
                self.input(Input::PeerConnected { peer });
            }
            2 => {
                self.m.gone(p);
                self.input(Input::PeerDisconnected { peer });
            }
            3 => {
                if self.m.conns[p].live {
                    // The node releases the peer and closes it with the embedder's reason (a
                    // `Disconnect` action, which the model takes as the end of the connection).
                    let reason = if c.u8() & 1 == 0 {
                        DropReason::WriteStalled
                    } else {
                        DropReason::FrameTimeout
                    };
                    self.input(Input::PeerDropped { peer, reason });
                    assert!(!self.m.conns[p].live, "a dropped peer was not closed");
                }
            }
            4..=8 => {
                let msg = self.message(p, c);
                self.frame(p, msg, c.u8());
            }
            9 => {
                let len = usize::from(c.u8() % 64);
                let body = c.bytes(len);
                if let Ok(frame) = decode_body(body.into()) {
                    self.m.note(p, &frame.msg);
                    self.deliver(p, frame);
                }
            }
            10 => {
                let (pick, verdict) = (usize::from(c.u8()), c.u8());
                if self.m.storing.is_empty() {
                    return;
                }
                let (from, unit) = self.m.storing.remove(pick % self.m.storing.len());
                if verdict % 4 == 0 {
                    self.input(Input::UnitFailed {
                        peer: PeerId(from as u64),
                        unit,
                    });
                } else {
                    self.m.held.insert(unit);
                    self.input(Input::UnitComplete { unit });
                }
            }
            11 => {
                let (pick, ok) = (usize::from(c.u8()), c.u8());
                let serving: Vec<(usize, usize)> = (0..PEERS)
                    .flat_map(|p| (0..self.m.conns[p].serving.len()).map(move |i| (p, i)))
                    .collect();
                if serving.is_empty() {
                    return;
                }
                let (p, i) = serving[pick % serving.len()];
                let unit = self.m.conns[p].serving.remove(i);
                let peer = PeerId(p as u64);
                self.input(if ok % 4 == 0 {
                    Input::UnitUnavailable { peer, unit }
                } else {
                    Input::UnitSent { peer, unit }
                });
            }
            12 => {
                let modes = c.u8();
                self.m.serve_mode = modes % 3;
                self.m.verdict_mode = (modes >> 2) % 3;
                let level = f32::from(c.u8()) / 255.0;
                self.input(Input::Pressure(PressureSnapshot {
                    network: level,
                    disk: level / 2.0,
                    ..PressureSnapshot::default()
                }));
            }
            13 => {
                if c.u8() == 0xd7 {
                    self.input(Input::Drain);
                } else {
                    let to = self.m.now.add(Duration::from_millis(u64::from(c.u16())));
                    self.timeout(to);
                }
            }
            _ => {
                // The next timer, as an embedder's event loop would fire it.
                if let Some(t) = self.node.poll_timeout() {
                    self.timeout(t.max(self.m.now));
                }
            }
        }
    }

    /// Delivers `msg` from `p` in an envelope: mostly the right root or none, rarely another.
    fn frame(&mut self, p: usize, msg: Message, envelope: u8) {
        self.m.note(p, &msg);
        let info_hash = match envelope % 32 {
            0 => Bytes::from_static(&[1; 32]),
            1..=15 => Bytes::copy_from_slice(&ROOT),
            _ => Bytes::new(),
        };
        self.deliver(p, Frame { info_hash, msg });
    }

    fn deliver(&mut self, p: usize, frame: Frame) {
        let peer = PeerId(p as u64);
        self.input(Input::PeerFrame { peer, frame });
    }

    fn timeout(&mut self, to: Timestamp) {
        self.m.now = to;
        self.node.handle_timeout(to);
        self.settle();
        if let Some(next) = self.node.poll_timeout() {
            assert!(next > to, "a timer due at {next:?} survived handle_timeout");
        }
    }

    /// Executes the node's actions through the model and checks the invariants.
    fn settle(&mut self) {
        drive(&mut self.node, self.m.now, &mut self.m);
        let m = &self.m;
        let t1 = self.node.local().bitfield(Tier::T1);
        assert_eq!(
            t1.count_ones(),
            m.held.len() as u64,
            "the node's units are not the verified ones"
        );
        assert!(m.held.iter().all(|&u| t1.get(u)));
        let st = self.node.stats();
        assert_eq!(st.persists, m.persists, "persists counted");
        let owed: usize = m.conns.iter().map(|c| c.asked.len()).sum();
        assert!(st.in_flight_requests <= m.limits.max_requests);
        assert!(
            st.in_flight_requests as usize <= owed,
            "{} requests in flight, peers owe {owed}",
            st.in_flight_requests
        );
        let refines: usize = m.conns.iter().map(|c| c.refines.len()).sum();
        assert!(st.in_flight_refines <= m.limits.max_refines);
        assert!(st.in_flight_refines as usize <= refines);
        let peers = self.node.peers().count();
        assert!(peers <= m.limits.max_peers);
        assert!(st.queued_serves <= (m.limits.max_serve_queue * peers) as u64);
        for (id, _) in self.node.peers() {
            assert!(
                m.conns[id.0 as usize].live,
                "the node holds p{} after it left",
                id.0
            );
            let heap = self.node.peer_heap_bytes(*id).unwrap_or(0);
            assert!(heap <= PEER_HEAP_BOUND, "p{} holds {heap} bytes", id.0);
        }
    }

    /// Everyone leaves: every gauge returns to zero.
    fn finish(&mut self) {
        for p in 0..PEERS {
            self.m.gone(p);
            self.input(Input::PeerDisconnected {
                peer: PeerId(p as u64),
            });
        }
        let st = self.node.stats();
        assert_eq!(st.in_flight_requests, 0, "requests outlive their peers");
        assert_eq!(st.in_flight_refines, 0, "refinements outlive their peers");
        assert_eq!(st.queued_serves, 0, "serves outlive their peers");
        assert_eq!(self.node.peers().count(), 0);
    }
}

/// `bits` with every bit from `n` on cleared.
fn mask(mut bits: Vec<u8>, n: u64) -> Vec<u8> {
    for (i, b) in bits.iter_mut().enumerate() {
        let first = i as u64 * 8;
        if first >= n {
            *b = 0;
        } else if n - first < 8 {
            *b &= !(0xffu8 >> (n - first));
        }
    }
    bits
}

/// How deep one program went (for the corpus replay, which checks that the kept inputs reach
/// the deep paths).
#[derive(Debug, Default, Clone, Copy)]
#[allow(dead_code)] // read by the corpus replay, not by the fuzz target
pub struct Reached {
    /// The file was complete at the end (having started incomplete).
    pub completed: bool,
    /// Stores persisted.
    pub persists: u64,
    /// Units served.
    pub served: u64,
    /// Units verified here.
    pub verified: u64,
}

/// Runs the program `data`; panics on a violation.
pub fn check(data: &[u8]) -> Reached {
    let mut c = Cursor(data);
    let mut run = Run::new(&mut c);
    let initially = run.m.held.len() as u64;
    while !c.done() {
        run.step(&mut c);
    }
    run.finish();
    let st = run.node.stats();
    Reached {
        completed: run.node.is_complete() && initially < run.m.geo.units(),
        persists: st.persists,
        served: st.units_served,
        verified: run.m.held.len() as u64 - initially,
    }
}
