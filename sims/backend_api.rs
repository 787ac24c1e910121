//! The backend's chunk API over real loopback TCP: every status code the
//! README documents, and every malformed request answered with a 4xx and a
//! reason (a JSON body with a stable cause).

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use std::sync::Arc;
use std::time::Duration;
use upsim::admission::Admitter;
use upsim::backend::{Backend, BackendConfig, BackendEnv, MemoryStore};
use upsim::checksum::{crc32c, crc32c_hex, FileDigest};
use upsim::chunk_api::{
    ErrorBody, Phase, UploadCreated, UploadStatus, CHECKSUM_HEADER, USER_HEADER,
};
use upsim::drive::{DigestStore, DriveConfig, DriveServer};
use upsim::env::{Clock, MemorySnapshot, Network, ScriptedMemory, TokioClock, TokioNetwork};
use upsim::payload::Payload;
use upsim::profile::{MemoryPolicy, Profile};
use upsim::trace::Tracer;
use upsim::units::{GIB, KIB, MIB};
use upsim::wire::{send, ClientReply, FramesBody};

type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const CHUNK: u64 = 256 * KIB;

fn profile() -> Profile {
    Profile {
        name: "api-test".into(),
        chunk_size_bytes: CHUNK,
        memory_per_upload: MemoryPolicy::Fixed { bytes: 4 * CHUNK },
        upload_limits_enabled: true,
        daily_limit_bytes: 10 * MIB,
        ..Profile::dev()
    }
}

struct Stack {
    addr: String,
    tasks: Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.tasks.iter().for_each(|t| t.abort());
    }
}

async fn start(profile: Profile, memory: MemorySnapshot) -> TestResult<Stack> {
    let net: Arc<dyn Network> = Arc::new(TokioNetwork);
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::real());
    let drive_listener = net.listen("127.0.0.1:0").await?;
    let drive_addr = drive_listener.local_addr()?.to_string();
    let drive = DriveServer::new(
        DriveConfig {
            public_base_url: format!("http://{drive_addr}"),
            ..DriveConfig::default()
        },
        clock.clone(),
        Arc::new(DigestStore),
    );
    let drive_task = tokio::spawn(drive.serve(drive_listener));
    let admitter = Admitter::new(
        profile.clone(),
        clock.clone(),
        Arc::new(ScriptedMemory::new(clock.clone(), memory)),
    );
    let backend = Backend::new(
        BackendConfig::new(profile, format!("http://{drive_addr}"), 1),
        BackendEnv {
            clock,
            drive_net: net.clone(),
            admission: Arc::new(admitter),
            store: Arc::new(MemoryStore::default()),
            tracer: Tracer::off(),
        },
    );
    let listener = net.listen("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let backend_task = tokio::spawn(backend.run(listener));
    Ok(Stack {
        addr,
        tasks: vec![drive_task, backend_task],
    })
}

fn roomy() -> MemorySnapshot {
    MemorySnapshot::new(64 * GIB, 60 * GIB).expect("valid figures")
}

async fn call(
    stack: &Stack,
    method: Method,
    path: &str,
    user: Option<&str>,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> TestResult<ClientReply> {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("host", &stack.addr);
    if let Some(user) = user {
        b = b.header(USER_HEADER, user);
    }
    for (k, v) in headers {
        b = b.header(*k, v);
    }
    let request = b.body(FramesBody::new([Bytes::from(body)]))?;
    Ok(send(&TokioNetwork, &stack.addr, request, 1 << 20).await?)
}

/// Asserts a refusal: the status, a JSON error body with `cause`, and a
/// non-empty message.
fn refused(reply: &ClientReply, status: u16, cause: &str) {
    assert_eq!(
        reply.status.as_u16(),
        status,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let body: ErrorBody = serde_json::from_slice(&reply.body).expect("a JSON error body");
    assert_eq!(body.error.cause, cause, "{}", body.error.message);
    assert_eq!(body.error.status, status);
    assert!(!body.error.message.is_empty());
}

async fn create(stack: &Stack, user: &str, size: u64) -> TestResult<ClientReply> {
    let body = serde_json::json!({ "file_name": "f.bin", "file_size_bytes": size }).to_string();
    call(
        stack,
        Method::POST,
        "/uploads",
        Some(user),
        &[],
        body.into_bytes(),
    )
    .await
}

async fn put_chunk(
    stack: &Stack,
    user: &str,
    id: &str,
    index: u32,
    bytes: Vec<u8>,
    checksum: Option<String>,
) -> TestResult<ClientReply> {
    let mut headers = Vec::new();
    if let Some(c) = checksum {
        headers.push((CHECKSUM_HEADER, c));
    }
    call(
        stack,
        Method::PUT,
        &format!("/uploads/{id}/chunks/{index}"),
        Some(user),
        &headers,
        bytes,
    )
    .await
}

fn chunk_of(payload: &Payload, index: u32, size: u64) -> Vec<u8> {
    let offset = u64::from(index) * CHUNK;
    let len = CHUNK.min(size - offset) as usize;
    let mut buf = vec![0u8; len];
    payload.fill(offset, &mut buf);
    buf
}

async fn status(stack: &Stack, user: &str, id: &str) -> TestResult<UploadStatus> {
    let reply = call(
        stack,
        Method::GET,
        &format!("/uploads/{id}"),
        Some(user),
        &[],
        Vec::new(),
    )
    .await?;
    assert_eq!(reply.status, StatusCode::OK);
    Ok(serde_json::from_slice(&reply.body)?)
}

#[tokio::test]
async fn create_refusals_carry_status_and_cause() -> TestResult {
    let stack = start(profile(), roomy()).await?;
    let no_user = call(&stack, Method::POST, "/uploads", None, &[], b"{}".to_vec()).await?;
    refused(&no_user, 401, "unauthenticated");
    let bad_user = call(
        &stack,
        Method::POST,
        "/uploads",
        Some("bob smith"),
        &[],
        b"{}".to_vec(),
    )
    .await?;
    refused(&bad_user, 401, "unauthenticated");
    let bad_json = call(
        &stack,
        Method::POST,
        "/uploads",
        Some("alice"),
        &[],
        b"{not json".to_vec(),
    )
    .await?;
    refused(&bad_json, 400, "bad_request");
    let unknown_field = call(
        &stack,
        Method::POST,
        "/uploads",
        Some("alice"),
        &[],
        br#"{"file_name":"a","file_size_bytes":1,"x":1}"#.to_vec(),
    )
    .await?;
    refused(&unknown_field, 400, "bad_request");
    let bad_name = call(
        &stack,
        Method::POST,
        "/uploads",
        Some("alice"),
        &[],
        br#"{"file_name":"a/b","file_size_bytes":1}"#.to_vec(),
    )
    .await?;
    refused(&bad_name, 400, "bad_request");
    let huge_body = call(
        &stack,
        Method::POST,
        "/uploads",
        Some("alice"),
        &[],
        vec![b' '; 64 * 1024],
    )
    .await?;
    refused(&huge_body, 413, "bad_request");
    refused(&create(&stack, "alice", 0).await?, 400, "empty_file");
    refused(
        &create(&stack, "alice", u64::MAX).await?,
        413,
        "file_too_large",
    );
    // The daily quota: 10 MiB a day; one 6 MiB upload fits, a second does not.
    assert_eq!(
        create(&stack, "alice", 6 * MIB).await?.status,
        StatusCode::CREATED
    );
    refused(
        &create(&stack, "alice", 6 * MIB).await?,
        429,
        "quota_exceeded",
    );
    refused(
        &call(&stack, Method::GET, "/nope", Some("alice"), &[], Vec::new()).await?,
        404,
        "not_found",
    );
    refused(
        &call(
            &stack,
            Method::PATCH,
            "/uploads",
            Some("alice"),
            &[],
            Vec::new(),
        )
        .await?,
        405,
        "method_not_allowed",
    );
    let health = call(&stack, Method::GET, "/healthz", None, &[], Vec::new()).await?;
    assert_eq!(health.status, StatusCode::OK);
    let health: serde_json::Value = serde_json::from_slice(&health.body)?;
    assert_eq!(health["admission"]["ledger"]["global_in_use"], 1);
    Ok(())
}

#[tokio::test]
async fn memory_pressure_answers_503_with_retry_after() -> TestResult {
    let p = Profile {
        memory_limit_percent: 80,
        ..profile()
    };
    let stack = start(p, MemorySnapshot::REPORT).await?;
    let reply = create(&stack, "alice", MIB).await?;
    refused(&reply, 503, "memory_pressure");
    assert!(reply.headers.get("retry-after").is_some());
    let body: ErrorBody = serde_json::from_slice(&reply.body)?;
    assert_eq!(
        body.error.details["used_permille"], 802,
        "the numbers travel with the cause"
    );
    Ok(())
}

#[tokio::test]
async fn chunks_are_checked_and_an_upload_completes_whole() -> TestResult {
    let stack = start(profile(), roomy()).await?;
    let size = 6 * CHUNK + 1_000;
    let created = create(&stack, "alice", size).await?;
    assert_eq!(created.status, StatusCode::CREATED);
    let created: UploadCreated = serde_json::from_slice(&created.body)?;
    assert_eq!((created.chunk_size_bytes, created.chunk_count), (CHUNK, 7));
    assert_eq!(created.upload_id.as_str().len(), 32);
    let id = String::from(created.upload_id);
    let payload = Payload::new(42, size);
    let good = |i: u32| chunk_of(&payload, i, size);
    let sum = |b: &[u8]| Some(crc32c_hex(crc32c(b)));

    // Malformed chunk requests: each a 4xx with a reason; nothing stored.
    refused(
        &put_chunk(&stack, "alice", &id, 1, good(1), None).await?,
        400,
        "bad_checksum",
    );
    refused(
        &put_chunk(&stack, "alice", &id, 1, good(1), Some("XYZ".into())).await?,
        400,
        "bad_checksum",
    );
    refused(
        &put_chunk(&stack, "alice", &id, 1, good(1), Some("00000000".into())).await?,
        400,
        "checksum_mismatch",
    );
    refused(
        &put_chunk(&stack, "alice", &id, 1, vec![1; 10], sum(&[1; 10])).await?,
        400,
        "bad_chunk_length",
    );
    refused(
        &put_chunk(&stack, "alice", &id, 6, good(0), sum(&good(0))).await?,
        413,
        "bad_chunk_length",
    );
    refused(
        &put_chunk(&stack, "alice", &id, 7, good(1), sum(&good(1))).await?,
        416,
        "bad_chunk_index",
    );
    let reply = call(
        &stack,
        Method::PUT,
        &format!("/uploads/{id}/chunks/x"),
        Some("alice"),
        &[],
        Vec::new(),
    )
    .await?;
    refused(&reply, 400, "bad_chunk_index");
    // The window holds 4 chunks: chunk 5 is beyond it while 0 is missing.
    let beyond = put_chunk(&stack, "alice", &id, 5, good(5), sum(&good(5))).await?;
    refused(&beyond, 503, "window_full");
    assert!(beyond.headers.get("retry-after").is_some());
    // Someone else's upload does not exist for them.
    refused(
        &put_chunk(&stack, "mallory", &id, 1, good(1), sum(&good(1))).await?,
        404,
        "unknown_upload",
    );
    let reply = call(
        &stack,
        Method::GET,
        &format!("/uploads/{id}"),
        Some("mallory"),
        &[],
        Vec::new(),
    )
    .await?;
    refused(&reply, 404, "unknown_upload");
    refused(
        &put_chunk(&stack, "alice", "0123", 0, good(0), sum(&good(0))).await?,
        404,
        "unknown_upload",
    );
    assert!(
        status(&stack, "alice", &id)
            .await?
            .chunks_buffered
            .is_empty(),
        "a refused chunk is never stored"
    );

    // Out of order, then the rest: the file completes with the source's checksum.
    for i in [2, 1, 3, 0, 4, 6, 5] {
        let reply = put_chunk(&stack, "alice", &id, i, good(i), sum(&good(i))).await?;
        if reply.status == StatusCode::SERVICE_UNAVAILABLE {
            // The window moves as the drive commits; wait for it.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let again = put_chunk(&stack, "alice", &id, i, good(i), sum(&good(i))).await?;
            assert_eq!(
                again.status,
                StatusCode::OK,
                "{}",
                String::from_utf8_lossy(&again.body)
            );
        } else {
            assert_eq!(
                reply.status,
                StatusCode::OK,
                "chunk {i}: {}",
                String::from_utf8_lossy(&reply.body)
            );
        }
    }
    let mut done = status(&stack, "alice", &id).await?;
    for _ in 0..200 {
        if done.phase == Phase::Complete {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        done = status(&stack, "alice", &id).await?;
    }
    assert_eq!(done.phase, Phase::Complete);
    let mut digest = FileDigest::default();
    digest.update(&(0..7).flat_map(good).collect::<Vec<u8>>());
    assert_eq!(done.file.map(|f| f.crc64nvme), Some(digest.hex()));
    refused(
        &put_chunk(&stack, "alice", &id, 0, good(0), sum(&good(0))).await?,
        409,
        "upload_complete",
    );
    Ok(())
}

#[tokio::test]
async fn an_aborted_upload_refuses_chunks_and_frees_its_slot() -> TestResult {
    let stack = start(profile(), roomy()).await?;
    let created: UploadCreated =
        serde_json::from_slice(&create(&stack, "alice", 2 * CHUNK).await?.body)?;
    let id = String::from(created.upload_id);
    let reply = call(
        &stack,
        Method::DELETE,
        &format!("/uploads/{id}"),
        Some("alice"),
        &[],
        Vec::new(),
    )
    .await?;
    assert_eq!(reply.status, StatusCode::OK);
    let status: UploadStatus = serde_json::from_slice(&reply.body)?;
    assert_eq!(status.phase, Phase::Failed);
    assert_eq!(status.failure.map(|f| f.cause), Some("aborted".into()));
    let chunk = vec![7u8; CHUNK as usize];
    let checksum = Some(crc32c_hex(crc32c(&chunk)));
    refused(
        &put_chunk(&stack, "alice", &id, 0, chunk, checksum).await?,
        410,
        "upload_failed",
    );
    let health = call(&stack, Method::GET, "/healthz", None, &[], Vec::new()).await?;
    let health: serde_json::Value = serde_json::from_slice(&health.body)?;
    assert_eq!(
        health["admission"]["ledger"]["global_in_use"], 0,
        "the abort released the slot"
    );
    Ok(())
}
