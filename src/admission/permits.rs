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
        let (ticket, woken) = self.shared.with(|s| {
            let (ticket, granted) = s.ledger.request(req)?;
            Ok((ticket, s.after_change(&granted)))
        })?;
        wake_all(woken);
        Ok(Acquire {
            permits: Arc::clone(self),
            ticket: Some(ticket),
        })
    }

    /// The fast path: queues a request (or refuses it at once) exactly as
    /// [`Permits::request`] does, and if the ledger grants it in that same
    /// step, claims the grant under the same lock — one lock round trip,
    /// no [`Acquire`], no waker. The decision is the ledger's, unchanged:
    /// the request joins the back of the queue and is granted only if the
    /// scan reaches it, so it never passes a waiter ahead of it.
    ///
    /// # Cancel safety
    /// As [`Permits::request`] for a queued request; a grant returned here
    /// is owned by the caller and must be given back with
    /// [`Permits::release`].
    pub fn request_or_take(
        self: &Arc<Self>,
        req: SlotRequest,
    ) -> Result<Acquired<Acquire<S>>, Refusal> {
        let (ticket, taken, woken) = self.shared.with(|s| {
            let (ticket, granted) = s.ledger.request(req)?;
            let taken = if granted.contains(&ticket) {
                match s.ledger.take(ticket) {
                    Take::Granted(grant) => Some(grant),
                    Take::Waiting | Take::Unknown => {
                        unreachable!("ticket {ticket} granted by the scan but not takeable")
                    }
                }
            } else {
                None
            };
            // After the take, so that the debug check sees the grant held.
            Ok((ticket, taken, s.after_change(&granted)))
        })?;
        wake_all(woken);
        Ok(match taken {
            Some(grant) => Acquired::Granted(grant),
            None => Acquired::Queued(Acquire {
                permits: Arc::clone(self),
                ticket: Some(ticket),
            }),
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

/// What [`Permits::request_or_take`] (and
/// [`PermitGate::acquire_or_queue`](super::PermitGate::acquire_or_queue))
/// got without waiting.
#[must_use = "a grant must be released, and a request waits only while its future is alive"]
pub enum Acquired<F> {
    /// Granted and claimed in the step that queued it: the caller owns the
    /// grant.
    Granted(Grant),
    /// Waiting; the future resolves to the grant.
    Queued(F),
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

    fn ask_bytes(name: &str, memory_bytes: u64) -> SlotRequest {
        SlotRequest {
            memory_bytes,
            ..ask(name)
        }
    }

    /// This is a regression test that ensures the fast path hands back a
    /// grant only when the ledger grants the request in the step that
    /// queues it: never past a waiter ahead of it for a shared resource
    /// (here memory), even when what it asks for is free; and that it then
    /// waits its turn behind that waiter.
    #[test]
    fn the_fast_path_grants_at_once_but_never_past_a_waiter() {
        let permits = Permits::<StdSync>::new(Limits {
            global_slots: 3,
            user_slots: 1,
            memory_budget_bytes: 100,
            waiters_max: 4,
            daily_limit_bytes: None,
        });
        let Ok(Acquired::Granted(a)) = permits.request_or_take(ask_bytes("a", 60)) else {
            panic!("an idle gate grants at once");
        };
        let state = permits.state();
        assert_eq!((state.global_in_use, state.waiting), (1, 0));
        assert_eq!(permits.check(), Ok(()), "the grant is held, not unclaimed");
        let Ok(Acquired::Queued(mut b)) = permits.request_or_take(ask_bytes("b", 60)) else {
            panic!("b does not fit beside a");
        };
        // c fits beside a (30 + 60 ≤ 100), but b is ahead of it for memory.
        let Ok(Acquired::Queued(mut c)) = permits.request_or_take(ask_bytes("c", 30)) else {
            panic!("c passed b, which waits ahead of it");
        };
        let waker = Arc::new(Count(AtomicUsize::new(0)));
        assert!(poll_with(&mut c, &waker).is_pending());
        permits.release(a, false);
        let (Poll::Ready(b), Poll::Ready(c)) =
            (poll_with(&mut b, &waker), poll_with(&mut c, &waker))
        else {
            panic!("a's release grants b, then c beside it");
        };
        assert_eq!(waker.0.load(Ordering::SeqCst), 1, "c was woken");
        permits.release(b, false);
        permits.release(c, true);
        assert!(permits.state().is_idle());
        assert_eq!(permits.check(), Ok(()));
    }
}
