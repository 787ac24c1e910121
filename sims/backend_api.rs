//! The backend's chunk API over real loopback TCP: every status code the
//! README documents, and every malformed request answered with a 4xx and a
//! reason (a JSON body with a stable cause).

use crate::support::{checksum, chunk_of, user, RawReply, Stack, TestResult};
use std::time::Duration;
use upsim::checksum::{FileDigest, FileDigestKind, Md5Digest};
use upsim::chunk_api::{ErrorBody, Phase, UploadCreated, UploadStatus, CHECKSUM_HEADER};
use upsim::env::MemorySnapshot;
use upsim::payload::Payload;
use upsim::profile::{MemoryPolicy, Profile};
use upsim::units::{GIB, KIB, MIB};

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

fn roomy() -> MemorySnapshot {
    MemorySnapshot::new(64 * GIB, 60 * GIB).expect("valid figures")
}

/// Asserts a refusal: the status, a JSON error body with `cause`, and a
/// non-empty message.
fn refused(reply: &RawReply, status: u16, cause: &str) {
    assert_eq!(reply.status, status, "{}", reply.text());
    let body: ErrorBody = serde_json::from_slice(&reply.body).expect("a JSON error body");
    assert_eq!(body.error.cause, cause, "{}", body.error.message);
    assert_eq!(body.error.status, status);
    assert!(!body.error.message.is_empty());
}

#[tokio::test]
async fn create_refusals_carry_status_and_cause() -> TestResult {
    let stack = Stack::in_memory(profile(), roomy()).await?;
    let alice = [user("alice")];
    let no_user = stack.call("POST", "/uploads", &[], b"{}").await?;
    refused(&no_user, 401, "unauthenticated");
    let bad_user = stack
        .call("POST", "/uploads", &[user("bob smith")], b"{}")
        .await?;
    refused(&bad_user, 401, "unauthenticated");
    let bad_json = stack.call("POST", "/uploads", &alice, b"{not json").await?;
    refused(&bad_json, 400, "bad_request");
    let unknown_field = stack
        .call(
            "POST",
            "/uploads",
            &alice,
            br#"{"file_name":"a","file_size_bytes":1,"x":1}"#,
        )
        .await?;
    refused(&unknown_field, 400, "bad_request");
    let bad_name = stack
        .call(
            "POST",
            "/uploads",
            &alice,
            br#"{"file_name":"a/b","file_size_bytes":1}"#,
        )
        .await?;
    refused(&bad_name, 400, "bad_request");
    let huge_body = stack
        .call("POST", "/uploads", &alice, &[b' '; 64 * 1024])
        .await?;
    refused(&huge_body, 413, "bad_request");
    refused(&stack.create(&alice, 0).await?, 400, "empty_file");
    refused(
        &stack.create(&alice, u64::MAX).await?,
        413,
        "file_too_large",
    );
    // The daily quota: 10 MiB a day; one 6 MiB upload fits, a second does not.
    assert_eq!(stack.create(&alice, 6 * MIB).await?.status, 201);
    refused(&stack.create(&alice, 6 * MIB).await?, 429, "quota_exceeded");
    refused(
        &stack.call("GET", "/nope", &alice, b"").await?,
        404,
        "not_found",
    );
    refused(
        &stack.call("PATCH", "/uploads", &alice, b"").await?,
        405,
        "method_not_allowed",
    );
    let health = stack.call("GET", "/healthz", &[], b"").await?;
    assert_eq!(health.status, 200);
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
    let stack = Stack::in_memory(p, MemorySnapshot::REPORT).await?;
    let reply = stack.create(&[user("alice")], MIB).await?;
    refused(&reply, 503, "memory_pressure");
    assert!(reply.header("retry-after").is_some());
    let body: ErrorBody = serde_json::from_slice(&reply.body)?;
    assert_eq!(
        body.error.details["used_permille"], 802,
        "the numbers travel with the cause"
    );
    Ok(())
}

#[tokio::test]
async fn chunks_are_checked_and_an_upload_completes_whole() -> TestResult {
    let stack = Stack::in_memory(profile(), roomy()).await?;
    let (alice, mallory) = ([user("alice")], [user("mallory")]);
    let size = 6 * CHUNK + 1_000;
    let created = stack.create(&alice, size).await?;
    assert_eq!(created.status, 201);
    let created: UploadCreated = serde_json::from_slice(&created.body)?;
    assert_eq!((created.chunk_size_bytes, created.chunk_count), (CHUNK, 7));
    assert_eq!(created.upload_id.as_str().len(), 32);
    let id = String::from(created.upload_id);
    let payload = Payload::new(42, size);
    let good = |i: u64| chunk_of(&payload, CHUNK, i);
    let sum = |b: &[u8]| [checksum(b)];

    // Malformed chunk requests: each a 4xx with a reason; nothing stored.
    refused(
        &stack.put_chunk(&alice, &id, 1, &[], &good(1)).await?,
        400,
        "bad_checksum",
    );
    let malformed = [(CHECKSUM_HEADER, "XYZ".to_owned())];
    refused(
        &stack
            .put_chunk(&alice, &id, 1, &malformed, &good(1))
            .await?,
        400,
        "bad_checksum",
    );
    let wrong = [(CHECKSUM_HEADER, "00000000".to_owned())];
    refused(
        &stack.put_chunk(&alice, &id, 1, &wrong, &good(1)).await?,
        400,
        "checksum_mismatch",
    );
    refused(
        &stack
            .put_chunk(&alice, &id, 1, &sum(&[1; 10]), &[1; 10])
            .await?,
        400,
        "bad_chunk_length",
    );
    refused(
        &stack
            .put_chunk(&alice, &id, 6, &sum(&good(0)), &good(0))
            .await?,
        413,
        "bad_chunk_length",
    );
    refused(
        &stack
            .put_chunk(&alice, &id, 7, &sum(&good(1)), &good(1))
            .await?,
        416,
        "bad_chunk_index",
    );
    let reply = stack.put_chunk(&alice, &id, "x", &[], b"").await?;
    refused(&reply, 400, "bad_chunk_index");
    // The window holds 4 chunks: chunk 5 is beyond it while 0 is missing.
    let beyond = stack
        .put_chunk(&alice, &id, 5, &sum(&good(5)), &good(5))
        .await?;
    refused(&beyond, 503, "window_full");
    assert!(beyond.header("retry-after").is_some());
    // Someone else's upload does not exist for them.
    refused(
        &stack
            .put_chunk(&mallory, &id, 1, &sum(&good(1)), &good(1))
            .await?,
        404,
        "unknown_upload",
    );
    let reply = stack
        .call("GET", &format!("/uploads/{id}"), &mallory, b"")
        .await?;
    refused(&reply, 404, "unknown_upload");
    refused(
        &stack
            .put_chunk(&alice, "0123", 0, &sum(&good(0)), &good(0))
            .await?,
        404,
        "unknown_upload",
    );
    assert!(
        stack
            .status::<UploadStatus>(&alice, &id)
            .await?
            .chunks_buffered
            .is_empty(),
        "a refused chunk is never stored"
    );

    // Out of order, then the rest: the file completes with the source's checksum.
    for i in [2, 1, 3, 0, 4, 6, 5] {
        let reply = stack
            .put_chunk(&alice, &id, i, &sum(&good(i)), &good(i))
            .await?;
        if reply.status == 503 {
            // The window moves as the drive commits; wait for it.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let again = stack
                .put_chunk(&alice, &id, i, &sum(&good(i)), &good(i))
                .await?;
            assert_eq!(again.status, 200, "{}", again.text());
        } else {
            assert_eq!(reply.status, 200, "chunk {i}: {}", reply.text());
        }
    }
    let mut done: UploadStatus = stack.status(&alice, &id).await?;
    for _ in 0..200 {
        if done.phase == Phase::Complete {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        done = stack.status(&alice, &id).await?;
    }
    assert_eq!(done.phase, Phase::Complete);
    let mut digest = FileDigest::default();
    digest.update(&(0..7).flat_map(good).collect::<Vec<u8>>());
    assert_eq!(done.file.and_then(|f| f.crc64nvme), Some(digest.hex()));
    refused(
        &stack
            .put_chunk(&alice, &id, 0, &sum(&good(0)), &good(0))
            .await?,
        409,
        "upload_complete",
    );
    Ok(())
}

/// This is a regression test that ensures the window's edge is probed AT
/// its last slot, not only one past it: with chunk 0 missing the window
/// cannot move, so chunk 3 (the last of 4 slots) is accepted and chunk 4
/// is refused with 503 `window_full` and `Retry-After`, never stored.
#[tokio::test]
async fn the_last_window_slot_is_accepted_and_one_past_is_refused() -> TestResult {
    let stack = Stack::in_memory(profile(), roomy()).await?;
    let alice = [user("alice")];
    let size = 6 * CHUNK + 1_000;
    let created: UploadCreated = serde_json::from_slice(&stack.create(&alice, size).await?.body)?;
    let id = String::from(created.upload_id);
    let payload = Payload::new(7, size);
    let good = |i: u64| chunk_of(&payload, CHUNK, i);
    for i in 1..=3 {
        let reply = stack
            .put_chunk(&alice, &id, i, &[checksum(&good(i))], &good(i))
            .await?;
        assert_eq!(reply.status, 200, "chunk {i}: {}", reply.text());
    }
    let past = stack
        .put_chunk(&alice, &id, 4, &[checksum(&good(4))], &good(4))
        .await?;
    refused(&past, 503, "window_full");
    assert!(past.header("retry-after").is_some());
    let status: UploadStatus = stack.status(&alice, &id).await?;
    assert_eq!(status.window_chunks, 4);
    assert_eq!(
        status.chunks_buffered,
        [1, 2, 3],
        "one past is never stored"
    );
    Ok(())
}

#[tokio::test]
async fn an_aborted_upload_refuses_chunks_and_frees_its_slot() -> TestResult {
    let stack = Stack::in_memory(profile(), roomy()).await?;
    let alice = [user("alice")];
    let created: UploadCreated =
        serde_json::from_slice(&stack.create(&alice, 2 * CHUNK).await?.body)?;
    let id = String::from(created.upload_id);
    let reply = stack
        .call("DELETE", &format!("/uploads/{id}"), &alice, b"")
        .await?;
    assert_eq!(reply.status, 200);
    let status: UploadStatus = serde_json::from_slice(&reply.body)?;
    assert_eq!(status.phase, Phase::Failed);
    assert_eq!(status.failure.map(|f| f.cause), Some("aborted".into()));
    let chunk = vec![7u8; CHUNK as usize];
    refused(
        &stack
            .put_chunk(&alice, &id, 0, &[checksum(&chunk)], &chunk)
            .await?,
        410,
        "upload_failed",
    );
    let health = stack.call("GET", "/healthz", &[], b"").await?;
    let health: serde_json::Value = serde_json::from_slice(&health.body)?;
    assert_eq!(
        health["admission"]["ledger"]["global_in_use"], 0,
        "the abort released the slot"
    );
    Ok(())
}

/// A drive that answers status queries but fails every piece opens the
/// breaker: after `breaker_failures_max` (5) failed pieces in a row, with
/// a status query answered between each two, `/healthz` shows the breaker
/// open and a new create is refused with 503 `drive_unavailable`. (A
/// status reply that shows no progress used to count as a success and
/// reset the count, so this breaker never opened.)
#[tokio::test]
async fn a_drive_that_takes_no_piece_opens_the_breaker() -> TestResult {
    let stack = Stack::in_memory(profile(), roomy()).await?;
    let alice = [user("alice")];
    let size = 2 * CHUNK;
    let created: UploadCreated = serde_json::from_slice(&stack.create(&alice, size).await?.body)?;
    let id = String::from(created.upload_id);
    stack
        .drive_control
        .as_ref()
        .expect("the in-memory stack has drive controls")
        .fail_next_puts(500, 1_000);
    let payload = Payload::new(11, size);
    let chunk = chunk_of(&payload, CHUNK, 0);
    let reply = stack
        .put_chunk(&alice, &id, 0, &[checksum(&chunk)], &chunk)
        .await?;
    assert_eq!(reply.status, 200, "{}", reply.text());
    // Five failures with full-jitter backoffs of at most 0.1 + 0.2 + 0.4 +
    // 0.8 s between them; the upload itself has 10 attempts.
    let mut breaker = serde_json::Value::Null;
    for _ in 0..300 {
        let health = stack.call("GET", "/healthz", &[], b"").await?;
        let health: serde_json::Value = serde_json::from_slice(&health.body)?;
        breaker = health["drive"].clone();
        if breaker["state"] == "open" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(breaker["state"], "open", "breaker: {breaker}");
    assert_eq!(breaker["consecutive_failures"], 5);
    let refused_create = stack.create(&alice, CHUNK).await?;
    refused(&refused_create, 503, "drive_unavailable");
    assert!(refused_create.header("retry-after").is_some());
    Ok(())
}

/// Sends the one chunk of upload `id` whenever the backend needs it (a new
/// drive session needs it again), until the upload ends; its last status.
async fn upload_single_chunk(stack: &Stack, id: &str, chunk: &[u8]) -> TestResult<UploadStatus> {
    let alice = [user("alice")];
    for _ in 0..500 {
        let status: UploadStatus = stack.status(&alice, id).await?;
        if matches!(status.phase, Phase::Complete | Phase::Failed) {
            return Ok(status);
        }
        if status.committed_bytes == 0 && status.chunks_buffered.is_empty() {
            let reply = stack
                .put_chunk(&alice, id, 0, &[checksum(chunk)], chunk)
                .await?;
            assert!(matches!(reply.status, 200 | 410), "{}", reply.text());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(format!("upload {id} did not end").into())
}

/// A backend checking MD5 (real mode's default) asks the drive for
/// `md5Checksum` and compares it with the MD5 of the bytes it sent. A drive
/// whose `md5Checksum` disagrees once gets the file again in a new session
/// (and the upload completes with the right one); a drive whose every file
/// disagrees ends the upload `drive_checksum_mismatch`, the message
/// carrying both digests: never `complete`.
#[tokio::test]
async fn a_drive_md5_that_disagrees_is_never_reported_complete() -> TestResult {
    let stack = Stack::in_memory_checking(profile(), roomy(), FileDigestKind::Md5).await?;
    let drive = stack
        .drive_control
        .clone()
        .ok_or("in-memory drive controls")?;
    let alice = [user("alice")];
    let chunk = chunk_of(&Payload::new(14, 1_000), CHUNK, 0);
    let mut md5 = Md5Digest::default();
    md5.update(&chunk);
    let sent = md5.hex();
    let misreported = format!(
        "{}{}",
        if sent.starts_with('0') { "1" } else { "0" },
        &sent[1..]
    );

    // Once: a new session, then the right file.
    drive.misreport_next_digests(1);
    let created: UploadCreated = serde_json::from_slice(&stack.create(&alice, 1_000).await?.body)?;
    let done = upload_single_chunk(&stack, &String::from(created.upload_id), &chunk).await?;
    assert_eq!(done.phase, Phase::Complete, "{:?}", done.failure);
    let file = done.file.ok_or("a complete upload has its file")?;
    assert_eq!(file.md5_checksum.as_deref(), Some(sent.as_str()));
    assert_eq!(file.crc64nvme, None, "only what the backend asked for");
    assert_eq!(drive.stats().files_finished, 2);

    // Always: the sessions run out, and the upload fails with the mismatch.
    drive.misreport_next_digests(u32::MAX);
    let created: UploadCreated = serde_json::from_slice(&stack.create(&alice, 1_000).await?.body)?;
    let done = upload_single_chunk(&stack, &String::from(created.upload_id), &chunk).await?;
    assert_eq!(done.phase, Phase::Failed);
    assert!(done.file.is_none());
    let failure = done.failure.ok_or("a failed upload says why")?;
    assert_eq!(
        failure.cause, "drive_checksum_mismatch",
        "{}",
        failure.message
    );
    for digest in [&sent, &misreported] {
        assert!(
            failure.message.contains(digest.as_str()),
            "{}",
            failure.message
        );
    }
    assert!(failure.message.contains("MD5"), "{}", failure.message);
    Ok(())
}

/// This is a regression test that ensures `/healthz` tells an unreachable
/// drive: `ok` while the drive answers, `degraded` (still 200: a liveness
/// check must not restart the backend) once it is gone. cargo-mutants
/// turned the `status == "ok"` test into `!=` and no check noticed.
#[tokio::test]
async fn healthz_is_degraded_while_the_drive_is_unreachable() -> TestResult {
    let mut stack = Stack::in_memory(profile(), roomy()).await?;
    let reply = stack.call("GET", "/healthz", &[], b"").await?;
    assert_eq!(reply.status, 200);
    let health: serde_json::Value = serde_json::from_slice(&reply.body)?;
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["drive_link"]["reachable"], true, "{health}");
    stack.stop_drive().await;
    let reply = stack.call("GET", "/healthz", &[], b"").await?;
    assert_eq!(reply.status, 200);
    let health: serde_json::Value = serde_json::from_slice(&reply.body)?;
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["drive_link"]["reachable"], false, "{health}");
    assert!(health["drive_link"]["error"].is_string(), "{health}");
    Ok(())
}
