//! The bug zoo: the original manager's bugs, re-created one at a time as
//! alternative admission implementations behind production's traits, so
//! that the harness can show it catches each (`upsim zoo`, `sims/zoo.rs`).
//!
//! Each mutant is production with exactly one bug put back:
//! - [`MaskedError`] wraps the [`Admitter`](crate::admission::Admitter) (the bug lives
//!   in the controller: the `except Exception: return False`);
//! - the others are [`PermitGate`](crate::admission::PermitGate)s built from
//!   production's [`Permits`](crate::admission::Permits), generic over the
//!   [`SyncFacade`](crate::admission::sync::SyncFacade) so that loom checks them on its
//!   own mutex, and run under the real controller (quota, memory, timeouts)
//!   through [`Admitter::with_gate`](crate::admission::Admitter::with_gate).
//!
//! [`ForgottenReserve`] is not the original manager's: it is a blind spot
//! of the first harness (issue 10), a one-term slip in the memory formula
//! that every check of that harness let through.
//!
//! Each file's documentation quotes the bug and says which check should
//! catch it, and why that one.
//!
//! A mutant's `state()` reports the true holders even where its own counters
//! have drifted from them: a bug may corrupt its books, but it may not lie
//! to the oracles about who runs.
//!
//! The zoo is check code, not production: it lives under `checks` so that
//! nothing in `admission` exists only for a mutant's sake.

mod entry_race;
mod forgotten_reserve;
mod heuristic_release;
mod hoarding;
mod leak_on_cancel;
mod lost_wakeup;
mod masked_error;

pub use entry_race::EntryRace;
pub use forgotten_reserve::ForgottenReserve;
pub use heuristic_release::HeuristicRelease;
pub use hoarding::Hoarding;
pub use leak_on_cancel::LeakOnCancel;
pub use lost_wakeup::LostWakeup;
pub use masked_error::MaskedError;

use crate::admission::ledger::{Grant, LedgerState, Violation};
use crate::admission::sync::SyncFacade;
use crate::admission::Acquire;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The limits, checked against a state of true holders: for mutants whose
/// own ledger no longer sees every holder.
fn limits_hold(state: &LedgerState) -> Result<(), Violation> {
    let limits = &state.limits;
    if state.global_in_use > limits.global_slots {
        return Err(Violation::GlobalOverLimit {
            in_use: state.global_in_use,
            limit: limits.global_slots,
        });
    }
    if let Some((user, &in_use)) = state
        .user_in_use
        .iter()
        .find(|(_, &n)| n > limits.user_slots)
    {
        return Err(Violation::UserOverLimit {
            user: user.to_string(),
            in_use,
            limit: limits.user_slots,
        });
    }
    if state.reserved_bytes > limits.memory_budget_bytes {
        return Err(Violation::MemoryOverBudget {
            reserved_bytes: state.reserved_bytes,
            budget_bytes: limits.memory_budget_bytes,
        });
    }
    Ok(())
}

/// Polls a mutant future's wrapped acquire with `cx`, and takes it once it
/// is granted (`None` then means "granted", which is what each mutant's
/// `Drop` looks at).
///
/// # Panics
/// If polled after it completed; `what` names the future.
fn poll_acquire<S: SyncFacade>(
    acquire: &mut Option<Acquire<S>>,
    cx: &mut Context<'_>,
    what: &str,
) -> Poll<Grant> {
    let Some(pending) = acquire.as_mut() else {
        panic!("{what} polled after it completed");
    };
    let polled = Pin::new(pending).poll(cx);
    if polled.is_ready() {
        *acquire = None;
    }
    polled
}
