//! The progress channel's wire forms (`GET /uploads/{id}/events`, Server-Sent
//! Events): what an event carries, its `id:`, its name, and the short-lived
//! token a browser's `EventSource` (which cannot set headers) opens a
//! stream with.
//!
//! Every event carries the upload's whole state ([`ProgressState`]), not a
//! difference, so any one event is enough to draw the bars and a reader
//! that skipped some (a slow one, or one that reconnected) has lost
//! nothing that a later event does not say. The event's `id:` names that
//! state ([`EventId`]): a reconnect sends it back as `Last-Event-ID`, and
//! the backend sends the current state only if it is not that one — never
//! twice the same, whatever the backend did meanwhile (a restart included:
//! the id holds no counter that a restart would forget).
//!
//! ```text
//! POST /uploads/{id}/events/token        → 201 EventsToken (API credentials)
//! GET  /uploads/{id}/events              → 200 text/event-stream
//!      (API credentials, or ?token=…; Last-Event-ID header or ?last_event_id=…)
//!      → 204 when the upload has ended and the reader has its last state
//! ```

use super::{ErrorDetail, Phase, UploadedFile};
use crate::ids::UploadId;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The query parameter carrying an events token.
pub const EVENTS_TOKEN_QUERY: &str = "token";
/// The query parameter standing in for the `Last-Event-ID` header, for a
/// reader that opens a new `EventSource` (which sends no such header).
pub const LAST_EVENT_ID_QUERY: &str = "last_event_id";
/// The header a reconnecting `EventSource` sends.
pub const LAST_EVENT_ID_HEADER: &str = "last-event-id";
/// The stream's content type.
pub const EVENT_STREAM_CONTENT_TYPE: &str = "text/event-stream";

/// An upload's state as one event carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressState {
    /// The upload.
    pub upload_id: UploadId,
    /// Where it stands.
    pub phase: Phase,
    /// Its size.
    pub file_size_bytes: u64,
    /// Bytes the drive holds (its last `Range`), in drive session
    /// `drive_session`.
    pub committed_bytes: u64,
    /// Bytes the backend holds: committed, plus the chunks past them
    /// buffered in its reorder window. ≥ `committed_bytes`. (Not monotone:
    /// a backend restart loses its window, and the client resends.)
    pub received_bytes: u64,
    /// The drive session's number: 0 for the first, one more for each
    /// new session (which starts again from byte 0).
    pub drive_session: u32,
    /// The drive's file (with its checksum), once complete.
    pub file: Option<UploadedFile>,
    /// Why it failed (typed cause, message, numbers), once failed.
    pub failure: Option<ErrorDetail>,
}

impl ProgressState {
    /// The `id:` of an event carrying this state.
    pub fn event_id(&self) -> EventId {
        EventId {
            drive_session: self.drive_session,
            committed_bytes: self.committed_bytes,
            received_bytes: self.received_bytes,
            phase: self.phase,
        }
    }

    /// Whether the upload has ended (complete or failed): nothing follows.
    pub fn ended(&self) -> bool {
        matches!(self.phase, Phase::Complete | Phase::Failed)
    }
}

/// An event's `id:`: the state it carried, in a line
/// (`s{drive_session}-c{committed}-r{received}-{phase}`).
///
/// Two events carry the same state exactly when their ids are equal, so
/// the backend answers a `Last-Event-ID` by sending the current state
/// unless it is the one named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventId {
    /// The drive session.
    pub drive_session: u32,
    /// Bytes committed in it.
    pub committed_bytes: u64,
    /// Bytes the backend held.
    pub received_bytes: u64,
    /// The phase.
    pub phase: Phase,
}

impl EventId {
    /// Committed progress as an order: a later drive session is ahead
    /// whatever its offset (it starts again at 0 because the drive lost
    /// the old one), and within a session the offset counts.
    pub fn committed_progress(&self) -> (u32, u64) {
        (self.drive_session, self.committed_bytes)
    }
}

/// Longest `Last-Event-ID` read: four numbers and a phase fit in 80.
pub const EVENT_ID_BYTES_MAX: usize = 128;

/// A `Last-Event-ID` that is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an event id of this API ({len_bytes} bytes): expected s<n>-c<n>-r<n>-<phase>")]
pub struct BadEventId {
    /// Its length (the text itself is the peer's and is not echoed).
    pub len_bytes: usize,
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Resuming => "resuming",
        Phase::Receiving => "receiving",
        Phase::Complete => "complete",
        Phase::Failed => "failed",
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "s{}-c{}-r{}-{}",
            self.drive_session,
            self.committed_bytes,
            self.received_bytes,
            phase_name(self.phase)
        )
    }
}

impl FromStr for EventId {
    type Err = BadEventId;

    fn from_str(text: &str) -> Result<Self, BadEventId> {
        let bad = BadEventId {
            len_bytes: text.len(),
        };
        if text.len() > EVENT_ID_BYTES_MAX {
            return Err(bad);
        }
        let mut parts = text.split('-');
        let mut number = |prefix: char| {
            parts
                .next()
                .and_then(|p| p.strip_prefix(prefix))
                .filter(|digits| digits.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|digits| digits.parse::<u64>().ok())
        };
        let (Some(session), Some(committed_bytes), Some(received_bytes)) =
            (number('s'), number('c'), number('r'))
        else {
            return Err(bad);
        };
        let phase = match (parts.next(), parts.next()) {
            (Some("resuming"), None) => Phase::Resuming,
            (Some("receiving"), None) => Phase::Receiving,
            (Some("complete"), None) => Phase::Complete,
            (Some("failed"), None) => Phase::Failed,
            _ => return Err(bad),
        };
        let drive_session = u32::try_from(session).map_err(|_| bad.clone())?;
        Ok(Self {
            drive_session,
            committed_bytes,
            received_bytes,
            phase,
        })
    }
}

/// An event's name (`event:`): the most telling change since the state
/// the reader had. Every event carries the whole state whatever its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The phase changed (or this is the reader's first state).
    Phase,
    /// The drive holds more (or a new drive session started).
    Committed,
    /// The backend holds more (or less: a restart lost its window).
    Received,
    /// The upload is on the drive, whole; the file has its checksum.
    Complete,
    /// The upload failed; the failure names its typed cause and numbers.
    Failed,
}

impl EventKind {
    /// Every kind.
    pub const ALL: [EventKind; 5] = [
        Self::Phase,
        Self::Committed,
        Self::Received,
        Self::Complete,
        Self::Failed,
    ];

    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Phase => "phase",
            Self::Committed => "committed",
            Self::Received => "received",
            Self::Complete => "complete",
            Self::Failed => "failed",
        }
    }

    /// The kind named `name`, if any.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The name of an event carrying `next` to a reader that had `before`.
    pub fn between(before: Option<&EventId>, next: &EventId) -> Self {
        match next.phase {
            Phase::Complete => return Self::Complete,
            Phase::Failed => return Self::Failed,
            Phase::Resuming | Phase::Receiving => {}
        }
        match before {
            Some(b) if b.phase == next.phase => {
                if b.committed_progress() != next.committed_progress() {
                    Self::Committed
                } else {
                    Self::Received
                }
            }
            _ => Self::Phase,
        }
    }
}

/// `201` reply to `POST /uploads/{id}/events/token`: a token that opens
/// this upload's event stream (`?token=…`) for `expires_in_ms`, for a
/// reader that cannot send the API's credentials (a browser's
/// `EventSource`). Checked when a stream opens; an open stream outlives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventsToken {
    /// The token (a secret: 32 hex digits from the OS).
    pub token: String,
    /// How long it opens streams, ms.
    pub expires_in_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(session: u32, committed: u64, received: u64, phase: Phase) -> EventId {
        EventId {
            drive_session: session,
            committed_bytes: committed,
            received_bytes: received,
            phase,
        }
    }

    #[test]
    fn event_ids_read_back_and_junk_is_refused() {
        for phase in [
            Phase::Resuming,
            Phase::Receiving,
            Phase::Complete,
            Phase::Failed,
        ] {
            let original = id(2, 8 << 20, 24 << 20, phase);
            let text = original.to_string();
            assert_eq!(text.parse::<EventId>(), Ok(original), "{text}");
        }
        assert_eq!(
            id(0, 1, 2, Phase::Receiving).to_string(),
            "s0-c1-r2-receiving"
        );
        for junk in [
            "",
            "s0-c1-r2",
            "s0-c1-r2-receiving-x",
            "s-c1-r2-receiving",
            "s0-c+1-r2-receiving",
            "s4294967296-c1-r2-receiving",
            "c1-s0-r2-receiving",
            "s0-c1-r2-done",
            &"s0-c1-r2-receiving".repeat(8),
        ] {
            assert!(junk.parse::<EventId>().is_err(), "{junk:?} accepted");
        }
    }

    #[test]
    fn an_event_is_named_by_its_most_telling_change() {
        let receiving = id(0, 0, 0, Phase::Receiving);
        assert_eq!(EventKind::between(None, &receiving), EventKind::Phase);
        let resuming = id(0, 0, 0, Phase::Resuming);
        assert_eq!(
            EventKind::between(Some(&resuming), &receiving),
            EventKind::Phase
        );
        let more = id(0, 0, 4, Phase::Receiving);
        assert_eq!(
            EventKind::between(Some(&receiving), &more),
            EventKind::Received
        );
        let committed = id(0, 4, 4, Phase::Receiving);
        assert_eq!(
            EventKind::between(Some(&more), &committed),
            EventKind::Committed
        );
        let new_session = id(1, 0, 0, Phase::Receiving);
        assert_eq!(
            EventKind::between(Some(&committed), &new_session),
            EventKind::Committed
        );
        for (phase, kind) in [
            (Phase::Complete, EventKind::Complete),
            (Phase::Failed, EventKind::Failed),
        ] {
            assert_eq!(EventKind::between(None, &id(0, 4, 4, phase)), kind);
        }
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(EventKind::parse("progress"), None);
    }
}
