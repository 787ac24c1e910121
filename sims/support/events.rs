//! The backend's event streams as a test reads them: opened over loopback
//! with the library's own HTTP and SSE reading (`wire::open`,
//! `wire::sse::SseReader`), read item by item with a bound on time.

use super::http::Header;
use super::TestResult;
use http_body_util::BodyExt;
use std::time::Duration;
use upsim::chunk_api::{EventId, EventKind, ProgressState};
use upsim::env::TokioNetwork;
use upsim::wire::sse::{SseItem, SseReader};
use upsim::wire::{open, FramesBody, OpenReply};

/// An open event stream (or a refused one: see `reply.status`).
pub struct EventStream {
    pub reply: OpenReply,
    reader: SseReader,
    pending: std::collections::VecDeque<SseItem>,
}

/// One event, read back.
#[derive(Debug, Clone)]
pub struct ReadEvent {
    pub kind: EventKind,
    pub id: EventId,
    pub state: ProgressState,
}

impl EventStream {
    /// `GET path` on `addr` with `headers`; returns once the reply's head
    /// is in.
    pub async fn open(addr: &str, path: &str, headers: &[Header]) -> TestResult<Self> {
        let mut request = http::Request::builder()
            .method("GET")
            .uri(path)
            .header("host", addr);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let request = request.body(FramesBody::empty())?;
        let reply = tokio::time::timeout(
            Duration::from_secs(15),
            open(&TokioNetwork, addr, None, request),
        )
        .await??;
        Ok(Self {
            reply,
            reader: SseReader::new(),
            pending: Default::default(),
        })
    }

    /// The next item, `None` when the stream ended; an error after
    /// `within` without one.
    pub async fn next(&mut self, within: Duration) -> TestResult<Option<SseItem>> {
        tokio::time::timeout(within, async {
            loop {
                if let Some(item) = self.pending.pop_front() {
                    return Ok(Some(item));
                }
                match self.reply.body.frame().await {
                    None => return Ok(None),
                    Some(frame) => {
                        if let Ok(data) = frame?.into_data() {
                            self.pending.extend(self.reader.push(&data)?);
                        }
                    }
                }
            }
        })
        .await
        .map_err(|_| format!("no stream item within {within:?}"))?
    }

    /// The next event (skipping `retry:` and comments); an error if the
    /// stream ends or `within` passes first.
    pub async fn next_event(&mut self, within: Duration) -> TestResult<ReadEvent> {
        loop {
            match self.next(within).await? {
                Some(SseItem::Event(event)) => {
                    let kind = EventKind::parse(&event.name)
                        .ok_or_else(|| format!("unknown event {}", event.name))?;
                    let id: EventId = event.id.ok_or("an event without an id")?.parse()?;
                    let state: ProgressState = serde_json::from_str(&event.data)?;
                    assert_eq!(id, state.event_id(), "an id names its event's state");
                    return Ok(ReadEvent { kind, id, state });
                }
                Some(_) => continue,
                None => return Err("the stream ended".into()),
            }
        }
    }
}
