//! A run's state over simulated time, for its picture ([`super::picture`]):
//! slots in use (global and per user), reserved memory, waiters, bytes
//! committed per upload, and the oracle's violations where they were found.
//!
//! Sampled after every step (only when [`RunOptions::timeline`] asks for it:
//! a sweep never pays for it) into buckets of simulated time: within a
//! bucket the peaks of slots, memory and waiters are kept (a spike shorter
//! than a bucket still shows) and the latest committed bytes. The number of
//! buckets is bounded ([`SAMPLES_MAX`]): when a run outlasts them, buckets
//! double in length and neighbours merge, so memory stays bounded however
//! long the run.
//!
//! [`RunOptions::timeline`]: super::RunOptions::timeline

use super::oracle::Violation;
use crate::admission::LedgerState;
use std::collections::BTreeMap;

/// Most samples a timeline keeps.
pub const SAMPLES_MAX: usize = 2_000;
/// Most violations a timeline places (the oracle keeps a few per check).
pub const VIOLATIONS_MAX: usize = 64;

/// One bucket of simulated time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sample {
    /// The bucket's start, ms.
    pub at_ms: u64,
    /// Global slots in use (the bucket's peak).
    pub global_in_use: u32,
    /// Slots in use per user (each user's peak in the bucket).
    pub user_in_use: BTreeMap<String, u32>,
    /// Bytes reserved by admission (peak).
    pub reserved_bytes: u64,
    /// Uploads waiting for admission (peak).
    pub waiting: u32,
    /// Bytes committed per upload, in the scenario's file order (latest).
    pub committed_bytes: Vec<u64>,
}

impl Sample {
    /// Folds `later` (of the same or a following bucket) into this one.
    fn merge(&mut self, later: &Sample) {
        self.global_in_use = self.global_in_use.max(later.global_in_use);
        for (user, &n) in &later.user_in_use {
            let peak = self.user_in_use.entry(user.clone()).or_insert(0);
            *peak = (*peak).max(n);
        }
        self.reserved_bytes = self.reserved_bytes.max(later.reserved_bytes);
        self.waiting = self.waiting.max(later.waiting);
        self.committed_bytes.clone_from(&later.committed_bytes);
    }
}

/// A violation placed in time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// When the oracle found it, ms (the end of the run for end checks).
    pub at_ms: u64,
    /// What was found.
    pub violation: Violation,
}

/// The recorder (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeline {
    /// Length of a bucket, ms; doubles when the samples run out.
    bucket_ms: u64,
    /// Closed buckets, in time order; at most [`SAMPLES_MAX`].
    samples: Vec<Sample>,
    /// The bucket being filled.
    open: Option<Sample>,
    /// Violations placed so far, at most [`VIOLATIONS_MAX`].
    violations: Vec<Placed>,
    /// How many of the oracle's violations were already placed.
    violations_seen: usize,
    /// The memory budget reservations are held against, bytes.
    pub memory_limit_bytes: u64,
}

impl Timeline {
    /// A timeline for a run of at most `duration_max_ms`, stepped every
    /// `tick_ms`, whose reservations are held against `memory_limit_bytes`.
    pub fn new(duration_max_ms: u64, tick_ms: u64, memory_limit_bytes: u64) -> Self {
        let bucket_ms = duration_max_ms
            .div_ceil(SAMPLES_MAX as u64)
            .max(tick_ms)
            .max(1);
        Self {
            bucket_ms,
            samples: Vec::new(),
            open: None,
            violations: Vec::new(),
            violations_seen: 0,
            memory_limit_bytes,
        }
    }

    /// Records the state at `at_ms` (called after a step).
    pub fn sample(&mut self, at_ms: u64, ledger: &LedgerState, committed_bytes: &[u64]) {
        let bucket_at = at_ms - at_ms % self.bucket_ms;
        let now = Sample {
            at_ms: bucket_at,
            global_in_use: ledger.global_in_use,
            user_in_use: ledger
                .user_in_use
                .iter()
                .map(|(u, &n)| (u.to_string(), n))
                .collect(),
            reserved_bytes: ledger.reserved_bytes,
            waiting: ledger.waiting,
            committed_bytes: committed_bytes.to_vec(),
        };
        match &mut self.open {
            Some(open) if open.at_ms == bucket_at => open.merge(&now),
            _ => {
                if let Some(closed) = self.open.replace(now) {
                    self.close(closed);
                }
            }
        }
    }

    /// Places the oracle's violations found since the last call at `at_ms`.
    pub fn place_violations(&mut self, at_ms: u64, all: &[Violation]) {
        for v in all.iter().skip(self.violations_seen) {
            if self.violations.len() < VIOLATIONS_MAX {
                self.violations.push(Placed {
                    at_ms,
                    violation: v.clone(),
                });
            }
        }
        self.violations_seen = self.violations_seen.max(all.len());
    }

    fn close(&mut self, closed: Sample) {
        self.samples.push(closed);
        if self.samples.len() >= SAMPLES_MAX {
            self.halve();
        }
    }

    /// Doubles the bucket length, merging neighbours.
    fn halve(&mut self) {
        self.bucket_ms = self.bucket_ms.saturating_mul(2);
        let bucket_ms = self.bucket_ms;
        let mut merged: Vec<Sample> = Vec::with_capacity(self.samples.len() / 2 + 1);
        for s in self.samples.drain(..) {
            let at = s.at_ms - s.at_ms % bucket_ms;
            match merged.last_mut() {
                Some(last) if last.at_ms == at => last.merge(&s),
                _ => merged.push(Sample { at_ms: at, ..s }),
            }
        }
        self.samples = merged;
        if let Some(open) = &mut self.open {
            open.at_ms -= open.at_ms % bucket_ms;
        }
    }

    /// Every sample, the open bucket last.
    pub fn samples(&self) -> impl Iterator<Item = &Sample> {
        self.samples.iter().chain(self.open.as_ref())
    }

    /// The violations, in the order found.
    pub fn violations(&self) -> &[Placed] {
        &self.violations
    }

    /// The bucket length, ms.
    pub fn bucket_ms(&self) -> u64 {
        self.bucket_ms
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::admission::Limits;

    /// A ledger with `global` slots in use and `reserved` bytes reserved.
    pub(crate) fn ledger(global: u32, reserved: u64) -> LedgerState {
        LedgerState {
            limits: Limits {
                global_slots: 20,
                user_slots: 5,
                memory_budget_bytes: 1 << 30,
                waiters_max: 100,
                daily_limit_bytes: None,
            },
            global_in_use: global,
            user_in_use: BTreeMap::new(),
            reserved_bytes: reserved,
            waiting: 0,
            quota_charged: BTreeMap::new(),
        }
    }

    #[test]
    fn a_bucket_keeps_its_peaks_and_its_latest_progress() {
        let mut t = Timeline::new(10_000, 10, 0);
        assert_eq!(t.bucket_ms(), 10);
        t.sample(0, &ledger(3, 100), &[1]);
        t.sample(5, &ledger(1, 300), &[2]);
        t.sample(10, &ledger(0, 0), &[4]);
        let s: Vec<_> = t.samples().cloned().collect();
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].global_in_use, s[0].reserved_bytes), (3, 300));
        assert_eq!(s[0].committed_bytes, [2]);
        assert_eq!((s[1].at_ms, s[1].committed_bytes.clone()), (10, vec![4]));
    }

    /// This is a regression test that ensures a run longer than its stated
    /// duration cannot grow the timeline without bound: buckets double.
    #[test]
    fn a_long_run_stays_within_the_sample_bound_and_keeps_spikes() {
        let mut t = Timeline::new(1_000, 1, 0);
        for ms in 0..100_000u64 {
            let spike = if ms == 77_777 { 9 } else { 1 };
            t.sample(ms, &ledger(spike, 0), &[ms]);
        }
        let s: Vec<_> = t.samples().collect();
        assert!(s.len() <= SAMPLES_MAX + 1, "{} samples", s.len());
        assert!(s.windows(2).all(|w| w[0].at_ms < w[1].at_ms));
        assert_eq!(s.iter().map(|x| x.global_in_use).max(), Some(9));
        assert_eq!(
            s.last().map(|x| x.committed_bytes.clone()),
            Some(vec![99_999])
        );
    }

    #[test]
    fn violations_are_placed_once_when_first_seen() {
        let mut t = Timeline::new(1_000, 1, 0);
        let v = |check| Violation {
            check,
            detail: "d".into(),
        };
        t.place_violations(5, &[v("a")]);
        t.place_violations(9, &[v("a"), v("b")]);
        let placed: Vec<_> = t
            .violations()
            .iter()
            .map(|p| (p.at_ms, p.violation.check))
            .collect();
        assert_eq!(placed, [(5, "a"), (9, "b")]);
    }
}
