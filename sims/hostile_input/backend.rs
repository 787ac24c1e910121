//! Hostile input against the backend's chunk API: a table of refused
//! requests, then the cases that need a sequence (a trickled header, an
//! aborted upload, concurrent PUTs of one chunk).

use super::{report, start, Also, Case, Server, ALICE, BOB, BODY_IDLE_TIMEOUT, CHUNK};
use crate::support::{
    bearer, checksum as sum, chunk_of, chunk_request, create_body, raw_exchange, request, unframed,
    upload_id, FileFingerprint, Header, RawReply, Stack, TempDir, TestResult, REPLY_TIMEOUT,
};
use std::time::Duration;
use upsim::chunk_api::CHECKSUM_HEADER;
use upsim::payload::Payload;

/// Cases in all: the table, the trickled header, the aborted upload and
/// the concurrent PUTs (a row dropped from a table is a change to review).
const CASES_TOTAL: usize = 40;
const _: () = assert!(CASES.len() + 1 + AFTER_ABORT.len() + 1 == CASES_TOTAL);

/// Nine chunks; the window holds four beyond the committed prefix.
const SIZE_BYTES: u64 = 8 * CHUNK + 1000;

/// What the cases' requests are built from.
struct Target {
    addr: String,
    /// alice's upload under attack: nine chunks, chunk 0 on the drive.
    id: String,
    /// alice's third upload (one chunk), aborted before its case.
    third: String,
    payload: Payload,
}

impl Target {
    fn chunk(&self, index: u64) -> Vec<u8> {
        chunk_of(&self.payload, CHUNK, index)
    }

    fn put(&self, token: &str, id: &str, index: &str, extra: &[Header], body: &[u8]) -> Vec<u8> {
        chunk_request(&self.addr, &[bearer(token)], id, index, extra, body)
    }

    /// alice's chunk `index` of the target upload, with its checksum.
    fn put_good(&self, index: u64) -> Vec<u8> {
        let bytes = self.chunk(index);
        self.put(ALICE, &self.id, &index.to_string(), &[sum(&bytes)], &bytes)
    }

    fn post(&self, headers: &[Header], body: &[u8]) -> Vec<u8> {
        request("POST", &self.addr, "/uploads", headers, body)
    }

    /// `METHOD /uploads/ID` with `token`'s credential and no body.
    fn on_upload(&self, method: &str, token: &str) -> Vec<u8> {
        let path = format!("/uploads/{}", self.id);
        request(method, &self.addr, &path, &[bearer(token)], b"")
    }
}

/// The table: each request refused (or answered) without storing a byte.
const CASES: &[Case<Target>] = &[
    // Credentials.
    Case {
        name: "create without a token",
        request: |t| t.post(&[], &create_body(10)),
        status: 401,
        cause: Some("unauthenticated"),
        also: &[Also::HeaderStarts("www-authenticate", "Bearer")],
    },
    Case {
        name: "create with an unknown token",
        request: |t| t.post(&[bearer("not-a-known-token-123456")], &create_body(10)),
        status: 401,
        cause: Some("unauthenticated"),
        also: &[],
    },
    Case {
        name: "create with a Basic credential",
        request: |t| {
            let basic = ("authorization", "Basic YWxpY2U6cHc=".to_owned());
            t.post(&[basic], &create_body(10))
        },
        status: 401,
        cause: Some("unauthenticated"),
        also: &[],
    },
    Case {
        name: "create naming a user in x-upsim-user (token mode ignores it)",
        request: |t| t.post(&[("x-upsim-user", "alice".into())], &create_body(10)),
        status: 401,
        cause: Some("unauthenticated"),
        also: &[],
    },
    Case {
        name: "status of another user's upload",
        request: |t| t.on_upload("GET", BOB),
        status: 404,
        cause: Some("unknown_upload"),
        also: &[],
    },
    Case {
        name: "chunk to another user's upload",
        request: |t| t.put(BOB, &t.id, "1", &[sum(&t.chunk(1))], &t.chunk(1)),
        status: 404,
        cause: Some("unknown_upload"),
        also: &[],
    },
    Case {
        name: "abort of another user's upload",
        request: |t| t.on_upload("DELETE", BOB),
        status: 404,
        cause: Some("unknown_upload"),
        also: &[],
    },
    Case {
        name: "chunk to an unknown upload id",
        request: |t| {
            let id = "0123456789abcdef0123456789abcdef";
            t.put(ALICE, id, "1", &[sum(&t.chunk(1))], &t.chunk(1))
        },
        status: 404,
        cause: Some("unknown_upload"),
        also: &[],
    },
    Case {
        name: "chunk to a path-traversal upload id",
        request: |t| {
            let id = "..%2F..%2Fetc%2Fpasswd";
            t.put(ALICE, id, "1", &[sum(&t.chunk(1))], &t.chunk(1))
        },
        status: 404,
        cause: Some("unknown_upload"),
        also: &[],
    },
    // The progress channel and the page.
    Case {
        name: "event stream of another user's upload",
        request: |t| {
            let path = format!("/uploads/{}/events", t.id);
            request("GET", &t.addr, &path, &[bearer(BOB)], b"")
        },
        status: 404,
        cause: Some("unknown_upload"),
        also: &[],
    },
    Case {
        name: "event stream with a forged events token",
        request: |t| {
            let path = format!("/uploads/{}/events?token={}", t.id, "f".repeat(32));
            request("GET", &t.addr, &path, &[], b"")
        },
        status: 401,
        cause: Some("unauthenticated"),
        also: &[],
    },
    Case {
        name: "events token for another user's upload",
        request: |t| {
            let path = format!("/uploads/{}/events/token", t.id);
            request("POST", &t.addr, &path, &[bearer(BOB)], b"")
        },
        status: 404,
        cause: Some("unknown_upload"),
        also: &[],
    },
    Case {
        name: "event stream with a 20 KiB Last-Event-ID",
        request: |t| {
            let path = format!("/uploads/{}/events", t.id);
            let huge = ("last-event-id", "s".repeat(20 * 1024));
            request("GET", &t.addr, &path, &[bearer(ALICE), huge], b"")
        },
        status: 431,
        cause: Some("header_too_large"),
        also: &[],
    },
    Case {
        name: "page asset by path traversal",
        request: |t| request("GET", &t.addr, "/page/..%2F..%2FCargo.toml", &[], b""),
        status: 404,
        cause: Some("not_found"),
        also: &[],
    },
    // Creates.
    Case {
        name: "create body over 4 KiB",
        request: |t| t.post(&[bearer(ALICE)], &[b' '; 5 * 1024]),
        status: 413,
        cause: Some("bad_request"),
        also: &[],
    },
    // This is a regression test that ensures a create body that breaks off
    // is answered as broken (400 body_incomplete), not as too large (it
    // was 413 bad_request while `read_body` returned a bare string).
    Case {
        name: "create body whose chunked encoding breaks off",
        request: |t| {
            let chunked = ("transfer-encoding", "chunked".to_owned());
            t.post(&[bearer(ALICE), chunked], b"zz\r\n{}\r\n0\r\n\r\n")
        },
        status: 400,
        cause: Some("body_incomplete"),
        also: &[],
    },
    Case {
        name: "create body that is not JSON",
        request: |t| t.post(&[bearer(ALICE)], b"{\"file_name\":"),
        status: 400,
        cause: Some("bad_request"),
        also: &[],
    },
    Case {
        name: "create of an empty file",
        request: |t| t.post(&[bearer(BOB)], &create_body(0)),
        status: 400,
        cause: Some("empty_file"),
        also: &[],
    },
    Case {
        name: "create of a file over the size limit (u64::MAX)",
        request: |t| t.post(&[bearer(BOB)], &create_body(u64::MAX)),
        status: 413,
        cause: Some("file_too_large"),
        also: &[],
    },
    Case {
        name: "a fourth upload at once (limit three per user)",
        request: |t| t.post(&[bearer(ALICE)], &create_body(10)),
        status: 429,
        cause: Some("too_many_uploads"),
        also: &[Also::HeaderStarts("retry-after", "")],
    },
    // Chunk framing and checks.
    Case {
        name: "chunk without a checksum",
        request: |t| t.put(ALICE, &t.id, "1", &[], &t.chunk(1)),
        status: 400,
        cause: Some("bad_checksum"),
        also: &[],
    },
    Case {
        name: "chunk with a malformed checksum",
        request: |t| {
            t.put(
                ALICE,
                &t.id,
                "1",
                &[(CHECKSUM_HEADER, "zz".into())],
                &t.chunk(1),
            )
        },
        status: 400,
        cause: Some("bad_checksum"),
        also: &[],
    },
    Case {
        name: "chunk with the wrong checksum",
        request: |t| t.put(ALICE, &t.id, "1", &[sum(&t.chunk(2))], &t.chunk(1)),
        status: 400,
        cause: Some("checksum_mismatch"),
        also: &[],
    },
    Case {
        name: "chunk declaring more bytes than the chunk has",
        request: |t| {
            let long = long_chunk(t);
            t.put(ALICE, &t.id, "1", &[sum(&long)], &long)
        },
        status: 413,
        cause: Some("bad_chunk_length"),
        also: &[],
    },
    Case {
        name: "chunk declaring fewer bytes than the chunk has",
        request: |t| {
            let short = &t.chunk(1)[..1000];
            t.put(ALICE, &t.id, "1", &[sum(short)], short)
        },
        status: 400,
        cause: Some("bad_chunk_length"),
        also: &[],
    },
    // The body is longer than its Content-Length: the server reads what
    // was declared (the checksum covers more, so it cannot match); the
    // extra bytes would be the next request.
    Case {
        name: "chunk body longer than its Content-Length",
        request: |t| {
            let long = long_chunk(t);
            let length = ("content-length", CHUNK.to_string());
            let mut framed = t.put(ALICE, &t.id, "1", &[sum(&long), length], &long);
            framed.extend_from_slice(b"\r\n");
            framed
        },
        status: 400,
        cause: Some("checksum_mismatch"),
        also: &[],
    },
    Case {
        name: "chunk body shorter than its Content-Length (the rest never comes)",
        request: |t| {
            let whole = t.chunk(1);
            let length = ("content-length", CHUNK.to_string());
            let half = &whole[..(CHUNK / 2) as usize];
            t.put(ALICE, &t.id, "1", &[sum(&whole), length], half)
        },
        status: 408,
        cause: Some("body_timeout"),
        also: &[Also::RepliedWithin(
            BODY_IDLE_TIMEOUT.saturating_add(Duration::from_secs(3)),
        )],
    },
    Case {
        name: "chunk without Content-Length (chunked encoding)",
        request: |t| {
            let chunked = ("transfer-encoding", "chunked".to_owned());
            t.put(
                ALICE,
                &t.id,
                "1",
                &[sum(b"abc"), chunked],
                b"3\r\nabc\r\n0\r\n\r\n",
            )
        },
        status: 411,
        cause: Some("length_required"),
        also: &[],
    },
    Case {
        name: "chunk with neither Content-Length nor Transfer-Encoding (an empty body)",
        request: |t| unframed(t.put(ALICE, &t.id, "1", &[sum(b"")], b"")),
        status: 400,
        cause: Some("bad_chunk_length"),
        also: &[],
    },
    Case {
        name: "chunk index beyond the last chunk",
        request: |t| t.put(ALICE, &t.id, "9", &[sum(&t.chunk(1))], &t.chunk(1)),
        status: 416,
        cause: Some("bad_chunk_index"),
        also: &[],
    },
    Case {
        name: "chunk index that is not a number",
        request: |t| t.put(ALICE, &t.id, "-1", &[sum(&t.chunk(1))], &t.chunk(1)),
        status: 400,
        cause: Some("bad_chunk_index"),
        also: &[],
    },
    Case {
        name: "chunk index overflowing u32",
        request: |t| t.put(ALICE, &t.id, "4294967296", &[sum(&t.chunk(1))], &t.chunk(1)),
        status: 400,
        cause: Some("bad_chunk_index"),
        also: &[],
    },
    // Chunk 0 is committed: the window is chunks [1, 5).
    Case {
        name: "chunk beyond the reorder window",
        request: |t| t.put_good(6),
        status: 503,
        cause: Some("window_full"),
        also: &[Also::HeaderStarts("retry-after", "")],
    },
    // Headers.
    Case {
        name: "20 KiB of headers (over the 16 KiB limit)",
        request: |t| {
            let big = ("x-big", "a".repeat(20 * 1024));
            t.post(&[bearer(ALICE), big], &create_body(10))
        },
        status: 431,
        cause: Some("header_too_large"),
        also: &[],
    },
    Case {
        name: "100 KiB of headers (over hyper's buffer)",
        request: |t| {
            let huge = ("x-huge", "a".repeat(100 * 1024));
            t.post(&[bearer(ALICE), huge], &create_body(10))
        },
        status: 431,
        cause: None,
        also: &[],
    },
    Case {
        name: "health check without a token (answered, naming no user)",
        request: |t| request("GET", &t.addr, "/healthz", &[], b""),
        status: 200,
        cause: None,
        also: &[
            Also::BodyLacks("alice"),
            Also::BodyHas("\"per_user_redacted\":true"),
        ],
    },
    Case {
        name: "PATCH on an upload",
        request: |t| t.on_upload("PATCH", ALICE),
        status: 405,
        cause: Some("method_not_allowed"),
        also: &[],
    },
];

/// After its abort, alice's third upload takes no chunk. The upload is one
/// chunk long: chunk 0 of the payload fits it.
const AFTER_ABORT: &[Case<Target>] = &[Case {
    name: "chunk for an aborted upload",
    request: |t| {
        let one = t.chunk(0);
        t.put(ALICE, &t.third, "0", &[sum(&one)], &one)
    },
    status: 410,
    cause: Some("upload_failed"),
    also: &[],
}];

/// Chunk 1 with 100 bytes too many.
fn long_chunk(t: &Target) -> Vec<u8> {
    let mut long = t.chunk(1);
    long.extend_from_slice(&[0u8; 100]);
    long
}

async fn exchange(stack: &Stack, bytes: &[u8]) -> TestResult<RawReply> {
    raw_exchange(&stack.backend, bytes, REPLY_TIMEOUT).await
}

async fn create(stack: &Stack, size: u64) -> TestResult<String> {
    let created = stack.create(&[bearer(ALICE)], size).await?;
    assert_eq!(created.status, 201, "{}", created.text());
    upload_id(&created)
}

async fn status_of(stack: &Stack, id: &str) -> TestResult<serde_json::Value> {
    stack.status(&[bearer(ALICE)], id).await
}

/// What the cases must leave unchanged: the target upload's committed
/// prefix and window, and every stored file of both servers.
type Fingerprint = (u64, String, Vec<FileFingerprint>);

async fn fingerprint_of(stack: &Stack, id: &str) -> TestResult<Fingerprint> {
    let status = status_of(stack, id).await?;
    Ok((
        status["committed_bytes"].as_u64().unwrap_or(u64::MAX),
        status["chunks_buffered"].to_string(),
        stack.stored_files()?,
    ))
}

/// Polls the target upload's status until `done` holds (at most 5 s).
async fn wait_for(
    stack: &Stack,
    id: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> TestResult<serde_json::Value> {
    let mut status = serde_json::Value::Null;
    for _ in 0..500 {
        status = status_of(stack, id).await?;
        if done(&status) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_refuses_hostile_input_and_stores_nothing() -> TestResult {
    let tmp = TempDir::new("hostile-backend")?;
    let stack = start(tmp.path()).await?;
    // The target upload, with chunk 0 on the drive; two more uploads bring
    // alice to her limit of three.
    let mut target = Target {
        addr: stack.backend.clone(),
        id: create(&stack, SIZE_BYTES).await?,
        third: String::new(),
        payload: Payload::new(77, SIZE_BYTES),
    };
    let reply = exchange(&stack, &target.put_good(0)).await?;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let status = wait_for(&stack, &target.id, |s| s["committed_bytes"] == CHUNK).await?;
    assert_eq!(
        status["committed_bytes"], CHUNK,
        "chunk 0 never reached the drive"
    );
    let _second = create(&stack, CHUNK).await?;
    target.third = create(&stack, CHUNK).await?;
    let server = Server {
        name: "backend",
        addr: &stack.backend,
        fingerprint: || fingerprint_of(&stack, &target.id),
    };

    let baseline = server.fingerprint().await?;
    let mut passed = server.run_cases(&target, CASES, &baseline).await?;
    passed.push(server.slowloris(&baseline).await?);
    let path = format!("/uploads/{}", target.third);
    let aborted = stack.call("DELETE", &path, &[bearer(ALICE)], b"").await?;
    assert_eq!(aborted.status, 200, "{}", aborted.text());
    let baseline = server.fingerprint().await?;
    passed.extend(server.run_cases(&target, AFTER_ABORT, &baseline).await?);

    passed.push(put_the_same_chunk_twice_at_once_then_the_rest(&stack, &target).await?);
    report("backend", &passed, CASES_TOTAL);
    Ok(())
}

/// The same chunk twice at once: both accepted, stored once; the rest of
/// the upload then completes with the source's checksum.
async fn put_the_same_chunk_twice_at_once_then_the_rest(
    stack: &Stack,
    target: &Target,
) -> TestResult<&'static str> {
    const CASE: &str = "concurrent PUTs of the same chunk";
    let one = target.put_good(1);
    let (a, c) = tokio::join!(exchange(stack, &one), exchange(stack, &one));
    let (a, c) = (a?, c?);
    assert_eq!(
        (a.status, c.status),
        (200, 200),
        "backend case {CASE:?}: {} / {}",
        a.text(),
        c.text()
    );
    for i in 2..9u64 {
        let mut tries = 0;
        loop {
            let r = exchange(stack, &target.put_good(i)).await?;
            // The window moves as the drive commits: wait for it.
            if r.status == 503 && tries < 500 {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            assert_eq!(
                r.status,
                200,
                "backend case {CASE:?}: chunk {i}: {}",
                r.text()
            );
            break;
        }
    }
    let done = wait_for(stack, &target.id, |s| s["phase"] == "complete").await?;
    assert_eq!(done["phase"], "complete", "backend case {CASE:?}: {done}");
    assert_eq!(
        done["file"]["md5Checksum"],
        target.payload.md5(1 << 20).hex(),
        "backend case {CASE:?}"
    );
    Ok(CASE)
}
