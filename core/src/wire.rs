//! The peer wire protocol: length-prefixed frames carrying a protobuf `PeerMessage`.
//!
//! Compatible with the original project's `peer_protocol.proto` (package `protocol`), extended
//! with the hierarchical kinds; `dev/PROTOCOL.md` is the full specification. A frame is a 4-byte
//! big-endian length followed by that many bytes of `PeerMessage { info_hash = 1; type = 2;
//! payload = 3 }`, whose `payload` is the encoded payload message of that type.
//!
//! Decoding is total: any bytes give a message, "need more bytes" or a typed [`WireError`], and
//! never allocate past the frame limit. Unknown fields are ignored; unknown message kinds decode
//! to [`Message::Unknown`] so a newer peer's additions do not break an older one.
//!
//! **Limits before decoding.** A connection's reader uses [`decode_frame_limited`] with the
//! [`FrameLimits`] of the file: every message kind has its own size limit, checked from the
//! length prefix and the envelope's first fields *before* the body is collected (a frame before
//! the peer's handshake, and any control message, is at most [`CONTROL_FRAME_MAX`] bytes; a
//! TRANSFER is one unit plus a proof as deep as the file's tree; a BITFIELD has its exact length
//! for the file). Repeated fields are counted before they are collected, so a TRANSFER can never
//! carry more than [`FrameLimits::proof_nodes`] proof nodes, whatever its length. The limits and
//! their values are listed in `dev/ROBUSTNESS.md`.
//!
//! ```
//! use bytes::BytesMut;
//! use tierswarm_core::wire::{decode_frame, encode_frame, Message};
//! let root = [7u8; 32];
//! let mut buf = BytesMut::new();
//! encode_frame(&root, &Message::Have { unit: 42 }, &mut buf);
//! let frame = decode_frame(&mut buf, 1 << 20).unwrap().unwrap();
//! assert_eq!(frame.msg, Message::Have { unit: 42 });
//! assert_eq!(&frame.info_hash[..], &root[..]);
//! assert!(buf.is_empty());
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::encoding::{
    decode_key, decode_varint, encode_key, encode_varint, encoded_len_varint, key_len, skip_field,
    DecodeContext, WireType,
};
use prost::Message as _;

use crate::tiers::{Geometry, Tier, T1_SIZE};

/// Protocol version this implementation speaks in its handshake.
pub const PROTOCOL_VERSION: u32 = 1;
/// Highest tier this implementation understands.
pub const MAX_TIER_SUPPORTED: u32 = 3;
/// Requests a capable peer that does not say otherwise ([`Capabilities::serve_queue`] 0) queues
/// from each peer before it answers "busy": every version before the field had this queue, and
/// counts requests beyond it towards a flood.
pub const UNSAID_SERVE_QUEUE: u32 = 128;

/// The protobuf schema, field numbers as in `contracts.md`.
pub mod proto {
    use bytes::Bytes;

    /// `enum PeerMessageType`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum PeerMessageType {
        /// `MSG_HANDSHAKE = 0`
        Handshake = 0,
        /// `MSG_BITFIELD = 1`
        Bitfield = 1,
        /// `MSG_HAVE = 2`
        Have = 2,
        /// `MSG_REQUEST = 3`
        Request = 3,
        /// `MSG_TRANSFER = 4`
        Transfer = 4,
        /// `MSG_REJECT = 5`
        Reject = 5,
        /// `MSG_AVAILABILITY_SUMMARY = 6`
        AvailabilitySummary = 6,
        /// `MSG_AVAILABILITY_REFINE_REQUEST = 7`
        AvailabilityRefineRequest = 7,
        /// `MSG_AVAILABILITY_REFINE_RESPONSE = 8`
        AvailabilityRefineResponse = 8,
        /// `MSG_CANCEL = 9` (tierswarm extension)
        Cancel = 9,
        /// `MSG_KEEP_ALIVE = 10` (tierswarm extension)
        KeepAlive = 10,
    }

    /// `PeerMessage`: the envelope of every frame.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PeerMessage {
        /// 32-byte content root.
        #[prost(bytes = "bytes", tag = "1")]
        pub info_hash: Bytes,
        /// `PeerMessageType`.
        #[prost(enumeration = "PeerMessageType", tag = "2")]
        pub r#type: i32,
        /// Encoded payload message of that type.
        #[prost(bytes = "bytes", tag = "3")]
        pub payload: Bytes,
    }

    /// `HandshakePayload`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HandshakePayload {
        /// 32-byte content root.
        #[prost(bytes = "bytes", tag = "1")]
        pub info_hash: Bytes,
        /// Free-form peer identity.
        #[prost(string, tag = "2")]
        pub peer_id: String,
        /// 0 (absent) for a legacy peer.
        #[prost(uint32, tag = "3")]
        pub protocol_version: u32,
        /// Highest tier understood; 0 (absent) for a legacy peer.
        #[prost(uint32, tag = "4")]
        pub max_tier_supported: u32,
        /// Whether the hierarchical availability messages are spoken.
        #[prost(bool, tag = "5")]
        pub supports_hierarchical_availability: bool,
        /// tierswarm: requests the sender queues per peer; 0 (absent): [`super::UNSAID_SERVE_QUEUE`].
        #[prost(uint32, tag = "6")]
        pub serve_queue: u32,
    }

    /// `BitfieldPayload`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BitfieldPayload {
        /// One bit per T1 unit, MSB first.
        #[prost(bytes = "bytes", tag = "1")]
        pub bits: Bytes,
    }

    /// `HavePayload`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HavePayload {
        /// Unit now held and verified.
        #[prost(uint64, tag = "1")]
        pub unit_index: u64,
    }

    /// `TransferRequestPayload` (also the payload of `MSG_CANCEL`).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TransferRequestPayload {
        /// Unit asked for.
        #[prost(uint64, tag = "1")]
        pub unit_index: u64,
        /// Units the requester holds, verified (0: not said; never set on a CANCEL). Added
        /// since the original schema: an uploader serves the least advanced requester first.
        #[prost(uint64, tag = "2")]
        pub units_held: u64,
    }

    /// `RejectPayload`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RejectPayload {
        /// Unit refused.
        #[prost(uint64, tag = "1")]
        pub unit_index: u64,
        /// Why.
        #[prost(string, tag = "2")]
        pub reason: String,
    }

    /// `BaoProofNode`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BaoProofNode {
        /// BLAKE3 chaining value of a sibling subtree.
        #[prost(bytes = "bytes", tag = "1")]
        pub hash: Bytes,
        /// log2 of the sibling's span in 1 KiB chunks.
        #[prost(uint32, tag = "2")]
        pub level: u32,
    }

    /// `BaoProof`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BaoProof {
        /// First 1 KiB chunk of the unit (= unit × 64).
        #[prost(int64, tag = "1")]
        pub leaf_start: i64,
        /// Chunks in the unit.
        #[prost(int64, tag = "2")]
        pub leaf_count: i64,
        /// Sibling chaining values, bottom-up.
        #[prost(message, repeated, tag = "3")]
        pub proof: Vec<BaoProofNode>,
    }

    /// `TransferPayload`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TransferPayload {
        /// Unit carried.
        #[prost(uint64, tag = "1")]
        pub unit_index: u64,
        /// Its bytes.
        #[prost(bytes = "bytes", tag = "2")]
        pub data: Bytes,
        /// Its proof against the content root.
        #[prost(message, optional, tag = "3")]
        pub proof: Option<BaoProof>,
    }

    /// `AvailabilitySummaryPayload`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AvailabilitySummaryPayload {
        /// Tier of the blocks (1, 2 or 3).
        #[prost(uint32, tag = "1")]
        pub tier: u32,
        /// First block of the window.
        #[prost(uint64, tag = "2")]
        pub start_index: u64,
        /// One bit per block: the sender has all of it.
        #[prost(bytes = "bytes", tag = "3")]
        pub bits: Bytes,
        /// One bit per block: the sender has some but not all of it (tierswarm extension).
        #[prost(bytes = "bytes", tag = "4")]
        pub partial_bits: Bytes,
    }

    /// `AvailabilityRefineRequestPayload`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AvailabilityRefineRequestPayload {
        /// Tier of `index`.
        #[prost(uint32, tag = "1")]
        pub from_tier: u32,
        /// Finer tier wanted.
        #[prost(uint32, tag = "2")]
        pub to_tier: u32,
        /// Block at `from_tier`.
        #[prost(uint64, tag = "3")]
        pub index: u64,
        /// Fencing token echoed by the response.
        #[prost(uint64, tag = "4")]
        pub request_id: u64,
    }

    /// `AvailabilityRefineResponsePayload`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AvailabilityRefineResponsePayload {
        /// Tier of the bits.
        #[prost(uint32, tag = "1")]
        pub tier: u32,
        /// First block of the window.
        #[prost(uint64, tag = "2")]
        pub start_index: u64,
        /// One bit per block: the sender has all of it.
        #[prost(bytes = "bytes", tag = "3")]
        pub bits: Bytes,
        /// The request's id.
        #[prost(uint64, tag = "4")]
        pub request_id: u64,
        /// Non-empty when the request is refused (tierswarm extension).
        #[prost(string, tag = "5")]
        pub reject_reason: String,
    }
}

use proto::PeerMessageType as Kind;

/// Capabilities announced in a handshake; absent for a legacy peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Capabilities {
    /// `protocol_version`.
    pub protocol_version: u32,
    /// `max_tier_supported`.
    pub max_tier_supported: u32,
    /// `serve_queue`: requests the sender queues from each peer before it answers "busy"; 0
    /// (absent) means [`UNSAID_SERVE_QUEUE`]. A requester keeps its window to half of it.
    pub serve_queue: u32,
}

impl Capabilities {
    /// What this implementation announces, with a serve queue of [`UNSAID_SERVE_QUEUE`] (see
    /// [`with_serve_queue`](Self::with_serve_queue)).
    pub const OURS: Capabilities = Capabilities {
        protocol_version: PROTOCOL_VERSION,
        max_tier_supported: MAX_TIER_SUPPORTED,
        serve_queue: 0,
    };

    /// These capabilities announcing a serve queue of `queue` requests (left unsaid, 0, when it
    /// is [`UNSAID_SERVE_QUEUE`], so that such a handshake's bytes are those of earlier versions).
    pub fn with_serve_queue(self, queue: usize) -> Capabilities {
        let queue = u32::try_from(queue).unwrap_or(u32::MAX);
        Capabilities {
            serve_queue: if queue == UNSAID_SERVE_QUEUE {
                0
            } else {
                queue
            },
            ..self
        }
    }

    /// The serve queue these capabilities announce ([`UNSAID_SERVE_QUEUE`] when unsaid).
    pub fn serve_queue(&self) -> u32 {
        match self.serve_queue {
            0 => UNSAID_SERVE_QUEUE,
            n => n,
        }
    }
}

/// A unit's proof against the content root (the wire's `BaoProof`).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct Proof {
    /// First 1 KiB chunk of the unit.
    pub leaf_start: i64,
    /// Chunks in the unit.
    pub leaf_count: i64,
    /// `(chaining value, level)` of each sibling subtree, bottom-up.
    #[serde(skip)]
    pub nodes: Vec<(Bytes, u32)>,
}

/// A decoded peer message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// `MSG_HANDSHAKE`.
    Handshake {
        /// Content root the sender wants.
        info_hash: Bytes,
        /// Sender's identity.
        peer_id: String,
        /// `None` for a legacy peer.
        capabilities: Option<Capabilities>,
    },
    /// `MSG_BITFIELD`: the flat T1 bitfield (legacy path).
    Bitfield {
        /// One bit per unit.
        bits: Bytes,
    },
    /// `MSG_HAVE`.
    Have {
        /// The unit.
        unit: u64,
    },
    /// `MSG_REQUEST`.
    Request {
        /// The unit.
        unit: u64,
        /// Units the requester holds (0: not said, as from a legacy peer): the uploader serves
        /// the least advanced requester first (`dev/PROTOCOL.md` §5).
        held: u64,
    },
    /// `MSG_TRANSFER`.
    Transfer {
        /// The unit.
        unit: u64,
        /// Its bytes.
        data: Bytes,
        /// Its proof.
        proof: Option<Proof>,
    },
    /// `MSG_REJECT`.
    Reject {
        /// The unit.
        unit: u64,
        /// Why.
        reason: String,
    },
    /// `MSG_AVAILABILITY_SUMMARY`.
    Summary {
        /// Tier number of the blocks.
        tier: u32,
        /// First block.
        start: u64,
        /// "has all" bits.
        all: Bytes,
        /// "has some but not all" bits.
        partial: Bytes,
    },
    /// `MSG_AVAILABILITY_REFINE_REQUEST`.
    RefineRequest {
        /// Tier of `index`.
        from_tier: u32,
        /// Tier wanted.
        to_tier: u32,
        /// Block at `from_tier`.
        index: u64,
        /// Fencing token.
        id: u64,
    },
    /// `MSG_AVAILABILITY_REFINE_RESPONSE`.
    RefineResponse {
        /// Tier of the bits.
        tier: u32,
        /// First block.
        start: u64,
        /// "has all" bits.
        bits: Bytes,
        /// Echoed id.
        id: u64,
        /// `Some` when refused.
        reject: Option<String>,
    },
    /// `MSG_CANCEL`: the requester no longer wants `unit` (it still gets one answer).
    Cancel {
        /// The unit.
        unit: u64,
    },
    /// `MSG_KEEP_ALIVE`.
    KeepAlive,
    /// A kind this implementation does not know; ignored.
    Unknown {
        /// The `type` number.
        kind: i32,
    },
}

/// The kind of a message, for statistics and traces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// Handshake.
    Handshake,
    /// Flat bitfield.
    Bitfield,
    /// HAVE.
    Have,
    /// Unit request.
    Request,
    /// Unit transfer.
    Transfer,
    /// Unit reject.
    Reject,
    /// Availability summary.
    Summary,
    /// Refine request.
    RefineRequest,
    /// Refine response.
    RefineResponse,
    /// Cancel.
    Cancel,
    /// Keep-alive.
    KeepAlive,
    /// Unknown kind.
    Unknown,
}

impl MessageKind {
    /// Every kind, in wire-number order.
    pub const ALL: [MessageKind; 12] = [
        MessageKind::Handshake,
        MessageKind::Bitfield,
        MessageKind::Have,
        MessageKind::Request,
        MessageKind::Transfer,
        MessageKind::Reject,
        MessageKind::Summary,
        MessageKind::RefineRequest,
        MessageKind::RefineResponse,
        MessageKind::Cancel,
        MessageKind::KeepAlive,
        MessageKind::Unknown,
    ];

    /// Lower-case name used in reports.
    pub const fn name(self) -> &'static str {
        match self {
            MessageKind::Handshake => "handshake",
            MessageKind::Bitfield => "bitfield",
            MessageKind::Have => "have",
            MessageKind::Request => "request",
            MessageKind::Transfer => "transfer",
            MessageKind::Reject => "reject",
            MessageKind::Summary => "summary",
            MessageKind::RefineRequest => "refine_request",
            MessageKind::RefineResponse => "refine_response",
            MessageKind::Cancel => "cancel",
            MessageKind::KeepAlive => "keep_alive",
            MessageKind::Unknown => "unknown",
        }
    }

    /// The kind of wire type number `kind` ([`MessageKind::Unknown`] for numbers this
    /// implementation does not know).
    pub fn from_wire(kind: i32) -> MessageKind {
        match Kind::try_from(kind) {
            Ok(Kind::Handshake) => MessageKind::Handshake,
            Ok(Kind::Bitfield) => MessageKind::Bitfield,
            Ok(Kind::Have) => MessageKind::Have,
            Ok(Kind::Request) => MessageKind::Request,
            Ok(Kind::Transfer) => MessageKind::Transfer,
            Ok(Kind::Reject) => MessageKind::Reject,
            Ok(Kind::AvailabilitySummary) => MessageKind::Summary,
            Ok(Kind::AvailabilityRefineRequest) => MessageKind::RefineRequest,
            Ok(Kind::AvailabilityRefineResponse) => MessageKind::RefineResponse,
            Ok(Kind::Cancel) => MessageKind::Cancel,
            Ok(Kind::KeepAlive) => MessageKind::KeepAlive,
            Err(_) => MessageKind::Unknown,
        }
    }

    /// Whether the kind is availability metadata (counted in `availability_bytes`).
    pub const fn is_availability(self) -> bool {
        matches!(
            self,
            MessageKind::Bitfield
                | MessageKind::Have
                | MessageKind::Summary
                | MessageKind::RefineRequest
                | MessageKind::RefineResponse
        )
    }
}

/// A short, stable rendering for logs and replays: the kind and the fields that say what the
/// message is about, never a payload's bytes (`transfer(5)`, `reject(7, busy)`,
/// `refine(t3->t1, 0, id=4)`).
///
/// ```
/// use tierswarm_core::wire::Message;
/// assert_eq!(Message::Cancel { unit: 9 }.to_string(), "cancel(9)");
/// ```
impl core::fmt::Display for Message {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Message::Handshake { capabilities, .. } => {
                write!(f, "handshake(capable={})", capabilities.is_some())
            }
            Message::Bitfield { bits } => write!(f, "bitfield({} bytes)", bits.len()),
            Message::Have { unit } => write!(f, "have({unit})"),
            Message::Request { unit, .. } => write!(f, "request({unit})"),
            Message::Transfer { unit, .. } => write!(f, "transfer({unit})"),
            Message::Reject { unit, reason } => write!(f, "reject({unit}, {reason})"),
            Message::Summary {
                tier,
                start,
                all,
                partial,
            } => write!(
                f,
                "summary(t{tier}, {start}, all={all:02x?}, partial={partial:02x?})"
            ),
            Message::RefineRequest {
                from_tier,
                to_tier,
                index,
                id,
            } => write!(f, "refine(t{from_tier}->t{to_tier}, {index}, id={id})"),
            Message::RefineResponse {
                tier,
                start,
                bits,
                id,
                reject,
            } => write!(
                f,
                "refined(t{tier}, {start}, {} bytes, id={id}, reject={reject:?})",
                bits.len()
            ),
            Message::Cancel { unit } => write!(f, "cancel({unit})"),
            Message::KeepAlive => f.write_str("keep-alive"),
            Message::Unknown { kind } => write!(f, "unknown({kind})"),
        }
    }
}

impl Message {
    /// The message's kind.
    pub fn kind(&self) -> MessageKind {
        match self {
            Message::Handshake { .. } => MessageKind::Handshake,
            Message::Bitfield { .. } => MessageKind::Bitfield,
            Message::Have { .. } => MessageKind::Have,
            Message::Request { .. } => MessageKind::Request,
            Message::Transfer { .. } => MessageKind::Transfer,
            Message::Reject { .. } => MessageKind::Reject,
            Message::Summary { .. } => MessageKind::Summary,
            Message::RefineRequest { .. } => MessageKind::RefineRequest,
            Message::RefineResponse { .. } => MessageKind::RefineResponse,
            Message::Cancel { .. } => MessageKind::Cancel,
            Message::KeepAlive => MessageKind::KeepAlive,
            Message::Unknown { .. } => MessageKind::Unknown,
        }
    }

    /// The `type` number of the message on the wire (`PeerMessageType`).
    pub fn wire_type(&self) -> i32 {
        (match self {
            Message::Handshake { .. } => Kind::Handshake,
            Message::Bitfield { .. } => Kind::Bitfield,
            Message::Have { .. } => Kind::Have,
            Message::Request { .. } => Kind::Request,
            Message::Transfer { .. } => Kind::Transfer,
            Message::Reject { .. } => Kind::Reject,
            Message::Summary { .. } => Kind::AvailabilitySummary,
            Message::RefineRequest { .. } => Kind::AvailabilityRefineRequest,
            Message::RefineResponse { .. } => Kind::AvailabilityRefineResponse,
            Message::Cancel { .. } => Kind::Cancel,
            Message::KeepAlive => Kind::KeepAlive,
            Message::Unknown { kind } => return *kind,
        }) as i32
    }

    /// Encodes the payload message.
    fn encode_payload(&self, out: &mut impl BufMut) {
        if let Some(p) = self.payload() {
            p.encode_raw(out);
        }
    }

    /// Length of the encoded payload, as prost's derived `encoded_len` counts it (proto3: a
    /// field at its default value is not encoded), without building the payload message: every
    /// message sent is measured, and building one clones its strings and byte buffers.
    fn payload_len(&self) -> usize {
        fn uint(tag: u32, v: u64) -> usize {
            if v == 0 {
                0
            } else {
                key_len(tag) + encoded_len_varint(v)
            }
        }
        fn bytes(tag: u32, len: usize) -> usize {
            if len == 0 {
                0
            } else {
                nested(tag, len)
            }
        }
        /// A length-delimited field of `len` bytes (an optional message is present even empty).
        fn nested(tag: u32, len: usize) -> usize {
            key_len(tag) + encoded_len_varint(len as u64) + len
        }
        match self {
            Message::Handshake {
                info_hash,
                peer_id,
                capabilities,
            } => {
                let (version, tier, queue) = capabilities.map_or((0, 0, 0), |c| {
                    (c.protocol_version, c.max_tier_supported, c.serve_queue)
                });
                bytes(1, info_hash.len())
                    + bytes(2, peer_id.len())
                    + uint(3, version.into())
                    + uint(4, tier.into())
                    + if capabilities.is_some() {
                        key_len(5) + 1
                    } else {
                        0
                    }
                    + uint(6, queue.into())
            }
            Message::Bitfield { bits } => bytes(1, bits.len()),
            Message::Have { unit } | Message::Cancel { unit } => uint(1, *unit),
            Message::Request { unit, held } => uint(1, *unit) + uint(2, *held),
            Message::Transfer { unit, data, proof } => {
                uint(1, *unit)
                    + bytes(2, data.len())
                    + proof.as_ref().map_or(0, |p| {
                        // int64 fields encode as their two's-complement u64.
                        let nodes: usize = (p.nodes.iter())
                            .map(|(hash, level)| {
                                nested(3, bytes(1, hash.len()) + uint(2, (*level).into()))
                            })
                            .sum();
                        nested(
                            3,
                            uint(1, p.leaf_start as u64) + uint(2, p.leaf_count as u64) + nodes,
                        )
                    })
            }
            Message::Reject { unit, reason } => uint(1, *unit) + bytes(2, reason.len()),
            Message::Summary {
                tier,
                start,
                all,
                partial,
            } => {
                uint(1, (*tier).into())
                    + uint(2, *start)
                    + bytes(3, all.len())
                    + bytes(4, partial.len())
            }
            Message::RefineRequest {
                from_tier,
                to_tier,
                index,
                id,
            } => {
                uint(1, (*from_tier).into())
                    + uint(2, (*to_tier).into())
                    + uint(3, *index)
                    + uint(4, *id)
            }
            Message::RefineResponse {
                tier,
                start,
                bits,
                id,
                reject,
            } => {
                uint(1, (*tier).into())
                    + uint(2, *start)
                    + bytes(3, bits.len())
                    + uint(4, *id)
                    + bytes(5, reject.as_ref().map_or(0, String::len))
            }
            Message::KeepAlive | Message::Unknown { .. } => 0,
        }
    }

    fn payload(&self) -> Option<Payload> {
        Some(match self {
            Message::Handshake {
                info_hash,
                peer_id,
                capabilities,
            } => {
                let c = capabilities.unwrap_or(Capabilities {
                    protocol_version: 0,
                    max_tier_supported: 0,
                    serve_queue: 0,
                });
                Payload::Handshake(proto::HandshakePayload {
                    info_hash: info_hash.clone(),
                    peer_id: peer_id.clone(),
                    protocol_version: c.protocol_version,
                    max_tier_supported: c.max_tier_supported,
                    supports_hierarchical_availability: capabilities.is_some(),
                    serve_queue: c.serve_queue,
                })
            }
            Message::Bitfield { bits } => {
                Payload::Bitfield(proto::BitfieldPayload { bits: bits.clone() })
            }
            Message::Have { unit } => Payload::Have(proto::HavePayload { unit_index: *unit }),
            Message::Request { unit, held } => Payload::Request(proto::TransferRequestPayload {
                unit_index: *unit,
                units_held: *held,
            }),
            Message::Cancel { unit } => Payload::Request(proto::TransferRequestPayload {
                unit_index: *unit,
                units_held: 0,
            }),
            Message::Transfer { unit, data, proof } => Payload::Transfer(proto::TransferPayload {
                unit_index: *unit,
                data: data.clone(),
                proof: proof.as_ref().map(|p| proto::BaoProof {
                    leaf_start: p.leaf_start,
                    leaf_count: p.leaf_count,
                    proof: p
                        .nodes
                        .iter()
                        .map(|(hash, level)| proto::BaoProofNode {
                            hash: hash.clone(),
                            level: *level,
                        })
                        .collect(),
                }),
            }),
            Message::Reject { unit, reason } => Payload::Reject(proto::RejectPayload {
                unit_index: *unit,
                reason: reason.clone(),
            }),
            Message::Summary {
                tier,
                start,
                all,
                partial,
            } => Payload::Summary(proto::AvailabilitySummaryPayload {
                tier: *tier,
                start_index: *start,
                bits: all.clone(),
                partial_bits: partial.clone(),
            }),
            Message::RefineRequest {
                from_tier,
                to_tier,
                index,
                id,
            } => Payload::RefineRequest(proto::AvailabilityRefineRequestPayload {
                from_tier: *from_tier,
                to_tier: *to_tier,
                index: *index,
                request_id: *id,
            }),
            Message::RefineResponse {
                tier,
                start,
                bits,
                id,
                reject,
            } => Payload::RefineResponse(proto::AvailabilityRefineResponsePayload {
                tier: *tier,
                start_index: *start,
                bits: bits.clone(),
                request_id: *id,
                reject_reason: reject.clone().unwrap_or_default(),
            }),
            Message::KeepAlive | Message::Unknown { .. } => return None,
        })
    }

    /// Length of the encoded frame (length prefix included) for a 32-byte info hash.
    pub fn frame_len(&self) -> usize {
        4 + envelope_len(32, self.wire_type(), self.payload_len())
    }
}

/// Payload messages, so that encoding and length share one path.
enum Payload {
    Handshake(proto::HandshakePayload),
    Bitfield(proto::BitfieldPayload),
    Have(proto::HavePayload),
    Request(proto::TransferRequestPayload),
    Transfer(proto::TransferPayload),
    Reject(proto::RejectPayload),
    Summary(proto::AvailabilitySummaryPayload),
    RefineRequest(proto::AvailabilityRefineRequestPayload),
    RefineResponse(proto::AvailabilityRefineResponsePayload),
}

macro_rules! each_payload {
    ($self:ident, $p:ident => $e:expr) => {
        match $self {
            Payload::Handshake($p) => $e,
            Payload::Bitfield($p) => $e,
            Payload::Have($p) => $e,
            Payload::Request($p) => $e,
            Payload::Transfer($p) => $e,
            Payload::Reject($p) => $e,
            Payload::Summary($p) => $e,
            Payload::RefineRequest($p) => $e,
            Payload::RefineResponse($p) => $e,
        }
    };
}

impl Payload {
    /// prost's own count, the reference `Message::payload_len` is tested against.
    #[cfg(test)]
    fn encoded_len(&self) -> usize {
        each_payload!(self, p => p.encoded_len())
    }
    fn encode_raw(&self, out: &mut impl BufMut) {
        each_payload!(self, p => p.encode_raw(out))
    }
}

fn envelope_len(hash_len: usize, wire_type: i32, payload_len: usize) -> usize {
    let mut n = 0;
    if hash_len > 0 {
        n += key_len(1) + encoded_len_varint(hash_len as u64) + hash_len;
    }
    if wire_type != 0 {
        n += key_len(2) + encoded_len_varint(wire_type as i64 as u64);
    }
    if payload_len > 0 {
        n += key_len(3) + encoded_len_varint(payload_len as u64) + payload_len;
    }
    n
}

/// Appends one frame carrying `msg` for content `info_hash` to `out`. The payload is encoded in
/// place, so a unit's bytes are copied once.
pub fn encode_frame(info_hash: &[u8], msg: &Message, out: &mut BytesMut) {
    let wire_type = msg.wire_type();
    let payload_len = msg.payload_len();
    let body = envelope_len(info_hash.len(), wire_type, payload_len);
    out.reserve(4 + body);
    out.put_u32(body as u32);
    // Field order and proto3 default omission as prost's derived encoder does it.
    if !info_hash.is_empty() {
        encode_key(1, WireType::LengthDelimited, out);
        encode_varint(info_hash.len() as u64, out);
        out.put_slice(info_hash);
    }
    if wire_type != 0 {
        encode_key(2, WireType::Varint, out);
        encode_varint(wire_type as i64 as u64, out);
    }
    if payload_len > 0 {
        encode_key(3, WireType::LengthDelimited, out);
        encode_varint(payload_len as u64, out);
        msg.encode_payload(out);
    }
}

/// One frame as [`encode_frame`] writes it, in three parts whose concatenation is exactly its
/// bytes, so that a unit's data is never copied into a frame buffer: for a TRANSFER, the bytes
/// before the unit's data (length prefix, envelope, unit index, the data's field header), the
/// data itself (`data`, shared), and the bytes after it (the proof); for any other message, the
/// whole frame and two empty parts. A writer sends the three with one vectored write.
pub fn encode_frame_parts(info_hash: &[u8], msg: &Message) -> [Bytes; 3] {
    let Message::Transfer { unit, data, proof } = msg else {
        let mut out = BytesMut::new();
        encode_frame(info_hash, msg, &mut out);
        return [out.freeze(), Bytes::new(), Bytes::new()];
    };
    // The payload without its data: proto3 omits an empty field, so this is field 1 (the unit,
    // itself omitted when 0) followed by field 3 (the proof), exactly as around the data.
    let bare = Message::Transfer {
        unit: *unit,
        data: Bytes::new(),
        proof: proof.clone(),
    };
    let mut rest = BytesMut::with_capacity(bare.payload_len());
    bare.encode_payload(&mut rest);
    let unit_field = match *unit {
        0 => 0,
        u => key_len(1) + encoded_len_varint(u),
    };
    let tail = rest.split_off(unit_field);
    let data_field = match data.len() {
        0 => 0,
        n => key_len(2) + encoded_len_varint(n as u64) + n,
    };
    let payload_len = unit_field + data_field + tail.len();
    let wire_type = msg.wire_type();
    let body = envelope_len(info_hash.len(), wire_type, payload_len);
    let mut head = BytesMut::with_capacity(4 + body - data.len() - tail.len());
    head.put_u32(body as u32);
    if !info_hash.is_empty() {
        encode_key(1, WireType::LengthDelimited, &mut head);
        encode_varint(info_hash.len() as u64, &mut head);
        head.put_slice(info_hash);
    }
    encode_key(2, WireType::Varint, &mut head);
    encode_varint(wire_type as i64 as u64, &mut head);
    if payload_len > 0 {
        encode_key(3, WireType::LengthDelimited, &mut head);
        encode_varint(payload_len as u64, &mut head);
    }
    head.put_slice(&rest);
    if !data.is_empty() {
        encode_key(2, WireType::LengthDelimited, &mut head);
        encode_varint(data.len() as u64, &mut head);
    }
    [head.freeze(), data.clone(), tail.freeze()]
}

/// Errors decoding frames and messages; each one closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The length prefix exceeds the configured maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    FrameTooLarge {
        /// Announced length.
        len: u64,
        /// Configured maximum.
        max: u64,
    },
    /// A frame over the limit of its message kind ([`FrameLimits`]).
    #[error("{} frame of {len} bytes exceeds the maximum of {max} for its kind", kind.name())]
    MessageTooLarge {
        /// The kind, from the envelope's `type`.
        kind: MessageKind,
        /// Announced length.
        len: u64,
        /// That kind's limit.
        max: u64,
    },
    /// The envelope or payload is not valid protobuf for its type.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// Which message.
        what: &'static str,
        /// prost's description.
        reason: String,
    },
}

/// A decoded frame: the envelope's info hash and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Content root named by the envelope.
    pub info_hash: Bytes,
    /// The message.
    pub msg: Message,
}

/// Takes one frame off the front of `buf`: `Ok(None)` when more bytes are needed (nothing is
/// consumed), an error when the frame is too large or malformed. Byte fields of the result
/// share `buf`'s allocation (no copy of unit data). A TRANSFER carries at most
/// [`MAX_PROOF_NODES`] proof nodes. A connection's reader uses [`decode_frame_limited`]
/// instead, which knows the file.
pub fn decode_frame(buf: &mut BytesMut, max_frame: u64) -> Result<Option<Frame>, WireError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = frame_len_prefix(buf) as u64;
    if len > max_frame {
        return Err(WireError::FrameTooLarge {
            len,
            max: max_frame,
        });
    }
    take_frame(buf, len as usize, MAX_PROOF_NODES)
}

/// The length prefix of the frame at the front of `buf` (which holds at least 4 bytes).
fn frame_len_prefix(buf: &[u8]) -> u32 {
    u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]])
}

/// Decodes the admitted frame of body length `len` at the front of `buf`, once whole.
fn take_frame(buf: &mut BytesMut, len: usize, max_nodes: u32) -> Result<Option<Frame>, WireError> {
    if buf.len() - 4 < len {
        // Reserve only up to the (admitted, bounded) frame, so a peer cannot make us allocate
        // more.
        buf.reserve(4 + len - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    let body = buf.split_to(len).freeze();
    decode_body_bounded(body, max_nodes).map(Some)
}

fn malformed(what: &'static str) -> impl FnOnce(prost::DecodeError) -> WireError {
    move |e| WireError::Malformed {
        what,
        reason: e.to_string(),
    }
}

/// Decodes the body of one frame (the bytes after the length prefix); a TRANSFER carries at most
/// [`MAX_PROOF_NODES`] proof nodes.
pub fn decode_body(body: Bytes) -> Result<Frame, WireError> {
    decode_body_bounded(body, MAX_PROOF_NODES)
}

fn decode_body_bounded(body: Bytes, max_nodes: u32) -> Result<Frame, WireError> {
    let env = proto::PeerMessage::decode(body).map_err(malformed("PeerMessage"))?;
    let p = env.payload;
    let msg = match Kind::try_from(env.r#type) {
        Err(_) => Message::Unknown { kind: env.r#type },
        Ok(Kind::Handshake) => {
            let h = proto::HandshakePayload::decode(p).map_err(malformed("HandshakePayload"))?;
            let capable = h.supports_hierarchical_availability && h.protocol_version >= 1;
            Message::Handshake {
                info_hash: h.info_hash,
                peer_id: h.peer_id,
                capabilities: capable.then_some(Capabilities {
                    protocol_version: h.protocol_version,
                    max_tier_supported: h.max_tier_supported,
                    serve_queue: h.serve_queue,
                }),
            }
        }
        Ok(Kind::Bitfield) => Message::Bitfield {
            bits: proto::BitfieldPayload::decode(p)
                .map_err(malformed("BitfieldPayload"))?
                .bits,
        },
        Ok(Kind::Have) => Message::Have {
            unit: proto::HavePayload::decode(p)
                .map_err(malformed("HavePayload"))?
                .unit_index,
        },
        Ok(Kind::Request) => {
            let r = proto::TransferRequestPayload::decode(p)
                .map_err(malformed("TransferRequestPayload"))?;
            Message::Request {
                unit: r.unit_index,
                held: r.units_held,
            }
        }
        Ok(Kind::Cancel) => Message::Cancel {
            unit: proto::TransferRequestPayload::decode(p)
                .map_err(malformed("CancelPayload"))?
                .unit_index,
        },
        Ok(Kind::Transfer) => {
            // Counted before anything is collected: a proof is never longer than the tree.
            let nodes = count_proof_nodes(&p).ok_or_else(|| WireError::Malformed {
                what: "TransferPayload",
                reason: "invalid field structure".into(),
            })?;
            if nodes > max_nodes as usize {
                return Err(WireError::Malformed {
                    what: "BaoProof",
                    reason: format!("{nodes} proof nodes, more than the {max_nodes} allowed"),
                });
            }
            let t = proto::TransferPayload::decode(p).map_err(malformed("TransferPayload"))?;
            Message::Transfer {
                unit: t.unit_index,
                data: t.data,
                proof: t.proof.map(|b| Proof {
                    leaf_start: b.leaf_start,
                    leaf_count: b.leaf_count,
                    nodes: b.proof.into_iter().map(|n| (n.hash, n.level)).collect(),
                }),
            }
        }
        Ok(Kind::Reject) => {
            let r = proto::RejectPayload::decode(p).map_err(malformed("RejectPayload"))?;
            Message::Reject {
                unit: r.unit_index,
                reason: r.reason,
            }
        }
        Ok(Kind::AvailabilitySummary) => {
            let s = proto::AvailabilitySummaryPayload::decode(p)
                .map_err(malformed("AvailabilitySummaryPayload"))?;
            Message::Summary {
                tier: s.tier,
                start: s.start_index,
                all: s.bits,
                partial: s.partial_bits,
            }
        }
        Ok(Kind::AvailabilityRefineRequest) => {
            let r = proto::AvailabilityRefineRequestPayload::decode(p)
                .map_err(malformed("AvailabilityRefineRequestPayload"))?;
            Message::RefineRequest {
                from_tier: r.from_tier,
                to_tier: r.to_tier,
                index: r.index,
                id: r.request_id,
            }
        }
        Ok(Kind::AvailabilityRefineResponse) => {
            let r = proto::AvailabilityRefineResponsePayload::decode(p)
                .map_err(malformed("AvailabilityRefineResponsePayload"))?;
            Message::RefineResponse {
                tier: r.tier,
                start: r.start_index,
                bits: r.bits,
                id: r.request_id,
                reject: (!r.reject_reason.is_empty()).then_some(r.reject_reason),
            }
        }
        Ok(Kind::KeepAlive) => Message::KeepAlive,
    };
    Ok(Frame {
        info_hash: env.info_hash,
        msg,
    })
}

/// Proof nodes a TRANSFER's payload carries over all its `proof` fields (repeated embedded
/// messages merge), counted without collecting anything; `None` when the field structure is
/// invalid. Walks the fields with prost's own key decoding and skipping, so whatever prost
/// decodes is counted exactly.
fn count_proof_nodes(mut payload: &[u8]) -> Option<usize> {
    let ctx = DecodeContext::default;
    let mut nodes = 0;
    while payload.has_remaining() {
        let (tag, wire_type) = decode_key(&mut payload).ok()?;
        if tag != 3 || wire_type != WireType::LengthDelimited {
            skip_field(wire_type, tag, &mut payload, ctx()).ok()?;
            continue;
        }
        let len = usize::try_from(decode_varint(&mut payload).ok()?).ok()?;
        if len > payload.len() {
            return None;
        }
        let (mut proof, rest) = payload.split_at(len);
        payload = rest;
        while proof.has_remaining() {
            let (tag, wire_type) = decode_key(&mut proof).ok()?;
            if tag == 3 {
                nodes += 1;
            }
            skip_field(wire_type, tag, &mut proof, ctx()).ok()?;
        }
    }
    Some(nodes)
}

/// Largest frame body (the bytes after the length prefix) of a control message — HANDSHAKE,
/// HAVE, REQUEST, CANCEL, REJECT, refine request and response, KEEP_ALIVE — and of any frame
/// that arrives before the peer's handshake.
pub const CONTROL_FRAME_MAX: u32 = 1024;

/// Most proof nodes a TRANSFER may carry when the file is not known (the largest file's tree,
/// 2^30 units, is 30 deep).
pub const MAX_PROOF_NODES: u32 = 64;

/// Bytes the envelope may spend before its `type` field: a 32-byte info hash and its key and
/// length, with room to spare.
const TYPE_PEEK: usize = 64;

/// Per-kind limits on incoming frames, computed from the file's geometry by
/// [`FrameLimits::for_geometry`]. Lengths are frame bodies (after the 4-byte length prefix) of a
/// canonical encoding (fields in number order, as every proto3 encoder writes them) with a
/// 32-byte info hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// Largest TRANSFER: one full unit plus a proof of [`proof_nodes`](Self::proof_nodes) nodes.
    pub transfer: u32,
    /// Largest AVAILABILITY_SUMMARY: the full T3 summary of the file (both bit sets), or a
    /// control message's size if that is larger.
    pub summary: u32,
    /// The exact BITFIELD frame of this file: `ceil(units / 8)` bytes of bits.
    pub bitfield: u32,
    /// The bit bytes a BITFIELD must carry: `ceil(units / 8)`.
    pub bitfield_bytes: u64,
    /// Proof nodes a TRANSFER may carry: the depth of the file's BLAKE3 tree above its units.
    pub proof_nodes: u32,
}

impl FrameLimits {
    /// The limits for a file of geometry `geo`.
    pub fn for_geometry(geo: Geometry) -> FrameLimits {
        let units = geo.units();
        // Depth of the tree above the units: ceil(log2(units)); a single unit needs no proof.
        let proof_nodes = if units <= 1 {
            0
        } else {
            64 - (units - 1).leading_zeros()
        };
        let len_field = |n: usize| {
            if n == 0 {
                0
            } else {
                1 + encoded_len_varint(n as u64) + n
            }
        };
        let varint_field = 1 + 10;
        // BaoProofNode { hash (1 + 1 + 32), level (1 + 5) }, each behind a key and a length.
        let node = 2 + (1 + 1 + 32) + (1 + 5);
        let proof = 2 * varint_field + proof_nodes as usize * node;
        let transfer = varint_field + len_field(T1_SIZE as usize) + len_field(proof);
        let t3_bytes = geo.blocks(Tier::T3).div_ceil(8) as usize;
        let summary = 2 * varint_field + 2 * len_field(t3_bytes);
        let bitfield_bytes = units.div_ceil(8);
        let body = |kind: Kind, payload: usize| {
            u32::try_from(envelope_len(32, kind as i32, payload)).unwrap_or(u32::MAX)
        };
        FrameLimits {
            transfer: body(Kind::Transfer, transfer),
            summary: body(Kind::AvailabilitySummary, summary).max(CONTROL_FRAME_MAX),
            bitfield: body(Kind::Bitfield, len_field(bitfield_bytes as usize)),
            bitfield_bytes,
            proof_nodes,
        }
    }

    /// The limit of a frame of wire type `kind`. A kind this implementation does not know (a
    /// newer peer's, ignored on arrival) gets the largest limit of all.
    pub fn limit(&self, kind: i32) -> u32 {
        match Kind::try_from(kind) {
            Ok(Kind::Transfer) => self.transfer,
            Ok(Kind::Bitfield) => self.bitfield,
            Ok(Kind::AvailabilitySummary) => self.summary,
            Ok(_) => CONTROL_FRAME_MAX,
            Err(_) => self.max_frame(),
        }
    }

    /// The largest frame of any kind.
    pub fn max_frame(&self) -> u32 {
        self.transfer
            .max(self.summary)
            .max(self.bitfield)
            .max(CONTROL_FRAME_MAX)
    }
}

/// Decides from the first bytes of `buf` whether the frame at its front may be collected:
/// `Ok(Some(len))` with its body length when it may, `Ok(None)` when more bytes are needed to
/// decide, an error when it exceeds its limit. Before the peer's handshake (`handshaken` false)
/// every frame is at most [`CONTROL_FRAME_MAX`] bytes. A longer frame's kind is read from the
/// envelope's first `TYPE_PEEK` (64) bytes: its `type` field must come before its `payload` (as
/// canonical encoders write it); a payload met first means the type is absent, i.e. a
/// HANDSHAKE. Never allocates; reads at most 4 + 64 bytes.
pub fn admit_frame(
    buf: &[u8],
    limits: &FrameLimits,
    handshaken: bool,
) -> Result<Option<usize>, WireError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = frame_len_prefix(buf);
    if len <= CONTROL_FRAME_MAX {
        return Ok(Some(len as usize));
    }
    if !handshaken {
        return Err(WireError::FrameTooLarge {
            len: len.into(),
            max: CONTROL_FRAME_MAX.into(),
        });
    }
    // The frame is longer than the window, so a window that does not tell the kind is either
    // still arriving or will never tell it.
    let seen = &buf[4..buf.len().min(4 + TYPE_PEEK)];
    let kind = match peek_kind(seen) {
        Some(kind) => kind,
        None if seen.len() < TYPE_PEEK => return Ok(None),
        None => {
            return Err(WireError::Malformed {
                what: "PeerMessage",
                reason: format!("no valid type field in its first {TYPE_PEEK} bytes"),
            })
        }
    };
    let max = limits.limit(kind);
    if len > max {
        return Err(WireError::MessageTooLarge {
            kind: MessageKind::from_wire(kind),
            len: len.into(),
            max: max.into(),
        });
    }
    Ok(Some(len as usize))
}

/// The envelope's `type` from its first bytes (at most [`TYPE_PEEK`] of them are looked at), or
/// `None` when they do not tell it.
fn peek_kind(body: &[u8]) -> Option<i32> {
    let mut rest = &body[..body.len().min(TYPE_PEEK)];
    while !rest.is_empty() {
        let (tag, wire_type) = decode_key(&mut rest).ok()?;
        match (tag, wire_type) {
            // prost reads an enum as an int32 varint.
            (2, WireType::Varint) => return decode_varint(&mut rest).ok().map(|v| v as i32),
            (3, _) => return Some(Kind::Handshake as i32),
            _ => skip_field(wire_type, tag, &mut rest, DecodeContext::default()).ok()?,
        }
    }
    None
}

/// [`decode_frame`] under the per-kind `limits` of the file: the frame is admitted by
/// [`admit_frame`] before its body is collected, then decoded with at most
/// [`FrameLimits::proof_nodes`] proof nodes; the decoded kind is held to its limit again (so an
/// unusual field order gains nothing), and a BITFIELD must carry exactly
/// [`FrameLimits::bitfield_bytes`] bytes of bits. Whether a BITFIELD is welcome at all (only
/// from a legacy peer after its handshake) is the node's decision.
///
/// ```
/// use bytes::BytesMut;
/// use tierswarm_core::wire::{decode_frame_limited, encode_frame, FrameLimits, Message, WireError};
/// use tierswarm_core::Geometry;
/// let limits = FrameLimits::for_geometry(Geometry::new(1 << 30).unwrap());
/// let mut buf = BytesMut::new();
/// encode_frame(&[7; 32], &Message::Bitfield { bits: vec![0; 9].into() }, &mut buf);
/// assert!(matches!(
///     decode_frame_limited(&mut buf, &limits, true),
///     Err(WireError::MessageTooLarge { .. }) | Err(WireError::Malformed { .. })
/// ));
/// ```
pub fn decode_frame_limited(
    buf: &mut BytesMut,
    limits: &FrameLimits,
    handshaken: bool,
) -> Result<Option<Frame>, WireError> {
    let Some(len) = admit_frame(buf, limits, handshaken)? else {
        return Ok(None);
    };
    let Some(frame) = take_frame(buf, len, limits.proof_nodes)? else {
        return Ok(None);
    };
    let kind = frame.msg.wire_type();
    let max = limits.limit(kind);
    if len as u64 > max.into() {
        return Err(WireError::MessageTooLarge {
            kind: frame.msg.kind(),
            len: len as u64,
            max: max.into(),
        });
    }
    if let Message::Bitfield { bits } = &frame.msg {
        if bits.len() as u64 != limits.bitfield_bytes {
            return Err(WireError::Malformed {
                what: "BitfieldPayload",
                reason: format!(
                    "{} bytes of bits, the file needs exactly {}",
                    bits.len(),
                    limits.bitfield_bytes
                ),
            });
        }
    }
    Ok(Some(frame))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Encodes with prost's own derived encoder, to check the hand-inlined envelope.
    fn reference_encode(info_hash: &[u8], msg: &Message) -> Vec<u8> {
        let mut payload = Vec::new();
        msg.encode_payload(&mut payload);
        let env = proto::PeerMessage {
            info_hash: Bytes::copy_from_slice(info_hash),
            r#type: msg.wire_type(),
            payload: payload.into(),
        };
        let body = env.encode_to_vec();
        let mut out = (body.len() as u32).to_be_bytes().to_vec();
        out.extend(body);
        out
    }

    pub(crate) fn arb_message() -> impl Strategy<Value = Message> {
        let bytes = || proptest::collection::vec(any::<u8>(), 0..80).prop_map(Bytes::from);
        prop_oneof![
            // Version 0 with the other capability fields set reads as legacy: drawn too.
            (
                bytes(),
                ".{0,12}",
                proptest::option::of((0u32..5, 0u32..5, prop_oneof![Just(0u32), any::<u32>()]))
            )
                .prop_map(|(info_hash, peer_id, c)| Message::Handshake {
                    info_hash,
                    peer_id,
                    capabilities: c.map(|(v, t, q)| Capabilities {
                        protocol_version: v,
                        max_tier_supported: t,
                        serve_queue: q,
                    }),
                }),
            bytes().prop_map(|bits| Message::Bitfield { bits }),
            any::<u64>().prop_map(|unit| Message::Have { unit }),
            (any::<u64>(), any::<u64>()).prop_map(|(unit, held)| Message::Request { unit, held }),
            any::<u64>().prop_map(|unit| Message::Cancel { unit }),
            (
                any::<u64>(),
                bytes(),
                proptest::option::of((
                    any::<i64>(),
                    any::<i64>(),
                    proptest::collection::vec((bytes(), any::<u32>()), 0..4)
                ))
            )
                .prop_map(|(unit, data, p)| Message::Transfer {
                    unit,
                    data,
                    proof: p.map(|(leaf_start, leaf_count, nodes)| Proof {
                        leaf_start,
                        leaf_count,
                        nodes
                    }),
                }),
            (any::<u64>(), ".{0,20}").prop_map(|(unit, reason)| Message::Reject { unit, reason }),
            (any::<u32>(), any::<u64>(), bytes(), bytes()).prop_map(
                |(tier, start, all, partial)| Message::Summary {
                    tier,
                    start,
                    all,
                    partial
                }
            ),
            (any::<u32>(), any::<u32>(), any::<u64>(), any::<u64>()).prop_map(
                |(from_tier, to_tier, index, id)| Message::RefineRequest {
                    from_tier,
                    to_tier,
                    index,
                    id
                }
            ),
            (
                any::<u32>(),
                any::<u64>(),
                bytes(),
                any::<u64>(),
                proptest::option::of(".{1,12}")
            )
                .prop_map(|(tier, start, bits, id, reject)| Message::RefineResponse {
                    tier,
                    start,
                    bits,
                    id,
                    reject
                }),
            Just(Message::KeepAlive),
            (11i32..1000).prop_map(|kind| Message::Unknown { kind }),
        ]
    }

    /// A payload edit: overwrite, insert, remove or truncate at a position.
    #[derive(Debug, Clone)]
    enum Edit {
        Byte(prop::sample::Index, u8),
        Varint(prop::sample::Index, u64),
        Insert(prop::sample::Index, u8),
        Remove(prop::sample::Index),
        Truncate(prop::sample::Index),
    }

    fn arb_edit() -> impl Strategy<Value = Edit> {
        let at = || any::<prop::sample::Index>();
        prop_oneof![
            (at(), any::<u8>()).prop_map(|(i, b)| Edit::Byte(i, b)),
            (
                at(),
                prop_oneof![0u64..4, Just(u32::MAX as u64), any::<u64>()]
            )
                .prop_map(|(i, v)| Edit::Varint(i, v)),
            (at(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
            at().prop_map(Edit::Remove),
            at().prop_map(Edit::Truncate),
        ]
    }

    fn apply(bytes: &mut Vec<u8>, edit: &Edit) {
        match edit {
            Edit::Byte(i, b) if !bytes.is_empty() => {
                let at = i.index(bytes.len());
                bytes[at] = *b;
            }
            Edit::Varint(i, v) => {
                let at = i.index(bytes.len() + 1);
                let mut enc = Vec::new();
                encode_varint(*v, &mut enc);
                let end = (at + enc.len()).min(bytes.len());
                bytes.splice(at..end, enc);
            }
            Edit::Insert(i, b) => {
                let at = i.index(bytes.len() + 1);
                bytes.insert(at, *b);
            }
            Edit::Remove(i) if !bytes.is_empty() => {
                let at = i.index(bytes.len());
                bytes.remove(at);
            }
            Edit::Truncate(i) => {
                let at = i.index(bytes.len() + 1);
                bytes.truncate(at);
            }
            Edit::Byte(..) | Edit::Remove(_) => {}
        }
    }

    /// A valid frame whose payload was edited and re-wrapped in a valid envelope and length
    /// prefix (the wire's "reseal"), sometimes under another kind's type, and one time in ten
    /// also edited after wrapping. Reaches the payload decoders instead of dying at the prefix.
    fn arb_mutated_frame() -> impl Strategy<Value = Vec<u8>> {
        (
            arb_message(),
            proptest::collection::vec(arb_edit(), 0..4),
            proptest::option::of(0i32..12),
            proptest::collection::vec(arb_edit(), 0..3),
            0u8..10,
        )
            .prop_map(|(msg, edits, retype, outer, raw)| {
                let mut payload = Vec::new();
                msg.encode_payload(&mut payload);
                for e in &edits {
                    apply(&mut payload, e);
                }
                let env = proto::PeerMessage {
                    info_hash: Bytes::from_static(&[1; 32]),
                    r#type: retype.unwrap_or(msg.wire_type()),
                    payload: payload.into(),
                };
                let mut body = env.encode_to_vec();
                if raw == 0 {
                    for e in &outer {
                        apply(&mut body, e);
                    }
                }
                let mut frame = (body.len() as u32).to_be_bytes().to_vec();
                frame.extend(body);
                frame
            })
    }

    /// How far into the decoder a frame got.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    enum Depth {
        /// Refused at the envelope.
        Envelope,
        /// Refused by a payload decoder.
        Payload,
        /// Decoded.
        Decoded,
    }

    fn depth(r: &Result<Frame, WireError>) -> Depth {
        match r {
            Ok(_) => Depth::Decoded,
            Err(WireError::Malformed {
                what: "PeerMessage",
                ..
            }) => Depth::Envelope,
            Err(_) => Depth::Payload,
        }
    }

    /// Shares of mutated frames that get past the envelope (quoted in the notes).
    #[test]
    fn mutated_frames_reach_the_payload_decoders() {
        let shares = crate::test_support::shares(arb_mutated_frame(), 4000, |bytes| {
            depth(&decode_body(Bytes::copy_from_slice(&bytes[4..])))
        });
        let share = |d| shares.get(&d).copied().unwrap_or(0.0);
        eprintln!(
            "wire mutations: {:.1}% refused at the envelope, {:.1}% by a payload decoder, \
             {:.1}% decoded",
            100.0 * share(Depth::Envelope),
            100.0 * share(Depth::Payload),
            100.0 * share(Depth::Decoded)
        );
        assert!(
            share(Depth::Payload) + share(Depth::Decoded) > 0.8,
            "{shares:?}"
        );
        assert!(share(Depth::Payload) > 0.1, "{shares:?}");
    }

    /// What every decoded frame must satisfy: re-encoding it gives a frame that decodes to the
    /// same message (decoding is a fixpoint after one round).
    fn check_decoded(frame: &Frame) {
        let mut again = BytesMut::new();
        encode_frame(&frame.info_hash, &frame.msg, &mut again);
        let back = decode_frame(&mut again, u64::MAX)
            .expect("re-encoded frame decodes")
            .expect("whole");
        assert_eq!(&back, frame);
    }

    proptest! {
        #[test]
        fn every_message_round_trips(msg in arb_message(), hash in proptest::collection::vec(any::<u8>(), 0..40)) {
            let mut buf = BytesMut::new();
            encode_frame(&hash, &msg, &mut buf);
            prop_assert_eq!(&buf[..], &reference_encode(&hash, &msg)[..]);
            let frame = decode_frame(&mut buf, u64::MAX).unwrap().unwrap();
            prop_assert!(buf.is_empty());
            prop_assert_eq!(&frame.info_hash[..], &hash[..]);
            // A handshake with capabilities but version 0 reads as legacy by design.
            let expect = match msg {
                Message::Handshake { info_hash, peer_id, capabilities: Some(c) } if c.protocol_version == 0 =>
                    Message::Handshake { info_hash, peer_id, capabilities: None },
                m => m,
            };
            prop_assert_eq!(frame.msg, expect);
        }

        #[test]
        fn frame_parts_concatenate_to_the_frame(msg in arb_message(), hash in proptest::collection::vec(any::<u8>(), 0..40)) {
            let mut whole = BytesMut::new();
            encode_frame(&hash, &msg, &mut whole);
            let parts = encode_frame_parts(&hash, &msg);
            prop_assert_eq!(parts.concat(), whole.to_vec());
            if let Message::Transfer { data, .. } = &msg {
                // The data is the middle part itself, not a copy.
                prop_assert_eq!(parts[1].as_ptr(), data.as_ptr());
                prop_assert_eq!(parts[1].len(), data.len());
            }
        }

        #[test]
        fn payload_len_counts_as_prost_does(msg in arb_message()) {
            prop_assert_eq!(msg.payload_len(), msg.payload().map_or(0, |p| p.encoded_len()));
        }

        #[test]
        fn frame_len_is_the_encoded_length_with_a_root(msg in arb_message(), fill in any::<u8>()) {
            let mut buf = BytesMut::new();
            encode_frame(&[fill; 32], &msg, &mut buf);
            prop_assert_eq!(buf.len(), msg.frame_len());
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = decode_frame(&mut buf, 1 << 16) {}
            let _ = decode_body(Bytes::from(bytes));
        }

        #[test]
        fn mutated_frames_never_panic_and_decode_to_a_fixpoint(bytes in arb_mutated_frame()) {
            let body = Bytes::copy_from_slice(&bytes[4..]);
            if let Ok(frame) = decode_body(body.clone()) {
                check_decoded(&frame);
            }
            // The bounded transfer decoder agrees with prost's on every frame prost accepts.
            if let Ok(env) = proto::PeerMessage::decode(body) {
                if let Ok(t) = proto::TransferPayload::decode(env.payload.clone()) {
                    let nodes = t.proof.map_or(0, |p| p.proof.len());
                    prop_assert_eq!(count_proof_nodes(&env.payload), Some(nodes));
                }
            }
            let limits = FrameLimits::for_geometry(Geometry::new(5 * T1_SIZE).unwrap());
            for handshaken in [false, true] {
                let mut buf = BytesMut::from(&bytes[..]);
                if let Ok(Some(frame)) = decode_frame_limited(&mut buf, &limits, handshaken) {
                    prop_assert!(bytes.len() - 4 <= limits.limit(frame.msg.wire_type()) as usize);
                    check_decoded(&frame);
                }
            }
        }

    }

    proptest! {
        // Few cases: a bitfield of the largest file is 128 MiB.
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Whatever an honest node sends for a file fits that file's limits.
        #[test]
        fn honest_messages_fit_their_limits(
            len in prop_oneof![
                0u64..4 * crate::tiers::T3_SIZE,
                0u64..=crate::tiers::MAX_FILE_LEN,
                Just(crate::tiers::MAX_FILE_LEN),
            ],
            unit in any::<u64>(),
            leaf in any::<i64>(),
            level in any::<u32>(),
            words in any::<u64>(),
        ) {
            let geo = Geometry::new(len).unwrap();
            let limits = FrameLimits::for_geometry(geo);
            let blocks3 = geo.blocks(Tier::T3).div_ceil(8) as usize;
            let msgs = [
                Message::Transfer {
                    unit,
                    data: vec![0xff; T1_SIZE as usize].into(),
                    proof: Some(Proof {
                        leaf_start: leaf,
                        leaf_count: leaf,
                        nodes: vec![(Bytes::from_static(&[9; 32]), level); limits.proof_nodes as usize],
                    }),
                },
                Message::Bitfield { bits: vec![0xff; limits.bitfield_bytes as usize].into() },
                Message::Summary {
                    tier: 3,
                    start: words,
                    all: vec![0xff; blocks3].into(),
                    partial: vec![0xff; blocks3].into(),
                },
                Message::RefineResponse {
                    tier: u32::MAX,
                    start: words,
                    bits: vec![0xff; 64].into(),
                    id: words,
                    reject: Some("block 1234567890 past the end of tier 3 with 4 blocks".into()),
                },
                Message::Handshake {
                    info_hash: Bytes::from_static(&[1; 32]),
                    peer_id: "p".repeat(256),
                    capabilities: Some(Capabilities { protocol_version: u32::MAX, max_tier_supported: u32::MAX, serve_queue: u32::MAX }),
                },
                Message::Reject { unit, reason: "r".repeat(256) },
                Message::RefineRequest { from_tier: u32::MAX, to_tier: u32::MAX, index: words, id: words },
                Message::Have { unit }, Message::Request { unit, held: words }, Message::Cancel { unit },
                Message::KeepAlive,
            ];
            for msg in msgs {
                let mut buf = BytesMut::new();
                encode_frame(&[3; 32], &msg, &mut buf);
                let frame = decode_frame_limited(&mut buf, &limits, true);
                prop_assert!(matches!(frame, Ok(Some(_))), "{:?}: {:?}", msg.kind(), frame);
            }
        }

        #[test]
        fn partial_frames_wait_for_more(msg in arb_message(), cut in 0usize..200) {
            let mut full = BytesMut::new();
            encode_frame(&[1; 32], &msg, &mut full);
            let cut = cut.min(full.len() - 1);
            let mut part = BytesMut::from(&full[..cut]);
            prop_assert_eq!(decode_frame(&mut part, u64::MAX), Ok(None));
            prop_assert_eq!(part.len(), cut);
        }
    }

    #[test]
    fn oversized_frame_is_refused_before_allocating() {
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 0][..]);
        assert_eq!(
            decode_frame(&mut buf, 1 << 20),
            Err(WireError::FrameTooLarge {
                len: u32::MAX as u64,
                max: 1 << 20
            })
        );
        assert!(buf.capacity() < 1 << 20);
    }

    fn limits_of(len: u64) -> FrameLimits {
        FrameLimits::for_geometry(Geometry::new(len).unwrap())
    }

    /// A frame header and the first bytes of its envelope: what a reader has seen when a peer
    /// has sent only that much.
    fn frame_start(len: u32, kind: Kind) -> BytesMut {
        let mut buf = BytesMut::new();
        buf.put_u32(len);
        encode_key(1, WireType::LengthDelimited, &mut buf);
        encode_varint(32, &mut buf);
        buf.put_slice(&[7; 32]);
        encode_key(2, WireType::Varint, &mut buf);
        encode_varint(kind as u64, &mut buf);
        buf
    }

    #[test]
    fn limits_follow_the_file() {
        let small = limits_of(3 * T1_SIZE);
        assert_eq!(small.proof_nodes, 2);
        assert_eq!(small.bitfield_bytes, 1);
        assert_eq!(small.summary, CONTROL_FRAME_MAX);
        assert!(small.transfer > T1_SIZE as u32 && small.transfer < T1_SIZE as u32 + 256);
        let huge = limits_of(crate::tiers::MAX_FILE_LEN);
        assert_eq!(huge.proof_nodes, 30);
        assert_eq!(huge.bitfield_bytes, 1 << 27);
        assert!(huge.transfer < T1_SIZE as u32 + 1500);
        assert!(huge.summary > 2 * (1 << 18));
        assert_eq!(limits_of(0).proof_nodes, 0);
        assert_eq!(limits_of(1).proof_nodes, 0);
        // The figures in dev/ROBUSTNESS.md.
        assert_eq!(limits_of(1).transfer, 65_615);
        assert_eq!(huge.transfer, 66_876);
    }

    #[test]
    fn a_transfer_with_500k_proof_nodes_is_refused_from_its_header() {
        // 500,000 empty nodes: 1 MB of two-byte entries, announced in the length prefix.
        let limits = limits_of(1 << 30);
        let mut buf = frame_start(1_000_100, Kind::Transfer);
        buf.put_slice(&[0x1a, 0xff]);
        let cap = buf.capacity();
        let err = decode_frame_limited(&mut buf, &limits, true).unwrap_err();
        assert!(
            matches!(
                err,
                WireError::MessageTooLarge {
                    kind: MessageKind::Transfer,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(buf.capacity(), cap, "nothing reserved for the body");
    }

    #[test]
    fn proof_nodes_are_counted_before_they_are_collected() {
        // Within the byte limit, but 1,000 empty nodes is more than the tree is deep.
        let nodes: Vec<(Bytes, u32)> = vec![(Bytes::new(), 0); 1000];
        let msg = Message::Transfer {
            unit: 0,
            data: Bytes::new(),
            proof: Some(Proof {
                leaf_start: 0,
                leaf_count: 1,
                nodes,
            }),
        };
        let limits = limits_of(1 << 30);
        let mut buf = BytesMut::new();
        encode_frame(&[7; 32], &msg, &mut buf);
        let err = decode_frame_limited(&mut buf, &limits, true).unwrap_err();
        assert!(
            matches!(
                err,
                WireError::Malformed {
                    what: "BaoProof",
                    ..
                }
            ),
            "{err}"
        );
        // Without the file's geometry the absolute bound holds.
        let mut buf = BytesMut::new();
        encode_frame(&[7; 32], &msg, &mut buf);
        let err = decode_frame(&mut buf, u64::MAX).unwrap_err();
        assert!(
            err.to_string().contains("more than the 64 allowed"),
            "{err}"
        );
    }

    #[test]
    fn frames_before_the_handshake_are_small() {
        let limits = limits_of(1 << 30);
        let handshake = |peer_id: &str| {
            let mut buf = BytesMut::new();
            let msg = Message::Handshake {
                info_hash: Bytes::from_static(&[7; 32]),
                peer_id: peer_id.into(),
                capabilities: Some(Capabilities::OURS),
            };
            encode_frame(&[7; 32], &msg, &mut buf);
            buf
        };
        assert!(decode_frame_limited(&mut handshake("ok"), &limits, false)
            .unwrap()
            .is_some());
        let err = decode_frame_limited(&mut handshake(&"x".repeat(2000)), &limits, false);
        assert!(
            matches!(err, Err(WireError::FrameTooLarge { max: 1024, .. })),
            "{err:?}"
        );
        // A TRANSFER-sized frame before the handshake is refused from its length prefix alone.
        let mut buf = frame_start(T1_SIZE as u32, Kind::Transfer);
        assert!(decode_frame_limited(&mut buf, &limits, false).is_err());
    }

    #[test]
    fn a_bitfield_has_exactly_its_length() {
        let limits = limits_of(20 * T1_SIZE); // 20 units: 3 bytes of bits
        let frame = |n: usize| {
            let mut buf = BytesMut::new();
            encode_frame(
                &[7; 32],
                &Message::Bitfield {
                    bits: vec![0; n].into(),
                },
                &mut buf,
            );
            buf
        };
        assert!(decode_frame_limited(&mut frame(3), &limits, true)
            .unwrap()
            .is_some());
        for n in [0, 2, 4, 5000] {
            assert!(
                decode_frame_limited(&mut frame(n), &limits, true).is_err(),
                "{n} bytes"
            );
        }
        // The large one is refused before its body arrives.
        let big = limits_of(1 << 40);
        let mut buf = frame_start(big.bitfield + 1, Kind::Bitfield);
        assert!(matches!(
            decode_frame_limited(&mut buf, &big, true),
            Err(WireError::MessageTooLarge {
                kind: MessageKind::Bitfield,
                ..
            })
        ));
    }

    #[test]
    fn control_messages_are_small() {
        let limits = limits_of(1 << 40);
        let mut buf = BytesMut::new();
        let reject = Message::Reject {
            unit: 1,
            reason: "r".repeat(2000),
        };
        encode_frame(&[7; 32], &reject, &mut buf);
        assert!(matches!(
            decode_frame_limited(&mut buf, &limits, true),
            Err(WireError::MessageTooLarge {
                kind: MessageKind::Reject,
                max: 1024,
                ..
            })
        ));
    }

    #[test]
    fn a_payload_before_the_type_counts_as_a_handshake() {
        // Non-canonical field order: payload (field 3) first, then type 4 (TRANSFER).
        let limits = limits_of(1 << 30);
        let mut body = BytesMut::new();
        encode_key(3, WireType::LengthDelimited, &mut body);
        encode_varint(2000, &mut body);
        body.put_slice(&[0; 2000]);
        encode_key(2, WireType::Varint, &mut body);
        encode_varint(4, &mut body);
        let mut buf = BytesMut::new();
        buf.put_u32(body.len() as u32);
        buf.put_slice(&body);
        assert!(matches!(
            decode_frame_limited(&mut buf, &limits, true),
            Err(WireError::MessageTooLarge {
                kind: MessageKind::Handshake,
                ..
            })
        ));
    }

    #[test]
    fn a_large_frame_waits_for_its_type_then_reserves_only_itself() {
        let limits = limits_of(1 << 30);
        let full = frame_start(60_000, Kind::Transfer);
        let mut buf = BytesMut::from(&full[..20]);
        assert_eq!(decode_frame_limited(&mut buf, &limits, true), Ok(None));
        assert!(
            buf.capacity() < 1024,
            "no reservation before the kind is known"
        );
        buf.extend_from_slice(&full[20..]);
        assert_eq!(decode_frame_limited(&mut buf, &limits, true), Ok(None));
        assert!(buf.capacity() >= 60_004);
        // Garbage that never names a type is refused once the window is full.
        let mut buf = BytesMut::new();
        buf.put_u32(60_000);
        buf.put_slice(&[0x0d, 0, 0, 0, 0].repeat(13)); // fixed32 fields, forever
        assert!(matches!(
            decode_frame_limited(&mut buf, &limits, true),
            Err(WireError::Malformed {
                what: "PeerMessage",
                ..
            })
        ));
    }

    #[test]
    fn legacy_handshake_without_capability_fields() {
        // What the original project's encoder produced: fields 1 and 2 only.
        let payload = proto::HandshakePayload {
            info_hash: Bytes::from_static(&[9; 32]),
            peer_id: "go-peer".into(),
            protocol_version: 0,
            max_tier_supported: 0,
            supports_hierarchical_availability: false,
            serve_queue: 0,
        }
        .encode_to_vec();
        let env = proto::PeerMessage {
            info_hash: Bytes::from_static(&[9; 32]),
            r#type: 0,
            payload: payload.into(),
        }
        .encode_to_vec();
        let f = decode_body(env.into()).unwrap();
        assert!(matches!(
            f.msg,
            Message::Handshake {
                capabilities: None,
                ..
            }
        ));
    }

    #[test]
    fn a_serve_queue_is_said_only_when_it_is_not_the_unsaid_one() {
        let hs = |c: Capabilities| {
            let mut out = BytesMut::new();
            let msg = Message::Handshake {
                info_hash: Bytes::from_static(&[9; 32]),
                peer_id: "p".into(),
                capabilities: Some(c),
            };
            encode_frame(&[9; 32], &msg, &mut out);
            (out.freeze(), msg)
        };
        // The default queue: the very bytes of a handshake from before the field.
        let unsaid = Capabilities::OURS.with_serve_queue(UNSAID_SERVE_QUEUE as usize);
        assert_eq!(hs(unsaid).0, hs(Capabilities::OURS).0);
        assert_eq!(unsaid.serve_queue(), UNSAID_SERVE_QUEUE);
        // Another is said (field 6) and read back.
        let said = Capabilities::OURS.with_serve_queue(512);
        let (bytes, msg) = hs(said);
        assert_eq!(bytes.len(), hs(Capabilities::OURS).0.len() + 3);
        let back = decode_body(bytes.slice(4..)).unwrap().msg;
        assert_eq!(back, msg);
        let Message::Handshake {
            capabilities: Some(c),
            ..
        } = back
        else {
            panic!("{back:?}")
        };
        assert_eq!(c.serve_queue(), 512);
        assert_eq!(
            Capabilities::OURS.with_serve_queue(usize::MAX).serve_queue,
            u32::MAX
        );
    }
}
