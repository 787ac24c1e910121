//! Chunk intake (`PUT /uploads/{id}/chunks/{index}`): the request's checks
//! before a byte of the body is read, the body read frame by frame
//! (bounded in length and in idle time, checksummed as it arrives), and
//! the chunk's place in the upload's reorder window.

use super::observer::ChunkStage;
use super::refusals::Refusal;
use super::server::{ms, Backend};
use super::slip::Slip;
use super::upload::{Chunk, Upload, UploadState};
use crate::buggify::{self, Site};
use crate::checksum::{parse_crc32c_hex, Crc32c};
use crate::chunk_api::Cause;
use crate::chunk_api::{ChunkAccepted, Phase, CHECKSUM_HEADER};
use crate::trace::Event;
use crate::wire::{json, Reply};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// `Retry-After` of a chunk refused while draining: about a restart.
const SHUTTING_DOWN_RETRY_AFTER: Duration = Duration::from_secs(10);

/// A chunk request (or a tus PATCH) counted as in flight until dropped
/// (however the handler ends, cancellation included).
pub(super) struct ChunkInFlight<'a> {
    count: &'a AtomicU64,
}

impl<'a> ChunkInFlight<'a> {
    pub(super) fn new(count: &'a AtomicU64) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self { count }
    }
}

impl Drop for ChunkInFlight<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Where chunk `index` stands against the upload's window now: already on
/// the drive (`Ok(Some(200))`, nothing to store), inside it (`Ok(None)`),
/// or beyond it (`503 window_full`, `hint` ending the reason). `slip` is
/// the bug zoo's ([`Slip::WindowEdge`]); production passes `Slip::None`.
fn window_check(
    upload: &Upload,
    state: &UploadState,
    index: u32,
    hint: &str,
    slip: Slip,
) -> Result<Option<Reply>, Refusal> {
    let (head, end) = upload.window_bounds(state);
    // The zoo's bug: the chunk at the end index taken in, one past the
    // window.
    let end = if slip == Slip::WindowEdge {
        end.saturating_add(1)
    } else {
        end
    };
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
        crate::coverage::hit(crate::coverage::Probe::WindowFull);
        return Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Cause::WindowFull,
            format!("chunk {index} is beyond the reorder window [{head}, {end}){hint}"),
        )
        .retry_after(Duration::from_secs(1)));
    }
    Ok(None)
}

/// A chunk request's headers, checked against its upload.
struct ChunkHeader {
    index: u32,
    /// The chunk's length: what `Content-Length` declared, and what the
    /// upload's geometry says chunk `index` is.
    len_bytes: u64,
    /// The CRC-32C the client computed over the chunk.
    crc32c: u32,
}

/// The 408 of a chunk body that went quiet for `idle_timeout`.
fn body_timeout(index: u32, received: u64, expected_len: u64, idle_timeout: Duration) -> Refusal {
    let mut r = Refusal::new(
        StatusCode::REQUEST_TIMEOUT,
        Cause::BodyTimeout,
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
    r
}

fn bad(cause: Cause, message: String) -> Refusal {
    Refusal::new(StatusCode::BAD_REQUEST, cause, message)
}

impl Backend {
    /// `PUT /uploads/{id}/chunks/{index}`.
    pub(super) async fn put_chunk(
        &self,
        req: Request<Incoming>,
        id: &str,
        index: &str,
    ) -> Result<Reply, Refusal> {
        let _in_flight = ChunkInFlight::new(&self.inner.chunks_in_flight);
        // 1. Whose upload, and may a chunk come in now?
        let user = self.user(&req)?;
        let upload = self.find(id, &user)?;
        if self.inner.draining.load(Ordering::Acquire) {
            return Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                Cause::ShuttingDown,
                "the backend is shutting down: send this chunk again after it restarts",
            )
            .retry_after(SHUTTING_DOWN_RETRY_AFTER));
        }
        // 2. The headers: index, length, checksum.
        let header = Self::chunk_header(&req, &upload, index)?;
        let index = header.index;
        // 3. Phase and window, before reading a byte of the body.
        let slip = self.inner.config.slip;
        let before_body = Self::check_before_body(&upload, index, slip);
        self.observe_chunk(&upload, index, ChunkStage::BeforeBody, &before_body);
        if let Some(reply) = before_body? {
            return Ok(reply);
        }
        // 4. The body, checksummed as it arrives.
        let frames = self.receive_body(req.into_body(), &upload, &header).await?;
        // 5. Into the window (which may have moved meanwhile).
        let stored = self.store_chunk(&upload, index, frames);
        self.observe_chunk(&upload, index, ChunkStage::Store, &stored);
        if let Some(reply) = stored? {
            return Ok(reply);
        }
        self.trace(Event::ChunkStored {
            upload: upload.id.to_string(),
            index,
        });
        self.inner.metrics.received(header.len_bytes);
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

    /// The chunk's index, declared length and checksum, each checked
    /// against the upload.
    fn chunk_header(
        req: &Request<Incoming>,
        upload: &Upload,
        index: &str,
    ) -> Result<ChunkHeader, Refusal> {
        let index: u32 = index.parse().map_err(|_| {
            bad(
                Cause::BadChunkIndex,
                format!("chunk index {index:?} is not a number"),
            )
        })?;
        if index >= upload.chunk_count {
            return Err(Refusal::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                Cause::BadChunkIndex,
                format!(
                    "chunk {index} is beyond the last chunk ({})",
                    upload.chunk_count - 1
                ),
            ));
        }
        let expected_len = upload.chunk_len(index);
        // Paired with the client's send (`send_chunk` in client.rs), which
        // asserts the same geometry where it cuts the chunk: non-empty,
        // inside the file, whole unless it ends the file.
        let first_byte = u64::from(index) * upload.chunk_size_bytes;
        assert!(expected_len > 0 && first_byte + expected_len <= upload.file_size_bytes);
        assert!(
            expected_len == upload.chunk_size_bytes
                || first_byte + expected_len == upload.file_size_bytes
        );
        Self::check_declared_length(req, index, expected_len)?;
        let crc32c = Self::checksum_header(req)?;
        Ok(ChunkHeader {
            index,
            len_bytes: expected_len,
            crc32c,
        })
    }

    /// `Content-Length` must be chunk `index`'s length.
    fn check_declared_length(
        req: &Request<Incoming>,
        index: u32,
        expected_len: u64,
    ) -> Result<(), Refusal> {
        let headers = req.headers();
        let declared = match headers.get(http::header::CONTENT_LENGTH) {
            Some(v) => v.to_str().ok().and_then(|v| v.parse::<u64>().ok()),
            // RFC 9112 §6.3: neither header means an empty body.
            None if !headers.contains_key(http::header::TRANSFER_ENCODING) => Some(0),
            None => None,
        };
        let declared = declared.ok_or_else(|| {
            Refusal::new(
                StatusCode::LENGTH_REQUIRED,
                Cause::LengthRequired,
                "chunks need a Content-Length (chunked bodies are refused)",
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
                Cause::BadChunkLength,
                format!(
                    "chunk {index} must be {expected_len} bytes; Content-Length says {declared}"
                ),
            ));
        }
        Ok(())
    }

    /// The CRC-32C the chunk's header names.
    fn checksum_header(req: &Request<Incoming>) -> Result<u32, Refusal> {
        let checksum_text = req
            .headers()
            .get(CHECKSUM_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                bad(
                    Cause::BadChecksum,
                    format!("missing {CHECKSUM_HEADER} header"),
                )
            })?;
        parse_crc32c_hex(checksum_text).map_err(|e| bad(Cause::BadChecksum, e.to_string()))
    }

    /// Whether the upload takes chunk `index` now: `Ok(Some(200))` if it is
    /// already on the drive, `Ok(None)` to read its body.
    fn check_before_body(
        upload: &Upload,
        index: u32,
        slip: Slip,
    ) -> Result<Option<Reply>, Refusal> {
        let state = upload.lock();
        match state.phase {
            Phase::Receiving => {}
            Phase::Resuming => {
                return Err(Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Cause::Resuming,
                    "the backend is taking this upload back after a restart",
                )
                .retry_after(Duration::from_secs(1)))
            }
            Phase::Complete => {
                return Err(Refusal::new(
                    StatusCode::CONFLICT,
                    Cause::UploadComplete,
                    "the upload is already complete",
                ))
            }
            Phase::Failed => {
                let mut r = Refusal::new(
                    StatusCode::GONE,
                    Cause::UploadFailed,
                    "the upload has failed",
                );
                if let Some(f) = &state.failure {
                    r.message = format!("the upload has failed: {}", f.message);
                }
                return Err(r);
            }
        }
        window_check(upload, &state, index, ": send earlier chunks first", slip)
    }

    /// The body, frame by frame, checksummed as it arrives, bounded by the
    /// declared (and expected) length and by the idle timeout between
    /// frames.
    async fn receive_body(
        &self,
        mut body: Incoming,
        upload: &Upload,
        header: &ChunkHeader,
    ) -> Result<Vec<Bytes>, Refusal> {
        let (index, expected_len) = (header.index, header.len_bytes);
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
                return Err(body_timeout(index, received, expected_len, idle_timeout));
            };
            let Some(frame) = next else { break };
            let frame = frame.map_err(|e| {
                bad(
                    Cause::BodyIncomplete,
                    format!("chunk {index}: body broke off after {received} bytes: {e}"),
                )
            })?;
            if let Ok(data) = frame.into_data() {
                received += data.len() as u64;
                if received > expected_len {
                    return Err(bad(
                        Cause::BadChunkLength,
                        format!("chunk {index}: body longer than {expected_len} bytes"),
                    ));
                }
                crc.update(&data);
                frames.push(data);
            }
        }
        if received != expected_len {
            return Err(bad(
                Cause::BadChunkLength,
                format!("chunk {index}: body has {received} bytes, {expected_len} declared"),
            ));
        }
        // Exactly the declared bytes arrived (paired with the client's
        // `buf.len() == len`).
        debug_assert_eq!(
            frames.iter().map(|f| f.len() as u64).sum::<u64>(),
            header.len_bytes
        );
        self.check_checksum(upload, header, crc.value())?;
        Ok(frames)
    }

    /// The body's CRC-32C must be the header's; a mismatch is traced (the
    /// bytes were damaged on the way: the client resends them).
    fn check_checksum(
        &self,
        upload: &Upload,
        header: &ChunkHeader,
        crc: u32,
    ) -> Result<(), Refusal> {
        let index = header.index;
        if crc != header.crc32c && self.inner.config.slip != Slip::UncheckedChunks {
            self.trace(Event::ChunkFailed {
                upload: upload.id.to_string(),
                index,
                reason: Cause::ChecksumMismatch.as_str().into(),
            });
            return Err(bad(
                Cause::ChecksumMismatch,
                format!(
                    "chunk {index}: CRC-32C of the body is {:08x}, the header says {:08x}",
                    crc, header.crc32c
                ),
            ));
        }
        Ok(())
    }

    /// Puts the chunk in the window: `Ok(None)` when stored, `Ok(Some(200))`
    /// when it turned out to be on the drive already.
    fn store_chunk(
        &self,
        upload: &Upload,
        index: u32,
        frames: Vec<Bytes>,
    ) -> Result<Option<Reply>, Refusal> {
        let mut state = upload.lock();
        if state.phase != Phase::Receiving {
            return Err(Refusal::new(
                StatusCode::CONFLICT,
                Cause::UploadEnded,
                "the upload ended while the chunk arrived",
            ));
        }
        // Within a session the window only moves forward, but a new
        // drive session (after a 404) starts it again from chunk 0: a
        // chunk that was inside the window when its body started may be
        // beyond it now. It is refused like any chunk beyond the window.
        let hint = " (the drive session restarted)";
        if let Some(reply) = window_check(upload, &state, index, hint, self.inner.config.slip)? {
            return Ok(Some(reply));
        }
        state.window.insert(index, Chunk { frames });
        state.last_activity = self.now();
        upload.assert_buffered_within_window(&state);
        upload.publish(&state);
        Ok(None)
    }
}
