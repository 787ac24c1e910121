//! The client's side of the progress channel: follows one upload's event
//! stream (`GET /uploads/{id}/events`) until the upload ends, opening it
//! again after it breaks off, from the last event seen (`Last-Event-ID`).
//!
//! # Implementation Details
//!
//! [`EventFollower::follow`] loops:
//! 1. opens the stream with the client's credentials and, after the first
//!    event, `Last-Event-ID` (the backend then sends the current state only
//!    if it is not that one);
//! 2. reads it as it arrives, through a bounded [`SseReader`], telling the
//!    caller each event, keep-alive and drop ([`Seen`]); a stream silent for
//!    [`FollowConfig::idle_timeout`] is taken for dead;
//! 3. when it breaks off (the connection dropped, the backend restarted,
//!    nothing for too long, a 5xx or a `Retry-After` refusal), waits the
//!    server's `retry:` (or the refusal's `Retry-After`), growing with each
//!    failure in a row up to [`FollowConfig::reconnect_max`], jittered from
//!    its own seeded RNG (not the upload's: following must not change
//!    what the upload draws), and goes to 1.
//!
//! It returns the ended upload's last state (complete or failed), or a
//! refusal waiting cannot fix (401, 404, …). It never gives up on its own
//! otherwise: the caller drops it when the upload's own client has given
//! up. Nothing is held but the event being read (at most
//! [`SSE_EVENT_BYTES_MAX`](crate::wire::sse::SSE_EVENT_BYTES_MAX) bytes).

use super::ClientConfig;
use crate::buggify::{self, Site};
use crate::chunk_api::{
    Cause, ErrorBody, EventId, EventKind, ProgressState, EVENT_STREAM_CONTENT_TYPE,
    LAST_EVENT_ID_HEADER, USER_HEADER,
};
use crate::env::{Clock, Network};
use crate::wire::sse::{SseItem, SseReader};
use crate::wire::{open, FramesBody, OpenReply, SendError};
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;
use std::time::Duration;

/// Longest error body read from a refused stream.
const REFUSAL_BYTES_MAX: usize = 64 * 1024;

/// Mixed into the client's seed for the follower's own jitter.
const FOLLOWER_SEED_MIX: u64 = 0x5eed_e7e7_5eed_e7e7;

/// How the follower waits and reconnects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowConfig {
    /// A stream silent this long is taken for dead and opened again: three
    /// of the backend's 15-s keep-alives. Default 45 s.
    pub idle_timeout: Duration,
    /// The wait before reconnecting until the server says (`retry:`).
    /// Default 2 s.
    pub reconnect: Duration,
    /// The longest wait between reconnects, however many failed in a row.
    /// Default 30 s.
    pub reconnect_max: Duration,
}

impl Default for FollowConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(45),
            reconnect: Duration::from_secs(2),
            reconnect_max: Duration::from_secs(30),
        }
    }
}

/// What the follower saw, in order, told to its caller as it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// A stream opened (200), resuming from `last_event_id` if any.
    Opened {
        /// The `Last-Event-ID` sent.
        last_event_id: Option<EventId>,
    },
    /// An event.
    Event {
        /// Its name.
        kind: EventKind,
        /// Its id (the state it carries).
        id: EventId,
        /// The state (boxed: it is most of the enum's size).
        state: Box<ProgressState>,
    },
    /// A keep-alive comment.
    KeepAlive,
    /// The stream broke off (or could not open); the follower will open it
    /// again.
    Dropped {
        /// Why.
        reason: String,
    },
}

/// Told what the follower sees.
pub type SeenFn = Arc<dyn Fn(&Seen) + Send + Sync>;

/// Why following stopped before the upload ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FollowError {
    /// The backend refused the stream and waiting will not help.
    #[error("the event stream was refused with {status} {cause}: {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The backend's cause.
        cause: Cause,
        /// The backend's message.
        message: String,
    },
    /// TLS refused the backend (or it refused us).
    #[error("TLS with {addr} failed: {reason}")]
    Tls {
        /// The backend's address.
        addr: String,
        /// rustls's reason.
        reason: String,
    },
    /// The backend sent what is not an event stream of this API.
    #[error("protocol error on the event stream: {reason}")]
    Protocol {
        /// What was wrong.
        reason: String,
    },
}

/// How one connection ended.
enum StreamEnd {
    /// The upload ended: its last state.
    Ended(Box<ProgressState>),
    /// Broke off: open again after `wait` (at least).
    Again { reason: String, wait: Duration },
}

/// Follows one upload's event stream.
pub struct EventFollower {
    net: Arc<dyn Network>,
    clock: Arc<dyn Clock>,
    client: ClientConfig,
    config: FollowConfig,
    upload_id: String,
}

impl EventFollower {
    /// A follower of upload `upload_id` on the backend `client` names, with
    /// its credentials and TLS.
    pub fn new(
        net: Arc<dyn Network>,
        clock: Arc<dyn Clock>,
        client: ClientConfig,
        config: FollowConfig,
        upload_id: impl Into<String>,
    ) -> Self {
        Self {
            net,
            clock,
            client,
            config,
            upload_id: upload_id.into(),
        }
    }

    /// Follows the stream until the upload ends; returns its last state.
    ///
    /// # Errors
    /// A refusal waiting cannot fix, TLS, or a stream that is not ours.
    ///
    /// # Cancel safety
    /// Dropping the future closes the stream.
    pub async fn follow(&self, on: SeenFn) -> Result<ProgressState, FollowError> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.client.seed ^ FOLLOWER_SEED_MIX);
        let mut last: Option<ProgressState> = None;
        let mut base = self.config.reconnect;
        let mut failures = 0u32;
        loop {
            let before = last.as_ref().map(ProgressState::event_id);
            let end = self.one_stream(&on, &mut last, &mut base).await?;
            let (reason, wait) = match end {
                StreamEnd::Ended(state) => return Ok(*state),
                StreamEnd::Again { reason, wait } => (reason, wait),
            };
            on(&Seen::Dropped { reason });
            if last.as_ref().map(ProgressState::event_id) != before {
                // A stream that delivered something: the next wait starts
                // again from the base.
                failures = 0;
            }
            failures = failures.saturating_add(1);
            let grown = base.saturating_mul(1 << failures.min(4).saturating_sub(1));
            let ceiling = grown.min(self.config.reconnect_max).max(wait);
            // Full jitter above half the wait: readers dropped together
            // (a backend restart) do not all come back at once.
            let half = u64::try_from(ceiling.as_millis() / 2).unwrap_or(u64::MAX);
            let jitter = Duration::from_millis(half + rng.random_range(0..=half));
            self.clock.sleep(jitter.max(wait)).await;
        }
    }

    /// One connection: open, read until it ends or breaks off.
    async fn one_stream(
        &self,
        on: &SeenFn,
        last: &mut Option<ProgressState>,
        base: &mut Duration,
    ) -> Result<StreamEnd, FollowError> {
        let has = last.as_ref().map(ProgressState::event_id);
        let mut reply = match self.open(has).await? {
            Ok(reply) => reply,
            Err(again) => return Ok(again),
        };
        if reply.status == StatusCode::NO_CONTENT {
            // The upload ended and we have its last state.
            return match last.clone() {
                Some(state) if state.ended() => Ok(StreamEnd::Ended(Box::new(state))),
                _ => Err(FollowError::Protocol {
                    reason: "204 although the reader has no ended state".into(),
                }),
            };
        }
        on(&Seen::Opened { last_event_id: has });
        let body = &mut reply.body;
        let mut reader = SseReader::new();
        loop {
            let frame = self
                .clock
                .timeout(self.config.idle_timeout, body.frame())
                .await;
            let bytes = match frame {
                None => {
                    return Ok(self.again(format!(
                        "nothing for {} ms",
                        self.config.idle_timeout.as_millis()
                    )))
                }
                Some(None) => return Ok(self.again("the stream ended".into())),
                Some(Some(Err(e))) => return Ok(self.again(format!("the stream broke off: {e}"))),
                Some(Some(Ok(frame))) => match frame.into_data() {
                    Ok(bytes) => bytes,
                    Err(_) => continue, // trailers: none expected, nothing to read
                },
            };
            let items = reader.push(&bytes).map_err(|e| FollowError::Protocol {
                reason: e.to_string(),
            })?;
            for item in items {
                match item {
                    SseItem::Retry(after) => *base = after,
                    SseItem::Comment => on(&Seen::KeepAlive),
                    SseItem::Event(event) => {
                        let state = self.read_event(&event, on)?;
                        if state.ended() {
                            *last = Some(state.clone());
                            return Ok(StreamEnd::Ended(Box::new(state)));
                        }
                        *last = Some(state);
                        // Simulation only: the stream drops here, as a
                        // flaky network or proxy would cut it.
                        if buggify::fire(Site::ClientEventStreamDrop) {
                            return Ok(self.again("dropped on purpose (fault point)".into()));
                        }
                    }
                }
            }
        }
    }

    fn again(&self, reason: String) -> StreamEnd {
        StreamEnd::Again {
            reason,
            wait: Duration::ZERO,
        }
    }

    /// An event's state, checked against its id and name; told to `on`.
    fn read_event(
        &self,
        event: &crate::wire::sse::SseEvent,
        on: &SeenFn,
    ) -> Result<ProgressState, FollowError> {
        let protocol = |reason: String| FollowError::Protocol { reason };
        let kind = EventKind::parse(&event.name)
            .ok_or_else(|| protocol(format!("unknown event name {:?}", event.name)))?;
        let state: ProgressState = serde_json::from_str(&event.data)
            .map_err(|e| protocol(format!("bad {} event: {e}", event.name)))?;
        let id: EventId = event
            .id
            .as_deref()
            .ok_or_else(|| protocol("an event without an id".into()))?
            .parse()
            .map_err(|e: crate::chunk_api::BadEventId| protocol(e.to_string()))?;
        if id != state.event_id() || state.upload_id.as_str() != self.upload_id {
            return Err(protocol(format!(
                "event {id} carries another state ({}) or upload",
                state.event_id()
            )));
        }
        on(&Seen::Event {
            kind,
            id,
            state: Box::new(state.clone()),
        });
        Ok(state)
    }

    /// Opens the stream: the reply, or how long to wait before trying
    /// again, or a refusal waiting cannot fix.
    async fn open(
        &self,
        has: Option<EventId>,
    ) -> Result<Result<OpenReply, StreamEnd>, FollowError> {
        let mut builder = Request::builder()
            .method(Method::GET)
            .uri(format!("/uploads/{}/events", self.upload_id))
            .header(http::header::HOST, &self.client.server_addr)
            .header(http::header::ACCEPT, EVENT_STREAM_CONTENT_TYPE);
        builder = match &self.client.auth {
            super::ClientAuth::UserHeader(user) => builder.header(USER_HEADER, user.as_str()),
            super::ClientAuth::Bearer(token) => {
                builder.header(http::header::AUTHORIZATION, format!("Bearer {token}"))
            }
        };
        if let Some(id) = has {
            builder = builder.header(LAST_EVENT_ID_HEADER, id.to_string());
        }
        let request = builder
            .body(FramesBody::empty())
            .map_err(|e| FollowError::Protocol {
                reason: format!("cannot build the request: {e}"),
            })?;
        let opened = self
            .clock
            .timeout(
                self.client.request_timeout,
                open(
                    &*self.net,
                    &self.client.server_addr,
                    self.client.tls.as_ref(),
                    request,
                ),
            )
            .await;
        let reply = match opened {
            None => return Ok(Err(self.again("no reply in time".into()))),
            Some(Err(SendError::Tls { addr, reason })) => {
                return Err(FollowError::Tls { addr, reason })
            }
            Some(Err(e)) => return Ok(Err(self.again(e.to_string()))),
            Some(Ok(reply)) => reply,
        };
        match reply.status {
            StatusCode::OK => {
                let content_type = reply
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                if !content_type.starts_with(EVENT_STREAM_CONTENT_TYPE) {
                    return Err(FollowError::Protocol {
                        reason: format!("200 with content type {content_type:?}"),
                    });
                }
                Ok(Ok(reply))
            }
            StatusCode::NO_CONTENT => Ok(Ok(reply)),
            _ => self.refused(reply).await.map(Err),
        }
    }

    /// A refused stream: try again (5xx, 408, a 429 with `Retry-After`)
    /// after what it says, or stop.
    async fn refused(&self, mut reply: OpenReply) -> Result<StreamEnd, FollowError> {
        let status = reply.status;
        let retry_after = reply
            .headers
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(|s| Duration::from_secs(s.min(3_600)));
        let body = self
            .clock
            .timeout(
                self.client.request_timeout,
                http_body_util::Limited::new(&mut reply.body, REFUSAL_BYTES_MAX).collect(),
            )
            .await
            .and_then(Result::ok)
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let (cause, message) = match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(b) => (b.error.cause, b.error.message),
            Err(_) => (
                Cause::Unknown,
                String::from_utf8_lossy(&body).chars().take(200).collect(),
            ),
        };
        let waiting_helps = status.is_server_error()
            || status == StatusCode::REQUEST_TIMEOUT
            || (status == StatusCode::TOO_MANY_REQUESTS && retry_after.is_some());
        if waiting_helps {
            return Ok(StreamEnd::Again {
                reason: format!("refused with {status} {cause}: {message}"),
                wait: retry_after.unwrap_or_default(),
            });
        }
        Err(FollowError::Refused {
            status: status.as_u16(),
            cause,
            message,
        })
    }
}
