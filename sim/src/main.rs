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
    /// How many seeds to run at once, one thread each (runs are independent and deterministic,
    /// so the output does not depend on this).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    jobs: u16,
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

/// One line saying why a run did not succeed, e.g.
/// `time-limit: 3/8 leechers complete after 120.00s`.
fn why_failed(report: &Report) -> String {
    format!(
        "{}: {}/{} leechers complete after {:.2}s",
        report.exit_reason, report.completed, report.leechers, report.makespan_s
    )
}

/// `text` quoted for a POSIX shell when it needs it.
fn shell_quote(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c));
    if plain {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// What a sweep keeps of one run.
struct Outcome {
    code: u8,
    makespan_s: f64,
    line: String,
}

/// Most failing seeds listed in the summary line (each also has its own line).
const LISTED_FAILURES: usize = 20;

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
    let wall = std::time::Instant::now();
    let reproduce = |seed: u64| {
        format!(
            "tierswarm-sim run {} --seed {seed} --strategy {}",
            shell_quote(&args.scenario.to_string_lossy()),
            args.strategy
        )
    };
    let run_one = |seed: u64| -> Result<Outcome, SimError> {
        let opts = RunOptions {
            seed: Some(seed),
            strategy: args.strategy,
            ..RunOptions::default()
        };
        let report = engine::run(&scenario, &opts)?;
        let code = report.exit_code();
        let line = if code == 0 {
            format!(
                "seed {seed}: ok, makespan {:.2}s, efficiency {:.3}, trace {}",
                report.makespan_s, report.efficiency, report.trace_hash
            )
        } else {
            format!(
                "FAIL seed {seed}: {}; reproduce: {}",
                why_failed(&report),
                reproduce(seed)
            )
        };
        Ok(Outcome {
            code,
            makespan_s: report.makespan_s,
            line,
        })
    };

    // Workers take seeds in order; results are printed in seed order whatever the timing.
    let next = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let mut failed: Vec<u64> = Vec::new();
    let mut makespans: Vec<f64> = Vec::new();
    let mut error: Option<SimError> = None;
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel::<(u64, Result<Outcome, SimError>)>();
        for _ in 0..args.jobs {
            let tx = tx.clone();
            let (next, stop, run_one) = (&next, &stop, &run_one);
            scope.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= args.seeds {
                        break;
                    }
                    if tx.send((i, run_one(start + i))).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let mut pending = BTreeMap::new();
        let mut printed = 0u64;
        for (i, result) in rx {
            pending.insert(i, result);
            while let Some(result) = pending.remove(&printed) {
                let seed = start + printed;
                printed += 1;
                match result {
                    Ok(o) => {
                        if o.code == 0 {
                            makespans.push(o.makespan_s);
                            if args.verbose {
                                println!("{}", o.line);
                            }
                        } else {
                            failed.push(seed);
                            println!("{}", o.line);
                        }
                    }
                    Err(e) => {
                        stop.store(true, Ordering::Relaxed);
                        error.get_or_insert(e);
                    }
                }
            }
        }
    });
    if let Some(e) = error {
        return fail(&e);
    }
    let stats = CompletionStats::of(&makespans);
    let fmt = |x: Option<f64>| x.map_or_else(|| "-".to_owned(), |s| format!("{s:.2}s"));
    let mut listed: Vec<String> = failed
        .iter()
        .take(LISTED_FAILURES)
        .map(u64::to_string)
        .collect();
    if failed.len() > LISTED_FAILURES {
        listed.push(format!("... ({} more)", failed.len() - LISTED_FAILURES));
    }
    println!(
        "{}: {}/{} seeds succeeded (seeds {start}..={}, strategy {}, {} jobs, {:.1}s wall); \
         makespan of the successful runs min {} median {} max {}; failed seeds: {}",
        scenario.name,
        args.seeds - failed.len() as u64,
        args.seeds,
        start + (args.seeds - 1),
        args.strategy,
        args.jobs,
        wall.elapsed().as_secs_f64(),
        fmt(stats.min),
        fmt(stats.median),
        fmt(stats.max),
        if listed.is_empty() {
            "none".to_owned()
        } else {
            listed.join(" ")
        }
    );
    ExitCode::from(if failed.is_empty() { 0 } else { 1 })
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
    }
}
