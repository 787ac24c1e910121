//! Admission: whether an upload may start, and what it holds while it runs.
//!
//! The original manager caught every exception, released semaphores it might
//! not own and returned `false`. Here:
//! - [`Admitter::admit`] returns `Result<UploadSlot, AdmissionError>`; the
//!   error names its cause with its numbers;
//! - the global and the user slot are taken together, in one step, with the
//!   memory reservation, by the [`ledger`] under one lock;
//! - waiting is FIFO, bounded by a timeout, and cancel-safe;
//! - [`UploadSlot`] is RAII: it releases exactly what it was granted, once.
//!
//! Layers, bottom up: [`ledger`] (the state machine, no locks) →
//! [`permits`] (one lock, wakers, cancellation; generic over the [`sync`]
//! facade so loom can check it) → [`controller`] (the environment: memory
//! probe, clock, logging, metrics). Two traits let other implementations
//! (the [`zoo`](crate::checks::zoo) of the original manager's bugs) run through the same checks:
//! [`PermitGate`], the permit layer the controller runs on, and
//! [`Admission`], the controller the server and the harness program against,
//! built for each backend boot by an [`AdmissionFactory`].

pub mod admit;
pub mod controller;
pub mod error;
pub mod factory;
pub mod failure;
pub mod gate;
pub mod ledger;
pub mod metrics;
pub mod permits;
pub mod quota;
pub mod shared;
pub mod slot;
pub mod sync;

pub use admit::Admit;
pub use controller::{Admitter, MemoryBudget};
pub use error::{AdmissionCause, AdmissionError};
pub use factory::{production_factory, AdmissionFactory};
pub use failure::AdmitFailure;
pub use gate::{BoxGrantFuture, GrantFuture, PermitGate};
pub use ledger::{Grant, LedgerState, Limits, Refusal, SlotRequest, TicketId, Violation};
pub use metrics::AdmissionMetrics;
pub use permits::{Acquire, Acquired, Permits};
pub use shared::SharedAdmitter;
pub use slot::{SlotLease, SlotOutcome, SlotOwner, UploadSlot};

use crate::env::BoxFuture;
use crate::user::UserId;
use serde::Serialize;

/// What a health check shows of admission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdmissionState {
    /// Slots, reservations, waiters and quota.
    pub ledger: LedgerState,
    /// Whether new uploads are refused for shutdown.
    pub shutting_down: bool,
}

/// An admission controller.
pub trait Admission: Send + Sync + 'static {
    /// Admits an upload of `file_size_bytes` for `user`, waiting (bounded)
    /// for slots.
    ///
    /// Production's refusals are always typed ([`AdmitFailure::Refused`]);
    /// see [`AdmitFailure`] for why the trait allows a bare one.
    ///
    /// # Cancel safety
    /// Dropping the future at any point gives back whatever it held.
    fn admit(
        &self,
        user: UserId,
        file_size_bytes: u64,
    ) -> BoxFuture<'_, Result<UploadSlot, AdmitFailure>>;
    /// The state now.
    fn state(&self) -> AdmissionState;
    /// Counters since start.
    fn metrics(&self) -> AdmissionMetrics;
    /// From now on, refuse new uploads with `ShuttingDown`.
    fn begin_shutdown(&self);
    /// Checks the implementation's invariants now.
    fn check(&self) -> Result<(), Violation>;
}

/// The methods of [`Admission`] a wrapper passes straight to the wrapped
/// admission in `self.inner` (`state`, `metrics`, `begin_shutdown`,
/// `check`), for wrappers that change only `admit` (the bug zoo's masked
/// error, the simulation's lock-step check).
macro_rules! forward_admission_to_inner {
    () => {
        fn state(&self) -> $crate::admission::AdmissionState {
            self.inner.state()
        }

        fn metrics(&self) -> $crate::admission::AdmissionMetrics {
            self.inner.metrics()
        }

        fn begin_shutdown(&self) {
            self.inner.begin_shutdown();
        }

        fn check(&self) -> Result<(), $crate::admission::Violation> {
            self.inner.check()
        }
    };
}
pub(crate) use forward_admission_to_inner;

/// The read-only methods of [`PermitGate`] (`state`, `check`) passed
/// straight to the wrapped gate in `self.inner`, for gates whose bug lives
/// in `acquire` or `release` only.
macro_rules! forward_gate_reads_to_inner {
    () => {
        fn state(&self) -> $crate::admission::LedgerState {
            self.inner.state()
        }

        fn check(&self) -> Result<(), $crate::admission::Violation> {
            self.inner.check()
        }
    };
}
pub(crate) use forward_gate_reads_to_inner;
