//! [`Admitter`]: the production admission controller.
//!
//! One call, [`Admission::admit`], admits an upload or says exactly why not.
//! Checks, in order: the request is valid (size, user) → daily quota →
//! memory budget → a global slot and a user slot, taken together in one step
//! after a FIFO wait bounded by the profile's timeout. The quota, memory and
//! slot steps happen under one lock in the [`Ledger`](super::ledger); this
//! file adds what needs the environment: the memory probe, the clock (for
//! the UTC day and the timeout), logging and metrics.
//!
//! Memory policy: an upload may be granted while
//! `machine used + reserved by uploads + required + profile reserve ≤ limit %
//! of total`. If even with no uploads in flight the request would not fit,
//! it is refused at once (`MemoryPressure`); otherwise it waits its turn.
//!
//! The fast path: when the ledger grants a request in the step that queues
//! it (nobody waits ahead for what it takes, everything is free), the grant
//! is claimed under that same lock and the slot returned from the first
//! poll of [`Admit`] — no boxed future, no timer, one clock read (the UTC
//! day). Only a request that must wait builds the wait (its timer, its
//! start time). The decision is the ledger's either way.

use super::admit::Admit;
use super::error::AdmissionError;
use super::gate::{BoxGrantFuture, PermitGate};
use super::ledger::{Grant, Limits, Refusal, SlotRequest};
use super::metrics::{AdmissionCounters, AdmissionMetrics};
use super::permits::{Acquired, Permits};
use super::slot::{SlotOutcome, SlotOwner, UploadSlot};
use super::sync::StdSync;
use super::{Admission, AdmissionState, AdmitFailure};
use crate::env::{BoxFuture, Clock, MemoryProbe, MemorySnapshot};
use crate::profile::Profile;
use crate::user::UserId;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The memory figures behind one admission decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBudget {
    /// `limit %` of total memory.
    pub limit_bytes: u64,
    /// What uploads may reserve in all, given the machine now:
    /// `limit − reserve − used` (zero if negative).
    pub headroom_bytes: u64,
}

impl MemoryBudget {
    /// The budget `profile` allows on a machine in state `memory`.
    pub fn of(profile: &Profile, memory: &MemorySnapshot) -> Self {
        let limit = u128::from(memory.total_bytes) * u128::from(profile.memory_limit_percent) / 100;
        // At most total_bytes: fits in u64.
        let limit_bytes = u64::try_from(limit).unwrap_or(u64::MAX);
        let headroom_bytes = limit_bytes
            .saturating_sub(profile.reserved_memory_bytes)
            .saturating_sub(memory.used_bytes());
        Self {
            limit_bytes,
            headroom_bytes,
        }
    }

    /// The `MemoryPressure` error for an upload needing `required_bytes`.
    pub fn pressure(
        &self,
        profile: &Profile,
        memory: &MemorySnapshot,
        required_bytes: u64,
        reserved_by_uploads_bytes: u64,
    ) -> AdmissionError {
        AdmissionError::MemoryPressure {
            total_bytes: memory.total_bytes,
            used_bytes: memory.used_bytes(),
            used_permille: memory.used_permille(),
            limit_percent: profile.memory_limit_percent,
            limit_bytes: self.limit_bytes,
            reserve_bytes: profile.reserved_memory_bytes,
            required_bytes,
            headroom_bytes: self.headroom_bytes,
            reserved_by_uploads_bytes,
        }
    }
}

struct Core {
    profile: Profile,
    clock: Arc<dyn Clock>,
    memory: Arc<dyn MemoryProbe>,
    /// Production: [`Permits`]; the bug zoo passes its mutants.
    gate: Arc<dyn PermitGate>,
    /// `None`: any valid user id is accepted.
    known_users: Option<BTreeSet<UserId>>,
    shutting_down: AtomicBool,
    /// Lock-free on admission and release.
    metrics: AdmissionCounters,
}

/// The production admission controller. Cheap to clone (shared inside).
#[derive(Clone)]
pub struct Admitter {
    core: Arc<Core>,
}

impl Admitter {
    /// A controller for `profile` (which must be valid).
    ///
    /// # Panics
    /// If `profile` fails [`Profile::validate`]: load profiles through
    /// [`Profile::load`] or validate them first.
    pub fn new(profile: Profile, clock: Arc<dyn Clock>, memory: Arc<dyn MemoryProbe>) -> Self {
        Self::with_gate(profile, clock, memory, |limits| {
            Permits::<StdSync>::new(limits) as Arc<dyn PermitGate>
        })
    }

    /// A controller for `profile` over the permit layer `new_gate` builds
    /// for the profile's limits (the bug zoo runs its mutants this way).
    ///
    /// # Panics
    /// If `profile` fails [`Profile::validate`], as [`Admitter::new`].
    pub fn with_gate(
        profile: Profile,
        clock: Arc<dyn Clock>,
        memory: Arc<dyn MemoryProbe>,
        new_gate: impl FnOnce(Limits) -> Arc<dyn PermitGate>,
    ) -> Self {
        if let Err(e) = profile.validate() {
            panic!("Admitter::new needs a validated profile: {e}");
        }
        let limits = Limits {
            global_slots: profile.global_slots,
            user_slots: profile.user_slots,
            // The budget never exceeds what any machine could report: the
            // per-request ceiling (from the probe) is the real bound.
            memory_budget_bytes: u64::MAX,
            waiters_max: profile.waiters_max,
            daily_limit_bytes: profile
                .upload_limits_enabled
                .then_some(profile.daily_limit_bytes),
        };
        Self {
            core: Arc::new(Core {
                gate: new_gate(limits),
                profile,
                clock,
                memory,
                known_users: None,
                shutting_down: AtomicBool::new(false),
                metrics: AdmissionCounters::default(),
            }),
        }
    }

    /// Only these users may upload (others get `UnknownUser`).
    pub fn with_known_users(self, users: BTreeSet<UserId>) -> Self {
        let core = Arc::try_unwrap(self.core).unwrap_or_else(|_| {
            panic!("Admitter::with_known_users must be called before the admitter is shared")
        });
        Self {
            core: Arc::new(Core {
                known_users: Some(users),
                ..core
            }),
        }
    }

    /// The profile in force.
    pub fn profile(&self) -> &Profile {
        &self.core.profile
    }

    /// The permit layer, for invariant checks.
    pub fn gate(&self) -> &Arc<dyn PermitGate> {
        &self.core.gate
    }

    fn refuse(&self, user: &UserId, file_size_bytes: u64, error: AdmissionError) -> AdmissionError {
        self.core.metrics.record_rejection(error.cause());
        tracing::info!(%user, file_size_bytes, cause = error.cause(), reason = %error, "upload refused");
        error
    }

    /// Admits an upload of `file_size_bytes` for `user`, waiting (bounded)
    /// for slots: [`Admission::admit`], with production's refusals typed.
    ///
    /// The returned [`Admit`] decides on its first poll, and returns the
    /// slot from it when the slots are free and nobody waits ahead (the
    /// fast path, see the module documentation).
    ///
    /// # Cancel safety
    /// Dropping the future at any point gives back whatever it held.
    pub fn admit(&self, user: UserId, file_size_bytes: u64) -> Admit<'_> {
        Admit::new(self, user, file_size_bytes)
    }

    /// Step 1, the request itself: not shutting down, a size within
    /// bounds, a known user.
    fn check_request(&self, user: &UserId, file_size_bytes: u64) -> Result<(), AdmissionError> {
        let core = &self.core;
        let profile = &core.profile;
        if core.shutting_down.load(Ordering::Acquire) {
            return Err(AdmissionError::ShuttingDown);
        }
        if file_size_bytes == 0 {
            return Err(AdmissionError::EmptyFile);
        }
        if file_size_bytes > profile.file_size_bytes_max {
            let e = AdmissionError::FileTooLarge {
                file_size_bytes,
                file_size_bytes_max: profile.file_size_bytes_max,
            };
            return Err(e);
        }
        if core
            .known_users
            .as_ref()
            .is_some_and(|known| !known.contains(user))
        {
            let e = AdmissionError::UnknownUser { user: user.clone() };
            return Err(e);
        }
        Ok(())
    }

    /// Steps 2–4, quota, memory and slots: the gate refuses at once, grants
    /// at once, or queues the request (the future then resolves to the
    /// grant).
    fn request_slots(
        &self,
        user: &UserId,
        file_size_bytes: u64,
    ) -> Result<Acquired<BoxGrantFuture>, AdmissionError> {
        let core = &self.core;
        let profile = &core.profile;
        let memory = match core.memory.snapshot() {
            Ok(m) => m,
            Err(e) => return Err(AdmissionError::MemoryProbe { error: e }),
        };
        let budget = MemoryBudget::of(profile, &memory);
        let required_bytes = profile
            .memory_per_upload
            .required_bytes(file_size_bytes, profile.chunk_size_bytes);
        let day = core.clock.utc_day();
        let request = SlotRequest {
            user: user.clone(),
            memory_bytes: required_bytes,
            memory_ceiling_bytes: budget.headroom_bytes,
            quota_bytes: file_size_bytes,
            day,
        };
        Arc::clone(&core.gate)
            .acquire_or_queue(request)
            .map_err(|refusal| match refusal {
                Refusal::OverQuota(q) => AdmissionError::QuotaExceeded {
                    user: user.clone(),
                    day,
                    charged_bytes: q.charged_bytes,
                    requested_bytes: file_size_bytes,
                    daily_limit_bytes: q.daily_limit_bytes,
                },
                Refusal::Memory { reserved_bytes } => {
                    budget.pressure(profile, &memory, required_bytes, reserved_bytes)
                }
                Refusal::QueueFull {
                    waiting,
                    waiters_max,
                } => AdmissionError::QueueFull {
                    waiting,
                    waiters_max,
                },
            })
    }

    /// Steps 1–4 without waiting: refused (counted and logged), admitted
    /// at once (the fast path: counted, logged, the slot built), or queued.
    pub(super) fn admit_or_queue(
        &self,
        user: &UserId,
        file_size_bytes: u64,
    ) -> Result<Acquired<BoxGrantFuture>, AdmissionError> {
        // 1. The request itself.
        if let Err(e) = self.check_request(user, file_size_bytes) {
            return Err(self.refuse(user, file_size_bytes, e));
        }
        // 2–4. Quota, memory and slots, decided by the ledger under its lock.
        self.request_slots(user, file_size_bytes)
            .map_err(|e| self.refuse(user, file_size_bytes, e))
    }

    /// Waits for a queued request's grant, bounded by the profile's
    /// timeout; the wait (and its timer) starts on the first poll, which
    /// [`Admit`] makes in the same poll that queued the request.
    pub(super) async fn wait_for_grant(
        &self,
        user: UserId,
        file_size_bytes: u64,
        mut acquire: BoxGrantFuture,
    ) -> Result<UploadSlot, AdmissionError> {
        let core = &self.core;
        let profile = &core.profile;
        let started = core.clock.now();
        let timeout = core.clock.sleep(profile.slot_wait_timeout());
        let grant = tokio::select! {
            biased;
            grant = acquire.as_mut() => grant,
            () = timeout => {
                let state = core.gate.state();
                let e = AdmissionError::SlotsBusy {
                    user: user.clone(),
                    waited_ms: profile.slot_wait_timeout_ms,
                    global_in_use: state.global_in_use,
                    global_limit: state.limits.global_slots,
                    user_in_use: state.user_in_use.get(&user).copied().unwrap_or(0),
                    user_limit: state.limits.user_slots,
                    waiters_ahead: acquire.waiters_ahead().unwrap_or(0),
                };
                // Dropping `acquire` (on return) leaves the queue and
                // refunds the quota charge.
                return Err(self.refuse(&user, file_size_bytes, e));
            }
        };
        let waited = core.clock.now().saturating_sub(started);
        Ok(self.admitted(&user, file_size_bytes, grant, waited))
    }

    /// Counts and logs an admission after `waited`, and wraps its grant.
    pub(super) fn admitted(
        &self,
        user: &UserId,
        file_size_bytes: u64,
        grant: Grant,
        waited: Duration,
    ) -> UploadSlot {
        self.core.metrics.record_admitted(waited);
        tracing::info!(
            %user, file_size_bytes, memory_bytes = grant.memory_bytes, ticket = grant.ticket,
            wait_ms = u64::try_from(waited.as_millis()).unwrap_or(u64::MAX), "upload admitted"
        );
        UploadSlot::new(grant, self.core.clone(), file_size_bytes, waited)
    }
}

impl SlotOwner for Core {
    fn release(&self, grant: Grant, outcome: SlotOutcome) {
        let refund = outcome == SlotOutcome::Failed && self.profile.refund_quota_on_failure;
        tracing::debug!(user = %grant.user, ticket = grant.ticket, ?outcome, refund, "slot released");
        self.gate.release(grant, refund);
        self.metrics
            .record_released(outcome == SlotOutcome::Completed);
    }
}

impl Admission for Admitter {
    fn admit(
        &self,
        user: UserId,
        file_size_bytes: u64,
    ) -> BoxFuture<'_, Result<UploadSlot, AdmitFailure>> {
        let admit = Admitter::admit(self, user, file_size_bytes);
        Box::pin(async move { Ok(admit.await?) })
    }

    fn state(&self) -> AdmissionState {
        AdmissionState {
            ledger: self.core.gate.state(),
            shutting_down: self.core.shutting_down.load(Ordering::Acquire),
        }
    }

    fn metrics(&self) -> AdmissionMetrics {
        self.core.metrics.snapshot()
    }

    fn begin_shutdown(&self) {
        self.core.shutting_down.store(true, Ordering::Release);
    }

    fn check(&self) -> Result<(), super::Violation> {
        self.core.gate.check()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::{ManualClock, ScriptedMemory, UtcDay};
    use crate::units::{GIB, MIB};
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    use std::time::{Duration, UNIX_EPOCH};

    struct World {
        clock: ManualClock,
        memory: ScriptedMemory,
        admitter: Admitter,
    }

    fn world(profile: Profile) -> World {
        let clock = ManualClock::new(UNIX_EPOCH);
        let roomy = MemorySnapshot::new(64 * GIB, 60 * GIB).expect("valid figures");
        let memory = ScriptedMemory::new(Arc::new(clock.clone()), roomy);
        let admitter = Admitter::new(profile, Arc::new(clock.clone()), Arc::new(memory.clone()));
        World {
            clock,
            memory,
            admitter,
        }
    }

    fn user(name: &str) -> UserId {
        UserId::new(name).expect("valid id")
    }

    fn poll<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
        std::pin::Pin::new(fut).poll(&mut Context::from_waker(Waker::noop()))
    }

    fn admit_now(w: &World, name: &str, size: u64) -> Result<UploadSlot, AdmissionError> {
        match poll(&mut w.admitter.admit(user(name), size)) {
            Poll::Ready(r) => r,
            Poll::Pending => panic!("admission of {name} waited"),
        }
    }

    fn tight(global: u32, per_user: u32) -> Profile {
        Profile {
            global_slots: global,
            user_slots: per_user,
            ..Profile::prod()
        }
    }

    #[test]
    fn bad_sizes_are_refused_with_their_numbers() {
        let w = world(Profile::prod());
        assert_eq!(admit_now(&w, "a", 0).err(), Some(AdmissionError::EmptyFile));
        for size in [
            Profile::prod().file_size_bytes_max + 1,
            u64::MAX,
            u64::MAX - 1,
        ] {
            assert_eq!(
                admit_now(&w, "a", size).err(),
                Some(AdmissionError::FileTooLarge {
                    file_size_bytes: size,
                    file_size_bytes_max: Profile::prod().file_size_bytes_max
                })
            );
        }
        assert!(w.admitter.state().ledger.is_idle());
        assert_eq!(
            w.admitter.metrics().rejected.get("file_too_large"),
            Some(&3)
        );
    }

    #[test]
    fn unknown_users_are_refused() {
        let w = world(Profile::dev());
        let admitter = Admitter::new(
            Profile::dev(),
            Arc::new(w.clock.clone()),
            Arc::new(w.memory.clone()),
        )
        .with_known_users([user("alice")].into());
        let mut fut = admitter.admit(user("mallory"), 10);
        assert!(matches!(
            poll(&mut fut),
            Poll::Ready(Err(AdmissionError::UnknownUser { .. }))
        ));
        let mut fut = admitter.admit(user("alice"), 10);
        assert!(matches!(poll(&mut fut), Poll::Ready(Ok(_))));
    }

    #[test]
    fn quota_is_charged_per_day_and_refunded_on_failure_only() {
        let w = world(Profile::prod());
        let three = 3 * GIB;
        let first = admit_now(&w, "a", three).expect("fits the 5 GB quota");
        let err = admit_now(&w, "a", three).err();
        assert_eq!(
            err,
            Some(AdmissionError::QuotaExceeded {
                user: user("a"),
                day: UtcDay(0),
                charged_bytes: three,
                requested_bytes: three,
                daily_limit_bytes: 5 * GIB
            })
        );
        drop(first); // failed: refunded
        let second = admit_now(&w, "a", three).expect("refunded");
        second.complete(); // completed: charge stands
        assert!(matches!(
            admit_now(&w, "a", three),
            Err(AdmissionError::QuotaExceeded { .. })
        ));
        // Midnight: a new day, a new quota.
        w.clock.advance(Duration::from_secs(86_400));
        assert!(admit_now(&w, "a", three).is_ok());
        assert_eq!(w.admitter.check(), Ok(()));
    }

    #[test]
    fn memory_pressure_is_refused_at_once_with_the_numbers() {
        let w = world(Profile::prod());
        w.memory.set_now(MemorySnapshot::REPORT);
        let err = admit_now(&w, "a", 3457 * MIB).err();
        assert!(
            matches!(
                err,
                Some(AdmissionError::MemoryPressure {
                    used_permille: 802,
                    limit_percent: 80,
                    ..
                })
            ),
            "{err:?}"
        );
        assert!(w.admitter.state().ledger.is_idle());
        assert!(
            w.admitter.state().ledger.quota_charged.is_empty(),
            "a refusal charges nothing"
        );
    }

    #[test]
    fn a_wait_times_out_with_slots_busy_and_gives_everything_back() {
        let w = world(tight(1, 1));
        let held = admit_now(&w, "a", MIB).expect("free");
        let mut waiting = w.admitter.admit(user("b"), MIB);
        assert!(poll(&mut waiting).is_pending());
        assert_eq!(w.admitter.state().ledger.waiting, 1);
        w.clock
            .advance(Duration::from_millis(Profile::prod().slot_wait_timeout_ms));
        match poll(&mut waiting) {
            Poll::Ready(Err(AdmissionError::SlotsBusy {
                global_in_use: 1,
                global_limit: 1,
                waiters_ahead: 0,
                ..
            })) => {}
            other => panic!("expected SlotsBusy, got {other:?}"),
        }
        drop(waiting);
        let state = w.admitter.state().ledger;
        assert_eq!((state.waiting, state.global_in_use), (0, 1));
        assert_eq!(
            state.quota_charged.get(&user("b")),
            None,
            "the timed-out request is refunded"
        );
        drop(held);
        assert!(w.admitter.state().ledger.is_idle());
    }

    #[test]
    fn a_waiter_dropped_after_being_granted_gives_the_grant_back() {
        let w = world(tight(1, 1));
        let held = admit_now(&w, "a", MIB).expect("free");
        let mut waiting = w.admitter.admit(user("b"), MIB);
        assert!(poll(&mut waiting).is_pending());
        drop(held); // grants b's ticket under the lock
        assert_eq!(w.admitter.state().ledger.global_in_use, 1);
        drop(waiting); // before b ever claims it
        assert!(w.admitter.state().ledger.is_idle());
        assert_eq!(w.admitter.check(), Ok(()));
    }

    #[test]
    fn shutdown_refuses_new_uploads_and_lets_running_ones_finish() {
        let w = world(Profile::dev());
        let running = admit_now(&w, "a", MIB).expect("free");
        w.admitter.begin_shutdown();
        assert_eq!(
            admit_now(&w, "b", MIB).err(),
            Some(AdmissionError::ShuttingDown)
        );
        running.complete();
        let m = w.admitter.metrics();
        assert_eq!(
            (
                m.admitted,
                m.completed,
                m.rejected.get("shutting_down").copied()
            ),
            (1, 1, Some(1))
        );
    }

    #[test]
    fn the_waiting_queue_is_bounded() {
        let w = world(Profile {
            waiters_max: 1,
            ..tight(1, 1)
        });
        let _held = admit_now(&w, "a", MIB).expect("free");
        let mut first = w.admitter.admit(user("b"), MIB);
        assert!(poll(&mut first).is_pending());
        assert_eq!(
            admit_now(&w, "c", MIB).err(),
            Some(AdmissionError::QueueFull {
                waiting: 1,
                waiters_max: 1
            })
        );
    }

    /// This is a regression test that ensures a `SlotsBusy` refusal counts
    /// the requests still waiting ahead of the one that gave up.
    #[test]
    fn a_timed_out_waiter_counts_the_waiters_ahead_of_it() {
        let w = world(tight(1, 1));
        let _held = admit_now(&w, "a", MIB).expect("free");
        let mut first = w.admitter.admit(user("b"), MIB);
        assert!(poll(&mut first).is_pending());
        let mut second = w.admitter.admit(user("c"), MIB);
        assert!(poll(&mut second).is_pending());
        w.clock
            .advance(Duration::from_millis(Profile::prod().slot_wait_timeout_ms));
        match poll(&mut second) {
            Poll::Ready(Err(AdmissionError::SlotsBusy {
                waiters_ahead: 1, ..
            })) => {}
            other => panic!("expected SlotsBusy with b ahead, got {other:?}"),
        }
    }

    /// This is a regression test that ensures the metrics the backend
    /// reports (through the `Admission` trait) count a dropped slot as a
    /// failure and a completed one as a completion.
    #[test]
    fn reported_metrics_count_failed_and_completed_slots() {
        let w = world(Profile::dev());
        drop(admit_now(&w, "a", MIB).expect("free"));
        admit_now(&w, "b", MIB).expect("free").complete();
        let m = Admission::metrics(&w.admitter);
        assert_eq!((m.admitted, m.completed, m.failed), (2, 1, 1));
    }

    /// This is a regression test that ensures a broken invariant reaches
    /// the oracles: a grant given back that the gate does not hold (a
    /// double release) is remembered by the gate and reported by
    /// `Admitter::check`.
    #[test]
    fn a_release_of_a_grant_not_held_is_reported_by_check() {
        let w = world(Profile::dev());
        assert_eq!(w.admitter.check(), Ok(()));
        let stray = Grant {
            ticket: 99,
            user: user("a"),
            memory_bytes: 0,
            quota: crate::admission::quota::QuotaCharge {
                user: user("a"),
                day: UtcDay(0),
                bytes: 0,
            },
        };
        w.admitter.gate().release(stray, false);
        assert_eq!(
            w.admitter.check(),
            Err(crate::admission::Violation::DoubleRelease { ticket: 99 })
        );
    }
}
