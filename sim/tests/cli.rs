//! The `tierswarm-sim` command line against its contract (contracts.md, `tierswarm-sim`): the real
//! binary, its exit statuses, its report keys and its output files.

mod common;
use common::{read_json, scenario_path, sim, Scratch};

use std::collections::BTreeSet;

use serde_json::Value;

/// The report keys of contracts.md, in its order.
const CONTRACT_KEYS: [&str; 24] = [
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
    "efficiency",
    "leechers_detail",
    "availability_bytes",
    "data_bytes",
    "messages",
    "refine_requests",
    "refine_timeouts",
    "retries",
    "duplicate_units",
    "events",
    "wall_s",
    "trace_hash",
];

/// Keys beyond the contract's, each documented in sim/README.md ("Report").
const EXTRA_KEYS: [&str; 11] = [
    "exit_reason",
    "request_timeouts",
    "bound_fluid_s",
    "hostile",
    "disconnects",
    "honest_leechers",
    "honest_completed",
    "honest_completion_s",
    "honest_makespan_s",
    "honest_bound_s",
    "honest_efficiency",
];

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[test]
fn run_smoke_writes_the_report_and_every_artefact() {
    let dir = Scratch::new("artefacts");
    let (json, trace, svg, perfetto) = (
        dir.path("report.json"),
        dir.path("trace.jsonl"),
        dir.path("progress.svg"),
        dir.path("perfetto.json"),
    );
    let out = sim(&[
        "run",
        &scenario_path("smoke.toml"),
        "--json",
        &json,
        "--trace",
        &trace,
        "--svg",
        &svg,
        "--perfetto",
        &perfetto,
    ]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(out.stderr, "");
    assert!(out.stdout.contains("8/8 complete"), "{}", out.stdout);

    // The report: exactly the contract's keys (plus the documented extras), with sane values.
    let r = read_json(&json);
    let keys: BTreeSet<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
    let expected: BTreeSet<&str> = CONTRACT_KEYS.iter().chain(&EXTRA_KEYS).copied().collect();
    assert_eq!(keys, expected);
    assert_eq!(r["scenario"], "smoke");
    assert_eq!(r["seed"], 1);
    assert_eq!(r["strategy"], "auto");
    assert_eq!(r["file_bytes"], 64u64 << 20);
    assert_eq!(
        (r["leechers"].as_u64(), r["seeders"].as_u64()),
        (Some(8), Some(1))
    );
    assert_eq!(r["completed"], 8);
    assert_eq!(r["all_complete"], true);
    assert_eq!(r["exit_reason"], "complete");
    let c = &r["completion_s"];
    let (min, median, max) = (
        c["min"].as_f64().unwrap(),
        c["median"].as_f64().unwrap(),
        c["max"].as_f64().unwrap(),
    );
    assert!(0.0 < min && min <= median && median <= max, "{c}");
    // Everyone joins at 0 s, so the makespan is the slowest leecher's completion time.
    let makespan = r["makespan_s"].as_f64().unwrap();
    assert!(close(makespan, max), "makespan {makespan} vs max {max}");
    // Kumar–Ross: max(F/u_s, F/d_min, N·F/(u_s + Σu_i)) = 8·64 MiB / (100 + 8·50) Mbit/s; it is
    // the bound, as everyone joins at 0 s and 64 MiB at 200 Mbit/s takes only 2.7 s.
    let bound = r["bound_s"].as_f64().unwrap();
    assert!(close(bound, 8.0 * (64u64 << 23) as f64 / 500e6), "{bound}");
    assert_eq!(r["bound_kr_s"], r["bound_s"]);
    // With everyone there from the start, the fluid bound is Kumar–Ross too.
    assert!(
        close(r["bound_fluid_s"].as_f64().unwrap(), bound),
        "{}",
        r["bound_fluid_s"]
    );
    // Each leecher, joined at 0 s, finished within the makespan.
    let detail = r["leechers_detail"].as_array().unwrap();
    assert_eq!(detail.len(), 8);
    for l in detail {
        assert_eq!(
            (&l["group"], &l["join_s"]),
            (&Value::from("leechers"), &Value::from(0.0))
        );
        let done = l["complete_s"].as_f64().unwrap();
        assert!(min <= done && done <= makespan, "{l}");
    }
    assert!(
        makespan >= bound,
        "faster than the lower bound: {makespan} < {bound}"
    );
    let efficiency = r["efficiency"].as_f64().unwrap();
    assert!(close(efficiency, bound / makespan), "{efficiency}");
    // Every leecher received every byte at least once.
    assert!(r["data_bytes"].as_u64().unwrap() >= 8 * (64 << 20));
    assert!(r["availability_bytes"].as_u64().unwrap() > 0);
    let messages = r["messages"].as_object().unwrap();
    let units = tierswarm_core::Geometry::new(64 << 20).unwrap().units();
    assert!(messages["transfer"].as_u64().unwrap() >= 8 * units);
    assert!(messages.values().all(|v| v.as_u64().is_some()));
    for key in [
        "refine_requests",
        "refine_timeouts",
        "retries",
        "request_timeouts",
        "duplicate_units",
        "events",
    ] {
        assert!(r[key].as_u64().is_some(), "{key}: {}", r[key]);
    }
    assert!(r["events"].as_u64().unwrap() > 0);
    assert!(
        r["request_timeouts"].as_u64() <= r["retries"].as_u64(),
        "timeouts are a part of the retries"
    );
    assert!(r["wall_s"].as_f64().unwrap() >= 0.0);
    let hash = r["trace_hash"].as_str().unwrap();
    assert!(
        hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
        "{hash}"
    );
    assert!(
        out.stdout.contains(hash),
        "the summary shows the trace hash"
    );

    // The trace: JSON lines, one object per line, each naming its node and time, in time order.
    let text = std::fs::read_to_string(&trace).unwrap();
    assert!(!text.is_empty() && text.ends_with('\n'));
    let mut last_t = 0;
    for (n, line) in text.lines().enumerate() {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("trace line {}: {e}", n + 1));
        assert!(v["node"].as_u64().unwrap() < 9, "line {}: {line}", n + 1);
        let t = v["t"].as_u64().unwrap();
        assert!(t >= last_t, "line {}: time goes back: {line}", n + 1);
        last_t = t;
        assert!(v["ev"].is_string(), "line {}: {line}", n + 1);
    }

    // The chart.
    let chart = std::fs::read_to_string(&svg).unwrap();
    assert!(chart.contains("<svg") && chart.trim_end().ends_with("</svg>"));

    // Perfetto: Chrome trace-event JSON, one named process per peer.
    let p = read_json(&perfetto);
    let events = p["traceEvents"].as_array().unwrap();
    assert!(!events.is_empty());
    let processes: BTreeSet<u64> = events
        .iter()
        .filter(|e| e["name"] == "process_name")
        .map(|e| e["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(processes, (0..9).collect());
}

/// Runs smoke with `--trace` and `--json`; returns (trace bytes, trace_hash).
fn traced(dir: &Scratch, tag: &str, extra: &[&str]) -> (Vec<u8>, String) {
    let (trace, json) = (
        dir.path(&format!("{tag}.jsonl")),
        dir.path(&format!("{tag}.json")),
    );
    let mut args = vec!["run", "", "--trace", &trace, "--json", &json];
    let smoke = scenario_path("smoke.toml");
    args[1] = &smoke;
    args.extend_from_slice(extra);
    let out = sim(&args);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let hash = read_json(&json)["trace_hash"].as_str().unwrap().to_owned();
    (std::fs::read(&trace).unwrap(), hash)
}

#[test]
fn same_seed_replays_byte_for_byte_and_another_seed_does_not() {
    let dir = Scratch::new("replay");
    let (a, hash_a) = traced(&dir, "a", &[]);
    let (b, hash_b) = traced(&dir, "b", &["--seed", "1", "--strategy", "auto"]);
    assert!(a == b, "same seed, different trace files");
    assert_eq!(hash_a, hash_b);
    let (c, hash_c) = traced(&dir, "c", &["--seed", "2"]);
    assert!(a != c, "seeds 1 and 2 gave the same trace");
    assert_ne!(hash_a, hash_c);
}

#[test]
fn trace_hash_does_not_depend_on_writing_the_trace() {
    let dir = Scratch::new("hash-without-trace");
    let (_, traced_hash) = traced(&dir, "t", &[]);
    let json = dir.path("plain.json");
    let out = sim(&["run", &scenario_path("smoke.toml"), "--json", &json]);
    assert_eq!(out.code, 0);
    assert_eq!(read_json(&json)["trace_hash"], traced_hash.as_str());
}

#[test]
fn legacy_and_hierarchical_strategies_complete_smoke() {
    let dir = Scratch::new("strategies");
    for strategy in ["legacy", "hierarchical"] {
        let json = dir.path(&format!("{strategy}.json"));
        let out = sim(&[
            "run",
            &scenario_path("smoke.toml"),
            "--strategy",
            strategy,
            "--json",
            &json,
        ]);
        assert_eq!(out.code, 0, "{strategy}: {}{}", out.stdout, out.stderr);
        let r = read_json(&json);
        assert_eq!(r["strategy"], strategy);
        assert_eq!(
            (r["completed"].as_u64(), &r["all_complete"]),
            (Some(8), &Value::Bool(true))
        );
        let kinds: BTreeSet<&str> = r["messages"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        if strategy == "legacy" {
            // Only the flat protocol: bitfields and HAVEs, no summaries or refinements.
            assert!(
                kinds.contains("bitfield") && kinds.contains("have"),
                "{kinds:?}"
            );
            assert_eq!(r["refine_requests"], 0);
            for k in ["summary", "refine_request", "refine_response"] {
                assert!(!kinds.contains(k), "{k} under legacy: {kinds:?}");
            }
        } else {
            // Capable peers send a T3 summary first and never a full T1 bitfield.
            assert!(kinds.contains("summary"), "{kinds:?}");
            assert!(!kinds.contains("bitfield"), "{kinds:?}");
        }
    }
}

#[test]
fn too_short_a_time_limit_exits_1_and_says_why() {
    let dir = Scratch::new("time-limit");
    let text = std::fs::read_to_string(scenario_path("smoke.toml"))
        .unwrap()
        .replace("time_limit = \"10m\"", "time_limit = \"2s\"");
    let path = dir.write("short.toml", &text);
    let json = dir.path("short.json");
    let out = sim(&["run", &path, "--json", &json]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("time-limit"), "{}", out.stdout);
    let line = out.one_line();
    assert!(
        line.starts_with("error: ") && line.contains("time-limit: 0/8 leechers"),
        "{line}"
    );
    let r = read_json(&json);
    assert_eq!(r["exit_reason"], "time-limit");
    assert_eq!(
        (&r["all_complete"], r["completed"].as_u64()),
        (&Value::Bool(false), Some(0))
    );
    assert_eq!(r["completion_s"]["median"], Value::Null);
}

/// `(what, edit of smoke.toml, key the error must name)`.
type Case = (&'static str, fn(&str) -> String, &'static str);

fn append(extra: &'static str) -> impl Fn(&str) -> String {
    move |s: &str| format!("{s}\n{extra}")
}

#[test]
fn malformed_scenarios_exit_2_with_one_line_naming_the_key() {
    let cases: Vec<Case> = vec![
        (
            "bad size",
            |s| s.replace("\"64MiB\"", "\"64 megs\""),
            "file_size",
        ),
        (
            "zero size",
            |s| s.replace("\"64MiB\"", "\"0\""),
            "file_size",
        ),
        (
            "bad rate",
            |s| s.replace("upload = \"100Mbit/s\"", "upload = \"fast\""),
            "group[0].upload",
        ),
        (
            "zero rate",
            |s| s.replace("download = \"200Mbit/s\"", "download = \"0Mbit/s\""),
            "group[1].download",
        ),
        (
            "bad duration",
            |s| s.replace("\"10m\"", "\"10 fortnights\""),
            "time_limit",
        ),
        (
            "bad latency",
            |s| s.replace("latency = \"20ms\"", "latency = \"-20ms\""),
            "group[1].latency",
        ),
        (
            "unknown top-level key",
            |s| s.replace("seed = 1\n", "seed = 1\ncolour = \"blue\"\n"),
            "colour",
        ),
        (
            "unknown group key",
            |s| s.replace("count = 8\n", "count = 8\nspeed = 3\n"),
            "group[1].speed",
        ),
        (
            "missing file_size",
            |s| s.replace("file_size = \"64MiB\"\n", ""),
            "file_size",
        ),
        (
            "missing role",
            |s| s.replacen("role = \"seeder\"\n", "", 1),
            "group[0].role",
        ),
        (
            "bad role",
            |s| s.replacen("role = \"seeder\"", "role = \"server\"", 1),
            "group[0].role",
        ),
        (
            "bad protocol",
            |s| s.replacen("protocol = \"hierarchical\"", "protocol = \"tiered\"", 1),
            "group[0].protocol",
        ),
        (
            "loss above 1",
            |s| append("[faults]\nloss = 1.5\n")(s),
            "faults.loss",
        ),
        (
            "negative reorder",
            |s| append("[faults]\nreorder = -0.1\n")(s),
            "faults.reorder",
        ),
        (
            "crash fraction above 1",
            |s| {
                append(
                    "[[faults.crash]]\ngroup = \"leechers\"\nfraction = 1.5\nat = \"1s\"\n\
                     down_for = \"1s\"\n",
                )(s)
            },
            "faults.crash[0].fraction",
        ),
        (
            "crash of an unknown group",
            |s| {
                append(
                    "[[faults.crash]]\ngroup = \"nobody\"\nfraction = 0.5\nat = \"1s\"\n\
                     down_for = \"1s\"\n",
                )(s)
            },
            "faults.crash[0].group",
        ),
        (
            "partition with an unknown group",
            |s| {
                append(
                    "[[faults.partition]]\ngroups = [\"seed\", \"ghosts\"]\nat = \"1s\"\n\
                     duration = \"1s\"\n",
                )(s)
            },
            "faults.partition[0].groups[1]",
        ),
        (
            "no leecher",
            |s| s.replace("role = \"leecher\"", "role = \"seeder\""),
            "group",
        ),
    ];
    let smoke = std::fs::read_to_string(scenario_path("smoke.toml")).unwrap();
    let dir = Scratch::new("malformed");
    for (what, edit, key) in cases {
        let text = edit(&smoke);
        assert_ne!(text, smoke, "{what}: the edit changed nothing");
        let path = dir.write("bad.toml", &text);
        let out = sim(&["run", &path]);
        assert_eq!(out.code, 2, "{what}: {}{}", out.stdout, out.stderr);
        assert_eq!(out.stdout, "", "{what}");
        // One line: the file, the key, and why.
        let line = out.one_line();
        let prefix = format!("error: {path}: {key}: ");
        assert!(
            line.starts_with(&prefix) && line.len() > prefix.len(),
            "{what}: expected {prefix:?} and a reason, got {line:?}"
        );
        // The sweep validates the same way.
        let sweep = sim(&["sweep", &path, "--seeds", "2"]);
        assert_eq!(sweep.code, 2, "{what} (sweep): {}", sweep.stderr);
        assert_eq!(sweep.one_line(), line, "{what} (sweep)");
    }
    // The reason says what was wrong and how to write it.
    let path = dir.write("rate.toml", &smoke.replace("\"50Mbit/s\"", "\"40Mbps\""));
    let out = sim(&["run", &path]);
    assert_eq!(out.code, 2);
    assert_eq!(
        out.one_line(),
        format!(
            "error: {path}: group[1].upload: cannot parse \"40Mbps\" as a rate (e.g. \"100Mbit/s\")"
        )
    );
}

#[test]
fn bad_flags_exit_2_with_one_line() {
    let smoke = scenario_path("smoke.toml");
    let smoke = smoke.as_str();
    let cases: [(&[&str], &str); 12] = [
        (&["run", smoke, "--bogus"], "--bogus"),
        (&["run", smoke, "--strategy", "flat"], "--strategy"),
        (&["run", smoke, "--seed", "abc"], "--seed"),
        (&["run", smoke, "--seed", "-1"], "-1"),
        (&["run", smoke, "--seed"], "--seed"),
        (&["run"], "<SCENARIO>"),
        (
            &["run", "/nonexistent/scenario.toml"],
            "/nonexistent/scenario.toml",
        ),
        (&["sweep", smoke], "--seeds"),
        (&["sweep", smoke, "--seeds", "0"], "--seeds"),
        (&["sweep", smoke, "--seeds", "2", "--jobs", "0"], "--jobs"),
        (
            &[
                "sweep",
                smoke,
                "--seeds",
                "3",
                "--start",
                "18446744073709551614",
            ],
            "--seeds",
        ),
        (&["frobnicate"], "frobnicate"),
    ];
    for (args, names) in cases {
        let out = sim(args);
        assert_eq!(out.code, 2, "{args:?}: {}{}", out.stdout, out.stderr);
        let line = out.one_line();
        assert!(
            line.starts_with("error: ") && line.contains(names),
            "{args:?}: {line}"
        );
    }
    // An output file that cannot be written is a bad flag too.
    let out = sim(&["run", smoke, "--trace", "/nonexistent/dir/trace.jsonl"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let line = out.one_line();
    assert!(
        line.contains("--trace") && line.contains("/nonexistent/dir/trace.jsonl"),
        "{line}"
    );
    // Help is not an error.
    assert_eq!(sim(&["--help"]).code, 0);
    assert_eq!(sim(&["sweep", "--help"]).code, 0);
}
