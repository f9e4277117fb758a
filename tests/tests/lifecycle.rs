//! Drain and backpressure, driven through the public inputs of real nodes on the harness.

use std::time::Duration;
use tierswarm_core::node::{Input, PressureSnapshot};
use tierswarm_core::store::StoreState;
use tierswarm_core::tiers::T1_SIZE;
use tierswarm_tests::{config, Swarm};

/// 553 units: two T3 blocks.
const FILE: u64 = (512 + 40) * T1_SIZE + 1000;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn input(s: &mut Swarm, i: usize, input: Input) {
    let now = s.now;
    s.nodes[i]
        .as_mut()
        .expect("node is up")
        .handle_input(now, input);
}

#[test]
fn drain_stops_requesting_settles_and_persists() {
    let mut s = Swarm::new(ms(10));
    s.serve_time = ms(5);
    let seed = s.add(config("seed", FILE, true), None);
    let leech = s.add(config("leech", FILE, true), Some(&[]));
    s.connect(seed, leech);
    s.run_until(s.now.add(ms(300)));
    let before = s.count(leech, seed, "request");
    assert!(before > 0 && !s.node(leech).is_complete());

    input(&mut s, leech, Input::Drain);
    let drained_at = s.now;
    s.run_until(s.now.add(Duration::from_secs(5)));

    let late_requests = s
        .wire
        .iter()
        .filter(|(t, f, _, m)| {
            *t > drained_at
                && *f == leech
                && matches!(m, tierswarm_core::wire::Message::Request { .. })
        })
        .count();
    assert_eq!(late_requests, 0, "no request after the drain");
    let l = s.node(leech);
    assert!(!l.is_complete(), "the drain stopped the download");
    assert_eq!(
        l.stats().in_flight_requests,
        0,
        "everything in flight settled"
    );
    assert!(s.log.iter().any(|line| line.contains("event Drained")));
    // The last persist holds every unit the node has.
    let store = s.stores[leech].clone().expect("persisted on drain");
    let (state, _) = StoreState::decode(&store).expect("valid store");
    assert_eq!(state.tiers.units_present(), l.local().units_present());
}

#[test]
fn backpressure_reject_level_refuses_then_recovers() {
    let mut s = Swarm::new(ms(10));
    s.serve_time = ms(2);
    let seed = s.add(config("seed", FILE, true), None);
    let leech = s.add(config("leech", FILE, true), Some(&[]));
    let overloaded = PressureSnapshot {
        network: 0.99,
        ..Default::default()
    };
    input(&mut s, seed, Input::Pressure(overloaded));
    s.connect(seed, leech);
    s.run_until(s.now.add(ms(500)));
    let seed_stats = s.node(seed).stats().clone();
    assert!(
        seed_stats.rejects_sent > 0,
        "requests are refused, not ignored"
    );
    assert_eq!(
        seed_stats.units_served, 0,
        "nothing served while overloaded"
    );
    assert!(s.log.iter().any(|l| l.contains(r#""level":"reject""#)));

    // Hysteresis: just under the threshold is not enough to leave the level...
    let almost = PressureSnapshot {
        network: 0.9,
        ..Default::default()
    };
    input(&mut s, seed, Input::Pressure(almost));
    s.run_until(s.now.add(ms(300)));
    assert_eq!(s.node(seed).stats().units_served, 0);
    // ...well below it is.
    input(&mut s, seed, Input::Pressure(PressureSnapshot::default()));
    assert!(
        s.run_until_complete(leech, Duration::from_secs(30)),
        "the leecher finishes once the seeder recovers"
    );
    assert!(s.log.iter().any(|l| l.contains(r#""level":"none""#)));
}
