//! The tus 1.0.0 endpoint at `/files/`, so that the upload clients people
//! already use (Uppy, tus-js-client, tuspy, TUSKit, tus-java-client)
//! upload through upsim unchanged.
//!
//! ```text
//! OPTIONS /files, /files/{id}   what is served                 → 204
//! POST    /files                creation (+ with upload)       → 201 Location: /files/{id}
//! HEAD    /files/{id}           where the upload stands        → 200 Upload-Offset
//! PATCH   /files/{id}           bytes at the offset            → 204 Upload-Offset
//! DELETE  /files/{id}           termination                    → 204
//! ```
//!
//! A tus upload *is* an upsim upload: its creation runs the chunk API's
//! steps (per-user limit, breaker, admission, drive session, the table and
//! the record); its bytes go into the same reorder window and the same
//! committer streams them to the drive in 256 KiB-aligned pieces, and the
//! drive's whole-file checksum is checked at the end; a restart resumes it
//! from its record and the drive; ended uploads are retained as theirs
//! are. Only the wire is tus's, in a file per concern:
//!
//! - `reply`: headers every reply carries, OPTIONS, parse errors as
//!   refusals;
//! - `create`: creation, creation-with-upload, creation-defer-length;
//! - `deferred`: uploads whose length is not known yet;
//! - `head`: HEAD;
//! - `patch`: PATCH's checks; `intake`: its body into the upload;
//! - `tail`: a tus upload's bytes past the window's whole chunks, and its
//!   offset;
//! - `lock`: one PATCH at a time, and taking over;
//! - `terminate`: DELETE;
//! - `concat`: partial uploads and the final uploads made of them;
//! - `facts`: what a tus upload holds beyond the chunk API's.
//!
//! # Semantics
//!
//! - **Offset.** `Upload-Offset` counts the bytes the backend holds
//!   contiguously from zero: on the drive, in the window, or in the tail.
//!   A backend crash loses what was not on the drive yet; HEAD after the
//!   restart then reports less (down to the start of the chunk the drive
//!   holds part of), and the client resumes from there, as tus clients do
//!   after any interruption.
//! - **One PATCH at a time.** A second PATCH asks the first to stop and
//!   takes over (`lock`); HEAD never waits for a PATCH and never counts a
//!   byte that is not stored for good.
//! - **A PATCH that breaks off** (disconnect, idle body, takeover, no room
//!   for too long) keeps every byte it delivered; a checksummed one keeps
//!   none of its own unless the checksum matched.
//! - **Memory.** A PATCH never holds a byte beyond the window's end: it
//!   waits for the committer to move the window (at most the body idle
//!   timeout, then 503 `window_full`), so a tus upload buffers what a
//!   chunk API upload would, within its reservation.
//! - **The end.** The PATCH that brings the offset to `Upload-Length`
//!   waits (bounded) for the drive to finish the file and check it: 204
//!   when it did, the upload's failure otherwise.
//! - **Expiration.** An upload expires when it has received nothing for
//!   the backend's upload idle timeout (the chunk API's `client_gone`);
//!   `Upload-Expires` says when. After that (and after termination) it
//!   answers 410 with its cause while retained, then 404.
//! - **Deferred length.** upsim admits an upload by its size, so an
//!   upload created with `Upload-Defer-Length: 1` holds nothing and is
//!   admitted by the PATCH that declares `Upload-Length`; bytes before
//!   that are refused (400 `length_deferred`). An upload not admitted yet
//!   is not persisted.
//! - **Empty files.** `Upload-Length: 0` is refused as the chunk API
//!   refuses an empty file (400 `empty_file`): the drive gets no empty
//!   uploads.

mod concat;
mod create;
mod deferred;
mod facts;
mod head;
mod intake;
mod lock;
mod patch;
mod reply;
mod tail;
mod terminate;

pub(super) use concat::unresumable;
pub(super) use deferred::DeferredTable;
pub use facts::TusRecord;
pub(super) use facts::TusUpload;
pub(crate) use tail::Tail;

use super::refusals::Refusal;
use super::server::Backend;
use super::upload::{Upload, UploadState};
use crate::chunk_api::{Cause, Phase};
use crate::user::UserId;
use crate::wire::Reply;
use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Duration;

/// A refusal made before a `/files/` request reached the endpoint (its
/// header block over the limit, 431), answered as the endpoint answers:
/// with `Tus-Resumable` and the cause in `Upsim-Cause`, so a tus client
/// reads it as a tus reply.
pub(super) fn refused_before_routing(refusal: Refusal) -> Reply {
    reply::finish(Err(refusal))
}

impl Backend {
    /// Serves a request to `/files` (`id` `None`) or `/files/{id}`.
    pub(super) async fn tus(&self, req: Request<Incoming>, id: Option<&str>) -> Reply {
        reply::finish(self.tus_route(req, id).await)
    }

    async fn tus_route(&self, req: Request<Incoming>, id: Option<&str>) -> Result<Reply, Refusal> {
        let method = crate::tus::method_override(req.headers())
            .map_err(|e| reply::header_refusal(&e))?
            .unwrap_or_else(|| req.method().clone());
        if method == Method::OPTIONS {
            return Ok(reply::options(
                self.inner.config.profile.file_size_bytes_max,
            ));
        }
        crate::tus::resumable(req.headers()).map_err(|e| reply::header_refusal(&e))?;
        match (method, id) {
            (Method::POST, None) => self.tus_create(req).await,
            (Method::HEAD, Some(id)) => self.tus_head(&req, id),
            (Method::PATCH, Some(id)) => self.tus_patch(req, id).await,
            (Method::DELETE, Some(id)) => self.tus_terminate(&req, id),
            (method, _) => Err(Refusal::new(
                StatusCode::METHOD_NOT_ALLOWED,
                Cause::MethodNotAllowed,
                format!("{method} is not allowed on {}", req.uri().path()),
            )),
        }
    }

    /// The tus upload `id` of `user`; another user's upload, or a chunk
    /// API upload, is reported as missing (its existence is not revealed).
    fn find_tus(&self, id: &str, user: &UserId) -> Result<Arc<Upload>, Refusal> {
        self.find_of(id, user, true)
    }
}

/// `r` with the upload's offset (after whatever the request kept) in its
/// details, so a client told no can see where the upload stands.
fn with_offset(mut r: Refusal, offset: u64) -> Refusal {
    match &mut r.details {
        serde_json::Value::Object(map) => {
            map.insert("upload_offset".into(), offset.into());
        }
        serde_json::Value::Null => r.details = serde_json::json!({ "upload_offset": offset }),
        _ => {}
    }
    r
}

/// The refusal of a request to an upload that no longer takes bytes (or
/// does not yet, while it is resumed after a restart).
fn ended_refusal(state: &UploadState) -> Refusal {
    match (state.phase, &state.failure) {
        (Phase::Failed, Some(failure)) => Refusal::new(
            StatusCode::GONE,
            failure.cause,
            format!("the upload has ended: {}", failure.message),
        ),
        (Phase::Failed, None) => Refusal::new(
            StatusCode::GONE,
            Cause::UploadFailed,
            "the upload has failed",
        ),
        (Phase::Complete, _) => Refusal::new(
            StatusCode::CONFLICT,
            Cause::UploadComplete,
            "the upload is complete",
        ),
        (Phase::Resuming, _) => Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Cause::Resuming,
            "the backend is taking this upload back after a restart",
        )
        .retry_after(Duration::from_secs(1)),
        (Phase::Receiving, _) => Refusal::new(
            StatusCode::CONFLICT,
            Cause::UploadEnded,
            "the upload ended while the request ran",
        ),
    }
}

/// When `upload` expires (it receives nothing for the upload idle
/// timeout), as an HTTP date; `None` once it has ended.
fn expires(backend: &Backend, state: &UploadState) -> Option<String> {
    if !matches!(state.phase, Phase::Receiving | Phase::Resuming) {
        return None;
    }
    Some(idle_expiry(backend, state.last_activity))
}

/// When a length-deferred upload expires, as an HTTP date.
fn deferred_expires(backend: &Backend, deferred: &deferred::Deferred) -> String {
    idle_expiry(backend, deferred.created_at)
}

/// The upload idle timeout after clock time `since`, as an HTTP date.
fn idle_expiry(backend: &Backend, since: Duration) -> String {
    let clock = &backend.inner.env.clock;
    let idle = clock.now().saturating_sub(since);
    let left = backend
        .inner
        .config
        .upload_idle_timeout
        .saturating_sub(idle);
    crate::tus::http_date(clock.utc_now() + left)
}

/// The tus half of an upload that [`Backend::find_tus`] found.
fn tus_of(upload: &Upload) -> &TusUpload {
    upload
        .tus
        .as_ref()
        .expect("find_tus returns tus uploads only")
}
