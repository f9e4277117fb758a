//! Virtual time: whole microseconds since the start of the run.
//!
//! Integer microseconds keep every computation exact and identical on every platform; a `u64`
//! of them covers more than half a million years. Arithmetic saturates rather than panicking.

use std::fmt;
use std::time::Duration;

/// An instant of simulated time, in microseconds since the run started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SimTime(u64);

impl SimTime {
    /// The start of the run.
    pub const ZERO: SimTime = SimTime(0);
    /// The end of time; nothing is ever scheduled after it.
    pub const MAX: SimTime = SimTime(u64::MAX);

    /// The instant `micros` microseconds after the start.
    pub const fn from_micros(micros: u64) -> SimTime {
        SimTime(micros)
    }

    /// Microseconds since the start.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// The instant `d` after the start, rounded up to a whole microsecond.
    pub fn from_duration(d: Duration) -> SimTime {
        SimTime(micros_ceil(d))
    }

    /// Seconds since the start, for reports.
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e6
    }

    /// `micros` microseconds later (saturating).
    pub const fn add_micros(self, micros: u64) -> SimTime {
        SimTime(self.0.saturating_add(micros))
    }

    /// Microseconds from `earlier` to `self`; zero if `earlier` is later.
    pub const fn micros_since(self, earlier: SimTime) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for SimTime {
    /// Seconds with six decimals, e.g. `12.000250s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}s", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

/// The same instant as the core's timestamp (both are microseconds since the run's epoch).
impl From<SimTime> for tierswarm_core::Timestamp {
    fn from(t: SimTime) -> Self {
        tierswarm_core::Timestamp::from_micros(t.0)
    }
}

/// The same instant as a simulator time.
impl From<tierswarm_core::Timestamp> for SimTime {
    fn from(t: tierswarm_core::Timestamp) -> Self {
        SimTime(t.as_micros())
    }
}

impl std::ops::Add<Duration> for SimTime {
    type Output = SimTime;

    /// `d` later, rounded up to a whole microsecond (saturating).
    fn add(self, d: Duration) -> SimTime {
        self.add_micros(micros_ceil(d))
    }
}

/// `d` in whole microseconds, rounded up (saturating at `u64::MAX`).
pub fn micros_ceil(d: Duration) -> u64 {
    let micros = d.as_nanos().div_ceil(1_000);
    u64::try_from(micros).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_round_up_and_saturate() {
        assert_eq!(
            SimTime::from_duration(Duration::from_nanos(1)).as_micros(),
            1
        );
        assert_eq!(
            SimTime::from_duration(Duration::from_millis(20)).as_micros(),
            20_000
        );
        assert_eq!(SimTime::from_duration(Duration::MAX), SimTime::MAX);
        assert_eq!(SimTime::MAX.add_micros(5), SimTime::MAX);
        assert_eq!(
            SimTime::from_micros(3).micros_since(SimTime::from_micros(5)),
            0
        );
        assert_eq!(SimTime::from_micros(1_500_000).as_secs_f64(), 1.5);
        assert_eq!(SimTime::from_micros(12_000_250).to_string(), "12.000250s");
        let core: tierswarm_core::Timestamp = SimTime::from_micros(9).into();
        assert_eq!(SimTime::from(core), SimTime::from_micros(9));
        assert_eq!(
            SimTime::ZERO + Duration::from_micros(7),
            SimTime::from_micros(7)
        );
    }
}
