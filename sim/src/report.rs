//! The run report: the JSON object of contracts.md (`--json`) and a short human summary.
//!
//! Times are simulated seconds unless named otherwise. Maps are `BTreeMap`s, so the JSON is the
//! same bytes for the same run (apart from `wall_s`, which is real time).

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use serde::{Deserialize, Serialize};

use crate::scenario::{Behaviour, Strategy};

/// Why a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// Every honest leecher finished (in an honest swarm: every leecher).
    Complete,
    /// Simulated time reached the scenario's `time_limit`.
    TimeLimit,
    /// Nothing was left to happen, yet some leecher had not finished.
    Stalled,
    /// One of the simulator's own checks failed (e.g. a unit was served by a peer that lacked
    /// it); the text says which.
    Invariant(String),
}

impl fmt::Display for ExitReason {
    /// `complete`, `time-limit`, `stalled`, or `invariant: <what>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Complete => f.write_str("complete"),
            ExitReason::TimeLimit => f.write_str("time-limit"),
            ExitReason::Stalled => f.write_str("stalled"),
            ExitReason::Invariant(what) => write!(f, "invariant: {what}"),
        }
    }
}

impl From<ExitReason> for String {
    fn from(r: ExitReason) -> String {
        r.to_string()
    }
}

impl TryFrom<String> for ExitReason {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "complete" => Ok(ExitReason::Complete),
            "time-limit" => Ok(ExitReason::TimeLimit),
            "stalled" => Ok(ExitReason::Stalled),
            other => other
                .strip_prefix("invariant: ")
                .map(|w| ExitReason::Invariant(w.to_owned()))
                .ok_or_else(|| format!("unknown exit reason {other:?}")),
        }
    }
}

impl Serialize for ExitReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ExitReason {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        ExitReason::try_from(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// Minimum, median and maximum of the leechers' completion times (join to completion),
/// `null` when no leecher completed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CompletionStats {
    /// Fastest leecher, seconds.
    pub min: Option<f64>,
    /// Median leecher (mean of the middle two for an even count), seconds.
    pub median: Option<f64>,
    /// Slowest leecher, seconds.
    pub max: Option<f64>,
}

impl CompletionStats {
    /// The statistics of `seconds` (non-finite values are ignored).
    pub fn of(seconds: &[f64]) -> CompletionStats {
        let mut v: Vec<f64> = seconds.iter().copied().filter(|x| x.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n == 0 {
            return CompletionStats::default();
        }
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        CompletionStats {
            min: v.first().copied(),
            median: Some(median),
            max: v.last().copied(),
        }
    }
}

/// One leecher of a run (`leechers_detail`), so that per-group figures can be computed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeecherDetail {
    /// The name of its group.
    pub group: String,
    /// When it joined, in simulated seconds from the start of the run (not from the first join).
    pub join_s: f64,
    /// When it finished, in simulated seconds from the start of the run; `null` if it never did.
    pub complete_s: Option<f64>,
    /// How it behaved (only written for a hostile leecher).
    #[serde(default, skip_serializing_if = "is_honest")]
    pub behaviour: Behaviour,
}

/// The report of one run, serialised with exactly the keys of contracts.md plus `exit_reason`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The scenario's `name`.
    pub scenario: String,
    /// The seed the run used.
    pub seed: u64,
    /// The strategy the run used.
    pub strategy: Strategy,
    /// The file's size in bytes.
    pub file_bytes: u64,
    /// How many leechers.
    pub leechers: u64,
    /// How many seeders.
    pub seeders: u64,
    /// How many leechers finished.
    pub completed: u64,
    /// Whether every leecher finished.
    pub all_complete: bool,
    /// Per-leecher completion times, from its join to its completion.
    pub completion_s: CompletionStats,
    /// From the first join to the last completion; when not every leecher finished, to the
    /// moment the run ended.
    pub makespan_s: f64,
    /// The lower bound on the makespan: the larger of `bound_kr_s` and, over leechers, join time
    /// (from the first join) + file size / download rate (see [`crate::bound::Bounds`]).
    pub bound_s: f64,
    /// The plain Kumar–Ross bound, with every peer present from the start.
    pub bound_kr_s: f64,
    /// A tighter lower bound that integrates the capacity present over time (proposed, not in
    /// contracts.md; see [`crate::bound::fluid_bound`]). `efficiency` does not use it.
    pub bound_fluid_s: f64,
    /// `bound_s / makespan_s` when every leecher finished, else 0.
    pub efficiency: f64,
    /// Bytes on the wire of availability metadata (bitfields, HAVEs, summaries, refine requests
    /// and responses, handshake capability fields).
    pub availability_bytes: u64,
    /// Bytes on the wire of unit payloads and their proofs.
    pub data_bytes: u64,
    /// Messages sent, by kind.
    pub messages: BTreeMap<String, u64>,
    /// Refine requests sent.
    pub refine_requests: u64,
    /// Refine requests that timed out.
    pub refine_timeouts: u64,
    /// Unit requests retried.
    pub retries: u64,
    /// Unit requests that timed out: the part of `retries` that no answer ended (the rest were
    /// refused). Absent from reports written before it was added (read as 0).
    #[serde(default)]
    pub request_timeouts: u64,
    /// Units received that the receiver already had.
    pub duplicate_units: u64,
    /// Inputs processed by all cores together.
    pub events: u64,
    /// Real seconds the simulation took (the only non-deterministic field).
    pub wall_s: f64,
    /// Hex digest of the trace; equal for equal runs.
    pub trace_hash: String,
    /// Why the run ended.
    pub exit_reason: ExitReason,
    /// Every leecher, honest or not, in peer order.
    pub leechers_detail: Vec<LeecherDetail>,
    /// Hostile peers by behaviour (`{}` for an honest swarm; proposed, not in contracts.md).
    #[serde(default)]
    pub hostile: BTreeMap<String, u64>,
    /// Connections honest peers dropped (the defences at work), by the behaviour of the peer
    /// dropped (`honest` included: collateral damage, or faults such as loss and crashes),
    /// then by reason: the family of the node's
    /// [`DisconnectReason`](tierswarm_core::node::DisconnectReason) in snake case
    /// (`failed_verification`, `idle`, `unresponsive`, `protocol`, `claim`, …), with the
    /// embedder's stall reasons told apart (`write_stalled`, `frame_timeout`). Proposed, not in
    /// contracts.md.
    #[serde(default)]
    pub disconnects: BTreeMap<String, BTreeMap<String, u64>>,
    /// The honest crowd's figures (proposed, not in contracts.md): those of the whole crowd
    /// when no peer is hostile.
    #[serde(flatten)]
    pub honest: HonestFigures,
}

/// What the honest peers achieved, as if the hostile ones were not counted: only honest
/// leechers count, and the bound is that of the honest swarm's own capacities (seeders and
/// honest leechers). Serialised flat, every key prefixed `honest_`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HonestFigures {
    /// How many honest leechers.
    #[serde(rename = "honest_leechers")]
    pub leechers: u64,
    /// How many of them finished.
    #[serde(rename = "honest_completed")]
    pub completed: u64,
    /// Their completion times, from each one's join.
    #[serde(rename = "honest_completion_s")]
    pub completion_s: CompletionStats,
    /// From the first join to the last honest completion; when not every honest leecher
    /// finished, to the moment the run ended.
    #[serde(rename = "honest_makespan_s")]
    pub makespan_s: f64,
    /// The join-aware bound (as `bound_s`) of the honest swarm alone.
    #[serde(rename = "honest_bound_s")]
    pub bound_s: f64,
    /// `honest_bound_s / honest_makespan_s` when every honest leecher finished, else 0.
    #[serde(rename = "honest_efficiency")]
    pub efficiency: f64,
}

impl HonestFigures {
    /// Whether every honest leecher finished.
    pub fn all_complete(&self) -> bool {
        self.completed == self.leechers
    }
}

impl Report {
    /// The process exit status: 0 when every honest leecher (every leecher, in an honest
    /// swarm) finished and no check failed, else 1.
    pub fn exit_code(&self) -> u8 {
        if self.honest.all_complete() && self.exit_reason == ExitReason::Complete {
            0
        } else {
            1
        }
    }

    /// The report as pretty-printed JSON (with a trailing newline).
    pub fn to_json(&self) -> String {
        // Serialising plain structs and maps with string keys cannot fail.
        let mut json = serde_json::to_string_pretty(self).unwrap_or_default();
        json.push('\n');
        json
    }

    /// A short, human-readable text block.
    pub fn summary(&self) -> String {
        let secs = |x: Option<f64>| x.map_or_else(|| "-".to_owned(), |s| format!("{s:.2}s"));
        let mut out = String::new();
        let _ = writeln!(
            out,
            "scenario   {} (seed {}, strategy {})",
            self.scenario, self.seed, self.strategy
        );
        let _ = writeln!(
            out,
            "swarm      {} seeder(s), {} leecher(s), file {}",
            self.seeders,
            self.leechers,
            approx_bytes(self.file_bytes)
        );
        let _ = writeln!(
            out,
            "result     {}/{} complete, {}",
            self.completed, self.leechers, self.exit_reason
        );
        let _ = writeln!(
            out,
            "completion min {}  median {}  max {}",
            secs(self.completion_s.min),
            secs(self.completion_s.median),
            secs(self.completion_s.max)
        );
        let groups = self.groups();
        if groups.len() > 1 {
            for (name, g) in groups {
                let behaviour = match g.behaviour {
                    Behaviour::Honest => String::new(),
                    b => format!(" ({b})"),
                };
                let _ = writeln!(
                    out,
                    "  {name}{behaviour}: {}/{} complete, completion min {}  median {}  max {}",
                    g.completed,
                    g.leechers,
                    secs(g.completion_s.min),
                    secs(g.completion_s.median),
                    secs(g.completion_s.max)
                );
            }
        }
        if !self.hostile.is_empty() {
            let h = &self.honest;
            let _ = writeln!(
                out,
                "hostile    {} peer(s): {}",
                self.hostile.values().sum::<u64>(),
                counts(&self.hostile)
            );
            let _ = writeln!(
                out,
                "honest     {}/{} complete, completion min {}  median {}  max {}",
                h.completed,
                h.leechers,
                secs(h.completion_s.min),
                secs(h.completion_s.median),
                secs(h.completion_s.max)
            );
            let _ = writeln!(
                out,
                "honest     makespan {:.2}s  bound {:.2}s (own capacities)  efficiency {:.3}",
                h.makespan_s, h.bound_s, h.efficiency
            );
        }
        for (whom, dropped) in &self.disconnects {
            let _ = writeln!(
                out,
                "dropped    {} connection(s) to {whom} peers by honest ones: {}",
                dropped.values().sum::<u64>(),
                counts(dropped)
            );
        }
        let _ = writeln!(
            out,
            "makespan   {:.2}s  bound {:.2}s (Kumar–Ross {:.2}s, fluid {:.2}s)  efficiency {:.3}",
            self.makespan_s, self.bound_s, self.bound_kr_s, self.bound_fluid_s, self.efficiency
        );
        let total = self.data_bytes.saturating_add(self.availability_bytes);
        let share = if total == 0 {
            0.0
        } else {
            100.0 * self.availability_bytes as f64 / total as f64
        };
        let _ = writeln!(
            out,
            "traffic    data {}  availability {} ({share:.2}% of bytes)",
            approx_bytes(self.data_bytes),
            approx_bytes(self.availability_bytes)
        );
        let _ = writeln!(
            out,
            "messages   {} ({})",
            self.messages.values().sum::<u64>(),
            counts(&self.messages)
        );
        let _ = writeln!(
            out,
            "refine     {} requests, {} timeouts; {} retries ({} timed out); {} duplicate units",
            self.refine_requests,
            self.refine_timeouts,
            self.retries,
            self.request_timeouts,
            self.duplicate_units
        );
        let _ = writeln!(
            out,
            "events     {} in {:.3}s wall; trace {}",
            self.events, self.wall_s, self.trace_hash
        );
        out
    }
}

/// What [`Report::groups`] gives for one group of leechers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupFigures {
    /// Leechers in the group.
    pub leechers: u64,
    /// How many of them finished.
    pub completed: u64,
    /// Their completion times, from each one's join.
    pub completion_s: CompletionStats,
    /// How the group's peers behave.
    pub behaviour: Behaviour,
}

impl Report {
    /// Per-group figures from `leechers_detail`, groups in the order they first appear.
    pub fn groups(&self) -> Vec<(&str, GroupFigures)> {
        let mut groups: Vec<(&str, u64, Vec<f64>, Behaviour)> = Vec::new();
        for l in &self.leechers_detail {
            let k = match groups.iter().position(|g| g.0 == l.group) {
                Some(k) => k,
                None => {
                    groups.push((l.group.as_str(), 0, Vec::new(), l.behaviour));
                    groups.len() - 1
                }
            };
            groups[k].1 += 1;
            groups[k].2.extend(l.complete_s.map(|c| c - l.join_s));
        }
        groups
            .into_iter()
            .map(|(name, leechers, done, behaviour)| {
                let figures = GroupFigures {
                    leechers,
                    completed: done.len() as u64,
                    completion_s: CompletionStats::of(&done),
                    behaviour,
                };
                (name, figures)
            })
            .collect()
    }
}

fn is_honest(b: &Behaviour) -> bool {
    b.is_honest()
}

/// `key count, key count, ...` in key order.
fn counts(map: &BTreeMap<String, u64>) -> String {
    let parts: Vec<String> = map.iter().map(|(k, v)| format!("{k} {v}")).collect();
    parts.join(", ")
}

/// `n` bytes to three significant figures in binary units, e.g. `1.07 GiB`.
fn approx_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else if value >= 100.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else if value >= 10.0 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        Report {
            scenario: "smoke".into(),
            seed: 1,
            strategy: Strategy::Auto,
            file_bytes: 64 << 20,
            leechers: 8,
            seeders: 1,
            completed: 8,
            all_complete: true,
            completion_s: CompletionStats::of(&[3.0, 1.0, 2.0, 4.0]),
            makespan_s: 4.5,
            bound_s: 4.0,
            bound_kr_s: 3.5,
            bound_fluid_s: 4.25,
            efficiency: 4.0 / 4.5,
            availability_bytes: 12_345,
            data_bytes: 8 * (64 << 20),
            messages: [("have".to_owned(), 10), ("bitfield".to_owned(), 2)]
                .into_iter()
                .collect(),
            refine_requests: 3,
            refine_timeouts: 0,
            retries: 1,
            request_timeouts: 0,
            duplicate_units: 0,
            events: 999,
            wall_s: 0.25,
            trace_hash: "00ff".into(),
            exit_reason: ExitReason::Complete,
            leechers_detail: vec![
                LeecherDetail {
                    group: "crowd".into(),
                    join_s: 0.0,
                    complete_s: Some(4.0),
                    behaviour: Behaviour::Honest,
                },
                LeecherDetail {
                    group: "late".into(),
                    join_s: 1.0,
                    complete_s: Some(4.5),
                    behaviour: Behaviour::Honest,
                },
                LeecherDetail {
                    group: "late".into(),
                    join_s: 2.0,
                    complete_s: None,
                    behaviour: Behaviour::Honest,
                },
            ],
            hostile: BTreeMap::new(),
            disconnects: BTreeMap::new(),
            honest: HonestFigures {
                leechers: 8,
                completed: 8,
                completion_s: CompletionStats::of(&[3.0, 1.0, 2.0, 4.0]),
                makespan_s: 4.5,
                bound_s: 4.0,
                efficiency: 4.0 / 4.5,
            },
        }
    }

    #[test]
    fn json_has_exactly_the_contract_keys() {
        let value: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        let keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = vec![
            "scenario",
            "seed",
            "strategy",
            "file_bytes",
            "leechers",
            "seeders",
            "completed",
            "all_complete",
            "completion_s",
            "makespan_s",
            "bound_s",
            "bound_kr_s",
            "bound_fluid_s",
            "efficiency",
            "leechers_detail",
            "availability_bytes",
            "data_bytes",
            "messages",
            "refine_requests",
            "refine_timeouts",
            "retries",
            "request_timeouts",
            "duplicate_units",
            "events",
            "wall_s",
            "trace_hash",
            "exit_reason",
            "hostile",
            "disconnects",
            "honest_leechers",
            "honest_completed",
            "honest_completion_s",
            "honest_makespan_s",
            "honest_bound_s",
            "honest_efficiency",
        ];
        let mut keys = keys;
        keys.sort_unstable();
        expected.sort_unstable();
        assert_eq!(keys, expected);
        assert_eq!(value["strategy"], "auto");
        assert_eq!(value["exit_reason"], "complete");
        assert_eq!(value["completion_s"]["median"], 2.5);
        assert_eq!(value["messages"]["have"], 10);
        assert_eq!(
            value["leechers_detail"][2],
            serde_json::json!({"group": "late", "join_s": 2.0, "complete_s": null})
        );
        assert_eq!(value["hostile"], serde_json::json!({}));
        assert_eq!(value["disconnects"], serde_json::json!({}));
    }

    #[test]
    fn round_trips_and_exit_codes() {
        let mut r = sample();
        r.exit_reason = ExitReason::Invariant("unit 3 served by peer 2 which lacked it".into());
        let back: Report = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(back, r);
        assert_eq!(r.exit_code(), 1);
        assert_eq!(sample().exit_code(), 0);
        r.exit_reason = ExitReason::TimeLimit;
        r.all_complete = false;
        assert_eq!(r.exit_code(), 1);
        // Success is the honest crowd's: a hostile leecher that never finished does not count,
        // an honest one does.
        r.exit_reason = ExitReason::Complete;
        assert_eq!(r.exit_code(), 0);
        r.honest.completed -= 1;
        assert_eq!(r.exit_code(), 1);
        assert!(serde_json::from_str::<ExitReason>("\"bored\"").is_err());
    }

    #[test]
    fn completion_stats() {
        assert_eq!(CompletionStats::of(&[]), CompletionStats::default());
        let s = CompletionStats::of(&[5.0, f64::NAN, 1.0, 3.0]);
        assert_eq!((s.min, s.median, s.max), (Some(1.0), Some(3.0), Some(5.0)));
        let json = serde_json::to_string(&CompletionStats::of(&[])).unwrap();
        assert_eq!(json, r#"{"min":null,"median":null,"max":null}"#);
    }

    #[test]
    fn summary_mentions_the_essentials() {
        let text = sample().summary();
        for needle in [
            "smoke",
            "8/8 complete, complete",
            "median 2.50s",
            "bound 4.00s (Kumar–Ross 3.50s, fluid 4.25s)  efficiency 0.889",
            "  crowd: 1/1 complete, completion min 4.00s  median 4.00s  max 4.00s",
            "  late: 1/2 complete, completion min 3.50s  median 3.50s  max 3.50s",
            "data 512 MiB",
            "messages   12 (bitfield 2, have 10)",
        ] {
            assert!(text.contains(needle), "{needle:?} not in\n{text}");
        }
        assert!(
            !text.contains("hostile"),
            "an honest swarm says nothing of hostility"
        );
        let mut hostile = sample();
        hostile.hostile = [("liar".to_owned(), 2), ("silent".to_owned(), 1)].into();
        hostile.disconnects = [("silent".to_owned(), [("idle".to_owned(), 3)].into())].into();
        hostile.leechers_detail[1].behaviour = Behaviour::Liar;
        let text = hostile.summary();
        for needle in [
            "  late (liar): 1/2 complete",
            "hostile    3 peer(s): liar 2, silent 1",
            "honest     8/8 complete, completion min 1.00s  median 2.50s  max 4.00s",
            "honest     makespan 4.50s  bound 4.00s (own capacities)  efficiency 0.889",
            "dropped    3 connection(s) to silent peers by honest ones: idle 3",
        ] {
            assert!(text.contains(needle), "{needle:?} not in\n{text}");
        }
        assert_eq!(approx_bytes(1023), "1023 B");
        assert_eq!(approx_bytes(1536), "1.50 KiB");
    }
}
