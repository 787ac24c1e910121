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
    },
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
        } => cli::run_command(&scenario, seed, trace.as_deref(), !quiet),
        Command::BenchReport { dir } => upsim::bench_report::command(dir.as_deref()),
        Command::Config { command } => match command {
            ConfigCommand::Diff { left, right } => cli::config_diff_command(&left, &right),
            ConfigCommand::Show { profile } => cli::config_show_command(&profile),
            ConfigCommand::Check { path } => cli::config_check_command(&path),
        },
    };
    print!("{}", outcome.stdout);
    eprint!("{}", outcome.stderr);
    ExitCode::from(u8::try_from(outcome.code).unwrap_or(1))
}
