//! News on the data path (`dev/PROTOCOL.md` §4.3) and the end of connections between complete
//! peers (§3), on real nodes driven by the harness.

use std::time::Duration;
use tierswarm_core::node::DisconnectReason;
use tierswarm_core::tiers::T1_SIZE;
use tierswarm_core::wire::Message;
use tierswarm_tests::{config, Swarm};

/// 553 units: two T3 blocks, the second partial.
const FILE: u64 = (512 + 40) * T1_SIZE + 1000;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A seeder, a `relay` that downloads from it, and a `leech` that can only reach the relay:
/// everything the leech gets, the relay got first. Returns the swarm and the refine requests
/// the leech sent the relay before completing.
fn relay_swarm(news: bool) -> (Swarm, usize) {
    let mut s = Swarm::new(ms(20));
    s.serve_time = ms(20);
    let mut relay_cfg = config("relay", FILE, true);
    relay_cfg.limits.serve_news = news;
    let seed = s.add(config("seed", FILE, true), None);
    let relay = s.add(relay_cfg, Some(&[]));
    let leech = s.add(config("leech", FILE, true), Some(&[]));
    s.connect(seed, relay);
    s.connect(relay, leech);
    assert!(
        s.run_until_complete(leech, Duration::from_secs(120)),
        "the leech completes through the relay"
    );
    let refines = s.count(leech, relay, "refine_request");
    (s, refines)
}

#[test]
fn a_partner_that_serves_us_tells_what_it_gained() {
    let (s, refines_with_news) = relay_swarm(true);
    let (relay, leech) = (1, 2);
    // Every unit-window summary the relay sends the leech comes just before a TRANSFER and
    // lies within one T3 block.
    let mut news = 0;
    for (t, from, to, m) in &s.wire {
        if (*from, *to) != (relay, leech) {
            continue;
        }
        if let Message::Summary {
            tier: 1,
            start,
            all,
            ..
        } = m
        {
            news += 1;
            // Whole bytes from `start`: the last byte begins within the block.
            let last_byte = start + (all.len() as u64 - 1) * 8;
            let block = start / 512;
            assert_eq!(block, last_byte / 512, "one block's window");
            // The unit it rides ahead of leaves once its upload slot has sent it.
            let unit_follows = s.wire.iter().any(|(u, f, to, m)| {
                (*f, *to) == (relay, leech)
                    && *u >= *t
                    && *u <= t.add(s.serve_time)
                    && matches!(m, Message::Transfer { unit, .. } if unit / 512 == block)
            });
            assert!(
                unit_follows,
                "news at {t:?} rides ahead of a unit of block {block}"
            );
        }
    }
    assert!(news > 0, "the relay told its news");
    let (_, refines_without) = relay_swarm(false);
    assert!(
        refines_with_news * 2 < refines_without,
        "news replaces polling: {refines_with_news} refinements with it, {refines_without} without"
    );
}

#[test]
fn a_seeder_sends_no_news_of_blocks_it_has_whole() {
    let mut s = Swarm::new(ms(10));
    let seed = s.add(config("seed", FILE, true), None);
    let leech = s.add(config("leech", FILE, true), Some(&[]));
    s.connect(seed, leech);
    assert!(s.run_until_complete(leech, Duration::from_secs(60)));
    assert_eq!(s.count(seed, leech, "refine_response"), 0);
    let unit_windows = s
        .wire
        .iter()
        .filter(|(_, f, _, m)| *f == seed && matches!(m, Message::Summary { tier: 1, .. }))
        .count();
    assert_eq!(unit_windows, 0, "its T3 summary says it all");
}

/// Times at which `i` closed its connection to `j` because both were complete.
fn parted(s: &Swarm, i: usize, j: usize) -> Vec<String> {
    let line = format!(" {i} disconnects {j}: {}", DisconnectReason::BothComplete);
    s.log
        .iter()
        .filter(|l| l.ends_with(&line))
        .map(|l| {
            l.trim_start()
                .split(' ')
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

#[test]
fn complete_peers_part_and_the_others_stay() {
    for hierarchical in [true, false] {
        let mut s = Swarm::new(ms(10));
        s.serve_time = ms(2);
        let seed = s.add(config("seed", FILE, true), None);
        let a = s.add(config("a", FILE, hierarchical), Some(&[]));
        let b = s.add(config("b", FILE, true), Some(&[0]));
        s.connect(seed, a);
        s.connect(a, b);
        assert!(s.run_until_complete(a, Duration::from_secs(60)));
        assert!(s.run_until_complete(b, Duration::from_secs(60)));
        s.run_until(s.now.add(ms(200)));
        let what = format!("hierarchical {hierarchical}: {:#?}", s.log);
        // One side of each pair closes it once both are complete (the other sees it closed).
        let seed_a = [parted(&s, seed, a), parted(&s, a, seed)].concat();
        let a_b = [parted(&s, a, b), parted(&s, b, a)].concat();
        assert_eq!((seed_a.len(), a_b.len()), (1, 1), "{what}");
        // The peer still downloading kept its connection to the one that completed first,
        // and got the rest of the file over it.
        let b_done = s
            .log
            .iter()
            .find(|l| l.contains(&format!(" {b} event Complete")))
            .and_then(|l| l.trim_start().split(' ').next())
            .expect("b completed")
            .to_string();
        let t = |x: &str| x.parse::<u64>().expect("a time");
        assert!(t(&seed_a[0]) < t(&b_done), "{what}");
        assert!(t(&a_b[0]) >= t(&b_done), "{what}");
        let b_from_a = s
            .wire
            .iter()
            .filter(|(u, f, to, m)| {
                (*f, *to) == (a, b)
                    && u.as_micros() > t(&seed_a[0])
                    && matches!(m, Message::Transfer { .. })
            })
            .count();
        assert!(
            b_from_a > 0,
            "b downloaded from a after a completed: {what}"
        );
    }
}
