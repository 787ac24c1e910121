//! Why a drive request failed ([`DriveError`]), and the classification of a
//! reply's status into one.

use super::protocol::{parse_error_body, QUOTE_CHARS_MAX, RATE_LIMIT_REASON};
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
    /// A 429, or a 403 whose message names `rateLimitExceeded`: too many
    /// requests. Retry with backoff.
    #[error("drive rate limited: status {status}: {message}")]
    RateLimited {
        /// The status (429).
        status: u16,
        /// The error body's message.
        message: String,
    },
    /// A 404: the session is gone (expired or unknown). Start a new one.
    #[error("drive session gone: status 404: {message}")]
    SessionGone {
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
    /// TLS refused the drive, or the drive refused us: its certificate is
    /// not signed by a trusted CA, not valid for the host name, or expired;
    /// or it does not speak TLS. Not retryable: waiting will not change a
    /// certificate.
    #[error("TLS with the drive at {addr} failed: {reason}")]
    Tls {
        /// The address dialled.
        addr: String,
        /// rustls's reason.
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
    /// failures (not a refused TLS handshake). A classification for the caller's retry policy; the client
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
/// 200/201 nor 308.
pub(super) fn error_for(status: u16, body: &Bytes) -> DriveError {
    let message = parse_error_body(body).map_or_else(
        || {
            String::from_utf8_lossy(body)
                .chars()
                .take(QUOTE_CHARS_MAX)
                .collect()
        },
        |(_, message)| message,
    );
    match status {
        404 => DriveError::SessionGone { message },
        429 => DriveError::RateLimited { status, message },
        403 if message.contains(RATE_LIMIT_REASON) => DriveError::RateLimited { status, message },
        500..=599 => DriveError::Unavailable { status, message },
        400..=499 => DriveError::Rejected { status, message },
        _ => DriveError::Protocol {
            reason: format!("unexpected status {status}: {message}"),
        },
    }
}
