//! The tierswarm core driven by a hand-written event loop: plain `std::net` sockets in
//! non-blocking mode, readiness from `mio`, and no async runtime anywhere.
//!
//! It proves the core embeds anywhere by talking to the real `tierswarm` binary:
//!
//! 1. this loop **shares** a generated file and a `tierswarm fetch` process downloads it;
//! 2. a `tierswarm share` process serves that download and this loop **fetches** it back.
//!
//! Both copies are checked against the content root (the plain BLAKE3 hash of the file).
//!
//! ```text
//! cargo run --release --example custom_event_loop
//! ```
//!
//! The `tierswarm` binary is built from the workspace (with the cargo that runs this example)
//! unless `TIERSWARM_BIN` names one. As a test it is ignored by default; `.ci/run` runs it (see
//! [`shares_to_and_fetches_from_the_tierswarm_binary`]).
//!
//! The whole embedding is the [`Net`] type: it implements the core's [`Host`] (what the node
//! asks for: send a message, serve a unit, store a unit, close a connection), and the loop in
//! [`Embedding::run`] turns socket readiness and the node's timer into inputs, calling
//! [`drive`] after each. The node itself never sees a socket or a clock.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use mio::{Events, Interest, Poll, Token};
use tierswarm_core::node::{DisconnectReason, Upload, Verdict};
use tierswarm_core::wire::{encode_frame, FrameLimits, Message, Proof};
use tierswarm_core::{drive, Config, Event, Geometry, Host, Input, LocalTiers, Node, PeerId};
use tierswarm_core::{trace::Stamped, Timestamp};
use tierswarm_io::driver::{proof, FrameReader};
use tierswarm_io::{verify_unit, Manifest, Outboard, UnitProof, UNIT_LEN};

/// The listener's token; connections use their peer id (which starts at 1).
const LISTENER: Token = Token(0);
/// Longest any phase may take before the example gives up (a loopback transfer of a few MiB
/// takes well under a second; this only stops a broken run from hanging).
const PHASE_LIMIT: Duration = Duration::from_secs(120);

/// One TCP connection: the socket, frames being read, bytes waiting to be written (bounded by
/// the node: a TRANSFER holds an upload slot until the socket has taken it).
struct Conn {
    stream: mio::net::TcpStream,
    reader: FrameReader,
    out: BytesMut,
    /// Bytes queued on this connection so far, and bytes written to the socket so far.
    queued: u64,
    written: u64,
    /// TRANSFERs in `out`: `(queued offset where the frame ends, unit)`. Once written, the
    /// node hears `UnitSent` — so its upload slots follow what the socket really took.
    transfers: VecDeque<(u64, u64)>,
}

/// The file: all of it (when sharing) or what has arrived (when fetching), with the proofs
/// to serve each unit.
struct Content {
    root: [u8; 32],
    data: Vec<u8>,
    /// The seeder's proofs of every unit; a fetcher keeps the proofs that came with its units.
    outboard: Option<Outboard>,
    proofs: BTreeMap<u64, UnitProof>,
}

impl Content {
    fn range(&self, unit: u64) -> std::ops::Range<usize> {
        let start = (unit * UNIT_LEN) as usize;
        start..(start + UNIT_LEN as usize).min(self.data.len())
    }

    fn proof(&self, unit: u64) -> Option<UnitProof> {
        match &self.outboard {
            Some(o) => o.proof(unit).ok(),
            None => self.proofs.get(&unit).cloned(),
        }
    }
}

/// Everything the node acts on: the node's [`Host`].
struct Net {
    conns: BTreeMap<PeerId, Conn>,
    content: Content,
    /// Units written to connections, to report as `UnitSent` after the current input.
    sent: Vec<(PeerId, u64)>,
    complete: bool,
}

impl Net {
    fn queue(&mut self, peer: PeerId, msg: &Message) {
        if let Some(c) = self.conns.get_mut(&peer) {
            let before = c.out.len();
            encode_frame(&self.content.root, msg, &mut c.out);
            c.queued += (c.out.len() - before) as u64;
        }
    }

    /// Writes what the socket takes without blocking; notes the TRANSFERs fully written.
    /// An error closes the connection; returns whether it is still open.
    fn flush(&mut self, peer: PeerId) -> bool {
        let Some(c) = self.conns.get_mut(&peer) else {
            return false;
        };
        while !c.out.is_empty() {
            match c.stream.write(&c.out) {
                Ok(0) => return false,
                Ok(n) => {
                    let _ = c.out.split_to(n);
                    c.written += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        while c
            .transfers
            .front()
            .is_some_and(|&(end, _)| end <= c.written)
        {
            let (_, unit) = c.transfers.pop_front().unwrap_or_default();
            self.sent.push((peer, unit));
        }
        true
    }
}

impl Host for Net {
    fn send(&mut self, peer: PeerId, msg: Message) {
        self.queue(peer, &msg);
    }

    fn serve(&mut self, peer: PeerId, unit: u64) -> Upload {
        let Some(proof) = self.content.proof(unit) else {
            return Upload::Failed; // the node answers with a REJECT
        };
        let data = Bytes::copy_from_slice(&self.content.data[self.content.range(unit)]);
        let proof = Some(proof::to_wire(&proof));
        self.queue(peer, &Message::Transfer { unit, data, proof });
        match self.conns.get_mut(&peer) {
            // Reported as sent once the socket has taken the last byte (see `Net::flush`).
            Some(c) => {
                c.transfers.push_back((c.queued, unit));
                Upload::Later
            }
            None => Upload::Failed,
        }
    }

    fn store_unit(&mut self, _: PeerId, unit: u64, data: Bytes, p: Option<Proof>) -> Verdict {
        // Nothing from a peer is trusted before it checks out against the content root.
        let c = &mut self.content;
        let len = c.data.len() as u64;
        let Some(p) = p.as_ref().and_then(proof::from_wire) else {
            return Verdict::Failed;
        };
        if verify_unit(&c.root, len, unit, &data, &p).is_err() {
            return Verdict::Failed; // the node drops the sender and asks someone else
        }
        let range = c.range(unit);
        c.data[range].copy_from_slice(&data);
        c.proofs.insert(unit, p);
        Verdict::Verified
    }

    fn persist(&mut self, _store: Bytes) {
        // The availability store lets a restarted download resume; this one lives in memory
        // and does not restart, so there is nothing to keep.
    }

    fn disconnect(&mut self, peer: PeerId, reason: DisconnectReason) {
        eprintln!("  closing connection {}: {reason}", peer.0);
        let _ = self.flush(peer);
        self.conns.remove(&peer); // dropping the socket closes it (and leaves the poll set)
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::PeerReady { peer, capable } => {
                eprintln!("  peer {} ready (hierarchical: {capable})", peer.0);
            }
            Event::Complete => self.complete = true,
            _ => {}
        }
    }

    fn trace(&mut self, _: Stamped) {}
}

/// A node, its host, a poll set and a clock: one peer of the swarm.
struct Embedding {
    node: Node,
    net: Net,
    poll: Poll,
    listener: Option<mio::net::TcpListener>,
    epoch: Instant,
    next_peer: u64,
}

impl Embedding {
    fn new(content: Content, local: LocalTiers, seed: u64) -> io::Result<Self> {
        let len = content.data.len() as u64;
        let mut cfg = Config::new(content.root, len, "custom-event-loop");
        cfg.seed = seed;
        let node = Node::try_new(cfg, local, Timestamp::ZERO).map_err(io::Error::other)?;
        let net = Net {
            conns: BTreeMap::new(),
            content,
            sent: Vec::new(),
            complete: false,
        };
        Ok(Embedding {
            node,
            net,
            poll: Poll::new()?,
            listener: None,
            epoch: Instant::now(),
            next_peer: 0,
        })
    }

    /// The core's time: microseconds since this embedding started.
    fn now(&self) -> Timestamp {
        Timestamp::from_micros(self.epoch.elapsed().as_micros() as u64)
    }

    /// Tells the node something happened, then runs its actions (and their follow-ups).
    fn feed(&mut self, input: Input) {
        let now = self.now();
        self.node.handle_input(now, input);
        drive(&mut self.node, now, &mut self.net);
    }

    fn listen(&mut self) -> io::Result<SocketAddr> {
        let std_listener = TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let mut l = mio::net::TcpListener::from_std(std_listener);
        self.poll
            .registry()
            .register(&mut l, LISTENER, Interest::READABLE)?;
        let addr = l.local_addr()?;
        self.listener = Some(l);
        Ok(addr)
    }

    /// Connects to `addr` (a plain blocking connect: on loopback it is immediate).
    fn dial(&mut self, addr: SocketAddr) -> io::Result<()> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nonblocking(true)?;
        self.add(mio::net::TcpStream::from_std(stream))
    }

    /// A new connection (dialled or accepted): registered, and announced to the node.
    fn add(&mut self, mut stream: mio::net::TcpStream) -> io::Result<()> {
        stream.set_nodelay(true)?;
        self.next_peer += 1;
        let peer = PeerId(self.next_peer);
        // Edge-triggered readiness for both directions: reads and writes go on until they
        // would block, and the next edge wakes the loop.
        let interest = Interest::READABLE | Interest::WRITABLE;
        self.poll
            .registry()
            .register(&mut stream, Token(peer.0 as usize), interest)?;
        let geo = Geometry::new(self.net.content.data.len() as u64).map_err(io::Error::other)?;
        let conn = Conn {
            stream,
            reader: FrameReader::new(FrameLimits::for_geometry(geo), false),
            out: BytesMut::new(),
            queued: 0,
            written: 0,
            transfers: VecDeque::new(),
        };
        self.net.conns.insert(peer, conn);
        self.feed(Input::PeerConnected { peer });
        Ok(())
    }

    /// Reads what the socket has, feeding each complete frame to the node as soon as it is
    /// cut (so at most one partial frame is ever buffered). A closed socket or a bad frame
    /// ends the connection.
    fn read(&mut self, peer: PeerId) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // The connection may be gone: closed by the node while it handled a frame.
            let Some(c) = self.net.conns.get_mut(&peer) else {
                return;
            };
            match c.stream.read(&mut buf) {
                Ok(0) => return self.gone(peer),
                Ok(n) => c.reader.buffer().extend_from_slice(&buf[..n]),
                // Edge-triggered: read until the socket is empty; the next edge wakes us.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return self.gone(peer),
            }
            while let Some(c) = self.net.conns.get_mut(&peer) {
                match c.reader.next_frame() {
                    Ok(Some(incoming)) => self.feed(Input::PeerFrame {
                        peer,
                        frame: incoming.frame,
                    }),
                    Ok(None) => break,
                    Err(e) => {
                        eprintln!("  connection {}: bad frame: {e}", peer.0);
                        return self.gone(peer);
                    }
                }
            }
        }
    }

    fn gone(&mut self, peer: PeerId) {
        if self.net.conns.remove(&peer).is_some() {
            self.feed(Input::PeerDisconnected { peer });
        }
    }

    /// Writes what every connection has queued, and tells the node about units that went out
    /// (which may queue more: the loop repeats until nothing new is written).
    fn flush_all(&mut self) {
        loop {
            let peers: Vec<PeerId> = self.net.conns.keys().copied().collect();
            for peer in peers {
                if !self.net.flush(peer) {
                    self.gone(peer);
                }
            }
            if self.net.sent.is_empty() {
                return;
            }
            for (peer, unit) in std::mem::take(&mut self.net.sent) {
                self.feed(Input::UnitSent { peer, unit });
            }
        }
    }

    /// The event loop: waits for socket readiness or the node's next timer, turns what happened
    /// into inputs, and stops once `done` says so (checked at least every 50 ms).
    fn run(&mut self, mut done: impl FnMut(&mut Self) -> bool) -> io::Result<()> {
        let started = Instant::now();
        let mut events = Events::with_capacity(256);
        self.flush_all();
        while !done(self) {
            if started.elapsed() > PHASE_LIMIT {
                return Err(io::Error::other("the transfer did not finish in time"));
            }
            let wake = self.node.poll_timeout().map(|t| self.epoch + duration(t));
            let wait = wake.map_or(Duration::MAX, |w| {
                w.saturating_duration_since(Instant::now())
            });
            self.poll
                .poll(&mut events, Some(wait.min(Duration::from_millis(50))))?;
            for event in events.iter() {
                if event.token() == LISTENER {
                    self.accept()?;
                    continue;
                }
                let peer = PeerId(event.token().0 as u64);
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    self.read(peer);
                }
            }
            let now = self.now();
            if self.node.poll_timeout().is_some_and(|t| t <= now) {
                self.node.handle_timeout(now);
                drive(&mut self.node, now, &mut self.net);
            }
            // Writable edges need no handling of their own: every pass writes what is queued.
            self.flush_all();
        }
        Ok(())
    }

    fn accept(&mut self) -> io::Result<()> {
        loop {
            let Some(l) = self.listener.as_ref() else {
                return Ok(());
            };
            match l.accept() {
                // mio accepts in non-blocking mode already.
                Ok((stream, _)) => self.add(stream)?,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }
}

fn duration(t: Timestamp) -> Duration {
    Duration::from_micros(t.as_micros())
}

// ---- the two phases ----------------------------------------------------------------------

/// Size of the example file: 97 units, the last one partial, across four T2 blocks.
const FILE_LEN: u64 = 6 * 1024 * 1024 + 1234;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let bin = tierswarm_binary()?;
    println!("using {}", bin.display());

    // Some content: BLAKE3's extendable output of a label, so every run shares the same bytes.
    let mut data = vec![0u8; FILE_LEN as usize];
    blake3::Hasher::new()
        .update(b"tierswarm custom_event_loop example")
        .finalize_xof()
        .fill(&mut data);
    let outboard = Outboard::build(&data[..], FILE_LEN)?;
    let root = outboard.root();
    assert_eq!(root, *blake3::hash(&data).as_bytes(), "the root is b3sum's");
    println!("content root {}", blake3::Hash::from(root).to_hex());

    // Phase 1: this loop shares; a `tierswarm fetch` process downloads.
    let manifest = Manifest {
        root,
        file_len: FILE_LEN,
        name: "example.bin".into(),
    };
    let manifest_path = dir.path().join("example.tsm");
    manifest.save(&manifest_path)?;
    let content = Content {
        root,
        data,
        outboard: Some(outboard),
        proofs: BTreeMap::new(),
    };
    let geo = Geometry::new(FILE_LEN).map_err(io::Error::other)?;
    let mut seeder = Embedding::new(content, LocalTiers::full(geo), 1)?;
    let addr = seeder.listen()?;
    println!("phase 1: sharing on {addr}; `tierswarm fetch` downloads");
    let fetched = dir.path().join("fetched.bin");
    let mut fetch = Command::new(&bin)
        .arg("fetch")
        .arg(&manifest_path)
        .args(["--peer", &format!("tcp://{addr}"), "--out"])
        .arg(&fetched)
        .stdout(Stdio::null())
        .stderr(log_file(dir.path(), "fetch.log")?)
        .spawn()?;
    let mut status = None;
    seeder.run(|_| {
        status = fetch.try_wait().ok().flatten();
        status.is_some()
    })?;
    let served = seeder.node.stats().units_served;
    if !status.is_some_and(|s| s.success()) {
        return Err(failure("tierswarm fetch", status, dir.path(), "fetch.log"));
    }
    check_root(
        &std::fs::read(&fetched)?,
        &root,
        "the file tierswarm fetched",
    )?;
    println!("  tierswarm fetch finished: {served} units served by this loop, file verified");

    // Phase 2: `tierswarm share` serves that download; this loop fetches it.
    let mut share = Command::new(&bin)
        .arg("share")
        .arg(&fetched)
        .args(["--listen", "127.0.0.1:0", "--manifest-out"])
        .arg(dir.path().join("again.tsm"))
        .stdout(Stdio::piped())
        .stderr(log_file(dir.path(), "share.log")?)
        .spawn()?;
    let result = fetch_from(&mut share, dir.path(), &root);
    // `share` serves until stopped: stop the process this example started.
    let _ = share.kill();
    let _ = share.wait();
    let units = result?;
    println!("  fetched {units} units from tierswarm share, file verified");
    println!("ok: the core ran on a hand-written loop, both ways, with no async runtime");
    Ok(())
}

/// Phase 2's download from the `share` process: returns the units fetched.
fn fetch_from(
    share: &mut Child,
    dir: &Path,
    root: &[u8; 32],
) -> Result<u64, Box<dyn std::error::Error>> {
    // `share` prints `listening on tcp://ADDR` once its manifest is written.
    let stdout = share.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .map(|u| u.trim_start_matches("tcp://"))
        .ok_or_else(|| {
            failure(
                "tierswarm share",
                share.try_wait().ok().flatten(),
                dir,
                "share.log",
            )
        })?;
    let addr: SocketAddr = addr.parse()?;
    let manifest = Manifest::load(dir.join("again.tsm"))?;
    if manifest.root != *root {
        return Err("tierswarm share computed another root".into());
    }
    println!("phase 2: `tierswarm share` on {addr}; this loop downloads");
    let content = Content {
        root: manifest.root,
        data: vec![0; manifest.file_len as usize],
        outboard: None,
        proofs: BTreeMap::new(),
    };
    let geo = Geometry::new(manifest.file_len).map_err(io::Error::other)?;
    let mut leecher = Embedding::new(content, LocalTiers::new(geo), 2)?;
    leecher.dial(addr)?;
    leecher.run(|e| e.net.complete)?;
    check_root(
        &leecher.net.content.data,
        root,
        "the file this loop fetched",
    )?;
    Ok(leecher.node.local().units_present())
}

fn check_root(data: &[u8], root: &[u8; 32], what: &str) -> io::Result<()> {
    if blake3::hash(data).as_bytes() == root {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{what} does not hash to the content root"
        )))
    }
}

fn log_file(dir: &Path, name: &str) -> io::Result<std::fs::File> {
    std::fs::File::create(dir.join(name))
}

/// An error naming the process that failed, with its log.
fn failure(
    what: &str,
    status: Option<std::process::ExitStatus>,
    dir: &Path,
    log: &str,
) -> Box<dyn std::error::Error> {
    let log = std::fs::read_to_string(dir.join(log)).unwrap_or_default();
    format!("{what} failed ({status:?}):\n{log}").into()
}

/// The `tierswarm` binary: `TIERSWARM_BIN`, or the workspace's, built now by the cargo that
/// runs this example (a no-op when it is up to date) into the same profile directory.
fn tierswarm_binary() -> io::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("TIERSWARM_BIN") {
        let bin = PathBuf::from(bin);
        if !bin.is_file() {
            // A relative path is taken from the working directory, which `cargo test` sets to
            // the package's folder: say where it was looked for.
            let cwd = std::env::current_dir().unwrap_or_default();
            let shown = format!("{} (from {})", bin.display(), cwd.display());
            return Err(io::Error::other(format!(
                "TIERSWARM_BIN={shown}: no such file"
            )));
        }
        return Ok(bin);
    }
    // This example is `target/<profile dir>/examples/custom_event_loop[-hash]`.
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| io::Error::other("cannot find the target directory"))?;
    let cargo = std::env::var_os("CARGO").ok_or_else(|| {
        io::Error::other("run this with cargo, or set TIERSWARM_BIN to a tierswarm binary")
    })?;
    // The profile that writes to this directory: `release`, or `debug` for which `cargo
    // test` builds with the `test` profile and `cargo run` with `dev`.
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("release") => "release",
        _ if cfg!(test) => "test",
        _ => "dev",
    };
    let status = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "-p",
            "tierswarm-cli",
            "--bin",
            "tierswarm",
        ])
        .args(["--profile", profile])
        .status()?;
    if !status.success() {
        return Err(io::Error::other("building the tierswarm binary failed"));
    }
    Ok(profile_dir.join(format!("tierswarm{}", std::env::consts::EXE_SUFFIX)))
}

/// Ignored by default: it needs the `tierswarm` binary, and building it from here (with only
/// that package's features) would rebuild its dependencies on top of the workspace test build.
/// `.ci/run` runs it against the binary the workspace tests built:
///
/// ```text
/// cargo test --workspace
/// TIERSWARM_BIN=$PWD/target/debug/tierswarm cargo test --workspace --example custom_event_loop -- --ignored
/// ```
#[test]
#[ignore = "needs the tierswarm binary; .ci/run runs it (see its doc comment)"]
fn shares_to_and_fetches_from_the_tierswarm_binary() {
    main().expect("the example runs");
}
