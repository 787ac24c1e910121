//! Why a drive request failed ([`DriveError`]), and the classification of a
//! reply's status into one.

use super::protocol::{parse_error_body, DriveReason, QUOTE_CHARS_MAX};
use bytes::Bytes;

/// Why a drive request did not give an answer the protocol allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriveError {
    /// A 5xx: the drive is unavailable for now. Retry with backoff.
    #[error("drive unavailable: status {status}: {message}")]
    Unavailable {
        /// The status.
        status: u16,
        /// The error body's message.
        message: String,
    },
    /// A 429, or a 403 whose reason is `rateLimitExceeded` or
    /// `userRateLimitExceeded`: too many requests. Retry with backoff.
    #[error("drive rate limited: status {status}: {message}")]
    RateLimited {
        /// The status (429 or 403).
        status: u16,
        /// The error body's message.
        message: String,
    },
    /// A 404 or 410: the session is gone (expired or unknown). Start a new
    /// one.
    #[error("drive session gone: status {status}: {message}")]
    SessionGone {
        /// The status (404 or 410).
        status: u16,
        /// The error body's message.
        message: String,
    },
    /// A 400, a 401, or a 403 that is not a rate limit (e.g.
    /// `storageQuotaExceeded`): the drive will never accept this upload as
    /// it stands. Not retryable; the upload ends with the reason.
    #[error("drive refused the upload: status {status} {reason}: {message}")]
    Refused {
        /// The status.
        status: u16,
        /// Drive's reason (`error.errors[0].reason`, or the status's default).
        reason: DriveReason,
        /// The error body's message.
        message: String,
    },
    /// Any other 4xx: the request was refused. Restart the upload.
    #[error("drive refused the request: status {status}: {message}")]
    Rejected {
        /// The status.
        status: u16,
        /// The error body's message.
        message: String,
    },
    /// An answer the protocol does not allow (a 308 with a bad `Range`, a
    /// 200 without a file resource, an unexpected status).
    #[error("drive protocol violation: {reason}")]
    Protocol {
        /// What was wrong.
        reason: String,
    },
    /// The connection could not be opened.
    #[error("cannot connect to the drive at {addr}: {reason}")]
    Connect {
        /// The address dialled.
        addr: String,
        /// The OS or hyper error.
        reason: String,
    },
    /// The connection broke during the exchange; the server may or may not
    /// have acted on the request (ask with a status query).
    #[error("drive connection failed: {reason}")]
    Io {
        /// The hyper error.
        reason: String,
    },
    /// The caller asked for something the protocol cannot express.
    #[error("invalid drive request: {reason}")]
    InvalidRequest {
        /// What was wrong, with its numbers.
        reason: String,
    },
}

impl DriveError {
    /// Whether the same request may succeed later: 5xx, 429 and connection
    /// failures. A classification for the caller's retry policy; the client
    /// itself never retries.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Unavailable { .. }
                | Self::RateLimited { .. }
                | Self::Connect { .. }
                | Self::Io { .. }
        )
    }
}

/// The typed error for a reply of `status` with `body` that is neither
/// 200/201 nor 308, classified by the status and Drive's reason (a body
/// without one takes the status's default, [`DriveReason::default_for`]).
pub(super) fn error_for(status: u16, body: &Bytes) -> DriveError {
    let parsed = parse_error_body(body);
    let reason = parsed
        .as_ref()
        .and_then(|b| b.reason.clone())
        .unwrap_or_else(|| DriveReason::default_for(status));
    let message = parsed.map_or_else(
        || {
            String::from_utf8_lossy(body)
                .chars()
                .take(QUOTE_CHARS_MAX)
                .collect()
        },
        |b| b.message,
    );
    match DriveErrorClass::of(status, &reason) {
        DriveErrorClass::SessionGone => DriveError::SessionGone { status, message },
        DriveErrorClass::RateLimited => DriveError::RateLimited { status, message },
        DriveErrorClass::Refused => DriveError::Refused {
            status,
            reason,
            message,
        },
        DriveErrorClass::Unavailable => DriveError::Unavailable { status, message },
        DriveErrorClass::Rejected => DriveError::Rejected { status, message },
        DriveErrorClass::Unexpected => DriveError::Protocol {
            reason: format!("unexpected status {status}: {message}"),
        },
    }
}

/// What an error status and Drive's reason mean for the caller (Drive API
/// v3, "Resolve errors"): one table, read by [`error_for`] and by whoever
/// must know in advance what a drive fault will do (the swarm's allowed
/// endings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriveErrorClass {
    /// 429, or 403 `userRateLimitExceeded`/`rateLimitExceeded`: back off
    /// exponentially with jitter, then ask what the drive holds.
    RateLimited,
    /// 5xx: back off, then resume from a status query.
    Unavailable,
    /// 404 or 410: the session is gone; start a new one.
    SessionGone,
    /// 400, 401, or any other 403 (`storageQuotaExceeded`…): never; the
    /// upload ends with the reason.
    Refused,
    /// Any other 4xx: restart the upload in a new session.
    Rejected,
    /// Not an error status at all.
    Unexpected,
}

impl DriveErrorClass {
    /// The class of a reply of `status` whose body names `reason`.
    pub fn of(status: u16, reason: &DriveReason) -> Self {
        match status {
            404 | 410 => Self::SessionGone,
            429 => Self::RateLimited,
            403 if reason.is_rate_limit() => Self::RateLimited,
            400 | 401 | 403 => Self::Refused,
            500..=599 => Self::Unavailable,
            400..=499 => Self::Rejected,
            _ => Self::Unexpected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drive::protocol::format_error_body;

    fn classify(status: u16, reason: Option<DriveReason>) -> DriveError {
        let body = reason.map_or_else(String::new, |r| format_error_body(status, &r, "m"));
        error_for(status, &Bytes::from(body))
    }

    /// Drive's documented error semantics ("Resolve errors"), row by row:
    /// what each status and reason means for the caller.
    #[test]
    fn each_drive_error_is_classified_by_status_and_reason() {
        use DriveReason as R;
        let retryable = |e: &DriveError| e.is_retryable();
        for (status, reason, want) in [
            (403, Some(R::UserRateLimitExceeded), "rate"),
            (403, Some(R::RateLimitExceeded), "rate"),
            (429, None, "rate"),
            (500, None, "unavailable"),
            (503, Some(R::BackendError), "unavailable"),
            (404, None, "gone"),
            (410, None, "gone"),
            (403, Some(R::StorageQuotaExceeded), "refused"),
            (403, None, "refused"),
            (400, Some(R::BadRequest), "refused"),
            (401, Some(R::AuthError), "refused"),
            (409, None, "rejected"),
        ] {
            let got = classify(status, reason.clone());
            let kind = match &got {
                DriveError::RateLimited { .. } => "rate",
                DriveError::Unavailable { .. } => "unavailable",
                DriveError::SessionGone { .. } => "gone",
                DriveError::Refused { .. } => "refused",
                DriveError::Rejected { .. } => "rejected",
                _ => "other",
            };
            assert_eq!(kind, want, "{status} {reason:?}: {got}");
            assert_eq!(
                retryable(&got),
                matches!(want, "rate" | "unavailable"),
                "{status} {reason:?}"
            );
        }
    }

    #[test]
    fn a_refusal_carries_drives_reason_and_message() {
        let got = classify(403, Some(DriveReason::StorageQuotaExceeded));
        assert_eq!(
            got.to_string(),
            "drive refused the upload: status 403 storageQuotaExceeded: m"
        );
        let bare = error_for(400, &Bytes::from_static(b"<html>oops</html>"));
        assert_eq!(
            bare,
            DriveError::Refused {
                status: 400,
                reason: DriveReason::BadRequest,
                message: "<html>oops</html>".into()
            }
        );
    }
}
