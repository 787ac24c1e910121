//! [`Backend`]: the shared state every handler and committer reads, and the
//! serve loop with its graceful shutdown.
//!
//! The backend's other rooms each live in their own file (see
//! [`backend`](super)); this one holds what they share.
//!
//! Invariants (see also `upload.rs`):
//! - an upload holds its `UploadSlot` from admission until it ends
//!   (complete, failed, aborted, idle client), and the slot is released
//!   exactly once, by being completed or dropped;
//! - every refusal is a 4xx/5xx with an [`ErrorBody`](crate::chunk_api::ErrorBody)
//!   naming the cause and its numbers; nothing a peer sends can panic a
//!   handler;
//! - every change of drive session or committed offset is persisted before
//!   anything else is told about it;
//! - every peer-controlled quantity is bounded: header bytes (431), header
//!   time ([`ServeOptions::header_read_timeout`](crate::wire::ServeOptions)),
//!   chunk length declared and actual, time between body bytes (408),
//!   uploads per user (429), file size (413, admission);
//! - after [`Backend::run_until`]'s shutdown signal no upload is admitted
//!   and no new chunk is taken (503 `shutting_down`); chunks already being
//!   received finish, up to the drain timeout.

use super::breaker::Breaker;
use super::config::{BackendConfig, BackendConfigError, BackendEnv};
use super::create::{TokenKey, TokenState};
use super::metrics::BackendMetrics;
use super::upload::Upload;
use crate::chunk_api::Phase;
use crate::drive::{AccessTokens, DriveClient};
use crate::env::Listener;
use crate::ids::UploadId;
use crate::trace::Event;
use crate::user::UserId;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// How often the drain checks whether in-flight work has finished.
const DRAIN_POLL_INTERVAL: Duration = Duration::from_millis(50);

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

/// What every handler and committer shares.
pub(super) struct Inner {
    pub(super) config: BackendConfig,
    pub(super) env: BackendEnv,
    pub(super) uploads: Mutex<BTreeMap<UploadId, Arc<Upload>>>,
    /// Client tokens of creates, so a retried create is idempotent.
    pub(super) tokens: Mutex<BTreeMap<TokenKey, TokenState>>,
    pub(super) breaker: Mutex<Breaker>,
    pub(super) rng: Mutex<ChaCha8Rng>,
    pub(super) metrics: BackendMetrics,
    /// Set once, by the shutdown signal: no new chunk is taken.
    pub(super) draining: AtomicBool,
    /// Chunk requests between their checks and their end.
    pub(super) chunks_in_flight: AtomicU64,
    /// Creates between the per-user check and their upload's insertion,
    /// by user. Counted with the live uploads against
    /// `uploads_per_user_max`.
    pub(super) pending_creates: Mutex<BTreeMap<UserId, u32>>,
    /// Ended uploads still in `uploads`, in the order they ended, with the
    /// clock time each ended; at most
    /// [`BackendConfig::ended_uploads_retained_max`] (see `retention`).
    pub(super) ended: Mutex<VecDeque<(Duration, UploadId)>>,
    /// Told about every window decision, once attached (see `observer`).
    pub(super) observer: std::sync::OnceLock<Arc<dyn super::observer::WindowObserver>>,
    /// The drive's access tokens, when the config has OAuth credentials:
    /// one holder for every upload, so one refresh serves them all.
    pub(super) access_tokens: Option<Arc<AccessTokens>>,
    /// Open event streams, bounded (see `events`).
    pub(super) event_streams: Arc<super::events::EventStreams>,
    /// Events tokens issued, bounded (see `events`).
    pub(super) event_tokens: super::events::EventTokens,
    /// Turns true once, at the shutdown signal: open event streams end
    /// (their readers reconnect to the next process), so that they do not
    /// hold the server's close for its grace period.
    pub(super) closing: tokio::sync::watch::Sender<bool>,
    /// tus uploads created with their length deferred, not admitted yet
    /// (see `tus/deferred.rs`).
    pub(super) tus_deferred: super::tus::DeferredTable,
}

/// The backend. Cheap to clone.
#[derive(Clone)]
pub struct Backend {
    pub(super) inner: Arc<Inner>,
}

impl Backend {
    /// A backend; call [`Backend::run`] to serve.
    ///
    /// # Panics
    /// If `config` does not [validate](BackendConfig::validate); use
    /// [`try_new`](Self::try_new) for a configuration built from user
    /// input.
    pub fn new(config: BackendConfig, env: BackendEnv) -> Self {
        match Self::try_new(config, env) {
            Ok(backend) => backend,
            Err(e) => panic!("Backend::new: invalid BackendConfig: {e}"),
        }
    }

    /// A backend, if `config` [validates](BackendConfig::validate).
    ///
    /// # Errors
    /// The first thing wrong with `config`.
    pub fn try_new(config: BackendConfig, env: BackendEnv) -> Result<Self, BackendConfigError> {
        config.validate()?;
        let breaker = Breaker::new(config.breaker_failures_max, config.breaker_cool_down);
        let rng = ChaCha8Rng::seed_from_u64(config.seed);
        let access_tokens = match &config.drive_credentials {
            Some(credentials) => Some(Arc::new(AccessTokens::new(
                env.drive_net.clone(),
                env.clock.clone(),
                credentials.clone(),
                config.drive_tls.clone(),
            )?)),
            None => None,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                env,
                uploads: Mutex::new(BTreeMap::new()),
                tokens: Mutex::new(BTreeMap::new()),
                breaker: Mutex::new(breaker),
                rng: Mutex::new(rng),
                metrics: BackendMetrics::new(),
                draining: AtomicBool::new(false),
                chunks_in_flight: AtomicU64::new(0),
                pending_creates: Mutex::new(BTreeMap::new()),
                ended: Mutex::new(VecDeque::new()),
                observer: std::sync::OnceLock::new(),
                access_tokens,
                event_streams: super::events::EventStreams::new(
                    config.events.streams_max,
                    config.events.streams_per_user_max,
                ),
                event_tokens: super::events::EventTokens::new(config.events.tokens_max),
                closing: tokio::sync::watch::Sender::new(false),
                config,
                tus_deferred: super::tus::DeferredTable::default(),
            }),
        })
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
    ///    with `Retry-After` (status, health and metrics still answer), and
    ///    ends the open event streams (readers reconnect after `retry:`);
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
        self.inner.closing.send_replace(true);
        // 2. Drain, bounded.
        let drained = self.drain().await;
        // 3. Stop serving. An error means the server already stopped.
        let _ = stop_tx.send(true);
        serving.await.map_err(serve_error)??;
        // 4. The last word on disk.
        let report = self.shutdown_report(drained, self.persist_all());
        tracing::info!(?report, "backend: stopped");
        Ok(report)
    }

    /// Waits, at most [`BackendConfig::drain_timeout`], until no chunk is
    /// being received and nothing flushable is buffered; whether it got
    /// there.
    pub(super) async fn drain(&self) -> bool {
        let clock = self.inner.env.clock.clone();
        let deadline = clock.now() + self.inner.config.drain_timeout;
        loop {
            let in_flight = self.inner.chunks_in_flight.load(Ordering::Acquire);
            let buffered = self.flushable_bytes();
            if in_flight == 0 && buffered == 0 {
                return true;
            }
            if clock.now() >= deadline {
                tracing::warn!(
                    chunks_in_flight = in_flight,
                    buffered_bytes = buffered,
                    "backend: drain timeout reached"
                );
                return false;
            }
            clock.sleep(DRAIN_POLL_INTERVAL).await;
        }
    }

    pub(super) fn shutdown_report(&self, drained: bool, uploads_persisted: u64) -> ShutdownReport {
        ShutdownReport {
            drained,
            chunks_in_flight: self.inner.chunks_in_flight.load(Ordering::Acquire),
            buffered_bytes: self.buffered_bytes(),
            uploads_persisted,
        }
    }

    /// Chunk bytes buffered in receiving uploads' windows.
    pub(super) fn buffered_bytes(&self) -> u64 {
        let uploads: Vec<Arc<Upload>> = self.uploads().values().cloned().collect();
        uploads
            .iter()
            .map(|u| Upload::buffered_bytes(&u.lock()))
            .sum()
    }

    /// Buffered bytes the committers can still send: each receiving
    /// upload's contiguous run from its committed offset.
    pub(super) fn flushable_bytes(&self) -> u64 {
        let uploads: Vec<Arc<Upload>> = self.uploads().values().cloned().collect();
        uploads
            .iter()
            .filter_map(|u| {
                let state = u.lock();
                // A partial tus upload's bytes wait for a final upload,
                // not for a committer.
                let partial = u.tus.as_ref().is_some_and(|t| t.is_partial());
                if state.phase != Phase::Receiving || partial {
                    return None;
                }
                u.next_piece(&state, u64::MAX).map(|(_, _, len)| len)
            })
            .sum()
    }

    /// Writes every upload's record; returns how many were written.
    pub(super) fn persist_all(&self) -> u64 {
        let uploads: Vec<Arc<Upload>> = self.uploads().values().cloned().collect();
        uploads.iter().filter(|u| self.persist(u)).count() as u64
    }

    pub(super) fn uploads(&self) -> MutexGuard<'_, BTreeMap<UploadId, Arc<Upload>>> {
        self.inner
            .uploads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn tokens(&self) -> MutexGuard<'_, BTreeMap<TokenKey, TokenState>> {
        self.inner
            .tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn breaker(&self) -> MutexGuard<'_, Breaker> {
        self.inner
            .breaker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn now(&self) -> Duration {
        self.inner.env.clock.now()
    }

    pub(super) fn trace(&self, event: Event) {
        self.inner.env.tracer.record(event);
    }

    pub(super) fn jitter(&self, ceiling: Duration) -> Duration {
        let mut rng = self
            .inner
            .rng
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Duration::from_millis(rng.random_range(0..=ms(ceiling)))
    }

    /// Writes `upload`'s record, then tells its event streams; whether it
    /// has a record to write.
    pub(super) fn persist(&self, upload: &Upload) -> bool {
        if upload.tus.as_ref().is_some_and(|t| t.is_partial()) {
            // A partial tus upload lives in memory only: nothing of it is
            // on the drive until a final upload sends it.
            return false;
        }
        if let Err(e) = self.inner.env.store.save(&upload.record()) {
            // A store failure is logged and surfaces in health; the upload
            // goes on (the drive is authoritative on resume).
            tracing::error!(upload = %upload.id, error = %e, "persisting an upload failed");
        }
        upload.publish(&upload.lock());
        true
    }

    pub(super) fn drive_client(&self) -> DriveClient {
        let config = &self.inner.config;
        let client = if let Some(tokens) = &self.inner.access_tokens {
            DriveClient::with_access_tokens(
                self.inner.env.drive_net.clone(),
                &config.drive_base_url,
                tokens.clone(),
            )
        } else {
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
        };
        let client = client.with_file_digest(config.file_digest);
        match &config.drive_tls {
            Some(tls) => client.with_tls(tls.clone()),
            None => client,
        }
    }
}

pub(super) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
