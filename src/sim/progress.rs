//! The progress channel in a simulation: with
//! [`Scenario::follow_events`](super::Scenario::follow_events) on, each
//! client follows its upload's event stream while it uploads
//! ([`EventFollower`], the client's own), and the run keeps what it saw,
//! stamped with simulated time, for the end checks
//! (`progress_checks.rs`).
//!
//! Streams drop on their own when the backend crashes, and at the
//! [`Site::ClientEventStreamDrop`](crate::buggify::Site) fault point; the
//! follower reopens them with `Last-Event-ID`.
//!
//! Once the upload's client is done, the follower gets
//! [`FOLLOW_GRACE`] to receive the upload's last state (complete or
//! failed); an upload whose client gave up on it is not followed further.

use super::world::lock;
use crate::chunk_api::{EventId, EventKind, ProgressState};
use crate::client::events::{FollowConfig, FollowError, Seen};
use crate::client::{ClientError, UploadOutcome, Uploader};
use crate::coverage::{self, Probe};
use crate::env::Clock;
use crate::payload::Payload;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// After its client is done, how long a follower may take to receive the
/// upload's last state: longer than its idle timeout and a reconnect.
pub const FOLLOW_GRACE: Duration = Duration::from_secs(120);

/// Entries kept per upload: far more than a simulated upload's state
/// changes (a 48 MiB file in 256 KiB chunks makes a few hundred).
pub const FOLLOW_LOG_ENTRIES_MAX: usize = 100_000;

/// One thing a follower saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// A stream opened, resuming from this id if any.
    Opened {
        /// Simulated time.
        at_ms: u64,
        /// The `Last-Event-ID` sent.
        last_event_id: Option<EventId>,
    },
    /// An event arrived.
    Event {
        /// Simulated time.
        at_ms: u64,
        /// Its name.
        kind: EventKind,
        /// The state it carried (boxed: most of the enum's size).
        state: Box<ProgressState>,
    },
    /// The stream broke off.
    Dropped {
        /// Simulated time.
        at_ms: u64,
    },
}

/// How following an upload ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowEnd {
    /// The upload's last state arrived.
    Ended,
    /// The stream was refused for good, or was not one of ours.
    Failed(String),
    /// Its client is done and the last state did not come within
    /// [`FOLLOW_GRACE`] (or the client gave up, and following stopped).
    CutOff,
}

/// What one upload's follower saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FollowLog {
    /// The upload followed (none if it was never created).
    pub upload: Option<String>,
    /// What it saw, in order; at most [`FOLLOW_LOG_ENTRIES_MAX`].
    pub seen: Vec<Observed>,
    /// Entries not kept past the bound.
    pub dropped_entries: u64,
    /// How it ended, once it has.
    pub end: Option<FollowEnd>,
}

impl FollowLog {
    /// The events seen, in order.
    pub fn events(&self) -> impl Iterator<Item = (u64, EventKind, &ProgressState)> {
        self.seen.iter().filter_map(|o| match o {
            Observed::Event { at_ms, kind, state } => Some((*at_ms, *kind, state.as_ref())),
            _ => None,
        })
    }
}

/// Uploads `payload` with `uploader`, following the upload's event stream
/// meanwhile into `log`.
pub(super) async fn upload_followed(
    uploader: Uploader,
    payload: Payload,
    clock: Arc<dyn Clock>,
    log: Arc<Mutex<FollowLog>>,
) -> Result<UploadOutcome, ClientError> {
    let follower: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>> = Arc::default();
    let started = {
        let (uploader, follower, log, clock) =
            (&uploader, follower.clone(), log.clone(), clock.clone());
        move |id: &str| {
            lock(&log).upload = Some(id.to_owned());
            let task = follow(uploader, id, clock, log);
            *lock(&follower) = Some(tokio::spawn(task));
        }
    };
    let result = uploader
        .upload_announcing(Arc::new(payload), None, started)
        .await;
    let task = lock(&follower).take();
    if let Some(mut task) = task {
        // An upload that ended on the backend has a last state to receive;
        // one its client gave up on is followed no further.
        let awaited = matches!(result, Ok(_) | Err(ClientError::UploadFailed { .. }));
        let ended = awaited && clock.timeout(FOLLOW_GRACE, &mut task).await.is_some();
        if !ended {
            task.abort();
            let mut log = lock(&log);
            if log.end.is_none() {
                log.end = Some(FollowEnd::CutOff);
            }
        }
    }
    result
}

/// The follower of upload `id`, recording into `log` until it ends.
fn follow(
    uploader: &Uploader,
    id: &str,
    clock: Arc<dyn Clock>,
    log: Arc<Mutex<FollowLog>>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let follower = uploader.events(id, FollowConfig::default());
    let record = {
        let log = log.clone();
        Arc::new(move |seen: &Seen| {
            let at_ms = u64::try_from(clock.now().as_millis()).unwrap_or(u64::MAX);
            let observed = match seen {
                Seen::Opened { last_event_id } => {
                    if last_event_id.is_some() {
                        coverage::hit(Probe::EventStreamReconnect);
                    }
                    Observed::Opened {
                        at_ms,
                        last_event_id: *last_event_id,
                    }
                }
                Seen::Event { kind, state, .. } => Observed::Event {
                    at_ms,
                    kind: *kind,
                    state: state.clone(),
                },
                Seen::Dropped { .. } => Observed::Dropped { at_ms },
                Seen::KeepAlive => return,
            };
            let mut log = lock(&log);
            if log.seen.len() < FOLLOW_LOG_ENTRIES_MAX {
                log.seen.push(observed);
            } else {
                log.dropped_entries += 1;
            }
        })
    };
    async move {
        let end = match follower.follow(record).await {
            Ok(_) => FollowEnd::Ended,
            Err(
                e @ (FollowError::Refused { .. }
                | FollowError::Tls { .. }
                | FollowError::Protocol { .. }),
            ) => FollowEnd::Failed(e.to_string()),
        };
        lock(&log).end = Some(end);
    }
}
