//! One event stream's body: the upload's states as Server-Sent Events,
//! produced one frame at a time as hyper asks for the next.
//!
//! # Implementation Details
//!
//! The body is a stream over [`Reading`], which holds the upload's watch
//! receiver and the id of the state the reader has (its `Last-Event-ID`,
//! then each event sent). Asked for a frame, it:
//! 1. the first time, answers `retry:` and, if the upload's state is not
//!    the one the reader has, that state;
//! 2. otherwise waits for the state to change (then sends it) or for the
//!    keep-alive interval to pass (then sends a comment);
//! 3. ends after sending an ended upload's state, when the upload is
//!    dropped from the table, or when the server shuts down (its readers
//!    reconnect to the next process).
//!
//! hyper asks for a frame only when the connection has taken the last one,
//! so a slow reader holds at most one frame here, and the states it was
//! too slow for are skipped (each event carries the whole state). A reader
//! that went away is noticed when a frame fails to go out: within one
//! keep-alive interval. Its [`StreamSlot`] is given back when hyper drops
//! the body.

use super::limits::StreamSlot;
use crate::chunk_api::{EventId, EventKind, ProgressState};
use crate::env::Clock;
use crate::wire::sse;
use bytes::{Bytes, BytesMut};
use futures_util::stream::{BoxStream, StreamExt};
use http_body_util::StreamBody;
use hyper::body::Frame;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The body of an event stream.
pub type EventStreamBody = StreamBody<BoxStream<'static, Result<Frame<Bytes>, Infallible>>>;

/// The comment sent when nothing has changed for a keep-alive interval.
const KEEP_ALIVE_COMMENT: &str = "keep-alive";

/// One stream's state between frames.
pub(crate) struct Reading {
    /// The upload's latest state.
    pub rx: watch::Receiver<ProgressState>,
    /// The state the reader has: its `Last-Event-ID`, then each sent.
    pub has: Option<EventId>,
    /// Keep-alive time (simulated in a simulation).
    pub clock: Arc<dyn Clock>,
    /// Longest silence before a comment.
    pub keep_alive: Duration,
    /// `retry:` to send first; `None` once sent.
    pub retry: Option<Duration>,
    /// True once the server shuts down: the stream ends.
    pub closing: watch::Receiver<bool>,
    /// The stream's place among the open ones, given back when dropped.
    pub _slot: StreamSlot,
}

impl Reading {
    /// The body that yields this stream's frames.
    pub(crate) fn into_body(self) -> EventStreamBody {
        let frames = futures_util::stream::unfold(Some(self), |reading| async move {
            let mut reading = reading?;
            let frame = reading.next_frame().await?;
            // After an ended upload's state nothing follows: the stream ends.
            let ended = reading.has.is_some_and(|id| {
                matches!(
                    id.phase,
                    crate::chunk_api::Phase::Complete | crate::chunk_api::Phase::Failed
                )
            });
            let next = (!ended).then_some(reading);
            Some((Ok(Frame::data(frame)), next))
        });
        StreamBody::new(frames.boxed())
    }

    /// The next frame, or `None` when the upload is gone.
    async fn next_frame(&mut self) -> Option<Bytes> {
        if let Some(retry) = self.retry.take() {
            let mut first = BytesMut::from(&sse::retry(retry)[..]);
            if let Some(event) = self.take_new() {
                first.extend_from_slice(&event);
            }
            return Some(first.freeze());
        }
        loop {
            if let Some(event) = self.take_new() {
                return Some(event);
            }
            tokio::select! {
                biased;
                changed = self.rx.changed() => {
                    // An error: the upload left the table; nothing follows.
                    changed.ok()?;
                }
                () = self.clock.sleep(self.keep_alive) => {
                    crate::coverage::hit(crate::coverage::Probe::EventStreamKeepAlive);
                    return sse::comment(KEEP_ALIVE_COMMENT).ok();
                }
                // The server is shutting down (or gone): end here.
                _ = self.closing.wait_for(|closing| *closing) => return None,
            }
        }
    }

    /// The current state as an event, unless the reader has it.
    fn take_new(&mut self) -> Option<Bytes> {
        let state = self.rx.borrow_and_update().clone();
        let id = state.event_id();
        if self.has == Some(id) {
            return None;
        }
        let kind = EventKind::between(self.has.as_ref(), &id);
        self.has = Some(id);
        // Plain data: serialising cannot fail; the id and name are ours
        // and hold no line break.
        let data = serde_json::to_string(&state).ok()?;
        sse::event(&id.to_string(), kind.as_str(), &data).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::super::limits::EventStreams;
    use super::*;
    use crate::chunk_api::Phase;
    use crate::env::ManualClock;
    use crate::ids::UploadId;
    use crate::user::UserId;
    use http_body_util::BodyExt;

    fn state(received_bytes: u64, phase: Phase) -> ProgressState {
        ProgressState {
            upload_id: UploadId::new("u"),
            phase,
            file_size_bytes: 1 << 40,
            committed_bytes: 0,
            received_bytes,
            drive_session: 0,
            file: None,
            failure: None,
        }
    }

    fn events_in(frame: &Bytes) -> Vec<String> {
        let mut reader = sse::SseReader::new();
        reader
            .push(frame)
            .expect("a well-formed frame")
            .into_iter()
            .filter_map(|item| match item {
                sse::SseItem::Event(e) => e.id,
                _ => None,
            })
            .collect()
    }

    /// This is a regression test that ensures a reader that does not read
    /// never makes the stream hold more than the latest state: publishing
    /// never waits, and what the reader missed is superseded, not queued.
    #[tokio::test]
    async fn a_slow_reader_gets_the_latest_state_and_nothing_piles_up() {
        let (tx, rx) = watch::channel(state(0, Phase::Receiving));
        let (_closing_tx, closing) = watch::channel(false);
        let streams = EventStreams::new(1, 1);
        let user = UserId::new("alice").expect("valid");
        let mut body = Reading {
            rx,
            has: None,
            clock: Arc::new(ManualClock::default()),
            keep_alive: Duration::from_secs(15),
            retry: Some(Duration::from_secs(2)),
            closing,
            _slot: streams.acquire(&user).expect("room"),
        }
        .into_body();
        // Ten thousand changes while nobody reads: each send returns at once.
        for received in 1..=10_000u64 {
            tx.send_replace(state(received, Phase::Receiving));
        }
        let first = body.frame().await.expect("a frame").expect("infallible");
        let first = first.into_data().expect("data");
        assert!(first.starts_with(b"retry: 2000\n\n"));
        assert_eq!(
            events_in(&first),
            vec!["s0-c0-r10000-receiving".to_owned()],
            "only the latest state, once"
        );
        tx.send_replace(state(10_001, Phase::Receiving));
        tx.send_replace(state(10_001, Phase::Complete));
        let next = body.frame().await.expect("a frame").expect("infallible");
        assert_eq!(
            events_in(&next.into_data().expect("data")),
            vec!["s0-c0-r10001-complete".to_owned()]
        );
        assert!(body.frame().await.is_none(), "nothing follows the end");
        drop(body);
        assert_eq!(streams.open_count(), 0, "the slot is given back");
    }
}
