//! The command line: what each `upsim` subcommand prints, and its exit code.
//!
//! Kept in the library so tests can run the commands' logic without a
//! process; `main.rs` only parses arguments and exits with the code.

use crate::diagnose::{diagnose, DiagnoseInput};
use crate::env::{MemoryProbe, MemorySnapshot, OsMemory};
use crate::profile::{drift, with_field, Profile, ProfileError};
use std::fmt::Write as _;

mod sweep_dist;
pub use sweep_dist::{merge_command, SweepDist};

pub use crate::outcome::{Outcome, EXIT_FAILED, EXIT_OK, EXIT_USAGE};

/// `upsim diagnose --profile P [--file-size-bytes N] [--os-memory]`.
pub fn diagnose_command(profile: &str, file_size_bytes: Option<u64>, os_memory: bool) -> Outcome {
    let profile = match Profile::load(profile) {
        Ok(p) => p,
        Err(e @ ProfileError::Invalid { .. }) => {
            // An invalid profile is a diagnosis in itself: step 1 fails.
            return Outcome {
                stdout: String::new(),
                stderr: format!("upsim: step 1 (configuration validation) FAIL: {e}\n"),
                code: EXIT_FAILED,
            };
        }
        Err(e) => return Outcome::usage(e),
    };
    let mut input = DiagnoseInput::reference();
    if let Some(size) = file_size_bytes {
        input.file_size_bytes = size;
    }
    if os_memory {
        match OsMemory.snapshot() {
            Ok(m) => input.memory = m,
            Err(e) => return Outcome::usage(e),
        }
    }
    let d = diagnose(&profile, &input);
    Outcome {
        stdout: d.render(),
        stderr: String::new(),
        code: if d.passed() { EXIT_OK } else { EXIT_FAILED },
    }
}

/// `upsim config diff A B`: every differing field, and what each does on
/// its own to the reference upload on the report's machine.
pub fn config_diff_command(left: &str, right: &str) -> Outcome {
    let (l, r) = match (Profile::load(left), Profile::load(right)) {
        (Ok(l), Ok(r)) => (l, r),
        (Err(e), _) | (_, Err(e)) => return Outcome::usage(e),
    };
    let input = DiagnoseInput::reference();
    let verdict = |p: &Profile| match diagnose(p, &input).admission() {
        Some(s) if s.passed => "admitted".to_owned(),
        Some(s) => match &s.cause {
            Some(c) => format!("rejected ({})", c.cause()),
            None => format!("rejected ({})", s.detail),
        },
        None => "rejected (invalid profile)".to_owned(),
    };
    let mut out = String::new();
    let fields = drift(&l, &r);
    let _ = writeln!(
        out,
        "config diff {} → {}: {} field(s) differ\nreference upload: {} bytes on a machine with memory {}\n",
        l.name,
        r.name,
        fields.len(),
        input.file_size_bytes,
        MemorySnapshot::REPORT.describe()
    );
    let base = verdict(&l);
    for f in &fields {
        let alone = match with_field(&l, &f.field, &f.right) {
            Ok(p) => verdict(&p),
            Err(e) => format!("invalid: {e}"),
        };
        let effect = if alone == base {
            format!("alone: no change ({alone})")
        } else {
            format!("alone: {base} → {alone}")
        };
        let _ = writeln!(
            out,
            "  {:<28} {:>14} → {:<14} {effect}",
            f.field,
            f.left.to_string(),
            f.right.to_string()
        );
    }
    let _ = writeln!(
        out,
        "\nreference upload: {} on {}, {} on {}",
        base,
        l.name,
        verdict(&r),
        r.name
    );
    if let (Some(d), true) = (diagnose(&r, &input).admission(), base == "admitted") {
        if let Some(c) = &d.cause {
            // Does the smallest possible upload fare any better?
            let tiny = DiagnoseInput {
                file_size_bytes: 1,
                ..input.clone()
            };
            let scope = match diagnose(&r, &tiny).admission() {
                Some(s) if !s.passed => "every upload, whatever its size",
                _ => "every upload of this size",
            };
            let _ = writeln!(out, "consequence: {} rejects {scope}: {c}", r.name);
        }
    }
    Outcome::ok(out)
}

/// `upsim run SCENARIO [--seed N] [--trace FILE]`: runs a simulated
/// scenario (built-in name or a scenario file, TOML or JSON), prints a
/// progress line while it runs (to standard error) and the report. A run
/// that breaks any check exits 1 and prints the seed and the command that
/// replays it.
pub fn run_command(
    scenario: &str,
    seed: Option<u64>,
    trace_path: Option<&str>,
    html_path: Option<&str>,
    progress: bool,
) -> Outcome {
    use crate::sim::{run, RunOptions};
    let loaded = match scenario_with_seed(scenario, seed) {
        Ok(s) => s,
        Err(e) => return Outcome::usage(e),
    };
    let options = RunOptions {
        progress: progress.then(progress_line),
        timeline: html_path.is_some(),
        ..RunOptions::default()
    };
    if progress {
        eprint!("{}", loaded.describe());
    }
    let started = std::time::Instant::now();
    let (report, trace) = match run(&loaded, &options) {
        Ok(r) => r,
        Err(e) => return Outcome::usage(e),
    };
    if progress && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!(); // ends the redrawn line
    }
    let mut stdout = report.render();
    stdout.push_str(&format!("  probes hit: {}\n", report.probes.render()));
    if let Some(path) = trace_path {
        if let Err(e) = std::fs::write(path, trace.to_json_lines()) {
            return Outcome::usage(format!("cannot write the trace to {path}: {e}"));
        }
        stdout.push_str(&format!("  trace written to {path}\n"));
    }
    if let Some(path) = html_path {
        if let Err(e) = write_picture(path, &loaded, &report, &trace) {
            return Outcome::usage(e);
        }
        stdout.push_str(&format!("  picture written to {path}\n"));
    }
    stdout.push_str(&baseline_line(&loaded, &report));
    stdout.push_str(&format!(
        "  total wall {:.2} s\n",
        started.elapsed().as_secs_f64()
    ));
    let stderr = if report.passed {
        String::new()
    } else {
        failure_lines(scenario, &report)
    };
    Outcome {
        stdout,
        stderr,
        code: if report.passed { EXIT_OK } else { EXIT_FAILED },
    }
}

/// `upsim run`'s progress line on standard error: redrawn in place on a
/// terminal, one plain line per report (about every 10 simulated s) when
/// standard error is a file or a pipe, which keep no carriage returns.
fn progress_line() -> crate::sim::runner::RunProgress {
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    std::sync::Arc::new(move |sim_ms: u64, committed: u64, total: u64| {
        let line = progress_text(sim_ms, committed, total);
        if terminal {
            eprint!("\r{line}   ");
        } else {
            eprintln!("{line}");
        }
    })
}

/// One progress report: simulated time, committed bytes, percentage.
fn progress_text(sim_ms: u64, committed: u64, total: u64) -> String {
    let pct = if total == 0 {
        100.0
    } else {
        committed as f64 * 100.0 / total as f64
    };
    format!(
        "[sim {:>6.1} s] committed {} of {} ({pct:5.1} %)",
        sim_ms as f64 / 1e3,
        crate::units::human_bytes(committed),
        crate::units::human_bytes(total)
    )
}

/// The run's ratio against the generate-copy-checksum baseline, measured in
/// this process right after the run; empty unless the scenario has one file
/// and the run sent chunks.
fn baseline_line(loaded: &crate::sim::Scenario, report: &crate::sim::Report) -> String {
    let (Some(file), true) = (loaded.files.first(), loaded.files.len() == 1) else {
        return String::new();
    };
    let chunks_sent = report.files.first().map(|f| f.chunks_sent).unwrap_or(0);
    if chunks_sent == 0 {
        return String::new();
    }
    let payload = crate::payload::Payload::new(0x5eed, file.size_bytes);
    let base =
        crate::sim::baseline::measure(&payload, loaded.profile.chunk_size_bytes, chunks_sent);
    let run_s = report.wall.simulation_ms as f64 / 1e3 + report.wall.source_digest_ms as f64 / 1e3;
    format!(
        "  baseline (generate, 4 stream copies, 3 checksums of {} chunk bytes): {:.2} s wall; run / baseline = {:.2}\n",
        base.chunk_bytes,
        base.wall.as_secs_f64(),
        run_s / base.wall.as_secs_f64().max(1e-9)
    )
}

/// A failed run's seed and the command that replays it.
fn failure_lines(scenario: &str, report: &crate::sim::Report) -> String {
    let replay = if crate::sim::Scenario::builtin(scenario, 0).is_some() {
        report.replay_command()
    } else {
        format!("cargo run --release -- run {scenario}")
    };
    format!(
        "upsim: scenario {} FAILED with seed {}\nreplay: {replay}\n",
        report.scenario, report.seed
    )
}

/// `upsim run SCENARIO --json`: runs the scenario and prints its report as
/// JSON (exit 1 if any check failed). A fresh process per run is what makes
/// a trace hash comparable: tokio numbers tasks process-wide, and the order
/// in which a crashed host's tasks are dropped follows those numbers, so
/// other runtimes busy in the same process (a parallel test) can reorder a
/// crash's effects. With `trace_path`, the trace (JSON lines) is written
/// there too (`upsim sweep --check-determinism` compares two); with
/// `html_path`, the run's picture.
pub fn run_json_command(
    scenario: &str,
    seed: Option<u64>,
    trace_path: Option<&str>,
    html_path: Option<&str>,
) -> Outcome {
    let loaded = match scenario_with_seed(scenario, seed) {
        Ok(s) => s,
        Err(e) => return Outcome::usage(e),
    };
    let options = crate::sim::RunOptions {
        timeline: html_path.is_some(),
        ..crate::sim::RunOptions::default()
    };
    match crate::sim::run(&loaded, &options) {
        Ok((report, trace)) => {
            if let Some(path) = trace_path {
                if let Err(e) = std::fs::write(path, trace.to_json_lines()) {
                    return Outcome::usage(format!("cannot write the trace to {path}: {e}"));
                }
            }
            if let Some(path) = html_path {
                if let Err(e) = write_picture(path, &loaded, &report, &trace) {
                    return Outcome::usage(e);
                }
            }
            Outcome {
                stdout: serde_json::to_string_pretty(&report).expect("reports always serialise")
                    + "\n",
                stderr: String::new(),
                code: if report.passed { EXIT_OK } else { EXIT_FAILED },
            }
        }
        Err(e) => Outcome::usage(e),
    }
}

/// Writes the run's picture ([`crate::sim::picture`]) to `path`.
fn write_picture(
    path: &str,
    scenario: &crate::sim::Scenario,
    report: &crate::sim::Report,
    trace: &crate::trace::Trace,
) -> Result<(), String> {
    let page = crate::sim::picture::html(scenario, report, &trace.events());
    std::fs::write(path, page).map_err(|e| format!("cannot write the picture to {path}: {e}"))
}

/// `upsim run SCENARIO --print-scenario`: the scenario as JSON, a file
/// that `upsim run FILE` accepts (a starting point for custom scenarios).
pub fn print_scenario_command(scenario: &str, seed: Option<u64>) -> Outcome {
    let loaded = match scenario_with_seed(scenario, seed) {
        Ok(s) => s,
        Err(e) => return Outcome::usage(e),
    };
    Outcome::ok(serde_json::to_string_pretty(&loaded).expect("scenarios always serialise") + "\n")
}

/// A built-in scenario or a scenario file, with its seed replaced if one
/// is given.
pub fn scenario_with_seed(
    scenario: &str,
    seed: Option<u64>,
) -> Result<crate::sim::Scenario, String> {
    let mut loaded = match crate::sim::Scenario::builtin(scenario, seed.unwrap_or(0)) {
        Some(s) => s,
        None => load_scenario_file(scenario)?,
    };
    if let Some(seed) = seed {
        loaded.seed = seed;
    }
    Ok(loaded)
}

/// Parses `A..B` into a seed range.
pub fn parse_seed_range(text: &str) -> Result<std::ops::Range<u64>, String> {
    crate::sim::shard::parse_seed_range(text).map_err(|e| e.to_string())
}

/// `upsim sweep SCENARIO --seeds A..B [--jobs N] [--no-shrink] [--out DIR]`
/// (and `dist`'s `--shard`, `--results`, `--check-determinism`):
/// runs every seed, prints a summary; each failing seed prints the command
/// that replays it, and the first failing seed's fault schedule is shrunk
/// and written as a scenario file that `upsim run FILE` replays.
pub fn sweep_command(
    scenario: &str,
    seeds: &str,
    jobs: usize,
    shrink: bool,
    out_dir: &str,
    progress: bool,
    dist: &SweepDist,
) -> Outcome {
    use crate::sim::{RunOptions, Scenario};
    let seeds = match parse_seed_range(seeds) {
        Ok(s) => s,
        Err(e) => return Outcome::usage(e),
    };
    let plan = match dist.plan(scenario, seeds.clone(), out_dir) {
        Ok(p) => p,
        Err(e) => return Outcome::usage(e),
    };
    let template = match Scenario::builtin(scenario, 0) {
        Some(_) => None,
        None => match load_scenario_file(scenario) {
            Ok(s) => Some(s),
            Err(e) => return Outcome::usage(e),
        },
    };
    let make = |seed: u64| match &template {
        Some(t) => Scenario { seed, ..t.clone() },
        None => Scenario::builtin(scenario, seed).expect("checked above: a built-in name"),
    };
    let total = plan.seeds().len();
    let started = std::time::Instant::now();
    let last_shown = std::sync::atomic::AtomicU64::new(u64::MAX);
    let tick = |done: u64, failed: usize| {
        if progress && last_shown.swap(done, std::sync::atomic::Ordering::SeqCst) != done {
            let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-9);
            eprint!(
                "\r[sweep {scenario}] {done}/{total} seeds, {failed} failed, {rate:.1} seeds/s   "
            );
        }
    };
    let summary = plan.sweep(&make, jobs, &RunOptions::default(), &tick);
    if progress {
        eprintln!();
    }
    let mut out = summary_lines(
        &format!(
            "{scenario} seeds {}..{}{}",
            seeds.start,
            seeds.end,
            plan.shard_note()
        ),
        &summary,
    );
    let shrinkable = summary
        .failures
        .iter()
        .find(|f| sweep_dist::Plan::shrinkable(f));
    if let Some(first) = summary.failures.first() {
        out.push_str(&picture_of_failure(&make(first.seed), out_dir));
    }
    if let (Some(first), true) = (shrinkable, shrink) {
        out.push_str(&shrink_and_save(&make(first.seed), out_dir));
    }
    // Required probes: those of a built-in swarm or crowd (a file, or
    // another built-in, is one world that reaches what it reaches); a
    // shard's are judged by the merge.
    let required = |p: crate::coverage::Probe| {
        template.is_none() && plan.judges_coverage() && p.required_in(scenario)
    };
    out.push_str("probe coverage:\n");
    out.push_str(&summary.coverage.render(&required));
    let (footer, results_lost) = plan.footer(summary.seeds_run);
    out.push_str(&footer);
    let stderr = missed_probes_line(scenario, &seeds, &summary.missed(&required));
    Outcome {
        stdout: out,
        stderr,
        code: if summary.passed(&required) && !results_lost {
            EXIT_OK
        } else {
            EXIT_FAILED
        },
    }
}

/// A sweep's first line (`what`: scenario, range, shard), then each
/// failing seed with the command that replays it and its violations.
fn summary_lines(what: &str, summary: &crate::sim::sweep::Summary) -> String {
    let mut out = format!(
        "sweep {what} on {} jobs: {} run, {} failed, {:.2} s wall, {:.2} seeds/s\n",
        summary.jobs,
        summary.seeds_run,
        summary.failures.len(),
        summary.wall.as_secs_f64(),
        summary.seeds_per_second()
    );
    for f in &summary.failures {
        out.push_str(&format!(
            "FAILED seed {}: replay: {}\n",
            f.seed,
            f.report.replay_command()
        ));
        for v in &f.report.violations {
            out.push_str(&format!("  {}: {}\n", v.check, v.detail));
        }
    }
    out
}

/// The sweep's failure for required probes no seed hit, or nothing.
fn missed_probes_line(
    scenario: &str,
    seeds: &std::ops::Range<u64>,
    missed: &[crate::coverage::Probe],
) -> String {
    if missed.is_empty() {
        return String::new();
    }
    let names: Vec<&str> = missed.iter().map(|p| p.name()).collect();
    format!(
        "FAILED coverage: {} required probe(s) never hit by {scenario} seeds {}..{}: {}\n",
        missed.len(),
        seeds.start,
        seeds.end,
        names.join(", ")
    )
}

/// Reads a scenario file (TOML, or JSON if it ends in `.json`).
pub fn load_scenario_file(path: &str) -> Result<crate::sim::Scenario, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "no scenario {path:?}: built-in scenarios are {}; otherwise give a scenario file ({e})",
            crate::sim::BUILTIN_SCENARIOS.join(", ")
        )
    })?;
    let scenario: crate::sim::Scenario = if path.ends_with(".json") {
        serde_json::from_str(&text).map_err(|e| format!("scenario {path}: {e}"))?
    } else {
        toml::from_str(&text).map_err(|e| format!("scenario {path}: {e}"))?
    };
    scenario
        .validate()
        .map_err(|e| format!("scenario {path}: {e}"))?;
    Ok(scenario)
}

/// Shrinks `failing`'s schedule and writes the minimal failure to
/// `out_dir`; says where, or why it could not.
fn shrink_and_save(failing: &crate::sim::Scenario, out_dir: &str) -> String {
    use crate::sim::sweep::{run_fails, shrink as shrink_schedule};
    let shrunk = shrink_schedule(failing, &run_fails);
    let dir = std::path::Path::new(out_dir);
    let path = dir.join(format!(
        "upsim-shrunk-{}-{}.json",
        failing.name, failing.seed
    ));
    let created = match ensure_dir(dir) {
        Ok(created) => created,
        Err(e) => return e,
    };
    let text = serde_json::to_string_pretty(&shrunk.scenario).expect("scenarios always serialise");
    match std::fs::write(&path, text) {
        Ok(()) => format!(
            "{created}shrunk seed {}: {} → {} faults, {} → {} fault points in {} runs\nreplay the minimal failure: cargo run --release -- run {}\n",
            failing.seed,
            shrunk.faults_before,
            shrunk.scenario.faults.len(),
            shrunk.fault_points_before,
            shrunk.scenario.buggify.len(),
            shrunk.runs,
            path.display()
        ),
        Err(e) => format!("cannot write the shrunk scenario to {}: {e}\n", path.display()),
    }
}

/// Creates `dir` if it is missing, so that a sweep's first failure is not
/// lost to it (a regression test's subject: `--out` used to need one);
/// says so if it did.
fn ensure_dir(dir: &std::path::Path) -> Result<String, String> {
    if dir.is_dir() {
        return Ok(String::new());
    }
    std::fs::create_dir_all(dir)
        .map(|()| format!("created directory {}\n", dir.display()))
        .map_err(|e| format!("cannot create {}: {e}\n", dir.display()))
}

/// Runs `failing` again with its timeline and writes its picture to
/// `out_dir` (`upsim-fail-NAME-SEED.html`); says where, or why not.
fn picture_of_failure(failing: &crate::sim::Scenario, out_dir: &str) -> String {
    let dir = std::path::Path::new(out_dir);
    let created = match ensure_dir(dir) {
        Ok(created) => created,
        Err(e) => return e,
    };
    let path = dir.join(format!("upsim-fail-{}-{}.html", failing.name, failing.seed));
    let options = crate::sim::RunOptions {
        timeline: true,
        ..crate::sim::RunOptions::default()
    };
    let (report, trace) = match crate::sim::run(failing, &options) {
        Ok(ran) => ran,
        Err(e) => return format!("cannot draw seed {}: {e}\n", failing.seed),
    };
    match write_picture(&path.to_string_lossy(), failing, &report, &trace) {
        Ok(()) => format!(
            "{created}picture of seed {} ({}): {}\n",
            failing.seed,
            if report.passed {
                "passed when run again alone"
            } else {
                "failed again"
            },
            path.display()
        ),
        Err(e) => format!("{e}\n"),
    }
}

/// `upsim config show P`: the profile as TOML.
pub fn config_show_command(profile: &str) -> Outcome {
    match Profile::load(profile) {
        Ok(p) => Outcome::ok(p.to_toml()),
        Err(e) => Outcome::usage(e),
    }
}

/// `upsim config check FILE`: validates a profile file.
pub fn config_check_command(path: &str) -> Outcome {
    match Profile::load(path) {
        Ok(p) => Outcome::ok(format!("profile {} ({path}) is valid\n", p.name)),
        Err(e @ ProfileError::Invalid { .. }) | Err(e @ ProfileError::Parse { .. }) => Outcome {
            stdout: String::new(),
            stderr: format!("upsim: {e}\n"),
            code: EXIT_FAILED,
        },
        Err(e) => Outcome::usage(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagnose_prod_fails_with_the_memory_cause() {
        let o = diagnose_command("prod", None, false);
        assert_eq!(o.code, EXIT_FAILED);
        assert!(
            o.stdout.contains("memory availability        FAIL"),
            "{}",
            o.stdout
        );
        assert!(o.stdout.contains("80.2 % of memory in use"), "{}", o.stdout);
        let o = diagnose_command("dev", None, false);
        assert_eq!(o.code, EXIT_OK, "{}", o.stdout);
        assert_eq!(diagnose_command("nope", None, false).code, EXIT_USAGE);
    }

    #[test]
    fn config_diff_names_the_field_that_rejects() {
        let o = config_diff_command("dev", "prod");
        assert_eq!(o.code, EXIT_OK);
        assert!(o.stdout.contains("3 field(s) differ"), "{}", o.stdout);
        let line = o
            .stdout
            .lines()
            .find(|l| l.contains("memory_limit_percent"))
            .unwrap_or_default();
        assert!(line.contains("100") && line.contains("80"), "{line}");
        assert!(
            line.contains("admitted → rejected (memory_pressure)"),
            "{line}"
        );
        let line = o
            .stdout
            .lines()
            .find(|l| l.contains("upload_limits_enabled"))
            .unwrap_or_default();
        assert!(line.contains("no change"), "{line}");
        assert!(
            o.stdout
                .contains("consequence: prod rejects every upload, whatever its size"),
            "{}",
            o.stdout
        );
    }

    #[test]
    fn config_check_reports_bad_files() {
        let dir = std::env::temp_dir().join(format!("upsim-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let bad = dir.join("bad.toml");
        std::fs::write(
            &bad,
            Profile::prod()
                .to_toml()
                .replace("chunk_size_bytes = 8388608", "chunk_size_bytes = 1000"),
        )
        .expect("write");
        let o = config_check_command(&bad.to_string_lossy());
        assert_eq!(o.code, EXIT_FAILED);
        assert!(o.stderr.contains("chunk_size_bytes"), "{}", o.stderr);
        let good = dir.join("good.toml");
        std::fs::write(&good, Profile::prod().to_toml()).expect("write");
        assert_eq!(config_check_command(&good.to_string_lossy()).code, EXIT_OK);
        std::fs::remove_dir_all(&dir).ok();
    }
}
