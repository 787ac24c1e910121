//! The drive and its client between two turmoil hosts: the simulated
//! network, deterministically.

use super::*;

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
        assert_eq!(resource.crc64nvme, Some(digest.hex()));
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
    assert_eq!(files[0].crc64nvme, Some(expected));
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
