//! Mutant 7, the forgotten reserve: the memory formula drops its reserve
//! term and admits what it should refuse.
//!
//! Production grants while `reservations + required ≤ limit − reserve −
//! machine use`. This gate is production's [`Permits`] with the reserve
//! added back to every request's ceiling, i.e. it decides by `limit −
//! machine use`: a one-term slip in the formula. Its refusals still carry
//! production's numbers (the error is built above the gate), so only its
//! *decisions* are wrong.
//!
//! Missed by the old checks: loom's and proptest's profiles have no reserve;
//! the oracle's `memory_limit` bounds reservations by the limit, which a
//! forgotten reserve never crosses; `reference-prod`, the one built-in with
//! a reserve, runs on a machine already over its limit, where the reserve
//! decides nothing. Caught by: the simulation's lock-step admission check
//! (`admission_model`), which recomputes the formula term by term at every
//! decision, on the zoo's `reserve-decides` scenario (a prod profile whose
//! machine leaves room for an upload only if the reserve is ignored).

use crate::admission::gate::{BoxGrantFuture, PermitGate};
use crate::admission::ledger::{Grant, Refusal, SlotRequest};
use crate::admission::sync::SyncFacade;
use crate::admission::{Limits, Permits};
use std::sync::Arc;

/// Production's permits, deciding memory without the reserve.
pub struct ForgottenReserve<S: SyncFacade> {
    inner: Arc<Permits<S>>,
    reserve_bytes: u64,
}

impl<S: SyncFacade> ForgottenReserve<S> {
    /// Permits for `limits` that forget `reserve_bytes` of the formula.
    pub fn new(limits: Limits, reserve_bytes: u64) -> Arc<Self> {
        Arc::new(Self {
            inner: Permits::<S>::new(limits),
            reserve_bytes,
        })
    }
}

impl<S: SyncFacade> PermitGate for ForgottenReserve<S> {
    fn acquire(self: Arc<Self>, mut req: SlotRequest) -> Result<BoxGrantFuture, Refusal> {
        // The bug: the ceiling the controller computed had the reserve
        // taken off; put it back. Exact while the machine leaves any
        // headroom; where it leaves none, the gate cannot tell how far
        // under the limit the machine is, and decides as production does.
        if req.memory_ceiling_bytes > 0 {
            req.memory_ceiling_bytes = req.memory_ceiling_bytes.saturating_add(self.reserve_bytes);
        }
        Arc::clone(&self.inner).acquire(req)
    }

    fn release(&self, grant: Grant, refund_quota: bool) {
        self.inner.release(grant, refund_quota);
    }

    crate::admission::forward_gate_reads_to_inner!();
}
