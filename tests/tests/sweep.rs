//! A seed sweep over the harness: one seeder and three leechers (two capable, one legacy) in a
//! full mesh, with a share of the messages lost at random. Every leecher must finish within a
//! bounded virtual time, for every seed; failing seeds are printed.
//!
//! The default suite sweeps seeds 0..50; `TIERSWARM_SWEEP_SEEDS=2000 cargo test -p
//! tierswarm-tests --test sweep` sweeps more. Seeds such a wider sweep found failing are pinned
//! at the end, one test each.

use std::time::Duration;
use tierswarm_core::tiers::T1_SIZE;
use tierswarm_core::time::Timestamp;
use tierswarm_core::wire::Message;
use tierswarm_tests::{config, Fate, Swarm};

/// Two T3 blocks (553 units): leechers trade partial blocks, so refinement is exercised.
const LEN: u64 = (512 + 40) * T1_SIZE + 1000;
/// Seeds swept by default (`TIERSWARM_SWEEP_SEEDS` overrides).
const SEEDS: u64 = 50;
const LIMIT: Duration = Duration::from_secs(600);

/// A tiny deterministic generator (xorshift64*).
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// The swarm of one seed with `loss` per mille of the messages lost, connected and ready to run;
/// returns it with its leechers.
fn swarm(seed: u64, loss: u64) -> (Swarm, [usize; 3]) {
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
    (s, leechers)
}

/// Runs `s` until every leecher is complete or [`LIMIT`] passes; returns the leechers that did
/// not finish, with their progress.
fn drive(s: &mut Swarm, leechers: [usize; 3], seed: u64) -> Vec<String> {
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

/// Runs one seed of the sweep; returns the leechers that did not finish.
fn run(seed: u64, loss: u64) -> Vec<String> {
    let (mut s, leechers) = swarm(seed, loss);
    drive(&mut s, leechers, seed)
}

fn sweep(loss: u64) {
    let seeds = match std::env::var("TIERSWARM_SWEEP_SEEDS") {
        Ok(n) => n.parse().expect("TIERSWARM_SWEEP_SEEDS: a number of seeds"),
        Err(_) => SEEDS,
    };
    let failures: Vec<String> = (0..seeds).flat_map(|seed| run(seed, loss)).collect();
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
    // One seed of the 5 % sweep, built and driven by the sweep's own code, twice: the same
    // messages on the wire (time, ends, content), the same losses and events in the log, the
    // same outcome and statistics.
    struct Run {
        failures: Vec<String>,
        stats: Vec<String>,
        wire: Vec<(Timestamp, usize, usize, Message)>,
        log: Vec<String>,
    }
    let once = |seed: u64| {
        let (mut s, leechers) = swarm(seed, 50);
        let failures = drive(&mut s, leechers, seed);
        let stats = leechers
            .iter()
            .map(|&l| serde_json::to_string(s.node(l).stats()).unwrap())
            .collect();
        Run {
            failures,
            stats,
            wire: s.wire,
            log: s.log,
        }
    };
    let a = once(7);
    assert!(a.failures.is_empty(), "{:?}", a.failures);
    let dropped = a.log.iter().filter(|l| l.contains(" dropped ")).count();
    assert!(dropped > 10, "the seed's losses were exercised: {dropped}");
    let b = once(7);
    assert_eq!(b.failures, a.failures);
    assert_eq!(b.stats, a.stats);
    assert_eq!(b.wire.len(), a.wire.len());
    for (k, (x, y)) in a.wire.iter().zip(&b.wire).enumerate() {
        assert_eq!(x, y, "message {k} differs");
    }
    assert_eq!(b.log, a.log);
    // And the seed matters: another seed loses other messages.
    assert_ne!(once(8).wire, a.wire);
}

/// Seeds of the 5 % sweep that failed (`TIERSWARM_SWEEP_SEEDS=2000`: these ten of 2,000, at
/// 738fa32), each a plain regression test. Every one stalled a unit or two short with the
/// seeder dropped as unresponsive: a burst of losses expired several requests to the seeder at
/// once and each counted as a timeout in a row, so that much later one lost request — the
/// node's only one to that peer, re-armed for a backed-off 32 s — made the seeder look dead.
/// Fixed in the node: a burst of timeouts is one loss event, and any answer resets the count
/// (`Peer::note_loss`); all 2,000 seeds pass at 1 % and 5 %.
macro_rules! pinned_5_percent {
    ($($name:ident: $seed:literal,)*) => {$(
        #[test]
        fn $name() {
            let failures = run($seed, 50);
            assert!(failures.is_empty(), "{failures:#?}");
        }
    )*};
}

pinned_5_percent! {
    seed_106_finishes_under_5_percent_loss: 106,
    seed_824_finishes_under_5_percent_loss: 824,
    seed_888_finishes_under_5_percent_loss: 888,
    seed_990_finishes_under_5_percent_loss: 990,
    seed_1351_finishes_under_5_percent_loss: 1351,
    seed_1408_finishes_under_5_percent_loss: 1408,
    seed_1463_finishes_under_5_percent_loss: 1463,
    seed_1561_finishes_under_5_percent_loss: 1561,
    seed_1692_finishes_under_5_percent_loss: 1692,
    seed_1735_finishes_under_5_percent_loss: 1735,
}
