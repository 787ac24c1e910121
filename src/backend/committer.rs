//! The committer: one task per upload that streams the window's contiguous
//! prefix to the drive (see the module docs of [`upload`](super::upload)),
//! starts a new drive session when the old one is lost, and ends the
//! upload exactly once ([`Backend::end`]).

use super::metrics::RetryKind;
use super::refusals::{drive_refused, Refusal};
use super::sent_digest;
use super::server::{ms, Backend};
use super::slip::Slip;
use super::upload::Upload;
use crate::buggify::{self, Site};
use crate::checksum::FileDigestKind;
use crate::chunk_api::Cause;
use crate::chunk_api::Phase;
use crate::chunk_api::UploadedFile;
use crate::coverage::{self, Probe};
use crate::drive::{DriveClient, DriveError, FileResource, PieceReply, SessionUri};
use crate::trace::Event;
use bytes::Bytes;
use http::StatusCode;
use std::sync::Arc;
use std::time::Duration;

/// How late a simulated slow release gives a slot back.
const SLOW_RELEASE_DELAY: Duration = Duration::from_secs(2);

/// Why the committer stopped an upload.
pub(super) enum Ending {
    Complete,
    Failed(Refusal),
    /// Someone else ended it (abort); nothing to do.
    Gone,
}

/// The committer's counters between steps.
struct CommitRun {
    /// Drive failures in a row without progress.
    failures: u32,
    /// Sessions started in a row without progress.
    restarts: u32,
    /// Whether the next step asks the drive what it holds instead of
    /// sending (after a failure, and on resume).
    need_status: bool,
}

/// A piece to send: `(first_byte, frames, len)`.
type PieceToSend = (u64, Vec<Bytes>, u64);

/// A drive reply, or `None` when none came within the request timeout.
type DriveReply = Option<Result<PieceReply, DriveError>>;

impl Backend {
    pub(super) fn spawn_committer(&self, upload: Arc<Upload>, drive: DriveClient) {
        let this = self.clone();
        tokio::spawn(async move {
            let ending = this.commit_loop(&upload, &drive, false).await;
            this.end(&upload, ending);
        });
    }

    /// Ends an upload once: releases its slot (completed or dropped), drops
    /// its window, persists, wakes its committer.
    pub(super) fn end(&self, upload: &Upload, ending: Ending) {
        let slot = {
            let mut state = upload.lock();
            if matches!(state.phase, Phase::Complete | Phase::Failed) {
                return;
            }
            upload.drop_buffers(&mut state);
            match &ending {
                Ending::Complete => state.phase = Phase::Complete,
                Ending::Failed(r) => {
                    state.phase = Phase::Failed;
                    state.failure = Some(r.detail());
                }
                Ending::Gone => return,
            }
            state.slot.take()
        };
        let slot = match slot {
            // Simulation only: the slot is given back late, as a slow
            // cleanup path would; admission must cope with the wait.
            Some(late) if buggify::fire(Site::BackendSlowRelease) => {
                let (clock, complete) = (
                    self.inner.env.clock.clone(),
                    matches!(ending, Ending::Complete),
                );
                tokio::spawn(async move {
                    clock.sleep(SLOW_RELEASE_DELAY).await;
                    if complete {
                        late.complete();
                    }
                });
                None
            }
            other => other,
        };
        match ending {
            Ending::Complete => {
                coverage::hit(Probe::EndComplete);
                self.inner.metrics.ended("complete");
                if let Some(slot) = slot {
                    slot.complete();
                }
            }
            Ending::Failed(r) => {
                coverage::hit(super::probes::ended(r.cause));
                if slot.is_some() {
                    coverage::hit(Probe::ReleaseOnError);
                }
                self.inner.metrics.ended("failed");
                if self.inner.config.slip == Slip::KeepsSlotOnDriveFailure
                    && r.cause == Cause::DriveFailed
                {
                    // The zoo's bug: this error path never gives back.
                    std::mem::forget(slot);
                } else {
                    drop(slot);
                }
                self.trace(Event::UploadFailed {
                    upload: upload.id.to_string(),
                    cause: r.cause.as_str().into(),
                });
                tracing::warn!(upload = %upload.id, cause = r.cause.as_str(), reason = %r.message, "upload failed");
            }
            Ending::Gone => {}
        }
        self.persist(upload);
        upload.wake.notify_one();
        self.retire(&upload.id);
        // A final tus upload's partials end with it.
        self.end_partials_of(upload);
    }

    /// The committer (see the module docs of [`upload`](super::upload)).
    pub(super) async fn commit_loop(
        &self,
        upload: &Upload,
        drive: &DriveClient,
        start_with_status: bool,
    ) -> Ending {
        let request_timeout =
            Duration::from_millis(self.inner.config.profile.drive_request_timeout_ms);
        let mut run = CommitRun {
            failures: 0,
            restarts: 0,
            need_status: start_with_status,
        };
        loop {
            // 0. Ended by someone else (abort)? What is there to send?
            let (session, piece) = match self.next_work(upload, run.need_status) {
                Ok(work) => work,
                Err(ending) => return ending,
            };
            // 1. Ask the drive, or send the next piece, or wait for a chunk.
            let reply: DriveReply = if run.need_status {
                self.inner
                    .env
                    .clock
                    .timeout(
                        request_timeout,
                        drive.status(&session, upload.file_size_bytes),
                    )
                    .await
            } else if let Some(piece) = piece {
                self.send_piece(upload, drive, &session, piece, request_timeout)
                    .await
            } else {
                if let Some(ending) = self.wait_for_chunk(upload).await {
                    return ending;
                }
                continue;
            };
            let reply = reply.unwrap_or_else(|| {
                Err(DriveError::Io {
                    reason: format!("no reply within {} ms", ms(request_timeout)),
                })
            });
            // 2. Believe only the drive's answer.
            if let Some(ending) = self.on_drive_reply(upload, drive, &mut run, reply).await {
                return ending;
            }
        }
    }

    /// The upload's session and, unless the drive is to be asked first,
    /// the next piece; or how the upload ended.
    fn next_work(
        &self,
        upload: &Upload,
        need_status: bool,
    ) -> Result<(SessionUri, Option<PieceToSend>), Ending> {
        let state = upload.lock();
        if state.phase != Phase::Receiving {
            return Err(Ending::Gone);
        }
        let Some(session) = state.session.clone() else {
            return Err(Ending::Failed(Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                Cause::NoSession,
                "no drive session",
            )));
        };
        let piece = if need_status {
            None
        } else {
            upload.next_piece(&state, self.inner.config.piece_bytes_max)
        };
        // A shared-admission slot whose lease is lost sends no further byte
        // (in process, a slot is always valid).
        if piece.is_some() && !state.slot.as_ref().is_none_or(|s| s.lease_valid()) {
            return Err(Ending::Failed(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                Cause::SlotStoreUnavailable,
                "the upload's slot lease is lost: nothing more is sent to the drive",
            )));
        }
        Ok((session, piece))
    }

    /// Sends one piece to the drive, bounded by the request timeout.
    async fn send_piece(
        &self,
        upload: &Upload,
        drive: &DriveClient,
        session: &SessionUri,
        (first_byte, frames, len): PieceToSend,
        request_timeout: Duration,
    ) -> DriveReply {
        self.observe_piece(upload, first_byte, len, &frames);
        let (chunk, file) = (upload.chunk_size_bytes, upload.file_size_bytes);
        let max = self.inner.config.piece_bytes_max;
        super::probes::piece_cut((first_byte, len), chunk, file, max).for_each(coverage::hit);
        self.trace(Event::DrivePiece {
            upload: upload.id.to_string(),
            first_byte,
            end_byte: first_byte + len,
        });
        // Saved before a byte leaves: the drive may keep part of this
        // piece and the backend restart before hearing so. Digested from
        // the frames outside the lock (MD5 takes a while).
        let base =
            sent_digest::in_flight_base(self.file_digest(), upload, &upload.lock(), first_byte);
        let points = sent_digest::in_flight(base, &frames);
        upload.lock().sent_in_flight = points;
        self.persist(upload);
        let frames = if buggify::fire(Site::BackendPieceBitFlip) {
            flipped(&frames)
        } else {
            frames
        };
        self.inner
            .env
            .clock
            .timeout(
                request_timeout,
                drive.put_piece(session, first_byte, frames, upload.file_size_bytes),
            )
            .await
    }

    /// Waits for a chunk (or the end); fails the upload once it has been
    /// idle for [`upload_idle_timeout`](super::BackendConfig::upload_idle_timeout).
    async fn wait_for_chunk(&self, upload: &Upload) -> Option<Ending> {
        let clock = &self.inner.env.clock;
        let idle_timeout = self.inner.config.upload_idle_timeout;
        let idle = {
            let state = upload.lock();
            clock.now().saturating_sub(state.last_activity)
        };
        if idle >= idle_timeout {
            return Some(Ending::Failed(Refusal::new(
                StatusCode::GONE,
                Cause::ClientGone,
                format!(
                    "no chunk for {} ms (idle limit {} ms)",
                    ms(idle),
                    ms(idle_timeout)
                ),
            )));
        }
        tokio::select! {
            biased;
            () = upload.wake.notified() => {}
            () = clock.sleep(idle_timeout - idle) => {}
        }
        None
    }

    /// What the drive's reply means for the upload: go on (`None`) or end.
    async fn on_drive_reply(
        &self,
        upload: &Upload,
        drive: &DriveClient,
        run: &mut CommitRun,
        reply: Result<PieceReply, DriveError>,
    ) -> Option<Ending> {
        self.observe_answer(upload, &reply);
        match reply {
            Ok(PieceReply::Incomplete { held_bytes }) => {
                // Only progress closes the breaker's count: a drive that
                // answers status queries but takes no piece is failing,
                // and an answer that merely repeats the offset must not
                // reset the failures around it.
                if held_bytes > upload.lock().committed_bytes {
                    self.breaker().success();
                }
                run.need_status = false;
                self.trace(Event::DriveHeld {
                    upload: upload.id.to_string(),
                    held_bytes,
                });
                if self.on_held(upload, run, held_bytes) {
                    self.persist(upload);
                    return None;
                }
                // The drive lost bytes it had acknowledged: the upload
                // cannot continue in this session.
                self.restart_session(upload, drive, &mut run.restarts, "drive regressed")
                    .await
            }
            Ok(PieceReply::Complete(file)) => {
                self.breaker().success();
                self.on_file(upload, drive, run, file).await
            }
            Err(e @ DriveError::Refused { .. }) => {
                // The drive will never take this upload (a full account, a
                // bad request): end it with Drive's reason, at once. The
                // drive answered, so this is not a breaker failure.
                self.trace(Event::DriveError {
                    upload: upload.id.to_string(),
                    error: e.to_string(),
                });
                drive_refused(&e).map(Ending::Failed)
            }
            Err(DriveError::SessionGone { .. }) | Err(DriveError::Rejected { .. }) => {
                self.breaker().failure(self.now());
                let ending = self
                    .restart_session(upload, drive, &mut run.restarts, "session gone")
                    .await;
                run.need_status = false;
                ending
            }
            Err(e) => self.on_drive_failure(upload, run, e).await,
        }
    }

    /// The drive finished the file: the upload is complete if the file is
    /// the bytes sent; otherwise it starts again in a new session.
    async fn on_file(
        &self,
        upload: &Upload,
        drive: &DriveClient,
        run: &mut CommitRun,
        file: FileResource,
    ) -> Option<Ending> {
        let Err(mismatch) = self.verify_file(upload, &file) else {
            return Some(self.on_complete(upload, file));
        };
        // The drive stored damaged bytes: never report them as the upload.
        // Start again in a new session; the client resends from the status.
        self.trace(Event::DriveError {
            upload: upload.id.to_string(),
            error: mismatch.to_string(),
        });
        let ending = self
            .restart_session(upload, drive, &mut run.restarts, "drive checksum mismatch")
            .await;
        ending.map(|ending| given_up_on(ending, &mismatch))
    }

    /// The drive holds `held_bytes`: commits them if that is progress or
    /// no change; `false` if the drive went back (or beyond the file).
    fn on_held(&self, upload: &Upload, run: &mut CommitRun, held_bytes: u64) -> bool {
        let mut state = upload.lock();
        if held_bytes < state.committed_bytes || held_bytes > upload.file_size_bytes {
            return false;
        }
        state.sent = sent_digest::extend(
            self.file_digest(),
            state.sent.take(),
            upload,
            &state,
            held_bytes,
        );
        if held_bytes > state.committed_bytes {
            // Progress: the failure and session-loss budgets count
            // failures in a row without progress, not in all. (A status
            // query that answers while every PUT fails is not progress.)
            run.restarts = 0;
            run.failures = 0;
        }
        self.inner
            .metrics
            .committed(held_bytes - state.committed_bytes);
        upload.commit(&mut state, held_bytes);
        true
    }

    /// Whether the drive's finished file is the bytes the backend sent
    /// (skipped when the backend cannot know, see [`sent_digest`]).
    fn verify_file(
        &self,
        upload: &Upload,
        file: &FileResource,
    ) -> Result<(), sent_digest::DriveChecksumMismatch> {
        let kind = self.file_digest();
        let mut state = upload.lock();
        state.sent = sent_digest::extend(
            kind,
            state.sent.take(),
            upload,
            &state,
            upload.file_size_bytes,
        );
        sent_digest::verify(kind, &state.sent, file)?;
        match (&state.sent, file.digest(kind)) {
            (Some(_), Some(digest)) => tracing::info!(
                upload = %upload.id,
                "the drive's {} {digest} is the {kind} of the bytes sent",
                kind.field_name()
            ),
            _ => tracing::warn!(
                upload = %upload.id,
                "the drive's file is not verified: the {kind} of what was sent is unknown (an upload record from before the check)"
            ),
        }
        Ok(())
    }

    /// The whole-file digest this backend checks.
    fn file_digest(&self) -> FileDigestKind {
        self.inner.config.file_digest
    }

    /// The drive finished the file: checks its size, records it.
    fn on_complete(&self, upload: &Upload, file: FileResource) -> Ending {
        if file.size_bytes != upload.file_size_bytes {
            return Ending::Failed(Refusal::new(
                StatusCode::BAD_GATEWAY,
                Cause::DriveSizeMismatch,
                format!(
                    "the drive finished a {}-byte file; {} were uploaded",
                    file.size_bytes, upload.file_size_bytes
                ),
            ));
        }
        self.trace(Event::UploadComplete {
            upload: upload.id.to_string(),
            size_bytes: file.size_bytes,
            checksum: file
                .digest(self.file_digest())
                .unwrap_or_default()
                .to_owned(),
        });
        let mut state = upload.lock();
        self.inner
            .metrics
            .committed(upload.file_size_bytes.saturating_sub(state.committed_bytes));
        state.committed_bytes = upload.file_size_bytes;
        state.file = Some(UploadedFile::from(file));
        Ending::Complete
    }

    /// A retryable failure (5xx, 429, I/O, timeout) or a protocol
    /// violation: back off, then ask what the drive holds; or give up
    /// after `attempts_max` in a row.
    async fn on_drive_failure(
        &self,
        upload: &Upload,
        run: &mut CommitRun,
        e: DriveError,
    ) -> Option<Ending> {
        let clock = &self.inner.env.clock;
        let retry = self.inner.config.profile.retry;
        self.breaker().failure(clock.now());
        self.trace(Event::DriveError {
            upload: upload.id.to_string(),
            error: e.to_string(),
        });
        run.failures += 1;
        if run.failures >= retry.attempts_max {
            return Some(Ending::Failed(Refusal::new(
                StatusCode::BAD_GATEWAY,
                Cause::DriveFailed,
                format!("drive failed {} times in a row; last: {e}", run.failures),
            )));
        }
        let backoff = self.jitter(retry.backoff_ceiling(run.failures - 1));
        self.inner.metrics.retry(RetryKind::DrivePiece);
        self.trace(Event::Backoff {
            what: format!("drive:{}", upload.id),
            attempt: run.failures,
            backoff_ms: ms(backoff),
        });
        clock.sleep(backoff).await;
        run.need_status = true;
        None
    }

    /// Starts a new drive session from byte zero. Returns an ending if the
    /// upload cannot go on.
    async fn restart_session(
        &self,
        upload: &Upload,
        drive: &DriveClient,
        restarts: &mut u32,
        why: &str,
    ) -> Option<Ending> {
        *restarts += 1;
        self.inner.metrics.retry(RetryKind::DriveSession);
        if *restarts > self.inner.config.session_restarts_max {
            return Some(Ending::Failed(Refusal::new(
                StatusCode::BAD_GATEWAY,
                Cause::DriveSessionLost,
                format!("drive session lost {} times ({why}); giving up", *restarts),
            )));
        }
        let clock = &self.inner.env.clock;
        let retry = self.inner.config.profile.retry;
        let timeout = Duration::from_millis(self.inner.config.profile.drive_request_timeout_ms);
        for attempt in 0..retry.attempts_max {
            let started = clock
                .timeout(
                    timeout,
                    drive.initiate(&upload.file_name, &upload.mime_type, upload.file_size_bytes),
                )
                .await;
            match started {
                Some(Ok(session)) => {
                    coverage::hit(Probe::DriveSessionRestart);
                    self.breaker().success();
                    let generation = {
                        let mut state = upload.lock();
                        state.session = Some(session);
                        state.session_generation += 1;
                        state.committed_bytes = 0;
                        upload.drop_buffers(&mut state);
                        // The old session's piece vouches for nothing here.
                        state.sent_in_flight.clear();
                        state.session_generation
                    };
                    self.trace(Event::DriveSession {
                        upload: upload.id.to_string(),
                        generation,
                    });
                    self.persist(upload);
                    return None;
                }
                Some(Err(e @ DriveError::Refused { .. })) => {
                    // The drive answers "never" (e.g. storageQuotaExceeded
                    // at initiation): no new session can help.
                    self.trace(Event::DriveError {
                        upload: upload.id.to_string(),
                        error: e.to_string(),
                    });
                    return drive_refused(&e).map(Ending::Failed);
                }
                other => {
                    self.breaker().failure(clock.now());
                    let reason = match other {
                        Some(Err(e)) => e.to_string(),
                        _ => "no reply".into(),
                    };
                    self.trace(Event::DriveError {
                        upload: upload.id.to_string(),
                        error: reason,
                    });
                    let backoff = self.jitter(retry.backoff_ceiling(attempt));
                    clock.sleep(backoff).await;
                }
            }
        }
        Some(Ending::Failed(Refusal::new(
            StatusCode::BAD_GATEWAY,
            Cause::DriveFailed,
            format!("no new drive session after {} attempts", retry.attempts_max),
        )))
    }

    /// The committer of a resumed upload: it first asks the drive what it
    /// holds (the drive may hold more than was persisted, never less), or
    /// starts a session if none was persisted.
    pub(super) async fn commit_loop_resumed(&self, upload: &Upload, drive: &DriveClient) -> Ending {
        let has_session = upload.lock().session.is_some();
        if has_session {
            return self.commit_loop(upload, drive, true).await;
        }
        let mut restarts = 0;
        if let Some(ending) = self
            .restart_session(upload, drive, &mut restarts, "no session persisted")
            .await
        {
            return ending;
        }
        self.commit_loop(upload, drive, false).await
    }
}

/// The ending of an upload whose sessions ran out over bad files: the
/// mismatch, with both digests, as its cause (any other ending as it is).
fn given_up_on(ending: Ending, mismatch: &sent_digest::DriveChecksumMismatch) -> Ending {
    match ending {
        Ending::Failed(refusal) if refusal.cause == Cause::DriveSessionLost => {
            Ending::Failed(Refusal::new(
                StatusCode::BAD_GATEWAY,
                Cause::DriveChecksumMismatch,
                format!("{mismatch}; {}", refusal.message),
            ))
        }
        other => other,
    }
}

/// Simulation only: a copy of a piece with one bit flipped, as a link that
/// damaged it would deliver it (the window keeps the true bytes).
fn flipped(frames: &[Bytes]) -> Vec<Bytes> {
    let Some((last, rest)) = frames.split_last() else {
        return Vec::new();
    };
    let mut damaged = last.to_vec();
    buggify::flip_bit(&mut damaged);
    rest.iter().cloned().chain([Bytes::from(damaged)]).collect()
}

/// The chunk API reports the drive's file in its own type (the client does
/// not import the drive); the fields are the same, one for one.
impl From<FileResource> for UploadedFile {
    fn from(file: FileResource) -> Self {
        // Field by field, so a field added to either type fails to compile
        // here until the other has it too.
        let FileResource {
            kind,
            id,
            name,
            mime_type,
            size_bytes,
            md5_checksum,
            crc64nvme,
        } = file;
        Self {
            kind,
            id,
            name,
            mime_type,
            size_bytes,
            md5_checksum,
            crc64nvme,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This is a regression test that ensures `UploadStatus.file` keeps the
    /// JSON it had when it was the drive's own resource: same names, same
    /// order, `size` a decimal string.
    #[test]
    fn the_chunk_api_file_serialises_as_the_drive_resource_did() {
        let drive = FileResource {
            kind: "drive#file".into(),
            id: "0123456789abcdef0123456789abcdef".into(),
            name: "report.bin".into(),
            mime_type: "application/octet-stream".into(),
            size_bytes: 3_380_000_000,
            md5_checksum: None,
            crc64nvme: Some("00112233aabbccdd".into()),
        };
        let as_drive = serde_json::to_string(&drive).expect("serialises");
        let as_api = serde_json::to_string(&UploadedFile::from(drive)).expect("serialises");
        assert_eq!(as_api, as_drive);
        let back: FileResource = serde_json::from_str(&as_api).expect("the drive reads it back");
        assert_eq!(serde_json::to_string(&back).expect("serialises"), as_drive);
    }
}
