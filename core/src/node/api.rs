//! The node's vocabulary with its embedder: what goes in ([`Input`]), what comes out
//! ([`Action`], [`Event`]), why a connection ends ([`DisconnectReason`]) and what is counted
//! ([`Stats`]).

use super::peer::PeerId;
use crate::availability::ClaimError;
use crate::bitfield::BitfieldError;
use crate::store::StoreError;
use crate::tiers::TierError;
use crate::trace::Stamped;
use crate::wire::{Frame, Message, MessageKind, Proof};
use bytes::Bytes;
use std::collections::BTreeMap;

/// Load levels reported by the embedder, each in `0.0..=1.0`.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PressureSnapshot {
    /// Network (send queues).
    pub network: f32,
    /// Disk (write queue).
    pub disk: f32,
    /// CPU.
    pub cpu: f32,
    /// Memory.
    pub memory: f32,
}

/// Something that happened, told to the node.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Input {
    /// A connection is up (either direction). The node sends its handshake.
    PeerConnected {
        /// Handle for this connection.
        peer: PeerId,
    },
    /// A frame arrived on a connection.
    PeerFrame {
        /// The connection.
        peer: PeerId,
        /// The decoded frame.
        frame: Frame,
    },
    /// A connection closed (by the remote or by the embedder).
    PeerDisconnected {
        /// The connection.
        peer: PeerId,
    },
    /// The embedder dropped a connection for `reason` (a write that stalled, a frame that did
    /// not finish in time): the node releases the peer as for
    /// [`Input::PeerDisconnected`] and counts the reason in [`Stats::disconnects`].
    PeerDropped {
        /// The connection.
        peer: PeerId,
        /// Why.
        reason: DropReason,
    },
    /// A unit handed out by [`Action::StoreUnit`] (or obtained otherwise) was verified and
    /// written.
    UnitComplete {
        /// The unit.
        unit: u64,
    },
    /// A unit handed out by [`Action::StoreUnit`] failed verification.
    UnitFailed {
        /// The peer it came from.
        peer: PeerId,
        /// The unit.
        unit: u64,
    },
    /// A unit handed out by [`Action::Serve`] could not be served: reading it failed, or it no
    /// longer matches its proof (the file changed behind the node's back). The node answers
    /// the request with a REJECT (`unavailable`) instead, and frees the upload slot.
    UnitUnavailable {
        /// The connection.
        peer: PeerId,
        /// The unit.
        unit: u64,
    },
    /// A unit handed out by [`Action::Serve`] has been written to the connection.
    UnitSent {
        /// The connection.
        peer: PeerId,
        /// The unit.
        unit: u64,
    },
    /// The embedder's connection to `peer` stopped taking data (`congested`: a write has been
    /// waiting on a full socket), or took it again (`!congested`). While congested the peer is
    /// handed no new [`Action::Serve`], and the units already handed out for it, until reported
    /// sent, count only against its own
    /// [`Limits::upload_slots_per_peer`](super::Limits::upload_slots_per_peer), not the shared
    /// [`Limits::upload_slots`](super::Limits::upload_slots): a slow reader cannot hold upload
    /// capacity that others could use.
    PeerCongested {
        /// The connection.
        peer: PeerId,
        /// Congested (true) or drained (false).
        congested: bool,
    },
    /// Current load.
    Pressure(PressureSnapshot),
    /// New limits (take effect for new decisions).
    Reconfigure(Box<super::Limits>),
    /// Stop requesting, finish what is in flight, persist, then report [`Event::Drained`].
    Drain,
}

impl Input {
    /// A message from `peer` in an envelope naming the right content (a convenience for
    /// embedders that do not keep the envelope, such as tests).
    pub fn message(peer: PeerId, msg: Message) -> Self {
        Input::PeerFrame {
            peer,
            frame: Frame {
                info_hash: Bytes::new(),
                msg,
            },
        }
    }
}

/// Progress and lifecycle news for the embedder.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A peer finished its handshake.
    PeerReady {
        /// The peer.
        peer: PeerId,
        /// Whether it takes the hierarchical path.
        capable: bool,
    },
    /// A unit was completed.
    Progress {
        /// Units present.
        units: u64,
        /// Units in the file.
        total: u64,
    },
    /// Every unit is present.
    Complete,
    /// Drain finished: nothing in flight, state persisted.
    Drained,
}

/// Something the embedder must do, in the order handed out. Most embedders do not match on
/// these: they implement [`Host`](super::Host) and call [`drive`](super::drive).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Action {
    /// Send a message on a connection.
    Send {
        /// The connection.
        peer: PeerId,
        /// The message.
        msg: Message,
    },
    /// Read `unit`, send it in a TRANSFER with its proof, then report [`Input::UnitSent`].
    Serve {
        /// The connection.
        peer: PeerId,
        /// The unit.
        unit: u64,
    },
    /// Verify `data` against the content root and write it, then report
    /// [`Input::UnitComplete`] or [`Input::UnitFailed`]. Never mark it available before.
    StoreUnit {
        /// Where it came from.
        peer: PeerId,
        /// The unit.
        unit: u64,
        /// Its bytes.
        data: Bytes,
        /// Its proof (opaque to the core).
        proof: Option<Proof>,
    },
    /// Close a connection; the node has already released everything it held for it.
    Disconnect {
        /// The connection.
        peer: PeerId,
        /// Why.
        reason: DisconnectReason,
    },
    /// Write this encoded availability store atomically.
    Persist {
        /// The encoded [`StoreState`](crate::store::StoreState).
        store: Bytes,
    },
    /// News.
    Event(Event),
    /// A trace record (only with [`Config::trace`](super::Config::trace)).
    Trace(Stamped),
}

/// Why a connection ended. Displays as the one-line reason traces and logs show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The embedder reported the connection closed.
    #[error("connection closed")]
    Closed,
    /// [`Limits::max_peers`](super::Limits::max_peers) connections are open already.
    #[error("too many peers")]
    TooManyPeers,
    /// No handshake within [`Limits::handshake_timeout`](super::Limits::handshake_timeout).
    #[error("handshake timeout")]
    HandshakeTimeout,
    /// A frame's envelope names other content.
    #[error("frame for another info hash")]
    FrameForOtherContent,
    /// The handshake names other content.
    #[error("handshake for another info hash")]
    HandshakeForOtherContent,
    /// A handshake different from the first.
    #[error("protocol: second handshake")]
    SecondHandshake,
    /// Anything but a handshake before the handshake.
    #[error("protocol: message before handshake")]
    BeforeHandshake,
    /// A hierarchical summary from a peer that did not announce the capability.
    #[error("protocol: summary from a legacy peer")]
    SummaryFromLegacy,
    /// A refine request from a peer that did not announce the capability.
    #[error("protocol: refine from a legacy peer")]
    RefineFromLegacy,
    /// A flat bitfield from a capable peer (capable peers send summaries).
    #[error("protocol: bitfield from a capable peer")]
    BitfieldFromCapable,
    /// A second flat bitfield.
    #[error("protocol: second bitfield")]
    SecondBitfield,
    /// A summary of a tier that does not exist.
    #[error("protocol: summary of an unknown tier")]
    UnknownSummaryTier,
    /// A refine response with an id we never issued to this peer.
    #[error("protocol: refine response nobody asked for")]
    UnsolicitedRefineResponse,
    /// A refine response whose window is not the one asked for.
    #[error("protocol: refine response for another window")]
    WrongRefineWindow,
    /// A TRANSFER nobody asked for.
    #[error("protocol: unit nobody asked for")]
    UnsolicitedTransfer,
    /// A REJECT of a request nobody made.
    #[error("protocol: reject nobody asked for")]
    UnsolicitedReject,
    /// A flat bitfield of the wrong length.
    #[error("bad bitfield: {0}")]
    BadBitfield(BitfieldError),
    /// A HAVE past the last unit.
    #[error("claim: HAVE past the end of the file")]
    HavePastEnd,
    /// Availability claims that cannot be true of this file.
    #[error("claim: {0}")]
    Claim(ClaimError),
    /// A unit from this peer failed verification.
    #[error("sent data that failed verification")]
    FailedVerification,
    /// Too many request timeouts in a row and no answer for a while.
    #[error("unresponsive: too many request timeouts")]
    Unresponsive,
    /// Nothing at all arrived for [`Limits::liveness`](super::Limits::liveness).
    #[error("idle: nothing received for the liveness interval")]
    Idle,
    /// A write made no progress for [`Limits::write_stall`](super::Limits::write_stall) (the
    /// peer does not read).
    #[error("write stalled: the peer does not read")]
    WriteStalled,
    /// A frame did not complete within [`Limits::frame_timeout`](super::Limits::frame_timeout).
    #[error("frame timeout: a frame did not complete in time")]
    FrameTimeout,
    /// A frame over its kind's size limit, or one that does not decode (the embedder's frame
    /// reader refused it before the node saw it).
    #[error("bad frame: over its limit or malformed")]
    BadFrame,
    /// Both sides hold the whole file: nothing can flow either way, and the connection would
    /// only hold a place a downloader could use.
    #[error("both complete: nothing to exchange")]
    BothComplete,
    /// The peer sent [`Limits::max_serve_queue`](super::Limits::max_serve_queue) requests that
    /// no honest requester sends: for units never advertised on this connection, or beyond its
    /// full serve queue here (counted since the queue was last at most half full).
    #[error("request flood: requests far beyond the serve queue")]
    RequestFlood,
}

/// Why an embedder dropped a connection ([`Input::PeerDropped`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DropReason {
    /// [`DisconnectReason::WriteStalled`].
    WriteStalled,
    /// [`DisconnectReason::FrameTimeout`].
    FrameTimeout,
    /// [`DisconnectReason::BadFrame`].
    BadFrame,
}

impl From<DropReason> for DisconnectReason {
    fn from(r: DropReason) -> Self {
        match r {
            DropReason::WriteStalled => DisconnectReason::WriteStalled,
            DropReason::FrameTimeout => DisconnectReason::FrameTimeout,
            DropReason::BadFrame => DisconnectReason::BadFrame,
        }
    }
}

/// What [`Stats::disconnects`] counts by: the family of a [`DisconnectReason`].
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DisconnectKind {
    /// [`DisconnectReason::Closed`].
    Closed,
    /// [`DisconnectReason::TooManyPeers`].
    TooManyPeers,
    /// [`DisconnectReason::HandshakeTimeout`].
    HandshakeTimeout,
    /// A frame or handshake for other content.
    OtherContent,
    /// A protocol violation (message order, capability, unsolicited answers).
    Protocol,
    /// A malformed flat bitfield.
    BadBitfield,
    /// An availability claim that cannot be true.
    Claim,
    /// Data that failed verification.
    FailedVerification,
    /// [`DisconnectReason::Unresponsive`].
    Unresponsive,
    /// [`DisconnectReason::Idle`].
    Idle,
    /// A peer that does not read or sends too slowly: [`DisconnectReason::WriteStalled`],
    /// [`DisconnectReason::FrameTimeout`].
    Stalled,
    /// [`DisconnectReason::BadFrame`].
    BadFrame,
    /// [`DisconnectReason::BothComplete`].
    BothComplete,
    /// [`DisconnectReason::RequestFlood`].
    RequestFlood,
}

impl DisconnectReason {
    /// The family this reason is counted under.
    pub fn kind(&self) -> DisconnectKind {
        use DisconnectReason as R;
        match self {
            R::Closed => DisconnectKind::Closed,
            R::TooManyPeers => DisconnectKind::TooManyPeers,
            R::HandshakeTimeout => DisconnectKind::HandshakeTimeout,
            R::FrameForOtherContent | R::HandshakeForOtherContent => DisconnectKind::OtherContent,
            R::SecondHandshake
            | R::BeforeHandshake
            | R::SummaryFromLegacy
            | R::RefineFromLegacy
            | R::BitfieldFromCapable
            | R::SecondBitfield
            | R::UnknownSummaryTier
            | R::UnsolicitedRefineResponse
            | R::WrongRefineWindow
            | R::UnsolicitedTransfer
            | R::UnsolicitedReject => DisconnectKind::Protocol,
            R::BadBitfield(_) => DisconnectKind::BadBitfield,
            R::HavePastEnd | R::Claim(_) => DisconnectKind::Claim,
            R::FailedVerification => DisconnectKind::FailedVerification,
            R::Unresponsive => DisconnectKind::Unresponsive,
            R::Idle => DisconnectKind::Idle,
            R::WriteStalled | R::FrameTimeout => DisconnectKind::Stalled,
            R::BadFrame => DisconnectKind::BadFrame,
            R::BothComplete => DisconnectKind::BothComplete,
            R::RequestFlood => DisconnectKind::RequestFlood,
        }
    }
}

impl serde::Serialize for DisconnectReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One value per [`MessageKind`], serialised as an object keyed by the kind's name (kinds at
/// their default value are left out).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PerKind<T>([T; MessageKind::ALL.len()]);

impl<T> core::ops::Index<MessageKind> for PerKind<T> {
    type Output = T;
    fn index(&self, kind: MessageKind) -> &T {
        &self.0[kind as usize]
    }
}

impl<T> core::ops::IndexMut<MessageKind> for PerKind<T> {
    fn index_mut(&mut self, kind: MessageKind) -> &mut T {
        &mut self.0[kind as usize]
    }
}

impl<T: Default + PartialEq> PerKind<T> {
    /// The kinds with a non-default value, in wire-number order.
    pub fn iter(&self) -> impl Iterator<Item = (MessageKind, &T)> {
        let zero = T::default();
        MessageKind::ALL
            .into_iter()
            .zip(self.0.iter())
            .filter(move |(_, v)| **v != zero)
    }
}

impl<T: Default + PartialEq + serde::Serialize> serde::Serialize for PerKind<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter().map(|(k, v)| (k.name(), v)))
    }
}

/// Messages and bytes of one kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Traffic {
    /// Messages.
    pub messages: u64,
    /// Bytes on the wire (frames, length prefixes included).
    pub bytes: u64,
}

/// Counters and gauges.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Inputs handled (timeouts included).
    pub events: u64,
    /// Messages and bytes sent, by kind. TRANSFERs are counted when handed out to serve, with
    /// their payload and a full-depth proof.
    pub sent: PerKind<Traffic>,
    /// Messages received, by kind.
    pub received: PerKind<u64>,
    /// Unit requests sent.
    pub requests: u64,
    /// Unit requests that timed out (their units went back to the pool: retries).
    pub request_timeouts: u64,
    /// Units requested again after a timeout, reject or failed verification.
    pub retries: u64,
    /// Units received that were already present or being verified.
    pub duplicate_units: u64,
    /// Units that failed verification.
    pub failed_units: u64,
    /// Refine requests sent.
    pub refine_requests: u64,
    /// Refinements that timed out.
    pub refine_timeouts: u64,
    /// Refine responses that came after their timeout.
    pub late_refines: u64,
    /// Units served.
    pub units_served: u64,
    /// Requests rejected by us.
    pub rejects_sent: u64,
    /// Units that could not be served (read failure, or no longer matching their proof).
    pub unavailable_units: u64,
    /// Peers disconnected by the node, by family of reason.
    pub disconnects: BTreeMap<DisconnectKind, u64>,
    /// Persist actions.
    pub persists: u64,
    /// Active unit requests now.
    pub in_flight_requests: u32,
    /// Refinements in flight now.
    pub in_flight_refines: u32,
    /// Requests queued for upload now.
    pub queued_serves: u64,
}

/// Errors building a node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The file length is not acceptable.
    #[error(transparent)]
    Geometry(#[from] TierError),
    /// The local tiers are for another file length.
    #[error("local state is for {found} bytes, config says {expected}")]
    WrongFile {
        /// Length of the state.
        found: u64,
        /// Length configured.
        expected: u64,
    },
    /// The persisted store was refused.
    #[error("availability store rejected: {0}")]
    Store(#[from] StoreError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_display_as_their_trace_text_and_count_by_family() {
        let r = DisconnectReason::Claim(ClaimError::WrongTier(crate::Tier::T3));
        assert!(r.to_string().starts_with("claim: "));
        assert_eq!(r.kind(), DisconnectKind::Claim);
        assert_eq!(
            DisconnectReason::UnsolicitedTransfer.to_string(),
            "protocol: unit nobody asked for"
        );
        assert_eq!(
            DisconnectReason::UnsolicitedTransfer.kind(),
            DisconnectKind::Protocol
        );
        assert_eq!(
            serde_json::to_string(&DisconnectReason::HandshakeTimeout).unwrap(),
            "\"handshake timeout\""
        );
    }

    #[test]
    fn per_kind_serialises_non_zero_kinds_by_name() {
        let mut p: PerKind<u64> = PerKind::default();
        p[MessageKind::Have] = 3;
        p[MessageKind::Summary] = 1;
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"have":3,"summary":1}"#
        );
        assert_eq!(p.iter().count(), 2);
    }
}
