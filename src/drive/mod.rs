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
//! the emulator must honour". The file resource carries Drive's
//! `md5Checksum` and, the one addition, the emulator's own `crc64nvme`
//! (near memory speed, what simulation checks, see [`FileResource`]); a
//! reply carries the fields `fields=` asks for, `kind,id,name,mimeType`
//! without it, as Drive's does ([`protocol::FieldSelection`]).
//!
//! # Files
//!
//! The server:
//! - `server.rs`: [`DriveServer`], the routing table and the serve loop;
//! - `config.rs`: [`DriveConfig`], its defaults and validation, fixed limits;
//! - `initiate.rs`: the initiation POST (a new session);
//! - `put.rs`: the PUT path (a piece or a status query), steps 1 and 2;
//! - `finish.rs`: step 3 of a PUT: `308`, or the file finished and `200`;
//! - `piece.rs`: the rules for one piece and the unit-by-unit intake;
//! - `checkout.rs`: a session's storage handle, checked out for one request;
//! - `body.rs`: reading request bodies with an idle timeout;
//! - `replies.rs`: refusals and the `308`/`200` replies;
//! - `restore.rs`: taking sessions back from the journal after a restart;
//! - `session.rs`: the session table;
//! - `control.rs`: the state shared with [`DriveControl`] (faults, commit
//!   log, counters, finished files);
//! - `observer.rs`: what a [`PutObserver`] is told about each answered PUT
//!   (a simulation's model of the committed ranges);
//! - `journal.rs`, `storage.rs`: sessions and bytes on disk.
//!
//! The client:
//! - `client.rs`: [`DriveClient`] and its requests;
//! - `exchange.rs`: one request and its reply on the kept connection;
//! - `session_uri.rs`: [`SessionUri`];
//! - `client_error.rs`: [`DriveError`].
//!
//! Both: `protocol/`, the wire forms.

mod access_token;
mod body;
mod checkout;
mod client;
mod client_error;
mod config;
mod control;
mod exchange;
mod finish;
mod initiate;
mod issued_tokens;
mod journal;
mod observer;
mod piece;
pub mod protocol;
mod put;
mod replies;
mod restore;
#[cfg(test)]
mod retention_tests;
mod server;
mod session;
mod session_uri;
mod storage;
mod token_endpoint;

pub use access_token::{
    AccessTokens, CredentialsError, OAuthCredentials, GOOGLE_TOKEN_URI, REFRESH_MARGIN,
};
pub use client::{DriveClient, PieceReply};
pub use client_error::{DriveError, DriveErrorClass};
pub use config::{
    DriveConfig, DriveConfigError, COMMIT_LOG_RECORDS_MAX_DEFAULT,
    DRIVE_REQUEST_HEADER_BYTES_MAX_DEFAULT, FINISHED_FILES_MAX_DEFAULT, LIVE_SESSIONS_MAX,
    METADATA_BYTES_MAX, PIECE_BYTES_MAX_DEFAULT,
};
pub use control::{CommitRecord, DriveControl, DriveStats};
pub use exchange::REPLY_BYTES_MAX;
pub use issued_tokens::ACCESS_TOKENS_MAX;
pub use journal::{JournalError, SessionJournal, SessionRecord, SESSIONS_DIR_NAME};
pub use observer::{AnsweredPut, PutObserver};
pub use piece::PieceError;
pub use protocol::FileResource;
pub use restore::{RestoreError, RestoreReport};
pub use server::DriveServer;
pub use session_uri::SessionUri;
pub use storage::{
    DigestStore, DirStore, Storage, StorageError, StorageHandle, StoredFile, PARTIAL_DIR_NAME,
};
pub use token_endpoint::{
    OAuthClient, OAuthClients, OAuthClientsError, TOKEN_PATH, TOKEN_REQUEST_BYTES_MAX,
};
