//! Coverage marks (FoundationDB's `TEST()`/`CODE_PROBE`): named probes at
//! the decision points that matter — each admission refusal cause, each way
//! an upload ends, a full reorder window, a new drive session, an open
//! breaker, a slot released on an error path, a quota day rolling over, an
//! idempotent create replayed, a client backing off, a backend resuming.
//!
//! A simulation run counts how often each probe was hit ([`install`] …
//! [`stop`]); a sweep adds the runs up ([`Coverage`]) and fails when a probe
//! required of its scenario ([`Probe::required_in`]) was never hit: CI's sweep then proves it drove the
//! system through every ending, not merely that nothing broke.
//!
//! Counts live in a thread-local, as [`buggify`](crate::buggify)'s sites do
//! and for the same reason: a simulation runs on one thread, so a sweep's
//! workers never see each other's counts. Inert outside simulation: nothing
//! installs counts in real mode, and [`hit`] is then one thread-local read
//! and a `None` check. (The two modules share the pattern, not code: the
//! state and what `stop` returns differ, and a generic run-local cell would
//! be longer than either use.)

use serde::Serialize;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Declares [`Probe`], its [`ALL`](Probe::ALL), names and required flags
/// from one table, so the list cannot drift from the enum: a probe is
/// added in one place, and the compiler checks every match.
macro_rules! probes {
    ($($(#[$doc:meta])* $variant:ident => $name:literal, $required:literal;)*) => {
        /// A named decision point.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum Probe {
            $($(#[$doc])* $variant,)*
        }

        impl Probe {
            /// Every probe, in declaration order (the index of a count).
            pub const ALL: [Self; [$($name),*].len()] = [$(Self::$variant),*];

            /// Its stable name.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)*
                }
            }

            /// Whether a CI sweep (swarm, seeds 0..300) must hit it.
            pub const fn required(self) -> bool {
                match self {
                    $(Self::$variant => $required,)*
                }
            }
        }
    };
}

probes! {
    // Admission refusals, one per `AdmissionError` cause (and the zoo's
    // bare failure). Informative ones cannot occur in the drawn worlds:
    // every simulated user is known, every file has a byte, the scripted
    // memory probe never fails, and only a mutant refuses unexplained.
    /// Refused: empty file. Informative: simulated files are never empty.
    RefusedEmptyFile => "refused_empty_file", false;
    /// Refused: file over the profile's size bound.
    RefusedFileTooLarge => "refused_file_too_large", true;
    /// Refused: unknown user. Informative: simulations know every user.
    RefusedUnknownUser => "refused_unknown_user", false;
    /// Refused: the user's daily quota is spent.
    RefusedQuotaExceeded => "refused_quota_exceeded", true;
    /// Refused: not enough memory for the upload's reservation.
    RefusedMemoryPressure => "refused_memory_pressure", true;
    /// Refused: the memory probe failed. Informative: the scripted probe
    /// never fails.
    RefusedMemoryProbe => "refused_memory_probe", false;
    /// Refused: no slot within the wait timeout.
    RefusedSlotsBusy => "refused_slots_busy", true;
    /// Refused: too many waiting for a slot.
    RefusedQueueFull => "refused_queue_full", true;
    /// Refused: admission is shutting down (a crashing backend).
    /// Informative: a crash drops the backend's tasks before a request can
    /// meet the closed admitter.
    RefusedShuttingDown => "refused_shutting_down", false;
    /// Refused: the shared slot store (several replicas) is unreachable.
    /// Informative: no simulation runs the shared store yet.
    RefusedSlotStoreUnavailable => "refused_slot_store_unavailable", false;
    /// Refused with no cause. Informative: only the zoo's masked-error
    /// mutant does it (and the oracle flags it).
    RefusedUnexplained => "refused_unexplained", false;

    // How an upload ended (`Backend::end`).
    /// Ended: on the drive, whole.
    EndComplete => "end_complete", true;
    /// Ended: aborted (by its owner, or retired by retention).
    /// Informative: a passing client aborts only what it gave up on.
    EndAborted => "end_aborted", false;
    /// Ended: no chunk for the idle timeout. Informative: a live client
    /// keeps sending, and liveness is what the oracle demands.
    EndClientGone => "end_client_gone", false;
    /// Ended: no drive session. Informative: a structural guard.
    EndNoSession => "end_no_session", false;
    /// Ended: the drive finished a file of another size. Informative: only
    /// a faulty drive does it.
    EndDriveSizeMismatch => "end_drive_size_mismatch", false;
    /// Ended: the drive failed `attempts_max` times in a row.
    EndDriveFailed => "end_drive_failed", true;
    /// Ended: the drive lost the session `session_restarts_max` + 1 times.
    EndDriveSessionLost => "end_drive_session_lost", true;
    /// Ended: the drive refused the upload for good (storage quota, bad
    /// request).
    EndDriveRefused => "end_drive_refused", true;
    /// Ended: admission refused the upload as the backend resumed it.
    /// Informative: needs a crash while the machine is short of memory.
    EndRefusedOnResume => "end_refused_on_resume", false;
    /// Ended: any other cause (none today).
    EndOther => "end_other", false;

    // Other decisions.
    /// A failed ending gave its slot back (release on an error path).
    ReleaseOnError => "release_on_error", true;
    /// A chunk beyond the reorder window was refused.
    WindowFull => "window_full", true;
    /// The backend started a new drive session for an upload.
    DriveSessionRestart => "drive_session_restart", true;
    /// A create was refused because the drive breaker is open.
    BreakerOpen => "breaker_open", true;
    /// The quota ledger moved to a new UTC day.
    QuotaDayRollover => "quota_day_rollover", true;
    /// A create with a known client token got the same upload back.
    CreateReplay => "create_replay", true;
    /// The client backed off before retrying (create or chunks).
    ClientBackoff => "client_backoff", true;
    /// The client restarted mid-upload and resumed from the status.
    ClientResume => "client_resume", true;
    /// The backend took an upload back after a restart.
    BackendResume => "backend_resume", true;
    /// The drive client fetched an OAuth access token (first, or before
    /// the one in hand expired).
    DriveTokenRefresh => "drive_token_refresh", true;
    /// The drive refused an access token (401) and the client sent the
    /// request again with a fresh one.
    DriveTokenRejected => "drive_token_rejected", true;

    // The progress channel (`GET /uploads/{id}/events`).
    /// An event stream was opened again with a `Last-Event-ID` of ours
    /// (the backend resumed it from the state the reader had).
    EventStreamResumed => "event_stream_resumed", true;
    /// The client's event stream broke off (dropped, or the backend went
    /// down) and the client opened it again.
    EventStreamReconnect => "event_stream_reconnect", true;
    /// A stream stayed silent for the keep-alive interval and sent a
    /// comment.
    EventStreamKeepAlive => "event_stream_keep_alive", true;

    // How the committer cuts pieces (the window model judges each cut).
    /// A piece reached `piece_bytes_max` with more of the file still to
    /// send: cut at the limit, not at the end of what was buffered.
    PieceCutAtMax => "piece_cut_at_max", true;
    /// A piece started inside a chunk: the drive had kept part of one.
    PieceFromMidChunk => "piece_from_mid_chunk", true;

    // tus clients in the simulation (`client/tus/`), tusd's known races.
    /// A HEAD was answered while the same client's PATCH was in flight.
    TusHeadDuringPatch => "tus_head_during_patch", true;
    /// A PATCH was answered 409 `patch_superseded`: a second PATCH at the
    /// same offset took over from it.
    TusPatchSuperseded => "tus_patch_superseded", true;
    /// A PATCH was cut off mid-body (the client dropped the request).
    TusPatchCut => "tus_patch_cut", true;
    /// After a PATCH that failed, HEAD said where to go on and the client
    /// resumed there.
    TusResumedFromHead => "tus_resumed_from_head", true;
}

/// The probes a crowd sweep (CI: seeds 0..200) must hit. The crowd is a
/// built-in whose world stays fixed (no size bound below its files, a
/// queue of 1 000, no midnight, no fault points, drive bursts of 1–3), so
/// it is held to what that world does reach: every probe it hit in 0..200
/// when this list was made (drive_session_lost and release_on_error in one
/// seed each: a change in their coverage is worth a look).
pub const CROWD_REQUIRED: [Probe; 12] = [
    Probe::RefusedQuotaExceeded,
    Probe::RefusedMemoryPressure,
    Probe::RefusedSlotsBusy,
    Probe::EndComplete,
    Probe::EndDriveSessionLost,
    Probe::ReleaseOnError,
    Probe::WindowFull,
    Probe::DriveSessionRestart,
    Probe::BreakerOpen,
    Probe::CreateReplay,
    Probe::ClientBackoff,
    Probe::BackendResume,
];

impl Probe {
    /// Whether a sweep of the built-in `scenario` must hit this probe:
    /// every [`required`](Self::required) probe for `swarm` (tuned for
    /// it), [`CROWD_REQUIRED`] for `crowd`, none for other scenarios (a
    /// single world, or a file, reaches what it reaches).
    pub fn required_in(self, scenario: &str) -> bool {
        match scenario {
            "swarm" => self.required(),
            "crowd" => CROWD_REQUIRED.contains(&self),
            _ => false,
        }
    }

    /// The probe whose [`name`](Self::name) is `name` (a sweep's results
    /// file names probes).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|p| p.name() == name)
    }
}

/// A probe's place in a count array.
fn index(probe: Probe) -> usize {
    // `ALL` is in declaration order and fieldless, so the discriminant is
    // the index (checked by a test).
    probe as usize
}

/// How often each probe was hit in one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hits {
    counts: [u64; Probe::ALL.len()],
}

impl Default for Hits {
    fn default() -> Self {
        Self {
            counts: [0; Probe::ALL.len()],
        }
    }
}

impl Hits {
    /// Counts read back (a sweep's results file): each probe's count is
    /// the last one given for it.
    pub fn from_counts(counts: impl IntoIterator<Item = (Probe, u64)>) -> Self {
        let mut hits = Self::default();
        for (probe, n) in counts {
            hits.counts[index(probe)] = n;
        }
        hits
    }

    /// How often `probe` was hit.
    pub fn get(&self, probe: Probe) -> u64 {
        self.counts[index(probe)]
    }

    /// The probes hit at least once, with their counts, in `ALL` order.
    pub fn hit(&self) -> impl Iterator<Item = (Probe, u64)> + '_ {
        Probe::ALL
            .iter()
            .map(|&p| (p, self.get(p)))
            .filter(|(_, n)| *n > 0)
    }

    /// One line: `name×count` for every probe hit.
    pub fn render(&self) -> String {
        let hit: Vec<String> = self
            .hit()
            .map(|(p, n)| format!("{}×{n}", p.name()))
            .collect();
        if hit.is_empty() {
            "none".into()
        } else {
            hit.join(", ")
        }
    }
}

thread_local! {
    static COUNTS: RefCell<Option<Hits>> = const { RefCell::new(None) };
}

/// Starts counting on this thread, from zero.
pub fn install() {
    COUNTS.with(|c| *c.borrow_mut() = Some(Hits::default()));
}

/// Stops counting on this thread; returns the counts.
pub fn stop() -> Hits {
    COUNTS.with(|c| c.borrow_mut().take().unwrap_or_default())
}

/// Marks `probe` hit. Does nothing unless a simulation installed counts.
pub fn hit(probe: Probe) {
    COUNTS.with(|c| {
        if let Ok(mut guard) = c.try_borrow_mut() {
            if let Some(hits) = guard.as_mut() {
                hits.counts[index(probe)] += 1;
            }
        }
    });
}

/// One probe across a sweep.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProbeTotal {
    /// Seeds whose run hit it.
    pub seeds: u64,
    /// Hits over all seeds.
    pub hits: u64,
}

/// Every probe across a sweep's runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Coverage {
    totals: BTreeMap<Probe, ProbeTotal>,
}

impl Coverage {
    /// Adds one run's counts.
    pub fn add(&mut self, hits: &Hits) {
        for (probe, n) in hits.hit() {
            let total = self.totals.entry(probe).or_default();
            total.seeds += 1;
            total.hits += n;
        }
    }

    /// `probe`'s totals.
    pub fn total(&self, probe: Probe) -> ProbeTotal {
        self.totals.get(&probe).copied().unwrap_or_default()
    }

    /// The probes `required` names that no run hit, in `ALL` order.
    pub fn missed(&self, required: &dyn Fn(Probe) -> bool) -> Vec<Probe> {
        Probe::ALL
            .iter()
            .copied()
            .filter(|&p| required(p) && self.total(p).seeds == 0)
            .collect()
    }

    /// The table: probe, whether `required` names it, seeds that hit it,
    /// total hits.
    pub fn render(&self, required: &dyn Fn(Probe) -> bool) -> String {
        let mut out = format!(
            "{:<28} {:>8} {:>8} {:>10}\n",
            "probe", "required", "seeds", "hits"
        );
        for p in Probe::ALL {
            let t = self.total(p);
            let mark = match (required(p), t.seeds) {
                (true, 0) => "yes MISSED",
                (true, _) => "yes",
                (false, _) => "no",
            };
            let _ = writeln!(
                out,
                "{:<28} {:>8} {:>8} {:>10}",
                p.name(),
                mark,
                t.seeds,
                t.hits
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_discriminant_order_and_names_are_unique() {
        for (i, p) in Probe::ALL.iter().enumerate() {
            assert_eq!(index(*p), i, "{p:?}");
        }
        let mut names: Vec<&str> = Probe::ALL.iter().map(|p| p.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Probe::ALL.len());
        for p in Probe::ALL {
            assert_eq!(Probe::from_name(p.name()), Some(p));
        }
        assert_eq!(Probe::from_name("no_such_probe"), None);
    }

    #[test]
    fn counts_read_back_are_the_counts_written() {
        install();
        hit(Probe::WindowFull);
        hit(Probe::WindowFull);
        hit(Probe::BreakerOpen);
        let hits = stop();
        assert_eq!(Hits::from_counts(hits.hit()), hits);
        assert_ne!(Hits::from_counts([(Probe::WindowFull, 1)]), hits);
    }

    #[test]
    fn inert_until_installed_and_after_stop() {
        hit(Probe::WindowFull);
        install();
        hit(Probe::WindowFull);
        hit(Probe::WindowFull);
        hit(Probe::EndComplete);
        let hits = stop();
        assert_eq!(hits.get(Probe::WindowFull), 2);
        assert_eq!(hits.get(Probe::EndComplete), 1);
        assert_eq!(hits.get(Probe::BreakerOpen), 0);
        hit(Probe::WindowFull);
        assert_eq!(stop(), Hits::default(), "nothing counts after stop");
    }

    #[test]
    fn threads_never_see_each_other_s_counts() {
        install();
        std::thread::spawn(|| {
            install();
            hit(Probe::BreakerOpen);
            assert_eq!(stop().get(Probe::BreakerOpen), 1);
        })
        .join()
        .expect("the other thread counts on its own");
        assert_eq!(stop().get(Probe::BreakerOpen), 0);
    }

    #[test]
    fn a_missed_required_probe_is_named() {
        let mut coverage = Coverage::default();
        let mut hits = Hits::default();
        for p in Probe::ALL.iter().filter(|p| **p != Probe::EndDriveFailed) {
            hits.counts[index(*p)] = 1;
        }
        coverage.add(&hits);
        coverage.add(&hits);
        let required = |p: Probe| p.required();
        assert_eq!(coverage.missed(&required), vec![Probe::EndDriveFailed]);
        assert!(coverage.missed(&|p| p.required_in("smoke")).is_empty());
        assert_eq!(
            coverage.total(Probe::WindowFull),
            ProbeTotal { seeds: 2, hits: 2 }
        );
        let table = coverage.render(&required);
        let line = table
            .lines()
            .find(|l| l.starts_with("end_drive_failed"))
            .expect("every probe has a line");
        assert!(line.contains("yes MISSED"), "{line}");
    }
}
