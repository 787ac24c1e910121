//! Reference models run in lock-step with the real thing in every
//! simulation: every decision, and its numbers, judged as it is made.
//!
//! - this file: admission (`admission_model`), below;
//! - [`window`]: the backend's reorder window (`window_model`): what each
//!   chunk request must get (stored, `already_committed`, `window_full`,
//!   the phase's refusal), what each piece sent to the drive must be, and
//!   what the window holds at every step; fed through the backend's
//!   [`WindowObserver`](crate::backend::WindowObserver) hooks and its
//!   gauge;
//! - [`drive_ranges`]: the drive's committed ranges
//!   (`drive_ranges_model`): what each session holds, predicted from the
//!   ranges the drive accepted, against every `Range` it answers and every
//!   one the backend acts on; fed through the emulator's
//!   [`PutObserver`](crate::drive::PutObserver) hook.
//!
//! Each model is pure (a state machine with no clock, lock or I/O) with a
//! thin adapter around it; each adapter pushes what it finds to a
//! [`Findings`] the step loop drains into the oracle under the model's
//! check name. Observing changes nothing the observed code does, so the
//! trace (and its hash) is the same with or without the models.
//!
//! # Admission
//!
//! The lock-step admission check (`admission_model`): every decision the
//! real admitter makes in a simulation, judged by the reference rules
//! ([`Rules`], the same rules the proptest model applies) fed the same
//! inputs.
//!
//! [`Lockstep`] is an [`Admission`] decorator: it forwards every call to the
//! real controller and, around each poll of an admission, reads what the
//! admitter reads — the memory probe, the clock and its UTC day, the ledger
//! (slots in use, reservations, quota charged, requests waiting) — and asks
//! the rules what a correct admitter would have done. A disagreement is a
//! finding (not a panic), handed to the oracle by the step loop.
//!
//! The simulation is single-threaded: nothing else runs during one poll,
//! so the ledger read just before and just after a poll brackets exactly
//! that poll's effect.
//!
//! # What is checked, at each event
//! - **The first poll** (the decision): the outcome — granted, waiting,
//!   refused and its cause — must be the rules'. Size, quota and memory are
//!   always decidable. The memory formula is spelled out with its numbers:
//!   a `memory_pressure` refusal must carry `limit`, `reserve`, machine use,
//!   `headroom = limit − reserve − use`, `required` and the reservations that
//!   the rules reproduce, with `required > headroom`; a grant must fit,
//!   `reserved + required ≤ headroom`, and reserve exactly `required`. A
//!   `quota_exceeded` refusal must be deserved (`charged + requested >
//!   daily limit` for that user and day) and carry those numbers. Quota is
//!   charged for a grant or a wait (`+ requested`) and never for a refusal.
//!   Granted vs waiting vs `queue_full` is judged by the rules' FIFO scan
//!   whenever the queue is known exactly (see below); so is "no waiter is
//!   left waiting that could be granted now" (a lost wake-up).
//! - **A later poll that ends a wait**: it ends granted or `slots_busy`,
//!   nothing else; `slots_busy` no earlier than the timeout, with the
//!   profile's timeout as its `waited_ms`, and its quota charge refunded.
//! - **A wait cancelled** (the future dropped): it leaves the queue.
//! - **Every grant**, at once or after a wait: the wait its slot records
//!   (`UploadSlot::waited`, traced as `Admitted`'s `wait_ms`) is the
//!   simulated time since the request was first polled.
//!
//! # What is not
//! - Which waiter a *release* grants: releases happen inside the slot, not
//!   through this trait, and a granted waiter is seen only when it is next
//!   polled. While some waiter may have been granted but not yet polled
//!   (this check's queue is longer than the ledger's `waiting`), the queue
//!   is not known exactly and granted vs waiting vs `queue_full` is not
//!   judged; everything else still is.
//! - `unknown_user` and `memory_probe` (the sim has neither), and bare
//!   `unexplained` failures (the oracle's `typed_cause` flags those).
//! - Releases and their quota refunds (the ledger's own invariants and
//!   `released_at_end` cover them).

use crate::admission::{Admission, AdmissionError, AdmitFailure, LedgerState, UploadSlot};
use crate::checks::rules::Rules;
use crate::env::{BoxFuture, Clock, MemoryProbe, MemorySnapshot, UtcDay};
use crate::profile::Profile;
use crate::user::UserId;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

/// The oracle's name for this check.
pub const CHECK: &str = "admission_model";

pub mod drive_ranges;
mod judge;
#[cfg(test)]
mod tests;
pub mod window;

/// Findings kept between two drains by the step loop (the oracle keeps
/// only the first few of a check anyway).
const FINDINGS_MAX: usize = 64;
/// Requests this check follows while they wait; past it, the queue is no
/// longer known exactly (the ledger's own bound is far lower).
const PENDING_MAX: usize = 4_096;

/// What the check found, shared with the step loop across boots.
#[derive(Clone, Default)]
pub struct Findings(Arc<Mutex<Vec<String>>>);

impl Findings {
    fn push(&self, detail: String) {
        let mut f = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if f.len() < FINDINGS_MAX {
            f.push(detail);
        }
    }

    /// Takes what was found since the last call.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// A request this check saw queued and has not seen end.
#[derive(Debug, Clone)]
struct Pending {
    id: u64,
    user: UserId,
    file_size_bytes: u64,
    memory_bytes: u64,
    ceiling_bytes: u64,
    queued_at_ms: u64,
    day: UtcDay,
}

#[derive(Debug, Default)]
struct Books {
    next_id: u64,
    /// In arrival order, which is FIFO order.
    pending: Vec<Pending>,
    /// The UTC day of the last request that reached the ledger (the
    /// ledger's quota day).
    day: Option<UtcDay>,
}

/// What the admitter reads, read at the same instant.
struct Seen {
    now_ms: u64,
    day: UtcDay,
    memory: Option<MemorySnapshot>,
    ledger: LedgerState,
    shutting_down: bool,
}

/// The real decision of a first poll.
#[derive(Debug)]
enum Decision<'a> {
    Granted,
    Waiting,
    Refused(&'a AdmissionError),
}

impl Decision<'_> {
    fn cause(&self) -> &'static str {
        match self {
            Self::Granted => "granted",
            Self::Waiting => "waiting",
            Self::Refused(e) => e.cause(),
        }
    }
}

/// An [`Admission`] judged, decision by decision, by the reference rules.
/// See the module documentation.
pub struct Lockstep {
    inner: Arc<dyn Admission>,
    rules: Rules,
    clock: Arc<dyn Clock>,
    memory: Arc<dyn MemoryProbe>,
    books: Mutex<Books>,
    findings: Findings,
}

impl Lockstep {
    /// `inner`, built for `profile` on `clock` and `memory`, judged; what
    /// it finds goes to `findings`.
    pub fn new(
        inner: Arc<dyn Admission>,
        profile: &Profile,
        clock: Arc<dyn Clock>,
        memory: Arc<dyn MemoryProbe>,
        findings: Findings,
    ) -> Self {
        Self {
            inner,
            rules: Rules::of(profile),
            clock,
            memory,
            books: Mutex::default(),
            findings,
        }
    }

    fn books(&self) -> std::sync::MutexGuard<'_, Books> {
        self.books.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn seen(&self) -> Seen {
        let state = self.inner.state();
        Seen {
            now_ms: u64::try_from(self.clock.now().as_millis()).unwrap_or(u64::MAX),
            day: self.clock.utc_day(),
            memory: self.memory.snapshot().ok(),
            ledger: state.ledger,
            shutting_down: state.shutting_down,
        }
    }

    fn flag(&self, at_ms: u64, user: &UserId, detail: String) {
        self.findings
            .push(format!("at {at_ms} ms, {user}: {detail}"));
    }

    /// A grant records how long it waited (`UploadSlot::waited`, traced as
    /// `Admitted`'s `wait_ms`): exactly the simulated time since the
    /// request was first polled (`before` is read at the granting poll).
    fn judge_waited(&self, judged: &Judged<'_>, slot: &UploadSlot, before: &Seen) {
        let first_poll_ms = if judged.decided {
            judged.first_poll_ms
        } else {
            before.now_ms
        };
        let expected_ms = before.now_ms.saturating_sub(first_poll_ms);
        let recorded_ms = u64::try_from(slot.waited().as_millis()).unwrap_or(u64::MAX);
        if recorded_ms.abs_diff(expected_ms) > 1 {
            self.flag(
                before.now_ms,
                &judged.user,
                format!("granted after waiting {expected_ms} ms of simulated time, but the slot records {recorded_ms} ms"),
            );
        }
    }

    fn take_pending(&self, id: u64) -> Option<Pending> {
        let mut books = self.books();
        let i = books.pending.iter().position(|p| p.id == id)?;
        Some(books.pending.remove(i))
    }
}

/// Quota charged to `user` in `ledger`'s day.
fn before_quota(ledger: &LedgerState, user: &UserId) -> u64 {
    ledger.quota_charged.get(user).copied().unwrap_or(0)
}

/// One admission, judged around each poll.
struct Judged<'a> {
    owner: &'a Lockstep,
    inner: Option<BoxFuture<'a, Result<UploadSlot, AdmitFailure>>>,
    user: UserId,
    file_size_bytes: u64,
    /// Polled at least once.
    decided: bool,
    /// When it was first polled: a grant's recorded wait must be the
    /// simulated time since.
    first_poll_ms: u64,
    /// Waiting, as this check follows it.
    pending: Option<u64>,
}

impl Future for Judged<'_> {
    type Output = Result<UploadSlot, AdmitFailure>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let owner = this.owner;
        let before = owner.seen();
        let Some(inner) = this.inner.as_mut() else {
            panic!("Judged polled after it completed");
        };
        let poll = inner.as_mut().poll(cx);
        if let Poll::Ready(Ok(slot)) = &poll {
            owner.judge_waited(this, slot, &before);
        }
        if !this.decided {
            this.decided = true;
            this.first_poll_ms = before.now_ms;
            let decision = match &poll {
                Poll::Pending => Some(Decision::Waiting),
                Poll::Ready(Ok(_)) => Some(Decision::Granted),
                Poll::Ready(Err(AdmitFailure::Refused(e))) => Some(Decision::Refused(e)),
                // A bare failure is typed_cause's to flag.
                Poll::Ready(Err(AdmitFailure::Unexplained)) => None,
            };
            if let Some(d) = decision {
                this.pending = owner.judge_first(&before, &this.user, this.file_size_bytes, &d);
            }
        } else if let (Poll::Ready(result), Some(id)) = (&poll, this.pending) {
            this.pending = None;
            owner.judge_end_of_wait(id, &before, result);
        }
        if poll.is_ready() {
            this.inner = None;
        }
        poll
    }
}

impl Drop for Judged<'_> {
    fn drop(&mut self) {
        // Cancelled while waiting: it leaves the queue.
        if let Some(id) = self.pending.take() {
            self.inner = None;
            self.owner.take_pending(id);
        }
    }
}

impl Admission for Lockstep {
    fn admit(
        &self,
        user: UserId,
        file_size_bytes: u64,
    ) -> BoxFuture<'_, Result<UploadSlot, AdmitFailure>> {
        let inner = self.inner.admit(user.clone(), file_size_bytes);
        Box::pin(Judged {
            owner: self,
            inner: Some(inner),
            user,
            file_size_bytes,
            decided: false,
            first_poll_ms: 0,
            pending: None,
        })
    }

    crate::admission::forward_admission_to_inner!();
}
