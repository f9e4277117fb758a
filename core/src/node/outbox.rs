//! The outbox: actions waiting for the embedder, in priority classes so that control is never
//! starved by bulk data (the content-aware scheduler seed), FIFO within a class; and the
//! node's one path for sending, which counts what it sends.

use super::api::{Action, Traffic};
use super::peer::PeerId;
use super::Node;
use crate::trace::{Record, Stamped};
use crate::wire::{Message, MessageKind};
use std::collections::VecDeque;

/// Output priority classes, highest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Class {
    /// Handshakes, requests, answers, local work (verification, persistence), news.
    Control = 0,
    /// Bitfields, HAVEs, summaries.
    Availability = 1,
    /// Units to serve.
    Data = 2,
    /// Trace records (shed under pressure).
    Telemetry = 3,
}

impl Class {
    /// The class of a message to send.
    fn of(kind: MessageKind) -> Class {
        match kind {
            MessageKind::Bitfield | MessageKind::Have | MessageKind::Summary => Class::Availability,
            _ => Class::Control,
        }
    }
}

/// Actions by class.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    queues: [VecDeque<Action>; 4],
}

impl Outbox {
    pub(crate) fn push(&mut self, class: Class, a: Action) {
        self.queues[class as usize].push_back(a);
    }

    /// The next action: highest class first, FIFO within a class.
    pub(crate) fn pop(&mut self) -> Option<Action> {
        self.queues.iter_mut().find_map(|q| q.pop_front())
    }

    /// Drops queued sends and serves to `peer`: nothing may be sent on a closed connection.
    pub(crate) fn purge(&mut self, peer: PeerId) {
        for q in &mut self.queues {
            q.retain(|a| match a {
                Action::Send { peer: p, .. } | Action::Serve { peer: p, .. } => *p != peer,
                _ => true,
            });
        }
    }
}

impl Node {
    pub(super) fn emit(&mut self, class: Class, a: Action) {
        self.outbox.push(class, a);
    }

    /// Sends `msg` to `peer` (counted, and noted as the peer's last send for keep-alives).
    pub(super) fn send(&mut self, peer: PeerId, msg: Message) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.last_sent = self.now;
        }
        let kind = msg.kind();
        self.count_sent(kind, msg.frame_len() as u64);
        self.emit(Class::of(kind), Action::Send { peer, msg });
    }

    pub(super) fn count_sent(&mut self, kind: MessageKind, bytes: u64) {
        let t: &mut Traffic = &mut self.stats.sent[kind];
        t.messages += 1;
        t.bytes += bytes;
    }

    /// Emits a trace record; under batch pressure or worse telemetry is shed, except the record
    /// of the level change itself.
    pub(super) fn trace(&mut self, r: Record) {
        let shed = self.pressure.sheds_telemetry() && !matches!(r, Record::Pressure { .. });
        if self.cfg.trace && !shed {
            let s = Stamped {
                t: self.now,
                record: r,
            };
            self.emit(Class::Telemetry, Action::Trace(s));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::Event;

    fn send(peer: u64) -> Action {
        Action::Send {
            peer: PeerId(peer),
            msg: Message::KeepAlive,
        }
    }

    #[test]
    fn higher_classes_first_fifo_within_a_class() {
        let mut o = Outbox::default();
        o.push(
            Class::Data,
            Action::Serve {
                peer: PeerId(1),
                unit: 7,
            },
        );
        o.push(Class::Control, send(1));
        o.push(Class::Control, Action::Event(Event::Complete));
        o.push(Class::Availability, send(2));
        let order: Vec<String> = std::iter::from_fn(|| o.pop())
            .map(|a| format!("{a:?}"))
            .collect();
        assert!(order[0].starts_with("Send { peer: PeerId(1)"));
        assert!(order[1].starts_with("Event(Complete)"));
        assert!(order[2].starts_with("Send { peer: PeerId(2)"));
        assert!(order[3].starts_with("Serve"));
    }

    #[test]
    fn purge_drops_only_that_peers_sends_and_serves() {
        let mut o = Outbox::default();
        o.push(Class::Control, send(1));
        o.push(Class::Control, send(2));
        o.push(
            Class::Data,
            Action::Serve {
                peer: PeerId(1),
                unit: 0,
            },
        );
        o.push(Class::Control, Action::Event(Event::Complete));
        o.purge(PeerId(1));
        let left: Vec<String> = std::iter::from_fn(|| o.pop())
            .map(|a| format!("{a:?}"))
            .collect();
        assert_eq!(left.len(), 2);
        assert!(left[0].contains("PeerId(2)"));
        assert!(left[1].contains("Complete"));
    }
}
