//! A tus body into its upload (a PATCH's, or a creation's with upload):
//! frame by frame into the tail, each completed chunk published to the
//! window for the committer, never a byte past the window's end (the
//! intake waits for the committer to make room), and, for a checksummed
//! body, nothing published or counted until the whole body matched.

use super::super::refusals::Refusal;
use super::super::server::{ms, Backend};
use super::super::upload::Upload;
use super::lock::PatchGuard;
use super::{ended_refusal, with_offset};
use crate::chunk_api::{Cause, Phase};
use crate::tus::{BodyDigest, UploadChecksum};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::time::Duration;

/// `Retry-After` of a body that waited too long for room: the drive is
/// slow or failing; the committer retries with backoff meanwhile.
const NO_ROOM_RETRY_AFTER: Duration = Duration::from_secs(5);

/// A body's intake, as its request set it up.
pub(super) struct BodyIntake {
    /// `Content-Length`, if declared.
    pub declared_bytes: Option<u64>,
    /// `Upload-Checksum`, if given.
    pub checksum: Option<UploadChecksum>,
}

impl Backend {
    /// Takes `body` into `upload` at its offset, `guard` held. Returns the
    /// new offset, or the refusal that ended the body (with the offset in
    /// its details): every byte delivered is kept without a checksum, none
    /// of this body's with one unless it matched.
    pub(super) async fn take_body(
        &self,
        upload: &Upload,
        body: Incoming,
        intake: BodyIntake,
        guard: &mut PatchGuard<'_>,
    ) -> Result<u64, Refusal> {
        let provisional = intake.checksum.is_some();
        let limit_end = Self::limit_end(upload, &intake)?;
        let offset_before = upload.tus_offset(&upload.lock());
        let mut digest = intake
            .checksum
            .as_ref()
            .map(|c| BodyDigest::new(c.algorithm));
        let received = self
            .receive_frames(upload, body, limit_end, &mut digest, guard)
            .await;
        let outcome = received.and_then(|received| {
            match (&intake.checksum, digest) {
                (Some(expected), Some(digest)) => check(expected, digest.finish()),
                _ => Ok(()),
            }
            .map(|()| received)
        });
        let (offset, published) = {
            let mut state = upload.lock();
            if outcome.is_ok() {
                state.tail.confirm();
            } else {
                state.tail.discard_unverified();
            }
            let published = if provisional {
                upload.publish_tail(&mut state)
            } else {
                0..0
            };
            if !published.is_empty() {
                upload.wake.notify_one();
            }
            (upload.tus_offset(&state), published)
        };
        self.observe_tus_publish(upload, published);
        // A drive session that started again meanwhile took the offset
        // back to zero: nothing of this body counts then.
        self.inner
            .metrics
            .received(offset.saturating_sub(offset_before));
        outcome.map(|_| offset).map_err(|r| with_offset(r, offset))
    }

    /// Where the body must end: within the file, and, for a checksummed
    /// body, within the room the window can give it before it is
    /// verified. A declared length past either is refused before a byte
    /// is read.
    fn limit_end(upload: &Upload, intake: &BodyIntake) -> Result<u64, Refusal> {
        let state = upload.lock();
        let at = upload.tail_end(&state);
        let file_end = upload.file_size_bytes;
        let limit = if intake.checksum.is_some() {
            upload.room_end_reachable(&state)
        } else {
            file_end
        };
        match intake.declared_bytes.map(|n| at.saturating_add(n)) {
            Some(end) if end > file_end => Err(beyond_length(at, end, file_end)),
            Some(end) if end > limit => Err(checksum_too_large(at, end, limit)),
            _ => Ok(limit),
        }
    }

    /// Reads the body frame by frame into the upload; the bytes received.
    async fn receive_frames(
        &self,
        upload: &Upload,
        mut body: Incoming,
        limit_end: u64,
        digest: &mut Option<BodyDigest>,
        guard: &mut PatchGuard<'_>,
    ) -> Result<u64, Refusal> {
        let idle_timeout = self.inner.config.chunk_body_idle_timeout;
        let clock = self.inner.env.clock.clone();
        let mut received = 0u64;
        let mut next_at = upload.tail_end(&upload.lock());
        loop {
            let next = tokio::select! {
                biased;
                () = guard.stop_asked() => return Err(superseded(received)),
                next = clock.timeout(idle_timeout, body.frame()) => next,
            };
            let Some(next) = next else {
                return Err(Refusal::new(
                    StatusCode::REQUEST_TIMEOUT,
                    Cause::BodyTimeout,
                    format!(
                        "no body byte for {} ms after {received} bytes",
                        ms(idle_timeout)
                    ),
                ));
            };
            let Some(frame) = next else {
                return Ok(received);
            };
            let frame = frame.map_err(|e| {
                Refusal::new(
                    StatusCode::BAD_REQUEST,
                    Cause::BodyIncomplete,
                    format!("the body broke off after {received} bytes: {e}"),
                )
            })?;
            // Trailers are not data (tus's checksum-trailer is not served).
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if let Some(digest) = digest.as_mut() {
                digest.update(&data);
            }
            received += data.len() as u64;
            let provisional = digest.is_some();
            self.append(upload, data, limit_end, provisional, guard, &mut next_at)
                .await?;
        }
    }

    /// Puts `data` at the end of the upload's tail, which must be at
    /// `next_at` (moved on past `data`), waiting for room as needed;
    /// publishes the chunks it completes unless `provisional`.
    ///
    /// # Errors
    /// 409 `offset_mismatch` when the tail's end is no longer `next_at`:
    /// a new drive session took the upload back to zero, or the drive
    /// turned out to hold more, while this request waited. Its next bytes
    /// would land elsewhere in the file (issue 15's swarm found a file
    /// whose middle was written at its start), so the request stops and
    /// its client asks HEAD.
    pub(super) async fn append(
        &self,
        upload: &Upload,
        mut data: Bytes,
        limit_end: u64,
        provisional: bool,
        guard: &mut PatchGuard<'_>,
        next_at: &mut u64,
    ) -> Result<(), Refusal> {
        let clock = self.inner.env.clock.clone();
        let wait_max = self.inner.config.chunk_body_idle_timeout;
        while !data.is_empty() {
            // Enabled before the check, so a commit in between is seen.
            let moved = upload.moved.notified();
            let mut moved = std::pin::pin!(moved);
            moved.as_mut().enable();
            {
                let mut state = upload.lock();
                if state.phase != Phase::Receiving {
                    return Err(ended_refusal(&state));
                }
                let at = upload.tail_end(&state);
                if at != *next_at {
                    return Err(offset_moved(*next_at, at));
                }
                let room_end = upload.room_end(&state).min(limit_end);
                let fit = room_end.saturating_sub(at).min(data.len() as u64);
                if fit > 0 {
                    // `fit` ≤ data.len().
                    state.tail.push(data.split_to(fit as usize), provisional);
                    *next_at += fit;
                    state.last_activity = clock.now();
                    debug_assert!(upload.tail_end(&state) <= upload.room_end(&state));
                    if provisional {
                        continue;
                    }
                    let published = upload.publish_tail(&mut state);
                    if !published.is_empty() {
                        upload.wake.notify_one();
                    }
                    // The observer takes the upload's lock: let go first
                    // (no `.await` in between).
                    drop(state);
                    self.observe_tus_publish(upload, published);
                    continue;
                }
                if at >= limit_end {
                    let end = at + data.len() as u64;
                    return Err(if limit_end == upload.file_size_bytes {
                        beyond_length(at, end, limit_end)
                    } else {
                        checksum_too_large(at, end, limit_end)
                    });
                }
            }
            tokio::select! {
                biased;
                () = guard.stop_asked() => return Err(superseded(0)),
                () = moved => {}
                () = clock.sleep(wait_max) => return Err(no_room(wait_max)),
            }
        }
        Ok(())
    }
}

/// Whether the body's digest is the one its `Upload-Checksum` named.
fn check(expected: &UploadChecksum, actual: Vec<u8>) -> Result<(), Refusal> {
    if actual == expected.digest {
        return Ok(());
    }
    let (expected_b64, actual_b64) = (STANDARD.encode(&expected.digest), STANDARD.encode(&actual));
    let status =
        StatusCode::from_u16(super::reply::CHECKSUM_MISMATCH).unwrap_or(StatusCode::BAD_REQUEST);
    let mut r = Refusal::new(
        status,
        Cause::ChecksumMismatch,
        format!(
            "the body's {} is {actual_b64}; Upload-Checksum says {expected_b64}: nothing of it was kept",
            expected.algorithm.name()
        ),
    );
    r.details = serde_json::json!({
        "algorithm": expected.algorithm.name(),
        "expected": expected_b64,
        "actual": actual_b64,
    });
    Err(r)
}

/// 413: the body goes past `Upload-Length`.
fn beyond_length(at: u64, end: u64, file_end: u64) -> Refusal {
    Refusal::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        Cause::BeyondUploadLength,
        format!(
            "the body would take the upload from {at} to {end} bytes; its length is {file_end}"
        ),
    )
}

/// 413: a checksummed body larger than the window holds before it is
/// verified.
fn checksum_too_large(at: u64, end: u64, limit: u64) -> Refusal {
    Refusal::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        Cause::ChecksumBodyTooLarge,
        format!(
            "a checksummed body is held until it is verified: from {at} it may reach {limit}, not {end}; send it in smaller PATCHes"
        ),
    )
}

/// 409: the upload's end moved from `expected` to `at` under a request
/// (see [`Backend::append`]).
fn offset_moved(expected: u64, at: u64) -> Refusal {
    let mut r = Refusal::new(
        StatusCode::CONFLICT,
        Cause::OffsetMismatch,
        format!(
            "the upload's offset moved from {expected} to {at} while this request ran (a new drive session, or the drive holds more): HEAD says where it stands"
        ),
    );
    r.details = serde_json::json!({ "request_offset": expected, "upload_offset": at });
    r
}

/// 409: a newer PATCH took over.
fn superseded(received: u64) -> Refusal {
    Refusal::new(
        StatusCode::CONFLICT,
        Cause::PatchSuperseded,
        format!(
            "a newer PATCH of this upload took over after {received} bytes of this one arrived"
        ),
    )
}

/// 503: the window stayed full for the whole wait.
fn no_room(waited: Duration) -> Refusal {
    Refusal::new(
        StatusCode::SERVICE_UNAVAILABLE,
        Cause::WindowFull,
        format!(
            "the upload's window stayed full for {} ms: the drive is not taking bytes; HEAD and continue later",
            ms(waited)
        ),
    )
    .retry_after(NO_ROOM_RETRY_AFTER)
}
