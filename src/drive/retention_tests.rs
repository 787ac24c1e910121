//! Regression tests that ensure a drive serving many sessions keeps its
//! per-session state and its observations bounded: the session table by the
//! session ttl, the commit log and the finished files by their retention.
//! Driven through a real server on loopback with the typed client.

use super::{DigestStore, DriveClient, DriveConfig, DriveServer, PieceReply};
use crate::env::{ManualClock, Network, TokioNetwork};
use crate::ids::SessionId;
use crate::units::DRIVE_CHUNK_ALIGN_BYTES;
use bytes::Bytes;
use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

/// Records and files kept.
const RETENTION: usize = 4;
/// Sessions run: more than ten times the retention.
const SESSIONS: usize = 10 * RETENTION + 3;
/// Each file: one whole unit, then a short last piece (two commit records).
const FILE_BYTES: u64 = DRIVE_CHUNK_ALIGN_BYTES + 7;

type TestResult = Result<(), Box<dyn Error + Send + Sync>>;

#[tokio::test]
async fn many_sessions_leave_the_table_log_and_finished_files_bounded() -> TestResult {
    let clock = Arc::new(ManualClock::default());
    let listener = TokioNetwork.listen("127.0.0.1:0").await?;
    let base_url = format!("http://{}", listener.local_addr()?);
    let config = DriveConfig {
        public_base_url: base_url.clone(),
        session_ttl: Duration::from_secs(1),
        commit_log_records_max: RETENTION,
        finished_files_max: RETENTION,
        ..DriveConfig::default()
    };
    let server = DriveServer::new(config, clock.clone(), Arc::new(DigestStore));
    let control = server.control();
    let task = tokio::spawn(server.serve(listener));
    let client = DriveClient::new(Arc::new(TokioNetwork), &base_url, None);
    let unit = usize::try_from(DRIVE_CHUNK_ALIGN_BYTES)?;

    let mut ids: Vec<SessionId> = Vec::new();
    for i in 0..SESSIONS {
        let session = client.initiate(&format!("f{i}"), "a/b", FILE_BYTES).await?;
        let first = vec![Bytes::from(vec![1u8; unit])];
        let reply = client.put_piece(&session, 0, first, FILE_BYTES).await?;
        assert_eq!(
            reply,
            PieceReply::Incomplete {
                held_bytes: DRIVE_CHUNK_ALIGN_BYTES
            }
        );
        let last = vec![Bytes::from(vec![2u8; 7])];
        let reply = client
            .put_piece(&session, DRIVE_CHUNK_ALIGN_BYTES, last, FILE_BYTES)
            .await?;
        assert!(matches!(reply, PieceReply::Complete(_)), "{reply:?}");
        ids.push(session.session_id().clone());

        // Bounded at every step, not just at the end.
        let (log, _) = control.commit_log_retained();
        assert!(log.len() <= RETENTION, "session {i}: {} records", log.len());
        assert!(control.finished_files().len() <= RETENTION);
        // The previous (finished, idle) session was swept at this
        // session's initiation.
        let live_sessions = control.lock().sessions.len();
        assert_eq!(live_sessions, 1, "session {i}");
        clock.advance(Duration::from_secs(2));
    }

    // The newest are kept, in order; the rest are counted.
    let (log, dropped) = control.commit_log_retained();
    assert_eq!(dropped, (2 * SESSIONS - RETENTION) as u64);
    let kept: Vec<(&SessionId, u64, u64)> = log
        .iter()
        .map(|r| (&r.upload_id, r.first_byte, r.end_byte_exclusive))
        .collect();
    let newest = &ids[SESSIONS - RETENTION / 2..];
    let expected: Vec<(&SessionId, u64, u64)> = newest
        .iter()
        .flat_map(|id| {
            [
                (id, 0, DRIVE_CHUNK_ALIGN_BYTES),
                (id, DRIVE_CHUNK_ALIGN_BYTES, FILE_BYTES),
            ]
        })
        .collect();
    assert_eq!(kept, expected);
    let names: Vec<String> = control
        .finished_files()
        .into_iter()
        .map(|f| f.name)
        .collect();
    let expected_names: Vec<String> = (SESSIONS - RETENTION..SESSIONS)
        .map(|i| format!("f{i}"))
        .collect();
    assert_eq!(names, expected_names);
    assert_eq!(
        control.finished_files_dropped(),
        (SESSIONS - RETENTION) as u64
    );
    // The counters still count everything.
    let stats = control.stats();
    assert_eq!(stats.files_finished, SESSIONS as u64);
    assert_eq!(stats.bytes_committed, SESSIONS as u64 * FILE_BYTES);
    task.abort();
    Ok(())
}
