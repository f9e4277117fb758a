//! The Kumar–Ross lower bound on the time to distribute a file (design.md §7).
//!
//! For a file of `F` bytes, seeders with total upload `u_s`, and `N` leechers with uploads
//! `u_i` and slowest download `d_min`:
//!
//! ```text
//! T_min = max( F / u_s ,  F / d_min ,  N·F / (u_s + Σ u_i) )
//! ```
//!
//! No schedule can do better: the seeders must upload every byte at least once, the slowest
//! leecher must download every byte, and `N·F` bytes must be uploaded by someone. Several seeders
//! are treated as one seeder with their summed upload (which only loosens the bound).

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
    let per = |bytes: f64, rate: u64| {
        if rate == 0 {
            f64::INFINITY
        } else {
            bytes / rate as f64
        }
    };
    let seed = per(f, seeder_upload_bps);
    let download = per(f, slowest_download_bps);
    let total = per(
        leechers as f64 * f,
        seeder_upload_bps.saturating_add(leecher_upload_sum_bps),
    );
    seed.max(download).max(total)
}

/// The Kumar–Ross bound in seconds for `peers` sharing a file of `file_bytes`.
pub fn lower_bound(file_bytes: u64, peers: &[PeerSpec]) -> f64 {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{Scenario, Strategy};

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn each_term_can_dominate() {
        // Seeder-bound: F = 100 MB, u_s = 1 MB/s -> 100 s; d_min 10 MB/s -> 10 s;
        // 2·100 MB / (1 + 2·50) MB/s -> 1.98 s.
        assert!(close(
            kumar_ross(100_000_000, 1_000_000, 2, 100_000_000, 10_000_000),
            100.0
        ));
        // Download-bound: d_min = 0.5 MB/s -> 200 s.
        assert!(close(
            kumar_ross(100_000_000, 10_000_000, 2, 100_000_000, 500_000),
            200.0
        ));
        // Capacity-bound: 100 leechers, u_s 10 MB/s, Σu_i 100·1 MB/s:
        // 100·100 MB / 110 MB/s = 90.909… s (vs 10 s and 10 s).
        assert!(close(
            kumar_ross(100_000_000, 10_000_000, 100, 100_000_000, 10_000_000),
            10_000.0 / 110.0
        ));
    }

    #[test]
    fn degenerate_inputs() {
        assert_eq!(kumar_ross(1, 1, 0, 0, 0), 0.0);
        assert_eq!(kumar_ross(0, 1, 5, 0, 1), 0.0);
        assert_eq!(kumar_ross(1, 0, 1, 0, 1), f64::INFINITY);
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
        // Terms: 42.95 s, 42.95 s, 100·2^30 / 525e6 = 204.52 s.
        let expected = 100.0 * (1u64 << 30) as f64 / 525_000_000.0;
        assert!(close(lower_bound(s.file_size, &peers), expected));
        assert!(close(expected, 204.522_252_190_476_2));
    }
}
