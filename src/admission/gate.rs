//! [`PermitGate`]: the permit layer the controller runs on.
//!
//! Production's gate is [`Permits`]: the ledger behind one lock. The trait
//! exists so that other permit layers — the bug zoo's mutants, each
//! re-creating one bug of the original manager — run under the real
//! [`Admitter`](super::Admitter) (validation, memory probe, quota numbers,
//! timeouts) and under the same loom models, and are judged by the same
//! checks as production.
//!
//! Contract of an implementation:
//! - [`PermitGate::acquire`] refuses at once (quota, memory, queue bound)
//!   or queues ([`PermitGate::acquire_or_queue`] also hands back a grant
//!   made at once, without a future); the returned [`GrantFuture`] resolves to a [`Grant`] that
//!   the caller gives back, exactly once, with [`PermitGate::release`];
//! - dropping a [`GrantFuture`] before it resolves gives back whatever it
//!   holds (cancel safety);
//! - [`PermitGate::state`] reports the **true** holders: an upload that runs
//!   holds a slot whether or not the gate's own counters still say so. The
//!   oracles compare it with the limits, so a gate whose counters drift from
//!   reality cannot hide it.

use super::ledger::{Grant, LedgerState, Refusal, SlotRequest, Violation};
use super::permits::{Acquire, Acquired, Permits};
use super::sync::SyncFacade;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A queued request for slots; resolves to its [`Grant`].
///
/// # Cancel safety
/// Dropping it before it resolves gives back everything it holds.
pub trait GrantFuture: Future<Output = Grant> + Send {
    /// Waiting requests ahead of this one; `None` once granted.
    fn waiters_ahead(&self) -> Option<u32>;
}

/// A boxed [`GrantFuture`], as [`PermitGate::acquire`] returns it.
pub type BoxGrantFuture = Pin<Box<dyn GrantFuture>>;

/// A permit layer: global slots, user slots, memory and quota, with FIFO
/// waiting. See the module documentation for the contract.
pub trait PermitGate: Send + Sync + 'static {
    /// Refuses `req` at once, or queues it.
    ///
    /// Takes the `Arc` because the future it returns keeps the gate alive.
    fn acquire(self: Arc<Self>, req: SlotRequest) -> Result<BoxGrantFuture, Refusal>;
    /// Refuses `req` at once, grants it at once, or queues it: the same
    /// decision as [`PermitGate::acquire`], with a grant made in the step
    /// that queued the request handed back without building a future (the
    /// admission fast path). A grant returned here is the caller's, to give
    /// back with [`PermitGate::release`].
    ///
    /// The default queues through [`PermitGate::acquire`]: a gate without a
    /// fast path is still correct, only slower.
    fn acquire_or_queue(
        self: Arc<Self>,
        req: SlotRequest,
    ) -> Result<Acquired<BoxGrantFuture>, Refusal> {
        self.acquire(req).map(Acquired::Queued)
    }
    /// Gives a grant back; refunds its quota charge if asked.
    fn release(&self, grant: Grant, refund_quota: bool);
    /// The state now, counting the true holders.
    fn state(&self) -> LedgerState;
    /// Every invariant, checked now, plus any violation seen before.
    fn check(&self) -> Result<(), Violation>;
}

impl<S: SyncFacade> GrantFuture for Acquire<S> {
    fn waiters_ahead(&self) -> Option<u32> {
        Acquire::waiters_ahead(self)
    }
}

impl<S: SyncFacade> PermitGate for Permits<S> {
    fn acquire(self: Arc<Self>, req: SlotRequest) -> Result<BoxGrantFuture, Refusal> {
        let acquire = self.request(req)?;
        Ok(Box::pin(acquire))
    }

    fn acquire_or_queue(
        self: Arc<Self>,
        req: SlotRequest,
    ) -> Result<Acquired<BoxGrantFuture>, Refusal> {
        Ok(match self.request_or_take(req)? {
            Acquired::Granted(grant) => Acquired::Granted(grant),
            Acquired::Queued(acquire) => Acquired::Queued(Box::pin(acquire)),
        })
    }

    fn release(&self, grant: Grant, refund_quota: bool) {
        Permits::release(self, grant, refund_quota);
    }

    fn state(&self) -> LedgerState {
        Permits::state(self)
    }

    fn check(&self) -> Result<(), Violation> {
        Permits::check(self)
    }
}
