//! The step loop: drives a built world tick by tick until every client is
//! done, the liveness bound passes, or the simulation stops.
//!
//! Each iteration, in this order (the order is part of the trace):
//! 1. At the end of the safety phase, fault points go off and the trace
//!    records `liveness_phase`.
//! 2. Past the liveness bound, the run ends with a `liveness` violation.
//! 3. Every scheduled action now due is applied and recorded.
//! 4. turmoil advances one tick. If every client is done, the backend gets
//!    a bounded drain and the run ends; if the simulation failed, the run
//!    ends with a `liveness` violation.
//! 5. The oracle samples admission's invariants and what the backend
//!    buffers (against the lock-step window model too), and takes the
//!    lock-step models' findings.
//!    With a timeline (the run's picture), the state is sampled into it.
//! 6. About every 10 simulated seconds, progress is reported.

use super::oracle::Oracle;
use super::runner::RunProgress;
use super::scenario::Scenario;
use super::schedule::{self, Schedule};
use super::timeline::Timeline;
use super::world::{lock, World};
use crate::buggify::{self, Site};
use crate::trace::Event;
use std::collections::BTreeMap;

/// After the clients finish, how long the backend may take to release what
/// it still holds before the end-of-run checks.
const DRAIN_MS: u64 = 120_000;
/// Simulated time between progress reports.
const PROGRESS_EVERY_MS: u64 = 10_000;

/// How the loop ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Stepped {
    /// Every client finished (as opposed to a run cut short).
    pub finished: bool,
    /// Faults injected, by kind.
    pub faults_injected: BTreeMap<String, u32>,
    /// How often each fault point fired during the safety phase.
    pub buggify_fired: BTreeMap<Site, u32>,
    /// Most bytes the backend buffered at once (kept out of the report's
    /// JSON, whose snapshots must not change).
    pub buffered_bytes_peak: u64,
    /// The run's state over time, when asked for.
    pub timeline: Option<Timeline>,
}

/// The loop's state.
pub(super) struct Stepper<'s> {
    scenario: &'s Scenario,
    progress: Option<RunProgress>,
    schedule: Schedule,
    faults_injected: BTreeMap<String, u32>,
    /// When progress is next reported.
    next_progress_ms: u64,
    /// Every file's size, summed (progress's denominator).
    total_bytes: u64,
    /// Whether the safety phase (faults on) is still running.
    safety: bool,
    buggify_fired: BTreeMap<Site, u32>,
    /// Most bytes the backend buffered at once (measured, not reserved).
    buffered_bytes_peak: u64,
    /// Sampled after every step when the run's picture is wanted.
    timeline: Option<Timeline>,
}

/// Simulated time since the start.
pub(super) fn elapsed_ms(world: &World<'_>) -> u64 {
    u64::try_from(world.sim.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl<'s> Stepper<'s> {
    /// A loop over `scenario`'s `schedule`, reporting to `progress`.
    pub fn new(
        scenario: &'s Scenario,
        schedule: Schedule,
        progress: Option<RunProgress>,
        timeline: Option<Timeline>,
    ) -> Self {
        Self {
            scenario,
            progress,
            schedule,
            faults_injected: BTreeMap::new(),
            next_progress_ms: 0,
            total_bytes: scenario.files.iter().map(|f| f.size_bytes).sum(),
            safety: true,
            buggify_fired: BTreeMap::new(),
            buffered_bytes_peak: 0,
            timeline,
        }
    }

    /// Runs the loop to its end, with the fault points drawn from
    /// `buggify_seed` active during the safety phase.
    pub fn run(mut self, world: &mut World<'_>, oracle: &mut Oracle, buggify_seed: u64) -> Stepped {
        buggify::install(&self.scenario.buggify, buggify_seed);
        let finished = loop {
            if let Some(finished) = self.step(world, oracle) {
                break finished;
            }
        };
        if self.safety {
            self.buggify_fired = buggify::stop();
        }
        Stepped {
            finished,
            faults_injected: self.faults_injected,
            buggify_fired: self.buggify_fired,
            buffered_bytes_peak: self.buffered_bytes_peak,
            timeline: self.timeline,
        }
    }

    /// One iteration (see the module docs); `Some(finished)` when the loop
    /// ends.
    fn step(&mut self, world: &mut World<'_>, oracle: &mut Oracle) -> Option<bool> {
        let now_ms = elapsed_ms(world);
        // 1.
        self.enter_liveness_if_due(world, now_ms);
        // 2.
        if !self.safety && now_ms > self.scenario.safety_ms + self.scenario.liveness_bound_ms {
            self.flag_overdue(world, oracle, now_ms);
            return Some(false);
        }
        // 3.
        while let Some(action) = self.schedule.next_due(now_ms) {
            let name = schedule::apply(world, action, &mut self.faults_injected);
            world
                .trace
                .record_at("runner", now_ms, Event::Fault { fault: name });
        }
        // 4.
        match world.sim.step() {
            Ok(true) => {
                drain(world, now_ms + DRAIN_MS);
                take_findings(world, oracle);
                return Some(true);
            }
            Ok(false) => {}
            Err(e) => {
                oracle.flag("liveness", format!("the simulation stopped: {e}"));
                return Some(false);
            }
        }
        // 5.
        if let Some(a) = world.shared.admission() {
            oracle.sample(&*a, now_ms);
            let gauge = lock(&world.shared.buffers).clone();
            if let Some(gauge) = gauge {
                let reserved_bytes = a.state().ledger.reserved_bytes;
                let buffered_bytes =
                    super::buffers::check(oracle, &gauge.uploads(), reserved_bytes, now_ms);
                self.buffered_bytes_peak = self.buffered_bytes_peak.max(buffered_bytes);
                let model = lock(&world.shared.window_model).clone();
                if let Some(model) = model {
                    model.step(&gauge);
                }
            }
        }
        take_findings(world, oracle);
        if let Some(timeline) = &mut self.timeline {
            record(timeline, world, oracle, now_ms);
        }
        // 6.
        self.report_progress(world, now_ms);
        None
    }

    /// The liveness phase: faults and fault points off, and every upload
    /// must end within the bound.
    fn enter_liveness_if_due(&mut self, world: &World<'_>, now_ms: u64) {
        if self.safety && now_ms >= self.scenario.safety_ms {
            self.safety = false;
            self.buggify_fired = buggify::stop();
            world.trace.record_at(
                "runner",
                now_ms,
                Event::Fault {
                    fault: "liveness_phase".into(),
                },
            );
        }
    }

    fn flag_overdue(&self, world: &World<'_>, oracle: &mut Oracle, now_ms: u64) {
        let pending = lock(&world.shared.results)
            .iter()
            .filter(|r| r.is_none())
            .count();
        oracle.flag(
            "liveness",
            format!(
                "{pending} upload(s) still running {} ms after the faults stopped (bound {} ms)",
                now_ms - self.scenario.safety_ms,
                self.scenario.liveness_bound_ms
            ),
        );
    }

    fn report_progress(&mut self, world: &World<'_>, now_ms: u64) {
        if now_ms >= self.next_progress_ms {
            self.next_progress_ms = now_ms + PROGRESS_EVERY_MS;
            if let Some(progress) = &self.progress {
                progress(
                    now_ms,
                    lock(&world.shared.committed).iter().sum(),
                    self.total_bytes,
                );
            }
        }
    }
}

/// The state after a step, and what the oracle has found so far, into the
/// run's timeline.
fn record(timeline: &mut Timeline, world: &World<'_>, oracle: &Oracle, now_ms: u64) {
    if let Some(a) = world.shared.admission() {
        timeline.sample(now_ms, &a.state().ledger, &lock(&world.shared.committed));
    }
    timeline.place_violations(now_ms, &oracle.violations);
}

/// The lock-step models' findings, to the oracle, each under its check.
fn take_findings(world: &World<'_>, oracle: &mut Oracle) {
    use super::lockstep::{drive_ranges, window};
    let shared = &world.shared;
    for (check, findings) in [
        (super::lockstep::CHECK, &shared.model_findings),
        (window::CHECK, &shared.window_findings),
        (drive_ranges::CHECK, &shared.ranges_findings),
    ] {
        for finding in findings.take() {
            oracle.flag(check, finding);
        }
    }
}

/// Every client is done. Drain: give the backend until `until_ms` to
/// release what it still holds (a late release is allowed; a leak is not).
fn drain(world: &mut World<'_>, until_ms: u64) {
    loop {
        let idle = world
            .shared
            .admission()
            .is_none_or(|a| a.state().ledger.is_idle());
        if idle || elapsed_ms(world) >= until_ms || world.sim.step().is_err() {
            break;
        }
    }
}
