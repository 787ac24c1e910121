use super::super::oracle::{completed_outcome, Bounds};
use super::*;
use crate::chunk_api::{Cause, ErrorDetail, ProgressState};
use crate::ids::UploadId;

/// Upload "u": 10 bytes, its drive session 0 holding 4 then 8 bytes,
/// then complete (the oracle's fixture outcome: 10 bytes, crc "ab").
fn trace() -> Vec<Stamped> {
    let at = |at_ms, event| Stamped {
        at_ms,
        host: "backend".into(),
        event,
    };
    let upload = || "u".to_owned();
    vec![
        at(
            0,
            Event::DriveSession {
                upload: upload(),
                generation: 0,
            },
        ),
        at(
            10,
            Event::DriveHeld {
                upload: upload(),
                held_bytes: 4,
            },
        ),
        at(
            20,
            Event::DriveHeld {
                upload: upload(),
                held_bytes: 8,
            },
        ),
        at(
            30,
            Event::UploadComplete {
                upload: upload(),
                size_bytes: 10,
                checksum: "ab".into(),
            },
        ),
    ]
}

fn state(phase: Phase, committed_bytes: u64, received_bytes: u64) -> ProgressState {
    let complete = completed_outcome("a", "u", "ab").file;
    ProgressState {
        upload_id: UploadId::new("u"),
        phase,
        file_size_bytes: 10,
        committed_bytes,
        received_bytes,
        drive_session: 0,
        file: (phase == Phase::Complete).then_some(complete),
        failure: (phase == Phase::Failed).then(|| ErrorDetail {
            status: 410,
            cause: Cause::Aborted,
            message: "aborted".into(),
            details: serde_json::Value::Null,
        }),
    }
}

fn event(at_ms: u64, kind: EventKind, state: ProgressState) -> Observed {
    Observed::Event {
        at_ms,
        kind,
        state: Box::new(state),
    }
}

fn opened(at_ms: u64, last: Option<&ProgressState>) -> Observed {
    Observed::Opened {
        at_ms,
        last_event_id: last.map(ProgressState::event_id),
    }
}

/// A follower that saw the upload through, with one reconnect.
fn clean_log() -> FollowLog {
    let (first, received) = (state(Phase::Receiving, 0, 0), state(Phase::Receiving, 0, 6));
    FollowLog {
        upload: Some("u".into()),
        seen: vec![
            opened(1, None),
            event(1, EventKind::Phase, first),
            event(5, EventKind::Received, received.clone()),
            Observed::Dropped { at_ms: 6 },
            opened(9, Some(&received)),
            event(11, EventKind::Committed, state(Phase::Receiving, 4, 6)),
            event(21, EventKind::Committed, state(Phase::Receiving, 8, 10)),
            event(31, EventKind::Complete, state(Phase::Complete, 10, 10)),
        ],
        dropped_entries: 0,
        end: Some(FollowEnd::Ended),
    }
}

fn run(log: &FollowLog, result: ClientResult) -> Vec<&'static str> {
    let mut oracle = Oracle::new(Bounds::default());
    check(&mut oracle, std::slice::from_ref(log), &trace(), &[result]);
    oracle.violations.iter().map(|v| v.check).collect()
}

fn complete() -> ClientResult {
    Some(Ok(completed_outcome("a", "u", "ab")))
}

#[test]
fn a_followed_upload_passes() {
    assert_eq!(run(&clean_log(), complete()), Vec::<&str>::new());
    // A client that gave up has no outcome to match; an upload never
    // created was never followed.
    let mut cut = clean_log();
    cut.seen.truncate(4);
    cut.end = Some(FollowEnd::CutOff);
    let gave_up = Some(Err(ClientError::GaveUp {
        stalled_ms: 1,
        last_error: "x".into(),
    }));
    assert_eq!(run(&cut, gave_up), Vec::<&str>::new());
    assert_eq!(run(&FollowLog::default(), None), Vec::<&str>::new());
}

#[test]
fn each_progress_check_can_fail() {
    // Committed goes back within a drive session.
    let mut back = clean_log();
    back.seen.insert(
        6,
        event(12, EventKind::Committed, state(Phase::Receiving, 2, 6)),
    );
    assert_eq!(run(&back, complete()), [COMMITTED_MONOTONE]);

    // Ahead of the drive: 8 bytes reported before the drive said so.
    let mut ahead = clean_log();
    ahead.seen[5] = event(11, EventKind::Committed, state(Phase::Receiving, 8, 8));
    assert_eq!(run(&ahead, complete()), [WITHIN_DRIVE]);
    // Complete before the drive finished.
    let mut early = clean_log();
    early.seen[7] = event(25, EventKind::Complete, state(Phase::Complete, 10, 10));
    assert_eq!(run(&early, complete()), [WITHIN_DRIVE]);

    // A reconnect repeats the state the reader had.
    let mut repeated = clean_log();
    repeated.seen.insert(
        5,
        event(10, EventKind::Received, state(Phase::Receiving, 0, 6)),
    );
    assert_eq!(run(&repeated, complete()), [RESUME_EXACTLY]);
    // A reconnect that resumes from nothing (what it had is lost).
    let mut forgot = clean_log();
    forgot.seen[4] = opened(9, None);
    assert_eq!(run(&forgot, complete()), [RESUME_EXACTLY]);

    // The last event is not the outcome: missing, another file, another
    // cause, or a stream that failed.
    let mut short = clean_log();
    short.seen.pop();
    short.end = Some(FollowEnd::CutOff);
    assert_eq!(run(&short, complete()), [END_WITH_OUTCOME]);
    let other = Some(Ok(completed_outcome("a", "u", "cd")));
    assert_eq!(run(&clean_log(), other), [END_WITH_OUTCOME]);
    let mut failed = clean_log();
    failed.seen[7] = event(31, EventKind::Failed, state(Phase::Failed, 8, 10));
    let drive_failed = Some(Err(ClientError::UploadFailed {
        cause: Cause::DriveFailed,
        message: "x".into(),
    }));
    assert_eq!(run(&failed, drive_failed), [END_WITH_OUTCOME]);
    let aborted = Some(Err(ClientError::UploadFailed {
        cause: Cause::Aborted,
        message: "x".into(),
    }));
    assert_eq!(run(&failed, aborted), Vec::<&str>::new());
    let mut refused = clean_log();
    refused.end = Some(FollowEnd::Failed("401".into()));
    assert_eq!(run(&refused, complete()), [END_WITH_OUTCOME]);
}
