//! Persistence: local tiers are handed to the embedder as an encoded availability store
//! ([`Action::Persist`](super::Action::Persist)), coalesced: after `persist_every` new units or
//! `persist_interval` after the first unpersisted one, and at completion or drain.

use super::outbox::Class;
use super::timers::Timer;
use super::{Action, Node};
use crate::trace::Record;

/// Units completed since the last store.
#[derive(Debug, Default)]
pub(crate) struct Persistence {
    unpersisted: u64,
    stored_once: bool,
}

impl Persistence {
    /// Counts a newly completed unit; returns the count since the last store.
    pub(crate) fn note_completed(&mut self) -> u64 {
        self.unpersisted += 1;
        self.unpersisted
    }

    /// Whether there is anything to store (the first store is always made, so that a node that
    /// completed nothing still leaves a valid store behind at drain).
    fn has_news(&self) -> bool {
        self.unpersisted > 0 || !self.stored_once
    }

    fn stored(&mut self) {
        self.unpersisted = 0;
        self.stored_once = true;
    }
}

impl Node {
    /// `pending` units are not stored yet: store now if enough piled up, else make sure a
    /// store comes soon.
    pub(super) fn persist_soon(&mut self, pending: u64) {
        if pending >= self.cfg.limits.persist_every {
            self.persist();
        } else {
            let at = self.now.add(self.cfg.limits.persist_interval);
            self.timers.arm_once(at, Timer::Persist);
        }
    }

    /// The persist timer fired.
    pub(super) fn on_persist_timer(&mut self) {
        if self.persistence.unpersisted > 0 {
            self.persist();
        }
    }

    /// Hands out the encoded store, unless nothing changed since the last one.
    pub(super) fn persist(&mut self) {
        if !self.persistence.has_news() {
            return;
        }
        self.persistence.stored();
        self.stats.persists += 1;
        let store = crate::store::encode_tiers(&self.local, self.now.as_micros());
        let units = self.local.units_present();
        self.trace(Record::Persist { units });
        self.emit(
            Class::Control,
            Action::Persist {
                store: store.into(),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_store_always_then_only_news() {
        let mut p = Persistence::default();
        assert!(p.has_news(), "the first store");
        p.stored();
        assert!(!p.has_news());
        assert_eq!(p.note_completed(), 1);
        assert_eq!(p.note_completed(), 2);
        assert!(p.has_news());
        p.stored();
        assert!(!p.has_news());
    }
}
