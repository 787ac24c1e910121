//! What the emulator tells an observer about each PUT it answers (a piece
//! or a status query): the session, the request's `Content-Range` and the
//! answer's status and `Range`, at the moment the answer is made.
//!
//! A simulation attaches a model of each session's committed ranges here
//! ([`DriveControl::observe_puts`]; `sim::lockstep::drive_ranges` compares
//! every `Range` with what the accepted pieces add up to). Without one,
//! nothing is told: observing never changes what the emulator does.
//!
//! The hook runs in the PUT's task right after its answer is made and
//! before the rest of the body is drained, with no `.await` in between: in
//! a single-threaded simulation the commit log then holds exactly what the
//! answer was made from.

use super::control::DriveControl;
use super::protocol::parse_range;
use super::replies::Reply;
use crate::ids::SessionId;
use std::sync::Arc;

/// One answered PUT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnsweredPut {
    /// The session the PUT was sent to.
    pub session: SessionId,
    /// The request's `Content-Range`, as sent (absent or malformed ones
    /// included: the answer is then a 400).
    pub content_range: Option<String>,
    /// The answer's status.
    pub status: u16,
    /// A `308`'s bytes held: its `Range`'s end plus one, 0 without a
    /// `Range`; `None` for any other status or a `Range` that does not
    /// parse.
    pub held_bytes: Option<u64>,
}

/// Told about every answered PUT (see the module docs).
pub trait PutObserver: Send + Sync {
    /// `put` was answered by the drive `drive` controls (the observer may
    /// read its commit log; holding on to `drive` would keep the drive
    /// alive through its own observer).
    fn answered(&self, drive: &DriveControl, put: &AnsweredPut);
}

impl AnsweredPut {
    /// What `reply` to a PUT to `session` with `content_range` says.
    pub(super) fn of(session: &SessionId, content_range: Option<String>, reply: &Reply) -> Self {
        let status = reply.status().as_u16();
        let held_bytes = (status == 308).then(|| match reply.headers().get(http::header::RANGE) {
            None => Some(0),
            Some(v) => v.to_str().ok().and_then(|t| parse_range(t).ok()),
        });
        Self {
            session: session.clone(),
            content_range,
            status,
            held_bytes: held_bytes.flatten(),
        }
    }
}

impl DriveControl {
    /// Tells `observer` about every PUT answered from now on (replacing
    /// any earlier observer).
    pub fn observe_puts(&self, observer: Arc<dyn PutObserver>) {
        self.lock().observer = Some(observer);
    }

    /// Hook: tells the observer, if any, about `reply` (outside the state
    /// lock: the observer may read the commit log).
    pub(super) fn observe_put(
        &self,
        session: &SessionId,
        content_range: Option<String>,
        reply: &Reply,
    ) {
        let observer = self.lock().observer.clone();
        if let Some(observer) = observer {
            observer.answered(self, &AnsweredPut::of(session, content_range, reply));
        }
    }
}
