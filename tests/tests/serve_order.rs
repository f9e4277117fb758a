//! Uploads serve the requester furthest behind first, and a request that times out while it
//! waits in the uploader's queue is taken back with a CANCEL (`dev/PROTOCOL.md` §5 and §6).

use std::time::Duration;
use tierswarm_core::tiers::T1_SIZE;
use tierswarm_core::wire::Message;
use tierswarm_tests::{config, Swarm};

/// 256 units.
const FILE: u64 = 256 * T1_SIZE;

/// A swarm whose seeder (node 0, the whole `file`) sends 20 ms units two at a time in all:
/// the leechers added next compete for every slot.
fn contended_seeder(file: u64) -> (Swarm, usize) {
    let mut s = Swarm::new(Duration::from_millis(10));
    s.serve_time = Duration::from_millis(20);
    let mut seed_cfg = config("seed", file, true);
    seed_cfg.limits.upload_slots = 2;
    let seed = s.add(seed_cfg, None);
    (s, seed)
}

/// The units of the seeder's TRANSFERs, in the order sent, with their receivers.
fn transfers(s: &Swarm, from: usize) -> Vec<(usize, u64)> {
    s.wire
        .iter()
        .filter(|(_, f, _, _)| *f == from)
        .filter_map(|(_, _, to, m)| match m {
            Message::Transfer { unit, .. } => Some((*to, *unit)),
            _ => None,
        })
        .collect()
}

#[test]
fn an_uploader_serves_the_requester_furthest_behind_first() {
    let (mut s, seed) = contended_seeder(FILE);
    let half: Vec<u64> = (0..128).collect();
    let ahead = s.add(config("ahead", FILE, true), Some(&half));
    let behind = s.add(config("behind", FILE, true), Some(&[]));
    s.connect(seed, ahead);
    s.connect(seed, behind);
    assert!(s.run_until_complete(behind, Duration::from_secs(120)));
    assert!(s.run_until_complete(ahead, Duration::from_secs(120)));
    let sent = transfers(&s, seed);
    // `behind` holds nothing, `ahead` half the file: once `behind` keeps requests queued
    // (its window opens over the first round trips, and a slot `behind` cannot use goes to
    // `ahead`), it is served alone until it is within a sixteenth of the file of `ahead`.
    let first: Vec<usize> = sent.iter().skip(20).take(90).map(|&(to, _)| to).collect();
    let to_ahead = first.iter().filter(|&&to| to == ahead).count();
    assert_eq!(to_ahead, 0, "{first:?}");
    let asked_by_ahead = s
        .wire
        .iter()
        .filter(|(_, f, _, m)| *f == ahead && matches!(m, Message::Request { .. }))
        .count();
    assert!(asked_by_ahead >= 20, "the peer ahead was asking all along");
    // Its REQUESTs said how far along it was.
    assert!(s
        .wire
        .iter()
        .any(|(_, f, _, m)| *f == ahead
            && matches!(m, Message::Request { held, .. } if *held >= 128)));
    // Once level, they share: both get units in the last hundred.
    let last: Vec<usize> = sent.iter().rev().take(100).map(|&(to, _)| to).collect();
    assert!(last.contains(&ahead) && last.contains(&behind), "{last:?}");
}

#[test]
fn a_request_that_times_out_in_the_uploaders_queue_is_cancelled_and_not_sent_twice() {
    let mut s = Swarm::new(Duration::from_millis(10));
    // A seeder that takes 20 s per unit, one at a time: the leecher's requests wait in its
    // queue past their timeout.
    s.serve_time = Duration::from_secs(20);
    let mut seed_cfg = config("seed", FILE, true);
    seed_cfg.limits.upload_slots = 1;
    seed_cfg.limits.upload_slots_per_peer = 1;
    let seed = s.add(seed_cfg, None);
    let leech = s.add(config("leech", FILE, true), Some(&[]));
    s.log_kinds = ["cancel", "reject"].into_iter().collect();
    s.connect(seed, leech);
    s.run_until(tierswarm_core::time::Timestamp::from_micros(40_000_000));
    let cancelled: Vec<u64> = s
        .wire
        .iter()
        .filter(|(_, f, _, _)| *f == leech)
        .filter_map(|(_, _, _, m)| match m {
            Message::Cancel { unit } => Some(*unit),
            _ => None,
        })
        .collect();
    assert!(
        cancelled.len() >= 2,
        "timed-out requests are cancelled: {cancelled:?}"
    );
    let rejected: Vec<u64> = s
        .wire
        .iter()
        .filter(|(_, f, _, _)| *f == seed)
        .filter_map(|(_, _, _, m)| match m {
            Message::Reject { unit, reason } if reason == "cancelled" => Some(*unit),
            _ => None,
        })
        .collect();
    // A cancelled request still waiting in the queue is answered "cancelled" (the one
    // already being sent when its CANCEL came cannot be).
    assert!(!rejected.is_empty(), "{cancelled:?}");
    assert!(rejected.iter().all(|u| cancelled.contains(u)));
    // Back to a fast seeder: every unit arrives, and none of the cancelled ones twice.
    s.serve_time = Duration::from_millis(5);
    assert!(s.run_until_complete(leech, Duration::from_secs(600)));
    let sent = transfers(&s, seed);
    let twice = rejected
        .iter()
        .filter(|u| sent.iter().filter(|(_, v)| v == *u).count() > 1)
        .count();
    assert_eq!(twice, 0, "a cancelled request's unit went out twice");
    // At most the unit in service when its request timed out went out twice.
    assert!(
        sent.len() as u64 <= FILE / T1_SIZE + 1,
        "{} units sent",
        sent.len()
    );
}

#[test]
fn a_requester_understating_its_progress_is_ranked_by_what_its_availability_shows() {
    // 1,024 units: two T3 blocks. `liar` holds the whole first block, which its summary
    // shows, but says in every REQUEST that it holds nothing.
    const FILE2: u64 = 1024 * T1_SIZE;
    let (mut s, seed) = contended_seeder(FILE2);
    let first_block: Vec<u64> = (0..512).collect();
    let liar = s.add(config("liar", FILE2, true), Some(&first_block));
    let behind = s.add(config("behind", FILE2, true), Some(&[]));
    s.hook(move |from, _, m| match m {
        Message::Request { unit, held } if from == liar && *held > 0 => {
            tierswarm_tests::Fate::Replace(Message::Request {
                unit: *unit,
                held: 0,
            })
        }
        _ => tierswarm_tests::Fate::Deliver,
    });
    s.connect(seed, liar);
    s.connect(seed, behind);
    s.run_until(tierswarm_core::time::Timestamp::from_micros(3_000_000));
    let sent = transfers(&s, seed);
    assert!(sent.len() >= 100, "{} units sent", sent.len());
    let to_liar = sent
        .iter()
        .skip(20)
        .take(80)
        .filter(|&&(to, _)| to == liar)
        .count();
    assert_eq!(to_liar, 0, "the under-stated progress was believed");
}

/// A flat-only leecher gets the units it waits for at a slow uploader from a fast one too
/// (endgame duplicates) and, having no CANCEL to send, announces them with HAVE: the slow
/// uploader drops those requests from its queue and answers each `held`, and never starts
/// sending a unit it was told the leecher holds. Before, it sent every one of them (64 KiB
/// each, dropped on arrival: 3.8 % of the flat path's serves on `lossy-churn`).
#[test]
fn a_unit_the_requester_announced_is_not_served() {
    let file = 64 * T1_SIZE;
    let latency = Duration::from_millis(10);
    let mut s = Swarm::new(latency);
    let slow = s.add(config("slow", file, false), None);
    let fast = s.add(config("fast", file, false), None);
    // Windows of at least 16: requests wait in the slow uploader's queue (as behind a deep
    // window on a long link).
    let mut cfg = config("leech", file, false);
    cfg.limits.min_window = 16;
    let leech = s.add(cfg, Some(&[]));
    let slow_pace = Duration::from_millis(40);
    s.serve_times.insert(slow, slow_pace);
    s.serve_times.insert(fast, Duration::from_millis(2));
    s.connect(slow, leech);
    s.connect(fast, leech);
    assert!(
        s.run_until_complete(leech, Duration::from_secs(30)),
        "{}",
        s.log_text()
    );
    let held = s
        .wire
        .iter()
        .filter(|(_, f, t, m)| {
            *f == slow
                && *t == leech
                && matches!(m, Message::Reject { reason, .. } if reason == "held")
        })
        .count();
    assert!(
        held > 0,
        "queued requests for announced units are answered `held`"
    );
    // When the slow uploader learnt of each HAVE (sent + latency).
    let learnt: std::collections::BTreeMap<u64, u64> = s
        .wire
        .iter()
        .filter_map(|(at, f, t, m)| match m {
            Message::Have { unit } if *f == leech && *t == slow => {
                Some((*unit, at.as_micros() + latency.as_micros() as u64))
            }
            _ => None,
        })
        .collect();
    for (at, f, t, m) in &s.wire {
        if let (true, Message::Transfer { unit, .. }) = (*f == slow && *t == leech, m) {
            // The TRANSFER leaves a unit's upload time after the uploader chose to send it.
            let chosen = at.as_micros() - slow_pace.as_micros() as u64;
            assert!(
                learnt.get(unit).is_none_or(|&l| chosen <= l),
                "unit {unit} chosen at {chosen} µs, announced to the uploader at {:?} µs",
                learnt.get(unit)
            );
        }
    }
}
