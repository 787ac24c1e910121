//! Deterministic simulation: scenarios, the runner, the oracle, reports.
//!
//! - [`scenario`]: the world as data (profile, memory, files, links,
//!   faults, expectation); built-in `reference`, `reference-prod`, `smoke`.
//! - [`runner`]: turmoil hosts `drive`, `backend`, `client<i>`; the fault
//!   schedule; one seed for everything.
//! - [`swarm`]: scenarios drawn from a seed: `crowd` and `swarm`.
//! - [`sweep`]: seed ranges on worker threads; shrinking a failing
//!   schedule by delta debugging.
//! - [`oracle`]: the checks, apart from the driver.
//! - [`report`]: what a run produced.
//! - [`baseline`]: the same bytes generated, copied and checksummed with no
//!   system around them, to measure the system's overhead.

pub mod baseline;
pub mod oracle;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod swarm;
pub mod sweep;

pub use report::Report;
pub use runner::{run, RunError, RunOptions};
pub use scenario::{Expectation, Fault, FileSpec, Links, Scenario, ScheduledFault};
