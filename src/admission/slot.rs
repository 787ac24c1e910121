//! [`UploadSlot`]: the RAII owner of everything one admitted upload holds.
//!
//! Invariant: each slot's resources are released exactly once — on
//! [`UploadSlot::complete`], or on drop for every other ending (error,
//! abort, client disconnect, cancellation, panic). The release goes to the
//! [`SlotOwner`] that granted it; the slot never guesses (the original
//! manager released semaphores "if the count looked low").
//!
//! With admission shared by several replicas ([`shared`](super::shared)),
//! a slot also holds a [`SlotLease`]: the store's lease on the global and
//! user slot, given back with the slot, and the cheap
//! [`UploadSlot::lease_valid`] check the committer makes before every piece
//! it sends to the drive. In-process admission holds no lease.

use super::ledger::Grant;
use crate::user::UserId;
use std::sync::Arc;
use std::time::Duration;

/// How an upload ended, as far as its slot is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotOutcome {
    /// The upload finished: the quota charge stands.
    Completed,
    /// The upload did not finish: the charge may be refunded (profile
    /// policy).
    Failed,
}

/// Whoever granted a slot, and takes it back.
pub trait SlotOwner: Send + Sync + 'static {
    /// Takes back a grant. Called exactly once per grant.
    fn release(&self, grant: Grant, outcome: SlotOutcome);
}

/// A lease on slots held in a shared store, owned by an [`UploadSlot`].
pub trait SlotLease: Send + Sync + 'static {
    /// Whether the holder may still act on the lease: known renewed, and
    /// not past the time it trusts it for. No I/O; called before every
    /// piece sent to the drive.
    fn is_valid(&self) -> bool;
    /// The lease's fencing token (strictly increasing across grants).
    fn fencing_token(&self) -> u64;
    /// Gives the lease back. Called exactly once.
    fn release(&self, outcome: SlotOutcome);
}

/// One admitted upload's slots, memory reservation and quota charge.
#[must_use = "dropping an UploadSlot releases it at once"]
pub struct UploadSlot {
    /// `None` only after release.
    grant: Option<Grant>,
    owner: Arc<dyn SlotOwner>,
    /// The store's lease (shared admission); `None` in process, or after
    /// release.
    lease: Option<Box<dyn SlotLease>>,
    file_size_bytes: u64,
    waited: Duration,
}

impl UploadSlot {
    /// Wraps a grant so that it is released exactly once.
    pub fn new(
        grant: Grant,
        owner: Arc<dyn SlotOwner>,
        file_size_bytes: u64,
        waited: Duration,
    ) -> Self {
        Self {
            grant: Some(grant),
            owner,
            lease: None,
            file_size_bytes,
            waited,
        }
    }

    /// The slot, also holding `lease` (released with it, first), after
    /// `waited` in all for both.
    pub fn with_lease(mut self, lease: Box<dyn SlotLease>, waited: Duration) -> Self {
        self.lease = Some(lease);
        self.waited = waited;
        self
    }

    /// Whether the upload may still send bytes to the drive: always for an
    /// in-process slot; for a leased one, while the lease is known valid.
    pub fn lease_valid(&self) -> bool {
        self.lease.as_ref().is_none_or(|l| l.is_valid())
    }

    /// The lease's fencing token, if the slot holds a lease.
    pub fn fencing_token(&self) -> Option<u64> {
        self.lease.as_ref().map(|l| l.fencing_token())
    }

    fn grant(&self) -> &Grant {
        self.grant
            .as_ref()
            .expect("an UploadSlot holds its grant until it is released")
    }

    /// The user holding the slot.
    pub fn user(&self) -> &UserId {
        &self.grant().user
    }

    /// Memory reserved for this upload's reorder window.
    pub fn memory_bytes(&self) -> u64 {
        self.grant().memory_bytes
    }

    /// The admitted file's size.
    pub fn file_size_bytes(&self) -> u64 {
        self.file_size_bytes
    }

    /// How long admission waited for the slots.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// The ticket, unique per admission; for traces.
    pub fn ticket(&self) -> u64 {
        self.grant().ticket
    }

    /// Releases the slot as a finished upload (the quota charge stands).
    pub fn complete(mut self) {
        self.release(SlotOutcome::Completed);
    }

    fn release(&mut self, outcome: SlotOutcome) {
        if let Some(lease) = self.lease.take() {
            lease.release(outcome);
        }
        if let Some(grant) = self.grant.take() {
            self.owner.release(grant, outcome);
        }
    }
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        self.release(SlotOutcome::Failed);
    }
}

impl std::fmt::Debug for UploadSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadSlot")
            .field("grant", &self.grant)
            .field("fencing_token", &self.fencing_token())
            .field("file_size_bytes", &self.file_size_bytes)
            .field("waited", &self.waited)
            .finish()
    }
}
