//! A protocol trace of your own, snapshot-tested: a new scenario scripted on the public
//! harness that produces the trace snapshots of `tests/` ([`tierswarm_harness`]), its log
//! checked against a reviewed snapshot with `insta`.
//!
//! The scenario: a leecher downloads from two seeders; one of them is slow (its transfers are
//! held up on the wire) and then vanishes mid-transfer. Every request it owed must be released
//! and asked of the other seeder, and the leecher must finish with each unit stored once.
//!
//! ```text
//! cargo run --release --example trace_snapshot
//! ```
//!
//! The log is compared with `examples/snapshots/trace_snapshot__seeder_vanishes_mid_transfer.snap`.
//! After a deliberate change, `INSTA_UPDATE=always cargo run --example trace_snapshot` rewrites
//! it: review the diff like code before committing it.

use std::collections::BTreeSet;
use std::time::Duration;

use tierswarm_core::wire::{Message, MessageKind};
use tierswarm_harness::{config, Fate, Swarm};

/// Twelve whole units and a partial one: a single T3 block.
const FILE_LEN: u64 = 12 * 65536 + 500;

fn main() {
    let ms = Duration::from_millis;
    let mut s = Swarm::new(ms(10));
    let fast = s.add(config("fast-seed", FILE_LEN, true), None);
    let slow = s.add(config("slow-seed", FILE_LEN, true), None);
    let leech = s.add(config("leech", FILE_LEN, true), Some(&[]));
    // Keep the log to the story: the wire's availability messages and the core's decisions,
    // without the per-unit serve/receive/complete records.
    s.log_kinds = ["summary", "refine_request", "refine_response"].into();
    s.hide = ["serve", "received", "completed"].into();
    // Each served unit takes 20 ms to upload, and the slow seeder's transfers are held up a
    // further 200 ms on the wire.
    s.serve_time = ms(20);
    s.hook(move |from, _, msg| match msg {
        Message::Transfer { .. } if from == slow => Fate::Delay(ms(200)),
        _ => Fate::Deliver,
    });
    s.connect(fast, leech);
    s.connect(slow, leech);

    // Let the download get going, then the slow seeder vanishes with requests outstanding.
    s.run_until(s.now.add(ms(40)));
    let asked_of_slow: BTreeSet<u64> = requested(&s, leech, slow);
    s.note("slow seeder vanishes");
    s.crash(slow);
    assert!(
        s.run_until_complete(leech, Duration::from_secs(10)),
        "the leecher finishes from the other seeder:\n{}",
        s.log_text()
    );
    s.run_until(s.now.add(ms(100)));

    // What the snapshot shows, asserted outright: every unit asked of the vanished seeder
    // was asked again of the other, and nothing arrived twice.
    let l = s.node(leech);
    assert!(l.is_complete());
    assert!(
        !asked_of_slow.is_empty(),
        "the slow seeder owed units when it vanished"
    );
    assert!(asked_of_slow.is_subset(&requested(&s, leech, fast)));
    assert_eq!(
        l.stats().received[MessageKind::Transfer],
        13,
        "each unit arrived once"
    );
    assert_eq!(l.stats().duplicate_units, 0);
    assert_eq!(l.stats().in_flight_requests, 0);

    insta::assert_snapshot!("seeder_vanishes_mid_transfer", s.log_text());
    println!(
        "ok: {} units re-requested after the seeder vanished; the trace matches its snapshot",
        asked_of_slow.len()
    );
}

/// Units `from` requested of `to` so far.
fn requested(s: &Swarm, from: usize, to: usize) -> BTreeSet<u64> {
    s.requests
        .iter()
        .filter(|&&(f, t, _)| (f, t) == (from, to))
        .map(|&(_, _, unit)| unit)
        .collect()
}

#[test]
fn seeder_vanishes_mid_transfer() {
    main();
}
