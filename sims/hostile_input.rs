//! Hostile input against both real-mode servers, the backend (chunk API)
//! and the drive emulator (resumable protocol), wired exactly as `upsim
//! serve` and `upsim drive` wire them (`bind_backend`, `bind_drive`) but in
//! process, with short timeouts.
//!
//! Each case sends what a broken or malicious peer would, asserts the exact
//! status (and, for the backend, the stable `cause`), and asserts that no
//! stored byte changed: the drive's files (finished, partial, journal), the
//! backend's records and the upload's committed prefix and window are the
//! same before and after. The two cases that are meant to store bytes
//! (concurrent PUTs of the same chunk or piece) check instead that the bytes
//! were stored exactly once and are the source's. The cases are counted and
//! the count printed.

use crate::real_support::{raw_exchange, read_reply, request, RawReply, TempDir, TestResult};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use upsim::auth::TokenTable;
use upsim::checksum::{crc32c, crc32c_hex, FileDigest};
use upsim::payload::Payload;
use upsim::profile::{MemoryPolicy, Profile};
use upsim::real::{bind_backend, bind_drive, DriveSettings, ServeSettings};
use upsim::units::KIB;
use upsim::user::UserId;

const ALICE: &str = "hostile-alice-token-0000000001";
const BOB: &str = "hostile-bob-token-00000000000002";
const DRIVE_TOKEN: &str = "hostile-backend-drive-token-03";
const MALLORY_DRIVE: &str = "hostile-mallory-drive-token-04";
const CHUNK: u64 = 256 * KIB;
/// Short bounds, so that timeout cases take about a second.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(1);
const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(1);
const REPLY_TIMEOUT: Duration = Duration::from_secs(15);
const UPLOADS_PER_USER_MAX: u32 = 3;
const DRIVE_PATH: &str = "/upload/drive/v3/files";

struct Cases {
    server: &'static str,
    passed: Vec<String>,
}

impl Cases {
    fn new(server: &'static str) -> Self {
        Self {
            server,
            passed: Vec::new(),
        }
    }

    /// Asserts `reply`'s status (and backend cause), then counts the case.
    fn check(&mut self, name: &str, reply: &RawReply, status: u16, cause: Option<&str>) {
        assert_eq!(
            reply.status,
            status,
            "{} case {name:?}: {}",
            self.server,
            reply.text()
        );
        if let Some(cause) = cause {
            assert_eq!(
                reply.cause().as_deref(),
                Some(cause),
                "{} case {name:?}: {}",
                self.server,
                reply.text()
            );
        }
        self.passed.push(name.to_owned());
    }

    fn count(&mut self, name: &str) {
        self.passed.push(name.to_owned());
    }
}

/// Every file under `dirs` (not recursive): name, size and CRC-64.
fn files_fingerprint(dirs: &[PathBuf]) -> TestResult<Vec<(String, u64, String)>> {
    let mut out = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries {
            let path = entry?.path();
            if !path.is_file() {
                continue;
            }
            let bytes = std::fs::read(&path)?;
            let mut digest = FileDigest::default();
            digest.update(&bytes);
            out.push((
                path.to_string_lossy().into_owned(),
                bytes.len() as u64,
                digest.hex(),
            ));
        }
    }
    out.sort();
    Ok(out)
}

fn drive_dirs(drive_dir: &Path) -> Vec<PathBuf> {
    vec![
        drive_dir.to_owned(),
        drive_dir.join(".partial"),
        drive_dir.join(".sessions"),
    ]
}

/// Sends `headers` slowly, one byte every 200 ms, until the server closes
/// the connection; returns how long that took (or an error after 10 s).
async fn slowloris(addr: &str) -> TestResult<Duration> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let started = Instant::now();
    stream
        .write_all(b"PUT /uploads/x/chunks/0 HTTP/1.1\r\nhost: a\r\nx-slow: ")
        .await?;
    let (mut reader, mut writer) = stream.into_split();
    let closed = tokio::spawn(async move {
        let mut buf = [0u8; 1024];
        loop {
            match tokio::io::AsyncReadExt::read(&mut reader, &mut buf).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(_) => {}
            }
        }
    });
    for _ in 0..50 {
        if closed.is_finished() {
            break;
        }
        if writer.write_all(b"a").await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let at = tokio::time::timeout(Duration::from_secs(2), closed)
        .await
        .map_err(|_| "the server kept a trickling connection open for 10 s")??;
    Ok(at.duration_since(started))
}

fn tokens(pairs: &[(&str, &str)]) -> TestResult<TokenTable> {
    let pairs: Vec<(String, UserId)> = pairs
        .iter()
        .map(|(t, u)| Ok((t.to_string(), UserId::new(*u)?)))
        .collect::<Result<_, upsim::user::BadUserId>>()?;
    Ok(TokenTable::from_pairs(pairs)?)
}

struct Stack {
    backend: String,
    drive: String,
    drive_dir: PathBuf,
    state_dir: PathBuf,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.tasks.iter().for_each(|t| t.abort());
    }
}

async fn start(root: &Path) -> TestResult<Stack> {
    let drive_dir = root.join("drive");
    let mut drive = DriveSettings::new("127.0.0.1:0", &drive_dir);
    drive.tokens = Some(tokens(&[
        (DRIVE_TOKEN, "backend"),
        (MALLORY_DRIVE, "mallory"),
    ])?);
    drive.header_read_timeout = HEADER_READ_TIMEOUT;
    drive.piece_idle_timeout = BODY_IDLE_TIMEOUT;
    let bound_drive = bind_drive(&drive).await?;
    let drive_addr = bound_drive.addr.to_string();
    let drive_task = tokio::spawn(async move {
        let _ = bound_drive.server.serve(bound_drive.listener).await;
    });
    let drive_token = root.join("drive-token");
    std::fs::write(&drive_token, DRIVE_TOKEN)?;
    let profile = Profile {
        name: "hostile".into(),
        chunk_size_bytes: CHUNK,
        memory_per_upload: MemoryPolicy::ChunkWindow { chunks: 4 },
        ..Profile::dev()
    };
    let state_dir = root.join("state");
    let mut serve = ServeSettings::new("127.0.0.1:0", profile, format!("http://{drive_addr}"));
    serve.state_dir = Some(state_dir.clone());
    serve.tokens = Some(tokens(&[(ALICE, "alice"), (BOB, "bob")])?);
    serve.drive_token_file = Some(drive_token);
    serve.uploads_per_user_max = UPLOADS_PER_USER_MAX;
    serve.header_read_timeout = HEADER_READ_TIMEOUT;
    serve.chunk_body_idle_timeout = BODY_IDLE_TIMEOUT;
    let bound = bind_backend(&serve).await?;
    let backend_addr = bound.addr.to_string();
    let backend_task = tokio::spawn(async move {
        let _ = bound
            .backend
            .run_until(bound.listener, std::future::pending())
            .await;
    });
    Ok(Stack {
        backend: backend_addr,
        drive: drive_addr,
        drive_dir,
        state_dir,
        tasks: vec![drive_task, backend_task],
    })
}

fn bearer(token: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {token}"))
}

fn chunk_bytes(payload: &Payload, index: u64) -> Vec<u8> {
    let offset = index * CHUNK;
    let len = CHUNK.min(payload.size_bytes_total() - offset);
    let mut buf = vec![0u8; len as usize];
    payload.fill(offset, &mut buf);
    buf
}

async fn create(stack: &Stack, token: &str, size: u64) -> TestResult<RawReply> {
    let body = serde_json::json!({ "file_name": "h.bin", "file_size_bytes": size }).to_string();
    raw_exchange(
        &stack.backend,
        &request(
            "POST",
            &stack.backend,
            "/uploads",
            &[bearer(token)],
            body.as_bytes(),
        ),
        REPLY_TIMEOUT,
    )
    .await
}

fn upload_id(reply: &RawReply) -> TestResult<String> {
    let value: serde_json::Value = serde_json::from_slice(&reply.body)?;
    Ok(value["upload_id"]
        .as_str()
        .ok_or("no upload_id")?
        .to_owned())
}

async fn put_chunk(
    stack: &Stack,
    token: &str,
    id: &str,
    index: &str,
    extra: &[(&str, String)],
    body: &[u8],
) -> TestResult<RawReply> {
    let mut headers = vec![bearer(token)];
    headers.extend(extra.iter().cloned());
    raw_exchange(
        &stack.backend,
        &request(
            "PUT",
            &stack.backend,
            &format!("/uploads/{id}/chunks/{index}"),
            &headers,
            body,
        ),
        REPLY_TIMEOUT,
    )
    .await
}

async fn status_of(stack: &Stack, token: &str, id: &str) -> TestResult<serde_json::Value> {
    let reply = raw_exchange(
        &stack.backend,
        &request(
            "GET",
            &stack.backend,
            &format!("/uploads/{id}"),
            &[bearer(token)],
            b"",
        ),
        REPLY_TIMEOUT,
    )
    .await?;
    assert_eq!(reply.status, 200, "{}", reply.text());
    Ok(serde_json::from_slice(&reply.body)?)
}

/// What the backend case matrix must leave unchanged.
async fn backend_fingerprint(
    stack: &Stack,
    id: &str,
) -> TestResult<(u64, String, Vec<(String, u64, String)>)> {
    let status = status_of(stack, ALICE, id).await?;
    let mut dirs = drive_dirs(&stack.drive_dir);
    dirs.push(stack.state_dir.clone());
    Ok((
        status["committed_bytes"].as_u64().unwrap_or(u64::MAX),
        status["chunks_buffered"].to_string(),
        files_fingerprint(&dirs)?,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_refuses_hostile_input_and_stores_nothing() -> TestResult {
    let tmp = TempDir::new("hostile-backend")?;
    let stack = start(tmp.path()).await?;
    let mut cases = Cases::new("backend");
    // Nine chunks; the window holds four beyond the committed prefix.
    let size = 8 * CHUNK + 1000;
    let payload = Payload::new(77, size);
    let chunk = |i: u64| chunk_bytes(&payload, i);
    let sum = |b: &[u8]| (upsim::chunk_api::CHECKSUM_HEADER, crc32c_hex(crc32c(b)));
    let b = stack.backend.clone();

    // The target upload, with chunk 0 on the drive; two more uploads bring
    // alice to her limit of three.
    let created = create(&stack, ALICE, size).await?;
    assert_eq!(created.status, 201, "{}", created.text());
    let id = upload_id(&created)?;
    let reply = put_chunk(&stack, ALICE, &id, "0", &[sum(&chunk(0))], &chunk(0)).await?;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let mut committed = false;
    for _ in 0..500 {
        if status_of(&stack, ALICE, &id).await?["committed_bytes"] == CHUNK {
            committed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(committed, "chunk 0 never reached the drive");
    let _second = upload_id(&create(&stack, ALICE, CHUNK).await?)?;
    let third = upload_id(&create(&stack, ALICE, CHUNK).await?)?;
    let baseline = backend_fingerprint(&stack, &id).await?;

    macro_rules! case {
        ($name:expr, $reply:expr, $status:expr, $cause:expr) => {{
            let reply: RawReply = $reply;
            cases.check($name, &reply, $status, $cause);
            assert_eq!(
                backend_fingerprint(&stack, &id).await?,
                baseline,
                "case {:?} changed stored bytes",
                $name
            );
            reply
        }};
    }
    let create_body = |size: u64| {
        serde_json::json!({ "file_name": "x.bin", "file_size_bytes": size })
            .to_string()
            .into_bytes()
    };
    let post =
        |headers: &[(&str, String)], body: &[u8]| request("POST", &b, "/uploads", headers, body);

    // Credentials.
    let r = case!(
        "create without a token",
        raw_exchange(&b, &post(&[], &create_body(10)), REPLY_TIMEOUT).await?,
        401,
        Some("unauthenticated")
    );
    assert!(r
        .header("www-authenticate")
        .is_some_and(|v| v.starts_with("Bearer")));
    case!(
        "create with an unknown token",
        raw_exchange(
            &b,
            &post(&[bearer("not-a-known-token-123456")], &create_body(10)),
            REPLY_TIMEOUT
        )
        .await?,
        401,
        Some("unauthenticated")
    );
    case!(
        "create with a Basic credential",
        raw_exchange(
            &b,
            &post(
                &[("authorization", "Basic YWxpY2U6cHc=".into())],
                &create_body(10)
            ),
            REPLY_TIMEOUT
        )
        .await?,
        401,
        Some("unauthenticated")
    );
    case!(
        "create naming a user in x-upsim-user (token mode ignores it)",
        raw_exchange(
            &b,
            &post(&[("x-upsim-user", "alice".into())], &create_body(10)),
            REPLY_TIMEOUT
        )
        .await?,
        401,
        Some("unauthenticated")
    );
    case!(
        "status of another user's upload",
        raw_exchange(
            &b,
            &request("GET", &b, &format!("/uploads/{id}"), &[bearer(BOB)], b""),
            REPLY_TIMEOUT
        )
        .await?,
        404,
        Some("unknown_upload")
    );
    case!(
        "chunk to another user's upload",
        put_chunk(&stack, BOB, &id, "1", &[sum(&chunk(1))], &chunk(1)).await?,
        404,
        Some("unknown_upload")
    );
    case!(
        "abort of another user's upload",
        raw_exchange(
            &b,
            &request("DELETE", &b, &format!("/uploads/{id}"), &[bearer(BOB)], b""),
            REPLY_TIMEOUT
        )
        .await?,
        404,
        Some("unknown_upload")
    );
    case!(
        "chunk to an unknown upload id",
        put_chunk(
            &stack,
            ALICE,
            "0123456789abcdef0123456789abcdef",
            "1",
            &[sum(&chunk(1))],
            &chunk(1)
        )
        .await?,
        404,
        Some("unknown_upload")
    );
    case!(
        "chunk to a path-traversal upload id",
        put_chunk(
            &stack,
            ALICE,
            "..%2F..%2Fetc%2Fpasswd",
            "1",
            &[sum(&chunk(1))],
            &chunk(1)
        )
        .await?,
        404,
        Some("unknown_upload")
    );
    // Creates.
    case!(
        "create body over 4 KiB",
        raw_exchange(
            &b,
            &post(&[bearer(ALICE)], &vec![b' '; 5 * 1024]),
            REPLY_TIMEOUT
        )
        .await?,
        413,
        Some("bad_request")
    );
    case!(
        "create body that is not JSON",
        raw_exchange(
            &b,
            &post(&[bearer(ALICE)], b"{\"file_name\":"),
            REPLY_TIMEOUT
        )
        .await?,
        400,
        Some("bad_request")
    );
    case!(
        "create of an empty file",
        raw_exchange(&b, &post(&[bearer(BOB)], &create_body(0)), REPLY_TIMEOUT).await?,
        400,
        Some("empty_file")
    );
    case!(
        "create of a file over the size limit (u64::MAX)",
        raw_exchange(
            &b,
            &post(&[bearer(BOB)], &create_body(u64::MAX)),
            REPLY_TIMEOUT
        )
        .await?,
        413,
        Some("file_too_large")
    );
    let r = case!(
        "a fourth upload at once (limit three per user)",
        raw_exchange(&b, &post(&[bearer(ALICE)], &create_body(10)), REPLY_TIMEOUT).await?,
        429,
        Some("too_many_uploads")
    );
    assert!(r.header("retry-after").is_some(), "429 without Retry-After");
    // Chunk framing and checks.
    case!(
        "chunk without a checksum",
        put_chunk(&stack, ALICE, &id, "1", &[], &chunk(1)).await?,
        400,
        Some("bad_checksum")
    );
    case!(
        "chunk with a malformed checksum",
        put_chunk(
            &stack,
            ALICE,
            &id,
            "1",
            &[(upsim::chunk_api::CHECKSUM_HEADER, "zz".into())],
            &chunk(1)
        )
        .await?,
        400,
        Some("bad_checksum")
    );
    case!(
        "chunk with the wrong checksum",
        put_chunk(&stack, ALICE, &id, "1", &[sum(&chunk(2))], &chunk(1)).await?,
        400,
        Some("checksum_mismatch")
    );
    let mut long = chunk(1);
    long.extend_from_slice(&[0u8; 100]);
    case!(
        "chunk declaring more bytes than the chunk has",
        put_chunk(&stack, ALICE, &id, "1", &[sum(&long)], &long).await?,
        413,
        Some("bad_chunk_length")
    );
    let short = &chunk(1)[..1000];
    case!(
        "chunk declaring fewer bytes than the chunk has",
        put_chunk(&stack, ALICE, &id, "1", &[sum(short)], short).await?,
        400,
        Some("bad_chunk_length")
    );
    // The body is longer than its Content-Length: the server reads what was
    // declared (the checksum covers more, so it cannot match); the extra
    // bytes would be the next request.
    let mut framed = request(
        "PUT",
        &b,
        &format!("/uploads/{id}/chunks/1"),
        &[
            bearer(ALICE),
            sum(&long),
            ("content-length", CHUNK.to_string()),
        ],
        &long,
    );
    framed.extend_from_slice(b"\r\n");
    case!(
        "chunk body longer than its Content-Length",
        raw_exchange(&b, &framed, REPLY_TIMEOUT).await?,
        400,
        Some("checksum_mismatch")
    );
    let half = &chunk(1)[..(CHUNK / 2) as usize];
    let started = Instant::now();
    case!(
        "chunk body shorter than its Content-Length (the rest never comes)",
        raw_exchange(
            &b,
            &request(
                "PUT",
                &b,
                &format!("/uploads/{id}/chunks/1"),
                &[
                    bearer(ALICE),
                    sum(&chunk(1)),
                    ("content-length", CHUNK.to_string())
                ],
                half
            ),
            REPLY_TIMEOUT
        )
        .await?,
        408,
        Some("body_timeout")
    );
    assert!(started.elapsed() < BODY_IDLE_TIMEOUT + Duration::from_secs(3));
    case!(
        "chunk without Content-Length (chunked encoding)",
        raw_exchange(
            &b,
            &request(
                "PUT",
                &b,
                &format!("/uploads/{id}/chunks/1"),
                &[
                    bearer(ALICE),
                    sum(b"abc"),
                    ("transfer-encoding", "chunked".into())
                ],
                b"3\r\nabc\r\n0\r\n\r\n"
            ),
            REPLY_TIMEOUT
        )
        .await?,
        411,
        Some("length_required")
    );
    case!(
        "chunk index beyond the last chunk",
        put_chunk(&stack, ALICE, &id, "9", &[sum(&chunk(1))], &chunk(1)).await?,
        416,
        Some("bad_chunk_index")
    );
    case!(
        "chunk index that is not a number",
        put_chunk(&stack, ALICE, &id, "-1", &[sum(&chunk(1))], &chunk(1)).await?,
        400,
        Some("bad_chunk_index")
    );
    case!(
        "chunk index overflowing u32",
        put_chunk(
            &stack,
            ALICE,
            &id,
            "4294967296",
            &[sum(&chunk(1))],
            &chunk(1)
        )
        .await?,
        400,
        Some("bad_chunk_index")
    );
    // Chunk 0 is committed: the window is chunks [1, 5).
    let r = case!(
        "chunk beyond the reorder window",
        put_chunk(&stack, ALICE, &id, "6", &[sum(&chunk(6))], &chunk(6)).await?,
        503,
        Some("window_full")
    );
    assert!(r.header("retry-after").is_some(), "503 without Retry-After");
    // Headers.
    let big = "a".repeat(20 * 1024);
    case!(
        "20 KiB of headers (over the 16 KiB limit)",
        raw_exchange(
            &b,
            &post(&[bearer(ALICE), ("x-big", big)], &create_body(10)),
            REPLY_TIMEOUT
        )
        .await?,
        431,
        Some("header_too_large")
    );
    let huge = "a".repeat(100 * 1024);
    case!(
        "100 KiB of headers (over hyper's buffer)",
        raw_exchange(
            &b,
            &post(&[bearer(ALICE), ("x-huge", huge)], &create_body(10)),
            REPLY_TIMEOUT
        )
        .await?,
        431,
        None
    );
    let closed_after = slowloris(&b).await?;
    assert!(
        closed_after < HEADER_READ_TIMEOUT + Duration::from_secs(2),
        "slowloris held the backend for {closed_after:?}"
    );
    assert_eq!(backend_fingerprint(&stack, &id).await?, baseline);
    cases.count("slowloris: headers trickled");
    let r = case!(
        "health check without a token (answered, naming no user)",
        raw_exchange(&b, &request("GET", &b, "/healthz", &[], b""), REPLY_TIMEOUT).await?,
        200,
        None
    );
    assert!(!r.text().contains("alice"), "{}", r.text());
    assert!(
        r.text().contains("\"per_user_redacted\":true"),
        "{}",
        r.text()
    );
    case!(
        "PATCH on an upload",
        raw_exchange(
            &b,
            &request(
                "PATCH",
                &b,
                &format!("/uploads/{id}"),
                &[bearer(ALICE)],
                b""
            ),
            REPLY_TIMEOUT
        )
        .await?,
        405,
        Some("method_not_allowed")
    );
    // An aborted upload takes no chunk.
    let aborted = raw_exchange(
        &b,
        &request(
            "DELETE",
            &b,
            &format!("/uploads/{third}"),
            &[bearer(ALICE)],
            b"",
        ),
        REPLY_TIMEOUT,
    )
    .await?;
    assert_eq!(aborted.status, 200, "{}", aborted.text());
    let baseline_after_abort = backend_fingerprint(&stack, &id).await?;
    // The third upload is one chunk long: chunk 0 of the payload fits it.
    let one = chunk(0);
    let reply = put_chunk(&stack, ALICE, &third, "0", &[sum(&one)], &one).await?;
    cases.check(
        "chunk for an aborted upload",
        &reply,
        410,
        Some("upload_failed"),
    );
    assert_eq!(
        backend_fingerprint(&stack, &id).await?,
        baseline_after_abort
    );

    // The same chunk twice at once: both accepted, stored once.
    let (one_bytes, one_sum) = (chunk(1), [sum(&chunk(1))]);
    let (a, c) = tokio::join!(
        put_chunk(&stack, ALICE, &id, "1", &one_sum, &one_bytes),
        put_chunk(&stack, ALICE, &id, "1", &one_sum, &one_bytes),
    );
    let (a, c) = (a?, c?);
    assert_eq!(
        (a.status, c.status),
        (200, 200),
        "{} / {}",
        a.text(),
        c.text()
    );
    for i in 2..9u64 {
        let mut tries = 0;
        loop {
            let r = put_chunk(
                &stack,
                ALICE,
                &id,
                &i.to_string(),
                &[sum(&chunk(i))],
                &chunk(i),
            )
            .await?;
            // The window moves as the drive commits: wait for it.
            if r.status == 503 && tries < 500 {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            assert_eq!(r.status, 200, "chunk {i}: {}", r.text());
            break;
        }
    }
    let mut done = serde_json::Value::Null;
    for _ in 0..500 {
        done = status_of(&stack, ALICE, &id).await?;
        if done["phase"] == "complete" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(done["phase"], "complete", "{done}");
    assert_eq!(done["file"]["crc64nvme"], payload.digest(1 << 20).hex());
    cases.count("concurrent PUTs of the same chunk");

    eprintln!(
        "hostile_input: backend: {} cases passed: {}",
        cases.passed.len(),
        cases.passed.join("; ")
    );
    assert_eq!(cases.passed.len(), 33, "{}", cases.passed.join("; "));
    Ok(())
}

/// A drive session URI's `upload_id`.
fn session_id(reply: &RawReply) -> TestResult<String> {
    let location = reply.header("location").ok_or("no Location")?;
    Ok(location
        .split("upload_id=")
        .nth(1)
        .ok_or("no upload_id in Location")?
        .to_owned())
}

async fn drive_put(
    stack: &Stack,
    token: Option<&str>,
    id: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> TestResult<RawReply> {
    let mut all: Vec<(&str, String)> = token.map(bearer).into_iter().collect();
    all.extend(headers.iter().cloned());
    raw_exchange(
        &stack.drive,
        &request(
            "PUT",
            &stack.drive,
            &format!("{DRIVE_PATH}?uploadType=resumable&upload_id={id}"),
            &all,
            body,
        ),
        REPLY_TIMEOUT,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drive_refuses_hostile_input_and_stores_nothing() -> TestResult {
    let tmp = TempDir::new("hostile-drive")?;
    let stack = start(tmp.path()).await?;
    let mut cases = Cases::new("drive");
    let d = stack.drive.clone();
    let unit = CHUNK;
    let total = 4 * unit + 1000;
    let payload = Payload::new(99, total);
    let bytes = |from: u64, to: u64| {
        let mut v = vec![0u8; (to - from) as usize];
        payload.fill(from, &mut v);
        v
    };
    let range = |first: u64, last: u64| ("content-range", format!("bytes {first}-{last}/{total}"));
    let initiate = |headers: &[(&str, String)], body: &[u8]| {
        request(
            "POST",
            &d,
            &format!("{DRIVE_PATH}?uploadType=resumable"),
            headers,
            body,
        )
    };

    // The target session, two units held.
    let started = raw_exchange(
        &d,
        &initiate(
            &[
                bearer(DRIVE_TOKEN),
                ("x-upload-content-length", total.to_string()),
            ],
            br#"{"name":"t.bin"}"#,
        ),
        REPLY_TIMEOUT,
    )
    .await?;
    assert_eq!(started.status, 200, "{}", started.text());
    let id = session_id(&started)?;
    let held = drive_put(
        &stack,
        Some(DRIVE_TOKEN),
        &id,
        &[range(0, 2 * unit - 1)],
        &bytes(0, 2 * unit),
    )
    .await?;
    assert_eq!(held.status, 308, "{}", held.text());
    assert_eq!(
        held.header("range"),
        Some(format!("bytes=0-{}", 2 * unit - 1).as_str())
    );
    let status_query = |token: &'static str| {
        let (stack, id) = (&stack, id.clone());
        async move {
            drive_put(
                stack,
                Some(token),
                &id,
                &[("content-range", format!("bytes */{total}"))],
                b"",
            )
            .await
        }
    };
    let fingerprint = || async {
        let status = status_query(DRIVE_TOKEN).await?;
        TestResult::Ok((
            status.status,
            status.header("range").map(str::to_owned),
            files_fingerprint(&drive_dirs(&stack.drive_dir))?,
        ))
    };
    let baseline = fingerprint().await?;
    assert_eq!(
        baseline.1.as_deref(),
        Some(format!("bytes=0-{}", 2 * unit - 1).as_str())
    );

    macro_rules! case {
        ($name:expr, $reply:expr, $status:expr) => {{
            let reply: RawReply = $reply;
            cases.check($name, &reply, $status, None);
            assert_eq!(
                fingerprint().await?,
                baseline,
                "case {:?} changed stored bytes",
                $name
            );
            reply
        }};
    }
    let next = bytes(2 * unit, 3 * unit);
    let r = case!(
        "initiate without a token",
        raw_exchange(&d, &initiate(&[], b"{}"), REPLY_TIMEOUT).await?,
        401
    );
    assert!(r.header("www-authenticate").is_some());
    case!(
        "piece with an unknown token",
        drive_put(
            &stack,
            Some("not-a-known-token-123456"),
            &id,
            &[range(2 * unit, 3 * unit - 1)],
            &next
        )
        .await?,
        401
    );
    case!(
        "piece without a token",
        drive_put(&stack, None, &id, &[range(2 * unit, 3 * unit - 1)], &next).await?,
        401
    );
    case!(
        "piece to another user's session",
        drive_put(
            &stack,
            Some(MALLORY_DRIVE),
            &id,
            &[range(2 * unit, 3 * unit - 1)],
            &next
        )
        .await?,
        404
    );
    case!(
        "status of another user's session",
        status_query(MALLORY_DRIVE).await?,
        404
    );
    case!(
        "piece to an unknown session",
        drive_put(
            &stack,
            Some(DRIVE_TOKEN),
            "0123456789abcdef0123456789abcdef",
            &[range(0, unit - 1)],
            &bytes(0, unit)
        )
        .await?,
        404
    );
    case!(
        "piece without Content-Range",
        drive_put(&stack, Some(DRIVE_TOKEN), &id, &[], &next).await?,
        400
    );
    case!(
        "malformed Content-Range",
        drive_put(
            &stack,
            Some(DRIVE_TOKEN),
            &id,
            &[("content-range", "bytes abc".into())],
            &next
        )
        .await?,
        400
    );
    case!(
        "Content-Range going backwards",
        drive_put(
            &stack,
            Some(DRIVE_TOKEN),
            &id,
            &[(
                "content-range",
                format!("bytes {}-{}/{total}", 3 * unit - 1, 2 * unit)
            )],
            &next
        )
        .await?,
        400
    );
    case!(
        "Content-Range past the total",
        drive_put(
            &stack,
            Some(DRIVE_TOKEN),
            &id,
            &[(
                "content-range",
                format!("bytes {}-{}/{total}", 2 * unit, total)
            )],
            &next
        )
        .await?,
        400
    );
    case!(
        "Content-Range with another total than declared",
        drive_put(
            &stack,
            Some(DRIVE_TOKEN),
            &id,
            &[(
                "content-range",
                format!("bytes {}-{}/{}", 2 * unit, 3 * unit - 1, total + 1)
            )],
            &next
        )
        .await?,
        400
    );
    case!(
        "Content-Range overflowing u64",
        drive_put(
            &stack,
            Some(DRIVE_TOKEN),
            &id,
            &[("content-range", "bytes 0-18446744073709551615/*".into())],
            &next
        )
        .await?,
        400
    );
    case!(
        "Content-Range with a 21-digit number",
        drive_put(
            &stack,
            Some(DRIVE_TOKEN),
            &id,
            &[("content-range", "bytes 0-100000000000000000000/*".into())],
            &next
        )
        .await?,
        400
    );
    case!(
        "piece leaving a gap",
        drive_put(
            &stack,
            Some(DRIVE_TOKEN),
            &id,
            &[range(3 * unit, 4 * unit - 1)],
            &next
        )
        .await?,
        400
    );
    let r = case!(
        "piece overlapping only bytes already held",
        drive_put(
            &stack,
            Some(DRIVE_TOKEN),
            &id,
            &[range(0, unit - 1)],
            &bytes(0, unit)
        )
        .await?,
        308
    );
    assert_eq!(r.header("range").map(str::to_owned), baseline.1);
    case!(
        "piece not a multiple of 256 KiB and not the last",
        drive_put(
            &stack,
            Some(DRIVE_TOKEN),
            &id,
            &[range(2 * unit, 2 * unit + 99)],
            &next[..100]
        )
        .await?,
        400
    );
    case!(
        "Content-Length disagreeing with Content-Range",
        drive_put(
            &stack,
            Some(DRIVE_TOKEN),
            &id,
            &[range(2 * unit, 3 * unit - 1)],
            &next[..1000]
        )
        .await?,
        400
    );
    case!(
        "status query carrying a body",
        drive_put(
            &stack,
            Some(DRIVE_TOKEN),
            &id,
            &[("content-range", format!("bytes */{total}"))],
            b"0123456789"
        )
        .await?,
        400
    );
    let r = case!(
        "piece body shorter than its Content-Length (the rest never comes)",
        drive_put(
            &stack,
            Some(DRIVE_TOKEN),
            &id,
            &[
                range(2 * unit, 3 * unit - 1),
                ("content-length", unit.to_string())
            ],
            &next[..(unit / 2) as usize]
        )
        .await?,
        308
    );
    assert_eq!(
        r.header("range").map(str::to_owned),
        baseline.1,
        "half a unit is not committed"
    );
    case!(
        "piece over the 256 MiB piece limit",
        drive_put(
            &stack,
            Some(DRIVE_TOKEN),
            &id,
            &[
                (
                    "content-range",
                    format!("bytes 0-{}/*", 300 * 1024 * 1024 - 1)
                ),
                ("content-length", (300u64 * 1024 * 1024).to_string())
            ],
            b""
        )
        .await?,
        413
    );
    case!(
        "piece without Content-Length (chunked encoding)",
        drive_put(
            &stack,
            Some(DRIVE_TOKEN),
            &id,
            &[
                range(2 * unit, 2 * unit + 2),
                ("transfer-encoding", "chunked".into())
            ],
            b"3\r\nabc\r\n0\r\n\r\n"
        )
        .await?,
        411
    );
    case!(
        "initiation metadata over 64 KiB",
        raw_exchange(
            &d,
            &initiate(&[bearer(DRIVE_TOKEN)], &vec![b' '; 100 * 1024]),
            REPLY_TIMEOUT
        )
        .await?,
        413
    );
    case!(
        "DELETE on the upload path",
        raw_exchange(
            &d,
            &request(
                "DELETE",
                &d,
                &format!("{DRIVE_PATH}?upload_id={id}"),
                &[bearer(DRIVE_TOKEN)],
                b""
            ),
            REPLY_TIMEOUT
        )
        .await?,
        405
    );
    case!(
        "20 KiB of headers (over the 16 KiB limit)",
        drive_put(
            &stack,
            Some(DRIVE_TOKEN),
            &id,
            &[
                range(2 * unit, 3 * unit - 1),
                ("x-big", "a".repeat(20 * 1024))
            ],
            &next
        )
        .await?,
        431
    );
    case!(
        "100 KiB of headers (over hyper's buffer)",
        drive_put(
            &stack,
            Some(DRIVE_TOKEN),
            &id,
            &[
                range(2 * unit, 3 * unit - 1),
                ("x-huge", "a".repeat(100 * 1024))
            ],
            &next
        )
        .await?,
        431
    );
    let closed_after = slowloris(&d).await?;
    assert!(
        closed_after < HEADER_READ_TIMEOUT + Duration::from_secs(2),
        "slowloris held the drive for {closed_after:?}"
    );
    assert_eq!(fingerprint().await?, baseline);
    cases.count("slowloris: headers trickled");

    // The same piece twice at once: it is committed exactly once.
    let piece_range = [range(2 * unit, 3 * unit - 1)];
    let (a, c) = tokio::join!(
        drive_put(&stack, Some(DRIVE_TOKEN), &id, &piece_range, &next),
        drive_put(&stack, Some(DRIVE_TOKEN), &id, &piece_range, &next),
    );
    let (a, c) = (a?, c?);
    for r in [&a, &c] {
        assert!(matches!(r.status, 308 | 503), "{}: {}", r.status, r.text());
    }
    assert!(
        a.status == 308 || c.status == 308,
        "neither piece was taken"
    );
    let after = status_query(DRIVE_TOKEN).await?;
    assert_eq!(
        after.header("range"),
        Some(format!("bytes=0-{}", 3 * unit - 1).as_str())
    );
    let partial = std::fs::read(stack.drive_dir.join(".partial").join(&id))?;
    assert_eq!(
        partial,
        bytes(0, 3 * unit),
        "the partial file holds each byte once"
    );
    cases.count("concurrent PUTs of the same piece");
    let mut reply_reader = tokio::net::TcpStream::connect(&d).await?;
    reply_reader
        .write_all(&request(
            "PUT",
            &d,
            &format!("{DRIVE_PATH}?uploadType=resumable&upload_id={id}"),
            &[bearer(DRIVE_TOKEN), range(3 * unit, total - 1)],
            &bytes(3 * unit, total),
        ))
        .await?;
    let finished = tokio::time::timeout(REPLY_TIMEOUT, read_reply(&mut reply_reader)).await??;
    assert_eq!(finished.status, 200, "{}", finished.text());

    eprintln!(
        "hostile_input: drive: {} cases passed: {}",
        cases.passed.len(),
        cases.passed.join("; ")
    );
    assert_eq!(cases.passed.len(), 27, "{}", cases.passed.join("; "));
    Ok(())
}
