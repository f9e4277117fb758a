//! A lost request (or its lost answer) is noticed when the peer answers a later one, not after
//! the peer's whole timeout (`dev/PROTOCOL.md` §6, "Timeouts and retries").

use std::time::Duration;
use tierswarm_core::tiers::T1_SIZE;
use tierswarm_core::time::Timestamp;
use tierswarm_core::trace::Record;
use tierswarm_core::wire::Message;
use tierswarm_tests::{config, Fate, Swarm};

/// 256 units.
const FILE: u64 = 256 * T1_SIZE;

#[test]
fn a_request_overtaken_by_a_later_answer_times_out_soon() {
    let mut s = Swarm::new(Duration::from_millis(10));
    s.serve_time = Duration::from_millis(20);
    let seed = s.add(config("seed", FILE, false), None);
    let leech = s.add(config("leech", FILE, false), Some(&[]));
    let (mut requests, mut transfers) = (0, 0);
    let lost = std::rc::Rc::new(std::cell::Cell::new(None));
    let lost_in_hook = lost.clone();
    s.hook(move |_, _, m| match m {
        // The first answers are slow: the round trips measured, and the timeout sized from
        // them, reach seconds, and then stay long while the estimate decays.
        Message::Transfer { .. } => {
            transfers += 1;
            if transfers <= 20 {
                Fate::Delay(Duration::from_secs(3))
            } else {
                Fate::Deliver
            }
        }
        Message::Request { unit, .. } => {
            requests += 1;
            if requests == 40 {
                lost_in_hook.set(Some(*unit));
                return Fate::Drop;
            }
            Fate::Deliver
        }
        _ => Fate::Deliver,
    });
    s.connect(seed, leech);
    assert!(s.run_until_complete(leech, Duration::from_secs(600)));
    let unit = lost.get().expect("a request was lost");
    let (asked, _, _, _) = *s
        .wire
        .iter()
        .find(|(_, f, _, m)| {
            *f == leech && matches!(m, Message::Request { unit: u, .. } if *u == unit)
        })
        .expect("asked");
    // The seeder answers in order: the first answer to a request sent after the lost one
    // shows it lost.
    let later: Vec<u64> = s
        .wire
        .iter()
        .filter(|(t, f, _, m)| *f == leech && *t > asked && matches!(m, Message::Request { .. }))
        .filter_map(|(_, _, _, m)| match m {
            Message::Request { unit, .. } => Some(*unit),
            _ => None,
        })
        .collect();
    // (A unit asked later may have been asked before the lost one too: only answers sent after
    // the lost request count.)
    let (overtaken_at, ..) = *s
        .wire
        .iter()
        .find(|(t, f, _, m)| {
            *t > asked
                && *f == seed
                && matches!(m, Message::Transfer { unit: u, .. } if later.contains(u))
        })
        .expect("later requests are answered");
    let timed_out: Vec<Timestamp> = s
        .traces
        .iter()
        .filter_map(|(_, r)| match r.record {
            Record::RequestTimeout { unit: u, .. } if u == unit => Some(r.t),
            _ => None,
        })
        .collect();
    assert_eq!(timed_out.len(), 1, "{timed_out:?}");
    let waited = timed_out[0].since(overtaken_at);
    // `min_rto` (500 ms) of grace for a reordered answer from when the later answer was sent.
    // Waiting for the timeout sized from the slow start's round trips took 5 s.
    assert!(
        waited <= Duration::from_millis(600),
        "timed out {waited:?} after a later request was answered"
    );
}
