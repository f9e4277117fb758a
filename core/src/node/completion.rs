//! Local completion: a unit the embedder verified and wrote becomes available here (promoted
//! through the tiers), is announced, and is persisted; a unit that failed verification goes
//! back to the pool and costs its sender the connection.

use super::api::DisconnectReason;
use super::outbox::Class;
use super::peer::PeerId;
use super::{Action, Event, Node};
use crate::trace::Record;

impl Node {
    pub(super) fn on_unit_complete(&mut self, unit: u64) {
        self.claims.end_verifying(unit);
        let promo = match self.local.mark_t1_complete(unit) {
            Ok(p) if p.newly_set => p,
            _ => return,
        };
        self.claim(unit);
        self.refines.earn(1, self.now, &self.cfg.limits);
        if let Some(r) = self.remote.rarity1.as_mut() {
            r.park(unit);
        }
        self.trace(Record::Completed {
            unit,
            t2: promo.t2,
            t3: promo.t3,
        });
        self.announce_completion(unit, &promo);
        let total = self.geo.units();
        let units = self.local.units_present();
        self.emit(
            Class::Control,
            Action::Event(Event::Progress { units, total }),
        );
        let pending = self.persistence.note_completed();
        if self.local.is_complete() {
            self.trace(Record::Complete);
            self.persist();
            self.emit(Class::Control, Action::Event(Event::Complete));
        } else {
            self.persist_soon(pending);
        }
    }

    pub(super) fn on_unit_failed(&mut self, peer: PeerId, unit: u64) {
        if self.claims.end_verifying(unit) {
            self.stats.failed_units += 1;
            self.stats.retries += 1;
            self.unclaim_if_free(unit);
            self.wake_starved();
        }
        self.disconnect(peer, DisconnectReason::FailedVerification);
    }
}
