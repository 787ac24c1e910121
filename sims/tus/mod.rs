//! The tus 1.0.0 endpoint (`/files/`), checked against the protocol over
//! real loopback TCP, with the backend and drive wired as `upsim serve`
//! and `upsim drive` wire them (tokens, files on disk, short timeouts):
//!
//! - `refusals`: a table of refused requests (every status and header of
//!   the protocol's error paths, hostile values included), each storing
//!   nothing: the target upload's offset and every stored file are the
//!   same after it (run by `hostile_input`'s table runner).
//! - `flows`: a table of protocol flows, each a sequence of requests with
//!   the status and headers each must get (creation, with upload,
//!   deferred length, PATCHes cut anywhere, checksums, termination,
//!   expiration, the method override), and the drive's file byte-identical
//!   to the source at the end.
//! - `concat`: partial uploads within their reservations, final uploads
//!   made of them (the drive's file their concatenation), and every way a
//!   final can name a partial it may not use.
//! - `concurrency`: tusd's known trouble, in process: a HEAD racing a
//!   PATCH, two PATCHes at the same offset, a client that disconnects
//!   mid-PATCH, a PATCH that stalls and is taken over.
//! - `restart`: `upsim serve` killed mid-upload and started again: HEAD
//!   reports what the drive holds, the upload resumes and completes.
//! - `swarm`: tus clients as a client kind in the turmoil harness: swarm
//!   worlds with tus files and tusd's three races (HEAD during PATCH, two
//!   PATCHes at one offset, a PATCH cut mid-body) pass every check, and
//!   the races' coverage probes were hit.
//! - `client`: tus-js-client (pinned in `ecosystem/tus/`) on Node uploads
//!   64 MiB through `upsim serve` and `upsim drive`, is aborted, resumes,
//!   and the drive's copy is byte-identical.

mod concat;
mod concurrency;
mod flows;
mod refusals;
mod restart;
mod swarm;

use crate::support::{
    bearer, finished_files, payload_bytes, raw_exchange, request, token_table, Header, RawReply,
    Stack, TempDir, TestResult, REPLY_TIMEOUT,
};
use std::path::Path;
use std::time::Duration;
use upsim::checksum::FileDigest;
use upsim::payload::Payload;
use upsim::profile::{MemoryPolicy, Profile};
use upsim::real::DriveSettings;
use upsim::units::KIB;

pub const ALICE: &str = "tus-alice-token-000000000001";
pub const BOB: &str = "tus-bob-token-0000000000000002";
const DRIVE_TOKEN: &str = "tus-backend-drive-token-0003";
/// The profile's chunk: the window holds [`WINDOW_CHUNKS`] of them.
pub const CHUNK: u64 = 256 * KIB;
/// Chunks an upload's window holds (its reservation).
pub const WINDOW_CHUNKS: u64 = 4;
/// Short bounds, so that timeout cases take about a second.
pub const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(1);
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Uploads a user may have in progress: enough for every flow at once.
const UPLOADS_PER_USER_MAX: u32 = 32;

/// How long an upload may receive nothing before it expires, per stack.
pub enum Expiry {
    /// The backend's default (ten minutes): nothing expires in a test.
    Default,
    /// Two seconds, for the expiration flow.
    Short,
}

/// Both servers as `upsim drive` and `upsim serve` wire them: tokens for
/// alice and bob, a drive storing under `root/drive`, records under
/// `root/state`, 256 KiB chunks and a four-chunk window, short timeouts.
pub async fn start(root: &Path, expiry: Expiry) -> TestResult<Stack> {
    let mut drive = DriveSettings::new("127.0.0.1:0", root.join("drive"));
    drive.tokens = Some(token_table(&[(DRIVE_TOKEN, "backend")])?);
    let profile = Profile {
        name: "tus".into(),
        chunk_size_bytes: CHUNK,
        memory_per_upload: MemoryPolicy::ChunkWindow {
            chunks: WINDOW_CHUNKS as u32,
        },
        user_slots: UPLOADS_PER_USER_MAX,
        global_slots: 2 * UPLOADS_PER_USER_MAX,
        ..Profile::dev()
    };
    let users = [(ALICE, "alice"), (BOB, "bob")];
    Stack::real_mode_with_tokens(root, &drive, DRIVE_TOKEN, &users, profile, |serve| {
        serve.uploads_per_user_max = UPLOADS_PER_USER_MAX;
        serve.header_read_timeout = HEADER_READ_TIMEOUT;
        serve.chunk_body_idle_timeout = BODY_IDLE_TIMEOUT;
        if let Expiry::Short = expiry {
            serve.upload_idle_timeout = Duration::from_secs(2);
        }
    })
    .await
}

/// One fresh upload of alice's on a fresh stack: what most checks start
/// from.
pub struct Fixture {
    pub tmp: TempDir,
    pub stack: Stack,
    pub payload: Payload,
    /// The upload's `/files/{id}`.
    pub path: String,
}

impl Fixture {
    /// A stack in a temporary directory named after `tag`, and alice's
    /// upload of `size_bytes` of payload `seed`.
    pub async fn new(tag: &str, seed: u64, size_bytes: u64) -> TestResult<Self> {
        let tmp = TempDir::new(tag)?;
        let stack = start(tmp.path(), Expiry::Default).await?;
        let path = alice(&stack).create(size_bytes, &[]).await?;
        Ok(Self {
            tmp,
            stack,
            payload: Payload::new(seed, size_bytes),
            path,
        })
    }

    /// alice's calls.
    pub fn alice(&self) -> Tus<'_> {
        alice(&self.stack)
    }
}

/// alice's calls on `stack`.
pub fn alice(stack: &Stack) -> Tus<'_> {
    Tus {
        addr: &stack.backend,
        token: ALICE,
    }
}

/// A raw tus request: `Tus-Resumable: 1.0.0`, `token`'s credential (none
/// for `""`), then `headers` and `body`.
pub fn tus_request(
    addr: &str,
    method: &str,
    path: &str,
    token: &str,
    headers: &[Header],
    body: &[u8],
) -> Vec<u8> {
    let mut all: Vec<Header> = vec![("tus-resumable", "1.0.0".into())];
    if !token.is_empty() {
        all.push(bearer(token));
    }
    all.extend_from_slice(headers);
    request(method, addr, path, &all, body)
}

/// The headers of a PATCH at `offset`.
pub fn patch_headers(offset: u64) -> Vec<Header> {
    vec![
        ("content-type", "application/offset+octet-stream".into()),
        ("upload-offset", offset.to_string()),
    ]
}

/// One user's tus calls against a backend.
pub struct Tus<'a> {
    pub addr: &'a str,
    pub token: &'static str,
}

impl Tus<'_> {
    /// Sends one raw request and reads the reply.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[Header],
        body: &[u8],
    ) -> TestResult<RawReply> {
        let bytes = tus_request(self.addr, method, path, self.token, headers, body);
        raw_exchange(self.addr, &bytes, REPLY_TIMEOUT).await
    }

    /// `POST /files` of `length` bytes with `extra` headers; asserts 201
    /// and returns the `Location` path.
    pub async fn create(&self, length: u64, extra: &[Header]) -> TestResult<String> {
        let mut headers = vec![("upload-length", length.to_string())];
        headers.extend_from_slice(extra);
        let reply = self.send("POST", "/files/", &headers, b"").await?;
        assert_eq!(reply.status, 201, "create: {}", reply.text());
        location(&reply)
    }

    /// `HEAD path`.
    pub async fn head(&self, path: &str) -> TestResult<RawReply> {
        self.send("HEAD", path, &[], b"").await
    }

    /// The `Upload-Offset` a HEAD of `path` reports (which must be 200).
    pub async fn offset(&self, path: &str) -> TestResult<u64> {
        let reply = self.head(path).await?;
        assert_eq!(reply.status, 200, "HEAD {path}: {}", reply.text());
        number(&reply, "upload-offset")
    }

    /// `PATCH path` at `offset` with `body` and `extra` headers.
    pub async fn patch(
        &self,
        path: &str,
        offset: u64,
        extra: &[Header],
        body: &[u8],
    ) -> TestResult<RawReply> {
        let mut headers = patch_headers(offset);
        headers.extend_from_slice(extra);
        self.send("PATCH", path, &headers, body).await
    }
}

/// The `Location` of a 201, which must be `/files/` and 32 hex digits.
pub fn location(reply: &RawReply) -> TestResult<String> {
    let path = reply
        .header("location")
        .ok_or_else(|| format!("no Location: {}", reply.text()))?;
    let id = path
        .strip_prefix("/files/")
        .ok_or_else(|| format!("Location {path:?} is not under /files/"))?;
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "Location {path:?}"
    );
    Ok(path.to_owned())
}

/// A numeric header of `reply`.
pub fn number(reply: &RawReply, name: &str) -> TestResult<u64> {
    let value = reply
        .header(name)
        .ok_or_else(|| format!("no {name}: {} {}", reply.status, reply.text()))?;
    Ok(value.parse()?)
}

/// Bytes `from..to` of `payload`.
pub fn part(payload: &Payload, from: u64, to: u64) -> Vec<u8> {
    payload_bytes(payload, from, to)
}

/// Asserts that exactly one finished file of the drive under `root` is
/// `payload`, byte for byte (size and CRC-64/NVME).
pub fn assert_on_drive(root: &Path, payload: &Payload, what: &str) -> TestResult {
    let expected = payload.digest(1 << 20).hex();
    assert_digest_on_drive(root, payload.size_bytes_total(), &expected, what)
}

/// Asserts that exactly one finished file of the drive under `root` is
/// `bytes`, byte for byte (size and CRC-64/NVME).
pub fn assert_bytes_on_drive(root: &Path, bytes: &[u8], what: &str) -> TestResult {
    let mut digest = FileDigest::default();
    digest.update(bytes);
    assert_digest_on_drive(root, bytes.len() as u64, &digest.hex(), what)
}

fn assert_digest_on_drive(root: &Path, size: u64, expected: &str, what: &str) -> TestResult {
    let mut matching = 0;
    for file in finished_files(&root.join("drive"))? {
        if std::fs::metadata(&file)?.len() != size {
            continue;
        }
        let mut digest = FileDigest::default();
        digest.update(&std::fs::read(&file)?);
        if digest.hex() == expected {
            matching += 1;
        }
    }
    assert_eq!(
        matching, 1,
        "{what}: the drive holds {matching} copies of the source"
    );
    Ok(())
}

/// The committed bytes the backend's record under `root/state` holds for
/// the upload at `path` (`/files/{id}`), if it has one.
pub fn committed_in_record(root: &Path, path: &str) -> Option<u64> {
    let id = path.strip_prefix("/files/")?;
    let text = std::fs::read(root.join("state").join(format!("{id}.json"))).ok()?;
    let record: serde_json::Value = serde_json::from_slice(&text).ok()?;
    record["committed_bytes"].as_u64()
}
