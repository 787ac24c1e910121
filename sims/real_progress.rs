//! The progress channel in real mode, the `upsim` binary's processes on
//! loopback: an events token opens a stream and never reaches a log line,
//! and `upsim upload` shows committed progress (from the stream) beside
//! sent, with rate and ETA, as plain lines when its output is a pipe.

use crate::support::{
    bearer, create_body, pair_addrs, send, token_file, upload_id, write_payload, EventStream, Proc,
    RealPair, TempDir, TestResult,
};
use std::time::Duration;
use upsim::chunk_api::{EventsToken, Phase};
use upsim::units::MIB;

const WAIT: Duration = Duration::from_secs(15);
const ALICE: &str = "alice-token-0123456789abcdef";

#[tokio::test]
async fn real_events_tokens_open_a_stream_and_never_reach_a_log_line() -> TestResult {
    let dir = TempDir::new("real-events-token")?;
    let tokens = token_file(dir.path(), "tokens", &[(ALICE, "alice")])?;
    let tokens = tokens.to_string_lossy().into_owned();
    // The most verbose logging there is: nothing secret may show even so.
    let mut pair = RealPair::start(
        dir.path(),
        pair_addrs()?,
        &[],
        &["--tokens", &tokens],
        "trace",
    )
    .await?;
    let addr = pair.backend_addr.clone();
    let created = send(
        &addr,
        "POST",
        "/uploads",
        &[bearer(ALICE)],
        &create_body(MIB),
    )
    .await?;
    assert_eq!(created.status, 201, "{}", created.text());
    let id = upload_id(&created)?;
    let issued = send(
        &addr,
        "POST",
        &format!("/uploads/{id}/events/token"),
        &[bearer(ALICE)],
        b"",
    )
    .await?;
    assert_eq!(issued.status, 201, "{}", issued.text());
    let issued: EventsToken = serde_json::from_slice(&issued.body)?;
    let path = format!("/uploads/{id}/events?token={}", issued.token);
    let mut stream = EventStream::open(&addr, &path, &[]).await?;
    assert_eq!(stream.reply.status, 200);
    assert_eq!(stream.next_event(WAIT).await?.state.phase, Phase::Receiving);
    let forged = send(
        &addr,
        "GET",
        &format!("/uploads/{id}/events?token={}", "f".repeat(32)),
        &[],
        b"",
    )
    .await?;
    assert_eq!(forged.status, 401);
    drop(stream);
    pair.stop().await?;
    let logs = format!("{}{}", pair.backend.stderr(), pair.drive.stderr());
    assert!(logs.len() > 1_000, "trace logging is on: {logs}");
    assert!(!logs.contains(&issued.token), "an events token in a log");
    assert!(!logs.contains(ALICE), "a bearer token in a log");
    Ok(())
}

#[tokio::test]
async fn real_upload_shows_committed_beside_sent_as_plain_lines() -> TestResult {
    let dir = TempDir::new("real-upload-progress")?;
    let mut pair = RealPair::start(dir.path(), pair_addrs()?, &[], &[], "info").await?;
    let source = dir.path().join("progress.bin");
    write_payload(&source, 0x9e5, 24 * MIB)?;
    let (source, state) = (
        source.to_string_lossy().into_owned(),
        dir.path().join("client").to_string_lossy().into_owned(),
    );
    let server = format!("http://{}", pair.backend_addr);
    // 64 Mbit/s: three seconds, so the lines have something to show.
    let args = [
        "upload",
        &source,
        "--server",
        &server,
        "--user",
        "alice",
        "--state-dir",
        &state,
        "--limit-rate-mbit",
        "64",
    ];
    let mut client = Proc::spawn("upload", &args, dir.path(), "info")?;
    let status = client.wait_exit(Duration::from_secs(120)).await?;
    assert!(status.success(), "{}", client.logs());
    let stderr = client.stderr();
    assert!(
        !stderr.contains('\r'),
        "carriage returns in a pipe: {stderr:?}"
    );
    assert!(
        stderr.contains("progress stream opened"),
        "committed progress comes from the event stream: {stderr}"
    );
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("sent ") && l.contains(", committed "))
        .collect();
    assert!(lines.len() >= 2, "progress lines: {stderr}");
    let last = lines.last().copied().unwrap_or_default();
    assert!(
        last.contains("committed 24.00 MB of 24.00 MB (100.0 %)"),
        "{last}"
    );
    assert!(
        lines.iter().any(|l| l.contains("MB/s, ETA ")),
        "a rate and an ETA: {stderr}"
    );
    assert!(stderr.contains("on the drive"), "{stderr}");
    pair.stop().await?;
    Ok(())
}
