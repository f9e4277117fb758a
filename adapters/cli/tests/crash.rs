//! Crash test (issue 9): `tierswarm fetch` killed with SIGKILL at pseudo-random points, again
//! and again, then run to the end: the output always equals the source and `fetch` exits 0 only
//! then, and a kill loses only what no saved store held yet. The default suite runs 3 kills per
//! test; `TIERSWARM_CRASH_KILLS=N` runs N (the command is in `dev/ROBUSTNESS.md`).

mod common;
use common::{listening_url, make_file, Reaped};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tierswarm");
const LIMIT: Duration = Duration::from_secs(120);

fn fetch(manifest: &Path, url: &str, out: &Path) -> Child {
    Command::new(BIN)
        .arg("fetch")
        .arg(manifest)
        .args(["--peer", url, "--out"])
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// The next kill point, `from_ms` plus up to `span_ms`: a xorshift step of `x`, so the points
/// spread over the transfer and are the same in every run.
fn kill_point(x: &mut u64, from_ms: u64, span_ms: u64) -> Duration {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    Duration::from_millis(from_ms + *x % span_ms)
}

fn kills() -> u64 {
    std::env::var("TIERSWARM_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

/// Starts `tierswarm share` of a new 48 MiB file in `dir`; the manifest's path, the URL and
/// the source's path.
fn share(dir: &Path) -> (Reaped, std::path::PathBuf, String, std::path::PathBuf) {
    let src = dir.join("src.bin");
    make_file(&src, 48 << 20, 0xc0ffee);
    let manifest = dir.join("src.tsm");
    let mut share = Command::new(BIN)
        .arg("share")
        .arg(&src)
        .arg("--manifest-out")
        .arg(&manifest)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = listening_url(&mut share);
    (Reaped(share), manifest, url, src)
}

/// Waits (bounded by [`LIMIT`]) for `child` to exit; its status.
fn finish(child: &mut Reaped) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            return s;
        }
        assert!(start.elapsed() < LIMIT, "the fetch did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn fetch_killed_at_random_points_resumes_to_the_exact_file() {
    let kills = kills();
    let dir = tempfile::tempdir().unwrap();
    let (_share, manifest, url, src) = share(dir.path());
    let out = dir.path().join("out.bin");
    // A xorshift of the iteration: kill points spread over the whole transfer, the same in
    // every run.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..kills {
        let at = kill_point(&mut x, 20, 600);
        let mut child = Reaped(fetch(&manifest, &url, &out));
        std::thread::sleep(at);
        if child.0.try_wait().unwrap().is_none() {
            child.0.kill().unwrap();
        }
        child.0.wait().unwrap();
    }
    let mut last = Reaped(fetch(&manifest, &url, &out));
    let status = finish(&mut last);
    assert!(status.success(), "the resumed fetch failed: {status}");
    assert!(
        std::fs::read(&src).unwrap() == std::fs::read(&out).unwrap(),
        "the output differs from the source"
    );
}

/// Starts a rate-limited fetch whose `--json-events` go to `OUT.RUN.json` and whose stderr (its
/// `resuming:` line) to `OUT.RUN.err`.
fn fetch_logged(manifest: &Path, url: &str, out: &Path, run: u64) -> Child {
    let log =
        |ext: &str| std::fs::File::create(out.with_extension(format!("{run}.{ext}"))).unwrap();
    Command::new(BIN)
        .arg("fetch")
        .arg(manifest)
        .args([
            "--peer",
            url,
            "--json-events",
            "--max-download-rate",
            "8MiB/s",
        ])
        .arg("--out")
        .arg(out)
        .stdout(log("json"))
        .stderr(log("err"))
        .spawn()
        .unwrap()
}

/// What run `run` left in its logs: units verified when it started (its `resuming: N of ...`
/// line, 0 without one), units it verified, and the units of the last store it reported saved
/// (0 if none). A line the kill cut short is not counted.
fn logged(out: &Path, run: u64) -> (u64, u64, u64) {
    let read = |ext: &str| std::fs::read_to_string(out.with_extension(format!("{run}.{ext}")));
    let resumed = read("err")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("resuming: "))
        .and_then(|l| l.split_whitespace().next())
        .map_or(0, |n| n.parse().unwrap());
    let json = read("json").unwrap();
    let (mut verified, mut saved) = (0, 0);
    for line in json.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        match v["event"].as_str() {
            Some("unit_verified") => verified += 1,
            Some("persisted") => saved = v["units"].as_u64().unwrap(),
            _ => {}
        }
    }
    (resumed, verified, saved)
}

/// Killed while its store is saved once a second (the fetch is held to 8 MiB/s, 6 s for the
/// file, and killed 0.5 to 2.5 s into each run): every unit of a store a run reported saved is
/// there for the next run, so what a kill costs is at most what was verified since that store;
/// nothing else is downloaded twice.
#[test]
fn a_kill_loses_only_what_no_saved_store_held() {
    let kills = kills();
    let dir = tempfile::tempdir().unwrap();
    let (_share, manifest, url, src) = share(dir.path());
    let out = dir.path().join("out.bin");
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    // Kill until a run finishes before its kill point (or `kills` times).
    let mut runs = 0;
    while runs < kills {
        let at = kill_point(&mut x, 500, 2000);
        let mut child = Reaped(fetch_logged(&manifest, &url, &out, runs));
        runs += 1;
        std::thread::sleep(at);
        if child.0.try_wait().unwrap().is_some() {
            break;
        }
        child.0.kill().unwrap();
        child.0.wait().unwrap();
    }
    let kills = runs;
    let mut last = Reaped(fetch_logged(&manifest, &url, &out, kills));
    let status = finish(&mut last);
    assert!(status.success(), "the resumed fetch failed: {status}");
    assert!(std::fs::read(&src).unwrap() == std::fs::read(&out).unwrap());
    let units = (48u64 << 20).div_ceil(64 << 10);
    let runs: Vec<_> = (0..=kills).map(|run| logged(&out, run)).collect();
    eprintln!("(resumed, verified, saved) per run: {runs:?}");
    for (k, w) in runs.windows(2).enumerate() {
        let ((resumed, _, saved), (next, _, _)) = (w[0], w[1]);
        assert!(
            next >= saved.max(resumed),
            "run {k} reported a store of {saved} units (it started with {resumed}); the next run resumed {next}"
        );
    }
    let (resumed, verified, _) = runs[kills as usize];
    assert_eq!(
        resumed + verified,
        units,
        "the last run ends with every unit"
    );
    assert!(
        runs.iter().any(|r| r.2 > 0 && r.2 < units),
        "no kill came after a store was saved: the test checked nothing"
    );
}
