//! The report of one run: serde data, snapshotted by insta (with the
//! wall-clock fields redacted) and printed by `upsim run`.

use super::oracle::{Peaks, Violation};
use crate::drive::DriveStats;
use serde::Serialize;
use std::collections::BTreeMap;

/// How one file's upload ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum FileOutcome {
    /// On the drive, whole.
    Complete {
        /// The drive's checksum.
        drive_checksum: String,
        /// Whether it equals the source's.
        checksum_match: bool,
    },
    /// Not on the drive.
    Failed {
        /// The typed error, as text.
        error: String,
    },
    /// The client never finished (the run hit its time limit).
    Unfinished,
}

/// One file in the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileReport {
    /// Its owner.
    pub user: String,
    /// Size.
    pub size_bytes: u64,
    /// The source's checksum (CRC-64/NVME).
    pub source_checksum: String,
    /// How it ended.
    pub outcome: FileOutcome,
    /// Chunk requests sent (resends included).
    pub chunks_sent: u64,
    /// Chunk requests that failed.
    pub chunk_failures: u64,
    /// Bytes sent over the uplink.
    pub sent_bytes: u64,
}

/// Wall-clock measurements: redacted in snapshots, they vary run to run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WallFigures {
    /// Wall time of the simulation, ms.
    pub simulation_ms: u64,
    /// Wall time to compute the sources' checksums, ms.
    pub source_digest_ms: u64,
    /// Simulated seconds per wall second.
    pub sim_seconds_per_wall_second: f64,
    /// Peak resident memory of the process, bytes (`VmHWM`).
    pub peak_rss_bytes: u64,
}

/// The report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// The seed.
    pub seed: u64,
    /// Profile name.
    pub profile: String,
    /// Whether every check held.
    pub passed: bool,
    /// Every file.
    pub files: Vec<FileReport>,
    /// Bytes uploaded in all (file sizes).
    pub total_bytes: u64,
    /// Chunk size.
    pub chunk_size_bytes: u64,
    /// Faults injected, by kind.
    pub faults_injected: BTreeMap<String, u32>,
    /// Backoffs before retries, by what retried.
    pub retries: BTreeMap<String, u32>,
    /// The drive's counters.
    pub drive: DriveStats,
    /// Backend boots (1 + crashes).
    pub backend_boots: u32,
    /// Fault points (buggify) fired during the safety phase, by site.
    pub fault_points_fired: BTreeMap<String, u32>,
    /// Simulated duration, ms.
    pub simulated_ms: u64,
    /// Peaks sampled after every step.
    pub peaks: Peaks,
    /// Events in the trace.
    pub trace_events: usize,
    /// The trace hash.
    pub trace_hash: String,
    /// Every broken check.
    pub violations: Vec<Violation>,
    /// Wall-clock figures.
    pub wall: WallFigures,
    /// Coverage probes hit. Never serialised: the reports' JSON (and the
    /// snapshots) stay as they were; `upsim run` prints them in text and
    /// a sweep adds them up.
    #[serde(skip)]
    pub probes: crate::coverage::Hits,
    /// The run's state over time, when [`RunOptions::timeline`] asked for
    /// it (for `upsim run --html`). Never serialised, like the probes.
    ///
    /// [`RunOptions::timeline`]: super::RunOptions::timeline
    #[serde(skip)]
    pub timeline: Option<super::timeline::Timeline>,
}

impl Report {
    /// The command that replays this run.
    pub fn replay_command(&self) -> String {
        format!(
            "cargo run --release -- run {} --seed {}",
            self.scenario, self.seed
        )
    }

    /// A human summary.
    pub fn render(&self) -> String {
        use crate::units::human_bytes;
        let mut out = format!(
            "scenario {} (seed {}, profile {}): {}\n",
            self.scenario,
            self.seed,
            self.profile,
            if self.passed { "PASS" } else { "FAIL" }
        );
        for f in &self.files {
            out.push_str(&f.render());
        }
        let counted = |m: &BTreeMap<String, u32>| -> String {
            let parts: Vec<String> = m.iter().map(|(k, n)| format!("{k}×{n}")).collect();
            parts.join(", ")
        };
        out.push_str(&format!(
            "  faults survived: {}\n",
            counted(&self.faults_injected)
        ));
        if !self.fault_points_fired.is_empty() {
            out.push_str(&format!(
                "  fault points fired: {}\n",
                counted(&self.fault_points_fired)
            ));
        }
        out.push_str(&format!("  retries: {}\n", counted(&self.retries)));
        out.push_str(&format!(
            "  drive: {} sessions ({} expired), {} pieces, {} committed, {} faults\n",
            self.drive.sessions_created,
            self.drive.sessions_expired,
            self.drive.pieces_accepted,
            human_bytes(self.drive.bytes_committed),
            self.drive.faults_injected
        ));
        out.push_str(&format!(
            "  backend boots: {}; peak slots {}; peak reserved {}\n",
            self.backend_boots,
            self.peaks.slots_in_use,
            human_bytes(self.peaks.reserved_bytes)
        ));
        out.push_str(&format!(
            "  simulated {:.1} s in {:.2} s wall ({:.0} simulated s per wall s); peak RSS {}\n",
            self.simulated_ms as f64 / 1e3,
            self.wall.simulation_ms as f64 / 1e3,
            self.wall.sim_seconds_per_wall_second,
            human_bytes(self.wall.peak_rss_bytes)
        ));
        out.push_str(&format!(
            "  trace: {} events, hash {}\n",
            self.trace_events, self.trace_hash
        ));
        for v in &self.violations {
            out.push_str(&format!("  VIOLATION {}: {}\n", v.check, v.detail));
        }
        if !self.passed {
            out.push_str(&format!("  replay: {}\n", self.replay_command()));
        }
        out
    }
}

/// Peak resident set size of this process (`VmHWM`), if the OS says.
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<u64>().ok())
        })
        .map(|kib| kib * 1024)
        .unwrap_or(0)
}

impl FileReport {
    /// The file's two lines in [`Report::render`].
    fn render(&self) -> String {
        use crate::units::human_bytes;
        let f = self;
        let outcome = match &f.outcome {
            FileOutcome::Complete {
                drive_checksum,
                checksum_match,
            } => format!(
                "complete, drive crc64 {drive_checksum} {} source {}",
                if *checksum_match { "==" } else { "!=" },
                f.source_checksum
            ),
            FileOutcome::Failed { error } => format!("failed: {error}"),
            FileOutcome::Unfinished => "unfinished".into(),
        };
        format!(
            "  file {} ({}) of {}: {outcome}\n    {} chunk requests, {} failed, {} sent\n",
            f.size_bytes,
            human_bytes(f.size_bytes),
            f.user,
            f.chunks_sent,
            f.chunk_failures,
            human_bytes(f.sent_bytes)
        )
    }
}
