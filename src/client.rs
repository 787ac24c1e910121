//! The upload client: sends a file to the backend in chunks, N at a time,
//! checksummed, retried with exponential backoff and jitter, and resumed by
//! asking the backend what it has.
//!
//! # Implementation Details
//!
//! The client works in rounds. Each round:
//! 1. asks the backend for the upload's status (committed prefix, chunks
//!    buffered, window size) — after a disconnect, a backend restart or the
//!    client's own restart this is how it learns what is already there;
//! 2. sends the missing chunks that fit in the backend's reorder window, in
//!    index order, at most `parallel` at once, each with its CRC-32C;
//! 3. if the round made no progress, backs off (full jitter drawn from the
//!    seeded RNG, slept on the clock trait) before the next one.
//!
//! It ends when the backend reports the upload complete (with the drive's
//! file and checksum), failed (typed cause), or when nothing has progressed
//! for `stall_limit` (it gives up with the last error). Refusals that
//! waiting cannot fix (bad request, quota, unknown upload) end it at once
//! with the backend's cause.
//!
//! Its settings ([`ClientConfig`], [`ClientAuth`]) live in `client/config.rs`;
//! one round of chunks (step 2) in `client/chunks.rs`; following an
//! upload's event stream (committed progress as it happens) in
//! [`events`].
//!
//! Invariant: every chunk sent is read from the source at its own offset
//! and checksummed just before sending; nothing is held beyond the chunks
//! in flight.

use crate::buggify::{self, Site};
use crate::checksum::{crc32c, crc32c_hex, parse_crc32c_hex};
use crate::chunk_api::{
    Cause, ChunkAccepted, CreateUpload, ErrorBody, ErrorDetail, Phase, UploadCreated, UploadStatus,
    UploadedFile, CHECKSUM_HEADER, REPLY_BYTES_MAX, USER_HEADER,
};
use crate::env::{Clock, Network};
use crate::ids::UploadId;
use crate::payload::ChunkSource;
use crate::trace::{Event, Tracer};
use crate::user::UserId;
use crate::wire::{send, ClientReply, FramesBody, SendError};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

mod chunks;
mod config;
pub mod events;
pub mod tus;

pub use config::{ClientAuth, ClientConfig};

/// Why an upload did not finish.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ClientError {
    /// The backend refused, and waiting would not help.
    #[error("refused with {status} {cause}: {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The backend's cause.
        cause: Cause,
        /// The backend's message.
        message: String,
    },
    /// The backend reports the upload failed.
    #[error("upload failed: {cause}: {message}")]
    UploadFailed {
        /// The backend's cause.
        cause: Cause,
        /// The backend's message.
        message: String,
    },
    /// Nothing progressed for too long.
    #[error("gave up after {stalled_ms} ms without progress; last error: {last_error}")]
    GaveUp {
        /// How long nothing moved.
        stalled_ms: u64,
        /// The last thing that went wrong.
        last_error: String,
    },
    /// The source could not be read.
    #[error("cannot read the source: {reason}")]
    Source {
        /// Why.
        reason: String,
    },
    /// The backend answered something the client cannot understand.
    #[error("protocol error: {reason}")]
    Protocol {
        /// What was wrong.
        reason: String,
    },
    /// TLS refused the backend, or the backend refused us: its certificate
    /// is not signed by a trusted CA, not valid for the host name, or
    /// expired; or it does not speak TLS. Waiting will not help.
    #[error("TLS with {addr} failed: {reason}")]
    Tls {
        /// The backend's address.
        addr: String,
        /// rustls's reason.
        reason: String,
    },
}

/// Where an upload stands, for progress displays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Progress {
    /// Bytes on the drive.
    pub committed_bytes: u64,
    /// Bytes sent (including resends).
    pub sent_bytes: u64,
    /// The file's size.
    pub total_bytes: u64,
}

/// A finished upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UploadOutcome {
    /// Who uploaded it, when the client knows (it names itself with the
    /// user header; a bearer token's user is known only to the server).
    pub user: Option<UserId>,
    /// The backend's id for it.
    pub upload_id: UploadId,
    /// The drive's file resource (with its checksum).
    pub file: UploadedFile,
    /// Chunk requests sent.
    pub chunks_sent: u64,
    /// Chunk requests that failed or were refused.
    pub chunk_failures: u64,
    /// Bytes sent, resends included.
    pub sent_bytes: u64,
    /// Rounds (status → send) taken.
    pub rounds: u32,
    /// Time from the start of `upload` until the backend admitted it, ms
    /// (0 for a resumed upload).
    pub admitted_after_ms: u64,
}

/// A progress callback.
pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

struct Counters {
    chunks_sent: u64,
    chunk_failures: u64,
    sent_bytes: u64,
}

/// The client. Chunk tasks share its state through an `Arc`.
pub struct Uploader {
    inner: Arc<Inner>,
}

struct Inner {
    net: Arc<dyn Network>,
    clock: Arc<dyn Clock>,
    config: ClientConfig,
    rng: Mutex<ChaCha8Rng>,
    tracer: Tracer,
    progress: Option<ProgressFn>,
    counters: Mutex<Counters>,
}

/// Why a request got no reply.
enum NoReply {
    /// Waiting may help (no connection, a broken exchange, no reply in
    /// time): the reason, for the record.
    Transient(String),
    /// It will not (TLS refused the backend): stop the upload.
    Fatal(ClientError),
}

/// Why a status query did not answer.
enum StatusError {
    /// Waiting may help (no reply, 5xx, 408): the reason, for the record.
    Transient(String),
    /// It will not: stop the upload.
    Fatal(ClientError),
}

impl From<NoReply> for StatusError {
    fn from(no_reply: NoReply) -> Self {
        match no_reply {
            NoReply::Transient(reason) => Self::Transient(reason),
            NoReply::Fatal(error) => Self::Fatal(error),
        }
    }
}

/// Why a round of chunks stopped early.
enum RoundStop {
    /// The upload ended on the backend; the next status says how.
    Ended,
    /// A chunk met a refusal that ends the upload.
    Fatal(ClientError),
}

/// What one chunk request came to.
enum ChunkResult {
    Accepted,
    /// Worth another try later.
    Retry(String),
    /// The upload ended on the backend; the next status says how.
    Ended,
    /// Stop now.
    Fatal(ClientError),
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Uploader {
    /// A client on `net` and `clock`; `progress`, if given, is called after
    /// every status query.
    pub fn new(
        net: Arc<dyn Network>,
        clock: Arc<dyn Clock>,
        config: ClientConfig,
        tracer: Tracer,
        progress: Option<ProgressFn>,
    ) -> Self {
        let rng = ChaCha8Rng::seed_from_u64(config.seed);
        Self {
            inner: Arc::new(Inner {
                net,
                clock,
                config,
                rng: Mutex::new(rng),
                tracer,
                progress,
                counters: Mutex::new(Counters {
                    chunks_sent: 0,
                    chunk_failures: 0,
                    sent_bytes: 0,
                }),
            }),
        }
    }

    /// Creates an upload of `source` on the backend (admission, retried on
    /// transient refusals) and returns its id, without sending a chunk: a
    /// caller that wants to resume after its own restart persists the id,
    /// then calls [`upload`](Self::upload) with it.
    ///
    /// The id is returned as text (and [`upload`](Self::upload) takes it
    /// as text) because that is how callers persist it.
    pub async fn create(&self, source: &dyn ChunkSource) -> Result<String, ClientError> {
        self.inner.create(source).await.map(String::from)
    }

    /// A follower of upload `upload_id`'s event stream, on this client's
    /// network, clock, backend and credentials.
    pub fn events(&self, upload_id: &str, config: events::FollowConfig) -> events::EventFollower {
        events::EventFollower::new(
            self.inner.net.clone(),
            self.inner.clock.clone(),
            self.inner.config.clone(),
            config,
            upload_id,
        )
    }

    /// Uploads `source`, or resumes upload `resume` of it (an id the
    /// backend gave earlier).
    pub async fn upload(
        &self,
        source: Arc<dyn ChunkSource>,
        resume: Option<String>,
    ) -> Result<UploadOutcome, ClientError> {
        self.upload_announcing(source, resume, |_| {}).await
    }

    /// [`upload`](Self::upload), telling `created` the upload's id as soon
    /// as it is known (created, or the one resumed), before any chunk is
    /// sent: a caller that follows the upload's events starts there.
    pub async fn upload_announcing(
        &self,
        source: Arc<dyn ChunkSource>,
        resume: Option<String>,
        created: impl FnOnce(&str),
    ) -> Result<UploadOutcome, ClientError> {
        let started = self.inner.clock.now();
        let id = match resume {
            Some(id) => UploadId::new(id),
            None => self.inner.create(&*source).await?,
        };
        created(id.as_str());
        let admitted_after_ms = ms(self.inner.clock.now().saturating_sub(started));
        let result = self.inner.finish(&id, source).await.map(|o| UploadOutcome {
            admitted_after_ms,
            ..o
        });
        if let Err(
            ClientError::GaveUp { .. } | ClientError::Protocol { .. } | ClientError::Source { .. },
        ) = &result
        {
            // Abandoning an upload the backend still holds: tell it, so
            // its slot is released now rather than at its idle timeout.
            // Best effort: if this fails too, the idle timeout remains.
            let _ = self
                .inner
                .request(
                    Method::DELETE,
                    &format!("/uploads/{id}"),
                    FramesBody::empty(),
                    &[],
                )
                .await;
        }
        let outcome = match &result {
            Ok(o) => format!("complete {}", o.file.digest().unwrap_or("-")),
            Err(e) => format!("error {e}"),
        };
        self.inner.tracer.record(Event::ClientDone { outcome });
        result
    }
}

impl Inner {
    fn counters(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.counters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn jitter(&self, ceiling: Duration) -> Duration {
        let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
        Duration::from_millis(rng.random_range(0..=ms(ceiling)))
    }

    async fn request<B>(
        &self,
        method: Method,
        path: &str,
        body: B,
        extra: &[(&str, String)],
    ) -> Result<ClientReply, NoReply>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, &self.config.server_addr);
        builder = match &self.config.auth {
            ClientAuth::UserHeader(user) => builder.header(USER_HEADER, user.as_str()),
            ClientAuth::Bearer(token) => {
                builder.header(http::header::AUTHORIZATION, format!("Bearer {token}"))
            }
        };
        for (name, value) in extra {
            builder = builder.header(*name, value);
        }
        let request = builder
            .body(body)
            .map_err(|e| NoReply::Transient(format!("cannot build request: {e}")))?;
        let sent = self
            .clock
            .timeout(
                self.config.request_timeout,
                send(
                    &*self.net,
                    &self.config.server_addr,
                    self.config.tls.as_ref(),
                    request,
                    REPLY_BYTES_MAX,
                ),
            )
            .await;
        match sent {
            Some(Ok(reply)) => Ok(reply),
            Some(Err(SendError::Tls { addr, reason })) => {
                Err(NoReply::Fatal(ClientError::Tls { addr, reason }))
            }
            Some(Err(e)) => Err(NoReply::Transient(e.to_string())),
            None => Err(NoReply::Transient(format!(
                "no reply within {} ms",
                ms(self.config.request_timeout)
            ))),
        }
    }

    fn error_of(reply: &ClientReply) -> ClientError {
        match serde_json::from_slice::<ErrorBody>(&reply.body) {
            Ok(body) => ClientError::Refused {
                status: reply.status.as_u16(),
                cause: body.error.cause,
                message: body.error.message,
            },
            Err(_) => ClientError::Refused {
                status: reply.status.as_u16(),
                cause: Cause::Unknown,
                message: String::from_utf8_lossy(&reply.body)
                    .chars()
                    .take(200)
                    .collect(),
            },
        }
    }

    /// Whether waiting may change this refusal.
    fn transient(status: StatusCode) -> bool {
        status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT
    }

    /// Whether waiting may change this reply: [`transient`](Self::transient)
    /// statuses, and a 429 that says how long to wait (`too_many_uploads`;
    /// a 429 without `Retry-After`, such as the daily quota, is final).
    fn transient_reply(reply: &ClientReply) -> bool {
        Self::transient(reply.status)
            || (reply.status == StatusCode::TOO_MANY_REQUESTS
                && reply.headers.contains_key(http::header::RETRY_AFTER))
    }

    fn retry_after(reply: &ClientReply) -> Duration {
        reply
            .headers
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(|s| Duration::from_secs(s.min(3_600)))
            .unwrap_or_default()
    }

    async fn create(&self, source: &dyn ChunkSource) -> Result<UploadId, ClientError> {
        // One idempotency key for every attempt of this create.
        let client_token = {
            let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
            crate::ids::seeded_id(&mut *rng)
        };
        let body = serde_json::to_vec(&CreateUpload {
            file_name: source.name(),
            file_size_bytes: source.size_bytes(),
            mime_type: None,
            client_token: Some(client_token),
        })
        .map_err(|e| ClientError::Protocol {
            reason: e.to_string(),
        })?;
        let retry = self.config.retry;
        let mut last_error = String::new();
        let started = self.clock.now();
        let mut attempt = 0u32;
        // Transient refusals (memory pressure, slots busy, drive down) are
        // retried until nothing has changed for `stall_limit`.
        while self.clock.now().saturating_sub(started) <= self.config.stall_limit {
            let reply = self.send_create(&body).await;
            let wait_at_least = match reply {
                Ok(reply) if reply.status == StatusCode::CREATED => {
                    let created: UploadCreated =
                        serde_json::from_slice(&reply.body).map_err(|e| ClientError::Protocol {
                            reason: format!("bad create reply: {e}"),
                        })?;
                    return Ok(created.upload_id);
                }
                Ok(reply) if Self::transient_reply(&reply) => {
                    last_error = Self::error_of(&reply).to_string();
                    Self::retry_after(&reply)
                }
                Ok(reply) => return Err(Self::error_of(&reply)),
                Err(NoReply::Fatal(e)) => return Err(e),
                Err(NoReply::Transient(e)) => {
                    last_error = e;
                    Duration::ZERO
                }
            };
            let backoff = self
                .jitter(retry.backoff_ceiling(attempt))
                .max(wait_at_least);
            attempt += 1;
            crate::coverage::hit(crate::coverage::Probe::ClientBackoff);
            self.tracer.record(Event::Backoff {
                what: "create".into(),
                attempt,
                backoff_ms: ms(backoff),
            });
            self.clock.sleep(backoff).await;
        }
        Err(ClientError::GaveUp {
            stalled_ms: ms(self.clock.now().saturating_sub(started)),
            last_error: format!("no upload created after {attempt} attempts: {last_error}"),
        })
    }

    /// One create attempt. Simulation only: the same create (same client
    /// token) may go twice at once; both must name the same upload, and
    /// the first answer that creates one stands.
    async fn send_create(&self, body: &[u8]) -> Result<ClientReply, NoReply> {
        let headers = [("content-type", String::from("application/json"))];
        let post = || {
            self.request(
                Method::POST,
                "/uploads",
                FramesBody::new([Bytes::from(body.to_vec())]),
                &headers,
            )
        };
        if !buggify::fire(Site::ClientDuplicateCreate) {
            return post().await;
        }
        let (first, second) = tokio::join!(post(), post());
        let created = |r: &Result<ClientReply, NoReply>| {
            r.as_ref()
                .ok()
                .filter(|r| r.status == StatusCode::CREATED)
                .and_then(|r| serde_json::from_slice::<UploadCreated>(&r.body).ok())
                .map(|c| c.upload_id)
        };
        match (created(&first), created(&second)) {
            (Some(a), Some(b)) if a != b => Err(NoReply::Transient(format!(
                "one client token created two uploads: {a} and {b}"
            ))),
            (None, Some(_)) => second,
            _ => first,
        }
    }

    async fn status(&self, id: &UploadId) -> Result<UploadStatus, StatusError> {
        let reply = self
            .request(
                Method::GET,
                &format!("/uploads/{id}"),
                FramesBody::empty(),
                &[],
            )
            .await
            .map_err(StatusError::from)?;
        if reply.status == StatusCode::OK {
            return serde_json::from_slice(&reply.body).map_err(|e| {
                StatusError::Fatal(ClientError::Protocol {
                    reason: format!("bad status reply: {e}"),
                })
            });
        }
        if Self::transient(reply.status) {
            return Err(StatusError::Transient(Self::error_of(&reply).to_string()));
        }
        Err(StatusError::Fatal(Self::error_of(&reply)))
    }

    async fn finish(
        self: &Arc<Self>,
        id: &UploadId,
        source: Arc<dyn ChunkSource>,
    ) -> Result<UploadOutcome, ClientError> {
        let mut rounds = 0u32;
        let mut last_progress = self.clock.now();
        let mut last_committed = 0u64;
        let mut last_error = String::from("none");
        let mut quiet_rounds = 0u32;
        loop {
            rounds += 1;
            let stalled = self.clock.now().saturating_sub(last_progress);
            if stalled > self.config.stall_limit {
                return Err(ClientError::GaveUp {
                    stalled_ms: ms(stalled),
                    last_error,
                });
            }
            // 1. What does the backend have?
            let status = match self.status(id).await {
                Ok(s) => s,
                Err(StatusError::Transient(transient)) => {
                    last_error = transient;
                    quiet_rounds += 1;
                    self.back_off("status", quiet_rounds).await;
                    continue;
                }
                Err(StatusError::Fatal(fatal)) => return Err(fatal),
            };
            if status.committed_bytes > last_committed {
                last_committed = status.committed_bytes;
                last_progress = self.clock.now();
                quiet_rounds = 0;
            }
            self.report_progress(&status);
            if let Some(ended) = self.ended(id, &status, rounds) {
                return ended;
            }
            if status.phase == Phase::Resuming {
                self.clock.sleep(self.config.status_poll).await;
                continue;
            }
            // 2. Send what is missing and fits in the window.
            let missing = Self::sendable(&status);
            if missing.is_empty() {
                // Everything is there: the backend is finishing on the drive.
                self.clock.sleep(self.config.status_poll).await;
                continue;
            }
            let (accepted, error) = self.send_round(id, &status, &missing, &source).await?;
            if accepted > 0 {
                last_progress = self.clock.now();
                quiet_rounds = 0;
            } else {
                // 3. Nothing got through: back off before the next round.
                last_error = error.unwrap_or_else(|| "no chunk accepted".into());
                quiet_rounds += 1;
                self.back_off("round", quiet_rounds).await;
            }
        }
    }

    /// How the upload ended, once the status says it has: complete (with
    /// the drive's file) or failed (with the backend's cause).
    fn ended(
        &self,
        id: &UploadId,
        status: &UploadStatus,
        rounds: u32,
    ) -> Option<Result<UploadOutcome, ClientError>> {
        match status.phase {
            Phase::Complete => {
                let Some(file) = status.file.clone() else {
                    return Some(Err(ClientError::Protocol {
                        reason: "complete without a file".into(),
                    }));
                };
                let c = self.counters();
                Some(Ok(UploadOutcome {
                    user: match &self.config.auth {
                        ClientAuth::UserHeader(user) => Some(user.clone()),
                        ClientAuth::Bearer(_) => None,
                    },
                    upload_id: id.clone(),
                    file,
                    chunks_sent: c.chunks_sent,
                    chunk_failures: c.chunk_failures,
                    sent_bytes: c.sent_bytes,
                    rounds,
                    admitted_after_ms: 0,
                }))
            }
            Phase::Failed => {
                let f = status.failure.clone().unwrap_or_else(|| ErrorDetail {
                    status: 500,
                    cause: Cause::Unknown,
                    message: "no failure reported".into(),
                    details: serde_json::Value::Null,
                });
                Some(Err(ClientError::UploadFailed {
                    cause: f.cause,
                    message: f.message,
                }))
            }
            Phase::Resuming | Phase::Receiving => None,
        }
    }

    /// Tells the progress callback, if any, where the upload stands.
    fn report_progress(&self, status: &UploadStatus) {
        if let Some(report) = &self.progress {
            report(Progress {
                committed_bytes: status.committed_bytes,
                sent_bytes: self.counters().sent_bytes,
                total_bytes: status.file_size_bytes,
            });
        }
    }

    /// The chunks the backend lacks that fit in its window now, in order.
    fn sendable(status: &UploadStatus) -> Vec<u32> {
        let window_end = status.chunks_committed.saturating_add(status.window_chunks);
        let mut chunks: Vec<u32> = status
            .missing_chunks()
            .into_iter()
            .filter(|&i| i < window_end)
            .collect();
        // Simulation only: probe the window's edge with the first chunk
        // beyond it, which the backend must refuse (`window_full`).
        if window_end < status.chunk_count && buggify::fire(Site::ClientWindowEdge) {
            chunks.push(window_end);
        }
        chunks
    }

    async fn back_off(&self, what: &str, attempt: u32) {
        let backoff = self.jitter(self.config.retry.backoff_ceiling(attempt.saturating_sub(1)));
        crate::coverage::hit(crate::coverage::Probe::ClientBackoff);
        self.tracer.record(Event::Backoff {
            what: what.into(),
            attempt,
            backoff_ms: ms(backoff),
        });
        self.clock.sleep(backoff).await;
    }

    /// The refusal's cause; [`Cause::Unknown`] if the body names none.
    fn cause(reply: &ClientReply) -> Cause {
        serde_json::from_slice::<ErrorBody>(&reply.body).map_or(Cause::Unknown, |b| b.error.cause)
    }
}
