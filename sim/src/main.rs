//! `tierswarm-sim`: run a scenario file in the simulator.
//!
//! Exit status: 0 when every leecher finished and the simulator's checks held, 1 when a run ended
//! otherwise, 2 when the scenario or a flag is invalid (one line on stderr naming the key).
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tierswarm_sim::report::{CompletionStats, Report};
use tierswarm_sim::{engine, RunOptions, Scenario, SimError, Strategy};

/// Deterministic simulator for tierswarm swarms.
#[derive(Parser, Debug)]
#[command(name = "tierswarm-sim", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one scenario and print a summary.
    Run(RunArgs),
    /// Run one scenario over a range of seeds and summarise.
    Sweep(SweepArgs),
}

#[derive(Args, Debug)]
struct RunArgs {
    /// The scenario file (TOML).
    scenario: PathBuf,
    /// Override the scenario's seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Which protocol the peers speak: each group's own (auto), or all the same.
    #[arg(long, value_enum, default_value_t = Strategy::Auto)]
    strategy: Strategy,
    /// Write the report as JSON here.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Write the JSON-lines trace here.
    #[arg(long, value_name = "PATH")]
    trace: Option<PathBuf>,
    /// Write the progress chart (SVG) here.
    #[arg(long, value_name = "PATH")]
    svg: Option<PathBuf>,
    /// Write Chrome trace-event JSON (for ui.perfetto.dev) here.
    #[arg(long, value_name = "PATH")]
    perfetto: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct SweepArgs {
    /// The scenario file (TOML).
    scenario: PathBuf,
    /// How many seeds to run.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    seeds: u64,
    /// The first seed (default: the scenario's seed).
    #[arg(long)]
    start: Option<u64>,
    /// Which protocol the peers speak: each group's own (auto), or all the same.
    #[arg(long, value_enum, default_value_t = Strategy::Auto)]
    strategy: Strategy,
}

/// Exit status for invalid input.
const INVALID: u8 = 2;

fn load(path: &Path) -> Result<Scenario, ExitCode> {
    Scenario::load(path).map_err(|e| {
        match e {
            tierswarm_sim::ScenarioError::Io { .. } => eprintln!("error: {e}"),
            _ => eprintln!("error: {}: {e}", path.display()),
        }
        ExitCode::from(INVALID)
    })
}

fn fail(e: &SimError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(e.exit_code())
}

fn run(args: RunArgs) -> ExitCode {
    let scenario = match load(&args.scenario) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let opts = RunOptions {
        seed: args.seed,
        strategy: args.strategy,
        trace: args.trace,
        svg: args.svg,
        perfetto: args.perfetto,
    };
    let report = match engine::run(&scenario, &opts) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    if let Some(path) = &args.json {
        if let Err(source) = std::fs::write(path, report.to_json()) {
            return fail(&SimError::Output {
                flag: "--json",
                path: path.clone(),
                source,
            });
        }
    }
    print!("{}", report.summary());
    ExitCode::from(report.exit_code())
}

fn sweep(args: SweepArgs) -> ExitCode {
    let scenario = match load(&args.scenario) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let start = args.start.unwrap_or(scenario.seed);
    if start.checked_add(args.seeds - 1).is_none() {
        eprintln!(
            "error: --seeds: {} seeds from {start} go past the largest seed",
            args.seeds
        );
        return ExitCode::from(INVALID);
    }
    let mut reports: Vec<Report> = Vec::new();
    for seed in (0..args.seeds).map(|i| start + i) {
        let opts = RunOptions {
            seed: Some(seed),
            strategy: args.strategy,
            ..RunOptions::default()
        };
        let report = match engine::run(&scenario, &opts) {
            Ok(r) => r,
            Err(e) => return fail(&e),
        };
        println!(
            "seed {seed}: {}/{} complete, {}, makespan {:.2}s, efficiency {:.3}, exit {}",
            report.completed,
            report.leechers,
            report.exit_reason,
            report.makespan_s,
            report.efficiency,
            report.exit_code()
        );
        reports.push(report);
    }
    let ok = reports.iter().filter(|r| r.exit_code() == 0).count();
    let makespans: Vec<f64> = reports.iter().map(|r| r.makespan_s).collect();
    let stats = CompletionStats::of(&makespans);
    let fmt = |x: Option<f64>| x.map_or_else(|| "-".to_owned(), |s| format!("{s:.2}s"));
    println!(
        "{ok}/{} runs succeeded; makespan min {} median {} max {}",
        reports.len(),
        fmt(stats.min),
        fmt(stats.median),
        fmt(stats.max)
    );
    ExitCode::from(if ok == reports.len() { 0 } else { 1 })
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run(args) => run(args),
        Command::Sweep(args) => sweep(args),
    }
}
