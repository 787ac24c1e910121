//! `upsim sweep … --check-determinism` (madsim's
//! `MADSIM_TEST_CHECK_DETERMINISM`): every seed run twice more, each in a
//! fresh process of the upsim binary (`upsim run SCENARIO --seed S --json
//! --trace FILE`), and the two trace hashes compared. A difference fails
//! the seed with the first event where the two traces part.
//!
//! Why fresh processes: a trace hash is comparable only between them.
//! tokio numbers tasks process-wide, and a crashed host drops its tasks in
//! an order that follows those numbers, so a run in a process that ran
//! other runs before may legitimately differ from a fresh one. Two fresh
//! processes start from the same numbering, so any difference between them
//! is nondeterminism in the system or the harness: a wall clock, OS
//! randomness or hash-map order reaching the trace.

use super::oracle::Violation;
use super::report::Report;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest one fresh run may take before it counts as hung (the reference
/// scenario takes about 10 s; a crowd seed under 2 s).
pub const FRESH_RUN_WALL_MAX: Duration = Duration::from_secs(600);

/// How often a fresh run is polled while it runs.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Characters of a fresh run's standard error quoted when it printed no
/// report.
const STDERR_QUOTED_CHARS_MAX: usize = 2000;

/// The name of the check a divergence breaks.
pub const CHECK: &str = "determinism";

/// Where two traces first differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    /// 0-based index of the first differing event.
    pub index: usize,
    /// The first run's event there (`None`: its trace had ended).
    pub first: Option<String>,
    /// The second run's.
    pub second: Option<String>,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let event = |e: &Option<String>| e.clone().unwrap_or_else(|| "(trace ended)".into());
        write!(
            f,
            "first diverging event #{}: run 1: {} | run 2: {}",
            self.index,
            event(&self.first),
            event(&self.second)
        )
    }
}

/// The first event where two traces (JSON lines, one event a line) differ,
/// or `None` if they are the same.
pub fn first_divergence(first: &str, second: &str) -> Option<Divergence> {
    let (mut a, mut b) = (first.lines(), second.lines());
    let mut index = 0;
    loop {
        match (a.next(), b.next()) {
            (None, None) => return None,
            (x, y) if x == y => index += 1,
            (x, y) => {
                return Some(Divergence {
                    index,
                    first: x.map(str::to_owned),
                    second: y.map(str::to_owned),
                })
            }
        }
    }
}

/// A determinism check that could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum DeterminismError {
    /// The binary could not be started.
    #[error("cannot start {binary}: {source}")]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A fresh run ran past [`FRESH_RUN_WALL_MAX`] and was killed.
    #[error("fresh run {run} of seed {seed} ran past {max_s} s and was killed")]
    Hung {
        /// 1 or 2.
        run: u8,
        /// The seed.
        seed: u64,
        /// [`FRESH_RUN_WALL_MAX`], s.
        max_s: u64,
    },
    /// A fresh run printed no JSON report.
    #[error("fresh run {run} of seed {seed} printed no report ({status}): {stderr}")]
    NoReport {
        /// 1 or 2.
        run: u8,
        /// The seed.
        seed: u64,
        /// Its exit status.
        status: String,
        /// The start of its standard error.
        stderr: String,
    },
    /// A fresh run's trace file could not be read.
    #[error("cannot read the trace {path}: {source}")]
    ReadTrace {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// What two fresh runs of a seed said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The same trace hash.
    Same {
        /// The hash.
        hash: String,
    },
    /// Different hashes, and where the traces part.
    Differs {
        /// Run 1's hash and run 2's.
        hashes: (String, String),
        /// The first differing event (`None` if the events are the same
        /// and only the hashes differ).
        divergence: Option<Divergence>,
        /// The two traces, kept for inspection.
        traces: (PathBuf, PathBuf),
    },
}

/// Runs seeds in fresh processes of the upsim binary.
#[derive(Debug, Clone)]
pub struct FreshRuns {
    /// The upsim binary (the sweep's own: `std::env::current_exe`).
    pub binary: PathBuf,
    /// The scenario as given to the sweep (a built-in name or a file).
    pub scenario: String,
    /// Where the traces are written; those of a seed that replayed the
    /// same are removed, those of a divergence kept.
    pub dir: PathBuf,
}

impl FreshRuns {
    /// Runs `seed` twice, each in a fresh process, and compares the two
    /// trace hashes (and, when they differ, the traces).
    ///
    /// # Errors
    /// [`DeterminismError`] if a run could not start, hung, printed no
    /// report, or left no readable trace.
    pub fn check(&self, seed: u64) -> Result<Verdict, DeterminismError> {
        let traces = (
            self.path(seed, 1, "trace.jsonl"),
            self.path(seed, 2, "trace.jsonl"),
        );
        let first = self.fresh_run(seed, 1, &traces.0)?;
        let second = self.fresh_run(seed, 2, &traces.1)?;
        if first == second {
            let _ = std::fs::remove_file(&traces.0);
            let _ = std::fs::remove_file(&traces.1);
            return Ok(Verdict::Same { hash: first });
        }
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| DeterminismError::ReadTrace {
                path: path.to_owned(),
                source,
            })
        };
        let divergence = first_divergence(&read(&traces.0)?, &read(&traces.1)?);
        Ok(Verdict::Differs {
            hashes: (first, second),
            divergence,
            traces,
        })
    }

    /// Checks `report`'s seed and adds a [`CHECK`] violation to it (and
    /// fails it) if two fresh runs differ or could not be compared.
    /// Returns the first fresh run's hash, if it gave one.
    pub fn judge(&self, report: &mut Report) -> Option<String> {
        let verdict = self.check(report.seed);
        let fresh_hash = match &verdict {
            Ok(Verdict::Same { hash }) => Some(hash.clone()),
            Ok(Verdict::Differs { hashes, .. }) => Some(hashes.0.clone()),
            Err(_) => None,
        };
        let detail = match verdict {
            Ok(Verdict::Same { .. }) => return fresh_hash,
            Ok(Verdict::Differs {
                hashes,
                divergence,
                traces,
            }) => format!(
                "two fresh runs gave trace hashes {} and {}; {} (traces {} and {})",
                hashes.0,
                hashes.1,
                divergence.map_or_else(|| "the events are the same".to_owned(), |d| d.to_string()),
                traces.0.display(),
                traces.1.display()
            ),
            Err(e) => format!("could not compare two fresh runs: {e}"),
        };
        report.passed = false;
        report.violations.push(Violation {
            check: CHECK,
            detail,
        });
        fresh_hash
    }

    /// Where run `run` of `seed` writes `what` (`trace.jsonl`,
    /// `report.json`, `stderr`): named by scenario, seed, run and this
    /// process, so that shards and sweeps sharing a directory never meet.
    fn path(&self, seed: u64, run: u8, what: &str) -> PathBuf {
        let stem = Path::new(&self.scenario)
            .file_stem()
            .map_or_else(|| "scenario".into(), |s| s.to_string_lossy().into_owned());
        self.dir.join(format!(
            "upsim-determinism-{stem}-{seed}-run{run}-{}.{what}",
            std::process::id()
        ))
    }

    /// One fresh run's trace hash; its trace written to `trace`. Its
    /// output goes to files, not pipes, so that a chatty run cannot block
    /// on a full pipe while it is waited for.
    fn fresh_run(&self, seed: u64, run: u8, trace: &Path) -> Result<String, DeterminismError> {
        let (report_path, stderr_path) = (
            self.path(seed, run, "report.json"),
            self.path(seed, run, "stderr"),
        );
        let spawn_error = |source| DeterminismError::Spawn {
            binary: self.binary.clone(),
            source,
        };
        let stdout = std::fs::File::create(&report_path).map_err(spawn_error)?;
        let stderr = std::fs::File::create(&stderr_path).map_err(spawn_error)?;
        let mut child = Command::new(&self.binary)
            .args(["run", &self.scenario, "--seed", &seed.to_string(), "--json"])
            .arg("--trace")
            .arg(trace)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(spawn_error)?;
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().map_err(spawn_error)? {
                break status;
            }
            if started.elapsed() > FRESH_RUN_WALL_MAX {
                let _ = child.kill();
                let _ = child.wait();
                return Err(DeterminismError::Hung {
                    run,
                    seed,
                    max_s: FRESH_RUN_WALL_MAX.as_secs(),
                });
            }
            std::thread::sleep(POLL_INTERVAL);
        };
        let report: Option<serde_json::Value> = std::fs::read(&report_path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        let hash = report
            .as_ref()
            .and_then(|r| r["trace_hash"].as_str())
            .map(str::to_owned);
        let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        let _ = std::fs::remove_file(&report_path);
        let _ = std::fs::remove_file(&stderr_path);
        hash.ok_or_else(|| DeterminismError::NoReport {
            run,
            seed,
            status: status.to_string(),
            stderr: stderr.chars().take(STDERR_QUOTED_CHARS_MAX).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_traces_do_not_diverge() {
        let trace = "{\"at_ms\":0,\"kind\":\"a\"}\n{\"at_ms\":5,\"kind\":\"b\"}\n";
        assert_eq!(first_divergence(trace, trace), None);
        assert_eq!(first_divergence("", ""), None);
    }

    /// The check can fail: two hand-made traces that part at event 2 are
    /// reported there, with both events; one that stops early, with the
    /// end of its trace.
    #[test]
    fn the_first_diverging_event_is_named_with_both_sides() {
        let a = "e0\ne1\n{\"at_ms\":7,\"kind\":\"chunk_sent\",\"index\":3}\ne3\n";
        let b = "e0\ne1\n{\"at_ms\":7,\"kind\":\"chunk_sent\",\"index\":4}\ne3\n";
        let d = first_divergence(a, b).expect("they differ");
        assert_eq!(d.index, 2);
        assert_eq!(
            d.first.as_deref(),
            Some("{\"at_ms\":7,\"kind\":\"chunk_sent\",\"index\":3}")
        );
        assert_eq!(
            d.second.as_deref(),
            Some("{\"at_ms\":7,\"kind\":\"chunk_sent\",\"index\":4}")
        );
        let text = d.to_string();
        assert!(
            text.contains("#2") && text.contains("\"index\":3") && text.contains("\"index\":4"),
            "{text}"
        );
        let d = first_divergence("e0\ne1\n", "e0\n").expect("one is shorter");
        assert_eq!((d.index, d.second.as_deref()), (1, None));
        assert!(d.to_string().contains("run 2: (trace ended)"));
    }
}
