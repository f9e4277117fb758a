//! Mixed swarms, where capable and legacy peers meet, complete under `--strategy auto`, and each
//! side speaks only what the other understands.

use std::path::Path;

use tierswarm_sim::engine;
use tierswarm_sim::report::{ExitReason, Report};
use tierswarm_sim::{Protocol, RunOptions, Scenario, Strategy};

fn run(name: &str) -> (Scenario, Report) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(name);
    let scenario = Scenario::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    let report = engine::run(&scenario, &RunOptions::default()).unwrap();
    (scenario, report)
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

fn count(r: &Report, kind: &str) -> u64 {
    r.messages.get(kind).copied().unwrap_or(0)
}

#[test]
fn legacy_seeder_with_capable_leechers_completes() {
    let (s, r) = run("legacy-seeder.toml");
    let peers = s.peers(Strategy::Auto);
    assert_eq!(peers[0].protocol, Protocol::Legacy);
    assert!(peers[1..]
        .iter()
        .all(|p| p.protocol == Protocol::Hierarchical));
    assert_completes("legacy-seeder", &r);
    // The seeder speaks only the flat protocol, so it sends full bitfields (one per connection)
    // and the capable leechers answer it with bitfields and HAVEs too; among themselves they
    // exchange summaries.
    assert!(
        count(&r, "bitfield") > 0 && count(&r, "have") > 0,
        "{:?}",
        r.messages
    );
    assert!(count(&r, "summary") > 0, "{:?}", r.messages);
}

#[test]
fn capable_seeder_with_a_legacy_crowd_completes() {
    let (s, r) = run("capable-seeder-legacy-crowd.toml");
    let peers = s.peers(Strategy::Auto);
    assert_eq!(peers[0].protocol, Protocol::Hierarchical);
    assert!(peers[1..].iter().all(|p| p.protocol == Protocol::Legacy));
    assert_completes("capable-seeder-legacy-crowd", &r);
    // No peer is capable on both ends of any connection: nothing hierarchical is on the wire.
    for kind in ["summary", "refine_request", "refine_response"] {
        assert_eq!(count(&r, kind), 0, "{kind}: {:?}", r.messages);
    }
    assert_eq!(r.refine_requests, 0);
    assert!(
        count(&r, "bitfield") > 0 && count(&r, "have") > 0,
        "{:?}",
        r.messages
    );
}
