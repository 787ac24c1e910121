//! tus 1.0.0's wire forms: the headers of the open resumable-upload
//! protocol that Uppy, tus-js-client, tuspy, TUSKit and tus-java-client
//! speak, parsed into typed values with typed errors and named limits.
//! The backend serves them at `/files/` (`backend/tus/`); this module
//! imports neither the backend nor the drive, as [`chunk_api`](crate::chunk_api)
//! does not.
//!
//! - `headers`: `Tus-Resumable`, `Upload-Offset`, `Upload-Length`,
//!   `Upload-Defer-Length`, `Content-Type`, `X-HTTP-Method-Override`, and
//!   the HTTP date of `Upload-Expires`.
//! - `metadata`: `Upload-Metadata`, validated and bounded.
//! - `checksum`: `Upload-Checksum` and the digest of a body as it arrives
//!   (sha1, md5, crc32).
//! - `concat`: `Upload-Concat` (`partial`, `final;…`), bounded.
//!
//! Protocol: <https://tus.io/protocols/resumable-upload> (version 1.0.0).

mod checksum;
mod concat;
mod headers;
mod metadata;

pub use checksum::{BodyDigest, ChecksumAlgorithm, ChecksumError, UploadChecksum};
pub use concat::{Concat, ConcatError, CONCAT_PARTIALS_MAX};
pub use headers::{
    content_length, defer_length, http_date, is_offset_stream, method_override, resumable,
    upload_length, upload_offset, TusHeaderError,
};
pub use metadata::{Metadata, MetadataError, METADATA_BYTES_MAX, METADATA_PAIRS_MAX};

/// The one protocol version served, for `Tus-Resumable` and `Tus-Version`.
pub const TUS_VERSION: &str = "1.0.0";

/// The extensions served, as `Tus-Extension` lists them.
pub const TUS_EXTENSIONS: &str =
    "creation,creation-with-upload,creation-defer-length,termination,checksum,expiration,concatenation";

/// The checksum algorithms served, as `Tus-Checksum-Algorithm` lists them.
pub const TUS_CHECKSUM_ALGORITHMS: &str = "sha1,md5,crc32";

/// The media type of a body that continues an upload at an offset.
pub const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";

/// Where the endpoint lives (tusd's default): uploads are created by a
/// `POST` here and live at `/files/{id}`.
pub const FILES_PATH: &str = "/files/";

/// The header names tus defines, lowercase as `http` stores them.
pub mod header {
    /// The protocol version of a request or reply.
    pub const TUS_RESUMABLE: &str = "tus-resumable";
    /// The versions a server speaks (`OPTIONS`, `412`).
    pub const TUS_VERSION: &str = "tus-version";
    /// The extensions a server supports (`OPTIONS`).
    pub const TUS_EXTENSION: &str = "tus-extension";
    /// The largest upload a server takes (`OPTIONS`).
    pub const TUS_MAX_SIZE: &str = "tus-max-size";
    /// The checksum algorithms a server supports (`OPTIONS`).
    pub const TUS_CHECKSUM_ALGORITHM: &str = "tus-checksum-algorithm";
    /// A byte offset within an upload.
    pub const UPLOAD_OFFSET: &str = "upload-offset";
    /// The size of a whole upload.
    pub const UPLOAD_LENGTH: &str = "upload-length";
    /// `1`: the size comes later.
    pub const UPLOAD_DEFER_LENGTH: &str = "upload-defer-length";
    /// Key-value pairs about the upload, values in base64.
    pub const UPLOAD_METADATA: &str = "upload-metadata";
    /// When an unfinished upload expires (an HTTP date).
    pub const UPLOAD_EXPIRES: &str = "upload-expires";
    /// The algorithm and base64 digest of a PATCH body.
    pub const UPLOAD_CHECKSUM: &str = "upload-checksum";
    /// `partial`, or `final;` and the partial uploads' URLs.
    pub const UPLOAD_CONCAT: &str = "upload-concat";
    /// The method to use instead of the request's own.
    pub const X_HTTP_METHOD_OVERRIDE: &str = "x-http-method-override";
    /// upsim's own: the stable cause of a refusal, for replies without a
    /// body (`HEAD`); every tus refusal carries it, beside the JSON body.
    pub const UPSIM_CAUSE: &str = "upsim-cause";
    /// upsim's extension on HEAD of a complete upload: the drive's file
    /// resource (with its checksum) as JSON, base64 (standard alphabet),
    /// so a client can check the drive's copy as the chunk API's status
    /// lets it.
    pub const UPSIM_FILE: &str = "upsim-file";
    /// upsim's extension on a creation: the chunk API's `client_token`, so
    /// that a creation retried after its 201 was lost gets the same
    /// upload (tus has no idempotent creation of its own).
    pub const UPSIM_CLIENT_TOKEN: &str = "upsim-client-token";
}
