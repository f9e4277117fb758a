//! The dispatcher's half of "a BITFIELD only from a legacy peer after its handshake, and only at
//! its exact length" (the framing layer's half, the length limits, is in `wire.rs`).

use bytes::Bytes;
use tierswarm_core::node::{DisconnectReason, Upload, Verdict};
use tierswarm_core::wire::{Capabilities, Message, Proof};
use tierswarm_core::{drive, Config, Geometry, Host, Input, LocalTiers, Node, PeerId, Timestamp};

const ROOT: [u8; 32] = [5; 32];
const LEN: u64 = 20 * 65536; // 20 units: 3 bytes of bits

fn node() -> Node {
    let cfg = Config::new(ROOT, LEN, "me");
    let local = LocalTiers::new(Geometry::new(LEN).unwrap());
    Node::try_new(cfg, local, Timestamp::ZERO).unwrap()
}

/// A host that keeps the first disconnect reason and drops everything else.
#[derive(Default)]
struct Disconnects(Option<String>);

impl Host for Disconnects {
    fn send(&mut self, _: PeerId, _: Message) {}
    fn serve(&mut self, _: PeerId, _: u64) -> Upload {
        Upload::Later
    }
    fn store_unit(&mut self, _: PeerId, _: u64, _: Bytes, _: Option<Proof>) -> Verdict {
        Verdict::Later
    }
    fn persist(&mut self, _: Bytes) {}
    fn disconnect(&mut self, peer: PeerId, reason: DisconnectReason) {
        assert_eq!(peer, PeerId(1));
        self.0.get_or_insert(reason.to_string());
    }
}

/// Feeds `msgs` from peer 1 and returns the reason it was disconnected for, if it was.
fn disconnect_reason(node: &mut Node, msgs: Vec<Message>) -> Option<String> {
    let peer = PeerId(1);
    let mut host = Disconnects::default();
    node.handle_input(Timestamp::ZERO, Input::PeerConnected { peer });
    drive(node, Timestamp::ZERO, &mut host);
    for msg in msgs {
        node.handle_input(Timestamp::ZERO, Input::message(peer, msg));
        drive(node, Timestamp::ZERO, &mut host);
    }
    host.0
}

fn handshake(capable: bool) -> Message {
    Message::Handshake {
        info_hash: Bytes::from_static(&ROOT),
        peer_id: "them".into(),
        capabilities: capable.then_some(Capabilities::OURS),
    }
}

fn bitfield(n: usize) -> Message {
    Message::Bitfield {
        bits: vec![0x80; n].into(),
    }
}

#[test]
fn a_legacy_peer_sends_one_bitfield_of_its_exact_length_after_its_handshake() {
    assert_eq!(
        disconnect_reason(&mut node(), vec![handshake(false), bitfield(3)]),
        None
    );
}

#[test]
fn a_bitfield_before_the_handshake_costs_the_connection() {
    let r = disconnect_reason(&mut node(), vec![bitfield(3)]).unwrap();
    assert!(r.contains("before handshake"), "{r}");
}

#[test]
fn a_capable_peer_never_sends_a_bitfield() {
    let r = disconnect_reason(&mut node(), vec![handshake(true), bitfield(3)]).unwrap();
    assert!(r.contains("bitfield from a capable peer"), "{r}");
}

#[test]
fn a_bitfield_of_another_length_costs_the_connection() {
    for n in [0, 2, 4] {
        let r = disconnect_reason(&mut node(), vec![handshake(false), bitfield(n)]).unwrap();
        assert!(r.contains("bad bitfield"), "{n} bytes: {r}");
    }
}
