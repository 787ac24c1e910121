//! [`Permits`]: the ledger behind one lock, with async waiting.
//!
//! This is the thin layer over [`Ledger`] that adds wakers and cancellation.
//! It is generic over a [`SyncFacade`] so that the loom models run this very
//! code with loom's mutex (see [`sync`](super::sync)).
//!
//! Invariants:
//! - A request's place in the FIFO queue is fixed when [`Permits::request`]
//!   returns, not when its future is first polled.
//! - Wakers are woken after the lock is dropped, never under it.
//! - Every [`Acquire`] that is dropped before it completes gives back what it
//!   was granted, or leaves the queue (cancel safety); every [`Grant`] it
//!   returns is released exactly once by its owner.

use super::ledger::{
    Grant, Ledger, LedgerState, Limits, Refusal, SlotRequest, Take, TicketId, Violation,
};
use super::sync::{FacadeMutex, StdSync, SyncFacade};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

struct Shared {
    ledger: Ledger,
    /// Wakers of tickets whose futures are pending. Only accessed under the
    /// lock.
    wakers: BTreeMap<TicketId, Waker>,
    /// Invariant violations seen (e.g. a double release); empty unless the
    /// admission code is broken. Oracles and health checks read it.
    violations: Vec<Violation>,
}

/// The permit core.
pub struct Permits<S: SyncFacade = StdSync> {
    shared: S::Mutex<Shared>,
}

impl<S: SyncFacade> Permits<S> {
    /// A core enforcing `limits`, with nothing held.
    ///
    /// # Panics
    /// If a slot limit is zero (see [`Ledger::new`]).
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            shared: S::Mutex::new(Shared {
                ledger: Ledger::new(limits),
                wakers: BTreeMap::new(),
                violations: Vec::new(),
            }),
        })
    }

    /// Queues a request (or refuses it at once). The returned future
    /// resolves to the grant.
    ///
    /// # Cancel safety
    /// Dropping the returned [`Acquire`] at any point gives back everything
    /// it holds: its place in the queue, any resources granted to it, its
    /// quota charge.
    pub fn request(self: &Arc<Self>, req: SlotRequest) -> Result<Acquire<S>, Refusal> {
        let woken = self.shared.with(|s| {
            let (ticket, granted) = s.ledger.request(req)?;
            Ok((ticket, s.after_change(&granted)))
        });
        let (ticket, woken) = woken?;
        wake_all(woken);
        Ok(Acquire {
            permits: Arc::clone(self),
            ticket: Some(ticket),
        })
    }

    /// Gives a grant back; refunds its quota charge if asked.
    pub fn release(&self, grant: Grant, refund_quota: bool) {
        let woken = self
            .shared
            .with(|s| match s.ledger.release(grant, refund_quota) {
                Ok(granted) => s.after_change(&granted),
                Err(violation) => {
                    tracing::error!(%violation, "admission invariant broken");
                    s.violations.push(violation);
                    Vec::new()
                }
            });
        wake_all(woken);
    }

    /// A view of the ledger.
    pub fn state(&self) -> LedgerState {
        self.shared.with(|s| s.ledger.state())
    }

    /// Every invariant, checked now, plus any violation seen before.
    pub fn check(&self) -> Result<(), Violation> {
        self.shared.with(|s| match s.violations.first() {
            Some(v) => Err(v.clone()),
            None => s.ledger.check(),
        })
    }

    fn waiters_ahead(&self, ticket: TicketId) -> Option<u32> {
        self.shared.with(|s| s.ledger.waiters_ahead(ticket))
    }
}

impl Shared {
    /// After any change: asserts the invariants (debug builds, loom and
    /// tests) and collects the wakers of tickets just granted.
    fn after_change(&mut self, granted: &[TicketId]) -> Vec<Waker> {
        if cfg!(debug_assertions) {
            if let Err(violation) = self.ledger.check() {
                self.violations.push(violation);
            }
        }
        granted
            .iter()
            .filter_map(|t| self.wakers.remove(t))
            .collect()
    }
}

fn wake_all(wakers: Vec<Waker>) {
    for waker in wakers {
        waker.wake();
    }
}

/// A queued request; resolves to its [`Grant`]. See [`Permits::request`].
#[must_use = "a request waits in the queue only while its Acquire is alive"]
pub struct Acquire<S: SyncFacade = StdSync> {
    permits: Arc<Permits<S>>,
    /// `None` once the grant has been handed out.
    ticket: Option<TicketId>,
}

impl<S: SyncFacade> Acquire<S> {
    /// Waiting requests ahead of this one; `None` once granted.
    pub fn waiters_ahead(&self) -> Option<u32> {
        self.ticket.and_then(|t| self.permits.waiters_ahead(t))
    }
}

impl<S: SyncFacade> Future for Acquire<S> {
    type Output = Grant;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Grant> {
        let Some(ticket) = self.ticket else {
            panic!("Acquire polled after it completed");
        };
        let taken = self.permits.shared.with(|s| match s.ledger.take(ticket) {
            Take::Granted(grant) => {
                s.wakers.remove(&ticket);
                Some(grant)
            }
            Take::Waiting => {
                // Registered under the same lock the grant is made under, so
                // a release cannot slip between the check and the
                // registration (no lost wake-up).
                match s.wakers.get_mut(&ticket) {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    Some(w) => w.clone_from(cx.waker()),
                    None => {
                        s.wakers.insert(ticket, cx.waker().clone());
                    }
                }
                None
            }
            Take::Unknown => unreachable!("ticket {ticket} vanished while its Acquire was alive"),
        });
        match taken {
            Some(grant) => {
                self.ticket = None;
                Poll::Ready(grant)
            }
            None => Poll::Pending,
        }
    }
}

impl<S: SyncFacade> Drop for Acquire<S> {
    fn drop(&mut self) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        let woken = self.permits.shared.with(|s| {
            s.wakers.remove(&ticket);
            let granted = s.ledger.cancel(ticket);
            s.after_change(&granted)
        });
        wake_all(woken);
    }
}
