//! Scenarios built in Rust: the simulator as a library.
//!
//! A [`ScenarioBuilder`] says in code what a scenario file says in TOML, and
//! [`build`](ScenarioBuilder::build) turns it into the same validated [`Scenario`] by way of the
//! file format itself ([`ScenarioBuilder::to_toml`], then [`Scenario::from_toml`]). So a
//! scenario from code is checked exactly like one from a file, gets every default a file gets,
//! and can be written out and run by `tierswarm-sim run` as it is.
//!
//! ```
//! use std::time::Duration;
//! use tierswarm_sim::builder::{GroupBuilder, ScenarioBuilder};
//! use tierswarm_sim::{engine, RunOptions};
//!
//! const MBIT: u64 = 1_000_000 / 8; // bytes per second
//! let scenario = ScenarioBuilder::new("two-leechers", 8 << 20)
//!     .seed(7)
//!     .time_limit(Duration::from_secs(600))
//!     .group(GroupBuilder::seeders("seed", 1).rates(40 * MBIT, 100 * MBIT))
//!     .group(GroupBuilder::leechers("crowd", 2).rates(20 * MBIT, 100 * MBIT))
//!     .build()
//!     .expect("a valid scenario");
//! let report = engine::run(&scenario, &RunOptions::default()).expect("no output files to write");
//! assert!(report.all_complete);
//! assert!(report.efficiency > 0.0 && report.efficiency <= 1.0);
//! ```

use std::fmt::Write as _;
use std::time::Duration;

use tierswarm_units::{format_duration, format_rate, format_size};

use crate::scenario::{Protocol, Role, Scenario, ScenarioError};

/// A scenario under construction. Every setter consumes and returns the builder; nothing is
/// checked until [`build`](Self::build).
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioBuilder {
    name: String,
    file_size: u64,
    seed: u64,
    time_limit: Duration,
    groups: Vec<GroupBuilder>,
    loss: f64,
    duplicate: f64,
    reorder: f64,
    crashes: Vec<(String, f64, Duration, Duration)>,
    partitions: Vec<(Vec<String>, Duration, Duration)>,
}

impl ScenarioBuilder {
    /// A scenario called `name` sharing a file of `file_size` bytes; seed 0, a one-hour time
    /// limit, no groups and no faults yet.
    pub fn new(name: &str, file_size: u64) -> Self {
        ScenarioBuilder {
            name: name.to_owned(),
            file_size,
            seed: 0,
            time_limit: Duration::from_secs(3600),
            groups: Vec::new(),
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            crashes: Vec::new(),
            partitions: Vec::new(),
        }
    }

    /// The default seed (`seed`; [`RunOptions::seed`](crate::RunOptions::seed) overrides it).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Simulated time after which the run ends (`time_limit`).
    pub fn time_limit(mut self, limit: Duration) -> Self {
        self.time_limit = limit;
        self
    }

    /// Adds a `[[group]]`; groups keep the order they are added in (peer ids follow it).
    pub fn group(mut self, group: GroupBuilder) -> Self {
        self.groups.push(group);
        self
    }

    /// Probability that one message is lost (`faults.loss`).
    pub fn loss(mut self, p: f64) -> Self {
        self.loss = p;
        self
    }

    /// Probability that one message is delivered twice (`faults.duplicate`).
    pub fn duplicate(mut self, p: f64) -> Self {
        self.duplicate = p;
        self
    }

    /// Probability that one message is delayed past later ones (`faults.reorder`).
    pub fn reorder(mut self, p: f64) -> Self {
        self.reorder = p;
        self
    }

    /// A `[[faults.crash]]`: `fraction` of group `group` dies at `at` and restarts from its
    /// persisted store `down_for` later.
    pub fn crash(mut self, group: &str, fraction: f64, at: Duration, down_for: Duration) -> Self {
        self.crashes
            .push((group.to_owned(), fraction, at, down_for));
        self
    }

    /// A `[[faults.partition]]`: the named groups cannot reach each other during
    /// `at..at + duration`.
    pub fn partition(mut self, groups: &[&str], at: Duration, duration: Duration) -> Self {
        let names = groups.iter().map(|g| (*g).to_owned()).collect();
        self.partitions.push((names, at, duration));
        self
    }

    /// The scenario file this builder describes. Sizes, rates and durations are written in
    /// units that read back to exactly the values given.
    pub fn to_toml(&self) -> String {
        let mut t = String::new();
        // Writing to a String cannot fail.
        let _ = writeln!(t, "name = {}", quote(&self.name));
        let _ = writeln!(t, "file_size = {}", quote(&format_size(self.file_size)));
        let _ = writeln!(t, "seed = {}", self.seed);
        let _ = writeln!(
            t,
            "time_limit = {}",
            quote(&format_duration(self.time_limit))
        );
        for g in &self.groups {
            g.write_toml(&mut t);
        }
        let _ = writeln!(t, "\n[faults]");
        let _ = writeln!(t, "loss = {:?}", self.loss);
        let _ = writeln!(t, "duplicate = {:?}", self.duplicate);
        let _ = writeln!(t, "reorder = {:?}", self.reorder);
        for (group, fraction, at, down_for) in &self.crashes {
            let _ = writeln!(t, "\n[[faults.crash]]");
            let _ = writeln!(t, "group = {}", quote(group));
            let _ = writeln!(t, "fraction = {fraction:?}");
            let _ = writeln!(t, "at = {}", quote(&format_duration(*at)));
            let _ = writeln!(t, "down_for = {}", quote(&format_duration(*down_for)));
        }
        for (groups, at, duration) in &self.partitions {
            let names: Vec<String> = groups.iter().map(|g| quote(g)).collect();
            let _ = writeln!(t, "\n[[faults.partition]]");
            let _ = writeln!(t, "groups = [{}]", names.join(", "));
            let _ = writeln!(t, "at = {}", quote(&format_duration(*at)));
            let _ = writeln!(t, "duration = {}", quote(&format_duration(*duration)));
        }
        t
    }

    /// Validates the scenario exactly as a file is validated; the error names the key as the
    /// file would spell it (e.g. `group[1].upload`).
    pub fn build(&self) -> Result<Scenario, ScenarioError> {
        Scenario::from_toml(&self.to_toml())
    }
}

/// One `[[group]]` under construction: `count` peers of one role with the same access link.
/// Defaults: 100 Mbit/s up and down, 20 ms latency, hierarchical, joining at time zero.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupBuilder {
    name: String,
    count: u32,
    role: Role,
    upload_bps: u64,
    download_bps: u64,
    latency: Duration,
    protocol: Protocol,
    join_at: (Duration, Option<Duration>),
}

impl GroupBuilder {
    /// A group of `count` peers with `role`.
    pub fn new(name: &str, count: u32, role: Role) -> Self {
        GroupBuilder {
            name: name.to_owned(),
            count,
            role,
            upload_bps: 100_000_000 / 8,
            download_bps: 100_000_000 / 8,
            latency: Duration::from_millis(20),
            protocol: Protocol::Hierarchical,
            join_at: (Duration::ZERO, None),
        }
    }

    /// `count` seeders (they start with the whole file).
    pub fn seeders(name: &str, count: u32) -> Self {
        GroupBuilder::new(name, count, Role::Seeder)
    }

    /// `count` leechers (they start empty and keep serving once complete).
    pub fn leechers(name: &str, count: u32) -> Self {
        GroupBuilder::new(name, count, Role::Leecher)
    }

    /// Upload and download capacity of each peer's access link, in bytes per second.
    pub fn rates(mut self, upload_bps: u64, download_bps: u64) -> Self {
        self.upload_bps = upload_bps;
        self.download_bps = download_bps;
        self
    }

    /// One-way latency of each peer's access link (between two peers: the sum of theirs).
    pub fn latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// The group speaks only the flat protocol (`protocol = "legacy"`).
    pub fn legacy(mut self) -> Self {
        self.protocol = Protocol::Legacy;
        self
    }

    /// Every peer of the group joins at `at`.
    pub fn join_at(mut self, at: Duration) -> Self {
        self.join_at = (at, None);
        self
    }

    /// The group's joins are spread evenly over `from..=to`.
    pub fn join_spread(mut self, from: Duration, to: Duration) -> Self {
        self.join_at = (from, Some(to));
        self
    }

    fn write_toml(&self, t: &mut String) {
        let role = match self.role {
            Role::Seeder => "seeder",
            Role::Leecher => "leecher",
        };
        let join = match self.join_at {
            (at, None) => format_duration(at),
            (from, Some(to)) => format!("{}..{}", format_duration(from), format_duration(to)),
        };
        let _ = writeln!(t, "\n[[group]]");
        let _ = writeln!(t, "name = {}", quote(&self.name));
        let _ = writeln!(t, "count = {}", self.count);
        let _ = writeln!(t, "role = \"{role}\"");
        let _ = writeln!(t, "upload = {}", quote(&format_rate(self.upload_bps)));
        let _ = writeln!(t, "download = {}", quote(&format_rate(self.download_bps)));
        let _ = writeln!(t, "latency = {}", quote(&format_duration(self.latency)));
        let _ = writeln!(t, "protocol = \"{}\"", self.protocol);
        let _ = writeln!(t, "join_at = {}", quote(&join));
    }
}

/// A TOML basic string: names are the user's, so quotes, backslashes and control characters
/// are escaped (JSON's escapes are valid TOML ones).
fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::JoinAt;

    fn odd() -> ScenarioBuilder {
        ScenarioBuilder::new("odd \"name\"", 3 * 65536 + 17)
            .seed(42)
            .time_limit(Duration::from_micros(123_456_789))
            .group(GroupBuilder::seeders("s", 1).rates(1_234_567, 7_654_321))
            .group(
                GroupBuilder::leechers("l", 5)
                    .latency(Duration::from_micros(1500))
                    .legacy()
                    .join_spread(Duration::from_millis(1), Duration::from_secs(3)),
            )
            .loss(0.01)
            .duplicate(0.002)
            .reorder(0.1)
            .crash("l", 0.4, Duration::from_secs(2), Duration::from_millis(750))
            .partition(&["s", "l"], Duration::from_secs(1), Duration::from_secs(4))
    }

    #[test]
    fn every_value_reaches_the_scenario_exactly() {
        let s = odd().build().unwrap();
        assert_eq!(s.name, "odd \"name\"");
        assert_eq!(s.file_size, 3 * 65536 + 17);
        assert_eq!(s.seed, 42);
        assert_eq!(s.time_limit, Duration::from_micros(123_456_789));
        let (seed, leech) = (&s.groups[0], &s.groups[1]);
        assert_eq!((seed.role, seed.count), (Role::Seeder, 1));
        assert_eq!((seed.upload_bps, seed.download_bps), (1_234_567, 7_654_321));
        assert_eq!(seed.latency, Duration::from_millis(20));
        assert_eq!((leech.role, leech.count), (Role::Leecher, 5));
        assert_eq!(leech.latency, Duration::from_micros(1500));
        assert_eq!(leech.protocol, Protocol::Legacy);
        assert_eq!(
            leech.join_at,
            JoinAt::Spread {
                from: Duration::from_millis(1),
                to: Duration::from_secs(3)
            }
        );
        let f = &s.faults;
        assert_eq!((f.loss, f.duplicate, f.reorder), (0.01, 0.002, 0.1));
        assert_eq!(f.crashes.len(), 1);
        assert_eq!(f.crashes[0].group, 1);
        assert_eq!(f.crashes[0].fraction, 0.4);
        assert_eq!(f.crashes[0].down_for, Duration::from_millis(750));
        assert_eq!(f.partitions[0].groups, vec![0, 1]);
        assert_eq!(f.partitions[0].duration, Duration::from_secs(4));
    }

    #[test]
    fn errors_name_the_key_as_a_file_would() {
        let no_leecher = ScenarioBuilder::new("x", 65536)
            .group(GroupBuilder::seeders("s", 1))
            .build()
            .unwrap_err();
        assert!(matches!(no_leecher, ScenarioError::Invalid { .. }));
        let zero_rate = ScenarioBuilder::new("x", 65536)
            .group(GroupBuilder::seeders("s", 1))
            .group(GroupBuilder::leechers("l", 1).rates(0, 1000))
            .build()
            .unwrap_err();
        assert!(
            zero_rate.to_string().starts_with("group[1].upload:"),
            "{zero_rate}"
        );
        let unknown_group = odd().crash("nobody", 0.5, Duration::ZERO, Duration::ZERO);
        let e = unknown_group.build().unwrap_err().to_string();
        assert!(e.contains("nobody"), "{e}");
    }

    #[test]
    fn the_toml_is_a_scenario_file() {
        let b = odd();
        assert_eq!(
            Scenario::from_toml(&b.to_toml()).unwrap(),
            b.build().unwrap()
        );
    }
}
