//! The trace: ordered events from every host of a run, and their hash.
//!
//! In simulation, every event is stamped with simulated time and the host
//! it happened on, appended in the order the (single-threaded,
//! deterministic) simulation produced it, and folded into a running
//! CRC-64 over its JSON form. Same seed, same events, same hash: the
//! determinism check compares hashes of two runs. In real mode the trace is
//! off ([`Trace::off`]) and recording is a no-op; logs go through `tracing`.
//!
//! Invariant: nothing that varies between runs of one seed (wall clock,
//! addresses, hash-map order, thread timing) may appear in an event.

use crate::checksum::FileDigest;
use crate::env::Clock;
use serde::Serialize;
use std::sync::{Arc, Mutex, PoisonError};

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum Event {
    /// A fault was injected by the runner.
    Fault { fault: String },
    /// A host's software (re)started.
    HostStarted { boot: u32 },
    /// The backend admitted an upload.
    Admitted {
        upload: String,
        user: String,
        file_size_bytes: u64,
        memory_bytes: u64,
        wait_ms: u64,
    },
    /// Admission refused an upload.
    Refused { user: String, cause: String },
    /// The client sent a chunk.
    ChunkSent { upload: String, index: u32 },
    /// The backend stored a chunk in the reorder window.
    ChunkStored { upload: String, index: u32 },
    /// A chunk request did not succeed (either side's view).
    ChunkFailed {
        upload: String,
        index: u32,
        reason: String,
    },
    /// The backend sent a piece to the drive.
    DrivePiece {
        upload: String,
        first_byte: u64,
        end_byte: u64,
    },
    /// The drive said how many bytes it holds.
    DriveHeld { upload: String, held_bytes: u64 },
    /// A drive request failed.
    DriveError { upload: String, error: String },
    /// A drive session was started.
    DriveSession { upload: String, generation: u32 },
    /// Someone backs off before retrying.
    Backoff {
        what: String,
        attempt: u32,
        backoff_ms: u64,
    },
    /// The backend resumed an upload after its own restart.
    Resumed {
        upload: String,
        committed_bytes: u64,
    },
    /// An upload finished on the drive.
    UploadComplete {
        upload: String,
        size_bytes: u64,
        checksum: String,
    },
    /// An upload ended without finishing.
    UploadFailed { upload: String, cause: String },
    /// The client restarted mid-upload (a simulation fault point): its
    /// chunks in flight were dropped, and it resumes from the backend's
    /// status.
    ClientRestart { upload: String },
    /// The client finished (either way).
    ClientDone { outcome: String },
    /// A tus client sent a PATCH.
    TusPatch {
        upload: String,
        offset: u64,
        len_bytes: u64,
    },
    /// A tus PATCH did not succeed (the client's view).
    TusPatchFailed {
        upload: String,
        offset: u64,
        reason: String,
    },
    /// A tus client plays one of tusd's races (a simulation fault point).
    TusRace {
        upload: String,
        race: String,
        offset: u64,
    },
}

/// An event with its time and host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stamped {
    /// Simulated time, ms.
    pub at_ms: u64,
    /// The host it happened on.
    pub host: String,
    /// What happened.
    #[serde(flatten)]
    pub event: Event,
}

struct Inner {
    events: Vec<Stamped>,
    digest: FileDigest,
}

/// A trace. Shared by every host of a run.
pub struct Trace {
    /// `None`: recording is off.
    clock: Option<Arc<dyn Clock>>,
    inner: Mutex<Inner>,
}

impl Trace {
    /// A trace recording on `clock`'s time.
    pub fn new(clock: Arc<dyn Clock>) -> Arc<Self> {
        Arc::new(Self {
            clock: Some(clock),
            inner: Mutex::new(Inner {
                events: Vec::new(),
                digest: FileDigest::default(),
            }),
        })
    }

    /// A trace that records nothing (real mode).
    pub fn off() -> Arc<Self> {
        Arc::new(Self {
            clock: None,
            inner: Mutex::new(Inner {
                events: Vec::new(),
                digest: FileDigest::default(),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records `event` on `host`, at the trace clock's time.
    pub fn record(&self, host: &str, event: Event) {
        let Some(clock) = &self.clock else { return };
        let at_ms = u64::try_from(clock.now().as_millis()).unwrap_or(u64::MAX);
        self.record_at(host, at_ms, event);
    }

    /// Records `event` on `host` at `at_ms` (for recorders outside any
    /// simulated host, such as the runner, where the clock cannot be read).
    pub fn record_at(&self, host: &str, at_ms: u64, event: Event) {
        if self.clock.is_none() {
            return;
        }
        let stamped = Stamped {
            at_ms,
            host: host.to_owned(),
            event,
        };
        // Plain data: serialising to JSON cannot fail.
        let line = serde_json::to_string(&stamped).expect("a trace event always serialises");
        let mut inner = self.lock();
        inner.digest.update(line.as_bytes());
        inner.digest.update(b"\n");
        inner.events.push(stamped);
    }

    /// The hash of every event so far (16 hex digits).
    pub fn hash(&self) -> String {
        self.lock().digest.hex()
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<Stamped> {
        self.lock().events.clone()
    }

    /// Events so far.
    pub fn len(&self) -> usize {
        self.lock().events.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The trace as JSON lines.
    pub fn to_json_lines(&self) -> String {
        let inner = self.lock();
        let mut out = String::new();
        for e in &inner.events {
            out.push_str(&serde_json::to_string(e).expect("a trace event always serialises"));
            out.push('\n');
        }
        out
    }
}

/// A host's handle on the trace.
#[derive(Clone)]
pub struct Tracer {
    trace: Arc<Trace>,
    host: &'static str,
}

impl Tracer {
    /// Records as `host` on `trace`.
    pub fn new(trace: Arc<Trace>, host: &'static str) -> Self {
        Self { trace, host }
    }

    /// A tracer that records nothing.
    pub fn off() -> Self {
        Self::new(Trace::off(), "off")
    }

    /// Records an event.
    pub fn record(&self, event: Event) {
        self.trace.record(self.host, event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::ManualClock;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn same_events_same_hash_and_order_matters() {
        let clock = ManualClock::new(UNIX_EPOCH);
        let run = |swap: bool| {
            let t = Trace::new(Arc::new(clock.clone()));
            let (a, b) = (
                Event::HostStarted { boot: 0 },
                Event::ClientDone {
                    outcome: "ok".into(),
                },
            );
            if swap {
                t.record("x", b);
                t.record("x", a);
            } else {
                t.record("x", a);
                t.record("x", b);
            }
            t.hash()
        };
        assert_eq!(run(false), run(false));
        assert_ne!(run(false), run(true));
        clock.advance(Duration::from_millis(5));
        let t = Trace::new(Arc::new(clock.clone()));
        t.record("h", Event::HostStarted { boot: 1 });
        assert!(t
            .to_json_lines()
            .contains("\"at_ms\":5,\"host\":\"h\",\"kind\":\"host_started\""));
        let off = Trace::off();
        off.record("h", Event::HostStarted { boot: 1 });
        assert!(off.is_empty());
    }
}
