//! `POST /files`: tus's creation. With `Upload-Length` it runs the chunk
//! API's create (per-user limit, breaker, admission, drive session, the
//! table) and, with a body (creation-with-upload), takes the first bytes
//! as a PATCH at offset 0 would; with `Upload-Defer-Length: 1` it only
//! notes the upload (`deferred`) until a PATCH declares the length.
//! `Upload-Metadata`'s `filename` and `filetype` name the drive's file.

use super::super::refusals::Refusal;
use super::super::server::Backend;
use super::super::upload::Upload;
use super::deferred::Deferred;
use super::facts::TusUpload;
use super::intake::BodyIntake;
use super::patch::body_headers;
use super::reply::{concat_refusal, empty, header_refusal, metadata_refusal, refused, set};
use crate::chunk_api::{is_valid_file_name, Cause, CreateUpload};
use crate::tus::{header, Concat, Metadata, FILES_PATH};
use crate::user::UserId;
use crate::wire::Reply;
use http::{HeaderMap, Request, StatusCode};
use hyper::body::Incoming;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The drive's file name when the metadata names none (or none valid).
const DEFAULT_FILE_NAME: &str = "tus-upload.bin";

/// The drive's MIME type when the metadata names none (or none valid).
const DEFAULT_MIME_TYPE: &str = "application/octet-stream";

/// Longest `filetype` taken as the drive's MIME type.
const MIME_TYPE_BYTES_MAX: usize = 127;

/// What a creation asks for, from its headers.
struct Creation {
    /// `Upload-Length`; `None` when deferred (or for a final upload).
    length: Option<u64>,
    metadata: Option<Metadata>,
    concat: Option<Concat>,
    intake: BodyIntake,
    empty_body: bool,
}

/// 413 for a length past `Tus-Max-Size` (the profile's largest file).
pub(super) fn check_length(length: u64, max_bytes: u64) -> Result<(), Refusal> {
    if length <= max_bytes {
        return Ok(());
    }
    let mut r = Refusal::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        Cause::FileTooLarge,
        format!("Upload-Length {length} is over Tus-Max-Size {max_bytes}"),
    );
    r.details = serde_json::json!({ "file_size_bytes": length, "file_size_bytes_max": max_bytes });
    Err(r)
}

/// The drive's file name and MIME type, from the metadata's `filename`
/// and `filetype` when they are valid (tus-js-client and Uppy send both).
pub(super) fn drive_names(metadata: Option<&Metadata>) -> (String, String) {
    let name = metadata
        .and_then(|m| m.text("filename"))
        .filter(|name| is_valid_file_name(name))
        .unwrap_or(DEFAULT_FILE_NAME);
    let mime = metadata
        .and_then(|m| m.text("filetype"))
        .filter(|t| {
            t.len() <= MIME_TYPE_BYTES_MAX
                && t.contains('/')
                && t.bytes().all(|b| b.is_ascii_graphic())
        })
        .unwrap_or(DEFAULT_MIME_TYPE);
    (name.to_owned(), mime.to_owned())
}

/// `Upload-Metadata`, if given once.
fn metadata(headers: &HeaderMap) -> Result<Option<Metadata>, Refusal> {
    let mut values = headers.get_all(header::UPLOAD_METADATA).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            Cause::BadMetadata,
            "Upload-Metadata appears more than once",
        ));
    }
    Metadata::parse(value.as_bytes())
        .map(Some)
        .map_err(|e| metadata_refusal(&e))
}

/// A creation's headers, checked before anything is admitted.
fn creation(headers: &HeaderMap, max_bytes: u64) -> Result<Creation, Refusal> {
    let deferred = crate::tus::defer_length(headers).map_err(|e| header_refusal(&e))?;
    let length = crate::tus::upload_length(headers).map_err(|e| header_refusal(&e))?;
    let concat = headers
        .get(header::UPLOAD_CONCAT)
        .map(|v| Concat::parse(v.as_bytes()))
        .transpose()
        .map_err(|e| concat_refusal(&e))?;
    let is_final = matches!(concat, Some(Concat::Final { .. }));
    if length.is_none() && !deferred && !is_final {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            Cause::BadTusHeader,
            "a creation needs Upload-Length, or Upload-Defer-Length: 1",
        ));
    }
    if let Some(length) = length {
        check_length(length, max_bytes)?;
    }
    let metadata = metadata(headers)?;
    let (intake, empty_body) = body_headers(headers)?;
    Ok(Creation {
        length,
        metadata,
        concat,
        intake,
        empty_body,
    })
}

/// `Upsim-Client-Token`, if given (checked as the chunk API's
/// `client_token` is).
fn client_token(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get(crate::tus::header::UPSIM_CLIENT_TOKEN)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

impl Backend {
    /// `POST /files`.
    pub(super) async fn tus_create(&self, req: Request<Incoming>) -> Result<Reply, Refusal> {
        // 1. Who, and what the headers ask.
        let user = self.user(&req)?;
        let max_bytes = self.inner.config.profile.file_size_bytes_max;
        let creation = creation(req.headers(), max_bytes)?;
        // 2. A final upload: made of partials, no bytes of its own.
        if let Some(concat @ Concat::Final { .. }) = creation.concat {
            if creation.length.is_some() || !creation.empty_body {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    Cause::BadTusHeader,
                    "a final upload takes its length and bytes from its partial uploads: no Upload-Length, no body",
                ));
            }
            let upload = self.create_final(&user, concat, creation.metadata).await?;
            return Ok(self.finished_creation(&upload, Ok(())).await);
        }
        // 3. A deferred length: noted, not admitted (a partial needs one).
        let Some(length) = creation.length else {
            if creation.concat.is_some() {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    Cause::BadTusHeader,
                    "a partial upload needs its Upload-Length",
                ));
            }
            return self.create_deferred(user, creation);
        };
        // 4. Admission, a drive session (none for a partial), the table:
        //    the chunk API's steps.
        let (file_name, mime_type) = drive_names(creation.metadata.as_ref());
        let mut create = CreateUpload {
            file_name,
            file_size_bytes: length,
            mime_type: Some(mime_type),
            client_token: None,
        };
        let upload = if creation.concat == Some(Concat::Partial) {
            self.create_partial(&user, create, creation.metadata)
                .await?
        } else {
            // upsim's extension: a retried creation with the same token
            // gets the same upload (tus itself has no idempotent creation:
            // a lost 201 would leave an upload nobody resumes).
            create.client_token = client_token(req.headers());
            let claim = match self.claim_token(&user, &create)? {
                Ok(id) => {
                    let upload = self.find_tus(id.as_str(), &user)?;
                    let offset = upload.tus_offset(&upload.lock());
                    return Ok(self.created(&upload, offset));
                }
                Err(claim) => claim,
            };
            let tus = TusUpload::new(creation.metadata, None);
            self.start_upload(&user, create, claim, Some((tus, None)))
                .await?
        };
        // 5. The first bytes, if the creation brings some.
        if creation.empty_body {
            return Ok(self.created(&upload, 0));
        }
        Ok(self
            .create_with_upload(&upload, req.into_body(), creation.intake)
            .await)
    }

    /// 201 with the upload's `Location`, offset and expiry.
    fn created(&self, upload: &Upload, offset: u64) -> Reply {
        let mut reply = self.offset_reply(upload, offset);
        *reply.status_mut() = StatusCode::CREATED;
        set(
            &mut reply,
            http::header::LOCATION.as_str(),
            format!("{FILES_PATH}{}", upload.id),
        );
        reply
    }

    /// creation-with-upload: the body, as a PATCH at offset 0 would bring
    /// it. A body that fails still leaves the upload created: the refusal
    /// carries its `Location` and offset, as tusd's does.
    async fn create_with_upload(
        &self,
        upload: &Upload,
        body: Incoming,
        intake: BodyIntake,
    ) -> Reply {
        let taken = async {
            // Nobody else knows the id yet: the lock is free.
            let mut guard = self.patch_lock(upload).await?;
            self.take_body(upload, body, intake, &mut guard).await?;
            Ok::<_, Refusal>(())
        }
        .await;
        self.finished_creation(upload, taken).await
    }

    /// The reply to a creation whose bytes are in (`taken`: a creation
    /// with upload's, or a final's): once the upload is whole, the drive's
    /// word on it (`await_end_if_whole`); 201 with `Location` and the
    /// offset, or the refusal with both.
    async fn finished_creation(&self, upload: &Upload, taken: Result<(), Refusal>) -> Reply {
        let taken = match taken {
            Ok(()) => self.await_end_if_whole(upload).await,
            Err(r) => Err(r),
        };
        let offset = upload.tus_offset(&upload.lock());
        match taken {
            Ok(()) => self.created(upload, offset),
            Err(r) => {
                let mut reply = refused(r);
                set(&mut reply, header::UPLOAD_OFFSET, offset.to_string());
                set(
                    &mut reply,
                    http::header::LOCATION.as_str(),
                    format!("{FILES_PATH}{}", upload.id),
                );
                reply
            }
        }
    }

    /// A creation with `Upload-Defer-Length: 1`: an id and an entry.
    fn create_deferred(&self, user: UserId, creation: Creation) -> Result<Reply, Refusal> {
        if !creation.empty_body {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                Cause::LengthDeferred,
                "upsim admits an upload by its size: bytes may come with the PATCH that declares Upload-Length",
            ));
        }
        if self.inner.draining.load(Ordering::Acquire) {
            return Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                Cause::ShuttingDown,
                "the backend is shutting down: create the upload after it restarts",
            )
            .retry_after(Duration::from_secs(10)));
        }
        let id = self.new_id()?;
        let expiry = self.inner.config.upload_idle_timeout;
        let entry = Deferred::new(user, creation.metadata, self.now());
        self.inner.tus_deferred.insert(id.clone(), entry, expiry)?;
        let mut reply = empty(StatusCode::CREATED);
        set(
            &mut reply,
            http::header::LOCATION.as_str(),
            format!("{FILES_PATH}{id}"),
        );
        let at = self.inner.env.clock.utc_now() + expiry;
        set(
            &mut reply,
            header::UPLOAD_EXPIRES,
            crate::tus::http_date(at),
        );
        Ok(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drive_names_come_from_valid_metadata_only() {
        let m = Metadata::parse(b"filename cmVwb3J0LnBkZg==,filetype YXBwbGljYXRpb24vcGRm")
            .expect("valid");
        assert_eq!(
            drive_names(Some(&m)),
            ("report.pdf".into(), "application/pdf".into())
        );
        // "../x" has a '/', "text plain" a space: both fall back.
        let bad = Metadata::parse(b"filename Li4veA==,filetype dGV4dCBwbGFpbg==").expect("valid");
        assert_eq!(
            drive_names(Some(&bad)),
            (DEFAULT_FILE_NAME.into(), DEFAULT_MIME_TYPE.into())
        );
        assert_eq!(
            drive_names(None),
            (DEFAULT_FILE_NAME.into(), DEFAULT_MIME_TYPE.into())
        );
    }
}
