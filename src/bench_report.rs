//! `upsim bench-report`: criterion's results as one table, each benchmark
//! beside its baseline, so a ratio is read from one `cargo bench` run.
//!
//! Input: the files `cargo bench` leaves for every benchmark,
//! `<criterion dir>/<group>/<bench>/new/benchmark.json` (ids, throughput)
//! and `…/new/estimates.json` (the median, in ns). The criterion directory
//! is, in order: `--dir`, `$CRITERION_HOME`, `$CARGO_TARGET_DIR/criterion`,
//! `target/criterion` — criterion's own order, without its `cargo metadata`
//! fallback.
//!
//! Convention (see `benches/`): within a group, a benchmark whose name
//! starts with [`BASELINE_PREFIX`] is a baseline; every other benchmark is
//! reported once against each baseline of its group. The ratio is median
//! time over baseline median time: 1.0 is as fast as the baseline, 3.0 three
//! times slower.
//!
//! The JSON is input the user controls (an interrupted run, another
//! criterion version): every problem is a typed [`BenchReportError`] naming
//! the file, never a panic.

use crate::outcome::{Outcome, EXIT_OK, EXIT_USAGE};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Names of baseline benchmarks start with this.
pub const BASELINE_PREFIX: &str = "baseline";
/// How deep under the criterion directory a `new/` directory is looked for.
/// criterion nests at most `group/function/value/new` (4); the bound keeps a
/// symlink loop from recursing forever.
const SEARCH_DEPTH_MAX: usize = 6;

/// Why no report could be made.
#[derive(Debug, thiserror::Error)]
pub enum BenchReportError {
    /// The directory holds no benchmark results.
    #[error("no criterion output in {}: run `cargo bench` first (or pass --dir)", dir.display())]
    NoOutput {
        /// Where we looked.
        dir: PathBuf,
    },
    /// A file or directory could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file is not the JSON criterion writes.
    #[error("{} is not criterion's JSON: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// A median that is not a positive, finite time.
    #[error("{}: median {median_ns} ns is not a positive time", path.display())]
    BadMedian {
        /// The estimates file.
        path: PathBuf,
        /// What it said.
        median_ns: f64,
    },
}

/// Work done by one iteration, as the benchmark declared it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throughput {
    /// Bytes (criterion's `Bytes` and `BytesDecimal`).
    Bytes(u64),
    /// Bits.
    Bits(u64),
    /// Elements (criterion's `Elements`, and the elements of
    /// `ElementsAndBytes`).
    Elements(u64),
}

/// One benchmark's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    /// criterion's group.
    pub group: String,
    /// The benchmark within the group (`function` or `function/value`).
    pub name: String,
    /// Median time of one iteration, ns.
    pub median_ns: f64,
    /// Work per iteration, if declared.
    pub throughput: Option<Throughput>,
}

impl Measurement {
    /// Whether this is a baseline (see the module documentation).
    pub fn is_baseline(&self) -> bool {
        self.name.starts_with(BASELINE_PREFIX)
    }
}

/// One line of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The benchmark.
    pub measured: Measurement,
    /// Its baseline; `None` when its group has none.
    pub baseline: Option<Measurement>,
}

impl Row {
    /// Median time over the baseline's median time.
    pub fn ratio(&self) -> Option<f64> {
        self.baseline
            .as_ref()
            .map(|b| self.measured.median_ns / b.median_ns)
    }
}

// criterion's `benchmark.json` and `estimates.json`, the fields we read.
#[derive(Deserialize)]
struct BenchmarkFile {
    group_id: String,
    function_id: Option<String>,
    value_str: Option<String>,
    throughput: Option<ThroughputFile>,
}

#[derive(Deserialize)]
enum ThroughputFile {
    Bits(u64),
    Bytes(u64),
    BytesDecimal(u64),
    Elements(u64),
    ElementsAndBytes { elements: u64 },
}

#[derive(Deserialize)]
struct EstimatesFile {
    median: EstimateFile,
}

#[derive(Deserialize)]
struct EstimateFile {
    point_estimate: f64,
}

/// Where criterion writes: `$CRITERION_HOME`, else
/// `$CARGO_TARGET_DIR/criterion`, else `target/criterion`.
pub fn default_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        PathBuf::from(home)
    } else if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        PathBuf::from(target).join("criterion")
    } else {
        PathBuf::from("target/criterion")
    }
}

fn read(path: &Path) -> Result<String, BenchReportError> {
    std::fs::read_to_string(path).map_err(|source| BenchReportError::Io {
        path: path.to_owned(),
        source,
    })
}

fn parse<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, BenchReportError> {
    serde_json::from_str(&read(path)?).map_err(|source| BenchReportError::Json {
        path: path.to_owned(),
        source,
    })
}

/// Reads one `new/` directory.
fn measurement(new_dir: &Path) -> Result<Measurement, BenchReportError> {
    let bench: BenchmarkFile = parse(&new_dir.join("benchmark.json"))?;
    let estimates_path = new_dir.join("estimates.json");
    let estimates: EstimatesFile = parse(&estimates_path)?;
    let median_ns = estimates.median.point_estimate;
    if !(median_ns.is_finite() && median_ns > 0.0) {
        return Err(BenchReportError::BadMedian {
            path: estimates_path,
            median_ns,
        });
    }
    let name = match (bench.function_id, bench.value_str) {
        (Some(f), Some(v)) => format!("{f}/{v}"),
        (Some(n), None) | (None, Some(n)) => n,
        (None, None) => bench.group_id.clone(),
    };
    let throughput = bench.throughput.map(|t| match t {
        ThroughputFile::Bytes(n) | ThroughputFile::BytesDecimal(n) => Throughput::Bytes(n),
        ThroughputFile::Bits(n) => Throughput::Bits(n),
        ThroughputFile::Elements(n) | ThroughputFile::ElementsAndBytes { elements: n } => {
            Throughput::Elements(n)
        }
    });
    Ok(Measurement {
        group: bench.group_id,
        name,
        median_ns,
        throughput,
    })
}

/// Collects the `new/` directories holding a `benchmark.json` under `dir`.
fn find_new_dirs(
    dir: &Path,
    depth: usize,
    found: &mut Vec<PathBuf>,
) -> Result<(), BenchReportError> {
    let io = |source| BenchReportError::Io {
        path: dir.to_owned(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if !path.is_dir() {
            continue;
        }
        if path.file_name().is_some_and(|n| n == "new") {
            if path.join("benchmark.json").is_file() {
                found.push(path);
            }
        } else if depth < SEARCH_DEPTH_MAX {
            find_new_dirs(&path, depth + 1, found)?;
        }
    }
    Ok(())
}

/// Every benchmark result under `dir`, ordered by group and name.
pub fn read_results(dir: &Path) -> Result<Vec<Measurement>, BenchReportError> {
    if !dir.is_dir() {
        return Err(BenchReportError::NoOutput {
            dir: dir.to_owned(),
        });
    }
    let mut new_dirs = Vec::new();
    find_new_dirs(dir, 0, &mut new_dirs)?;
    if new_dirs.is_empty() {
        return Err(BenchReportError::NoOutput {
            dir: dir.to_owned(),
        });
    }
    let mut results = new_dirs
        .iter()
        .map(|d| measurement(d))
        .collect::<Result<Vec<_>, _>>()?;
    results.sort_by(|a, b| (&a.group, &a.name).cmp(&(&b.group, &b.name)));
    Ok(results)
}

/// Pairs every benchmark with each baseline of its group. A group without
/// baselines gives rows without one; a group of baselines only lists them.
pub fn rows(results: &[Measurement]) -> Vec<Row> {
    let mut groups: BTreeMap<&str, Vec<&Measurement>> = BTreeMap::new();
    for m in results {
        groups.entry(m.group.as_str()).or_default().push(m);
    }
    let mut rows = Vec::new();
    for members in groups.values() {
        let (baselines, measured): (Vec<&Measurement>, Vec<&Measurement>) =
            members.iter().partition(|m| m.is_baseline());
        let alone = |m: &&Measurement| Row {
            measured: (*m).clone(),
            baseline: None,
        };
        if measured.is_empty() {
            rows.extend(baselines.iter().map(alone));
        } else if baselines.is_empty() {
            rows.extend(measured.iter().map(alone));
        } else {
            for m in &measured {
                rows.extend(baselines.iter().map(|b| Row {
                    measured: (*m).clone(),
                    baseline: Some((*b).clone()),
                }));
            }
        }
    }
    rows
}

fn format_time(ns: f64) -> String {
    let (value, unit) = if ns >= 1e9 {
        (ns / 1e9, "s")
    } else if ns >= 1e6 {
        (ns / 1e6, "ms")
    } else if ns >= 1e3 {
        (ns / 1e3, "µs")
    } else {
        (ns, "ns")
    };
    format!("{value:.3} {unit}")
}

fn format_rate(per_iteration: Throughput, median_ns: f64) -> String {
    let per_second = |n: u64| n as f64 / (median_ns / 1e9);
    let scaled = |rate: f64, step: f64, units: [&str; 4]| {
        let mut rate = rate;
        let mut unit = units[0];
        for next in &units[1..] {
            if rate < step {
                break;
            }
            rate /= step;
            unit = next;
        }
        format!("{rate:.2} {unit}")
    };
    match per_iteration {
        Throughput::Bytes(n) => scaled(per_second(n), 1024.0, ["B/s", "KiB/s", "MiB/s", "GiB/s"]),
        Throughput::Bits(n) => scaled(
            per_second(n),
            1000.0,
            ["bit/s", "Kbit/s", "Mbit/s", "Gbit/s"],
        ),
        Throughput::Elements(n) => scaled(
            per_second(n),
            1000.0,
            ["elem/s", "Kelem/s", "Melem/s", "Gelem/s"],
        ),
    }
}

/// The table.
pub fn render(rows: &[Row]) -> String {
    const DASH: &str = "–";
    let header = [
        "benchmark",
        "median",
        "baseline",
        "baseline median",
        "ratio",
        "throughput",
        "baseline throughput",
    ]
    .map(str::to_owned);
    let lines: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            let m = &r.measured;
            let b = r.baseline.as_ref();
            let rate = |m: &Measurement| {
                m.throughput
                    .map_or_else(|| DASH.to_owned(), |t| format_rate(t, m.median_ns))
            };
            [
                format!("{}/{}", m.group, m.name),
                format_time(m.median_ns),
                b.map_or_else(|| DASH.to_owned(), |b| b.name.clone()),
                b.map_or_else(|| DASH.to_owned(), |b| format_time(b.median_ns)),
                r.ratio()
                    .map_or_else(|| DASH.to_owned(), |x| format!("{x:.2}×")),
                rate(m),
                b.map_or_else(|| DASH.to_owned(), rate),
            ]
        })
        .collect();
    let mut widths = header.clone().map(|h| h.chars().count());
    for line in &lines {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for line in std::iter::once(&header).chain(&lines) {
        let mut text = String::new();
        for (i, (cell, w)) in line.iter().zip(widths).enumerate() {
            let pad = w - cell.chars().count();
            // Names left-aligned, figures right-aligned.
            if i == 0 || i == 2 {
                let _ = write!(text, "{cell}{:pad$}  ", "");
            } else {
                let _ = write!(text, "{:pad$}{cell}  ", "");
            }
        }
        let _ = writeln!(out, "{}", text.trim_end());
    }
    out
}

/// `upsim bench-report [--dir DIR]`.
pub fn command(dir: Option<&str>) -> Outcome {
    let dir = dir.map_or_else(default_dir, PathBuf::from);
    match read_results(&dir) {
        Ok(results) => Outcome {
            stdout: format!(
                "criterion results in {} (ratio = median / baseline median)\n\n{}",
                dir.display(),
                render(&rows(&results))
            ),
            stderr: String::new(),
            code: EXIT_OK,
        },
        Err(e) => Outcome {
            stdout: String::new(),
            stderr: format!("upsim: {e}\n"),
            code: EXIT_USAGE,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A criterion directory in the system's temp dir, removed on drop.
    struct Fixture(PathBuf);

    impl Fixture {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("upsim-bench-report-{}-{name}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).expect("temp dir is writable");
            Self(dir)
        }

        /// Writes one benchmark's `new/` files as criterion 0.8 does.
        fn bench(&self, group: &str, function: &str, median_ns: f64, throughput: &str) {
            let new = self.0.join(group).join(function).join("new");
            fs::create_dir_all(&new).expect("writable");
            let benchmark = format!(
                r#"{{"group_id":"{group}","function_id":"{function}","value_str":null,"throughput":{throughput},"full_id":"{group}/{function}","directory_name":"{group}/{function}","title":"{group}/{function}"}}"#
            );
            fs::write(new.join("benchmark.json"), benchmark).expect("writable");
            let estimate = |x: f64| {
                format!(
                    r#"{{"confidence_interval":{{"confidence_level":0.95,"lower_bound":{x},"upper_bound":{x}}},"point_estimate":{x},"standard_error":0.1}}"#
                )
            };
            let estimates = format!(
                r#"{{"mean":{},"median":{},"median_abs_dev":{},"slope":null,"std_dev":{}}}"#,
                estimate(median_ns * 1.1),
                estimate(median_ns),
                estimate(1.0),
                estimate(1.0)
            );
            fs::write(new.join("estimates.json"), estimates).expect("writable");
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn pairs_each_benchmark_with_the_baselines_of_its_group() {
        let f = Fixture::new("pairs");
        f.bench("pipe", "backend", 2_000_000.0, r#"{"Bytes":8388608}"#);
        f.bench(
            "pipe",
            "baseline_crc32c",
            1_000_000.0,
            r#"{"Bytes":8388608}"#,
        );
        f.bench(
            "pipe",
            "baseline_memcpy",
            4_000_000.0,
            r#"{"Bytes":8388608}"#,
        );
        f.bench("seeds", "smoke", 3e9, r#"{"Elements":3}"#);
        // What criterion keeps besides `new/` is not read.
        fs::create_dir_all(f.0.join("report")).expect("writable");
        fs::create_dir_all(f.0.join("pipe/backend/base")).expect("writable");
        let results = read_results(&f.0).expect("a valid fixture");
        assert_eq!(results.len(), 4);
        let rows = rows(&results);
        let summary: Vec<(&str, Option<&str>, Option<f64>)> = rows
            .iter()
            .map(|r| {
                (
                    r.measured.name.as_str(),
                    r.baseline.as_ref().map(|b| b.name.as_str()),
                    r.ratio(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("backend", Some("baseline_crc32c"), Some(2.0)),
                ("backend", Some("baseline_memcpy"), Some(0.5)),
                ("smoke", None, None),
            ]
        );
        assert_eq!(
            rows[0].measured.throughput,
            Some(Throughput::Bytes(8 << 20))
        );
        let table = render(&rows);
        assert_eq!(table.lines().count(), 4, "{table}");
        let first = table.lines().nth(1).expect("a row");
        for cell in [
            "pipe/backend",
            "2.000 ms",
            "baseline_crc32c",
            "1.000 ms",
            "2.00×",
            "3.91 GiB/s",
            "7.81 GiB/s",
        ] {
            assert!(first.contains(cell), "{cell:?} missing from {first:?}");
        }
        assert!(table.contains("1.00 elem/s"), "{table}");
    }

    #[test]
    fn no_output_is_a_clear_error_not_a_panic() {
        let f = Fixture::new("empty");
        assert!(matches!(
            read_results(&f.0),
            Err(BenchReportError::NoOutput { .. })
        ));
        let missing = f.0.join("nowhere");
        let outcome = command(missing.to_str());
        assert_eq!(outcome.code, EXIT_USAGE);
        assert!(
            outcome.stderr.contains("no criterion output")
                && outcome.stderr.contains("cargo bench"),
            "{}",
            outcome.stderr
        );
    }

    #[test]
    fn malformed_files_are_typed_errors_naming_the_file() {
        let f = Fixture::new("malformed");
        f.bench("g", "a", 1.0, "null");
        let estimates = f.0.join("g/a/new/estimates.json");
        fs::write(&estimates, r#"{"median":{"point_estimate":"fast"}}"#).expect("writable");
        match read_results(&f.0) {
            Err(BenchReportError::Json { path, .. }) => assert_eq!(path, estimates),
            other => panic!("expected a JSON error, got {other:?}"),
        }
        fs::write(&estimates, r#"{"median":{"point_estimate":-1.0}}"#).expect("writable");
        assert!(matches!(
            read_results(&f.0),
            Err(BenchReportError::BadMedian { .. })
        ));
        fs::remove_file(&estimates).expect("exists");
        assert!(matches!(
            read_results(&f.0),
            Err(BenchReportError::Io { .. })
        ));
    }
}
