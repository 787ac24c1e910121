//! Mutant 5, the per-user entry race: two concurrent first uploads of a
//! user each create that user's limiter.
//!
//! The original created per-user semaphores lazily:
//!
//! ```python
//! user_sem = self.user_semaphores.get(user_id)
//! if user_sem is None:
//!     ...                                   # an await here
//!     user_sem = asyncio.Semaphore(5)
//!     self.user_semaphores[user_id] = user_sem   # overwrites
//! await user_sem.acquire()
//! ```
//!
//! Check, a point where another task runs, then insert: two first uploads
//! of one user both find no limiter, both create one, the second insert
//! overwrites the first, and each upload acquires its own limiter. The user
//! runs twice their limit (more with more racers), and the per-user limit
//! stays broken for as long as uploads hold the orphaned limiter.
//!
//! Here production's [`Permits`] decide, with one ledger entry per
//! *limiter*: this gate maps each user to their current limiter, and the
//! ledger counts a user's slots under the limiter's name. The first limiter
//! of a user carries the user's own id (so without a race this gate is
//! production); a limiter created by a racing first upload gets a name of
//! its own and a per-user count of its own. [`PermitGate::state`] folds the
//! limiters back into their users: the true holders per user.
//!
//! Caught by: the loom model `concurrent_admissions_stay_within_limits`:
//! its two concurrent first uploads of `a` race through the window, and the
//! model's per-user bound (`user_in_use ≤ 1`) fails. The window is between
//! two critical sections of `acquire`, so only a preemption opens it: the
//! proptest model and the simulations (one thread, no preemption inside a
//! synchronous call) never see it.

use crate::admission::gate::{BoxGrantFuture, GrantFuture, PermitGate};
use crate::admission::ledger::{
    Grant, LedgerState, Limits, Refusal, SlotRequest, TicketId, Violation,
};
use crate::admission::permits::{Acquire, Permits};
use crate::admission::sync::{FacadeMutex, SyncFacade};
use crate::user::UserId;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

#[derive(Default)]
struct Limiters {
    /// Each user's current limiter.
    current: BTreeMap<UserId, UserId>,
    /// Every limiter's user.
    user_of: BTreeMap<UserId, UserId>,
    /// Limiters created per user.
    created: BTreeMap<UserId, u32>,
    /// The limiter each running grant counts under, by ticket.
    granted_under: BTreeMap<TicketId, UserId>,
}

impl Limiters {
    /// A new limiter for `user`, made current (overwriting).
    fn create(&mut self, user: &UserId) -> UserId {
        let n = self.created.entry(user.clone()).or_insert(0);
        // A limiter's name is only a ledger key; one that would not be a
        // valid id falls back to the user's (no split: a missed race).
        let limiter = match *n {
            0 => user.clone(),
            n => UserId::new(format!("{user}.limiter{n}")).unwrap_or_else(|_| user.clone()),
        };
        *n += 1;
        self.user_of.insert(limiter.clone(), user.clone());
        self.current.insert(user.clone(), limiter.clone());
        limiter
    }
}

/// Production permits with lazily, racily created per-user limiters.
pub struct EntryRace<S: SyncFacade> {
    inner: Arc<Permits<S>>,
    limiters: S::Mutex<Limiters>,
}

impl<S: SyncFacade> EntryRace<S> {
    /// A gate enforcing `limits` (per limiter).
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            inner: Permits::new(limits),
            limiters: S::Mutex::new(Limiters::default()),
        })
    }
}

impl<S: SyncFacade> PermitGate for EntryRace<S> {
    fn acquire(self: Arc<Self>, req: SlotRequest) -> Result<BoxGrantFuture, Refusal> {
        let user = req.user.clone();
        // 1. Check.
        let existing = self.limiters.with(|l| l.current.get(&user).cloned());
        let limiter = match existing {
            Some(limiter) => limiter,
            // 2. The window (the original's await): another first upload
            //    of this user may check now, and find nothing either.
            // 3. Insert, overwriting whatever it inserted meanwhile.
            None => self.limiters.with(|l| l.create(&user)),
        };
        let acquire = self.inner.request(SlotRequest {
            user: limiter.clone(),
            ..req
        })?;
        Ok(Box::pin(UnderLimiter {
            gate: self,
            user,
            limiter,
            acquire: Some(acquire),
        }))
    }

    fn release(&self, mut grant: Grant, refund_quota: bool) {
        if let Some(limiter) = self
            .limiters
            .with(|l| l.granted_under.remove(&grant.ticket))
        {
            grant.user = limiter;
        }
        self.inner.release(grant, refund_quota);
    }

    fn state(&self) -> LedgerState {
        let mut state = self.inner.state();
        self.limiters.with(|l| {
            let user_of = |limiter: UserId| l.user_of.get(&limiter).cloned().unwrap_or(limiter);
            let mut users = BTreeMap::new();
            for (limiter, n) in std::mem::take(&mut state.user_in_use) {
                *users.entry(user_of(limiter)).or_insert(0) += n;
            }
            state.user_in_use = users;
            let mut quota = BTreeMap::new();
            for (limiter, bytes) in std::mem::take(&mut state.quota_charged) {
                *quota.entry(user_of(limiter)).or_insert(0) += bytes;
            }
            state.quota_charged = quota;
        });
        state
    }

    fn check(&self) -> Result<(), Violation> {
        self.inner.check()?;
        super::limits_hold(&self.state())
    }
}

/// A request counted under a limiter; its grant names the user.
struct UnderLimiter<S: SyncFacade> {
    gate: Arc<EntryRace<S>>,
    user: UserId,
    limiter: UserId,
    /// `None` once granted.
    acquire: Option<Acquire<S>>,
}

impl<S: SyncFacade> Future for UnderLimiter<S> {
    type Output = Grant;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Grant> {
        let Poll::Ready(mut grant) = super::poll_acquire(&mut self.acquire, cx, "UnderLimiter")
        else {
            return Poll::Pending;
        };
        let limiter = self.limiter.clone();
        self.gate
            .limiters
            .with(|l| l.granted_under.insert(grant.ticket, limiter));
        grant.user = self.user.clone();
        Poll::Ready(grant)
    }
}

impl<S: SyncFacade> GrantFuture for UnderLimiter<S> {
    fn waiters_ahead(&self) -> Option<u32> {
        self.acquire.as_ref().and_then(Acquire::waiters_ahead)
    }
}
