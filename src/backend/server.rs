//! The backend: the chunk API's handlers, admission at upload creation, the
//! committer task of each upload, and resumption after a restart.
//!
//! Invariants (see also [`upload`](super::upload)):
//! - an upload holds its `UploadSlot` from admission until it ends
//!   (complete, failed, aborted, idle client), and the slot is released
//!   exactly once, by being completed or dropped;
//! - every refusal is a 4xx/5xx with an [`ErrorBody`] naming the cause and
//!   its numbers; nothing a peer sends can panic a handler;
//! - every change of drive session or committed offset is persisted before
//!   anything else is told about it.

use super::api::{
    ChunkAccepted, CreateUpload, ErrorBody, ErrorDetail, Phase, UploadCreated, CHECKSUM_HEADER,
    CREATE_BODY_BYTES_MAX, FILE_NAME_BYTES_MAX, USER_HEADER,
};
use super::breaker::{Breaker, BreakerState};
use super::store::{RecordPhase, UploadRecord, UploadStore};
use super::upload::{Chunk, Upload, UploadState};
use crate::admission::{Admission, AdmissionError, AdmissionMetrics, AdmissionState};
use crate::checksum::{parse_crc32c_hex, Crc32c};
use crate::drive::{DriveClient, DriveError, PieceReply, SessionUri};
use crate::env::{Clock, Listener, Network};
use crate::profile::Profile;
use crate::trace::{Event, Tracer};
use crate::user::UserId;
use crate::wire::{json, read_body, Reply};
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Backend settings beyond the profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    /// Admission and retry settings.
    pub profile: Profile,
    /// The drive's base URL, e.g. `http://drive:443`.
    pub drive_base_url: String,
    /// Bearer token for the drive, if it wants one.
    pub drive_token: Option<String>,
    /// Largest piece sent to the drive in one PUT. Default 32 MiB.
    pub piece_bytes_max: u64,
    /// An upload with no chunk for this long is failed (client gone).
    /// Default 10 minutes.
    pub upload_idle_timeout: Duration,
    /// Consecutive drive failures that open the breaker. Default 5.
    pub breaker_failures_max: u32,
    /// How long the breaker stays open. Default 30 s.
    pub breaker_cool_down: Duration,
    /// New sessions an upload may start after 404s before it fails.
    /// Default 3.
    pub session_restarts_max: u32,
    /// Seeds upload ids and backoff jitter.
    pub seed: u64,
}

impl BackendConfig {
    /// Defaults around `profile`.
    pub fn new(profile: Profile, drive_base_url: impl Into<String>, seed: u64) -> Self {
        Self {
            profile,
            drive_base_url: drive_base_url.into(),
            drive_token: None,
            piece_bytes_max: 32 * 1024 * 1024,
            upload_idle_timeout: Duration::from_secs(600),
            breaker_failures_max: 5,
            breaker_cool_down: Duration::from_secs(30),
            session_restarts_max: 3,
            seed,
        }
    }
}

/// What the backend runs on.
#[derive(Clone)]
pub struct BackendEnv {
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// The network to the drive (shaped in simulation).
    pub drive_net: Arc<dyn Network>,
    /// Admission.
    pub admission: Arc<dyn Admission>,
    /// Persistence.
    pub store: Arc<dyn UploadStore>,
    /// The trace (off in real mode).
    pub tracer: Tracer,
}

/// `GET /healthz`.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// Slots, reservations, waiters.
    pub admission: AdmissionState,
    /// Outcomes since start.
    pub metrics: AdmissionMetrics,
    /// The drive link's breaker.
    pub drive: BreakerState,
    /// Uploads in memory by phase.
    pub uploads: BTreeMap<String, u32>,
}

struct Inner {
    config: BackendConfig,
    env: BackendEnv,
    uploads: Mutex<BTreeMap<String, Arc<Upload>>>,
    breaker: Mutex<Breaker>,
    rng: Mutex<ChaCha8Rng>,
}

/// The backend. Cheap to clone.
#[derive(Clone)]
pub struct Backend {
    inner: Arc<Inner>,
}

/// A refusal on its way to the wire.
struct Refusal {
    status: StatusCode,
    cause: &'static str,
    message: String,
    details: serde_json::Value,
    retry_after: Option<Duration>,
}

impl Refusal {
    fn new(status: StatusCode, cause: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            cause,
            message: message.into(),
            details: serde_json::Value::Null,
            retry_after: None,
        }
    }

    fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    fn detail(&self) -> ErrorDetail {
        ErrorDetail {
            status: self.status.as_u16(),
            cause: self.cause.to_owned(),
            message: self.message.clone(),
            details: self.details.clone(),
        }
    }

    fn reply(self) -> Reply {
        let mut reply = json(
            self.status,
            &ErrorBody {
                error: self.detail(),
            },
        );
        if let Some(after) = self.retry_after {
            let secs = after.as_secs().max(1).to_string();
            if let Ok(value) = HeaderValue::from_str(&secs) {
                reply.headers_mut().insert(http::header::RETRY_AFTER, value);
            }
        }
        reply
    }
}

/// The wire form of an admission refusal.
fn admission_refusal(e: &AdmissionError) -> Refusal {
    let (status, retry_after) = match e {
        AdmissionError::EmptyFile => (StatusCode::BAD_REQUEST, None),
        AdmissionError::FileTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, None),
        AdmissionError::UnknownUser { .. } => (StatusCode::FORBIDDEN, None),
        AdmissionError::QuotaExceeded { .. } => (StatusCode::TOO_MANY_REQUESTS, None),
        AdmissionError::MemoryPressure { .. } | AdmissionError::MemoryProbe { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            Some(Duration::from_secs(5)),
        ),
        AdmissionError::SlotsBusy { .. } | AdmissionError::QueueFull { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            Some(Duration::from_secs(1)),
        ),
        AdmissionError::ShuttingDown => (
            StatusCode::SERVICE_UNAVAILABLE,
            Some(Duration::from_secs(10)),
        ),
        // Only the bug zoo's masked-error mutant returns it.
        AdmissionError::Unexplained => (StatusCode::INTERNAL_SERVER_ERROR, None),
    };
    let mut r = Refusal::new(status, e.cause(), e.to_string());
    r.details = serde_json::to_value(e).unwrap_or_default();
    r.retry_after = retry_after;
    r
}

fn drive_refusal(e: &DriveError) -> Refusal {
    Refusal::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "drive_unavailable",
        format!("drive unavailable: {e}"),
    )
    .retry_after(Duration::from_secs(5))
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Why the committer stopped an upload.
enum Ending {
    Complete,
    Failed(Refusal),
    /// Someone else ended it (abort); nothing to do.
    Gone,
}

impl Backend {
    /// A backend; call [`Backend::run`] to serve.
    pub fn new(config: BackendConfig, env: BackendEnv) -> Self {
        let breaker = Breaker::new(config.breaker_failures_max, config.breaker_cool_down);
        let rng = ChaCha8Rng::seed_from_u64(config.seed);
        Self {
            inner: Arc::new(Inner {
                config,
                env,
                uploads: Mutex::new(BTreeMap::new()),
                breaker: Mutex::new(breaker),
                rng: Mutex::new(rng),
            }),
        }
    }

    /// Takes back persisted uploads, then serves `listener` until it fails.
    pub async fn run(self, listener: Box<dyn Listener>) -> io::Result<()> {
        self.resume_persisted();
        let this = self.clone();
        crate::wire::serve(
            listener,
            Arc::new(move |req| {
                let this = this.clone();
                async move { this.handle(req).await }
            }),
        )
        .await
    }

    fn uploads(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Upload>>> {
        self.inner
            .uploads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.inner
            .breaker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn now(&self) -> Duration {
        self.inner.env.clock.now()
    }

    fn trace(&self, event: Event) {
        self.inner.env.tracer.record(event);
    }

    /// The health report.
    pub fn health(&self) -> Health {
        let mut uploads = BTreeMap::new();
        for u in self.uploads().values() {
            let phase = format!("{:?}", u.lock().phase).to_lowercase();
            *uploads.entry(phase).or_insert(0) += 1;
        }
        Health {
            admission: self.inner.env.admission.state(),
            metrics: self.inner.env.admission.metrics(),
            drive: self.breaker().state(),
            uploads,
        }
    }

    /// Routes one request.
    pub async fn handle(&self, req: Request<Incoming>) -> Reply {
        let path = req.uri().path().to_owned();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let result = match (req.method().clone(), segments.as_slice()) {
            (Method::GET, ["healthz"]) => Ok(json(StatusCode::OK, &self.health())),
            (Method::POST, ["uploads"]) => self.create(req).await,
            (Method::GET, ["uploads", id]) => self.get_status(&req, id),
            (Method::DELETE, ["uploads", id]) => self.abort(&req, id),
            (Method::PUT, ["uploads", id, "chunks", index]) => {
                let (id, index) = ((*id).to_owned(), (*index).to_owned());
                self.put_chunk(req, &id, &index).await
            }
            (_, ["healthz"] | ["uploads"] | ["uploads", _] | ["uploads", _, "chunks", _]) => {
                Err(Refusal::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    format!("{} is not allowed on {path}", req.method()),
                ))
            }
            _ => Err(Refusal::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no route {path}"),
            )),
        };
        result.unwrap_or_else(Refusal::reply)
    }

    fn user(req: &Request<Incoming>) -> Result<UserId, Refusal> {
        let header = req.headers().get(USER_HEADER).ok_or_else(|| {
            Refusal::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                format!("missing {USER_HEADER} header"),
            )
        })?;
        let text = header.to_str().map_err(|_| {
            Refusal::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "user header is not ASCII",
            )
        })?;
        UserId::new(text)
            .map_err(|e| Refusal::new(StatusCode::UNAUTHORIZED, "unauthenticated", e.to_string()))
    }

    /// The upload `id` of `user`; another user's upload is reported as
    /// missing (its existence is not revealed).
    fn find(&self, id: &str, user: &UserId) -> Result<Arc<Upload>, Refusal> {
        let found = self.uploads().get(id).cloned();
        match found {
            Some(u) if &u.user == user => Ok(u),
            _ => Err(Refusal::new(
                StatusCode::NOT_FOUND,
                "unknown_upload",
                format!("no upload {id:?}"),
            )),
        }
    }

    fn new_id(&self) -> String {
        let mut rng = self
            .inner
            .rng
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        format!("{:016x}{:016x}", rng.random::<u64>(), rng.random::<u64>())
    }

    fn jitter(&self, ceiling: Duration) -> Duration {
        let mut rng = self
            .inner
            .rng
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Duration::from_millis(rng.random_range(0..=ms(ceiling)))
    }

    fn persist(&self, upload: &Upload) {
        if let Err(e) = self.inner.env.store.save(&upload.record()) {
            // A store failure is logged and surfaces in health; the upload
            // goes on (the drive is authoritative on resume).
            tracing::error!(upload = %upload.id, error = %e, "persisting an upload failed");
        }
    }

    async fn create(&self, req: Request<Incoming>) -> Result<Reply, Refusal> {
        let user = Self::user(&req)?;
        let body = read_body(req.into_body(), CREATE_BODY_BYTES_MAX)
            .await
            .map_err(|e| Refusal::new(StatusCode::PAYLOAD_TOO_LARGE, "bad_request", e))?;
        let create: CreateUpload = serde_json::from_slice(&body).map_err(|e| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("invalid create body: {e}"),
            )
        })?;
        let name_ok = !create.file_name.is_empty()
            && create.file_name.len() <= FILE_NAME_BYTES_MAX
            && !create.file_name.chars().any(|c| c == '/' || c.is_control());
        if !name_ok {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("file_name must be 1 to {FILE_NAME_BYTES_MAX} bytes without '/' or control characters"),
            ));
        }
        if let Err(unavailable) = self.breaker().admit(self.now()) {
            let r = Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "drive_unavailable",
                format!(
                    "drive unavailable: {} consecutive drive failures; new uploads refused for {} ms",
                    unavailable.consecutive_failures,
                    ms(unavailable.retry_after)
                ),
            )
            .retry_after(unavailable.retry_after);
            self.trace(Event::Refused {
                user: user.to_string(),
                cause: r.cause.into(),
            });
            return Err(r);
        }
        let slot = match self
            .inner
            .env
            .admission
            .admit(user.clone(), create.file_size_bytes)
            .await
        {
            Ok(slot) => slot,
            Err(e) => {
                self.trace(Event::Refused {
                    user: user.to_string(),
                    cause: e.cause().into(),
                });
                return Err(admission_refusal(&e));
            }
        };
        let mime_type = create
            .mime_type
            .unwrap_or_else(|| "application/octet-stream".into());
        let drive = self.drive_client();
        let session = match drive
            .initiate(&create.file_name, &mime_type, create.file_size_bytes)
            .await
        {
            Ok(s) => {
                self.breaker().success();
                s
            }
            Err(e) => {
                self.breaker().failure(self.now());
                self.trace(Event::Refused {
                    user: user.to_string(),
                    cause: "drive_unavailable".into(),
                });
                return Err(drive_refusal(&e)); // drops the slot
            }
        };
        let id = self.new_id();
        let memory_bytes = slot.memory_bytes();
        self.trace(Event::Admitted {
            upload: id.clone(),
            user: user.to_string(),
            file_size_bytes: create.file_size_bytes,
            memory_bytes,
            wait_ms: ms(slot.waited()),
        });
        self.trace(Event::DriveSession {
            upload: id.clone(),
            generation: 0,
        });
        let chunk_size_bytes = self.inner.config.profile.chunk_size_bytes;
        let upload = Arc::new(Upload::new(
            id.clone(),
            user,
            create.file_name,
            mime_type,
            create.file_size_bytes,
            chunk_size_bytes,
            memory_bytes,
            self.inner.config.profile.reorder_window_chunks_max,
            UploadState {
                phase: Phase::Receiving,
                committed_bytes: 0,
                window: BTreeMap::new(),
                slot: Some(slot),
                session: Some(session),
                session_generation: 0,
                last_activity: self.now(),
                file: None,
                failure: None,
            },
        ));
        self.persist(&upload);
        self.uploads().insert(id.clone(), upload.clone());
        self.spawn_committer(upload.clone(), drive);
        Ok(json(
            StatusCode::CREATED,
            &UploadCreated {
                upload_id: id,
                chunk_size_bytes,
                chunk_count: upload.chunk_count,
            },
        ))
    }

    fn get_status(&self, req: &Request<Incoming>, id: &str) -> Result<Reply, Refusal> {
        let user = Self::user(req)?;
        let upload = self.find(id, &user)?;
        Ok(json(StatusCode::OK, &upload.status()))
    }

    fn abort(&self, req: &Request<Incoming>, id: &str) -> Result<Reply, Refusal> {
        let user = Self::user(req)?;
        let upload = self.find(id, &user)?;
        let aborted = Refusal::new(
            StatusCode::GONE,
            "aborted",
            "the upload was aborted by its owner",
        );
        self.end(&upload, Ending::Failed(aborted));
        Ok(json(StatusCode::OK, &upload.status()))
    }

    async fn put_chunk(
        &self,
        req: Request<Incoming>,
        id: &str,
        index: &str,
    ) -> Result<Reply, Refusal> {
        let user = Self::user(&req)?;
        let upload = self.find(id, &user)?;
        let bad = |cause: &'static str, message: String| {
            Refusal::new(StatusCode::BAD_REQUEST, cause, message)
        };
        let index: u32 = index.parse().map_err(|_| {
            bad(
                "bad_chunk_index",
                format!("chunk index {index:?} is not a number"),
            )
        })?;
        if index >= upload.chunk_count {
            return Err(Refusal::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "bad_chunk_index",
                format!(
                    "chunk {index} is beyond the last chunk ({})",
                    upload.chunk_count - 1
                ),
            ));
        }
        let expected_len = upload.chunk_len(index);
        let declared = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| {
                Refusal::new(
                    StatusCode::LENGTH_REQUIRED,
                    "length_required",
                    "chunks need a Content-Length",
                )
            })?;
        if declared != expected_len {
            let status = if declared > expected_len {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            };
            return Err(Refusal::new(
                status,
                "bad_chunk_length",
                format!(
                    "chunk {index} must be {expected_len} bytes; Content-Length says {declared}"
                ),
            ));
        }
        let checksum_text = req
            .headers()
            .get(CHECKSUM_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| bad("bad_checksum", format!("missing {CHECKSUM_HEADER} header")))?;
        let expected_crc =
            parse_crc32c_hex(checksum_text).map_err(|e| bad("bad_checksum", e.to_string()))?;
        // Phase and window, before reading a byte of the body.
        {
            let state = upload.lock();
            match state.phase {
                Phase::Receiving => {}
                Phase::Resuming => {
                    return Err(Refusal::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "resuming",
                        "the backend is taking this upload back after a restart",
                    )
                    .retry_after(Duration::from_secs(1)))
                }
                Phase::Complete => {
                    return Err(Refusal::new(
                        StatusCode::CONFLICT,
                        "upload_complete",
                        "the upload is already complete",
                    ))
                }
                Phase::Failed => {
                    let mut r =
                        Refusal::new(StatusCode::GONE, "upload_failed", "the upload has failed");
                    if let Some(f) = &state.failure {
                        r.message = format!("the upload has failed: {}", f.message);
                    }
                    return Err(r);
                }
            }
            let (head, end) = upload.window_bounds(&state);
            if index < head {
                return Ok(json(
                    StatusCode::OK,
                    &ChunkAccepted {
                        index,
                        already_committed: true,
                    },
                ));
            }
            if index >= end {
                return Err(Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "window_full",
                    format!("chunk {index} is beyond the reorder window [{head}, {end}): send earlier chunks first"),
                )
                .retry_after(Duration::from_secs(1)));
            }
        }
        // The body, frame by frame, checksummed as it arrives, bounded by
        // the declared (and expected) length.
        let mut body = req.into_body();
        let mut frames = Vec::new();
        let mut crc = Crc32c::default();
        let mut received = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                bad(
                    "body_incomplete",
                    format!("chunk {index}: body broke off after {received} bytes: {e}"),
                )
            })?;
            if let Ok(data) = frame.into_data() {
                received += data.len() as u64;
                if received > expected_len {
                    return Err(bad(
                        "bad_chunk_length",
                        format!("chunk {index}: body longer than {expected_len} bytes"),
                    ));
                }
                crc.update(&data);
                frames.push(data);
            }
        }
        if received != expected_len {
            return Err(bad(
                "bad_chunk_length",
                format!("chunk {index}: body has {received} bytes, {expected_len} declared"),
            ));
        }
        if crc.value() != expected_crc {
            self.trace(Event::ChunkFailed {
                upload: upload.id.clone(),
                index,
                reason: "checksum_mismatch".into(),
            });
            return Err(bad(
                "checksum_mismatch",
                format!(
                    "chunk {index}: CRC-32C of the body is {:08x}, the header says {expected_crc:08x}",
                    crc.value()
                ),
            ));
        }
        {
            let mut state = upload.lock();
            if state.phase != Phase::Receiving {
                return Err(Refusal::new(
                    StatusCode::CONFLICT,
                    "upload_ended",
                    "the upload ended while the chunk arrived",
                ));
            }
            let (head, end) = upload.window_bounds(&state);
            if index < head {
                return Ok(json(
                    StatusCode::OK,
                    &ChunkAccepted {
                        index,
                        already_committed: true,
                    },
                ));
            }
            // Within a session the window only moves forward, but a new
            // drive session (after a 404) starts it again from chunk 0: a
            // chunk that was inside the window when its body started may be
            // beyond it now. It is refused like any chunk beyond the window.
            if index >= end {
                return Err(Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "window_full",
                    format!("chunk {index} is beyond the reorder window [{head}, {end}) (the drive session restarted)"),
                )
                .retry_after(Duration::from_secs(1)));
            }
            state.window.insert(index, Chunk { frames });
            state.last_activity = self.now();
            debug_assert!(
                Upload::buffered_bytes(&state)
                    <= u64::from(upload.window_chunks) * upload.chunk_size_bytes
            );
        }
        self.trace(Event::ChunkStored {
            upload: upload.id.clone(),
            index,
        });
        upload.wake.notify_one();
        Ok(json(
            StatusCode::OK,
            &ChunkAccepted {
                index,
                already_committed: false,
            },
        ))
    }

    fn drive_client(&self) -> DriveClient {
        DriveClient::new(
            self.inner.env.drive_net.clone(),
            &self.inner.config.drive_base_url,
            self.inner.config.drive_token.clone(),
        )
    }

    fn spawn_committer(&self, upload: Arc<Upload>, drive: DriveClient) {
        let this = self.clone();
        tokio::spawn(async move {
            let ending = this.commit_loop(&upload, &drive, false).await;
            this.end(&upload, ending);
        });
    }

    /// Ends an upload once: releases its slot (completed or dropped), drops
    /// its window, persists, wakes its committer.
    fn end(&self, upload: &Upload, ending: Ending) {
        let slot = {
            let mut state = upload.lock();
            if matches!(state.phase, Phase::Complete | Phase::Failed) {
                return;
            }
            state.window.clear();
            match &ending {
                Ending::Complete => state.phase = Phase::Complete,
                Ending::Failed(r) => {
                    state.phase = Phase::Failed;
                    state.failure = Some(r.detail());
                }
                Ending::Gone => return,
            }
            state.slot.take()
        };
        match ending {
            Ending::Complete => {
                if let Some(slot) = slot {
                    slot.complete();
                }
            }
            Ending::Failed(r) => {
                drop(slot);
                self.trace(Event::UploadFailed {
                    upload: upload.id.clone(),
                    cause: r.cause.into(),
                });
                tracing::warn!(upload = %upload.id, cause = r.cause, reason = %r.message, "upload failed");
            }
            Ending::Gone => {}
        }
        self.persist(upload);
        upload.wake.notify_one();
    }

    /// The committer (see the module docs of [`upload`](super::upload)).
    async fn commit_loop(
        &self,
        upload: &Upload,
        drive: &DriveClient,
        start_with_status: bool,
    ) -> Ending {
        let config = &self.inner.config;
        let clock = &self.inner.env.clock;
        let retry = config.profile.retry;
        let request_timeout = Duration::from_millis(config.profile.drive_request_timeout_ms);
        let mut failures = 0u32;
        let mut restarts = 0u32;
        let mut need_status = start_with_status;
        loop {
            // 0. Ended by someone else (abort)?
            let (session, piece) = {
                let state = upload.lock();
                if state.phase != Phase::Receiving {
                    return Ending::Gone;
                }
                let Some(session) = state.session.clone() else {
                    return Ending::Failed(Refusal::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "no_session",
                        "no drive session",
                    ));
                };
                let piece = if need_status {
                    None
                } else {
                    upload.next_piece(&state, config.piece_bytes_max)
                };
                (session, piece)
            };
            // 1. Ask the drive, or send the next piece, or wait for a chunk.
            let reply = if need_status {
                clock
                    .timeout(
                        request_timeout,
                        drive.status(&session, upload.file_size_bytes),
                    )
                    .await
            } else if let Some((first_byte, frames, len)) = piece {
                self.trace(Event::DrivePiece {
                    upload: upload.id.clone(),
                    first_byte,
                    end_byte: first_byte + len,
                });
                clock
                    .timeout(
                        request_timeout,
                        drive.put_piece(&session, first_byte, frames, upload.file_size_bytes),
                    )
                    .await
            } else {
                let idle = {
                    let state = upload.lock();
                    clock.now().saturating_sub(state.last_activity)
                };
                if idle >= config.upload_idle_timeout {
                    return Ending::Failed(Refusal::new(
                        StatusCode::GONE,
                        "client_gone",
                        format!(
                            "no chunk for {} ms (idle limit {} ms)",
                            ms(idle),
                            ms(config.upload_idle_timeout)
                        ),
                    ));
                }
                tokio::select! {
                    biased;
                    () = upload.wake.notified() => {}
                    () = clock.sleep(config.upload_idle_timeout - idle) => {}
                }
                continue;
            };
            let reply = reply.unwrap_or_else(|| {
                Err(DriveError::Io {
                    reason: format!("no reply within {} ms", ms(request_timeout)),
                })
            });
            // 2. Believe only the drive's answer.
            match reply {
                Ok(PieceReply::Incomplete { held_bytes }) => {
                    self.breaker().success();
                    failures = 0;
                    need_status = false;
                    self.trace(Event::DriveHeld {
                        upload: upload.id.clone(),
                        held_bytes,
                    });
                    let regressed = {
                        let mut state = upload.lock();
                        if held_bytes < state.committed_bytes || held_bytes > upload.file_size_bytes
                        {
                            true
                        } else {
                            upload.commit(&mut state, held_bytes);
                            false
                        }
                    };
                    if regressed {
                        // The drive lost bytes it had acknowledged: the
                        // upload cannot continue in this session.
                        if let Some(ending) = self
                            .restart_session(upload, drive, &mut restarts, "drive regressed")
                            .await
                        {
                            return ending;
                        }
                        continue;
                    }
                    self.persist(upload);
                }
                Ok(PieceReply::Complete(file)) => {
                    self.breaker().success();
                    if file.size_bytes != upload.file_size_bytes {
                        return Ending::Failed(Refusal::new(
                            StatusCode::BAD_GATEWAY,
                            "drive_size_mismatch",
                            format!(
                                "the drive finished a {}-byte file; {} were uploaded",
                                file.size_bytes, upload.file_size_bytes
                            ),
                        ));
                    }
                    self.trace(Event::UploadComplete {
                        upload: upload.id.clone(),
                        size_bytes: file.size_bytes,
                        checksum: file.crc64nvme.clone(),
                    });
                    {
                        let mut state = upload.lock();
                        state.committed_bytes = upload.file_size_bytes;
                        state.file = Some(file);
                    }
                    return Ending::Complete;
                }
                Err(DriveError::SessionGone { .. }) | Err(DriveError::Rejected { .. }) => {
                    self.breaker().failure(clock.now());
                    if let Some(ending) = self
                        .restart_session(upload, drive, &mut restarts, "session gone")
                        .await
                    {
                        return ending;
                    }
                    need_status = false;
                }
                Err(e) => {
                    // Retryable (5xx, 429, I/O, timeout) or a protocol
                    // violation: back off, then ask what the drive holds.
                    self.breaker().failure(clock.now());
                    self.trace(Event::DriveError {
                        upload: upload.id.clone(),
                        error: e.to_string(),
                    });
                    failures += 1;
                    if failures >= retry.attempts_max {
                        return Ending::Failed(Refusal::new(
                            StatusCode::BAD_GATEWAY,
                            "drive_failed",
                            format!("drive failed {failures} times in a row; last: {e}"),
                        ));
                    }
                    let backoff = self.jitter(retry.backoff_ceiling(failures - 1));
                    self.trace(Event::Backoff {
                        what: format!("drive:{}", upload.id),
                        attempt: failures,
                        backoff_ms: ms(backoff),
                    });
                    clock.sleep(backoff).await;
                    need_status = true;
                }
            }
        }
    }

    /// Starts a new drive session from byte zero. Returns an ending if the
    /// upload cannot go on.
    async fn restart_session(
        &self,
        upload: &Upload,
        drive: &DriveClient,
        restarts: &mut u32,
        why: &str,
    ) -> Option<Ending> {
        *restarts += 1;
        if *restarts > self.inner.config.session_restarts_max {
            return Some(Ending::Failed(Refusal::new(
                StatusCode::BAD_GATEWAY,
                "drive_session_lost",
                format!("drive session lost {} times ({why}); giving up", *restarts),
            )));
        }
        let clock = &self.inner.env.clock;
        let retry = self.inner.config.profile.retry;
        let timeout = Duration::from_millis(self.inner.config.profile.drive_request_timeout_ms);
        for attempt in 0..retry.attempts_max {
            let started = clock
                .timeout(
                    timeout,
                    drive.initiate(&upload.file_name, &upload.mime_type, upload.file_size_bytes),
                )
                .await;
            match started {
                Some(Ok(session)) => {
                    self.breaker().success();
                    let generation = {
                        let mut state = upload.lock();
                        state.session = Some(session);
                        state.session_generation += 1;
                        state.committed_bytes = 0;
                        state.window.clear();
                        state.session_generation
                    };
                    self.trace(Event::DriveSession {
                        upload: upload.id.clone(),
                        generation,
                    });
                    self.persist(upload);
                    return None;
                }
                other => {
                    self.breaker().failure(clock.now());
                    let reason = match other {
                        Some(Err(e)) => e.to_string(),
                        _ => "no reply".into(),
                    };
                    self.trace(Event::DriveError {
                        upload: upload.id.clone(),
                        error: reason,
                    });
                    let backoff = self.jitter(retry.backoff_ceiling(attempt));
                    clock.sleep(backoff).await;
                }
            }
        }
        Some(Ending::Failed(Refusal::new(
            StatusCode::BAD_GATEWAY,
            "drive_failed",
            format!("no new drive session after {} attempts", retry.attempts_max),
        )))
    }

    /// Takes back every persisted upload still receiving: each gets its
    /// slot again (waiting out transient refusals), learns from the drive
    /// what it holds, and goes on.
    fn resume_persisted(&self) {
        let records = match self.inner.env.store.load_all() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot load persisted uploads");
                return;
            }
        };
        for record in records {
            let upload = Arc::new(self.upload_from(&record));
            self.uploads()
                .insert(record.upload_id.clone(), upload.clone());
            if record.phase == RecordPhase::Receiving {
                let this = self.clone();
                tokio::spawn(async move { this.resume(upload, record).await });
            }
        }
    }

    fn upload_from(&self, record: &UploadRecord) -> Upload {
        let (phase, file, failure) = match &record.phase {
            RecordPhase::Receiving => (Phase::Resuming, None, None),
            RecordPhase::Complete { file } => (Phase::Complete, Some(file.clone()), None),
            RecordPhase::Failed { failure } => (Phase::Failed, None, Some(failure.clone())),
        };
        let memory_bytes = self
            .inner
            .config
            .profile
            .memory_per_upload
            .required_bytes(record.file_size_bytes, record.chunk_size_bytes);
        Upload::new(
            record.upload_id.clone(),
            record.user.clone(),
            record.file_name.clone(),
            record.mime_type.clone(),
            record.file_size_bytes,
            record.chunk_size_bytes,
            memory_bytes,
            self.inner.config.profile.reorder_window_chunks_max,
            UploadState {
                phase,
                committed_bytes: record.committed_bytes,
                window: BTreeMap::new(),
                slot: None,
                session: record
                    .drive_session
                    .as_deref()
                    .and_then(|s| SessionUri::parse(s).ok()),
                session_generation: record.session_generation,
                last_activity: self.now(),
                file,
                failure,
            },
        )
    }

    async fn resume(&self, upload: Arc<Upload>, record: UploadRecord) {
        let clock = &self.inner.env.clock;
        let retry = self.inner.config.profile.retry;
        // 1. A slot again (the old one died with the old process).
        let mut attempt = 0u32;
        let started = clock.now();
        let slot = loop {
            match self
                .inner
                .env
                .admission
                .admit(upload.user.clone(), upload.file_size_bytes)
                .await
            {
                Ok(slot) => break slot,
                Err(e)
                    if e.is_transient()
                        && clock.now() - started < self.inner.config.upload_idle_timeout =>
                {
                    let backoff = self.jitter(retry.backoff_ceiling(attempt.min(16)));
                    attempt += 1;
                    self.trace(Event::Backoff {
                        what: format!("resume:{}", upload.id),
                        attempt,
                        backoff_ms: ms(backoff),
                    });
                    clock.sleep(backoff).await;
                }
                Err(e) => {
                    self.trace(Event::Refused {
                        user: upload.user.to_string(),
                        cause: e.cause().into(),
                    });
                    self.end(&upload, Ending::Failed(admission_refusal(&e)));
                    return;
                }
            }
        };
        {
            let mut state = upload.lock();
            state.slot = Some(slot);
            state.phase = Phase::Receiving;
            state.last_activity = clock.now();
        }
        self.trace(Event::Resumed {
            upload: upload.id.clone(),
            committed_bytes: record.committed_bytes,
        });
        // 2. The committer starts by asking the drive what it holds (the
        //    drive may hold more than was persisted, never less).
        let drive = self.drive_client();
        let this = self.clone();
        let upload_for_task = upload.clone();
        tokio::spawn(async move {
            let ending = this.commit_loop_resumed(&upload_for_task, &drive).await;
            this.end(&upload_for_task, ending);
        });
    }

    /// The committer of a resumed upload: it first asks the drive what it
    /// holds (the drive may hold more than was persisted, never less), or
    /// starts a session if none was persisted.
    async fn commit_loop_resumed(&self, upload: &Upload, drive: &DriveClient) -> Ending {
        let has_session = upload.lock().session.is_some();
        if has_session {
            return self.commit_loop(upload, drive, true).await;
        }
        let mut restarts = 0;
        if let Some(ending) = self
            .restart_session(upload, drive, &mut restarts, "no session persisted")
            .await
        {
            return ending;
        }
        self.commit_loop(upload, drive, false).await
    }
}
