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
//!
//! [`ReorderWindow`] exposes the window operations on their own (public,
//! re-exported from [`backend`](super)) so that benchmarks measure this
//! code, not a copy of it.

use super::store::{RecordPhase, UploadRecord};
use super::tus::{Tail, TusUpload};
use crate::admission::UploadSlot;
use crate::chunk_api::UploadedFile;
use crate::chunk_api::{ErrorDetail, Phase, UploadStatus};
use crate::drive::SessionUri;
use crate::ids::UploadId;
use crate::user::UserId;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
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
    pub file: Option<UploadedFile>,
    pub failure: Option<ErrorDetail>,
    /// The digest of the committed prefix as the backend sent it.
    pub sent: super::sent_digest::Sent,
    /// The digests of the piece in flight (see `sent_digest`).
    pub sent_in_flight: super::sent_digest::InFlight,
    /// A tus upload's bytes past the window's whole chunks (`tus/tail.rs`):
    /// the chunk a PATCH ended inside, and a checksummed PATCH's bytes
    /// until they are verified. Always empty for the chunk API.
    pub tail: Tail,
}

impl UploadState {
    /// A fresh state in `phase`: nothing committed, buffered or held.
    pub fn empty(phase: Phase) -> Self {
        Self {
            phase,
            committed_bytes: 0,
            window: BTreeMap::new(),
            slot: None,
            session: None,
            session_generation: 0,
            last_activity: Duration::ZERO,
            file: None,
            failure: None,
            sent: None,
            sent_in_flight: Vec::new(),
            tail: Tail::default(),
        }
    }

    /// Drops every buffered byte (the window and the tail): the upload
    /// ended, or its drive session starts again from byte zero.
    pub fn drop_buffers(&mut self) {
        self.window.clear();
        self.tail.clear();
    }
}

/// What an upload is, fixed at its creation (or read back from its
/// record): everything [`Upload::new`] needs besides its state.
pub(crate) struct UploadSpec {
    pub id: UploadId,
    pub user: UserId,
    pub file_name: String,
    pub mime_type: String,
    pub file_size_bytes: u64,
    /// Chunk size; > 0.
    pub chunk_size_bytes: u64,
    /// The upload's memory reservation: the window holds what it allows.
    pub memory_bytes: u64,
    /// The profile's cap on the window, whatever the reservation.
    pub window_chunks_max: u32,
    /// The client's idempotency key for the create, if it sent one.
    pub client_token: Option<String>,
    /// What a tus upload is beyond the chunk API's (`None`: a chunk API
    /// upload).
    pub tus: Option<TusUpload>,
}

/// One upload.
pub(crate) struct Upload {
    pub id: UploadId,
    pub user: UserId,
    pub file_name: String,
    pub mime_type: String,
    pub file_size_bytes: u64,
    pub chunk_size_bytes: u64,
    pub chunk_count: u32,
    /// Chunks the window holds beyond the committed prefix; ≥ 1.
    pub window_chunks: u32,
    /// The upload's memory reservation, which sized the window.
    pub memory_bytes: u64,
    /// The client's idempotency key for the create.
    pub client_token: Option<String>,
    /// A tus upload's headers and its PATCH lock; `None` for the chunk
    /// API, whose routes never see a tus upload (nor tus's a chunk API one).
    pub tus: Option<TusUpload>,
    /// Lock it with [`Upload::lock`], which counts mutable accesses in
    /// `changes`; never directly.
    pub state: Mutex<UploadState>,
    /// How many times `state` was accessed mutably: unchanged means the
    /// state is exactly as last seen (see `upload/guard.rs`).
    changes: AtomicU64,
    /// Wakes the committer (a chunk arrived, or the upload ended).
    pub wake: tokio::sync::Notify,
    /// The latest state its event streams read (see `progress`); only
    /// [`Upload::publish`] writes it, after the change is persisted.
    pub progress: tokio::sync::watch::Sender<crate::chunk_api::ProgressState>,
    /// Wakes whoever waits for the window to move (a tus PATCH waiting for
    /// room): the committed offset advanced, or the buffers were dropped.
    pub moved: tokio::sync::Notify,
}

/// Number of chunks of `chunk_size_bytes` in `file_size_bytes`.
pub(crate) fn chunk_count(file_size_bytes: u64, chunk_size_bytes: u64) -> u32 {
    // Profiles cap files at 5 TiB and chunks at ≥ 256 KiB: ≤ 2^23 chunks.
    u32::try_from(file_size_bytes.div_ceil(chunk_size_bytes)).unwrap_or(u32::MAX)
}

impl Upload {
    /// A new upload as `spec` describes it, in `state`; its window holds
    /// what its memory reservation allows, at most
    /// `spec.window_chunks_max`, at least one chunk.
    ///
    /// # Panics
    /// If `spec.chunk_size_bytes` is zero (profiles require ≥ 256 KiB).
    pub fn new(spec: UploadSpec, state: UploadState) -> Self {
        let UploadSpec {
            id,
            user,
            file_name,
            mime_type,
            file_size_bytes,
            chunk_size_bytes,
            memory_bytes,
            window_chunks_max,
            client_token,
            tus,
        } = spec;
        assert!(
            chunk_size_bytes > 0,
            "Upload::new: chunk_size_bytes must be positive"
        );
        let chunk_count = chunk_count(file_size_bytes, chunk_size_bytes);
        let window_chunks = u32::try_from(memory_bytes / chunk_size_bytes)
            .unwrap_or(u32::MAX)
            .min(window_chunks_max)
            .clamp(1, chunk_count.max(1));
        let initial = crate::chunk_api::ProgressState {
            upload_id: id.clone(),
            phase: state.phase,
            file_size_bytes,
            committed_bytes: state.committed_bytes,
            received_bytes: state.committed_bytes,
            drive_session: state.session_generation,
            file: state.file.clone(),
            failure: state.failure.clone(),
        };
        Self {
            id,
            user,
            file_name,
            mime_type,
            file_size_bytes,
            chunk_size_bytes,
            chunk_count,
            window_chunks,
            memory_bytes,
            client_token,
            tus,
            state: Mutex::new(state),
            changes: AtomicU64::new(0),
            wake: tokio::sync::Notify::new(),
            progress: tokio::sync::watch::Sender::new(initial),
            moved: tokio::sync::Notify::new(),
        }
    }

    pub fn lock(&self) -> StateGuard<'_> {
        StateGuard {
            state: self.state.lock().unwrap_or_else(PoisonError::into_inner),
            changes: &self.changes,
        }
    }

    /// How many times the state was locked for writing (see
    /// `upload/guard.rs`): equal counts, equal states.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
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
    /// below it; a tus upload's tail keeps its place in the file (see
    /// [`Tail::skip_front`]).
    pub fn commit(&self, state: &mut UploadState, held_bytes: u64) {
        debug_assert!(
            held_bytes >= state.committed_bytes,
            "offsets only move forward"
        );
        let tail_start_before = self.tail_start(state);
        state.committed_bytes = held_bytes;
        let first_kept = self.chunk_of(held_bytes);
        state.window = state.window.split_off(&first_kept);
        if held_bytes == self.file_size_bytes {
            state.window.clear();
        }
        // The tail's place is derived from the window and the committed
        // offset. When the drive holds more than the window reached (its
        // answer after a restart or a lost reply), the tail now starts
        // further on: its bytes up to there are on the drive already, and
        // kept they would be read as the bytes after it (issue 15's swarm
        // found this: a file on the drive with bytes shifted).
        let tail_start_after = self.tail_start(state);
        debug_assert!(
            tail_start_after >= tail_start_before,
            "the tail only moves forward"
        );
        state
            .tail
            .skip_front(tail_start_after.saturating_sub(tail_start_before));
        self.moved.notify_waiters();
    }

    /// Drops every buffered byte ([`UploadState::drop_buffers`]) and wakes
    /// whoever waits for room.
    pub fn drop_buffers(&self, state: &mut UploadState) {
        state.drop_buffers();
        self.moved.notify_waiters();
    }

    /// Bytes buffered now: the window's and the tail's.
    pub fn buffered_bytes(state: &UploadState) -> u64 {
        let window: u64 = state
            .window
            .values()
            .flat_map(|c| c.frames.iter())
            .map(|f| f.len() as u64)
            .sum();
        window + state.tail.len_bytes()
    }

    /// The most the window may buffer: `window_chunks × chunk size`, and
    /// never more than the file.
    pub fn window_bytes(&self) -> u64 {
        u64::from(self.window_chunks)
            .saturating_mul(self.chunk_size_bytes)
            .min(self.file_size_bytes)
    }

    /// Asserts the bound on buffered bytes, in release builds too: it
    /// guards the machine's memory, which the admission reservation
    /// promised to keep within the limit.
    ///
    /// # Panics
    /// If the window holds more than [`Upload::window_bytes`].
    pub fn assert_buffered_within_window(&self, state: &UploadState) {
        let buffered_bytes = Self::buffered_bytes(state);
        assert!(
            buffered_bytes <= self.window_bytes(),
            "upload {}: {buffered_bytes} bytes buffered, over its window of {} chunks × {} bytes",
            self.id,
            self.window_chunks,
            self.chunk_size_bytes
        );
    }

    /// What the upload buffers now, against its bounds.
    pub fn buffered(&self) -> BufferedUpload {
        let state = self.lock();
        BufferedUpload {
            upload: self.id.to_string(),
            receiving: state.phase == Phase::Receiving,
            buffered_bytes: Self::buffered_bytes(&state),
            window_bytes: self.window_bytes(),
            chunk_size_bytes: self.chunk_size_bytes,
            // What admission granted, from the slot itself while it is
            // held (the window was sized from a copy of it).
            reservation_bytes: state
                .slot
                .as_ref()
                .map_or(self.memory_bytes, |slot| slot.memory_bytes()),
        }
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
            sent: super::sent_digest::saved(
                &state.sent,
                &state.sent_in_flight,
                state.committed_bytes,
            ),
            client_token: self.client_token.clone(),
            tus: self.tus.as_ref().map(TusUpload::record),
            phase,
        }
    }
}

/// What one upload buffers, measured, with the bounds it is held to
/// (read-only, for the simulation's checks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BufferedUpload {
    /// The upload's id.
    pub upload: String,
    /// Still receiving chunks (its slot is held).
    pub receiving: bool,
    /// Chunk bytes in its reorder window now.
    pub buffered_bytes: u64,
    /// `window_chunks × chunk size`.
    pub window_bytes: u64,
    /// The chunk size.
    pub chunk_size_bytes: u64,
    /// Its admission reservation.
    pub reservation_bytes: u64,
}

/// A chunk outside the reorder window, refused by [`ReorderWindow::insert`]
/// (the chunk API answers it with 503 `window_full`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("chunk {index} is beyond the reorder window [{head}, {end})")]
pub struct BeyondWindow {
    /// The chunk refused.
    pub index: u32,
    /// The window's first chunk: the one holding the first uncommitted byte.
    pub head: u32,
    /// One past the window's last chunk.
    pub end: u32,
}

/// A drive piece: the contiguous run of buffered bytes from the committed
/// offset, as the committer sends it in one PUT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// Offset of its first byte in the file (the committed offset).
    pub first_byte: u64,
    /// Its bytes: slices of the chunks' request frames, never copied.
    pub frames: Vec<Bytes>,
    /// Total length of `frames`.
    pub len_bytes: u64,
}

/// One upload's reorder window on its own: the very `Upload` operations
/// the chunk handler and the committer run under the upload's lock
/// (`window_bounds`, `next_piece`, `commit`), without a server, a drive or
/// admission. The server does not use this type; it exists so that
/// benchmarks (`benches/chunk_pipeline.rs`) and tests drive the backend's
/// window code rather than a copy of it.
///
/// Invariants are the upload's: chunks are accepted only inside
/// `[head, head + window_chunks)`; the committed offset only moves forward.
pub struct ReorderWindow {
    upload: Upload,
}

impl ReorderWindow {
    /// An empty window over a file of `file_size_bytes` cut into chunks of
    /// `chunk_size_bytes`, buffering at most `window_chunks` chunks (at
    /// least one, at most the file's chunk count), as an upload whose
    /// reservation holds `window_chunks` chunks would.
    ///
    /// # Panics
    /// If `chunk_size_bytes` is zero (profiles require ≥ 256 KiB).
    pub fn new(file_size_bytes: u64, chunk_size_bytes: u64, window_chunks: u32) -> Self {
        assert!(
            chunk_size_bytes > 0,
            "ReorderWindow::new: chunk_size_bytes must be positive"
        );
        let upload = Upload::new(
            UploadSpec {
                id: UploadId::new("reorder-window"),
                user: UserId::new("reorder-window").expect("a valid literal user id"),
                file_name: "reorder-window.bin".into(),
                mime_type: "application/octet-stream".into(),
                file_size_bytes,
                chunk_size_bytes,
                memory_bytes: u64::from(window_chunks).saturating_mul(chunk_size_bytes),
                window_chunks_max: window_chunks,
                client_token: None,
                tus: None,
            },
            UploadState::empty(Phase::Receiving),
        );
        Self { upload }
    }

    /// Chunks in the file.
    pub fn chunk_count(&self) -> u32 {
        self.upload.chunk_count
    }

    /// Chunks the window buffers at most.
    pub fn window_chunks(&self) -> u32 {
        self.upload.window_chunks
    }

    /// The window's bounds now: `[head, end)`.
    pub fn bounds(&self) -> (u32, u32) {
        self.upload.window_bounds(&self.upload.lock())
    }

    /// Stores chunk `index` (its request frames, already checksummed), as
    /// the chunk handler does once the body has arrived: `Ok(true)` when
    /// stored, `Ok(false)` when the chunk is wholly committed already
    /// (nothing stored; the API answers `already_committed`).
    pub fn insert(&self, index: u32, frames: Vec<Bytes>) -> Result<bool, BeyondWindow> {
        let mut state = self.upload.lock();
        let (head, end) = self.upload.window_bounds(&state);
        if index < head {
            return Ok(false);
        }
        if index >= end {
            return Err(BeyondWindow { index, head, end });
        }
        state.window.insert(index, Chunk { frames });
        Ok(true)
    }

    /// The next drive piece, at most `piece_bytes_max` (rounded to whole
    /// chunks, at least one), or `None` while the head chunk is missing.
    pub fn next_piece(&self, piece_bytes_max: u64) -> Option<Piece> {
        self.upload
            .next_piece(&self.upload.lock(), piece_bytes_max)
            .map(|(first_byte, frames, len_bytes)| Piece {
                first_byte,
                frames,
                len_bytes,
            })
    }

    /// The drive holds the file up to `held_bytes`: moves the committed
    /// offset there and drops the chunks wholly below it.
    ///
    /// `held_bytes` must lie between the committed offset and the file's
    /// size: the committer checks the drive's answer before committing.
    ///
    /// # Panics
    /// In debug builds, if `held_bytes` is below the committed offset
    /// (offsets only move forward).
    pub fn commit(&self, held_bytes: u64) {
        self.upload.commit(&mut self.upload.lock(), held_bytes);
    }

    /// The committed offset.
    pub fn committed_bytes(&self) -> u64 {
        self.upload.lock().committed_bytes
    }

    /// Bytes buffered now.
    pub fn buffered_bytes(&self) -> u64 {
        Upload::buffered_bytes(&self.upload.lock())
    }
}

mod guard;
pub(crate) use guard::StateGuard;

#[cfg(test)]
mod tests;
