//! Time as an input: a timestamp the embedder constructs (the simulator freely, the adapters
//! from a monotonic clock). The core never reads a clock.

use core::time::Duration;

/// Microseconds since an epoch chosen by the embedder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The epoch.
    pub const ZERO: Timestamp = Timestamp(0);

    /// From microseconds.
    pub const fn from_micros(us: u64) -> Self {
        Timestamp(us)
    }

    /// Microseconds since the epoch.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// This time plus `d`, saturating.
    #[allow(clippy::should_implement_trait)] // saturating, and usable without importing `Add`
    pub fn add(self, d: Duration) -> Timestamp {
        Timestamp(
            self.0
                .saturating_add(d.as_micros().min(u64::MAX as u128) as u64),
        )
    }

    /// Time elapsed since `earlier` (zero if `earlier` is later).
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

/// Serde for a [`Duration`] as whole microseconds (`u64`), the unit every timestamp here uses:
/// `#[serde(with = "tierswarm_core::time::micros")]`.
pub mod micros {
    use core::time::Duration;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `d` as microseconds (saturating at `u64::MAX`).
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }

    /// Reads microseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_micros)
    }
}
