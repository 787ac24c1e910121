//! `upsim sweep`'s options for sweeps beyond one process and one machine —
//! `--shard K/N`, `--results FILE`, `--check-determinism` — and `upsim
//! sweep merge FILES…`.

use crate::outcome::{Outcome, EXIT_FAILED, EXIT_OK};
use crate::sim::determinism::{FreshRuns, CHECK as DETERMINISM};
use crate::sim::shard::{SeedSet, Shard};
use crate::sim::sweep::{sweep_each, Each, Failure, SeedRun, Summary};
use crate::sim::sweep_results::{ResultsError, ResultsFile, SeedRecord, SweepId};
use crate::sim::{run, RunOptions, Scenario};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

/// What `upsim sweep` was asked beyond one process's range.
#[derive(Debug, Clone, Default)]
pub struct SweepDist {
    /// `--shard K/N` (0-based K): run only the seeds `s` with `s mod N ==
    /// K`.
    pub shard: Option<String>,
    /// `--results FILE`: one JSON line per seed, written as each ends.
    pub results: Option<String>,
    /// `--check-determinism`: each seed also run twice in fresh processes,
    /// their trace hashes compared.
    pub check_determinism: bool,
}

/// A sweep ready to run: its seeds, its results file, its fresh runs.
pub struct Plan {
    id: SweepId,
    results: Option<ResultsFile>,
    fresh: Option<FreshRuns>,
    /// The first write that failed (a worker cannot return it).
    write_error: Mutex<Option<ResultsError>>,
    /// Each seed's hash in a fresh process, from its run to its line (at
    /// most one a worker: the worker that ran the seed takes it out).
    fresh_hashes: Mutex<BTreeMap<u64, String>>,
}

impl SweepDist {
    /// Checks the options and opens the results file.
    ///
    /// # Errors
    /// A bad `--shard` (typed [`ShardError`](crate::sim::shard::ShardError),
    /// as text), a results file that cannot be created, or no path to this
    /// binary for `--check-determinism`.
    pub fn plan(
        &self,
        scenario: &str,
        range: std::ops::Range<u64>,
        out_dir: &str,
    ) -> Result<Plan, String> {
        let shard = match &self.shard {
            Some(text) => Shard::parse(text).map_err(|e| format!("--shard: {e}"))?,
            None => Shard::WHOLE,
        };
        let results = match &self.results {
            Some(path) => Some(ResultsFile::create(path.as_ref()).map_err(|e| e.to_string())?),
            None => None,
        };
        let fresh = match self.check_determinism {
            true => Some(FreshRuns {
                binary: std::env::current_exe()
                    .map_err(|e| format!("--check-determinism: no path to this binary: {e}"))?,
                scenario: scenario.to_owned(),
                dir: PathBuf::from(out_dir),
            }),
            false => None,
        };
        if let Some(f) = &fresh {
            std::fs::create_dir_all(&f.dir)
                .map_err(|e| format!("--check-determinism: {}: {e}", f.dir.display()))?;
        }
        Ok(Plan {
            id: SweepId {
                scenario: scenario.to_owned(),
                range,
                shard,
            },
            results,
            fresh,
            write_error: Mutex::new(None),
            fresh_hashes: Mutex::new(BTreeMap::new()),
        })
    }
}

impl Plan {
    /// The seeds this process runs.
    pub fn seeds(&self) -> SeedSet {
        SeedSet::new(self.id.range.clone(), self.id.shard)
    }

    /// Runs the sweep: each seed in this process, then (with
    /// `--check-determinism`) twice in fresh ones; each line written as
    /// its seed ends.
    pub fn sweep(
        &self,
        make: &(dyn Fn(u64) -> Scenario + Sync),
        jobs: usize,
        options: &RunOptions,
        tick: &(dyn Fn(u64, usize) + Sync),
    ) -> Summary {
        let run_seed = |s: &Scenario| {
            let mut ran = run(s, options).map(|(report, _)| report);
            if let (Ok(report), Some(fresh)) = (&mut ran, &self.fresh) {
                if let Some(hash) = fresh.judge(report) {
                    lock(&self.fresh_hashes).insert(s.seed, hash);
                }
            }
            ran
        };
        let done = |seed_run: &SeedRun<'_>| {
            let fresh_hash = lock(&self.fresh_hashes).remove(&seed_run.seed);
            let Some(file) = &self.results else { return };
            let record = SeedRecord::of(
                &self.id,
                seed_run.seed,
                seed_run.ran,
                seed_run.wall,
                fresh_hash,
            );
            if let Err(e) = file.write(&record) {
                lock(&self.write_error).get_or_insert(e);
            }
        };
        let each = Each {
            run: &run_seed,
            done: &done,
        };
        sweep_each(make, &self.seeds(), jobs, &each, tick)
    }

    /// Whether this sweep judges coverage: only a sweep of the whole range
    /// can; a shard's coverage is judged by the merge, over every shard.
    pub fn judges_coverage(&self) -> bool {
        self.id.shard.count() == 1
    }

    /// What the header says of the shard (nothing for a whole range).
    pub fn shard_note(&self) -> String {
        match self.id.shard.count() {
            1 => String::new(),
            _ => format!(" shard {} ({} seeds)", self.id.shard, self.seeds().len()),
        }
    }

    /// Whether `failure` is worth shrinking: a divergence between fresh
    /// runs is not a fault schedule's doing, and every in-process rerun of
    /// the shrinker would pass.
    pub fn shrinkable(failure: &Failure) -> bool {
        failure
            .report
            .violations
            .iter()
            .any(|v| v.check != DETERMINISM)
    }

    /// The closing lines (coverage left to the merge, the results file),
    /// and whether writing the results failed (which fails the sweep: a
    /// shard whose lines are lost did not report its seeds).
    pub fn footer(&self, seeds_run: u64) -> (String, bool) {
        let mut out = String::new();
        if !self.judges_coverage() {
            out.push_str(
                "coverage of a shard is not judged: `upsim sweep merge` judges all shards together\n",
            );
        }
        let failed = lock(&self.write_error).take();
        match (&self.results, &failed) {
            (Some(_), Some(e)) => out.push_str(&format!("FAILED writing results: {e}\n")),
            (Some(file), None) => out.push_str(&format!(
                "results: {seeds_run} line(s) in {}\n",
                file.path().display()
            )),
            (None, _) => {}
        }
        (out, failed.is_some())
    }
}

/// A lock shared with the workers: each holder leaves the data whole.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `upsim sweep merge FILES…`: the summary of one sweep's results files,
/// the replay command of every failure, duplicates and missing seeds, and
/// coverage over every shard. Exit 1 if a seed failed, a seed is missing or
/// replayed differently, or a required probe was missed; 2 if a file cannot
/// be read or holds a line that is not a seed record (named file:line).
pub fn merge_command(files: &[String]) -> Outcome {
    match crate::sim::sweep_merge::merge(files) {
        Ok(merged) => Outcome {
            stdout: merged.render(),
            stderr: String::new(),
            code: if merged.passed() {
                EXIT_OK
            } else {
                EXIT_FAILED
            },
        },
        Err(e) => Outcome::usage(e),
    }
}
