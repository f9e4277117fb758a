//! Rate limits, on the harness's virtual clock: a node paces what it serves and what it
//! requests, so a download from a rate-limited seeder takes file / rate, and requests wait at the
//! requester instead of timing out at the peer.

use std::time::Duration;
use tierswarm_core::tiers::T1_SIZE;
use tierswarm_tests::{config, Swarm};

/// 64 units, 4 MiB.
const FILE: u64 = 64 * T1_SIZE;
const MIB: u64 = 1 << 20;

/// Runs one seeder and one leecher; returns the simulated seconds to completion and the
/// leecher's request timeouts.
fn transfer(upload: Option<u64>, download: Option<u64>) -> (f64, u64) {
    let mut s = Swarm::new(Duration::from_millis(10));
    let mut seed_cfg = config("seed", FILE, true);
    seed_cfg.trace = false;
    seed_cfg.limits.max_upload_rate = upload;
    let mut leech_cfg = config("leech", FILE, true);
    leech_cfg.trace = false;
    leech_cfg.limits.max_download_rate = download;
    let seed = s.add(seed_cfg, None);
    let leech = s.add(leech_cfg, Some(&[]));
    s.connect(seed, leech);
    assert!(s.run_until_complete(leech, Duration::from_secs(60)));
    let timeouts = s.node(leech).stats().request_timeouts;
    (s.now.as_micros() as f64 / 1e6, timeouts)
}

#[test]
fn an_upload_limit_paces_the_download_without_timeouts() {
    let (free, _) = transfer(None, None);
    assert!(free < 1.0, "unlimited takes {free} s");
    // 4 MiB at 1 MiB/s: 4 s, less the 128 KiB burst, plus a round trip.
    let (secs, timeouts) = transfer(Some(MIB), None);
    assert!((3.8..4.3).contains(&secs), "{secs} s");
    assert_eq!(timeouts, 0);
}

#[test]
fn a_download_limit_paces_the_requests_without_timeouts() {
    let (secs, timeouts) = transfer(None, Some(2 * MIB));
    assert!((1.8..2.3).contains(&secs), "{secs} s");
    assert_eq!(timeouts, 0);
}
