//! `upsim zoo`: every mutant of the bug zoo, and production, through the
//! harness's checks; a table of what caught what.
//!
//! The subjects are production and the seven mutants of
//! [`checks::zoo`](crate::checks::zoo). The checks are the loom
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

use crate::admission::gate::PermitGate;
use crate::admission::sync::{LoomSync, StdSync};
use crate::admission::AdmissionFactory;
use crate::admission::{Admission, Admitter, Limits};
use crate::checks::loom_models::{self, LoomModel, NewGate};
use crate::checks::model::{self, ModelRun};
use crate::checks::quietly;
use crate::checks::rules::Rules;
use crate::checks::zoo::{
    EntryRace, ForgottenReserve, HeuristicRelease, Hoarding, LeakOnCancel, LostWakeup, MaskedError,
};
use crate::outcome::{Outcome, EXIT_FAILED, EXIT_OK};
use crate::sim::scenario::Fault;
use crate::sim::{run, RunOptions, Scenario};
use crate::units::MIB;
use serde::Serialize;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The proptest model's run in the zoo: as many cases as `cargo test`'s
/// run of production, from a fixed seed (the table is a snapshot; `cargo
/// test` draws a fresh seed each time), and a shorter shrink (the zoo needs
/// the verdict, not the smallest example).
pub const ZOO_MODEL_RUN: ModelRun = ModelRun {
    cases: ModelRun::THOROUGH.cases,
    max_shrink_iters: 1_000,
    seed: Some(0x2005),
};

/// One implementation under test.
pub struct Subject {
    /// Its name in the table.
    pub name: &'static str,
    /// The bug it re-creates, in a few words.
    pub bug: &'static str,
    /// Its permit layer on loom's primitives; `None` where the bug lives
    /// above the permit layer (the loom models see only gates).
    pub loom_gate: Option<NewGate>,
    /// The whole admission controller, for the proptest model and the
    /// simulations.
    pub admission: AdmissionFactory,
}

fn admitter_over(new_gate: fn(Limits) -> Arc<dyn PermitGate>) -> AdmissionFactory {
    Arc::new(move |profile, clock, memory| {
        Arc::new(Admitter::with_gate(profile, clock, memory, new_gate)) as Arc<dyn Admission>
    })
}

/// Production, then the six mutants in the order of the report's list.
pub fn subjects() -> Vec<Subject> {
    vec![
        Subject {
            name: "production",
            bug: "none",
            loom_gate: Some(loom_models::production),
            admission: Arc::new(|profile, clock, memory| {
                Arc::new(Admitter::new(profile, clock, memory)) as Arc<dyn Admission>
            }),
        },
        Subject {
            name: "masked-error",
            bug: "every failure becomes a bare rejection",
            loom_gate: None,
            admission: Arc::new(|profile, clock, memory| {
                let inner = Arc::new(Admitter::new(profile, clock, memory));
                Arc::new(MaskedError::new(inner)) as Arc<dyn Admission>
            }),
        },
        Subject {
            name: "heuristic-release",
            bug: "on error, releases if the count is below the maximum",
            loom_gate: Some(|l| HeuristicRelease::<LoomSync>::new(l) as Arc<dyn PermitGate>),
            admission: admitter_over(|l| {
                HeuristicRelease::<StdSync>::new(l) as Arc<dyn PermitGate>
            }),
        },
        Subject {
            name: "leak-on-cancel",
            bug: "a cancelled acquire keeps the permit it took",
            loom_gate: Some(|l| LeakOnCancel::<LoomSync>::new(l) as Arc<dyn PermitGate>),
            admission: admitter_over(|l| LeakOnCancel::<StdSync>::new(l) as Arc<dyn PermitGate>),
        },
        Subject {
            name: "hoarding",
            bug: "holds its global slot while waiting for its user slot",
            loom_gate: Some(|l| Hoarding::<LoomSync>::new(l) as Arc<dyn PermitGate>),
            admission: admitter_over(|l| Hoarding::<StdSync>::new(l) as Arc<dyn PermitGate>),
        },
        Subject {
            name: "entry-race",
            bug: "two first uploads of a user each create its limiter",
            loom_gate: Some(|l| EntryRace::<LoomSync>::new(l) as Arc<dyn PermitGate>),
            admission: admitter_over(|l| EntryRace::<StdSync>::new(l) as Arc<dyn PermitGate>),
        },
        Subject {
            name: "lost-wakeup",
            bug: "a release misses a waiter that is registering",
            loom_gate: Some(|l| LostWakeup::<LoomSync>::new(l) as Arc<dyn PermitGate>),
            admission: admitter_over(|l| LostWakeup::<StdSync>::new(l) as Arc<dyn PermitGate>),
        },
        Subject {
            name: "forgotten-reserve",
            bug: "the memory formula forgets its reserve term",
            // The loom models hand gates their ceilings directly, with no
            // profile and so no reserve to forget.
            loom_gate: None,
            admission: Arc::new(|profile, clock, memory| {
                let reserve_bytes = profile.reserved_memory_bytes;
                Arc::new(Admitter::with_gate(profile, clock, memory, move |l| {
                    ForgottenReserve::<StdSync>::new(l, reserve_bytes) as Arc<dyn PermitGate>
                })) as Arc<dyn Admission>
            }),
        },
    ]
}

/// `smoke` where the reserve decides: the dev profile with 512 MiB kept in
/// reserve, and the opening memory spike leaving 1 MiB of headroom under
/// `limit − reserve − machine use` — less than the 6.4 MiB the file needs,
/// but 513 MiB if the reserve is forgotten. Production refuses the first
/// creates (`memory_pressure`) and completes once the spike ends; every
/// other check passes either way.
pub fn reserve_decides(seed: u64) -> Scenario {
    let mut scenario = Scenario::smoke(seed);
    scenario.name = "reserve-decides".into();
    scenario.profile.reserved_memory_bytes = 512 * MIB;
    let limit_bytes = Rules::of(&scenario.profile).limit_bytes(&scenario.memory);
    let used_bytes = limit_bytes - scenario.profile.reserved_memory_bytes - MIB;
    for f in &mut scenario.faults {
        if let Fault::MemoryPressure {
            available_bytes, ..
        } = &mut f.fault
        {
            *available_bytes = scenario.memory.total_bytes - used_bytes;
        }
    }
    scenario
}

/// A scenario builder: seed → scenario.
type ScenarioOf = fn(u64) -> Scenario;

/// One check.
#[derive(Clone, Copy)]
pub enum Check {
    /// A loom model, on the subject's gate.
    Loom(LoomModel),
    /// The proptest model, on the subject's controller.
    Proptest(ModelRun),
    /// A simulated scenario, on the subject's controller, for each of
    /// `seeds` seeds from 0; judged by the oracle.
    Sim {
        /// The scenario's name.
        name: &'static str,
        /// Builds it for a seed.
        scenario: ScenarioOf,
        /// Seeds to run.
        seeds: u64,
    },
}

impl Check {
    /// Its name in the table.
    pub fn name(&self) -> String {
        match self {
            Self::Loom(m) => format!("loom {}", m.name),
            Self::Proptest(_) => "proptest admission_agrees_with_its_model".to_owned(),
            Self::Sim { name, .. } => format!("sim {name}"),
        }
    }

    fn unit(&self) -> &'static str {
        match self {
            Self::Loom(_) => "interleavings",
            Self::Proptest(_) => "cases",
            Self::Sim { .. } => "seeds",
        }
    }
}

/// Every check, cheapest first: ordered by production's wall time on the
/// 2-core machine, in `cargo test`'s optimised profile (the figures in the
/// comments, seconds, measured while others compiled; `upsim zoo` prints
/// this run's under its table). A mutant stops at the first check that
/// catches it, so the order decides which check the table credits, and
/// keeps the zoo within its budget: the expensive checks only see the
/// mutants the cheap ones let through.
pub fn checks() -> Vec<Check> {
    use loom_models::{
        CONCURRENT_ADMISSIONS, MEMORY_WITH_SLOTS, NO_GLOBAL_SLOT_WHILE_WAITING,
        POLLED_ONCE_THEN_DROPPED,
    };
    vec![
        // 0.12
        Check::Loom(NO_GLOBAL_SLOT_WHILE_WAITING),
        // 0.19
        Check::Loom(POLLED_ONCE_THEN_DROPPED),
        // 0.63
        Check::Loom(MEMORY_WITH_SLOTS),
        // 0.67: 64 MiB, every fault kind; its first creates are refused for
        // memory.
        Check::Sim {
            name: "smoke",
            scenario: Scenario::smoke,
            seeds: 1,
        },
        // ~0.7: smoke where the profile's reserve decides admission.
        Check::Sim {
            name: "reserve-decides",
            scenario: reserve_decides,
            seeds: 1,
        },
        // 0.69
        Check::Proptest(ZOO_MODEL_RUN),
        // 0.74
        Check::Sim {
            name: "crowd",
            scenario: crate::sim::swarm::crowd,
            seeds: 2,
        },
        // 1.86
        Check::Loom(CONCURRENT_ADMISSIONS),
        // 3.04: cheap to simulate, but it checksums the whole 3.38 GB
        // source first (0.7 in release, where it comes before the model
        // above).
        Check::Sim {
            name: "reference-prod",
            scenario: Scenario::reference_prod,
            seeds: 1,
        },
    ]
}

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
