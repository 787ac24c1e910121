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
//! Mutation check: the bug zoo (`sims/zoo.rs`) re-runs these models against
//! mutants of the permit layer and asserts they catch them.

use upsim::checks::loom_models::{
    production, CONCURRENT_ADMISSIONS, MEMORY_WITH_SLOTS, NO_GLOBAL_SLOT_WHILE_WAITING,
    POLLED_ONCE_THEN_DROPPED,
};

/// Three uploads (two of one user) against global 2 / user 1: limits hold at
/// every step, everything comes back. Bound 4.
#[test]
fn concurrent_admissions_stay_within_limits() {
    assert_eq!(CONCURRENT_ADMISSIONS.preemption_bound, 4);
    CONCURRENT_ADMISSIONS.check(production);
}

/// An acquire polled once and then dropped while another thread releases the
/// slot it waits for: whatever the release granted it comes back, and the
/// third waiter is not left asleep. Bound 4.
#[test]
fn acquire_polled_once_then_dropped_while_another_releases() {
    assert_eq!(POLLED_ONCE_THEN_DROPPED.preemption_bound, 4);
    POLLED_ONCE_THEN_DROPPED.check(production);
}

/// A user at their limit waits without holding a global slot, so another
/// user is never starved by them. Bound 4.
#[test]
fn a_user_at_its_limit_never_holds_a_global_slot_while_it_waits() {
    assert_eq!(NO_GLOBAL_SLOT_WHILE_WAITING.preemption_bound, 4);
    NO_GLOBAL_SLOT_WHILE_WAITING.check(production);
}

/// Memory reservations move with the slots, in the same step. Bound 4.
#[test]
fn memory_reservation_is_released_together_with_the_slots() {
    assert_eq!(MEMORY_WITH_SLOTS.preemption_bound, 4);
    MEMORY_WITH_SLOTS.check(production);
}
