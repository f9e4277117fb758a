//! A peer says in its handshake how many requests it queues (`serve_queue`), and a requester
//! keeps its window within half of it: a long link can then carry more than the 64 units an
//! unsaid queue of 128 allows, and no honest requester is taken for a flooder
//! (`dev/PROTOCOL.md` §1 and §6).

use std::time::Duration;
use tierswarm_core::tiers::T1_SIZE;
use tierswarm_core::wire::{Message, UNSAID_SERVE_QUEUE};
use tierswarm_tests::{config, Swarm};

/// 2,048 units.
const FILE: u64 = 2048 * T1_SIZE;

/// Fetches the file over a 100 ms round trip from a seeder that queues `queue` requests per
/// peer, by a leecher whose largest window is 256; returns the most requests the leecher had
/// unanswered at once, and whether it completed.
fn most_in_flight(queue: usize) -> (u64, bool) {
    let mut s = Swarm::new(Duration::from_millis(50));
    s.serve_time = Duration::from_micros(100);
    let mut seed_cfg = config("seed", FILE, true);
    seed_cfg.limits.max_serve_queue = queue;
    seed_cfg.limits.upload_slots_per_peer = 64;
    seed_cfg.limits.upload_slots = 64;
    let seed = s.add(seed_cfg, None);
    let mut leech_cfg = config("leech", FILE, true);
    leech_cfg.limits.max_window = 256;
    leech_cfg.limits.min_window = 4;
    let leech = s.add(leech_cfg, Some(&[]));
    s.connect(seed, leech);
    let done = s.run_until_complete(leech, Duration::from_secs(60));
    // Requests on the wire minus answers on it, in the order they were sent.
    let (mut open, mut most) = (0i64, 0i64);
    let mut events: Vec<_> = s.wire.iter().collect();
    events.sort_by_key(|(t, ..)| *t);
    for (_, from, to, m) in events {
        match m {
            Message::Request { .. } if (*from, *to) == (leech, seed) => open += 1,
            Message::Transfer { .. } | Message::Reject { .. } if (*from, *to) == (seed, leech) => {
                open -= 1
            }
            _ => {}
        }
        most = most.max(open);
    }
    (most as u64, done)
}

#[test]
fn a_window_grows_to_half_the_queue_its_peer_says_it_has() {
    let (said, done) = most_in_flight(512);
    assert!(done);
    assert!(said > 64 && said <= 256, "{said} requests in flight");
    let (unsaid, done) = most_in_flight(UNSAID_SERVE_QUEUE as usize);
    assert!(done);
    assert!(unsaid <= 64, "{unsaid} requests in flight");
}

#[test]
fn a_queue_of_the_unsaid_size_is_not_said() {
    let mut s = Swarm::new(Duration::from_millis(5));
    let a = s.add(config("a", FILE, true), None);
    let mut big = config("b", FILE, true);
    big.limits.max_serve_queue = 512;
    let b = s.add(big, Some(&[]));
    s.connect(a, b);
    s.run_until(s.now.add(Duration::from_millis(50)));
    let said = |who: usize| {
        s.wire.iter().find_map(|(_, f, _, m)| match m {
            Message::Handshake {
                capabilities: Some(c),
                ..
            } if *f == who => Some(c.serve_queue),
            _ => None,
        })
    };
    assert_eq!(
        said(a),
        Some(0),
        "the default queue goes unsaid: the bytes of earlier versions"
    );
    assert_eq!(said(b), Some(512));
}
