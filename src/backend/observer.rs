//! What the backend tells an observer about its reorder windows: each
//! chunk decision, each piece sent to the drive and each drive answer, with
//! the upload's window as it stood ([`WindowView`]).
//!
//! A simulation attaches a lock-step model here
//! ([`Backend::observe_windows`]; `sim::lockstep::window` judges every
//! decision against its own rules). Without one, [`NoObserver`] is used:
//! production and simulation run the same code, and observing never changes
//! what the backend does — hooks take shared references, return nothing,
//! and the view is built only if the observer asks for it
//! ([`Observed::view`]).
//!
//! Where the hooks sit (each right where the decision is made, with no
//! `.await` between the decision and the hook, so a single-threaded
//! simulation sees the state the decision saw):
//! - `intake.rs`: the phase-and-window check before the body
//!   ([`ChunkStage::BeforeBody`]) and the store after it
//!   ([`ChunkStage::Store`]);
//! - `tus/intake.rs`: each publish of chunks a tus upload's tail
//!   completed ([`WindowObserver::tus_published`]), right after the
//!   upload's lock is let go;
//! - `committer.rs`: `send_piece` ([`WindowObserver::piece_sent`]) and the
//!   top of `on_drive_reply` ([`WindowObserver::drive_answered`]), before the
//!   answer is acted on.

use super::refusals::Refusal;
use super::server::Backend;
use super::upload::Upload;
use crate::chunk_api::{Cause, Phase};
use crate::drive::{DriveError, PieceReply};
use crate::wire::Reply;
use std::ops::Range;
use std::sync::Arc;

/// One upload's window as it stands: geometry, phase, committed offset,
/// drive session and the chunks buffered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowView {
    /// The upload's id.
    pub upload: String,
    /// The file's size.
    pub file_size_bytes: u64,
    /// The chunk size.
    pub chunk_size_bytes: u64,
    /// Chunks in the file, as the backend counted them.
    pub chunk_count: u32,
    /// Chunks the window holds beyond the committed prefix, as the backend
    /// sized it.
    pub window_chunks: u32,
    /// The upload's memory reservation (which sized the window).
    pub memory_bytes: u64,
    /// The upload's phase.
    pub phase: Phase,
    /// The first byte the backend believes the drive does not hold.
    pub committed_bytes: u64,
    /// Drive sessions started for this upload, counting restarts.
    pub session_generation: u32,
    /// The drive session's id (as the drive's commit log names it).
    pub session: Option<String>,
    /// The chunks in the window, ascending.
    pub chunks_buffered: Vec<u32>,
    /// Their bytes, and the tail's.
    pub buffered_bytes: u64,
    /// Of `buffered_bytes`, those a tus upload holds past the window's
    /// whole chunks (its tail; 0 for a chunk API upload).
    pub tail_bytes: u64,
}

/// An upload as an observer sees it: its view, on request.
#[derive(Clone, Copy)]
pub struct Observed<'a>(&'a Upload);

impl Observed<'_> {
    /// The upload's window now (takes the upload's lock: never call it while
    /// the backend holds it, i.e. from inside a hook only).
    pub fn view(&self) -> WindowView {
        let upload = self.0;
        let state = upload.lock();
        WindowView {
            upload: upload.id.to_string(),
            file_size_bytes: upload.file_size_bytes,
            chunk_size_bytes: upload.chunk_size_bytes,
            chunk_count: upload.chunk_count,
            window_chunks: upload.window_chunks,
            memory_bytes: upload.memory_bytes,
            phase: state.phase,
            committed_bytes: state.committed_bytes,
            session_generation: state.session_generation,
            session: state.session.as_ref().map(|s| s.upload_id().to_owned()),
            chunks_buffered: state.window.keys().copied().collect(),
            buffered_bytes: Upload::buffered_bytes(&state),
            tail_bytes: state.tail.len_bytes(),
        }
    }
}

/// Which of a chunk request's two window decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkStage {
    /// Before a byte of the body is read: phase and window.
    BeforeBody,
    /// Once the body has arrived, checksummed: into the window, which may
    /// have moved meanwhile.
    Store,
}

/// What the backend decided for a chunk at one [`ChunkStage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkVerdict {
    /// Go on: read the body ([`ChunkStage::BeforeBody`]) or stored in the
    /// window ([`ChunkStage::Store`]).
    Accepted,
    /// `200 already_committed`: the chunk is on the drive; nothing stored.
    AlreadyCommitted,
    /// Refused with this cause.
    Refused(Cause),
}

impl ChunkVerdict {
    /// The verdict of a window decision's result.
    pub(super) fn of(result: &Result<Option<Reply>, Refusal>) -> Self {
        match result {
            Ok(None) => Self::Accepted,
            Ok(Some(_)) => Self::AlreadyCommitted,
            Err(r) => Self::Refused(r.cause),
        }
    }
}

/// A piece as the committer hands it to the drive client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PieceSent {
    /// Offset of its first byte.
    pub first_byte: u64,
    /// Its length as the committer counted it (the `Content-Range`'s).
    pub len_bytes: u64,
    /// The bytes its frames really hold.
    pub frames_bytes: u64,
}

/// A drive answer to a piece or a status query, as the committer got it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriveAnswer {
    /// `308`: the drive holds the file's first `held_bytes`.
    Held {
        /// Bytes held (the `Range`'s end plus one; 0 without `Range`).
        held_bytes: u64,
    },
    /// `200`: the drive finished a file of `size_bytes`.
    Complete {
        /// The finished file's size.
        size_bytes: u64,
    },
    /// An error, a timeout or a lost session: nothing held is known.
    Failed,
}

impl DriveAnswer {
    /// The answer in a drive reply.
    pub(super) fn of(reply: &Result<PieceReply, DriveError>) -> Self {
        match reply {
            Ok(PieceReply::Incomplete { held_bytes }) => Self::Held {
                held_bytes: *held_bytes,
            },
            Ok(PieceReply::Complete(file)) => Self::Complete {
                size_bytes: file.size_bytes,
            },
            Err(_) => Self::Failed,
        }
    }
}

/// Told about every window decision (see the module docs). Every method
/// has an empty default.
pub trait WindowObserver: Send + Sync {
    /// Chunk `index` of `upload` got `verdict` at `stage`.
    fn chunk_decided(
        &self,
        upload: Observed<'_>,
        index: u32,
        stage: ChunkStage,
        verdict: ChunkVerdict,
    ) {
        let _ = (upload, index, stage, verdict);
    }

    /// The committer is sending `piece` of `upload` (the view is the
    /// window it was cut from).
    fn piece_sent(&self, upload: Observed<'_>, piece: PieceSent) {
        let _ = (upload, piece);
    }

    /// The drive answered `answer` for `upload`; the view is the window
    /// before the answer is acted on.
    fn drive_answered(&self, upload: Observed<'_>, answer: DriveAnswer) {
        let _ = (upload, answer);
    }

    /// The tus upload `upload`'s tail completed chunks `published` and
    /// moved them into the window (the view is the window after).
    fn tus_published(&self, upload: Observed<'_>, published: Range<u32>) {
        let _ = (upload, published);
    }
}

/// The observer of a backend nobody observes.
pub struct NoObserver;

impl WindowObserver for NoObserver {}

impl Backend {
    /// Tells `observer` about every window decision from now on (once per
    /// backend; a second call is ignored and returns `false`).
    pub fn observe_windows(&self, observer: Arc<dyn WindowObserver>) -> bool {
        self.inner.observer.set(observer).is_ok()
    }

    /// The attached observer, or [`NoObserver`].
    fn observer(&self) -> &dyn WindowObserver {
        match self.inner.observer.get() {
            Some(o) => o.as_ref(),
            None => &NoObserver,
        }
    }

    /// Hook: a chunk decision (see [`WindowObserver::chunk_decided`]).
    pub(super) fn observe_chunk(
        &self,
        upload: &Upload,
        index: u32,
        stage: ChunkStage,
        result: &Result<Option<Reply>, Refusal>,
    ) {
        self.observer()
            .chunk_decided(Observed(upload), index, stage, ChunkVerdict::of(result));
    }

    /// Hook: a piece on its way (see [`WindowObserver::piece_sent`]).
    pub(super) fn observe_piece(
        &self,
        upload: &Upload,
        first_byte: u64,
        len_bytes: u64,
        frames: &[bytes::Bytes],
    ) {
        let frames_bytes = frames.iter().map(|f| f.len() as u64).sum();
        self.observer().piece_sent(
            Observed(upload),
            PieceSent {
                first_byte,
                len_bytes,
                frames_bytes,
            },
        );
    }

    /// Hook: chunks a tus upload's tail published into the window (see
    /// [`WindowObserver::tus_published`]); nothing for an empty range.
    pub(super) fn observe_tus_publish(&self, upload: &Upload, published: Range<u32>) {
        if !published.is_empty() {
            self.observer().tus_published(Observed(upload), published);
        }
    }

    /// Hook: a drive answer (see [`WindowObserver::drive_answered`]).
    pub(super) fn observe_answer(&self, upload: &Upload, reply: &Result<PieceReply, DriveError>) {
        self.observer()
            .drive_answered(Observed(upload), DriveAnswer::of(reply));
    }
}

impl super::BufferGauge {
    /// Every upload's window, in id order; empty once the backend is gone.
    pub fn windows(&self) -> Vec<WindowView> {
        self.with_uploads(|uploads| uploads.iter().map(|u| Observed(u).view()).collect())
    }

    /// Calls `visit` for every upload, in id order, with its id, its change
    /// count (equal counts, equal states: see `upload/guard.rs`) and a way
    /// to take its view, so that a caller takes views only of what
    /// changed; nothing once the backend is gone.
    pub fn visit_windows(&self, mut visit: impl FnMut(&str, u64, &dyn Fn() -> WindowView)) {
        self.with_uploads(|uploads| {
            for u in uploads {
                visit(u.id.as_str(), u.changes(), &|| Observed(u).view());
            }
            Vec::<()>::new()
        });
    }
}
