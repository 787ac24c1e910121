//! A Google-Drive-style resumable upload emulator, a typed client for it,
//! and the wire forms both speak.
//!
//! - [`Storage`] keeps an upload's bytes ([`DigestStore`] for simulation,
//!   [`DirStore`] for real files).
//! - [`protocol`] holds the pure parsing and formatting of headers and bodies.
//!
//! The protocol facts honoured are those of DESIGN.md, "Drive protocol facts
//! the emulator must honour"; the one deliberate difference is the file
//! resource's checksum (`crc64nvme` instead of `md5Checksum`, see
//! [`FileResource`]).

pub mod protocol;
mod storage;

pub use protocol::FileResource;
pub use storage::{
    DigestStore, DirStore, Storage, StorageError, StorageHandle, StoredFile, PARTIAL_DIR_NAME,
};
