//! Drain and backpressure, driven through the public inputs of real nodes on the harness.

use std::time::Duration;
use tierswarm_core::node::{DisconnectKind, Input, Limits, PressureSnapshot};
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

/// Feeds `to` a REQUEST for `unit` from `from`, as if `from` had sent it.
fn request(s: &mut Swarm, to: usize, from: usize, unit: u64) {
    let frame = tierswarm_core::wire::Frame {
        info_hash: bytes::Bytes::new(),
        msg: tierswarm_core::wire::Message::Request { unit, held: 0 },
    };
    let peer = tierswarm_core::PeerId(from as u64);
    input(s, to, Input::PeerFrame { peer, frame });
}

fn floods(s: &Swarm, i: usize) -> u64 {
    let d = &s.node(i).stats().disconnects;
    d.get(&DisconnectKind::RequestFlood).copied().unwrap_or(0)
}

#[test]
fn a_request_flood_costs_the_flooder_its_connection_and_nobody_else_anything() {
    let mut s = Swarm::new(ms(10));
    s.serve_time = ms(2);
    let seed = s.add(config("seed", FILE, true), None);
    let honest = s.add(config("honest", FILE, true), Some(&[]));
    let flooder = s.add(config("flooder", FILE, true), Some(&[]));
    let cap = Limits::default().max_serve_queue as u64;
    s.connect(seed, honest);
    s.connect(seed, flooder);
    s.run_until(s.now.add(ms(200)));
    assert!(
        s.count(flooder, seed, "request") > 0,
        "the flooder's node asks too"
    );
    // A full queue's worth beyond its own window: refused `busy`, nothing worse yet.
    for unit in 0..cap {
        request(&mut s, seed, flooder, unit);
    }
    assert_eq!(floods(&s, seed), 0, "one full queue is only refused");
    // Another full queue while the first is still waiting: dropped.
    for unit in 0..cap {
        request(&mut s, seed, flooder, unit);
    }
    assert_eq!(
        floods(&s, seed),
        1,
        "{:?}",
        s.node(seed).stats().disconnects
    );
    // The honest leecher's own requests, as greedy as its window allows, never come close.
    assert!(s.run_until_complete(honest, Duration::from_secs(30)));
    assert_eq!(
        floods(&s, seed),
        1,
        "the honest leecher kept its connection"
    );
    assert!(s.log.iter().any(|l| l.contains("request flood")), "traced");
}

#[test]
fn requests_for_units_never_advertised_cost_the_connection() {
    let mut s = Swarm::new(ms(10));
    let half: Vec<u64> = (0..276).collect();
    let partial = s.add(config("partial", FILE, true), Some(&half));
    let prober = s.add(config("prober", FILE, true), Some(&[]));
    let cap = Limits::default().max_serve_queue as u64;
    s.connect(partial, prober);
    s.run_until(s.now.add(ms(100)));
    // Units it never said it holds: each is refused `not available`, and `cap` of them on one
    // connection end it. An honest requester asks only for what it was told is there.
    for k in 0..cap - 1 {
        request(&mut s, partial, prober, 276 + k);
    }
    assert_eq!(floods(&s, partial), 0);
    request(&mut s, partial, prober, 9_999);
    assert_eq!(floods(&s, partial), 1, "the cap-th one, even past the end");
}
