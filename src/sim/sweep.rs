//! Sweeps and shrinking.
//!
//! [`sweep`] runs a range of seeds of one scenario on worker threads (each
//! simulation single-threaded and deterministic, so the result of a seed
//! does not depend on which worker ran it or when). A failing seed is
//! reported with the command that replays it, and [`shrink`] reduces its
//! fault schedule (and fault points) by delta debugging to a minimal one
//! that still fails, returned as a scenario that `upsim run FILE` accepts.
//!
//! A sweep also adds up every run's [coverage probes](crate::coverage): a
//! probe required of the scenario that no seed hit fails the sweep (see
//! [`Summary::passed`]), even when every seed passed its checks.

use super::runner::{run, RunError, RunOptions};
use super::scenario::Scenario;
use super::shard::SeedSet;
use super::Report;
use crate::coverage::{Coverage, Probe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Most simulation runs one shrink may spend.
pub const SHRINK_RUNS_MAX: usize = 96;

/// A seed that failed.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The seed.
    pub seed: u64,
    /// Its report.
    pub report: Report,
}

/// What a sweep found.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Seeds run.
    pub seeds_run: u64,
    /// Failing seeds, in seed order.
    pub failures: Vec<Failure>,
    /// Wall time.
    pub wall: Duration,
    /// Worker threads used.
    pub jobs: usize,
    /// Every run's probes, added up (failing seeds included).
    pub coverage: Coverage,
}

impl Summary {
    /// Seeds per wall second.
    pub fn seeds_per_second(&self) -> f64 {
        self.seeds_run as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// The probes `required` names that no seed hit.
    pub fn missed(&self, required: &dyn Fn(Probe) -> bool) -> Vec<Probe> {
        self.coverage.missed(required)
    }

    /// Every seed passed and every probe `required` names was hit.
    pub fn passed(&self, required: &dyn Fn(Probe) -> bool) -> bool {
        self.failures.is_empty() && self.missed(required).is_empty()
    }
}

/// One seed's run, as the worker that ran it tells [`Each::done`].
pub struct SeedRun<'a> {
    /// The seed.
    pub seed: u64,
    /// Its report, or why it could not run.
    pub ran: &'a Result<Report, RunError>,
    /// Wall time of the run.
    pub wall: Duration,
}

/// How a sweep runs each seed, and who hears of each.
pub struct Each<'a> {
    /// Runs one seed's scenario (in this process: [`run`]).
    pub run: &'a (dyn Fn(&Scenario) -> Result<Report, RunError> + Sync),
    /// Told of every seed as it ends, on the worker that ran it (a results
    /// file writes its line).
    pub done: &'a (dyn Fn(&SeedRun<'_>) + Sync),
}

/// Runs `make(seed)` for every seed in `seeds` on `jobs` threads. `tick` is
/// called about every second with (seeds done, failures so far).
pub fn sweep(
    make: &(dyn Fn(u64) -> Scenario + Sync),
    seeds: std::ops::Range<u64>,
    jobs: usize,
    options: &RunOptions,
    tick: &(dyn Fn(u64, usize) + Sync),
) -> Summary {
    let here = |s: &Scenario| run(s, options).map(|(report, _)| report);
    let each = Each {
        run: &here,
        done: &|_| {},
    };
    sweep_each(make, &SeedSet::from(seeds), jobs, &each, tick)
}

/// [`sweep`] over a [`SeedSet`] (a shard's share of a range), each seed
/// run and reported as `each` says.
pub fn sweep_each(
    make: &(dyn Fn(u64) -> Scenario + Sync),
    seeds: &SeedSet,
    jobs: usize,
    each: &Each<'_>,
    tick: &(dyn Fn(u64, usize) + Sync),
) -> Summary {
    let started = Instant::now();
    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let failing = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    let coverage = Mutex::new(Coverage::default());
    let jobs = jobs.max(1);
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::SeqCst);
                let Some(seed) = seeds.nth(index) else {
                    break;
                };
                let scenario = make(seed);
                let run_started = Instant::now();
                let ran = (each.run)(&scenario);
                (each.done)(&SeedRun {
                    seed,
                    ran: &ran,
                    wall: run_started.elapsed(),
                });
                if let Ok(report) = &ran {
                    lock(&coverage).add(&report.probes);
                }
                let passed = match ran {
                    Ok(report) if report.passed => true,
                    Ok(report) => {
                        lock(&failures).push(Failure { seed, report });
                        false
                    }
                    Err(e) => {
                        tracing::error!(seed, error = %e, "scenario could not run");
                        false
                    }
                };
                if !passed {
                    failing.fetch_add(1, Ordering::SeqCst);
                }
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
        // The calling thread reports progress until the workers are done.
        let total = seeds.len();
        while done.load(Ordering::SeqCst) < total {
            std::thread::sleep(Duration::from_millis(250));
            tick(done.load(Ordering::SeqCst), failing.load(Ordering::SeqCst));
        }
    });
    let mut failures = failures
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    failures.sort_by_key(|f| f.seed);
    Summary {
        seeds_run: done.load(Ordering::SeqCst),
        failures,
        wall: started.elapsed(),
        jobs,
        coverage: coverage
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner),
    }
}

/// A worker's lock: a panicking worker leaves the data usable (each entry
/// is pushed whole).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What shrinking did.
#[derive(Debug, Clone)]
pub struct Shrunk {
    /// The minimal failing scenario found.
    pub scenario: Scenario,
    /// Faults before and after.
    pub faults_before: usize,
    /// Fault points before and after.
    pub fault_points_before: usize,
    /// Simulation runs spent.
    pub runs: usize,
}

/// Delta-debugs `scenario`'s fault schedule, then its fault points, down to
/// a 1-minimal set that still `fails` (removing any one more makes it pass,
/// within [`SHRINK_RUNS_MAX`] runs).
pub fn shrink(scenario: &Scenario, fails: &dyn Fn(&Scenario) -> bool) -> Shrunk {
    let runs = Arc::new(AtomicUsize::new(0));
    let try_fails = |s: &Scenario| {
        runs.fetch_add(1, Ordering::SeqCst);
        fails(s)
    };
    let budget_left = || runs.load(Ordering::SeqCst) < SHRINK_RUNS_MAX;
    let mut best = scenario.clone();
    // ddmin over the faults (Zeller): try dropping each of n chunks; on
    // success keep the rest and coarsen, else refine.
    let mut n = 2usize;
    while best.faults.len() >= 2 && budget_left() {
        let len = best.faults.len();
        let chunk = len.div_ceil(n);
        let mut reduced = false;
        for start in (0..len).step_by(chunk) {
            if !budget_left() {
                break;
            }
            let mut candidate = best.clone();
            candidate.faults.drain(start..(start + chunk).min(len));
            if try_fails(&candidate) {
                best = candidate;
                n = (n - 1).max(2);
                reduced = true;
                break;
            }
        }
        if !reduced {
            if n >= len {
                break;
            }
            n = (2 * n).min(len);
        }
    }
    // A single remaining fault: is it needed at all?
    if best.faults.len() == 1 && budget_left() {
        let mut candidate = best.clone();
        candidate.faults.clear();
        if try_fails(&candidate) {
            best = candidate;
        }
    }
    // Then each fault point, one at a time.
    let mut i = 0;
    while i < best.buggify.len() && budget_left() {
        let mut candidate = best.clone();
        candidate.buggify.remove(i);
        if try_fails(&candidate) {
            best = candidate;
        } else {
            i += 1;
        }
    }
    Shrunk {
        faults_before: scenario.faults.len(),
        fault_points_before: scenario.buggify.len(),
        runs: runs.load(Ordering::SeqCst),
        scenario: best,
    }
}

/// Whether a run of `scenario` breaks any check.
pub fn run_fails(scenario: &Scenario) -> bool {
    !matches!(run(scenario, &RunOptions::default()), Ok((report, _)) if report.passed)
}
