//! A Google-Drive-style resumable upload emulator, a typed client for it,
//! and the wire forms both speak.
//!
//! - [`protocol`] holds the pure parsing and formatting of headers and bodies.
//!
//! The protocol facts honoured are those of DESIGN.md, "Drive protocol facts
//! the emulator must honour"; the one deliberate difference is the file
//! resource's checksum (`crc64nvme` instead of `md5Checksum`, see
//! [`FileResource`]).

pub mod protocol;

pub use protocol::FileResource;
