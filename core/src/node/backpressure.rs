//! Backpressure: load levels reported by the embedder move the node through four levels with
//! hysteresis (the distributed-backpressure seed): none, throttle (request windows halved),
//! batch (windows quartered, availability deltas coalesced, telemetry shed) and reject (no new
//! requests, incoming requests refused).

use super::api::PressureSnapshot;
use super::Node;
use crate::trace::Record;

/// Load at or above which each level starts.
const THROTTLE_AT: f32 = 0.6;
const BATCH_AT: f32 = 0.8;
const REJECT_AT: f32 = 0.95;
/// Going down a level needs the load this far below the current level's threshold (so a load
/// hovering at a threshold does not flap).
const HYSTERESIS: f32 = 0.1;

/// Backpressure level, moved by [`PressureSnapshot`]s with hysteresis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Backpressure {
    /// Normal operation.
    None,
    /// Request windows halved.
    Throttle,
    /// Windows quartered, availability deltas coalesced, telemetry shed.
    Batch,
    /// No new requests issued; incoming requests rejected.
    Reject,
}

impl Backpressure {
    const LEVELS: [Backpressure; 4] = [
        Backpressure::None,
        Backpressure::Throttle,
        Backpressure::Batch,
        Backpressure::Reject,
    ];

    fn threshold(self) -> f32 {
        match self {
            Backpressure::None => 0.0,
            Backpressure::Throttle => THROTTLE_AT,
            Backpressure::Batch => BATCH_AT,
            Backpressure::Reject => REJECT_AT,
        }
    }

    /// A request window under this level.
    pub(crate) fn window(self, window: u32) -> u32 {
        match self {
            Backpressure::Throttle => (window / 2).max(1),
            Backpressure::Batch => (window / 4).max(1),
            _ => window,
        }
    }
}

/// The current level and its hysteresis.
#[derive(Debug)]
pub(crate) struct Pressure {
    level: Backpressure,
}

impl Default for Pressure {
    fn default() -> Self {
        Pressure {
            level: Backpressure::None,
        }
    }
}

impl Pressure {
    pub(crate) fn level(&self) -> Backpressure {
        self.level
    }

    /// Whether telemetry (trace records) is shed.
    pub(crate) fn sheds_telemetry(&self) -> bool {
        self.level >= Backpressure::Batch
    }

    /// Whether availability deltas are coalesced instead of sent at once.
    pub(crate) fn coalesces_deltas(&self) -> bool {
        self.level >= Backpressure::Batch
    }

    /// Applies a load report; returns the new level if it changed.
    pub(crate) fn update(&mut self, s: PressureSnapshot) -> Option<Backpressure> {
        let x = s.network.max(s.disk).max(s.cpu).max(s.memory);
        let up = Backpressure::LEVELS
            .iter()
            .rev()
            .find(|l| x >= l.threshold())
            .copied()
            .unwrap_or(Backpressure::None);
        let next = if up >= self.level || x < self.level.threshold() - HYSTERESIS {
            up
        } else {
            self.level
        };
        (next != self.level).then(|| {
            self.level = next;
            next
        })
    }
}

impl Node {
    pub(super) fn on_pressure(&mut self, s: PressureSnapshot) {
        if let Some(level) = self.pressure.update(s) {
            self.trace(Record::Pressure { level });
            if level < Backpressure::Reject {
                self.sched.mark_all_dirty(self.peers.keys().copied());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(x: f32) -> PressureSnapshot {
        PressureSnapshot {
            disk: x,
            ..PressureSnapshot::default()
        }
    }

    #[test]
    fn levels_rise_at_once_and_fall_with_hysteresis() {
        let mut p = Pressure::default();
        assert_eq!(p.update(load(0.5)), None);
        assert_eq!(p.update(load(0.85)), Some(Backpressure::Batch));
        assert_eq!(p.update(load(0.75)), None, "0.75 is not 0.1 below 0.8");
        assert_eq!(p.update(load(0.69)), Some(Backpressure::Throttle));
        assert_eq!(p.update(load(0.99)), Some(Backpressure::Reject));
        assert_eq!(p.update(load(0.0)), Some(Backpressure::None));
        assert!(!p.sheds_telemetry());
    }

    #[test]
    fn windows_shrink_by_level() {
        assert_eq!(Backpressure::None.window(16), 16);
        assert_eq!(Backpressure::Throttle.window(16), 8);
        assert_eq!(Backpressure::Batch.window(16), 4);
        assert_eq!(Backpressure::Batch.window(2), 1);
    }
}
