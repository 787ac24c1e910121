//! [`SharedMetrics`]: a shared admitter's counters: admission's own
//! ([`AdmissionMetrics`]) plus what leases add (renewals, losses).

use crate::admission::{AdmissionMetrics, SlotOutcome};
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Counters since start.
#[derive(Debug, Default)]
pub struct SharedMetrics {
    admission: Mutex<AdmissionMetrics>,
    renewals: AtomicU64,
    renewal_failures: AtomicU64,
    leases_lost: AtomicU64,
    releases: AtomicU64,
    reasserted: AtomicU64,
}

/// What leases did, since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LeaseCounts {
    /// Renewals the store accepted.
    pub renewals: u64,
    /// Renewals that failed (store unreachable, script error); retried.
    pub renewal_failures: u64,
    /// Leases lost while their upload held them (not renewed in time, or
    /// gone from the store).
    pub leases_lost: u64,
    /// Releases the store confirmed (the lease was deleted).
    pub releases: u64,
    /// Leases put back into a store that had lost its data.
    pub reasserted: u64,
}

impl SharedMetrics {
    fn admission(&self) -> std::sync::MutexGuard<'_, AdmissionMetrics> {
        self.admission
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn admitted(&self, waited: Duration) {
        let mut m = self.admission();
        m.admitted += 1;
        m.record_wait(waited);
    }

    pub(super) fn rejected(&self, cause: &str) {
        self.admission().record_rejection(cause);
    }

    pub(super) fn released(&self, outcome: SlotOutcome) {
        let mut m = self.admission();
        match outcome {
            SlotOutcome::Completed => m.completed += 1,
            SlotOutcome::Failed => m.failed += 1,
        }
    }

    pub(super) fn renewed(&self) {
        self.renewals.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn renewal_failed(&self) {
        self.renewal_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn release_confirmed(&self) {
        self.releases.fetch_add(1, Ordering::Release);
    }

    pub(super) fn reasserted(&self) {
        self.reasserted.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn lost(&self) {
        self.leases_lost.fetch_add(1, Ordering::Relaxed);
    }

    /// Admission's counters.
    pub fn admission_metrics(&self) -> AdmissionMetrics {
        self.admission().clone()
    }

    /// The lease counters.
    pub fn lease_counts(&self) -> LeaseCounts {
        LeaseCounts {
            renewals: self.renewals.load(Ordering::Relaxed),
            renewal_failures: self.renewal_failures.load(Ordering::Relaxed),
            leases_lost: self.leases_lost.load(Ordering::Relaxed),
            releases: self.releases.load(Ordering::Acquire),
            reasserted: self.reasserted.load(Ordering::Relaxed),
        }
    }
}
