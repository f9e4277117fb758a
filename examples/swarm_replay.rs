//! A deterministic replay of a swarm, from code: the simulator as a library.
//!
//! The scenario is built in Rust ([`ScenarioBuilder`]), run by the simulator's engine with a
//! seed, and the report is checked: every leecher finished, the makespan is within reach of
//! the lower bound, and a second run with the same seed is the same run, message for message.
//!
//! ```text
//! cargo run --release --example swarm_replay
//! ```
//!
//! The same scenario as a file: [`ScenarioBuilder::to_toml`] prints it, and
//! `tierswarm-sim run FILE --seed 7` runs it.

use std::time::Duration;

use tierswarm_sim::builder::{GroupBuilder, ScenarioBuilder};
use tierswarm_sim::report::{ExitReason, Report};
use tierswarm_sim::{engine, RunOptions, Scenario};

const MIB: u64 = 1024 * 1024;
/// One Mbit/s, in the bytes per second the builder takes.
const MBIT: u64 = 1_000_000 / 8;
const SEED: u64 = 7;

/// A small flash crowd: one seeder, twenty leechers joining over ten seconds (four of them
/// flat-only), lossy links, and a tenth of the crowd crashing and restarting mid-transfer.
fn flash_crowd() -> ScenarioBuilder {
    let secs = Duration::from_secs;
    let ms = Duration::from_millis;
    ScenarioBuilder::new("example-flash-crowd", 32 * MIB)
        .seed(SEED)
        .time_limit(secs(600))
        .group(
            GroupBuilder::seeders("seed", 1)
                .rates(200 * MBIT, 1000 * MBIT)
                .latency(ms(20)),
        )
        .group(
            GroupBuilder::leechers("crowd", 16)
                .rates(50 * MBIT, 200 * MBIT)
                .latency(ms(40))
                .join_spread(secs(0), secs(10)),
        )
        .group(
            GroupBuilder::leechers("old-clients", 4)
                .rates(20 * MBIT, 100 * MBIT)
                .latency(ms(60))
                .legacy(),
        )
        .loss(0.002)
        .crash("crowd", 0.1, secs(3), secs(2))
}

/// Runs `scenario` with `seed` and no output files.
fn run(scenario: &Scenario, seed: u64) -> Report {
    let opts = RunOptions {
        seed: Some(seed),
        ..RunOptions::default()
    };
    // Only writing an output file can fail, and this run writes none.
    engine::run(scenario, &opts).expect("a run without output files cannot fail")
}

fn main() {
    let scenario = flash_crowd()
        .build()
        .expect("the scenario is valid (an error would name the key, as for a file)");
    let report = run(&scenario, SEED);
    print!("{}", report.summary());

    // Completion: every leecher finished, the simulator's own checks held.
    assert_eq!(
        report.exit_reason,
        ExitReason::Complete,
        "{}",
        report.summary()
    );
    assert!(report.all_complete);
    assert_eq!(report.completed, 20);
    assert!(report
        .leechers_detail
        .iter()
        .all(|l| l.complete_s.is_some()));

    // Efficiency: the makespan can never beat the lower bound, and should not be far from it.
    // (The floor is loose on purpose: it catches a broken scheduler, not a slower one.)
    assert!(report.makespan_s >= report.bound_s);
    assert!(
        report.efficiency > 0.5 && report.efficiency <= 1.0,
        "efficiency {} (bound {:.2}s, makespan {:.2}s)",
        report.efficiency,
        report.bound_s,
        report.makespan_s
    );

    // Determinism: the same scenario and seed is the same run — same messages at the same
    // simulated times (`trace_hash`), so the same report apart from the wall-clock time.
    let again = run(&scenario, SEED);
    assert_eq!(again.trace_hash, report.trace_hash);
    assert_eq!(
        Report {
            wall_s: 0.0,
            ..again
        },
        Report {
            wall_s: 0.0,
            ..report.clone()
        }
    );
    // ...and the seed matters: another one loses other messages and crashes other peers.
    let other = run(&scenario, SEED + 1);
    assert_ne!(other.trace_hash, report.trace_hash);

    println!(
        "ok: seed {SEED} replays exactly (trace {}…), efficiency {:.2}",
        &report.trace_hash[..16],
        report.efficiency
    );
}

#[test]
fn replays_a_swarm_deterministically() {
    main();
}
