//! The upload's state under its lock, counting every mutable access.
//!
//! The simulation's window model compares the backend's window with its own
//! at every step; with a hundred uploads retained that comparison was a
//! fifth of a crowd run's time, though almost every upload is unchanged
//! from one 5 ms tick to the next. So the lock counts: every `&mut` taken
//! to the state bumps [`Upload::changes`](super::Upload::changes), and the
//! model compares only uploads whose count moved (or that its own hooks
//! touched). The count over-approximates — a `&mut` taken but not written
//! through still counts — so a change is never missed: the state cannot
//! change without a `&mut`, and the only way to one is this guard.

use super::UploadState;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::MutexGuard;

/// An upload's locked state (see the module docs).
pub(crate) struct StateGuard<'a> {
    pub(super) state: MutexGuard<'a, UploadState>,
    /// The upload's change count, bumped by every mutable access.
    pub(super) changes: &'a AtomicU64,
}

impl Deref for StateGuard<'_> {
    type Target = UploadState;

    fn deref(&self) -> &UploadState {
        &self.state
    }
}

impl DerefMut for StateGuard<'_> {
    fn deref_mut(&mut self) -> &mut UploadState {
        // Relaxed: the count is read under the same lock discipline (the
        // simulation's step loop runs between ticks, on the same thread).
        self.changes.fetch_add(1, Ordering::Relaxed);
        &mut self.state
    }
}
