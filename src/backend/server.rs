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
//!   anything else is told about it;
//! - every peer-controlled quantity is bounded: header bytes (431), header
//!   time ([`ServeOptions::header_read_timeout`]), chunk length declared and
//!   actual, time between body bytes (408), uploads per user (429), file
//!   size (413, admission);
//! - after [`Backend::run_until`]'s shutdown signal no upload is admitted
//!   and no new chunk is taken (503 `shutting_down`); chunks already being
//!   received finish, up to the drain timeout.

use super::api::{
    ChunkAccepted, CreateUpload, ErrorBody, ErrorDetail, Phase, UploadCreated, CHECKSUM_HEADER,
    CLIENT_TOKEN_BYTES_MAX, CREATE_BODY_BYTES_MAX, FILE_NAME_BYTES_MAX, USER_HEADER,
};
use super::breaker::{Breaker, BreakerState};
use super::metrics::{BackendMetrics, GaugeSnapshot, RetryKind, METRICS_CONTENT_TYPE};
use super::store::{RecordPhase, UploadRecord, UploadStore};
use super::upload::{Chunk, Upload, UploadState};
use crate::admission::{Admission, AdmissionError, AdmissionMetrics, AdmissionState, AdmitFailure};
use crate::auth::{authenticate, Auth};
use crate::buggify::{self, Site};
use crate::checksum::{parse_crc32c_hex, Crc32c};
use crate::drive::{DriveClient, DriveError, PieceReply, SessionUri};
use crate::env::{Clock, Listener, Network};
use crate::ids::{os_random_id, IdSource};
use crate::profile::Profile;
use crate::trace::{Event, Tracer};
use crate::user::UserId;
use crate::wire::{json, read_body, Reply, ServeOptions};
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// How late a simulated slow release gives a slot back.
const SLOW_RELEASE_DELAY: Duration = Duration::from_secs(2);
/// Default [`BackendConfig::request_header_bytes_max`]: a chunk request
/// carries a handful of short headers (well under 1 KiB); 16 KiB leaves room
/// for proxies' additions and is a quarter of hyper's hard bound
/// ([`crate::wire::HEADER_BYTES_MAX`]), so oversized blocks in between get a
/// JSON 431 with a reason rather than hyper's bare one.
pub const REQUEST_HEADER_BYTES_MAX_DEFAULT: usize = 16 * 1024;
const _: () = assert!(REQUEST_HEADER_BYTES_MAX_DEFAULT < crate::wire::HEADER_BYTES_MAX);

/// Default [`BackendConfig::chunk_body_idle_timeout`]: longer than any
/// simulated partition (so simulations behave as before) and than a TCP
/// retransmission backoff on a lossy link, short enough that a trickling
/// peer cannot hold a handler for long.
pub const CHUNK_BODY_IDLE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(60);

/// Default [`BackendConfig::drain_timeout`]: an 8 MiB chunk at 10 Mbit/s
/// takes under 7 s.
pub const DRAIN_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);

/// How long `GET /healthz` waits for a TCP connection to the drive.
const DRIVE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How often the drain checks whether in-flight work has finished.
const DRAIN_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// `Retry-After` of a `too_many_uploads` refusal: an upload slot frees when
/// an upload ends, which takes at least seconds.
const TOO_MANY_UPLOADS_RETRY_AFTER: Duration = Duration::from_secs(10);

/// `Retry-After` of a chunk refused while draining: about a restart.
const SHUTTING_DOWN_RETRY_AFTER: Duration = Duration::from_secs(10);

/// Backend settings beyond the profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    /// Admission and retry settings.
    pub profile: Profile,
    /// The drive's base URL, e.g. `http://drive:443`.
    pub drive_base_url: String,
    /// Bearer token for the drive, if it wants one.
    pub drive_token: Option<String>,
    /// A file holding the drive's access token, read again before every
    /// drive request (so an external refresher can rotate it); wins over
    /// `drive_token`. Default `None`.
    pub drive_token_file: Option<PathBuf>,
    /// Largest piece sent to the drive in one PUT. Default 32 MiB.
    pub piece_bytes_max: u64,
    /// An upload with no chunk for this long is failed (client gone).
    /// Default 10 minutes.
    pub upload_idle_timeout: Duration,
    /// Consecutive drive failures that open the breaker. Default 5.
    pub breaker_failures_max: u32,
    /// How long the breaker stays open. Default 30 s.
    pub breaker_cool_down: Duration,
    /// New sessions an upload may start after 404s, in a row without
    /// progress in between, before it fails. Default 3.
    pub session_restarts_max: u32,
    /// Seeds upload ids and backoff jitter.
    pub seed: u64,
    /// Who a request is from. Default [`Auth::UserHeader`].
    pub auth: Auth,
    /// Where upload ids come from. Default [`IdSource::Seeded`] (the
    /// jitter always comes from the seeded RNG).
    pub id_source: IdSource,
    /// Uploads one user may have receiving, resuming or being admitted at
    /// once; one more is refused at once with 429 `too_many_uploads`
    /// instead of queueing. `None`: only admission's slots bound them.
    /// Default `None`.
    pub uploads_per_user_max: Option<u32>,
    /// Largest request header block (request target, names and values)
    /// answered normally; beyond it 431 `header_too_large`. Default
    /// [`REQUEST_HEADER_BYTES_MAX_DEFAULT`].
    pub request_header_bytes_max: usize,
    /// How connections are served (header read timeout, buffer bound,
    /// close grace). Default [`ServeOptions::default`].
    pub serve: ServeOptions,
    /// A chunk body that delivers no byte for this long is refused with
    /// 408 `body_timeout`. Default [`CHUNK_BODY_IDLE_TIMEOUT_DEFAULT`].
    pub chunk_body_idle_timeout: Duration,
    /// On shutdown, how long chunks being received and chunks buffered for
    /// the drive get to finish. Default [`DRAIN_TIMEOUT_DEFAULT`].
    pub drain_timeout: Duration,
}

impl BackendConfig {
    /// Defaults around `profile`.
    pub fn new(profile: Profile, drive_base_url: impl Into<String>, seed: u64) -> Self {
        Self {
            profile,
            drive_base_url: drive_base_url.into(),
            drive_token: None,
            drive_token_file: None,
            piece_bytes_max: 32 * 1024 * 1024,
            upload_idle_timeout: Duration::from_secs(600),
            breaker_failures_max: 5,
            breaker_cool_down: Duration::from_secs(30),
            session_restarts_max: 3,
            seed,
            auth: Auth::UserHeader,
            id_source: IdSource::Seeded,
            uploads_per_user_max: None,
            request_header_bytes_max: REQUEST_HEADER_BYTES_MAX_DEFAULT,
            serve: ServeOptions::default(),
            chunk_body_idle_timeout: CHUNK_BODY_IDLE_TIMEOUT_DEFAULT,
            drain_timeout: DRAIN_TIMEOUT_DEFAULT,
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
    /// `ok`, `degraded` (the drive is unreachable) or `draining`.
    pub status: &'static str,
    /// Whether the drive answers a TCP connection now (only from
    /// `GET /healthz`, which probes it).
    pub drive_link: Option<DriveLink>,
    /// Whether the per-user maps were left out (token mode: `/healthz`
    /// answers without authentication, and they name users).
    pub per_user_redacted: bool,
}

/// The drive probe of `GET /healthz`.
#[derive(Debug, Clone, Serialize)]
pub struct DriveLink {
    /// Whether a TCP connection to the drive opened in time.
    pub reachable: bool,
    /// How long it took (or how long was waited), ms.
    pub probe_ms: u64,
    /// Why not, when not.
    pub error: Option<String>,
}

/// What a drain and shutdown came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShutdownReport {
    /// Whether everything in flight finished before the drain timeout.
    pub drained: bool,
    /// Chunk requests still being received when the server stopped.
    pub chunks_in_flight: u64,
    /// Chunk bytes buffered for the drive when the server stopped (the
    /// clients resend them after the restart).
    pub buffered_bytes: u64,
    /// Upload records written at the end.
    pub uploads_persisted: u64,
}

/// Where a client token stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TokenState {
    /// A create with this token is in progress.
    Pending,
    /// The token created this upload.
    Created(String),
}

type TokenKey = (UserId, String);

/// Holds a create's claim on its token; a create that does not finish
/// gives the claim back when this is dropped.
struct TokenClaim<'a> {
    backend: &'a Backend,
    key: Option<TokenKey>,
}

impl TokenClaim<'_> {
    fn created(mut self, upload_id: &str) {
        if let Some(key) = self.key.take() {
            self.backend
                .tokens()
                .insert(key, TokenState::Created(upload_id.to_owned()));
        }
    }
}

impl Drop for TokenClaim<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.backend.tokens().remove(&key);
        }
    }
}

struct Inner {
    config: BackendConfig,
    env: BackendEnv,
    uploads: Mutex<BTreeMap<String, Arc<Upload>>>,
    /// Client tokens of creates, so a retried create is idempotent.
    tokens: Mutex<BTreeMap<TokenKey, TokenState>>,
    breaker: Mutex<Breaker>,
    rng: Mutex<ChaCha8Rng>,
    metrics: BackendMetrics,
    /// Set once, by the shutdown signal: no new chunk is taken.
    draining: AtomicBool,
    /// Chunk requests between their checks and their end.
    chunks_in_flight: AtomicU64,
    /// Creates between the per-user check and their upload's insertion,
    /// by user. Counted with the live uploads against
    /// `uploads_per_user_max`.
    pending_creates: Mutex<BTreeMap<UserId, u32>>,
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
    /// Add `WWW-Authenticate: Bearer` (a 401 in token mode).
    challenge: bool,
}

impl Refusal {
    fn new(status: StatusCode, cause: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            cause,
            message: message.into(),
            details: serde_json::Value::Null,
            retry_after: None,
            challenge: false,
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
        if self.challenge {
            reply.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"upsim\""),
            );
        }
        reply
    }
}

/// The wire form of an admission failure: a typed refusal's, or a bare
/// one's (only the bug zoo's masked-error mutant fails without a cause).
fn admit_refusal(f: &AdmitFailure) -> Refusal {
    match f {
        AdmitFailure::Refused(e) => admission_refusal(e),
        AdmitFailure::Unexplained => {
            let mut r = Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, f.cause(), f.to_string());
            r.details = serde_json::json!({ "cause": f.cause() });
            r
        }
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

/// Where chunk `index` stands against the upload's window now: already on
/// the drive (`Ok(Some(200))`, nothing to store), inside it (`Ok(None)`),
/// or beyond it (`503 window_full`, `hint` ending the reason).
fn window_check(
    upload: &Upload,
    state: &UploadState,
    index: u32,
    hint: &str,
) -> Result<Option<Reply>, Refusal> {
    let (head, end) = upload.window_bounds(state);
    if index < head {
        return Ok(Some(json(
            StatusCode::OK,
            &ChunkAccepted {
                index,
                already_committed: true,
            },
        )));
    }
    if index >= end {
        return Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "window_full",
            format!("chunk {index} is beyond the reorder window [{head}, {end}){hint}"),
        )
        .retry_after(Duration::from_secs(1)));
    }
    Ok(None)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A create counted against the per-user limit until dropped.
struct PendingCreate {
    backend: Backend,
    user: UserId,
}

impl Drop for PendingCreate {
    fn drop(&mut self) {
        let mut pending = self
            .backend
            .inner
            .pending_creates
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = pending.get_mut(&self.user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                pending.remove(&self.user);
            }
        }
    }
}

/// A chunk request counted as in flight until dropped (however the
/// handler ends, cancellation included).
struct ChunkInFlight<'a> {
    count: &'a AtomicU64,
}

impl<'a> ChunkInFlight<'a> {
    fn new(count: &'a AtomicU64) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self { count }
    }
}

impl Drop for ChunkInFlight<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
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
                tokens: Mutex::new(BTreeMap::new()),
                breaker: Mutex::new(breaker),
                rng: Mutex::new(rng),
                metrics: BackendMetrics::new(),
                draining: AtomicBool::new(false),
                chunks_in_flight: AtomicU64::new(0),
                pending_creates: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// Takes back persisted uploads, then serves `listener` until it fails.
    ///
    /// The accept loop runs in the caller's task (as it always has: a
    /// simulated host's scheduling, and so its trace, depends on it);
    /// [`run_until`](Self::run_until) adds graceful shutdown.
    pub async fn run(self, listener: Box<dyn Listener>) -> io::Result<()> {
        self.resume_persisted();
        let this = self.clone();
        crate::wire::serve_until(
            listener,
            Arc::new(move |req| {
                let this = this.clone();
                async move { this.handle(req).await }
            }),
            self.inner.config.serve.clone(),
            std::future::pending(),
        )
        .await
    }

    /// Takes back persisted uploads, then serves `listener` until it fails
    /// or `shutdown` completes. Then, in order:
    /// 1. stops admitting: creates and new chunks get 503 `shutting_down`
    ///    with `Retry-After` (status, health and metrics still answer);
    /// 2. waits, at most [`BackendConfig::drain_timeout`], for the chunks
    ///    being received to arrive and for the buffered ones that continue
    ///    the committed prefix to reach the drive (chunks behind a gap
    ///    cannot; their clients resend them after the restart);
    /// 3. stops accepting and closes every connection after the request it
    ///    is in;
    /// 4. writes every upload's record once more, and returns what was
    ///    left undone.
    ///
    /// Committed work was persisted as it happened; step 4 only makes sure
    /// the last word is on disk.
    pub async fn run_until<S>(
        self,
        listener: Box<dyn Listener>,
        shutdown: S,
    ) -> io::Result<ShutdownReport>
    where
        S: Future<Output = ()> + Send,
    {
        self.resume_persisted();
        let this = self.clone();
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let mut serving = tokio::spawn(crate::wire::serve_until(
            listener,
            Arc::new(move |req| {
                let this = this.clone();
                async move { this.handle(req).await }
            }),
            self.inner.config.serve.clone(),
            async move {
                // An error means the sender is gone: stop as well.
                let _ = stop_rx.wait_for(|stop| *stop).await;
            },
        ));
        let serve_error = |e: tokio::task::JoinError| io::Error::other(e.to_string());
        tokio::select! {
            biased;
            served = &mut serving => {
                served.map_err(serve_error)??;
                return Ok(self.shutdown_report(true, 0));
            }
            () = shutdown => {}
        }
        // 1. Stop admitting.
        tracing::info!(
            drain_timeout_ms = ms(self.inner.config.drain_timeout),
            "backend: shutting down: no new uploads or chunks; draining"
        );
        self.inner.draining.store(true, Ordering::Release);
        self.inner.env.admission.begin_shutdown();
        // 2. Drain, bounded.
        let clock = self.inner.env.clock.clone();
        let deadline = clock.now() + self.inner.config.drain_timeout;
        let drained = loop {
            let in_flight = self.inner.chunks_in_flight.load(Ordering::Acquire);
            let buffered = self.flushable_bytes();
            if in_flight == 0 && buffered == 0 {
                break true;
            }
            if clock.now() >= deadline {
                tracing::warn!(
                    chunks_in_flight = in_flight,
                    buffered_bytes = buffered,
                    "backend: drain timeout reached"
                );
                break false;
            }
            clock.sleep(DRAIN_POLL_INTERVAL).await;
        };
        // 3. Stop serving. An error means the server already stopped.
        let _ = stop_tx.send(true);
        serving.await.map_err(serve_error)??;
        // 4. The last word on disk.
        let report = self.shutdown_report(drained, self.persist_all());
        tracing::info!(?report, "backend: stopped");
        Ok(report)
    }

    fn shutdown_report(&self, drained: bool, uploads_persisted: u64) -> ShutdownReport {
        ShutdownReport {
            drained,
            chunks_in_flight: self.inner.chunks_in_flight.load(Ordering::Acquire),
            buffered_bytes: self.buffered_bytes(),
            uploads_persisted,
        }
    }

    /// Chunk bytes buffered in receiving uploads' windows.
    fn buffered_bytes(&self) -> u64 {
        let uploads: Vec<Arc<Upload>> = self.uploads().values().cloned().collect();
        uploads
            .iter()
            .map(|u| Upload::buffered_bytes(&u.lock()))
            .sum()
    }

    /// Buffered bytes the committers can still send: each receiving
    /// upload's contiguous run from its committed offset.
    fn flushable_bytes(&self) -> u64 {
        let uploads: Vec<Arc<Upload>> = self.uploads().values().cloned().collect();
        uploads
            .iter()
            .filter_map(|u| {
                let state = u.lock();
                if state.phase != Phase::Receiving {
                    return None;
                }
                u.next_piece(&state, u64::MAX).map(|(_, _, len)| len)
            })
            .sum()
    }

    /// Writes every upload's record; returns how many were written.
    fn persist_all(&self) -> u64 {
        let uploads: Vec<Arc<Upload>> = self.uploads().values().cloned().collect();
        for upload in &uploads {
            self.persist(upload);
        }
        uploads.len() as u64
    }

    fn uploads(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Upload>>> {
        self.inner
            .uploads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn tokens(&self) -> std::sync::MutexGuard<'_, BTreeMap<TokenKey, TokenState>> {
        self.inner
            .tokens
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

    /// The health report, without probing the drive.
    pub fn health(&self) -> Health {
        let mut uploads = BTreeMap::new();
        for u in self.uploads().values() {
            let phase = format!("{:?}", u.lock().phase).to_lowercase();
            *uploads.entry(phase).or_insert(0) += 1;
        }
        let draining = self.inner.draining.load(Ordering::Acquire);
        Health {
            admission: self.inner.env.admission.state(),
            metrics: self.inner.env.admission.metrics(),
            drive: self.breaker().state(),
            uploads,
            status: if draining { "draining" } else { "ok" },
            drive_link: None,
            per_user_redacted: false,
        }
    }

    /// The health report with a drive probe (a TCP connection, bounded by
    /// [`DRIVE_PROBE_TIMEOUT`]). Always answered with 200: an unreachable
    /// drive makes the backend `degraded` (uploads in flight wait and
    /// retry), not dead, so a liveness check must not restart it.
    pub async fn health_probed(&self) -> Health {
        let clock = &self.inner.env.clock;
        let started = clock.now();
        let probe = clock
            .timeout(DRIVE_PROBE_TIMEOUT, self.drive_client().probe())
            .await;
        let probe_ms = ms(clock.now().saturating_sub(started));
        let error = match probe {
            Some(Ok(())) => None,
            Some(Err(e)) => Some(e.to_string()),
            None => Some(format!(
                "no connection within {} ms",
                ms(DRIVE_PROBE_TIMEOUT)
            )),
        };
        let mut health = self.health();
        if error.is_some() && health.status == "ok" {
            health.status = "degraded";
        }
        health.drive_link = Some(DriveLink {
            reachable: error.is_none(),
            probe_ms,
            error,
        });
        health
    }

    /// What `GET /healthz` answers anyone: [`health_probed`](Self::health_probed),
    /// less the per-user figures when requests are authenticated (they
    /// name users and what they uploaded today; the totals stay).
    async fn health_public(&self) -> Health {
        let mut health = self.health_probed().await;
        if matches!(self.inner.config.auth, Auth::Tokens(_)) {
            health.admission.ledger.user_in_use.clear();
            health.admission.ledger.quota_charged.clear();
            health.per_user_redacted = true;
        }
        health
    }

    /// `GET /metrics`: the Prometheus text rendering.
    pub fn metrics_text(&self) -> String {
        let admission = self.inner.env.admission.state();
        let uploads: Vec<Arc<Upload>> = self.uploads().values().cloned().collect();
        let mut gauges = GaugeSnapshot {
            global_slots_in_use: u64::from(admission.ledger.global_in_use),
            user_slots_in_use_max: admission
                .ledger
                .user_in_use
                .values()
                .copied()
                .max()
                .map_or(0, u64::from),
            admission_waiting: u64::from(admission.ledger.waiting),
            reserved_bytes: admission.ledger.reserved_bytes,
            chunks_in_flight: self.inner.chunks_in_flight.load(Ordering::Acquire),
            draining: u64::from(self.inner.draining.load(Ordering::Acquire)),
            ..GaugeSnapshot::default()
        };
        for u in &uploads {
            let state = u.lock();
            if matches!(state.phase, Phase::Receiving | Phase::Resuming) {
                gauges.active_uploads += 1;
            }
            gauges.buffered_bytes += Upload::buffered_bytes(&state);
        }
        self.inner.metrics.render(gauges)
    }

    fn metrics_reply(&self) -> Reply {
        let mut reply = Response::new(Full::new(Bytes::from(self.metrics_text())));
        reply.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(METRICS_CONTENT_TYPE),
        );
        reply
    }

    /// Routes one request.
    pub async fn handle(&self, req: Request<Incoming>) -> Reply {
        let header_bytes = crate::wire::request_header_bytes(&req);
        let header_bytes_max = self.inner.config.request_header_bytes_max;
        if header_bytes > header_bytes_max {
            let mut r = Refusal::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "header_too_large",
                format!(
                    "the request's target and headers take {header_bytes} bytes; the limit is {header_bytes_max}"
                ),
            );
            r.details = serde_json::json!({
                "header_bytes": header_bytes,
                "header_bytes_max": header_bytes_max,
            });
            return r.reply();
        }
        let path = req.uri().path().to_owned();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let result = match (req.method().clone(), segments.as_slice()) {
            (Method::GET, ["healthz"]) => Ok(json(StatusCode::OK, &self.health_public().await)),
            (Method::GET, ["metrics"]) => Ok(self.metrics_reply()),
            (Method::POST, ["uploads"]) => self.create(req).await,
            (Method::GET, ["uploads", id]) => self.get_status(&req, id),
            (Method::DELETE, ["uploads", id]) => self.abort(&req, id),
            (Method::PUT, ["uploads", id, "chunks", index]) => {
                let (id, index) = ((*id).to_owned(), (*index).to_owned());
                self.put_chunk(req, &id, &index).await
            }
            (
                _,
                ["healthz"]
                | ["metrics"]
                | ["uploads"]
                | ["uploads", _]
                | ["uploads", _, "chunks", _],
            ) => Err(Refusal::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{} is not allowed on {path}", req.method()),
            )),
            _ => Err(Refusal::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no route {path}"),
            )),
        };
        result.unwrap_or_else(Refusal::reply)
    }

    /// Who sent `req`, as [`BackendConfig::auth`] says to tell.
    fn user(&self, req: &Request<Incoming>) -> Result<UserId, Refusal> {
        match &self.inner.config.auth {
            Auth::UserHeader => Self::user_header(req),
            Auth::Tokens(table) => authenticate(table, req.headers()).cloned().map_err(|e| {
                let mut r =
                    Refusal::new(StatusCode::UNAUTHORIZED, "unauthenticated", e.to_string());
                r.challenge = true;
                r
            }),
        }
    }

    fn user_header(req: &Request<Incoming>) -> Result<UserId, Refusal> {
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

    fn new_id(&self) -> Result<String, Refusal> {
        match self.inner.config.id_source {
            IdSource::Seeded => {
                let mut rng = self
                    .inner
                    .rng
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                Ok(format!(
                    "{:016x}{:016x}",
                    rng.random::<u64>(),
                    rng.random::<u64>()
                ))
            }
            IdSource::Os => os_random_id().map_err(|e| {
                Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "id_source_failed",
                    e.to_string(),
                )
                .retry_after(Duration::from_secs(1))
            }),
        }
    }

    /// Counts a create of `user` against
    /// [`BackendConfig::uploads_per_user_max`]; the returned guard holds
    /// its place until the upload is in the table (or the create fails).
    fn reserve_create(&self, user: &UserId) -> Result<PendingCreate, Refusal> {
        let mut pending = self
            .inner
            .pending_creates
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(limit) = self.inner.config.uploads_per_user_max {
            let uploads: Vec<Arc<Upload>> = self
                .uploads()
                .values()
                .filter(|u| &u.user == user)
                .cloned()
                .collect();
            let live = uploads
                .iter()
                .filter(|u| matches!(u.lock().phase, Phase::Receiving | Phase::Resuming))
                .count() as u64;
            let being_admitted = u64::from(pending.get(user).copied().unwrap_or(0));
            if live + being_admitted >= u64::from(limit) {
                let mut r = Refusal::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_uploads",
                    format!(
                        "{user} has {live} uploads in progress and {being_admitted} being admitted; the limit is {limit} at once"
                    ),
                )
                .retry_after(TOO_MANY_UPLOADS_RETRY_AFTER);
                r.details = serde_json::json!({
                    "uploads_in_progress": live,
                    "uploads_being_admitted": being_admitted,
                    "uploads_per_user_max": limit,
                });
                return Err(r);
            }
        }
        *pending.entry(user.clone()).or_insert(0) += 1;
        Ok(PendingCreate {
            backend: self.clone(),
            user: user.clone(),
        })
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
        let user = self.user(&req)?;
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
        // An idempotent retry: the same token gets the same upload.
        let mut claim = TokenClaim {
            backend: self,
            key: None,
        };
        if let Some(token) = &create.client_token {
            let token_ok = !token.is_empty()
                && token.len() <= CLIENT_TOKEN_BYTES_MAX
                && token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !token_ok {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!(
                        "client_token must be 1 to {CLIENT_TOKEN_BYTES_MAX} of A-Z a-z 0-9 _ -"
                    ),
                ));
            }
            let key = (user.clone(), token.clone());
            let existing = self.tokens().get(&key).cloned();
            match existing {
                Some(TokenState::Created(id)) => {
                    let upload = self.find(&id, &user)?;
                    return Ok(json(
                        StatusCode::CREATED,
                        &UploadCreated {
                            upload_id: id,
                            chunk_size_bytes: upload.chunk_size_bytes,
                            chunk_count: upload.chunk_count,
                        },
                    ));
                }
                Some(TokenState::Pending) => {
                    return Err(Refusal::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "create_in_progress",
                        "a create with this client_token is still in progress",
                    )
                    .retry_after(Duration::from_secs(1)))
                }
                None => {
                    self.tokens().insert(key.clone(), TokenState::Pending);
                    claim.key = Some(key);
                }
            }
        }
        let pending = self.reserve_create(&user).inspect_err(|r| {
            self.inner.metrics.refused(r.cause);
        })?;
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
            self.inner.metrics.refused(r.cause);
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
                self.inner.metrics.refused(e.cause());
                return Err(admit_refusal(&e));
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
                self.inner.metrics.refused("drive_unavailable");
                return Err(drive_refusal(&e)); // drops the slot
            }
        };
        let id = self
            .new_id()
            .inspect_err(|r| self.inner.metrics.refused(r.cause))?;
        let memory_bytes = slot.memory_bytes();
        let slot_waited = slot.waited();
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
        let upload = Arc::new(
            Upload::new(
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
            )
            .with_client_token(create.client_token.clone()),
        );
        self.persist(&upload);
        self.uploads().insert(id.clone(), upload.clone());
        claim.created(&id);
        // In the table now, where the per-user count sees it.
        drop(pending);
        self.inner.metrics.admitted(slot_waited);
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
        let user = self.user(req)?;
        let upload = self.find(id, &user)?;
        Ok(json(StatusCode::OK, &upload.status()))
    }

    fn abort(&self, req: &Request<Incoming>, id: &str) -> Result<Reply, Refusal> {
        let user = self.user(req)?;
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
        let _in_flight = ChunkInFlight::new(&self.inner.chunks_in_flight);
        let user = self.user(&req)?;
        let upload = self.find(id, &user)?;
        if self.inner.draining.load(Ordering::Acquire) {
            return Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the backend is shutting down: send this chunk again after it restarts",
            )
            .retry_after(SHUTTING_DOWN_RETRY_AFTER));
        }
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
            if let Some(reply) =
                window_check(&upload, &state, index, ": send earlier chunks first")?
            {
                return Ok(reply);
            }
        }
        // The body, frame by frame, checksummed as it arrives, bounded by
        // the declared (and expected) length.
        let mut body = req.into_body();
        let mut frames = Vec::new();
        let mut crc = Crc32c::default();
        let mut received = 0u64;
        let idle_timeout = self.inner.config.chunk_body_idle_timeout;
        loop {
            let Some(next) = self
                .inner
                .env
                .clock
                .timeout(idle_timeout, body.frame())
                .await
            else {
                let mut r = Refusal::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    format!(
                        "chunk {index}: no body byte for {} ms after {received} of {expected_len} bytes",
                        ms(idle_timeout)
                    ),
                );
                r.details = serde_json::json!({
                    "received_bytes": received,
                    "expected_bytes": expected_len,
                    "idle_timeout_ms": ms(idle_timeout),
                });
                return Err(r);
            };
            let Some(frame) = next else { break };
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
            // Within a session the window only moves forward, but a new
            // drive session (after a 404) starts it again from chunk 0: a
            // chunk that was inside the window when its body started may be
            // beyond it now. It is refused like any chunk beyond the window.
            if let Some(reply) =
                window_check(&upload, &state, index, " (the drive session restarted)")?
            {
                return Ok(reply);
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
        self.inner.metrics.received(expected_len);
        upload.wake.notify_one();
        let mut reply = json(
            StatusCode::OK,
            &ChunkAccepted {
                index,
                already_committed: false,
            },
        );
        if buggify::fire(Site::BackendChunkReplyLost) {
            // Simulation only: stored, but the client never hears so.
            reply.extensions_mut().insert(crate::wire::DropReply);
        }
        Ok(reply)
    }

    fn drive_client(&self) -> DriveClient {
        let config = &self.inner.config;
        match &config.drive_token_file {
            Some(path) => DriveClient::with_token_file(
                self.inner.env.drive_net.clone(),
                &config.drive_base_url,
                path.clone(),
            ),
            None => DriveClient::new(
                self.inner.env.drive_net.clone(),
                &config.drive_base_url,
                config.drive_token.clone(),
            ),
        }
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
        let slot = match slot {
            // Simulation only: the slot is given back late, as a slow
            // cleanup path would; admission must cope with the wait.
            Some(late) if buggify::fire(Site::BackendSlowRelease) => {
                let (clock, complete) = (
                    self.inner.env.clock.clone(),
                    matches!(ending, Ending::Complete),
                );
                tokio::spawn(async move {
                    clock.sleep(SLOW_RELEASE_DELAY).await;
                    if complete {
                        late.complete();
                    }
                });
                None
            }
            other => other,
        };
        match ending {
            Ending::Complete => {
                self.inner.metrics.ended("complete");
                if let Some(slot) = slot {
                    slot.complete();
                }
            }
            Ending::Failed(r) => {
                self.inner.metrics.ended("failed");
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
                            if held_bytes > state.committed_bytes {
                                // Progress: the failure and session-loss
                                // budgets count failures in a row without
                                // progress, not in all. (A status query that
                                // answers while every PUT fails is not
                                // progress.)
                                restarts = 0;
                                failures = 0;
                            }
                            self.inner
                                .metrics
                                .committed(held_bytes - state.committed_bytes);
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
                        self.inner.metrics.committed(
                            upload.file_size_bytes.saturating_sub(state.committed_bytes),
                        );
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
                    self.inner.metrics.retry(RetryKind::DrivePiece);
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
        self.inner.metrics.retry(RetryKind::DriveSession);
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
            let upload = Arc::new(
                self.upload_from(&record)
                    .with_client_token(record.client_token.clone()),
            );
            if let Some(token) = &record.client_token {
                self.tokens().insert(
                    (record.user.clone(), token.clone()),
                    TokenState::Created(record.upload_id.clone()),
                );
            }
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
                    self.inner.metrics.retry(RetryKind::ResumeAdmission);
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
                    self.inner.metrics.refused(e.cause());
                    self.end(&upload, Ending::Failed(admit_refusal(&e)));
                    return;
                }
            }
        };
        self.inner.metrics.admitted(slot.waited());
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
