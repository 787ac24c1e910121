//! [`UploadSlot`]: the RAII owner of everything one admitted upload holds.
//!
//! Invariant: each slot's resources are released exactly once — on
//! [`UploadSlot::complete`], or on drop for every other ending (error,
//! abort, client disconnect, cancellation, panic). The release goes to the
//! [`SlotOwner`] that granted it; the slot never guesses (the original
//! manager released semaphores "if the count looked low").

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

/// One admitted upload's slots, memory reservation and quota charge.
#[must_use = "dropping an UploadSlot releases it at once"]
pub struct UploadSlot {
    /// `None` only after release.
    grant: Option<Grant>,
    owner: Arc<dyn SlotOwner>,
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
            file_size_bytes,
            waited,
        }
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
            .field("file_size_bytes", &self.file_size_bytes)
            .field("waited", &self.waited)
            .finish()
    }
}
