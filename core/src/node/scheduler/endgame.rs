//! Endgame: once every missing unit is requested, a peer with room may also be asked for units
//! already in flight elsewhere, up to `endgame_duplicates` requests per unit at peers that
//! have not gone quiet; the first answer wins and the others are cancelled (each still gets
//! its answer).
//!
//! A duplicate is worth its bytes only if it is likely to arrive first, so a peer is given the
//! units expected *last* from where they are (behind the most of our requests at the slowest
//! peers), and only while it is expected to deliver them sooner itself: a slow uploader with
//! room does not take the duplicates a faster one would deliver first, and the last units of a
//! download do not wait behind a slow peer's queue while a fast one idles.

use super::SchedView;
use crate::node::peer::Peer;
use crate::time::Timestamp;
use core::time::Duration;

/// What [`plan`] chose: duplicates to request from the peer, and when to plan again if some
/// were held back because their requests elsewhere were expected sooner (the time the first of
/// those peers would count as quiet, if nothing arrives from it by then).
pub(crate) struct Duplicates {
    pub(crate) units: Vec<u64>,
    pub(crate) recheck: Option<Timestamp>,
}

/// When a request is expected to be answered, as far as its peer's measured pace says.
#[derive(Clone, Copy)]
struct Expected {
    /// Seconds from now; infinite when unknown (no pace yet, or the peer has gone quiet).
    wait: f64,
    /// When the peer counts as quiet if it delivers nothing before (the wait becomes unknown).
    lapses_at: Option<Timestamp>,
    /// The peer has gone quiet: the request counts as lost until the peer delivers again.
    quiet: bool,
}

/// A unit in flight elsewhere: its soonest expected answer, and how many of its requests are
/// at peers that have not gone quiet.
struct InFlight {
    soonest: Expected,
    live: u32,
}

/// Units in flight at other peers that `p` has, to request from it too, up to `budget`: the
/// latest expected first, each only while `p` is expected to deliver it sooner. The cap of
/// `endgame_duplicates` counts requests at peers that have not gone quiet (two requests lost
/// to peers that stopped delivering must not hold a unit until their timeouts).
pub(crate) fn plan(v: &SchedView, p: &Peer, budget: usize) -> Duplicates {
    let cap = v.limits.endgame_duplicates;
    let Some(view) = p.view.as_ref() else {
        return Duplicates {
            units: Vec::new(),
            recheck: None,
        };
    };
    // Every request elsewhere for a unit `p` has, with its expected answer: computed once per
    // peer and then per place, as this runs on every fill in the endgame (thousands of
    // requests in flight at a leecher of a real swarm; a map insert per request cost 4 % of
    // its loop's CPU).
    let mut elsewhere: Vec<(u64, Expected)> = Vec::new();
    // When the request at the head of `p`'s queue was sent.
    let mut p_head = None;
    for (q, head, units) in v.requests.active_queues() {
        if q == p.id {
            p_head = Some(head);
            continue;
        }
        // A request at a peer we no longer know of cannot be answered.
        let pace = v
            .peers
            .get(&q)
            .map_or(Pace::Quiet, |q| pace(q, Some(head), v.now));
        for (place, unit) in units.enumerate() {
            if view.has_unit(unit) {
                elsewhere.push((unit, pace.expect(place as u32 + 1)));
            }
        }
    }
    // For each unit, its soonest expected answer and how many of its requests are live (a
    // stable sort keeps the peers' order among a unit's requests: the first of equal waits).
    elsewhere.sort_by_key(|&(unit, _)| unit);
    let mut in_flight: Vec<(u64, InFlight)> = Vec::new();
    for &(unit, e) in &elsewhere {
        match in_flight.last_mut() {
            Some((u, f)) if *u == unit => {
                if e.wait < f.soonest.wait {
                    f.soonest = e;
                }
                f.live += u32::from(!e.quiet);
            }
            _ => in_flight.push((
                unit,
                InFlight {
                    soonest: e,
                    live: u32::from(!e.quiet),
                },
            )),
        }
    }
    let mut candidates: Vec<(Expected, u64)> = in_flight
        .into_iter()
        .filter(|(unit, f)| {
            f.live < cap && !v.requests.contains(*unit, p.id) && !v.claims.is_verifying(*unit)
        })
        .map(|(unit, f)| (f.soonest, unit))
        .collect();
    // Latest expected first; ties (unknown waits among them) by unit, for determinism.
    candidates.sort_by(|a, b| b.0.wait.total_cmp(&a.0.wait).then(a.1.cmp(&b.1)));
    let queued = v.requests.counts(p.id).active;
    let rtt = base_rtt(p);
    let own = pace(p, p_head, v.now);
    let mut out = Duplicates {
        units: Vec::new(),
        recheck: None,
    };
    for (i, &(e, unit)) in candidates.iter().enumerate() {
        if out.units.len() >= budget {
            break;
        }
        // An idle peer is not stalled: its quiet counts only from its oldest request in flight.
        let ours = own.expect(queued + out.units.len() as u32 + 1).wait + rtt;
        // A unit whose wait is unknown goes to any peer. A peer whose own pace is unknown
        // (fewer than two units delivered: a fast seeder that connected during our endgame)
        // takes units up to two in its queue, enough for its answers to measure it: holding
        // it back would leave the last units waiting out a known slow queue while it idles,
        // and giving it more would spend a slow newcomer's upload on duplicates.
        let probe = matches!(own, Pace::Unknown) && queued as usize + out.units.len() < 2;
        if e.wait.is_infinite() || probe || ours < e.wait {
            out.units.push(unit);
        } else {
            // The rest are expected sooner still; look again once one of their peers would
            // count as quiet (a request lost, or a peer that stopped serving, must not wait
            // for its timeout while we hold the duplicate back).
            out.recheck = candidates[i..].iter().filter_map(|c| c.0.lapses_at).min();
            break;
        }
    }
    out
}

/// No pace measured yet: the wait is unknown, the request still live.
const UNKNOWN: Expected = Expected {
    wait: f64::INFINITY,
    lapses_at: None,
    quiet: false,
};

/// The peer has gone quiet: the wait is unknown and the request counts as lost.
const QUIET: Expected = Expected {
    quiet: true,
    ..UNKNOWN
};

/// The peer's shortest round trip so far, in seconds: the link's own delay. Not the smoothed
/// one: a request's round trip includes its wait in the peer's queue, which the expected
/// delivery counts already (5.7 s at a busy uploader on `lossy-churn`, where a last unit lost
/// on the way to a slow one waited 48 s for its timeout while faster peers were held back).
fn base_rtt(peer: &Peer) -> f64 {
    peer.rtt.min_rtt().map_or(0.0, |d| d.as_secs_f64())
}

/// What a peer's measured pace ([`Peer::unit_interval`]) says of the requests queued there.
#[derive(Clone, Copy)]
enum Pace {
    /// Fewer than two units delivered: every wait is unknown.
    Unknown,
    /// No progress for four units' time and its shortest round trip since the later of its
    /// last progress and when the oldest of our requests there was sent.
    Quiet,
    /// One unit per `per_unit` seconds; quiet at `lapses_at` if nothing arrives before.
    Measured {
        per_unit: f64,
        lapses_at: Option<Timestamp>,
    },
}

impl Pace {
    /// When the `n`-th of our requests queued at the peer is expected.
    fn expect(self, n: u32) -> Expected {
        match self {
            Pace::Unknown => UNKNOWN,
            Pace::Quiet => QUIET,
            Pace::Measured {
                per_unit,
                lapses_at,
            } => Expected {
                wait: f64::from(n) * per_unit,
                lapses_at,
                quiet: false,
            },
        }
    }
}

/// `peer`'s pace, given `head`: when the oldest of our requests there was sent (`None`:
/// nothing waits there, so it is never quiet).
fn pace(peer: &Peer, head: Option<Timestamp>, now: Timestamp) -> Pace {
    let Some(per_unit) = peer.unit_interval else {
        return Pace::Unknown;
    };
    let patience =
        Duration::try_from_secs_f64(4.0 * per_unit + base_rtt(peer)).unwrap_or(Duration::MAX);
    let lapses_at = head.map(|h| peer.last_progress_at.map_or(h, |t| t.max(h)).add(patience));
    // At the instant itself the peer counts as quiet already, so a recheck is always later
    // than now (a wake-up at `now` would plan again at once, and again, forever).
    if lapses_at.is_some_and(|at| now >= at) {
        return Pace::Quiet;
    }
    Pace::Measured {
        per_unit,
        lapses_at,
    }
}
