//! Real mode end to end: `upsim drive`, `upsim serve` and `upsim upload` as
//! separate processes of the built binary on 127.0.0.1, a 256 MiB file, the
//! backend killed with SIGKILL and restarted mid-way, the client
//! interrupted with SIGINT and run again; the drive's stored file must be
//! byte-identical to the source (size and CRC-64/NVME of both files), and
//! SIGTERM must stop both servers with exit 0. A second check restarts the
//! drive itself and asks it what it holds; a third shuts a backend down
//! while a chunk is arriving.
//!
//! Every wait is bounded; processes and temporary directories are cleaned
//! up by guards even when an assertion fails.

use crate::support::{
    file_digest, finished_files, free_port, get, token_file, wait_until, write_payload, Proc,
    TempDir, TestResult,
};
use std::path::Path;
use std::time::{Duration, Instant};
use upsim::payload::Payload;
use upsim::units::MIB;

const FILE_SIZE_BYTES: u64 = 256 * MIB;
/// The client's send rate: slow enough (about 5 s for the file) that the
/// kill and the interrupt land mid-upload, fast enough for a test.
const CLIENT_RATE_MBIT: &str = "400";
const ALICE_TOKEN: &str = "e2e-alice-token-0123456789";
const DRIVE_TOKEN: &str = "e2e-backend-drive-token-42";
const START_TIMEOUT: Duration = Duration::from_secs(30);
const PHASE_TIMEOUT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(10);

/// The upload id the client remembered (its state directory holds one
/// entry while the upload is in progress).
fn remembered_upload_id(state_dir: &Path) -> Option<String> {
    let entry = std::fs::read_dir(state_dir)
        .ok()?
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().ends_with(".json"))?;
    let value: serde_json::Value =
        serde_json::from_slice(&std::fs::read(entry.path()).ok()?).ok()?;
    value["upload_id"].as_str().map(str::to_owned)
}

/// Bytes the backend says the drive holds for `id`.
async fn committed_bytes(backend: &str, id: &str) -> Option<u64> {
    let reply = get(
        backend,
        &format!("/uploads/{id}"),
        &[("authorization", format!("Bearer {ALICE_TOKEN}"))],
    )
    .await
    .ok()?;
    let value: serde_json::Value = serde_json::from_slice(&reply.body).ok()?;
    value["committed_bytes"].as_u64()
}

async fn healthy(addr: &str) -> bool {
    get(addr, "/healthz", &[])
        .await
        .is_ok_and(|r| r.status == 200)
}

async fn accepts(addr: &str) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_survives_a_backend_kill_and_a_client_interrupt() -> TestResult {
    let started = Instant::now();
    let tmp = TempDir::new("e2e")?;
    let root = tmp.path();
    let (drive_dir, state_dir, client_dir) = (
        root.join("drive"),
        root.join("backend-state"),
        root.join("client-state"),
    );
    let source = root.join("source.bin");
    let source_digest = write_payload(&source, 0xe2e, FILE_SIZE_BYTES)?;
    let wrote_s = started.elapsed().as_secs_f64();
    let tokens = token_file(root, "tokens", &[(ALICE_TOKEN, "alice")])?;
    let drive_tokens = token_file(root, "drive-tokens", &[(DRIVE_TOKEN, "backend")])?;
    let drive_token = root.join("drive-token");
    std::fs::write(&drive_token, format!("{DRIVE_TOKEN}\n"))?;
    let alice_token = root.join("alice-token");
    std::fs::write(&alice_token, ALICE_TOKEN)?;
    let (drive_addr, backend_addr) = (
        format!("127.0.0.1:{}", free_port()?),
        format!("127.0.0.1:{}", free_port()?),
    );
    let drive_url = format!("http://{drive_addr}");
    let backend_url = format!("http://{backend_addr}");
    let s = |p: &Path| p.to_string_lossy().into_owned();

    let mut drive = Proc::spawn(
        "drive",
        &[
            "drive",
            "--listen",
            &drive_addr,
            "--dir",
            &s(&drive_dir),
            "--tokens",
            &s(&drive_tokens),
        ],
        root,
        "info",
    )?;
    assert!(
        wait_until(START_TIMEOUT, POLL, || accepts(&drive_addr)).await,
        "drive did not start\n{}",
        drive.logs()
    );
    let serve_args = [
        "serve",
        "--listen",
        &backend_addr,
        "--profile",
        "dev",
        "--drive",
        &drive_url,
        "--state",
        &s(&state_dir),
        "--tokens",
        &s(&tokens),
        "--drive-token-file",
        &s(&drive_token),
    ];
    let mut backend = Proc::spawn("serve", &serve_args, root, "info")?;
    assert!(
        wait_until(START_TIMEOUT, POLL, || healthy(&backend_addr)).await,
        "backend did not start\n{}",
        backend.logs()
    );
    let upload_args = [
        "upload",
        &s(&source),
        "--server",
        &backend_url,
        "--token-file",
        &s(&alice_token),
        "--state-dir",
        &s(&client_dir),
        "--parallel",
        "4",
        "--limit-rate-mbit",
        CLIENT_RATE_MBIT,
    ];
    let upload_started = Instant::now();
    let mut client = Proc::spawn("upload", &upload_args, root, "warn")?;

    // 1. A quarter of the file on the drive: kill the backend outright.
    let mut id = None;
    let quarter = wait_until(PHASE_TIMEOUT, POLL, || {
        let found = id.clone().or_else(|| remembered_upload_id(&client_dir));
        id = found.clone();
        let backend_addr = backend_addr.clone();
        async move {
            match found {
                Some(id) => committed_bytes(&backend_addr, &id)
                    .await
                    .is_some_and(|c| c >= FILE_SIZE_BYTES / 4),
                None => false,
            }
        }
    })
    .await;
    assert!(quarter, "no quarter committed\n{}", backend.logs());
    let id = id.ok_or("no upload id")?;
    let killed_at_bytes = committed_bytes(&backend_addr, &id).await.unwrap_or(0);
    assert!(
        killed_at_bytes < FILE_SIZE_BYTES,
        "the upload finished before the kill: raise the file size or lower the rate"
    );
    backend.signal("KILL")?;
    let status = backend.wait_exit(Duration::from_secs(10)).await?;
    assert!(!status.success(), "SIGKILL ends with a signal");
    let killed_s = upload_started.elapsed().as_secs_f64();

    // 2. Restart it on the same state: it takes the upload back.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut backend = Proc::spawn("serve", &serve_args, root, "info")?;
    assert!(
        wait_until(START_TIMEOUT, POLL, || healthy(&backend_addr)).await,
        "backend did not restart\n{}",
        backend.logs()
    );
    let restarted_s = upload_started.elapsed().as_secs_f64();

    // 3. Past half: interrupt the client (Ctrl-C).
    let half = wait_until(PHASE_TIMEOUT, POLL, || {
        let (addr, id) = (backend_addr.clone(), id.clone());
        async move {
            committed_bytes(&addr, &id)
                .await
                .is_some_and(|c| c >= FILE_SIZE_BYTES / 2)
        }
    })
    .await;
    assert!(
        half,
        "no half committed after the restart\n{}\n{}",
        backend.logs(),
        client.logs()
    );
    let interrupted_at_bytes = committed_bytes(&backend_addr, &id).await.unwrap_or(0);
    assert!(
        interrupted_at_bytes < FILE_SIZE_BYTES,
        "the upload finished before the interrupt"
    );
    client.signal("INT")?;
    let status = client.wait_exit(Duration::from_secs(10)).await?;
    assert_eq!(status.code(), Some(130), "{}", client.logs());
    assert!(
        client.logs().contains(&format!("resume upload {id}")),
        "{}",
        client.logs()
    );
    let interrupted_s = upload_started.elapsed().as_secs_f64();

    // 4. Run the client again: it resumes the same upload and finishes.
    let mut client = Proc::spawn("upload", &upload_args, root, "warn")?;
    let status = client.wait_exit(PHASE_TIMEOUT).await?;
    let done_s = upload_started.elapsed().as_secs_f64();
    assert!(status.success(), "{}\n{}", client.logs(), backend.logs());
    let out = client.stdout();
    assert!(out.contains(&format!("as upload {id}")), "{out}");
    // `upsim serve` checks Drive's MD5 by default, across the backend's
    // kill (its MD5 state is persisted), and the client compares it with
    // the source's.
    let source_md5 = Payload::new(0xe2e, FILE_SIZE_BYTES).md5(1 << 20).hex();
    assert!(
        out.contains(&format!(
            "drive md5Checksum {source_md5} == source {source_md5}"
        )),
        "{out}"
    );
    let verified = format!("the drive's md5Checksum {source_md5} is the MD5 of the bytes sent");
    assert!(backend.logs().contains(&verified), "{}", backend.logs());
    assert!(
        client.logs().contains(&format!("resuming upload {id}")),
        "{}",
        client.logs()
    );

    // 5. The stored file is the source, byte for byte.
    let stored = finished_files(&drive_dir)?;
    assert_eq!(stored.len(), 1, "{stored:?}");
    let stored_digest = file_digest(&stored[0])?;
    assert_eq!(stored_digest.len_bytes(), FILE_SIZE_BYTES);
    assert_eq!(std::fs::metadata(&stored[0])?.len(), FILE_SIZE_BYTES);
    assert_eq!(stored_digest.hex(), source_digest.hex());

    // 6. Graceful stops: SIGTERM → exit 0.
    backend.signal("TERM")?;
    let status = backend.wait_exit(Duration::from_secs(30)).await?;
    assert!(status.success(), "{}", backend.logs());
    assert!(backend.stdout().contains("upsim serve: stopped"));
    drive.signal("TERM")?;
    let status = drive.wait_exit(Duration::from_secs(30)).await?;
    assert!(status.success(), "{}", drive.logs());

    eprintln!(
        "real_e2e: {} MiB; wrote source in {wrote_s:.2} s; backend killed at {:.1} s ({} MiB on the drive), \
         back at {restarted_s:.1} s; client interrupted at {interrupted_s:.1} s ({} MiB); done at {done_s:.1} s; \
         test wall {:.1} s; client rate limit {CLIENT_RATE_MBIT} Mbit/s",
        FILE_SIZE_BYTES / MIB,
        killed_s,
        killed_at_bytes / MIB,
        interrupted_at_bytes / MIB,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A drive restarted (SIGKILL, then started on the same directory) keeps
/// its sessions: a status query answers with the bytes its partial file
/// holds, and the upload finishes in the same session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_drive_answers_with_what_it_holds() -> TestResult {
    use crate::support::payload_bytes;
    use std::sync::Arc;
    use upsim::drive::{DriveClient, PieceReply};
    use upsim::env::TokioNetwork;
    use upsim::units::KIB;
    let tmp = TempDir::new("drive-restart")?;
    let root = tmp.path();
    let drive_dir = root.join("drive");
    let tokens = token_file(root, "drive-tokens", &[(DRIVE_TOKEN, "backend")])?;
    let addr = format!("127.0.0.1:{}", free_port()?);
    let args = [
        "drive",
        "--listen",
        &addr,
        "--dir",
        &drive_dir.to_string_lossy(),
        "--tokens",
        &tokens.to_string_lossy(),
    ]
    .map(|a| a.to_owned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut drive = Proc::spawn("drive", &args, root, "info")?;
    assert!(wait_until(START_TIMEOUT, POLL, || accepts(&addr)).await);

    let unit = 256 * KIB;
    let total = 4 * unit + 1000;
    let payload = Payload::new(5, total);
    let bytes = |from: u64, to: u64| bytes::Bytes::from(payload_bytes(&payload, from, to));
    let client = DriveClient::new(
        Arc::new(TokioNetwork),
        &format!("http://{addr}"),
        Some(DRIVE_TOKEN.to_owned()),
    );
    let session = client
        .initiate("r.bin", "application/octet-stream", total)
        .await?;
    let held = client
        .put_piece(&session, 0, vec![bytes(0, 2 * unit)], total)
        .await?;
    assert_eq!(
        held,
        PieceReply::Incomplete {
            held_bytes: 2 * unit
        }
    );

    drive.signal("KILL")?;
    drive.wait_exit(Duration::from_secs(10)).await?;
    drop(drive);
    let mut drive = Proc::spawn("drive", &args, root, "info")?;
    assert!(wait_until(START_TIMEOUT, POLL, || accepts(&addr)).await);

    // A fresh client: the old connection died with the old process.
    let client = DriveClient::new(
        Arc::new(TokioNetwork),
        &format!("http://{addr}"),
        Some(DRIVE_TOKEN.to_owned()),
    );
    let status = client.status(&session, total).await?;
    assert_eq!(
        status,
        PieceReply::Incomplete {
            held_bytes: 2 * unit
        },
        "{}",
        drive.logs()
    );
    let done = client
        .put_piece(&session, 2 * unit, vec![bytes(2 * unit, total)], total)
        .await?;
    let PieceReply::Complete(file) = done else {
        return Err(format!("not complete: {done:?}").into());
    };
    let crc = payload.digest(1 << 20).hex();
    assert_eq!(file.crc64nvme.as_deref(), Some(crc.as_str()));
    let stored = finished_files(&drive_dir)?;
    assert_eq!(stored.len(), 1);
    assert_eq!(file_digest(&stored[0])?.hex(), crc);
    drive.signal("TERM")?;
    assert!(drive.wait_exit(Duration::from_secs(30)).await?.success());
    Ok(())
}

/// Graceful shutdown, in process with the wiring of `upsim serve`: once
/// the signal comes, a new upload and a new chunk are refused with 503
/// `shutting_down` and `Retry-After`, while a chunk already arriving is
/// received whole, reaches the drive, and is on disk when `run_until`
/// returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_chunks_in_flight_and_refuses_new_work() -> TestResult {
    use crate::support::{
        checksum, chunk_of, chunk_request, create_body, raw_exchange, read_reply, request,
        upload_id, user,
    };
    use tokio::io::AsyncWriteExt;
    use upsim::profile::{MemoryPolicy, Profile};
    use upsim::real::{bind_backend, bind_drive, DriveSettings, ServeSettings};
    use upsim::units::KIB;
    const CHUNK: u64 = 256 * KIB;
    let tmp = TempDir::new("shutdown")?;
    let root = tmp.path();
    let drive = bind_drive(&DriveSettings::new("127.0.0.1:0", root.join("drive"))).await?;
    let drive_url = format!("http://{}", drive.addr);
    let drive_task = tokio::spawn(drive.server.serve(drive.listener));
    let profile = Profile {
        name: "shutdown".into(),
        chunk_size_bytes: CHUNK,
        memory_per_upload: MemoryPolicy::ChunkWindow { chunks: 4 },
        ..Profile::dev()
    };
    let state_dir = root.join("state");
    let mut settings = ServeSettings::new("127.0.0.1:0", profile, drive_url);
    settings.state_dir = Some(state_dir.clone());
    let bound = bind_backend(&settings).await?;
    let addr = bound.addr.to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let backend = tokio::spawn(bound.backend.run_until(bound.listener, async {
        let _ = stopped.await;
    }));
    let alice = [user("alice")];
    let create = |size: u64| request("POST", &addr, "/uploads", &alice, &create_body(size));
    let created = raw_exchange(&addr, &create(3 * CHUNK), Duration::from_secs(10)).await?;
    assert_eq!(created.status, 201, "{}", created.text());
    let id = upload_id(&created)?;
    let payload = Payload::new(3, 3 * CHUNK);
    let put = |i: u64| {
        let body = chunk_of(&payload, CHUNK, i);
        let index = i.to_string();
        chunk_request(&addr, &alice, &id, &index, &[checksum(&body)], &body)
    };

    // Chunk 0 is half sent when the signal comes.
    let whole = put(0);
    let (first, rest) = whole.split_at(whole.len() - CHUNK as usize / 2);
    let mut in_flight = tokio::net::TcpStream::connect(&addr).await?;
    in_flight.write_all(first).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.send(()).map_err(|_| "backend gone")?;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let refused = raw_exchange(&addr, &create(CHUNK), Duration::from_secs(10)).await?;
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert_eq!(refused.cause().as_deref(), Some("shutting_down"));
    assert!(refused.header("retry-after").is_some());
    let refused = raw_exchange(&addr, &put(1), Duration::from_secs(10)).await?;
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert_eq!(refused.cause().as_deref(), Some("shutting_down"));
    assert!(refused.header("retry-after").is_some());

    in_flight.write_all(rest).await?;
    let accepted =
        tokio::time::timeout(Duration::from_secs(10), read_reply(&mut in_flight)).await??;
    assert_eq!(accepted.status, 200, "{}", accepted.text());
    drop(in_flight);

    let report = tokio::time::timeout(Duration::from_secs(30), backend).await???;
    assert!(report.drained, "{report:?}");
    assert_eq!((report.chunks_in_flight, report.uploads_persisted), (0, 1));
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state_dir.join(format!("{id}.json")))?)?;
    assert_eq!(
        record["committed_bytes"], CHUNK,
        "the chunk in flight reached the drive before the exit: {record}"
    );
    drive_task.abort();
    Ok(())
}
