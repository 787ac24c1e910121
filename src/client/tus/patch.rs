//! One PATCH, and the races a simulation plays around it (tusd's known
//! trouble, on the client's own upload, each a [`Site`]):
//! - [`Site::TusHeadDuringPatch`]: a HEAD while the PATCH is in flight;
//!   its offset must not pass the PATCH's end (HEAD never counts a byte
//!   the PATCH has not delivered);
//! - [`Site::TusSamePatchTwice`]: a second PATCH of the same bytes at the
//!   same offset while the first is in flight; one takes over, the other
//!   is told `409` (`patch_superseded` or `offset_mismatch`), and the
//!   bytes are stored once (the drive's ranges and checksum say so);
//! - [`Site::TusPatchCut`]: the connection breaks after half the body
//!   (the body fails, so the request is cut mid-body, not answered); the
//!   backend keeps what arrived and HEAD says where to go on.

use super::{cause_of, header_u64, protocol, refused, PatchResult, TusUploader};
use crate::buggify::{self, Site};
use crate::chunk_api::Cause;
use crate::client::{ClientError, Inner, NoReply};
use crate::coverage::{hit, Probe};
use crate::env::BoxFuture;
use crate::payload::ChunkSource;
use crate::trace::Event;
use crate::tus::{header, BodyDigest, OFFSET_OCTET_STREAM};
use crate::wire::{ClientReply, FramesBody};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use http::{Method, StatusCode};
use hyper::body::{Body, Frame, SizeHint};
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// A PATCH body goes in frames of this size, so that a racing request's
/// writes interleave with it on a shaped link (one write at a time).
const FRAME_BYTES: usize = 64 * 1024;

/// How long a cut PATCH's connection stays up after its last frame before
/// it breaks: longer than any simulated one-way latency (80 ms), so what
/// was sent arrives first.
const CUT_AFTER: Duration = Duration::from_millis(200);

/// The most a racing request waits before it goes (drawn, seeded).
const RACE_DELAY_MAX: Duration = Duration::from_millis(20);

/// One PATCH's bytes and headers.
struct Patch {
    offset: u64,
    body: Bytes,
    headers: Vec<(&'static str, String)>,
}

impl TusUploader {
    /// Sends the bytes at `offset` (at most `patch_bytes`), maybe inside a
    /// race (see the module docs).
    pub(super) async fn patch(
        &self,
        location: &str,
        source: &dyn ChunkSource,
        offset: u64,
        patch_bytes: u64,
    ) -> PatchResult {
        let patch = match self.read(source, offset, patch_bytes) {
            Ok(patch) => patch,
            Err(e) => return PatchResult::Fatal(e),
        };
        let end = offset + patch.body.len() as u64;
        self.count_sent(location, &patch);
        let result = if buggify::fire(Site::TusPatchCut) {
            self.race(location, "patch_cut", offset);
            let cut = self.send_cut(location, &patch).await;
            if cut.is_err() {
                hit(Probe::TusPatchCut);
            }
            self.result(cut)
        } else if buggify::fire(Site::TusSamePatchTwice) {
            self.race(location, "same_patch_twice", offset);
            self.count_sent(location, &patch);
            let second = async {
                self.inner
                    .clock
                    .sleep(self.inner.jitter(RACE_DELAY_MAX))
                    .await;
                self.send(location, &patch).await
            };
            let (first, second) = tokio::join!(self.send(location, &patch), second);
            either(self.result(first), self.result(second))
        } else if buggify::fire(Site::TusHeadDuringPatch) {
            self.race(location, "head_during_patch", offset);
            let head = async {
                self.inner
                    .clock
                    .sleep(self.inner.jitter(RACE_DELAY_MAX))
                    .await;
                self.request(Method::HEAD, location, FramesBody::empty(), &[])
                    .await
            };
            let (reply, head) = tokio::join!(self.send(location, &patch), head);
            match head_within(head, end) {
                Ok(()) => self.result(reply),
                Err(e) => PatchResult::Fatal(e),
            }
        } else {
            let reply = self.send(location, &patch).await;
            self.result(reply)
        };
        if let PatchResult::Retry(reason) | PatchResult::Shrink(reason) = &result {
            self.inner.counters().chunk_failures += 1;
            self.inner.tracer.record(Event::TusPatchFailed {
                upload: location.to_owned(),
                offset,
                reason: reason.chars().take(120).collect(),
            });
        }
        result
    }

    /// The PATCH of the source's bytes at `offset`, read and digested now.
    fn read(
        &self,
        source: &dyn ChunkSource,
        offset: u64,
        patch_bytes: u64,
    ) -> Result<Patch, ClientError> {
        let size_bytes = source.size_bytes();
        assert!(offset < size_bytes, "a PATCH starts inside the file");
        let len = patch_bytes.min(size_bytes - offset);
        let len_usize = usize::try_from(len).map_err(|_| ClientError::Source {
            reason: format!("a PATCH of {len} bytes does not fit in memory"),
        })?;
        let mut buf = vec![0u8; len_usize];
        source
            .read_at(offset, &mut buf)
            .map_err(|e| ClientError::Source {
                reason: e.to_string(),
            })?;
        let mut headers = vec![
            ("content-type", OFFSET_OCTET_STREAM.to_owned()),
            (header::UPLOAD_OFFSET, offset.to_string()),
        ];
        if let Some(algorithm) = self.options.checksum {
            let mut digest = BodyDigest::new(algorithm);
            digest.update(&buf);
            let value = format!("{} {}", algorithm.name(), STANDARD.encode(digest.finish()));
            headers.push((header::UPLOAD_CHECKSUM, value));
        }
        Ok(Patch {
            offset,
            body: Bytes::from(buf),
            headers,
        })
    }

    /// Counts and records a PATCH about to go.
    fn count_sent(&self, location: &str, patch: &Patch) {
        let len_bytes = patch.body.len() as u64;
        {
            let mut c = self.inner.counters();
            c.chunks_sent += 1;
            c.sent_bytes += len_bytes;
        }
        self.inner.tracer.record(Event::TusPatch {
            upload: location.to_owned(),
            offset: patch.offset,
            len_bytes,
        });
    }

    /// Records a race about to be played.
    fn race(&self, location: &str, race: &str, offset: u64) {
        self.inner.tracer.record(Event::TusRace {
            upload: location.to_owned(),
            race: race.to_owned(),
            offset,
        });
    }

    /// Sends `patch` whole.
    async fn send(&self, location: &str, patch: &Patch) -> Result<ClientReply, NoReply> {
        let body = FramesBody::new(frames(&patch.body));
        self.request(Method::PATCH, location, body, &patch.headers)
            .await
    }

    /// Sends the first half of `patch` under a `Content-Length` of the
    /// whole, then breaks the connection.
    async fn send_cut(&self, location: &str, patch: &Patch) -> Result<ClientReply, NoReply> {
        let half = patch.body.slice(..patch.body.len() / 2);
        let body = CutBody {
            frames: frames(&half).into(),
            declared_bytes: patch.body.len() as u64,
            cut: self.inner.clock.sleep(CUT_AFTER),
        };
        self.request(Method::PATCH, location, body, &patch.headers)
            .await
    }

    /// What a PATCH's answer means.
    fn result(&self, reply: Result<ClientReply, NoReply>) -> PatchResult {
        let reply = match reply {
            Ok(reply) => reply,
            Err(NoReply::Transient(e)) => return PatchResult::Retry(e),
            Err(NoReply::Fatal(e)) => return PatchResult::Fatal(e),
        };
        let cause = cause_of(&reply);
        if cause == Cause::PatchSuperseded {
            hit(Probe::TusPatchSuperseded);
        }
        match reply.status {
            StatusCode::NO_CONTENT => match header_u64(&reply, header::UPLOAD_OFFSET) {
                Ok(offset) => PatchResult::Moved(offset),
                Err(e) => PatchResult::Fatal(e),
            },
            StatusCode::PAYLOAD_TOO_LARGE if cause == Cause::ChecksumBodyTooLarge => {
                PatchResult::Shrink(Inner::error_of(&reply).to_string())
            }
            // Someone else's bytes, a lock, an ending: HEAD says which.
            StatusCode::CONFLICT | StatusCode::LOCKED | StatusCode::GONE => {
                PatchResult::Retry(Inner::error_of(&reply).to_string())
            }
            // Busy, resuming, no room, damaged on the way: again later.
            _ if Inner::transient_reply(&reply) || cause == Cause::ChecksumMismatch => {
                PatchResult::Retry(Inner::error_of(&reply).to_string())
            }
            _ => PatchResult::Fatal(refused(&reply)),
        }
    }
}

/// `body` in frames of [`FRAME_BYTES`] (slices, never copies).
fn frames(body: &Bytes) -> Vec<Bytes> {
    (0..body.len())
        .step_by(FRAME_BYTES)
        .map(|at| body.slice(at..(at + FRAME_BYTES).min(body.len())))
        .collect()
}

/// The better of two racing PATCHes' results: a move (the farther one),
/// else a reason to stop, else one to shrink, else one to retry.
fn either(a: PatchResult, b: PatchResult) -> PatchResult {
    use PatchResult::{Fatal, Moved, Retry, Shrink};
    match (a, b) {
        (Moved(x), Moved(y)) => Moved(x.max(y)),
        (Moved(x), _) | (_, Moved(x)) => Moved(x),
        (Fatal(e), _) | (_, Fatal(e)) => Fatal(e),
        (Shrink(r), _) | (_, Shrink(r)) => Shrink(r),
        (Retry(r), Retry(_)) => Retry(r),
    }
}

/// A HEAD answered during a PATCH that ends at `end`: its offset must not
/// pass that end (nothing else writes this upload).
fn head_within(head: Result<ClientReply, NoReply>, end: u64) -> Result<(), ClientError> {
    let Ok(reply) = head else { return Ok(()) };
    if reply.status != StatusCode::OK {
        return Ok(());
    }
    hit(Probe::TusHeadDuringPatch);
    let offset = header_u64(&reply, header::UPLOAD_OFFSET)?;
    if offset > end {
        return Err(protocol(format!(
            "a HEAD during a PATCH ending at {end} reported offset {offset}: it counted bytes nobody sent"
        )));
    }
    Ok(())
}

/// Why a cut body stops.
#[derive(Debug, thiserror::Error)]
#[error("the PATCH was cut off mid-body (simulated disconnect)")]
struct PatchCut;

/// A body that sends its frames, waits for `cut`, then fails, under a
/// `Content-Length` of `declared_bytes`: hyper then closes the connection
/// mid-body, as a client that disconnects does.
struct CutBody {
    frames: VecDeque<Bytes>,
    /// The whole PATCH's length (more than the frames hold).
    declared_bytes: u64,
    /// Completes when the connection is to break.
    cut: BoxFuture<'static, ()>,
}

impl Body for CutBody {
    type Data = Bytes;
    type Error = PatchCut;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, PatchCut>>> {
        let this = self.get_mut();
        if let Some(data) = this.frames.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        match this.cut.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(PatchCut))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        false
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.declared_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_cover_the_body_in_order() {
        let body = Bytes::from(vec![7u8; 2 * FRAME_BYTES + 5]);
        let f = frames(&body);
        assert_eq!(
            f.iter().map(Bytes::len).collect::<Vec<_>>(),
            [FRAME_BYTES, FRAME_BYTES, 5]
        );
        assert!(frames(&Bytes::new()).is_empty());
    }

    #[test]
    fn a_move_wins_a_race_and_the_farther_one_wins_two() {
        let retry = || PatchResult::Retry("409".into());
        assert!(matches!(
            either(retry(), PatchResult::Moved(5)),
            PatchResult::Moved(5)
        ));
        assert!(matches!(
            either(PatchResult::Moved(3), PatchResult::Moved(9)),
            PatchResult::Moved(9)
        ));
        assert!(matches!(either(retry(), retry()), PatchResult::Retry(_)));
    }

    /// This is a regression test that ensures the client's HEAD-during-PATCH
    /// check fails on a HEAD that counts bytes past the PATCH's end.
    #[test]
    fn a_head_past_the_patch_is_refused() {
        let head = |offset: u64| {
            let mut headers = http::HeaderMap::new();
            headers.insert(header::UPLOAD_OFFSET, offset.into());
            Ok(ClientReply {
                status: StatusCode::OK,
                headers,
                body: Bytes::new(),
            })
        };
        assert!(head_within(head(100), 100).is_ok());
        assert!(matches!(
            head_within(head(101), 100),
            Err(ClientError::Protocol { .. })
        ));
    }
}
