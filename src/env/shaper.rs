//! A link-rate shaper on a [`Clock`]: turmoil models latency, loss and
//! partitions but not bandwidth, so without this a 3.38 GB upload would take
//! no simulated time at all.
//!
//! A [`Link`] has a rate and a time until which it is busy. [`Shaped`] wraps
//! any byte stream and paces its writes on a link: each write of `n` bytes
//! occupies the link for `n / rate` seconds, and the next write (from any
//! stream on that link) waits until the link is free. Reads pass through
//! untouched (shape the other end to shape the other direction).
//! [`ShapedNetwork`] shapes every outgoing connection of a network on one
//! link.
//!
//! Invariants: the link is never busy for less than the bytes written imply
//! (no write is free), and pacing debt under [`SLACK`] is carried rather than
//! slept, because tokio's timer (and so turmoil's) resolves whole
//! milliseconds.

use super::{BoxConn, BoxFuture, Clock, Listener, Network};
use serde::{Deserialize, Serialize};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
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

/// Accumulated lateness under this is forgiven: a sleep that overshoots by
/// a simulation tick must not lower the link's rate over time.
const LATENESS_FORGIVEN: Duration = Duration::from_millis(20);

/// One link: a rate and the time until which it is busy. Shared by every
/// connection that crosses it, so parallel connections split the rate
/// instead of multiplying it.
pub struct Link {
    clock: Arc<dyn Clock>,
    rate: LinkRate,
    /// Clock time at which the link finishes sending what was written.
    busy_until: Mutex<Duration>,
}

impl Link {
    /// A link of `rate` on `clock`, idle now.
    pub fn new(clock: Arc<dyn Clock>, rate: LinkRate) -> Arc<Self> {
        let now = clock.now();
        Arc::new(Self {
            clock,
            rate,
            busy_until: Mutex::new(now),
        })
    }

    /// The link's rate.
    pub fn rate(&self) -> LinkRate {
        self.rate
    }

    /// How long the link stays busy from now (zero when idle).
    fn wait(&self) -> Duration {
        let busy_until = *self
            .busy_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        busy_until.saturating_sub(self.clock.now())
    }

    /// Books `bytes` of link time.
    fn book(&self, bytes: u64) {
        let now = self.clock.now();
        let mut busy_until = self
            .busy_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // 1. An idle link starts from now, minus a little forgiven lateness
        //    (a sleep that ended a tick late did not idle the link).
        let start = (*busy_until).max(now.saturating_sub(LATENESS_FORGIVEN));
        // 2. The bytes occupy the link for their transmission time.
        *busy_until = start + self.rate.time_for(bytes);
    }
}

/// A stream whose writes are paced by a shared [`Link`].
pub struct Shaped<T> {
    inner: T,
    link: Arc<Link>,
    /// The wait for the link, while one is in progress.
    sleep: Option<BoxFuture<'static, ()>>,
}

impl<T> Shaped<T> {
    /// Paces `inner`'s writes on `link`.
    pub fn new(inner: T, link: Arc<Link>) -> Self {
        Self {
            inner,
            link,
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
            let wait = this.link.wait();
            if wait > SLACK {
                this.sleep = Some(this.link.clock.sleep(wait));
                continue;
            }
            // 3. Hand at most a quantum to the inner stream, and book the
            //    link time for what it took.
            let len = buf.len().min(QUANTUM_BYTES);
            let written = ready!(Pin::new(&mut this.inner).poll_write(cx, &buf[..len]))?;
            this.link.book(written as u64);
            return Poll::Ready(Ok(written));
        }
    }

    /// Vectored writes are taken one slice at a time. Saying we support
    /// them matters: hyper then queues body frames instead of flattening
    /// them into its own buffer (a full extra copy of every byte).
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &b[..]);
        self.poll_write(cx, first)
    }

    fn is_write_vectored(&self) -> bool {
        true
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

/// A network whose outgoing connections all cross one shaped [`Link`]
/// (e.g. a home uplink). Accepted connections are not shaped: shape the
/// other side's network for the other direction.
pub struct ShapedNetwork {
    inner: Arc<dyn Network>,
    link: Arc<Link>,
}

impl ShapedNetwork {
    /// Shapes `inner`'s outgoing connections on `link`.
    pub fn new(inner: Arc<dyn Network>, link: Arc<Link>) -> Self {
        Self { inner, link }
    }
}

impl Network for ShapedNetwork {
    fn listen(&self, addr: &str) -> BoxFuture<'_, io::Result<Box<dyn Listener>>> {
        self.inner.listen(addr)
    }

    fn connect(&self, addr: &str) -> BoxFuture<'_, io::Result<BoxConn>> {
        let connecting = self.inner.connect(addr);
        let link = self.link.clone();
        Box::pin(async move {
            let conn = connecting.await?;
            Ok(Box::new(Shaped::new(conn, link)) as BoxConn)
        })
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
        let link = Link::new(clock.clone(), rate);
        // Two connections over one link share its rate.
        let mut a = Shaped::new(tokio::io::sink(), link.clone());
        let mut b = Shaped::new(tokio::io::sink(), link);
        let payload = vec![7u8; 1_500_000];
        let (ra, rb) = tokio::join!(a.write_all(&payload), b.write_all(&payload));
        ra?;
        rb?;
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
