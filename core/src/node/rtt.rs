//! Round-trip estimation (RFC 6298): what every per-peer timeout is sized from.

use core::time::Duration;

/// Timeouts double per loss up to 2^this (64×): beyond that the caller's maximum governs.
const MAX_BACKOFF_DOUBLINGS: u32 = 6;

/// Smoothed round-trip estimate (RFC 6298) with exponential backoff on timeouts.
#[derive(Debug, Clone)]
pub struct RttEstimator {
    srtt: Option<Duration>,
    rttvar: Duration,
    min_rtt: Option<Duration>,
    backoff: u32,
}

impl RttEstimator {
    pub(crate) fn new() -> Self {
        RttEstimator {
            srtt: None,
            rttvar: Duration::ZERO,
            min_rtt: None,
            backoff: 0,
        }
    }

    /// Feeds one sample; clears the backoff (the peer answered).
    pub fn sample(&mut self, rtt: Duration) {
        self.min_rtt = Some(self.min_rtt.map_or(rtt, |m| m.min(rtt)));
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(s) => {
                // RFC 6298 §2.3: beta = 1/4, alpha = 1/8.
                let diff = s.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + diff) / 4;
                self.srtt = Some((s * 7 + rtt) / 8);
            }
        }
        self.backoff = 0;
    }

    /// A timeout: the next timeout doubles (capped by the caller's maximum).
    pub fn on_timeout(&mut self) {
        self.backoff = (self.backoff + 1).min(MAX_BACKOFF_DOUBLINGS);
    }

    /// Smoothed RTT, if sampled.
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// Smallest RTT seen, if sampled.
    pub fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt
    }

    /// Retransmission timeout: `srtt + 4·rttvar` (RFC 6298 §2.3, K = 4), clamped, doubled per
    /// loss not answered since.
    pub fn rto(&self, initial: Duration, min: Duration, max: Duration) -> Duration {
        let base = match self.srtt {
            None => initial,
            Some(s) => (s + self.rttvar * 4).clamp(min, max),
        };
        (base * (1u32 << self.backoff)).min(max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rto_follows_samples_and_backs_off() {
        let (i, lo, hi) = (
            Duration::from_secs(3),
            Duration::from_millis(200),
            Duration::from_secs(60),
        );
        let mut r = RttEstimator::new();
        assert_eq!(r.rto(i, lo, hi), i);
        r.sample(Duration::from_millis(100));
        assert_eq!(r.rto(i, lo, hi), Duration::from_millis(300));
        r.on_timeout();
        assert_eq!(r.rto(i, lo, hi), Duration::from_millis(600));
        for _ in 0..10 {
            r.on_timeout();
        }
        assert!(r.rto(i, lo, hi) <= hi);
        r.sample(Duration::from_millis(100));
        assert!(r.rto(i, lo, hi) < Duration::from_secs(1));
    }
}
