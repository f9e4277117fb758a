//! `tierswarm-sim`: run a scenario file in the simulator.
//!
//! Exit status: 0 when every leecher finished and the simulator's checks held, 1 when a run ended
//! otherwise, 2 when the scenario or a flag is invalid (one line on stderr naming the key).
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;

use clap::{Args, Parser, Subcommand};
use tierswarm_sim::report::Report;
use tierswarm_sim::sweep::{read_part, shell_quote, why_failed, MergeError, Shard, SweepSpec};
use tierswarm_sim::{engine, RunOptions, Scenario, SimError, Strategy};

/// mimalloc: 8–14 % less wall time than the system allocator on large crowds, same traces
/// (dev/SIMULATION.md, "Sixth pass").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Run one scenario over a range of seeds (or one shard of them) and summarise.
    Sweep(SweepArgs),
    /// Combine the `--json` reports of every shard of a sweep into the whole sweep's report.
    Merge(MergeArgs),
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
    /// Threads the run may use (default: every core). The result does not depend on it.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
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
    /// How many seeds to run at once, one thread each (runs are independent and deterministic,
    /// so the output does not depend on this).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    jobs: u16,
    /// Threads each run may use (the result does not depend on it).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    threads: u16,
    /// Run only the K-th of M contiguous slices of the seeds (1-based), e.g. 2/8.
    #[arg(long, value_name = "K/M")]
    shard: Option<Shard>,
    /// Write the sweep's report (every run's report, and the summary) as JSON here.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Print a line for every seed, not only the failing ones.
    #[arg(long)]
    verbose: bool,
}

#[derive(Args, Debug)]
struct MergeArgs {
    /// The `--json` reports of all shards of one sweep, in any order.
    #[arg(required = true, value_name = "PART.json")]
    parts: Vec<PathBuf>,
    /// Write the merged report as JSON here.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Print a line for every seed, not only the failing ones.
    #[arg(long)]
    verbose: bool,
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
        threads: args.threads.map(usize::from),
    };
    let report = match engine::run(&scenario, &opts) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    if let Some(code) = write_json(args.json.as_deref(), &report.to_json()) {
        return code;
    }
    print!("{}", report.summary());
    let code = report.exit_code();
    if code != 0 {
        eprintln!(
            "error: {}: {}; reproduce: tierswarm-sim run {} --seed {} --strategy {}",
            args.scenario.display(),
            why_failed(&report),
            shell_quote(&args.scenario.display().to_string()),
            report.seed,
            report.strategy.as_str()
        );
    }
    ExitCode::from(code)
}

fn sweep(args: SweepArgs) -> ExitCode {
    let scenario = match load(&args.scenario) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let start = args.start.unwrap_or(scenario.seed);
    if start.checked_add(args.seeds).is_none() {
        eprintln!(
            "error: --seeds: {} seeds from {start} go past the largest seed",
            args.seeds
        );
        return ExitCode::from(INVALID);
    }
    if let Some(shard) = args.shard {
        if shard.count > args.seeds {
            eprintln!(
                "error: --shard: {} shards for {} seeds; use at most one shard per seed",
                shard.count, args.seeds
            );
            return ExitCode::from(INVALID);
        }
    }
    let spec = SweepSpec {
        scenario,
        path: args.scenario.to_string_lossy().into_owned(),
        strategy: args.strategy,
        start,
        seeds: args.seeds,
        shard: args.shard,
    };
    // A sweep can run for hours: find out now, not at the end, that its report cannot be written.
    if let Some(code) = write_json(args.json.as_deref(), "") {
        return code;
    }
    let wall = std::time::Instant::now();
    let range = spec.range();
    let count = range.end - range.start;
    // Only its header matters for the per-seed lines.
    let lines = spec.report(Vec::new(), 0.0);
    let run_one = |seed: u64| -> Result<Report, SimError> {
        let opts = RunOptions {
            seed: Some(seed),
            strategy: args.strategy,
            threads: Some(usize::from(args.threads)),
            ..RunOptions::default()
        };
        engine::run(&spec.scenario, &opts)
    };

    // Workers take seeds in order; lines are printed in seed order whatever the timing.
    let next = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let mut runs: Vec<Report> = Vec::new();
    let mut error: Option<SimError> = None;
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel::<(u64, Result<Report, SimError>)>();
        for _ in 0..args.jobs {
            let tx = tx.clone();
            let (next, stop, run_one) = (&next, &stop, &run_one);
            scope.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    if tx.send((i, run_one(range.start + i))).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let mut pending = BTreeMap::new();
        for (i, result) in rx {
            pending.insert(i, result);
            while let Some(result) = pending.remove(&(runs.len() as u64)) {
                match result {
                    Ok(report) => {
                        if args.verbose || report.exit_code() != 0 {
                            println!("{}", lines.run_line(&report));
                        }
                        runs.push(report);
                    }
                    Err(e) => {
                        stop.store(true, Ordering::Relaxed);
                        error.get_or_insert(e);
                        break;
                    }
                }
            }
            if error.is_some() {
                break;
            }
        }
    });
    if let Some(e) = error {
        return fail(&e);
    }
    let wall_s = wall.elapsed().as_secs_f64();
    let report = spec.report(runs, wall_s);
    if let Some(code) = write_json(args.json.as_deref(), &report.to_json()) {
        return code;
    }
    println!("{}", report.summary_line());
    eprintln!("{count} seeds in {wall_s:.1}s wall (--jobs {})", args.jobs);
    ExitCode::from(report.exit_code())
}

fn merge(args: MergeArgs) -> ExitCode {
    let merged = args
        .parts
        .iter()
        .map(|p| read_part(p).map(|r| (p.clone(), r)))
        .collect::<Result<Vec<_>, MergeError>>()
        .and_then(tierswarm_sim::sweep::merge);
    let report = match merged {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(INVALID);
        }
    };
    if let Some(code) = write_json(args.json.as_deref(), &report.to_json()) {
        return code;
    }
    print!("{}", report.printed(args.verbose));
    ExitCode::from(report.exit_code())
}

/// Writes `json` to `path` if given; the exit status if that failed.
fn write_json(path: Option<&Path>, json: &str) -> Option<ExitCode> {
    let path = path?;
    std::fs::write(path, json).err().map(|source| {
        fail(&SimError::Output {
            flag: "--json",
            path: path.to_owned(),
            source,
        })
    })
}

/// Parses the command line. Help and version go to stdout with status 0; any other problem is
/// one line on stderr (the flag and why) with status 2, as contracts.md asks.
fn parse_cli() -> Result<Cli, ExitCode> {
    use clap::error::ErrorKind;
    Cli::try_parse().map_err(|e| match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::from(INVALID)
        }
        _ => {
            // clap's message, up to its first blank line, on one line.
            let text = e.render().to_string();
            let line: Vec<&str> = text
                .lines()
                .map(str::trim)
                .take_while(|l| !l.is_empty())
                .collect();
            eprintln!("{}", line.join(" "));
            ExitCode::from(INVALID)
        }
    })
}

fn main() -> ExitCode {
    let cli = match parse_cli() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    match cli.command {
        Command::Run(args) => run(args),
        Command::Sweep(args) => sweep(args),
        Command::Merge(args) => merge(args),
    }
}
