//! Refusals: every way the backend says no, on its way to the wire as a
//! 4xx/5xx with an [`ErrorBody`], and the mapping of other modules' errors
//! ([`AdmissionError`], [`DriveError`]) onto them.

use crate::admission::AdmissionError;
use crate::chunk_api::{ErrorBody, ErrorDetail};
use crate::drive::DriveError;
use crate::wire::{json, Reply};
use http::{HeaderValue, StatusCode};
use std::time::Duration;

/// A refusal on its way to the wire.
pub(super) struct Refusal {
    pub(super) status: StatusCode,
    pub(super) cause: &'static str,
    pub(super) message: String,
    pub(super) details: serde_json::Value,
    pub(super) retry_after: Option<Duration>,
    /// Add `WWW-Authenticate: Bearer` (a 401 in token mode).
    pub(super) challenge: bool,
}

impl Refusal {
    pub(super) fn new(status: StatusCode, cause: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            cause,
            message: message.into(),
            details: serde_json::Value::Null,
            retry_after: None,
            challenge: false,
        }
    }

    pub(super) fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    pub(super) fn detail(&self) -> ErrorDetail {
        ErrorDetail {
            status: self.status.as_u16(),
            cause: self.cause.to_owned(),
            message: self.message.clone(),
            details: self.details.clone(),
        }
    }

    pub(super) fn reply(self) -> Reply {
        let mut reply = json(
            self.status,
            &ErrorBody {
                error: self.detail(),
            },
        );
        if let Some(after) = self.retry_after {
            let secs = after.as_secs().max(1).to_string();
            if let Ok(value) = HeaderValue::from_str(&secs) {
                reply.headers_mut().insert(http::header::RETRY_AFTER, value);
            }
        }
        if self.challenge {
            reply.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"upsim\""),
            );
        }
        reply
    }
}

/// The wire form of an admission refusal.
pub(super) fn admission_refusal(e: &AdmissionError) -> Refusal {
    let (status, retry_after) = match e {
        AdmissionError::EmptyFile => (StatusCode::BAD_REQUEST, None),
        AdmissionError::FileTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, None),
        AdmissionError::UnknownUser { .. } => (StatusCode::FORBIDDEN, None),
        AdmissionError::QuotaExceeded { .. } => (StatusCode::TOO_MANY_REQUESTS, None),
        AdmissionError::MemoryPressure { .. } | AdmissionError::MemoryProbe { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            Some(Duration::from_secs(5)),
        ),
        AdmissionError::SlotsBusy { .. } | AdmissionError::QueueFull { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            Some(Duration::from_secs(1)),
        ),
        AdmissionError::ShuttingDown => (
            StatusCode::SERVICE_UNAVAILABLE,
            Some(Duration::from_secs(10)),
        ),
        // Only the bug zoo's masked-error mutant returns it.
        AdmissionError::Unexplained => (StatusCode::INTERNAL_SERVER_ERROR, None),
    };
    let mut r = Refusal::new(status, e.cause(), e.to_string());
    r.details = serde_json::to_value(e).unwrap_or_default();
    r.retry_after = retry_after;
    r
}

pub(super) fn drive_refusal(e: &DriveError) -> Refusal {
    Refusal::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "drive_unavailable",
        format!("drive unavailable: {e}"),
    )
    .retry_after(Duration::from_secs(5))
}
