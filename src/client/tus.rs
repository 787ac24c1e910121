//! A tus 1.0.0 client for upsim's `/files/` endpoint: the second client
//! kind of the simulation (`sim::Protocol::Tus`), usable in real mode too,
//! on the same [`Network`], [`Clock`], retry policy, seeded jitter and
//! [`Tracer`] as the chunk client ([`Uploader`](super::Uploader)), whose
//! request plumbing it shares.
//!
//! # Implementation Details
//!
//! It does what tus-js-client does:
//! 1. creates the upload (`POST /files` with `Upload-Length` and the file
//!    name in `Upload-Metadata`), retrying transient refusals as the chunk
//!    client retries its create;
//! 2. PATCHes the bytes from the offset in requests of
//!    [`TusOptions::patch_bytes`] (`application/offset+octet-stream`,
//!    `Upload-Checksum` if asked), one at a time;
//! 3. after anything but a `204` — no reply, a cut connection, `409`,
//!    `423`, `5xx` — backs off (seeded full jitter) and asks `HEAD` where
//!    the upload stands, then goes on from that `Upload-Offset`;
//! 4. once the offset is the length, asks `HEAD` until the upload is
//!    complete on the drive and reads the drive's file (with its checksum)
//!    from upsim's `Upsim-File` header, or its failure from `410`.
//!
//! It gives up when nothing moved for `stall_limit`; refusals that waiting
//! cannot fix end it at once with the backend's typed cause. In a
//! simulation, three fault points ([`patch`]) play tusd's known races on
//! the client's own upload: a HEAD during its PATCH, a second PATCH at the
//! same offset, a PATCH cut off mid-body.
//!
//! Invariant: every PATCH starts at an offset the backend named (created:
//! 0; a `204`'s or a HEAD's `Upload-Offset`), and its bytes are read from
//! the source at that offset just before sending.

use super::{ms, ClientError, Inner, NoReply, ProgressFn, UploadOutcome, Uploader};
use super::{ClientAuth, ClientConfig, Progress};
use crate::chunk_api::{Cause, UploadedFile};
use crate::env::{Clock, Network};
use crate::payload::ChunkSource;
use crate::trace::{Event, Tracer};
use crate::tus::{header, ChecksumAlgorithm, TUS_VERSION};
use crate::wire::{ClientReply, FramesBody};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use http::{Method, StatusCode};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

mod patch;

/// The most `HEAD`s a client sends while the drive finishes an upload
/// whose bytes are all there, before it gives up (at `status_poll` each:
/// with the default 1 s, an hour).
const FINISH_POLLS_MAX: u32 = 3_600;

/// How a tus client cuts and checks its PATCHes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TusOptions {
    /// Bytes per PATCH (the last one may be shorter); at least 1.
    pub patch_bytes: u64,
    /// `Upload-Checksum` on every PATCH in this algorithm, if any.
    pub checksum: Option<ChecksumAlgorithm>,
}

/// The tus client.
pub struct TusUploader {
    inner: Arc<Inner>,
    options: TusOptions,
}

/// Where an upload stands, as HEAD said.
enum Standing {
    /// Still taking bytes, from this offset.
    At(u64),
    /// Every byte is there; the drive has not finished the file yet.
    Finishing,
    /// Complete: the drive's file.
    Complete(UploadedFile),
}

/// What one PATCH (or one race around it) came to.
enum PatchResult {
    /// `204`: the upload's offset now.
    Moved(u64),
    /// Worth another try, after HEAD: the reason, for the record.
    Retry(String),
    /// The checksummed body was larger than the window holds before it is
    /// verified: send smaller PATCHes.
    Shrink(String),
    /// Stop now.
    Fatal(ClientError),
}

impl TusUploader {
    /// A tus client on `net` and `clock`; `progress`, if given, is told the
    /// offset after every PATCH and HEAD (as committed bytes: the bytes the
    /// backend holds for good).
    ///
    /// # Panics
    /// If `options.patch_bytes` is 0.
    pub fn new(
        net: Arc<dyn Network>,
        clock: Arc<dyn Clock>,
        config: ClientConfig,
        options: TusOptions,
        tracer: Tracer,
        progress: Option<ProgressFn>,
    ) -> Self {
        assert!(
            options.patch_bytes > 0,
            "TusOptions::patch_bytes must be ≥ 1"
        );
        let Uploader { inner } = Uploader::new(net, clock, config, tracer, progress);
        Self { inner, options }
    }

    /// Uploads `source` through tus: creates it, PATCHes it, resumes it
    /// from HEAD after any failure, and returns the drive's file.
    pub async fn upload(&self, source: Arc<dyn ChunkSource>) -> Result<UploadOutcome, ClientError> {
        let started = self.inner.clock.now();
        let location = self.create(&*source).await;
        let result = match location {
            Ok(location) => {
                let admitted_after_ms = ms(self.inner.clock.now().saturating_sub(started));
                let result = self.finish(&location, &*source).await;
                if let Err(
                    ClientError::GaveUp { .. }
                    | ClientError::Protocol { .. }
                    | ClientError::Source { .. },
                ) = &result
                {
                    // Termination, best effort: the slot is freed now
                    // rather than at the upload's expiry.
                    let _ = self
                        .request(Method::DELETE, &location, FramesBody::empty(), &[])
                        .await;
                }
                result.map(|o| UploadOutcome {
                    admitted_after_ms,
                    ..o
                })
            }
            Err(e) => Err(e),
        };
        let outcome = match &result {
            Ok(o) => format!("complete {}", o.file.digest().unwrap_or("-")),
            Err(e) => format!("error {e}"),
        };
        self.inner.tracer.record(Event::ClientDone { outcome });
        result
    }

    /// A request with `Tus-Resumable` and the client's credentials.
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
        let mut headers: Vec<(&str, String)> =
            vec![(header::TUS_RESUMABLE, TUS_VERSION.to_owned())];
        headers.extend(extra.iter().cloned());
        self.inner.request(method, path, body, &headers).await
    }

    /// `POST /files`: the upload's path (`Location`), retried on transient
    /// refusals until nothing changed for `stall_limit`.
    async fn create(&self, source: &dyn ChunkSource) -> Result<String, ClientError> {
        let metadata = format!("filename {}", STANDARD.encode(source.name()));
        // One token for every attempt of this creation (upsim's extension:
        // a retry after a lost 201 gets the same upload).
        let token = {
            let mut rng = self
                .inner
                .rng
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            crate::ids::seeded_id(&mut *rng)
        };
        let headers = [
            (header::UPLOAD_LENGTH, source.size_bytes().to_string()),
            (header::UPLOAD_METADATA, metadata),
            (header::UPSIM_CLIENT_TOKEN, token),
        ];
        let started = self.inner.clock.now();
        let (mut attempt, mut last_error) = (0u32, String::new());
        while self.inner.clock.now().saturating_sub(started) <= self.inner.config.stall_limit {
            let reply = self
                .request(Method::POST, "/files", FramesBody::empty(), &headers)
                .await;
            let wait_at_least = match reply {
                Ok(reply) if reply.status == StatusCode::CREATED => return location(&reply),
                Ok(reply) if Inner::transient_reply(&reply) => {
                    last_error = Inner::error_of(&reply).to_string();
                    Inner::retry_after(&reply)
                }
                Ok(reply) => return Err(Inner::error_of(&reply)),
                Err(NoReply::Fatal(e)) => return Err(e),
                Err(NoReply::Transient(e)) => {
                    last_error = e;
                    Duration::ZERO
                }
            };
            attempt += 1;
            self.back_off("tus_create", attempt, wait_at_least).await;
        }
        Err(ClientError::GaveUp {
            stalled_ms: ms(self.inner.clock.now().saturating_sub(started)),
            last_error: format!("no tus upload created after {attempt} attempts: {last_error}"),
        })
    }

    /// Steps 2–4 of the module docs, from offset 0 of a fresh upload.
    async fn finish(
        &self,
        location: &str,
        source: &dyn ChunkSource,
    ) -> Result<UploadOutcome, ClientError> {
        let size_bytes = source.size_bytes();
        let mut patch_bytes = self.options.patch_bytes;
        let mut offset = Some(0u64);
        let mut last_progress = self.inner.clock.now();
        let (mut quiet, mut polls) = (0u32, 0u32);
        let mut last_error = String::from("none");
        loop {
            let stalled = self.inner.clock.now().saturating_sub(last_progress);
            if stalled > self.inner.config.stall_limit || polls > FINISH_POLLS_MAX {
                return Err(ClientError::GaveUp {
                    stalled_ms: ms(stalled),
                    last_error,
                });
            }
            let at = match offset {
                Some(at) => at,
                None => match self.head(location, size_bytes, quiet > 0).await? {
                    Ok(Standing::At(at)) => at,
                    Ok(Standing::Finishing) => {
                        polls += 1;
                        self.inner.clock.sleep(self.inner.config.status_poll).await;
                        continue;
                    }
                    Ok(Standing::Complete(file)) => return Ok(self.outcome(location, file)),
                    Err(transient) => {
                        (last_error, quiet) = (transient, quiet + 1);
                        self.back_off("tus_head", quiet, Duration::ZERO).await;
                        continue;
                    }
                },
            };
            if at >= size_bytes {
                offset = None;
                continue;
            }
            match self.patch(location, source, at, patch_bytes).await {
                PatchResult::Moved(now) => {
                    self.report(now, size_bytes);
                    // Progress is a PATCH that moved the offset on (after
                    // a new drive session the offset starts again at 0:
                    // moving on from there is progress too).
                    if now > at {
                        (last_progress, quiet) = (self.inner.clock.now(), 0);
                    }
                    // A smaller PATCH got through: grow back, up to the
                    // size asked for.
                    patch_bytes = patch_bytes.saturating_mul(2).min(self.options.patch_bytes);
                    offset = Some(now);
                }
                PatchResult::Shrink(reason) => {
                    patch_bytes = (patch_bytes / 2).max(1);
                    (last_error, offset) = (reason, None);
                }
                PatchResult::Retry(reason) => {
                    (last_error, offset, quiet) = (reason, None, quiet + 1);
                    self.back_off("tus_patch", quiet, Duration::ZERO).await;
                }
                PatchResult::Fatal(e) => return Err(e),
            }
        }
    }

    /// `HEAD`: where the upload stands; `Err` of the outer result ends the
    /// upload, `Err` of the inner one is worth another try. `resuming`:
    /// the last PATCH failed (a resume from HEAD, counted).
    async fn head(
        &self,
        location: &str,
        size_bytes: u64,
        resuming: bool,
    ) -> Result<Result<Standing, String>, ClientError> {
        let reply = match self
            .request(Method::HEAD, location, FramesBody::empty(), &[])
            .await
        {
            Ok(reply) => reply,
            Err(NoReply::Transient(e)) => return Ok(Err(e)),
            Err(NoReply::Fatal(e)) => return Err(e),
        };
        match reply.status {
            StatusCode::OK => {}
            StatusCode::GONE => return Err(ended(&reply)),
            _ if Inner::transient_reply(&reply) || reply.status == StatusCode::LOCKED => {
                return Ok(Err(format!("HEAD answered {}", reply.status)))
            }
            _ => return Err(refused(&reply)),
        }
        let offset = header_u64(&reply, header::UPLOAD_OFFSET)?;
        if offset > size_bytes {
            return Err(protocol(format!(
                "HEAD says {offset} bytes are held of a {size_bytes}-byte file"
            )));
        }
        self.report(offset, size_bytes);
        if offset < size_bytes {
            if resuming {
                crate::coverage::hit(crate::coverage::Probe::TusResumedFromHead);
            }
            return Ok(Ok(Standing::At(offset)));
        }
        let Some(file) = reply.headers.get(header::UPSIM_FILE) else {
            return Ok(Ok(Standing::Finishing));
        };
        let file = STANDARD
            .decode(file.as_bytes())
            .ok()
            .and_then(|json| serde_json::from_slice::<UploadedFile>(&json).ok())
            .ok_or_else(|| protocol("an Upsim-File header that is not a file resource".into()))?;
        Ok(Ok(Standing::Complete(file)))
    }

    /// The finished upload's outcome.
    fn outcome(&self, location: &str, file: UploadedFile) -> UploadOutcome {
        let c = self.inner.counters();
        let id = location.trim_start_matches(crate::tus::FILES_PATH);
        UploadOutcome {
            user: match &self.inner.config.auth {
                ClientAuth::UserHeader(user) => Some(user.clone()),
                ClientAuth::Bearer(_) => None,
            },
            upload_id: crate::ids::UploadId::new(id),
            file,
            chunks_sent: c.chunks_sent,
            chunk_failures: c.chunk_failures,
            sent_bytes: c.sent_bytes,
            rounds: 0,
            admitted_after_ms: 0,
        }
    }

    /// Tells the progress callback, if any, that `offset` bytes are held.
    fn report(&self, offset: u64, size_bytes: u64) {
        if let Some(report) = &self.inner.progress {
            report(Progress {
                committed_bytes: offset,
                sent_bytes: self.inner.counters().sent_bytes,
                total_bytes: size_bytes,
            });
        }
    }

    /// Sleeps a seeded full-jitter backoff (at least `wait_at_least`).
    async fn back_off(&self, what: &str, attempt: u32, wait_at_least: Duration) {
        let ceiling = self
            .inner
            .config
            .retry
            .backoff_ceiling(attempt.saturating_sub(1));
        let backoff = self.inner.jitter(ceiling).max(wait_at_least);
        crate::coverage::hit(crate::coverage::Probe::ClientBackoff);
        self.inner.tracer.record(Event::Backoff {
            what: what.into(),
            attempt,
            backoff_ms: ms(backoff),
        });
        self.inner.clock.sleep(backoff).await;
    }
}

/// The upload's path from a `201`'s `Location` (absolute or a path).
fn location(reply: &ClientReply) -> Result<String, ClientError> {
    let value = reply
        .headers
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| protocol("201 without a Location".into()))?;
    let path = match value.find(crate::tus::FILES_PATH) {
        Some(at) => &value[at..],
        None => return Err(protocol(format!("Location {value:?} is not under /files/"))),
    };
    if path.len() == crate::tus::FILES_PATH.len() {
        return Err(protocol(format!("Location {value:?} names no upload")));
    }
    Ok(path.to_owned())
}

/// A number header of a reply.
fn header_u64(reply: &ClientReply, name: &str) -> Result<u64, ClientError> {
    reply
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| protocol(format!("{} without a numeric {name}", reply.status)))
}

fn protocol(reason: String) -> ClientError {
    ClientError::Protocol { reason }
}

/// The cause of a refusal: the JSON body's, else `Upsim-Cause` (a reply
/// to HEAD has no body).
fn cause_of(reply: &ClientReply) -> Cause {
    match Inner::cause(reply) {
        Cause::Unknown => reply
            .headers
            .get(header::UPSIM_CAUSE)
            .and_then(|v| v.to_str().ok())
            .map_or(Cause::Unknown, Cause::parse),
        cause => cause,
    }
}

/// A refusal that waiting will not fix.
fn refused(reply: &ClientReply) -> ClientError {
    match Inner::error_of(reply) {
        ClientError::Refused {
            status, message, ..
        } => ClientError::Refused {
            status,
            cause: cause_of(reply),
            message,
        },
        other => other,
    }
}

/// `410`: the upload ended without completing; its cause.
fn ended(reply: &ClientReply) -> ClientError {
    ClientError::UploadFailed {
        cause: cause_of(reply),
        message: format!("the upload has ended ({})", reply.status),
    }
}
