//! How the emulator answers: [`Refusal`] (an error status with its reason
//! and numbers, as Drive's JSON error body), the `308 Resume Incomplete` and
//! `200` file-resource replies, and reading the framing headers a reply
//! depends on.
//!
//! Invariant: every 4xx/5xx goes through [`Refusal::into_reply`], so each
//! has a JSON error body naming its numbers.

use super::protocol::{
    format_error_body, format_file_resource, format_range, parse_decimal_u64, DriveReason,
};
use super::protocol::{FieldSelection, FileResource};
use crate::buggify::{self, Site};
use bytes::Bytes;
use http::header::{HeaderName, CONNECTION, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use std::fmt::Display;

/// Every reply the emulator sends.
pub(super) type Reply = Response<Full<Bytes>>;

/// `308 Resume Incomplete`: Google's meaning of 308 in this protocol.
const RESUME_INCOMPLETE: StatusCode = StatusCode::PERMANENT_REDIRECT;
const RESUME_INCOMPLETE_REASON: &[u8] = b"Resume Incomplete";

const JSON_CONTENT_TYPE: &str = "application/json; charset=UTF-8";

/// A refusal: an error status and the reason, with its numbers.
#[derive(Debug)]
pub(super) struct Refusal {
    status: u16,
    /// Drive's reason: the status's default unless narrowed
    /// ([`Refusal::because`]).
    reason: DriveReason,
    message: String,
    /// Close the connection after answering (the body was not read).
    close: bool,
}

impl Refusal {
    pub(super) fn new(status: u16, message: impl Display) -> Self {
        Self {
            status,
            reason: DriveReason::default_for(status),
            message: message.to_string(),
            close: false,
        }
    }

    /// The same refusal with Drive's narrower `reason`.
    pub(super) fn because(mut self, reason: DriveReason) -> Self {
        self.reason = reason;
        self
    }

    /// The same refusal, closing the connection after it: for requests
    /// whose body is not read, so the connection cannot carry another.
    pub(super) fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    pub(super) fn into_reply(self) -> Reply {
        tracing::debug!(status = self.status, reason = %self.reason, message = %self.message, "drive: refused");
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut reply = Response::new(Full::new(Bytes::from(format_error_body(
            status.as_u16(),
            &self.reason,
            &self.message,
        ))));
        *reply.status_mut() = status;
        let headers = reply.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(JSON_CONTENT_TYPE));
        if self.close {
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        reply
    }
}

/// `308 Resume Incomplete` with `Range: bytes=0-N` (absent when nothing is held).
pub(super) fn incomplete(held_bytes: u64) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::new()));
    *reply.status_mut() = RESUME_INCOMPLETE;
    reply
        .extensions_mut()
        .insert(hyper::ext::ReasonPhrase::from_static(
            RESUME_INCOMPLETE_REASON,
        ));
    if let Some(range) = format_range(held_bytes) {
        if let Ok(value) = HeaderValue::from_str(&range) {
            reply.headers_mut().insert(http::header::RANGE, value);
        }
    }
    reply
}

/// `200` with the finished file's resource: the fields `selection` asks for.
pub(super) fn complete(resource: &FileResource, selection: FieldSelection) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(format_file_resource(
        resource, selection,
    ))));
    reply
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(JSON_CONTENT_TYPE));
    reply
}

/// Simulation only: the piece is committed, but its reply is lost.
pub(super) fn lose_reply_sometimes(mut reply: Reply) -> Reply {
    if buggify::fire(Site::DriveReplyLost) {
        reply.extensions_mut().insert(crate::wire::DropReply);
    }
    reply
}

/// Header `name` as text, if present; 400 if it is not visible ASCII.
pub(super) fn header_text<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'a str>, Refusal> {
    headers
        .get(name)
        .map(|value| {
            value
                .to_str()
                .map_err(|_| Refusal::new(400, format!("header {name} is not visible ASCII")))
        })
        .transpose()
}

/// Header `name` as a decimal `u64`, if present; 400 if it is not one.
pub(super) fn header_u64(
    headers: &HeaderMap,
    name: &HeaderName,
    what: &'static str,
) -> Result<Option<u64>, Refusal> {
    header_text(headers, name)?
        .map(|text| parse_decimal_u64(what, text).map_err(|e| Refusal::new(400, e)))
        .transpose()
}
