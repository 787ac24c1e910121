//! [`Cause`]: the chunk API's vocabulary of reasons, one variant per
//! stable cause name a refusal or a failed upload carries in
//! `ErrorDetail.cause`.
//!
//! The wire strings are the variants' snake_case names and never change
//! (clients, metrics labels, traces and snapshots depend on them). A name
//! a reader does not know, from a newer backend, deserialises as
//! [`Cause::Unknown`] rather than failing the whole reply: the refusal's
//! status and message still say what happened, and the client treats it
//! as it treats any cause it cannot act on.

use serde::{Deserialize, Serialize};

/// Why the chunk API refused a request or failed an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    // Admission's refusals (one per `AdmissionError` variant).
    /// The file is empty.
    EmptyFile,
    /// The file is larger than the profile allows (413).
    FileTooLarge,
    /// The user is not known to admission (403).
    UnknownUser,
    /// The user's daily quota is spent (429, final).
    QuotaExceeded,
    /// Not enough memory for the upload's window now (503).
    MemoryPressure,
    /// The memory probe failed (503).
    MemoryProbe,
    /// Every slot is taken and waiting timed out (503).
    SlotsBusy,
    /// Too many uploads are waiting for a slot (503).
    QueueFull,
    /// The backend is shutting down (503, retry after the restart).
    ShuttingDown,
    /// The shared slot store (several replicas) cannot be reached or
    /// failed (503, retry); also ends an upload whose slot lease was lost.
    SlotStoreUnavailable,
    /// Refused without a reason: only the bug zoo's masked-error mutant
    /// says this, and the simulation oracle flags it.
    Unexplained,

    // Requests and routing.
    /// The request's target and headers are too large (431).
    HeaderTooLarge,
    /// The route exists, the method does not (405).
    MethodNotAllowed,
    /// No such route (404).
    NotFound,
    /// No user, or a bad token (401).
    Unauthenticated,
    /// No such upload for this user (404).
    UnknownUpload,
    /// A malformed create (400) or an oversized create body (413).
    BadRequest,

    // Create.
    /// The OS random source failed while making an id (503).
    IdSourceFailed,
    /// The user has as many uploads in progress as allowed (429, retry).
    TooManyUploads,
    /// A create with the same client token is still running (503).
    CreateInProgress,
    /// The drive cannot be reached, or its breaker is open (503).
    DriveUnavailable,

    // Chunks.
    /// The chunk index is not a number or past the last chunk.
    BadChunkIndex,
    /// The chunk has no `Content-Length` (411).
    LengthRequired,
    /// The chunk's length is not the chunk's.
    BadChunkLength,
    /// The checksum header is missing or malformed (400).
    BadChecksum,
    /// The body's CRC-32C is not the header's: resend the chunk (400).
    ChecksumMismatch,
    /// No body byte for the idle timeout (408).
    BodyTimeout,
    /// The body broke off (400).
    BodyIncomplete,
    /// The chunk is beyond the reorder window: send earlier chunks (503).
    WindowFull,
    /// The backend is taking the upload back after a restart (503).
    Resuming,
    /// The upload is complete already (409).
    UploadComplete,
    /// The upload has failed (410).
    UploadFailed,
    /// The upload ended while the chunk arrived (409).
    UploadEnded,

    // Why an upload failed.
    /// Its owner aborted it (410).
    Aborted,
    /// No chunk came for the upload idle timeout (410).
    ClientGone,
    /// The upload had no drive session (500).
    NoSession,
    /// The drive finished a file of another size (502).
    DriveSizeMismatch,
    /// The drive failed too often in a row (502).
    DriveFailed,
    /// The drive lost the upload's session too often in a row (502).
    DriveSessionLost,
    /// The drive refused the upload for good: a full account
    /// (`storageQuotaExceeded`), a bad request, no permission (502; the
    /// details name Drive's status and reason). Not retryable.
    DriveRefused,
    /// The drive's file kept failing the whole-file check (its digest was
    /// not the digest of the bytes sent) until the sessions ran out (502).
    DriveChecksumMismatch,

    // The progress channel (`GET /uploads/{id}/events`).
    /// The backend serves as many event streams as it allows (503, retry).
    EventStreamsFull,
    /// The user has as many event streams open as allowed (429, retry
    /// once one closes).
    UserEventStreamsFull,
    /// The backend holds as many unexpired events tokens as it allows
    /// (503, retry).
    EventTokensFull,
    // The tus endpoint (`/files/`, backend/tus/).
    /// `Tus-Resumable` is missing or names another version (412).
    TusVersionUnsupported,
    /// A body that continues an upload is not
    /// `application/offset+octet-stream` (415).
    UnsupportedMediaType,
    /// A tus header is missing, malformed, repeated, or contradicts
    /// another (400).
    BadTusHeader,
    /// `Upload-Metadata` is malformed (400).
    BadMetadata,
    /// `Upload-Metadata` is over its limit (413).
    MetadataTooLarge,
    /// A PATCH's `Upload-Offset` is not the upload's offset (409; HEAD
    /// says where it stands).
    OffsetMismatch,
    /// Another PATCH of the upload is running and did not stop in time
    /// (423, retry).
    UploadLocked,
    /// A newer PATCH of the same upload took over from this one, which
    /// stopped; what it stored is kept (409).
    PatchSuperseded,
    /// The body goes past the upload's length (413).
    BeyondUploadLength,
    /// A length-deferred upload got bytes before its length: upsim admits
    /// an upload by its size (400).
    LengthDeferred,
    /// `Upload-Checksum` names an algorithm this server lacks, or is
    /// malformed (400).
    ChecksumUnsupported,
    /// A checksummed PATCH is larger than the upload's window can hold
    /// until it is verified (413).
    ChecksumBodyTooLarge,
    /// A PATCH against a final (concatenated) upload (403).
    FinalUploadImmutable,
    /// A final upload names a partial upload that is unknown, not partial,
    /// not complete, or taken by another final (400); also ends a final
    /// upload whose partials died with the backend (410).
    PartialUnusable,
    /// A partial upload larger than its reservation can hold: partials
    /// wait in memory for their final upload (413).
    PartialTooLarge,

    /// A cause this side does not know (a newer peer's), or a refusal
    /// whose body named none.
    #[serde(other)]
    Unknown,
}

impl Cause {
    /// Every cause, [`Unknown`](Self::Unknown) last.
    pub const ALL: [Cause; 60] = [
        Self::EmptyFile,
        Self::FileTooLarge,
        Self::UnknownUser,
        Self::QuotaExceeded,
        Self::MemoryPressure,
        Self::MemoryProbe,
        Self::SlotsBusy,
        Self::QueueFull,
        Self::ShuttingDown,
        Self::SlotStoreUnavailable,
        Self::Unexplained,
        Self::HeaderTooLarge,
        Self::MethodNotAllowed,
        Self::NotFound,
        Self::Unauthenticated,
        Self::UnknownUpload,
        Self::BadRequest,
        Self::IdSourceFailed,
        Self::TooManyUploads,
        Self::CreateInProgress,
        Self::DriveUnavailable,
        Self::BadChunkIndex,
        Self::LengthRequired,
        Self::BadChunkLength,
        Self::BadChecksum,
        Self::ChecksumMismatch,
        Self::BodyTimeout,
        Self::BodyIncomplete,
        Self::WindowFull,
        Self::Resuming,
        Self::UploadComplete,
        Self::UploadFailed,
        Self::UploadEnded,
        Self::Aborted,
        Self::ClientGone,
        Self::NoSession,
        Self::DriveSizeMismatch,
        Self::DriveFailed,
        Self::DriveSessionLost,
        Self::DriveRefused,
        Self::DriveChecksumMismatch,
        Self::EventStreamsFull,
        Self::UserEventStreamsFull,
        Self::EventTokensFull,
        Self::TusVersionUnsupported,
        Self::UnsupportedMediaType,
        Self::BadTusHeader,
        Self::BadMetadata,
        Self::MetadataTooLarge,
        Self::OffsetMismatch,
        Self::UploadLocked,
        Self::PatchSuperseded,
        Self::BeyondUploadLength,
        Self::LengthDeferred,
        Self::ChecksumUnsupported,
        Self::ChecksumBodyTooLarge,
        Self::FinalUploadImmutable,
        Self::PartialUnusable,
        Self::PartialTooLarge,
        Self::Unknown,
    ];

    /// The wire name (what serde writes).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::EmptyFile => "empty_file",
            Self::FileTooLarge => "file_too_large",
            Self::UnknownUser => "unknown_user",
            Self::QuotaExceeded => "quota_exceeded",
            Self::MemoryPressure => "memory_pressure",
            Self::MemoryProbe => "memory_probe",
            Self::SlotsBusy => "slots_busy",
            Self::QueueFull => "queue_full",
            Self::ShuttingDown => "shutting_down",
            Self::SlotStoreUnavailable => "slot_store_unavailable",
            Self::Unexplained => "unexplained",
            Self::HeaderTooLarge => "header_too_large",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::NotFound => "not_found",
            Self::Unauthenticated => "unauthenticated",
            Self::UnknownUpload => "unknown_upload",
            Self::BadRequest => "bad_request",
            Self::IdSourceFailed => "id_source_failed",
            Self::TooManyUploads => "too_many_uploads",
            Self::CreateInProgress => "create_in_progress",
            Self::DriveUnavailable => "drive_unavailable",
            Self::BadChunkIndex => "bad_chunk_index",
            Self::LengthRequired => "length_required",
            Self::BadChunkLength => "bad_chunk_length",
            Self::BadChecksum => "bad_checksum",
            Self::ChecksumMismatch => "checksum_mismatch",
            Self::BodyTimeout => "body_timeout",
            Self::BodyIncomplete => "body_incomplete",
            Self::WindowFull => "window_full",
            Self::Resuming => "resuming",
            Self::UploadComplete => "upload_complete",
            Self::UploadFailed => "upload_failed",
            Self::UploadEnded => "upload_ended",
            Self::Aborted => "aborted",
            Self::ClientGone => "client_gone",
            Self::NoSession => "no_session",
            Self::DriveSizeMismatch => "drive_size_mismatch",
            Self::DriveFailed => "drive_failed",
            Self::DriveSessionLost => "drive_session_lost",
            Self::DriveRefused => "drive_refused",
            Self::DriveChecksumMismatch => "drive_checksum_mismatch",
            Self::EventStreamsFull => "event_streams_full",
            Self::UserEventStreamsFull => "user_event_streams_full",
            Self::EventTokensFull => "event_tokens_full",
            Self::TusVersionUnsupported => "tus_version_unsupported",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::BadTusHeader => "bad_tus_header",
            Self::BadMetadata => "bad_metadata",
            Self::MetadataTooLarge => "metadata_too_large",
            Self::OffsetMismatch => "offset_mismatch",
            Self::UploadLocked => "upload_locked",
            Self::PatchSuperseded => "patch_superseded",
            Self::BeyondUploadLength => "beyond_upload_length",
            Self::LengthDeferred => "length_deferred",
            Self::ChecksumUnsupported => "checksum_unsupported",
            Self::ChecksumBodyTooLarge => "checksum_body_too_large",
            Self::FinalUploadImmutable => "final_upload_immutable",
            Self::PartialUnusable => "partial_unusable",
            Self::PartialTooLarge => "partial_too_large",
            Self::Unknown => "unknown",
        }
    }

    /// The cause named `name`; [`Unknown`](Self::Unknown) for a name this
    /// side does not know (as deserialising does).
    pub fn parse(name: &str) -> Self {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == name)
            .unwrap_or(Self::Unknown)
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses a wire name, as [`Cause::parse`] does (so tests and scenarios
/// can write `"aborted".into()`).
impl From<&str> for Cause {
    fn from(name: &str) -> Self {
        Self::parse(name)
    }
}

impl PartialEq<str> for Cause {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Cause {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This is a regression test that ensures `as_str` (metrics labels,
    /// traces) and serde (the wire) name every cause the same way, and
    /// that no two causes share a name.
    #[test]
    fn as_str_is_the_wire_name_and_names_are_distinct() {
        let mut seen = std::collections::BTreeSet::new();
        for cause in Cause::ALL {
            let wire = serde_json::to_string(&cause).expect("serialises");
            assert_eq!(wire, format!("\"{}\"", cause.as_str()));
            let back: Cause = serde_json::from_str(&wire).expect("deserialises");
            assert_eq!(back, cause);
            assert_eq!(Cause::parse(cause.as_str()), cause);
            assert!(seen.insert(cause.as_str()), "{cause} named twice");
        }
    }

    #[test]
    fn a_cause_this_side_does_not_know_reads_as_unknown() {
        let read: Cause = serde_json::from_str("\"a_cause_from_the_future\"").expect("no failure");
        assert_eq!(read, Cause::Unknown);
        assert_eq!(Cause::parse(""), Cause::Unknown);
        assert!(
            serde_json::from_str::<Cause>("42").is_err(),
            "not a name at all"
        );
    }
}
