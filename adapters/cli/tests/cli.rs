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

/// `tierswarm share FILE`, once it printed its addresses.
struct Share {
    child: Child,
    /// The first URL it listens on.
    addr: String,
    /// Every URL it listens on, in the order of its `--listen` flags.
    urls: Vec<String>,
}

impl Share {
    fn start(file: &Path) -> Share {
        Share::start_on(file, "tokio")
    }

    fn start_on(file: &Path, runtime: &str) -> Share {
        Share::start_with(file, &["--runtime", runtime], 1)
    }

    /// `share FILE ARGS...`, reading its `listening on` lines (one per `--listen`).
    fn start_with(file: &Path, args: &[&str], listeners: usize) -> Share {
        let mut child = Command::new(BIN)
            .arg("share")
            .arg(file)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let urls: Vec<String> = (0..listeners)
            .map(|_| {
                let mut line = String::new();
                out.read_line(&mut line).unwrap();
                line.trim()
                    .strip_prefix("listening on ")
                    .unwrap_or_else(|| panic!("unexpected line {line:?}"))
                    .to_string()
            })
            .collect();
        Share {
            child,
            addr: urls[0].clone(),
            urls,
        }
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
    assert_eq!(text(&missing.stderr).lines().count(), 1);
}

#[test]
fn mixed_outside_demo_and_bad_sizes_exit_2() {
    for args in [
        &["share", "x", "--runtime", "mixed"][..],
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
        &["demo", "--size", "12 parsecs"][..],
    ] {
        let out = tierswarm(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = text(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    let err = text(&tierswarm(&["share", "x", "--runtime", "mixed"]).stderr);
    assert!(err.contains("only `demo` runs several peers"), "{err}");
}

/// `DIR/d.bin` (1000 bytes) and its manifest `DIR/d.tsm`, written by hand from the contract.
fn small_file_and_manifest(dir: &Path) -> (PathBuf, PathBuf) {
    let f = dir.join("d.bin");
    make_file(&f, 1000);
    let m = dir.join("d.tsm");
    std::fs::write(
        &m,
        format!(
            "{{\"version\":1,\"root\":\"{}\",\"file_len\":1000,\"name\":\"d\"}}",
            blake3::hash(&std::fs::read(&f).unwrap()).to_hex()
        ),
    )
    .unwrap();
    (f, m)
}

/// Bad addresses are refused before anything runs: exit 2 and one line naming the flag.
#[test]
fn bad_urls_exit_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let (f, m) = small_file_and_manifest(dir.path());
    let (m, o) = (m.to_str().unwrap(), dir.path().join("o"));
    let o = o.to_str().unwrap();
    for (peer, says) in [
        ("quic://127.0.0.1:7000", "no certificate fingerprint"),
        ("quic://127.0.0.1:7000#abc", "64 hex digits"),
        ("udp://127.0.0.1:7000", "no transport for `udp://`"),
        ("tcp://127.0.0.1:7000#ab", "takes no `#` part"),
        ("tcp://", "no HOST:PORT"),
    ] {
        let out = tierswarm(&["fetch", m, "--peer", peer, "--out", o]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{peer}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("--peer") && err.contains(says),
            "{peer}: {err}"
        );
    }
    let f = f.to_str().unwrap();
    for listen in ["quic://127.0.0.1:0#ab", "mem://x"] {
        let out = tierswarm(&["share", f, "--listen", listen]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{listen}: {err}");
        assert!(err.contains("--listen"), "{err}");
    }
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

    // A damaged store is refused with a one-line reason naming --repair.
    let mut store = std::fs::File::create(format!("{o}.tsa")).unwrap();
    store.write_all(b"garbage").unwrap();
    drop(store);
    let bad = tierswarm(&["fetch", m, "--peer", &share.addr, "--out", o]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).contains("--repair"));

    let stopped = share.interrupt();
    assert!(stopped.status.success(), "{}", text(&stopped.stderr));
}

#[test]
fn fetch_without_reachable_peers_fails_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let (_, m) = small_file_and_manifest(dir.path());
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
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
    let err = text(&out.stderr);
    assert!(err.contains("no peer is reachable"), "{err}");
}

/// `demo --size 3MiB ARGS` succeeds, says `says` on stderr and verifies all `peers` outputs.
fn demo_ok(args: &[&str], peers: usize, says: &str) {
    let peers_arg = peers.to_string();
    let mut all = vec!["demo", "--size", "3MiB", "--peers", &peers_arg];
    all.extend(args);
    let out = tierswarm(&all);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{args:?}: {err}");
    assert!(err.contains(says), "{err}");
    let all_match = format!("all {peers} outputs match root");
    assert!(text(&out.stdout).contains(&all_match), "{args:?}");
}

#[test]
fn demo_runs_a_small_swarm() {
    demo_ok(&[], 3, "(tokio, over TCP)");
}

#[test]
fn demo_runs_swarms_mixing_runtimes_and_transports() {
    demo_ok(
        &["--runtime", "mixed"],
        5,
        "tokio, async-std and smol in turn",
    );
    let both = ["--runtime", "mixed", "--transport", "mixed"];
    demo_ok(&both, 4, "over TCP and QUIC");
}

/// `share --listen quic://…` prints its URL with the certificate's fingerprint, a fetch that
/// pins it completes, a fetch that pins another is refused, and the certificate is kept beside
/// the manifest so a restarted share has the same fingerprint.
#[test]
fn share_and_fetch_over_quic_with_a_pinned_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("data.bin");
    make_file(&f, 2 * 1024 * 1024 + 77);
    let args = [
        "--listen",
        "quic://127.0.0.1:0",
        "--listen",
        "tcp://127.0.0.1:0",
    ];
    let share = Share::start_with(&f, &args, 2);
    let (quic, tcp) = (&share.urls[0], &share.urls[1]);
    let fingerprint = quic
        .strip_prefix("quic://127.0.0.1:")
        .and_then(|rest| rest.split_once('#'))
        .map(|(_, f)| f.to_string())
        .unwrap_or_else(|| panic!("not a QUIC URL with a fingerprint: {quic}"));
    assert_eq!(fingerprint.len(), 64);
    assert!(fingerprint
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    assert!(tcp.starts_with("tcp://127.0.0.1:"), "{tcp}");
    let m = tsm(&f);
    let m = m.to_str().unwrap();
    for (runtime, url) in [("tokio", quic), ("smol", quic), ("async-std", tcp)] {
        let out = dir.path().join(format!("copy-{runtime}.bin"));
        let o = out.to_str().unwrap();
        let fetched = tierswarm(&["fetch", m, "--peer", url, "--out", o, "--runtime", runtime]);
        assert!(
            fetched.status.success(),
            "{runtime}: {}",
            text(&fetched.stderr)
        );
        assert_eq!(std::fs::read(&f).unwrap(), std::fs::read(&out).unwrap());
    }
    let wrong = quic.replace(&fingerprint, &"ab".repeat(32));
    let o = dir.path().join("never.bin");
    let refused = tierswarm(&["fetch", m, "--peer", &wrong, "--out", o.to_str().unwrap()]);
    let err = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{err}");
    let last = err.lines().last().unwrap();
    assert!(
        last.contains(&format!(
            "has fingerprint {fingerprint}, not the pinned {}",
            "ab".repeat(32)
        )),
        "{err}"
    );
    let stopped = share.interrupt();
    assert!(stopped.status.success(), "{}", text(&stopped.stderr));
    assert!(dir.path().join("data.bin.tsk").exists());
    let again = Share::start_with(&f, &["--listen", "quic://127.0.0.1:0"], 1);
    assert!(
        again.addr.ends_with(&format!("#{fingerprint}")),
        "{}",
        again.addr
    );
    again.interrupt();
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
