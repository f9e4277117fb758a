//! Out of descriptors (issue 9): a `tierswarm share` limited to 32 descriptors (`prlimit`) is
//! sent 60 connections that do nothing. Its accept fails with EMFILE; the accept loop backs off
//! (100 ms) and retries instead of ending the session. Once they close, an honest fetch from it
//! completes with the exact file, and the seeder is still running.

mod common;
use common::{listening_url, make_file, Reaped};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tierswarm");
const LIMIT: Duration = Duration::from_secs(60);

/// Waits (bounded by [`LIMIT`]) until `done`, looking every 20 ms.
fn until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < LIMIT, "{what}: not within {LIMIT:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_seeder_out_of_descriptors_backs_off_and_serves_again() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("skipped: no prlimit (util-linux) on this system");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.bin");
    make_file(&src, (4 << 20) + 5, 0x2545_f491_4f6c_dd1d);
    let manifest = dir.path().join("src.tsm");
    let err = dir.path().join("share.err");
    let mut share = Command::new("prlimit")
        .arg("--nofile=32:32")
        .arg(BIN)
        .arg("share")
        .arg(&src)
        .arg("--manifest-out")
        .arg(&manifest)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let url = listening_url(&mut share);
    let mut share = Reaped(share);
    let addr = url.strip_prefix("tcp://").unwrap_or(&url).to_string();

    // More connections than it has descriptors: the kernel completes them all (the listen
    // backlog), the seeder accepts until it runs out.
    let crowd: Vec<TcpStream> = (0..60)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    let emfile = || {
        let text = std::fs::read_to_string(&err).unwrap();
        text.contains("os error 24")
    };
    until("accept failing with EMFILE", emfile);
    assert!(
        share.0.try_wait().unwrap().is_none(),
        "the session ended when accept failed"
    );
    drop(crowd);

    // An honest fetch once they have gone: the seeder accepts again and serves.
    let out = dir.path().join("out.bin");
    let fetch = Command::new(BIN)
        .arg("fetch")
        .arg(&manifest)
        .args(["--peer", &url, "--out"])
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut fetch = Reaped(fetch);
    let mut status = None;
    until("the honest fetch", || {
        status = fetch.0.try_wait().unwrap();
        status.is_some()
    });
    assert!(status.unwrap().success(), "the honest fetch failed");
    assert!(
        std::fs::read(&src).unwrap() == std::fs::read(&out).unwrap(),
        "the honest copy differs"
    );
    assert!(
        share.0.try_wait().unwrap().is_none(),
        "the seeder is still serving"
    );
}
