//! The `tierswarm` binary end to end, over loopback. Every child process is bounded in time.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Lines, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
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

/// Runs `cmd` with its output captured, bounded by [`LIMIT`].
fn run(cmd: &mut Command) -> Output {
    wait(
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

fn tierswarm(args: &[&str]) -> Output {
    run(Command::new(BIN).args(args))
}

/// `tierswarm share FILE`, once it printed its addresses.
struct Share {
    /// Taken by [`Share::interrupt`]; killed (by its id) on drop otherwise, so that a failing
    /// test leaves no server behind.
    child: Option<Child>,
    /// The first URL it listens on.
    addr: String,
    /// Every URL it listens on, in the order of its `--listen` flags.
    urls: Vec<String>,
}

impl Drop for Share {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
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
            child: Some(child),
            addr: urls[0].clone(),
            urls,
        }
    }

    /// Ctrl-C (SIGINT by process id): it drains and exits 0.
    fn interrupt(mut self) -> Output {
        let child = self.child.take().expect("running");
        let status = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        wait(child)
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

/// Asserts that `out` failed with exactly one line on stderr naming `path` and containing
/// `reason`.
fn one_line_naming(out: &Output, path: &str, reason: &str) {
    let line = one_line(out);
    assert!(line.contains(path), "does not name {path}: {line}");
    assert!(line.contains(reason), "does not say {reason}: {line}");
}

/// `tierswarm fetch MANIFEST --peer ADDR --out OUT` plus `extra`.
fn fetch(manifest: &Path, addr: &str, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "fetch",
        manifest.to_str().unwrap(),
        "--peer",
        addr,
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    tierswarm(&args)
}

/// A manifest file for `root` and `len`, written by hand.
fn write_manifest(path: &Path, root: &str, len: u64) {
    std::fs::write(
        path,
        format!("{{\"version\":1,\"root\":\"{root}\",\"file_len\":{len},\"name\":\"x\"}}"),
    )
    .unwrap();
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

/// `replay --actions` prints one JSON line per input of the record of a fetch of `units` units,
/// with what the core did (the summary goes to stderr); a record altered on one line fails the
/// replay, and the listing ends with what the core did for that line instead.
fn replay_lists_the_actions(rec: &Path, units: u64) {
    let listed = tierswarm(&["replay", rec.to_str().unwrap(), "--actions"]);
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    assert!(text(&listed.stderr).contains("identical"));
    let lines: Vec<serde_json::Value> = text(&listed.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let inputs = std::fs::read_to_string(rec).unwrap().lines().count() - 1;
    assert_eq!(lines.len(), inputs, "one line per input");
    let actions = |kind: &str| -> Vec<serde_json::Value> {
        lines
            .iter()
            .flat_map(|l| l["actions"].as_array().unwrap().clone())
            .filter_map(|a| a.get(kind).cloned())
            .collect()
    };
    let stored: BTreeSet<u64> = actions("store_unit")
        .iter()
        .filter_map(|u| u.as_u64())
        .collect();
    assert_eq!(
        stored,
        (0..units).collect(),
        "every unit handed to the embedder"
    );
    let requests = actions("send")
        .iter()
        .filter(|m| m.as_str().unwrap().starts_with("request("))
        .count();
    assert!(requests as u64 >= units, "{requests} requests");
    let first = &lines[0];
    assert_eq!(
        (first["line"].as_u64(), first["in"].as_str()),
        (Some(2), Some("connected"))
    );

    // Alter what the record says the core did for its tenth input.
    let text_of = std::fs::read_to_string(rec).unwrap();
    let mut altered: Vec<String> = text_of.lines().map(str::to_string).collect();
    let mut line: serde_json::Value = serde_json::from_str(&altered[10]).unwrap();
    line["n"] = (line["n"].as_u64().unwrap() + 1).into();
    altered[10] = line.to_string();
    let bad = rec.with_extension("altered.jsonl");
    std::fs::write(&bad, altered.join("\n") + "\n").unwrap();
    let differs = tierswarm(&["replay", bad.to_str().unwrap(), "--actions"]);
    assert_eq!(differs.status.code(), Some(1), "{}", text(&differs.stderr));
    assert!(
        text(&differs.stderr).contains("line 11"),
        "{}",
        text(&differs.stderr)
    );
    let listed = text(&differs.stdout);
    let last: serde_json::Value = serde_json::from_str(listed.lines().last().unwrap()).unwrap();
    assert_eq!(
        last["line"].as_u64(),
        Some(11),
        "the differing line is listed last"
    );

    // A file that is not a record is bad input (exit 2), named on one line, with or without
    // the listing.
    let garbage = rec.with_extension("garbage.jsonl");
    std::fs::write(&garbage, b"not a record\n").unwrap();
    for extra in [&[][..], &["--actions"][..]] {
        let mut args = vec!["replay", garbage.to_str().unwrap()];
        args.extend_from_slice(extra);
        let refused = tierswarm(&args);
        assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
        one_line_naming(&refused, garbage.to_str().unwrap(), "line 1");
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
    replay_lists_the_actions(&rec, 49);

    // Damage one unit on disk: the store says the file is complete, so a plain restart hashes
    // it, refuses (exit 2, naming --repair) and changes nothing; --repair re-verifies every
    // unit, finds the damage and fetches that unit again.
    let mut bytes = std::fs::read(&out).unwrap();
    bytes[5 * 65536 + 7] ^= 0x55;
    std::fs::write(&out, &bytes).unwrap();
    let again = tierswarm(&["fetch", m, "--peer", &share.addr, "--out", o]);
    assert_eq!(again.status.code(), Some(2), "{}", text(&again.stderr));
    one_line_naming(&again, o, "--repair");
    assert_eq!(std::fs::read(&out).unwrap(), bytes);
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
    one_line_naming(&bad, &store_path, "--repair");

    let stopped = share.interrupt();
    assert!(stopped.status.success(), "{}", text(&stopped.stderr));
    // Piped, neither the status line nor the log draws: no ANSI escapes.
    for out in [&stopped, &bad, &repaired] {
        assert!(!text(&out.stderr).contains('\x1b'), "{}", text(&out.stderr));
    }
}

#[test]
fn fetch_without_reachable_peers_fails_with_a_one_line_reason() {
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
    assert!(!err.contains('\x1b'), "ANSI escapes on a pipe: {err:?}");
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

/// A shared file whose metadata changes after `share` hashed it is still served, each unit
/// checked against its proof first; `share` says so once when it happens and counts the units
/// so checked when it stops. Unchanged, nothing is checked again.
#[test]
fn share_says_when_its_file_changed_and_what_it_checked() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("data.bin");
    make_file(&f, 1024 * 1024 + 7);
    let share = Share::start(&f);
    let m = tsm(&f);
    let fetch_into = |name: &str| {
        let out = dir.path().join(name);
        let fetched = fetch(&m, &share.addr, &out, &[]);
        assert!(fetched.status.success(), "{}", text(&fetched.stderr));
        assert_eq!(std::fs::read(&f).unwrap(), std::fs::read(&out).unwrap());
    };
    fetch_into("first.bin");
    // Same bytes, another modification time: the file no longer proves itself by its metadata.
    let distinct = std::time::UNIX_EPOCH + std::time::Duration::new(1_000_000_007, 123);
    std::fs::File::options()
        .write(true)
        .open(&f)
        .unwrap()
        .set_modified(distinct)
        .unwrap();
    fetch_into("second.bin");
    let stopped = share.interrupt();
    assert!(stopped.status.success(), "{}", text(&stopped.stderr));
    let err = text(&stopped.stderr);
    assert_eq!(
        err.matches("changed since it was hashed").count(),
        1,
        "{err}"
    );
    // The second fetch's 17 units, each checked before it went out; none of the first's.
    assert!(
        err.contains("17 units checked against their proofs before they were sent"),
        "{err}"
    );
}

/// Issue 9: fetching a manifest of another file of the same length into an output that holds a
/// finished download must not report success with the first file's bytes.
#[test]
fn another_file_of_the_same_length_is_never_taken_for_done() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.bin");
    let b = dir.path().join("b.bin");
    make_file(&a, 2 * 1024 * 1024 + 500);
    let mut other = std::fs::read(&a).unwrap();
    other.reverse();
    std::fs::write(&b, &other).unwrap();
    let share_a = Share::start(&a);
    let share_b = Share::start(&b);
    let out = dir.path().join("out.bin");
    let first = fetch(&tsm(&a), &share_a.addr, &out, &[]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let second = fetch(&tsm(&b), &share_b.addr, &out, &[]);
    assert_eq!(second.status.code(), Some(2), "{}", text(&second.stderr));
    one_line_naming(&second, &format!("{}.tsa", out.display()), "another file");
    assert!(text(&second.stderr).contains("--restart"));
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&a).unwrap());
    // Asked to, it starts afresh and fetches the other file.
    let fresh = fetch(&tsm(&b), &share_b.addr, &out, &["--restart"]);
    assert!(fresh.status.success(), "{}", text(&fresh.stderr));
    assert_eq!(std::fs::read(&out).unwrap(), other);
    for s in [share_a, share_b] {
        assert!(s.interrupt().status.success());
    }
}

/// Issue 9: an output truncated or edited after a finished fetch is never reported complete,
/// and --repair brings it back.
#[test]
fn an_output_changed_after_a_finished_fetch_is_never_reported_complete() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("data.bin");
    make_file(&f, 3 * 1024 * 1024 + 7);
    let share = Share::start(&f);
    let out = dir.path().join("out.bin");
    let m = tsm(&f);
    let o = out.to_str().unwrap();
    assert!(fetch(&m, &share.addr, &out, &[]).status.success());
    let good = std::fs::read(&f).unwrap();

    // Truncated: refused from its length alone.
    std::fs::write(&out, &good[..good.len() / 2]).unwrap();
    let r = fetch(&m, &share.addr, &out, &[]);
    assert_eq!(r.status.code(), Some(2), "{}", text(&r.stderr));
    one_line_naming(&r, o, "bytes");
    assert!(fetch(&m, &share.addr, &out, &["--repair"]).status.success());
    assert_eq!(std::fs::read(&out).unwrap(), good);

    // Edited in place (same length): the complete file is hashed before it is trusted.
    let mut edited = good.clone();
    edited[2 * 65536 + 99] ^= 1;
    std::fs::write(&out, &edited).unwrap();
    let r = fetch(&m, &share.addr, &out, &[]);
    assert_eq!(r.status.code(), Some(2), "{}", text(&r.stderr));
    one_line_naming(&r, o, "hashes to");
    assert!(fetch(&m, &share.addr, &out, &["--repair"]).status.success());
    assert_eq!(std::fs::read(&out).unwrap(), good);
    assert!(share.interrupt().status.success());
}

/// Issue 9: hostile or impossible inputs each get one line naming the file and the reason,
/// exit 2, and leave nothing behind that a later run would trust.
#[test]
fn hostile_files_get_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("data.bin");
    make_file(&f, 1024 * 1024);
    let root = blake3::hash(&std::fs::read(&f).unwrap())
        .to_hex()
        .to_string();
    let nowhere = "127.0.0.1:9"; // never contacted: every case fails before dialling
    let out = dir.path().join("out.bin");

    // A length past the protocol's maximum (64 TiB).
    let m = dir.path().join("huge.tsm");
    write_manifest(&m, &root, (1 << 46) + 1);
    let r = fetch(&m, nowhere, &out, &[]);
    assert_eq!(r.status.code(), Some(2));
    one_line_naming(&r, m.to_str().unwrap(), "file_len");
    assert!(!out.exists(), "nothing is created for a refused manifest");

    // Truncated and hand-edited manifests.
    let good = dir.path().join("good.tsm");
    write_manifest(&good, &root, 1024 * 1024);
    let text_of = std::fs::read_to_string(&good).unwrap();
    let cut = dir.path().join("cut.tsm");
    std::fs::write(&cut, &text_of[..text_of.len() - 9]).unwrap();
    let r = fetch(&cut, nowhere, &out, &[]);
    assert_eq!(r.status.code(), Some(2));
    one_line_naming(&r, cut.to_str().unwrap(), "JSON");
    let edited = dir.path().join("edited.tsm");
    std::fs::write(&edited, text_of.replace(&root[..4], "zz00")).unwrap();
    let r = fetch(&edited, nowhere, &out, &[]);
    assert_eq!(r.status.code(), Some(2));
    one_line_naming(&r, edited.to_str().unwrap(), "root");

    // An output whose directory cannot exist (its parent is a file).
    let inside_file = f.join("out.bin");
    let r = fetch(&good, nowhere, &inside_file, &[]);
    assert_eq!(r.status.code(), Some(2), "{}", text(&r.stderr));
    one_line_naming(&r, inside_file.to_str().unwrap(), "directory");

    // A store with one byte changed: refused, naming the store and --repair.
    let share = Share::start(&f);
    assert!(fetch(&tsm(&f), &share.addr, &out, &[]).status.success());
    let store = dir.path().join("out.bin.tsa");
    let mut bytes = std::fs::read(&store).unwrap();
    bytes[40] ^= 0x10;
    std::fs::write(&store, &bytes).unwrap();
    let r = fetch(&tsm(&f), &share.addr, &out, &[]);
    assert_eq!(r.status.code(), Some(2));
    one_line_naming(&r, store.to_str().unwrap(), "--repair");
    // A store cut short.
    std::fs::write(&store, &bytes[..50]).unwrap();
    let r = fetch(&tsm(&f), &share.addr, &out, &[]);
    assert_eq!(r.status.code(), Some(2));
    one_line_naming(&r, store.to_str().unwrap(), "shorter");
    // A proof log of another file.
    assert!(fetch(&tsm(&f), &share.addr, &out, &["--restart"])
        .status
        .success());
    let log = dir.path().join("out.bin.tsp");
    let mut bytes = std::fs::read(&log).unwrap();
    bytes[20] ^= 1; // inside the root it names
    std::fs::write(&log, &bytes).unwrap();
    let r = fetch(&tsm(&f), &share.addr, &out, &[]);
    assert_eq!(r.status.code(), Some(2));
    one_line_naming(&r, log.to_str().unwrap(), "another file");
    assert!(share.interrupt().status.success());
}

/// Issue 9: a manifest claiming the largest file (64 TiB) allocates nothing up front for it: the
/// fetch ends on its own with one line (no peer answers, or the output cannot be created on this
/// filesystem), rather than being killed for memory. The output goes to tmpfs where there is one
/// (a sparse 64 TiB file costs nothing there), so that the session really starts.
#[test]
fn the_largest_file_allocates_nothing_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let shm = std::path::Path::new("/dev/shm");
    let outs = if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let m = dir.path().join("max.tsm");
    write_manifest(&m, &"ab".repeat(32), 1 << 46);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let r = run(Command::new(BIN)
        .args([
            "fetch",
            m.to_str().unwrap(),
            "--peer",
            &port.to_string(),
            "--out",
        ])
        .arg(outs.path().join("o"))
        .env("RUST_LOG", "error")); // the failed dials are logged as warnings
    let err = text(&r.stderr);
    assert!(
        matches!(r.status.code(), Some(1 | 2)),
        "{:?}: {err}",
        r.status
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// Runs `script` (bash) in a private mount namespace, where it may mount a small tmpfs; `None`
/// when this machine does not allow that (not root): the caller skips, saying so.
fn in_mount_namespace(script: &str) -> Option<Output> {
    let probe = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "true"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: `unshare --mount` is not allowed here (needs root)");
        return None;
    }
    Some(run(Command::new("unshare").args([
        "--mount",
        "--propagation",
        "private",
        "bash",
        "-c",
        script,
    ])))
}

/// Issue 9: a full disk during the transfer ends the fetch with one line naming the output and
/// the reason; what it leaves behind resumes to the right file on a disk with room.
#[test]
fn a_full_disk_fails_cleanly_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("data.bin");
    make_file(&f, 3 * 1024 * 1024 + 11);
    let share = Share::start(&f);
    let small = dir.path().join("small");
    let saved = dir.path().join("saved");
    std::fs::create_dir(&small).unwrap();
    std::fs::create_dir(&saved).unwrap();
    let script = format!(
        "mount -t tmpfs -o size=1m tmpfs {small} || exit 99
         {bin} fetch {m} --peer {addr} --out {small}/out.bin
         code=$?
         cp {small}/out.bin* {saved}/ 2>/dev/null
         exit $code",
        small = small.display(),
        saved = saved.display(),
        bin = BIN,
        m = tsm(&f).display(),
        addr = share.addr,
    );
    let Some(r) = in_mount_namespace(&script) else {
        return;
    };
    assert_eq!(r.status.code(), Some(1), "{}", text(&r.stderr));
    one_line_naming(&r, &format!("{}/out.bin", small.display()), "No space left");
    // The leftovers resume on a disk with room, to the right file.
    let out = saved.join("out.bin");
    let resumed = fetch(&tsm(&f), &share.addr, &out, &[]);
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&f).unwrap());
    assert!(share.interrupt().status.success());
}

/// Issue 9: a recorder that cannot write (a full disk) stops recording with a warning; the
/// transfer goes on.
#[test]
fn a_recorder_failure_does_not_end_the_transfer() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("data.bin");
    make_file(&f, 3 * 1024 * 1024);
    let share = Share::start(&f);
    let out = dir.path().join("out.bin");
    let r = fetch(&tsm(&f), &share.addr, &out, &["--record", "/dev/full"]);
    let err = text(&r.stderr);
    assert!(r.status.success(), "{err}");
    assert!(err.contains("warning: flight record /dev/full"), "{err}");
    assert!(err.contains("recording stopped"), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&f).unwrap());
    assert!(share.interrupt().status.success());
}

/// A record cut at its size cap ends with a note; replay checks it up to there and says so.
#[test]
fn replay_of_a_record_cut_at_its_cap_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("data.bin");
    make_file(&f, 1024 * 1024);
    let share = Share::start(&f);
    let rec = dir.path().join("r.jsonl");
    let out = dir.path().join("out.bin");
    let r = fetch(
        &tsm(&f),
        &share.addr,
        &out,
        &["--record", rec.to_str().unwrap()],
    );
    assert!(r.status.success(), "{}", text(&r.stderr));
    // What the recorder writes at its cap: the first lines, then the note.
    let full = std::fs::read_to_string(&rec).unwrap();
    let mut cut: Vec<&str> = full.lines().take(6).collect();
    let note =
        r#"{"note":"size cap of 4096 bytes reached: recording stopped","limit":4096,"inputs":5}"#;
    cut.push(note);
    std::fs::write(&rec, cut.join("\n") + "\n").unwrap();
    let replayed = tierswarm(&["replay", rec.to_str().unwrap()]);
    let said = text(&replayed.stdout);
    assert!(replayed.status.success(), "{}", text(&replayed.stderr));
    assert!(said.contains("replayed 5 inputs"), "{said}");
    assert!(said.contains("size cap of 4096 bytes reached"), "{said}");
    assert!(share.interrupt().status.success());
}

/// `share FILE --json-events ARGS...`: the running share and its stdout lines (the first, the
/// `listening` event, read already to know its address).
fn start_json_share(file: &Path, args: &[&str]) -> (Share, Lines<BufReader<ChildStdout>>) {
    let mut child = Command::new(BIN)
        .arg("share")
        .arg(file)
        .arg("--json-events")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["event"], "listening", "{first}");
    let url = first["url"].as_str().unwrap().to_string();
    let share = Share {
        child: Some(child),
        addr: url.clone(),
        urls: vec![url],
    };
    (share, lines)
}

/// Interrupts a JSON share: its exit, and the events it printed from here to its end (read on
/// a thread while the exit is awaited within the limit).
fn interrupt_json(
    mut share: Share,
    lines: Lines<BufReader<ChildStdout>>,
) -> (Output, Vec<serde_json::Value>) {
    let child = share.child.take().expect("running");
    let reader = std::thread::spawn(move || {
        lines
            .map(|l| serde_json::from_str::<serde_json::Value>(&l.unwrap()).unwrap())
            .collect::<Vec<_>>()
    });
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = wait(child);
    (out, reader.join().unwrap())
}

/// `--json-events` lines: each a JSON object with an `event` key.
fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    text(stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}"));
            assert!(v["event"].is_string(), "no event kind: {l}");
            v
        })
        .collect()
}

fn kinds(events: &[serde_json::Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect()
}

/// The last event, `done`: the report, whose `stats.sent` counts messages by kind.
/// Kinds sent that the original flat protocol does not have (tierswarm's own CANCEL and
/// KEEP_ALIVE included).
fn sent_hierarchical(done: &serde_json::Value) -> Vec<String> {
    let sent = done["stats"]["sent"].as_object().expect("stats.sent");
    ["summary", "refine_request", "refine_response", "cancel"]
        .into_iter()
        .filter(|k| sent.contains_key(*k))
        .map(String::from)
        .collect()
}

/// `share --json-events` and `fetch --json-events`: every stdout line is a JSON event; the
/// share's first line says where it listens, its stream has the fetcher connecting, units
/// served, a rate tick and `done` last; the fetch's has units verified, `complete` and `done`.
#[test]
fn json_events_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("j.bin");
    make_file(&f, 700_000);
    let (share, mut lines) = start_json_share(&f, &[]);
    let out = dir.path().join("j.copy");
    let fetched = fetch(&tsm(&f), &share.addr, &out, &["--json-events"]);
    assert!(fetched.status.success(), "{}", text(&fetched.stderr));
    let events = json_lines(&fetched.stdout);
    let k = kinds(&events);
    for want in ["peer_connected", "unit_verified", "progress", "complete"] {
        assert!(k.contains(&want), "no {want} in {k:?}");
    }
    assert_eq!(k.iter().filter(|e| **e == "unit_verified").count(), 11);
    let done = events.last().unwrap();
    assert_eq!(done["event"], "done");
    assert_eq!(done["outcome"], "complete");
    assert_eq!(done["bytes_downloaded"], 700_000);
    // The seeder's stream, read until its next rate tick (once a second) tells of the unit
    // served; then it is interrupted and ends with `done`.
    let mut share_events = vec![];
    for line in lines.by_ref() {
        let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        let served_tick = v["event"] == "rate" && v["units_served"] == 11;
        share_events.push(v);
        if served_tick {
            break;
        }
    }
    let (stopped, rest) = interrupt_json(share, lines);
    assert!(stopped.status.success(), "{}", text(&stopped.stderr));
    share_events.extend(rest);
    let k = kinds(&share_events);
    for want in [
        "peer_connected",
        "unit_served",
        "peer_disconnected",
        "rate",
        "done",
    ] {
        assert!(k.contains(&want), "no {want} in {k:?}");
    }
    assert_eq!(*k.last().unwrap(), "done");
    assert!(
        !text(&stopped.stderr).contains('\x1b'),
        "ANSI on a pipe: {}",
        text(&stopped.stderr)
    );
}

/// `share --legacy` is fetched by a capable fetch (which falls back to the flat protocol) and by
/// a flat-only fetch; `fetch --legacy` from a capable seeder sends no hierarchical message.
#[test]
fn legacy_peers_speak_the_flat_protocol_with_everyone() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("l.bin");
    make_file(&f, 9 * 65536 + 5);
    let m = tsm(&f);
    let legacy_share = Share::start_with(&f, &["--legacy"], 1);
    for (i, extra) in [&["--json-events"][..], &["--json-events", "--legacy"][..]]
        .into_iter()
        .enumerate()
    {
        let out = dir.path().join(format!("l{i}.copy"));
        let fetched = fetch(&m, &legacy_share.addr, &out, extra);
        assert!(
            fetched.status.success(),
            "{extra:?}: {}",
            text(&fetched.stderr)
        );
        assert_eq!(std::fs::read(&f).unwrap(), std::fs::read(&out).unwrap());
        let events = json_lines(&fetched.stdout);
        let connected: Vec<_> = events
            .iter()
            .filter(|e| e["event"] == "peer_connected")
            .collect();
        assert_eq!(connected.len(), 1);
        assert_eq!(connected[0]["capable"], false, "{extra:?}");
        let done = events.last().unwrap();
        assert_eq!(sent_hierarchical(done), Vec::<String>::new(), "{extra:?}");
        assert_eq!(done["stats"]["received"]["bitfield"], 1, "{extra:?}");
    }
    let stopped = legacy_share.interrupt();
    assert!(stopped.status.success(), "{}", text(&stopped.stderr));

    // A capable seeder, fetched with --legacy: nothing hierarchical from the fetcher, and the
    // seeder answers in kind (its own report, at the end of its JSON stream, says so).
    let (share, lines) = start_json_share(&f, &[]);
    let out = dir.path().join("l2.copy");
    let fetched = fetch(&m, &share.addr, &out, &["--legacy", "--json-events"]);
    assert!(fetched.status.success(), "{}", text(&fetched.stderr));
    let events = json_lines(&fetched.stdout);
    assert_eq!(
        sent_hierarchical(events.last().unwrap()),
        Vec::<String>::new()
    );
    let (stopped, share_events) = interrupt_json(share, lines);
    assert!(stopped.status.success(), "{}", text(&stopped.stderr));
    let done = share_events.last().unwrap();
    assert_eq!(done["event"], "done");
    assert_eq!(sent_hierarchical(done), Vec::<String>::new());
    assert_eq!(done["stats"]["units_served"], 10);
}

/// Rate flags take the units people write and refuse the rest with exit 2 naming the flag.
#[test]
fn rate_flags_parse_units_and_refuse_nonsense() {
    let dir = tempfile::tempdir().unwrap();
    let (f, m) = small_file_and_manifest(dir.path());
    for (args, flag) in [
        (
            vec!["share", f.to_str().unwrap(), "--max-upload-rate", "fast"],
            "--max-upload-rate",
        ),
        (
            vec![
                "fetch",
                m.to_str().unwrap(),
                "--peer",
                "127.0.0.1:1",
                "--out",
                "o",
                "--max-download-rate",
                "0MiB/s",
            ],
            "--max-download-rate",
        ),
    ] {
        let out = tierswarm(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let line = one_line(&out);
        assert!(line.contains(flag), "{line}");
    }
    let share = Share::start_with(&f, &["--max-upload-rate", "500KiB/s"], 1);
    let out = dir.path().join("r.copy");
    let fetched = fetch(&m, &share.addr, &out, &["--max-download-rate", "2MB/s"]);
    assert!(fetched.status.success(), "{}", text(&fetched.stderr));
    assert_eq!(std::fs::read(&f).unwrap(), std::fs::read(&out).unwrap());
}
