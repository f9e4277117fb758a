//! # tierswarm-sim
//!
//! A deterministic, next-event simulator for tierswarm swarms (design.md §7). Scenario files
//! (contracts.md, `tierswarm-sim`) describe the peers, their access links and the faults; the
//! engine drives the sans-IO protocol nodes of `tierswarm-core` over a simulated network that
//! models bandwidth as well as latency, and reports completion times against the Kumar–Ross
//! lower bound.
//!
//! Modules, one concept each:
//! - [`scenario`]: the scenario file, its validation, and the flat list of peers.
//! - [`builder`]: scenarios built in Rust, validated as a file is.
//! - [`clock`]: virtual time in whole microseconds.
//! - [`events`]: the deterministic event queues (time, then insertion order): the run's for
//!   joins, tracker visits and crashes, and one per node.
//! - [`rng`]: the seeded generator and its independent, labelled sub-streams.
//! - [`network`]: per-peer uplink/downlink serialisers, latency and faults.
//! - [`bound`]: the Kumar–Ross lower bound on completion time.
//! - [`report`]: the JSON report and its human-readable summary.
//! - [`svg`]: the progress chart.
//! - [`perfetto`]: Chrome trace-event JSON for Perfetto / `chrome://tracing`.
//! - [`engine`]: runs a scenario.
//! - [`sweep`]: seed sweeps, their shards, and the merge of shard reports.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bound;
pub mod builder;
pub mod clock;
pub mod engine;
pub mod events;
pub mod network;
pub mod perfetto;
pub mod report;
pub mod rng;
pub mod scenario;
pub mod svg;
pub mod sweep;

use std::path::PathBuf;

pub use scenario::{Protocol, Role, Scenario, ScenarioError, Strategy};

/// How to run a scenario: what the command line can override, and where to write artefacts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// Replaces the scenario's `seed` when set (`--seed`).
    pub seed: Option<u64>,
    /// Which protocol the peers speak (`--strategy`, default `auto`).
    pub strategy: Strategy,
    /// Where to write the JSON-lines trace (`--trace`).
    pub trace: Option<PathBuf>,
    /// Where to write the progress chart (`--svg`).
    pub svg: Option<PathBuf>,
    /// Where to write Chrome trace-event JSON for Perfetto (`--perfetto`).
    pub perfetto: Option<PathBuf>,
    /// Threads one run may use (`--threads`); `None`: as many as the machine has. The result
    /// does not depend on it.
    pub threads: Option<usize>,
}

impl RunOptions {
    /// The seed this run uses: the override if given, else the scenario's.
    pub fn effective_seed(&self, scenario: &Scenario) -> u64 {
        self.seed.unwrap_or(scenario.seed)
    }
}

/// Why a run could not produce a report. (A run that ends without every leecher finishing is not
/// an error: it produces a report whose exit code is 1.)
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// An output file (trace, chart, report) could not be written.
    #[error("{flag}: cannot write {}: {source}", path.display())]
    Output {
        /// The flag that named the file, e.g. `--trace`.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
}

impl SimError {
    /// The process exit status for this error: 2, a flag named something unusable (an
    /// unwritable output path).
    pub fn exit_code(&self) -> u8 {
        match self {
            SimError::Output { .. } => 2,
        }
    }
}
