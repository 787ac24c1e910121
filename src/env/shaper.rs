//! A link-rate shaper on a [`Clock`]: turmoil models latency, loss and
//! partitions but not bandwidth, so without this a 3.38 GB upload would take
//! no simulated time at all.
//!
//! [`Shaped`] wraps any byte stream and paces its writes: each write of `n`
//! bytes occupies the link for `n / rate` seconds, and the next write waits
//! until the link is free. Reads pass through untouched (shape the other end
//! to shape the other direction).
//!
//! Invariants: the link is never busy for less than the bytes written imply
//! (no write is free), and pacing debt under [`SLACK`] is carried rather than
//! slept, because tokio's timer (and so turmoil's) resolves whole
//! milliseconds.

use super::{BoxFuture, Clock};
use serde::{Deserialize, Serialize};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Largest write passed through at once, so that pacing stays smooth: one
/// quantum at 10 Mbit/s is 0.2 s of link time.
const QUANTUM_BYTES: usize = 256 * 1024;

/// Debt smaller than this is carried to the next write instead of slept.
const SLACK: Duration = Duration::from_millis(1);

/// A link rate in bytes per second. Never zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct LinkRate(u64);

/// A link rate of zero was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a link rate must be at least 1 byte per second")]
pub struct ZeroLinkRate;

impl LinkRate {
    /// `bytes_per_second`, which must not be zero.
    pub fn bytes_per_second(bytes_per_second: u64) -> Result<Self, ZeroLinkRate> {
        if bytes_per_second == 0 {
            Err(ZeroLinkRate)
        } else {
            Ok(Self(bytes_per_second))
        }
    }

    /// `mbit` megabits (10^6 bits) per second, which must not be zero.
    pub fn mbit_per_second(mbit: u64) -> Result<Self, ZeroLinkRate> {
        Self::bytes_per_second(mbit.saturating_mul(125_000))
    }

    /// The rate in bytes per second.
    pub fn get(self) -> u64 {
        self.0
    }

    /// How long `bytes` occupy the link.
    pub fn time_for(self, bytes: u64) -> Duration {
        let nanos = u128::from(bytes) * 1_000_000_000 / u128::from(self.0);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

impl TryFrom<u64> for LinkRate {
    type Error = ZeroLinkRate;
    fn try_from(value: u64) -> Result<Self, Self::Error> {
        Self::bytes_per_second(value)
    }
}

impl From<LinkRate> for u64 {
    fn from(value: LinkRate) -> Self {
        value.0
    }
}

/// A stream whose writes are paced at a [`LinkRate`].
pub struct Shaped<T> {
    inner: T,
    clock: Arc<dyn Clock>,
    rate: LinkRate,
    /// Clock time at which the link finishes sending what was written.
    busy_until: Duration,
    /// The wait for the link, while one is in progress.
    sleep: Option<BoxFuture<'static, ()>>,
}

impl<T> Shaped<T> {
    /// Paces `inner`'s writes at `rate` on `clock`.
    pub fn new(inner: T, clock: Arc<dyn Clock>, rate: LinkRate) -> Self {
        let now = clock.now();
        Self {
            inner,
            clock,
            rate,
            busy_until: now,
            sleep: None,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Shaped<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        loop {
            // 1. Finish any wait for the link already in progress.
            if let Some(sleep) = this.sleep.as_mut() {
                ready!(sleep.as_mut().poll(cx));
                this.sleep = None;
            }
            // 2. If the link is still busy beyond the slack, wait for it.
            let now = this.clock.now();
            if this.busy_until > now + SLACK {
                this.sleep = Some(this.clock.sleep(this.busy_until - now));
                continue;
            }
            // 3. Hand at most a quantum to the inner stream, and book the
            //    link time for what it took.
            let len = buf.len().min(QUANTUM_BYTES);
            let written = ready!(Pin::new(&mut this.inner).poll_write(cx, &buf[..len]))?;
            this.busy_until = this.busy_until.max(now) + this.rate.time_for(written as u64);
            return Poll::Ready(Ok(written));
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Shaped<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::TokioClock;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn rates_convert() {
        assert_eq!(
            LinkRate::mbit_per_second(8).map(LinkRate::get),
            Ok(1_000_000)
        );
        assert_eq!(LinkRate::bytes_per_second(0), Err(ZeroLinkRate));
        let rate = LinkRate::bytes_per_second(1_000_000).expect("non-zero");
        assert_eq!(rate.time_for(500_000), Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn writes_take_the_time_their_bytes_imply() -> io::Result<()> {
        let clock: Arc<dyn Clock> = Arc::new(TokioClock::virtual_from(std::time::UNIX_EPOCH));
        let rate = LinkRate::bytes_per_second(1_000_000).expect("non-zero");
        let mut shaped = Shaped::new(tokio::io::sink(), clock.clone(), rate);
        let payload = vec![7u8; 3_000_000];
        shaped.write_all(&payload).await?;
        // The last quantum is booked but not waited for: within one quantum.
        let elapsed = clock.now();
        let quantum = rate.time_for(QUANTUM_BYTES as u64);
        assert!(
            elapsed + quantum + SLACK >= Duration::from_secs(3),
            "{elapsed:?}"
        );
        assert!(elapsed <= Duration::from_secs(3), "{elapsed:?}");
        Ok(())
    }
}
