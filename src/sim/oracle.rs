//! The oracle: what must hold in every run, checked apart from the driver.
//!
//! During the run ([`Oracle::sample`], after every simulation step): the
//! admission invariants, slots within the limits, reserved memory within
//! the memory limit. After it ([`Oracle::finish`]): everything released,
//! every drive byte range committed once and in order, offsets only moving
//! forward within a session, every file's drive checksum equal to its
//! source's, every failure typed, and the outcome the scenario expects.

use super::scenario::Expectation;
use crate::admission::{Admission, LedgerState};
use crate::client::{ClientError, UploadOutcome};
use crate::drive::CommitRecord;
use crate::trace::{Event, Stamped};
use serde::Serialize;
use std::collections::BTreeMap;

/// A broken check, with where it was seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// Which check.
    pub check: &'static str,
    /// What was seen.
    pub detail: String,
}

/// Peaks seen while sampling.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Peaks {
    /// Most global slots in use at once.
    pub slots_in_use: u32,
    /// Most memory reserved at once.
    pub reserved_bytes: u64,
    /// Most uploads waiting for admission at once.
    pub waiting: u32,
}

/// The oracle's state across a run.
#[derive(Debug, Default)]
pub struct Oracle {
    /// Peaks.
    pub peaks: Peaks,
    /// Violations found (the first few of each check).
    pub violations: Vec<Violation>,
    memory_limit_bytes: u64,
}

/// How many violations of one check are kept (the rest are counted).
const VIOLATIONS_PER_CHECK_MAX: usize = 5;

impl Oracle {
    /// An oracle for a machine whose memory limit is `memory_limit_bytes`.
    pub fn new(memory_limit_bytes: u64) -> Self {
        Self {
            memory_limit_bytes,
            ..Self::default()
        }
    }

    fn flag(&mut self, check: &'static str, detail: String) {
        if self.violations.iter().filter(|v| v.check == check).count() < VIOLATIONS_PER_CHECK_MAX {
            self.violations.push(Violation { check, detail });
        }
    }

    /// Checks admission now (called after every step).
    pub fn sample(&mut self, admission: &dyn Admission, at_ms: u64) {
        if let Err(v) = admission.check() {
            self.flag("admission_invariant", format!("at {at_ms} ms: {v}"));
        }
        let s: LedgerState = admission.state().ledger;
        if s.global_in_use > s.limits.global_slots {
            self.flag(
                "global_limit",
                format!(
                    "at {at_ms} ms: {} of {} global slots",
                    s.global_in_use, s.limits.global_slots
                ),
            );
        }
        for (user, &n) in &s.user_in_use {
            if n > s.limits.user_slots {
                self.flag(
                    "user_limit",
                    format!("at {at_ms} ms: {user} holds {n} of {}", s.limits.user_slots),
                );
            }
        }
        if s.reserved_bytes > self.memory_limit_bytes {
            self.flag(
                "memory_limit",
                format!(
                    "at {at_ms} ms: {} bytes reserved, limit {}",
                    s.reserved_bytes, self.memory_limit_bytes
                ),
            );
        }
        self.peaks.slots_in_use = self.peaks.slots_in_use.max(s.global_in_use);
        self.peaks.reserved_bytes = self.peaks.reserved_bytes.max(s.reserved_bytes);
        self.peaks.waiting = self.peaks.waiting.max(s.waiting);
    }

    /// Checks the end of a run.
    pub fn finish(
        &mut self,
        final_admission: Option<&LedgerState>,
        commits: &[CommitRecord],
        events: &[Stamped],
        results: &[(Option<Result<UploadOutcome, ClientError>>, String)],
        expect: &Expectation,
    ) {
        // 1. Everything released.
        if let Some(s) = final_admission {
            if !s.is_idle() {
                self.flag("released_at_end", format!("left held at the end: {s:?}"));
            }
        }
        // 2. Drive ranges: contiguous per session, never overlapping.
        let mut next: BTreeMap<&str, u64> = BTreeMap::new();
        for c in commits {
            let expected = next.get(c.upload_id.as_str()).copied().unwrap_or(0);
            if c.first_byte != expected {
                self.flag(
                    "committed_once_in_order",
                    format!(
                        "drive session {} committed [{}, {}) after {expected} bytes",
                        c.upload_id, c.first_byte, c.end_byte_exclusive
                    ),
                );
            }
            next.insert(c.upload_id.as_str(), c.end_byte_exclusive);
        }
        // 3. Offsets only forward within a session (backend's view).
        let mut held: BTreeMap<&str, (u32, u64)> = BTreeMap::new();
        for e in events {
            match &e.event {
                Event::DriveSession { upload, generation } => {
                    held.insert(upload.as_str(), (*generation, 0));
                }
                Event::DriveHeld { upload, held_bytes } => {
                    let (generation, last) = held.get(upload.as_str()).copied().unwrap_or((0, 0));
                    if *held_bytes < last {
                        self.flag(
                            "offsets_forward",
                            format!("upload {upload} session {generation}: drive held {last} then {held_bytes} at {} ms", e.at_ms),
                        );
                    }
                    held.insert(upload.as_str(), (generation, (*held_bytes).max(last)));
                }
                _ => {}
            }
        }
        // 4. Outcomes: integrity and the expected ending, typed.
        for (i, (result, source_checksum)) in results.iter().enumerate() {
            match (result, expect) {
                (None, _) => self.flag("liveness", format!("client {i} never finished")),
                (Some(Ok(outcome)), Expectation::Complete) => {
                    if &outcome.file.crc64nvme != source_checksum {
                        self.flag(
                            "checksum",
                            format!(
                                "client {i}: drive has {}, source is {source_checksum}",
                                outcome.file.crc64nvme
                            ),
                        );
                    }
                }
                (Some(Ok(_)), Expectation::Refused { cause }) => self.flag(
                    "expected_outcome",
                    format!("client {i} completed; expected refusal {cause}"),
                ),
                (Some(Err(e)), Expectation::Complete) => {
                    self.flag("expected_outcome", format!("client {i} failed: {e}"));
                }
                (Some(Err(e)), Expectation::Refused { cause }) => {
                    let got = match e {
                        ClientError::Refused { cause, .. } => Some(cause.as_str()),
                        ClientError::GaveUp { last_error, .. }
                            if last_error.contains(cause.as_str()) =>
                        {
                            Some(cause.as_str())
                        }
                        _ => None,
                    };
                    if got != Some(cause.as_str()) {
                        self.flag(
                            "expected_outcome",
                            format!("client {i}: expected refusal {cause}, got {e}"),
                        );
                    }
                }
            }
        }
    }
}
