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
    Sweep {
        /// Built-in scenario name (crowd, swarm, smoke, …) or a scenario file.
        scenario: String,
        /// Seeds, as A..B (B excluded).
        #[arg(long)]
        seeds: String,
        /// Worker threads.
        #[arg(long, default_value_t = 2)]
        jobs: usize,
        /// Do not shrink the first failing seed.
        #[arg(long)]
        no_shrink: bool,
        /// Where to write a shrunk scenario.
        #[arg(long, default_value = ".")]
        out: String,
        /// No progress line.
        #[arg(long)]
        quiet: bool,
    },
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
                cli::run_json_command(&scenario, seed, html.as_deref())
            } else {
                cli::run_command(&scenario, seed, trace.as_deref(), html.as_deref(), !quiet)
            }
        }
        Command::Sweep {
            scenario,
            seeds,
            jobs,
            no_shrink,
            out,
            quiet,
        } => cli::sweep_command(&scenario, &seeds, jobs, !no_shrink, &out, !quiet),
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
