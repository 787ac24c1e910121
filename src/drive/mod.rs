//! A Google-Drive-style resumable upload emulator, a typed client for it,
//! and the wire forms both speak.
//!
//! - [`DriveServer`] serves the protocol over any [`Listener`](crate::env::Listener)
//!   (real TCP or a turmoil host), keeping bytes in a [`Storage`]
//!   ([`DigestStore`] for simulation, [`DirStore`] for real files).
//! - [`DriveControl`] injects faults into a running server and observes it
//!   (commit log, counters, finished files).
//! - [`DriveClient`] is what the upload backend uses: initiate, put pieces,
//!   query status; typed replies and errors, no retries.
//! - [`protocol`] holds the pure parsing and formatting of headers and bodies.
//! - [`SessionJournal`] keeps sessions on disk in real mode, so a restarted
//!   emulator takes them back ([`DriveServer::restore`]).
//!
//! The protocol facts honoured are those of DESIGN.md, "Drive protocol facts
//! the emulator must honour"; the one deliberate difference is the file
//! resource's checksum (`crc64nvme` instead of `md5Checksum`, see
//! [`FileResource`]).

mod body;
mod checkout;
mod client;
mod config;
mod control;
mod initiate;
mod journal;
pub mod protocol;
mod put;
mod replies;
mod restore;
mod server;
mod session;
mod storage;

pub use client::{DriveClient, DriveError, PieceReply, SessionUri, REPLY_BYTES_MAX};
pub use config::{
    DriveConfig, DriveConfigError, DRIVE_REQUEST_HEADER_BYTES_MAX_DEFAULT, LIVE_SESSIONS_MAX,
    METADATA_BYTES_MAX,
};
pub use control::{CommitRecord, DriveControl, DriveStats};
pub use journal::{JournalError, SessionJournal, SessionRecord, SESSIONS_DIR_NAME};
pub use protocol::FileResource;
pub use restore::{RestoreError, RestoreReport};
pub use server::DriveServer;
pub use session::PieceError;
pub use storage::{
    DigestStore, DirStore, Storage, StorageError, StorageHandle, StoredFile, PARTIAL_DIR_NAME,
};
