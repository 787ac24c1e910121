//! `upsim sweep merge FILES…`: the results files of one sweep's shards
//! (`--results`, see [`sweep_results`](super::sweep_results)) put back
//! together, as if one machine had run the whole range.
//!
//! The merge refuses lines of different sweeps (scenario, seed range, shard
//! count, upsim version), reports seeds run twice (the same verdict twice
//! is a duplicate; a different hash or outcome is a conflict, and fails the
//! merge: a seed must replay the same) and seeds of the range that no file
//! holds (a shard that crashed or never ran), and judges coverage over every
//! seed together, as the unsharded sweep would have. A line that is not a
//! seed record is an error naming its file and line.

use super::builtin::BUILTIN_SCENARIOS;
use super::shard::{parse_seed_range, Shard};
use super::sweep_results::{HashFrom, SeedOutcome, SeedRecord};
use crate::coverage::{Coverage, Probe};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::ops::Range;

/// Largest results file a merge reads: 100,000 seeds take about 40 MB.
pub const RESULTS_FILE_BYTES_MAX: u64 = 1 << 30;

/// Runs of missing seeds listed one by one; the rest are counted.
pub const MISSING_RUNS_SHOWN_MAX: usize = 20;

/// Duplicates listed one by one (conflicts are always listed).
pub const DUPLICATES_SHOWN_MAX: usize = 20;

/// A line of a results file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The file, as given.
    pub path: String,
    /// 1-based.
    pub line: usize,
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.path, self.line)
    }
}

/// Results files that cannot be merged.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// No file given.
    #[error("no results files to merge")]
    NoFiles,
    /// A file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A file is over [`RESULTS_FILE_BYTES_MAX`].
    #[error("{path}: {bytes} bytes, over the {max} a results file may have")]
    TooLarge {
        /// The file.
        path: String,
        /// Its size.
        bytes: u64,
        /// [`RESULTS_FILE_BYTES_MAX`].
        max: u64,
    },
    /// A line is not a seed record.
    #[error("{at}: not a seed record: {source}")]
    Malformed {
        /// Where.
        at: Place,
        /// What the JSON parser said.
        source: serde_json::Error,
    },
    /// A field of a record does not parse or is unknown to this build.
    #[error("{at}: {field} {value:?}: {why}")]
    BadField {
        /// Where.
        at: Place,
        /// Which field.
        field: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        why: String,
    },
    /// A record of another sweep.
    #[error(transparent)]
    Mixed(Box<Mismatch>),
    /// A seed outside its range or shard.
    #[error("{at}: seed {seed} is not in shard {shard} of seeds {seeds}")]
    OutOfShard {
        /// Where.
        at: Place,
        /// The seed.
        seed: u64,
        /// The record's shard.
        shard: String,
        /// The record's range.
        seeds: String,
    },
    /// The files hold no record at all.
    #[error("the results files hold no seed record")]
    Empty,
}

/// A record of another sweep than the first record's.
#[derive(Debug, thiserror::Error)]
#[error("{at}: {field} is {found:?} but {first} has {expected:?}: results of different sweeps cannot be merged")]
pub struct Mismatch {
    /// Where.
    pub at: Place,
    /// Which field differs.
    pub field: &'static str,
    /// Its value here.
    pub found: String,
    /// The first record's value.
    pub expected: String,
    /// Where the first record is.
    pub first: Place,
}

/// A seed found in more than one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    /// The seed.
    pub seed: u64,
    /// Its first line.
    pub first: Place,
    /// Another line.
    pub again: Place,
    /// The first line's outcome and trace hash.
    pub first_verdict: String,
    /// The other line's.
    pub again_verdict: String,
    /// What the two lines say together.
    pub kind: DuplicateKind,
}

/// Whether two lines of one seed agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DuplicateKind {
    /// Same outcome and trace hash.
    Agrees,
    /// Same outcome; different hashes, but at least one from a sweep
    /// process, where a hash is not a replay key (see [`HashFrom`]): not
    /// comparable.
    Incomparable,
    /// Different outcomes, or different hashes both from fresh processes:
    /// the seed did not replay the same.
    Conflict,
}

impl DuplicateKind {
    fn of(first: &SeedRecord, again: &SeedRecord) -> Self {
        let both_fresh =
            first.hash_from == HashFrom::FreshProcess && again.hash_from == HashFrom::FreshProcess;
        if first.outcome != again.outcome {
            Self::Conflict
        } else if first.trace_hash == again.trace_hash {
            Self::Agrees
        } else if both_fresh {
            Self::Conflict
        } else {
            Self::Incomparable
        }
    }
}

/// A record's outcome and trace hash, as one string.
fn verdict(record: &SeedRecord) -> String {
    let outcome = match record.outcome {
        SeedOutcome::Pass => "pass",
        SeedOutcome::Fail => "fail",
    };
    let from = match record.hash_from {
        HashFrom::FreshProcess => "fresh process",
        HashFrom::SweepProcess => "sweep process",
    };
    format!(
        "{outcome}, hash {} ({from})",
        record.trace_hash.as_deref().unwrap_or("none")
    )
}

/// One sweep's results, merged.
#[derive(Debug, Clone)]
pub struct Merged {
    /// The scenario, as given to the shards.
    pub scenario: String,
    /// The upsim version that ran them.
    pub upsim: String,
    /// The whole range.
    pub range: Range<u64>,
    /// N.
    pub shard_count: u64,
    /// Files read.
    pub files: usize,
    /// The first record of each seed, and where it is.
    pub records: BTreeMap<u64, (SeedRecord, Place)>,
    /// Every seed seen again, in the order met.
    pub duplicates: Vec<Duplicate>,
    /// Coverage over every seed (first records only).
    pub coverage: Coverage,
}

/// The sweep every record must belong to: the first record's.
struct Expected {
    record: SeedRecord,
    at: Place,
}

impl Expected {
    fn check(&self, record: &SeedRecord, shard: Shard, at: &Place) -> Result<(), MergeError> {
        let first_shard = self.record.shard().map(|s| s.count()).unwrap_or(0);
        let pairs: [(&'static str, String, String); 4] = [
            (
                "scenario",
                record.scenario.clone(),
                self.record.scenario.clone(),
            ),
            ("seeds", record.seeds.clone(), self.record.seeds.clone()),
            (
                "shard count",
                shard.count().to_string(),
                first_shard.to_string(),
            ),
            ("upsim", record.upsim.clone(), self.record.upsim.clone()),
        ];
        for (field, found, expected) in pairs {
            if found != expected {
                return Err(MergeError::Mixed(Box::new(Mismatch {
                    at: at.clone(),
                    field,
                    found,
                    expected,
                    first: self.at.clone(),
                })));
            }
        }
        Ok(())
    }
}

/// Reads one line: a record, its shard and range, checked against itself.
fn parse_line(text: &str, at: &Place) -> Result<(SeedRecord, Shard, Range<u64>), MergeError> {
    let record: SeedRecord =
        serde_json::from_str(text).map_err(|source| MergeError::Malformed {
            at: at.clone(),
            source,
        })?;
    let bad = |field: &'static str, value: &str, why: String| MergeError::BadField {
        at: at.clone(),
        field,
        value: value.to_owned(),
        why,
    };
    let shard = record
        .shard()
        .map_err(|e| bad("shard", &record.shard, e.to_string()))?;
    let range =
        parse_seed_range(&record.seeds).map_err(|e| bad("seeds", &record.seeds, e.to_string()))?;
    if !range.contains(&record.seed) || !shard.contains(record.seed) {
        return Err(MergeError::OutOfShard {
            at: at.clone(),
            seed: record.seed,
            shard: record.shard.clone(),
            seeds: record.seeds.clone(),
        });
    }
    let (_, unknown) = record.hits();
    if let Some(name) = unknown.first() {
        return Err(bad(
            "probes",
            name,
            "no probe of that name in this build".into(),
        ));
    }
    Ok((record, shard, range))
}

/// Reads `path`, bounded by [`RESULTS_FILE_BYTES_MAX`].
fn read_bounded(path: &str) -> Result<String, MergeError> {
    let read = |source| MergeError::Read {
        path: path.to_owned(),
        source,
    };
    let bytes = std::fs::metadata(path).map_err(read)?.len();
    if bytes > RESULTS_FILE_BYTES_MAX {
        return Err(MergeError::TooLarge {
            path: path.to_owned(),
            bytes,
            max: RESULTS_FILE_BYTES_MAX,
        });
    }
    std::fs::read_to_string(path).map_err(read)
}

/// Merges the results files at `paths`.
///
/// # Errors
/// [`MergeError`]: a file unreadable or too large, a line that is not a
/// seed record, records of different sweeps, no record at all.
pub fn merge(paths: &[String]) -> Result<Merged, MergeError> {
    if paths.is_empty() {
        return Err(MergeError::NoFiles);
    }
    let mut expected: Option<Expected> = None;
    let mut merged: Option<Merged> = None;
    for path in paths {
        let text = read_bounded(path)?;
        for (n, line) in text.lines().enumerate() {
            let at = Place {
                path: path.clone(),
                line: n + 1,
            };
            let (record, shard, range) = parse_line(line, &at)?;
            match &expected {
                Some(e) => e.check(&record, shard, &at)?,
                None => {
                    expected = Some(Expected {
                        record: record.clone(),
                        at: at.clone(),
                    })
                }
            }
            let m = merged.get_or_insert_with(|| Merged {
                scenario: record.scenario.clone(),
                upsim: record.upsim.clone(),
                range,
                shard_count: shard.count(),
                files: paths.len(),
                records: BTreeMap::new(),
                duplicates: Vec::new(),
                coverage: Coverage::default(),
            });
            m.add(record, at);
        }
    }
    let mut merged = merged.ok_or(MergeError::Empty)?;
    merged.duplicates.sort_by_key(|d| d.seed);
    Ok(merged)
}

impl Merged {
    /// Adds a checked record found at `at`.
    fn add(&mut self, record: SeedRecord, at: Place) {
        match self.records.get(&record.seed) {
            Some((first, first_at)) => self.duplicates.push(Duplicate {
                seed: record.seed,
                first: first_at.clone(),
                again: at,
                first_verdict: verdict(first),
                again_verdict: verdict(&record),
                kind: DuplicateKind::of(first, &record),
            }),
            None => {
                self.coverage.add(&record.hits().0);
                self.records.insert(record.seed, (record, at));
            }
        }
    }

    /// Seeds of the range no file holds, as runs `a..b`.
    pub fn missing(&self) -> Vec<Range<u64>> {
        let mut runs = Vec::new();
        let mut next = self.range.start;
        for &seed in self.records.keys() {
            if seed > next {
                runs.push(next..seed);
            }
            next = seed + 1;
        }
        if next < self.range.end {
            runs.push(next..self.range.end);
        }
        runs
    }

    /// Failed seeds, in seed order.
    pub fn failed(&self) -> impl Iterator<Item = &SeedRecord> {
        self.records
            .values()
            .map(|(r, _)| r)
            .filter(|r| r.outcome == SeedOutcome::Fail)
    }

    /// Duplicates that disagree: a seed that did not replay the same.
    pub fn conflicts(&self) -> impl Iterator<Item = &Duplicate> {
        self.duplicates
            .iter()
            .filter(|d| d.kind == DuplicateKind::Conflict)
    }

    /// Whether `probe` is required: as for `upsim sweep`, those of a
    /// built-in swarm or crowd.
    pub fn required(&self, probe: Probe) -> bool {
        BUILTIN_SCENARIOS.contains(&self.scenario.as_str()) && probe.required_in(&self.scenario)
    }

    /// Required probes no seed hit.
    pub fn missed(&self) -> Vec<Probe> {
        self.coverage.missed(&|p| self.required(p))
    }

    /// Every seed of the range ran, none failed, none ran twice with two
    /// verdicts, and every required probe was hit.
    pub fn passed(&self) -> bool {
        self.failed().next().is_none()
            && self.conflicts().next().is_none()
            && self.missing().is_empty()
            && self.missed().is_empty()
    }

    /// The summary, each failure with the command that replays it, the
    /// duplicates, conflicts and missing seeds, then the coverage table.
    pub fn render(&self) -> String {
        let wall_ms: u64 = self.records.values().map(|(r, _)| r.wall_ms).sum();
        let wall_s = wall_ms as f64 / 1e3;
        let missing = self.missing();
        let missing_count: u64 = missing.iter().map(|r| r.end - r.start).sum();
        let mut out = format!(
            "merge of {} results file(s): {} seeds {}..{} in {} shard(s), upsim {}\n",
            self.files,
            self.scenario,
            self.range.start,
            self.range.end,
            self.shard_count,
            self.upsim
        );
        let _ = writeln!(
            out,
            "{} of {} seeds run, {} failed, {} duplicate(s), {} conflict(s), {} missing",
            self.records.len(),
            self.range.end - self.range.start,
            self.failed().count(),
            self.duplicates.len(),
            self.conflicts().count(),
            missing_count
        );
        let _ = writeln!(
            out,
            "wall of the runs {wall_s:.2} s summed, {:.2} seeds/s per worker",
            self.records.len() as f64 / wall_s.max(1e-9)
        );
        for r in self.failed() {
            let _ = writeln!(
                out,
                "FAILED seed {}: replay: {}",
                r.seed,
                r.replay_command()
            );
            if let Some(v) = &r.violation {
                let _ = writeln!(out, "  {v}");
            }
        }
        out.push_str(&self.render_duplicates());
        out.push_str(&render_missing(&missing, missing_count));
        let missed = self.missed();
        if !missed.is_empty() {
            let names: Vec<&str> = missed.iter().map(|p| p.name()).collect();
            let _ = writeln!(
                out,
                "FAILED coverage: {} required probe(s) never hit by any shard: {}",
                missed.len(),
                names.join(", ")
            );
        }
        out.push_str("probe coverage:\n");
        out.push_str(&self.coverage.render(&|p| self.required(p)));
        out
    }

    /// Conflicts, each; other duplicates up to [`DUPLICATES_SHOWN_MAX`].
    fn render_duplicates(&self) -> String {
        let mut out = String::new();
        let mut others = 0usize;
        for d in &self.duplicates {
            let (word, how) = match d.kind {
                DuplicateKind::Conflict => ("CONFLICT", "disagree"),
                DuplicateKind::Agrees => ("DUPLICATE", "agree"),
                DuplicateKind::Incomparable => (
                    "DUPLICATE",
                    "agree on the outcome; hashes from a sweep process are not comparable",
                ),
            };
            if d.kind != DuplicateKind::Conflict {
                others += 1;
                if others > DUPLICATES_SHOWN_MAX {
                    continue;
                }
            }
            let _ = writeln!(
                out,
                "{word} seed {}: {how}: {}: {}; {}: {}",
                d.seed, d.first, d.first_verdict, d.again, d.again_verdict
            );
            if d.kind == DuplicateKind::Conflict {
                if let Some((r, _)) = self.records.get(&d.seed) {
                    let _ = writeln!(out, "  replay: {}", r.replay_command());
                }
            }
        }
        if others > DUPLICATES_SHOWN_MAX {
            let _ = writeln!(
                out,
                "… and {} more duplicate(s)",
                others - DUPLICATES_SHOWN_MAX
            );
        }
        out
    }
}

/// The missing seeds, up to [`MISSING_RUNS_SHOWN_MAX`] runs.
fn render_missing(missing: &[Range<u64>], count: u64) -> String {
    if missing.is_empty() {
        return String::new();
    }
    let shown: Vec<String> = missing
        .iter()
        .take(MISSING_RUNS_SHOWN_MAX)
        .map(|r| {
            if r.end - r.start == 1 {
                r.start.to_string()
            } else {
                format!("{}..{}", r.start, r.end)
            }
        })
        .collect();
    let more = if missing.len() > MISSING_RUNS_SHOWN_MAX {
        format!(
            " and {} more run(s)",
            missing.len() - MISSING_RUNS_SHOWN_MAX
        )
    } else {
        String::new()
    };
    format!("MISSING {count} seed(s): {}{more}\n", shown.join(", "))
}

#[cfg(test)]
mod tests;
