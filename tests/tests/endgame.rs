//! Endgame duplicates go to the peers expected to deliver them first
//! (`core/src/node/scheduler/endgame.rs`): the units expected last from where they wait are
//! duplicated first, and only at a peer expected to deliver them sooner.

use std::time::Duration;
use tierswarm_core::tiers::T1_SIZE;
use tierswarm_core::trace::{Record, RequestPath};
use tierswarm_core::wire::Message;
use tierswarm_tests::{config, Fate, Swarm};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A leecher fetching a 64-unit file from a fast and a slow uploader (`fast_ms` and `slow_ms`
/// per unit), 10 ms apart each way: `(swarm, fast, slow, leecher)`, run until the leecher is
/// complete.
fn fast_and_slow(fast_ms: u64, slow_ms: u64) -> (Swarm, usize, usize, usize) {
    let file = 64 * T1_SIZE;
    let mut s = Swarm::new(ms(10));
    let fast = s.add(config("fast", file, true), None);
    let slow = s.add(config("slow", file, true), None);
    let leech = s.add(config("leech", file, true), Some(&[]));
    s.serve_times.insert(fast, ms(fast_ms));
    s.serve_times.insert(slow, ms(slow_ms));
    s.connect(fast, leech);
    s.connect(slow, leech);
    if !s.run_until_complete(leech, Duration::from_secs(30)) {
        panic!("the leecher did not complete:\n{}", s.log_text());
    }
    (s, fast, slow, leech)
}

/// Endgame duplicates the leecher sent, by peer index.
fn duplicates_to(s: &Swarm, leech: usize, peer: usize) -> usize {
    s.traces
        .iter()
        .filter(|(i, r)| {
            *i == leech
                && matches!(r.record, Record::Request { peer: p, path: RequestPath::Endgame, .. }
                    if p.0 as usize == peer)
        })
        .count()
}

/// The last units queued at a slow uploader are asked of the fast one too, and the slow one,
/// which would deliver them after the fast one anyway, is asked for no duplicate. Before, a
/// peer with room took duplicates in unit order, whoever held the first request: a slow
/// uploader with room took units a fast one was about to deliver, and the download's last
/// units waited behind it (`thousand`: the last leecher 127 ms behind a DSL uploader's queue,
/// `dev/SIMULATION.md`).
#[test]
fn duplicates_go_to_the_peer_that_delivers_first() {
    let (s, fast, slow, leech) = fast_and_slow(2, 40);
    let to_fast = duplicates_to(&s, leech, fast);
    let to_slow = duplicates_to(&s, leech, slow);
    assert!(
        to_fast > 0,
        "units queued at the slow uploader are asked of the fast one"
    );
    assert_eq!(to_slow, 0, "the slow uploader is asked for no duplicate");
}

/// Between uploaders of the same pace, duplicates still flow both ways: neither is expected
/// to deliver later than the other, so each takes what waits deeper in the other's queue.
#[test]
fn equal_uploaders_share_the_duplicates() {
    let (s, a, b, leech) = fast_and_slow(10, 10);
    assert!(duplicates_to(&s, leech, a) + duplicates_to(&s, leech, b) > 0);
}

/// Two uploaders stop delivering to the leecher in its endgame (their units vanish on the way,
/// as on a link that has died without closing), with units requested from both of them: the
/// cap of two requests per unit counts only peers that have not gone quiet, so those units go
/// to the third uploader within a few units' time, and the download ends before any request
/// times out. When the cap counted every request, such a unit waited for its timeout
/// (`lossy-churn` seed 19, flat: 25 s, `dev/SIMULATION.md`).
#[test]
fn requests_at_quiet_peers_do_not_hold_the_cap() {
    let file = 64 * T1_SIZE;
    let mut s = Swarm::new(ms(10));
    let a = s.add(config("a", file, true), None);
    let b = s.add(config("b", file, true), None);
    let c = s.add(config("c", file, true), None);
    let leech = s.add(config("leech", file, true), Some(&[]));
    for up in [a, b, c] {
        s.serve_times.insert(up, ms(20));
    }
    // Once 48 units have reached the leecher, nothing more from `a` or `b` does.
    let mut delivered = 0;
    s.hook(move |from, to, m| match m {
        Message::Transfer { .. } if to == leech => {
            if delivered >= 48 && (from == a || from == b) {
                return Fate::Drop;
            }
            delivered += 1;
            Fate::Deliver
        }
        _ => Fate::Deliver,
    });
    for up in [a, b, c] {
        s.connect(up, leech);
    }
    assert!(
        s.run_until_complete(leech, Duration::from_secs(120)),
        "the leecher did not complete:\n{}",
        s.log_text()
    );
    let timeouts = s
        .traces
        .iter()
        .filter(|(i, r)| *i == leech && matches!(r.record, Record::RequestTimeout { .. }))
        .count();
    let both = s.traces.iter().filter(|(i, r)| {
        *i == leech
            && matches!(r.record, Record::Request { peer, path: RequestPath::Endgame, .. }
            if peer.0 as usize == a || peer.0 as usize == b)
    });
    assert!(
        both.count() > 0,
        "the setup has endgame duplicates at the peers that go quiet"
    );
    assert_eq!(
        timeouts, 0,
        "units at quiet peers went elsewhere before their timeouts"
    );
}

/// A fast uploader that connects once every missing unit is already requested from a slow one
/// has no measured pace yet; it is still given duplicates (its own answers then measure it),
/// so the download does not wait out the slow uploader's queue. Before, a peer without a pace
/// took no duplicate of a unit whose wait elsewhere was known.
#[test]
fn a_peer_without_a_pace_takes_duplicates() {
    let file = 64 * T1_SIZE;
    let mut s = Swarm::new(ms(10));
    let slow = s.add(config("slow", file, true), None);
    let leech = s.add(config("leech", file, true), Some(&[]));
    s.serve_times.insert(slow, ms(100));
    s.connect(slow, leech);
    let requested = |s: &Swarm| {
        s.traces
            .iter()
            .filter(|(i, r)| *i == leech && matches!(r.record, Record::Request { .. }))
            .count()
    };
    // Until every unit is requested from the slow uploader.
    while requested(&s) < 64 {
        let next = s.now.add(ms(10));
        s.run_until(next);
        assert!(s.now.as_micros() < 30_000_000, "{}", s.log_text());
    }
    let missing = 64 - s.node(leech).local().units_present();
    let start = s.now;
    let fast = s.add(config("fast", file, true), None);
    s.serve_times.insert(fast, ms(2));
    s.connect(fast, leech);
    assert!(
        s.run_until_complete(leech, Duration::from_secs(30)),
        "{}",
        s.log_text()
    );
    assert!(
        duplicates_to(&s, leech, fast) > 0,
        "the fast uploader is asked for units queued at the slow one"
    );
    // The slow uploader alone needs 100 ms for each missing unit; with the fast one taking
    // them, the download ends in a fraction of that (500 ms here; 3.05 s without duplicates).
    let slow_alone = ms(100) * missing as u32;
    assert!(
        s.now.since(start) < slow_alone / 4,
        "took {:?}, the slow uploader alone {slow_alone:?}",
        s.now.since(start)
    );
}
