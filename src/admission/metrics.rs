//! Admission metrics: outcomes by cause and the distribution of waits.
//!
//! Plain counters under a lock of their own (not the ledger's), so metrics
//! never lengthen a critical section that decides anything.

use serde::Serialize;
use std::collections::BTreeMap;
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

impl AdmissionMetrics {
    pub(crate) fn record_wait(&mut self, waited: Duration) {
        if self.wait_histogram.len() != WAIT_BUCKETS_MS.len() + 1 {
            self.wait_histogram = vec![0; WAIT_BUCKETS_MS.len() + 1];
        }
        let ms = u64::try_from(waited.as_millis()).unwrap_or(u64::MAX);
        let bucket = WAIT_BUCKETS_MS
            .iter()
            .position(|&b| ms <= b)
            .unwrap_or(WAIT_BUCKETS_MS.len());
        self.wait_histogram[bucket] += 1;
        self.wait_ms_total = self.wait_ms_total.saturating_add(ms);
        self.wait_ms_max = self.wait_ms_max.max(ms);
    }

    pub(crate) fn record_rejection(&mut self, cause: &str) {
        *self.rejected.entry(cause.to_owned()).or_insert(0) += 1;
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
}
