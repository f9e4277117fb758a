//! The shipped scenarios parse and have the documented shape. (Bad input on the command line
//! is tested in `cli.rs`.)

use std::path::{Path, PathBuf};

use tierswarm_sim::scenario::{Behaviour, Protocol, Role, Scenario, Strategy};

fn scenario_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(name)
}

#[test]
fn shipped_scenarios_parse() {
    let mut names: Vec<String> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".toml"))
            .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "capable-seeder-legacy-crowd.toml",
            "crowd-100.toml",
            "crowd-1000.toml",
            "crowd-300.toml",
            "flash-crowd.toml",
            "hetero-1000-1gib.toml",
            "hetero-300-1gib.toml",
            "hetero-staggered.toml",
            "hostile-crowd.toml",
            "lan.toml",
            "legacy-seeder.toml",
            "lossy-churn.toml",
            "mixed-legacy.toml",
            "multi-gib.toml",
            "smoke.toml",
            "sweep-small.toml",
            "thousand.toml",
        ]
    );
    for name in &names {
        let s = Scenario::load(&scenario_path(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(format!("{}.toml", s.name), *name);
        assert!(s.count(Role::Seeder) >= 1 && s.count(Role::Leecher) >= 1);
    }
}

#[test]
fn shipped_scenarios_have_the_documented_shape() {
    // A 100-leecher crowd, a tenth hostile: two of each behaviour; seeders are honest.
    let hostile = Scenario::load(&scenario_path("hostile-crowd.toml")).unwrap();
    let peers = hostile.peers(Strategy::Auto);
    let leechers: Vec<_> = peers.iter().filter(|p| p.role == Role::Leecher).collect();
    assert_eq!(leechers.len(), 100);
    for b in Behaviour::ALL {
        let n = leechers.iter().filter(|p| p.behaviour == b).count();
        assert_eq!(n, if b.is_honest() { 90 } else { 2 }, "{b}");
    }
    assert!(peers
        .iter()
        .filter(|p| p.role == Role::Seeder)
        .all(|p| p.behaviour.is_honest()));

    let flash = Scenario::load(&scenario_path("flash-crowd.toml")).unwrap();
    let peers = flash.peers(Strategy::Auto);
    assert_eq!(peers.len(), 101);
    assert_eq!(flash.file_size, 1 << 30);
    assert_eq!(peers[0].upload_bps, 25_000_000);
    assert_eq!(peers[100].join_at.as_secs(), 10);
    assert_eq!(peers[1].join_at.as_secs(), 0);

    let churn = Scenario::load(&scenario_path("lossy-churn.toml")).unwrap();
    assert_eq!(churn.faults.loss, 0.02);
    assert_eq!(churn.faults.crashes[0].victims(30), 6);
    assert_eq!(churn.faults.partitions[0].groups, [0, 1]);

    let small = Scenario::load(&scenario_path("sweep-small.toml")).unwrap();
    assert_eq!(
        (small.count(Role::Seeder), small.count(Role::Leecher)),
        (1, 6)
    );
    assert_eq!(small.file_size, 12 << 20);
    assert_eq!(small.faults.crashes[0].victims(6), 2);
    assert_eq!(small.faults.partitions.len(), 1);

    let mixed = Scenario::load(&scenario_path("mixed-legacy.toml")).unwrap();
    let legacy = mixed
        .peers(Strategy::Auto)
        .iter()
        .filter(|p| p.protocol == Protocol::Legacy)
        .count();
    assert_eq!(legacy, 20);
    assert!(mixed
        .peers(Strategy::Hierarchical)
        .iter()
        .all(|p| p.protocol == Protocol::Hierarchical));
}

#[test]
fn thousand_has_the_documented_shape() {
    // Not run here (the lead measures it); it must parse and describe the intended swarm.
    let s = Scenario::load(&scenario_path("thousand.toml")).unwrap();
    let peers = s.peers(Strategy::Auto);
    assert_eq!(peers.len(), 1001);
    assert_eq!((s.count(Role::Seeder), s.count(Role::Leecher)), (1, 1000));
    assert_eq!(s.file_size, 64 << 20);
    let seeder = &peers[0];
    assert_eq!(seeder.role, Role::Seeder);
    assert_eq!(seeder.upload_bps, 125_000_000);
    let leechers: Vec<_> = peers.iter().filter(|p| p.role == Role::Leecher).collect();
    const MBIT: u64 = 125_000;
    assert!(leechers
        .iter()
        .all(|p| (20 * MBIT..=50 * MBIT).contains(&p.upload_bps)
            && (100 * MBIT..=200 * MBIT).contains(&p.download_bps)));
    let first = leechers.iter().map(|p| p.join_at).min().unwrap();
    let last = leechers.iter().map(|p| p.join_at).max().unwrap();
    assert_eq!((first.as_secs(), last.as_secs()), (0, 60));
}

#[test]
fn issue_11_crowds_have_the_documented_shape() {
    // Not run here (minutes each; dev/SIMULATION.md has the commands and figures).
    const MBIT: u64 = 125_000;
    for (name, leechers) in [("crowd-300.toml", 300), ("crowd-1000.toml", 1000)] {
        let s = Scenario::load(&scenario_path(name)).unwrap();
        let peers = s.peers(Strategy::Auto);
        assert_eq!(s.file_size, 256 << 20, "{name}");
        assert_eq!(
            (s.count(Role::Seeder), s.count(Role::Leecher)),
            (1, leechers)
        );
        let seeder = &peers[0];
        assert_eq!(
            (
                seeder.upload_bps,
                seeder.download_bps,
                seeder.latency.as_millis()
            ),
            (500 * MBIT, 1000 * MBIT, 10)
        );
        assert!(peers[1..].iter().all(|p| p.upload_bps == 20 * MBIT
            && p.download_bps == 100 * MBIT
            && p.latency.as_millis() == 40));
        let last = peers.last().unwrap().join_at;
        assert_eq!(
            (peers[1].join_at.as_secs(), last.as_secs()),
            (0, 30),
            "{name}"
        );
    }
    let hetero = Scenario::load(&scenario_path("hetero-staggered.toml")).unwrap();
    assert!(hetero.count(Role::Leecher) >= 100);
    assert_eq!(hetero.count(Role::Seeder), 2);
    let peers = hetero.peers(Strategy::Auto);
    let joins: std::collections::BTreeSet<u64> =
        peers.iter().map(|p| p.join_at.as_secs()).collect();
    assert!(joins.len() > 40, "staggered joins: {joins:?}");
    for (name, leechers) in [
        ("hetero-300-1gib.toml", 300),
        ("hetero-1000-1gib.toml", 1000),
    ] {
        let s = Scenario::load(&scenario_path(name)).unwrap();
        assert_eq!(s.file_size, 1 << 30, "{name}");
        assert_eq!(s.count(Role::Leecher), leechers, "{name}");
        assert_eq!(
            s.groups.iter().filter(|g| g.role == Role::Leecher).count(),
            3
        );
    }
}
