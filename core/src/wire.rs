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
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};
use prost::Message as _;

/// Protocol version this implementation speaks in its handshake.
pub const PROTOCOL_VERSION: u32 = 1;
/// Highest tier this implementation understands.
pub const MAX_TIER_SUPPORTED: u32 = 3;

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
}

impl Capabilities {
    /// What this implementation announces.
    pub const OURS: Capabilities = Capabilities {
        protocol_version: PROTOCOL_VERSION,
        max_tier_supported: MAX_TIER_SUPPORTED,
    };
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

    fn wire_type(&self) -> i32 {
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

    fn payload_len(&self) -> usize {
        self.payload().map_or(0, |p| p.encoded_len())
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
                });
                Payload::Handshake(proto::HandshakePayload {
                    info_hash: info_hash.clone(),
                    peer_id: peer_id.clone(),
                    protocol_version: c.protocol_version,
                    max_tier_supported: c.max_tier_supported,
                    supports_hierarchical_availability: capabilities.is_some(),
                })
            }
            Message::Bitfield { bits } => {
                Payload::Bitfield(proto::BitfieldPayload { bits: bits.clone() })
            }
            Message::Have { unit } => Payload::Have(proto::HavePayload { unit_index: *unit }),
            Message::Request { unit } | Message::Cancel { unit } => {
                Payload::Request(proto::TransferRequestPayload { unit_index: *unit })
            }
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
/// share `buf`'s allocation (no copy of unit data).
pub fn decode_frame(buf: &mut BytesMut, max_frame: u64) -> Result<Option<Frame>, WireError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as u64;
    if len > max_frame {
        return Err(WireError::FrameTooLarge {
            len,
            max: max_frame,
        });
    }
    if (buf.len() as u64) < 4 + len {
        // Reserve only up to the (bounded) frame, so a peer cannot make us allocate more.
        buf.reserve(4 + len as usize - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    let body = buf.split_to(len as usize).freeze();
    decode_body(body).map(Some)
}

fn malformed(what: &'static str) -> impl FnOnce(prost::DecodeError) -> WireError {
    move |e| WireError::Malformed {
        what,
        reason: e.to_string(),
    }
}

/// Decodes the body of one frame (the bytes after the length prefix).
pub fn decode_body(body: Bytes) -> Result<Frame, WireError> {
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
        Ok(Kind::Request) => Message::Request {
            unit: proto::TransferRequestPayload::decode(p)
                .map_err(malformed("TransferRequestPayload"))?
                .unit_index,
        },
        Ok(Kind::Cancel) => Message::Cancel {
            unit: proto::TransferRequestPayload::decode(p)
                .map_err(malformed("CancelPayload"))?
                .unit_index,
        },
        Ok(Kind::Transfer) => {
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
            (bytes(), ".{0,12}", proptest::option::of((1u32..5, 0u32..5))).prop_map(
                |(info_hash, peer_id, c)| Message::Handshake {
                    info_hash,
                    peer_id,
                    capabilities: c.map(|(v, t)| Capabilities {
                        protocol_version: v,
                        max_tier_supported: t
                    }),
                }
            ),
            bytes().prop_map(|bits| Message::Bitfield { bits }),
            any::<u64>().prop_map(|unit| Message::Have { unit }),
            any::<u64>().prop_map(|unit| Message::Request { unit }),
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

    proptest! {
        #[test]
        fn every_message_round_trips(msg in arb_message(), hash in proptest::collection::vec(any::<u8>(), 0..40)) {
            let mut buf = BytesMut::new();
            encode_frame(&hash, &msg, &mut buf);
            prop_assert_eq!(&buf[..], &reference_encode(&hash, &msg)[..]);
            if hash.len() == 32 {
                prop_assert_eq!(buf.len(), msg.frame_len());
            }
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
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = decode_frame(&mut buf, 1 << 16) {}
            let _ = decode_body(Bytes::from(bytes));
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

    #[test]
    fn legacy_handshake_without_capability_fields() {
        // What the original project's encoder produced: fields 1 and 2 only.
        let payload = proto::HandshakePayload {
            info_hash: Bytes::from_static(&[9; 32]),
            peer_id: "go-peer".into(),
            protocol_version: 0,
            max_tier_supported: 0,
            supports_hierarchical_availability: false,
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
}
