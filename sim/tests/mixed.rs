//! Mixed swarms, where capable and legacy peers meet, complete under `--strategy auto`, and each
//! side speaks only what the other understands — checked per connection from the trace, not
//! from swarm-wide message counts.
//!
//! What the trace shows, per ordered pair (node, peer):
//! - `peer_ready.capable`: the node's handshake decision, which is also what it sent right after
//!   it (a T3 summary when capable, a flat bitfield when not);
//! - `refine` / `refined`: refine requests sent to the peer, refine responses from it;
//! - `pick_block` and `request.path`: whether units were picked coarse-first from the peer's
//!   summary (`block`) or from its flat bitfield (`flat`);
//! - `peer_gone.reason`: a node that receives a hierarchical message from a peer it treats as
//!   legacy (or a bitfield from a capable one) disconnects it with a `protocol:` reason, so a
//!   summary or refinement sent to or by a legacy peer shows up here even though summaries
//!   themselves are not traced.

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tierswarm_sim::engine;
use tierswarm_sim::report::{ExitReason, Report};
use tierswarm_sim::{Protocol, RunOptions, Scenario, Strategy};

/// What the trace says about one ordered pair (node, peer).
#[derive(Debug, Default)]
struct Pair {
    /// `capable` of each `peer_ready` (one per connection).
    ready: BTreeSet<bool>,
    refines: u64,
    refined: u64,
    picks: u64,
    /// Request decisions by path (`block`, `flat`, `endgame`).
    requests: BTreeMap<String, u64>,
}

/// The per-pair view of a run's trace, and every disconnection with its reason.
#[derive(Debug, Default)]
struct Wire {
    pairs: BTreeMap<(usize, usize), Pair>,
    gone: Vec<(usize, usize, String)>,
}

/// Trace records that say something about what a pair exchanged.
const PAIR_EVENTS: [&str; 6] = [
    "\"ev\":\"peer_ready\"",
    "\"ev\":\"peer_gone\"",
    "\"ev\":\"refine\"",
    "\"ev\":\"refined\"",
    "\"ev\":\"pick_block\"",
    "\"ev\":\"request\"",
];

fn read_wire(trace: &Path) -> Wire {
    let mut w = Wire::default();
    let file = std::fs::File::open(trace).unwrap();
    for line in std::io::BufReader::new(file).lines() {
        let line = line.unwrap();
        // Parse only the records of interest: the trace is mostly per-unit records.
        if !PAIR_EVENTS.iter().any(|ev| line.contains(ev)) {
            continue;
        }
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let node = v["node"].as_u64().unwrap() as usize;
        let peer = v["peer"].as_u64().unwrap() as usize;
        let p = w.pairs.entry((node, peer)).or_default();
        match v["ev"].as_str().unwrap() {
            "peer_ready" => {
                p.ready.insert(v["capable"].as_bool().unwrap());
            }
            "peer_gone" => w
                .gone
                .push((node, peer, v["reason"].as_str().unwrap().to_owned())),
            "refine" => p.refines += 1,
            "refined" => p.refined += 1,
            "pick_block" => p.picks += 1,
            "request" => {
                *p.requests
                    .entry(v["path"].as_str().unwrap().to_owned())
                    .or_default() += 1
            }
            other => panic!("unexpected record {other}"),
        }
    }
    w
}

/// A scratch trace file for one test, removed when dropped.
struct TraceFile(PathBuf);

impl Drop for TraceFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs shipped scenario `name` under `auto` with a trace; returns the scenario, its report and
/// the per-pair view of the trace.
fn run(name: &str) -> (Scenario, Report, Wire) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(name);
    let scenario = Scenario::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    let trace = TraceFile(std::env::temp_dir().join(format!(
        "tierswarm-mixed-{}-{name}.jsonl",
        std::process::id()
    )));
    let opts = RunOptions {
        trace: Some(trace.0.clone()),
        ..RunOptions::default()
    };
    let report = engine::run(&scenario, &opts).unwrap();
    let wire = read_wire(&trace.0);
    (scenario, report, wire)
}

fn assert_completes(name: &str, r: &Report) {
    assert_eq!(r.strategy, Strategy::Auto);
    assert_eq!(
        r.exit_reason,
        ExitReason::Complete,
        "{name}:\n{}",
        r.summary()
    );
    assert!(
        r.all_complete && r.completed == r.leechers,
        "{}",
        r.summary()
    );
    assert_eq!(r.exit_code(), 0);
    assert!(r.makespan_s >= r.bound_fluid_s, "{}", r.summary());
    assert!(r.bound_fluid_s >= r.bound_s, "{}", r.summary());
}

/// Totals over the pairs of one kind (both ends capable, or not).
#[derive(Debug, Default)]
struct Totals {
    pairs: usize,
    refines: u64,
    picks: u64,
    block: u64,
    flat: u64,
}

/// Checks every pair against the two ends' protocols; returns totals for capable pairs and for
/// pairs with a legacy end.
fn check_pairs(name: &str, s: &Scenario, w: &Wire) -> (Totals, Totals) {
    let capable: Vec<bool> = s
        .peers(Strategy::Auto)
        .iter()
        .map(|p| p.protocol == Protocol::Hierarchical)
        .collect();
    let protocol_errors: Vec<_> = w
        .gone
        .iter()
        .filter(|(.., reason)| reason.starts_with("protocol"))
        .collect();
    assert!(
        protocol_errors.is_empty(),
        "{name}: connections closed for speaking the wrong protocol: {protocol_errors:?}"
    );
    let (mut both, mut mixed) = (Totals::default(), Totals::default());
    for (&(node, peer), p) in &w.pairs {
        let expected = capable[node] && capable[peer];
        let at = format!("{name}: node {node} about peer {peer}: {p:?}");
        assert!(
            p.ready.iter().all(|&c| c == expected),
            "{at}: handshake decided capable={:?}, expected {expected}",
            p.ready
        );
        let count = |path: &str| p.requests.get(path).copied().unwrap_or(0);
        let t = if expected { &mut both } else { &mut mixed };
        t.pairs += 1;
        t.refines += p.refines;
        t.picks += p.picks;
        t.block += count("block");
        t.flat += count("flat");
        if expected {
            assert_eq!(
                count("flat"),
                0,
                "{at}: flat requests between capable peers"
            );
        } else {
            assert_eq!(
                (p.refines, p.refined, p.picks, count("block")),
                (0, 0, 0, 0),
                "{at}: hierarchical traffic with a legacy end"
            );
        }
    }
    (both, mixed)
}

#[test]
fn legacy_seeder_with_capable_leechers_completes() {
    let (s, r, w) = run("legacy-seeder.toml");
    let peers = s.peers(Strategy::Auto);
    assert_eq!(peers[0].protocol, Protocol::Legacy);
    assert!(peers[1..]
        .iter()
        .all(|p| p.protocol == Protocol::Hierarchical));
    assert_completes("legacy-seeder", &r);
    let (both, mixed) = check_pairs("legacy-seeder", &s, &w);
    // The capable leechers fetch from the legacy seeder over the flat protocol, and from each
    // other coarse-first, refining partial blocks.
    assert!(mixed.flat > 0, "{mixed:?}");
    assert!(
        both.refines > 0 && both.picks > 0 && both.block > 0,
        "{both:?}"
    );
}

#[test]
fn capable_seeder_with_a_legacy_crowd_completes() {
    let (s, r, w) = run("capable-seeder-legacy-crowd.toml");
    let peers = s.peers(Strategy::Auto);
    assert_eq!(peers[0].protocol, Protocol::Hierarchical);
    assert!(peers[1..].iter().all(|p| p.protocol == Protocol::Legacy));
    assert_completes("capable-seeder-legacy-crowd", &r);
    let (both, mixed) = check_pairs("capable-seeder-legacy-crowd", &s, &w);
    // No connection has two capable ends.
    assert_eq!(both.pairs, 0, "{both:?}");
    assert!(mixed.pairs > 0 && mixed.flat > 0, "{mixed:?}");
    // So nothing hierarchical is on the wire at all.
    for kind in ["summary", "refine_request", "refine_response"] {
        assert_eq!(r.messages.get(kind), None, "{kind}: {:?}", r.messages);
    }
}

#[test]
fn half_legacy_crowd_completes() {
    // 20 capable and 20 legacy leechers around a capable seeder: every kind of pair at once.
    let (s, r, w) = run("mixed-legacy.toml");
    assert_completes("mixed-legacy", &r);
    let (both, mixed) = check_pairs("mixed-legacy", &s, &w);
    assert!(mixed.pairs > 0 && mixed.flat > 0, "{mixed:?}");
    assert!(
        both.pairs > 0 && both.refines > 0 && both.picks > 0 && both.block > 0,
        "{both:?}"
    );
}
