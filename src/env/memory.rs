//! Memory: how much the machine has and how much is still available.
//!
//! Admission reserves memory for each upload's reorder window and refuses
//! uploads that would push the machine past the profile's limit; it learns
//! the machine's state from a [`MemoryProbe`]. The real probe reads
//! `/proc/meminfo`; the scripted one replays a timeline on a [`Clock`] so a
//! simulation can reproduce the report's numbers and inject pressure spikes.

use super::Clock;
use crate::units::human_bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// One reading of the machine's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemorySnapshot {
    /// Physical memory.
    pub total_bytes: u64,
    /// Memory the OS could hand out now without swapping.
    pub available_bytes: u64,
}

impl MemorySnapshot {
    /// The root-cause report's machine: 15.86 GB total, 3.15 GB available,
    /// 80.2 % used (binary units, as the report prints them; both figures
    /// rounded to whole 4 KiB pages).
    pub const REPORT: Self = Self {
        total_bytes: 17_029_464_064,
        available_bytes: 3_378_044_928,
    };

    /// A snapshot, checked: available memory cannot exceed the total.
    pub fn new(total_bytes: u64, available_bytes: u64) -> Result<Self, MemoryProbeError> {
        if total_bytes == 0 || available_bytes > total_bytes {
            return Err(MemoryProbeError::Inconsistent {
                total_bytes,
                available_bytes,
            });
        }
        Ok(Self {
            total_bytes,
            available_bytes,
        })
    }

    /// Memory in use.
    pub fn used_bytes(&self) -> u64 {
        self.total_bytes.saturating_sub(self.available_bytes)
    }

    /// Memory in use, in tenths of a percent (802 for 80.2 %), rounded to
    /// nearest. Integer arithmetic so that decisions never depend on floats.
    pub fn used_permille(&self) -> u64 {
        if self.total_bytes == 0 {
            return 1000;
        }
        let used = u128::from(self.used_bytes());
        let total = u128::from(self.total_bytes);
        // Fits: the quotient is at most 1000.
        ((used * 1000 + total / 2) / total) as u64
    }

    /// "80.2 % used (12.71 GB of 15.86 GB, 3.15 GB available)".
    pub fn describe(&self) -> String {
        format!(
            "{}.{} % used ({} of {}, {} available)",
            self.used_permille() / 10,
            self.used_permille() % 10,
            human_bytes(self.used_bytes()),
            human_bytes(self.total_bytes),
            human_bytes(self.available_bytes)
        )
    }
}

/// Why the memory probe could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
pub enum MemoryProbeError {
    /// The OS's memory file could not be read or parsed.
    #[error("cannot read memory figures from {source_name}: {reason}")]
    Unreadable {
        /// Where the figures come from.
        source_name: String,
        /// What went wrong.
        reason: String,
    },
    /// The figures contradict each other.
    #[error(
        "inconsistent memory figures: {available_bytes} bytes available of {total_bytes} total"
    )]
    Inconsistent {
        /// Reported total.
        total_bytes: u64,
        /// Reported available.
        available_bytes: u64,
    },
}

/// The memory probe trait.
pub trait MemoryProbe: Send + Sync + 'static {
    /// The machine's memory now.
    fn snapshot(&self) -> Result<MemorySnapshot, MemoryProbeError>;
}

/// The OS's figures, from `/proc/meminfo` (`MemTotal`, `MemAvailable`).
#[derive(Debug, Clone, Default)]
pub struct OsMemory;

const MEMINFO_PATH: &str = "/proc/meminfo";

impl OsMemory {
    /// Parses the text of `/proc/meminfo`.
    pub fn parse_meminfo(text: &str) -> Result<MemorySnapshot, MemoryProbeError> {
        let field = |name: &str| -> Result<u64, MemoryProbeError> {
            let line = text
                .lines()
                .find(|l| l.starts_with(name) && l[name.len()..].starts_with(':'))
                .ok_or_else(|| MemoryProbeError::Unreadable {
                    source_name: MEMINFO_PATH.into(),
                    reason: format!("no {name} line"),
                })?;
            let kib = line[name.len() + 1..]
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .map_err(|e| MemoryProbeError::Unreadable {
                    source_name: MEMINFO_PATH.into(),
                    reason: format!("{name}: {e}"),
                })?;
            kib.checked_mul(1024)
                .ok_or_else(|| MemoryProbeError::Unreadable {
                    source_name: MEMINFO_PATH.into(),
                    reason: format!("{name} overflows u64 bytes"),
                })
        };
        MemorySnapshot::new(field("MemTotal")?, field("MemAvailable")?)
    }
}

impl MemoryProbe for OsMemory {
    fn snapshot(&self) -> Result<MemorySnapshot, MemoryProbeError> {
        let text =
            std::fs::read_to_string(MEMINFO_PATH).map_err(|e| MemoryProbeError::Unreadable {
                source_name: MEMINFO_PATH.into(),
                reason: e.to_string(),
            })?;
        Self::parse_meminfo(&text)
    }
}

/// A scripted memory timeline on a clock: the latest step at or before the
/// clock's `now()` is the answer. Steps can be added while running (that is
/// how a memory-pressure fault is injected).
#[derive(Clone)]
pub struct ScriptedMemory {
    clock: Arc<dyn Clock>,
    /// Steps by the clock time they take effect. Never empty.
    steps: Arc<Mutex<BTreeMap<Duration, MemorySnapshot>>>,
}

impl ScriptedMemory {
    /// A timeline that starts (and stays, until changed) at `initial`.
    pub fn new(clock: Arc<dyn Clock>, initial: MemorySnapshot) -> Self {
        Self {
            clock,
            steps: Arc::new(Mutex::new(BTreeMap::from([(Duration::ZERO, initial)]))),
        }
    }

    /// From `at` on, the machine reports `snapshot`.
    pub fn set_at(&self, at: Duration, snapshot: MemorySnapshot) {
        self.steps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(at, snapshot);
    }

    /// From now on, the machine reports `snapshot`.
    pub fn set_now(&self, snapshot: MemorySnapshot) {
        self.set_at(self.clock.now(), snapshot);
    }
}

impl MemoryProbe for ScriptedMemory {
    fn snapshot(&self) -> Result<MemorySnapshot, MemoryProbeError> {
        let now = self.clock.now();
        let steps = self.steps.lock().unwrap_or_else(PoisonError::into_inner);
        let (_, snapshot) = steps
            .range(..=now)
            .next_back()
            .expect("ScriptedMemory always holds a step at time zero");
        Ok(*snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::TokioClock;

    #[test]
    fn report_numbers_print_as_the_report_does() {
        let m = MemorySnapshot::REPORT;
        assert_eq!(m.used_permille(), 802);
        assert_eq!(
            m.describe(),
            "80.2 % used (12.71 GB of 15.86 GB, 3.15 GB available)"
        );
    }

    #[test]
    fn inconsistent_figures_are_refused() {
        assert!(MemorySnapshot::new(10, 11).is_err());
        assert!(MemorySnapshot::new(0, 0).is_err());
        assert_eq!(
            MemorySnapshot::new(10, 10).map(|m| m.used_permille()),
            Ok(0)
        );
    }

    #[test]
    fn meminfo_is_parsed_and_junk_refused() {
        let text = "MemTotal:       16000000 kB\nMemFree:  1 kB\nMemAvailable:    4000000 kB\n";
        let m = OsMemory::parse_meminfo(text).map_err(|e| e.to_string());
        assert_eq!(
            m.map(|m| (m.total_bytes, m.available_bytes)),
            Ok((16_384_000_000, 4_096_000_000))
        );
        assert!(OsMemory::parse_meminfo("MemTotal: 1 kB\n").is_err());
        assert!(OsMemory::parse_meminfo("MemTotal: x kB\nMemAvailable: 1 kB").is_err());
        assert!(
            OsMemory::parse_meminfo("MemTotal: 99999999999999999999 kB\nMemAvailable: 1 kB")
                .is_err()
        );
    }

    #[test]
    fn os_probe_reads_this_machine() {
        let m = OsMemory.snapshot().map_err(|e| e.to_string());
        assert!(m.is_ok_and(|m| m.total_bytes > 0 && m.available_bytes <= m.total_bytes));
    }

    #[tokio::test(start_paused = true)]
    async fn scripted_memory_follows_its_timeline() {
        let clock = Arc::new(TokioClock::virtual_from(std::time::UNIX_EPOCH));
        let mem = ScriptedMemory::new(clock.clone(), MemorySnapshot::REPORT);
        let spike = MemorySnapshot::new(MemorySnapshot::REPORT.total_bytes, 1 << 20)
            .expect("valid figures");
        mem.set_at(Duration::from_secs(5), spike);
        assert_eq!(mem.snapshot(), Ok(MemorySnapshot::REPORT));
        clock.sleep(Duration::from_secs(5)).await;
        assert_eq!(mem.snapshot(), Ok(spike));
    }
}
