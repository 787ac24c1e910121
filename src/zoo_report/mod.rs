//! `upsim zoo`: every mutant of the bug zoo, and production, through the
//! harness's checks; a table of what caught what.
//!
//! The subjects ([`subjects`]) are production, the seven admission
//! mutants of [`checks::zoo`](crate::checks::zoo) and the backend's five
//! [`Slip`](crate::backend::Slip)s. The checks are the loom
//! models ([`checks::loom_models`]), the proptest model ([`checks::model`])
//! and simulations judged by the oracle ([`sim::run`]). A mutant runs
//! through the checks that apply to it, **cheapest first, stopping at the
//! first that catches it**: the table then says which check is the cheapest
//! net for that bug, and the whole zoo stays within its time budget.
//! Production runs every check and must pass them all; a check that passes
//! production but no longer catches its mutant fails the zoo, so the zoo is
//! also a test of the checks.
//!
//! Everything is deterministic (loom's exploration order, a fixed proptest
//! seed, the simulations' seeds), so the table, wall times aside, is a
//! snapshot.

mod checks;
mod scenarios;
mod subjects;

pub use checks::{checks, Check, ZOO_MODEL_RUN};
pub use scenarios::{bit_flips, drive_fails, lost_creates, reserve_decides, window_edge};
pub use subjects::{subjects, Subject};

use crate::backend::Slip;
use crate::checks::model;
use crate::checks::quietly;
use crate::outcome::{Outcome, EXIT_FAILED, EXIT_OK};
use crate::sim::{run, RunOptions};
use serde::Serialize;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// One check run against one subject.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckRun {
    /// The check's name.
    pub check: String,
    /// Whether it found a bug.
    pub caught: bool,
    /// Interleavings, cases or seeds run (up to the one that caught).
    pub tries: u64,
    /// What `tries` counts.
    pub unit: &'static str,
    /// Wall time, ms.
    pub wall_ms: u64,
    /// What it saw, when it caught something (first line, shortened).
    pub evidence: Option<String>,
}

impl CheckRun {
    /// "1 seed", "408 interleavings".
    fn tries_text(&self) -> String {
        let unit = if self.tries == 1 {
            self.unit.trim_end_matches('s')
        } else {
            self.unit
        };
        format!("{} {unit}", self.tries)
    }
}

/// One subject's line of the table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// The subject.
    pub subject: &'static str,
    /// The bug it re-creates.
    pub bug: &'static str,
    /// The checks run, in order.
    pub runs: Vec<CheckRun>,
    /// Wall time of all of them, ms.
    pub wall_ms: u64,
}

impl Row {
    /// The check that caught it, if any.
    pub fn caught_by(&self) -> Option<&CheckRun> {
        self.runs.iter().find(|r| r.caught)
    }
}

/// The zoo's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ZooReport {
    /// Production first, then each mutant.
    pub rows: Vec<Row>,
}

impl ZooReport {
    /// Production passed every check and every mutant was caught.
    pub fn passed(&self) -> bool {
        self.rows.iter().all(|r| {
            let caught = r.caught_by().is_some();
            if r.subject == "production" {
                !caught
            } else {
                caught
            }
        })
    }

    /// The table; `wall` false replaces wall times with `-` (snapshots).
    pub fn table(&self, wall: bool) -> String {
        let ms = |ms: u64| {
            if wall {
                format!("{:.2} s", ms as f64 / 1e3)
            } else {
                "-".to_owned()
            }
        };
        let ms: &dyn Fn(u64) -> String = &ms;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "upsim zoo: each mutant through the checks, cheapest first, stopping at the first that catches it\n"
        );
        let _ = writeln!(
            out,
            "{:<18} {:<7} {:<75} {:>21} {:>8}",
            "subject", "caught", "by", "until caught", "wall"
        );
        self.subject_rows(&mut out, ms);
        self.evidence_lines(&mut out);
        self.production_lines(&mut out, ms);
        let _ = writeln!(
            out,
            "\n{}",
            if self.passed() {
                "PASS: production passed every check and every mutant was caught"
            } else {
                "FAIL: see the rows marked FAILED or NO"
            }
        );
        out
    }

    /// One row per subject: caught or not, by which check, after how much.
    fn subject_rows(&self, out: &mut String, ms: &dyn Fn(u64) -> String) {
        for row in &self.rows {
            let (caught, by, tries) = match (row.caught_by(), row.subject) {
                (Some(r), _) => (
                    if row.subject == "production" {
                        "FAILED"
                    } else {
                        "yes"
                    },
                    r.check.clone(),
                    r.tries_text(),
                ),
                (None, "production") => (
                    "no",
                    format!("passed all {} checks", row.runs.len()),
                    "-".to_owned(),
                ),
                (None, _) => (
                    "NO",
                    format!("escaped all {} checks", row.runs.len()),
                    "-".to_owned(),
                ),
            };
            let _ = writeln!(
                out,
                "{:<18} {:<7} {:<75} {:>21} {:>8}",
                row.subject,
                caught,
                by,
                tries,
                ms(row.wall_ms)
            );
        }
    }

    /// Each caught bug, and what the check that caught it saw.
    fn evidence_lines(&self, out: &mut String) {
        let _ = writeln!(out, "\nthe bugs, and what the check saw:");
        for row in &self.rows {
            if let Some(r) = row.caught_by() {
                let _ = writeln!(
                    out,
                    "  {:<18} {}\n  {:<18} → {}",
                    row.subject,
                    row.bug,
                    "",
                    r.evidence.as_deref().unwrap_or("")
                );
            }
        }
    }

    /// Production through every check, with each check's cost.
    fn production_lines(&self, out: &mut String, ms: &dyn Fn(u64) -> String) {
        if let Some(production) = self.rows.iter().find(|r| r.subject == "production") {
            let _ = writeln!(
                out,
                "\nproduction through every check, in the zoo's order (cheapest first, by costs measured in the test profile):"
            );
            for r in &production.runs {
                let _ = writeln!(
                    out,
                    "  {:<86} {:>9} {:>8}  {}",
                    r.check,
                    r.tries_text(),
                    ms(r.wall_ms),
                    if r.caught { "FAILED" } else { "pass" }
                );
            }
        }
    }
}

fn elapsed_ms(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Most characters of evidence shown.
const EVIDENCE_CHARS_MAX: usize = 200;

/// `text` on one line (an `assert_eq!` message spans three), at most
/// [`EVIDENCE_CHARS_MAX`] characters.
fn one_line(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut short: String = line.chars().take(EVIDENCE_CHARS_MAX).collect();
    if short.len() < line.len() {
        short.push('…');
    }
    short
}

/// Runs `check` against `subject`; `None` if it does not apply.
pub fn run_check(check: &Check, subject: &Subject) -> Option<CheckRun> {
    let start = Instant::now();
    let (caught, tries, evidence) = match check {
        Check::Loom(model) => {
            let new_gate = subject.loom_gate?;
            let iterations = Arc::new(AtomicUsize::new(0));
            let result = quietly(|| model.check_counting(new_gate, &iterations));
            let tries = iterations.load(Ordering::Relaxed) as u64;
            match result {
                Ok(()) => (false, tries, None),
                Err(message) => (true, tries, Some(one_line(&message))),
            }
        }
        Check::Proptest(run) => {
            if subject.slip != Slip::None {
                // The model sees admission only, which is production's.
                return None;
            }
            let verdict = quietly(|| model::check(subject.admission.clone(), *run));
            match verdict {
                Ok(v) => (
                    v.failure.is_some(),
                    u64::from(v.cases),
                    v.failure.as_deref().map(proptest_evidence),
                ),
                Err(message) => (true, 0, Some(one_line(&message))),
            }
        }
        Check::Sim {
            scenario, seeds, ..
        } => {
            let options = RunOptions {
                admission: Some(subject.admission.clone()),
                backend_slip: subject.slip,
                ..RunOptions::default()
            };
            let mut found = (false, *seeds, None);
            for seed in 0..*seeds {
                let scenario = scenario(seed);
                let report = match run(&scenario, &options) {
                    Ok((report, _trace)) => report,
                    Err(e) => panic!("the zoo's scenario {} is invalid: {e}", scenario.name),
                };
                if let Some(v) = report.violations.first() {
                    let detail = format!("{}: {} (seed {seed})", v.check, one_line(&v.detail));
                    found = (true, seed + 1, Some(detail));
                    break;
                }
            }
            found
        }
    };
    let check_name = match (check, &evidence) {
        // A simulation is caught by one of the oracle's checks: name it.
        (Check::Sim { .. }, Some(e)) if caught => {
            let oracle_check = e.split(':').next().unwrap_or("");
            format!("{}: {oracle_check}", check.name())
        }
        _ => check.name(),
    };
    Some(CheckRun {
        check: check_name,
        caught,
        tries,
        unit: check.unit(),
        wall_ms: elapsed_ms(start),
        evidence,
    })
}

/// proptest's failure text is "Test failed: <message>.\nminimal failing
/// input: <steps>"; the message is the evidence.
fn proptest_evidence(failure: &str) -> String {
    let message = failure.strip_prefix("Test failed: ").unwrap_or(failure);
    let message = message
        .split("\nminimal failing input")
        .next()
        .unwrap_or(message);
    one_line(message.strip_suffix('.').unwrap_or(message))
}

/// Progress: called with a line before and after each check runs.
pub type Progress<'a> = &'a dyn Fn(&str);

/// Runs one subject through `checks` (all of them for production; up to the
/// first that catches it for a mutant).
pub fn run_subject(subject: &Subject, checks: &[Check], progress: Progress<'_>) -> Row {
    let start = Instant::now();
    let mut runs = Vec::new();
    for check in checks {
        progress(&format!("{}: {} …", subject.name, check.name()));
        let Some(run) = run_check(check, subject) else {
            progress("  (does not apply)");
            continue;
        };
        progress(&format!(
            "  {} after {} {} in {:.2} s",
            if run.caught { "caught" } else { "passed" },
            run.tries,
            run.unit,
            run.wall_ms as f64 / 1e3
        ));
        let caught = run.caught;
        runs.push(run);
        // Cheapest first: the first check that catches a mutant is its
        // cheapest net, and nothing after it would add to the table.
        if caught && subject.name != "production" {
            break;
        }
    }
    Row {
        subject: subject.name,
        bug: subject.bug,
        runs,
        wall_ms: elapsed_ms(start),
    }
}

/// The whole zoo.
pub fn run_zoo(progress: Progress<'_>) -> ZooReport {
    let checks = checks();
    ZooReport {
        rows: subjects()
            .iter()
            .map(|s| run_subject(s, &checks, progress))
            .collect(),
    }
}

/// `upsim zoo`.
pub fn zoo_command() -> Outcome {
    let start = Instant::now();
    // The zoo takes a while: say what runs, as `upsim run` does.
    let report = run_zoo(&|line| eprintln!("{line}"));
    let mut stdout = report.table(true);
    let _ = writeln!(stdout, "total wall {:.2} s", start.elapsed().as_secs_f64());
    Outcome {
        stdout,
        stderr: String::new(),
        code: if report.passed() {
            EXIT_OK
        } else {
            EXIT_FAILED
        },
    }
}
