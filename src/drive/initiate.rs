//! The initiation POST: `POST /upload/drive/v3/files?uploadType=resumable`
//! opens a session and answers `200` with its URI in `Location`.
//!
//! # Implementation Details
//!
//! An initiation runs in steps:
//! 1. Without the lock: check the query, read the headers and the metadata
//!    body (bounded by [`METADATA_BYTES_MAX`](super::METADATA_BYTES_MAX)).
//! 2. Under the lock: sweep idle sessions, bound the table
//!    ([`LIVE_SESSIONS_MAX`], 429 beyond), draw the upload and file ids.
//! 3. Without the lock: open storage (computing MD5 if the initiation's
//!    `fields=` asks for `md5Checksum`, in a store that computes it only
//!    then).
//! 4. Under the lock: the session exists from here on; then it is
//!    journalled before anyone learns it exists (503 and dropped if that
//!    fails).

use super::body::read_metadata;
use super::config::LIVE_SESSIONS_MAX;
use super::control::discard_all;
use super::journal::SessionRecord;
use super::protocol::{
    parse_metadata, Field, FieldSelection, UploadQuery, UPLOAD_PATH, UPLOAD_TYPE_RESUMABLE,
};
use super::replies::{header_text, header_u64, Refusal, Reply};
use super::server::Inner;
use super::session::{Session, SessionState};
use super::storage::StorageHandle;
use crate::ids::SessionId;
use crate::user::UserId;
use bytes::Bytes;
use http::header::HeaderName;
use http::{HeaderMap, HeaderValue, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use std::time::Duration;

const X_UPLOAD_CONTENT_LENGTH: HeaderName = HeaderName::from_static("x-upload-content-length");
const X_UPLOAD_CONTENT_TYPE: HeaderName = HeaderName::from_static("x-upload-content-type");

/// Name of a file whose metadata gives none (Drive's default).
const DEFAULT_FILE_NAME: &str = "Untitled";
/// MIME type of a file whose metadata and headers give none.
const DEFAULT_MIME_TYPE: &str = "application/octet-stream";

/// What an initiation asks for.
struct NewFile {
    name: String,
    mime_type: String,
    /// `X-Upload-Content-Length`, if sent.
    declared_total_bytes: Option<u64>,
    /// `fields=` (Drive's default without it).
    fields: FieldSelection,
}

impl Inner {
    /// An initiation POST (see the module docs for its steps).
    pub(super) async fn initiate(
        &self,
        headers: &HeaderMap,
        query: &UploadQuery,
        body: Incoming,
        owner: Option<UserId>,
    ) -> Result<Reply, Refusal> {
        // 1. The request.
        check_upload_type(query)?;
        let mut file = self.read_new_file(headers, body).await?;
        file.fields = query.fields.unwrap_or_default();
        // 2. Ids, under the lock.
        let now = self.clock.now();
        let (upload_id, file_id) = self.draw_ids(now)?;
        // 3. Storage.
        let handle = self
            .storage
            .create(
                upload_id.as_str(),
                &file.name,
                file.fields.contains(Field::Md5Checksum),
            )
            .await
            .map_err(|e| Refusal::new(500, e))?;
        // 4. The session, then its journal record.
        self.open_session(&upload_id, file_id, file, owner, now, handle)
            .await?;
        self.location_reply(&upload_id)
    }

    /// Reads the file's name, type and declared size from the headers and
    /// the metadata body, with Drive's defaults.
    async fn read_new_file(&self, headers: &HeaderMap, body: Incoming) -> Result<NewFile, Refusal> {
        let declared_total_bytes =
            header_u64(headers, &X_UPLOAD_CONTENT_LENGTH, "X-Upload-Content-Length")
                .map_err(Refusal::closing)?;
        let upload_content_type =
            header_text(headers, &X_UPLOAD_CONTENT_TYPE).map_err(Refusal::closing)?;
        let metadata_bytes =
            read_metadata(body, self.clock.as_ref(), self.config.piece_idle_timeout).await?;
        let metadata = parse_metadata(&metadata_bytes).map_err(|e| Refusal::new(400, e))?;
        let name = metadata
            .name
            .unwrap_or_else(|| DEFAULT_FILE_NAME.to_owned());
        let mime_type = metadata
            .mime_type
            .or_else(|| upload_content_type.map(str::to_owned))
            .unwrap_or_else(|| DEFAULT_MIME_TYPE.to_owned());
        Ok(NewFile {
            name,
            mime_type,
            declared_total_bytes,
            fields: FieldSelection::DEFAULT,
        })
    }

    /// Under the lock: sweeps idle sessions, bounds the table, draws the
    /// upload and file ids.
    fn draw_ids(&self, now: Duration) -> Result<(SessionId, String), Refusal> {
        let (drawn, dropped) = {
            let mut state = self.control.lock();
            let dropped = state.sessions.drop_idle(now, self.config.session_ttl);
            state.stats.sessions_expired += dropped.len() as u64;
            let drawn = if state.sessions.len() >= LIVE_SESSIONS_MAX {
                None
            } else {
                Some(
                    state
                        .next_id()
                        .and_then(|u| Ok((SessionId::new(u), state.next_id()?))),
                )
            };
            (drawn, dropped)
        };
        if !dropped.is_empty() {
            tracing::info!(sessions = dropped.len(), "drive: idle sessions expired");
        }
        self.control.discard(dropped);
        let drawn = drawn
            .transpose()
            .map_err(|e| Refusal::new(503, format!("no session id: {e}")))?;
        drawn.ok_or_else(|| {
            Refusal::new(
                429,
                format!("{LIVE_SESSIONS_MAX} sessions are live: finish or abandon some first"),
            )
        })
    }

    /// Puts the session in the table, then journals it; undone (and
    /// refused) if either fails.
    async fn open_session(
        &self,
        upload_id: &SessionId,
        file_id: String,
        file: NewFile,
        owner: Option<UserId>,
        now: Duration,
        handle: Box<dyn StorageHandle>,
    ) -> Result<(), Refusal> {
        let record = SessionRecord {
            upload_id: upload_id.clone(),
            file_id: file_id.clone(),
            name: file.name.clone(),
            mime_type: file.mime_type.clone(),
            declared_total_bytes: file.declared_total_bytes,
            owner: owner.clone(),
            fields: file.fields,
            finished: None,
        };
        let session = Session {
            file_id,
            name: file.name,
            mime_type: file.mime_type,
            declared_total_bytes: file.declared_total_bytes,
            committed_bytes: 0,
            last_active_at: now,
            owner,
            fields: file.fields,
            state: SessionState::Open {
                handle: Some(handle),
            },
        };
        let inserted = {
            let mut state = self.control.lock();
            let inserted = state.sessions.insert(upload_id.clone(), session);
            if inserted.is_ok() {
                state.stats.sessions_created += 1;
            }
            inserted
        };
        if let Err(session) = inserted {
            if let SessionState::Open { handle } = session.state {
                discard_all(vec![(upload_id.clone(), handle)]);
            }
            return Err(Refusal::new(
                500,
                format!("upload id {upload_id} drawn twice"),
            ));
        }
        // Journalled before anyone learns the session exists.
        if let Err(error) = self.journal_save(record).await {
            let dropped = self.control.lock().sessions.remove(upload_id);
            self.control
                .discard(vec![(upload_id.clone(), dropped.into_handle())]);
            return Err(Refusal::new(
                503,
                format!("the session could not be journalled: {error}"),
            ));
        }
        tracing::info!(
            %upload_id,
            total_bytes = ?file.declared_total_bytes,
            "drive: session initiated"
        );
        Ok(())
    }

    /// `200` with the session URI in `Location`.
    fn location_reply(&self, upload_id: &SessionId) -> Result<Reply, Refusal> {
        let location = format!(
            "{}{UPLOAD_PATH}?uploadType={UPLOAD_TYPE_RESUMABLE}&upload_id={upload_id}",
            self.base_url
        );
        let location = HeaderValue::from_str(&location)
            .map_err(|_| Refusal::new(500, format!("session URI {location:?} is not a header")))?;
        let mut reply = Response::new(Full::new(Bytes::new()));
        reply.headers_mut().insert(http::header::LOCATION, location);
        Ok(reply)
    }
}

/// Only `uploadType=resumable` is served (400 otherwise).
fn check_upload_type(query: &UploadQuery) -> Result<(), Refusal> {
    match query.upload_type.as_deref() {
        Some(UPLOAD_TYPE_RESUMABLE) => Ok(()),
        Some(other) => Err(Refusal::new(
            400,
            format!("uploadType {other:?} is not supported: only resumable"),
        )
        .closing()),
        None => {
            Err(Refusal::new(400, "uploadType is missing: only resumable is supported").closing())
        }
    }
}
