//! A flat-only (legacy) peer hears only the original protocol's kinds: no KEEP_ALIVE (kind 10)
//! is sent to it, while a capable peer gets keep-alives. Silence past the liveness interval
//! drops either (an idle connection holds a place an active peer could use).

use bytes::Bytes;
use std::time::Duration;
use tierswarm_core::node::{
    drive, Config, DisconnectReason, Host, Input, Node, PeerId, Upload, Verdict,
};
use tierswarm_core::time::Timestamp;
use tierswarm_core::wire::{Capabilities, Message, Proof};
use tierswarm_core::{Geometry, LocalTiers};

const ROOT: [u8; 32] = [9; 32];

#[derive(Default)]
struct Log {
    sent: Vec<(PeerId, Message)>,
    dropped: Vec<(PeerId, DisconnectReason)>,
}

impl Host for Log {
    fn send(&mut self, peer: PeerId, msg: Message) {
        self.sent.push((peer, msg));
    }
    fn serve(&mut self, _: PeerId, _: u64) -> Upload {
        Upload::Later
    }
    fn store_unit(&mut self, _: PeerId, _: u64, _: Bytes, _: Option<Proof>) -> Verdict {
        Verdict::Later
    }
    fn persist(&mut self, _: Bytes) {}
    fn disconnect(&mut self, peer: PeerId, reason: DisconnectReason) {
        self.dropped.push((peer, reason));
    }
}

#[test]
fn legacy_peers_get_no_keepalive_and_silent_peers_go() {
    let geo = Geometry::new(8 * 65536).unwrap();
    let mut node = Node::new(
        Config::new(ROOT, geo.file_len(), "seed"),
        LocalTiers::full(geo),
        Timestamp::ZERO,
    );
    let (capable, legacy) = (PeerId(1), PeerId(2));
    let mut log = Log::default();
    let mut now = Timestamp::ZERO;
    for (peer, caps) in [(capable, Some(Capabilities::OURS)), (legacy, None)] {
        node.handle_input(now, Input::PeerConnected { peer });
        let hs = Message::Handshake {
            info_hash: Bytes::copy_from_slice(&ROOT),
            peer_id: format!("remote-{}", peer.0),
            capabilities: caps,
        };
        node.handle_input(now, Input::message(peer, hs));
        drive(&mut node, now, &mut log);
    }
    let liveness = node.config().limits.liveness;
    let end = now.add(liveness * 3);
    // Neither peer sends anything; the node's timers run.
    while let Some(at) = node.poll_timeout().filter(|&t| t <= end) {
        now = at;
        node.handle_timeout(now);
        drive(&mut node, now, &mut log);
    }
    let keepalives = |p: PeerId| {
        log.sent
            .iter()
            .filter(|(q, m)| *q == p && matches!(m, Message::KeepAlive))
            .count()
    };
    assert!(keepalives(capable) > 0, "a capable peer is kept alive");
    assert_eq!(keepalives(legacy), 0, "KEEP_ALIVE is not a legacy kind");
    assert!(
        log.dropped
            .iter()
            .any(|(p, r)| *p == capable && matches!(r, DisconnectReason::Idle)),
        "a silent capable peer is dropped: {:?}",
        log.dropped
    );
    assert!(
        log.dropped
            .iter()
            .any(|(p, r)| *p == legacy && matches!(r, DisconnectReason::Idle)),
        "a silent legacy peer is dropped too: {:?}",
        log.dropped
    );
    assert!(now.since(Timestamp::ZERO) >= liveness + Duration::from_secs(1));
}
