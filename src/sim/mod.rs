//! Deterministic simulation: scenarios, the runner, the oracle, reports.
//!
//! - [`scenario`]: the world as data (profile, memory, files, links,
//!   faults, expectation), and its validation.
//! - [`builtin`]: the scenarios known by name (`reference`,
//!   `reference-prod`, `smoke`, and `crowd`/`swarm` from [`swarm`]).
//! - [`runner`]: one run, phase by phase, from a scenario to its report.
//! - `seeds`: every seed of a run, drawn from the one root RNG.
//! - `world`: turmoil hosts `drive`, `backend`, `clients`, their links,
//!   and the slots through which they hand the runner what it checks.
//! - `schedule`: a scenario's faults as timed actions.
//! - `stepper`: the step loop (phases, faults, drain, oracle samples).
//! - `panics`: panics inside simulated hosts, recorded for the oracle.
//! - [`swarm`]: scenarios drawn from a seed: `crowd` and `swarm`.
//! - [`sweep`]: seed ranges on worker threads; shrinking a failing
//!   schedule by delta debugging.
//! - [`shard`]: seed ranges and their `K/N` shards (seed mod N).
//! - [`sweep_results`]: a sweep's results file, a JSON line per seed.
//! - [`sweep_merge`]: shards' results files put back together.
//! - [`determinism`]: each seed twice in fresh processes, compared.
//! - [`oracle`]: the checks, apart from the driver.
//! - `accounting`: the oracle's checks on admission's books (one admission
//!   per client token, quota charged only for grants, refunds).
//! - [`progress`]: clients following their uploads' event streams (with
//!   [`Scenario::follow_events`]), and what they saw; `progress_checks`,
//!   the end checks on it.
//! - [`report`]: what a run produced.
//! - [`timeline`]: a run's state over simulated time, sampled each step
//!   into a bounded number of buckets (with `RunOptions::timeline`).
//! - [`picture`]: a run as one self-contained HTML page (inline SVG): its
//!   timeline, faults, retries and violations (`upsim run --html`).
//! - [`baseline`]: the same bytes generated, copied and checksummed with no
//!   system around them, to measure the system's overhead.

mod accounting;
pub mod baseline;
mod buffers;
pub mod builtin;
pub mod determinism;
pub mod lockstep;
pub mod oracle;
mod panics;
pub mod picture;
pub mod progress;
mod progress_checks;
pub mod report;
pub mod runner;
pub mod scenario;
mod schedule;
mod seeds;
pub mod shard;
mod stepper;
pub mod swarm;
pub mod sweep;
pub mod sweep_merge;
pub mod sweep_results;
pub mod timeline;
mod world;

pub use builtin::BUILTIN_SCENARIOS;
pub use report::Report;
pub use runner::{run, RunError, RunOptions};
pub use scenario::{
    DriveOAuth, Expectation, Fault, FileSpec, Links, Protocol, Scenario, ScheduledFault,
};
