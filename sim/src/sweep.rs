//! Seed sweeps, their shards and the merge of shards (contracts.md, `tierswarm-sim sweep` and
//! `merge`).
//!
//! A sweep runs seeds `start..start + seeds`. `--shard K/M` runs the K-th of M **contiguous**
//! slices: shard `K` (1-based) runs the seed offsets `⌊(K−1)·seeds/M⌋ .. ⌊K·seeds/M⌋`, so the
//! slices are in seed order, cover every seed once, and differ in size by at most one. A sweep
//! writes a [`SweepReport`] (`--json`); [`merge`] checks that a set of shard reports is exactly
//! one sweep cut into all of its shards and joins them into the report the unsharded sweep
//! writes. The printed lines ([`SweepReport::run_line`], [`SweepReport::summary_line`]) are
//! computed from the report alone, so a merge prints what the unsharded sweep printed.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::report::{CompletionStats, Report};
use crate::scenario::{Scenario, Strategy};

/// The `format` of a sweep report this simulator writes and merges.
pub const FORMAT: &str = "tierswarm-sim-sweep/1";

/// Most failing seeds listed in the summary line (each also has its own line).
pub const LISTED_FAILURES: usize = 20;

/// Most missing shards a merge error names.
const LISTED_MISSING: usize = 10;

/// `--shard K/M`: the K-th (1-based) of M contiguous slices of a sweep's seeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Shard {
    /// K, in `1..=count`.
    pub index: u64,
    /// M, at least 1.
    pub count: u64,
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Shard, String> {
        let (k, m) = s
            .split_once('/')
            .ok_or_else(|| "expected K/M, e.g. 2/8".to_owned())?;
        let parse = |what: &str, v: &str| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| format!("{what} {v:?} is not a whole number (expected K/M, e.g. 2/8)"))
        };
        let (index, count) = (parse("K", k)?, parse("M", m)?);
        if count == 0 {
            return Err("M must be at least 1".into());
        }
        if index == 0 || index > count {
            return Err(format!(
                "K must be in 1..={count} (shards are numbered from 1)"
            ));
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    /// `K/M`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// The whole sweep as one shard.
    pub const WHOLE: Shard = Shard { index: 1, count: 1 };

    /// The seeds this shard runs out of `seeds` seeds from `start` (contiguous; empty when
    /// there are more shards than seeds). A sweep ends at `u64::MAX` at the latest.
    pub fn seeds(&self, start: u64, seeds: u64) -> Range<u64> {
        let cut = |k: u64| {
            let offset = u128::from(k.min(self.count)) * u128::from(seeds) / u128::from(self.count);
            // offset ≤ seeds, so it fits.
            start.saturating_add(offset as u64)
        };
        cut(self.index.saturating_sub(1))..cut(self.index)
    }
}

/// The `--json` report of a sweep, a shard of one, or a merge of shards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepReport {
    /// Always [`FORMAT`].
    pub format: String,
    /// The simulator that ran it (`tierswarm-sim` and its version); shards of different
    /// simulators are not merged.
    pub simulator: String,
    /// The scenario's `name`.
    pub scenario: String,
    /// BLAKE3 of the validated scenario (formatting and comments aside), hex.
    pub scenario_digest: String,
    /// The scenario file as named on the command line (the reproducing commands use it).
    pub scenario_path: String,
    /// The strategy of every run.
    pub strategy: Strategy,
    /// The sweep's first seed.
    pub start: u64,
    /// How many seeds the whole sweep has (all shards together).
    pub seeds: u64,
    /// Which shard this is; `null` for a whole sweep or a merge.
    pub shard: Option<Shard>,
    /// Runs in this report that succeeded (exit status 0).
    pub succeeded: u64,
    /// Seeds of the runs in this report that did not succeed.
    pub failed_seeds: Vec<u64>,
    /// Makespans of the successful runs (the honest crowd's, `honest_makespan_s`: the whole
    /// crowd's when no peer is hostile).
    pub makespan_s: CompletionStats,
    /// Efficiencies of the successful runs (`honest_efficiency`, likewise).
    pub efficiency: CompletionStats,
    /// Real seconds it took; for a merge, the sum over the shards.
    pub wall_s: f64,
    /// One report per seed, in seed order.
    pub runs: Vec<Report>,
}

/// What a sweep is, before it has run.
#[derive(Debug, Clone)]
pub struct SweepSpec {
    /// The scenario.
    pub scenario: Scenario,
    /// Its path as given on the command line.
    pub path: String,
    /// The strategy of every run.
    pub strategy: Strategy,
    /// The first seed.
    pub start: u64,
    /// How many seeds in all.
    pub seeds: u64,
    /// The slice to run, if only one.
    pub shard: Option<Shard>,
}

impl SweepSpec {
    /// The seeds to run.
    pub fn range(&self) -> Range<u64> {
        self.shard
            .unwrap_or(Shard::WHOLE)
            .seeds(self.start, self.seeds)
    }

    /// The report of this sweep once `runs` (in seed order) are done.
    pub fn report(&self, runs: Vec<Report>, wall_s: f64) -> SweepReport {
        SweepReport::new(
            Header {
                simulator: simulator(),
                scenario: self.scenario.name.clone(),
                scenario_digest: scenario_digest(&self.scenario),
                scenario_path: self.path.clone(),
                strategy: self.strategy,
                start: self.start,
                seeds: self.seeds,
                shard: self.shard,
            },
            runs,
            wall_s,
        )
    }
}

/// The identifying part of a [`SweepReport`].
struct Header {
    simulator: String,
    scenario: String,
    scenario_digest: String,
    scenario_path: String,
    strategy: Strategy,
    start: u64,
    seeds: u64,
    shard: Option<Shard>,
}

/// `tierswarm-sim <version>`.
fn simulator() -> String {
    format!("tierswarm-sim {}", env!("CARGO_PKG_VERSION"))
}

/// BLAKE3 of the validated scenario, hex.
pub fn scenario_digest(scenario: &Scenario) -> String {
    blake3::hash(format!("{scenario:?}").as_bytes())
        .to_hex()
        .to_string()
}

impl SweepReport {
    fn new(h: Header, runs: Vec<Report>, wall_s: f64) -> SweepReport {
        let ok: Vec<&Report> = runs.iter().filter(|r| r.exit_code() == 0).collect();
        // The honest crowd's figures: the whole crowd's when no peer is hostile.
        let makespans: Vec<f64> = ok.iter().map(|r| r.honest.makespan_s).collect();
        let efficiencies: Vec<f64> = ok.iter().map(|r| r.honest.efficiency).collect();
        SweepReport {
            format: FORMAT.to_owned(),
            simulator: h.simulator,
            scenario: h.scenario,
            scenario_digest: h.scenario_digest,
            scenario_path: h.scenario_path,
            strategy: h.strategy,
            start: h.start,
            seeds: h.seeds,
            shard: h.shard,
            succeeded: ok.len() as u64,
            failed_seeds: runs
                .iter()
                .filter(|r| r.exit_code() != 0)
                .map(|r| r.seed)
                .collect(),
            makespan_s: CompletionStats::of(&makespans),
            efficiency: CompletionStats::of(&efficiencies),
            wall_s,
            runs,
        }
    }

    /// The report as pretty-printed JSON (with a trailing newline).
    pub fn to_json(&self) -> String {
        // Plain structs, maps with string keys and finite or null numbers: cannot fail.
        let mut json = serde_json::to_string_pretty(self).unwrap_or_default();
        json.push('\n');
        json
    }

    /// The process exit status: 0 when every run succeeded, else 1.
    pub fn exit_code(&self) -> u8 {
        u8::from(!self.failed_seeds.is_empty())
    }

    /// The command that reproduces the run of `seed`.
    pub fn reproduce(&self, seed: u64) -> String {
        format!(
            "tierswarm-sim run {} --seed {seed} --strategy {}",
            shell_quote(&self.scenario_path),
            self.strategy
        )
    }

    /// The line printed for one run: always for a failure, with `--verbose` for a success.
    pub fn run_line(&self, run: &Report) -> String {
        if run.exit_code() == 0 {
            format!(
                "seed {}: ok, makespan {:.2}s, efficiency {:.3}, trace {}",
                run.seed, run.honest.makespan_s, run.honest.efficiency, run.trace_hash
            )
        } else {
            format!(
                "FAIL seed {}: {}; reproduce: {}",
                run.seed,
                why_failed(run),
                self.reproduce(run.seed)
            )
        }
    }

    /// The last line printed: what ran, how many succeeded, the spread of makespans and
    /// efficiencies, and the first failing seeds.
    pub fn summary_line(&self) -> String {
        let fmt = |x: Option<f64>, unit: &str, digits: usize| {
            x.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}{unit}"))
        };
        let whole = self.start..self.start.saturating_add(self.seeds);
        let range = |r: &Range<u64>| match r.end.checked_sub(1) {
            Some(last) if !r.is_empty() => format!("{}..={last}", r.start),
            _ => "none".to_owned(),
        };
        let what = match self.shard {
            Some(shard) => format!(
                "shard {shard}: seeds {} of {}",
                range(&shard.seeds(self.start, self.seeds)),
                range(&whole)
            ),
            None => format!("seeds {}", range(&whole)),
        };
        let mut listed: Vec<String> = self
            .failed_seeds
            .iter()
            .take(LISTED_FAILURES)
            .map(u64::to_string)
            .collect();
        if self.failed_seeds.len() > LISTED_FAILURES {
            listed.push(format!(
                "... ({} more)",
                self.failed_seeds.len() - LISTED_FAILURES
            ));
        }
        let (m, e) = (&self.makespan_s, &self.efficiency);
        format!(
            "{}: {}/{} seeds succeeded ({what}, strategy {}); makespan of the successful runs \
             min {} median {} max {}; efficiency min {} median {} max {}; failed seeds: {}",
            self.scenario,
            self.succeeded,
            self.runs.len(),
            self.strategy,
            fmt(m.min, "s", 2),
            fmt(m.median, "s", 2),
            fmt(m.max, "s", 2),
            fmt(e.min, "", 3),
            fmt(e.median, "", 3),
            fmt(e.max, "", 3),
            if listed.is_empty() {
                "none".to_owned()
            } else {
                listed.join(" ")
            }
        )
    }

    /// Everything a sweep prints on stdout: a line per failing run (per run with `verbose`),
    /// then the summary line.
    pub fn printed(&self, verbose: bool) -> String {
        let mut out = String::new();
        for run in &self.runs {
            if verbose || run.exit_code() != 0 {
                out.push_str(&self.run_line(run));
                out.push('\n');
            }
        }
        out.push_str(&self.summary_line());
        out.push('\n');
        out
    }
}

/// One line saying why a run did not succeed, e.g.
/// `time-limit: 3/8 leechers complete after 120.00s`.
/// Only honest leechers count (`honest` is said when some peer was hostile).
pub fn why_failed(report: &Report) -> String {
    let h = &report.honest;
    let whom = if report.hostile.is_empty() {
        "leechers"
    } else {
        "honest leechers"
    };
    format!(
        "{}: {}/{} {whom} complete after {:.2}s",
        report.exit_reason, h.completed, h.leechers, h.makespan_s
    )
}

/// `text` quoted for a POSIX shell when it needs it.
pub fn shell_quote(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c));
    if plain {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// Why a set of shard reports cannot be merged. Displays as one line naming the file.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// No file was given.
    #[error("merge needs at least one shard report")]
    NoParts,
    /// A file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A file is not a sweep report of this format.
    #[error("{}: not a sweep report: {why}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the key or position.
        why: String,
    },
    /// A file does not belong with the others, or is inconsistent in itself.
    #[error("{}: {why}", path.display())]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// What differs, quoting both sides.
        why: String,
    },
    /// Some shards are absent.
    #[error("missing shard(s) {missing}: merge needs all {count} shards of the sweep")]
    Missing {
        /// The absent shards, e.g. `2/4, 3/4`.
        missing: String,
        /// How many shards the sweep has.
        count: u64,
    },
}

/// Reads one shard report.
pub fn read_part(path: &Path) -> Result<SweepReport, MergeError> {
    let text = std::fs::read_to_string(path).map_err(|source| MergeError::Read {
        path: path.to_owned(),
        source,
    })?;
    let parse = |why: String| MergeError::Parse {
        path: path.to_owned(),
        why,
    };
    // Check the format first, so that another kind of JSON gets a plain answer.
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| parse(e.to_string()))?;
    match value.get("format").and_then(|f| f.as_str()) {
        Some(FORMAT) => {}
        Some(other) => return Err(parse(format!("format {other:?}, expected {FORMAT:?}"))),
        None => return Err(parse(format!("no \"format\": {FORMAT:?} key"))),
    }
    serde_path_to_error::deserialize(value)
        .map_err(|e| parse(format!("{}: {}", e.path(), e.inner())))
}

/// Joins the reports of every shard of one sweep (in any order) into the report of the whole
/// sweep. Rejects parts of different sweeps (simulator, scenario, strategy, seed range or shard
/// count), a shard given twice, missing shards, and a part whose runs are not its slice.
pub fn merge(parts: Vec<(PathBuf, SweepReport)>) -> Result<SweepReport, MergeError> {
    let Some((first_path, first)) = parts.first() else {
        return Err(MergeError::NoParts);
    };
    let count = first.shard.unwrap_or(Shard::WHOLE).count;
    let mut slots: BTreeMap<u64, (&Path, &SweepReport)> = BTreeMap::new();
    for (path, part) in &parts {
        let mismatch = |why: String| MergeError::Mismatch {
            path: path.clone(),
            why,
        };
        let differs = |what: &str, this: String, that: String| {
            mismatch(format!(
                "{what} {this} differs from {that} in {}",
                first_path.display()
            ))
        };
        if part.simulator != first.simulator {
            return Err(differs(
                "simulator",
                format!("{:?}", part.simulator),
                format!("{:?}", first.simulator),
            ));
        }
        if (&part.scenario, &part.scenario_digest) != (&first.scenario, &first.scenario_digest) {
            return Err(differs(
                "scenario",
                format!(
                    "{:?} (digest {})",
                    part.scenario,
                    short(&part.scenario_digest)
                ),
                format!(
                    "{:?} (digest {})",
                    first.scenario,
                    short(&first.scenario_digest)
                ),
            ));
        }
        if part.strategy != first.strategy {
            return Err(differs(
                "strategy",
                part.strategy.to_string(),
                first.strategy.to_string(),
            ));
        }
        if (part.start, part.seeds) != (first.start, first.seeds) {
            let seeds = |r: &SweepReport| format!("{} seeds from {}", r.seeds, r.start);
            return Err(differs("sweep of", seeds(part), seeds(first)));
        }
        if part.seeds == 0 || part.start.checked_add(part.seeds).is_none() {
            return Err(mismatch(format!(
                "{} seeds from {} is not a sweep",
                part.seeds, part.start
            )));
        }
        let shard = part.shard.unwrap_or(Shard::WHOLE);
        if shard.count != count {
            return Err(differs(
                "shard",
                shard.to_string(),
                format!("a sweep in {count} shard(s)"),
            ));
        }
        if shard.index == 0 || shard.index > count || count > part.seeds {
            return Err(mismatch(format!(
                "shard {shard} of a sweep of {} seeds is not a shard",
                part.seeds
            )));
        }
        if let Some((other, _)) = slots.get(&shard.index) {
            return Err(mismatch(format!(
                "shard {shard} is also in {} (overlapping shards)",
                other.display()
            )));
        }
        let expected = shard.seeds(part.start, part.seeds);
        let seeds: Vec<u64> = part.runs.iter().map(|r| r.seed).collect();
        if !seeds.iter().copied().eq(expected.clone()) {
            return Err(mismatch(format!(
                "shard {shard} should hold the runs of seeds {}..={} in order, but holds {}",
                expected.start,
                expected.end - 1,
                describe_seeds(&seeds)
            )));
        }
        if let Some(run) = part
            .runs
            .iter()
            .find(|r| r.scenario != part.scenario || r.strategy != part.strategy)
        {
            return Err(mismatch(format!(
                "the run of seed {} is of {:?} with strategy {}, not of the part's scenario",
                run.seed, run.scenario, run.strategy
            )));
        }
        slots.insert(shard.index, (path, part));
    }
    if slots.len() as u64 != count {
        // At most `LISTED_MISSING` named; they are among the first parts + that many indices.
        let mut missing: Vec<String> = (1..=count)
            .filter(|k| !slots.contains_key(k))
            .take(LISTED_MISSING)
            .map(|k| format!("{k}/{count}"))
            .collect();
        let absent = count - slots.len() as u64;
        if absent > LISTED_MISSING as u64 {
            missing.push(format!("... ({} more)", absent - LISTED_MISSING as u64));
        }
        return Err(MergeError::Missing {
            missing: missing.join(", "),
            count,
        });
    }
    let ordered: Vec<&SweepReport> = slots.into_values().map(|(_, r)| r).collect();
    let lead = ordered[0];
    let header = Header {
        simulator: lead.simulator.clone(),
        scenario: lead.scenario.clone(),
        scenario_digest: lead.scenario_digest.clone(),
        // Shards may have run on machines with different paths: the reproducing commands use
        // the first shard's.
        scenario_path: lead.scenario_path.clone(),
        strategy: lead.strategy,
        start: lead.start,
        seeds: lead.seeds,
        shard: None,
    };
    let wall_s = ordered.iter().map(|r| r.wall_s).sum();
    let runs = ordered
        .iter()
        .flat_map(|r| r.runs.iter().cloned())
        .collect();
    Ok(SweepReport::new(header, runs, wall_s))
}

/// The first 12 hex digits of a digest.
fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

/// `none`, `7`, or `7..=9 (3 runs)` / a short list, for error messages.
fn describe_seeds(seeds: &[u64]) -> String {
    match seeds {
        [] => "none".to_owned(),
        [one] => one.to_string(),
        [first, .., last] => format!("{} runs, seeds {first} to {last}", seeds.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_reject_what_is_not_k_of_m() {
        assert_eq!("2/8".parse(), Ok(Shard { index: 2, count: 8 }));
        assert_eq!("1/1".parse::<Shard>().unwrap(), Shard::WHOLE);
        for bad in ["", "2", "0/2", "3/2", "1/0", "a/2", "2/b", "-1/2", "1/2/3"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad:?}");
        }
        assert!("0/4".parse::<Shard>().unwrap_err().contains("1..=4"));
    }

    #[test]
    fn shards_are_contiguous_cover_every_seed_once_and_balance() {
        for seeds in 1..40u64 {
            for count in 1..=seeds {
                let mut next = 100;
                for index in 1..=count {
                    let r = Shard { index, count }.seeds(100, seeds);
                    assert_eq!(r.start, next, "{index}/{count} of {seeds}");
                    let len = r.end - r.start;
                    assert!(len == seeds / count || len == seeds / count + 1);
                    next = r.end;
                }
                assert_eq!(next, 100 + seeds);
            }
        }
        // 10 seeds from 1 in 3 shards: 1..=3, 4..=6, 7..=10.
        let cut: Vec<Range<u64>> = (1..=3)
            .map(|index| Shard { index, count: 3 }.seeds(1, 10))
            .collect();
        assert_eq!(cut, [1..4, 4..7, 7..11]);
        // No overflow at the top of the seed space.
        let top = Shard { index: 2, count: 2 }.seeds(u64::MAX - 10, 10);
        assert_eq!(top, u64::MAX - 5..u64::MAX);
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("sim/scenarios/a.toml"), "sim/scenarios/a.toml");
        assert_eq!(shell_quote("my file's.toml"), r"'my file'\''s.toml'");
    }
}
