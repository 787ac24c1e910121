//! The idempotent create (`POST /uploads`): validation, the client token
//! that makes a retried create return the same upload, the per-user limit,
//! the drive breaker, admission, the drive session, and the upload's entry
//! in the table.

use super::refusals::{admit_failure_cause, admit_refusal, drive_refusal, Refusal};
use super::server::{ms, Backend};
use super::slip::Slip;
use super::tus::TusUpload;
use super::upload::{Upload, UploadSpec, UploadState};
use crate::admission::UploadSlot;
use crate::buggify::{self, Site};
use crate::chunk_api::Cause;
use crate::chunk_api::{
    is_valid_file_name, CreateUpload, Phase, UploadCreated, CLIENT_TOKEN_BYTES_MAX,
    CREATE_BODY_BYTES_MAX, FILE_NAME_BYTES_MAX,
};
use crate::drive::{DriveClient, SessionUri};
use crate::ids::{os_random_id, IdSource, UploadId};
use crate::trace::Event;
use crate::user::UserId;
use crate::wire::{json, read_body, BodyError, Reply};
use http::{Request, StatusCode};
use hyper::body::Incoming;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

/// `Retry-After` of a `too_many_uploads` refusal: an upload slot frees when
/// an upload ends, which takes at least seconds.
const TOO_MANY_UPLOADS_RETRY_AFTER: Duration = Duration::from_secs(10);

/// How late a simulated late create reply comes: past the client's
/// default request timeout (60 s), so the client has given up on it.
const LATE_CREATE_REPLY_DELAY: Duration = Duration::from_secs(65);

/// Where a client token stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum TokenState {
    /// A create with this token is in progress.
    Pending,
    /// The token created this upload.
    Created(UploadId),
}

/// What admission and the drive gave a create, on its way into the table.
pub(super) struct Admitted {
    /// The file's MIME type, as the drive session has it.
    pub(super) mime_type: String,
    /// Admission's grant; a final tus upload has none of its own (its
    /// partial uploads hold theirs until it ends).
    pub(super) slot: Option<UploadSlot>,
    /// The reservation the window is sized by: the slot's, or a final
    /// upload's partials' together.
    pub(super) memory_bytes: u64,
    /// The drive session; a partial tus upload has none (it is sent only
    /// as part of a final one).
    pub(super) session: Option<SessionUri>,
    /// A tus upload's own (`None` for the chunk API).
    pub(super) tus: Option<TusUpload>,
}

impl Admitted {
    /// What admission's `slot` and the drive's `session` gave.
    pub(super) fn of(
        mime_type: String,
        slot: UploadSlot,
        session: SessionUri,
        tus: Option<TusUpload>,
    ) -> Self {
        Self {
            mime_type,
            memory_bytes: slot.memory_bytes(),
            slot: Some(slot),
            session: Some(session),
            tus,
        }
    }
}

/// A client token is scoped to its user.
pub(super) type TokenKey = (UserId, String);

/// Holds a create's claim on its token; a create that does not finish
/// gives the claim back when this is dropped.
pub(super) struct TokenClaim<'a> {
    backend: &'a Backend,
    key: Option<TokenKey>,
}

impl<'a> TokenClaim<'a> {
    /// No claim: a create without a client token (tus has none).
    pub(super) fn none(backend: &'a Backend) -> Self {
        Self { backend, key: None }
    }

    pub(super) fn created(mut self, upload_id: &UploadId) {
        if let Some(key) = self.key.take() {
            self.backend
                .tokens()
                .insert(key, TokenState::Created(upload_id.clone()));
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

/// A create counted against the per-user limit until dropped.
pub(super) struct PendingCreate {
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

/// What a create's client token says to do.
pub(super) enum TokenCheck<'a> {
    /// The token already created an upload: answer with it.
    Replay(Reply),
    /// Go on with a new upload, holding the token's claim (none without a
    /// token).
    Proceed(TokenClaim<'a>),
}

impl Backend {
    /// `POST /uploads`, in steps; each step that refuses says why.
    pub(super) async fn create(&self, req: Request<Incoming>) -> Result<Reply, Refusal> {
        // 1. Who, and what: the body, validated.
        let user = self.user(&req)?;
        let create = Self::create_body(req).await?;
        // 2. An idempotent retry: the same token gets the same upload.
        let claim = match self.check_token(&user, &create)? {
            TokenCheck::Replay(reply) => return Ok(reply),
            TokenCheck::Proceed(claim) => claim,
        };
        // 3–5. Admission, a drive session, the upload in the table.
        let upload = self.start_upload(&user, create, claim, None).await?;
        let mut reply = json(
            StatusCode::CREATED,
            &UploadCreated {
                upload_id: upload.id.clone(),
                chunk_size_bytes: upload.chunk_size_bytes,
                chunk_count: upload.chunk_count,
            },
        );
        self.create_reply_faults(&mut reply).await;
        Ok(reply)
    }

    /// Steps 3 to 5 of a create, shared by the chunk API and tus: the
    /// per-user limit, the drive's breaker, admission, a drive session and
    /// an id (`tus`'s own, for a tus upload whose length came after its
    /// id), then the upload in the table with its committer running.
    pub(super) async fn start_upload(
        &self,
        user: &UserId,
        create: CreateUpload,
        claim: TokenClaim<'_>,
        tus: Option<(TusUpload, Option<UploadId>)>,
    ) -> Result<Arc<Upload>, Refusal> {
        // 3. The per-user limit, then the drive's breaker, then admission.
        let pending = self.reserve_create(user).inspect_err(|r| {
            self.inner.metrics.refused(r.cause);
        })?;
        self.check_breaker(user)?;
        let slot = self.admit(user, create.file_size_bytes).await?;
        // 4. A drive session (dropping the slot if there is none).
        let mime_type = create
            .mime_type
            .clone()
            .unwrap_or_else(|| "application/octet-stream".into());
        let drive = self.drive_client();
        let session = self.initiate(&drive, user, &create, &mime_type).await?;
        // 5. An id, and the upload in the table.
        let (tus, id) = match tus {
            Some((tus, id)) => (Some(tus), id),
            None => (None, None),
        };
        let id = match id {
            Some(id) => id,
            None => self
                .new_id()
                .inspect_err(|r| self.inner.metrics.refused(r.cause))?,
        };
        let admitted = Admitted::of(mime_type, slot, session, tus);
        let upload = self.register(id, user.clone(), create, admitted);
        claim.created(&upload.id);
        // In the table now, where the per-user count sees it.
        drop(pending);
        self.spawn_committer(upload.clone(), drive);
        Ok(upload)
    }

    /// Simulation only: an admitted create's reply is lost, or delayed
    /// past the client's request timeout. Either way the client retries
    /// with the same token and must get this upload, not a second one.
    async fn create_reply_faults(&self, reply: &mut Reply) {
        if buggify::fire(Site::BackendCreateReplyLost) {
            reply.extensions_mut().insert(crate::wire::DropReply);
        } else if buggify::fire(Site::BackendCreateReplyLate) {
            self.inner.env.clock.sleep(LATE_CREATE_REPLY_DELAY).await;
        }
    }

    /// The create body, read (bounded) and validated.
    async fn create_body(req: Request<Incoming>) -> Result<CreateUpload, Refusal> {
        let body = read_body(req.into_body(), CREATE_BODY_BYTES_MAX)
            .await
            .map_err(|e| {
                let (status, cause) = match e {
                    BodyError::TooLarge { .. } => {
                        (StatusCode::PAYLOAD_TOO_LARGE, Cause::BadRequest)
                    }
                    // A body that broke off is not too large: the client may
                    // send it again.
                    BodyError::Broken { .. } => (StatusCode::BAD_REQUEST, Cause::BodyIncomplete),
                };
                Refusal::new(status, cause, e.to_string())
            })?;
        let create: CreateUpload = serde_json::from_slice(&body).map_err(|e| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                Cause::BadRequest,
                format!("invalid create body: {e}"),
            )
        })?;
        if !is_valid_file_name(&create.file_name) {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                Cause::BadRequest,
                format!("file_name must be 1 to {FILE_NAME_BYTES_MAX} bytes without '/' or control characters"),
            ));
        }
        Ok(create)
    }

    /// Claims the create's client token, or finds the upload it created.
    pub(super) fn check_token(
        &self,
        user: &UserId,
        create: &CreateUpload,
    ) -> Result<TokenCheck<'_>, Refusal> {
        match self.claim_token(user, create)? {
            Err(claim) => Ok(TokenCheck::Proceed(claim)),
            Ok(id) => {
                let upload = self.find(id.as_str(), user)?;
                Ok(TokenCheck::Replay(json(
                    StatusCode::CREATED,
                    &UploadCreated {
                        upload_id: id,
                        chunk_size_bytes: upload.chunk_size_bytes,
                        chunk_count: upload.chunk_count,
                    },
                )))
            }
        }
    }

    /// Claims the create's client token (`Err`: go on, holding the claim;
    /// none without a token), or names the upload it created (`Ok`): the
    /// chunk API's and tus's creates share it.
    pub(super) fn claim_token(
        &self,
        user: &UserId,
        create: &CreateUpload,
    ) -> Result<Result<UploadId, TokenClaim<'_>>, Refusal> {
        let mut claim = TokenClaim {
            backend: self,
            key: None,
        };
        let Some(token) = &create.client_token else {
            return Ok(Err(claim));
        };
        if self.inner.config.slip == Slip::CreateForgetsToken {
            // The zoo's bug: every create is a new upload.
            return Ok(Err(claim));
        }
        let token_ok = !token.is_empty()
            && token.len() <= CLIENT_TOKEN_BYTES_MAX
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !token_ok {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                Cause::BadRequest,
                format!("client_token must be 1 to {CLIENT_TOKEN_BYTES_MAX} of A-Z a-z 0-9 _ -"),
            ));
        }
        let key = (user.clone(), token.clone());
        let existing = self.tokens().get(&key).cloned();
        match existing {
            Some(TokenState::Created(id)) => {
                crate::coverage::hit(crate::coverage::Probe::CreateReplay);
                Ok(Ok(id))
            }
            Some(TokenState::Pending) => Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                Cause::CreateInProgress,
                "a create with this client_token is still in progress",
            )
            .retry_after(Duration::from_secs(1))),
            None => {
                self.tokens().insert(key.clone(), TokenState::Pending);
                claim.key = Some(key);
                Ok(Err(claim))
            }
        }
    }

    /// Refuses new uploads while the drive link's breaker is open.
    pub(super) fn check_breaker(&self, user: &UserId) -> Result<(), Refusal> {
        let Err(unavailable) = self.breaker().admit(self.now()) else {
            return Ok(());
        };
        crate::coverage::hit(crate::coverage::Probe::BreakerOpen);
        let r = Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Cause::DriveUnavailable,
            format!(
                "drive unavailable: {} consecutive drive failures; new uploads refused for {} ms",
                unavailable.consecutive_failures,
                ms(unavailable.retry_after)
            ),
        )
        .retry_after(unavailable.retry_after);
        self.trace(Event::Refused {
            user: user.to_string(),
            cause: r.cause.as_str().into(),
        });
        self.inner.metrics.refused(r.cause);
        Err(r)
    }

    /// An admission slot for `file_size_bytes`, or admission's refusal.
    pub(super) async fn admit(
        &self,
        user: &UserId,
        file_size_bytes: u64,
    ) -> Result<UploadSlot, Refusal> {
        match self
            .inner
            .env
            .admission
            .admit(user.clone(), file_size_bytes)
            .await
        {
            Ok(slot) => Ok(slot),
            Err(e) => {
                self.trace(Event::Refused {
                    user: user.to_string(),
                    cause: admit_failure_cause(&e).as_str().into(),
                });
                self.inner.metrics.refused(admit_failure_cause(&e));
                Err(admit_refusal(&e))
            }
        }
    }

    /// Starts the upload's drive session; the breaker learns how it went.
    pub(super) async fn initiate(
        &self,
        drive: &DriveClient,
        user: &UserId,
        create: &CreateUpload,
        mime_type: &str,
    ) -> Result<SessionUri, Refusal> {
        match drive
            .initiate(&create.file_name, mime_type, create.file_size_bytes)
            .await
        {
            Ok(s) => {
                self.breaker().success();
                Ok(s)
            }
            Err(e) => {
                let refusal = drive_refusal(&e);
                // A drive that answers "never" (a full account, a bad
                // request) is healthy: only failures open the breaker.
                if refusal.cause != Cause::DriveRefused {
                    self.breaker().failure(self.now());
                }
                self.trace(Event::Refused {
                    user: user.to_string(),
                    cause: refusal.cause.as_str().into(),
                });
                self.inner.metrics.refused(refusal.cause);
                Err(refusal) // the caller drops the slot
            }
        }
    }

    /// The admitted upload, traced, persisted and in the table.
    pub(super) fn register(
        &self,
        id: UploadId,
        user: UserId,
        create: CreateUpload,
        admitted: Admitted,
    ) -> Arc<Upload> {
        let Admitted {
            mime_type,
            slot,
            mut memory_bytes,
            session,
            tus,
        } = admitted;
        if self.inner.config.slip == Slip::WindowIgnoresReservation {
            // The zoo's bug: the window sized by the profile's largest.
            let profile = &self.inner.config.profile;
            memory_bytes = u64::from(profile.reorder_window_chunks_max)
                .saturating_mul(profile.chunk_size_bytes);
        }
        let slot_waited = slot.as_ref().map(UploadSlot::waited);
        if let Some(slot) = &slot {
            self.trace(Event::Admitted {
                upload: id.to_string(),
                user: user.to_string(),
                file_size_bytes: create.file_size_bytes,
                memory_bytes: slot.memory_bytes(),
                wait_ms: ms(slot.waited()),
            });
        }
        if session.is_some() {
            self.trace(Event::DriveSession {
                upload: id.to_string(),
                generation: 0,
            });
        }
        let upload = Arc::new(Upload::new(
            UploadSpec {
                id: id.clone(),
                user,
                file_name: create.file_name,
                mime_type,
                file_size_bytes: create.file_size_bytes,
                chunk_size_bytes: self.inner.config.profile.chunk_size_bytes,
                memory_bytes,
                window_chunks_max: self.inner.config.profile.reorder_window_chunks_max,
                client_token: create.client_token,
                tus,
            },
            UploadState {
                slot,
                session,
                last_activity: self.now(),
                ..UploadState::empty(Phase::Receiving)
            },
        ));
        self.persist(&upload);
        self.prune_ended();
        self.uploads().insert(id, upload.clone());
        if let Some(waited) = slot_waited {
            self.inner.metrics.admitted(waited);
        }
        upload
    }

    /// A new upload id from [`BackendConfig::id_source`](super::BackendConfig::id_source).
    pub(super) fn new_id(&self) -> Result<UploadId, Refusal> {
        let id = match self.inner.config.id_source {
            IdSource::Seeded => {
                let mut rng = self
                    .inner
                    .rng
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                crate::ids::seeded_id(&mut *rng)
            }
            IdSource::Os => os_random_id().map_err(|e| {
                Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Cause::IdSourceFailed,
                    e.to_string(),
                )
                .retry_after(Duration::from_secs(1))
            })?,
        };
        Ok(UploadId::new(id))
    }

    /// Counts a create of `user` against
    /// [`BackendConfig::uploads_per_user_max`]; the returned guard holds
    /// its place until the upload is in the table (or the create fails).
    pub(super) fn reserve_create(&self, user: &UserId) -> Result<PendingCreate, Refusal> {
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
                    Cause::TooManyUploads,
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
}
