//! Sharded sweeps (`sweep --shard K/M --json PART`) and `merge`: the merge of all shards is the
//! unsharded sweep (report and printed lines, apart from wall-clock keys), in any order, also
//! when the shards run under GNU parallel; parts that do not make up one sweep are rejected
//! with exit status 2 and one line naming the file.

mod common;
use common::{read_json, scenario_path, sim, Out, Scratch};

use std::io::Write as _;
use std::process::Command;

use serde_json::Value;

/// `value` without its wall-clock keys (`wall_s`, at any depth).
fn without_wall(mut value: Value) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(map) => {
                map.remove("wall_s");
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut value);
    value
}

/// `sweep SCENARIO --seeds N --start S [extra...]`; returns its output.
fn sweep(scenario: &str, seeds: &str, start: &str, extra: &[&str]) -> Out {
    let mut args = vec!["sweep", scenario, "--seeds", seeds, "--start", start];
    args.extend_from_slice(extra);
    sim(&args)
}

/// The summary and per-seed lines of a sweep or merge (stdout), which must not depend on sharding.
fn assert_same_sweep(whole: &Out, whole_json: &str, merged: &Out, merged_json: &str) {
    assert_eq!(
        merged.code, whole.code,
        "{}{}",
        merged.stdout, merged.stderr
    );
    assert_eq!(merged.stdout, whole.stdout, "merged vs unsharded stdout");
    assert_eq!(
        without_wall(read_json(merged_json)),
        without_wall(read_json(whole_json)),
        "merged vs unsharded JSON"
    );
}

#[test]
fn merged_shards_are_the_unsharded_sweep() {
    let dir = Scratch::new("equal");
    let scenario = scenario_path("sweep-small.toml");
    let whole_json = dir.path("whole.json");
    let whole = sweep(
        &scenario,
        "10",
        "3",
        &["--verbose", "--jobs", "2", "--json", &whole_json],
    );
    assert_eq!(whole.code, 0, "{}{}", whole.stdout, whole.stderr);
    assert_eq!(whole.stdout.lines().count(), 11, "{}", whole.stdout);
    let summary = whole.stdout.lines().last().unwrap();
    assert!(
        summary.starts_with("sweep-small: 10/10 seeds succeeded (seeds 3..=12, strategy auto); "),
        "{summary}"
    );
    let report = read_json(&whole_json);
    assert_eq!(report["format"], "tierswarm-sim-sweep/1");
    assert_eq!(report["shard"], Value::Null);
    assert_eq!(report["runs"].as_array().unwrap().len(), 10);
    assert_eq!(report["runs"][0]["seed"], 3);

    // Three shards of 10 seeds: 3, 3 and 4 seeds, contiguous.
    let mut parts = Vec::new();
    for (k, seeds) in [(1, "3..=5"), (2, "6..=8"), (3, "9..=12")] {
        let part = dir.path(&format!("part-{k}.json"));
        let out = sweep(
            &scenario,
            "10",
            "3",
            &["--verbose", "--shard", &format!("{k}/3"), "--json", &part],
        );
        assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
        let line = out.stdout.lines().last().unwrap().to_owned();
        assert!(
            line.contains(&format!(
                "(shard {k}/3: seeds {seeds} of 3..=12, strategy auto)"
            )),
            "{line}"
        );
        parts.push(part);
    }
    // In any order.
    let merged_json = dir.path("merged.json");
    let merged = sim(&[
        "merge",
        &parts[2],
        &parts[0],
        &parts[1],
        "--verbose",
        "--json",
        &merged_json,
    ]);
    assert_same_sweep(&whole, &whole_json, &merged, &merged_json);
    assert_eq!(merged.stderr, "");
    // The merged report merges to itself.
    let again_json = dir.path("again.json");
    let again = sim(&["merge", &merged_json, "--verbose", "--json", &again_json]);
    assert_same_sweep(&whole, &whole_json, &again, &again_json);
}

#[test]
fn failing_seeds_merge_to_the_same_lines_and_status() {
    let dir = Scratch::new("failing");
    let short = dir.path("short.toml");
    let text = std::fs::read_to_string(scenario_path("sweep-small.toml"))
        .unwrap()
        .replace("time_limit = \"10m\"", "time_limit = \"1s\"");
    std::fs::write(&short, text).unwrap();
    let whole_json = dir.path("whole.json");
    let whole = sweep(
        &short,
        "5",
        "40",
        &["--strategy", "legacy", "--json", &whole_json],
    );
    assert_eq!(whole.code, 1, "{}{}", whole.stdout, whole.stderr);
    assert_eq!(
        whole
            .stdout
            .lines()
            .filter(|l| l.starts_with("FAIL seed "))
            .count(),
        5
    );
    let parts: Vec<String> = (1..=2).map(|k| dir.path(&format!("p{k}.json"))).collect();
    for (k, part) in parts.iter().enumerate() {
        let shard = format!("{}/2", k + 1);
        let out = sweep(
            &short,
            "5",
            "40",
            &["--strategy", "legacy", "--shard", &shard, "--json", part],
        );
        assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    }
    let merged_json = dir.path("merged.json");
    let merged = sim(&["merge", &parts[0], &parts[1], "--json", &merged_json]);
    assert_same_sweep(&whole, &whole_json, &merged, &merged_json);
    assert!(
        merged
            .stdout
            .lines()
            .last()
            .unwrap()
            .ends_with("failed seeds: 40 41 42 43 44"),
        "{}",
        merged.stdout
    );
}

/// Asserts exit status 2 and one line on stderr that contains every one of `needles`.
fn assert_rejected(out: &Out, needles: &[&str]) {
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.starts_with("error: "), "{}", out.stderr);
    for needle in needles {
        assert!(
            out.stderr.contains(needle),
            "{needle:?} not in {}",
            out.stderr
        );
    }
}

#[test]
fn merge_rejects_parts_that_are_not_one_whole_sweep() {
    let dir = Scratch::new("reject");
    let scenario = scenario_path("sweep-small.toml");
    let part = |name: &str, shard: &str, start: &str, extra: &[&str]| -> String {
        let path = dir.path(name);
        let mut args = vec!["--shard", shard, "--json", &path];
        args.extend_from_slice(extra);
        let out = sweep(&scenario, "4", start, &args);
        assert_eq!(out.code, 0, "{name}: {}{}", out.stdout, out.stderr);
        path
    };
    let a1 = part("a1.json", "1/2", "1", &[]);
    let a2 = part("a2.json", "2/2", "1", &[]);
    assert_eq!(sim(&["merge", &a1, &a2]).code, 0);

    // A missing shard.
    assert_rejected(&sim(&["merge", &a1]), &["missing shard(s) 2/2"]);
    // The same shard twice.
    assert_rejected(
        &sim(&["merge", &a1, &a2, &a1]),
        &[&a1, "shard 1/2 is also in", "overlapping"],
    );
    // Another strategy.
    let legacy2 = part("legacy2.json", "2/2", "1", &["--strategy", "legacy"]);
    assert_rejected(
        &sim(&["merge", &a1, &legacy2]),
        &[&legacy2, "strategy legacy differs from auto"],
    );
    // Another seed range.
    let shifted2 = part("shifted2.json", "2/2", "2", &[]);
    assert_rejected(
        &sim(&["merge", &a1, &shifted2]),
        &[&shifted2, "4 seeds from 2 differs from 4 seeds from 1"],
    );
    // Another number of shards.
    let third = part("third.json", "2/3", "1", &[]);
    assert_rejected(
        &sim(&["merge", &a1, &third]),
        &[&third, "shard 2/3 differs from a sweep in 2 shard(s)"],
    );
    // Another scenario with the same name: told apart by its digest.
    let edited = dir.path("edited.toml");
    let text = std::fs::read_to_string(&scenario)
        .unwrap()
        .replace("time_limit = \"10m\"", "time_limit = \"11m\"");
    std::fs::write(&edited, text).unwrap();
    let other2 = dir.path("other2.json");
    let out = sweep(&edited, "4", "1", &["--shard", "2/2", "--json", &other2]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_rejected(
        &sim(&["merge", &a1, &other2]),
        &[&other2, "scenario \"sweep-small\" (digest "],
    );
    // A run report is not a sweep report; nor is a missing file.
    let run = dir.path("run.json");
    assert_eq!(sim(&["run", &scenario, "--json", &run]).code, 0);
    assert_rejected(&sim(&["merge", &a1, &run]), &[&run, "not a sweep report"]);
    let missing = dir.path("missing.json");
    assert_rejected(&sim(&["merge", &a1, &missing]), &[&missing, "cannot read"]);
    // A part whose runs are not its slice (edited by hand).
    let mut cut = read_json(&a2);
    cut["runs"].as_array_mut().unwrap().pop();
    let cut_path = dir.path("cut.json");
    std::fs::write(&cut_path, cut.to_string()).unwrap();
    assert_rejected(
        &sim(&["merge", &a1, &cut_path]),
        &[&cut_path, "should hold the runs of seeds 3..=4"],
    );
    // No part at all is a usage error.
    assert_eq!(sim(&["merge"]).code, 2);
}

#[test]
fn bad_shards_exit_2_naming_the_flag() {
    let scenario = scenario_path("sweep-small.toml");
    for shard in ["0/2", "3/2", "1/0", "x/2", "2", "1/2/3"] {
        let out = sweep(&scenario, "4", "1", &["--shard", shard]);
        assert_rejected(&out, &["--shard"]);
    }
    // More shards than seeds.
    let out = sweep(&scenario, "2", "1", &["--shard", "1/3"]);
    assert_rejected(&out, &["--shard: 3 shards for 2 seeds"]);
    // An unwritable report is found before the sweep runs.
    let out = sweep(
        &scenario,
        "2",
        "1",
        &["--json", "/nonexistent-dir/part.json"],
    );
    assert_rejected(&out, &["--json", "/nonexistent-dir/part.json"]);
}

/// Two local shards under GNU parallel, merged: the same lines as the unsharded sweep.
/// Skipped with a note when `parallel` is not installed, unless `TIERSWARM_REQUIRE_PARALLEL=1`
/// (as `.ci/run` sets), where its absence fails the test.
#[test]
fn gnu_parallel_shards_merge_to_the_unsharded_summary() {
    let have_parallel = Command::new("parallel")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_parallel {
        let required = std::env::var("TIERSWARM_REQUIRE_PARALLEL").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "GNU parallel is not installed (`parallel --version` failed) but \
             TIERSWARM_REQUIRE_PARALLEL=1: install it (apt-get install -y parallel)"
        );
        // Straight to stderr: the test harness would swallow eprintln! of a passing test.
        let _ = writeln!(
            std::io::stderr(),
            "note: GNU parallel is not installed; skipping the sharded-sweep test under it"
        );
        return;
    }
    let dir = Scratch::new("parallel");
    let scenario = scenario_path("sweep-small.toml");
    let whole_json = dir.path("whole.json");
    let whole = sweep(&scenario, "8", "21", &["--json", &whole_json]);
    assert_eq!(whole.code, 0, "{}{}", whole.stdout, whole.stderr);

    let part = dir.path("part-{}.json");
    let out = Command::new("parallel")
        .args(["--will-cite", "--halt", "now,fail=1"])
        .arg(env!("CARGO_BIN_EXE_tierswarm-sim"))
        .args(["sweep", &scenario, "--seeds", "8", "--start", "21"])
        .args(["--shard", "{}/2", "--json", &part])
        .args([":::", "1", "2"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "parallel: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let merged_json = dir.path("merged.json");
    let merged = sim(&[
        "merge",
        &dir.path("part-1.json"),
        &dir.path("part-2.json"),
        "--json",
        &merged_json,
    ]);
    assert_same_sweep(&whole, &whole_json, &merged, &merged_json);
}
