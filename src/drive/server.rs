//! The Drive resumable-upload emulator: HTTP/1.1 over any [`Listener`].
//!
//! Routes (everything else: 404 for a path, 405 for a method):
//! - `POST /upload/drive/v3/files?uploadType=resumable`: initiate; `200` with
//!   `Location: {public_base_url}/upload/drive/v3/files?uploadType=resumable&upload_id={id}`;
//! - `PUT` to that URI with `Content-Range: bytes first-last/total`: a piece;
//!   with `bytes */total` and no body: a status query. Unfinished: `308`
//!   with `Range: bytes=0-N` (absent when nothing is held); finished: `200`
//!   with the file resource.
//!
//! # Implementation Details
//!
//! A PUT runs in three steps:
//! 1. Under the state lock: fire an armed fault, look the session up (expired
//!    → 404), check the piece against the protocol ([`plan_piece`]) and check
//!    the session's storage handle out.
//! 2. Without the lock: stream the body frame by frame through a
//!    [`PieceIntake`] into storage, committing whole 256 KiB units as they
//!    fill (taking the lock briefly per unit to advance the session's offset
//!    and the commit log).
//! 3. Under the lock again: give the handle back and answer `308`, or, when
//!    the last byte is held, finish the file and answer `200`.
//!
//! Step 2 runs in a task of its own (`tokio::spawn`), so a connection that
//! breaks mid-piece never cancels a storage write halfway: hyper drops the
//! request's future, the task sees the body end and gives the handle back.
//! A body that stalls longer than `piece_idle_timeout` is treated as broken,
//! because a partitioned turmoil link drops segments silently and would
//! otherwise hold the session forever.
//!
//! In real mode ([`DriveServer::open`] with a [`SessionJournal`]) every
//! session is journalled when it is initiated and when it finishes, and
//! [`DriveServer::restore`] brings the sessions back after a restart, each
//! holding what its partial file holds. With [`DriveConfig::access_tokens`]
//! every request needs `Authorization: Bearer TOKEN` (401 otherwise), and a
//! session answers only the user whose token initiated it (404 to anyone
//! else, as for an unknown session).
//!
//! Limits on what a peer controls: the header block (431 with a reason
//! beyond [`DriveConfig::request_header_bytes_max`]; hyper's bare 431 beyond
//! its buffer), the time to send headers ([`DriveConfig::serve`]), the
//! metadata body ([`METADATA_BYTES_MAX`]), the piece size (413), the time
//! between body bytes (`piece_idle_timeout`), and live sessions (429).
//!
//! Invariants: no peer input reaches an `unwrap`, an index or unchecked
//! arithmetic; every 4xx/5xx has a JSON error body naming its numbers; every
//! request body of an accepted size is read to its end (or its break) before
//! answering, so keep-alive connections stay in step.

use super::control::{discard_all, DriveControl};
use super::journal::{JournalError, SessionJournal, SessionRecord};
use super::protocol::{
    format_error_body, format_file_resource, format_range, parse_content_range, parse_decimal_u64,
    parse_metadata, parse_upload_query, ContentRange, FileResource, UploadQuery, FILE_KIND,
    RATE_LIMIT_REASON, UPLOAD_PATH, UPLOAD_TYPE_RESUMABLE,
};
use super::session::{
    plan_piece, reconcile_total, Lookup, PieceIntake, PiecePlan, Session, SessionState,
};
use super::storage::{Storage, StorageHandle};
use crate::auth::{authenticate, TokenTable};
use crate::buggify::{self, Site};
use crate::env::{Clock, Listener};
use crate::ids::IdSource;
use crate::units::{DRIVE_CHUNK_ALIGN_BYTES, KIB, MIB};
use crate::user::UserId;
use crate::wire::ServeOptions;
use bytes::Bytes;
use http::header::{HeaderName, ALLOW, CONNECTION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use serde::{Deserialize, Serialize};
use std::fmt::Display;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// Largest initiation (metadata) body: Drive's metadata is a few hundred
/// bytes; anything near this is abuse.
pub const METADATA_BYTES_MAX: u64 = 64 * KIB;

/// Most sessions alive at once; initiations beyond answer 429. Bounds the
/// table (each open session holds a storage handle).
pub const LIVE_SESSIONS_MAX: usize = 65_536;

/// `308 Resume Incomplete`: Google's meaning of 308 in this protocol.
const RESUME_INCOMPLETE: StatusCode = StatusCode::PERMANENT_REDIRECT;
const RESUME_INCOMPLETE_REASON: &[u8] = b"Resume Incomplete";

const X_UPLOAD_CONTENT_LENGTH: HeaderName = HeaderName::from_static("x-upload-content-length");
const X_UPLOAD_CONTENT_TYPE: HeaderName = HeaderName::from_static("x-upload-content-type");
const JSON_CONTENT_TYPE: &str = "application/json; charset=UTF-8";

/// Name of a file whose metadata gives none (Drive's default).
const DEFAULT_FILE_NAME: &str = "Untitled";
/// MIME type of a file whose metadata and headers give none.
const DEFAULT_MIME_TYPE: &str = "application/octet-stream";

/// The emulator's knobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DriveConfig {
    /// Scheme, host and port that session URIs start with. Default `http://drive:8080`.
    pub public_base_url: String,
    /// A session idle longer than this is gone (404). Default 7 days.
    pub session_ttl: Duration,
    /// Largest piece accepted; larger ones answer 413. Default 256 MiB.
    pub piece_size_bytes_max: u64,
    /// A piece body that delivers nothing for this long is treated as broken. Default 60 s.
    pub piece_idle_timeout: Duration,
    /// Seed of the ChaCha8 RNG that upload and file ids come from. Default 0.
    pub seed: u64,
    /// Where upload and file ids come from. Default [`IdSource::Seeded`];
    /// real mode uses [`IdSource::Os`]: a session URI is a capability, and
    /// ids must not repeat after a restart.
    pub id_source: IdSource,
    /// Bearer tokens accepted and the users they stand for; `None`: no
    /// authentication (simulation). Default `None`. Never serialised:
    /// tokens come from a token file.
    #[serde(skip)]
    pub access_tokens: Option<TokenTable>,
    /// Largest request header block (target, names and values) answered
    /// normally; beyond it 431. Default 16 KiB.
    pub request_header_bytes_max: usize,
    /// How connections are served (header read timeout, buffer bound,
    /// close grace). Default: hyper's buffer bound, no header timeout, as
    /// the simulations have always run. Not serialised.
    #[serde(skip, default = "drive_serve_options")]
    pub serve: ServeOptions,
}

/// Default [`DriveConfig::request_header_bytes_max`]: Drive requests carry
/// a few headers; an OAuth token is under 2 KiB.
pub const DRIVE_REQUEST_HEADER_BYTES_MAX_DEFAULT: usize = 16 * KIB as usize;

/// The emulator's default [`ServeOptions`]: hyper's own buffer bound (what
/// the simulations ran with before the options existed).
fn drive_serve_options() -> ServeOptions {
    ServeOptions {
        buf_bytes_max: None,
        ..ServeOptions::default()
    }
}

impl Default for DriveConfig {
    fn default() -> Self {
        Self {
            public_base_url: "http://drive:8080".to_owned(),
            session_ttl: Duration::from_secs(7 * 24 * 60 * 60),
            piece_size_bytes_max: 256 * MIB,
            piece_idle_timeout: Duration::from_secs(60),
            seed: 0,
            id_source: IdSource::Seeded,
            access_tokens: None,
            request_header_bytes_max: DRIVE_REQUEST_HEADER_BYTES_MAX_DEFAULT,
            serve: drive_serve_options(),
        }
    }
}

/// A [`DriveConfig`] that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriveConfigError {
    /// Pieces could never carry a whole unit.
    #[error("piece_size_bytes_max {piece_size_bytes_max} is below the {align_bytes}-byte unit every piece but the last must be a multiple of")]
    PieceLimitBelowUnit {
        /// The configured limit.
        piece_size_bytes_max: u64,
        /// The unit.
        align_bytes: u64,
    },
    /// A zero duration would expire or break everything at once.
    #[error("{field} is zero")]
    ZeroDuration {
        /// Which field.
        field: &'static str,
    },
    /// The base URL is not `http://host:port`-like.
    #[error("public_base_url {given:?} does not start with http:// or https://")]
    BadBaseUrl {
        /// What was configured.
        given: String,
    },
}

impl DriveConfig {
    /// Checks the knobs hold together.
    pub fn validate(&self) -> Result<(), DriveConfigError> {
        if self.piece_size_bytes_max < DRIVE_CHUNK_ALIGN_BYTES {
            return Err(DriveConfigError::PieceLimitBelowUnit {
                piece_size_bytes_max: self.piece_size_bytes_max,
                align_bytes: DRIVE_CHUNK_ALIGN_BYTES,
            });
        }
        for (field, value) in [
            ("session_ttl", self.session_ttl),
            ("piece_idle_timeout", self.piece_idle_timeout),
        ] {
            if value.is_zero() {
                return Err(DriveConfigError::ZeroDuration { field });
            }
        }
        let url = &self.public_base_url;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(DriveConfigError::BadBaseUrl { given: url.clone() });
        }
        Ok(())
    }
}

/// The emulator. Build it, keep its [`control`](Self::control), then
/// [`serve`](Self::serve) a listener.
pub struct DriveServer {
    inner: Arc<Inner>,
}

/// What [`DriveServer::restore`] found in the journal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RestoreReport {
    /// Open sessions taken back, with their bytes.
    pub open_sessions: u64,
    /// Bytes those sessions hold.
    pub held_bytes: u64,
    /// Finished sessions taken back (they answer with their file).
    pub finished_sessions: u64,
    /// Sessions whose partial file was gone: dropped (404 from now on).
    pub lost_sessions: u64,
}

/// The journal could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The journal failed.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// A partial file could not be reopened.
    #[error("reopening session {upload_id}: {source}")]
    Storage {
        /// The session.
        upload_id: String,
        /// What storage said.
        #[source]
        source: super::storage::StorageError,
    },
}

struct Inner {
    config: DriveConfig,
    /// `public_base_url` without a trailing `/`.
    base_url: String,
    clock: Arc<dyn Clock>,
    storage: Arc<dyn Storage>,
    control: DriveControl,
}

impl DriveServer {
    /// An emulator with `config`, timing sessions on `clock`, keeping bytes
    /// in `storage`.
    ///
    /// # Panics
    /// If `config` fails [`DriveConfig::validate`]: a configuration is checked
    /// when it is loaded, so reaching here with a bad one is a wiring bug.
    pub fn new(config: DriveConfig, clock: Arc<dyn Clock>, storage: Arc<dyn Storage>) -> Self {
        Self::open(config, clock, storage, None)
    }

    /// An emulator like [`new`](Self::new) that journals its sessions in
    /// `journal` (real mode); call [`restore`](Self::restore) before
    /// serving to take back the sessions of an earlier run.
    ///
    /// # Panics
    /// If `config` fails [`DriveConfig::validate`] (see [`new`](Self::new)).
    pub fn open(
        config: DriveConfig,
        clock: Arc<dyn Clock>,
        storage: Arc<dyn Storage>,
        journal: Option<SessionJournal>,
    ) -> Self {
        if let Err(error) = config.validate() {
            panic!("DriveServer::new needs a valid DriveConfig: {error}");
        }
        let base_url = config.public_base_url.trim_end_matches('/').to_owned();
        let control = DriveControl::with(config.seed, config.id_source, journal.map(Arc::new));
        Self {
            inner: Arc::new(Inner {
                config,
                base_url,
                clock,
                storage,
                control,
            }),
        }
    }

    /// Faults and observation for this server.
    pub fn control(&self) -> DriveControl {
        self.inner.control.clone()
    }

    /// Takes back the journalled sessions of an earlier run: finished ones
    /// answer with their file again; open ones hold what their partial file
    /// holds (cut to whole 256 KiB units) and continue from there; a session
    /// whose partial file is gone is dropped. Each session's idle time starts
    /// again now. Without a journal there is nothing to restore.
    pub async fn restore(&self) -> Result<RestoreReport, RestoreError> {
        let mut report = RestoreReport::default();
        let Some(journal) = self.inner.control.journal().cloned() else {
            return Ok(report);
        };
        let records = {
            let journal = journal.clone();
            tokio::task::spawn_blocking(move || journal.load_all())
                .await
                .map_err(|e| JournalError::Io {
                    operation: "load",
                    path: journal_dir(&self.inner.control),
                    source: io::Error::other(e.to_string()),
                })??
        };
        let now = self.inner.clock.now();
        for record in records {
            let (state, committed_bytes) = match &record.finished {
                Some(resource) => {
                    report.finished_sessions += 1;
                    (
                        SessionState::Finished(resource.clone()),
                        resource.size_bytes,
                    )
                }
                None => {
                    let reopened = self
                        .inner
                        .storage
                        .reopen(&record.upload_id, &record.name, record.declared_total_bytes)
                        .await
                        .map_err(|source| RestoreError::Storage {
                            upload_id: record.upload_id.clone(),
                            source,
                        })?;
                    let Some(handle) = reopened else {
                        tracing::warn!(upload_id = %record.upload_id, "drive: session's partial file is gone; dropping it");
                        report.lost_sessions += 1;
                        journal.remove(&record.upload_id)?;
                        continue;
                    };
                    let held_bytes = handle.len_bytes();
                    report.open_sessions += 1;
                    report.held_bytes += held_bytes;
                    (
                        SessionState::Open {
                            handle: Some(handle),
                        },
                        held_bytes,
                    )
                }
            };
            let session = Session {
                file_id: record.file_id,
                name: record.name,
                mime_type: record.mime_type,
                declared_total_bytes: record.declared_total_bytes,
                committed_bytes,
                last_active_at: now,
                owner: record.owner,
                state,
            };
            let mut state = self.inner.control.lock();
            if let Err(session) = state.sessions.insert(record.upload_id.clone(), session) {
                drop(state);
                if let SessionState::Open { handle } = session.state {
                    discard_all(vec![(record.upload_id, handle)]);
                }
            }
        }
        tracing::info!(?report, "drive: sessions restored");
        Ok(report)
    }

    /// Accepts connections until the listener fails, serving each with
    /// HTTP/1.1 keep-alive in a task of its own. Returns the listener's error.
    pub async fn serve(self, listener: Box<dyn Listener>) -> io::Result<()> {
        self.serve_until(listener, std::future::pending()).await
    }

    /// Like [`serve`](Self::serve), until `shutdown` completes; then stops
    /// accepting and lets each connection finish the request it is in
    /// (bounded by [`ServeOptions::close_grace`]). Sessions are journalled
    /// as they change, so nothing else needs saving.
    pub async fn serve_until<S>(self, listener: Box<dyn Listener>, shutdown: S) -> io::Result<()>
    where
        S: Future<Output = ()> + Send,
    {
        tracing::info!(
            addr = ?listener.local_addr().ok(),
            base_url = %self.inner.base_url,
            seed = self.inner.config.seed,
            "drive: serving"
        );
        let inner = Arc::clone(&self.inner);
        crate::wire::serve_until(
            listener,
            Arc::new(move |request| Arc::clone(&inner).handle(request)),
            self.inner.config.serve.clone(),
            shutdown,
        )
        .await
    }
}

fn journal_dir(control: &DriveControl) -> std::path::PathBuf {
    control
        .journal()
        .map(|j| j.dir().to_owned())
        .unwrap_or_default()
}

type Reply = Response<Full<Bytes>>;

/// A refusal: an error status and the reason, with its numbers.
#[derive(Debug)]
struct Refusal {
    status: u16,
    message: String,
    /// Close the connection after answering (the body was not read).
    close: bool,
}

impl Refusal {
    fn new(status: u16, message: impl Display) -> Self {
        Self {
            status,
            message: message.to_string(),
            close: false,
        }
    }

    fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    fn into_reply(self) -> Reply {
        tracing::debug!(status = self.status, message = %self.message, "drive: refused");
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut reply = Response::new(Full::new(Bytes::from(format_error_body(
            status.as_u16(),
            &self.message,
        ))));
        *reply.status_mut() = status;
        let headers = reply.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(JSON_CONTENT_TYPE));
        if self.close {
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        reply
    }
}

fn incomplete(held_bytes: u64) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::new()));
    *reply.status_mut() = RESUME_INCOMPLETE;
    reply
        .extensions_mut()
        .insert(hyper::ext::ReasonPhrase::from_static(
            RESUME_INCOMPLETE_REASON,
        ));
    if let Some(range) = format_range(held_bytes) {
        if let Ok(value) = HeaderValue::from_str(&range) {
            reply.headers_mut().insert(http::header::RANGE, value);
        }
    }
    reply
}

fn complete(resource: &FileResource) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(format_file_resource(resource))));
    reply
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(JSON_CONTENT_TYPE));
    reply
}

fn header_text<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<Option<&'a str>, Refusal> {
    headers
        .get(name)
        .map(|value| {
            value
                .to_str()
                .map_err(|_| Refusal::new(400, format!("header {name} is not visible ASCII")))
        })
        .transpose()
}

fn header_u64(
    headers: &HeaderMap,
    name: &HeaderName,
    what: &'static str,
) -> Result<Option<u64>, Refusal> {
    header_text(headers, name)?
        .map(|text| parse_decimal_u64(what, text).map_err(|e| Refusal::new(400, e)))
        .transpose()
}

/// What reading the next piece of a body gave.
enum BodyEvent {
    Data(Bytes),
    End,
    Broken(String),
}

/// A request body read with an idle timeout, that stays ended once ended.
struct RequestBody {
    body: Incoming,
    ended: bool,
}

impl RequestBody {
    async fn next(&mut self, clock: &dyn Clock, idle_timeout: Duration) -> BodyEvent {
        while !self.ended {
            // `biased`: tokio's default random branch order would make runs
            // differ between processes.
            let frame = tokio::select! {
                biased;
                frame = self.body.frame() => frame,
                () = clock.sleep(idle_timeout) => {
                    self.ended = true;
                    return BodyEvent::Broken(format!(
                        "no body bytes for {} ms", idle_timeout.as_millis()
                    ));
                }
            };
            match frame {
                None => self.ended = true,
                Some(Err(error)) => {
                    self.ended = true;
                    return BodyEvent::Broken(error.to_string());
                }
                Some(Ok(frame)) => {
                    // Trailers carry nothing the protocol uses.
                    if let Ok(data) = frame.into_data() {
                        return BodyEvent::Data(data);
                    }
                }
            }
        }
        BodyEvent::End
    }

    /// Reads and drops the rest, so the connection can carry the next
    /// request. Bounded: only bodies of an accepted length get here.
    async fn drain(&mut self, clock: &dyn Clock, idle_timeout: Duration) -> u64 {
        let mut drained_bytes = 0u64;
        while let BodyEvent::Data(data) = self.next(clock, idle_timeout).await {
            drained_bytes = drained_bytes.saturating_add(data.len() as u64);
        }
        drained_bytes
    }
}

/// What step 1 of a PUT decided.
enum Admitted {
    /// Answer at once (a finished file, a status query, nothing to stream).
    Answer(Reply),
    /// Stream the body into the checked-out handle.
    Stream {
        checkout: Checkout,
        plan: PiecePlan,
        /// The truncation fault's cap, if armed.
        cap_bytes: Option<u64>,
        /// The file's id, name and MIME type, for its resource.
        file: (String, String, String),
    },
}

/// A session's storage handle, checked out for one request. Dropping it
/// gives the handle back to its session (or discards it if the session is
/// gone), so no path, cancellation included, loses a handle.
struct Checkout {
    control: DriveControl,
    upload_id: String,
    handle: Option<Box<dyn StorageHandle>>,
    /// Bytes committed, including this request's.
    committed_bytes: u64,
    /// This request's commit-log record.
    record_slot: Option<usize>,
}

impl Checkout {
    /// Appends `run` at `committed_bytes` and records it.
    async fn append(&mut self, run: Bytes) -> Result<(), Refusal> {
        let len_bytes = run.len() as u64;
        let first_byte = self.committed_bytes;
        let Some(handle) = self.handle.as_mut() else {
            return Err(Refusal::new(500, "storage handle already released"));
        };
        if let Err(error) = handle.append(run).await {
            self.abandon();
            return Err(Refusal::new(
                500,
                format!("storage failed appending {len_bytes} bytes at byte {first_byte}: {error}"),
            ));
        }
        let end_byte = first_byte.saturating_add(len_bytes);
        assert_eq!(
            handle.len_bytes(),
            end_byte,
            "storage holds exactly the bytes committed"
        );
        self.committed_bytes = end_byte;
        let mut state = self.control.lock();
        if let Some(session) = state.sessions.get_mut(&self.upload_id) {
            session.committed_bytes = end_byte;
        }
        state.record_commit(&self.upload_id, first_byte, end_byte, &mut self.record_slot);
        Ok(())
    }

    /// Storage failed: its state is unknown, so the session is dropped (the
    /// client will get 404 and start over) and its storage discarded.
    fn abandon(&mut self) {
        {
            let mut state = self.control.lock();
            if state.sessions.remove(&self.upload_id).is_some() {
                state.stats.sessions_expired += 1;
            }
        }
        let handle = self.handle.take();
        self.control.discard(vec![(self.upload_id.clone(), handle)]);
    }

    /// Gives the handle back, marking the session active at `now` if given.
    /// `false` if the session is gone meanwhile (its storage is then
    /// discarded).
    fn give_back(&mut self, now: Option<Duration>) -> bool {
        let Some(handle) = self.handle.take() else {
            return false;
        };
        let mut state = self.control.lock();
        if let Some(session) = state.sessions.get_mut(&self.upload_id) {
            if let Some(now) = now {
                session.last_active_at = now;
            }
            if let SessionState::Open {
                handle: slot @ None,
            } = &mut session.state
            {
                *slot = Some(handle);
                return true;
            }
        }
        drop(state);
        discard_all(vec![(self.upload_id.clone(), Some(handle))]);
        false
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        if self.handle.is_some() {
            let upload_id = self.upload_id.clone();
            let returned = self.give_back(None);
            tracing::debug!(%upload_id, returned, "drive: handle given back on drop");
        }
    }
}

impl Inner {
    async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Reply {
        let header_bytes = crate::wire::request_header_bytes(&request);
        let header_bytes_max = self.config.request_header_bytes_max;
        if header_bytes > header_bytes_max {
            return Refusal::new(
                431,
                format!("the request's target and headers take {header_bytes} bytes; the limit is {header_bytes_max}"),
            )
            .closing()
            .into_reply();
        }
        let (parts, body) = request.into_parts();
        let owner = match &self.config.access_tokens {
            None => None,
            Some(table) => match authenticate(table, &parts.headers) {
                Ok(user) => Some(user.clone()),
                Err(error) => {
                    let mut reply = Refusal::new(401, format!("Invalid Credentials: {error}"))
                        .closing()
                        .into_reply();
                    reply.headers_mut().insert(
                        http::header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Bearer realm=\"upsim-drive\""),
                    );
                    return reply;
                }
            },
        };
        let path = parts.uri.path();
        if path != UPLOAD_PATH {
            return Refusal::new(404, format!("no such path {path:?}: only {UPLOAD_PATH}"))
                .closing()
                .into_reply();
        }
        let query = match parse_upload_query(parts.uri.query().unwrap_or_default()) {
            Ok(query) => query,
            Err(error) => return Refusal::new(400, error).closing().into_reply(),
        };
        let outcome = match (&parts.method, query.upload_id.clone()) {
            (&Method::POST, None) => self.initiate(&parts.headers, &query, body, owner).await,
            (&Method::PUT, Some(upload_id)) => {
                self.put(&parts.headers, upload_id, body, owner).await
            }
            (&Method::PUT, None) => Err(Refusal::new(
                400,
                "PUT without upload_id: pieces go to the session URI",
            )
            .closing()),
            (&Method::POST, Some(_)) => {
                let mut reply = Refusal::new(405, "POST to a session URI: pieces are PUT")
                    .closing()
                    .into_reply();
                reply
                    .headers_mut()
                    .insert(ALLOW, HeaderValue::from_static("PUT"));
                return reply;
            }
            (method, _) => {
                let mut reply = Refusal::new(405, format!("method {method} is not POST or PUT"))
                    .closing()
                    .into_reply();
                reply
                    .headers_mut()
                    .insert(ALLOW, HeaderValue::from_static("POST, PUT"));
                return reply;
            }
        };
        outcome.unwrap_or_else(Refusal::into_reply)
    }

    /// Writes `record` to the journal, if there is one, off the runtime's
    /// threads (it syncs to disk).
    async fn journal_save(&self, record: SessionRecord) -> Result<(), JournalError> {
        let Some(journal) = self.control.journal().cloned() else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || journal.save(&record))
            .await
            .map_err(|e| JournalError::Io {
                operation: "save",
                path: journal_dir(&self.control),
                source: io::Error::other(e.to_string()),
            })?
    }

    async fn initiate(
        &self,
        headers: &HeaderMap,
        query: &UploadQuery,
        body: Incoming,
        owner: Option<UserId>,
    ) -> Result<Reply, Refusal> {
        match query.upload_type.as_deref() {
            Some(UPLOAD_TYPE_RESUMABLE) => {}
            Some(other) => {
                return Err(Refusal::new(
                    400,
                    format!("uploadType {other:?} is not supported: only resumable"),
                )
                .closing())
            }
            None => {
                return Err(
                    Refusal::new(400, "uploadType is missing: only resumable is supported")
                        .closing(),
                )
            }
        }
        let declared_total_bytes =
            header_u64(headers, &X_UPLOAD_CONTENT_LENGTH, "X-Upload-Content-Length")
                .map_err(Refusal::closing)?;
        let upload_content_type =
            header_text(headers, &X_UPLOAD_CONTENT_TYPE).map_err(Refusal::closing)?;
        let metadata_bytes = self.read_metadata(body).await?;
        let metadata = parse_metadata(&metadata_bytes).map_err(|e| Refusal::new(400, e))?;
        let name = metadata
            .name
            .unwrap_or_else(|| DEFAULT_FILE_NAME.to_owned());
        let mime_type = metadata
            .mime_type
            .or_else(|| upload_content_type.map(str::to_owned))
            .unwrap_or_else(|| DEFAULT_MIME_TYPE.to_owned());

        // 1. Under the lock: sweep idle sessions, bound the table, draw ids.
        let now = self.clock.now();
        let (drawn, dropped) = {
            let mut state = self.control.lock();
            let dropped = state.sessions.drop_idle(now, self.config.session_ttl);
            state.stats.sessions_expired += dropped.len() as u64;
            let drawn = if state.sessions.len() >= LIVE_SESSIONS_MAX {
                None
            } else {
                Some(state.next_id().and_then(|u| Ok((u, state.next_id()?))))
            };
            (drawn, dropped)
        };
        if !dropped.is_empty() {
            tracing::info!(sessions = dropped.len(), "drive: idle sessions expired");
        }
        self.control.discard(dropped);
        let drawn = drawn
            .transpose()
            .map_err(|e| Refusal::new(503, format!("no session id: {e}")))?;
        let Some((upload_id, file_id)) = drawn else {
            return Err(Refusal::new(
                429,
                format!("{LIVE_SESSIONS_MAX} sessions are live: finish or abandon some first"),
            ));
        };

        // 2. Without the lock: open storage.
        let handle = self
            .storage
            .create(&upload_id, &name)
            .await
            .map_err(|e| Refusal::new(500, e))?;

        // 3. Under the lock: the session exists from here on.
        let record = SessionRecord {
            upload_id: upload_id.clone(),
            file_id: file_id.clone(),
            name: name.clone(),
            mime_type: mime_type.clone(),
            declared_total_bytes,
            owner: owner.clone(),
            finished: None,
        };
        let session = Session {
            file_id,
            name,
            mime_type,
            declared_total_bytes,
            committed_bytes: 0,
            last_active_at: now,
            owner,
            state: SessionState::Open {
                handle: Some(handle),
            },
        };
        let inserted = {
            let mut state = self.control.lock();
            let inserted = state.sessions.insert(upload_id.clone(), session);
            if inserted.is_ok() {
                state.stats.sessions_created += 1;
            }
            inserted
        };
        if let Err(session) = inserted {
            if let SessionState::Open { handle } = session.state {
                discard_all(vec![(upload_id.clone(), handle)]);
            }
            return Err(Refusal::new(
                500,
                format!("upload id {upload_id} drawn twice"),
            ));
        }
        // Journalled before anyone learns the session exists.
        if let Err(error) = self.journal_save(record).await {
            let dropped = self.control.lock().sessions.remove(&upload_id);
            self.control
                .discard(vec![(upload_id.clone(), dropped.flatten())]);
            return Err(Refusal::new(
                503,
                format!("the session could not be journalled: {error}"),
            ));
        }
        tracing::info!(
            %upload_id,
            total_bytes = ?declared_total_bytes,
            "drive: session initiated"
        );
        let location = format!(
            "{}{UPLOAD_PATH}?uploadType={UPLOAD_TYPE_RESUMABLE}&upload_id={upload_id}",
            self.base_url
        );
        let location = HeaderValue::from_str(&location)
            .map_err(|_| Refusal::new(500, format!("session URI {location:?} is not a header")))?;
        let mut reply = Response::new(Full::new(Bytes::new()));
        reply.headers_mut().insert(http::header::LOCATION, location);
        Ok(reply)
    }

    /// Reads an initiation body of at most [`METADATA_BYTES_MAX`].
    async fn read_metadata(&self, body: Incoming) -> Result<Vec<u8>, Refusal> {
        let too_big = |len: u64| {
            Refusal::new(
                413,
                format!("metadata of {len} bytes exceeds the {METADATA_BYTES_MAX}-byte limit"),
            )
            .closing()
        };
        let declared_len = body.size_hint().lower();
        if declared_len > METADATA_BYTES_MAX {
            return Err(too_big(declared_len));
        }
        let mut body = RequestBody { body, ended: false };
        let mut bytes = Vec::new();
        loop {
            match body
                .next(self.clock.as_ref(), self.config.piece_idle_timeout)
                .await
            {
                BodyEvent::Data(data) => {
                    let len = (bytes.len() as u64).saturating_add(data.len() as u64);
                    if len > METADATA_BYTES_MAX {
                        return Err(too_big(len));
                    }
                    bytes.extend_from_slice(&data);
                }
                BodyEvent::End => return Ok(bytes),
                BodyEvent::Broken(reason) => {
                    return Err(Refusal::new(400, format!("metadata body broke: {reason}")))
                }
            }
        }
    }

    /// A PUT to a session URI: checks the framing headers, then runs the
    /// piece in a task of its own (see the module docs).
    async fn put(
        self: Arc<Self>,
        headers: &HeaderMap,
        upload_id: String,
        body: Incoming,
        owner: Option<UserId>,
    ) -> Result<Reply, Refusal> {
        let content_length_bytes = header_u64(headers, &CONTENT_LENGTH, "Content-Length")
            .map_err(Refusal::closing)?
            .ok_or_else(|| {
                Refusal::new(
                    411,
                    "a PUT needs Content-Length (chunked bodies are refused)",
                )
                .closing()
            })?;
        if content_length_bytes > self.config.piece_size_bytes_max {
            return Err(Refusal::new(
                413,
                format!(
                    "piece of {content_length_bytes} bytes exceeds the {}-byte limit",
                    self.config.piece_size_bytes_max
                ),
            )
            .closing());
        }
        let content_range = header_text(headers, &CONTENT_RANGE)
            .map_err(Refusal::closing)?
            .map(str::to_owned);
        let body = RequestBody { body, ended: false };
        let task = tokio::spawn(Arc::clone(&self).run_put(
            upload_id,
            content_range,
            content_length_bytes,
            body,
            owner,
        ));
        task.await
            .map_err(|error| Refusal::new(500, format!("piece task failed: {error}")))
    }

    async fn run_put(
        self: Arc<Self>,
        upload_id: String,
        content_range: Option<String>,
        content_length_bytes: u64,
        mut body: RequestBody,
        owner: Option<UserId>,
    ) -> Reply {
        let outcome = self
            .put_checked(
                &upload_id,
                content_range,
                content_length_bytes,
                &mut body,
                owner.as_ref(),
            )
            .await;
        let drained_bytes = body
            .drain(self.clock.as_ref(), self.config.piece_idle_timeout)
            .await;
        if drained_bytes > 0 {
            tracing::debug!(%upload_id, drained_bytes, "drive: unread body drained");
        }
        outcome.unwrap_or_else(Refusal::into_reply)
    }

    /// Step 1, under the lock: fires an armed fault, looks the session up,
    /// applies the rules and checks the storage handle out.
    fn admit(
        &self,
        upload_id: &str,
        content_range: &str,
        range: ContentRange,
        content_length_bytes: u64,
        owner: Option<&UserId>,
    ) -> Result<Admitted, Refusal> {
        let is_piece = matches!(range, ContentRange::Piece { .. });
        let now = self.clock.now();
        let mut state = self.control.lock();
        if is_piece {
            if let Some(status) = state.take_put_failure() {
                tracing::info!(%upload_id, status, "drive fault: piece PUT failed");
                // Drive's 403s that mean "slow down" carry the reason
                // rateLimitExceeded; say so, so clients can tell them from
                // a permission error.
                let reason = if status == 403 {
                    format!("{RATE_LIMIT_REASON}: ")
                } else {
                    String::new()
                };
                return Err(Refusal::new(
                    status,
                    format!("{reason}injected fault: piece {content_range} answered {status}, nothing committed"),
                ));
            }
        }
        let session = match state
            .sessions
            .lookup(upload_id, now, self.config.session_ttl)
        {
            // Another user's session does not exist for them.
            Lookup::Live(session)
                if self.config.access_tokens.is_some() && session.owner.as_ref() != owner =>
            {
                return Err(Refusal::new(
                    404,
                    format!("upload session {upload_id} is unknown or expired"),
                ))
            }
            Lookup::Live(session) => session,
            Lookup::Unknown => {
                return Err(Refusal::new(
                    404,
                    format!("upload session {upload_id} is unknown or expired"),
                ))
            }
            Lookup::Expired(handle) => {
                state.stats.sessions_expired += 1;
                drop(state);
                tracing::info!(%upload_id, "drive: session expired");
                self.control.discard(vec![(upload_id.to_owned(), handle)]);
                return Err(Refusal::new(
                    404,
                    format!(
                        "upload session {upload_id} expired after {} s idle",
                        self.config.session_ttl.as_secs()
                    ),
                ));
            }
        };
        session.last_active_at = now;
        if let SessionState::Finished(resource) = &session.state {
            return Ok(Admitted::Answer(complete(resource)));
        }
        let held_bytes = session.committed_bytes;
        let plan = match range {
            ContentRange::Piece {
                first_byte,
                last_byte,
                total_bytes,
            } => plan_piece(
                held_bytes,
                session.declared_total_bytes,
                first_byte,
                last_byte,
                total_bytes,
                content_length_bytes,
            )
            .map_err(|e| Refusal::new(400, e))?,
            ContentRange::Status { total_bytes } => {
                let total_bytes =
                    reconcile_total(session.declared_total_bytes, total_bytes, held_bytes)
                        .map_err(|e| Refusal::new(400, e))?;
                session.declared_total_bytes = total_bytes;
                if total_bytes != Some(held_bytes) {
                    return Ok(Admitted::Answer(incomplete(held_bytes)));
                }
                // Everything is held but the file is not finished (an empty
                // file, or a finish that failed): finish it now.
                PiecePlan {
                    skip_bytes: 0,
                    new_bytes: 0,
                    total_bytes,
                    is_last: true,
                }
            }
        };
        let SessionState::Open { handle } = &mut session.state else {
            return Err(Refusal::new(500, "session neither open nor finished"));
        };
        let Some(handle) = handle.take() else {
            if !is_piece {
                return Ok(Admitted::Answer(incomplete(held_bytes)));
            }
            return Err(Refusal::new(
                503,
                format!("session {upload_id} is busy with another piece; {held_bytes} bytes held"),
            ));
        };
        session.declared_total_bytes = plan.total_bytes;
        let file = (
            session.file_id.clone(),
            session.name.clone(),
            session.mime_type.clone(),
        );
        let cap_bytes = if is_piece {
            state.stats.pieces_accepted += 1;
            state.take_truncation().or_else(|| {
                // Simulation only: keep half of the piece, as the real
                // service may (clients must read `Range`).
                buggify::fire(Site::DriveShortRange).then_some(content_length_bytes / 2)
            })
        } else {
            None
        };
        drop(state);
        tracing::debug!(
            %upload_id,
            %content_range,
            held_bytes,
            skip_bytes = plan.skip_bytes,
            new_bytes = plan.new_bytes,
            is_last = plan.is_last,
            cap_bytes = ?cap_bytes,
            "drive: piece accepted"
        );
        Ok(Admitted::Stream {
            checkout: Checkout {
                control: self.control.clone(),
                upload_id: upload_id.to_owned(),
                handle: Some(handle),
                committed_bytes: held_bytes,
                record_slot: None,
            },
            plan,
            cap_bytes,
            file,
        })
    }

    async fn put_checked(
        &self,
        upload_id: &str,
        content_range: Option<String>,
        content_length_bytes: u64,
        body: &mut RequestBody,
        owner: Option<&UserId>,
    ) -> Result<Reply, Refusal> {
        let content_range = content_range.ok_or_else(|| {
            Refusal::new(
                400,
                "a PUT needs Content-Range: bytes first-last/total or bytes */total",
            )
        })?;
        let range = parse_content_range(&content_range).map_err(|e| Refusal::new(400, e))?;
        if let ContentRange::Status { .. } = range {
            if content_length_bytes != 0 {
                return Err(Refusal::new(
                    400,
                    format!(
                        "status query ({content_range}) carries {content_length_bytes} body bytes"
                    ),
                ));
            }
        }
        let (mut checkout, plan, cap_bytes, file) = match self.admit(
            upload_id,
            &content_range,
            range,
            content_length_bytes,
            owner,
        )? {
            Admitted::Answer(reply) => return Ok(reply),
            Admitted::Stream {
                checkout,
                plan,
                cap_bytes,
                file,
            } => (checkout, plan, cap_bytes, file),
        };
        let held_bytes = checkout.committed_bytes;

        // 2. Without the lock: stream the body into storage.
        let mut intake = PieceIntake::new(plan.skip_bytes, cap_bytes);
        let body_complete = loop {
            if intake.received_bytes() == content_length_bytes {
                break true;
            }
            match body
                .next(self.clock.as_ref(), self.config.piece_idle_timeout)
                .await
            {
                BodyEvent::Data(frame) => {
                    if buggify::fire(Site::DriveSlowDisk) {
                        self.clock.sleep(SLOW_DISK_STALL).await;
                    }
                    for run in intake.push(frame) {
                        checkout.append(run).await?;
                    }
                }
                BodyEvent::End => break intake.received_bytes() == content_length_bytes,
                BodyEvent::Broken(reason) => {
                    tracing::info!(
                        %upload_id,
                        received_bytes = intake.received_bytes(),
                        content_length_bytes,
                        %reason,
                        "drive: piece body broke"
                    );
                    break false;
                }
            }
        };
        let received_bytes = intake.received_bytes();
        let pending_bytes = intake.pending_bytes();
        if let Some(rest) = intake.finish(body_complete, checkout.committed_bytes, plan.total_bytes)
        {
            for run in rest {
                checkout.append(run).await?;
            }
        }
        let committed_bytes = checkout.committed_bytes;
        tracing::debug!(
            %upload_id,
            received_bytes,
            committed_bytes,
            new_committed_bytes = committed_bytes - held_bytes,
            pending_bytes,
            body_complete,
            "drive: piece streamed"
        );

        // 3. Finish the file, or give the handle back.
        if plan.total_bytes != Some(committed_bytes) {
            if !checkout.give_back(Some(self.clock.now())) {
                return Err(Refusal::new(
                    404,
                    format!("upload session {upload_id} expired while the piece was in flight"),
                ));
            }
            return Ok(lose_reply_sometimes(incomplete(committed_bytes)));
        }
        let Some(handle) = checkout.handle.take() else {
            return Err(Refusal::new(500, "storage handle already released"));
        };
        let stored = match handle.finish().await {
            Ok(stored) => stored,
            Err(error) => {
                checkout.abandon();
                return Err(Refusal::new(
                    500,
                    format!("storage failed finishing {committed_bytes} bytes: {error}"),
                ));
            }
        };
        if stored.size_bytes != committed_bytes {
            checkout.abandon();
            return Err(Refusal::new(
                500,
                format!(
                    "storage finished {} bytes but {committed_bytes} were committed",
                    stored.size_bytes
                ),
            ));
        }
        let (id, name, mime_type) = file;
        let resource = FileResource {
            kind: FILE_KIND.to_owned(),
            id,
            name,
            mime_type,
            size_bytes: stored.size_bytes,
            crc64nvme: stored.crc64nvme,
        };
        let record = {
            let mut state = self.control.lock();
            let record = state.sessions.get_mut(upload_id).map(|session| {
                session.state = SessionState::Finished(resource.clone());
                session.last_active_at = self.clock.now();
                SessionRecord {
                    upload_id: upload_id.to_owned(),
                    file_id: session.file_id.clone(),
                    name: session.name.clone(),
                    mime_type: session.mime_type.clone(),
                    declared_total_bytes: session.declared_total_bytes,
                    owner: session.owner.clone(),
                    finished: Some(resource.clone()),
                }
            });
            state.record_finished(resource.clone());
            record
        };
        if let Some(record) = record {
            // The file is whole on disk either way; a failed journal write
            // means a restart would not know it (the client would start
            // over), so it is logged rather than refused.
            if let Err(error) = self.journal_save(record).await {
                tracing::error!(%upload_id, %error, "drive: journalling a finished session failed");
            }
        }
        tracing::info!(
            %upload_id,
            size_bytes = resource.size_bytes,
            crc64nvme = %resource.crc64nvme,
            "drive: file finished"
        );
        Ok(lose_reply_sometimes(complete(&resource)))
    }
}

/// How long a simulated slow disk stalls an append.
const SLOW_DISK_STALL: std::time::Duration = std::time::Duration::from_millis(200);

/// Simulation only: the piece is committed, but its reply is lost.
fn lose_reply_sometimes(mut reply: Reply) -> Reply {
    if buggify::fire(Site::DriveReplyLost) {
        reply.extensions_mut().insert(crate::wire::DropReply);
    }
    reply
}
