//! tus's replies, and its parse errors as refusals.
//!
//! Every reply of the endpoint carries `Tus-Resumable: 1.0.0` and
//! `Cache-Control: no-store` (HEAD must not be cached; nothing else here
//! is worth caching). A refusal is the backend's JSON error body (status,
//! stable `cause`, message with its numbers, `Retry-After` where waiting
//! helps) with the cause repeated in `Upsim-Cause`, since a reply to HEAD
//! has no body; a 412 names the versions served in `Tus-Version`.

use super::super::refusals::Refusal;
use crate::chunk_api::Cause;
use crate::tus::{
    header, ChecksumError, ConcatError, MetadataError, TusHeaderError, TUS_CHECKSUM_ALGORITHMS,
    TUS_EXTENSIONS, TUS_VERSION,
};
use crate::wire::Reply;
use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use http_body_util::Full;

/// The status of a checksum mismatch (tus's own, not in RFC 9110).
pub(super) const CHECKSUM_MISMATCH: u16 = 460;

/// A reply without a body.
pub(super) fn empty(status: StatusCode) -> Reply {
    let mut reply = Reply::new(Full::new(Bytes::new()));
    *reply.status_mut() = status;
    reply
}

/// Sets header `name` to `value`. Values here are numbers, dates, ids and
/// validated printable ASCII, which are always valid header values; one
/// that is not is left out (and logged) rather than failing the reply.
pub(super) fn set(reply: &mut Reply, name: &'static str, value: impl Into<String>) {
    match HeaderValue::try_from(value.into()) {
        Ok(value) => {
            reply.headers_mut().insert(name, value);
        }
        Err(e) => tracing::error!(header = name, error = %e, "a tus reply header left out"),
    }
}

/// The reply to a refusal: the JSON error body, with the cause in
/// `Upsim-Cause` and, for a 412, the versions served.
pub(super) fn refused(refusal: Refusal) -> Reply {
    let cause = refusal.cause;
    let status = refusal.status;
    let mut reply = refusal.reply();
    set(&mut reply, header::UPSIM_CAUSE, cause.as_str());
    if status == StatusCode::PRECONDITION_FAILED {
        set(&mut reply, header::TUS_VERSION, TUS_VERSION);
    }
    reply
}

/// Any outcome of the endpoint, with the headers every reply carries.
pub(super) fn finish(result: Result<Reply, Refusal>) -> Reply {
    let mut reply = result.unwrap_or_else(refused);
    set(&mut reply, header::TUS_RESUMABLE, TUS_VERSION);
    set(&mut reply, "cache-control", "no-store");
    reply
}

/// `OPTIONS`: what the server speaks and takes.
pub(super) fn options(max_size_bytes: u64) -> Reply {
    let mut reply = empty(StatusCode::NO_CONTENT);
    set(&mut reply, header::TUS_VERSION, TUS_VERSION);
    set(&mut reply, header::TUS_EXTENSION, TUS_EXTENSIONS);
    set(&mut reply, header::TUS_MAX_SIZE, max_size_bytes.to_string());
    set(
        &mut reply,
        header::TUS_CHECKSUM_ALGORITHM,
        TUS_CHECKSUM_ALGORITHMS,
    );
    reply
}

/// A malformed or unsupported tus header: 412 for the version, else 400.
pub(super) fn header_refusal(e: &TusHeaderError) -> Refusal {
    match e {
        TusHeaderError::UnsupportedVersion { .. } => Refusal::new(
            StatusCode::PRECONDITION_FAILED,
            Cause::TusVersionUnsupported,
            e.to_string(),
        ),
        _ => Refusal::new(StatusCode::BAD_REQUEST, Cause::BadTusHeader, e.to_string()),
    }
}

/// A refused `Upload-Metadata`: 413 over its limit, else 400.
pub(super) fn metadata_refusal(e: &MetadataError) -> Refusal {
    let mut r = match e {
        MetadataError::TooLarge { .. } | MetadataError::TooManyPairs { .. } => Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            Cause::MetadataTooLarge,
            e.to_string(),
        ),
        _ => Refusal::new(StatusCode::BAD_REQUEST, Cause::BadMetadata, e.to_string()),
    };
    if let MetadataError::TooLarge { bytes, bytes_max } = e {
        r.details = serde_json::json!({ "metadata_bytes": bytes, "metadata_bytes_max": bytes_max });
    }
    r
}

/// A refused `Upload-Checksum` (400: nothing of the body is read).
pub(super) fn checksum_refusal(e: &ChecksumError) -> Refusal {
    Refusal::new(
        StatusCode::BAD_REQUEST,
        Cause::ChecksumUnsupported,
        e.to_string(),
    )
}

/// A refused `Upload-Concat` (400).
pub(super) fn concat_refusal(e: &ConcatError) -> Refusal {
    Refusal::new(StatusCode::BAD_REQUEST, Cause::BadTusHeader, e.to_string())
}

/// 415: a body that continues an upload must say it is one.
pub(super) fn media_type_refusal() -> Refusal {
    Refusal::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        Cause::UnsupportedMediaType,
        format!(
            "a body that continues an upload must be Content-Type: {}",
            crate::tus::OFFSET_OCTET_STREAM
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_carries_its_cause_in_a_header_and_412_names_the_version() {
        let r = header_refusal(&TusHeaderError::UnsupportedVersion { given: None });
        let reply = finish(Err(r));
        assert_eq!(reply.status(), StatusCode::PRECONDITION_FAILED);
        let h = reply.headers();
        assert_eq!(h[header::UPSIM_CAUSE], "tus_version_unsupported");
        assert_eq!(h[header::TUS_VERSION], TUS_VERSION);
        assert_eq!(h[header::TUS_RESUMABLE], TUS_VERSION);
        assert_eq!(h["cache-control"], "no-store");
    }

    #[test]
    fn options_names_everything_served() {
        let reply = finish(Ok(options(1 << 30)));
        let h = reply.headers();
        assert_eq!(reply.status(), StatusCode::NO_CONTENT);
        assert_eq!(h[header::TUS_MAX_SIZE], "1073741824");
        assert_eq!(h[header::TUS_CHECKSUM_ALGORITHM], "sha1,md5,crc32");
        assert!(h[header::TUS_EXTENSION]
            .to_str()
            .is_ok_and(|e| e.split(',').any(|x| x == "creation-defer-length")));
    }
}
