//! Reading a request body: frame by frame with an idle timeout
//! ([`RequestBody`]), the bounded initiation body ([`read_metadata`]), and
//! draining what a refused request left unread.
//!
//! Why a timeout between frames: a partitioned turmoil link drops segments
//! silently, so a body that stalls would otherwise hold its session forever.

use super::config::METADATA_BYTES_MAX;
use super::replies::Refusal;
use crate::env::Clock;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};
use std::time::Duration;

/// What reading the next piece of a body gave.
pub(super) enum BodyEvent {
    Data(Bytes),
    End,
    Broken(String),
}

/// A request body read with an idle timeout, that stays ended once ended.
pub(super) struct RequestBody {
    body: Incoming,
    ended: bool,
}

impl RequestBody {
    pub(super) fn new(body: Incoming) -> Self {
        Self { body, ended: false }
    }

    /// The next frame's data, the end, or why the body broke (an error, or
    /// nothing for `idle_timeout`).
    pub(super) async fn next(&mut self, clock: &dyn Clock, idle_timeout: Duration) -> BodyEvent {
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
    pub(super) async fn drain(&mut self, clock: &dyn Clock, idle_timeout: Duration) -> u64 {
        let mut drained_bytes = 0u64;
        while let BodyEvent::Data(data) = self.next(clock, idle_timeout).await {
            drained_bytes = drained_bytes.saturating_add(data.len() as u64);
        }
        drained_bytes
    }
}

/// Reads an initiation body of at most [`METADATA_BYTES_MAX`] (413 beyond,
/// judged first by the declared length, then by what arrives).
pub(super) async fn read_metadata(
    body: Incoming,
    clock: &dyn Clock,
    idle_timeout: Duration,
) -> Result<Vec<u8>, Refusal> {
    read_small_body(body, clock, idle_timeout, METADATA_BYTES_MAX, "metadata").await
}

/// Reads a whole body of at most `len_bytes_max` (413 beyond, judged first
/// by the declared length, then by what arrives); `what` names it in a
/// refusal.
pub(super) async fn read_small_body(
    body: Incoming,
    clock: &dyn Clock,
    idle_timeout: Duration,
    len_bytes_max: u64,
    what: &str,
) -> Result<Vec<u8>, Refusal> {
    let too_big = |len: u64| {
        Refusal::new(
            413,
            format!("{what} of {len} bytes exceeds the {len_bytes_max}-byte limit"),
        )
        .closing()
    };
    let declared_len = body.size_hint().lower();
    if declared_len > len_bytes_max {
        return Err(too_big(declared_len));
    }
    let mut body = RequestBody::new(body);
    let mut bytes = Vec::new();
    loop {
        match body.next(clock, idle_timeout).await {
            BodyEvent::Data(data) => {
                let len = (bytes.len() as u64).saturating_add(data.len() as u64);
                if len > len_bytes_max {
                    return Err(too_big(len));
                }
                bytes.extend_from_slice(&data);
            }
            BodyEvent::End => return Ok(bytes),
            BodyEvent::Broken(reason) => {
                return Err(Refusal::new(400, format!("{what} body broke: {reason}")))
            }
        }
    }
}
