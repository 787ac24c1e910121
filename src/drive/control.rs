//! Faults and observation: the handle a test or scenario holds on a running
//! [`DriveServer`](super::DriveServer).
//!
//! [`DriveControl`] shares one [`DriveState`] with the server: the session
//! table, the id RNG, armed faults, the commit log, counters and finished
//! files, all behind one mutex that is never held across an `.await`.
//!
//! Invariants:
//! - everything observable is ordered (a `Vec` in arrival order or a
//!   `BTreeMap`), so the same seed and the same requests give the same
//!   observations;
//! - the commit log's ranges of one upload are contiguous, ascending and
//!   disjoint: each starts where the previous one ended (the server commits
//!   only at the held offset);
//! - a fault fires on piece PUTs only (not status queries), once per count;
//! - the commit log and the finished files are bounded: each keeps its newest
//!   entries up to its retention ([`DriveConfig::commit_log_records_max`],
//!   [`DriveConfig::finished_files_max`]) and counts what it dropped.
//!
//! # Why the commit log may drop records, and why the oracle still sees all
//!
//! A drive that runs for weeks (real mode) must not keep a record per piece
//! forever, so the log keeps the newest records and drops the oldest. The
//! simulation oracle reads the whole log at the end of a run to check that
//! every range was committed once and in order; a log missing its oldest
//! records would make it check less without saying so. So
//! [`DriveControl::commit_log`] refuses (panics, naming the knob) to hand out
//! a log that has dropped records: the default retention (65,536 records) is
//! far above what the shipped scenarios commit, and a run that exceeds it
//! stops loudly instead of being checked silently less. Callers that accept
//! a window (a long-running drive's observer) read
//! [`DriveControl::commit_log_retained`].
//!
//! [`DriveConfig::commit_log_records_max`]: super::DriveConfig::commit_log_records_max
//! [`DriveConfig::finished_files_max`]: super::DriveConfig::finished_files_max

use super::issued_tokens::IssuedTokens;
use super::journal::SessionJournal;
use super::protocol::{format_id, DriveReason, FileResource};
use super::session::SessionTable;
use super::storage::StorageHandle;
use crate::ids::{os_random_id, IdSource, OsRandomError, SessionId};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// One range of bytes appended to an upload's storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommitRecord {
    /// The session.
    pub upload_id: SessionId,
    /// Offset of the first byte appended.
    pub first_byte: u64,
    /// Offset just past the last byte appended.
    pub end_byte_exclusive: u64,
}

/// How an armed fault answers a piece PUT: the status and Drive's reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PutFailure {
    /// The status.
    pub(crate) status: u16,
    /// The reason in the error body.
    pub(crate) reason: DriveReason,
}

/// What the emulator has done, counted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DriveStats {
    /// Sessions opened by an initiation.
    pub sessions_created: u64,
    /// Sessions dropped for idleness or by [`DriveControl::expire_all_sessions`].
    pub sessions_expired: u64,
    /// Piece PUTs that passed the protocol checks and streamed into storage.
    pub pieces_accepted: u64,
    /// Faults fired (failed PUTs and truncated pieces).
    pub faults_injected: u64,
    /// Bytes appended to storage, over all sessions.
    pub bytes_committed: u64,
    /// Files completed.
    pub files_finished: u64,
    /// Access tokens the token endpoint issued (left out of reports when 0,
    /// so runs without OAuth report as before).
    #[serde(skip_serializing_if = "is_zero")]
    pub access_tokens_issued: u64,
}

fn is_zero(count: &u64) -> bool {
    *count == 0
}

/// Everything the server and its control share.
pub(crate) struct DriveState {
    /// Sessions by upload id.
    pub(crate) sessions: SessionTable,
    /// The id generator: the only source of randomness in the emulator
    /// (unless ids come from the OS).
    rng: ChaCha8Rng,
    /// Where ids come from.
    id_source: IdSource,
    /// An armed `fail_next_puts`, and how many PUTs it still fails.
    fail_puts: Option<(PutFailure, u32)>,
    /// Cap of an armed `truncate_next_piece`.
    truncate_next_bytes: Option<u64>,
    /// Files left of an armed `misreport_next_digests`.
    misreport_digests: u32,
    /// The newest commit records, oldest first; at most
    /// `retention.commit_log_records_max`.
    commit_log: VecDeque<CommitRecord>,
    /// Records dropped from the front of `commit_log`: the absolute index of
    /// its first record.
    commit_records_dropped: u64,
    pub(crate) stats: DriveStats,
    /// The newest finished files, oldest first; at most
    /// `retention.finished_files_max`.
    finished: VecDeque<FileResource>,
    /// Files dropped from the front of `finished`.
    finished_files_dropped: u64,
    /// How much of the commit log and the finished files is kept.
    retention: Retention,
    /// Told about every answered PUT, if set (see `observer`).
    pub(crate) observer: Option<Arc<dyn super::observer::PutObserver>>,
    /// Access tokens the token endpoint issued (bounded).
    pub(crate) issued_tokens: IssuedTokens,
}

/// How many commit records and finished files a drive keeps (the newest);
/// from [`DriveConfig`](super::DriveConfig).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Retention {
    /// Most commit records kept. At least 1.
    pub(crate) commit_log_records_max: usize,
    /// Most finished files kept. At least 1.
    pub(crate) finished_files_max: usize,
}

impl Retention {
    /// The retention `config` asks for.
    pub(crate) fn of(config: &super::DriveConfig) -> Self {
        Self {
            commit_log_records_max: config.commit_log_records_max,
            finished_files_max: config.finished_files_max,
        }
    }
}

impl DriveState {
    /// A fresh id: 32 lowercase hex digits from the seeded RNG or the OS.
    pub(crate) fn next_id(&mut self) -> Result<String, OsRandomError> {
        match self.id_source {
            IdSource::Seeded => {
                let high = self.rng.next_u64();
                let low = self.rng.next_u64();
                Ok(format_id(high, low))
            }
            IdSource::Os => os_random_id(),
        }
    }

    /// Consumes one armed PUT failure, if any: the status to answer with.
    pub(crate) fn take_put_failure(&mut self) -> Option<PutFailure> {
        let (failure, remaining) = self.fail_puts.take()?;
        self.fail_puts = remaining
            .checked_sub(1)
            .filter(|left| *left > 0)
            .map(|left| (failure.clone(), left));
        self.stats.faults_injected += 1;
        Some(failure)
    }

    /// Consumes one armed digest misreport, if any: whether this file's
    /// digests are to be reported wrong.
    pub(crate) fn take_misreport(&mut self) -> bool {
        let Some(left) = self.misreport_digests.checked_sub(1) else {
            return false;
        };
        self.misreport_digests = left;
        self.stats.faults_injected += 1;
        true
    }

    /// Consumes an armed truncation, if any: the cap for this piece.
    pub(crate) fn take_truncation(&mut self) -> Option<u64> {
        let cap = self.truncate_next_bytes.take()?;
        self.stats.faults_injected += 1;
        Some(cap)
    }

    /// Records `first_byte..end_byte_exclusive` appended to `upload_id`.
    /// `slot` is the caller's record for this request (its absolute index,
    /// counting dropped records): a run continuing it extends it, so one
    /// piece is one record. Drops the oldest record beyond the retention.
    pub(crate) fn record_commit(
        &mut self,
        upload_id: &SessionId,
        first_byte: u64,
        end_byte_exclusive: u64,
        slot: &mut Option<u64>,
    ) {
        self.stats.bytes_committed += end_byte_exclusive - first_byte;
        let retained = slot
            .and_then(|index| index.checked_sub(self.commit_records_dropped))
            .and_then(|position| usize::try_from(position).ok())
            .and_then(|position| self.commit_log.get_mut(position));
        if let Some(record) = retained {
            if record.upload_id == *upload_id && record.end_byte_exclusive == first_byte {
                record.end_byte_exclusive = end_byte_exclusive;
                return;
            }
        }
        *slot = Some(self.commit_records_dropped + self.commit_log.len() as u64);
        self.commit_log.push_back(CommitRecord {
            upload_id: upload_id.clone(),
            first_byte,
            end_byte_exclusive,
        });
        while self.commit_log.len() > self.retention.commit_log_records_max {
            self.commit_log.pop_front();
            self.commit_records_dropped += 1;
        }
    }

    /// Records a completed file. Drops the oldest beyond the retention.
    pub(crate) fn record_finished(&mut self, resource: FileResource) {
        self.stats.files_finished += 1;
        self.finished.push_back(resource);
        while self.finished.len() > self.retention.finished_files_max {
            self.finished.pop_front();
            self.finished_files_dropped += 1;
        }
    }
}

/// Faults and observation for one drive emulator. Cheap to clone; every
/// clone controls the same server.
#[derive(Clone)]
pub struct DriveControl {
    state: Arc<Mutex<DriveState>>,
    /// Where sessions are journalled, in real mode.
    journal: Option<Arc<SessionJournal>>,
}

impl std::fmt::Debug for DriveControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriveControl")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl DriveControl {
    /// Fresh state whose ids come from a ChaCha8 RNG seeded with `seed`.
    #[cfg(test)]
    pub(crate) fn new(seed: u64) -> Self {
        let defaults = super::DriveConfig::default();
        Self::with(seed, IdSource::Seeded, Retention::of(&defaults), None)
    }

    /// Fresh state whose ids come from `id_source` (a ChaCha8 RNG seeded
    /// with `seed`, or the OS), journalling sessions in `journal` if given.
    pub(crate) fn with(
        seed: u64,
        id_source: IdSource,
        retention: Retention,
        journal: Option<Arc<SessionJournal>>,
    ) -> Self {
        assert!(
            retention.commit_log_records_max > 0 && retention.finished_files_max > 0,
            "DriveControl needs a retention of at least 1 (DriveConfig::validate checks it): {retention:?}"
        );
        Self {
            journal,
            state: Arc::new(Mutex::new(DriveState {
                sessions: SessionTable::default(),
                id_source,
                rng: ChaCha8Rng::seed_from_u64(seed),
                fail_puts: None,
                truncate_next_bytes: None,
                misreport_digests: 0,
                commit_log: VecDeque::new(),
                commit_records_dropped: 0,
                stats: DriveStats::default(),
                finished: VecDeque::new(),
                finished_files_dropped: 0,
                retention,
                observer: None,
                issued_tokens: IssuedTokens::default(),
            })),
        }
    }

    /// The shared state. A panic elsewhere while it was held leaves it
    /// consistent (every mutation is a single step), so poisoning is ignored.
    pub(crate) fn lock(&self) -> MutexGuard<'_, DriveState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next `count` piece PUTs answer `status` (e.g. 503, 500, 429)
    /// without committing anything. Replaces any earlier arming; `count` 0
    /// disarms.
    pub fn fail_next_puts(&self, status: u16, count: u32) {
        self.fail_next_puts_because(status, DriveReason::default_for(status), count);
    }

    /// As [`fail_next_puts`](Self::fail_next_puts), with Drive's `reason`
    /// in the error body (a 403 `userRateLimitExceeded` is "slow down", a
    /// 403 `storageQuotaExceeded` is "never").
    pub fn fail_next_puts_because(&self, status: u16, reason: DriveReason, count: u32) {
        tracing::info!(status, %reason, count, "drive fault armed: fail next piece PUTs");
        self.lock().fail_puts = (count > 0).then_some((PutFailure { status, reason }, count));
    }

    /// Every access token the token endpoint issued is revoked (the
    /// token-expiry fault): the next request with one is answered `401
    /// authError`, and a client with a refresh token gets a new one.
    pub fn expire_access_tokens(&self) {
        let revoked = self.lock().issued_tokens.revoke_all();
        tracing::info!(revoked, "drive fault: access tokens revoked");
    }

    /// The next `count` files finish with their digests (`md5Checksum` and
    /// `crc64nvme`) reported wrong, one hex digit changed, while the bytes
    /// stored are the ones committed: a drive whose checksum disagrees with
    /// what it was sent, for as long as the session answers. Replaces any
    /// earlier arming; `count` 0 disarms.
    pub fn misreport_next_digests(&self, count: u32) {
        tracing::info!(
            count,
            "drive fault armed: misreport the next files' digests"
        );
        self.lock().misreport_digests = count;
    }

    /// Every live (unfinished) session is dropped and its partial data
    /// discarded: requests for it answer 404 from now on. Finished sessions
    /// keep answering with their file.
    pub fn expire_all_sessions(&self) {
        let dropped = {
            let mut state = self.lock();
            let dropped = state.sessions.drop_unfinished();
            state.stats.sessions_expired += dropped.len() as u64;
            dropped
        };
        tracing::info!(
            sessions = dropped.len(),
            "drive fault: all sessions expired"
        );
        self.discard(dropped);
    }

    /// The journal, in real mode.
    pub(crate) fn journal(&self) -> Option<&Arc<SessionJournal>> {
        self.journal.as_ref()
    }

    /// Forgets sessions just dropped from the table: their journal records
    /// (so a restart does not bring them back) and their storage.
    pub(crate) fn discard(&self, dropped: Vec<(SessionId, Option<Box<dyn StorageHandle>>)>) {
        if let Some(journal) = &self.journal {
            for (upload_id, _) in &dropped {
                if let Err(error) = journal.remove(upload_id) {
                    tracing::warn!(%upload_id, %error, "drive: removing a session record failed");
                }
            }
        }
        discard_all(dropped);
    }

    /// The next piece commits at most `keep_bytes`, rounded down to 256 KiB,
    /// of the new bytes it carries; it answers 308 with the true `Range`.
    pub fn truncate_next_piece(&self, keep_bytes: u64) {
        tracing::info!(keep_bytes, "drive fault armed: truncate next piece");
        self.lock().truncate_next_bytes = Some(keep_bytes);
    }

    /// Every range appended to storage, in order: the whole log, for a
    /// checker that must see every record (the simulation oracle).
    ///
    /// # Panics
    /// If the retention ([`DriveConfig::commit_log_records_max`](super::DriveConfig::commit_log_records_max))
    /// has dropped records: handing out the rest would let a checker check
    /// less without knowing it (see the module docs).
    pub fn commit_log(&self) -> Vec<CommitRecord> {
        let (records, dropped) = self.commit_log_retained();
        assert!(
            dropped == 0,
            "DriveControl::commit_log: {dropped} of {} commit records were dropped by DriveConfig::commit_log_records_max; \
             raise it to check every record, or read commit_log_retained",
            dropped + records.len() as u64
        );
        records
    }

    /// The newest ranges appended to storage, in order, and how many older
    /// ones the retention dropped.
    pub fn commit_log_retained(&self) -> (Vec<CommitRecord>, u64) {
        let state = self.lock();
        (
            state.commit_log.iter().cloned().collect(),
            state.commit_records_dropped,
        )
    }

    /// The commit records from absolute index `first` on (counting
    /// dropped ones), and the absolute index of the first one returned
    /// (later than `first` if the retention dropped some): an observer's
    /// way to read the log incrementally.
    pub fn commit_records_since(&self, first: u64) -> (u64, Vec<CommitRecord>) {
        let state = self.lock();
        let start = first.max(state.commit_records_dropped);
        let skip = usize::try_from(start - state.commit_records_dropped).unwrap_or(usize::MAX);
        (start, state.commit_log.iter().skip(skip).cloned().collect())
    }

    /// The commit record at absolute index `index` (counting dropped ones),
    /// if it is still kept: a record grows while its request appends, so an
    /// observer reading incrementally reads each session's latest again.
    pub fn commit_record(&self, index: u64) -> Option<CommitRecord> {
        let state = self.lock();
        let position = usize::try_from(index.checked_sub(state.commit_records_dropped)?).ok()?;
        state.commit_log.get(position).cloned()
    }

    /// The counters.
    pub fn stats(&self) -> DriveStats {
        self.lock().stats.clone()
    }

    /// The newest completed files (at most
    /// [`DriveConfig::finished_files_max`](super::DriveConfig::finished_files_max)),
    /// in completion order.
    pub fn finished_files(&self) -> Vec<FileResource> {
        self.lock().finished.iter().cloned().collect()
    }

    /// How many completed files the retention has dropped from
    /// [`finished_files`](Self::finished_files).
    pub fn finished_files_dropped(&self) -> u64 {
        self.lock().finished_files_dropped
    }
}

/// Discards dropped sessions' storage, outside the state lock. A failure is
/// logged: the session is gone either way, and nobody is waiting on it.
pub(crate) fn discard_all(dropped: Vec<(SessionId, Option<Box<dyn StorageHandle>>)>) {
    for (upload_id, handle) in dropped {
        if let Some(Err(error)) = handle.map(|h| h.discard()) {
            tracing::warn!(%upload_id, %error, "drive: discarding an expired session failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_per_seed() {
        let a = DriveControl::new(7);
        let b = DriveControl::new(7);
        let c = DriveControl::new(8);
        // One guard per statement: the mutex is not reentrant.
        let ids_a = {
            let mut state = a.lock();
            [state.next_id().ok(), state.next_id().ok()]
        };
        let ids_b = {
            let mut state = b.lock();
            [state.next_id().ok(), state.next_id().ok()]
        };
        assert_eq!(ids_a, ids_b);
        assert_ne!(ids_a[0], ids_a[1]);
        assert_ne!(c.lock().next_id().ok(), ids_a[0]);
        assert!(ids_a[0]
            .as_deref()
            .is_some_and(super::super::protocol::is_id));
    }

    #[test]
    fn put_failures_fire_count_times() {
        let control = DriveControl::new(0);
        control.fail_next_puts(503, 2);
        let backend_error = Some(PutFailure {
            status: 503,
            reason: DriveReason::BackendError,
        });
        let mut state = control.lock();
        assert_eq!(state.take_put_failure(), backend_error);
        assert_eq!(state.take_put_failure(), backend_error);
        assert_eq!(state.take_put_failure(), None);
        assert_eq!(state.stats.faults_injected, 2);
        drop(state);
        control.fail_next_puts_because(403, DriveReason::StorageQuotaExceeded, 1);
        let failure = control.lock().take_put_failure().map(|f| f.reason);
        assert_eq!(failure, Some(DriveReason::StorageQuotaExceeded));
    }

    #[test]
    fn commit_records_merge_within_a_request_only() {
        let control = DriveControl::new(0);
        let mut state = control.lock();
        let a = SessionId::new("a");
        let mut first_request = None;
        state.record_commit(&a, 0, 10, &mut first_request);
        state.record_commit(&a, 10, 20, &mut first_request);
        let mut second_request = None;
        state.record_commit(&a, 20, 30, &mut second_request);
        drop(state);
        let log = control.commit_log();
        assert_eq!(log.len(), 2);
        assert_eq!((log[0].first_byte, log[0].end_byte_exclusive), (0, 20));
        assert_eq!((log[1].first_byte, log[1].end_byte_exclusive), (20, 30));
        assert_eq!(control.stats().bytes_committed, 30);
    }

    #[test]
    fn commit_log_keeps_the_newest_records_and_counts_the_rest() {
        let retention = Retention {
            commit_log_records_max: 2,
            finished_files_max: 1,
        };
        let control = DriveControl::with(0, IdSource::Seeded, retention, None);
        let (a, b, c) = (
            SessionId::new("a"),
            SessionId::new("b"),
            SessionId::new("c"),
        );
        let (mut slot_a, mut slot_b, mut slot_c) = (None, None, None);
        {
            let mut state = control.lock();
            state.record_commit(&a, 0, 10, &mut slot_a);
            state.record_commit(&b, 0, 10, &mut slot_b);
            state.record_commit(&c, 0, 10, &mut slot_c);
            // a's record is gone: its next run starts a record of its own
            // rather than extending whichever record now sits at its index.
            state.record_commit(&a, 10, 20, &mut slot_a);
        }
        let (log, dropped) = control.commit_log_retained();
        assert_eq!(dropped, 2);
        let kept: Vec<_> = log
            .iter()
            .map(|r| (r.upload_id.as_str(), r.first_byte, r.end_byte_exclusive))
            .collect();
        assert_eq!(kept, vec![("c", 0, 10), ("a", 10, 20)]);
        assert_eq!(control.stats().bytes_committed, 40);
        let partial =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| control.commit_log()));
        assert!(
            partial.is_err(),
            "a log with dropped records is never handed out whole"
        );
    }
}
