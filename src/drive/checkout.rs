//! A session's storage handle, checked out for one request ([`Checkout`]).
//!
//! While a request holds the handle, its session's slot is empty: that is
//! what serialises requests for one session (see [`super::session`]).
//! Dropping a [`Checkout`] gives the handle back to its session (or
//! discards it if the session is gone), so no path, cancellation included,
//! loses a handle.

use super::control::{discard_all, DriveControl};
use super::replies::Refusal;
use super::session::SessionState;
use super::storage::StorageHandle;
use crate::ids::SessionId;
use bytes::Bytes;
use std::time::Duration;

/// A session's storage handle, checked out for one request.
pub(super) struct Checkout {
    pub(super) control: DriveControl,
    pub(super) upload_id: SessionId,
    /// `Some` until given back, finished or abandoned.
    pub(super) handle: Option<Box<dyn StorageHandle>>,
    /// Bytes committed, including this request's.
    pub(super) committed_bytes: u64,
    /// This request's commit-log record (its absolute index).
    pub(super) record_slot: Option<u64>,
}

impl Checkout {
    /// Appends `run` at `committed_bytes` and records it.
    pub(super) async fn append(&mut self, run: Bytes) -> Result<(), Refusal> {
        let len_bytes = run.len() as u64;
        let first_byte = self.committed_bytes;
        let Some(handle) = self.handle.as_mut() else {
            return Err(Refusal::new(500, "storage handle already released"));
        };
        if let Err(error) = handle.append(run).await {
            self.abandon();
            return Err(Refusal::new(
                500,
                format!("storage failed appending {len_bytes} bytes at byte {first_byte}: {error}"),
            ));
        }
        let end_byte = first_byte.saturating_add(len_bytes);
        assert_eq!(
            handle.len_bytes(),
            end_byte,
            "storage holds exactly the bytes committed"
        );
        self.committed_bytes = end_byte;
        let mut state = self.control.lock();
        if let Some(session) = state.sessions.get_mut(&self.upload_id) {
            session.committed_bytes = end_byte;
        }
        state.record_commit(&self.upload_id, first_byte, end_byte, &mut self.record_slot);
        Ok(())
    }

    /// Storage failed: its state is unknown, so the session is dropped (the
    /// client will get 404 and start over) and its storage discarded.
    pub(super) fn abandon(&mut self) {
        {
            let mut state = self.control.lock();
            if state.sessions.remove(&self.upload_id).existed() {
                state.stats.sessions_expired += 1;
            }
        }
        let handle = self.handle.take();
        self.control.discard(vec![(self.upload_id.clone(), handle)]);
    }

    /// Gives the handle back, marking the session active at `now` if given.
    /// `false` if the session is gone meanwhile (its storage is then
    /// discarded).
    pub(super) fn give_back(&mut self, now: Option<Duration>) -> bool {
        let Some(handle) = self.handle.take() else {
            return false;
        };
        let mut state = self.control.lock();
        if let Some(session) = state.sessions.get_mut(&self.upload_id) {
            if let Some(now) = now {
                session.last_active_at = now;
            }
            if let SessionState::Open {
                handle: slot @ None,
            } = &mut session.state
            {
                *slot = Some(handle);
                return true;
            }
        }
        drop(state);
        discard_all(vec![(self.upload_id.clone(), Some(handle))]);
        false
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        if self.handle.is_some() {
            let upload_id = self.upload_id.clone();
            let returned = self.give_back(None);
            tracing::debug!(%upload_id, returned, "drive: handle given back on drop");
        }
    }
}
