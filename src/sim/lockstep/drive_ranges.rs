//! The drive's committed ranges in lock-step (`drive_ranges_model`): a
//! model of each drive session, fed the byte ranges the drive accepted
//! (its commit log, read as it grows), predicts the bytes the session
//! holds; every answer the drive makes to a PUT and every drive answer the
//! backend acts on are compared with it.
//!
//! The model ([`Sessions`]) is pure: a session holds `held_bytes`, the end
//! of the contiguous ranges accepted for it. Each accepted range must start
//! exactly there (a gap skips bytes, an overlap stores some twice), end past
//! its start, end on a 256 KiB unit unless it ends the file, and never run
//! past the file's declared total.
//!
//! # What is checked, at each event
//! - **An accepted range** (folded at its session's next answer: ranges
//!   of one session are appended by the one request holding its storage,
//!   and answered before anyone else may append): the rules above.
//! - **The drive's answer to a PUT** ([`DriveRanges::answered`], via the
//!   emulator's [`PutObserver`] hook): a `308`'s `Range` is exactly the
//!   model's held bytes (absent exactly when nothing is held); a `200`
//!   finishes a session whose held bytes are its declared total. A `308` to a
//!   piece `first-last` never holds bytes past the piece (`held ≤ max(held
//!   before, last + 1)`), and answers only a piece that starts within what
//!   was held (a gap is a 400).
//! - **What the backend believes** ([`DriveRanges::believed`], from the
//!   window model's hook on the committer): every `Range` the backend acts on
//!   is one the drive reported for that session; and at every step
//!   ([`DriveRanges::holds_at_most`]) no upload's committed offset is past
//!   what its session holds.
//!
//! # What is not
//! - The bytes themselves: the drive's and the backend's checksums, and
//!   the oracle's end-of-run checksum check, see those.
//! - How much of a piece the drive keeps: it may keep less than it was
//!   sent (a truncation fault, a broken body), so the model bounds it and
//!   does not predict it.

use super::Findings;
use crate::drive::protocol::{parse_content_range, ContentRange};
use crate::drive::{AnsweredPut, CommitRecord, DriveControl, PutObserver};
use crate::ids::SessionId;
use crate::units::DRIVE_CHUNK_ALIGN_BYTES;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The oracle's name for this check.
pub const CHECK: &str = "drive_ranges_model";

/// One drive session, as the model follows it.
#[derive(Debug, Default, Clone)]
struct Session {
    /// The end of the contiguous ranges folded so far.
    held_bytes: u64,
    /// The file's size, as the session's pieces declare it.
    total_bytes: Option<u64>,
    /// Ranges accepted since the session's last answer, not yet folded.
    pending: Vec<(u64, u64)>,
    /// Every held count the drive reported for the session. Bounded by the
    /// file's size in units: held counts only grow.
    reported: BTreeSet<u64>,
}

/// Every session the model follows (pure: no drive, no locks).
#[derive(Debug, Default)]
pub struct Sessions {
    sessions: BTreeMap<SessionId, Session>,
}

impl Sessions {
    /// A range the drive accepted (from its commit log, or the growth of a
    /// record read before), kept for its session's next answer.
    pub fn accepted(&mut self, record: &CommitRecord) {
        self.sessions
            .entry(record.upload_id.clone())
            .or_default()
            .pending
            .push((record.first_byte, record.end_byte_exclusive));
    }

    /// The drive answered `put`: folds the session's pending ranges and
    /// judges the answer. Returns what is wrong.
    pub fn answered(&mut self, put: &AnsweredPut) -> Vec<String> {
        let range = put
            .content_range
            .as_deref()
            .and_then(|t| parse_content_range(t).ok());
        let session = self.sessions.entry(put.session.clone()).or_default();
        if let (None, Some(total)) = (session.total_bytes, range.and_then(|r| r.total_bytes())) {
            session.total_bytes = Some(total);
        }
        let before_bytes = session.held_bytes;
        let mut wrong = fold(session);
        let name = put.session.as_str();
        match (put.status, put.held_bytes) {
            (308, None) => wrong.push(format!(
                "session {name}: a 308 whose Range does not parse (the model holds {} bytes)",
                session.held_bytes
            )),
            (308, Some(held)) => {
                session.reported.insert(held);
                if held != session.held_bytes {
                    wrong.push(format!("session {name}: the drive reported {held} bytes held (Range), but the ranges it accepted add up to {}", session.held_bytes));
                }
                if let Some(ContentRange::Piece {
                    first_byte,
                    last_byte,
                    ..
                }) = range
                {
                    wrong.extend(judge_piece(name, before_bytes, first_byte, last_byte, held));
                }
            }
            (200, _) => {
                if let Some(total) = session.total_bytes {
                    session.reported.insert(total);
                }
                if Some(session.held_bytes) != session.total_bytes {
                    wrong.push(format!("session {name}: the drive finished the file (200) holding {} bytes of a declared {:?}", session.held_bytes, session.total_bytes));
                }
            }
            _ => {}
        }
        wrong
    }

    /// The backend acts on `held_bytes` for `session` from a drive answer:
    /// `Some(why)` unless the drive reported exactly that.
    pub fn believed(&self, session: &str, held_bytes: u64) -> Option<String> {
        let known = self.sessions.get(&SessionId::new(session));
        if known.is_some_and(|s| s.reported.contains(&held_bytes)) {
            return None;
        }
        let (held, reported) = known.map_or((0, Vec::new()), |s| {
            (
                s.held_bytes,
                s.reported.iter().rev().take(3).copied().collect(),
            )
        });
        Some(format!("the backend acts on {held_bytes} bytes held by session {session}, which the drive never reported (it holds {held}; latest reports {reported:?})"))
    }

    /// The most `session` holds, pending ranges included.
    pub fn holds_at_most(&self, session: &str) -> u64 {
        self.sessions.get(&SessionId::new(session)).map_or(0, |s| {
            s.pending
                .iter()
                .fold(s.held_bytes, |h, &(_, end)| h.max(end))
        })
    }
}

/// Folds `session`'s pending ranges into its held bytes, judging each.
fn fold(session: &mut Session) -> Vec<String> {
    let mut wrong = Vec::new();
    for (first, end) in std::mem::take(&mut session.pending) {
        let held = session.held_bytes;
        if first != held {
            let what = if first > held {
                "skips"
            } else {
                "stores twice"
            };
            wrong.push(format!(
                "an accepted range [{first}, {end}) {what} bytes: the session held {held}"
            ));
        }
        if end <= first {
            wrong.push(format!(
                "an accepted range [{first}, {end}) is empty or inverted"
            ));
        }
        let total = session.total_bytes;
        if end % DRIVE_CHUNK_ALIGN_BYTES != 0 && Some(end) != total {
            wrong.push(format!("an accepted range ends at {end}: neither a {DRIVE_CHUNK_ALIGN_BYTES}-byte unit nor the file's end ({total:?})"));
        }
        if total.is_some_and(|t| end > t) {
            wrong.push(format!(
                "an accepted range ends at {end}, past the file's {total:?} bytes"
            ));
        }
        session.held_bytes = held.max(end);
    }
    wrong
}

/// A `308` answering piece `first..=last` with `held` bytes, the session
/// having held `before`.
fn judge_piece(name: &str, before: u64, first: u64, last: u64, held: u64) -> Vec<String> {
    let mut wrong = Vec::new();
    if first > before {
        wrong.push(format!("session {name}: piece {first}-{last} answered 308 though it leaves a gap after the {before} bytes held (a 400)"));
    }
    let piece_end = last.saturating_add(1);
    if held > before.max(piece_end) {
        wrong.push(format!("session {name}: piece {first}-{last} left {held} bytes held, past its end {piece_end} (held before: {before})"));
    }
    wrong
}

/// The model, fed from a running drive: reads the commit log as it grows
/// (at each answer), judges each answer, keeps what it finds for the step
/// loop.
pub struct DriveRanges {
    books: Mutex<Books>,
    findings: Findings,
    /// How many drive answers the books have taken in: equal counts, equal
    /// books (they change only in [`PutObserver::answered`]), so the window
    /// model re-checks offsets against them only when this moves.
    changes: AtomicU64,
}

#[derive(Default)]
struct Books {
    /// The absolute index of the next commit record to read.
    next_record: u64,
    /// Each session's latest record read: its index and the end read. A
    /// request extends its record in place while it appends (one piece, one
    /// record), so the latest is read again until a newer one replaces it.
    latest: BTreeMap<SessionId, (u64, u64)>,
    sessions: Sessions,
}

impl Books {
    /// Reads what `drive` appended since the last read: the growth of each
    /// session's latest record, then the new records. Returns how many
    /// records the drive dropped unread.
    fn read(&mut self, drive: &DriveControl) -> u64 {
        for (session, (index, end_read)) in &mut self.latest {
            let Some(r) = drive.commit_record(*index) else {
                continue;
            };
            if r.end_byte_exclusive > *end_read {
                self.sessions.accepted(&CommitRecord {
                    upload_id: session.clone(),
                    first_byte: *end_read,
                    end_byte_exclusive: r.end_byte_exclusive,
                });
                *end_read = r.end_byte_exclusive;
            }
        }
        let (start, records) = drive.commit_records_since(self.next_record);
        let dropped = start - self.next_record;
        for (index, r) in (start..).zip(&records) {
            self.sessions.accepted(r);
            self.latest
                .insert(r.upload_id.clone(), (index, r.end_byte_exclusive));
        }
        self.next_record = start + records.len() as u64;
        dropped
    }
}

impl DriveRanges {
    /// A model of one drive; what it finds goes to `findings`. Attach it
    /// with [`DriveControl::observe_puts`].
    pub fn new(findings: Findings) -> Arc<Self> {
        Arc::new(Self {
            books: Mutex::default(),
            findings,
            changes: AtomicU64::new(0),
        })
    }

    fn books(&self) -> MutexGuard<'_, Books> {
        self.books.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a finding of this check made elsewhere (the window model's
    /// step, comparing the backend's committed offsets).
    pub fn flag(&self, detail: String) {
        self.findings.push(detail);
    }

    /// See [`Sessions::believed`]; a finding if the backend acts on what
    /// the drive never said.
    pub fn believed(&self, upload: &str, session: &str, held_bytes: u64) {
        if let Some(why) = self.books().sessions.believed(session, held_bytes) {
            self.findings.push(format!("upload {upload}: {why}"));
        }
    }

    /// How many drive answers the books have taken in (see the field).
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }

    /// See [`Sessions::holds_at_most`], as of the drive's last answer
    /// (which is all the backend can have heard of).
    pub fn holds_at_most(&self, session: &str) -> u64 {
        self.books().sessions.holds_at_most(session)
    }
}

impl PutObserver for DriveRanges {
    fn answered(&self, drive: &DriveControl, put: &AnsweredPut) {
        self.changes.fetch_add(1, Ordering::Relaxed);
        let mut books = self.books();
        let dropped = books.read(drive);
        if dropped > 0 {
            self.findings.push(format!("{dropped} commit records were dropped before the model read them (raise DriveConfig::commit_log_records_max)"));
        }
        for w in books.sessions.answered(put) {
            self.findings.push(w);
        }
        if put.status == 200 {
            // Finished: nothing more is appended to it.
            books.latest.remove(&put.session);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNIT: u64 = DRIVE_CHUNK_ALIGN_BYTES;

    fn record(first: u64, end: u64) -> CommitRecord {
        CommitRecord {
            upload_id: SessionId::new("s"),
            first_byte: first,
            end_byte_exclusive: end,
        }
    }

    fn answer(content_range: &str, status: u16, held_bytes: Option<u64>) -> AnsweredPut {
        AnsweredPut {
            session: SessionId::new("s"),
            content_range: Some(content_range.into()),
            status,
            held_bytes,
        }
    }

    /// A file of 2.5 units, sent as 2 units then the rest.
    fn two_pieces(model: &mut Sessions, second_end: u64, second_held: u64) -> Vec<String> {
        let total = 5 * UNIT / 2;
        model.accepted(&record(0, 2 * UNIT));
        let mut wrong = model.answered(&answer(
            &format!("bytes 0-{}/{total}", 2 * UNIT - 1),
            308,
            Some(2 * UNIT),
        ));
        model.accepted(&record(2 * UNIT, second_end));
        wrong.extend(model.answered(&answer(
            &format!("bytes {}-{}/{total}", 2 * UNIT, total - 1),
            308,
            Some(second_held),
        )));
        wrong
    }

    #[test]
    fn drive_ranges_model_passes_true_answers_and_flags_wrong_ones() {
        let total = 5 * UNIT / 2;
        // Right: the whole file, then a 200.
        let mut model = Sessions::default();
        model.accepted(&record(0, 2 * UNIT));
        model.accepted(&record(2 * UNIT, total));
        let wrong = model.answered(&answer(
            &format!("bytes 0-{}/{total}", total - 1),
            200,
            None,
        ));
        assert!(wrong.is_empty(), "{wrong:?}");
        assert_eq!(model.believed("s", total), None);

        // A Range one byte short of what was accepted.
        let wrong = two_pieces(&mut Sessions::default(), total, total - 1);
        assert_eq!(wrong.len(), 1, "{wrong:?}");
        assert!(wrong[0].contains("reported"), "{wrong:?}");

        // A range that skips a unit, and one stored twice.
        let wrong = two_pieces(&mut Sessions::default(), total, total);
        assert!(wrong.is_empty(), "{wrong:?}");
        let mut model = Sessions::default();
        model.accepted(&record(UNIT, 2 * UNIT));
        let wrong = model.answered(&answer("bytes */*", 308, Some(2 * UNIT)));
        assert!(wrong.iter().any(|w| w.contains("skips")), "{wrong:?}");
        let mut model = Sessions::default();
        model.accepted(&record(0, UNIT));
        model.accepted(&record(UNIT / 2, UNIT + UNIT / 2));
        let wrong = model.answered(&answer("bytes */*", 308, Some(UNIT + UNIT / 2)));
        assert!(wrong.iter().any(|w| w.contains("twice")), "{wrong:?}");
        assert!(wrong.iter().any(|w| w.contains("unit")), "{wrong:?}");

        // A piece that left more held than it carried.
        let mut model = Sessions::default();
        model.accepted(&record(0, 2 * UNIT));
        let wrong = model.answered(&answer(
            &format!("bytes 0-{}/*", UNIT - 1),
            308,
            Some(2 * UNIT),
        ));
        assert!(
            wrong.iter().any(|w| w.contains("past its end")),
            "{wrong:?}"
        );

        // A 200 before the last byte.
        let mut model = Sessions::default();
        model.accepted(&record(0, 2 * UNIT));
        let wrong = model.answered(&answer(
            &format!("bytes 0-{}/{total}", 2 * UNIT - 1),
            200,
            None,
        ));
        assert!(wrong.iter().any(|w| w.contains("finished")), "{wrong:?}");
    }

    #[test]
    fn the_backend_may_believe_only_what_the_drive_reported() {
        let mut model = Sessions::default();
        model.accepted(&record(0, 2 * UNIT));
        let wrong = model.answered(&answer("bytes */*", 308, Some(2 * UNIT)));
        assert!(wrong.is_empty(), "{wrong:?}");
        assert_eq!(model.believed("s", 2 * UNIT), None);
        // One past the Range's end, or a count never reported.
        assert!(model.believed("s", 2 * UNIT + 1).is_some());
        assert!(model.believed("s", UNIT).is_some());
        assert!(model.believed("other", 0).is_some());
        model.accepted(&record(2 * UNIT, 3 * UNIT));
        assert_eq!(model.holds_at_most("s"), 3 * UNIT);
    }
}
