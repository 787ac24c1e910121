//! Mutant 3, the leak on cancellation: a cancelled acquire keeps the
//! permit it already took.
//!
//! The original awaited its semaphores inside `try: ... except Exception`.
//! Since Python 3.8 `asyncio.CancelledError` is a `BaseException`, not an
//! `Exception`: a request cancelled after `await
//! self.global_upload_semaphore.acquire()` had succeeded (the client went
//! away, a timeout fired) skips the clean-up, and the permit it took is
//! never released. Each such cancellation shrinks the pool by one, for
//! good.
//!
//! Here production's [`Permits`] decide, but the future this gate returns
//! is not cancel-safe: production's `Acquire` gives back, on drop, what a
//! release has already granted it; this one, dropped after its grant was
//! made but before it was claimed, claims the grant and forgets it. The
//! ledger stays truthful — the slot is held, by nobody — so
//! [`PermitGate::state`] is the ledger's.
//!
//! Caught by: the loom model
//! `acquire_polled_once_then_dropped_while_another_releases`, the model of
//! "poll once, then drop" (tokio's cancellation case). In the interleaving
//! where `a`'s release grants the slot to `b` between `b`'s poll and its
//! drop, the slot leaks: the model ends with it still held (or `c` waits
//! for ever and loom reports the deadlock). Neither the proptest model (it
//! polls every request after every step, so no grant is left unclaimed when
//! it cancels) nor the simulations (there a cancelled admission is a client
//! disconnect, which would have to land in exactly that window) reach it.

use crate::admission::gate::{BoxGrantFuture, GrantFuture, PermitGate};
use crate::admission::ledger::{Grant, Limits, Refusal, SlotRequest};
use crate::admission::permits::{Acquire, Permits};
use crate::admission::sync::SyncFacade;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

/// Production permits whose requests leak their grant when cancelled.
pub struct LeakOnCancel<S: SyncFacade> {
    inner: Arc<Permits<S>>,
}

impl<S: SyncFacade> LeakOnCancel<S> {
    /// A gate enforcing `limits`.
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            inner: Permits::new(limits),
        })
    }
}

impl<S: SyncFacade> PermitGate for LeakOnCancel<S> {
    fn acquire(self: Arc<Self>, req: SlotRequest) -> Result<BoxGrantFuture, Refusal> {
        let acquire = self.inner.request(req)?;
        Ok(Box::pin(Leaky {
            acquire: Some(acquire),
        }))
    }

    fn release(&self, grant: Grant, refund_quota: bool) {
        self.inner.release(grant, refund_quota);
    }

    crate::admission::forward_gate_reads_to_inner!();
}

struct Leaky<S: SyncFacade> {
    /// `None` once granted.
    acquire: Option<Acquire<S>>,
}

impl<S: SyncFacade> Future for Leaky<S> {
    type Output = Grant;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Grant> {
        super::poll_acquire(&mut self.acquire, cx, "Leaky")
    }
}

impl<S: SyncFacade> GrantFuture for Leaky<S> {
    fn waiters_ahead(&self) -> Option<u32> {
        self.acquire.as_ref().and_then(Acquire::waiters_ahead)
    }
}

impl<S: SyncFacade> Drop for Leaky<S> {
    fn drop(&mut self) {
        let Some(mut acquire) = self.acquire.take() else {
            return;
        };
        // The CancelledError skips the clean-up: a grant already made is
        // taken and never given back. A request still waiting leaves the
        // queue (asyncio's semaphore does remove a cancelled waiter).
        let noop = &mut Context::from_waker(Waker::noop());
        if let Poll::Ready(grant) = Pin::new(&mut acquire).poll(noop) {
            std::mem::forget(grant);
        }
    }
}
