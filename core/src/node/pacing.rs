//! Rate pacing: token buckets for [`Limits::max_upload_rate`](super::Limits::max_upload_rate)
//! and [`Limits::max_download_rate`](super::Limits::max_download_rate), and the download pace
//! the node learns from what it receives ([`Limits::learned_pace`](super::Limits::learned_pace),
//! [`RateEstimator`]). The node paces what it hands out to serve, and what it requests, so a
//! rate limit shows up as fewer units in flight (windows that shrink), not as requests that
//! time out at the peer.

use super::timers::Timer;
use super::{LearnedPace, Node};
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

/// Learns the rate at which the node receives, and the pace to request at
/// ([`LearnedPace`]). Only its receive side is measured: what arrives is what the downlink and
/// the uploaders together could give, so pacing above it by a margin keeps the requests ahead
/// of the downlink without queueing seconds of them behind it.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct RateEstimator {
    /// Start of the current window (the first arrival after the previous window closed).
    window_start: Option<Timestamp>,
    window_bytes: u64,
    /// Highest rate of a closed window, bytes per second.
    peak: u64,
    /// Closed windows in a row without growth.
    flat_windows: u32,
}

impl RateEstimator {
    /// Counts `bytes` received at `now`. When this closes a window, returns the pace to request
    /// at from now on, in bytes per second.
    pub(crate) fn observe(&mut self, bytes: u64, now: Timestamp, cfg: &LearnedPace) -> Option<u64> {
        let start = *self.window_start.get_or_insert(now);
        self.window_bytes = self.window_bytes.saturating_add(bytes);
        let elapsed = now.since(start);
        if elapsed < cfg.window || elapsed.is_zero() {
            return None;
        }
        let rate = u128::from(self.window_bytes) * US / elapsed.as_micros();
        let rate = u64::try_from(rate).unwrap_or(u64::MAX);
        self.window_start = Some(now);
        self.window_bytes = 0;
        let steady = self.flat_windows >= cfg.growth_windows;
        let threshold = if steady {
            cfg.probe_threshold
        } else {
            cfg.growth_threshold
        };
        if rate as f64 > self.peak as f64 * threshold {
            self.flat_windows = 0;
        } else {
            self.flat_windows = self.flat_windows.saturating_add(1);
        }
        self.peak = self.peak.max(rate);
        let gain = if self.flat_windows < cfg.growth_windows {
            cfg.growth_gain
        } else {
            cfg.steady_gain
        };
        // At least one unit per window: a pace of zero would never learn again.
        let floor = T1_SIZE * US as u64 / (cfg.window.as_micros().max(1) as u64);
        Some(((self.peak as f64 * gain) as u64).max(floor))
    }

    /// The highest rate seen over a window, bytes per second (0 before the first window).
    #[cfg(test)]
    pub(crate) fn peak(&self) -> u64 {
        self.peak
    }
}

/// The node's buckets, built from its limits, and what it has learned of its download rate.
#[derive(Debug, Default)]
pub(crate) struct Pacing {
    pub(crate) upload: Option<TokenBucket>,
    pub(crate) download: Option<TokenBucket>,
    /// The learned pace's bucket; requests wait for both download buckets.
    learned: Option<TokenBucket>,
    estimator: RateEstimator,
}

impl Pacing {
    pub(crate) fn new(upload: Option<u64>, download: Option<u64>, now: Timestamp) -> Self {
        Pacing {
            upload: upload.map(|r| TokenBucket::new(r, now)),
            download: download.map(|r| TokenBucket::new(r, now)),
            ..Pacing::default()
        }
    }

    /// `bytes` of a unit arrived: the estimator learns, and the learned bucket follows it.
    /// Without a [`LearnedPace`], nothing is learned and the learned bucket is dropped.
    pub(crate) fn received(&mut self, bytes: u64, now: Timestamp, cfg: Option<&LearnedPace>) {
        let Some(cfg) = cfg else {
            self.learned = None;
            return;
        };
        if let Some(rate) = self.estimator.observe(bytes, now, cfg) {
            self.learned = Some(match &self.learned {
                Some(b) => b.with_rate(rate),
                None => TokenBucket::new(rate, now),
            });
        }
    }

    /// The download buckets that pace requests now.
    fn download_buckets(&mut self) -> impl Iterator<Item = &mut TokenBucket> {
        self.download.iter_mut().chain(self.learned.iter_mut())
    }

    /// Units that may be requested whatever the learned pace, with `in_flight` bytes requested
    /// and not yet answered: what keeps [`LearnedPace::free_queue`] of the peak rate in flight.
    fn free_units(&self, in_flight: u64, cfg: Option<&LearnedPace>) -> u64 {
        let Some(cfg) = cfg else { return 0 };
        let free = u128::from(self.estimator.peak) * cfg.free_queue.as_micros() / US;
        let free = u64::try_from(free).unwrap_or(u64::MAX);
        free.saturating_sub(in_flight) / T1_SIZE
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

    /// Units the download paces (the configured limit and the learned pace) allow to request
    /// now (`u64::MAX` without either); when none, a wake-up of the starved peers is armed for
    /// when one may be.
    pub(super) fn download_allowance(&mut self) -> u64 {
        let now = self.now;
        let in_flight = u64::from(self.requests.active()) * T1_SIZE;
        let free = self
            .pacing
            .free_units(in_flight, self.cfg.limits.learned_pace.as_ref());
        let mut allowed = u64::MAX;
        let mut ready_at = None;
        let Pacing {
            download, learned, ..
        } = &mut self.pacing;
        // Each bucket with the units it allows whatever its tokens: the configured limit none,
        // the learned pace its free queue.
        let configured = download.iter_mut().map(|b| (b, 0));
        for (b, floor) in configured.chain(learned.iter_mut().map(|b| (b, free))) {
            let n = b.units_available(T1_SIZE, now).max(floor);
            if n == 0 {
                if let Err(at) = b.clone().take(T1_SIZE, now) {
                    ready_at = ready_at.max(Some(at));
                }
            }
            allowed = allowed.min(n);
        }
        if let Some(at) = ready_at.filter(|_| allowed == 0) {
            self.timers.arm_once(at, Timer::DownloadTokens);
        }
        allowed
    }

    /// `units` were requested: their bytes leave the download buckets. A batch the learned
    /// bucket cannot cover (allowed by the free queue) takes nothing from it, so requests within
    /// the free queue do not hold back those beyond it.
    pub(super) fn download_spent(&mut self, units: usize) {
        let now = self.now;
        for b in self.pacing.download_buckets() {
            let _ = b.take(units as u64 * T1_SIZE, now);
        }
    }

    /// A unit of `bytes` arrived (whether wanted or not: the downlink carried it).
    pub(super) fn download_received(&mut self, bytes: u64) {
        let now = self.now;
        let cfg = self.cfg.limits.learned_pace.as_ref();
        self.pacing.received(bytes, now, cfg);
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

    /// Feeds `units` evenly over `ms` from `from`; returns the last pace announced.
    fn feed(e: &mut RateEstimator, from: u64, ms: u64, units: u64) -> Option<u64> {
        let cfg = LearnedPace::default();
        let mut last = None;
        for i in 1..=units {
            let at = Timestamp::from_micros(from * 1000 + i * ms * 1000 / units);
            last = e.observe(T1_SIZE, at, &cfg).or(last);
        }
        last
    }

    const MIB: u64 = 1 << 20;

    fn steady(peak: u64) -> u64 {
        (peak as f64 * 1.1) as u64
    }

    #[test]
    fn the_first_window_sets_the_peak_and_the_pace_doubles_it_while_it_grows() {
        let mut e = RateEstimator::default();
        assert_eq!(e.observe(T1_SIZE, t(0), &LearnedPace::default()), None);
        // 16 units in the next 250 ms, 17 in the window (the first unit opened it).
        let pace = feed(&mut e, 0, 250, 16).expect("the window closed");
        assert_eq!(e.peak(), 17 * T1_SIZE * 4);
        assert_eq!(pace, 2 * e.peak(), "slow start: twice the peak");
        // Doubling each window keeps the slow start going.
        let pace = feed(&mut e, 250, 250, 34).unwrap();
        assert_eq!(e.peak(), 34 * T1_SIZE * 4);
        assert_eq!(pace, 2 * e.peak());
    }

    #[test]
    fn two_windows_without_growth_end_the_slow_start_and_a_probe_restarts_it() {
        let mut e = RateEstimator::default();
        e.observe(T1_SIZE, t(0), &LearnedPace::default());
        feed(&mut e, 0, 250, 40); // 10 MiB/s
        let peak = e.peak();
        // +10 % (under the 25 % threshold): still growing for one window, then steady.
        assert_eq!(feed(&mut e, 250, 250, 44), Some(2 * e.peak()));
        assert_eq!(feed(&mut e, 500, 250, 44), Some(steady(e.peak())));
        assert!(e.peak() > peak);
        // A slower window: the peak stays, and so does the steady pace.
        assert_eq!(feed(&mut e, 750, 250, 10), Some(steady(e.peak())));
        // A window 8 % above the peak: the requests paced at 1.1 × came back, the pace was the
        // limit (a faster peer), so the slow start begins again.
        assert_eq!(feed(&mut e, 1000, 250, 48), Some(2 * e.peak()));
        assert_eq!(e.peak(), 48 * T1_SIZE * 4);
    }

    #[test]
    fn a_link_at_its_limit_stays_steady() {
        let mut e = RateEstimator::default();
        e.observe(T1_SIZE, t(0), &LearnedPace::default());
        feed(&mut e, 0, 250, 40);
        feed(&mut e, 250, 250, 41);
        feed(&mut e, 500, 250, 41);
        let peak = e.peak();
        // The downlink gives its 41 units a window whatever is asked: the pace stays 1.1 ×,
        // and a window 2.4 % above (a burst) does not restart the growth.
        for i in 0..20 {
            let units = if i % 5 == 4 { 42 } else { 41 };
            let pace = feed(&mut e, 750 + i * 250, 250, units).unwrap();
            assert_eq!(pace, steady(e.peak()));
        }
        assert!(e.peak() <= peak * 103 / 100);
    }

    #[test]
    fn a_trickle_after_a_long_silence_still_paces_at_a_unit_per_window() {
        let mut e = RateEstimator::default();
        let cfg = LearnedPace::default();
        e.observe(T1_SIZE, t(0), &cfg);
        let pace = e.observe(T1_SIZE, t(600_000), &cfg).expect("closed");
        assert_eq!(
            pace,
            4 * T1_SIZE,
            "one unit per 250 ms, not 2 units in ten minutes"
        );
    }

    #[test]
    fn requests_follow_the_learned_pace_and_the_configured_limit_both() {
        let cfg = LearnedPace::default();
        let mut p = Pacing::new(None, Some(4 * MIB), t(0));
        p.received(T1_SIZE, t(0), Some(&cfg));
        for i in 1..=16 {
            p.received(T1_SIZE, t(i * 250 / 16), Some(&cfg));
        }
        // Learned: 2 × 4.25 MiB/s; configured: 4 MiB/s. Both buckets pace.
        let rates: Vec<u64> = p.download_buckets().map(|b| b.rate).collect();
        assert_eq!(rates, vec![4 * MIB, 2 * 17 * T1_SIZE * 4]);
        // Without a learned pace configured, nothing is learned and only the limit paces.
        p.received(T1_SIZE, t(300), None);
        assert_eq!(p.download_buckets().count(), 1);
    }

    #[test]
    fn half_a_second_of_the_peak_in_flight_is_never_paced() {
        let cfg = LearnedPace::default();
        let mut p = Pacing::new(None, None, t(0));
        assert_eq!(p.free_units(0, Some(&cfg)), 0, "nothing learned yet");
        p.received(T1_SIZE, t(0), Some(&cfg));
        for i in 1..=39 {
            p.received(T1_SIZE, t(i * 250 / 39), Some(&cfg));
        }
        // 40 units in 250 ms: 160 units/s, 80 of them in 500 ms.
        assert_eq!(p.free_units(0, Some(&cfg)), 80);
        assert_eq!(p.free_units(30 * T1_SIZE, Some(&cfg)), 50);
        assert_eq!(p.free_units(100 * T1_SIZE, Some(&cfg)), 0);
        assert_eq!(
            p.free_units(0, None),
            0,
            "no learned pace, nothing free of it"
        );
    }
}
