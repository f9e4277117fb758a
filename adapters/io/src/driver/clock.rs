//! Monotonic time for the core: microseconds since the session started.

use std::time::{Duration, Instant};

use tierswarm_core::Timestamp;

/// A monotonic clock. The session turns its readings into [`Timestamp`]s relative to its start.
pub trait Clock: Send {
    /// The current instant.
    fn now(&self) -> Instant;
}

/// [`Instant::now`].
#[derive(Debug, Clone, Copy, Default)]
pub struct MonotonicClock;

impl Clock for MonotonicClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// Converts instants to timestamps relative to an epoch and back.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Epoch(pub Instant);

impl Epoch {
    /// Microseconds from the epoch to `at` (zero before it, saturating far after it).
    pub fn stamp(&self, at: Instant) -> Timestamp {
        let us = at.saturating_duration_since(self.0).as_micros();
        Timestamp::from_micros(u64::try_from(us).unwrap_or(u64::MAX))
    }

    /// The instant of `t` (far-future timestamps are clamped to about a year ahead).
    pub fn instant(&self, t: Timestamp) -> Instant {
        let d = Duration::from_micros(t.as_micros().min(365 * 24 * 3600 * 1_000_000));
        self.0 + d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let start = Instant::now();
        let e = Epoch(start);
        assert_eq!(e.stamp(start), Timestamp::ZERO);
        let later = start + Duration::from_millis(1500);
        assert_eq!(e.stamp(later), Timestamp::from_micros(1_500_000));
        assert_eq!(e.instant(e.stamp(later)), later);
        assert!(e.instant(Timestamp::from_micros(u64::MAX)) > later);
    }

    #[test]
    fn never_goes_negative() {
        // An instant before the epoch (a reading taken just before the session started, or
        // handed over by another clock) is time zero, not a wrapped or mirrored value.
        let before = Instant::now();
        let e = Epoch(before + Duration::from_secs(10));
        assert_eq!(e.stamp(before), Timestamp::ZERO);
        assert_eq!(
            e.stamp(before + Duration::from_micros(9_999_999)),
            Timestamp::ZERO
        );
        assert_eq!(
            e.stamp(before + Duration::from_micros(10_000_001)),
            Timestamp::from_micros(1)
        );
    }
}
