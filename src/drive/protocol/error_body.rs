//! Drive's JSON error body and the `reason` a client decides by.
//!
//! Drive answers every 4xx/5xx with
//! `{"error":{"errors":[{"domain":…,"reason":…,"message":…}],"code":N,"message":…}}`
//! (Drive API v3, "Resolve errors"). The status alone does not say what to
//! do: a `403` is "slow down" when its reason is `userRateLimitExceeded` or
//! `rateLimitExceeded`, and "never, whatever you do" when it is
//! `storageQuotaExceeded`. So the emulator names a [`DriveReason`] in every
//! error body, and the client classifies by status *and* reason.
//!
//! Invariants: formatting and parsing round-trip; a reason this side does not
//! know survives as [`DriveReason::Other`] with Drive's spelling, quoted to
//! at most [`QUOTE_CHARS_MAX`] characters.

use super::QUOTE_CHARS_MAX;
use serde::{Deserialize, Serialize};

/// The `reason` of a Drive error (`error.errors[0].reason`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", from = "String")]
pub enum DriveReason {
    /// `badRequest` (400): the request can never succeed as sent.
    BadRequest,
    /// `authError` (401): the credentials are missing, wrong or expired.
    AuthError,
    /// `forbidden` (403): not allowed, for a reason Drive does not narrow.
    Forbidden,
    /// `rateLimitExceeded` (403 or 429): the project sends too fast.
    RateLimitExceeded,
    /// `userRateLimitExceeded` (403): this user sends too fast.
    UserRateLimitExceeded,
    /// `storageQuotaExceeded` (403): the account's storage is full.
    StorageQuotaExceeded,
    /// `notFound` (404, and the emulator's 410): no such session or file.
    NotFound,
    /// `backendError` (5xx): Drive failed; the request may succeed later.
    BackendError,
    /// A reason this side does not know, as Drive spelled it (quoted).
    Other(String),
}

/// The known reasons and their wire spelling, in one table.
const KNOWN: [(DriveReason, &str); 8] = [
    (DriveReason::BadRequest, "badRequest"),
    (DriveReason::AuthError, "authError"),
    (DriveReason::Forbidden, "forbidden"),
    (DriveReason::RateLimitExceeded, "rateLimitExceeded"),
    (DriveReason::UserRateLimitExceeded, "userRateLimitExceeded"),
    (DriveReason::StorageQuotaExceeded, "storageQuotaExceeded"),
    (DriveReason::NotFound, "notFound"),
    (DriveReason::BackendError, "backendError"),
];

impl DriveReason {
    /// Drive's spelling.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Other(text) => text,
            known => KNOWN
                .iter()
                .find(|(reason, _)| reason == known)
                .map_or("", |(_, name)| name),
        }
    }

    /// The reason Drive gives for `status` when nothing narrows it.
    pub fn default_for(status: u16) -> Self {
        match status {
            401 => Self::AuthError,
            403 => Self::Forbidden,
            404 | 410 => Self::NotFound,
            429 => Self::RateLimitExceeded,
            500..=599 => Self::BackendError,
            _ => Self::BadRequest,
        }
    }

    /// Whether it means "slow down and try again" (with a 403 or a 429).
    pub fn is_rate_limit(&self) -> bool {
        matches!(self, Self::RateLimitExceeded | Self::UserRateLimitExceeded)
    }

    /// Drive's `domain` for the reason.
    fn domain(&self) -> &'static str {
        match self {
            Self::RateLimitExceeded | Self::UserRateLimitExceeded | Self::StorageQuotaExceeded => {
                "usageLimits"
            }
            _ => "global",
        }
    }
}

impl From<String> for DriveReason {
    fn from(text: String) -> Self {
        KNOWN.iter().find(|(_, name)| *name == text).map_or_else(
            || Self::Other(text.chars().take(QUOTE_CHARS_MAX).collect()),
            |(reason, _)| reason.clone(),
        )
    }
}

impl From<DriveReason> for String {
    fn from(reason: DriveReason) -> Self {
        reason.as_str().to_owned()
    }
}

impl std::fmt::Display for DriveReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed error body: the status Drive put in it, its message and the
/// first item's reason (absent when the body lists none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriveErrorBody {
    /// `error.code`.
    pub code: u16,
    /// `error.message`.
    pub message: String,
    /// `error.errors[0].reason`.
    pub reason: Option<DriveReason>,
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    error: Detail,
}

#[derive(Serialize, Deserialize)]
struct Detail {
    #[serde(default)]
    errors: Vec<Item>,
    code: u16,
    message: String,
}

#[derive(Serialize, Deserialize)]
struct Item {
    domain: String,
    reason: DriveReason,
    message: String,
}

/// The JSON body of every 4xx/5xx, in Drive's shape, with one item.
pub fn format_error_body(code: u16, reason: &DriveReason, message: &str) -> String {
    let envelope = Envelope {
        error: Detail {
            errors: vec![Item {
                domain: reason.domain().to_owned(),
                reason: reason.clone(),
                message: message.to_owned(),
            }],
            code,
            message: message.to_owned(),
        },
    };
    serde_json::to_string(&envelope)
        .unwrap_or_else(|_| format!("{{\"error\":{{\"code\":{code}}}}}"))
}

/// Parses an error body; `None` if it is not one.
pub fn parse_error_body(body: &[u8]) -> Option<DriveErrorBody> {
    let envelope: Envelope = serde_json::from_slice(body).ok()?;
    let Detail {
        errors,
        code,
        message,
    } = envelope.error;
    Some(DriveErrorBody {
        code,
        message,
        reason: errors.into_iter().next().map(|item| item.reason),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_has_drives_shape_and_round_trips() {
        let body = format_error_body(
            403,
            &DriveReason::StorageQuotaExceeded,
            "The user's Drive storage quota has been exceeded.",
        );
        assert_eq!(
            body,
            r#"{"error":{"errors":[{"domain":"usageLimits","reason":"storageQuotaExceeded","message":"The user's Drive storage quota has been exceeded."}],"code":403,"message":"The user's Drive storage quota has been exceeded."}}"#
        );
        let parsed = parse_error_body(body.as_bytes()).expect("parses");
        assert_eq!(parsed.code, 403);
        assert_eq!(parsed.reason, Some(DriveReason::StorageQuotaExceeded));
        assert_eq!(parse_error_body(b"<html>"), None);
        assert_eq!(parse_error_body(br#"{"error":{"code":70000}}"#), None);
    }

    #[test]
    fn a_body_without_items_has_no_reason_and_an_unknown_reason_keeps_its_spelling() {
        let bare = parse_error_body(br#"{"error":{"code":500,"message":"x"}}"#).expect("parses");
        assert_eq!(bare.reason, None);
        let odd = parse_error_body(
            br#"{"error":{"errors":[{"domain":"global","reason":"dailyLimitExceeded","message":"m"}],"code":403,"message":"m"}}"#,
        )
        .expect("parses");
        assert_eq!(
            odd.reason,
            Some(DriveReason::Other("dailyLimitExceeded".into()))
        );
        let long = DriveReason::from("r".repeat(1000));
        assert_eq!(long.as_str().len(), QUOTE_CHARS_MAX);
    }

    #[test]
    fn every_known_reason_round_trips_and_defaults_follow_drive() {
        for (reason, name) in KNOWN {
            assert_eq!(reason.as_str(), name);
            assert_eq!(DriveReason::from(name.to_owned()), reason);
        }
        assert_eq!(DriveReason::default_for(503), DriveReason::BackendError);
        assert_eq!(
            DriveReason::default_for(429),
            DriveReason::RateLimitExceeded
        );
        assert_eq!(DriveReason::default_for(410), DriveReason::NotFound);
        assert_eq!(DriveReason::default_for(400), DriveReason::BadRequest);
        assert!(DriveReason::UserRateLimitExceeded.is_rate_limit());
        assert!(!DriveReason::StorageQuotaExceeded.is_rate_limit());
    }
}
