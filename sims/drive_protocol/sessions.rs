//! Whole uploads through `DriveClient`, the backend's client: completion
//! and idempotent repeats, expiry, injected faults, broken and oversized
//! pieces, and the directory store.

use super::*;

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
    assert_eq!(resource.crc64nvme, Some(digest_of(0, total)));
    // Not asked for, so not computed (the simulation's store).
    assert_eq!(resource.md5_checksum, None);

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
    // Drive's reason travels in the error body (error.errors[0].reason):
    // a 403 naming userRateLimitExceeded is a rate limit, not a refusal;
    // one naming storageQuotaExceeded is a refusal for good; a 410 is a
    // lost session.
    drive
        .control
        .fail_next_puts_because(403, DriveReason::UserRateLimitExceeded, 1);
    let limited = client
        .put_piece(&session, UNIT, vec![content(UNIT, UNIT)], total)
        .await;
    assert!(
        matches!(limited, Err(DriveError::RateLimited { status: 403, .. })),
        "{limited:?}"
    );
    drive
        .control
        .fail_next_puts_because(403, DriveReason::StorageQuotaExceeded, 1);
    let refused = client
        .put_piece(&session, UNIT, vec![content(UNIT, UNIT)], total)
        .await;
    assert!(
        matches!(&refused, Err(e @ DriveError::Refused { status: 403, reason: DriveReason::StorageQuotaExceeded, .. }) if !e.is_retryable()),
        "{refused:?}"
    );
    drive.control.fail_next_puts(410, 1);
    let gone = client
        .put_piece(&session, UNIT, vec![content(UNIT, UNIT)], total)
        .await;
    assert!(
        matches!(gone, Err(DriveError::SessionGone { status: 410, .. })),
        "{gone:?}"
    );
    let stats = drive.control.stats();
    assert_eq!((stats.faults_injected, stats.pieces_accepted), (6, 1));
    assert_eq!(
        drive.control.commit_log(),
        vec![CommitRecord {
            upload_id: session.session_id().clone(),
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
    assert_eq!(resource.crc64nvme, Some(digest_of(0, total)));
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
    assert_eq!(resource.crc64nvme, Some(digest_of(0, total)));
    assert_eq!(records(&drive.control), vec![(0, UNIT), (UNIT, total)]);
    Ok(())
}

#[tokio::test]
async fn oversized_piece_answers_413_before_reading_the_body() -> TestResult {
    let config = DriveConfig {
        piece_bytes_max: MIB,
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
