//! The chunk API (client → backend): its wire forms, its vocabulary of
//! refusal causes, and the file a completed upload reports. Both the
//! backend and the client import this module; it imports neither (nor the
//! drive), so each side can change without the other.
//!
//! - `messages`: the request and reply bodies, headers and bounds.
//! - `cause`: [`Cause`], the stable reason names of refusals and failures.
//! - `file`: [`UploadedFile`], a completed upload's file.
//! - `events`: the progress channel's events ([`ProgressState`],
//!   [`EventId`], [`EventKind`]) and the token that opens a stream.

mod cause;
mod events;
mod file;
mod messages;

pub use cause::Cause;
pub use events::{
    BadEventId, EventId, EventKind, EventsToken, ProgressState, EVENTS_TOKEN_QUERY,
    EVENT_ID_BYTES_MAX, EVENT_STREAM_CONTENT_TYPE, LAST_EVENT_ID_HEADER, LAST_EVENT_ID_QUERY,
};
pub use file::UploadedFile;
pub use messages::{
    is_valid_file_name, ChunkAccepted, CreateUpload, ErrorBody, ErrorDetail, Phase, UploadCreated,
    UploadStatus, CHECKSUM_HEADER, CLIENT_TOKEN_BYTES_MAX, CREATE_BODY_BYTES_MAX,
    FILE_NAME_BYTES_MAX, REPLY_BYTES_MAX, USER_HEADER,
};
