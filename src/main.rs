//! The `upsim` binary: argument parsing only; the commands live in
//! [`upsim::cli`].

use clap::{Parser, Subcommand};
use std::process::ExitCode;
use upsim::cli;

/// upsim: a large-file upload system and the deterministic simulation
/// harness that proves it.
#[derive(Parser)]
#[command(name = "upsim", version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the root-cause report's step table against a profile.
    Diagnose {
        /// dev, prod, or a path to a TOML profile.
        #[arg(long, default_value = "dev")]
        profile: String,
        /// File size to diagnose (default: the report's 3457 MiB).
        #[arg(long)]
        file_size_bytes: Option<u64>,
        /// Use this machine's memory instead of the report's figures.
        #[arg(long)]
        os_memory: bool,
    },
    /// Run a simulated scenario (reference, reference-prod, smoke, or a file).
    Run {
        /// Built-in scenario name or a scenario file (TOML or JSON).
        scenario: String,
        /// The seed (default: the scenario's own, 0 for built-ins).
        #[arg(long)]
        seed: Option<u64>,
        /// Write the trace (JSON lines) here.
        #[arg(long)]
        trace: Option<String>,
        /// No progress line.
        #[arg(long)]
        quiet: bool,
        /// Print the scenario as JSON (a file `upsim run` accepts) and exit.
        #[arg(long)]
        print_scenario: bool,
        /// Print the report as JSON instead of text (no progress line).
        #[arg(long)]
        json: bool,
        /// Also write the run's picture here: one self-contained HTML page
        /// (inline SVG) of the run over simulated time.
        #[arg(long, value_name = "FILE")]
        html: Option<String>,
    },
    /// Run a range of seeds of a scenario on worker threads; shrink a failure.
    /// `upsim sweep merge FILES…` merges the results files of a sweep's
    /// shards.
    Sweep(SweepArgs),
    /// Run every bug-zoo mutant and production through the checks.
    Zoo,
    /// Print criterion's results (`cargo bench`), each beside its baseline.
    BenchReport {
        /// criterion's directory (default: $CRITERION_HOME, else
        /// $CARGO_TARGET_DIR/criterion, else target/criterion).
        #[arg(long)]
        dir: Option<String>,
    },
    /// Inspect and compare profiles.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Real mode: the drive emulator on TCP, storing files in a directory.
    Drive(upsim::real::DriveArgs),
    /// Real mode: the upload backend on TCP.
    Serve(upsim::real::ServeArgs),
    /// Real mode: upload a file (resumes an interrupted upload).
    Upload(upsim::real::UploadArgs),
}

/// `upsim sweep`: a scenario's seeds, or `merge`.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct SweepArgs {
    #[command(subcommand)]
    command: Option<SweepCommand>,
    /// Built-in scenario name (crowd, swarm, smoke, …) or a scenario file.
    #[arg(required = true)]
    scenario: Option<String>,
    /// Seeds, as A..B (B excluded).
    #[arg(long, required = true)]
    seeds: Option<String>,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Do not shrink the first failing seed.
    #[arg(long)]
    no_shrink: bool,
    /// Where to write a shrunk scenario (and the traces of a determinism
    /// failure).
    #[arg(long, default_value = ".")]
    out: String,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
    /// Run only shard K of N: the seeds S of the range with S mod N = K.
    /// K is 0-based (0 ≤ K < N, as Kubernetes' JOB_COMPLETION_INDEX), N ≥ 1.
    /// A seed's shard depends only on the seed and N. A shard's coverage is
    /// judged by `upsim sweep merge`.
    #[arg(long, value_name = "K/N")]
    shard: Option<String>,
    /// Write one JSON line per seed to FILE as each seed ends (seed,
    /// outcome, trace hash, wall, violation, scenario, range, shard,
    /// version, probes), in the order seeds end; `upsim sweep merge` sorts.
    #[arg(long, value_name = "FILE")]
    results: Option<String>,
    /// Also run each seed twice in fresh processes of this binary and
    /// compare their trace hashes; a difference fails the seed, naming the
    /// first diverging event.
    #[arg(long)]
    check_determinism: bool,
}

#[derive(Subcommand)]
enum SweepCommand {
    /// Merge the results files (--results) of a sweep's shards: summary,
    /// replay command of every failure, duplicate and missing seeds,
    /// coverage over all shards. Exit 1 if anything failed.
    Merge {
        /// Results files, one per shard (any order).
        #[arg(required = true)]
        files: Vec<String>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print every field that differs and what it does to the reference upload.
    Diff {
        /// First profile (dev, prod or a file).
        left: String,
        /// Second profile.
        right: String,
    },
    /// Print a profile as TOML.
    Show {
        /// dev, prod or a file.
        profile: String,
    },
    /// Validate a profile file.
    Check {
        /// Path to a TOML profile.
        path: String,
    },
}

fn sweep(args: SweepArgs) -> cli::Outcome {
    if let Some(SweepCommand::Merge { files }) = args.command {
        return cli::merge_command(&files);
    }
    let dist = cli::SweepDist {
        shard: args.shard,
        results: args.results,
        check_determinism: args.check_determinism,
    };
    cli::sweep_command(
        args.scenario.as_deref().unwrap_or_default(),
        args.seeds.as_deref().unwrap_or_default(),
        args.jobs,
        !args.no_shrink,
        &args.out,
        !args.quiet,
        &dist,
    )
}

fn main() -> ExitCode {
    let args = Args::parse();
    let outcome = match args.command {
        Command::Diagnose {
            profile,
            file_size_bytes,
            os_memory,
        } => cli::diagnose_command(&profile, file_size_bytes, os_memory),
        Command::Run {
            scenario,
            seed,
            trace,
            quiet,
            print_scenario,
            json,
            html,
        } => {
            if print_scenario {
                cli::print_scenario_command(&scenario, seed)
            } else if json {
                cli::run_json_command(&scenario, seed, trace.as_deref(), html.as_deref())
            } else {
                cli::run_command(&scenario, seed, trace.as_deref(), html.as_deref(), !quiet)
            }
        }
        Command::Sweep(args) => sweep(args),
        Command::Zoo => upsim::zoo_report::zoo_command(),
        Command::BenchReport { dir } => upsim::bench_report::command(dir.as_deref()),
        Command::Config { command } => match command {
            ConfigCommand::Diff { left, right } => cli::config_diff_command(&left, &right),
            ConfigCommand::Show { profile } => cli::config_show_command(&profile),
            ConfigCommand::Check { path } => cli::config_check_command(&path),
        },
        Command::Drive(args) => upsim::real::drive_command(&args),
        Command::Serve(args) => upsim::real::serve_command(&args),
        Command::Upload(args) => upsim::real::upload_command(&args),
    };
    print!("{}", outcome.stdout);
    eprint!("{}", outcome.stderr);
    ExitCode::from(u8::try_from(outcome.code).unwrap_or(1))
}
