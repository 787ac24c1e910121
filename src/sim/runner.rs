//! The runner: builds a turmoil world from a [`Scenario`], drives it step
//! by step, injects the fault schedule, samples the oracle after every
//! step, and writes the [`Report`].
//!
//! The parts, in the order a run uses them:
//! - [`seeds`](super::seeds): every seed, from the one root RNG;
//! - [`world`](super::world): the hosts, their links, and what they hand back;
//! - [`schedule`](super::schedule): the faults as timed actions;
//! - [`stepper`](super::stepper): the step loop;
//! - [`panics`](super::panics): panics inside hosts, for the oracle;
//! - this file: the run's phases, the end checks and the report.
//!
//! Determinism: one root RNG, seeded by the scenario's seed, draws every
//! other seed (turmoil's network, the drive's ids, the backend's ids and
//! jitter, each client's jitter, each payload) in a fixed order. The hosts
//! run on turmoil's single-threaded, simulated-time runtimes; the only wall
//! clock read is for the report's wall figures, which never reach the
//! trace.

use super::oracle::{Bounds, Oracle};
use super::panics;
use super::report::{peak_rss_bytes, FileOutcome, FileReport, Report, WallFigures};
use super::scenario::Scenario;
use super::schedule::Schedule;
use super::seeds::Seeds;
use super::stepper::{elapsed_ms, Stepped, Stepper};
use super::timeline::Timeline;
use super::world::{lock, ClientCounters, ClientResult, World};
use crate::admission::{production_factory, AdmissionFactory, MemoryBudget};
use crate::backend::Slip;
use crate::drive::DriveControl;
use crate::payload::Payload;
use crate::trace::{Event, Stamped, Trace};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Buffer used to compute a source's checksum.
const DIGEST_BUFFER_BYTES: usize = 8 << 20;

/// A progress callback: (simulated ms, bytes committed by all clients,
/// total bytes).
pub type RunProgress = Arc<dyn Fn(u64, u64, u64) + Send + Sync>;

/// How to run.
#[derive(Clone, Default)]
pub struct RunOptions {
    /// Called about every 10 simulated seconds.
    pub progress: Option<RunProgress>,
    /// The admission implementation (default: the production `Admitter`).
    pub admission: Option<AdmissionFactory>,
    /// The bug zoo's backend bug (default: [`Slip::None`], production).
    pub backend_slip: Slip,
    /// Record the run's state over time into [`Report::timeline`], for
    /// its picture (`upsim run --html`); off in sweeps.
    pub timeline: bool,
}

/// A run that could not be carried out (as opposed to one that failed a
/// check, which is a report with violations).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    /// The scenario does not make sense.
    #[error("invalid scenario: {0}")]
    InvalidScenario(String),
}

/// The upload sources and their checksums (the oracle's reference).
struct Sources {
    /// One per file, in the scenario's order.
    payloads: Vec<Payload>,
    /// Each payload's whole-file checksum, hex.
    checksums: Vec<String>,
    /// Wall time spent computing them (kept out of the simulation's).
    digest_ms: u64,
}

impl Sources {
    fn digest(scenario: &Scenario, seeds: &Seeds) -> Self {
        let digest_start = Instant::now();
        let payloads: Vec<Payload> = scenario
            .files
            .iter()
            .zip(&seeds.files)
            .map(|(f, s)| Payload::new(s.payload, f.size_bytes))
            .collect();
        let checksums = payloads
            .iter()
            .map(|p| p.digest(DIGEST_BUFFER_BYTES).hex())
            .collect();
        let digest_ms = u64::try_from(digest_start.elapsed().as_millis()).unwrap_or(u64::MAX);
        Self {
            payloads,
            checksums,
            digest_ms,
        }
    }
}

/// The oracle's bounds for `scenario`.
fn bounds(scenario: &Scenario) -> Bounds {
    Bounds {
        memory_limit_bytes: MemoryBudget::of(&scenario.profile, &scenario.memory).limit_bytes,
        admission_wait_ms: scenario.admission_wait_bound_ms,
        daily_limit_bytes: scenario
            .profile
            .upload_limits_enabled
            // A run that crosses midnight may charge a limit on each day.
            .then_some(
                scenario
                    .profile
                    .daily_limit_bytes
                    .saturating_mul(scenario.utc_days_spanned()),
            ),
        refund_quota_on_failure: scenario.profile.refund_quota_on_failure,
    }
}

/// Runs `scenario`, returning its report and its full trace.
///
/// # Errors
/// [`RunError::InvalidScenario`] if the scenario does not validate.
pub fn run(scenario: &Scenario, options: &RunOptions) -> Result<(Report, Arc<Trace>), RunError> {
    scenario.validate().map_err(RunError::InvalidScenario)?;
    panics::start_recording();
    let wall_start = Instant::now();
    // 1. Seeds, all drawn from the one root RNG, in a fixed order.
    let seeds = Seeds::draw(scenario);
    // 2. The sources' checksums (the oracle's reference).
    let sources = Sources::digest(scenario, &seeds);
    // 3. The world.
    let factory = options.admission.clone().unwrap_or_else(production_factory);
    let mut world = World::build(
        scenario,
        &seeds,
        &sources.payloads,
        factory,
        options.backend_slip,
    )?;
    crate::coverage::install();
    // 4. The schedule: faults and their recoveries, by time.
    let schedule = Schedule::new(&scenario.faults);
    // 5. Step until every client is done, sampling the oracle each step.
    let bounds = bounds(scenario);
    let timeline = options.timeline.then(|| {
        Timeline::new(
            scenario.duration_max_ms,
            scenario.tick_ms,
            bounds.memory_limit_bytes,
        )
    });
    let mut oracle = Oracle::new(bounds);
    let stepped = Stepper::new(scenario, schedule, options.progress.clone(), timeline).run(
        &mut world,
        &mut oracle,
        seeds.buggify,
    );
    let probes = crate::coverage::stop();
    let simulated_ms = elapsed_ms(&world);
    let simulation_wall = wall_start
        .elapsed()
        .saturating_sub(Duration::from_millis(sources.digest_ms));
    // 6. The oracle's end checks.
    let ended = end_checks(&mut oracle, &world, &stepped, scenario, &sources.checksums);
    let timeline = stepped.timeline.clone().map(|mut t| {
        t.place_violations(simulated_ms, &oracle.violations);
        t
    });
    // 7. The report.
    let wall_s = simulation_wall.as_secs_f64().max(1e-9);
    let wall = WallFigures {
        simulation_ms: u64::try_from(simulation_wall.as_millis()).unwrap_or(u64::MAX),
        source_digest_ms: sources.digest_ms,
        sim_seconds_per_wall_second: (simulated_ms as f64 / 1e3) / wall_s,
        peak_rss_bytes: peak_rss_bytes(),
    };
    let files = file_reports(scenario, &ended, &sources.checksums);
    let report = Report {
        scenario: scenario.name.clone(),
        seed: scenario.seed,
        profile: scenario.profile.name.clone(),
        passed: oracle.violations.is_empty(),
        files,
        total_bytes: scenario.files.iter().map(|f| f.size_bytes).sum(),
        chunk_size_bytes: scenario.profile.chunk_size_bytes,
        faults_injected: stepped.faults_injected,
        retries: retries_by_kind(&ended.events),
        drive: ended.drive.map(|c| c.stats()).unwrap_or_default(),
        backend_boots: world.shared.boots.load(Ordering::SeqCst),
        fault_points_fired: stepped
            .buggify_fired
            .iter()
            .map(|(site, n)| (format!("{site:?}"), *n))
            .collect(),
        simulated_ms,
        peaks: oracle.peaks.clone(),
        trace_events: ended.events.len(),
        trace_hash: world.trace.hash(),
        violations: oracle.violations.clone(),
        wall,
        probes,
        timeline,
    };
    Ok((report, world.trace))
}

/// What the end of a run left behind.
struct Ended {
    /// The whole trace.
    events: Vec<Stamped>,
    /// How each upload ended.
    results: Vec<ClientResult>,
    /// Each completed upload's figures.
    counters: Vec<ClientCounters>,
    /// The drive's controls (its stats), if it started.
    drive: Option<DriveControl>,
}

/// The oracle's end-of-run checks, then the hosts' panics.
fn end_checks(
    oracle: &mut Oracle,
    world: &World<'_>,
    stepped: &Stepped,
    scenario: &Scenario,
    source_checksums: &[String],
) -> Ended {
    let final_state = world.shared.admission().map(|a| a.state().ledger);
    let drive = world.shared.drive_control();
    let commits = drive.as_ref().map(|c| c.commit_log()).unwrap_or_default();
    let events = world.trace.events();
    let results = std::mem::take(&mut *lock(&world.shared.results));
    let paired: Vec<(ClientResult, String)> = results
        .iter()
        .cloned()
        .zip(source_checksums.iter().cloned())
        .collect();
    // A run cut short is checked for safety only: uploads may still hold
    // their slots.
    oracle.finish(
        if stepped.finished {
            final_state.as_ref()
        } else {
            None
        },
        &commits,
        &events,
        &paired,
        &scenario.expect,
    );
    let follow_logs: Vec<_> = world
        .shared
        .follow_logs
        .iter()
        .map(|log| lock(log).clone())
        .collect();
    super::progress_checks::check(oracle, &follow_logs, &events, &results);
    for panic in panics::take() {
        oracle.flag("no_panic", panic);
    }
    let counters = lock(&world.shared.counters).clone();
    Ended {
        events,
        results,
        counters,
        drive,
    }
}

/// Backoffs in the trace, by kind (`what` up to its first `:`), and client
/// restarts as `client_restart` (which the report counted among the
/// retries when the trace recorded them as backoffs).
fn retries_by_kind(events: &[Stamped]) -> BTreeMap<String, u32> {
    let mut retries: BTreeMap<String, u32> = BTreeMap::new();
    for e in events {
        let kind = match &e.event {
            Event::Backoff { what, .. } => what.split(':').next().unwrap_or(what),
            Event::ClientRestart { .. } => "client_restart",
            _ => continue,
        };
        *retries.entry(kind.to_owned()).or_insert(0) += 1;
    }
    retries
}

/// Each file's line in the report.
fn file_reports(
    scenario: &Scenario,
    ended: &Ended,
    source_checksums: &[String],
) -> Vec<FileReport> {
    scenario
        .files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let outcome = match &ended.results[i] {
                Some(Ok(o)) => FileOutcome::Complete {
                    drive_checksum: o.file.digest().unwrap_or_default().to_owned(),
                    checksum_match: o.file.crc64nvme.as_deref()
                        == Some(source_checksums[i].as_str()),
                },
                Some(Err(e)) => FileOutcome::Failed {
                    error: e.to_string(),
                },
                None => FileOutcome::Unfinished,
            };
            let counters = ended.counters[i];
            FileReport {
                user: f.user.to_string(),
                size_bytes: f.size_bytes,
                source_checksum: source_checksums[i].clone(),
                outcome,
                chunks_sent: counters.chunks_sent,
                chunk_failures: counters.chunk_failures,
                sent_bytes: counters.sent_bytes,
            }
        })
        .collect()
}
