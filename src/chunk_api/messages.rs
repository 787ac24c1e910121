//! The chunk API's request and reply bodies, shared by the backend and the
//! client.
//!
//! ```text
//! POST   /uploads                      create (runs admission)        → 201 UploadCreated
//! PUT    /uploads/{id}/chunks/{index}  one chunk, any order           → 200 ChunkAccepted
//! GET    /uploads/{id}                 what the backend has           → 200 UploadStatus
//! DELETE /uploads/{id}                 abort (releases everything)    → 200 UploadStatus
//! GET    /healthz                      admission and drive state      → 200 Health
//! ```
//! Every request names its user in [`USER_HEADER`]. Chunk `i` covers bytes
//! `[i·chunk, min((i+1)·chunk, size))`; its CRC-32C goes in
//! [`CHECKSUM_HEADER`] as 8 lowercase hex digits. Every refusal is a 4xx or
//! 5xx with an [`ErrorBody`]: a stable `cause`, a message with the numbers,
//! and `Retry-After` where waiting helps.

use super::{Cause, UploadedFile};
use crate::ids::UploadId;
use serde::{Deserialize, Serialize};

/// The header naming the requesting user.
pub const USER_HEADER: &str = "x-upsim-user";
/// The header carrying a chunk's CRC-32C.
pub const CHECKSUM_HEADER: &str = "x-upsim-crc32c";
/// Longest file name accepted.
pub const FILE_NAME_BYTES_MAX: usize = 255;
/// Whether `name` is a file name the backend gives the drive: 1 to
/// [`FILE_NAME_BYTES_MAX`] bytes, without `/` or control characters.
pub fn is_valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= FILE_NAME_BYTES_MAX
        && !name.chars().any(|c| c == '/' || c.is_control())
}

/// Largest JSON request body (create).
pub const CREATE_BODY_BYTES_MAX: usize = 4 * 1024;
/// Largest JSON reply a client reads.
pub const REPLY_BYTES_MAX: usize = 1024 * 1024;

/// `POST /uploads` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUpload {
    /// The file's name (1–255 bytes, no `/` or control characters).
    pub file_name: String,
    /// Its size.
    pub file_size_bytes: u64,
    /// Its MIME type (default `application/octet-stream`).
    #[serde(default)]
    pub mime_type: Option<String>,
    /// An idempotency key chosen by the client (1–64 of `[A-Za-z0-9_-]`),
    /// the same on every retry of this create: a retry whose first attempt
    /// did create the upload (its reply was lost) gets that upload back
    /// instead of a second admission.
    #[serde(default)]
    pub client_token: Option<String>,
}

/// Longest client token accepted.
pub const CLIENT_TOKEN_BYTES_MAX: usize = 64;

// A valid create (longest name and token, JSON-escaped at most 6 bytes a
// byte for the name, plus the fields' names and a size) always fits in the
// body the backend reads.
const _: () =
    assert!(6 * FILE_NAME_BYTES_MAX + CLIENT_TOKEN_BYTES_MAX + 256 <= CREATE_BODY_BYTES_MAX);

/// `201` reply to a create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadCreated {
    /// The upload's id (32 hex digits).
    pub upload_id: UploadId,
    /// Chunk size to use.
    pub chunk_size_bytes: u64,
    /// Number of chunks.
    pub chunk_count: u32,
}

/// Where an upload stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The backend restarted and is taking the upload back (retry soon).
    Resuming,
    /// Accepting chunks.
    Receiving,
    /// On the drive, whole.
    Complete,
    /// Ended without finishing; `failure` says why.
    Failed,
}

/// `GET /uploads/{id}` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadStatus {
    /// The upload's id.
    pub upload_id: UploadId,
    /// Where it stands.
    pub phase: Phase,
    /// Its size.
    pub file_size_bytes: u64,
    /// Chunk size.
    pub chunk_size_bytes: u64,
    /// Number of chunks.
    pub chunk_count: u32,
    /// Bytes the drive holds.
    pub committed_bytes: u64,
    /// Chunks wholly on the drive: `0..chunks_committed`.
    pub chunks_committed: u32,
    /// Chunks held in the reorder window (not yet on the drive).
    pub chunks_buffered: Vec<u32>,
    /// Chunks the window can hold beyond the committed prefix.
    pub window_chunks: u32,
    /// The drive's file, once complete.
    pub file: Option<UploadedFile>,
    /// Why it failed, once failed.
    pub failure: Option<ErrorDetail>,
}

impl UploadStatus {
    /// Chunks the backend has neither committed nor buffered, in order.
    pub fn missing_chunks(&self) -> Vec<u32> {
        let buffered: std::collections::BTreeSet<u32> =
            self.chunks_buffered.iter().copied().collect();
        (self.chunks_committed..self.chunk_count)
            .filter(|i| !buffered.contains(i))
            .collect()
    }
}

/// `200` reply to a chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkAccepted {
    /// The chunk.
    pub index: u32,
    /// Whether it was already on the drive (nothing stored).
    pub already_committed: bool,
}

/// The body of every refusal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What went wrong, machine- and human-readable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// HTTP status.
    pub status: u16,
    /// Stable cause name (`memory_pressure`, `checksum_mismatch`, …); a
    /// name this side does not know reads as [`Cause::Unknown`] instead of
    /// failing the reply.
    pub cause: Cause,
    /// The reason, with its numbers.
    pub message: String,
    /// The typed cause's fields, when there is one.
    #[serde(default)]
    pub details: serde_json::Value,
}
