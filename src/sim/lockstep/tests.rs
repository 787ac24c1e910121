//! The lock-step check passes production through every kind of decision,
//! and fails each kind of wrong decision.

use super::*;
use crate::admission::sync::StdSync;
use crate::admission::{AdmissionMetrics, AdmissionState, Admitter, Limits, PermitGate, Violation};
use crate::checks::zoo::ForgottenReserve;
use crate::env::{ManualClock, ScriptedMemory};
use crate::units::{GIB, MIB};
use std::task::Waker;
use std::time::{Duration, UNIX_EPOCH};

const FILE_BYTES: u64 = 64 * MIB;

struct World {
    clock: ManualClock,
    memory: ScriptedMemory,
    findings: Findings,
}

/// A 10 GiB machine: prod's limit is 8 GiB, less its 512 MiB reserve.
fn snapshot(headroom_bytes: u64) -> MemorySnapshot {
    let used = 8 * GIB - 512 * MIB - headroom_bytes;
    MemorySnapshot::new(10 * GIB, 10 * GIB - used).expect("valid figures")
}

fn profile() -> Profile {
    Profile {
        global_slots: 1,
        user_slots: 1,
        waiters_max: 1,
        ..Profile::prod()
    }
}

fn world() -> World {
    let clock = ManualClock::new(UNIX_EPOCH);
    let memory = ScriptedMemory::new(Arc::new(clock.clone()), snapshot(GIB));
    World {
        clock,
        memory,
        findings: Findings::default(),
    }
}

impl World {
    fn judged(&self, inner: Arc<dyn Admission>) -> Lockstep {
        Lockstep::new(
            inner,
            &profile(),
            Arc::new(self.clock.clone()),
            Arc::new(self.memory.clone()),
            self.findings.clone(),
        )
    }

    fn production(&self) -> Lockstep {
        let clock: Arc<dyn Clock> = Arc::new(self.clock.clone());
        self.judged(Arc::new(Admitter::new(
            profile(),
            clock,
            Arc::new(self.memory.clone()),
        )))
    }
}

fn user(name: &str) -> UserId {
    UserId::new(name).expect("valid id")
}

fn poll<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    Pin::new(f).poll(&mut Context::from_waker(Waker::noop()))
}

/// The slot of a poll that must have granted.
fn granted(polled: Poll<Result<UploadSlot, AdmitFailure>>) -> UploadSlot {
    match polled {
        Poll::Ready(Ok(slot)) => slot,
        other => panic!("expected a grant, got {other:?}"),
    }
}

#[test]
fn production_agrees_with_the_model_through_every_kind_of_decision() {
    let w = world();
    let a = w.production();
    // Granted; then waiting (one slot); then queue_full (one waiter).
    let held = granted(poll(&mut a.admit(user("a"), FILE_BYTES)));
    let mut waiting = a.admit(user("b"), FILE_BYTES);
    assert!(poll(&mut waiting).is_pending());
    assert!(poll(&mut a.admit(user("c"), FILE_BYTES)).is_ready());
    // The wait times out: slots_busy, refunded.
    w.clock
        .advance(Duration::from_millis(profile().slot_wait_timeout_ms));
    assert!(matches!(poll(&mut waiting), Poll::Ready(Err(_))));
    drop(waiting);
    drop(held);
    // Quota: 5 GB a day; a 4 GiB file twice is refused the second time.
    let big = 4 * GIB;
    w.memory.set_now(snapshot(4 * GIB));
    match poll(&mut a.admit(user("d"), big)) {
        Poll::Ready(Ok(slot)) => slot.complete(), // the charge stands
        other => panic!("expected a grant, got {other:?}"),
    }
    let refused = poll(&mut a.admit(user("d"), big));
    assert!(
        matches!(&refused, Poll::Ready(Err(e)) if e.cause() == "quota_exceeded"),
        "{refused:?}"
    );
    // Memory: 1 MiB of headroom once the reserve is counted.
    w.memory.set_now(snapshot(MIB));
    let refused = poll(&mut a.admit(user("e"), FILE_BYTES));
    assert!(
        matches!(&refused, Poll::Ready(Err(e)) if e.cause() == "memory_pressure"),
        "{refused:?}"
    );
    // Cancelled while waiting, and the empty file.
    w.memory.set_now(snapshot(GIB));
    let held = poll(&mut a.admit(user("f"), FILE_BYTES));
    let mut cancelled = a.admit(user("g"), FILE_BYTES);
    assert!(poll(&mut cancelled).is_pending());
    drop(cancelled);
    drop(held);
    assert!(poll(&mut a.admit(user("h"), 0)).is_ready());
    assert_eq!(w.findings.take(), Vec::<String>::new());
}

/// A grant after a wait records the simulated time it waited: 250 ms
/// here, from its first poll to the release that lets it in. (The check
/// fails when the slot records another figure: with `UploadSlot::waited`
/// returning zero, crowd seed 7 is flagged at its first waited grant.)
#[test]
fn a_grant_after_a_wait_records_the_time_waited() {
    let w = world();
    let a = w.production();
    let held = granted(poll(&mut a.admit(user("a"), FILE_BYTES)));
    let mut waiting = a.admit(user("b"), FILE_BYTES);
    assert!(poll(&mut waiting).is_pending());
    w.clock.advance(Duration::from_millis(250));
    drop(held);
    match poll(&mut waiting) {
        Poll::Ready(Ok(slot)) => assert_eq!(slot.waited(), Duration::from_millis(250)),
        other => panic!("expected a grant, got {other:?}"),
    }
    assert_eq!(w.findings.take(), Vec::<String>::new());
}

#[test]
fn a_grant_the_formula_refuses_is_flagged() {
    let w = world();
    w.memory.set_now(snapshot(MIB));
    let clock: Arc<dyn Clock> = Arc::new(w.clock.clone());
    let mutant = Admitter::with_gate(profile(), clock, Arc::new(w.memory.clone()), |l| {
        ForgottenReserve::<StdSync>::new(l, 512 * MIB) as Arc<dyn PermitGate>
    });
    let a = w.judged(Arc::new(mutant));
    assert!(matches!(
        poll(&mut a.admit(user("a"), FILE_BYTES)),
        Poll::Ready(Ok(_))
    ));
    let found = w.findings.take();
    assert!(
        found[0].contains("the model says memory_pressure, the admitter granted"),
        "{found:?}"
    );
    // With the formula's terms, the reserve among them.
    assert!(
        found[0].contains("limit 8589934592 reserve 536870912 headroom 1048576"),
        "{found:?}"
    );
}

/// An admission that refuses with `error` and moves its ledger to `after`.
struct Scripted {
    error: AdmissionError,
    after: LedgerState,
    state: Mutex<LedgerState>,
}

impl Admission for Scripted {
    fn admit(&self, _: UserId, _: u64) -> BoxFuture<'_, Result<UploadSlot, AdmitFailure>> {
        Box::pin(async move {
            *self.state.lock().expect("not poisoned") = self.after.clone();
            Err(AdmitFailure::Refused(self.error.clone()))
        })
    }
    fn state(&self) -> AdmissionState {
        AdmissionState {
            ledger: self.state.lock().expect("not poisoned").clone(),
            shutting_down: false,
        }
    }
    fn metrics(&self) -> AdmissionMetrics {
        AdmissionMetrics::default()
    }
    fn begin_shutdown(&self) {}
    fn check(&self) -> Result<(), Violation> {
        Ok(())
    }
}

fn idle() -> LedgerState {
    LedgerState {
        limits: Limits {
            global_slots: 1,
            user_slots: 1,
            memory_budget_bytes: u64::MAX,
            waiters_max: 1,
            daily_limit_bytes: Some(profile().daily_limit_bytes),
        },
        global_in_use: 0,
        user_in_use: Default::default(),
        reserved_bytes: 0,
        waiting: 0,
        quota_charged: Default::default(),
    }
}

fn quota_refusal(charged_bytes: u64) -> AdmissionError {
    AdmissionError::QuotaExceeded {
        user: user("a"),
        day: UtcDay(0),
        charged_bytes,
        requested_bytes: FILE_BYTES,
        daily_limit_bytes: profile().daily_limit_bytes,
    }
}

#[test]
fn an_undeserved_quota_refusal_is_flagged() {
    let w = world();
    let a = w.judged(Arc::new(Scripted {
        error: quota_refusal(0),
        after: idle(),
        state: Mutex::new(idle()),
    }));
    let _ = poll(&mut a.admit(user("a"), FILE_BYTES));
    let found = w.findings.take();
    assert!(found[0].contains("the model says granted"), "{found:?}");
    assert!(
        found[1].contains("quota_exceeded (charged, requested"),
        "{found:?}"
    );
}

#[test]
fn quota_charged_for_a_refusal_is_flagged() {
    let w = world();
    let mut after = idle();
    after.quota_charged.insert(user("a"), FILE_BYTES);
    let a = w.judged(Arc::new(Scripted {
        error: AdmissionError::QueueFull {
            waiting: 1,
            waiters_max: 1,
        },
        after,
        state: Mutex::new(idle()),
    }));
    let _ = poll(&mut a.admit(user("a"), FILE_BYTES));
    let found = w.findings.take();
    assert!(
        found
            .iter()
            .any(|f| f.contains("queue_full for 67108864 bytes: quota charged 0 → 67108864")),
        "{found:?}"
    );
}
