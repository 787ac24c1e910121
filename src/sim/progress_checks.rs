//! The progress channel's end checks, on what each follower saw
//! ([`FollowLog`]) against the trace and the uploads' outcomes:
//!
//! - `events_committed_monotone`: committed progress never goes back, over
//!   every event an upload's follower received, reconnects and backend
//!   restarts included (a new drive session counts as ahead: it starts
//!   again from 0 because the drive lost the old one);
//! - `events_within_drive`: no event reports more committed than the drive
//!   had said it holds, at the time the event arrived (the trace's
//!   `drive_held` for that upload and drive session, which the lock-step
//!   ranges model holds to the drive's own; `upload_complete` for a
//!   complete upload);
//! - `events_resume_exactly`: no state arrives twice in a row (a reconnect
//!   repeats nothing), and every reconnect resumes from the last event
//!   received (`Last-Event-ID`), so nothing between is lost;
//! - `events_end_with_outcome`: an upload that ended on the backend
//!   (complete, or failed with a cause) was followed to its last event,
//!   and that event is the outcome its client saw: complete with the same
//!   file and checksum, or failed with the same cause.

use super::oracle::Oracle;
use super::progress::{FollowEnd, FollowLog, Observed};
use super::world::ClientResult;
use crate::chunk_api::{EventId, EventKind, Phase};
use crate::client::ClientError;
use crate::trace::{Event, Stamped};
use std::collections::BTreeMap;

/// Committed progress only moves forward.
pub const COMMITTED_MONOTONE: &str = "events_committed_monotone";
/// Never ahead of what the drive holds.
pub const WITHIN_DRIVE: &str = "events_within_drive";
/// Nothing repeated or skipped across a reconnect.
pub const RESUME_EXACTLY: &str = "events_resume_exactly";
/// The last event is the upload's outcome.
pub const END_WITH_OUTCOME: &str = "events_end_with_outcome";

/// What the drive had said it holds, per upload, from the trace.
#[derive(Debug, Default)]
struct DriveSaid {
    /// (time, drive session, bytes held), in trace order.
    held: BTreeMap<String, Vec<(u64, u32, u64)>>,
    /// When each upload completed, and its size.
    complete: BTreeMap<String, (u64, u64)>,
}

impl DriveSaid {
    fn from_trace(trace: &[Stamped]) -> Self {
        let mut said = Self::default();
        let mut session: BTreeMap<&str, u32> = BTreeMap::new();
        for e in trace {
            match &e.event {
                Event::DriveSession { upload, generation } => {
                    session.insert(upload, *generation);
                }
                Event::DriveHeld { upload, held_bytes } => {
                    let generation = session.get(upload.as_str()).copied().unwrap_or(0);
                    said.held.entry(upload.clone()).or_default().push((
                        e.at_ms,
                        generation,
                        *held_bytes,
                    ));
                }
                Event::UploadComplete {
                    upload, size_bytes, ..
                } => {
                    said.complete.insert(upload.clone(), (e.at_ms, *size_bytes));
                }
                _ => {}
            }
        }
        said
    }

    /// The most the drive had said it holds of `upload` in `session` by
    /// `at_ms`.
    fn held_by(&self, upload: &str, session: u32, at_ms: u64) -> u64 {
        self.held
            .get(upload)
            .into_iter()
            .flatten()
            .filter(|(t, s, _)| *t <= at_ms && *s == session)
            .map(|(_, _, held)| *held)
            .max()
            .unwrap_or(0)
    }
}

/// Runs every check on every upload's log; `logs` and `results` have one
/// entry per file (a file never followed has an empty log).
pub fn check(oracle: &mut Oracle, logs: &[FollowLog], trace: &[Stamped], results: &[ClientResult]) {
    let drive = DriveSaid::from_trace(trace);
    for (i, log) in logs.iter().enumerate() {
        let Some(upload) = log.upload.as_deref() else {
            continue;
        };
        committed_monotone(oracle, i, log);
        within_drive(oracle, i, upload, log, &drive);
        resume_exactly(oracle, i, log);
        end_with_outcome(oracle, i, log, results.get(i).and_then(Option::as_ref));
    }
}

fn committed_monotone(oracle: &mut Oracle, i: usize, log: &FollowLog) {
    let mut before: Option<EventId> = None;
    for (at_ms, _, state) in log.events() {
        let id = state.event_id();
        if let Some(b) = before {
            if id.committed_progress() < b.committed_progress() {
                oracle.flag(
                    COMMITTED_MONOTONE,
                    format!("upload {i}: committed went back from {b} to {id} at {at_ms} ms"),
                );
            }
        }
        before = Some(id);
    }
}

fn within_drive(oracle: &mut Oracle, i: usize, upload: &str, log: &FollowLog, drive: &DriveSaid) {
    for (at_ms, _, state) in log.events() {
        let committed = state.committed_bytes;
        if state.phase == Phase::Complete {
            match drive.complete.get(upload) {
                Some(&(t, size)) if t <= at_ms && size == committed => {}
                other => oracle.flag(
                    WITHIN_DRIVE,
                    format!("upload {i}: complete with {committed} bytes at {at_ms} ms; the drive finished {other:?} (time, size)"),
                ),
            }
            continue;
        }
        let held = drive.held_by(upload, state.drive_session, at_ms);
        if committed > held {
            oracle.flag(
                WITHIN_DRIVE,
                format!(
                    "upload {i}: {committed} bytes committed in drive session {} at {at_ms} ms; the drive had said it held {held}",
                    state.drive_session
                ),
            );
        }
    }
}

fn resume_exactly(oracle: &mut Oracle, i: usize, log: &FollowLog) {
    let mut last: Option<EventId> = None;
    for observed in &log.seen {
        match observed {
            Observed::Opened {
                at_ms,
                last_event_id,
            } if *last_event_id != last => oracle.flag(
                RESUME_EXACTLY,
                format!(
                    "upload {i}: reopened at {at_ms} ms from {} but the last event received was {}",
                    show(*last_event_id),
                    show(last)
                ),
            ),
            Observed::Event { at_ms, state, .. } => {
                let id = state.event_id();
                if last == Some(id) {
                    oracle.flag(
                        RESUME_EXACTLY,
                        format!("upload {i}: state {id} received twice in a row, at {at_ms} ms"),
                    );
                }
                last = Some(id);
            }
            _ => {}
        }
    }
}

fn show(id: Option<EventId>) -> String {
    id.map_or_else(|| "none".to_owned(), |id| id.to_string())
}

fn end_with_outcome(
    oracle: &mut Oracle,
    i: usize,
    log: &FollowLog,
    result: Option<&Result<crate::client::UploadOutcome, ClientError>>,
) {
    if let Some(FollowEnd::Failed(reason)) = &log.end {
        oracle.flag(
            END_WITH_OUTCOME,
            format!("upload {i}: following failed: {reason}"),
        );
    }
    let last = log.events().last();
    let problem = match (result, last) {
        (Some(Ok(outcome)), Some((_, EventKind::Complete, state))) => {
            let same_file = state.file.as_ref().map(|f| f.digest()) == Some(outcome.file.digest());
            (!same_file || state.committed_bytes != outcome.file.size_bytes).then(|| {
                format!(
                    "complete with {:?} ({} bytes), the client got {:?} ({} bytes)",
                    state.file.as_ref().and_then(|f| f.digest()),
                    state.committed_bytes,
                    outcome.file.digest(),
                    outcome.file.size_bytes
                )
            })
        }
        (
            Some(Err(ClientError::UploadFailed { cause, .. })),
            Some((_, EventKind::Failed, state)),
        ) => {
            let seen = state.failure.as_ref().map(|f| f.cause);
            (seen != Some(*cause)).then(|| format!("failed with {seen:?}, the client got {cause}"))
        }
        (Some(Ok(_) | Err(ClientError::UploadFailed { .. })), last) => Some(format!(
            "the last event was {:?} ({:?}), not the outcome",
            last.map(|(_, kind, _)| kind),
            log.end
        )),
        // A client that gave up (or was refused) has no outcome to match.
        _ => None,
    };
    if let Some(problem) = problem {
        oracle.flag(END_WITH_OUTCOME, format!("upload {i}: {problem}"));
    }
}

#[cfg(test)]
mod tests;
