//! Mutant 2, the heuristic release: on error, release a permit whenever
//! the count is below the maximum.
//!
//! The original, in the same `except Exception` block:
//!
//! ```python
//! if self.global_upload_semaphore._value < self.max_concurrent_users:
//!     self.global_upload_semaphore.release()
//! if user_sem._value < 5:
//!     user_sem.release()
//! ```
//!
//! "Below the maximum" means "somebody holds a permit", not "this request
//! holds one": a request that failed without taking anything gives back a
//! permit another upload holds. That upload keeps running on a slot the
//! books call free, so one more upload than the limit gets in; when it
//! finishes, its own release is a double release.
//!
//! Here production's [`Permits`] decide; on every error (a refusal at once,
//! or a wait given up: a timeout or a cancellation), after production's
//! exact clean-up, this gate also releases the newest running upload's grant
//! (of the same user if there is one, as `user_sem.release()` would), behind
//! its back. [`PermitGate::state`] keeps counting that upload: it still runs.
//!
//! Caught by: the loom model
//! `acquire_polled_once_then_dropped_while_another_releases`, the first
//! model in the order with an error path: its cancelled request frees the
//! slot `a` holds, so `a`'s own release is a double release, which the
//! ledger records and the model's final check reports. The proptest model
//! catches it as well (a refusal while others hold slots changes the
//! counts; its third case), later in the order. The simulations do not:
//! none of them refuses a create while another upload holds a slot.

use crate::admission::gate::{BoxGrantFuture, GrantFuture, PermitGate};
use crate::admission::ledger::{Grant, LedgerState, Refusal, SlotRequest, TicketId, Violation};
use crate::admission::permits::{Acquire, Permits};
use crate::admission::quota::QuotaCharge;
use crate::admission::sync::{FacadeMutex, SyncFacade};
use crate::user::UserId;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

#[derive(Debug, Clone)]
struct Holder {
    user: UserId,
    memory_bytes: u64,
    quota: QuotaCharge,
}

#[derive(Default)]
struct Books {
    /// Every grant handed out and not yet given back by its holder: the
    /// true holders.
    running: BTreeMap<TicketId, Holder>,
    /// Those of them released behind their holders' backs.
    released_behind: BTreeMap<TicketId, Holder>,
}

/// Production permits, plus the report's heuristic release on every error.
pub struct HeuristicRelease<S: SyncFacade> {
    inner: Arc<Permits<S>>,
    books: S::Mutex<Books>,
}

impl<S: SyncFacade> HeuristicRelease<S> {
    /// A gate enforcing `limits` (until its first error).
    pub fn new(limits: crate::admission::Limits) -> Arc<Self> {
        Arc::new(Self {
            inner: Permits::new(limits),
            books: S::Mutex::new(Books::default()),
        })
    }

    /// `if sem._value < max: sem.release()`, for a request of `user` that
    /// failed.
    fn release_heuristically(&self, user: &UserId) {
        if self.inner.state().global_in_use == 0 {
            return; // the semaphore is at its maximum
        }
        let victim = self.books.with(|b| {
            let candidates = || {
                b.running
                    .iter()
                    .rev()
                    .filter(|(t, _)| !b.released_behind.contains_key(t))
            };
            let (&ticket, holder) = candidates()
                .find(|(_, h)| &h.user == user)
                .or_else(|| candidates().next())?;
            let holder = holder.clone();
            b.released_behind.insert(ticket, holder.clone());
            Some((ticket, holder))
        });
        if let Some((ticket, h)) = victim {
            let forged = Grant {
                ticket,
                user: h.user,
                memory_bytes: h.memory_bytes,
                quota: h.quota,
            };
            self.inner.release(forged, false);
        }
    }
}

impl<S: SyncFacade> PermitGate for HeuristicRelease<S> {
    fn acquire(self: Arc<Self>, req: SlotRequest) -> Result<BoxGrantFuture, Refusal> {
        let user = req.user.clone();
        match self.inner.request(req) {
            Ok(acquire) => Ok(Box::pin(Tracked {
                gate: self,
                user,
                acquire: Some(acquire),
            })),
            Err(refusal) => {
                self.release_heuristically(&user);
                Err(refusal)
            }
        }
    }

    fn release(&self, grant: Grant, refund_quota: bool) {
        // A grant released behind its back goes to the ledger a second
        // time: the ledger records the double release.
        self.books.with(|b| {
            b.running.remove(&grant.ticket);
            b.released_behind.remove(&grant.ticket);
        });
        self.inner.release(grant, refund_quota);
    }

    fn state(&self) -> LedgerState {
        let mut state = self.inner.state();
        // The ledger forgot the uploads released behind their backs; they
        // still run.
        self.books.with(|b| {
            for h in b.released_behind.values() {
                state.global_in_use += 1;
                *state.user_in_use.entry(h.user.clone()).or_insert(0) += 1;
                state.reserved_bytes += h.memory_bytes;
            }
        });
        state
    }

    fn check(&self) -> Result<(), Violation> {
        self.inner.check()?;
        super::limits_hold(&self.state())
    }
}

/// A request that records its grant as running, and on error releases
/// heuristically.
struct Tracked<S: SyncFacade> {
    gate: Arc<HeuristicRelease<S>>,
    user: UserId,
    /// `None` once granted.
    acquire: Option<Acquire<S>>,
}

impl<S: SyncFacade> Future for Tracked<S> {
    type Output = Grant;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Grant> {
        let Poll::Ready(grant) = super::poll_acquire(&mut self.acquire, cx, "Tracked") else {
            return Poll::Pending;
        };
        let holder = Holder {
            user: grant.user.clone(),
            memory_bytes: grant.memory_bytes,
            quota: grant.quota.clone(),
        };
        self.gate
            .books
            .with(|b| b.running.insert(grant.ticket, holder));
        Poll::Ready(grant)
    }
}

impl<S: SyncFacade> GrantFuture for Tracked<S> {
    fn waiters_ahead(&self) -> Option<u32> {
        self.acquire.as_ref().and_then(Acquire::waiters_ahead)
    }
}

impl<S: SyncFacade> Drop for Tracked<S> {
    fn drop(&mut self) {
        // Given up before it was granted: production's clean-up (leave the
        // queue, give back what was granted), then the heuristic.
        if let Some(acquire) = self.acquire.take() {
            drop(acquire);
            self.gate.release_heuristically(&self.user);
        }
    }
}
