//! A sweep's results file (`upsim sweep … --results FILE`): one JSON line
//! per seed, written as each seed finishes, so that a shard that crashes
//! keeps every line it wrote and `upsim sweep merge` can put the shards of
//! one sweep back together.
//!
//! Lines are in the order the seeds finished (workers finish out of
//! order); the merge sorts them by seed. Every line names its sweep
//! (scenario as given, seed range, shard, upsim version), so a merge can
//! refuse to mix sweeps, and carries the run's coverage probes, so the
//! merge can judge coverage over all shards together.

use super::report::Report;
use super::runner::RunError;
use super::shard::{Shard, ShardError};
use crate::coverage::{Hits, Probe};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// This build's version, written on every line.
pub const UPSIM_VERSION: &str = env!("CARGO_PKG_VERSION");

/// How a seed ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeedOutcome {
    /// Every check held.
    Pass,
    /// A check broke, or the seed could not run.
    Fail,
}

/// Where a line's trace hash comes from, and so whom it is comparable
/// with.
///
/// A hash from a fresh process is the one `upsim run SCENARIO --seed S`
/// prints, comparable with any other. A hash from a sweep's worker, in a
/// process that ran other seeds before, may differ from it: tokio numbers
/// tasks process-wide, and a crashed host drops its tasks in an order that
/// follows those numbers (swarm seed 25 does, after seeds 0..25 in one
/// process). Such a hash is what that run produced, but not a replay key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HashFrom {
    /// A fresh process (`--check-determinism`): comparable everywhere.
    FreshProcess,
    /// A sweep worker, after other seeds in the same process.
    SweepProcess,
}

/// One line of a results file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedRecord {
    /// The seed.
    pub seed: u64,
    /// Pass or fail.
    pub outcome: SeedOutcome,
    /// The run's trace hash; `None` if the seed could not run.
    pub trace_hash: Option<String>,
    /// Where the hash comes from.
    pub hash_from: HashFrom,
    /// Wall time of the seed's run (all its runs, with
    /// `--check-determinism`), ms.
    pub wall_ms: u64,
    /// Every broken check, `check: detail`, joined by `; `; `None` when
    /// the seed passed.
    pub violation: Option<String>,
    /// The scenario as given to `upsim sweep` (a built-in name or a file),
    /// so that `upsim run SCENARIO --seed S` replays the seed.
    pub scenario: String,
    /// The whole sweep's seed range, `A..B`.
    pub seeds: String,
    /// The shard that ran the seed, `K/N`.
    pub shard: String,
    /// The upsim version that ran it.
    pub upsim: String,
    /// Coverage probes the run hit, by name, with their counts.
    pub probes: BTreeMap<String, u64>,
}

/// What identifies a sweep: what every line of its results has in common
/// (but the shard's index).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepId {
    /// The scenario as given.
    pub scenario: String,
    /// The whole range.
    pub range: Range<u64>,
    /// The shard this process runs.
    pub shard: Shard,
}

impl SeedRecord {
    /// The line for `seed` of sweep `id`, from its run; `fresh_hash` is
    /// the seed's hash in a fresh process, if it ran in one.
    pub fn of(
        id: &SweepId,
        seed: u64,
        ran: &Result<Report, RunError>,
        wall: Duration,
        fresh_hash: Option<String>,
    ) -> Self {
        let (outcome, trace_hash, violation, probes) = match ran {
            Ok(report) => (
                if report.passed {
                    SeedOutcome::Pass
                } else {
                    SeedOutcome::Fail
                },
                Some(report.trace_hash.clone()),
                (!report.violations.is_empty()).then(|| {
                    let each: Vec<String> = report
                        .violations
                        .iter()
                        .map(|v| format!("{}: {}", v.check, v.detail))
                        .collect();
                    each.join("; ")
                }),
                report
                    .probes
                    .hit()
                    .map(|(p, n)| (p.name().to_owned(), n))
                    .collect(),
            ),
            Err(e) => (
                SeedOutcome::Fail,
                None,
                Some(format!("could not run: {e}")),
                BTreeMap::new(),
            ),
        };
        let hash_from = match fresh_hash {
            Some(_) => HashFrom::FreshProcess,
            None => HashFrom::SweepProcess,
        };
        Self {
            seed,
            outcome,
            trace_hash: fresh_hash.or(trace_hash),
            hash_from,
            wall_ms: u64::try_from(wall.as_millis()).unwrap_or(u64::MAX),
            violation,
            scenario: id.scenario.clone(),
            seeds: format!("{}..{}", id.range.start, id.range.end),
            shard: id.shard.to_string(),
            upsim: UPSIM_VERSION.to_owned(),
            probes,
        }
    }

    /// The shard, parsed.
    ///
    /// # Errors
    /// [`ShardError`] if the line's `shard` is not `K/N`.
    pub fn shard(&self) -> Result<Shard, ShardError> {
        Shard::parse(&self.shard)
    }

    /// The probes, as counts; names this build does not know are returned
    /// apart.
    pub fn hits(&self) -> (Hits, Vec<String>) {
        let mut known = Vec::new();
        let mut unknown = Vec::new();
        for (name, n) in &self.probes {
            match Probe::from_name(name) {
                Some(p) => known.push((p, *n)),
                None => unknown.push(name.clone()),
            }
        }
        (Hits::from_counts(known), unknown)
    }

    /// The command that replays the seed.
    pub fn replay_command(&self) -> String {
        format!(
            "cargo run --release -- run {} --seed {}",
            self.scenario, self.seed
        )
    }
}

/// A results file being written.
#[derive(Debug)]
pub struct ResultsFile {
    path: PathBuf,
    /// Unbuffered: each line reaches the file in one `write` as its seed
    /// ends, so a killed process loses no finished seed.
    file: Mutex<std::fs::File>,
}

/// A results file that could not be written.
#[derive(Debug, thiserror::Error)]
#[error("results file {path}: {source}")]
pub struct ResultsError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub source: std::io::Error,
}

impl ResultsFile {
    /// Creates (or empties) `path`, and its directory if need be (a CI
    /// job's fresh workspace has none): a re-run of a shard replaces its
    /// lines.
    ///
    /// # Errors
    /// [`ResultsError`] if the directory or the file cannot be created.
    pub fn create(path: &Path) -> Result<Self, ResultsError> {
        let error = |source| ResultsError {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(error)?;
        }
        let file = std::fs::File::create(path).map_err(error)?;
        Ok(Self {
            path: path.to_owned(),
            file: Mutex::new(file),
        })
    }

    /// Appends `record` as one line.
    ///
    /// # Errors
    /// [`ResultsError`] if the write fails.
    pub fn write(&self, record: &SeedRecord) -> Result<(), ResultsError> {
        let mut line = serde_json::to_string(record).expect("a seed record always serialises");
        line.push('\n');
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        file.write_all(line.as_bytes())
            .map_err(|source| ResultsError {
                path: self.path.clone(),
                source,
            })
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
