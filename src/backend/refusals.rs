//! Refusals: every way the backend says no, on its way to the wire as a
//! 4xx/5xx with an [`ErrorBody`], and the mapping of other modules' errors
//! ([`AdmissionError`], [`DriveError`]) onto them.

use crate::admission::{AdmissionError, AdmitFailure};
use crate::chunk_api::{Cause, ErrorBody, ErrorDetail};
use crate::drive::DriveError;
use crate::wire::{json, Reply};
use http::{HeaderValue, StatusCode};
use std::time::Duration;

/// A refusal on its way to the wire.
#[derive(Debug)]
pub(super) struct Refusal {
    pub(super) status: StatusCode,
    pub(super) cause: Cause,
    pub(super) message: String,
    pub(super) details: serde_json::Value,
    pub(super) retry_after: Option<Duration>,
    /// Add `WWW-Authenticate: Bearer` (a 401 in token mode).
    pub(super) challenge: bool,
}

impl Refusal {
    pub(super) fn new(status: StatusCode, cause: Cause, message: impl Into<String>) -> Self {
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
            cause: self.cause,
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

/// The chunk API's cause for an admission refusal: the same name as
/// [`AdmissionError::cause`] (a test checks every variant). The match is
/// exhaustive, so a new admission variant fails to compile here until it
/// has a cause.
pub(super) fn admission_cause(e: &AdmissionError) -> Cause {
    match e {
        AdmissionError::EmptyFile => Cause::EmptyFile,
        AdmissionError::FileTooLarge { .. } => Cause::FileTooLarge,
        AdmissionError::UnknownUser { .. } => Cause::UnknownUser,
        AdmissionError::QuotaExceeded { .. } => Cause::QuotaExceeded,
        AdmissionError::MemoryPressure { .. } => Cause::MemoryPressure,
        AdmissionError::MemoryProbe { .. } => Cause::MemoryProbe,
        AdmissionError::SlotsBusy { .. } => Cause::SlotsBusy,
        AdmissionError::QueueFull { .. } => Cause::QueueFull,
        AdmissionError::ShuttingDown => Cause::ShuttingDown,
        AdmissionError::SlotStoreUnavailable { .. } => Cause::SlotStoreUnavailable,
    }
}

/// The chunk API's cause for a failed admission: a typed refusal's, or
/// `unexplained` for a bare one (only the bug zoo's masked-error mutant
/// fails without a cause; the oracle's `typed_cause` check flags it).
pub(super) fn admit_failure_cause(f: &AdmitFailure) -> Cause {
    match f {
        AdmitFailure::Refused(e) => admission_cause(e),
        AdmitFailure::Unexplained => Cause::Unexplained,
    }
}

/// The wire form of a failed admission.
pub(super) fn admit_refusal(f: &AdmitFailure) -> Refusal {
    crate::coverage::hit(super::probes::refused(admit_failure_cause(f)));
    match f {
        AdmitFailure::Refused(e) => admission_refusal(e),
        AdmitFailure::Unexplained => {
            let mut r = Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                Cause::Unexplained,
                f.to_string(),
            );
            r.details = serde_json::json!({ "cause": f.cause() });
            r
        }
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
        AdmissionError::SlotsBusy { .. }
        | AdmissionError::QueueFull { .. }
        | AdmissionError::SlotStoreUnavailable { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            Some(Duration::from_secs(1)),
        ),
        AdmissionError::ShuttingDown => (
            StatusCode::SERVICE_UNAVAILABLE,
            Some(Duration::from_secs(10)),
        ),
    };
    let mut r = Refusal::new(status, admission_cause(e), e.to_string());
    r.details = serde_json::to_value(e).unwrap_or_default();
    r.retry_after = retry_after;
    r
}

/// The refusal of a create whose drive session could not start: the drive
/// refused for good ([`drive_refused`]), or is unavailable for now (503,
/// retry).
pub(super) fn drive_refusal(e: &DriveError) -> Refusal {
    if let Some(refused) = drive_refused(e) {
        return refused;
    }
    Refusal::new(
        StatusCode::SERVICE_UNAVAILABLE,
        Cause::DriveUnavailable,
        format!("drive unavailable: {e}"),
    )
    .retry_after(Duration::from_secs(5))
}

/// The ending of an upload the drive refused for good (`DriveError::Refused`:
/// a full account, a bad request, no permission): 502 `drive_refused`, with
/// Drive's status and reason in `details` so the client can say which.
/// `None` for any other drive error.
pub(super) fn drive_refused(e: &DriveError) -> Option<Refusal> {
    let DriveError::Refused { status, reason, .. } = e else {
        return None;
    };
    let mut r = Refusal::new(StatusCode::BAD_GATEWAY, Cause::DriveRefused, e.to_string());
    r.details = serde_json::json!({ "drive_status": status, "drive_reason": reason.as_str() });
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This is a regression test that ensures the chunk API names every
    /// admission refusal exactly as admission does (metrics labels, traces
    /// and snapshots carry these names).
    #[test]
    fn admission_causes_keep_their_names() {
        let every = AdmissionError::one_of_each();
        for e in &every {
            assert_eq!(admission_cause(e).as_str(), e.cause(), "{e:?}");
        }
        for name in AdmissionError::TYPED_CAUSES {
            assert_ne!(Cause::parse(name), Cause::Unknown, "{name} has no Cause");
        }
    }
}
