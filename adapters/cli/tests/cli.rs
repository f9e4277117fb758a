//! The `tierswarm` binary end to end, over loopback. Every child process is bounded in time.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tierswarm");
const LIMIT: Duration = Duration::from_secs(60);

fn make_file(path: &Path, len: usize) {
    let mut x: u32 = 0x1234_5678;
    let data: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    std::fs::write(path, data).unwrap();
}

/// Waits for `child` at most [`LIMIT`]; kills it (by its id) past that.
fn wait(mut child: Child) -> Output {
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            panic!("child did not finish within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn tierswarm(args: &[&str]) -> Output {
    let child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait(child)
}

/// `tierswarm share FILE`, once it printed its address.
struct Share {
    child: Child,
    addr: String,
}

impl Share {
    fn start(file: &Path) -> Share {
        Share::start_on(file, "tokio")
    }

    fn start_on(file: &Path, runtime: &str) -> Share {
        let mut child = Command::new(BIN)
            .args(["share", file.to_str().unwrap(), "--runtime", runtime])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Share { child, addr }
    }

    /// Ctrl-C (SIGINT by process id): it drains and exits 0.
    fn interrupt(self) -> Output {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        wait(self.child)
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The one line a failing command printed on stderr, without its newline; fails unless stderr is
/// exactly one non-empty line.
fn one_line(out: &Output) -> String {
    let err = text(&out.stderr);
    let line = err.strip_suffix('\n').unwrap_or(&err);
    assert!(
        !line.trim().is_empty() && !line.contains('\n'),
        "expected exactly one line on stderr, got {err:?}"
    );
    line.to_string()
}

fn tsm(file: &Path) -> PathBuf {
    PathBuf::from(format!("{}.tsm", file.display()))
}

#[test]
fn manifest_prints_the_blake3_root() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("a.bin");
    make_file(&f, 200_000);
    let out = tierswarm(&["manifest", f.to_str().unwrap()]);
    assert!(out.status.success());
    let expected = blake3::hash(&std::fs::read(&f).unwrap())
        .to_hex()
        .to_string();
    assert_eq!(text(&out.stdout).trim(), expected);
    let missing = tierswarm(&["manifest", "/nonexistent/x"]);
    assert_eq!(missing.status.code(), Some(2));
    let line = one_line(&missing);
    assert!(line.contains("/nonexistent/x"), "{line}");
}

#[test]
fn mixed_outside_demo_and_bad_sizes_exit_2() {
    for (args, names) in [
        (&["share", "x", "--runtime", "mixed"][..], "--runtime"),
        (
            &[
                "fetch",
                "x.tsm",
                "--peer",
                "127.0.0.1:1",
                "--out",
                "y",
                "--runtime",
                "mixed",
            ][..],
            "--runtime",
        ),
        (&["demo", "--size", "12 parsecs"][..], "--size"),
    ] {
        let out = tierswarm(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let line = one_line(&out);
        assert!(line.contains(names), "{args:?}: {line}");
    }
    let line = one_line(&tierswarm(&["share", "x", "--runtime", "mixed"]));
    assert!(line.contains("only `demo` runs several peers"), "{line}");
}

#[test]
fn share_fetch_record_replay_repair() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("data.bin");
    make_file(&f, 3 * 1024 * 1024 + 12345);
    let share = Share::start(&f);
    let out = dir.path().join("copy.bin");
    let rec = dir.path().join("fetch.jsonl");
    let o = out.to_str().unwrap();
    let m = tsm(&f);
    let m = m.to_str().unwrap();
    let fetched = tierswarm(&[
        "fetch",
        m,
        "--peer",
        &share.addr,
        "--out",
        o,
        "--record",
        rec.to_str().unwrap(),
    ]);
    assert!(fetched.status.success(), "{}", text(&fetched.stderr));
    assert_eq!(std::fs::read(&f).unwrap(), std::fs::read(&out).unwrap());

    let replayed = tierswarm(&["replay", rec.to_str().unwrap()]);
    assert!(replayed.status.success(), "{}", text(&replayed.stderr));
    assert!(text(&replayed.stdout).contains("identical"));

    // Damage one unit on disk: a plain restart trusts the store (no scan) and has nothing to
    // do; --repair re-verifies every unit, finds the damage and fetches that unit again.
    let mut bytes = std::fs::read(&out).unwrap();
    bytes[5 * 65536 + 7] ^= 0x55;
    std::fs::write(&out, &bytes).unwrap();
    let again = tierswarm(&["fetch", m, "--peer", &share.addr, "--out", o]);
    assert!(again.status.success());
    assert_ne!(std::fs::read(&f).unwrap(), std::fs::read(&out).unwrap());
    let repaired = tierswarm(&["fetch", m, "--peer", &share.addr, "--out", o, "--repair"]);
    let err = text(&repaired.stderr);
    assert!(repaired.status.success(), "{err}");
    assert!(err.contains("resuming: 48 of 49 units"), "{err}");
    assert_eq!(std::fs::read(&f).unwrap(), std::fs::read(&out).unwrap());

    // A damaged store is refused with a one-line reason naming the store and --repair.
    let store_path = format!("{o}.tsa");
    let mut store = std::fs::File::create(&store_path).unwrap();
    store.write_all(b"garbage").unwrap();
    drop(store);
    let bad = tierswarm(&["fetch", m, "--peer", &share.addr, "--out", o]);
    assert_eq!(bad.status.code(), Some(2));
    let line = one_line(&bad);
    assert!(
        line.contains(&store_path) && line.contains("--repair"),
        "{line}"
    );

    let stopped = share.interrupt();
    assert!(stopped.status.success(), "{}", text(&stopped.stderr));
}

#[test]
fn fetch_without_reachable_peers_fails_with_a_one_line_reason() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("d.bin");
    make_file(&f, 1000);
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let m = dir.path().join("d.tsm");
    std::fs::write(
        &m,
        format!(
            "{{\"version\":1,\"root\":\"{}\",\"file_len\":1000,\"name\":\"d\"}}",
            blake3::hash(&std::fs::read(&f).unwrap()).to_hex()
        ),
    )
    .unwrap();
    let out = tierswarm(&[
        "fetch",
        m.to_str().unwrap(),
        "--peer",
        &port.to_string(),
        "--out",
        dir.path().join("o").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    // The reason is one line, the last; before it, the default (warn-level) log says which
    // address could not be reached, one line per attempt.
    let err = text(&out.stderr);
    let body = err.strip_suffix('\n').unwrap_or(&err);
    let (logs, reason) = body.rsplit_once('\n').unwrap_or(("", body));
    assert!(
        reason.starts_with("tierswarm: error: no peer is reachable"),
        "{err}"
    );
    let peer = port.to_string();
    assert!(!logs.is_empty(), "the unreachable address is logged: {err}");
    for line in logs.lines() {
        assert!(
            line.contains("WARN") && line.contains("cannot connect") && line.contains(&peer),
            "{err}"
        );
    }
}

#[test]
fn demo_runs_a_small_swarm() {
    let out = tierswarm(&["demo", "--peers", "3", "--size", "3MiB"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("all 3 outputs match root"));
}

#[test]
fn demo_runs_a_mixed_swarm() {
    let out = tierswarm(&[
        "demo",
        "--peers",
        "5",
        "--size",
        "3MiB",
        "--runtime",
        "mixed",
    ]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("tokio and async-std, alternating"), "{err}");
    assert!(text(&out.stdout).contains("all 5 outputs match root"));
}

/// A share on one runtime serves fetches on both; Ctrl-C stops it cleanly on async-std too.
#[test]
fn async_std_share_serves_fetches_on_both_runtimes() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("data.bin");
    make_file(&f, 2 * 1024 * 1024 + 99);
    let share = Share::start_on(&f, "async-std");
    let m = tsm(&f);
    for runtime in ["tokio", "async-std"] {
        let out = dir.path().join(format!("copy-{runtime}.bin"));
        let fetched = tierswarm(&[
            "fetch",
            m.to_str().unwrap(),
            "--peer",
            &share.addr,
            "--out",
            out.to_str().unwrap(),
            "--runtime",
            runtime,
        ]);
        assert!(fetched.status.success(), "{}", text(&fetched.stderr));
        assert_eq!(std::fs::read(&f).unwrap(), std::fs::read(&out).unwrap());
    }
    let stopped = share.interrupt();
    assert!(stopped.status.success(), "{}", text(&stopped.stderr));
}
