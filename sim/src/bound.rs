//! Lower bounds on the time to distribute a file (design.md §7), all measured from the first join
//! (the origin of `makespan_s`).
//!
//! For a file of `F` bytes, seeders with total upload `u_s`, and `N` leechers with uploads
//! `u_i`, downloads `d_i`, joining at `t_i` (seconds after the first peer joined):
//!
//! ```text
//! T_KR    = max( F / u_s ,  F / min d_i ,  N·F / (u_s + Σ u_i) )      Kumar–Ross, all present at 0
//! T_joins = max over leechers of ( t_i + F / d_i )
//! bound   = max( T_KR, T_joins )                                     the report's `bound_s`
//! ```
//!
//! No schedule can do better than `T_KR` even if every peer were there from the start (the
//! seeders must upload every byte at least once, the slowest leecher must download every byte,
//! and `N·F` bytes must be uploaded by someone); staggered joins only remove options, so `T_KR`
//! still holds. No leecher can finish before it joins plus the file over its download rate.
//! Several seeders are treated as one seeder with their summed upload.
//!
//! [`fluid_bound`] is a tighter bound that is also valid (a proposal, not in the report): it
//! integrates the capacity actually present over time instead of assuming everyone is present.

use std::time::Duration;

use crate::scenario::{PeerSpec, Role};

/// The Kumar–Ross bound in seconds, from the raw quantities (bytes and bytes per second).
///
/// `0.0` when there are no leechers; `f64::INFINITY` when a needed capacity is zero.
pub fn kumar_ross(
    file_bytes: u64,
    seeder_upload_bps: u64,
    leechers: u64,
    leecher_upload_sum_bps: u64,
    slowest_download_bps: u64,
) -> f64 {
    if leechers == 0 || file_bytes == 0 {
        return 0.0;
    }
    let f = file_bytes as f64;
    let seed = per(f, seeder_upload_bps);
    let download = per(f, slowest_download_bps);
    let total = per(
        leechers as f64 * f,
        seeder_upload_bps.saturating_add(leecher_upload_sum_bps),
    );
    seed.max(download).max(total)
}

/// `bytes / rate` seconds; infinite for a zero rate.
fn per(bytes: f64, rate: u64) -> f64 {
    if rate == 0 {
        f64::INFINITY
    } else {
        bytes / rate as f64
    }
}

/// The Kumar–Ross bound in seconds for `peers` sharing a file of `file_bytes`, as if every peer
/// were present from the start.
pub fn kumar_ross_bound(file_bytes: u64, peers: &[PeerSpec]) -> f64 {
    let seeders = peers.iter().filter(|p| p.role == Role::Seeder);
    let leechers: Vec<&PeerSpec> = peers.iter().filter(|p| p.role == Role::Leecher).collect();
    kumar_ross(
        file_bytes,
        seeders.map(|p| p.upload_bps).fold(0, u64::saturating_add),
        leechers.len() as u64,
        leechers
            .iter()
            .map(|p| p.upload_bps)
            .fold(0, u64::saturating_add),
        leechers.iter().map(|p| p.download_bps).min().unwrap_or(0),
    )
}

/// When the first peer joins: the origin of `makespan_s` and of every bound here.
pub fn first_join(peers: &[PeerSpec]) -> Duration {
    peers
        .iter()
        .map(|p| p.join_at)
        .min()
        .unwrap_or(Duration::ZERO)
}

/// The bounds the report gives, in seconds from the first join.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    /// Kumar–Ross with every peer present from the start (`bound_kr_s`).
    pub kumar_ross_s: f64,
    /// The latest any leecher can finish at full download rate: the largest
    /// `join + file / download` over leechers.
    pub joins_s: f64,
}

impl Bounds {
    /// The bounds for `peers` sharing a file of `file_bytes`.
    pub fn of(file_bytes: u64, peers: &[PeerSpec]) -> Bounds {
        let origin = first_join(peers);
        let joins_s = peers
            .iter()
            .filter(|p| p.role == Role::Leecher)
            .map(|p| (p.join_at - origin).as_secs_f64() + per(file_bytes as f64, p.download_bps))
            .fold(0.0, f64::max);
        Bounds {
            kumar_ross_s: kumar_ross_bound(file_bytes, peers),
            joins_s,
        }
    }

    /// The report's `bound_s`: the larger of the two.
    pub fn bound_s(&self) -> f64 {
        self.kumar_ross_s.max(self.joins_s)
    }
}

/// A tighter valid lower bound on the makespan (seconds from the first join), for staggered joins
/// and heterogeneous capacities. It is the largest of three necessary conditions on a schedule
/// that ends at `T`, each with the capacity that is actually present at each moment (`U(t)`, the
/// summed upload of the peers joined by `t`, counted as zero before the first seeder joins since
/// nobody holds any data until then; `D(t)`, the summed download of the leechers joined by `t`):
///
/// - the seeders upload every byte at least once: `∫₀ᵀ U_seeders ≥ F`;
/// - leecher `i` receives `F` bytes, at most at its download rate and at most at what the
///   others can upload: `∫ from max(t_i, first seeder) to T of min(d_i, U(t) − u_i) ≥ F`;
/// - the leechers receive `N·F` bytes in all: `∫₀ᵀ min(U(t), D(t)) ≥ N·F`.
///
/// Each of these is implied by a real schedule, so the bound is valid; each dominates the matching
/// term of [`Bounds`], so it is never below `bound_s`. `O(P log P)` for `P` peers.
pub fn fluid_bound(file_bytes: u64, peers: &[PeerSpec]) -> f64 {
    let leechers: Vec<&PeerSpec> = peers.iter().filter(|p| p.role == Role::Leecher).collect();
    if leechers.is_empty() || file_bytes == 0 {
        return 0.0;
    }
    let origin = first_join(peers);
    let at = |p: &PeerSpec| (p.join_at - origin).as_secs_f64();
    let Some(first_seeder) = peers
        .iter()
        .filter(|p| p.role == Role::Seeder)
        .map(at)
        .min_by(f64::total_cmp)
    else {
        return f64::INFINITY;
    };
    let f = file_bytes as f64;
    let mut sorted: Vec<&PeerSpec> = peers.iter().collect();
    sorted.sort_by_key(|p| p.join_at);

    let seeders = Staircase::new(
        sorted
            .iter()
            .filter(|p| p.role == Role::Seeder)
            .map(|p| (at(p), p.upload_bps as f64, 0.0)),
        first_seeder,
    );
    let seeder_term = seeders.time_to_reach(first_seeder, f, 0.0, f64::INFINITY);

    let all = Staircase::new(
        sorted.iter().map(|p| (at(p), p.upload_bps as f64, 0.0)),
        first_seeder,
    );
    let leecher_term = leechers
        .iter()
        .map(|p| {
            all.time_to_reach(
                at(p).max(first_seeder),
                f,
                p.upload_bps as f64,
                p.download_bps as f64,
            )
        })
        .fold(0.0, f64::max);

    let delivered = Staircase::new(
        sorted.iter().map(|p| {
            let down = if p.role == Role::Leecher {
                p.download_bps as f64
            } else {
                0.0
            };
            (at(p), p.upload_bps as f64, down)
        }),
        first_seeder,
    );
    let total_term = delivered.time_to_reach(0.0, leechers.len() as f64 * f, 0.0, f64::INFINITY);

    seeder_term.max(leecher_term).max(total_term)
}

/// A nondecreasing step function of time and its running integral: `rates[k]` holds on
/// `times[k]..times[k + 1]` (0 before `times[0]`), `prefix[k]` is the integral up to `times[k]`.
struct Staircase {
    times: Vec<f64>,
    rates: Vec<f64>,
    prefix: Vec<f64>,
}

impl Staircase {
    /// From joins `(time, upload, download)` sorted by time: the rate at `t` is the smaller of
    /// the summed uploads and (when any download is given) the summed downloads joined by `t`;
    /// uploads count only from `upload_from` on.
    fn new(joins: impl Iterator<Item = (f64, f64, f64)>, upload_from: f64) -> Staircase {
        let mut points: Vec<(f64, f64, f64)> = Vec::new(); // (time, upload sum, download sum)
        let (mut up, mut down, mut any_down) = (0.0, 0.0, false);
        let push = |t: f64, up: f64, down: f64, points: &mut Vec<(f64, f64, f64)>| match points
            .last_mut()
        {
            Some(last) if last.0 == t => (last.1, last.2) = (up, down),
            _ => points.push((t, up, down)),
        };
        let mut upload_started = false;
        for (t, u, d) in joins {
            if !upload_started && t > upload_from {
                push(upload_from, up, down, &mut points);
                upload_started = true;
            }
            up += u;
            down += d;
            any_down |= d > 0.0;
            push(t, up, down, &mut points);
        }
        if !upload_started {
            push(upload_from, up, down, &mut points);
        }
        let mut s = Staircase {
            times: Vec::with_capacity(points.len()),
            rates: Vec::with_capacity(points.len()),
            prefix: Vec::with_capacity(points.len()),
        };
        let mut integral = 0.0;
        for (t, up, down) in points {
            if let (Some(&t0), Some(&r0)) = (s.times.last(), s.rates.last()) {
                integral += r0 * (t - t0);
            }
            let up = if t >= upload_from { up } else { 0.0 };
            s.times.push(t);
            s.rates.push(if any_down { up.min(down) } else { up });
            s.prefix.push(integral);
        }
        s
    }

    /// The index of the step that holds at `t` (`None` before the first).
    fn step(&self, t: f64) -> Option<usize> {
        self.times.partition_point(|&x| x <= t).checked_sub(1)
    }

    /// `∫` from the first step to `t`.
    fn integral(&self, t: f64) -> f64 {
        self.step(t).map_or(0.0, |k| {
            self.prefix[k] + self.rates[k] * (t - self.times[k])
        })
    }

    /// The smallest `T ≥ from` with `∫ from..T of min(cap, rate(t) − offset) ≥ amount`, where
    /// `rate(t) ≥ offset` for `t ≥ from`; infinite if never.
    fn time_to_reach(&self, from: f64, amount: f64, offset: f64, cap: f64) -> f64 {
        if amount <= 0.0 {
            return from;
        }
        let base = self.integral(from);
        // Below the cap the integrand is rate − offset: h(T) = ∫ from..T of it, nondecreasing.
        let h = |t: f64| self.integral(t) - base - offset * (t - from);
        // From `capped_at` on (rates are nondecreasing) the integrand is the cap.
        let capped = self.rates.partition_point(|&r| r - offset < cap);
        let capped_at = self
            .times
            .get(capped)
            .map_or(f64::INFINITY, |&t| t.max(from));
        if capped_at.is_finite() && h(capped_at) < amount {
            return capped_at + (amount - h(capped_at)) / cap;
        }
        // Reached by capped_at: find the step in which h crosses `amount`.
        let start = self.step(from).map_or(0, |k| k + 1);
        let end = capped.clamp(start, self.times.len());
        let k = start + self.times[start..end].partition_point(|&t| h(t) < amount);
        let t0 = if k > start { self.times[k - 1] } else { from };
        let slope = self.step(t0).map_or(0.0, |j| self.rates[j]) - offset;
        if slope <= 0.0 {
            f64::INFINITY
        } else {
            t0 + (amount - h(t0)) / slope
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{Behaviour, Protocol, Scenario, Strategy};
    use proptest::prelude::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    /// A peer with rates in bytes per second and a join time in milliseconds.
    fn peer(id: usize, role: Role, up: u64, down: u64, join_ms: u64) -> PeerSpec {
        PeerSpec {
            id,
            group: usize::from(role == Role::Leecher),
            role,
            upload_bps: up,
            download_bps: down,
            latency: Duration::ZERO,
            protocol: Protocol::Hierarchical,
            join_at: Duration::from_millis(join_ms),
            behaviour: Behaviour::Honest,
        }
    }

    const MB: u64 = 1_000_000;

    #[test]
    fn each_term_can_dominate() {
        // Seeder-bound: F = 100 MB, u_s = 1 MB/s -> 100 s; d_min 10 MB/s -> 10 s;
        // 2·100 MB / (1 + 2·50) MB/s -> 1.98 s.
        assert!(close(kumar_ross(100 * MB, MB, 2, 100 * MB, 10 * MB), 100.0));
        // Download-bound: d_min = 0.5 MB/s -> 200 s.
        assert!(close(
            kumar_ross(100 * MB, 10 * MB, 2, 100 * MB, 500_000),
            200.0
        ));
        // Capacity-bound: 100 leechers, u_s 10 MB/s, Σu_i 100·1 MB/s:
        // 100·100 MB / 110 MB/s = 90.909… s (vs 10 s and 10 s).
        assert!(close(
            kumar_ross(100 * MB, 10 * MB, 100, 100 * MB, 10 * MB),
            10_000.0 / 110.0
        ));
    }

    #[test]
    fn degenerate_inputs() {
        assert_eq!(kumar_ross(1, 1, 0, 0, 0), 0.0);
        assert_eq!(kumar_ross(0, 1, 5, 0, 1), 0.0);
        assert_eq!(kumar_ross(1, 0, 1, 0, 1), f64::INFINITY);
        let none: [PeerSpec; 0] = [];
        assert_eq!(Bounds::of(MB, &none).bound_s(), 0.0);
        assert_eq!(fluid_bound(MB, &none), 0.0);
        // No seeder: nothing can ever be downloaded.
        let orphan = [peer(0, Role::Leecher, MB, MB, 0)];
        assert_eq!(fluid_bound(MB, &orphan), f64::INFINITY);
    }

    #[test]
    fn heterogeneous_staggered_join_dominates() {
        // F = 100 MB; seeder 100 MB/s up at 0; A: 10 MB/s down, joins at 0; B: 50 MB/s down,
        // joins at 9 s; both upload 10 MB/s.
        // KR: max(100/100, 100/10, 200/120) = 10 s. Joins: A 0 + 10 = 10 s, B 9 + 2 = 11 s.
        let peers = [
            peer(0, Role::Seeder, 100 * MB, 100 * MB, 0),
            peer(1, Role::Leecher, 10 * MB, 10 * MB, 0),
            peer(2, Role::Leecher, 10 * MB, 50 * MB, 9_000),
        ];
        let b = Bounds::of(100 * MB, &peers);
        assert!(close(b.kumar_ross_s, 10.0), "{b:?}");
        assert!(close(b.joins_s, 11.0), "{b:?}");
        assert!(close(b.bound_s(), 11.0));
        // The fluid bound agrees here: B can take its 50 MB/s from the seeder alone.
        assert!(close(fluid_bound(100 * MB, &peers), 11.0));
    }

    #[test]
    fn several_seeders_and_staggered_joins_capacity_dominates() {
        // Two seeders of 5 MB/s (summed: 10 MB/s); F = 100 MB; three leechers at 20 MB/s down,
        // 1 MB/s up, joining at 0, 1 and 2 s.
        // KR: max(100/10, 100/20, 300/13) = 23.0769… s; joins: 2 + 5 = 7 s.
        let peers = [
            peer(0, Role::Seeder, 5 * MB, MB, 0),
            peer(1, Role::Seeder, 5 * MB, MB, 0),
            peer(2, Role::Leecher, MB, 20 * MB, 0),
            peer(3, Role::Leecher, MB, 20 * MB, 1_000),
            peer(4, Role::Leecher, MB, 20 * MB, 2_000),
        ];
        let b = Bounds::of(100 * MB, &peers);
        assert!(close(b.kumar_ross_s, 300.0 / 13.0), "{b:?}");
        assert!(close(b.joins_s, 7.0), "{b:?}");
        assert!(close(b.bound_s(), 300.0 / 13.0));
        // Fluid: the capacity present is 11 MB/s on 0..1, 12 on 1..2, 13 from 2 s:
        // 11 + 12 + 13·(T − 2) = 300 → T = 2 + 277/13.
        assert!(close(fluid_bound(100 * MB, &peers), 2.0 + 277.0 / 13.0));
    }

    #[test]
    fn times_count_from_the_first_join() {
        // Everyone joins 10 s in; the second leecher 30 s after that. F = 60 MB at 6 MB/s down.
        let peers = [
            peer(0, Role::Seeder, 100 * MB, 100 * MB, 10_000),
            peer(1, Role::Leecher, 6 * MB, 6 * MB, 10_000),
            peer(2, Role::Leecher, 6 * MB, 6 * MB, 40_000),
        ];
        let b = Bounds::of(60 * MB, &peers);
        assert!(close(b.kumar_ross_s, 10.0));
        assert!(close(b.joins_s, 40.0), "{b:?}");
        assert!(close(fluid_bound(60 * MB, &peers), 40.0));
    }

    #[test]
    fn a_late_seeder_and_a_slow_seeder_tighten_the_fluid_bound() {
        // The leecher is there at 0, the seeder (2 MB/s up) only at 5 s; F = 20 MB, 10 MB/s down.
        // Contract bound: max(KR = max(10, 2, 20/3), joins = 2) = 10 s. Fluid: nothing before
        // 5 s, then at most 2 MB/s: 5 + 10 = 15 s.
        let peers = [
            peer(0, Role::Seeder, 2 * MB, MB, 5_000),
            peer(1, Role::Leecher, 4 * MB, 10 * MB, 0),
        ];
        assert!(close(Bounds::of(20 * MB, &peers).bound_s(), 10.0));
        assert!(close(fluid_bound(20 * MB, &peers), 15.0));
    }

    #[test]
    fn the_crowd_of_issue_11() {
        // 256 MiB; seeder 500 Mbit/s up; 300 leechers at 20 Mbit/s up, 100 Mbit/s down, joining
        // evenly over 0..30 s.
        let f = 256u64 << 20;
        let mut peers = vec![peer(0, Role::Seeder, 62_500_000, 125_000_000, 0)];
        for k in 0..300u64 {
            peers.push(peer(
                1 + k as usize,
                Role::Leecher,
                2_500_000,
                12_500_000,
                k * 30_000 / 299,
            ));
        }
        let b = Bounds::of(f, &peers);
        // KR: 300·F / (62.5 + 300·2.5) MB/s = 99.11 s; joins: 30 + F / 12.5 MB/s = 51.47 s.
        assert!(
            close(b.kumar_ross_s, 300.0 * f as f64 / 812_500_000.0),
            "{b:?}"
        );
        assert!(close(b.joins_s, 30.0 + f as f64 / 12_500_000.0), "{b:?}");
        assert!(close(b.bound_s(), b.kumar_ross_s));
        // Fluid: the crowd's upload arrives over 30 s, so 2.5 MB/s · Σ t_k of the capacity that
        // Kumar–Ross counts is not there; and while fewer than 7 leechers are in (n < 6.25), their
        // downloads (12.5 MB/s · n) cannot take all the upload (62.5 + 2.5 · n MB/s):
        // T = (300·F + 2.5 MB/s · Σ t_k + Σ_{n=1..6} (62.5 − 10·n) MB/s · (t_n − t_{n−1})) / 812.5 MB/s.
        let t = |k: u64| (k * 30_000 / 299) as f64 / 1e3;
        let joined_late: f64 = (0..300u64).map(t).sum();
        let idle: f64 = (1..=6u64)
            .map(|n| (62.5e6 - 10e6 * n as f64) * (t(n) - t(n - 1)))
            .sum();
        let expected = (300.0 * f as f64 + 2_500_000.0 * joined_late + idle) / 812_500_000.0;
        let fluid = fluid_bound(f, &peers);
        assert!(close(fluid, expected), "{fluid} vs {expected}");
        assert!(fluid > 112.0 && fluid < 114.0, "{fluid}");
    }

    #[test]
    fn flash_crowd_scenario() {
        let s = Scenario::load(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scenarios/flash-crowd.toml"
        )))
        .unwrap();
        let peers = s.peers(Strategy::Auto);
        // F = 2^30 B; u_s = 25 MB/s; 100 leechers at 5 MB/s up, 25 MB/s down.
        // Terms: 42.95 s, 42.95 s, 100·2^30 / 525e6 = 204.52 s; the last join 10 s + 42.95 s.
        let expected = 100.0 * (1u64 << 30) as f64 / 525_000_000.0;
        let b = Bounds::of(s.file_size, &peers);
        assert!(close(b.kumar_ross_s, expected));
        assert!(close(expected, 204.522_252_190_476_2));
        assert!(close(b.joins_s, 10.0 + (1u64 << 30) as f64 / 25e6));
        assert!(close(b.bound_s(), expected));
    }

    /// A toy swarm for the property test: `chunks` chunks of [`CHUNK`] bytes; rates in chunks
    /// per second; joins in whole seconds.
    #[derive(Debug, Clone)]
    struct Toy {
        chunks: usize,
        /// (upload, join)
        seeders: Vec<(u64, u64)>,
        /// (upload, download, join)
        leechers: Vec<(u64, u64, u64)>,
    }

    const CHUNK: u64 = 1000;

    impl Toy {
        fn peers(&self) -> Vec<PeerSpec> {
            let seeders = self.seeders.iter().map(|&(u, j)| (Role::Seeder, u, 1, j));
            let leechers = self
                .leechers
                .iter()
                .map(|&(u, d, j)| (Role::Leecher, u, d, j));
            seeders
                .chain(leechers)
                .enumerate()
                .map(|(id, (role, u, d, j))| peer(id, role, u * CHUNK, d * CHUNK, j * 1000))
                .collect()
        }

        /// The makespan (seconds from the first join) of a feasible schedule: in each second,
        /// every peer uploads up to its rate in chunks it held at the start of that second, every
        /// leecher downloads up to its rate, rarest chunk first. Slower than a fluid schedule
        /// (store-and-forward by whole chunks), so never below a valid bound.
        fn greedy_makespan(&self) -> f64 {
            let peers = self.peers();
            let n = peers.len();
            let chunks = self.chunks;
            let mut has: Vec<Vec<bool>> = peers
                .iter()
                .map(|p| vec![p.role == Role::Seeder; chunks])
                .collect();
            let mut done_at: Vec<Option<u64>> = peers
                .iter()
                .map(|p| (p.role == Role::Seeder).then_some(0))
                .collect();
            let join = |p: &PeerSpec| p.join_at.as_secs();
            let first = peers.iter().map(join).min().unwrap_or(0);
            for step in 0..100_000u64 {
                if done_at.iter().all(Option::is_some) {
                    break;
                }
                let present: Vec<bool> = peers.iter().map(|p| join(p) <= step).collect();
                let mut budget: Vec<u64> = (0..n)
                    .map(|i| {
                        if present[i] {
                            peers[i].upload_bps / CHUNK
                        } else {
                            0
                        }
                    })
                    .collect();
                let mut got: Vec<(usize, usize)> = Vec::new();
                for r in 0..n {
                    let i = (r + step as usize) % n;
                    if !present[i] || done_at[i].is_some() {
                        continue;
                    }
                    let mut want: Vec<usize> = (0..chunks).filter(|&c| !has[i][c]).collect();
                    want.sort_by_key(|&c| (0..n).filter(|&j| has[j][c]).count());
                    let mut room = peers[i].download_bps / CHUNK;
                    for c in want {
                        if room == 0 {
                            break;
                        }
                        let holder = (0..n)
                            .filter(|&j| j != i && present[j] && has[j][c] && budget[j] > 0)
                            .max_by_key(|&j| (budget[j], std::cmp::Reverse(j)));
                        if let Some(j) = holder {
                            budget[j] -= 1;
                            room -= 1;
                            got.push((i, c));
                        }
                    }
                }
                for (i, c) in got {
                    has[i][c] = true;
                }
                for i in 0..n {
                    if done_at[i].is_none() && has[i].iter().all(|&h| h) {
                        done_at[i] = Some(step + 1);
                    }
                }
            }
            let last = done_at.iter().map(|d| d.unwrap_or(u64::MAX)).max();
            last.map_or(0.0, |l| l.saturating_sub(first) as f64)
        }
    }

    fn toy() -> impl proptest::strategy::Strategy<Value = Toy> {
        use proptest::strategy::Strategy as _;
        (
            1usize..=8,
            prop::collection::vec((1u64..=4, 0u64..=3), 1..=3),
            prop::collection::vec((1u64..=3, 1u64..=4, 0u64..=6), 1..=6),
        )
            .prop_map(|(chunks, seeders, leechers)| Toy {
                chunks,
                seeders,
                leechers,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Both bounds are valid: never above the makespan of a schedule that can be carried out;
        /// and the fluid bound is never looser than the report's.
        #[test]
        fn bounds_never_exceed_a_feasible_schedule(t in toy()) {
            let peers = t.peers();
            let file = t.chunks as u64 * CHUNK;
            let feasible = t.greedy_makespan();
            let bound = Bounds::of(file, &peers).bound_s();
            let fluid = fluid_bound(file, &peers);
            prop_assert!(bound <= feasible + 1e-9, "bound {bound} > schedule {feasible}");
            prop_assert!(fluid <= feasible + 1e-9, "fluid {fluid} > schedule {feasible}");
            prop_assert!(bound <= fluid + 1e-9, "bound {bound} > fluid {fluid}");
        }
    }

    #[test]
    fn the_bound_is_met_where_the_schedule_is_simple() {
        // One leecher joining at 2 s downloading 6 chunks at 3 a second from a seeder that
        // uploads 3: the schedule takes 2 + 2 s and both bounds say so.
        let t = Toy {
            chunks: 6,
            seeders: vec![(3, 0)],
            leechers: vec![(1, 3, 2)],
        };
        let peers = t.peers();
        assert_eq!(t.greedy_makespan(), 4.0);
        assert!(close(Bounds::of(6 * CHUNK, &peers).bound_s(), 4.0));
        assert!(close(fluid_bound(6 * CHUNK, &peers), 4.0));
        // A seeder at 1 chunk/s: the contract bound sees F/u_s = 6 s, measured from the first
        // join (the seeder's, at 0), so 6 s; the leecher cannot start before 2 s: fluid 2 + 6.
        let slow = Toy {
            seeders: vec![(1, 0)],
            ..t
        };
        assert_eq!(slow.greedy_makespan(), 8.0);
        assert!(close(Bounds::of(6 * CHUNK, &slow.peers()).bound_s(), 6.0));
        assert!(close(fluid_bound(6 * CHUNK, &slow.peers()), 8.0));
    }
}
