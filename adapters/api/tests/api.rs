//! The library API end to end over loopback TCP: events, reports, rates, legacy mode,
//! cancellation.

use std::path::Path;

use tierswarm::{Event, MessageKind, Node, Outcome, Runtime};

const HIERARCHICAL: [MessageKind; 3] = [
    MessageKind::Summary,
    MessageKind::RefineRequest,
    MessageKind::RefineResponse,
];

fn make_file(path: &Path, len: usize) {
    tierswarm_io::data_file::write_pseudo_random(path, len as u64, 0x9e37_79b9).unwrap();
}

/// An upload limit is honoured by the token accounting: the seeder never serves more than
/// rate × elapsed + its burst (100 ms of rate, or two units). The bound is one a slow machine
/// only makes easier to meet; without pacing the 2 MiB would go out in a few milliseconds and
/// break it by far. The fetcher sees no request timeouts: requests wait in the seeder's queue.
#[test]
fn an_upload_limit_bounds_the_bytes_served_by_the_time_taken() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f.bin");
    let len = 2 << 20;
    make_file(&file, len);
    let rate = 4u64 << 20;
    let seeder = Node::new()
        .listen("tcp://127.0.0.1:0")
        .max_upload_rate(rate)
        .share(&file)
        .unwrap();
    let started = std::time::Instant::now();
    let fetched = Node::new()
        .peer(seeder.listening()[0].to_string())
        .fetch(seeder.manifest(), dir.path().join("copy"))
        .unwrap()
        .wait()
        .unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(fetched.outcome, Outcome::Complete);
    assert_eq!(fetched.request_timeouts, 0);
    seeder.drain();
    let served = seeder.wait().unwrap();
    assert_eq!(served.bytes_uploaded, len as u64);
    let burst = (rate as f64 * 0.1).max(2.0 * 65536.0);
    let allowed = rate as f64 * elapsed + burst;
    assert!(
        served.bytes_uploaded as f64 <= allowed,
        "served {} bytes in {elapsed:.3} s at a limit of {rate} B/s (allowed {allowed:.0})",
        served.bytes_uploaded
    );
}

/// A legacy fetcher from a capable seeder: the flat protocol both ways, no hierarchical kind
/// sent by either side; the seeder sees the fetcher as not capable.
#[test]
fn a_legacy_fetch_from_a_capable_seeder_speaks_only_the_flat_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f.bin");
    make_file(&file, 5 * 65536 + 17);
    let mut seeder = Node::new()
        .runtime(Runtime::Smol)
        .listen("127.0.0.1:0")
        .share(&file)
        .unwrap();
    let fetched = Node::new()
        .legacy(true)
        .peer(seeder.listening()[0].to_string())
        .fetch(seeder.manifest(), dir.path().join("copy"))
        .unwrap()
        .wait()
        .unwrap();
    assert!(fetched.is_complete());
    for kind in HIERARCHICAL {
        assert_eq!(fetched.stats.sent[kind].messages, 0, "{kind:?} sent");
        assert_eq!(fetched.stats.received[kind], 0, "{kind:?} received");
    }
    assert!(fetched.stats.sent[MessageKind::Request].messages > 0);
    assert_eq!(fetched.stats.received[MessageKind::Bitfield], 1);
    let cancel = seeder.canceller();
    let mut capable = None;
    while let Some(e) = seeder.next_event() {
        match e {
            Event::PeerConnected { capable: c, .. } => capable = Some(c),
            Event::PeerDisconnected { .. } => cancel.drain(),
            _ => {}
        }
    }
    assert_eq!(capable, Some(false));
    let served = seeder.wait().unwrap();
    for kind in HIERARCHICAL {
        assert_eq!(served.stats.sent[kind].messages, 0, "{kind:?} sent");
    }
    assert_eq!(served.stats.units_served, 6);
}

/// Events come in order and add up to the report: one connection, each unit verified once,
/// progress up to the total, `complete`, then `done` last with the same report as `wait`.
#[test]
fn events_add_up_to_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f.bin");
    make_file(&file, 40 * 65536);
    let seeder = Node::new()
        .runtime(Runtime::AsyncStd)
        .listen("127.0.0.1:0")
        .share(&file)
        .unwrap();
    let mut fetch = Node::new()
        .peer(seeder.listening()[0].to_string())
        .fetch(seeder.manifest(), dir.path().join("copy"))
        .unwrap();
    let mut seen = Vec::new();
    while let Some(e) = fetch.next_event() {
        seen.push(e);
    }
    let report = fetch.wait().unwrap();
    let Some(Event::Done(done)) = seen.last() else {
        panic!("last event {:?}", seen.last());
    };
    assert_eq!(**done, report);
    let verified: Vec<u64> = seen
        .iter()
        .filter_map(|e| match e {
            Event::UnitVerified { unit, .. } => Some(*unit),
            _ => None,
        })
        .collect();
    let mut sorted = verified.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted, (0..40).collect::<Vec<_>>());
    assert_eq!(report.units_from.values().sum::<u64>(), 40);
    assert_eq!(report.bytes_downloaded, 40 * 65536);
    assert!(seen
        .iter()
        .any(|e| matches!(e, Event::PeerConnected { capable: true, .. })));
    assert!(seen.contains(&Event::Complete));
    assert!(seen.contains(&Event::Progress {
        units: 40,
        total: 40,
        bytes: 40 * 65536
    }));
    // JSON: one object per event, tagged with its kind.
    let line = serde_json::to_value(&seen[seen.len() - 1]).unwrap();
    assert_eq!(line["event"], "done");
    assert_eq!(line["outcome"], "complete");
    assert_eq!(line["bytes_downloaded"], 40 * 65536);
    seeder.abort();
    assert!(matches!(seeder.wait(), Err(tierswarm::Error::Aborted)));
}

/// Bad addresses are refused before anything starts, naming the address and its role.
#[test]
fn bad_addresses_are_refused_with_their_role() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f.bin");
    make_file(&file, 1000);
    let e = Node::new().listen("mem://x").share(&file).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().starts_with("listen mem://x: "), "{e}");
    let seeder = Node::new().listen("127.0.0.1:0").share(&file).unwrap();
    let e = Node::new()
        .peer("quic://127.0.0.1:7000")
        .fetch(seeder.manifest(), dir.path().join("o"))
        .unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("fingerprint"), "{e}");
}

/// Drain is graceful: the fetch stops requesting, settles what is in flight, persists, and ends
/// `drained` part-way; the next fetch of the same output resumes from exactly what the drain
/// persisted. Abort is not: the handle reports no outcome.
#[test]
fn a_drained_fetch_persists_and_resumes_an_aborted_one_reports_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f.bin");
    // Slow enough (2 MiB/s for 8 MiB) that the drain comes long before the end, and twice the
    // largest request window (64 units), so that what is in flight when the drain comes can
    // never be the whole rest of the file (on a loaded machine the window reached 64 once).
    make_file(&file, 128 * 65536);
    let seeder = Node::new()
        .listen("127.0.0.1:0")
        .max_upload_rate(2 << 20)
        .share(&file)
        .unwrap();
    let url = seeder.listening()[0].to_string();
    let out = dir.path().join("copy");
    let mut fetch = Node::new()
        .peer(url.clone())
        .fetch(seeder.manifest(), &out)
        .unwrap();
    while let Some(e) = fetch.next_event() {
        if let Event::UnitVerified { .. } = e {
            fetch.drain();
        }
    }
    let drained = fetch.wait().unwrap();
    assert_eq!(drained.outcome, Outcome::Drained);
    assert!(
        drained.units > 0 && drained.units < 128,
        "{}",
        drained.units
    );
    let resumed = Node::new()
        .peer(url.clone())
        .fetch(seeder.manifest(), &out)
        .unwrap();
    assert_eq!(resumed.resumed().unwrap().units, drained.units);
    resumed.abort();
    assert!(matches!(resumed.wait(), Err(tierswarm::Error::Aborted)));
    let done = Node::new()
        .peer(url)
        .fetch(seeder.manifest(), &out)
        .unwrap()
        .wait()
        .unwrap();
    assert!(done.is_complete());
    assert_eq!(std::fs::read(&file).unwrap(), std::fs::read(&out).unwrap());
    seeder.abort();
}
