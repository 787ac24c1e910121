//! A tus upload across a crash of `upsim serve` (SIGKILL, nothing
//! drained): after the restart HEAD reports what the drive holds (the
//! bytes only in memory are gone), a PATCH at the old offset is told so,
//! and the upload resumes from HEAD's offset to a drive file identical to
//! the source.

use super::{assert_on_drive, committed_in_record, number, part, Tus, ALICE};
use crate::support::{pair_addrs, token_file, wait_until, RealPair, TempDir, TestResult};
use std::time::Duration;
use upsim::payload::Payload;
use upsim::units::MIB;

/// The dev profile's chunk.
const CHUNK: u64 = 8 * MIB;
/// Five chunks and a bit; the dev profile's reservation holds one chunk.
const SIZE_BYTES: u64 = 5 * CHUNK + 1234;
const DRIVE_TOKEN: &str = "tus-restart-drive-token-0001";
const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_backend_crash_head_reports_what_the_drive_holds_and_the_upload_resumes(
) -> TestResult {
    let tmp = TempDir::new("tus-restart")?;
    let root = tmp.path();
    let s = |p: std::path::PathBuf| p.to_string_lossy().into_owned();
    let tokens = s(token_file(root, "tokens", &[(ALICE, "alice")])?);
    let drive_tokens = s(token_file(
        root,
        "drive-tokens",
        &[(DRIVE_TOKEN, "backend")],
    )?);
    let drive_token = root.join("drive-token");
    std::fs::write(&drive_token, DRIVE_TOKEN)?;
    let (state, drive_token) = (s(root.join("state")), s(drive_token));
    let serve_extra = [
        "--state",
        &state,
        "--tokens",
        &tokens,
        "--drive-token-file",
        &drive_token,
    ];
    let mut pair = RealPair::start(
        root,
        pair_addrs()?,
        &["--tokens", &drive_tokens],
        &serve_extra,
        "info",
    )
    .await?;
    let addr = pair.backend_addr.clone();
    let alice = Tus {
        addr: &addr,
        token: ALICE,
    };
    let payload = Payload::new(0x2e57, SIZE_BYTES);

    // 1. Two and a half chunks: two reach the drive, half a chunk waits
    //    in memory for the rest of its chunk.
    let path = alice.create(SIZE_BYTES, &[]).await?;
    let sent = 2 * CHUNK + CHUNK / 2;
    let reply = alice.patch(&path, 0, &[], &part(&payload, 0, sent)).await?;
    assert_eq!(reply.status, 204, "{}", reply.text());
    let on_drive = || async { committed_in_record(root, &path) == Some(2 * CHUNK) };
    assert!(
        wait_until(WAIT, POLL, on_drive).await,
        "{}",
        pair.backend.logs()
    );

    // 2. The backend dies and comes back on the same state.
    pair.restart_backend(root, &serve_extra, "info").await?;

    // 3. HEAD: what the drive holds; the half chunk is gone.
    assert_eq!(
        alice.offset(&path).await?,
        2 * CHUNK,
        "{}",
        pair.backend.logs()
    );
    let stale = alice
        .patch(&path, sent, &[], &part(&payload, sent, sent + 10))
        .await?;
    assert!(
        stale.cause().as_deref() == Some("offset_mismatch")
            || stale.cause().as_deref() == Some("resuming"),
        "a PATCH at the old offset: {}",
        stale.text()
    );

    // 4. The rest, from HEAD's offset (once the upload is taken back).
    let rest = part(&payload, 2 * CHUNK, SIZE_BYTES);
    let mut reply = alice.patch(&path, 2 * CHUNK, &[], &rest).await?;
    for _ in 0..100 {
        if reply.cause().as_deref() != Some("resuming") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        reply = alice.patch(&path, 2 * CHUNK, &[], &rest).await?;
    }
    assert_eq!(
        reply.status,
        204,
        "{}\n{}",
        reply.text(),
        pair.backend.logs()
    );
    assert_eq!(number(&reply, "upload-offset")?, SIZE_BYTES);
    assert_on_drive(root, &payload, "after the restart")?;
    pair.stop().await
}
