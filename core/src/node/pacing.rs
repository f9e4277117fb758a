//! Rate pacing: token buckets for [`Limits::max_upload_rate`](super::Limits::max_upload_rate)
//! and [`Limits::max_download_rate`](super::Limits::max_download_rate). The node paces what it
//! hands out to serve, and what it requests, so a rate limit shows up as fewer units in flight
//! (windows that shrink), not as requests that time out at the peer.

use super::timers::Timer;
use super::Node;
use crate::tiers::T1_SIZE;
use crate::time::Timestamp;

/// Microseconds per second: tokens are kept in byte·µs so that refills are exact integers.
const US: u128 = 1_000_000;

/// A bucket holds at most this much time's worth of its rate (or two units, if more): short
/// enough that a 10 s transfer keeps within a few percent of its rate, long enough to keep a
/// couple of units in flight.
const BURST_US: u128 = 100_000;

/// Bytes per second, with a burst allowance.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    rate: u64,
    /// Byte·µs available (bytes × 10^6).
    tokens: u128,
    capacity: u128,
    at: Timestamp,
}

impl TokenBucket {
    /// A full bucket for `rate` bytes per second (at least 1).
    pub(crate) fn new(rate: u64, now: Timestamp) -> Self {
        let rate = rate.max(1);
        let capacity = (u128::from(rate) * BURST_US).max(2 * u128::from(T1_SIZE) * US);
        TokenBucket {
            rate,
            tokens: capacity,
            capacity,
            at: now,
        }
    }

    /// The same bucket at a new rate (tokens kept, within the new capacity).
    pub(crate) fn with_rate(&self, rate: u64) -> Self {
        let mut b = TokenBucket::new(rate, self.at);
        b.tokens = self.tokens.min(b.capacity);
        b
    }

    fn refill(&mut self, now: Timestamp) {
        let dt = u128::from(now.since(self.at).as_micros() as u64);
        self.tokens = (self.tokens + u128::from(self.rate) * dt).min(self.capacity);
        self.at = self.at.max(now);
    }

    /// Takes `bytes` if they are there at `now`; otherwise returns when they will be.
    pub(crate) fn take(&mut self, bytes: u64, now: Timestamp) -> Result<(), Timestamp> {
        self.refill(now);
        let need = u128::from(bytes) * US;
        if self.tokens >= need {
            self.tokens -= need;
            Ok(())
        } else {
            let wait = (need - self.tokens).div_ceil(u128::from(self.rate));
            Err(now.add(core::time::Duration::from_micros(wait as u64)))
        }
    }

    /// Whole units of `unit` bytes available at `now`, without taking them.
    pub(crate) fn units_available(&mut self, unit: u64, now: Timestamp) -> u64 {
        self.refill(now);
        (self.tokens / (u128::from(unit) * US)) as u64
    }
}

/// The node's two buckets, built from its limits.
#[derive(Debug, Default)]
pub(crate) struct Pacing {
    pub(crate) upload: Option<TokenBucket>,
    pub(crate) download: Option<TokenBucket>,
}

impl Pacing {
    pub(crate) fn new(upload: Option<u64>, download: Option<u64>, now: Timestamp) -> Self {
        Pacing {
            upload: upload.map(|r| TokenBucket::new(r, now)),
            download: download.map(|r| TokenBucket::new(r, now)),
        }
    }

    /// New rates (a [`Reconfigure`](super::Input::Reconfigure)): buckets keep their tokens.
    pub(crate) fn reconfigure(
        &mut self,
        upload: Option<u64>,
        download: Option<u64>,
        now: Timestamp,
    ) {
        let update = |b: &Option<TokenBucket>, rate: Option<u64>| {
            rate.map(|r| match b {
                Some(b) => b.with_rate(r),
                None => TokenBucket::new(r, now),
            })
        };
        self.upload = update(&self.upload, upload);
        self.download = update(&self.download, download);
    }
}

impl Node {
    /// Whether a unit may be handed out to serve now; if not, a wake-up is armed for when it
    /// may.
    pub(super) fn upload_allows(&mut self, bytes: u64) -> bool {
        let now = self.now;
        let Some(b) = self.pacing.upload.as_mut() else {
            return true;
        };
        match b.take(bytes, now) {
            Ok(()) => true,
            Err(at) => {
                self.timers.arm_once(at, Timer::UploadTokens);
                false
            }
        }
    }

    /// Units the download pace allows to request now (`u64::MAX` without a limit); when none,
    /// a wake-up of the starved peers is armed for when one may be.
    pub(super) fn download_allowance(&mut self) -> u64 {
        let now = self.now;
        let Some(b) = self.pacing.download.as_mut() else {
            return u64::MAX;
        };
        let n = b.units_available(T1_SIZE, now);
        if n == 0 {
            if let Err(at) = b.clone().take(T1_SIZE, now) {
                self.timers.arm_once(at, Timer::DownloadTokens);
            }
        }
        n
    }

    /// `units` were requested: their bytes leave the download bucket.
    pub(super) fn download_spent(&mut self, units: usize) {
        let now = self.now;
        if let Some(b) = self.pacing.download.as_mut() {
            let _ = b.take(units as u64 * T1_SIZE, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> Timestamp {
        Timestamp::from_micros(ms * 1000)
    }

    #[test]
    fn a_bucket_paces_to_its_rate_after_its_burst() {
        // 1 MiB/s: the burst is two units (128 KiB > 100 ms of rate).
        let mut b = TokenBucket::new(1 << 20, t(0));
        assert!(b.take(T1_SIZE, t(0)).is_ok());
        assert!(b.take(T1_SIZE, t(0)).is_ok());
        let next = b.take(T1_SIZE, t(0)).unwrap_err();
        assert_eq!(next, Timestamp::from_micros(62_500), "64 KiB at 1 MiB/s");
        assert!(b.take(T1_SIZE, next).is_ok());
        // Over 10 s exactly rate × time (plus the burst) goes out.
        let mut b = TokenBucket::new(1 << 20, t(0));
        let (mut now, mut sent) = (t(0), 0u64);
        while now <= t(10_000) {
            match b.take(T1_SIZE, now) {
                Ok(()) => sent += T1_SIZE,
                Err(at) => now = at,
            }
        }
        assert_eq!(sent, 10 * (1 << 20) + 2 * T1_SIZE);
    }

    #[test]
    fn idle_time_refills_only_up_to_the_burst() {
        let mut b = TokenBucket::new(1 << 20, t(0));
        assert_eq!(b.units_available(T1_SIZE, t(60_000)), 2);
        let fast = TokenBucket::new(100 << 20, t(0)).with_rate(200 << 20);
        assert_eq!(
            fast.clone().units_available(T1_SIZE, t(0)),
            160,
            "100 ms of 100 MiB/s"
        );
    }
}
