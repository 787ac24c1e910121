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
//! A PUT runs in three steps (in [`put`](super::put)):
//! 1. Under the state lock: fire an armed fault, look the session up (expired
//!    → 404), check the piece against the protocol
//!    ([`plan_piece`](super::piece::plan_piece)) and check the session's
//!    storage handle out.
//! 2. Without the lock: stream the body frame by frame through a
//!    [`PieceIntake`](super::piece::PieceIntake) into storage, committing whole 256 KiB units as they
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
//! metadata body ([`METADATA_BYTES_MAX`](super::METADATA_BYTES_MAX)), the piece size (413), the time
//! between body bytes (`piece_idle_timeout`), and live sessions (429).
//!
//! Invariants: no peer input reaches an `unwrap`, an index or unchecked
//! arithmetic; every 4xx/5xx has a JSON error body naming its numbers; every
//! request body of an accepted size is read to its end (or its break) before
//! answering, so keep-alive connections stay in step.

use super::config::DriveConfig;
use super::control::{DriveControl, Retention};
use super::issued_tokens::TokenStanding;
use super::journal::SessionJournal;
use super::protocol::{parse_upload_query, DriveReason, ProtocolError, UPLOAD_PATH};
use super::replies::{Refusal, Reply};
use super::storage::Storage;
use super::token_endpoint::TOKEN_PATH;
use crate::auth::{bearer_token, AuthError, TokenTable};
use crate::env::{Clock, Listener};
use crate::ids::SessionId;
use crate::user::UserId;
use http::header::ALLOW;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Request};
use hyper::body::Incoming;
use std::future::Future;
use std::io;
use std::sync::Arc;

/// Drive's error reason for a query parameter it cannot use (a `fields=`
/// naming a field the resource lacks).
const INVALID_PARAMETER: &str = "invalidParameter";

/// The emulator. Build it, keep its [`control`](Self::control), then
/// [`serve`](Self::serve) a listener.
pub struct DriveServer {
    pub(super) inner: Arc<Inner>,
}

/// What every request handler shares.
pub(super) struct Inner {
    pub(super) config: DriveConfig,
    /// `public_base_url` without a trailing `/`.
    pub(super) base_url: String,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) storage: Arc<dyn Storage>,
    pub(super) control: DriveControl,
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
        let control = DriveControl::with(
            config.seed,
            config.id_source,
            Retention::of(&config),
            journal.map(Arc::new),
        );
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

    /// Accepts connections until the listener fails, serving each with
    /// HTTP/1.1 keep-alive in a task of its own. Returns the listener's error.
    pub async fn serve(self, listener: Box<dyn Listener>) -> io::Result<()> {
        self.serve_until(listener, std::future::pending()).await
    }

    /// Like [`serve`](Self::serve), until `shutdown` completes; then stops
    /// accepting and lets each connection finish the request it is in
    /// (bounded by [`ServeOptions::close_grace`](crate::wire::ServeOptions::close_grace)).
    /// Sessions are journalled as they change, so nothing else needs saving.
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

impl Inner {
    /// One request: the header bound, authentication, then the routing table.
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
        if parts.uri.path() == TOKEN_PATH {
            // The token endpoint: the client authenticates with its secret
            // in the body, not with a bearer token.
            if parts.method != Method::POST {
                return not_allowed(format!("method {} on {TOKEN_PATH}", parts.method), "POST");
            }
            return self.token(body).await;
        }
        let owner = match self.authorise(&parts) {
            Ok(owner) => owner,
            Err(reply) => return *reply,
        };
        self.route(parts, body, owner).await
    }

    /// Who is asking: `None` without tokens configured (neither a token
    /// table nor OAuth clients); a 401 reply for a missing, unknown or
    /// expired token.
    fn authorise(&self, parts: &Parts) -> Result<Option<UserId>, Box<Reply>> {
        let table = self.config.access_tokens.as_ref();
        if table.is_none() && self.config.oauth_clients.is_none() {
            return Ok(None);
        }
        match self.bearer_user(&parts.headers, table) {
            Ok(user) => Ok(Some(user)),
            Err(error) => {
                let mut reply = Refusal::new(401, format!("Invalid Credentials: {error}"))
                    .closing()
                    .into_reply();
                reply.headers_mut().insert(
                    http::header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"upsim-drive\""),
                );
                Err(Box::new(reply))
            }
        }
    }

    /// The user of the request's bearer token: from the token table, or an
    /// access token the token endpoint issued and that has not expired.
    fn bearer_user(
        &self,
        headers: &HeaderMap,
        table: Option<&TokenTable>,
    ) -> Result<UserId, AuthError> {
        let token = bearer_token(headers)?;
        if let Some(user) = table.and_then(|t| t.user_of(token)) {
            return Ok(user.clone());
        }
        let now = self.clock.now();
        match self.control.lock().issued_tokens.standing(token, now) {
            TokenStanding::Valid(user) => Ok(user),
            TokenStanding::Expired { ago } => Err(AuthError::Expired {
                ago_ms: u64::try_from(ago.as_millis()).unwrap_or(u64::MAX),
            }),
            TokenStanding::Revoked => Err(AuthError::Revoked),
            TokenStanding::Unknown => Err(AuthError::UnknownToken),
        }
    }

    /// The routing table: one path; POST without a session initiates, PUT
    /// with one carries a piece or a status query; everything else is
    /// refused (404 for a path, 405 for a method).
    async fn route(self: Arc<Self>, parts: Parts, body: Incoming, owner: Option<UserId>) -> Reply {
        let path = parts.uri.path();
        if path != UPLOAD_PATH {
            return Refusal::new(404, format!("no such path {path:?}: only {UPLOAD_PATH}"))
                .closing()
                .into_reply();
        }
        let query = match parse_upload_query(parts.uri.query().unwrap_or_default()) {
            Ok(query) => query,
            Err(error) => {
                // Drive's reason for a bad `fields=` is `invalidParameter`.
                let fields = matches!(error, ProtocolError::InvalidFieldSelection { .. });
                let refusal = Refusal::new(400, error).closing();
                let refusal = if fields {
                    refusal.because(DriveReason::Other(INVALID_PARAMETER.to_owned()))
                } else {
                    refusal
                };
                return refusal.into_reply();
            }
        };
        let outcome = match (&parts.method, query.upload_id.clone()) {
            (&Method::POST, None) => self.initiate(&parts.headers, &query, body, owner).await,
            (&Method::PUT, Some(upload_id)) => {
                let asked = (owner, query.fields);
                self.put(&parts.headers, SessionId::new(upload_id), body, asked)
                    .await
            }
            (&Method::PUT, None) => Err(Refusal::new(
                400,
                "PUT without upload_id: pieces go to the session URI",
            )
            .closing()),
            (&Method::POST, Some(_)) => {
                return not_allowed("POST to a session URI: pieces are PUT".to_owned(), "PUT")
            }
            (method, _) => {
                return not_allowed(format!("method {method} is not POST or PUT"), "POST, PUT")
            }
        };
        outcome.unwrap_or_else(Refusal::into_reply)
    }
}

/// `405` with the methods the target allows.
fn not_allowed(message: String, allow: &'static str) -> Reply {
    let mut reply = Refusal::new(405, message).closing().into_reply();
    reply
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    reply
}
