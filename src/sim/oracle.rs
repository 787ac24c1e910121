//! The oracle: what must hold in every run, checked apart from the driver.
//!
//! During the run ([`Oracle::sample`], after every simulation step): the
//! admission invariants, slots within the limits, reserved memory within
//! the memory limit. After it ([`Oracle::finish`]): everything released,
//! every drive byte range committed once and in order, offsets only moving
//! forward within a session, every file's drive checksum equal to its
//! source's, every refusal naming a typed cause, and the outcome the
//! scenario expects.
//!
//! Checks with their own files, flagged here by the step loop:
//! [`lockstep`](super::lockstep) (`admission_model`: every admission
//! decision against the reference rules; `window_model`: every window
//! decision, piece and step against a model of the reorder window;
//! `drive_ranges_model`: every `Range` against the ranges the drive
//! accepted) and `buffers` (the bytes the backend really buffers against
//! the window, the reservation and the ledger).

use super::scenario::Expectation;
use crate::admission::{Admission, AdmissionError, LedgerState};
use crate::chunk_api::Cause;
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

/// The bounds a run is held to.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bounds {
    /// Reserved memory may never exceed this (the profile's limit).
    pub memory_limit_bytes: u64,
    /// Nobody waits longer than this to be admitted (no starvation).
    pub admission_wait_ms: u64,
    /// Per user per day, when limits are on.
    pub daily_limit_bytes: Option<u64>,
    /// Whether a failed upload's quota charge is refunded (the profile's).
    pub refund_quota_on_failure: bool,
}

/// The oracle's state across a run.
#[derive(Debug, Default)]
pub struct Oracle {
    /// Peaks.
    pub peaks: Peaks,
    /// Violations found (the first few of each check).
    pub violations: Vec<Violation>,
    bounds: Bounds,
}

/// How many violations of one check are kept (the rest are counted).
const VIOLATIONS_PER_CHECK_MAX: usize = 5;

/// The one cause the backend records for a refused create that is not
/// admission's: its drive breaker is open.
const DRIVE_UNAVAILABLE_CAUSE: &str = Cause::DriveUnavailable.as_str();

/// Whether a refused create names why: one of admission's typed causes, or
/// the drive breaker. A bare refusal (the original manager's `False`) does
/// not.
fn typed_refusal(cause: &str) -> bool {
    AdmissionError::TYPED_CAUSES.contains(&cause) || cause == DRIVE_UNAVAILABLE_CAUSE
}

/// Whether a cause the client received names a reason: anything but the
/// client's `unknown` (a refusal whose body named no cause) and admission's
/// bare `unexplained`.
fn typed_wire_cause(cause: Cause) -> bool {
    !matches!(cause, Cause::Unknown | Cause::Unexplained)
}

impl Oracle {
    /// An oracle holding runs to `bounds`.
    pub fn new(bounds: Bounds) -> Self {
        Self {
            bounds,
            ..Self::default()
        }
    }

    /// Records a violation (at most a few per check are kept).
    pub fn flag(&mut self, check: &'static str, detail: String) {
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
        if s.reserved_bytes > self.bounds.memory_limit_bytes {
            self.flag(
                "memory_limit",
                format!(
                    "at {at_ms} ms: {} bytes reserved, limit {}",
                    s.reserved_bytes, self.bounds.memory_limit_bytes
                ),
            );
        }
        self.peaks.slots_in_use = self.peaks.slots_in_use.max(s.global_in_use);
        self.peaks.reserved_bytes = self.peaks.reserved_bytes.max(s.reserved_bytes);
        self.peaks.waiting = self.peaks.waiting.max(s.waiting);
    }

    /// Checks the end of a run: one function per end check, in the order
    /// their violations are reported.
    pub fn finish(
        &mut self,
        final_admission: Option<&LedgerState>,
        commits: &[CommitRecord],
        events: &[Stamped],
        results: &[(Option<Result<UploadOutcome, ClientError>>, String)],
        expect: &Expectation,
    ) {
        // The books first: a double admission or a wrong charge is the
        // cause of what the later checks see (a slot left held).
        self.check_accounting(
            final_admission,
            events,
            results,
            self.bounds.refund_quota_on_failure,
        );
        self.check_released_at_end(final_admission);
        self.check_committed_once_in_order(commits);
        self.check_offsets_forward(events);
        self.check_starvation_and_quota(results);
        self.check_typed_causes(events, results);
        self.check_outcomes(results, expect);
    }

    /// 1. Everything released.
    fn check_released_at_end(&mut self, final_admission: Option<&LedgerState>) {
        if let Some(s) = final_admission {
            if !s.is_idle() {
                self.flag("released_at_end", format!("left held at the end: {s:?}"));
            }
        }
    }

    /// 2. Drive ranges: contiguous per session, never overlapping.
    fn check_committed_once_in_order(&mut self, commits: &[CommitRecord]) {
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
    }

    /// 3. Offsets only forward within a session (backend's view).
    fn check_offsets_forward(&mut self, events: &[Stamped]) {
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
    }

    /// 4. No starvation, and the daily quota held per user.
    fn check_starvation_and_quota(
        &mut self,
        results: &[(Option<Result<UploadOutcome, ClientError>>, String)],
    ) {
        let mut completed_by_user: BTreeMap<&str, u64> = BTreeMap::new();
        for (i, (result, _)) in results.iter().enumerate() {
            if let Some(Ok(o)) = result {
                if o.admitted_after_ms > self.bounds.admission_wait_ms {
                    self.flag(
                        "no_starvation",
                        format!(
                            "upload {i} waited {} ms to be admitted (bound {} ms)",
                            o.admitted_after_ms, self.bounds.admission_wait_ms
                        ),
                    );
                }
                if let Some(user) = &o.user {
                    *completed_by_user.entry(user.as_str()).or_insert(0) += o.file.size_bytes;
                }
            }
        }
        if let Some(limit) = self.bounds.daily_limit_bytes {
            for (user, bytes) in completed_by_user {
                if bytes > limit {
                    self.flag(
                        "quota_respected",
                        format!("{user} completed {bytes} bytes in one day, limit {limit}"),
                    );
                }
            }
        }
    }

    /// 5. Every refusal names its cause, in the trace and at the client.
    fn check_typed_causes(
        &mut self,
        events: &[Stamped],
        results: &[(Option<Result<UploadOutcome, ClientError>>, String)],
    ) {
        for e in events {
            if let Event::Refused { user, cause } = &e.event {
                if !typed_refusal(cause) {
                    self.flag(
                        "typed_cause",
                        format!(
                            "{user} refused at {} ms with no typed cause: {cause:?}",
                            e.at_ms
                        ),
                    );
                }
            }
        }
        for (i, (result, _)) in results.iter().enumerate() {
            if let Some(Err(
                ClientError::Refused { cause, .. } | ClientError::UploadFailed { cause, .. },
            )) = result
            {
                if !typed_wire_cause(*cause) {
                    self.flag(
                        "typed_cause",
                        // The name as it was on the wire, quoted as before.
                        format!(
                            "client {i} failed with no typed cause: {:?}",
                            cause.as_str()
                        ),
                    );
                }
            }
        }
    }

    /// 6. Outcomes: integrity and the expected ending, typed.
    fn check_outcomes(
        &mut self,
        results: &[(Option<Result<UploadOutcome, ClientError>>, String)],
        expect: &Expectation,
    ) {
        for (i, (result, source_checksum)) in results.iter().enumerate() {
            match (result, expect) {
                (None, _) => self.flag("liveness", format!("client {i} never finished")),
                (Some(Ok(outcome)), Expectation::Complete | Expectation::Settled { .. }) => {
                    let drive_checksum = outcome.file.crc64nvme.as_deref();
                    if drive_checksum != Some(source_checksum.as_str()) {
                        self.flag(
                            "checksum",
                            format!(
                                "client {i}: drive has {}, source is {source_checksum}",
                                drive_checksum.unwrap_or("no crc64nvme")
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
                (Some(Err(e)), Expectation::Settled { allowed_causes }) => {
                    self.check_settled(i, e, allowed_causes);
                }
                (Some(Err(e)), Expectation::Refused { cause }) => {
                    self.check_refused_as_expected(i, e, cause);
                }
            }
        }
    }

    /// 6a. A settled run's failure must carry an allowed typed cause.
    fn check_settled(&mut self, i: usize, e: &ClientError, allowed_causes: &[String]) {
        let cause = match e {
            ClientError::Refused { cause, .. } | ClientError::UploadFailed { cause, .. } => {
                Some(cause.as_str())
            }
            _ => None,
        };
        if !cause.is_some_and(|c| allowed_causes.iter().any(|a| a == c)) {
            self.flag(
                "liveness",
                format!("upload {i} ended without a typed non-retryable cause ({allowed_causes:?} allowed): {e}"),
            );
        }
    }

    /// 6b. An expected refusal must carry the expected cause.
    fn check_refused_as_expected(&mut self, i: usize, e: &ClientError, cause: &str) {
        let got = match e {
            ClientError::Refused { cause, .. } => Some(cause.as_str()),
            ClientError::GaveUp { last_error, .. } if last_error.contains(cause) => Some(cause),
            _ => None,
        };
        if got != Some(cause) {
            self.flag(
                "expected_outcome",
                format!("client {i}: expected refusal {cause}, got {e}"),
            );
        }
    }
}

/// A completed upload of 10 bytes by `user` as `upload`, whose drive file
/// has `checksum`: the fixture of the oracle's and accounting's tests.
#[cfg(test)]
pub(super) fn completed_outcome(user: &str, upload: &str, checksum: &str) -> UploadOutcome {
    UploadOutcome {
        user: crate::user::UserId::new(user).ok(),
        admitted_after_ms: 0,
        upload_id: crate::ids::UploadId::new(upload),
        file: crate::chunk_api::UploadedFile {
            kind: "drive#file".into(),
            id: "f".into(),
            name: "n".into(),
            mime_type: "application/octet-stream".into(),
            size_bytes: 10,
            md5_checksum: None,
            crc64nvme: Some(checksum.into()),
        },
        chunks_sent: 1,
        chunk_failures: 0,
        sent_bytes: 10,
        rounds: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(id: &str, first: u64, end: u64) -> CommitRecord {
        CommitRecord {
            upload_id: crate::ids::SessionId::new(id),
            first_byte: first,
            end_byte_exclusive: end,
        }
    }

    fn at(at_ms: u64, event: Event) -> Stamped {
        Stamped {
            at_ms,
            host: "backend".into(),
            event,
        }
    }

    /// Upload `u` starts drive session `generation` at `at_ms`.
    fn session(at_ms: u64, generation: u32) -> Stamped {
        let upload = "u".into();
        at(at_ms, Event::DriveSession { upload, generation })
    }

    /// The drive says it holds `held_bytes` of upload `u` at `at_ms`.
    fn held(at_ms: u64, held_bytes: u64) -> Stamped {
        let upload = "u".into();
        at(at_ms, Event::DriveHeld { upload, held_bytes })
    }

    fn outcome(checksum: &str) -> UploadOutcome {
        completed_outcome("u", "u", checksum)
    }

    fn checks(o: &Oracle) -> Vec<&'static str> {
        o.violations.iter().map(|v| v.check).collect()
    }

    #[test]
    fn a_clean_run_passes() {
        let mut o = Oracle::new(Bounds {
            memory_limit_bytes: 100,
            admission_wait_ms: 1_000,
            daily_limit_bytes: None,
            ..Bounds::default()
        });
        let events = [session(0, 0), held(1, 5), session(2, 1), held(3, 0)];
        let results = [(Some(Ok(outcome("ab"))), "ab".to_owned())];
        o.finish(
            None,
            &[commit("s", 0, 5), commit("s", 5, 10), commit("t", 0, 3)],
            &events,
            &results,
            &Expectation::Complete,
        );
        assert!(o.violations.is_empty(), "{:?}", o.violations);
    }

    #[test]
    fn each_end_check_can_fail() {
        let mut o = Oracle::new(Bounds {
            memory_limit_bytes: 100,
            admission_wait_ms: 1_000,
            daily_limit_bytes: None,
            ..Bounds::default()
        });
        let events = [session(0, 0), held(1, 5), held(2, 4)];
        let results = [
            (Some(Ok(outcome("ab"))), "cd".to_owned()),
            (
                Some(Err(ClientError::GaveUp {
                    stalled_ms: 1,
                    last_error: "x".into(),
                })),
                "ab".to_owned(),
            ),
            (None, "ab".to_owned()),
        ];
        let held = LedgerState {
            limits: crate::admission::Limits {
                global_slots: 1,
                user_slots: 1,
                memory_budget_bytes: 1,
                waiters_max: 1,
                daily_limit_bytes: None,
            },
            global_in_use: 1,
            user_in_use: Default::default(),
            reserved_bytes: 0,
            waiting: 0,
            quota_charged: Default::default(),
        };
        o.finish(
            Some(&held),
            &[commit("s", 0, 5), commit("s", 4, 10)],
            &events,
            &results,
            &Expectation::Complete,
        );
        assert_eq!(
            checks(&o),
            [
                "released_at_end",
                "committed_once_in_order",
                "offsets_forward",
                "checksum",
                "expected_outcome",
                "liveness"
            ]
        );
    }

    #[test]
    fn a_refusal_without_a_typed_cause_is_flagged() {
        let refused = |cause: &str| {
            at(
                0,
                Event::Refused {
                    user: "u".into(),
                    cause: cause.into(),
                },
            )
        };
        let events = [
            refused("memory_pressure"),
            refused("drive_unavailable"),
            refused("unexplained"),
        ];
        let failed = |cause: &str| {
            let e = ClientError::Refused {
                status: 500,
                cause: cause.into(),
                message: "m".into(),
            };
            (Some(Err(e)), "ab".to_owned())
        };
        let results = [failed("checksum_mismatch"), failed("unknown")];
        let expect = Expectation::Refused {
            cause: "checksum_mismatch".into(),
        };
        let mut o = Oracle::new(Bounds {
            memory_limit_bytes: 100,
            admission_wait_ms: 1_000,
            daily_limit_bytes: None,
            ..Bounds::default()
        });
        o.finish(None, &[], &events, &results, &expect);
        assert_eq!(
            checks(&o),
            ["typed_cause", "typed_cause", "expected_outcome"]
        );
    }

    #[test]
    fn a_refusal_must_carry_the_expected_cause() {
        let expect = Expectation::Refused {
            cause: "memory_pressure".into(),
        };
        let refused = |cause: &str| {
            let e = ClientError::Refused {
                status: 503,
                cause: cause.into(),
                message: "m".into(),
            };
            [(Some(Err(e)), "ab".to_owned())]
        };
        let mut o = Oracle::new(Bounds {
            memory_limit_bytes: 100,
            admission_wait_ms: 1_000,
            daily_limit_bytes: None,
            ..Bounds::default()
        });
        o.finish(None, &[], &[], &refused("memory_pressure"), &expect);
        assert!(o.violations.is_empty());
        o.finish(None, &[], &[], &refused("slots_busy"), &expect);
        o.finish(
            None,
            &[],
            &[],
            &[(Some(Ok(outcome("ab"))), "ab".to_owned())],
            &expect,
        );
        assert_eq!(checks(&o), ["expected_outcome", "expected_outcome"]);
    }
}
