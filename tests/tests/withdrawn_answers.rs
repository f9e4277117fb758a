//! A peer answers our requests in order, so a request queued behind others is late only once
//! the peer has made no progress for a whole timeout (`dev/PROTOCOL.md` §6). Progress is a unit
//! arriving or a refusal of a request it still had to answer — not the REJECT `cancelled` with
//! which a peer that stopped serving still answers the requests we withdrew.

use std::collections::BTreeSet;
use std::time::Duration;
use tierswarm_core::node::{Input, PeerId};
use tierswarm_core::tiers::T1_SIZE;
use tierswarm_core::time::Timestamp;
use tierswarm_core::trace::Record;
use tierswarm_core::wire::Message;
use tierswarm_tests::{config, Swarm};

/// A server holding every unit of a `units`-unit file, serving one unit per `serve_time`, and
/// a leecher holding none, connected over 10 ms each way: `(swarm, server, leecher)`.
fn server_and_leecher(units: u64, serve_time: Duration) -> (Swarm, usize, usize) {
    let file = units * T1_SIZE;
    let mut s = Swarm::new(Duration::from_millis(10));
    s.serve_time = serve_time;
    let server = s.add(config("server", file, true), None);
    let leech = s.add(config("leech", file, true), Some(&[]));
    s.connect(server, leech);
    (s, server, leech)
}

/// The units `server` sent anyone.
fn served_by(s: &Swarm, server: usize) -> BTreeSet<u64> {
    s.wire
        .iter()
        .filter_map(|(_, f, _, m)| match m {
            Message::Transfer { unit, .. } if *f == server => Some(*unit),
            _ => None,
        })
        .collect()
}

/// Every unit request that timed out, and when: `(unit, time)`.
fn timeouts(s: &Swarm) -> Vec<(u64, Timestamp)> {
    s.traces
        .iter()
        .filter_map(|(_, r)| match r.record {
            Record::RequestTimeout { unit, .. } => Some((unit, r.t)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_peer_answering_only_withdrawals_does_not_hold_our_requests() {
    // 2,048 units: far more than is fetched before the server stops serving. A server with a
    // queue: our requests wait in it, so they are sent over time, not at once, and their
    // timeouts fire one after another.
    let (mut s, server, leech) = server_and_leecher(2048, Duration::from_millis(2));
    s.run_until(Timestamp::from_micros(1_000_000));
    // The server's connection to the leecher stops taking data (as a real driver reports a full
    // socket): it serves nothing more, yet reads, and answers every CANCEL with a REJECT.
    let stuck_at = s.now;
    s.input(
        server,
        Input::PeerCongested {
            peer: PeerId(leech as u64),
            congested: true,
        },
    );
    s.run_until(stuck_at.add(Duration::from_secs(30)));
    let served = served_by(&s, server);
    let stuck: Vec<(Timestamp, u64)> = s
        .wire
        .iter()
        .filter_map(|(t, f, _, m)| match m {
            Message::Request { unit, .. }
                if *f == leech && *t <= stuck_at && !served.contains(unit) =>
            {
                Some((*t, *unit))
            }
            _ => None,
        })
        .collect();
    assert!(stuck.len() >= 16, "the window held requests: {stuck:?}");
    let timed_out = timeouts(&s);
    for &(sent, unit) in &stuck {
        let at = timed_out
            .iter()
            .find(|(u, t)| *u == unit && *t > sent)
            .map(|(_, t)| t.since(stuck_at));
        // The units already handed out arrived 12 ms after the stall: from then, the timeout
        // (500 ms, the round trips being short) backed off once for the one loss event, 1 s,
        // with no progress. Re-armed by every REJECT `cancelled`, and with the timeout doubled
        // for each request that expired, requests waited 2.5 s, 6.5 s, 14.5 s and past 30 s.
        assert!(
            at.is_some_and(|d| d <= Duration::from_millis(1100)),
            "unit {unit} timed out {at:?} after the server stopped serving"
        );
    }
    assert!(
        s.count(server, leech, "reject") >= 16,
        "the withdrawals were answered"
    );
}

#[test]
fn requests_queued_behind_a_slow_but_serving_peer_wait_without_timing_out() {
    // 40 ms per unit: a full window waits seconds in the server's queue, longer than the
    // round trips measured while it was short.
    let (mut s, server, leech) = server_and_leecher(256, Duration::from_millis(40));
    assert!(s.run_until_complete(leech, Duration::from_secs(120)));
    assert_eq!(timeouts(&s), vec![], "a peer making progress is waited for");
    assert_eq!(
        s.count(leech, server, "request"),
        256,
        "nothing asked twice"
    );
}

/// A flat peer is sent no CANCEL: our HAVE of a unit withdraws the request for it there, and
/// the peer answers REJECT `held`. Such answers are no more progress than a `cancelled` one:
/// a flat peer that stopped serving but reads keeps answering them while we fetch elsewhere.
#[test]
fn a_flat_peer_answering_only_held_units_does_not_hold_our_requests() {
    let units = 8192;
    let file = units * T1_SIZE;
    let mut s = Swarm::new(Duration::from_millis(10));
    s.serve_time = Duration::from_millis(2);
    let stuck = s.add(config("stuck", file, false), None);
    let good = s.add(config("good", file, false), None);
    let leech = s.add(config("leech", file, false), Some(&[]));
    s.connect(stuck, leech);
    s.connect(good, leech);
    s.run_until(Timestamp::from_micros(200_000));
    // From here the stuck peer serves nothing more to the leecher (its socket reported full),
    // yet reads: every HAVE the leecher sends for a unit still in its queue is answered `held`.
    s.input(
        stuck,
        Input::PeerCongested {
            peer: PeerId(leech as u64),
            congested: true,
        },
    );
    assert!(s.run_until_complete(leech, Duration::from_secs(120)));
    assert!(
        s.count(stuck, leech, "reject") >= 16,
        "the withdrawals were answered"
    );
    let served = served_by(&s, stuck);
    // Requests to the stuck peer that were not answered time out at their timeout (500 ms on
    // these short round trips, doubled per loss event), counted from when they were sent or
    // from the peer's last real progress (the units it served before it stalled, all within
    // 70 ms of the stall): the `held` answers do not re-arm them. Counted as progress, they
    // did, and requests sent 1 s after the stall waited 3.8 s. (Since forgotten requests hold
    // their place in the peer's queue, fewer are sent to it at a time, over more rounds of
    // backoff: the last wait 4 s.)
    let timed_out = timeouts(&s);
    let mut waited = Vec::new();
    for (t, f, to, m) in &s.wire {
        match m {
            Message::Request { unit, .. }
                if *f == leech && *to == stuck && !served.contains(unit) =>
            {
                if let Some(at) = timed_out.iter().find(|(u, at)| u == unit && at > t) {
                    waited.push((*unit, at.1.since(*t)));
                }
            }
            _ => {}
        }
    }
    assert!(
        waited.len() >= 8,
        "requests to the stuck peer timed out: {waited:?}"
    );
    let at_its_timeout = |wait: Duration| {
        (0..8).any(|k| {
            let rto = Duration::from_millis(500 << k);
            wait >= rto && wait <= rto + Duration::from_millis(70)
        })
    };
    for &(unit, wait) in &waited {
        assert!(
            at_its_timeout(wait),
            "unit {unit} waited {wait:?} at a peer that no longer served"
        );
    }
}
