//! Connection lifecycle: a connection is *unconfirmed* until the peer's handshake arrives
//! (never scheduled, dropped after `handshake_timeout`), then *ready* on the hierarchical or
//! the flat path. Leaving — closed by the embedder, or disconnected by the node — releases
//! everything held for the peer, in every ledger.

use super::api::DisconnectReason;
use super::outbox::Class;
use super::peer::{Lifecycle, Peer, PeerId};
use super::timers::Timer;
use super::{Action, Event, Node};
use crate::tiers::Tier;
use crate::trace::Record;
use crate::wire::{Capabilities, Message, UNSAID_SERVE_QUEUE};
use bytes::Bytes;

/// Characters of a peer's self-chosen identity kept.
const MAX_PEER_ID_CHARS: usize = 64;

/// The identity a handshake gives, bounded.
pub(super) fn bounded_peer_id(peer_id: &str) -> String {
    peer_id.chars().take(MAX_PEER_ID_CHARS).collect()
}

impl Node {
    /// Closes the connection to `peer` if it and we both hold the whole file. Checked when the
    /// peer tells us what it holds, so a peer that completes announces it first (its last
    /// HAVE or summary) and the one that learns it closes.
    pub(super) fn drop_if_both_complete(&mut self, peer: PeerId) {
        let done =
            self.local.is_complete() && self.peers.get(&peer).is_some_and(|p| p.has_everything());
        if done {
            self.disconnect(peer, DisconnectReason::BothComplete);
        }
    }

    /// Whether a peer announcing `caps` takes the hierarchical path with us.
    pub(super) fn capable_with(&self, caps: Option<Capabilities>) -> bool {
        self.cfg.hierarchical && caps.is_some_and(|c| c.max_tier_supported >= 3)
    }

    pub(super) fn on_connected(&mut self, peer: PeerId) {
        if self.peers.contains_key(&peer) {
            return;
        }
        if self.peers.len() >= self.cfg.limits.max_peers {
            let reason = DisconnectReason::TooManyPeers;
            self.emit(Class::Control, Action::Disconnect { peer, reason });
            return;
        }
        self.peers.insert(peer, Peer::new(peer, self.now));
        self.timers.push(
            self.now.add(self.cfg.limits.handshake_timeout),
            Timer::Handshake(peer),
        );
        let hs = Message::Handshake {
            info_hash: Bytes::copy_from_slice(&self.cfg.info_hash),
            peer_id: self.cfg.peer_id.clone(),
            capabilities: self
                .cfg
                .hierarchical
                .then_some(Capabilities::OURS.with_serve_queue(self.cfg.limits.max_serve_queue)),
        };
        self.send(peer, hs);
    }

    /// The peer's handshake arrived: it is ready, and learns what we hold — a T3 summary on
    /// the hierarchical path, a full bitfield on the flat one.
    pub(super) fn on_handshake(
        &mut self,
        peer: PeerId,
        peer_id: String,
        caps: Option<Capabilities>,
    ) {
        let capable = self.capable_with(caps);
        let (geo, now) = (self.geo, self.now);
        let p = self
            .peers
            .get_mut(&peer)
            .expect("frames come from known peers");
        let was_flat = p.is_ready() && !p.is_capable();
        if !p.is_ready() {
            p.starts.ready(now);
        }
        p.state = Lifecycle::Ready { capable };
        match (was_flat, capable) {
            (false, false) => self.announce.flat_ready += 1,
            (true, true) => self.announce.flat_ready = self.announce.flat_ready.saturating_sub(1),
            _ => {}
        }
        p.peer_id = bounded_peer_id(&peer_id);
        // A flat peer says nothing of its queue: it gets the queue every version had.
        p.serve_queue = caps.map_or(UNSAID_SERVE_QUEUE, |c| c.serve_queue());
        p.init_view(geo, capable);
        if capable {
            let s = self
                .local
                .summary(Tier::T3, 0, geo.blocks(Tier::T3))
                .expect("whole range is valid");
            let msg = Message::Summary {
                tier: 3,
                start: 0,
                all: Bytes::copy_from_slice(s.all.as_bytes()),
                partial: Bytes::copy_from_slice(s.partial.as_bytes()),
            };
            self.send(peer, msg);
        } else {
            let bits = Bytes::copy_from_slice(self.local.bitfield(Tier::T1).as_bytes());
            self.send(peer, Message::Bitfield { bits });
        }
        self.emit(
            Class::Control,
            Action::Event(Event::PeerReady { peer, capable }),
        );
        self.trace(Record::PeerReady { peer, capable });
    }

    pub(super) fn on_handshake_timeout(&mut self, peer: PeerId) {
        if self.peers.get(&peer).is_some_and(|p| !p.is_ready()) {
            self.disconnect(peer, DisconnectReason::HandshakeTimeout);
        }
    }

    /// Keep-alives to hierarchical peers we have sent nothing for a keep-alive interval (the
    /// original flat protocol has no KEEP_ALIVE, so a flat-only peer is never sent one); every
    /// peer we have heard nothing from for the liveness interval is dropped, flat-only ones
    /// included: an idle legacy connection holds a place an active peer could use, and its peer
    /// may dial again when it has something to say.
    pub(super) fn on_keepalive_timer(&mut self) {
        let idle = self.cfg.limits.keepalive;
        let now = self.now;
        let liveness = self.cfg.limits.liveness;
        let silent: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| now.since(p.last_received) >= liveness)
            .map(|(id, _)| *id)
            .collect();
        for id in silent {
            self.disconnect(id, DisconnectReason::Idle);
        }
        let quiet: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.is_capable() && now.since(p.last_sent) >= idle)
            .map(|(id, _)| *id)
            .collect();
        for id in quiet {
            self.send(id, Message::KeepAlive);
        }
        self.timers.push(now.add(idle), Timer::KeepAlive);
    }

    /// The embedder closed the connection.
    pub(super) fn on_disconnected(&mut self, peer: PeerId) {
        self.outbox.purge(peer);
        self.release(peer, DisconnectReason::Closed);
    }

    /// Drops `peer` for `reason`: releases it and tells the embedder to close.
    pub(super) fn disconnect(&mut self, peer: PeerId, reason: DisconnectReason) {
        if self.peers.contains_key(&peer) {
            self.outbox.purge(peer);
            *self.stats.disconnects.entry(reason.kind()).or_default() += 1;
            self.release(peer, reason.clone());
            self.emit(Class::Control, Action::Disconnect { peer, reason });
        }
    }

    /// Everything held for `peer` goes: requests back to the pool, refinements, views, queues,
    /// timers.
    fn release(&mut self, peer: PeerId, reason: DisconnectReason) {
        let Some(p) = self.peers.remove(&peer) else {
            return;
        };
        if p.is_ready() && !p.is_capable() {
            self.announce.flat_ready = self.announce.flat_ready.saturating_sub(1);
        }
        let released = self.requests.release_peer(peer);
        for &unit in &released {
            self.unclaim_if_free(unit);
        }
        self.refines.release_peer(peer);
        self.uploads.release_peer(peer);
        self.announce.release_peer(peer);
        if let Some(view) = &p.view {
            self.remote.forget(view);
        }
        self.timers.release_peer(peer);
        self.sched.release_peer(peer);
        // Released units may be wanted from someone else now.
        if !released.is_empty() {
            self.wake_starved();
        }
        self.trace(Record::PeerGone {
            peer,
            reason,
            requests_released: released.len() as u32,
        });
        self.pump_serves();
    }
}
