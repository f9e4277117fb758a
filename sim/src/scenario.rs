//! Scenario files: the TOML format of contracts.md (`tierswarm-sim`), its validation, and the
//! expansion of groups into a flat list of peers.
//!
//! Parsing happens in two steps. Serde reads the file into raw structs (unknown keys are errors;
//! sizes, rates and durations are parsed by [`tierswarm_units`] as they are read), with the
//! key path of any failure tracked by `serde_path_to_error`. Then [`Scenario::from_toml`] checks
//! what serde cannot (probabilities, unique names, references between keys) and builds the
//! validated [`Scenario`]. Every error names the key path and the bad value, on one line:
//!
//! ```text
//! group[1].upload: cannot parse "40Mbps" as a rate (e.g. "100Mbit/s")
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, Unexpected, Visitor};
use serde::Deserialize;
use tierswarm_units::{self as units, Quantity, UnitError};

/// The most peers a scenario may expand to; a guard against typos such as `count = 1000000000`.
pub const MAX_PEERS: u64 = 100_000;

/// Whether a peer starts with the whole file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Starts with the whole file and serves it.
    Seeder,
    /// Starts empty, downloads, and keeps serving after it completes.
    Leecher,
}

/// Which protocol a peer speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Hierarchical availability with lazy refinement (falls back to flat with legacy peers).
    Hierarchical,
    /// Only the flat T1 protocol: BITFIELD, HAVE, REQUEST, TRANSFER, REJECT.
    Legacy,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Hierarchical => "hierarchical",
            Protocol::Legacy => "legacy",
        })
    }
}

/// How a peer behaves towards the others (`behaviour`). Every peer runs a real node; a hostile
/// one is a node whose traffic the simulator's embedding rewrites, drops or multiplies
/// (`engine/hostile.rs` has the models). Only leechers may be hostile.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Behaviour {
    /// Follows the protocol.
    #[default]
    Honest,
    /// Claims every unit in its summaries, bitfield and refine responses, and then cannot serve
    /// the units it lacks (its node rejects those requests).
    Liar,
    /// Never reads its socket: what it is sent never drains, so a sender's write stalls once the
    /// connection's buffers are full.
    SlowReader,
    /// Answers requests with corrupt data, which fails verification at the receiver.
    Corrupt,
    /// Goes silent in the middle of a transfer: from then on sends nothing at all, not even
    /// keep-alives, and keeps its connections open.
    Silent,
    /// Floods each peer with requests, many more than a window, again and again, for units the
    /// peer has or not.
    Flood,
}

impl Behaviour {
    /// Every behaviour, in file-format order.
    pub const ALL: [Behaviour; 6] = [
        Behaviour::Honest,
        Behaviour::Liar,
        Behaviour::SlowReader,
        Behaviour::Corrupt,
        Behaviour::Silent,
        Behaviour::Flood,
    ];

    /// The file spelling: `honest`, `liar`, `slow-reader`, `corrupt`, `silent` or `flood`.
    pub fn as_str(self) -> &'static str {
        match self {
            Behaviour::Honest => "honest",
            Behaviour::Liar => "liar",
            Behaviour::SlowReader => "slow-reader",
            Behaviour::Corrupt => "corrupt",
            Behaviour::Silent => "silent",
            Behaviour::Flood => "flood",
        }
    }

    /// Whether this is [`Behaviour::Honest`].
    pub fn is_honest(self) -> bool {
        self == Behaviour::Honest
    }
}

impl fmt::Display for Behaviour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `--strategy` flag: which protocol every peer speaks in this run.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    clap::ValueEnum,
    serde::Serialize,
    Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Each group keeps its own `protocol`.
    #[default]
    Auto,
    /// Every peer is capable of the hierarchical protocol.
    Hierarchical,
    /// Every peer speaks only the flat protocol (the baseline).
    Legacy,
}

impl Strategy {
    /// The protocol a peer of a group configured with `configured` speaks under this strategy.
    pub fn apply(self, configured: Protocol) -> Protocol {
        match self {
            Strategy::Auto => configured,
            Strategy::Hierarchical => Protocol::Hierarchical,
            Strategy::Legacy => Protocol::Legacy,
        }
    }

    /// The flag spelling: `auto`, `hierarchical` or `legacy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Auto => "auto",
            Strategy::Hierarchical => "hierarchical",
            Strategy::Legacy => "legacy",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When the peers of a group join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinAt {
    /// All at this time (`join_at = "5s"`).
    At(Duration),
    /// Spread evenly over `from..=to` (`join_at = "0s..30s"`): the first peer joins at `from`,
    /// the last at `to`.
    Spread {
        /// When the first peer joins.
        from: Duration,
        /// When the last peer joins.
        to: Duration,
    },
}

impl JoinAt {
    /// When peer `index` (0-based) of a group of `count` joins; exact to the nanosecond,
    /// rounded down.
    pub fn nth(&self, index: u32, count: u32) -> Duration {
        match *self {
            JoinAt::At(t) => t,
            JoinAt::Spread { from, to } => {
                if count <= 1 {
                    return from;
                }
                let span = (to - from).as_nanos();
                let offset = span * u128::from(index.min(count - 1)) / u128::from(count - 1);
                // offset <= span, which came from a Duration, so it fits back into one.
                let secs = u64::try_from(offset / 1_000_000_000).unwrap_or(u64::MAX);
                let nanos = u32::try_from(offset % 1_000_000_000).unwrap_or(0);
                from.saturating_add(Duration::new(secs, nanos))
            }
        }
    }
}

/// One `[[group]]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// Unique name, referenced by faults.
    pub name: String,
    /// How many peers.
    pub count: u32,
    /// Seeder or leecher.
    pub role: Role,
    /// Upload capacity, bytes per second (> 0).
    pub upload_bps: u64,
    /// Download capacity, bytes per second (> 0).
    pub download_bps: u64,
    /// One-way latency of each peer's access link.
    pub latency: Duration,
    /// The protocol the group speaks under [`Strategy::Auto`].
    pub protocol: Protocol,
    /// When its peers join.
    pub join_at: JoinAt,
    /// How its peers behave (only leechers may be hostile).
    pub behaviour: Behaviour,
}

/// One `[[faults.crash]]`: a fraction of a group dies at `at` and restarts `down_for` later from
/// its persisted store.
#[derive(Debug, Clone, PartialEq)]
pub struct Crash {
    /// Index into [`Scenario::groups`].
    pub group: usize,
    /// Fraction of the group, in `[0, 1]`.
    pub fraction: f64,
    /// When they crash.
    pub at: Duration,
    /// How long they stay down.
    pub down_for: Duration,
}

impl Crash {
    /// How many peers of a group of `count` crash: `fraction × count`, rounded to nearest.
    pub fn victims(&self, count: u32) -> u32 {
        let n = (self.fraction * f64::from(count)).round();
        // `as` saturates; fraction is in [0, 1] so n is in [0, count].
        (n as u32).min(count)
    }
}

/// One `[[faults.partition]]`: the listed groups cannot reach each other (pairwise) during
/// `at..at + duration`. Traffic within one group is unaffected.
#[derive(Debug, Clone, PartialEq)]
pub struct Partition {
    /// Indices into [`Scenario::groups`]; at least two, distinct.
    pub groups: Vec<usize>,
    /// When the partition starts.
    pub at: Duration,
    /// How long it lasts.
    pub duration: Duration,
}

/// The `[faults]` table, validated. Absent keys are zero / empty.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Faults {
    /// Probability that a message is lost.
    pub loss: f64,
    /// Probability that a message is delivered twice.
    pub duplicate: f64,
    /// Probability that a message is delayed past later ones.
    pub reorder: f64,
    /// Crash-and-restart events.
    pub crashes: Vec<Crash>,
    /// Partition windows.
    pub partitions: Vec<Partition>,
}

/// A validated scenario, with sizes in bytes, rates in bytes per second, times as durations.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// The scenario's name.
    pub name: String,
    /// The shared file's size in bytes (> 0).
    pub file_size: u64,
    /// The default seed (`--seed` overrides it); 0 when the file has none.
    pub seed: u64,
    /// Simulated time after which the run ends (> 0).
    pub time_limit: Duration,
    /// The groups, in file order.
    pub groups: Vec<Group>,
    /// The faults.
    pub faults: Faults,
}

/// One simulated peer, from [`Scenario::peers`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSpec {
    /// 0-based, dense: groups in file order, peers in order within each group.
    pub id: usize,
    /// Index into [`Scenario::groups`].
    pub group: usize,
    /// Seeder or leecher.
    pub role: Role,
    /// Upload capacity, bytes per second.
    pub upload_bps: u64,
    /// Download capacity, bytes per second.
    pub download_bps: u64,
    /// One-way access-link latency.
    pub latency: Duration,
    /// The protocol it speaks, after the strategy.
    pub protocol: Protocol,
    /// When it joins.
    pub join_at: Duration,
    /// How it behaves.
    pub behaviour: Behaviour,
}

/// Why a scenario file was rejected. Displays as one line.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// Not valid TOML.
    #[error("line {line}, column {column}: {message}")]
    Syntax {
        /// 1-based line.
        line: usize,
        /// 1-based column (in characters).
        column: usize,
        /// What the TOML parser said.
        message: String,
    },
    /// Valid TOML, but a key is missing, unknown, or has a bad value.
    #[error("{key}: {message}")]
    Invalid {
        /// The key path, e.g. `group[1].upload` (0-based indices).
        key: String,
        /// What is wrong, quoting the value.
        message: String,
    },
}

impl ScenarioError {
    fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ScenarioError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
            path: path.to_owned(),
            source,
        })?;
        Scenario::from_toml(&text)
    }

    /// Parses and validates scenario text.
    pub fn from_toml(text: &str) -> Result<Scenario, ScenarioError> {
        let de = toml::Deserializer::parse(text).map_err(|e| toml_error(text, "", &e))?;
        let raw: RawScenario = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            toml_error(text, &path, e.inner())
        })?;
        raw.validate()
    }

    /// The index of the group called `name`.
    pub fn group_index(&self, name: &str) -> Option<usize> {
        self.groups.iter().position(|g| g.name == name)
    }

    /// How many peers have `role`.
    pub fn count(&self, role: Role) -> u64 {
        self.groups
            .iter()
            .filter(|g| g.role == role)
            .map(|g| u64::from(g.count))
            .sum()
    }

    /// Expands the groups into one [`PeerSpec`] per peer, with `strategy` applied.
    pub fn peers(&self, strategy: Strategy) -> Vec<PeerSpec> {
        let mut peers = Vec::new();
        for (group_index, g) in self.groups.iter().enumerate() {
            for k in 0..g.count {
                peers.push(PeerSpec {
                    id: peers.len(),
                    group: group_index,
                    role: g.role,
                    upload_bps: g.upload_bps,
                    download_bps: g.download_bps,
                    latency: g.latency,
                    protocol: strategy.apply(g.protocol),
                    join_at: g.join_at.nth(k, g.count),
                    behaviour: g.behaviour,
                });
            }
        }
        peers
    }
}

/// Turns a TOML/serde error into a one-line [`ScenarioError`].
fn toml_error(text: &str, path: &str, e: &toml::de::Error) -> ScenarioError {
    let message = e
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let path = if path == "." { "" } else { path };
    // serde reports a missing key against its parent table; name the key itself.
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|m| m.strip_suffix('`'))
    {
        let key = if path.is_empty() {
            field.to_owned()
        } else {
            format!("{path}.{field}")
        };
        return ScenarioError::invalid(key, "required key is missing");
    }
    if !path.is_empty() {
        return ScenarioError::invalid(path, message);
    }
    let offset = e.span().map_or(0, |s| s.start).min(text.len());
    let before = text.get(..offset).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    ScenarioError::Syntax {
        line,
        column,
        message,
    }
}

// ---------------------------------------------------------------------------------------------
// Raw (as written) model.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    file_size: Size,
    #[serde(default)]
    seed: u64,
    time_limit: Time,
    group: Vec<RawGroup>,
    #[serde(default)]
    faults: RawFaults,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    name: String,
    count: u32,
    role: Role,
    upload: Rate,
    download: Rate,
    latency: Time,
    #[serde(default = "default_protocol")]
    protocol: Protocol,
    #[serde(default = "default_join")]
    join_at: JoinAt,
    #[serde(default)]
    behaviour: Behaviour,
}

fn default_protocol() -> Protocol {
    Protocol::Hierarchical
}

fn default_join() -> JoinAt {
    JoinAt::At(Duration::ZERO)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFaults {
    #[serde(default)]
    loss: f64,
    #[serde(default)]
    duplicate: f64,
    #[serde(default)]
    reorder: f64,
    #[serde(default)]
    crash: Vec<RawCrash>,
    #[serde(default)]
    partition: Vec<RawPartition>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCrash {
    group: String,
    fraction: f64,
    at: Time,
    down_for: Time,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPartition {
    groups: Vec<String>,
    at: Time,
    duration: Time,
}

fn probability(key: &str, p: f64) -> Result<f64, ScenarioError> {
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(ScenarioError::invalid(
            key,
            format!("{p} is not a probability (expected a number from 0 to 1)"),
        ))
    }
}

fn positive(key: &str, value: u64, text: impl Fn(u64) -> String) -> Result<u64, ScenarioError> {
    if value == 0 {
        Err(ScenarioError::invalid(
            key,
            format!("{:?} must be greater than zero", text(value)),
        ))
    } else {
        Ok(value)
    }
}

impl RawScenario {
    fn validate(self) -> Result<Scenario, ScenarioError> {
        let file_size = positive("file_size", self.file_size.0, units::format_size)?;
        if self.time_limit.0.is_zero() {
            return Err(ScenarioError::invalid(
                "time_limit",
                "\"0s\" must be greater than zero",
            ));
        }
        let mut groups: Vec<Group> = Vec::with_capacity(self.group.len());
        let mut total: u64 = 0;
        for (i, g) in self.group.into_iter().enumerate() {
            let key = |k: &str| format!("group[{i}].{k}");
            if g.name.trim().is_empty() {
                return Err(ScenarioError::invalid(key("name"), "must not be empty"));
            }
            if let Some(j) = groups.iter().position(|o| o.name == g.name) {
                return Err(ScenarioError::invalid(
                    key("name"),
                    format!("{:?} is already the name of group[{j}]", g.name),
                ));
            }
            total += u64::from(g.count);
            if total > MAX_PEERS {
                return Err(ScenarioError::invalid(
                    key("count"),
                    format!(
                        "{} brings the swarm to {total} peers; at most {MAX_PEERS} are supported",
                        g.count
                    ),
                ));
            }
            if g.role == Role::Seeder && !g.behaviour.is_honest() {
                return Err(ScenarioError::invalid(
                    key("behaviour"),
                    format!(
                        "{:?} is for leechers only: seeders are honest",
                        g.behaviour.as_str()
                    ),
                ));
            }
            groups.push(Group {
                upload_bps: positive(&key("upload"), g.upload.0, units::format_rate)?,
                download_bps: positive(&key("download"), g.download.0, units::format_rate)?,
                name: g.name,
                count: g.count,
                role: g.role,
                latency: g.latency.0,
                protocol: g.protocol,
                join_at: g.join_at,
                behaviour: g.behaviour,
            });
        }
        let scenario_peers = |role| -> u64 {
            groups
                .iter()
                .filter(|g| g.role == role)
                .map(|g| u64::from(g.count))
                .sum()
        };
        if scenario_peers(Role::Seeder) == 0 {
            return Err(ScenarioError::invalid(
                "group",
                "needs at least one seeder (a group with role = \"seeder\" and count >= 1)",
            ));
        }
        if scenario_peers(Role::Leecher) == 0 {
            return Err(ScenarioError::invalid(
                "group",
                "needs at least one leecher (a group with role = \"leecher\" and count >= 1)",
            ));
        }
        let honest_leechers: u64 = groups
            .iter()
            .filter(|g| g.role == Role::Leecher && g.behaviour.is_honest())
            .map(|g| u64::from(g.count))
            .sum();
        if honest_leechers == 0 {
            return Err(ScenarioError::invalid(
                "group",
                "needs at least one honest leecher (only honest leechers count in completion)",
            ));
        }
        let faults = self.faults.validate(&groups)?;
        Ok(Scenario {
            name: self.name,
            file_size,
            seed: self.seed,
            time_limit: self.time_limit.0,
            groups,
            faults,
        })
    }
}

impl RawFaults {
    fn validate(self, groups: &[Group]) -> Result<Faults, ScenarioError> {
        let find = |key: String, name: &str| {
            groups.iter().position(|g| g.name == name).ok_or_else(|| {
                ScenarioError::invalid(key, format!("{name:?} is not the name of a group"))
            })
        };
        let mut crashes = Vec::with_capacity(self.crash.len());
        for (i, c) in self.crash.into_iter().enumerate() {
            crashes.push(Crash {
                group: find(format!("faults.crash[{i}].group"), &c.group)?,
                fraction: probability(&format!("faults.crash[{i}].fraction"), c.fraction)?,
                at: c.at.0,
                down_for: c.down_for.0,
            });
        }
        let mut partitions = Vec::with_capacity(self.partition.len());
        for (i, p) in self.partition.into_iter().enumerate() {
            let key = format!("faults.partition[{i}].groups");
            if p.groups.len() < 2 {
                return Err(ScenarioError::invalid(
                    key,
                    format!("{:?} needs at least two groups", p.groups),
                ));
            }
            let mut indices: Vec<usize> = Vec::with_capacity(p.groups.len());
            for (j, name) in p.groups.iter().enumerate() {
                let index = find(format!("{key}[{j}]"), name)?;
                if indices.contains(&index) {
                    return Err(ScenarioError::invalid(
                        format!("{key}[{j}]"),
                        format!("{name:?} is listed twice"),
                    ));
                }
                indices.push(index);
            }
            partitions.push(Partition {
                groups: indices,
                at: p.at.0,
                duration: p.duration.0,
            });
        }
        Ok(Faults {
            loss: probability("faults.loss", self.loss)?,
            duplicate: probability("faults.duplicate", self.duplicate)?,
            reorder: probability("faults.reorder", self.reorder)?,
            crashes,
            partitions,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Unit-bearing values, parsed while deserialising so that serde_path_to_error names the key.

/// A size: a string such as `"1GiB"`, or a bare integer number of bytes.
struct Size(u64);
/// A rate string such as `"100Mbit/s"`.
struct Rate(u64);
/// A duration string such as `"20ms"`.
struct Time(Duration);

struct UnitVisitor<T> {
    quantity: Quantity,
    parse: fn(&str) -> Result<T, UnitError>,
    integers: bool,
}

impl<T> Visitor<'_> for UnitVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a {} such as {:?}",
            self.quantity,
            self.quantity.example()
        )
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.parse)(v).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        if self.integers && v >= 0 {
            self.visit_str(&v.to_string())
        } else {
            Err(E::invalid_type(Unexpected::Signed(v), &self))
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        if self.integers {
            self.visit_str(&v.to_string())
        } else {
            Err(E::invalid_type(Unexpected::Unsigned(v), &self))
        }
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UnitVisitor {
            quantity: Quantity::Size,
            parse: units::parse_size,
            integers: true,
        })
        .map(Size)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UnitVisitor {
            quantity: Quantity::Rate,
            parse: units::parse_rate,
            integers: false,
        })
        .map(Rate)
    }
}

impl<'de> Deserialize<'de> for Time {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UnitVisitor {
            quantity: Quantity::Duration,
            parse: units::parse_duration,
            integers: false,
        })
        .map(Time)
    }
}

fn parse_join(text: &str) -> Result<JoinAt, String> {
    let bad = || format!("cannot parse {text:?} as a join time (e.g. \"5s\" or \"0s..30s\")");
    match text.split_once("..") {
        None => units::parse_duration(text)
            .map(JoinAt::At)
            .map_err(|e| e.to_string()),
        Some((a, b)) => {
            let from = units::parse_duration(a.trim()).map_err(|_| bad())?;
            let to = units::parse_duration(b.trim()).map_err(|_| bad())?;
            if to < from {
                return Err(format!("{text:?} ends before it starts"));
            }
            Ok(JoinAt::Spread { from, to })
        }
    }
}

impl<'de> Deserialize<'de> for JoinAt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct JoinVisitor;
        impl Visitor<'_> for JoinVisitor {
            type Value = JoinAt;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a time such as \"5s\" or a range such as \"0s..30s\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<JoinAt, E> {
                parse_join(v).map_err(E::custom)
            }
        }
        d.deserialize_any(JoinVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
name = "t"
file_size = "1MiB"
seed = 5
time_limit = "1m"

[[group]]
name = "s"
count = 1
role = "seeder"
upload = "10Mbit/s"
download = "10Mbit/s"
latency = "10ms"

[[group]]
name = "l"
count = 4
role = "leecher"
upload = "1MB/s"
download = "2MB/s"
latency = "5ms"
protocol = "legacy"
join_at = "0s..3s"
"#;

    fn err(text: &str) -> String {
        Scenario::from_toml(text).unwrap_err().to_string()
    }

    /// MINIMAL with `from` replaced by `to` (which must occur).
    fn edit(from: &str, to: &str) -> String {
        assert!(MINIMAL.contains(from), "{from}");
        MINIMAL.replacen(from, to, 1)
    }

    #[test]
    fn minimal_parses_and_expands() {
        let s = Scenario::from_toml(MINIMAL).unwrap();
        assert_eq!(s.file_size, 1 << 20);
        assert_eq!(s.seed, 5);
        assert_eq!(s.time_limit, Duration::from_secs(60));
        assert_eq!(s.groups[0].upload_bps, 1_250_000);
        assert_eq!(s.groups[0].protocol, Protocol::Hierarchical);
        assert_eq!(s.count(Role::Seeder), 1);
        assert_eq!(s.count(Role::Leecher), 4);
        let peers = s.peers(Strategy::Auto);
        assert_eq!(peers.len(), 5);
        let joins: Vec<u64> = peers.iter().map(|p| p.join_at.as_millis() as u64).collect();
        assert_eq!(joins, [0, 0, 1000, 2000, 3000]);
        assert_eq!(peers[4].id, 4);
        assert_eq!(peers[4].group, 1);
        assert_eq!(peers[4].protocol, Protocol::Legacy);
        assert_eq!(peers[4].download_bps, 2_000_000);
        assert!(s
            .peers(Strategy::Hierarchical)
            .iter()
            .all(|p| p.protocol == Protocol::Hierarchical));
        assert!(s
            .peers(Strategy::Legacy)
            .iter()
            .all(|p| p.protocol == Protocol::Legacy));
    }

    #[test]
    fn join_spread_is_even_and_exact() {
        let j = JoinAt::Spread {
            from: Duration::from_secs(1),
            to: Duration::from_secs(2),
        };
        assert_eq!(j.nth(0, 4), Duration::from_secs(1));
        assert_eq!(j.nth(1, 4), Duration::from_nanos(1_333_333_333));
        assert_eq!(j.nth(3, 4), Duration::from_secs(2));
        assert_eq!(j.nth(0, 1), Duration::from_secs(1));
    }

    #[test]
    fn crash_victims_round() {
        let c = Crash {
            group: 0,
            fraction: 0.2,
            at: Duration::ZERO,
            down_for: Duration::ZERO,
        };
        assert_eq!(c.victims(30), 6);
        assert_eq!(c.victims(0), 0);
        assert_eq!(Crash { fraction: 1.0, ..c }.victims(7), 7);
    }

    #[test]
    fn bad_values_name_the_key() {
        assert_eq!(
            err(&edit(r#"upload = "1MB/s""#, r#"upload = "40Mbps""#)),
            r#"group[1].upload: cannot parse "40Mbps" as a rate (e.g. "100Mbit/s")"#
        );
        assert_eq!(
            err(&edit(r#"file_size = "1MiB""#, r#"file_size = "1.5B""#)),
            r#"file_size: "1.5B" is not a whole number of bytes"#
        );
        assert_eq!(
            err(&edit(r#"file_size = "1MiB""#, "file_size = 0")),
            r#"file_size: "0B" must be greater than zero"#
        );
        assert_eq!(
            err(&edit(r#"latency = "5ms""#, "latency = 5")),
            r#"group[1].latency: invalid type: integer `5`, expected a duration such as "20ms""#
        );
        assert_eq!(
            err(&edit(r#"join_at = "0s..3s""#, r#"join_at = "3s..0s""#)),
            r#"group[1].join_at: "3s..0s" ends before it starts"#
        );
        assert_eq!(
            err(&edit(r#"join_at = "0s..3s""#, r#"join_at = "0s..soon""#)),
            r#"group[1].join_at: cannot parse "0s..soon" as a join time (e.g. "5s" or "0s..30s")"#
        );
        assert_eq!(
            err(&edit(r#"role = "seeder""#, r#"role = "seed""#)),
            "group[0].role: unknown variant `seed`, expected `seeder` or `leecher`"
        );
        assert_eq!(
            err(&edit("count = 4", "count = -4")),
            "group[1].count: invalid value: integer `-4`, expected u32"
        );
    }

    #[test]
    fn structural_errors() {
        assert_eq!(
            err(&edit("count = 4", "count = 4\nuplaod = \"1MB/s\"")),
            "group[1].uplaod: unknown field `uplaod`, expected one of `name`, `count`, `role`, `upload`, `download`, `latency`, `protocol`, `join_at`, `behaviour`"
        );
        assert_eq!(
            err(&edit("upload = \"1MB/s\"\n", "")),
            "group[1].upload: required key is missing"
        );
        assert_eq!(
            err(&edit("name = \"t\"\n", "")),
            "name: required key is missing"
        );
        assert_eq!(
            err(&edit(r#"name = "l""#, r#"name = "s""#)),
            r#"group[1].name: "s" is already the name of group[0]"#
        );
        assert_eq!(
            err(&edit(r#"role = "seeder""#, r#"role = "leecher""#)),
            r#"group: needs at least one seeder (a group with role = "seeder" and count >= 1)"#
        );
        assert_eq!(
            err(&edit("count = 4", "count = 100000")),
            "group[1].count: 100000 brings the swarm to 100001 peers; at most 100000 are supported"
        );
        assert_eq!(
            err("name = \n"),
            "line 1, column 8: string values must be quoted, expected literal string"
        );
    }

    #[test]
    fn fault_errors() {
        let with = |faults: &str| format!("{MINIMAL}\n{faults}");
        assert_eq!(
            err(&with("[faults]\nloss = 1.5")),
            "faults.loss: 1.5 is not a probability (expected a number from 0 to 1)"
        );
        assert_eq!(
            err(&with("[faults]\nreorder = -0.1")),
            "faults.reorder: -0.1 is not a probability (expected a number from 0 to 1)"
        );
        assert_eq!(
            err(&with("[faults]\nlost = 0.1")),
            "faults.lost: unknown field `lost`, expected one of `loss`, `duplicate`, `reorder`, `crash`, `partition`"
        );
        assert_eq!(
            err(&with(
                "[[faults.crash]]\ngroup = \"crowd\"\nfraction = 0.1\nat = \"1s\"\ndown_for = \"1s\""
            )),
            r#"faults.crash[0].group: "crowd" is not the name of a group"#
        );
        assert_eq!(
            err(&with(
                "[[faults.partition]]\ngroups = [\"s\", \"x\"]\nat = \"1s\"\nduration = \"1s\""
            )),
            r#"faults.partition[0].groups[1]: "x" is not the name of a group"#
        );
        assert_eq!(
            err(&with(
                "[[faults.partition]]\ngroups = [\"s\"]\nat = \"1s\"\nduration = \"1s\""
            )),
            r#"faults.partition[0].groups: ["s"] needs at least two groups"#
        );
        let ok = Scenario::from_toml(&with(
            "[faults]\nloss = 0\n[[faults.partition]]\ngroups = [\"l\", \"s\"]\nat = \"1s\"\nduration = \"2s\"",
        ))
        .unwrap();
        assert_eq!(ok.faults.partitions[0].groups, [1, 0]);
        assert_eq!(ok.faults.loss, 0.0);
    }

    #[test]
    fn garbage_never_panics() {
        for text in [
            "",
            "=",
            "[[group]]",
            "group = 5",
            "name = 1",
            "\u{0}",
            "[faults]\nloss = nan",
        ] {
            assert!(Scenario::from_toml(text).is_err(), "{text:?}");
        }
    }
}
