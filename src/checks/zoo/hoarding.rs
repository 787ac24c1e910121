//! Mutant 4, hoarding: the global slot is taken first, then the upload
//! waits for its user slot while holding it.
//!
//! The original:
//!
//! ```python
//! await self.global_upload_semaphore.acquire()
//! await user_sem.acquire()
//! ```
//!
//! A user at their own limit who starts one more upload parks a *global*
//! slot while waiting for a slot only their own uploads can free. A few
//! such users hold every global slot, and everybody else waits behind them
//! for nothing.
//!
//! Here two production [`Permits`] play the two semaphores: `global` (the
//! global limit, memory and quota; its per-user limit set to the global one
//! so it never binds) and `users` (the per-user limit alone). A request
//! queues on `global`; once granted, it queues on `users`, holding the
//! global grant. Cancellation stays exact, so this gate has the one bug.
//! [`PermitGate::state`] counts global slots as `global` sees them: a
//! hoarder holds one.
//!
//! Caught by: the loom model
//! `a_user_at_its_limit_never_holds_a_global_slot_while_it_waits`, the
//! first check in the order, which is this very scenario: with `a1`
//! running, `a2` takes the second global slot and waits for `a`'s user
//! slot, so `b` can never start and the model deadlocks. The proptest model
//! sees it too (a waiting upload holds a global slot its reference does
//! not). The simulations do not: there hoarding costs throughput, not
//! safety, and their users never wait for their own slots.

use crate::admission::gate::{BoxGrantFuture, GrantFuture, PermitGate};
use crate::admission::ledger::{
    Grant, LedgerState, Limits, Refusal, SlotRequest, TicketId, Violation,
};
use crate::admission::permits::{Acquire, Permits};
use crate::admission::sync::{FacadeMutex, SyncFacade};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Production permits split in two semaphores, taken one after the other.
pub struct Hoarding<S: SyncFacade> {
    limits: Limits,
    global: Arc<Permits<S>>,
    users: Arc<Permits<S>>,
    /// The user grant behind each global grant handed out, by global
    /// ticket.
    user_grants: S::Mutex<BTreeMap<TicketId, Grant>>,
}

impl<S: SyncFacade> Hoarding<S> {
    /// A gate enforcing `limits` (with a hoarding order).
    pub fn new(limits: Limits) -> Arc<Self> {
        let global = Limits {
            user_slots: limits.global_slots,
            ..limits
        };
        let users = Limits {
            global_slots: u32::MAX,
            user_slots: limits.user_slots,
            memory_budget_bytes: u64::MAX,
            waiters_max: u32::MAX,
            daily_limit_bytes: None,
        };
        Arc::new(Self {
            limits,
            global: Permits::new(global),
            users: Permits::new(users),
            user_grants: S::Mutex::new(BTreeMap::new()),
        })
    }
}

impl<S: SyncFacade> PermitGate for Hoarding<S> {
    fn acquire(self: Arc<Self>, req: SlotRequest) -> Result<BoxGrantFuture, Refusal> {
        let day = req.day;
        let global = self.global.request(req)?;
        Ok(Box::pin(TwoStep {
            gate: self,
            day,
            step: Step::Global(global),
        }))
    }

    fn release(&self, grant: Grant, refund_quota: bool) {
        if let Some(user) = self.user_grants.with(|g| g.remove(&grant.ticket)) {
            self.users.release(user, false);
        }
        self.global.release(grant, refund_quota);
    }

    fn state(&self) -> LedgerState {
        let (global, users) = (self.global.state(), self.users.state());
        LedgerState {
            limits: self.limits,
            global_in_use: global.global_in_use,
            user_in_use: users.user_in_use,
            reserved_bytes: global.reserved_bytes,
            waiting: global.waiting + users.waiting,
            quota_charged: global.quota_charged,
        }
    }

    fn check(&self) -> Result<(), Violation> {
        self.global.check()?;
        self.users.check()
    }
}

enum Step<S: SyncFacade> {
    /// Waiting for the global slot.
    Global(Acquire<S>),
    /// Holding the global grant, waiting for the user slot.
    User(Grant, Acquire<S>),
    Done,
}

struct TwoStep<S: SyncFacade> {
    gate: Arc<Hoarding<S>>,
    day: crate::env::UtcDay,
    step: Step<S>,
}

impl<S: SyncFacade> Future for TwoStep<S> {
    type Output = Grant;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Grant> {
        loop {
            match std::mem::replace(&mut self.step, Step::Done) {
                Step::Global(mut acquire) => match Pin::new(&mut acquire).poll(cx) {
                    Poll::Ready(global) => {
                        let user_slot = SlotRequest {
                            user: global.user.clone(),
                            memory_bytes: 0,
                            memory_ceiling_bytes: u64::MAX,
                            quota_bytes: 0,
                            day: self.day,
                        };
                        let user = self
                            .gate
                            .users
                            .request(user_slot)
                            .expect("the user stage has no quota, memory or queue bound");
                        self.step = Step::User(global, user);
                    }
                    Poll::Pending => {
                        self.step = Step::Global(acquire);
                        return Poll::Pending;
                    }
                },
                Step::User(global, mut acquire) => match Pin::new(&mut acquire).poll(cx) {
                    Poll::Ready(user) => {
                        self.gate
                            .user_grants
                            .with(|g| g.insert(global.ticket, user));
                        return Poll::Ready(global);
                    }
                    Poll::Pending => {
                        self.step = Step::User(global, acquire);
                        return Poll::Pending;
                    }
                },
                Step::Done => panic!("TwoStep polled after it completed"),
            }
        }
    }
}

impl<S: SyncFacade> GrantFuture for TwoStep<S> {
    fn waiters_ahead(&self) -> Option<u32> {
        match &self.step {
            Step::Global(acquire) | Step::User(_, acquire) => acquire.waiters_ahead(),
            Step::Done => None,
        }
    }
}

impl<S: SyncFacade> Drop for TwoStep<S> {
    fn drop(&mut self) {
        // Cancelled while hoarding: leave the user queue, give the global
        // grant back (refunding its quota, as production's cancel does).
        if let Step::User(global, acquire) = std::mem::replace(&mut self.step, Step::Done) {
            drop(acquire);
            self.gate.global.release(global, true);
        }
    }
}
