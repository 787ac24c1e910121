//! `PATCH /files/{id}`: bytes at the upload's offset, in steps; each step
//! that refuses says why, and none but the body's intake stores a byte.

use super::super::intake::ChunkInFlight;
use super::super::refusals::Refusal;
use super::super::server::{ms, Backend};
use super::super::upload::Upload;
use super::deferred::Deferred;
use super::facts::TusUpload;
use super::intake::BodyIntake;
use super::lock::{Locked, PatchGuard, TAKEOVER_WAIT_MAX};
use super::reply::{checksum_refusal, empty, header_refusal, media_type_refusal, set};
use super::{deferred_expires, ended_refusal, expires, tus_of, with_offset};
use crate::chunk_api::{Cause, CreateUpload, Phase};
use crate::tus::{header, UploadChecksum};
use crate::user::UserId;
use crate::wire::Reply;
use http::{HeaderMap, Request, StatusCode};
use hyper::body::Incoming;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Longest the PATCH that completes an upload waits for the drive to
/// finish and check the file before answering anyway (HEAD then tells how
/// it ended): the window's last pieces at any working link's speed, with
/// room for a retry or two.
const FINAL_WAIT_MAX: Duration = Duration::from_secs(60);

/// `Retry-After` of a PATCH refused while the backend drains.
const SHUTTING_DOWN_RETRY_AFTER: Duration = Duration::from_secs(10);

/// What a PATCH's headers ask, checked before any upload is touched.
pub(super) struct PatchAsk {
    /// `Upload-Offset`.
    pub offset: u64,
    /// `Upload-Length`, if given (a deferred upload's declaration).
    pub length: Option<u64>,
    /// The body's intake.
    pub intake: BodyIntake,
    /// Whether the request declares an empty body.
    pub empty_body: bool,
}

/// The headers of a request that carries bytes (a PATCH, or a creation
/// with upload): the media type, the checksum and the declared length.
///
/// # Errors
/// 415 for another media type (when there is a body), 400 for a malformed
/// header or an unsupported checksum algorithm.
pub(super) fn body_headers(headers: &HeaderMap) -> Result<(BodyIntake, bool), Refusal> {
    let declared_bytes = crate::tus::content_length(headers).map_err(|e| header_refusal(&e))?;
    let chunked = headers.contains_key(http::header::TRANSFER_ENCODING);
    let empty_body = declared_bytes == Some(0) || (declared_bytes.is_none() && !chunked);
    if !empty_body && !crate::tus::is_offset_stream(headers) {
        return Err(media_type_refusal());
    }
    let checksum = headers
        .get(header::UPLOAD_CHECKSUM)
        .map(|v| UploadChecksum::parse(v.as_bytes()))
        .transpose()
        .map_err(|e| checksum_refusal(&e))?;
    Ok((
        BodyIntake {
            declared_bytes,
            checksum,
        },
        empty_body,
    ))
}

/// A PATCH's headers.
fn patch_headers(headers: &HeaderMap) -> Result<PatchAsk, Refusal> {
    if !crate::tus::is_offset_stream(headers) {
        return Err(media_type_refusal());
    }
    let offset = crate::tus::upload_offset(headers).map_err(|e| header_refusal(&e))?;
    let length = crate::tus::upload_length(headers).map_err(|e| header_refusal(&e))?;
    let (intake, empty_body) = body_headers(headers)?;
    Ok(PatchAsk {
        offset,
        length,
        intake,
        empty_body,
    })
}

/// What a PATCH to a length-deferred upload came to.
enum Deferral {
    /// No deferred upload of that id: an ordinary PATCH (or a 404).
    NotDeferred,
    /// Answered already (an empty PATCH that declares nothing).
    Answered(Reply),
    /// Admitted by the length the PATCH declared.
    Admitted(Arc<Upload>),
}

impl Backend {
    /// `PATCH /files/{id}`.
    pub(super) async fn tus_patch(
        &self,
        req: Request<Incoming>,
        id: &str,
    ) -> Result<Reply, Refusal> {
        let _in_flight = ChunkInFlight::new(&self.inner.chunks_in_flight);
        // 1. Who, and what the headers say.
        let user = self.user(&req)?;
        let ask = patch_headers(req.headers())?;
        // 2. The upload; a deferred one is admitted by the declared length.
        let upload = match self.find_tus(id, &user) {
            Ok(upload) => upload,
            Err(not_found) => match self.patch_deferred(id, &user, &ask).await? {
                Deferral::NotDeferred => return Err(not_found),
                Deferral::Answered(reply) => return Ok(reply),
                Deferral::Admitted(upload) => upload,
            },
        };
        // 3. May bytes come in?
        self.check_patchable(&upload, &ask)?;
        // 4. One PATCH at a time.
        let mut guard = self.patch_lock(&upload).await?;
        // 5. Phase and offset, now that no other PATCH runs.
        if let Some(reply) = Self::check_offset(&upload, &ask)? {
            return Ok(reply);
        }
        // 6. The body.
        let offset = self
            .take_body(&upload, req.into_body(), ask.intake, &mut guard)
            .await?;
        drop(guard);
        // 7. The end: the drive's word on the whole file.
        self.await_end_if_whole(&upload).await?;
        Ok(self.offset_reply(&upload, offset))
    }

    /// The upload's PATCH lock, taken over from a PATCH holding it (at
    /// most [`TAKEOVER_WAIT_MAX`]), or 423.
    pub(super) async fn patch_lock<'a>(
        &self,
        upload: &'a Upload,
    ) -> Result<PatchGuard<'a>, Refusal> {
        let clock = self.inner.env.clock.clone();
        tus_of(upload)
            .lock
            .acquire(clock.as_ref(), TAKEOVER_WAIT_MAX)
            .await
            .map_err(|e| locked(&e))
    }

    /// Refusals that need no lock: shutdown, a final upload, a length
    /// that differs from the upload's.
    fn check_patchable(&self, upload: &Upload, ask: &PatchAsk) -> Result<(), Refusal> {
        if self.inner.draining.load(Ordering::Acquire) {
            return Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                Cause::ShuttingDown,
                "the backend is shutting down: HEAD and PATCH again after it restarts",
            )
            .retry_after(SHUTTING_DOWN_RETRY_AFTER));
        }
        if tus_of(upload).is_final() {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                Cause::FinalUploadImmutable,
                "a final upload is made of its partial uploads; PATCH those",
            ));
        }
        match ask.length {
            Some(length) if length != upload.file_size_bytes => Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                Cause::BadTusHeader,
                format!(
                    "Upload-Length {length} differs from the upload's length {}; once set it cannot change",
                    upload.file_size_bytes
                ),
            )),
            _ => Ok(()),
        }
    }

    /// The upload's phase and offset against the PATCH's: `Ok(Some(204))`
    /// for an empty PATCH at the end of a complete upload, `Ok(None)` to
    /// take the body.
    fn check_offset(upload: &Upload, ask: &PatchAsk) -> Result<Option<Reply>, Refusal> {
        let state = upload.lock();
        let current = match state.phase {
            Phase::Receiving => upload.tus_offset(&state),
            Phase::Complete => upload.file_size_bytes,
            Phase::Failed | Phase::Resuming => return Err(ended_refusal(&state)),
        };
        if ask.offset != current {
            return Err(offset_mismatch(ask.offset, current));
        }
        if state.phase == Phase::Complete {
            if !ask.empty_body {
                return Err(Refusal::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    Cause::BeyondUploadLength,
                    "the upload is complete: no byte fits after its end",
                ));
            }
            let mut reply = empty(StatusCode::NO_CONTENT);
            set(&mut reply, header::UPLOAD_OFFSET, current.to_string());
            return Ok(Some(reply));
        }
        Ok(None)
    }

    /// 204 with the new offset (and when the upload expires).
    pub(super) fn offset_reply(&self, upload: &Upload, offset: u64) -> Reply {
        let mut reply = empty(StatusCode::NO_CONTENT);
        set(&mut reply, header::UPLOAD_OFFSET, offset.to_string());
        if let Some(at) = expires(self, &upload.lock()) {
            set(&mut reply, header::UPLOAD_EXPIRES, at);
        }
        reply
    }

    /// [`await_end`](Self::await_end) once the upload holds every byte (a
    /// final upload: at once, its feeder brings them); at once for a
    /// partial upload, which waits for a final one, not for the drive.
    pub(super) async fn await_end_if_whole(&self, upload: &Upload) -> Result<(), Refusal> {
        let tus = tus_of(upload);
        if tus.is_partial() {
            return Ok(());
        }
        if !tus.is_final() && upload.tus_offset(&upload.lock()) < upload.file_size_bytes {
            return Ok(());
        }
        self.await_end(upload).await
    }

    /// Waits, at most [`FINAL_WAIT_MAX`], for the upload to end: `Ok` when
    /// it completed (or is still going at the bound), its failure else.
    pub(super) async fn await_end(&self, upload: &Upload) -> Result<(), Refusal> {
        let clock = self.inner.env.clock.clone();
        let deadline = clock.now() + FINAL_WAIT_MAX;
        loop {
            let moved = upload.moved.notified();
            let mut moved = std::pin::pin!(moved);
            moved.as_mut().enable();
            {
                let state = upload.lock();
                match state.phase {
                    Phase::Complete => return Ok(()),
                    Phase::Failed => return Err(ended_refusal(&state)),
                    Phase::Receiving | Phase::Resuming => {}
                }
            }
            let now = clock.now();
            if now >= deadline {
                tracing::warn!(upload = %upload.id, waited_ms = ms(FINAL_WAIT_MAX), "tus: the drive has not finished the file; answering the last PATCH anyway");
                return Ok(());
            }
            tokio::select! {
                biased;
                () = moved => {}
                () = clock.sleep(deadline - now) => {}
            }
        }
    }

    /// A PATCH to a length-deferred upload: admits it when the PATCH
    /// declares `Upload-Length`; answers an empty PATCH that declares
    /// nothing; refuses bytes before the length.
    async fn patch_deferred(
        &self,
        id: &str,
        user: &UserId,
        ask: &PatchAsk,
    ) -> Result<Deferral, Refusal> {
        let Some((admitting, deferred)) = self.inner.tus_deferred.begin_admission(id, user)? else {
            return Ok(Deferral::NotDeferred);
        };
        let Some(length) = ask.length else {
            if ask.offset != 0 {
                return Err(offset_mismatch(ask.offset, 0));
            }
            if ask.empty_body {
                let mut reply = empty(StatusCode::NO_CONTENT);
                set(&mut reply, header::UPLOAD_OFFSET, "0");
                set(
                    &mut reply,
                    header::UPLOAD_EXPIRES,
                    deferred_expires(self, &deferred),
                );
                return Ok(Deferral::Answered(reply));
            }
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                Cause::LengthDeferred,
                "upsim admits an upload by its size: declare Upload-Length on this PATCH (the first with bytes)",
            ));
        };
        let upload = self
            .admit_deferred(id, user.clone(), deferred, length)
            .await?;
        admitting.admitted();
        Ok(Deferral::Admitted(upload))
    }

    /// Admits the deferred upload `id` as an upload of `length` bytes,
    /// as a creation with that length would.
    async fn admit_deferred(
        &self,
        id: &str,
        user: UserId,
        deferred: Deferred,
        length: u64,
    ) -> Result<Arc<Upload>, Refusal> {
        super::create::check_length(length, self.inner.config.profile.file_size_bytes_max)?;
        let (file_name, mime_type) = super::create::drive_names(deferred.metadata.as_ref());
        let create = CreateUpload {
            file_name,
            file_size_bytes: length,
            mime_type: Some(mime_type),
            client_token: None,
        };
        let tus = TusUpload::new(deferred.metadata, None);
        let id = crate::ids::UploadId::new(id);
        self.start_upload(
            &user,
            create,
            super::super::create::TokenClaim::none(self),
            Some((tus, Some(id))),
        )
        .await
    }
}

/// 409: the request's offset is not the upload's.
fn offset_mismatch(request_offset: u64, current: u64) -> Refusal {
    let mut r = Refusal::new(
        StatusCode::CONFLICT,
        Cause::OffsetMismatch,
        format!(
            "Upload-Offset is {request_offset}; the upload's offset is {current} (HEAD says where it stands)"
        ),
    );
    r.details = serde_json::json!({ "request_offset": request_offset });
    with_offset(r, current)
}

/// 423 with `Retry-After`: the PATCH holding the upload did not stop.
fn locked(e: &Locked) -> Refusal {
    let mut r = Refusal::new(StatusCode::LOCKED, Cause::UploadLocked, e.to_string())
        .retry_after(Duration::from_secs(1));
    r.details = serde_json::json!({ "waited_ms": e.waited_ms });
    r
}
