//! loom models of the permit layer, run by plain `cargo test`, against
//! production's [`Permits`](upsim::admission::Permits) on loom's mutex.
//!
//! The models themselves live in [`upsim::checks::loom_models`] (module
//! docs there: the facade, the bounds and why), parameterised by the
//! implementation under test, so that `upsim zoo` runs the same models
//! against each mutant of the bug zoo. Each test here explores one model
//! to its stated preemption bound; a failing interleaving fails the test
//! with the model's assertion or loom's deadlock report.
//!
//! Each test then shows its model can fail at that bound: the bug-zoo
//! mutants it is meant to catch (`upsim::zoo_report::subjects`, the same
//! gates `upsim zoo` runs) must each fail it. A bound lowered below what
//! the race needs, or a model that no longer races, lets a mutant through
//! and fails the test. `sims/zoo.rs` checks the other direction: which
//! check the zoo credits with each mutant, cheapest first.
//!
//! The `*_fast_path` tests explore the same models with every grant taken
//! through the admission fast path (`PermitGate::acquire_or_queue`), which
//! production's `Admitter` uses; the zoo's mutants have no fast path (the
//! trait's default queues), so they must still fail them.

use std::sync::{Arc, Mutex, PoisonError};
use upsim::admission::quota::QuotaCharge;
use upsim::admission::{
    Acquired, BoxGrantFuture, Grant, LedgerState, Limits, PermitGate, Refusal, SlotRequest,
    Violation,
};
use upsim::checks::loom_models::{
    production, LoomModel, CONCURRENT_ADMISSIONS, CONCURRENT_ADMISSIONS_FAST_PATH,
    FAST_PATH_NEVER_PASSES_A_WAITER, MEMORY_WITH_SLOTS, MEMORY_WITH_SLOTS_FAST_PATH,
    NO_GLOBAL_SLOT_WHILE_WAITING, NO_GLOBAL_SLOT_WHILE_WAITING_FAST_PATH, POLLED_ONCE_THEN_DROPPED,
    POLLED_ONCE_THEN_DROPPED_FAST_PATH,
};
use upsim::checks::quietly;
use upsim::zoo_report::subjects;

/// Explores `model` on production (which must pass), then on each mutant
/// of `must_catch` (each of which must fail it), all at the model's
/// preemption bound.
fn production_passes_and_mutants_fail(model: LoomModel, must_catch: &[&str]) {
    let explored = model.check(production);
    assert!(
        explored > 1,
        "{}: {explored} interleaving explored: the model has no race",
        model.name
    );
    let subjects = subjects();
    for mutant in must_catch {
        let gate = subjects
            .iter()
            .find(|s| s.name == *mutant)
            .and_then(|s| s.loom_gate)
            .unwrap_or_else(|| panic!("{mutant} is not a permit-layer mutant of the zoo"));
        let verdict = quietly(|| model.check(gate));
        assert!(
            verdict.is_err(),
            "{} let the {mutant} mutant through at preemption bound {} ({} interleavings)",
            model.name,
            model.preemption_bound,
            verdict.unwrap_or_default()
        );
    }
}

/// Three uploads (two of one user) against global 2 / user 1: limits hold at
/// every step, everything comes back. Catches two first uploads of one user
/// each creating its limiter, and a lost wake-up.
#[test]
fn concurrent_admissions_stay_within_limits() {
    production_passes_and_mutants_fail(CONCURRENT_ADMISSIONS, &["entry-race", "lost-wakeup"]);
}

/// An acquire polled once and then dropped while another thread releases the
/// slot it waits for: whatever the release granted it comes back, and the
/// third waiter is not left asleep. Catches a cancelled acquire keeping its
/// permit, a release by guesswork, and a lost wake-up.
#[test]
fn acquire_polled_once_then_dropped_while_another_releases() {
    production_passes_and_mutants_fail(
        POLLED_ONCE_THEN_DROPPED,
        &["leak-on-cancel", "heuristic-release", "lost-wakeup"],
    );
}

/// A user at their limit waits without holding a global slot, so another
/// user is never starved by them. Catches hoarding, and a lost wake-up.
#[test]
fn a_user_at_its_limit_never_holds_a_global_slot_while_it_waits() {
    production_passes_and_mutants_fail(NO_GLOBAL_SLOT_WHILE_WAITING, &["hoarding", "lost-wakeup"]);
}

/// Memory reservations move with the slots, in the same step. Of the zoo's
/// mutants it catches the lost wake-up (the second upload waits for the
/// first's memory).
#[test]
fn memory_reservation_is_released_together_with_the_slots() {
    production_passes_and_mutants_fail(MEMORY_WITH_SLOTS, &["lost-wakeup"]);
}

/// [`concurrent_admissions_stay_within_limits`] through the fast path.
#[test]
fn concurrent_admissions_stay_within_limits_fast_path() {
    production_passes_and_mutants_fail(
        CONCURRENT_ADMISSIONS_FAST_PATH,
        &["entry-race", "lost-wakeup"],
    );
}

/// [`acquire_polled_once_then_dropped_while_another_releases`] with the
/// holder and the third waiter through the fast path.
#[test]
fn acquire_polled_once_then_dropped_while_another_releases_fast_path() {
    production_passes_and_mutants_fail(
        POLLED_ONCE_THEN_DROPPED_FAST_PATH,
        &["leak-on-cancel", "heuristic-release", "lost-wakeup"],
    );
}

/// [`a_user_at_its_limit_never_holds_a_global_slot_while_it_waits`]
/// through the fast path.
#[test]
fn a_user_at_its_limit_never_holds_a_global_slot_while_it_waits_fast_path() {
    production_passes_and_mutants_fail(
        NO_GLOBAL_SLOT_WHILE_WAITING_FAST_PATH,
        &["hoarding", "lost-wakeup"],
    );
}

/// [`memory_reservation_is_released_together_with_the_slots`] through the
/// fast path.
#[test]
fn memory_reservation_is_released_together_with_the_slots_fast_path() {
    production_passes_and_mutants_fail(MEMORY_WITH_SLOTS_FAST_PATH, &["lost-wakeup"]);
}

/// A request through the fast path, racing a release and the waiter that
/// release grants, never passes a waiter queued before it. No mutant of
/// the zoo has a fast path, so the bug it catches is re-created here:
/// [`QueueJumper`], a fast path that grants from the free counters without
/// looking at the queue, must fail it.
#[test]
fn a_fast_path_grant_never_passes_a_queued_waiter() {
    production_passes_and_mutants_fail(FAST_PATH_NEVER_PASSES_A_WAITER, &[]);
    let verdict = quietly(|| FAST_PATH_NEVER_PASSES_A_WAITER.check(queue_jumper));
    let Err(message) = verdict else {
        panic!("a fast path that ignores the queue passed the model");
    };
    assert!(
        message.contains("still waited"),
        "the queue jumper failed the model for another reason: {message}"
    );
}

/// Tickets of grants [`QueueJumper`] made past the queue start here.
const JUMPED_TICKET_MIN: u64 = 1 << 40;

/// The bug [`FAST_PATH_NEVER_PASSES_A_WAITER`] exists to catch: a fast path
/// that grants whenever a global slot, the user's slot and the memory are
/// free by the counters, past whoever waits. Its grants are kept
/// beside production's gate, which handles everything else; `state`
/// counts them, so the gate reports the true holders (the `PermitGate`
/// contract).
struct QueueJumper {
    inner: Arc<dyn PermitGate>,
    /// Grants made past the queue: ticket, user, memory bytes.
    jumped: Mutex<Vec<(u64, upsim::user::UserId, u64)>>,
}

fn queue_jumper(limits: Limits) -> Arc<dyn PermitGate> {
    Arc::new(QueueJumper {
        inner: production(limits),
        jumped: Mutex::new(Vec::new()),
    })
}

impl PermitGate for QueueJumper {
    fn acquire(self: Arc<Self>, req: SlotRequest) -> Result<BoxGrantFuture, Refusal> {
        Arc::clone(&self.inner).acquire(req)
    }

    fn acquire_or_queue(
        self: Arc<Self>,
        req: SlotRequest,
    ) -> Result<Acquired<BoxGrantFuture>, Refusal> {
        let state = self.state();
        let limits = state.limits;
        let user_in_use = state.user_in_use.get(&req.user).copied().unwrap_or(0);
        let ceiling = req.memory_ceiling_bytes.min(limits.memory_budget_bytes);
        let free = state.global_in_use < limits.global_slots
            && user_in_use < limits.user_slots
            && state.reserved_bytes + req.memory_bytes <= ceiling;
        // Nobody waits: production's fast path is right. Somebody waits:
        // the bug grants past them.
        if !free || state.waiting == 0 {
            return Arc::clone(&self.inner).acquire_or_queue(req);
        }
        let mut jumped = self.jumped.lock().unwrap_or_else(PoisonError::into_inner);
        let ticket = JUMPED_TICKET_MIN + jumped.len() as u64;
        jumped.push((ticket, req.user.clone(), req.memory_bytes));
        Ok(Acquired::Granted(Grant {
            ticket,
            user: req.user.clone(),
            memory_bytes: req.memory_bytes,
            quota: QuotaCharge {
                user: req.user,
                day: req.day,
                bytes: req.quota_bytes,
            },
        }))
    }

    fn release(&self, grant: Grant, refund_quota: bool) {
        if grant.ticket < JUMPED_TICKET_MIN {
            self.inner.release(grant, refund_quota);
        } else {
            let mut jumped = self.jumped.lock().unwrap_or_else(PoisonError::into_inner);
            jumped.retain(|(ticket, _, _)| *ticket != grant.ticket);
        }
    }

    fn state(&self) -> LedgerState {
        let mut state = self.inner.state();
        let jumped = self.jumped.lock().unwrap_or_else(PoisonError::into_inner);
        for (_, user, memory_bytes) in jumped.iter() {
            state.global_in_use += 1;
            state.reserved_bytes += memory_bytes;
            *state.user_in_use.entry(user.clone()).or_insert(0) += 1;
        }
        state
    }

    fn check(&self) -> Result<(), Violation> {
        self.inner.check()
    }
}
