//! Helpers shared by the integration checks, one file per kind:
//!
//! - `snapshots`: insta settings for `snapshots/`, and the command that
//!   replays a simulated seed.
//! - `files`: temporary directories, payload bytes and files, digests,
//!   and fingerprints of what a server stored.
//! - `process`: the `upsim` binary as child processes, free ports,
//!   bounded waits, token files, figures from `/proc`.
//! - `http`: raw HTTP/1.1 exchanges (what no well-behaved client would
//!   send), request building, credentials.
//! - `stack`: a backend and a drive in process on loopback (the
//!   simulation's wiring or real mode's), and the chunk API's calls.
//! - `real_pair`: `upsim drive` and `upsim serve` as processes, started
//!   and answering.
//! - `certs`: throwaway certificate authorities and server certificates
//!   (rcgen), as PEM files.
//! - `events`: the backend's event streams, opened and read item by item.
//! - `html`: a page's structure (elements and text, no coordinates), for
//!   snapshots of pictures.
//!
//! Invariants: every wait is bounded; every process started is killed and
//! reaped on drop, every server task aborted; only 127.0.0.1 is ever
//! dialled.

mod certs;
mod events;
mod files;
mod html;
mod http;
mod process;
mod real_pair;
mod snapshots;
mod stack;

pub use certs::{ServerCert, TestCa};
pub use events::{EventStream, ReadEvent};
pub use files::{
    chunk_of, file_digest, finished_files, payload_bytes, write_payload, FileFingerprint, TempDir,
};
pub use html::html_structure;
pub use http::{
    bearer, get, raw_exchange, read_reply, request, send, unframed, user, Header, RawReply,
    REPLY_TIMEOUT,
};
pub use process::{free_port, peak_rss_bytes, token_file, wait_until, Proc, UPSIM};
pub use real_pair::{pair_addrs, RealPair};
pub use snapshots::{replay_hint, snapshot_settings};
pub use stack::{checksum, chunk_request, create_body, token_table, upload_id, Stack};

/// A test's result: any error fails it, with its message.
pub type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;
