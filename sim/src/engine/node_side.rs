//! One node's side of the engine: its events, its actions, its share of the network.
//!
//! Everything here reads the run's fixed facts ([`Shared`]) and changes only the node's own
//! [`Slot`]: its node, its queue, its uplink, its counters. What reaches another node — a
//! message, a close — is left in the slot's outbox ([`Outgoing`]) and handed over at the end of
//! the window, never sooner than the smallest path latency after it was sent. So the nodes of
//! one window run in any order, or on several threads, with the same result.

use bytes::Bytes;
use tierswarm_core::node::{
    drive, DisconnectReason, DropReason, Event, Host, Input, PeerId, Upload, Verdict,
};
use tierswarm_core::trace::Stamped;
use tierswarm_core::wire::{Frame, Message, MessageKind, Proof};

use super::hostile::{self, PeerState};
use super::{digest, NodeEv, Outgoing, Shared, Slot, Then, WindowStats};
use crate::clock::SimTime;
use crate::network::{Class, Departure};
use crate::scenario::Role;

/// Node `i` at `now`, with its slot lent out.
pub(super) struct Ctx<'c, 'a> {
    pub(super) sh: &'c Shared<'a>,
    pub(super) slot: &'c mut Slot,
    pub(super) i: usize,
    pub(super) now: SimTime,
    pub(super) w: &'c mut WindowStats,
}

/// Runs the events of `slots` (nodes `base..`) due before `end`, node by node.
pub(super) fn run_nodes(
    sh: &Shared<'_>,
    slots: &mut [Slot],
    base: usize,
    end: SimTime,
) -> WindowStats {
    let mut w = WindowStats::default();
    for (k, slot) in slots.iter_mut().enumerate() {
        while let Some((t, ev)) = slot.queue.pop_before(end) {
            w.last_event = w.last_event.max(t);
            Ctx {
                sh,
                slot: &mut *slot,
                i: base + k,
                now: t,
                w: &mut w,
            }
            .dispatch(ev);
        }
    }
    w
}

impl Ctx<'_, '_> {
    fn dispatch(&mut self, ev: NodeEv) {
        match ev {
            NodeEv::Connected { conn, peer } => {
                if self.slot.conns.get(&peer) == Some(&conn) {
                    self.input(Input::PeerConnected {
                        peer: PeerId(peer as u64),
                    });
                }
            }
            NodeEv::Deliver { conn, from, msg } => {
                if self.slot.conns.get(&from) == Some(&conn)
                    && (self.slot.hostile.is_none() || self.reaches_node(from, &msg))
                {
                    let frame = Frame {
                        info_hash: self.sh.root.clone(),
                        msg,
                    };
                    self.input(Input::PeerFrame {
                        peer: PeerId(from as u64),
                        frame,
                    });
                }
            }
            NodeEv::Closed { conn, from } => {
                // Only if this node has not already reconnected to `from` on a newer connection.
                if self.slot.conns.get(&from) == Some(&conn) {
                    self.slot.conns.remove(&from);
                    self.slot.announce_if_short(self.now);
                    self.input(Input::PeerDisconnected {
                        peer: PeerId(from as u64),
                    });
                }
            }
            NodeEv::UnitSent { conn, to, unit } => {
                if self.slot.conns.get(&to) == Some(&conn) {
                    self.input(Input::UnitSent {
                        peer: PeerId(to as u64),
                        unit,
                    });
                }
            }
            NodeEv::Timer { epoch, at } => {
                if self.slot.epoch == epoch && self.slot.timer == Some(at) {
                    self.slot.timer = None;
                    if let Some(n) = self.slot.node.as_mut() {
                        n.handle_timeout(at.into());
                    }
                    self.after();
                }
            }
            NodeEv::Drop { conn, peer, reason } => self.embedder_drop(conn, peer, reason),
            NodeEv::Flood => self.flood(),
        }
    }

    fn input(&mut self, input: Input) {
        let Some(n) = self.slot.node.as_mut() else {
            return;
        };
        n.handle_input(self.now.into(), input);
        self.after();
    }

    /// Executes the node's actions through [`drive`], checks its invariants and re-arms its
    /// timer.
    pub(super) fn after(&mut self) {
        let Some(mut node) = self.slot.node.take() else {
            return;
        };
        drive(&mut node, self.now.into(), self);
        let s = node.stats();
        let l = &node.config().limits;
        if s.in_flight_requests > l.max_requests || s.in_flight_refines > l.max_refines {
            self.violate(format!(
                "peer {} exceeds its caps: {} requests, {} refinements in flight",
                self.i, s.in_flight_requests, s.in_flight_refines
            ));
        }
        if let Some(t) = node.poll_timeout() {
            let at = SimTime::from(t).max(self.now);
            let slot = &mut *self.slot;
            if slot.timer.is_none_or(|cur| at < cur) {
                slot.timer = Some(at);
                let epoch = slot.epoch;
                slot.queue.push(at, NodeEv::Timer { epoch, at });
            }
        }
        self.slot.node = Some(node);
    }

    fn violate(&mut self, what: String) {
        if self.slot.tally.violation.is_none() {
            self.slot.tally.violation = Some(what);
        }
        self.w.violation = true;
    }

    /// Closes connection `conn` to `j` from this side: `j` learns after the path latency.
    pub(super) fn close(&mut self, conn: u64, j: usize) {
        if self.slot.conns.get(&j) != Some(&conn) {
            return;
        }
        self.slot.conns.remove(&j);
        self.slot.announce_if_short(self.now);
        let at = self.now.add_micros(self.sh.hop_us(self.i, j));
        self.slot.out.push(Outgoing::Event {
            to: j,
            at,
            ev: NodeEv::Closed { conn, from: self.i },
        });
    }

    fn count(&mut self, kind: MessageKind, bytes: u64) {
        let t = &mut self.slot.tally;
        t.messages[kind as usize] += 1;
        if kind.is_availability() {
            t.availability_bytes += bytes;
        }
    }

    pub(super) fn send(&mut self, j: usize, msg: Message) {
        let bytes = msg.frame_len() as u64;
        self.count(msg.kind(), bytes);
        if let Message::Handshake {
            capabilities: Some(_),
            ..
        } = &msg
        {
            // Capability fields: version (2), max tier (2), flag (2).
            self.slot.tally.availability_bytes += 6;
        }
        self.hash_send(j, &msg);
        let Some(&conn) = self.slot.conns.get(&j) else {
            return;
        };
        let dep = self.depart(j, bytes, Class::Control);
        let from = self.i;
        self.post(j, dep, Then::Deliver { conn, from, msg });
    }

    /// Puts `bytes` on this node's uplink to `j` (the faults drawn from its own stream).
    fn depart(&mut self, j: usize, bytes: u64, class: Class) -> Departure {
        let (now, i) = (self.now, self.i);
        (self.sh.shape).depart(&mut self.slot.sender, now, i, j, bytes, class)
    }

    /// Leaves `dep` for `j`'s downlink at the end of the window, if it reaches it at all; then
    /// `then` happens.
    fn post(&mut self, j: usize, dep: Departure, then: Then) {
        if dep.reaches_downlink().is_some() {
            self.slot.out.push(Outgoing::Message {
                dep,
                sent_at: self.now,
                to: j,
                then,
            });
        }
    }

    /// The simulator's own check: a node serves only units whose bytes it received and verified
    /// (or, for a seeder, always had).
    fn holds(&mut self, unit: u64) -> bool {
        let held = self.slot.held.get(unit);
        if !held {
            self.violate(format!("peer {} served unit {unit} it lacks", self.i));
        }
        held
    }

    /// Sends `unit` to `j` in a TRANSFER carrying `data` (empty: the real bytes, modelled by
    /// size), and tells this node when it has left; `reads`: whether `j` reads it.
    pub(super) fn serve_as(&mut self, j: usize, unit: u64, data: Bytes, reads: bool) {
        if !self.holds(unit) {
            return;
        }
        let bytes = self.sh.transfer_len(unit);
        let msg = Message::Transfer {
            unit,
            data,
            proof: None,
        };
        self.count(MessageKind::Transfer, 0);
        self.slot.tally.data_bytes += bytes;
        self.hash_send(j, &msg);
        let Some(&conn) = self.slot.conns.get(&j) else {
            return;
        };
        let dep = self.depart(j, bytes, Class::Bulk);
        self.slot.queue.push(
            dep.left_sender.max(self.now),
            NodeEv::UnitSent { conn, to: j, unit },
        );
        if reads {
            let from = self.i;
            self.post(j, dep, Then::Deliver { conn, from, msg });
        }
    }

    /// Half of `unit`'s TRANSFER goes to `j` and the rest never does: `j`'s embedder drops this
    /// node when the frame has not finished `frame_timeout` after its first bytes arrived.
    pub(super) fn cut_transfer(&mut self, j: usize, unit: u64) {
        if !self.holds(unit) {
            return;
        }
        let half = self.sh.transfer_len(unit) / 2;
        self.count(MessageKind::Transfer, 0);
        self.slot.tally.data_bytes += half;
        let Some(&conn) = self.slot.conns.get(&j) else {
            return;
        };
        let dep = self.depart(j, half, Class::Bulk);
        let (from, after) = (self.i, self.sh.limits.frame_timeout);
        self.post(j, dep, Then::DropFrame { conn, from, after });
    }

    fn event(&mut self, ev: Event) {
        let honest = self.slot.hostile.is_none();
        match ev {
            Event::Progress { units, .. } => {
                // Only honest progress keeps a run from counting as stalled.
                if honest {
                    self.w.last_progress = Some(self.now);
                }
                self.slot
                    .note_progress(self.now, units, self.sh.geo.units());
            }
            Event::Complete => {
                let s = &mut *self.slot;
                if s.spec.role == Role::Leecher && s.complete_at.is_none() {
                    s.complete_at = Some(self.now);
                    if honest {
                        self.w.completions += 1;
                    }
                    // Complete means every unit was verified here (corrupt data never is).
                    if !s.held.is_full() {
                        let what = format!(
                            "peer {} reported complete holding {} of {} verified units",
                            self.i,
                            s.held.count_ones(),
                            self.sh.geo.units()
                        );
                        self.violate(what);
                    }
                    self.slot.announce(self.now);
                }
            }
            Event::PeerReady { peer, .. } => self.hostile_ready(peer.0 as usize),
            _ => {}
        }
    }

    fn write_trace(&mut self, rec: &Stamped) {
        let json = rec.to_json_line();
        let line = format!("{{\"node\":{},{}\n", self.i, &json[1..]);
        self.slot.lines.push((self.now, line));
    }

    /// The trace hash digests every message sent (time, ends, kind, unit), whether or not a
    /// trace file is written, so a sweep's hash can be checked against a traced re-run.
    fn hash_send(&mut self, j: usize, msg: &Message) {
        let unit = match msg {
            Message::Have { unit }
            | Message::Request { unit, .. }
            | Message::Transfer { unit, .. }
            | Message::Reject { unit, .. }
            | Message::Cancel { unit } => *unit,
            Message::RefineRequest { index, .. } => *index,
            _ => u64::MAX,
        };
        let mut rec = [0u8; digest::RECORD];
        rec[..8].copy_from_slice(&self.now.as_micros().to_le_bytes());
        rec[8..16].copy_from_slice(&(self.i as u64).to_le_bytes());
        rec[16..24].copy_from_slice(&(j as u64).to_le_bytes());
        rec[24..32].copy_from_slice(&unit.to_le_bytes());
        rec[32] = msg.kind() as u8;
        self.slot.digest.record(&rec);
    }

    /// This node's embedder drops `peer` for `reason` (a write that stalled, a frame that did
    /// not finish), if their connection `conn` is still open.
    fn embedder_drop(&mut self, conn: u64, peer: usize, reason: DropReason) {
        if self.slot.conns.get(&peer) == Some(&conn) {
            let peer = PeerId(peer as u64);
            self.input(Input::PeerDropped { peer, reason });
        }
    }

    /// Whether a message between this node and `j` concerns a hostile peer.
    fn involves_hostile(&self, j: usize) -> bool {
        self.slot.hostile.is_some() || !self.sh.specs[j].behaviour.is_honest()
    }

    /// Whether this node keeps its connections whatever its node decides (a silent peer, a
    /// slow reader).
    fn keeps_connections(&self) -> bool {
        self.slot
            .hostile
            .as_deref()
            .is_some_and(PeerState::keeps_connections)
    }
}

/// The engine as node `i`'s [`Host`]: sends go onto the network, serves become payloads
/// modelled by size, verification is instant.
impl Host for Ctx<'_, '_> {
    fn send(&mut self, peer: PeerId, msg: Message) {
        let j = peer.0 as usize;
        if self.involves_hostile(j) {
            self.hostile_send(j, msg);
        } else {
            Ctx::send(self, j, msg);
        }
    }

    fn serve(&mut self, peer: PeerId, unit: u64) -> Upload {
        let j = peer.0 as usize;
        if self.involves_hostile(j) {
            self.hostile_serve(j, unit);
        } else {
            self.serve_as(j, unit, Bytes::new(), true);
        }
        Upload::Later
    }

    fn store_unit(&mut self, _: PeerId, unit: u64, data: Bytes, _: Option<Proof>) -> Verdict {
        // Verification is instant here (payloads are modelled by size; only a corrupt peer's
        // carry bytes).
        if hostile::is_corrupt(&data) {
            return Verdict::Failed;
        }
        self.slot.held.set(unit);
        Verdict::Verified
    }

    fn persist(&mut self, store: Bytes) {
        self.slot.store = Some(store);
    }

    fn disconnect(&mut self, peer: PeerId, reason: DisconnectReason) {
        let j = peer.0 as usize;
        self.note_disconnect(j, &reason);
        if self.keeps_connections() {
            return;
        }
        if let Some(&conn) = self.slot.conns.get(&j) {
            self.close(conn, j);
        }
    }

    fn event(&mut self, event: Event) {
        Ctx::event(self, event);
    }

    fn trace(&mut self, record: Stamped) {
        if self.sh.tracing {
            self.write_trace(&record);
        }
    }
}
