//! The PUT path: a piece (`Content-Range: bytes first-last/total`) or a
//! status query (`bytes */total`, no body) to a session URI.
//!
//! # Implementation Details
//!
//! A PUT runs in three steps (see also the server's module docs):
//! 1. [`Inner::admit`], under the state lock: fire an armed fault, look the
//!    session up (expired → 404), check the piece against the protocol
//!    ([`plan_piece`]) and check the session's storage handle out.
//! 2. [`Inner::stream_piece`], without the lock: stream the body frame by
//!    frame through a [`PieceIntake`] into storage, committing whole 256 KiB
//!    units as they fill (the [`Checkout`] takes the lock briefly per unit).
//! 3. `Inner::settle` ([`super::finish`]): give the handle back and answer `308`, or, when
//!    the last byte is held, finish the file and answer `200`.
//!
//! Everything after the framing headers runs in a task of its own
//! ([`Inner::put`]), so a connection that breaks mid-piece never cancels a
//! storage write halfway.

use super::body::{BodyEvent, RequestBody};
use super::checkout::Checkout;
use super::control::DriveState;
use super::piece::{plan_piece, reconcile_total, PieceIntake, PiecePlan};
use super::protocol::{parse_content_range, ContentRange, FieldSelection};
use super::replies::{complete, header_text, header_u64, incomplete, Refusal, Reply};
use super::server::Inner;
use super::session::{Lookup, Session, SessionState};
use super::storage::StorageHandle;
use crate::buggify::{self, Site};
use crate::ids::SessionId;
use crate::units::DRIVE_CHUNK_ALIGN_BYTES;
use crate::user::UserId;
use http::header::{CONTENT_LENGTH, CONTENT_RANGE, TRANSFER_ENCODING};
use http::HeaderMap;
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Duration;

/// How long a simulated slow disk stalls an append.
const SLOW_DISK_STALL: Duration = Duration::from_millis(200);

/// What step 1 of a PUT decided.
enum Admitted {
    /// Answer at once (a finished file, a status query, nothing to stream).
    Answer(Reply),
    /// Stream the body into the checked-out handle.
    Stream(Streaming),
}

/// A piece admitted for streaming.
pub(super) struct Streaming {
    pub(super) checkout: Checkout,
    pub(super) plan: PiecePlan,
    /// The truncation fault's cap, if armed.
    cap_bytes: Option<u64>,
    /// The file's id, name and MIME type, for its resource.
    pub(super) file: (String, String, String),
    /// The file resource's fields the final reply carries.
    pub(super) fields: FieldSelection,
}

/// Why a session lookup found nothing to work on.
enum Missing {
    /// Never created, dropped, or another user's.
    Unknown,
    /// Idle past its ttl: just dropped; its handle is to be discarded.
    Expired(Option<Box<dyn StorageHandle>>),
}

impl Inner {
    /// A PUT to a session URI: checks the framing headers, then runs the
    /// piece in a task of its own (see the module docs). `fields`: the
    /// PUT's own `fields=`, which wins over the initiation's.
    pub(super) async fn put(
        self: Arc<Self>,
        headers: &HeaderMap,
        upload_id: SessionId,
        body: Incoming,
        (owner, fields): (Option<UserId>, Option<FieldSelection>),
    ) -> Result<Reply, Refusal> {
        let declared =
            header_u64(headers, &CONTENT_LENGTH, "Content-Length").map_err(Refusal::closing)?;
        let content_length_bytes = match declared {
            Some(bytes) => bytes,
            // RFC 9112 §6.3: neither header means an empty body, as curl
            // sends a status query (`curl -X PUT -H 'Content-Range: bytes
            // */N'`).
            None if !headers.contains_key(TRANSFER_ENCODING) => 0,
            None => {
                return Err(Refusal::new(
                    411,
                    "a PUT needs Content-Length (chunked bodies are refused)",
                )
                .closing())
            }
        };
        if content_length_bytes > self.config.piece_bytes_max {
            return Err(Refusal::new(
                413,
                format!(
                    "piece of {content_length_bytes} bytes exceeds the {}-byte limit",
                    self.config.piece_bytes_max
                ),
            )
            .closing());
        }
        let content_range = header_text(headers, &CONTENT_RANGE)
            .map_err(Refusal::closing)?
            .map(str::to_owned);
        let body = RequestBody::new(body);
        let task = tokio::spawn(Arc::clone(&self).run_put(
            upload_id,
            content_range,
            content_length_bytes,
            body,
            (owner, fields),
        ));
        task.await
            .map_err(|error| Refusal::new(500, format!("piece task failed: {error}")))
    }

    /// The piece task: the three steps, then the rest of the body drained
    /// so the connection stays in step.
    async fn run_put(
        self: Arc<Self>,
        upload_id: SessionId,
        content_range: Option<String>,
        content_length_bytes: u64,
        mut body: RequestBody,
        (owner, fields): (Option<UserId>, Option<FieldSelection>),
    ) -> Reply {
        let outcome = self
            .put_checked(
                &upload_id,
                content_range.clone(),
                content_length_bytes,
                &mut body,
                (owner.as_ref(), fields),
            )
            .await;
        let reply = outcome.unwrap_or_else(Refusal::into_reply);
        self.control.observe_put(&upload_id, content_range, &reply);
        let drained_bytes = body
            .drain(self.clock.as_ref(), self.config.piece_idle_timeout)
            .await;
        if drained_bytes > 0 {
            tracing::debug!(%upload_id, drained_bytes, "drive: unread body drained");
        }
        reply
    }

    async fn put_checked(
        &self,
        upload_id: &SessionId,
        content_range: Option<String>,
        content_length_bytes: u64,
        body: &mut RequestBody,
        (owner, fields): (Option<&UserId>, Option<FieldSelection>),
    ) -> Result<Reply, Refusal> {
        let (content_range, range) = parse_range(content_range, content_length_bytes)?;
        // 1. Under the lock: admit the piece and check the handle out.
        let admitted = self.admit(
            upload_id,
            &content_range,
            (range, content_length_bytes),
            owner,
            fields,
        )?;
        let mut streaming = match admitted {
            Admitted::Answer(reply) => return Ok(reply),
            Admitted::Stream(streaming) => streaming,
        };
        // 2. Without the lock: stream the body into storage.
        self.stream_piece(upload_id, &mut streaming, body, content_length_bytes)
            .await?;
        // 3. Finish the file, or give the handle back.
        self.settle(upload_id, streaming).await
    }

    /// Step 1, under the lock: fires an armed fault, looks the session up,
    /// applies the rules and checks the storage handle out.
    fn admit(
        &self,
        upload_id: &SessionId,
        content_range: &str,
        (range, content_length_bytes): (ContentRange, u64),
        owner: Option<&UserId>,
        fields: Option<FieldSelection>,
    ) -> Result<Admitted, Refusal> {
        let is_piece = matches!(range, ContentRange::Piece { .. });
        let now = self.clock.now();
        let mut state = self.control.lock();
        if is_piece {
            fire_put_fault(&mut state, upload_id, content_range)?;
        }
        let session = match self.live_session(&mut state, upload_id, now, owner) {
            Ok(session) => session,
            Err(missing) => {
                if let Missing::Expired(_) = missing {
                    state.stats.sessions_expired += 1;
                }
                drop(state);
                return Err(self.refuse_missing(upload_id, missing));
            }
        };
        session.last_active_at = now;
        let fields = fields.unwrap_or(session.fields);
        let plan = match plan_request(session, range, content_length_bytes, fields)? {
            Ok(plan) => plan,
            Err(answer) => return Ok(Admitted::Answer(answer)),
        };
        let held_bytes = session.committed_bytes;
        let (handle, file) = match check_handle_out(session, is_piece, upload_id, &plan)? {
            Ok(checked_out) => checked_out,
            Err(answer) => return Ok(Admitted::Answer(answer)),
        };
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
        Ok(Admitted::Stream(Streaming {
            checkout: Checkout {
                control: self.control.clone(),
                upload_id: upload_id.clone(),
                handle: Some(handle),
                committed_bytes: held_bytes,
                record_slot: None,
            },
            plan,
            cap_bytes,
            file,
            fields,
        }))
    }

    /// The session `upload_id` if it is live and `owner`'s (when tokens
    /// are checked: another user's session does not exist for them).
    fn live_session<'s>(
        &self,
        state: &'s mut DriveState,
        upload_id: &SessionId,
        now: Duration,
        owner: Option<&UserId>,
    ) -> Result<&'s mut Session, Missing> {
        match state
            .sessions
            .lookup(upload_id, now, self.config.session_ttl)
        {
            Lookup::Live(session)
                if self.config.access_tokens.is_some() && session.owner.as_ref() != owner =>
            {
                Err(Missing::Unknown)
            }
            Lookup::Live(session) => Ok(session),
            Lookup::Unknown => Err(Missing::Unknown),
            Lookup::Expired(handle) => Err(Missing::Expired(handle)),
        }
    }

    /// The 404 for a session that is not there; an expired one's storage
    /// is discarded (outside the lock: the caller has dropped it).
    fn refuse_missing(&self, upload_id: &SessionId, missing: Missing) -> Refusal {
        match missing {
            Missing::Unknown => Refusal::new(
                404,
                format!("upload session {upload_id} is unknown or expired"),
            ),
            Missing::Expired(handle) => {
                tracing::info!(%upload_id, "drive: session expired");
                self.control.discard(vec![(upload_id.clone(), handle)]);
                Refusal::new(
                    404,
                    format!(
                        "upload session {upload_id} expired after {} s idle",
                        self.config.session_ttl.as_secs()
                    ),
                )
            }
        }
    }

    /// Step 2, without the lock: streams the body through a [`PieceIntake`]
    /// into the checked-out handle, committing whole units as they fill,
    /// then the file's final partial unit if the body arrived whole.
    async fn stream_piece(
        &self,
        upload_id: &SessionId,
        streaming: &mut Streaming,
        body: &mut RequestBody,
        content_length_bytes: u64,
    ) -> Result<(), Refusal> {
        let checkout = &mut streaming.checkout;
        let plan = streaming.plan;
        let held_bytes = checkout.committed_bytes;
        let mut intake = PieceIntake::new(plan.skip_bytes, streaming.cap_bytes);
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
        assert_committed_in_units(committed_bytes, plan.total_bytes);
        tracing::debug!(
            %upload_id,
            received_bytes,
            committed_bytes,
            new_committed_bytes = committed_bytes - held_bytes,
            pending_bytes,
            body_complete,
            "drive: piece streamed"
        );
        Ok(())
    }
}

/// The session's invariant after every piece (see [`super::piece`]):
/// whole units, or exactly the whole file; never past the total.
fn assert_committed_in_units(committed_bytes: u64, total_bytes: Option<u64>) {
    assert!(
        committed_bytes.is_multiple_of(DRIVE_CHUNK_ALIGN_BYTES)
            || Some(committed_bytes) == total_bytes,
        "committed bytes are whole units unless they are the whole file"
    );
    assert!(
        total_bytes.is_none_or(|total| committed_bytes <= total),
        "no byte is committed past the file's total"
    );
}

/// The request's `Content-Range`, parsed; a status query must carry no body.
fn parse_range(
    content_range: Option<String>,
    content_length_bytes: u64,
) -> Result<(String, ContentRange), Refusal> {
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
                format!("status query ({content_range}) carries {content_length_bytes} body bytes"),
            ));
        }
    }
    Ok((content_range, range))
}

/// Consumes one armed PUT failure, if any, as the refusal to answer with.
fn fire_put_fault(
    state: &mut DriveState,
    upload_id: &SessionId,
    content_range: &str,
) -> Result<(), Refusal> {
    let Some(failure) = state.take_put_failure() else {
        return Ok(());
    };
    let status = failure.status;
    tracing::info!(%upload_id, status, reason = %failure.reason, "drive fault: piece PUT failed");
    Err(Refusal::new(
        status,
        format!("injected fault: piece {content_range} answered {status}, nothing committed"),
    )
    .because(failure.reason))
}

/// What `range` asks of `session`: `Ok(Ok(plan))` to stream, `Ok(Err(reply))`
/// to answer at once (a finished file, with the `fields` selected; a status
/// query while bytes are missing).
fn plan_request(
    session: &mut Session,
    range: ContentRange,
    content_length_bytes: u64,
    fields: FieldSelection,
) -> Result<Result<PiecePlan, Reply>, Refusal> {
    if let SessionState::Finished(resource) = &session.state {
        return Ok(Err(complete(resource, fields)));
    }
    let held_bytes = session.committed_bytes;
    match range {
        ContentRange::Piece {
            first_byte,
            last_byte,
            total_bytes,
        } => {
            let plan = plan_piece(
                held_bytes,
                session.declared_total_bytes,
                first_byte,
                last_byte,
                total_bytes,
                content_length_bytes,
            )
            .map_err(|e| Refusal::new(400, e))?;
            // Paired with the client's check where the range is made
            // (`DriveClient::put_piece`): every body byte is either held
            // already or new, and only the last piece may be a partial unit.
            assert_eq!(
                plan.skip_bytes + plan.new_bytes,
                content_length_bytes,
                "a planned piece accounts for every body byte"
            );
            assert!(
                plan.is_last || content_length_bytes.is_multiple_of(DRIVE_CHUNK_ALIGN_BYTES),
                "only the last piece may be a partial unit"
            );
            Ok(Ok(plan))
        }
        ContentRange::Status { total_bytes } => {
            let total_bytes =
                reconcile_total(session.declared_total_bytes, total_bytes, held_bytes)
                    .map_err(|e| Refusal::new(400, e))?;
            session.declared_total_bytes = total_bytes;
            if total_bytes != Some(held_bytes) {
                return Ok(Err(incomplete(held_bytes)));
            }
            // Everything is held but the file is not finished (an empty
            // file, or a finish that failed): finish it now.
            Ok(Ok(PiecePlan {
                skip_bytes: 0,
                new_bytes: 0,
                total_bytes,
                is_last: true,
            }))
        }
    }
}

/// Checks an open session's storage handle out for a request planned as
/// `plan`: the handle and the file's id, name and MIME type; or, while
/// another request has it, `308` to a status query and `503` to a piece.
#[allow(clippy::type_complexity)] // One use; a named type would say no more.
fn check_handle_out(
    session: &mut Session,
    is_piece: bool,
    upload_id: &SessionId,
    plan: &PiecePlan,
) -> Result<Result<(Box<dyn StorageHandle>, (String, String, String)), Reply>, Refusal> {
    let held_bytes = session.committed_bytes;
    let SessionState::Open { handle } = &mut session.state else {
        return Err(Refusal::new(500, "session neither open nor finished"));
    };
    let Some(handle) = handle.take() else {
        if !is_piece {
            return Ok(Err(incomplete(held_bytes)));
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
    Ok(Ok((handle, file)))
}
