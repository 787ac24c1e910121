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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::UtcDay;
    use crate::user::UserId;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    /// A waker that counts its wake-ups.
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn ask(name: &str) -> SlotRequest {
        SlotRequest {
            user: UserId::new(name).expect("valid id"),
            memory_bytes: 1,
            memory_ceiling_bytes: 1_000,
            quota_bytes: 1,
            day: UtcDay(0),
        }
    }

    fn poll_with(acquire: &mut Acquire, waker: &Arc<Count>) -> Poll<Grant> {
        let waker = Waker::from(Arc::clone(waker));
        Pin::new(acquire).poll(&mut Context::from_waker(&waker))
    }

    /// This is a regression test that ensures a waiter polled again with
    /// another waker (moved to another task) is woken on the new one, and
    /// only once, when a release grants it.
    #[test]
    fn a_waiter_polled_again_with_a_new_waker_is_woken_on_the_new_one() {
        let permits = Permits::<StdSync>::new(Limits {
            global_slots: 1,
            user_slots: 1,
            memory_budget_bytes: 1_000,
            waiters_max: 4,
            daily_limit_bytes: None,
        });
        let (old, new) = (
            Arc::new(Count(AtomicUsize::new(0))),
            Arc::new(Count(AtomicUsize::new(0))),
        );
        let mut holder = permits.request(ask("a")).expect("queued");
        let Poll::Ready(held) = poll_with(&mut holder, &old) else {
            panic!("a is granted at once");
        };
        let mut waiter = permits.request(ask("b")).expect("queued");
        assert!(poll_with(&mut waiter, &old).is_pending());
        assert!(poll_with(&mut waiter, &new).is_pending());
        permits.release(held, false);
        assert_eq!(
            (old.0.load(Ordering::SeqCst), new.0.load(Ordering::SeqCst)),
            (0, 1),
            "the release wakes the newest waker"
        );
        assert!(poll_with(&mut waiter, &new).is_ready());
        assert_eq!(permits.check(), Ok(()));
    }
}
