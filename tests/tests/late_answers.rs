//! A request that timed out is still owed its answer, however late (`dev/PROTOCOL.md` §5): a
//! legacy uploader, which is sent no CANCEL, serves or rejects every request it queued
//! whenever it gets to it. The requester must neither take that answer as unsolicited nor pile
//! new requests beyond the uploader's queue while the old ones still wait there.

use std::collections::BTreeMap;
use std::time::Duration;
use tierswarm_core::node::{DisconnectKind, Input, PeerId};
use tierswarm_core::tiers::T1_SIZE;
use tierswarm_core::time::Timestamp;
use tierswarm_core::wire::Message;
use tierswarm_tests::{config, Swarm};

/// A flat leecher fetches 8,192 units from a fast flat server while a second one stops serving
/// it for 8 s (its socket to the leecher reported full) and then works through everything it
/// had queued. Meanwhile the leecher's requests there time out and are forgotten, and thousands
/// of answers from the fast server settle after them.
#[test]
fn late_answers_from_a_stalled_legacy_uploader_are_owed_and_its_queue_is_not_overfilled() {
    let units = 8192;
    let file = units * T1_SIZE;
    let mut s = Swarm::new(Duration::from_millis(10));
    s.serve_time = Duration::from_millis(3);
    let stalled = s.add(config("stalled", file, false), None);
    let fast = s.add(config("fast", file, false), None);
    let leech = s.add(config("leech", file, false), Some(&[]));
    s.connect(stalled, leech);
    s.connect(fast, leech);
    let congested = |s: &mut Swarm, on: bool| {
        s.input(
            stalled,
            Input::PeerCongested {
                peer: PeerId(leech as u64),
                congested: on,
            },
        )
    };
    s.run_until(Timestamp::from_micros(100_000));
    congested(&mut s, true);
    s.run_until(Timestamp::from_micros(8_100_000));
    let answered_before = s.count(fast, leech, "transfer") + s.count(fast, leech, "reject");
    assert!(
        answered_before > 4096,
        "enough answers settled to push the first forgotten requests out of any 4,096-entry \
         memory: {answered_before}"
    );
    congested(&mut s, false);
    assert!(s.run_until_complete(leech, Duration::from_secs(120)));
    s.run_until(s.now.add(Duration::from_secs(5)));

    // Nobody was dropped (complete peers part, as they should): not the stalled uploader for
    // answers "nobody asked for", not the leecher for a request flood.
    for i in [stalled, fast, leech] {
        let mut dropped = s.node(i).stats().disconnects.clone();
        dropped.remove(&DisconnectKind::BothComplete);
        assert_eq!(dropped, BTreeMap::new(), "node {i}");
    }
    // Its queue was never overfilled: nothing was answered "busy".
    let busy = s
        .wire
        .iter()
        .filter(|(_, f, _, m)| {
            *f == stalled && matches!(m, Message::Reject { reason, .. } if reason == "busy")
        })
        .count();
    assert_eq!(busy, 0, "requests beyond the stalled uploader's queue");
    // And the late answers did come (served or answered `held`) after the stall.
    let stall_end = Timestamp::from_micros(8_100_000);
    let late = s
        .wire
        .iter()
        .filter(|(t, f, to, m)| {
            *t >= stall_end
                && *f == stalled
                && *to == leech
                && matches!(m, Message::Transfer { .. } | Message::Reject { .. })
        })
        .count();
    assert!(late >= 16, "late answers after the stall: {late}");
}
