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
    // The seeder's level, as its trace records it: every change is traced (even while telemetry
    // is shed), so this is the level itself.
    let levels = |s: &Swarm| -> Vec<String> {
        // Log lines are "TIME NODE RECORD".
        s.log
            .iter()
            .filter_map(|l| {
                let (_, rest) = l.trim_start().split_once(' ')?;
                let (node, record) = rest.split_once(' ')?;
                (node == seed.to_string() && record.contains(r#""ev":"pressure""#))
                    .then(|| serde_json::from_str::<serde_json::Value>(record).unwrap())
            })
            .map(|v| v["level"].as_str().unwrap().to_owned())
            .collect()
    };
    let pressure = |s: &mut Swarm, load: f32| {
        let snapshot = PressureSnapshot {
            network: load,
            ..Default::default()
        };
        input(s, seed, Input::Pressure(snapshot));
    };

    pressure(&mut s, 0.99);
    s.connect(seed, leech);
    s.run_until(s.now.add(ms(500)));
    assert_eq!(levels(&s), ["reject"]);
    let refused = s.node(seed).stats().rejects_sent;
    assert!(refused > 0, "requests are refused, not ignored");
    assert_eq!(s.node(seed).stats().units_served, 0, "nothing served");

    // Hysteresis: leaving `reject` (entered at 0.95) needs the load below 0.85. At 0.9, which
    // is the `batch` band on the way up, the level stays `reject` and requests are still
    // refused...
    pressure(&mut s, 0.9);
    s.run_until(s.now.add(ms(300)));
    assert_eq!(levels(&s), ["reject"], "0.9 does not leave reject");
    let st = s.node(seed).stats();
    assert!(st.rejects_sent > refused, "still refusing at 0.9");
    assert_eq!(st.units_served, 0);
    // ...just below 0.85 it drops one level, to `batch`, and serves again...
    pressure(&mut s, 0.84);
    s.run_until(s.now.add(ms(300)));
    assert_eq!(levels(&s), ["reject", "batch"]);
    assert!(s.node(seed).stats().units_served > 0, "serving in batch");
    // ...and with no load at all it is back to normal, and the leecher finishes.
    pressure(&mut s, 0.0);
    assert!(
        s.run_until_complete(leech, Duration::from_secs(30)),
        "the leecher finishes once the seeder recovers"
    );
    assert_eq!(levels(&s), ["reject", "batch", "none"]);
}
