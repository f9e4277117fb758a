//! Crash test (issue 9): `tierswarm fetch` killed with SIGKILL at pseudo-random points, again
//! and again, then run to the end: the output always equals the source and `fetch` exits 0 only
//! then. The default suite runs 3 kills; `TIERSWARM_CRASH_KILLS=N` runs N (the command is in
//! `dev/ROBUSTNESS.md`).

mod common;
use common::{make_file, Reaped};
use std::io::{BufRead, BufReader};
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

#[test]
fn fetch_killed_at_random_points_resumes_to_the_exact_file() {
    let kills: u64 = std::env::var("TIERSWARM_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.bin");
    make_file(&src, 48 << 20, 0xc0ffee);
    let manifest = dir.path().join("src.tsm");
    let mut share = Command::new(BIN)
        .arg("share")
        .arg(&src)
        .arg("--manifest-out")
        .arg(&manifest)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(share.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _share = Reaped(share);
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_string();
    let out = dir.path().join("out.bin");
    // A xorshift of the iteration: kill points spread over the whole transfer, the same in
    // every run.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..kills {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let at = Duration::from_millis(20 + x % 600);
        let mut child = Reaped(fetch(&manifest, &url, &out));
        std::thread::sleep(at);
        if child.0.try_wait().unwrap().is_none() {
            child.0.kill().unwrap();
        }
        child.0.wait().unwrap();
    }
    let mut last = Reaped(fetch(&manifest, &url, &out));
    let start = Instant::now();
    let status = loop {
        if let Some(s) = last.0.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < LIMIT, "the last fetch did not finish");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "the resumed fetch failed: {status}");
    assert!(
        std::fs::read(&src).unwrap() == std::fs::read(&out).unwrap(),
        "the output differs from the source"
    );
}
