//! `HEAD /files/{id}`: where the upload stands. Read under the upload's
//! lock and never waiting for a PATCH, so a HEAD racing a PATCH reports
//! exactly the bytes stored at that moment (tusd #1161).

use super::super::refusals::Refusal;
use super::super::server::Backend;
use super::reply::{empty, set};
use super::{deferred_expires, ended_refusal, expires, tus_of};
use crate::chunk_api::Phase;
use crate::tus::header;
use crate::wire::Reply;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::{Request, StatusCode};
use hyper::body::Incoming;

impl Backend {
    /// `HEAD /files/{id}`: 200 with `Upload-Offset` (and `Upload-Length`
    /// once known, `Upload-Metadata`, `Upload-Concat`, `Upload-Expires`, and `Upsim-File` once complete);
    /// 404 for an upload this user does not have, 410 with its cause for
    /// one that ended without completing.
    pub(super) fn tus_head(&self, req: &Request<Incoming>, id: &str) -> Result<Reply, Refusal> {
        let user = self.user(req)?;
        let expiry = self.inner.config.upload_idle_timeout;
        if let Some(deferred) = self.inner.tus_deferred.get(id, &user, self.now(), expiry) {
            let mut reply = empty(StatusCode::OK);
            set(&mut reply, header::UPLOAD_OFFSET, "0");
            set(&mut reply, header::UPLOAD_DEFER_LENGTH, "1");
            if let Some(metadata) = &deferred.metadata {
                set(&mut reply, header::UPLOAD_METADATA, metadata.as_header());
            }
            set(
                &mut reply,
                header::UPLOAD_EXPIRES,
                deferred_expires(self, &deferred),
            );
            return Ok(reply);
        }
        let upload = self.find_tus(id, &user)?;
        let tus = tus_of(&upload);
        let state = upload.lock();
        if state.phase == Phase::Failed {
            return Err(ended_refusal(&state));
        }
        let mut reply = empty(StatusCode::OK);
        let offset = if state.phase == Phase::Complete {
            upload.file_size_bytes
        } else {
            upload.tus_offset(&state)
        };
        set(&mut reply, header::UPLOAD_OFFSET, offset.to_string());
        set(
            &mut reply,
            header::UPLOAD_LENGTH,
            upload.file_size_bytes.to_string(),
        );
        if let Some(metadata) = &tus.metadata {
            set(&mut reply, header::UPLOAD_METADATA, metadata.as_header());
        }
        if let Some(concat) = &tus.concat {
            set(&mut reply, header::UPLOAD_CONCAT, concat.as_header());
        }
        if let Some(at) = expires(self, &state) {
            set(&mut reply, header::UPLOAD_EXPIRES, at);
        }
        if let Some(file) = state
            .file
            .as_ref()
            .filter(|_| state.phase == Phase::Complete)
        {
            if let Ok(json) = serde_json::to_vec(file) {
                set(&mut reply, header::UPSIM_FILE, STANDARD.encode(json));
            }
        }
        Ok(reply)
    }
}
