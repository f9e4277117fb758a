//! The flight recorder: every input a session's core received, with its time, and a digest of
//! the actions that came out; and [`replay`], which feeds a record to a fresh core and checks
//! that the same actions come out.
//!
//! A record is JSON lines. The first line is the header (configuration, limits, seed and the
//! initial availability), then one line per input:
//!
//! ```json
//! {"t":1532,"in":"frame","peer":1,"bytes":"AAAAJwoglq…","n":2,"d":"5f1c…"}
//! ```
//!
//! `t` is the input's time (µs since the session started), `in` its kind (`connected`,
//! `frame`, `disconnected`, `dropped`, `complete`, `failed`, `unavailable`, `sent`, `pressure`,
//! `reconfigure`, `drain`,
//! `timeout`), then its fields (frames as their received bytes, base64), `n` the number of
//! actions the core handed out for it and `d` a BLAKE3 digest of those actions in a canonical
//! rendering (messages as their encoded frames, payloads as their bytes, the rest as text).
//! Verification results are inputs (`complete`/`failed`), so a replay needs neither the data
//! file nor the network.
//!
//! A record is bounded: once the next line would take it past its size cap
//! ([`SessionOptions::record_limit`](super::SessionOptions::record_limit), default
//! [`DEFAULT_RECORD_LIMIT`]) a last line `{"note":"…","limit":N,"inputs":M}` says so and
//! recording stops; [`replay`] checks the record up to the note and reports it. A record that
//! cannot be written (a full disk) stops recording with a warning; the session goes on.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tierswarm_core::node::{
    drive, Config, DisconnectReason, DropReason, Event, Host, Limits, PressureSnapshot, Upload,
    Verdict,
};
use tierswarm_core::store::StoreState;
use tierswarm_core::trace::Stamped;
use tierswarm_core::wire::{decode_frame, encode_frame, Message, Proof};
use tierswarm_core::{Geometry, Input, LocalTiers, Node, PeerId, Timestamp};

use crate::manifest::{root_from_hex, root_to_hex};

/// Record format version.
pub const RECORD_VERSION: u32 = 1;

/// Default size cap of a flight record: 1 GiB (about 750 MiB of received units, base64).
pub const DEFAULT_RECORD_LIMIT: u64 = 1 << 30;

/// Bytes kept free under the cap for the closing note.
const NOTE_ROOM: u64 = 256;

/// The last line of a record cut at its size cap.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Note {
    note: String,
    limit: u64,
    inputs: u64,
}

/// The first line of a record: enough to build the same core again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Header {
    tierswarm_record: u32,
    info_hash: String,
    file_len: u64,
    peer_id: String,
    hierarchical: bool,
    seed: u64,
    trace: bool,
    limits: Limits,
    /// `Debug` of the limits, to detect fields this build does not know.
    limits_debug: String,
    /// The initial availability store (base64); absent for a seeder (everything present).
    initial: Option<String>,
}

impl Header {
    pub(crate) fn new(cfg: &Config, initial_store: Option<&[u8]>) -> Self {
        Header {
            tierswarm_record: RECORD_VERSION,
            info_hash: root_to_hex(&cfg.info_hash),
            file_len: cfg.file_len,
            peer_id: cfg.peer_id.clone(),
            hierarchical: cfg.hierarchical,
            seed: cfg.seed,
            trace: cfg.trace,
            limits: cfg.limits.clone(),
            limits_debug: format!("{:?}", cfg.limits),
            initial: initial_store.map(|s| B64.encode(s)),
        }
    }
}

/// One input, as recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "in", rename_all = "snake_case")]
enum RecInput {
    Connected {
        peer: u64,
    },
    Frame {
        peer: u64,
        bytes: String,
    },
    Disconnected {
        peer: u64,
    },
    Dropped {
        peer: u64,
        reason: DropReason,
    },
    Unavailable {
        peer: u64,
        unit: u64,
    },
    Complete {
        unit: u64,
    },
    Failed {
        peer: u64,
        unit: u64,
    },
    Sent {
        peer: u64,
        unit: u64,
    },
    Congested {
        peer: u64,
        congested: bool,
    },
    Pressure {
        network: f32,
        disk: f32,
        cpu: f32,
        memory: f32,
    },
    Reconfigure {
        limits: Box<Limits>,
    },
    Drain,
    Timeout,
    /// An input this build's recorder does not know how to write (a newer core's); a replay
    /// stops there.
    Unsupported {
        what: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Line {
    t: u64,
    #[serde(flatten)]
    input: RecInput,
    n: u64,
    d: String,
}

fn rec_input(info_hash: &[u8; 32], input: &Input, raw: Option<&Bytes>) -> RecInput {
    match input {
        Input::PeerConnected { peer } => RecInput::Connected { peer: peer.0 },
        Input::PeerFrame { peer, frame } => {
            let bytes = match raw {
                Some(b) => B64.encode(b),
                None => {
                    let mut buf = BytesMut::new();
                    let hash: &[u8] = if frame.info_hash.is_empty() {
                        &[]
                    } else {
                        info_hash
                    };
                    encode_frame(hash, &frame.msg, &mut buf);
                    B64.encode(&buf)
                }
            };
            RecInput::Frame {
                peer: peer.0,
                bytes,
            }
        }
        Input::PeerDisconnected { peer } => RecInput::Disconnected { peer: peer.0 },
        Input::PeerDropped { peer, reason } => RecInput::Dropped {
            peer: peer.0,
            reason: *reason,
        },
        Input::UnitUnavailable { peer, unit } => RecInput::Unavailable {
            peer: peer.0,
            unit: *unit,
        },
        Input::UnitComplete { unit } => RecInput::Complete { unit: *unit },
        Input::UnitFailed { peer, unit } => RecInput::Failed {
            peer: peer.0,
            unit: *unit,
        },
        Input::UnitSent { peer, unit } => RecInput::Sent {
            peer: peer.0,
            unit: *unit,
        },
        Input::PeerCongested { peer, congested } => RecInput::Congested {
            peer: peer.0,
            congested: *congested,
        },
        Input::Pressure(p) => RecInput::Pressure {
            network: p.network,
            disk: p.disk,
            cpu: p.cpu,
            memory: p.memory,
        },
        Input::Reconfigure(l) => RecInput::Reconfigure { limits: l.clone() },
        Input::Drain => RecInput::Drain,
        other => RecInput::Unsupported {
            what: format!("{other:?}"),
        },
    }
}

/// The canonical rendering of a core's actions, digested with BLAKE3: what a record line's `d`
/// is, and its count `n`. Messages digest as their encoded frames, payloads as their bytes, the
/// rest as text; every part is length-prefixed.
struct ActionDigest {
    h: blake3::Hasher,
    n: u64,
    info_hash: [u8; 32],
}

impl ActionDigest {
    fn new(info_hash: [u8; 32]) -> Self {
        ActionDigest {
            h: blake3::Hasher::new(),
            n: 0,
            info_hash,
        }
    }

    fn part(&mut self, bytes: &[u8]) {
        self.h.update(&(bytes.len() as u64).to_le_bytes());
        self.h.update(bytes);
    }

    fn action(&mut self, kind: &[u8], peer: Option<PeerId>) {
        self.n += 1;
        self.part(kind);
        if let Some(p) = peer {
            self.part(&p.0.to_le_bytes());
        }
    }

    fn send(&mut self, peer: PeerId, msg: &Message) {
        let mut buf = BytesMut::new();
        encode_frame(&self.info_hash, msg, &mut buf);
        self.action(b"send", Some(peer));
        self.part(&buf);
    }

    fn serve(&mut self, peer: PeerId, unit: u64) {
        self.action(b"serve", Some(peer));
        self.part(&unit.to_le_bytes());
    }

    fn store_unit(&mut self, peer: PeerId, unit: u64, data: &[u8], proof: Option<&Proof>) {
        self.action(b"store_unit", Some(peer));
        self.part(&unit.to_le_bytes());
        self.part(data);
        self.part(format!("{:?}", proof.cloned()).as_bytes());
    }

    fn disconnect(&mut self, peer: PeerId, reason: &DisconnectReason) {
        self.action(b"disconnect", Some(peer));
        self.part(reason.to_string().as_bytes());
    }

    fn persist(&mut self, store: &[u8]) {
        self.action(b"persist", None);
        self.part(store);
    }

    fn event(&mut self, e: &Event) {
        self.action(b"event", None);
        self.part(format!("{e:?}").as_bytes());
    }

    fn trace(&mut self, t: &Stamped) {
        self.action(b"trace", None);
        self.part(format!("{t:?}").as_bytes());
    }

    /// `(n, hex digest)` of the actions so far; starts over.
    fn take(&mut self) -> (u64, String) {
        let d = self.h.finalize().to_hex().to_string();
        self.h.reset();
        (core::mem::take(&mut self.n), d)
    }
}

/// The replay's [`Host`]: digests every action; outcomes come from the record's own lines.
/// With a listing, it also writes each action as a JSON object for [`replay_listing`].
struct ReplayHost {
    digest: ActionDigest,
    listing: Option<Vec<String>>,
}

/// `s` as a JSON string.
fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

impl ReplayHost {
    /// Lists one action: `{"<kind>":<what>}`, with `"peer":N` after it when it has one.
    fn list(&mut self, kind: &str, what: impl FnOnce() -> String, peer: Option<PeerId>) {
        if let Some(l) = self.listing.as_mut() {
            let peer = peer.map_or(String::new(), |p| format!(",\"peer\":{}", p.0));
            l.push(format!("{{\"{kind}\":{}{peer}}}", what()));
        }
    }
}

impl Host for ReplayHost {
    fn send(&mut self, peer: PeerId, msg: Message) {
        self.digest.send(peer, &msg);
        self.list("send", || json_str(&msg.to_string()), Some(peer));
    }
    fn serve(&mut self, peer: PeerId, unit: u64) -> Upload {
        self.digest.serve(peer, unit);
        self.list("serve", || unit.to_string(), Some(peer));
        Upload::Later
    }
    fn store_unit(
        &mut self,
        peer: PeerId,
        unit: u64,
        data: Bytes,
        proof: Option<Proof>,
    ) -> Verdict {
        self.digest.store_unit(peer, unit, &data, proof.as_ref());
        self.list("store_unit", || unit.to_string(), Some(peer));
        Verdict::Later
    }
    fn persist(&mut self, store: Bytes) {
        self.digest.persist(&store);
        self.list("persist", || store.len().to_string(), None);
    }
    fn disconnect(&mut self, peer: PeerId, reason: DisconnectReason) {
        self.digest.disconnect(peer, &reason);
        self.list("disconnect", || json_str(&reason.to_string()), Some(peer));
    }
    fn event(&mut self, e: Event) {
        self.digest.event(&e);
        self.list("event", || json_str(&format!("{e:?}")), None);
    }
    fn trace(&mut self, t: Stamped) {
        self.digest.trace(&t);
        // The trace record's own JSON line (an object).
        self.list("trace", || t.to_json_line(), None);
    }
}

/// Writes a record as a session runs, up to its size cap.
pub(crate) struct Recorder {
    out: BufWriter<File>,
    path: PathBuf,
    info_hash: [u8; 32],
    open: Option<(u64, RecInput)>,
    digest: ActionDigest,
    written: u64,
    limit: u64,
    inputs: u64,
}

/// What [`Recorder::end`] did with the input's line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recorded {
    /// Written.
    Line,
    /// The cap is reached: the closing note was written instead, and the record is finished.
    CapReached,
}

impl Recorder {
    pub(crate) fn create(path: &Path, header: &Header, limit: u64) -> io::Result<Recorder> {
        let mut out = BufWriter::with_capacity(256 * 1024, File::create(path)?);
        let mut first = serde_json::to_vec(header)?;
        first.push(b'\n');
        out.write_all(&first)?;
        let info_hash = root_from_hex(&header.info_hash).unwrap_or_default();
        Ok(Recorder {
            out,
            path: path.to_path_buf(),
            info_hash,
            open: None,
            digest: ActionDigest::new(info_hash),
            written: first.len() as u64,
            limit,
            inputs: 0,
        })
    }

    /// The record's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The record's size cap in bytes.
    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }

    pub(crate) fn begin(&mut self, t: Timestamp, input: &Input, raw: Option<&Bytes>) {
        self.open = Some((t.as_micros(), rec_input(&self.info_hash, input, raw)));
    }

    pub(crate) fn begin_timeout(&mut self, t: Timestamp) {
        self.open = Some((t.as_micros(), RecInput::Timeout));
    }

    pub(crate) fn digest_send(&mut self, peer: PeerId, msg: &Message) {
        self.digest.send(peer, msg);
    }

    pub(crate) fn digest_serve(&mut self, peer: PeerId, unit: u64) {
        self.digest.serve(peer, unit);
    }

    pub(crate) fn digest_store_unit(
        &mut self,
        peer: PeerId,
        unit: u64,
        data: &[u8],
        proof: Option<&Proof>,
    ) {
        self.digest.store_unit(peer, unit, data, proof);
    }

    pub(crate) fn digest_persist(&mut self, store: &[u8]) {
        self.digest.persist(store);
    }

    pub(crate) fn digest_disconnect(&mut self, peer: PeerId, reason: &DisconnectReason) {
        self.digest.disconnect(peer, reason);
    }

    pub(crate) fn digest_event(&mut self, e: &Event) {
        self.digest.event(e);
    }

    pub(crate) fn digest_trace(&mut self, t: &Stamped) {
        self.digest.trace(t);
    }

    /// Writes the line of the input begun last, or the closing note if the line would take the
    /// record past its cap (the caller then drops the recorder).
    pub(crate) fn end(&mut self) -> io::Result<Recorded> {
        let Some((t, input)) = self.open.take() else {
            return Ok(Recorded::Line);
        };
        let (n, d) = self.digest.take();
        let line = Line { t, input, n, d };
        let mut bytes = serde_json::to_vec(&line)?;
        bytes.push(b'\n');
        if self.written + bytes.len() as u64 + NOTE_ROOM > self.limit {
            let note = Note {
                note: format!(
                    "size cap of {} bytes reached: recording stopped",
                    self.limit
                ),
                limit: self.limit,
                inputs: self.inputs,
            };
            let mut bytes = serde_json::to_vec(&note)?;
            bytes.push(b'\n');
            self.out.write_all(&bytes)?;
            self.out.flush()?;
            return Ok(Recorded::CapReached);
        }
        self.out.write_all(&bytes)?;
        self.written += bytes.len() as u64;
        self.inputs += 1;
        Ok(Recorded::Line)
    }

    pub(crate) fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// What a successful replay checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    /// Inputs fed.
    pub inputs: u64,
    /// Actions compared.
    pub actions: u64,
    /// The record's closing note when it was cut at its size cap (the replay stopped there).
    pub truncated: Option<String>,
}

/// Why a replay failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The record could not be read.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// A line is not a valid record line.
    #[error("line {line}: {reason}")]
    Parse {
        /// 1-based line number.
        line: u64,
        /// Why.
        reason: String,
    },
    /// The core did something else this time.
    #[error("line {line}: the core handed out {got} actions (digest {got_digest}), the record has {expected} (digest {expected_digest})")]
    Mismatch {
        /// 1-based line number.
        line: u64,
        /// Actions recorded.
        expected: u64,
        /// Actions now.
        got: u64,
        /// Digest recorded.
        expected_digest: String,
        /// Digest now.
        got_digest: String,
    },
}

/// Feeds the record at `path` to a fresh core and checks that every input gives the same
/// actions as recorded. A record cut short (a killed process) is checked up to its last whole
/// line.
pub fn replay(path: &Path) -> Result<ReplayReport, ReplayError> {
    replay_into(path, None)
}

/// [`replay`], writing to `out` what the core did: one JSON line per input, as it is fed —
///
/// ```json
/// {"line":12,"t":20113,"in":"frame","peer":1,"msg":"transfer(5)","actions":[{"store_unit":5,"peer":1}]}
/// ```
///
/// `line` is the record's line, `t` the input's time (µs), `in` its kind with its fields (a
/// frame as its message's short rendering, `msg`), and `actions` everything the core handed out
/// for it, in order: `send` (a message's rendering) and `serve`, `store_unit`, `disconnect`
/// with their `peer`, `persist` (the store's size), `event`, and `trace` (the core's trace
/// record, when the recorded session traced). The line that differs from the record, if one
/// does, is written before the error returns: what the core did instead is the last line.
pub fn replay_listing(path: &Path, out: &mut dyn Write) -> Result<ReplayReport, ReplayError> {
    replay_into(path, Some(out))
}

fn replay_into(path: &Path, mut out: Option<&mut dyn Write>) -> Result<ReplayReport, ReplayError> {
    let reader = BufReader::new(File::open(path)?);
    let mut lines = reader.lines();
    let parse = |line: u64, reason: String| ReplayError::Parse { line, reason };
    let first = lines
        .next()
        .ok_or_else(|| parse(1, "empty record".into()))??;
    let header: Header = serde_json::from_str(&first).map_err(|e| parse(1, e.to_string()))?;
    if header.tierswarm_record != RECORD_VERSION {
        return Err(parse(
            1,
            format!(
                "record version {} is not {RECORD_VERSION}",
                header.tierswarm_record
            ),
        ));
    }
    let info_hash = root_from_hex(&header.info_hash).map_err(|e| parse(1, e))?;
    let cfg = Config {
        info_hash,
        file_len: header.file_len,
        peer_id: header.peer_id.clone(),
        hierarchical: header.hierarchical,
        seed: header.seed,
        trace: header.trace,
        limits: header.limits.clone(),
    };
    if format!("{:?}", cfg.limits) != header.limits_debug {
        return Err(parse(
            1,
            "the record's limits cannot be rebuilt by this build (a field it does not know)".into(),
        ));
    }
    let geo = Geometry::new(header.file_len).map_err(|e| parse(1, e.to_string()))?;
    let local = match &header.initial {
        None => LocalTiers::full(geo),
        Some(b) => {
            let bytes = B64.decode(b).map_err(|e| parse(1, e.to_string()))?;
            // Any store version: records made before stores named their root stay replayable.
            let (state, _) = StoreState::decode(&bytes).map_err(|e| parse(1, e.to_string()))?;
            if state.geometry() != geo {
                return Err(parse(
                    1,
                    "the initial store is for another file length".into(),
                ));
            }
            state.tiers
        }
    };
    let mut node =
        Node::try_new(cfg, local, Timestamp::ZERO).map_err(|e| parse(1, e.to_string()))?;
    let max_frame = node.max_frame_len();
    let mut host = ReplayHost {
        digest: ActionDigest::new(info_hash),
        listing: out.is_some().then(Vec::new),
    };
    let mut report = ReplayReport {
        inputs: 0,
        actions: 0,
        truncated: None,
    };
    for (i, text) in lines.enumerate() {
        let no = i as u64 + 2;
        let text = text?;
        if text.trim().is_empty() {
            continue;
        }
        let Ok(line) = serde_json::from_str::<Line>(&text) else {
            // A record cut at its size cap ends with a note; a torn last line of a killed
            // process ends it too.
            if let Ok(note) = serde_json::from_str::<Note>(&text) {
                report.truncated = Some(note.note);
            }
            break;
        };
        let t = Timestamp::from_micros(line.t);
        let mut listed = out.is_some().then(|| listed_input(no, &line));
        let input = match line.input {
            RecInput::Timeout => None,
            RecInput::Connected { peer } => Some(Input::PeerConnected { peer: PeerId(peer) }),
            RecInput::Frame { peer, bytes } => {
                let raw = B64.decode(bytes).map_err(|e| parse(no, e.to_string()))?;
                let mut buf = BytesMut::from(&raw[..]);
                let frame = decode_frame(&mut buf, max_frame)
                    .map_err(|e| parse(no, e.to_string()))?
                    .ok_or_else(|| parse(no, "truncated frame".into()))?;
                Some(Input::PeerFrame {
                    peer: PeerId(peer),
                    frame,
                })
            }
            RecInput::Disconnected { peer } => Some(Input::PeerDisconnected { peer: PeerId(peer) }),
            RecInput::Dropped { peer, reason } => Some(Input::PeerDropped {
                peer: PeerId(peer),
                reason,
            }),
            RecInput::Unavailable { peer, unit } => Some(Input::UnitUnavailable {
                peer: PeerId(peer),
                unit,
            }),
            RecInput::Complete { unit } => Some(Input::UnitComplete { unit }),
            RecInput::Failed { peer, unit } => Some(Input::UnitFailed {
                peer: PeerId(peer),
                unit,
            }),
            RecInput::Sent { peer, unit } => Some(Input::UnitSent {
                peer: PeerId(peer),
                unit,
            }),
            RecInput::Congested { peer, congested } => Some(Input::PeerCongested {
                peer: PeerId(peer),
                congested,
            }),
            RecInput::Pressure {
                network,
                disk,
                cpu,
                memory,
            } => Some(Input::Pressure(PressureSnapshot {
                network,
                disk,
                cpu,
                memory,
            })),
            RecInput::Reconfigure { limits } => Some(Input::Reconfigure(limits)),
            RecInput::Drain => Some(Input::Drain),
            RecInput::Unsupported { what } => {
                return Err(parse(
                    no,
                    format!("an input this build cannot replay: {what}"),
                ))
            }
        };
        if let (Some(head), Some(Input::PeerFrame { frame, .. })) = (listed.as_mut(), &input) {
            head.push_str(&format!(",\"msg\":{}", json_str(&frame.msg.to_string())));
        }
        match input {
            Some(input) => node.handle_input(t, input),
            None => node.handle_timeout(t),
        }
        drive(&mut node, t, &mut host);
        let (n, got_digest) = host.digest.take();
        if let (Some(out), Some(head), Some(actions)) =
            (out.as_deref_mut(), listed.take(), host.listing.as_mut())
        {
            writeln!(out, "{head},\"actions\":[{}]}}", actions.join(","))?;
            actions.clear();
        }
        if n != line.n || got_digest != line.d {
            return Err(ReplayError::Mismatch {
                line: no,
                expected: line.n,
                got: n,
                expected_digest: line.d,
                got_digest,
            });
        }
        report.inputs += 1;
        report.actions += n;
    }
    Ok(report)
}

/// The start of a record line's listing, unclosed: `{"line":N,"t":T,"in":"<kind>"` and the
/// input's fields but a frame's bytes (its message is added once decoded).
fn listed_input(no: u64, line: &Line) -> String {
    let mut head = format!("{{\"line\":{no},\"t\":{}", line.t);
    let fields = match &line.input {
        RecInput::Frame { peer, .. } => format!("{{\"in\":\"frame\",\"peer\":{peer}}}"),
        other => serde_json::to_string(other).unwrap_or_else(|_| "{}".into()),
    };
    // A tagged enum serialises as one object, tag first: its fields go on after ours.
    let inner = fields
        .strip_prefix('{')
        .and_then(|f| f.strip_suffix('}'))
        .unwrap_or_default();
    if !inner.is_empty() {
        head.push(',');
        head.push_str(inner);
    }
    head
}
