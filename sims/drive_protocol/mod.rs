//! The Drive emulator's protocol, checked from the outside: real loopback TCP
//! (`TokioNetwork`) for the protocol rules and faults, and one turmoil run for
//! the simulated network.
//!
//! Raw requests are written byte by byte (`support::send`) so malformed
//! headers can be sent; well-formed uploads go through `DriveClient`, which
//! the backend uses. This file holds the helpers; the checks:
//!
//! - `requests`: the protocol's rules, request by request (initiation,
//!   refusals, status queries, overlapping pieces).
//! - `sessions`: whole uploads through `DriveClient`: completion, expiry,
//!   injected faults, broken and oversized pieces, the directory store.
//! - `simulated`: 64 MiB between two turmoil hosts, deterministically.
//! - `oauth`: the token endpoint, expiring bearer tokens, and the client's
//!   refresh before expiry and on a `401`.

mod oauth;
mod requests;
mod sessions;
mod simulated;

use crate::support::{send, RawReply, TempDir, TestResult};
use bytes::Bytes;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use upsim::checksum::{FileDigest, Md5Digest};
use upsim::drive::protocol::DriveReason;
use upsim::drive::{
    CommitRecord, DigestStore, DirStore, DriveClient, DriveConfig, DriveControl, DriveError,
    DriveServer, FileResource, PieceReply, SessionUri, Storage, PARTIAL_DIR_NAME,
};
use upsim::env::{Clock, ManualClock, Network, SimClock, SimNetwork, TokioNetwork};
use upsim::units::{DRIVE_CHUNK_ALIGN_BYTES, MIB};

/// One commit unit.
const UNIT: u64 = DRIVE_CHUNK_ALIGN_BYTES;

/// Deterministic file content: byte `i` of the file depends on `i` only.
fn content(first_byte: u64, len_bytes: u64) -> Bytes {
    (first_byte..first_byte + len_bytes)
        .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
        .collect::<Vec<u8>>()
        .into()
}

fn digest_of(first_byte: u64, len_bytes: u64) -> String {
    let mut digest = FileDigest::default();
    digest.update(&content(first_byte, len_bytes));
    digest.hex()
}

fn md5_of(first_byte: u64, len_bytes: u64) -> String {
    let mut digest = Md5Digest::default();
    digest.update(&content(first_byte, len_bytes));
    digest.hex()
}

/// A drive on loopback.
struct Drive {
    addr: String,
    base_url: String,
    control: DriveControl,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Drop for Drive {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start_drive(
    config: DriveConfig,
    clock: Arc<dyn Clock>,
    storage: Arc<dyn Storage>,
) -> TestResult<Drive> {
    let listener = TokioNetwork.listen("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let base_url = format!("http://{addr}");
    let config = DriveConfig {
        public_base_url: base_url.clone(),
        ..config
    };
    let server = DriveServer::new(config, clock, storage);
    let control = server.control();
    let task = tokio::spawn(server.serve(listener));
    Ok(Drive {
        addr,
        base_url,
        control,
        task,
    })
}

async fn default_drive() -> TestResult<Drive> {
    start_drive(
        DriveConfig::default(),
        Arc::new(ManualClock::default()),
        Arc::new(DigestStore),
    )
    .await
}

impl Drive {
    fn client(&self) -> DriveClient {
        DriveClient::new(Arc::new(TokioNetwork), &self.base_url, None)
    }

    /// The path and query of a session URI on this drive.
    fn target(&self, session: &SessionUri) -> String {
        session.path_and_query().to_owned()
    }
}

/// Sends one request on a fresh connection, written byte by byte.
async fn raw(
    addr: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> TestResult<RawReply> {
    let headers: Vec<(&str, String)> = headers.iter().map(|(n, v)| (*n, v.to_string())).collect();
    send(addr, method, target, &headers, body).await
}

const INITIATE: &str = "/upload/drive/v3/files?uploadType=resumable";

async fn raw_initiate(drive: &Drive, total_bytes: u64) -> TestResult<SessionUri> {
    let total = total_bytes.to_string();
    let reply = raw(
        &drive.addr,
        "POST",
        INITIATE,
        &[
            ("content-type", "application/json"),
            ("x-upload-content-length", &total),
        ],
        br#"{"name":"f.bin","mimeType":"application/x-test"}"#,
    )
    .await?;
    assert_eq!(reply.status, 200, "{reply:?}");
    Ok(SessionUri::parse(
        reply.header("location").ok_or("no Location")?,
    )?)
}

async fn raw_piece(
    drive: &Drive,
    session: &SessionUri,
    range: &str,
    body: Bytes,
) -> TestResult<RawReply> {
    raw(
        &drive.addr,
        "PUT",
        &drive.target(session),
        &[("content-range", range)],
        &body,
    )
    .await
}

async fn raw_status(drive: &Drive, session: &SessionUri, total: &str) -> TestResult<RawReply> {
    raw(
        &drive.addr,
        "PUT",
        &drive.target(session),
        &[
            ("content-range", &format!("bytes */{total}")),
            ("content-length", "0"),
        ],
        b"",
    )
    .await
}

fn records(control: &DriveControl) -> Vec<(u64, u64)> {
    control
        .commit_log()
        .iter()
        .map(|r| (r.first_byte, r.end_byte_exclusive))
        .collect()
}
