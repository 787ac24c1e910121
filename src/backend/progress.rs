//! Each upload's progress as the event streams read it: one
//! `tokio::sync::watch` channel per upload holding its latest
//! [`ProgressState`].
//!
//! # Implementation Details
//!
//! A watch channel keeps one value: publishing replaces it and wakes the
//! readers, and never waits for them. So an upload never stalls for a slow
//! (or stuck) reader, and a reader never makes the backend buffer: it finds
//! the latest state when it next looks, the ones in between skipped (each
//! event carries the whole state, so a skipped one is superseded, not
//! lost). With no reader, publishing is a comparison and a store.
//!
//! The upload publishes (`Upload::publish`) after each change a reader
//! sees: after its record is persisted (a new committed offset, a new
//! drive session, the end: "persisted before anything else is told about
//! it", see `server.rs`), after a chunk enters the window, and when a
//! resumed upload is admitted again.

use super::upload::{Upload, UploadState};
use crate::chunk_api::ProgressState;

impl Upload {
    /// The state an event would carry now.
    pub(super) fn progress_state(&self, state: &UploadState) -> ProgressState {
        ProgressState {
            upload_id: self.id.clone(),
            phase: state.phase,
            file_size_bytes: self.file_size_bytes,
            committed_bytes: state.committed_bytes,
            received_bytes: state
                .committed_bytes
                .saturating_add(self.buffered_past_committed(state))
                .min(self.file_size_bytes),
            drive_session: state.session_generation,
            file: state.file.clone(),
            failure: state.failure.clone(),
        }
    }

    /// Bytes of the buffered chunks past the committed offset (the window
    /// may still hold the chunk the drive kept only part of).
    fn buffered_past_committed(&self, state: &UploadState) -> u64 {
        state
            .window
            .iter()
            .map(|(&index, chunk)| {
                let start = u64::from(index) * self.chunk_size_bytes;
                let len: u64 = chunk.frames.iter().map(|f| f.len() as u64).sum();
                let end = start + len;
                end.saturating_sub(start.max(state.committed_bytes))
            })
            .sum()
    }

    /// Tells the event streams the state now, if it changed since the
    /// last time. Never waits.
    pub(super) fn publish(&self, state: &UploadState) {
        let next = self.progress_state(state);
        self.progress.send_if_modified(|current| {
            if *current == next {
                return false;
            }
            *current = next;
            true
        });
    }

    /// A reader of this upload's progress, seeing the current state first.
    pub(super) fn subscribe(&self) -> tokio::sync::watch::Receiver<ProgressState> {
        self.progress.subscribe()
    }
}
