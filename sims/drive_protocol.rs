//! The Drive emulator's protocol, checked from the outside: real loopback TCP
//! (`TokioNetwork`) for the protocol rules and faults, and one turmoil run for
//! the simulated network.
//!
//! Raw requests are written byte by byte (`support::send`) so malformed
//! headers can be sent; well-formed uploads go through `DriveClient`, which
//! the backend uses.

use crate::support::{send, RawReply, TempDir, TestResult};
use bytes::Bytes;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use upsim::checksum::FileDigest;
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

#[tokio::test]
async fn initiate_answers_200_with_an_absolute_session_uri() -> TestResult {
    let drive = default_drive().await?;
    let reply = raw(
        &drive.addr,
        "POST",
        "/upload/drive/v3/files?alt=json&uploadType=resumable",
        &[("x-upload-content-length", "1000")],
        br#"{"name":"a.bin"}"#,
    )
    .await?;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(reply.body.is_empty());
    let location = reply.header("location").ok_or("no Location")?;
    let prefix = format!(
        "{}/upload/drive/v3/files?uploadType=resumable&upload_id=",
        drive.base_url
    );
    let upload_id = location.strip_prefix(&prefix).ok_or(location.to_owned())?;
    assert_eq!(upload_id.len(), 32);
    assert!(upload_id
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    // A second session gets another id.
    let second = raw_initiate(&drive, 10).await?;
    assert_ne!(second.upload_id(), upload_id);
    assert_eq!(drive.control.stats().sessions_created, 2);
    Ok(())
}

/// An initiation that must be refused: target, headers, body, and what the
/// error message must name.
type BadInitiation = (
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static [u8],
    &'static str,
);

#[tokio::test]
async fn bad_upload_type_bad_json_and_bad_headers_answer_400() -> TestResult {
    let drive = default_drive().await?;
    let cases: [BadInitiation; 7] = [
        ("/upload/drive/v3/files?uploadType=media", &[], b"", "media"),
        ("/upload/drive/v3/files", &[], b"", "uploadType is missing"),
        (INITIATE, &[], b"{\"name\":", "metadata"),
        (INITIATE, &[], b"[1,2]", "an array"),
        (INITIATE, &[], br#"{"name":7}"#, "name is a number"),
        (
            INITIATE,
            &[("x-upload-content-length", "-5")],
            b"",
            "X-Upload-Content-Length",
        ),
        (
            INITIATE,
            &[("x-upload-content-length", "18446744073709551616")],
            b"",
            "18446744073709551616",
        ),
    ];
    for (target, headers, body, expected) in cases {
        let reply = raw(&drive.addr, "POST", target, headers, body).await?;
        assert_eq!(reply.status, 400, "{target} {body:?}: {reply:?}");
        let (code, message) = reply.drive_error()?;
        assert_eq!(code, 400);
        assert!(message.contains(expected), "{message:?} lacks {expected:?}");
    }
    assert_eq!(drive.control.stats().sessions_created, 0);
    Ok(())
}

#[tokio::test]
async fn unknown_ids_paths_and_methods_are_refused() -> TestResult {
    let drive = default_drive().await?;
    let unknown = format!("{INITIATE}&upload_id={}", "0".repeat(32));
    let reply = raw(
        &drive.addr,
        "PUT",
        &unknown,
        &[("content-range", "bytes */*"), ("content-length", "0")],
        b"",
    )
    .await?;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.drive_error()?.0, 404);
    assert!(reply.drive_error()?.1.contains(&"0".repeat(32)));

    let reply = raw(&drive.addr, "GET", "/drive/v3/files", &[], b"").await?;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.drive_error()?.0, 404);

    let reply = raw(&drive.addr, "DELETE", INITIATE, &[], b"").await?;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("POST, PUT"));
    assert_eq!(reply.drive_error()?.0, 405);
    Ok(())
}

/// What a refusal's error message must say.
enum Says {
    /// Each of these.
    AllOf(&'static [&'static str]),
    /// Exactly this.
    Exactly(&'static str),
}

/// A piece the drive must refuse with 400, naming its numbers, on a fresh
/// session of ten units: what it is, its `Content-Range`, the body's first
/// byte and length, and what the message says.
type BadPiece = (&'static str, &'static str, u64, u64, Says);

const BAD_PIECES: [BadPiece; 3] = [
    (
        "a piece not a multiple of 256 KiB and not the last",
        "bytes 0-999/*",
        0,
        1000,
        Says::AllOf(&["1000", "262144"]),
    ),
    (
        "a Content-Length disagreeing with Content-Range",
        "bytes 0-262143/*",
        0,
        1000,
        Says::AllOf(&["Content-Length 1000", "262144 bytes"]),
    ),
    (
        "a piece leaving a gap",
        "bytes 262144-524287/*",
        UNIT,
        UNIT,
        Says::Exactly("gap: piece starts at 262144 but 0 bytes are held"),
    ),
];

#[tokio::test]
async fn bad_pieces_are_refused_with_their_numbers_and_commit_nothing() -> TestResult {
    for (name, range, first_byte, len_bytes, says) in BAD_PIECES {
        let drive = default_drive().await?;
        let session = raw_initiate(&drive, 10 * UNIT).await?;
        let reply = raw_piece(&drive, &session, range, content(first_byte, len_bytes)).await?;
        assert_eq!(reply.status, 400, "{name}: {reply:?}");
        let (code, message) = reply.drive_error()?;
        assert_eq!(code, 400, "{name}");
        match says {
            Says::AllOf(parts) => assert!(
                parts.iter().all(|p| message.contains(p)),
                "{name}: {message:?} lacks one of {parts:?}"
            ),
            Says::Exactly(text) => assert_eq!(message, text, "{name}"),
        }
        assert!(drive.control.commit_log().is_empty(), "{name}");
        // The connection-level drain kept the session usable.
        let reply = raw_status(&drive, &session, "*").await?;
        assert_eq!(reply.status, 308, "{name}: {reply:?}");
    }
    Ok(())
}

#[tokio::test]
async fn u64_overflow_in_content_range_is_refused_not_panicked() -> TestResult {
    let drive = default_drive().await?;
    let session = raw_initiate(&drive, 10 * UNIT).await?;
    for (range, len) in [
        ("bytes 0-18446744073709551615/18446744073709551616", 1),
        ("bytes 0-18446744073709551615/*", 1),
        ("bytes 18446744073709551615-18446744073709551615/*", 1),
        ("bytes 99999999999999999999999-0/5", 1),
        ("bytes 5-3/10", 1),
    ] {
        let reply = raw_piece(&drive, &session, range, content(0, len)).await?;
        assert_eq!(reply.status, 400, "{range}: {reply:?}");
        assert_eq!(reply.drive_error()?.0, 400);
    }
    // The server is alive and the session untouched.
    let reply = raw_status(&drive, &session, &(10 * UNIT).to_string()).await?;
    assert_eq!(reply.status, 308);
    assert_eq!(reply.header("range"), None);
    assert!(drive.control.commit_log().is_empty());
    Ok(())
}

#[tokio::test]
async fn status_query_answers_308_without_range_then_with_it() -> TestResult {
    let drive = default_drive().await?;
    let total = 10 * UNIT;
    let session = raw_initiate(&drive, total).await?;
    let reply = raw_status(&drive, &session, &total.to_string()).await?;
    assert_eq!(reply.status, 308);
    assert_eq!(reply.header("range"), None, "nothing is held yet");
    assert_eq!(reply.reason, "Resume Incomplete");

    let reply = raw_piece(
        &drive,
        &session,
        &format!("bytes 0-{}/{total}", 2 * UNIT - 1),
        content(0, 2 * UNIT),
    )
    .await?;
    assert_eq!(reply.status, 308);
    assert_eq!(reply.header("range"), Some("bytes=0-524287"));
    let reply = raw_status(&drive, &session, "*").await?;
    assert_eq!(reply.status, 308);
    assert_eq!(reply.header("range"), Some("bytes=0-524287"));
    // A status query stating another total is refused.
    let reply = raw_status(&drive, &session, &(total + 1).to_string()).await?;
    assert_eq!(reply.status, 400);
    assert!(reply.drive_error()?.1.contains(&total.to_string()));
    Ok(())
}

#[tokio::test]
async fn overlapping_piece_commits_only_new_bytes() -> TestResult {
    let drive = default_drive().await?;
    let total = 3 * UNIT + 10;
    let session = raw_initiate(&drive, total).await?;
    let reply = raw_piece(
        &drive,
        &session,
        &format!("bytes 0-{}/{total}", 2 * UNIT - 1),
        content(0, 2 * UNIT),
    )
    .await?;
    assert_eq!(reply.header("range"), Some("bytes=0-524287"));
    // Resend from UNIT: the first unit of it is already held.
    let reply = raw_piece(
        &drive,
        &session,
        &format!("bytes {UNIT}-{}/{total}", 3 * UNIT - 1),
        content(UNIT, 2 * UNIT),
    )
    .await?;
    assert_eq!(reply.status, 308);
    assert_eq!(reply.header("range"), Some("bytes=0-786431"));
    // A stale piece wholly below the held offset commits nothing.
    let reply = raw_piece(
        &drive,
        &session,
        &format!("bytes 0-{}/{total}", UNIT - 1),
        content(0, UNIT),
    )
    .await?;
    assert_eq!(reply.header("range"), Some("bytes=0-786431"));
    // The last piece overlaps too.
    let reply = raw_piece(
        &drive,
        &session,
        &format!("bytes {}-{}/{total}", 2 * UNIT, total - 1),
        content(2 * UNIT, UNIT + 10),
    )
    .await?;
    assert_eq!(reply.status, 200, "{reply:?}");
    let resource: serde_json::Value = serde_json::from_slice(&reply.body)?;
    assert_eq!(resource["crc64nvme"], digest_of(0, total).as_str());
    assert_eq!(resource["size"], total.to_string().as_str());
    assert_eq!(
        records(&drive.control),
        vec![(0, 2 * UNIT), (2 * UNIT, 3 * UNIT), (3 * UNIT, total)]
    );
    assert_eq!(drive.control.stats().bytes_committed, total);
    Ok(())
}

#[tokio::test]
async fn final_piece_answers_the_resource_and_repeats_are_idempotent() -> TestResult {
    let drive = default_drive().await?;
    let client = drive.client();
    let total = 3 * MIB + 123;
    let session = client
        .initiate("data.bin", "application/x-test", total)
        .await?;
    let mut offset = 0;
    let mut last = None;
    while offset < total {
        let len = MIB.min(total - offset);
        // Each piece as two buffers, to check they are sent back to back.
        let half = len / 2;
        let data = vec![content(offset, half), content(offset + half, len - half)];
        let reply = client.put_piece(&session, offset, data, total).await?;
        offset += len;
        if offset < total {
            assert_eq!(reply, PieceReply::Incomplete { held_bytes: offset });
        }
        last = Some(reply);
    }
    let Some(PieceReply::Complete(resource)) = last else {
        return Err(format!("last piece answered {last:?}").into());
    };
    assert_eq!(resource.kind, "drive#file");
    assert_eq!(resource.name, "data.bin");
    assert_eq!(resource.mime_type, "application/x-test");
    assert_eq!(resource.size_bytes, total);
    assert_eq!(resource.crc64nvme, digest_of(0, total));

    // Repeating the last piece, or asking, answers the same resource.
    let again = client
        .put_piece(&session, 3 * MIB, vec![content(3 * MIB, 123)], total)
        .await?;
    assert_eq!(again, PieceReply::Complete(resource.clone()));
    assert_eq!(
        client.status(&session, total).await?,
        PieceReply::Complete(resource.clone())
    );
    assert_eq!(drive.control.finished_files(), vec![resource]);
    let stats = drive.control.stats();
    assert_eq!((stats.files_finished, stats.pieces_accepted), (1, 4));
    assert_eq!(stats.bytes_committed, total);
    Ok(())
}

#[tokio::test]
async fn idle_sessions_expire_and_activity_keeps_them_alive() -> TestResult {
    let clock = Arc::new(ManualClock::default());
    let config = DriveConfig {
        session_ttl: Duration::from_secs(7 * 24 * 3600),
        ..DriveConfig::default()
    };
    let drive = start_drive(config, clock.clone(), Arc::new(DigestStore)).await?;
    let client = drive.client();
    let session = client.initiate("x", "a/b", 2 * UNIT).await?;
    let day = Duration::from_secs(24 * 3600);
    clock.advance(6 * day);
    assert_eq!(
        client.status(&session, 2 * UNIT).await?,
        PieceReply::Incomplete { held_bytes: 0 }
    );
    clock.advance(6 * day);
    // Twelve days old, six idle: still alive.
    assert_eq!(
        client
            .put_piece(&session, 0, vec![content(0, UNIT)], 2 * UNIT)
            .await?,
        PieceReply::Incomplete { held_bytes: UNIT }
    );
    clock.advance(7 * day + Duration::from_secs(1));
    let gone = client.status(&session, 2 * UNIT).await;
    assert!(
        matches!(gone, Err(DriveError::SessionGone { .. })),
        "{gone:?}"
    );
    assert!(!gone.is_err_and(|e| e.is_retryable()));
    // Once gone, always gone.
    let again = client
        .put_piece(&session, UNIT, vec![content(UNIT, UNIT)], 2 * UNIT)
        .await;
    assert!(
        matches!(again, Err(DriveError::SessionGone { .. })),
        "{again:?}"
    );
    assert_eq!(drive.control.stats().sessions_expired, 1);
    Ok(())
}

#[tokio::test]
async fn expire_all_sessions_drops_open_sessions_only() -> TestResult {
    let drive = default_drive().await?;
    let client = drive.client();
    let open = client.initiate("open", "a/b", 2 * UNIT).await?;
    let done = client.initiate("done", "a/b", 10).await?;
    let finished = client.put_piece(&done, 0, vec![content(0, 10)], 10).await?;
    assert!(matches!(finished, PieceReply::Complete(_)));
    drive.control.expire_all_sessions();
    let gone = client.status(&open, 2 * UNIT).await;
    assert!(
        matches!(gone, Err(DriveError::SessionGone { .. })),
        "{gone:?}"
    );
    assert_eq!(client.status(&done, 10).await?, finished);
    assert_eq!(drive.control.stats().sessions_expired, 1);
    Ok(())
}

#[tokio::test]
async fn failed_puts_answer_the_armed_status_and_commit_nothing() -> TestResult {
    let drive = default_drive().await?;
    let client = drive.client();
    let total = 2 * UNIT;
    let session = client.initiate("f", "a/b", total).await?;
    drive.control.fail_next_puts(503, 2);
    for attempt in 1..=2 {
        let reply = client
            .put_piece(&session, 0, vec![content(0, UNIT)], total)
            .await;
        match reply {
            Err(error @ DriveError::Unavailable { status: 503, .. }) => {
                assert!(error.is_retryable(), "attempt {attempt}");
            }
            other => return Err(format!("attempt {attempt}: {other:?}").into()),
        }
        assert!(drive.control.commit_log().is_empty(), "attempt {attempt}");
    }
    // Status queries are not failed by the fault.
    assert_eq!(
        client.status(&session, total).await?,
        PieceReply::Incomplete { held_bytes: 0 }
    );
    assert_eq!(
        client
            .put_piece(&session, 0, vec![content(0, UNIT)], total)
            .await?,
        PieceReply::Incomplete { held_bytes: UNIT }
    );
    drive.control.fail_next_puts(429, 1);
    let limited = client
        .put_piece(&session, UNIT, vec![content(UNIT, UNIT)], total)
        .await;
    assert!(
        matches!(limited, Err(DriveError::RateLimited { status: 429, .. })),
        "{limited:?}"
    );
    // A 403 naming rateLimitExceeded is a rate limit too; not a refusal.
    drive.control.fail_next_puts(403, 1);
    let limited = client
        .put_piece(&session, UNIT, vec![content(UNIT, UNIT)], total)
        .await;
    assert!(
        matches!(limited, Err(DriveError::RateLimited { status: 403, .. })),
        "{limited:?}"
    );
    let stats = drive.control.stats();
    assert_eq!((stats.faults_injected, stats.pieces_accepted), (4, 1));
    assert_eq!(
        drive.control.commit_log(),
        vec![CommitRecord {
            upload_id: session.upload_id().to_owned(),
            first_byte: 0,
            end_byte_exclusive: UNIT,
        }]
    );
    Ok(())
}

#[tokio::test]
async fn truncated_piece_answers_the_true_range_and_the_upload_resumes() -> TestResult {
    let drive = default_drive().await?;
    let client = drive.client();
    let total = 4 * UNIT + 77;
    let session = client.initiate("t", "a/b", total).await?;
    // Keep 1.5 units: rounds down to one.
    drive.control.truncate_next_piece(UNIT + UNIT / 2);
    let reply = client
        .put_piece(&session, 0, vec![content(0, 4 * UNIT)], total)
        .await?;
    assert_eq!(reply, PieceReply::Incomplete { held_bytes: UNIT });
    // The client resumes from what the drive holds.
    let reply = client
        .put_piece(&session, UNIT, vec![content(UNIT, total - UNIT)], total)
        .await?;
    let PieceReply::Complete(resource) = reply else {
        return Err(format!("{reply:?}").into());
    };
    assert_eq!(resource.crc64nvme, digest_of(0, total));
    assert_eq!(records(&drive.control), vec![(0, UNIT), (UNIT, total)]);
    assert_eq!(drive.control.stats().faults_injected, 1);
    Ok(())
}

/// This is a regression test that ensures a piece whose connection breaks
/// commits only whole 256 KiB units: the half unit that arrived before the
/// break is dropped, and the client resumes from the `Range` it is told.
#[tokio::test]
async fn broken_piece_commits_whole_units_only() -> TestResult {
    let drive = default_drive().await?;
    let client = drive.client();
    let total = 4 * UNIT;
    let session = client.initiate("broken", "a/b", total).await?;
    {
        let mut stream = tokio::net::TcpStream::connect(&drive.addr).await?;
        let head = format!(
            "PUT {} HTTP/1.1\r\nhost: {}\r\ncontent-length: {}\r\ncontent-range: bytes 0-{}/{total}\r\n\r\n",
            drive.target(&session),
            drive.addr,
            2 * UNIT,
            2 * UNIT - 1,
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&content(0, UNIT + UNIT / 2)).await?;
        stream.shutdown().await?;
    }
    // Wait for the first unit to land, then for the broken piece to let go of
    // the session (a PUT meanwhile answers 503 busy).
    let mut polls = 0;
    while client.status(&session, total).await? != (PieceReply::Incomplete { held_bytes: UNIT }) {
        polls += 1;
        assert!(polls < 500, "the first unit never landed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let resource = loop {
        match client
            .put_piece(&session, UNIT, vec![content(UNIT, 3 * UNIT)], total)
            .await
        {
            Ok(PieceReply::Complete(resource)) => break resource,
            Err(DriveError::Unavailable { status: 503, .. }) if polls < 500 => {
                polls += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other => return Err(format!("resuming answered {other:?}").into()),
        }
    };
    assert_eq!(resource.crc64nvme, digest_of(0, total));
    assert_eq!(records(&drive.control), vec![(0, UNIT), (UNIT, total)]);
    Ok(())
}

#[tokio::test]
async fn oversized_piece_answers_413_before_reading_the_body() -> TestResult {
    let config = DriveConfig {
        piece_size_bytes_max: MIB,
        ..DriveConfig::default()
    };
    let drive = start_drive(
        config,
        Arc::new(ManualClock::default()),
        Arc::new(DigestStore),
    )
    .await?;
    let session = raw_initiate(&drive, 4 * MIB).await?;
    // Headers only: the server must answer without waiting for the body.
    let mut stream = tokio::net::TcpStream::connect(&drive.addr).await?;
    let head = format!(
        "PUT {} HTTP/1.1\r\nhost: {}\r\ncontent-length: {}\r\ncontent-range: bytes 0-{}/{}\r\n\r\n",
        drive.target(&session),
        drive.addr,
        2 * MIB,
        2 * MIB - 1,
        4 * MIB
    );
    stream.write_all(head.as_bytes()).await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains("2097152") && answer.contains("1048576"),
        "{answer}"
    );
    Ok(())
}

#[tokio::test]
async fn dir_store_round_trip_is_byte_identical_and_never_half_visible() -> TestResult {
    let scratch = TempDir::new("drive-roundtrip")?;
    let storage = Arc::new(DirStore::new(scratch.path()));
    let drive = start_drive(
        DriveConfig::default(),
        Arc::new(ManualClock::default()),
        storage,
    )
    .await?;
    let client = drive.client();
    let total = 2 * MIB + 5;
    let session = client.initiate("round trip.bin", "a/b", total).await?;
    let final_path = scratch
        .path()
        .join(format!("{}-round_trip.bin", session.upload_id()));
    let partial_path = scratch
        .path()
        .join(PARTIAL_DIR_NAME)
        .join(session.upload_id());

    let reply = client
        .put_piece(&session, 0, vec![content(0, MIB)], total)
        .await?;
    assert_eq!(reply, PieceReply::Incomplete { held_bytes: MIB });
    assert!(!final_path.exists(), "final name visible before completion");
    assert_eq!(std::fs::metadata(&partial_path)?.len(), MIB);

    let reply = client
        .put_piece(&session, MIB, vec![content(MIB, total - MIB)], total)
        .await?;
    assert!(matches!(reply, PieceReply::Complete(_)), "{reply:?}");
    assert_eq!(std::fs::read(&final_path)?, content(0, total).to_vec());
    assert!(!partial_path.exists(), "partial file left behind");

    // An expired session's partial file is discarded.
    let doomed = client.initiate("doomed", "a/b", total).await?;
    client
        .put_piece(&doomed, 0, vec![content(0, MIB)], total)
        .await?;
    let doomed_path = scratch
        .path()
        .join(PARTIAL_DIR_NAME)
        .join(doomed.upload_id());
    assert!(doomed_path.exists());
    drive.control.expire_all_sessions();
    assert!(!doomed_path.exists(), "expired partial file kept");
    Ok(())
}

/// Uploads 64 MiB in 8 MiB pieces between two turmoil hosts; returns the
/// finished file and the commit log.
fn turmoil_upload(seed: u64) -> TestResult<(Vec<FileResource>, Vec<CommitRecord>, String)> {
    const TOTAL_BYTES: u64 = 64 * MIB;
    const PIECE_BYTES: u64 = 8 * MIB;
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(60))
        // Few writes in flight: memory ≈ capacity × write size.
        .tcp_capacity(8)
        .build();
    let control_slot: Arc<Mutex<Option<DriveControl>>> = Arc::default();
    let slot = Arc::clone(&control_slot);
    sim.host("drive", move || {
        let slot = Arc::clone(&slot);
        async move {
            let config = DriveConfig {
                public_base_url: "http://drive:8080".to_owned(),
                seed,
                ..DriveConfig::default()
            };
            let server = DriveServer::new(
                config,
                Arc::new(SimClock::new(SystemTime::UNIX_EPOCH)),
                Arc::new(DigestStore),
            );
            *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(server.control());
            let listener = SimNetwork.listen("drive:8080").await?;
            server.serve(listener).await?;
            Ok(())
        }
    });
    let expected = Arc::new(Mutex::new(String::new()));
    let expected_slot = Arc::clone(&expected);
    sim.client("backend", async move {
        let client = DriveClient::new(Arc::new(SimNetwork), "http://drive:8080", Some("t".into()));
        let session = client
            .initiate("sim.bin", "application/octet-stream", TOTAL_BYTES)
            .await?;
        let mut digest = FileDigest::default();
        let mut offset = 0;
        let mut last = None;
        while offset < TOTAL_BYTES {
            let piece = content(offset, PIECE_BYTES);
            digest.update(&piece);
            last = Some(
                client
                    .put_piece(&session, offset, vec![piece], TOTAL_BYTES)
                    .await?,
            );
            offset += PIECE_BYTES;
        }
        let Some(PieceReply::Complete(resource)) = last else {
            return Err(format!("last piece answered {last:?}").into());
        };
        assert_eq!(resource.crc64nvme, digest.hex());
        assert_eq!(resource.size_bytes, TOTAL_BYTES);
        *expected_slot.lock().unwrap_or_else(PoisonError::into_inner) = digest.hex();
        Ok(())
    });
    sim.run().map_err(|e| e.to_string())?;
    let control = control_slot
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
        .ok_or("the drive host never started")?;
    let expected = expected
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    Ok((control.finished_files(), control.commit_log(), expected))
}

#[test]
fn turmoil_upload_of_64_mib_gets_the_right_checksum_deterministically() -> TestResult {
    let (files, log, expected) = turmoil_upload(42)?;
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].crc64nvme, expected);
    assert_eq!(files[0].size_bytes, 64 * MIB);
    // Eight pieces, each committed once, in order.
    assert_eq!(log.len(), 8);
    let mut next = 0;
    for record in &log {
        assert_eq!(record.first_byte, next);
        next = record.end_byte_exclusive;
    }
    assert_eq!(next, 64 * MIB);
    // Same seed, same ids; another seed, other ids.
    let (again, _, _) = turmoil_upload(42)?;
    assert_eq!(again, files);
    let (other, _, _) = turmoil_upload(43)?;
    assert_ne!(other[0].id, files[0].id);
    Ok(())
}
