//! One upload inside the backend: its reorder window and the committer task
//! that streams the contiguous prefix to the drive.
//!
//! # Implementation Details
//!
//! Chunks arrive in any order and wait in the window, a map from chunk
//! index to the chunk's bytes (the request body's frames, never copied).
//! The window covers chunks `[head, head + window_chunks)` where `head` is
//! the chunk holding the first byte the drive does not have yet;
//! `window_chunks` is the upload's memory reservation divided by the chunk
//! size, so buffered bytes never exceed the reservation. A chunk beyond the
//! window is refused with 503 and `Retry-After` (backpressure), never
//! buffered.
//!
//! The committer is one task per upload, following the drive protocol:
//! 1. wait for the head chunk (or give up after the idle timeout: the
//!    client is gone);
//! 2. send the contiguous run from the committed offset as one piece (a
//!    multiple of 256 KiB unless it ends the file);
//! 3. believe only the drive's answer: `308` + `Range` says what it holds
//!    (possibly less than was sent); chunks wholly below it leave the
//!    window; the committed offset is persisted;
//! 4. on a retryable failure, back off (exponential, full jitter from the
//!    seeded RNG), then ask the drive's status before sending again;
//! 5. on 404 (session gone) or another 4xx, start a new session from byte
//!    zero (the client resends; bounded by `session_restarts_max`).
//!
//! Invariants: the committed offset only moves forward within a session;
//! buffered bytes ≤ window_chunks × chunk size ≤ the memory reservation;
//! the `UploadSlot` is held exactly while the upload is `Receiving` (or
//! `Resuming` after admission) and released when it ends, however it ends.

use super::api::{ErrorDetail, Phase, UploadStatus};
use super::store::{RecordPhase, UploadRecord};
use crate::admission::UploadSlot;
use crate::drive::{FileResource, SessionUri};
use crate::user::UserId;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// A chunk in the window: its frames and their total length.
#[derive(Debug, Clone)]
pub(crate) struct Chunk {
    pub frames: Vec<Bytes>,
}

/// Mutable state of one upload. Only accessed under [`Upload::state`].
pub(crate) struct UploadState {
    pub phase: Phase,
    pub committed_bytes: u64,
    pub window: BTreeMap<u32, Chunk>,
    /// Held while the upload runs; `None` before admission after a restart
    /// and after the end.
    pub slot: Option<UploadSlot>,
    pub session: Option<SessionUri>,
    pub session_generation: u32,
    /// Clock time of the last chunk received.
    pub last_activity: Duration,
    pub file: Option<FileResource>,
    pub failure: Option<ErrorDetail>,
}

impl UploadState {
    /// A fresh state in the same phase, holding nothing (for tests).
    #[cfg(test)]
    fn clone_empty(&self) -> Self {
        Self {
            phase: self.phase,
            committed_bytes: 0,
            window: BTreeMap::new(),
            slot: None,
            session: None,
            session_generation: 0,
            last_activity: Duration::ZERO,
            file: None,
            failure: None,
        }
    }
}

/// One upload.
pub(crate) struct Upload {
    pub id: String,
    pub user: UserId,
    pub file_name: String,
    pub mime_type: String,
    pub file_size_bytes: u64,
    pub chunk_size_bytes: u64,
    pub chunk_count: u32,
    /// Chunks the window holds beyond the committed prefix; ≥ 1.
    pub window_chunks: u32,
    /// The client's idempotency key for the create.
    pub client_token: Option<String>,
    pub state: Mutex<UploadState>,
    /// Wakes the committer (a chunk arrived, or the upload ended).
    pub wake: tokio::sync::Notify,
}

/// Number of chunks of `chunk_size_bytes` in `file_size_bytes`.
pub(crate) fn chunk_count(file_size_bytes: u64, chunk_size_bytes: u64) -> u32 {
    // Profiles cap files at 5 TiB and chunks at ≥ 256 KiB: ≤ 2^23 chunks.
    u32::try_from(file_size_bytes.div_ceil(chunk_size_bytes)).unwrap_or(u32::MAX)
}

impl Upload {
    /// A new upload; its window holds what its memory reservation allows,
    /// at most `window_chunks_max`, at least one chunk.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: String,
        user: UserId,
        file_name: String,
        mime_type: String,
        file_size_bytes: u64,
        chunk_size_bytes: u64,
        memory_bytes: u64,
        window_chunks_max: u32,
        state: UploadState,
    ) -> Self {
        let chunk_count = chunk_count(file_size_bytes, chunk_size_bytes);
        let window_chunks = u32::try_from(memory_bytes / chunk_size_bytes)
            .unwrap_or(u32::MAX)
            .min(window_chunks_max)
            .clamp(1, chunk_count.max(1));
        Self {
            id,
            user,
            file_name,
            mime_type,
            file_size_bytes,
            chunk_size_bytes,
            chunk_count,
            window_chunks,
            client_token: None,
            state: Mutex::new(state),
            wake: tokio::sync::Notify::new(),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, UploadState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The same upload, created with the client's idempotency key.
    pub fn with_client_token(mut self, token: Option<String>) -> Self {
        self.client_token = token;
        self
    }

    /// Bytes of chunk `index`.
    pub fn chunk_len(&self, index: u32) -> u64 {
        let start = u64::from(index) * self.chunk_size_bytes;
        self.chunk_size_bytes
            .min(self.file_size_bytes.saturating_sub(start))
    }

    /// The chunk holding byte `offset`.
    pub fn chunk_of(&self, offset: u64) -> u32 {
        u32::try_from(offset / self.chunk_size_bytes).unwrap_or(u32::MAX)
    }

    /// The window's bounds: `[head, end)`.
    pub fn window_bounds(&self, state: &UploadState) -> (u32, u32) {
        let head = self.chunk_of(state.committed_bytes);
        (
            head,
            head.saturating_add(self.window_chunks)
                .min(self.chunk_count),
        )
    }

    /// The contiguous run of buffered bytes from the committed offset, at
    /// most `piece_bytes_max` (rounded to whole chunks, at least one):
    /// `(first_byte, frames, len)`, or `None` if the head chunk is missing.
    pub fn next_piece(
        &self,
        state: &UploadState,
        piece_bytes_max: u64,
    ) -> Option<(u64, Vec<Bytes>, u64)> {
        let first = state.committed_bytes;
        let mut index = self.chunk_of(first);
        let mut skip = first - u64::from(index) * self.chunk_size_bytes;
        let mut frames = Vec::new();
        let mut len = 0u64;
        while let Some(chunk) = state.window.get(&index) {
            for frame in &chunk.frames {
                let frame_len = frame.len() as u64;
                if skip >= frame_len {
                    skip -= frame_len;
                    continue;
                }
                // `skip` < frame_len ≤ usize::MAX.
                frames.push(frame.slice(skip as usize..));
                len += frame_len - skip;
                skip = 0;
            }
            index += 1;
            if len >= piece_bytes_max || index >= self.chunk_count {
                break;
            }
        }
        (len > 0).then_some((first, frames, len))
    }

    /// Moves the committed offset to `held_bytes` and drops chunks wholly
    /// below it.
    pub fn commit(&self, state: &mut UploadState, held_bytes: u64) {
        debug_assert!(
            held_bytes >= state.committed_bytes,
            "offsets only move forward"
        );
        state.committed_bytes = held_bytes;
        let first_kept = self.chunk_of(held_bytes);
        state.window = state.window.split_off(&first_kept);
        if held_bytes == self.file_size_bytes {
            state.window.clear();
        }
    }

    /// Bytes buffered now.
    pub fn buffered_bytes(state: &UploadState) -> u64 {
        state
            .window
            .values()
            .flat_map(|c| c.frames.iter())
            .map(|f| f.len() as u64)
            .sum()
    }

    /// The status reply.
    pub fn status(&self) -> UploadStatus {
        let state = self.lock();
        let chunks_committed = if state.committed_bytes >= self.file_size_bytes {
            self.chunk_count
        } else {
            self.chunk_of(state.committed_bytes)
        };
        UploadStatus {
            upload_id: self.id.clone(),
            phase: state.phase,
            file_size_bytes: self.file_size_bytes,
            chunk_size_bytes: self.chunk_size_bytes,
            chunk_count: self.chunk_count,
            committed_bytes: state.committed_bytes,
            chunks_committed,
            chunks_buffered: state.window.keys().copied().collect(),
            window_chunks: self.window_chunks,
            file: state.file.clone(),
            failure: state.failure.clone(),
        }
    }

    /// The persistent form.
    pub fn record(&self) -> UploadRecord {
        let state = self.lock();
        let phase = match (&state.phase, &state.file, &state.failure) {
            (Phase::Complete, Some(file), _) => RecordPhase::Complete { file: file.clone() },
            (Phase::Failed, _, Some(failure)) => RecordPhase::Failed {
                failure: failure.clone(),
            },
            _ => RecordPhase::Receiving,
        };
        UploadRecord {
            upload_id: self.id.clone(),
            user: self.user.clone(),
            file_name: self.file_name.clone(),
            mime_type: self.mime_type.clone(),
            file_size_bytes: self.file_size_bytes,
            chunk_size_bytes: self.chunk_size_bytes,
            drive_session: state.session.as_ref().map(|s| s.as_str().to_owned()),
            session_generation: state.session_generation,
            committed_bytes: state.committed_bytes,
            client_token: self.client_token.clone(),
            phase,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::KIB;

    fn upload(size: u64, chunk: u64, memory: u64) -> Upload {
        Upload::new(
            "u".into(),
            UserId::new("a").expect("valid"),
            "f".into(),
            "application/octet-stream".into(),
            size,
            chunk,
            memory,
            u32::MAX,
            UploadState {
                phase: Phase::Receiving,
                committed_bytes: 0,
                window: BTreeMap::new(),
                slot: None,
                session: None,
                session_generation: 0,
                last_activity: Duration::ZERO,
                file: None,
                failure: None,
            },
        )
    }

    fn chunk(byte: u8, len: u64) -> Chunk {
        // Two frames, so slicing across frames is exercised.
        let half = (len / 2) as usize;
        let bytes = Bytes::from(vec![byte; len as usize]);
        Chunk {
            frames: vec![bytes.slice(..half), bytes.slice(half..)],
        }
    }

    #[test]
    fn window_is_bounded_by_the_reservation() {
        let u = upload(10 * 256 * KIB, 256 * KIB, 3 * 256 * KIB + 1);
        assert_eq!((u.chunk_count, u.window_chunks), (10, 3));
        let capped = Upload::new(
            "u".into(),
            UserId::new("a").expect("valid"),
            "f".into(),
            "x".into(),
            10 * 256 * KIB,
            256 * KIB,
            1 << 30,
            2,
            u.lock().clone_empty(),
        );
        assert_eq!(
            capped.window_chunks, 2,
            "the profile's cap wins over a large reservation"
        );
        let tiny = upload(10 * 256 * KIB, 256 * KIB, 1);
        assert_eq!(tiny.window_chunks, 1, "the head chunk always fits");
        assert_eq!(upload(5, 256 * KIB, 1 << 40).window_chunks, 1);
    }

    #[test]
    fn pieces_are_contiguous_runs_from_the_committed_offset() {
        let c = 256 * KIB;
        let u = upload(5 * c + 7, c, 1 << 30);
        let mut s = u.lock();
        assert!(u.next_piece(&s, 1 << 30).is_none(), "no head chunk");
        s.window.insert(1, chunk(1, c));
        assert!(u.next_piece(&s, 1 << 30).is_none(), "chunk 0 missing");
        s.window.insert(0, chunk(0, c));
        s.window.insert(3, chunk(3, c));
        let (first, frames, len) = u.next_piece(&s, 1 << 30).expect("run 0..2");
        assert_eq!((first, len), (0, 2 * c));
        assert_eq!(frames.iter().map(|f| f.len() as u64).sum::<u64>(), 2 * c);
        // The drive held half of chunk 1: resume from inside it.
        u.commit(&mut s, c + c / 2);
        assert_eq!(s.window.keys().copied().collect::<Vec<_>>(), vec![1, 3]);
        let (first, frames, len) = u.next_piece(&s, 1 << 30).expect("rest of chunk 1");
        assert_eq!((first, len), (c + c / 2, c / 2));
        assert!(frames.iter().all(|f| f.iter().all(|&b| b == 1)));
        // Pieces stop at the size bound, in whole chunks.
        s.window.insert(2, chunk(2, c));
        u.commit(&mut s, 2 * c);
        let (_, _, len) = u.next_piece(&s, 1).expect("at least one chunk");
        assert_eq!(len, c);
        assert_eq!(Upload::buffered_bytes(&s), 2 * c);
    }

    #[test]
    fn the_last_chunk_is_short() {
        let u = upload(1000, 256 * KIB, 1 << 30);
        assert_eq!((u.chunk_count, u.chunk_len(0)), (1, 1000));
        let u = upload(256 * KIB + 1, 256 * KIB, 1 << 30);
        assert_eq!((u.chunk_count, u.chunk_len(1)), (2, 1));
    }
}
