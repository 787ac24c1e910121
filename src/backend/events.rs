//! The progress channel: `GET /uploads/{id}/events`, an upload's states as
//! Server-Sent Events, and `POST /uploads/{id}/events/token`, the
//! short-lived token a browser opens one with.
//!
//! What an event carries, its id and its name are the chunk API's
//! (`chunk_api::events`); how a stream produces them is `events/stream.rs`;
//! the bounds on open streams `events/limits.rs`; the tokens
//! `events/tokens.rs`.
//!
//! Authorisation is the API's: whoever may read the upload's status may
//! read its events, with the same credentials (`Authorization: Bearer` or
//! the user header), or with an events token that one of them obtained
//! for that upload (`?token=…`; `EventSource` cannot set headers). Another
//! user's upload answers 404 as everywhere else.
//!
//! Bounds: [`EventsConfig::streams_max`] open streams in all (503
//! `event_streams_full`) and [`EventsConfig::streams_per_user_max`] per user
//! (429 `user_event_streams_full`), both with `Retry-After`; tokens as
//! `events/tokens.rs` says; a slow reader holds at most one frame (see
//! `events/stream.rs`). The streams count against the server's connections,
//! so their bound must leave room for chunks (checked by
//! [`BackendConfig::validate`](super::BackendConfig::validate)).

mod limits;
mod stream;
mod tokens;

pub(super) use limits::EventStreams;
pub use stream::EventStreamBody;
pub(super) use tokens::EventTokens;
pub use tokens::TOKENS_PER_USER_MAX as EVENT_TOKENS_PER_USER_MAX;

use super::refusals::Refusal;
use super::server::Backend;
use crate::chunk_api::{
    Cause, EventId, EventsToken, EVENTS_TOKEN_QUERY, EVENT_STREAM_CONTENT_TYPE,
    LAST_EVENT_ID_HEADER, LAST_EVENT_ID_QUERY,
};
use crate::coverage::{self, Probe};
use crate::wire::{json, Reply, StreamingReply};
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use std::time::Duration;

/// A reply of the backend: whole, or an event stream.
pub type Served = StreamingReply<EventStreamBody>;

/// Default [`EventsConfig::streams_max`]: half of real mode's connection
/// bound ([`crate::wire::CONNECTIONS_MAX_REAL`]), so chunks always find
/// connections however many pages watch.
pub const EVENT_STREAMS_MAX_DEFAULT: usize = 256;
/// Default [`EventsConfig::streams_per_user_max`]: a page watching a few
/// files and a command-line client or two.
pub const EVENT_STREAMS_PER_USER_MAX_DEFAULT: u32 = 8;
/// Default [`EventsConfig::keep_alive`]: proxies commonly close a
/// connection silent for 30–60 s.
pub const EVENT_KEEP_ALIVE_DEFAULT: Duration = Duration::from_secs(15);
/// Default [`EventsConfig::retry`]: how long a browser waits before it
/// reconnects a dropped stream.
pub const EVENT_RETRY_DEFAULT: Duration = Duration::from_secs(2);
/// Default [`EventsConfig::token_lifetime`]: long enough for a page to open
/// its stream and ride out a short backend restart on it, short enough
/// that a leaked token is soon worthless.
pub const EVENT_TOKEN_LIFETIME_DEFAULT: Duration = Duration::from_secs(5 * 60);
/// Default [`EventsConfig::tokens_max`]: a grant is ~150 bytes.
pub const EVENT_TOKENS_MAX_DEFAULT: usize = 4096;

const _: () = assert!(EVENT_STREAMS_MAX_DEFAULT < crate::wire::CONNECTIONS_MAX_REAL);
const _: () = assert!(EVENT_RETRY_DEFAULT.as_millis() < EVENT_KEEP_ALIVE_DEFAULT.as_millis());
const _: () = assert!(EVENT_TOKENS_PER_USER_MAX as u32 >= EVENT_STREAMS_PER_USER_MAX_DEFAULT);

/// The progress channel's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsConfig {
    /// Streams open at once, in all; ≥ 1. Default
    /// [`EVENT_STREAMS_MAX_DEFAULT`].
    pub streams_max: usize,
    /// Streams one user may have open at once; ≥ 1. Default
    /// [`EVENT_STREAMS_PER_USER_MAX_DEFAULT`].
    pub streams_per_user_max: u32,
    /// Longest silence on a stream before a keep-alive comment (on the
    /// backend's clock: simulated in a simulation); > 0. Default
    /// [`EVENT_KEEP_ALIVE_DEFAULT`].
    pub keep_alive: Duration,
    /// The `retry:` a stream starts with; > 0. Default
    /// [`EVENT_RETRY_DEFAULT`].
    pub retry: Duration,
    /// How long an events token opens streams; > 0. Default
    /// [`EVENT_TOKEN_LIFETIME_DEFAULT`].
    pub token_lifetime: Duration,
    /// Unexpired events tokens kept at most; ≥ 1. Default
    /// [`EVENT_TOKENS_MAX_DEFAULT`].
    pub tokens_max: usize,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            streams_max: EVENT_STREAMS_MAX_DEFAULT,
            streams_per_user_max: EVENT_STREAMS_PER_USER_MAX_DEFAULT,
            keep_alive: EVENT_KEEP_ALIVE_DEFAULT,
            retry: EVENT_RETRY_DEFAULT,
            token_lifetime: EVENT_TOKEN_LIFETIME_DEFAULT,
            tokens_max: EVENT_TOKENS_MAX_DEFAULT,
        }
    }
}

impl EventsConfig {
    /// Fields that must be positive, with their names (for validation).
    pub(super) fn durations(&self) -> [(&'static str, Duration); 3] {
        [
            ("events.keep_alive", self.keep_alive),
            ("events.retry", self.retry),
            ("events.token_lifetime", self.token_lifetime),
        ]
    }

    /// Counts that must be at least 1, with their names.
    pub(super) fn counts(&self) -> [(&'static str, u64); 3] {
        [
            ("events.streams_max", self.streams_max as u64),
            (
                "events.streams_per_user_max",
                u64::from(self.streams_per_user_max),
            ),
            ("events.tokens_max", self.tokens_max as u64),
        ]
    }
}

/// What the stream's query string says.
#[derive(Default)]
struct EventsQuery {
    token: Option<String>,
    last_event_id: Option<String>,
}

impl EventsQuery {
    fn of(query: Option<&str>) -> Self {
        let mut found = Self::default();
        for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match name.as_ref() {
                EVENTS_TOKEN_QUERY => found.token = Some(value.into_owned()),
                LAST_EVENT_ID_QUERY => found.last_event_id = Some(value.into_owned()),
                _ => {}
            }
        }
        found
    }
}

impl Backend {
    /// `GET /uploads/{id}/events`: the upload's states as they change.
    pub(super) fn events(&self, req: &Request<Incoming>, id: &str) -> Result<Served, Refusal> {
        let query = EventsQuery::of(req.uri().query());
        let user = match &query.token {
            Some(token) => self.inner.event_tokens.redeem(token, id, self.now())?,
            None => self.user(req)?,
        };
        let upload = self.find(id, &user)?;
        // The state the reader has: the header a reconnecting EventSource
        // sends, else the query a new one can carry. Anything that is not
        // one of our ids names no state: the reader gets the current one.
        let has = req
            .headers()
            .get(LAST_EVENT_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .or(query.last_event_id.as_deref())
            .and_then(|text| text.parse::<EventId>().ok());
        let rx = upload.subscribe();
        if has.is_some() {
            coverage::hit(Probe::EventStreamResumed);
        }
        let current = rx.borrow().clone();
        if current.ended() && has == Some(current.event_id()) {
            // Nothing will follow the state the reader has: 204 tells an
            // EventSource to stop reconnecting.
            let mut reply = Response::new(Either::Left(Full::new(Bytes::new())));
            *reply.status_mut() = StatusCode::NO_CONTENT;
            return Ok(reply);
        }
        let slot = self.inner.event_streams.acquire(&user)?;
        let config = &self.inner.config.events;
        let body = stream::Reading {
            rx,
            has,
            clock: self.inner.env.clock.clone(),
            keep_alive: config.keep_alive,
            retry: Some(config.retry),
            closing: self.inner.closing.subscribe(),
            _slot: slot,
        }
        .into_body();
        let mut reply = Response::new(Either::Right(body));
        let headers = reply.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(EVENT_STREAM_CONTENT_TYPE),
        );
        headers.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        );
        Ok(reply)
    }

    /// `POST /uploads/{id}/events/token`: a token that opens this upload's
    /// stream for a reader without the API's credentials.
    pub(super) fn events_token(&self, req: &Request<Incoming>, id: &str) -> Result<Reply, Refusal> {
        let user = self.user(req)?;
        let upload = self.find(id, &user)?;
        // A secret: from the OS whatever the id source (simulations open
        // their streams with the user header and never ask for one).
        let token = crate::ids::os_random_id().map_err(|e| {
            Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                Cause::IdSourceFailed,
                e.to_string(),
            )
            .retry_after(Duration::from_secs(1))
        })?;
        let lifetime = self.inner.config.events.token_lifetime;
        self.inner.event_tokens.issue(
            token.clone(),
            upload.id.clone(),
            user,
            self.now(),
            lifetime,
        )?;
        Ok(json(
            StatusCode::CREATED,
            &EventsToken {
                token,
                expires_in_ms: u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX),
            },
        ))
    }
}
