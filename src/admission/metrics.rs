//! Admission metrics: outcomes by cause and the distribution of waits.
//!
//! [`AdmissionMetrics`] is the report; [`AdmissionCounters`] is what the
//! [`Admitter`](super::Admitter) counts into: atomics for every admission
//! and release (no lock on the fast path, and never the ledger's lock, so
//! metrics never lengthen a critical section that decides anything), and a
//! lock only for refusals by cause.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Upper bounds (ms, inclusive) of the wait-time histogram buckets; a last
/// bucket counts everything above.
pub const WAIT_BUCKETS_MS: [u64; 7] = [0, 1, 10, 100, 1_000, 10_000, 60_000];

/// Counters since start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AdmissionMetrics {
    /// Uploads admitted.
    pub admitted: u64,
    /// Refusals by cause ([`AdmissionError::cause`](super::AdmissionError::cause)).
    pub rejected: BTreeMap<String, u64>,
    /// Slots released after completion.
    pub completed: u64,
    /// Slots released after failure.
    pub failed: u64,
    /// Wait-time histogram: counts per bucket of [`WAIT_BUCKETS_MS`], plus
    /// one for the overflow.
    pub wait_histogram: Vec<u64>,
    /// Sum of waits of admitted uploads, ms.
    pub wait_ms_total: u64,
    /// Longest wait of an admitted upload, ms.
    pub wait_ms_max: u64,
}

/// The histogram bucket of a wait of `ms`: the first whose (inclusive)
/// upper bound it does not pass, or the overflow bucket.
fn wait_bucket(ms: u64) -> usize {
    WAIT_BUCKETS_MS
        .iter()
        .position(|&b| ms <= b)
        .unwrap_or(WAIT_BUCKETS_MS.len())
}

fn whole_ms(waited: Duration) -> u64 {
    u64::try_from(waited.as_millis()).unwrap_or(u64::MAX)
}

impl AdmissionMetrics {
    pub(crate) fn record_wait(&mut self, waited: Duration) {
        if self.wait_histogram.len() != WAIT_BUCKETS_MS.len() + 1 {
            self.wait_histogram = vec![0; WAIT_BUCKETS_MS.len() + 1];
        }
        let ms = whole_ms(waited);
        self.wait_histogram[wait_bucket(ms)] += 1;
        self.wait_ms_total = self.wait_ms_total.saturating_add(ms);
        self.wait_ms_max = self.wait_ms_max.max(ms);
    }

    pub(crate) fn record_rejection(&mut self, cause: &str) {
        *self.rejected.entry(cause.to_owned()).or_insert(0) += 1;
    }
}

/// The counters an admitter records into, shared by its admissions and
/// slots. Reads ([`AdmissionCounters::snapshot`]) give the same report as
/// [`AdmissionMetrics`] recorded the same events; a snapshot taken while
/// other threads record may be mid-event (admitted counted, wait not yet).
#[derive(Debug, Default)]
pub struct AdmissionCounters {
    admitted: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    /// Per bucket of [`WAIT_BUCKETS_MS`], plus the overflow.
    wait_histogram: [AtomicU64; WAIT_BUCKETS_MS.len() + 1],
    /// Saturating.
    wait_ms_total: AtomicU64,
    wait_ms_max: AtomicU64,
    /// Refusals by cause: not on the fast path, so a lock will do.
    rejected: Mutex<BTreeMap<&'static str, u64>>,
}

impl AdmissionCounters {
    /// Counts one admission after a wait of `waited`.
    pub(crate) fn record_admitted(&self, waited: Duration) {
        self.admitted.fetch_add(1, Ordering::Relaxed);
        let ms = whole_ms(waited);
        self.wait_histogram[wait_bucket(ms)].fetch_add(1, Ordering::Relaxed);
        if ms > 0 {
            // Saturating, as `AdmissionMetrics::record_wait`: the closure
            // always returns `Some`, so the update cannot fail.
            let _ = self
                .wait_ms_total
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                    Some(t.saturating_add(ms))
                });
            self.wait_ms_max.fetch_max(ms, Ordering::Relaxed);
        }
    }

    /// Counts one released slot, completed or not.
    pub(crate) fn record_released(&self, completed: bool) {
        let counter = if completed {
            &self.completed
        } else {
            &self.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one refusal by its cause.
    pub(crate) fn record_rejection(&self, cause: &'static str) {
        let mut rejected = self.rejected.lock().unwrap_or_else(PoisonError::into_inner);
        *rejected.entry(cause).or_insert(0) += 1;
    }

    /// The counters as a report. The histogram is empty until the first
    /// admission, as [`AdmissionMetrics`] keeps it.
    pub fn snapshot(&self) -> AdmissionMetrics {
        let wait_histogram: Vec<u64> = self
            .wait_histogram
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let rejected = self.rejected.lock().unwrap_or_else(PoisonError::into_inner);
        AdmissionMetrics {
            admitted: self.admitted.load(Ordering::Relaxed),
            rejected: rejected
                .iter()
                .map(|(c, n)| ((*c).to_owned(), *n))
                .collect(),
            completed: self.completed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            wait_histogram: if wait_histogram.iter().all(|&n| n == 0) {
                Vec::new()
            } else {
                wait_histogram
            },
            wait_ms_total: self.wait_ms_total.load(Ordering::Relaxed),
            wait_ms_max: self.wait_ms_max.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This is a regression test that ensures each wait lands in the first
    /// bucket whose (inclusive) upper bound it does not pass, the last
    /// bucket takes everything above, and the total and maximum follow;
    /// refusals are counted per cause.
    #[test]
    fn waits_land_in_their_inclusive_bucket_and_refusals_count_per_cause() {
        let mut m = AdmissionMetrics::default();
        for ms in [0, 1, 2, 10, 60_000, 60_001] {
            m.record_wait(Duration::from_millis(ms));
        }
        assert_eq!(m.wait_histogram, vec![1, 1, 2, 0, 0, 0, 1, 1]);
        assert_eq!((m.wait_ms_total, m.wait_ms_max), (120_014, 60_001));
        m.record_rejection("queue_full");
        m.record_rejection("queue_full");
        m.record_rejection("slots_busy");
        assert_eq!(m.rejected.get("queue_full"), Some(&2));
        assert_eq!(m.rejected.get("slots_busy"), Some(&1));
    }

    /// This is a regression test that ensures the lock-free counters report
    /// exactly what `AdmissionMetrics` reports for the same events,
    /// including the empty histogram before the first admission.
    #[test]
    fn counters_report_what_the_plain_metrics_report() {
        let counters = AdmissionCounters::default();
        let mut plain = AdmissionMetrics::default();
        assert_eq!(counters.snapshot(), plain);
        counters.record_rejection("queue_full");
        plain.record_rejection("queue_full");
        assert_eq!(
            counters.snapshot(),
            plain,
            "no histogram before an admission"
        );
        for ms in [0, 1, 2, 10, 60_000, 60_001, u64::MAX] {
            counters.record_admitted(Duration::from_millis(ms));
            plain.admitted += 1;
            plain.record_wait(Duration::from_millis(ms));
        }
        counters.record_released(true);
        plain.completed += 1;
        counters.record_released(false);
        counters.record_released(false);
        plain.failed += 2;
        assert_eq!(counters.snapshot(), plain);
        assert_eq!(plain.wait_ms_total, u64::MAX, "the total saturates");
    }
}
