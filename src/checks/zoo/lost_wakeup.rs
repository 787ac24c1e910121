//! Mutant 6, the lost wake-up: a release can miss a waiter that is
//! registering.
//!
//! The classic hand-rolled wait: look at the count; if nothing is free,
//! register to be woken. If the look and the registration are two separate
//! steps, a release that lands between them frees the slot and notifies the
//! waiters registered *so far* — not this one, which then registers and
//! sleeps with its slot free (the original manager's `asyncio` semaphores
//! did this atomically; every hand-rolled port of it is one refactor away
//! from not doing so).
//!
//! Here production's [`Permits`] decide and grant, but the waker that
//! matters lives in this gate's own table, filled in a second critical
//! section after the ledger said "waiting": [`PermitGate::release`] wakes
//! everyone in the table, and a waiter between its look and its
//! registration is not in it yet. Production registers its waker under the
//! same lock the grant is made under (`permits.rs`), which is the fix.
//!
//! Caught by: the loom model
//! `a_user_at_its_limit_never_holds_a_global_slot_while_it_waits`, the
//! first check in the order, and one in which a thread waits (`a2`, for its
//! user's slot) while another releases it (`a1`): in the interleaving where
//! the release lands in the window, `a2` is granted but never woken, the
//! model's `join` waits for ever, and loom reports the deadlock. The window
//! is between two critical sections, so only a preemption opens it: the
//! proptest model and the simulations run every future on one thread and
//! never stop one there.

use crate::admission::gate::{BoxGrantFuture, GrantFuture, PermitGate};
use crate::admission::ledger::{Grant, Limits, Refusal, SlotRequest};
use crate::admission::permits::{Acquire, Permits};
use crate::admission::sync::{FacadeMutex, SyncFacade};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

#[derive(Default)]
struct Wakers {
    next_id: u64,
    waiting: BTreeMap<u64, Waker>,
}

/// Production permits with a waker table registered apart from the check.
pub struct LostWakeup<S: SyncFacade> {
    inner: Arc<Permits<S>>,
    wakers: S::Mutex<Wakers>,
}

impl<S: SyncFacade> LostWakeup<S> {
    /// A gate enforcing `limits`.
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            inner: Permits::new(limits),
            wakers: S::Mutex::new(Wakers::default()),
        })
    }

    /// Wakes every registered waiter (each looks again).
    fn notify_all(&self) {
        let woken = self.wakers.with(|w| std::mem::take(&mut w.waiting));
        for waker in woken.into_values() {
            waker.wake();
        }
    }
}

impl<S: SyncFacade> PermitGate for LostWakeup<S> {
    fn acquire(self: Arc<Self>, req: SlotRequest) -> Result<BoxGrantFuture, Refusal> {
        let acquire = self.inner.request(req)?;
        let id = self.wakers.with(|w| {
            w.next_id += 1;
            w.next_id
        });
        Ok(Box::pin(Unregistered {
            gate: self,
            id,
            acquire: Some(acquire),
        }))
    }

    fn release(&self, grant: Grant, refund_quota: bool) {
        self.inner.release(grant, refund_quota);
        self.notify_all();
    }

    crate::admission::forward_gate_reads_to_inner!();
}

struct Unregistered<S: SyncFacade> {
    gate: Arc<LostWakeup<S>>,
    id: u64,
    /// `None` once granted.
    acquire: Option<Acquire<S>>,
}

impl<S: SyncFacade> Future for Unregistered<S> {
    type Output = Grant;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Grant> {
        // 1. Look (the ledger's own waker is a no-op: this gate wakes).
        let noop = &mut Context::from_waker(Waker::noop());
        if let Poll::Ready(grant) = super::poll_acquire(&mut self.acquire, noop, "Unregistered") {
            let id = self.id;
            self.gate.wakers.with(|w| w.waiting.remove(&id));
            return Poll::Ready(grant);
        }
        // 2. The window: a release here notifies whoever is registered,
        //    which is not this request.
        // 3. Register.
        let (id, waker) = (self.id, cx.waker().clone());
        self.gate.wakers.with(|w| w.waiting.insert(id, waker));
        Poll::Pending
    }
}

impl<S: SyncFacade> GrantFuture for Unregistered<S> {
    fn waiters_ahead(&self) -> Option<u32> {
        self.acquire.as_ref().and_then(Acquire::waiters_ahead)
    }
}

impl<S: SyncFacade> Drop for Unregistered<S> {
    fn drop(&mut self) {
        let id = self.id;
        self.gate.wakers.with(|w| w.waiting.remove(&id));
        if let Some(acquire) = self.acquire.take() {
            // Leaving the queue may grant those behind: let them look.
            drop(acquire);
            self.gate.notify_all();
        }
    }
}
