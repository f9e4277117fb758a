//! Benchmarks of the sans-IO core; the figures and how to read them are in `dev/BENCHMARKS.md`.
//!
//! Run with `cargo bench -p tierswarm-core --bench core`. Before divan's own output, `main`
//! prints two tables divan cannot produce: the per-peer memory figure and a split of the
//! request/answer cycle into its two inputs. The decision swarms built for that table are kept
//! and reused by the `decision` benchmarks (building them is the slow part).
//!
//! `cargo bench -p tierswarm-core --bench core -- <filter>` skips the tables and runs only the
//! matching divan benchmarks. Under `cargo test --benches` (no `--bench` flag) every benchmark runs once on small swarms.

use bytes::Bytes;
use divan::counter::ItemsCount;
use divan::{black_box, Bencher};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use tierswarm_core::node::{
    drive, Config, DisconnectReason, Host, Input, Node, PeerId, Upload, Verdict,
};
use tierswarm_core::store::StoreState;
use tierswarm_core::time::Timestamp;
use tierswarm_core::wire::{Capabilities, Message, Proof};
use tierswarm_core::{Geometry, LocalTiers, Tier};

const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;
const ROOT: [u8; 32] = [7; 32];
/// Units marked by the `mark` benchmarks.
const MARKED: u64 = 1 << 20;
/// Peers in the decision swarms.
const PEERS: u64 = 200;
/// Cycles timed per row of the split table in `main` (two rows per swarm).
const SPLIT_CYCLES: u64 = 2_000;
/// Decision benchmark samples. With the split table this stays well inside the 16,384 units of
/// the 1 GiB file (no endgame, no completion).
const DECISION_SAMPLES: u32 = 20;
const DECISION_SAMPLE_SIZE: u32 = 400;

static BENCH_MODE: OnceLock<bool> = OnceLock::new();

/// Whether this is a real run (`cargo bench`) rather than `cargo test --benches`.
fn bench_mode() -> bool {
    *BENCH_MODE.get_or_init(|| std::env::args().any(|a| a == "--bench"))
}

/// Deterministic xorshift64* generator (no dependency on the core's RNG).
/// The benchmark's host: keeps the requests and refinements the node sends, drops the rest.
#[derive(Default)]
struct Sends {
    requests: Vec<(PeerId, u64)>,
    refines: Vec<(PeerId, u64, u64)>,
}

impl Host for Sends {
    fn send(&mut self, peer: PeerId, msg: Message) {
        match msg {
            Message::Request { unit, .. } => self.requests.push((peer, unit)),
            Message::RefineRequest { index, id, .. } => self.refines.push((peer, index, id)),
            _ => {}
        }
    }
    fn serve(&mut self, _: PeerId, _: u64) -> Upload {
        Upload::Later
    }
    fn store_unit(&mut self, _: PeerId, _: u64, _: Bytes, _: Option<Proof>) -> Verdict {
        Verdict::Later
    }
    fn persist(&mut self, _: Bytes) {}
    fn disconnect(&mut self, _: PeerId, _: DisconnectReason) {}
}

struct Xs(u64);

impl Xs {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn shuffle(&mut self, v: &mut [u64]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

/// A half-complete file: the first quarter of its T3 blocks whole, the middle half with every
/// other T2 block (so partial), the last quarter empty.
fn half_complete(file_len: u64) -> LocalTiers {
    let geo = Geometry::new(file_len).unwrap();
    let n3 = geo.blocks(Tier::T3);
    let mut t1 = tierswarm_core::Bitfield::new(geo.units());
    for b in 0..n3 {
        let r = geo.unit_range(Tier::T3, b).unwrap();
        if b < n3 / 4 {
            t1.set_range(r);
        } else if b < 3 * n3 / 4 {
            for u in r.filter(|u| (u / 32) % 2 == 0) {
                t1.set(u);
            }
        }
    }
    LocalTiers::from_t1(geo, t1).unwrap()
}

// ---- 1. marking units --------------------------------------------------------------------

fn mark_order(order: &str) -> Vec<u64> {
    let mut rng = Xs(0x9e37_79b9_7f4a_7c15);
    match order {
        "sequential" => (0..MARKED).collect(),
        "shuffled" => {
            let mut v: Vec<u64> = (0..MARKED).collect();
            rng.shuffle(&mut v);
            v
        }
        // 1 Mi distinct units drawn from the whole 1 TiB file, in random order.
        "scattered" => {
            let mut v: Vec<u64> = (0..TIB / 65_536).collect();
            rng.shuffle(&mut v);
            v.truncate(MARKED as usize);
            v
        }
        _ => unreachable!(),
    }
}

#[divan::bench_group(sample_count = 10, sample_size = 1)]
mod mark {
    use super::*;

    /// `LocalTiers::mark_t1_complete` for 1,048,576 units on a fresh 1 TiB geometry.
    #[divan::bench(args = ["sequential", "shuffled", "scattered"])]
    fn mark_1mi_units_1tib(bencher: Bencher, order: &str) {
        let units = mark_order(order);
        let geo = Geometry::new(TIB).unwrap();
        bencher
            .counter(ItemsCount::new(units.len()))
            .with_inputs(|| LocalTiers::new(geo))
            .bench_local_refs(|local| {
                for &u in &units {
                    black_box(local.mark_t1_complete(u).unwrap());
                }
            });
    }
}

// ---- 2. summaries and the store ----------------------------------------------------------

#[divan::bench_group(sample_count = 30)]
mod summary {
    use super::*;

    fn tib() -> &'static LocalTiers {
        static T: OnceLock<LocalTiers> = OnceLock::new();
        T.get_or_init(|| half_complete(TIB))
    }

    /// `summary(T3, 0, 32768)`: the whole 1 TiB file, as sent in every handshake and refresh.
    #[divan::bench]
    fn t3_all_1tib(bencher: Bencher) {
        let l = tib();
        let n = l.geometry().blocks(Tier::T3);
        bencher.bench_local(|| l.summary(Tier::T3, black_box(0), n).unwrap());
    }

    /// A 64-block T3 window straddling the whole/partial boundary.
    #[divan::bench]
    fn t3_window64_1tib(bencher: Bencher) {
        let l = tib();
        let s = l.geometry().blocks(Tier::T3) / 4 - 32;
        bencher.bench_local(|| l.summary(Tier::T3, black_box(s), 64).unwrap());
    }

    /// A 64-block T2 window in the partial region (T2 partial bits scan T1).
    #[divan::bench]
    fn t2_window64_1tib(bencher: Bencher) {
        let l = tib();
        let s = l.geometry().blocks(Tier::T2) / 2;
        bencher.bench_local(|| l.summary(Tier::T2, black_box(s), 64).unwrap());
    }

    /// The 16 T2 blocks of one T3 block (a T3→T2 refinement's worth).
    #[divan::bench]
    fn t2_window16_1tib(bencher: Bencher) {
        let l = tib();
        let s = l.geometry().blocks(Tier::T2) / 2;
        bencher.bench_local(|| l.summary(Tier::T2, black_box(s), 16).unwrap());
    }

    /// Every T2 block of the file (524,288).
    #[divan::bench(sample_count = 10)]
    fn t2_all_1tib(bencher: Bencher) {
        let l = tib();
        let n = l.geometry().blocks(Tier::T2);
        bencher.bench_local(|| l.summary(Tier::T2, black_box(0), n).unwrap());
    }
}

/// Whole-file queries the node makes on every completed unit (and `is_complete` on every
/// scheduling pass), on the half-complete file.
#[divan::bench_group(sample_count = 30)]
mod local {
    use super::*;

    fn tiers(size: &str) -> LocalTiers {
        half_complete(if size == "1GiB" { GIB } else { TIB })
    }

    /// `LocalTiers::is_complete` (`Bitfield::is_full` over the T3 bits).
    #[divan::bench(args = ["1GiB", "1TiB"])]
    fn is_complete(bencher: Bencher, size: &str) {
        let l = tiers(size);
        bencher.bench_local(|| black_box(&l).is_complete());
    }

    /// `LocalTiers::units_present` (a sum over the per-T3-block counts).
    #[divan::bench(args = ["1GiB", "1TiB"])]
    fn units_present(bencher: Bencher, size: &str) {
        let l = tiers(size);
        bencher.bench_local(|| black_box(&l).units_present());
    }
}

#[divan::bench_group(sample_count = 10)]
mod store {
    use super::*;

    fn len_of(size: &str) -> u64 {
        if size == "1GiB" {
            GIB
        } else {
            TIB
        }
    }

    /// `StoreState::encode` of a half-complete file (BLAKE3 over the whole store included).
    #[divan::bench(args = ["1GiB", "1TiB"])]
    fn encode(bencher: Bencher, size: &str) {
        let st = StoreState::from_tiers([7; 32], &half_complete(len_of(size)), 1);
        bencher.bench_local(|| black_box(&st).encode());
    }

    /// `StoreState::from_tiers` of a half-complete file: what `Node::persist` builds before
    /// encoding (clones of the T1 bitfield and of the tiers).
    #[divan::bench(args = ["1GiB", "1TiB"])]
    fn from_tiers(bencher: Bencher, size: &str) {
        let l = half_complete(len_of(size));
        bencher.bench_local(|| StoreState::from_tiers([7; 32], black_box(&l), 1));
    }

    /// `StoreState::decode` of the same (checksum, parsing, tier consistency check).
    #[divan::bench(args = ["1GiB", "1TiB"])]
    fn decode(bencher: Bencher, size: &str) {
        let bytes = StoreState::from_tiers([7; 32], &half_complete(len_of(size)), 1).encode();
        bencher.bench_local(|| StoreState::decode(black_box(&bytes)).unwrap());
    }
}

// ---- 3. scheduling decisions -------------------------------------------------------------

/// What the simulated remote peers hold in the 200-peer swarms: odd-numbered peers everything,
/// even-numbered ones every other T2 block of every T3 block (half the units).
fn peer_is_full(i: u64) -> bool {
    i % 2 == 1
}

/// In the crowd swarms: one seed, every other peer half of every block (the case where "rare
/// first" must look past every peer: nobody else has a block whole).
fn crowd_peer_is_full(i: u64) -> bool {
    i == 0
}

/// Every other T2 block, as T1 bits: 4 bytes set, 4 clear.
fn half_pattern(bytes: usize) -> Bytes {
    (0..bytes)
        .map(|i| if (i / 4) % 2 == 0 { 0xff } else { 0 })
        .collect::<Vec<u8>>()
        .into()
}

/// A leecher with `peers` remote peers, all connected, handshaken and told about, driven only
/// through the public inputs. Remote peers answer every request and every refinement at once;
/// the clock never moves (so no timer is due and every request window stays at its minimum).
struct Swarm {
    name: &'static str,
    node: Node,
    now: Timestamp,
    /// Requests the node sent, oldest first.
    outstanding: VecDeque<(PeerId, u64)>,
    refine_answer: Bytes,
    cycles: u64,
    requests: u64,
    refines: u64,
    setup: Duration,
}

impl Swarm {
    fn build(
        name: &'static str,
        file_len: u64,
        hierarchical: bool,
        peers: u64,
        is_full: fn(u64) -> bool,
    ) -> Swarm {
        let t = Instant::now();
        let geo = Geometry::new(file_len).unwrap();
        let mut cfg = Config::new(ROOT, file_len, "leech");
        cfg.hierarchical = hierarchical;
        cfg.trace = false;
        let now = Timestamp::from_micros(1_000_000);
        let mut s = Swarm {
            name,
            node: Node::new(cfg, LocalTiers::new(geo), now),
            now,
            outstanding: VecDeque::new(),
            refine_answer: half_pattern(64),
            cycles: 0,
            requests: 0,
            refines: 0,
            setup: Duration::ZERO,
        };
        let n3 = geo.blocks(Tier::T3) as usize;
        let ones3: Bytes = vec![0xffu8; n3.div_ceil(8)].into();
        assert_eq!(n3 % 8, 0, "benchmark files are whole bytes of blocks");
        let units = geo.units() as usize;
        let full_t1: Bytes = vec![0xffu8; units / 8].into();
        let half_t1 = half_pattern(units / 8);
        for i in 0..peers {
            let peer = PeerId(i + 1);
            s.input(Input::PeerConnected { peer });
            let hs = Message::Handshake {
                info_hash: Bytes::copy_from_slice(&ROOT),
                peer_id: format!("remote-{i}"),
                capabilities: hierarchical.then_some(Capabilities::OURS),
            };
            s.input(Input::message(peer, hs));
            let msg = match (hierarchical, is_full(i)) {
                (true, true) => Message::Summary {
                    tier: 3,
                    start: 0,
                    all: ones3.clone(),
                    partial: Bytes::new(),
                },
                (true, false) => Message::Summary {
                    tier: 3,
                    start: 0,
                    all: Bytes::new(),
                    partial: ones3.clone(),
                },
                (false, true) => Message::Bitfield {
                    bits: full_t1.clone(),
                },
                (false, false) => Message::Bitfield {
                    bits: half_t1.clone(),
                },
            };
            s.input(Input::message(peer, msg));
        }
        assert!(
            !s.outstanding.is_empty(),
            "{name}: the node requested nothing"
        );
        s.setup = t.elapsed();
        s
    }

    /// Feeds one input and executes what the node asks: requests are queued for an answer,
    /// refinements answered at once (every other T2 block), everything else dropped.
    fn input(&mut self, input: Input) {
        self.node.handle_input(self.now, input);
        let mut sent = Sends::default();
        drive(&mut self.node, self.now, &mut sent);
        for (peer, unit) in sent.requests {
            self.requests += 1;
            self.outstanding.push_back((peer, unit));
        }
        for (peer, block, id) in sent.refines {
            self.refines += 1;
            let msg = Message::RefineResponse {
                tier: 1,
                start: block * Tier::T3.units_per_block(),
                bits: self.refine_answer.clone(),
                id,
                reject: None,
            };
            self.input(Input::message(peer, msg));
        }
    }

    /// The oldest request is answered: TRANSFER in (the node issues the peer's next requests),
    /// then the unit is reported verified and written. Returns the unit.
    fn transfer(&mut self) -> u64 {
        let (peer, unit) = self.outstanding.pop_front().expect("a request in flight");
        let msg = Message::Transfer {
            unit,
            data: Bytes::new(),
            proof: None,
        };
        self.input(Input::message(peer, msg));
        unit
    }

    fn complete(&mut self, unit: u64) {
        self.input(Input::UnitComplete { unit });
        self.cycles += 1;
    }

    fn cycle(&mut self) {
        let unit = self.transfer();
        self.complete(unit);
    }

    fn check_progress(&self) {
        let geo = self.node.geometry();
        let present = self.node.local().units_present();
        assert!(
            present + 2 * 512 < geo.units() && !self.node.is_complete(),
            "{}: too close to completion ({present} of {} units): endgame would distort",
            self.name,
            geo.units()
        );
    }
}

/// (name, file length, hierarchical).
const SWARMS: [(&str, u64, bool); 4] = [
    ("hier_1TiB", TIB, true),
    ("flat_1TiB", TIB, false),
    ("hier_1GiB", GIB, true),
    ("flat_1GiB", GIB, false),
];

/// Crowds on a 1 GiB file: (name, peers). Decision cost should not grow with the peer count.
const CROWDS: [(&str, u64); 3] = [("crowd10", 10), ("crowd100", 100), ("crowd1000", 1000)];

static BUILT: Mutex<BTreeMap<&'static str, Swarm>> = Mutex::new(BTreeMap::new());

fn with_swarm<R>(name: &str, f: impl FnOnce(&mut Swarm) -> R) -> R {
    let mut built = BUILT.lock().unwrap();
    let s = if let Some(&(name, peers)) = CROWDS.iter().find(|c| c.0 == name) {
        let peers = if bench_mode() { peers } else { 4 };
        built
            .entry(name)
            .or_insert_with(|| Swarm::build(name, GIB, true, peers, crowd_peer_is_full))
    } else {
        let &(name, len, hier) = SWARMS.iter().find(|s| s.0 == name).expect("known swarm");
        let peers = if bench_mode() { PEERS } else { 4 };
        built
            .entry(name)
            .or_insert_with(|| Swarm::build(name, len, hier, peers, peer_is_full))
    };
    f(s)
}

/// `TIERSWARM_DECISION_CYCLES=<peers>:<cycles>`: builds a crowd of `peers` on 1 GiB, runs
/// `cycles` request/answer cycles and exits: for instruction counts under callgrind, where the
/// difference between two cycle counts is the cost of the cycles alone
/// (`dev/scripts/decision-cost.sh`).
fn callgrind_mode() -> bool {
    let Ok(spec) = std::env::var("TIERSWARM_DECISION_CYCLES") else {
        return false;
    };
    let (peers, cycles) = spec.split_once(':').expect("<peers>:<cycles>");
    let (peers, cycles): (u64, u64) = (peers.parse().unwrap(), cycles.parse().unwrap());
    let mut s = Swarm::build("crowd", GIB, true, peers, crowd_peer_is_full);
    for _ in 0..cycles {
        s.cycle();
    }
    s.check_progress();
    println!(
        "{peers} peers, {cycles} cycles, {} requests, {} refines",
        s.requests, s.refines
    );
    true
}

#[divan::bench_group(sample_count = DECISION_SAMPLES, sample_size = DECISION_SAMPLE_SIZE)]
mod decision {
    use super::*;

    /// One request/answer cycle (TRANSFER in, actions drained, UNIT_COMPLETE in, actions
    /// drained) on a prepared 200-peer swarm; each cycle issues about one request.
    #[divan::bench(args = ["hier_1TiB", "flat_1TiB", "hier_1GiB", "flat_1GiB", "crowd10", "crowd100", "crowd1000"])]
    fn cycle(bencher: Bencher, name: &str) {
        with_swarm(name, |s| {
            let (c0, r0) = (s.cycles, s.requests);
            bencher.bench_local(|| s.cycle());
            s.check_progress();
            if bench_mode() {
                let (c, r) = (s.cycles - c0, s.requests - r0);
                eprintln!(
                    "  [{name}] {c} cycles, {r} requests ({:.3} per cycle)",
                    r as f64 / c.max(1) as f64
                );
            }
        });
    }
}

// ---- 4. memory per peer, and the split table ----------------------------------------------

/// Heap bytes held for single peers of each kind, on a leecher of `file_len` bytes.
fn peer_memory(file_len: u64) -> Vec<(&'static str, usize)> {
    let geo = Geometry::new(file_len).unwrap();
    let n3 = geo.blocks(Tier::T3);
    let mut out = Vec::new();
    // Capable peers: one with everything; one with part of every block, after the node's own
    // refinements (answered) and then HAVEs in 40 distinct blocks (more than the 32-window cap).
    let mut s = Swarm::build("mem", file_len, true, 2, peer_is_full);
    let (partial, full) = (PeerId(1), PeerId(2));
    out.push((
        "capable, has all (T3 summary only)",
        s.node.peer_heap_bytes(full).unwrap(),
    ));
    out.push((
        "capable, partial, after refinements",
        s.node.peer_heap_bytes(partial).unwrap(),
    ));
    for k in 0..40.min(n3) {
        let b = (n3 - 1 - k * (n3 / 40).max(1)).min(n3 - 1);
        let unit = b * 512 + 511;
        s.input(Input::message(partial, Message::Have { unit }));
    }
    out.push((
        "capable, partial, + HAVEs in 40 blocks (window cap)",
        s.node.peer_heap_bytes(partial).unwrap(),
    ));
    out.push((
        "shared: holder counts of the whole node (not per peer)",
        s.node.holder_counts_heap_bytes(),
    ));
    let f = Swarm::build("mem-flat", file_len, false, 2, peer_is_full);
    out.push((
        "flat (legacy), full T1 bitfield",
        f.node.peer_heap_bytes(PeerId(2)).unwrap(),
    ));
    out
}

fn print_memory() {
    println!("\n== per-peer memory (Node::peer_heap_bytes) ==");
    println!("{:<56} {:>12} {:>12}", "peer", "1 GiB", "1 TiB");
    let (g, t) = (peer_memory(GIB), peer_memory(TIB));
    for ((name, a), (_, b)) in g.iter().zip(&t) {
        println!("{name:<56} {a:>12} {b:>12}");
    }
    println!("\n== per-peer memory inside the 200-peer decision swarms (after setup + split) ==");
    for (name, _, _) in SWARMS {
        with_swarm(name, |s| {
            let mut by: BTreeMap<bool, (usize, usize, usize)> = BTreeMap::new();
            for (id, _) in s.node.peers() {
                let bytes = s.node.peer_heap_bytes(*id).unwrap();
                let e = by
                    .entry(peer_is_full(id.0 - 1))
                    .or_insert((0, 0, usize::MAX));
                e.0 += 1;
                e.1 = e.1.max(bytes);
                e.2 = e.2.min(bytes);
            }
            for (full, (n, max, min)) in by {
                let kind = if full { "full" } else { "partial" };
                println!("{name:<10} {kind:<8} peers {n:>4}  min {min:>9}  max {max:>9}");
            }
        });
    }
}

/// Times `SPLIT_CYCLES` cycles of `s`, each split into its two inputs; prints one row: the
/// median of each half (robust to preemption by other processes) and the mean cycle (which
/// includes the periodic persist every 256 units).
fn split_row(s: &mut Swarm, label: &str) {
    // Warm up (caches, the first blocks) before timing.
    for _ in 0..200 {
        s.cycle();
    }
    let (r0, f0) = (s.requests, s.refines);
    let (mut tt, mut tc) = (Vec::new(), Vec::new());
    for _ in 0..SPLIT_CYCLES {
        let t = Instant::now();
        let unit = s.transfer();
        let m = Instant::now();
        s.complete(unit);
        tc.push(m.elapsed().as_nanos() as u64);
        tt.push((m - t).as_nanos() as u64);
    }
    s.check_progress();
    let n = SPLIT_CYCLES as f64;
    let mean = |v: &[u64]| v.iter().sum::<u64>() as f64 / v.len() as f64;
    let median = |v: &mut Vec<u64>| {
        v.sort_unstable();
        v[v.len() / 2]
    };
    let cycle_mean = mean(&tt) + mean(&tc);
    println!(
        "{:<10} {:<11} {:>7.1} {:>10} {:>10} {:>10.0} {:>10.0} {:>9.3} {:>7}",
        s.name,
        label,
        s.setup.as_secs_f64(),
        median(&mut tt),
        median(&mut tc),
        mean(&tc),
        cycle_mean,
        (s.requests - r0) as f64 / n,
        s.refines - f0,
    );
}

fn print_split() {
    println!("\n== decision cycle split ({SPLIT_CYCLES} cycles per row, Instant-timed, ns) ==");
    println!("transfer = TRANSFER in + drain (the scheduling decision happens here);");
    println!("complete = UNIT_COMPLETE in + drain (announce, progress, persist every 256 units).");
    println!("`no persist` = the same swarm after Input::Reconfigure with persist_every = MAX.");
    println!(
        "{:<10} {:<11} {:>7} {:>10} {:>10} {:>10} {:>10} {:>9} {:>7}",
        "swarm",
        "limits",
        "setup s",
        "xfer med",
        "compl med",
        "compl mean",
        "cycle mean",
        "req/cycle",
        "refines"
    );
    for (name, _, _) in SWARMS {
        with_swarm(name, |s| {
            split_row(s, "default");
            let defaults = s.node.config().limits.clone();
            let mut quiet = defaults.clone();
            quiet.persist_every = u64::MAX;
            s.input(Input::Reconfigure(Box::new(quiet)));
            split_row(s, "no persist");
            s.input(Input::Reconfigure(Box::new(defaults)));
        });
    }
}

fn main() {
    if callgrind_mode() {
        return;
    }
    // The tables run on a full, unfiltered `cargo bench`; `-- <filter>` runs divan only.
    let filtered = std::env::args().skip(1).any(|a| !a.starts_with('-'));
    if bench_mode() && !filtered {
        print_split();
        print_memory();
        println!();
    }
    divan::main();
}
