//! A seed sweep over the harness: one seeder and three leechers (two capable, one legacy) in a
//! full mesh, with a share of the messages lost at random. Every leecher must finish within a
//! bounded virtual time, for every seed; failing seeds are printed.

use std::time::Duration;
use tierswarm_core::tiers::T1_SIZE;
use tierswarm_core::wire::Message;
use tierswarm_tests::{config, Fate, Swarm};

/// Two T3 blocks (553 units): leechers trade partial blocks, so refinement is exercised.
const LEN: u64 = (512 + 40) * T1_SIZE + 1000;
const SEEDS: u64 = 50;
const LIMIT: Duration = Duration::from_secs(600);

/// A tiny deterministic generator (xorshift64*).
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// Runs one seed with `loss` per mille of the messages lost; returns the leechers that did not
/// finish, with their progress.
fn run(seed: u64, loss: u64) -> Vec<String> {
    let mut s = Swarm::new(Duration::from_millis(10));
    let cfg = |name: &str, hierarchical: bool, i: u64| {
        let mut c = config(name, LEN, hierarchical);
        c.trace = false;
        c.seed = seed * 16 + i;
        c
    };
    let seeder = s.add(cfg("seed", true, 0), None);
    let leechers = [
        s.add(cfg("leech-a", true, 1), Some(&[])),
        s.add(cfg("leech-b", true, 2), Some(&[])),
        s.add(cfg("leech-legacy", false, 3), Some(&[])),
    ];
    // Handshakes and flat bitfields are never lost (a connection that loses them is a broken
    // connection, not a lossy one); everything else is, at random.
    let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    s.hook(move |_, _, m| match m {
        Message::Handshake { .. } | Message::Bitfield { .. } => Fate::Deliver,
        _ if next(&mut rng) % 1000 < loss => Fate::Drop,
        _ => Fate::Deliver,
    });
    for (k, &a) in leechers.iter().enumerate() {
        s.connect(seeder, a);
        for &b in &leechers[k + 1..] {
            s.connect(a, b);
        }
    }
    let end = s.now.add(LIMIT);
    while s.now < end && !leechers.iter().all(|&l| s.node(l).is_complete()) {
        let step = s.now.add(Duration::from_millis(500));
        s.run_until(step.min(end));
    }
    leechers
        .iter()
        .filter(|&&l| !s.node(l).is_complete())
        .map(|&l| {
            let n = s.node(l);
            format!(
                "seed {seed}: node {l} has {}/{} units after {:?}; stats {}",
                n.local().units_present(),
                n.geometry().units(),
                LIMIT,
                serde_json::to_string(n.stats()).unwrap_or_default()
            )
        })
        .collect()
}

fn sweep(loss: u64) {
    let failures: Vec<String> = (0..SEEDS).flat_map(|seed| run(seed, loss)).collect();
    for f in &failures {
        eprintln!("{f}");
    }
    assert!(
        failures.is_empty(),
        "{} leechers did not finish",
        failures.len()
    );
}

#[test]
fn every_leecher_finishes_under_1_percent_loss() {
    sweep(10);
}

#[test]
fn every_leecher_finishes_under_5_percent_loss() {
    sweep(50);
}

#[test]
fn the_sweep_is_deterministic() {
    // The same seed twice gives the same outcome, message for message.
    let trace = |seed: u64| {
        let mut s = Swarm::new(Duration::from_millis(10));
        let a = s.add(config("seed", LEN, true), None);
        let b = s.add(config("leech", LEN, true), Some(&[]));
        let mut rng = seed | 1;
        s.hook(move |_, _, m| match m {
            Message::Handshake { .. } => Fate::Deliver,
            _ if next(&mut rng) % 1000 < 50 => Fate::Drop,
            _ => Fate::Deliver,
        });
        s.connect(a, b);
        s.run_until_complete(b, Duration::from_secs(120));
        s.log_text()
    };
    assert_eq!(trace(7), trace(7));
}
