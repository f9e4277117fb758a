//! Hostile peers (`behaviour` in a scenario) and the embedder's defences against them.
//!
//! A hostile peer runs a real, unmodified [`Node`](tierswarm_core::Node); its hostility lives
//! here, in the embedding, which rewrites, drops or multiplies what the node sends, and treats
//! what it is sent differently. The honest peers' side plays the defences a real embedder has
//! (`adapters/io`): a write that makes no progress for `limits.write_stall` drops the peer, a
//! frame that does not finish within `limits.frame_timeout` drops it, and data that fails
//! verification is reported as [`Verdict::Failed`](tierswarm_core::node::Verdict) (the node then
//! disconnects the sender). The node's own rules do the rest (liveness, unresponsive peers,
//! claims that cannot be true, unsolicited answers).
//!
//! Every random choice comes from the peer's own stream `hostile/<id>`, so an honest swarm
//! draws nothing here and keeps its trace hash, and a hostile one replays bit for bit.
//!
//! | behaviour | what its embedding does |
//! |---|---|
//! | `liar` | every summary, bitfield and refine response it sends claims every unit in its range; its node rejects requests for the units it lacks |
//! | `slow-reader` | never drains its socket: each connection to it holds [`UNREAD_BUFFER`] bytes, after which the sender's write makes no progress; TRANSFERs are never read (its node is still told the small control frames, so that it can ask for units as an attacker who knows the protocol would); keeps every connection open |
//! | `corrupt` | every TRANSFER it serves carries corrupt data |
//! | `silent` | at its k-th serve (k uniform in `1..=`[`SILENT_AFTER_SERVES`]) it sends half the TRANSFER and from then on nothing at all, keeping every connection open |
//! | `flood` | at the handshake and then every [`FLOOD_EVERY`] it sends each ready peer [`FLOOD_BURST`] requests for units drawn uniformly from the file (held by the peer or not, repeats included) beside its node's own traffic; the answers to the flood are read and discarded |

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use tierswarm_core::node::{DisconnectKind, DisconnectReason, DropReason};
use tierswarm_core::wire::Message;
use tierswarm_core::{Bitfield, Geometry, Tier};

use super::node_side::Ctx;
use super::NodeEv;
use crate::rng::SimRng;
use crate::scenario::{Behaviour, PeerSpec};

/// Bytes a connection holds towards a peer that never reads before the sender's writes stop
/// making progress: the receiver's initial TCP receive window (128 KiB on Linux, which does not
/// grow for an application that reads nothing) plus a sender's socket buffer of the same order.
/// Four units.
pub(super) const UNREAD_BUFFER: u64 = 256 * 1024;

/// How often a flooder sends a burst to each peer.
/// The serve queue it fills drains at the flooder's share of a peer's upload (a few units a
/// second), so a burst every few seconds keeps it full; the first burst goes out as soon as the
/// handshake is done.
pub(super) const FLOOD_EVERY: Duration = Duration::from_secs(5);

/// Requests per burst and peer: four times the largest request window (`Limits::max_window`),
/// twice what a node queues for one peer (`Limits::max_serve_queue`).
pub(super) const FLOOD_BURST: u32 = 256;

/// A silent peer goes silent at its k-th serve, k uniform in `1..=SILENT_AFTER_SERVES`.
pub(super) const SILENT_AFTER_SERVES: u64 = 16;

/// The payload of a corrupt TRANSFER. Honest payloads are modelled by size and carry no bytes,
/// so any payload at all fails verification.
const CORRUPT: &[u8] = b"corrupt";

/// One hostile peer's state (honest peers have none).
#[derive(Debug)]
pub(super) enum PeerState {
    Liar,
    /// What each sender wrote to it and it did not read is kept at the sender
    /// (`Slot::unread`): it is the sender's socket buffer that fills.
    SlowReader,
    Corrupt,
    Silent {
        /// Serves until it goes silent; 0 once it is.
        serves_left: u64,
    },
    Flood {
        rng: SimRng,
        /// Peers its node has seen ready, with the connection they were ready on.
        ready: BTreeMap<usize, u64>,
        /// Requests its node sent and not yet seen answered, (peer, unit): only their answers
        /// reach the node, the flood's are read and discarded (so the node stays consistent
        /// and goes on serving and downloading as a flooding client would).
        asked: BTreeSet<(usize, u64)>,
    },
}

/// What one sender wrote to a slow reader on one connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Unread {
    conn: u64,
    bytes: u64,
    stalled: bool,
}

impl PeerState {
    /// The state of peer `spec`, from its own stream of `root`; `None` for an honest peer.
    pub(super) fn new(spec: &PeerSpec, root: &SimRng) -> Option<Box<PeerState>> {
        let mut rng = root.derive(&format!("hostile/{}", spec.id));
        let state = match spec.behaviour {
            Behaviour::Honest => return None,
            Behaviour::Liar => PeerState::Liar,
            Behaviour::SlowReader => PeerState::SlowReader,
            Behaviour::Corrupt => PeerState::Corrupt,
            Behaviour::Silent => PeerState::Silent {
                serves_left: 1 + rng.below(SILENT_AFTER_SERVES),
            },
            Behaviour::Flood => PeerState::Flood {
                rng,
                ready: BTreeMap::new(),
                asked: BTreeSet::new(),
            },
        };
        Some(Box::new(state))
    }

    fn is_silent(&self) -> bool {
        matches!(self, PeerState::Silent { serves_left: 0 })
    }

    /// Whether the peer's embedding ignores its node's disconnects: a silent peer and a slow
    /// reader keep their connections open whatever their nodes decide (the honest side has
    /// to drop them).
    pub(super) fn keeps_connections(&self) -> bool {
        matches!(self, PeerState::Silent { .. } | PeerState::SlowReader)
    }
}

/// Whether a TRANSFER's payload fails verification.
pub(super) fn is_corrupt(data: &[u8]) -> bool {
    !data.is_empty()
}

/// What a liar sends instead of `msg`: every availability message claims every unit or block
/// it covers (within the file, spare bits zero, so the claim is well-formed); other messages
/// are unchanged.
pub(super) fn lie(msg: Message, geo: Geometry) -> Message {
    /// All bits of a window of `bytes` bytes starting at `start` of `count` blocks.
    fn full(bytes: usize, start: u64, count: u64) -> Bytes {
        let bits = (bytes as u64 * 8).min(count.saturating_sub(start));
        Bytes::copy_from_slice(Bitfield::full(bits).as_bytes())
    }
    let tier_blocks = |tier: u32| Tier::from_number(tier).map_or(0, |t| geo.blocks(t));
    match msg {
        Message::Bitfield { .. } => Message::Bitfield {
            bits: Bytes::copy_from_slice(Bitfield::full(geo.units()).as_bytes()),
        },
        Message::Summary {
            tier,
            start,
            all,
            partial,
        } => {
            let len = all.len().max(partial.len());
            Message::Summary {
                tier,
                start,
                all: full(len, start, tier_blocks(tier)),
                partial: Bytes::new(),
            }
        }
        Message::RefineResponse {
            tier,
            start,
            bits,
            id,
            reject: None,
        } => Message::RefineResponse {
            tier,
            start,
            bits: full(bits.len(), start, tier_blocks(tier)),
            id,
            reject: None,
        },
        other => other,
    }
}

/// The key a disconnect is counted under in the report: the family of its reason, with the
/// embedder's two stall reasons told apart.
pub(super) fn reason_key(reason: &DisconnectReason) -> &'static str {
    match reason {
        DisconnectReason::WriteStalled => return "write_stalled",
        DisconnectReason::FrameTimeout => return "frame_timeout",
        _ => {}
    }
    match reason.kind() {
        DisconnectKind::Closed => "closed",
        DisconnectKind::TooManyPeers => "too_many_peers",
        DisconnectKind::HandshakeTimeout => "handshake_timeout",
        DisconnectKind::OtherContent => "other_content",
        DisconnectKind::Protocol => "protocol",
        DisconnectKind::BadBitfield => "bad_bitfield",
        DisconnectKind::Claim => "claim",
        DisconnectKind::FailedVerification => "failed_verification",
        DisconnectKind::Unresponsive => "unresponsive",
        DisconnectKind::Idle => "idle",
        DisconnectKind::BadFrame => "bad_frame",
        DisconnectKind::BothComplete => "both_complete",
        DisconnectKind::RequestFlood => "request_flood",
        _ => "other",
    }
}

impl Ctx<'_, '_> {
    /// This node's node sends `msg` to `j`, one of them hostile.
    pub(super) fn hostile_send(&mut self, j: usize, msg: Message) {
        let msg = match self.slot.hostile.as_deref_mut() {
            Some(PeerState::Liar) => lie(msg, self.sh.geo),
            Some(s) if s.is_silent() => return,
            Some(PeerState::Flood { asked, .. }) => {
                if let Message::Request { unit, .. } = msg {
                    asked.insert((j, unit));
                }
                msg
            }
            _ => msg,
        };
        self.forward(j, msg);
    }

    /// This node's embedding puts `msg` on the wire to `j`, if `j` has room for it.
    fn forward(&mut self, j: usize, msg: Message) {
        if self.unread_room(j, msg.frame_len() as u64) {
            self.send(j, msg);
        }
    }

    /// Whether this hostile node's embedding hands `msg` from `from` to its node: a flooder's
    /// embedding discards the answers to its flood.
    pub(super) fn reaches_node(&mut self, from: usize, msg: &Message) -> bool {
        let Some(PeerState::Flood { asked, .. }) = self.slot.hostile.as_deref_mut() else {
            return true;
        };
        match *msg {
            Message::Transfer { unit, .. } | Message::Reject { unit, .. } => {
                asked.remove(&(from, unit))
            }
            _ => true,
        }
    }

    /// This node serves `unit` to `j`, one of them hostile.
    pub(super) fn hostile_serve(&mut self, j: usize, unit: u64) {
        let mut data = Bytes::new();
        match self.slot.hostile.as_deref_mut() {
            Some(PeerState::Silent { serves_left: 0 }) => return,
            Some(PeerState::Silent { serves_left }) => {
                *serves_left -= 1;
                if *serves_left == 0 {
                    return self.cut_transfer(j, unit);
                }
            }
            Some(PeerState::Corrupt) => data = Bytes::from_static(CORRUPT),
            _ => {}
        }
        let reads = self.sh.specs[j].behaviour != Behaviour::SlowReader;
        if reads || self.unread_room(j, self.sh.transfer_len(unit)) {
            self.serve_as(j, unit, data, reads);
        }
    }

    /// Whether `bytes` more from this node fit in what `j` has not read. Always, unless `j` is
    /// a slow reader; once they do not, this node's writes to `j` make no progress, and its
    /// embedder drops `j` after `write_stall`. (What `j` has not read is kept at the writer:
    /// it is the writer's socket buffer that fills.)
    fn unread_room(&mut self, j: usize, bytes: u64) -> bool {
        if self.sh.specs[j].behaviour != Behaviour::SlowReader {
            return true;
        }
        let Some(&conn) = self.slot.conns.get(&j) else {
            return true;
        };
        let u = self.slot.unread.entry(j).or_insert(Unread {
            conn,
            bytes: 0,
            stalled: false,
        });
        if u.conn != conn {
            *u = Unread {
                conn,
                bytes: 0,
                stalled: false,
            };
        }
        if u.stalled {
            return false;
        }
        if u.bytes + bytes <= UNREAD_BUFFER {
            u.bytes += bytes;
            return true;
        }
        u.stalled = true;
        let stall = self.sh.limits.write_stall;
        self.slot.queue.push(
            self.now + stall,
            NodeEv::Drop {
                conn,
                peer: j,
                reason: DropReason::WriteStalled,
            },
        );
        false
    }

    /// A flooder's burst to every peer its node has seen ready (on a connection still open);
    /// then the next one.
    pub(super) fn flood(&mut self) {
        self.slot.queue.push(self.now + FLOOD_EVERY, NodeEv::Flood);
        if self.slot.node.is_none() {
            return;
        }
        let slot = &*self.slot;
        let Some(PeerState::Flood { ready, .. }) = slot.hostile.as_deref() else {
            return;
        };
        let targets: Vec<usize> = ready
            .iter()
            .filter(|&(j, conn)| slot.conns.get(j) == Some(conn))
            .map(|(&j, _)| j)
            .collect();
        for j in targets {
            self.burst(j);
        }
    }

    /// This flooder sends `j` [`FLOOD_BURST`] requests for units drawn from the whole file.
    fn burst(&mut self, j: usize) {
        let units = self.sh.geo.units();
        let Some(PeerState::Flood { rng, .. }) = self.slot.hostile.as_deref_mut() else {
            return;
        };
        let burst: Vec<u64> = (0..FLOOD_BURST).map(|_| rng.below(units)).collect();
        for unit in burst {
            self.forward(j, Message::Request { unit, held: 0 });
        }
    }

    /// This node finished the handshake with `j`: a flooder floods it at once, and then at
    /// every burst.
    pub(super) fn hostile_ready(&mut self, j: usize) {
        let slot = &mut *self.slot;
        if let Some(PeerState::Flood { ready, .. }) = slot.hostile.as_deref_mut() {
            if let Some(&conn) = slot.conns.get(&j) {
                ready.insert(j, conn);
                self.burst(j);
            }
        }
    }

    /// Counts a disconnect decided by this node (only honest peers' decisions are reported:
    /// they are the defences), by the behaviour of the peer dropped.
    pub(super) fn note_disconnect(&mut self, j: usize, reason: &DisconnectReason) {
        // Two complete peers parting is the end of their business, not a drop.
        if self.slot.hostile.is_none() && *reason != DisconnectReason::BothComplete {
            let of = self.sh.specs[j].behaviour;
            *self
                .slot
                .tally
                .disconnects
                .entry((of, reason_key(reason)))
                .or_default() += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lies_claim_everything_in_range_and_stay_well_formed() {
        // 300 units: 1 T3 block (512 units), 10 T2 blocks (32 units each).
        let geo = Geometry::new(300 * 65_536).unwrap();
        let Message::Bitfield { bits } = lie(
            Message::Bitfield {
                bits: Bytes::from(vec![0u8; 38]),
            },
            geo,
        ) else {
            panic!("a bitfield stays a bitfield");
        };
        assert_eq!(Bitfield::from_bytes(&bits, 300).unwrap().count_ones(), 300);

        let Message::Summary { all, partial, .. } = lie(
            Message::Summary {
                tier: 3,
                start: 0,
                all: Bytes::from_static(&[0]),
                partial: Bytes::from_static(&[0x80]),
            },
            geo,
        ) else {
            panic!("a summary stays a summary");
        };
        assert_eq!((&all[..], &partial[..]), (&[0x80][..], &[][..]));

        let Message::RefineResponse { bits, start, .. } = lie(
            Message::RefineResponse {
                tier: 1,
                start: 0,
                bits: Bytes::from(vec![0u8; 38]),
                id: 7,
                reject: None,
            },
            geo,
        ) else {
            panic!("a refine response stays one");
        };
        assert_eq!(start, 0);
        let claimed = Bitfield::from_window_bytes(&bits, 300).unwrap();
        assert_eq!(claimed.count_ones(), 300, "every unit, none past the end");

        let reject = Message::RefineResponse {
            tier: 1,
            start: 0,
            bits: Bytes::new(),
            id: 8,
            reject: Some("overloaded".into()),
        };
        assert!(matches!(
            lie(reject, geo),
            Message::RefineResponse {
                reject: Some(_),
                ..
            }
        ));
        assert!(matches!(
            lie(Message::Have { unit: 3 }, geo),
            Message::Have { unit: 3 }
        ));
    }

    #[test]
    fn silent_and_flood_states_come_from_the_peers_own_stream() {
        let spec = |id, behaviour| PeerSpec {
            id,
            group: 0,
            role: crate::Role::Leecher,
            upload_bps: 1,
            download_bps: 1,
            latency: Duration::ZERO,
            protocol: crate::Protocol::Hierarchical,
            join_at: Duration::ZERO,
            behaviour,
        };
        let root = SimRng::new(3);
        assert!(PeerState::new(&spec(0, Behaviour::Honest), &root).is_none());
        let left = |id| match *PeerState::new(&spec(id, Behaviour::Silent), &root).unwrap() {
            PeerState::Silent { serves_left } => serves_left,
            _ => unreachable!(),
        };
        let all: Vec<u64> = (0..64).map(left).collect();
        assert!(all.iter().all(|k| (1..=SILENT_AFTER_SERVES).contains(k)));
        assert!(all.iter().any(|&k| k != all[0]), "drawn per peer");
        assert_eq!(all, (0..64).map(left).collect::<Vec<_>>(), "replayable");
        assert!(PeerState::new(&spec(1, Behaviour::SlowReader), &root)
            .unwrap()
            .keeps_connections());
        assert!(!PeerState::new(&spec(1, Behaviour::Flood), &root)
            .unwrap()
            .keeps_connections());
        assert!(!PeerState::new(&spec(1, Behaviour::Corrupt), &root)
            .unwrap()
            .keeps_connections());
    }

    #[test]
    fn reasons_are_counted_by_family_with_stalls_told_apart() {
        assert_eq!(reason_key(&DisconnectReason::WriteStalled), "write_stalled");
        assert_eq!(reason_key(&DisconnectReason::FrameTimeout), "frame_timeout");
        assert_eq!(
            reason_key(&DisconnectReason::FailedVerification),
            "failed_verification"
        );
        assert_eq!(reason_key(&DisconnectReason::Idle), "idle");
        assert_eq!(
            reason_key(&DisconnectReason::UnsolicitedTransfer),
            "protocol"
        );
    }
}
