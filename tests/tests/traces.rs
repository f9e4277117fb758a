//! Scripted protocol traces: a few real nodes on the harness's virtual clock, each run
//! snapshot-tested (the log tells the story) and its key facts asserted explicitly.

use std::collections::BTreeSet;
use std::time::Duration;
use tierswarm_core::node::DisconnectKind;
use tierswarm_core::tiers::{Tier, T1_SIZE};
use tierswarm_core::wire::Message;
use tierswarm_core::Node;
use tierswarm_tests::{config, Fate, Swarm};

/// 41 units (40 whole and a partial one): one T3 block.
const SMALL: u64 = 40 * T1_SIZE + 1000;
/// 553 units: a whole T3 block (0) and a partial one (1).
const TWO_BLOCKS: u64 = (512 + 40) * T1_SIZE + 1000;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Runs until node `i` completes; fails with the log if it does not within `limit`.
fn finish(s: &mut Swarm, i: usize, limit: Duration) {
    if !s.run_until_complete(i, limit) {
        panic!("node {i} did not complete:\n{}", s.log_text());
    }
}

fn units(n: &Node) -> u64 {
    n.local().units_present()
}

fn held(n: &Node) -> Vec<u64> {
    let b = n.local().bitfield(Tier::T1);
    b.iter_ones_in(0..b.len()).collect()
}

/// Every in-flight gauge of `n` is back to zero.
fn assert_idle(n: &Node) {
    let s = n.stats();
    assert_eq!(s.in_flight_requests, 0, "in-flight requests");
    assert_eq!(s.in_flight_refines, 0, "in-flight refines");
}

fn kinds(list: &[&'static str]) -> BTreeSet<&'static str> {
    list.iter().copied().collect()
}

#[test]
fn capable_to_capable_download() {
    let mut s = Swarm::new(ms(10));
    let seed = s.add(config("seed", SMALL, true), None);
    let leech = s.add(config("leech", SMALL, true), Some(&[]));
    s.log_kinds = kinds(&["handshake", "summary", "bitfield"]);
    s.connect(seed, leech);
    finish(&mut s, leech, secs(5));
    s.run_until(s.now.add(ms(100)));

    let l = s.node(leech);
    assert!(l.is_complete());
    assert_idle(l);
    assert_eq!(
        s.count(leech, seed, "bitfield"),
        0,
        "leecher never sends a flat bitfield"
    );
    assert_eq!(s.count(seed, leech, "bitfield"), 0);
    assert_eq!(l.stats().requests, 41, "each unit requested once");
    assert_eq!(s.node(seed).stats().units_served, 41);
    assert_eq!(
        l.stats().refine_requests,
        0,
        "a whole block needs no refinement"
    );
    insta::assert_snapshot!(s.log_text());
}

/// Messages a legacy node may see or send.
fn legacy_kinds() -> BTreeSet<&'static str> {
    kinds(&[
        "handshake",
        "bitfield",
        "have",
        "request",
        "transfer",
        "reject",
        "keep_alive",
    ])
}

/// A capable node and a legacy one, one seeding the other: both sides must see only the flat
/// protocol. Returns the swarm and the two indices `(seed, leech)`.
fn legacy_pair(seed_capable: bool, seed_name: &str, leech_name: &str) -> (Swarm, usize, usize) {
    let mut s = Swarm::new(ms(10));
    let seed = s.add(config(seed_name, SMALL, seed_capable), None);
    let leech = s.add(config(leech_name, SMALL, !seed_capable), Some(&[]));
    s.log_kinds = kinds(&["handshake", "summary", "bitfield"]);
    s.connect(seed, leech);
    finish(&mut s, leech, secs(5));
    s.run_until(s.now.add(ms(100)));

    assert_idle(s.node(leech));
    for (from, to) in [(seed, leech), (leech, seed)] {
        assert!(
            s.kinds(from, to).is_subset(&legacy_kinds()),
            "{:?}",
            s.kinds(from, to)
        );
    }
    assert_eq!(s.node(leech).stats().requests, 41);
    (s, seed, leech)
}

#[test]
fn capable_leecher_from_legacy_seeder() {
    let (s, seed, leech) = legacy_pair(false, "legacy-seed", "leech");
    assert_eq!(
        s.count(leech, seed, "bitfield"),
        1,
        "the legacy peer gets a flat bitfield"
    );
    assert_eq!(
        s.count(leech, seed, "have"),
        41,
        "and one HAVE per completed unit"
    );
    insta::assert_snapshot!(s.log_text());
}

#[test]
fn legacy_leecher_from_capable_seeder() {
    let (s, seed, leech) = legacy_pair(true, "seed", "legacy-leech");
    assert_eq!(
        s.count(seed, leech, "bitfield"),
        1,
        "the capable seeder falls back to flat"
    );
    assert_eq!(s.count(seed, leech, "summary"), 0);
    insta::assert_snapshot!(s.log_text());
}

/// A peer holding units 0..20 of the single block: the leecher must refine to find them.
const PARTIAL: std::ops::Range<u64> = 0..20;

#[test]
fn refinement_timeout_then_retry_then_success() {
    let mut s = Swarm::new(ms(10));
    let have: Vec<u64> = PARTIAL.collect();
    let peer = s.add(config("partial", SMALL, true), Some(&have));
    let leech = s.add(config("leech", SMALL, true), Some(&[]));
    s.log_kinds = kinds(&["summary", "refine_request", "refine_response"]);
    s.hide = kinds(&["completed", "serve", "received"]);
    let mut dropped = false;
    s.hook(move |_, _, m| match m {
        Message::RefineRequest { .. } if !dropped => {
            dropped = true;
            Fate::Drop
        }
        _ => Fate::Deliver,
    });
    s.connect(peer, leech);
    s.run_until(s.now.add(secs(20)));

    let l = s.node(leech);
    assert_eq!(
        held(l),
        have,
        "the leecher fetched exactly the units the peer has"
    );
    let st = l.stats();
    // One lost, one retried; the rest are re-checks of a peer that stays partial, each after
    // twice the wait of the one before (1, 2, 4, 8 s) because none brings anything new.
    assert!(
        (2..=6).contains(&st.refine_requests),
        "lost + retry + backed-off re-checks, got {}",
        st.refine_requests
    );
    assert_eq!(st.refine_timeouts, 1);
    assert_eq!(st.late_refines, 0);
    assert_eq!(st.requests, 20);
    assert_idle(l);
    // The retry waited out the timeout (initial RTO 5 s) plus a backoff.
    let refines: Vec<_> = s
        .wire
        .iter()
        .filter(|(_, f, _, m)| *f == leech && matches!(m, Message::RefineRequest { .. }))
        .map(|(t, ..)| *t)
        .collect();
    assert!(refines.len() >= 2);
    let gap = refines[1].since(refines[0]);
    let spacing: Vec<_> = refines
        .windows(2)
        .skip(1)
        .map(|w| w[1].since(w[0]))
        .collect();
    assert!(
        spacing.windows(2).all(|w| w[1] >= w[0]),
        "re-checks back off: {spacing:?}"
    );
    assert!(
        gap > secs(5) + ms(500),
        "retry after timeout and backoff, got {gap:?}"
    );
    insta::assert_snapshot!(s.log_text());
}

#[test]
fn late_refine_response_is_fenced_by_its_id() {
    let mut s = Swarm::new(ms(10));
    let have: Vec<u64> = PARTIAL.collect();
    let peer = s.add(config("partial", SMALL, true), Some(&have));
    let leech = s.add(config("leech", SMALL, true), Some(&[]));
    s.log_kinds = kinds(&["summary", "refine_request", "refine_response"]);
    s.hide = kinds(&["completed", "serve", "received"]);
    let mut delayed = false;
    s.hook(move |_, _, m| match m {
        Message::RefineResponse { .. } if !delayed => {
            delayed = true;
            Fate::Delay(secs(8))
        }
        _ => Fate::Deliver,
    });
    s.connect(peer, leech);
    s.run_until(s.now.add(secs(20)));

    let l = s.node(leech);
    let st = l.stats();
    assert_eq!(st.refine_timeouts, 1, "one timeout, counted once");
    // Id 2 (the retry) went out before the late answer; later ids are the periodic re-checks
    // of a peer that stays partial, spaced out exponentially since they bring nothing new.
    assert!(
        (2..=6).contains(&st.refine_requests),
        "retry plus backed-off re-checks, got {}",
        st.refine_requests
    );
    assert_eq!(
        st.late_refines, 1,
        "the late answer is recognised by its id"
    );
    assert_eq!(
        held(l),
        have,
        "the download still progressed to all the peer has"
    );
    assert_eq!(st.requests, 20, "no unit requested twice");
    assert_eq!(st.duplicate_units, 0);
    assert_eq!(
        st.disconnects.len(),
        0,
        "a late answer is not a protocol error"
    );
    assert_idle(l);
    let log = s.log_text();
    assert!(
        log.contains(r#""id":1,"units":20,"late":true"#)
            && log.contains(r#""id":2,"units":20,"late":false"#),
        "late refined record"
    );
    insta::assert_snapshot!(log);
}

#[test]
fn disconnect_mid_refinement_releases_everything() {
    let mut s = Swarm::new(ms(10));
    // The peer has part of each block: the leecher refines both; the answer for block 0 comes
    // back and units of it are requested, while the answer for block 1 and every unit are held
    // back. Then the link is cut.
    let have: Vec<u64> = PARTIAL.chain(520..540).collect();
    let peer = s.add(config("partial", TWO_BLOCKS, true), Some(&have));
    // A window of four from the start, so that four unit requests are in flight at the cut.
    let mut leech_cfg = config("leech", TWO_BLOCKS, true);
    leech_cfg.limits.min_window = 4;
    let leech = s.add(leech_cfg, Some(&[]));
    let seed = s.add(config("seed", TWO_BLOCKS, true), None);
    s.log_kinds = kinds(&["summary", "refine_request", "refine_response"]);
    s.hide = kinds(&["completed", "serve", "received", "persist"]);
    s.hook(move |from, _, m| match m {
        Message::RefineResponse { start: 512, .. } | Message::Transfer { .. } if from == peer => {
            Fate::Delay(secs(30))
        }
        _ => Fate::Deliver,
    });
    s.connect(peer, leech);
    // Before the first request could time out (min RTO 500 ms).
    s.run_until(s.now.add(ms(300)));
    {
        let st = s.node(leech).stats();
        // Exactly one refinement (block 1, id 1; block 0's, id 2, was answered) and four unit
        // requests are held by the lost peer.
        assert_eq!(st.in_flight_refines, 1, "block 1 is being refined");
        assert_eq!(st.in_flight_requests, 4, "units of block 0 are requested");
        assert_eq!(units(s.node(leech)), 0);
    }
    s.disconnect(peer, leech);
    s.run_until(s.now.add(ms(1)));
    // The cut releases exactly those: the refinement and the four requests (the trace counts
    // the requests; the gauges show both back at zero).
    assert_idle(s.node(leech));
    assert_eq!(s.node(leech).peers().count(), 0);
    let gone: Vec<&String> = s.log.iter().filter(|l| l.contains("peer_gone")).collect();
    assert_eq!(gone.len(), 2, "{gone:?}");
    assert!(gone.iter().any(|l| l.ends_with(&format!(
        r#" {leech} {{"t":300000,"ev":"peer_gone","peer":{peer},"reason":"connection closed","requests_released":4}}"#
    ))), "{gone:?}");
    assert!(gone.iter().any(|l| l.ends_with(&format!(
        r#" {peer} {{"t":300000,"ev":"peer_gone","peer":{leech},"reason":"connection closed","requests_released":0}}"#
    ))), "{gone:?}");
    s.note("seeder joins (unit requests no longer logged)");
    s.hide.insert("request");
    s.connect(seed, leech);
    finish(&mut s, leech, secs(20));
    s.run_until(s.now.add(secs(31)));

    let l = s.node(leech);
    assert_idle(l);
    assert_eq!(l.stats().duplicate_units, 0);
    let first = s
        .requests
        .iter()
        .filter(|(f, t, _)| (*f, *t) == (leech, peer))
        .count();
    assert_eq!(first, 4);
    // The four units asked of the lost peer went back to the pool and came from the seeder.
    for (_, _, u) in s
        .requests
        .iter()
        .filter(|(f, t, _)| (*f, *t) == (leech, peer))
    {
        assert!(
            s.requests.contains(&(leech, seed, *u)),
            "unit {u} re-requested"
        );
    }
    // The refinement released at the cut was never answered, nor sent again: the lost peer
    // got two refinements in all (blocks 1 and 0) and answered only block 0's.
    assert_eq!(s.count(leech, peer, "refine_request"), 2);
    assert_eq!(l.stats().refine_requests, 2);
    assert_eq!(
        s.log
            .iter()
            .filter(|l| l.contains(r#""ev":"refined""#))
            .count(),
        1
    );
    insta::assert_snapshot!(s.log_text());
}

#[test]
fn restart_from_persisted_store_resumes_without_refetching() {
    let mut s = Swarm::new(ms(10));
    let have: Vec<u64> = PARTIAL.collect();
    let peer = s.add(config("partial", SMALL, true), Some(&have));
    let seed = s.add(config("seed", SMALL, true), None);
    let leech = s.add(config("leech", SMALL, true), Some(&[]));
    s.hide = kinds(&["serve", "received"]);
    s.connect(peer, leech);
    s.run_until(s.now.add(secs(2)));
    assert_eq!(units(s.node(leech)), 20, "all the partial peer has");
    assert!(
        s.stores[leech].is_some(),
        "persisted within the persist interval"
    );
    s.crash(leech);
    s.run_until(s.now.add(secs(1)));
    let notes = s.restart(leech);
    assert!(
        !notes.tiers_rebuilt,
        "tiers come from the store, no rebuild"
    );
    assert_eq!(notes.unproven_ignored, 0);
    let persisted = held(s.node(leech));
    assert_eq!(persisted, have, "the store holds what was verified");
    let before = s.requests.len();
    s.connect(peer, leech);
    s.connect(seed, leech);
    finish(&mut s, leech, secs(5));
    s.run_until(s.now.add(ms(100)));

    let after: Vec<u64> = s.requests[before..]
        .iter()
        .filter(|r| r.0 == leech)
        .map(|r| r.2)
        .collect();
    assert_eq!(
        after.len(),
        21,
        "only the 21 missing units are requested:\n{}",
        s.log_text()
    );
    for u in &after {
        assert!(
            !persisted.contains(u),
            "unit {u} was persisted yet requested again"
        );
    }
    assert_idle(s.node(leech));
    insta::assert_snapshot!(s.log_text());
}

#[test]
fn summary_past_the_end_costs_the_connection() {
    let mut s = Swarm::new(ms(10));
    let liar = s.add(config("liar", SMALL, true), None);
    let honest = s.add(config("honest", SMALL, true), None);
    let leech = s.add(config("leech", SMALL, true), Some(&[]));
    s.log_kinds = kinds(&["summary"]);
    s.hide = kinds(&["completed", "serve", "received"]);
    // One T3 block in the file; the liar also claims block 1.
    s.hook(move |from, _, m| match m {
        Message::Summary { tier, start, .. } if from == liar => Fate::Replace(Message::Summary {
            tier: *tier,
            start: *start,
            all: bytes::Bytes::from_static(&[0xc0]),
            partial: bytes::Bytes::from_static(&[0x00]),
        }),
        _ => Fate::Deliver,
    });
    s.connect(liar, leech);
    s.run_until(s.now.add(ms(100)));
    s.connect(honest, leech);
    finish(&mut s, leech, secs(5));

    let l = s.node(leech);
    assert_eq!(l.stats().disconnects.get(&DisconnectKind::Claim), Some(&1));
    assert!(s.log.iter().any(|l| l.contains("disconnects 0: claim:")));
    assert_eq!(s.requests.iter().filter(|r| r.1 == liar).count(), 0);
    insta::assert_snapshot!(s.log_text());
}

#[test]
fn endgame_duplicates_cancel_and_one_answer_each() {
    let mut s = Swarm::new(ms(10));
    let a = s.add(config("seed-a", SMALL, true), None);
    let b = s.add(config("seed-b", SMALL, true), None);
    let leech = s.add(config("leech", SMALL, true), Some(&[]));
    s.serve_time = ms(5);
    s.log_kinds = kinds(&["cancel", "reject"]);
    s.hide = kinds(&["completed", "serve", "received"]);
    s.connect(a, leech);
    s.connect(b, leech);
    finish(&mut s, leech, secs(5));
    s.run_until(s.now.add(secs(1)));

    let l = s.node(leech);
    assert_idle(l);
    assert!(l.stats().requests > 41, "some units were requested twice");
    let cancels = s.count(leech, a, "cancel") + s.count(leech, b, "cancel");
    assert!(cancels > 0, "duplicates are cancelled on arrival");
    // Every request got exactly one answer: a transfer or a reject.
    for server in [a, b] {
        for u in 0..41 {
            let asked = s
                .requests
                .iter()
                .filter(|r| **r == (leech, server, u))
                .count();
            let answered = s
                .wire
                .iter()
                .filter(|(_, f, t, m)| {
                    (*f, *t) == (server, leech)
                        && matches!(m, Message::Transfer { unit, .. } | Message::Reject { unit, .. } if *unit == u)
                })
                .count();
            assert_eq!(asked, answered, "unit {u} at {server}");
        }
    }
    insta::assert_snapshot!(s.log_text());
}

#[test]
fn request_for_a_missing_unit_is_rejected_not_ignored() {
    let mut s = Swarm::new(ms(10));
    // A legacy peer whose bitfield claims everything but which holds only units 0..20.
    let have: Vec<u64> = PARTIAL.collect();
    let boaster = s.add(config("boaster", SMALL, false), Some(&have));
    let leech = s.add(config("legacy-leech", SMALL, false), Some(&[]));
    let seed = s.add(config("seed", SMALL, false), None);
    s.log_kinds = kinds(&["bitfield", "reject"]);
    s.hide = kinds(&["completed", "serve", "received"]);
    s.hook(move |from, _, m| match m {
        Message::Bitfield { bits } if from == boaster => {
            let mut all = vec![0xff; bits.len()];
            *all.last_mut().unwrap() = 0x80; // 41 units: 5 bytes, one bit in the last
            Fate::Replace(Message::Bitfield { bits: all.into() })
        }
        _ => Fate::Deliver,
    });
    s.connect(boaster, leech);
    s.run_until(s.now.add(secs(1)));
    let rejects = s.count(boaster, leech, "reject");
    assert!(rejects > 0);
    assert_eq!(
        s.node(leech).stats().request_timeouts,
        0,
        "answered, not left to time out"
    );
    assert_eq!(s.node(boaster).stats().rejects_sent as usize, rejects);
    assert_eq!(units(s.node(leech)), 20);
    s.connect(seed, leech);
    finish(&mut s, leech, secs(5));
    assert_eq!(s.node(leech).stats().request_timeouts, 0);
    insta::assert_snapshot!(s.log_text());
}

#[test]
fn unsolicited_transfer_costs_the_connection() {
    let mut s = Swarm::new(ms(10));
    let hostile = s.add(config("hostile", SMALL, true), None);
    let honest = s.add(config("honest", SMALL, true), None);
    let leech = s.add(config("leech", SMALL, true), Some(&[]));
    s.log_kinds = kinds(&["summary"]);
    s.hide = kinds(&["completed", "serve", "received"]);
    s.hook(move |from, _, m| match m {
        Message::Summary { .. } if from == hostile => Fate::Replace(Message::Transfer {
            unit: 3,
            data: bytes::Bytes::new(),
            proof: None,
        }),
        _ => Fate::Deliver,
    });
    s.connect(hostile, leech);
    s.run_until(s.now.add(ms(100)));
    let l = s.node(leech);
    assert_eq!(
        l.stats().disconnects.get(&DisconnectKind::Protocol),
        Some(&1)
    );
    assert_eq!(units(l), 0, "the pushed unit was not taken");
    s.connect(honest, leech);
    finish(&mut s, leech, secs(5));
    insta::assert_snapshot!(s.log_text());
}

#[test]
fn no_second_refinement_of_a_block_already_being_refined() {
    let mut s = Swarm::new(ms(10));
    // The peer has part of both blocks; its answer for block 1 is slow (30 s, beyond the
    // timeout), the one for block 0 prompt.
    let have: Vec<u64> = PARTIAL.chain(520..540).collect();
    let peer = s.add(config("partial", TWO_BLOCKS, true), Some(&have));
    let leech = s.add(config("leech", TWO_BLOCKS, true), Some(&[]));
    s.log_kinds = kinds(&["refine_request", "refine_response"]);
    s.hook(move |from, _, m| match m {
        Message::RefineResponse { start: 512, .. } if from == peer => Fate::Delay(secs(30)),
        _ => Fate::Deliver,
    });
    s.connect(peer, leech);
    // Well before the first refinement of block 1 (sent at 20 ms, RTO 5 s) times out.
    s.run_until(s.now.add(secs(4)));
    let block1: Vec<_> = s
        .wire
        .iter()
        .filter(|(_, f, _, m)| *f == leech && matches!(m, Message::RefineRequest { index: 1, .. }))
        .map(|(t, ..)| t.as_micros())
        .collect();
    assert_eq!(
        block1.len(),
        1,
        "block 1 refined again while its first refinement was in flight (sent at {block1:?} µs)\n{}",
        s.log_text()
    );
    assert_eq!(s.node(leech).stats().in_flight_refines, 1);
}
