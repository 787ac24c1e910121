//! Time: a monotonic clock, sleeping, and the UTC day (quotas roll over at
//! midnight UTC).
//!
//! Invariants: `now()` never goes backwards; `utc_day()` never goes backwards
//! for the simulated clocks (the real one follows the system's wall clock).

use super::BoxFuture;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds in a UTC day.
const DAY_SECONDS: u64 = 86_400;

/// A UTC calendar day, counted in days since 1970-01-01.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UtcDay(pub u32);

impl UtcDay {
    /// The day that contains `time`. Times before 1970 map to day 0.
    pub fn of(time: SystemTime) -> Self {
        let secs = time
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        // u32 days reach the year 11 million: saturate rather than wrap.
        Self(u32::try_from(secs / DAY_SECONDS).unwrap_or(u32::MAX))
    }

    /// The next day.
    pub fn next(self) -> Self {
        Self(self.0.saturating_add(1))
    }
}

impl fmt::Display for UtcDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "day {}", self.0)
    }
}

/// The clock trait: what business code may ask of time.
pub trait Clock: Send + Sync + 'static {
    /// Monotonic time since this clock's origin.
    fn now(&self) -> Duration;
    /// A future that completes after `duration` of this clock's time.
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()>;
    /// The current UTC time: the wall clock for real, the scenario's epoch
    /// plus simulated time in a simulation (so it never reaches a trace
    /// differently twice). For daily quotas and dates on the wire (tus's
    /// `Upload-Expires`).
    fn utc_now(&self) -> SystemTime;
    /// The current UTC day, for daily quotas.
    fn utc_day(&self) -> UtcDay {
        UtcDay::of(self.utc_now())
    }
}

impl dyn Clock {
    /// Runs `future` for at most `limit` of this clock's time: `None` if
    /// the limit passed first (the future is then dropped).
    pub async fn timeout<F: Future>(&self, limit: Duration, future: F) -> Option<F::Output> {
        let sleep = self.sleep(limit);
        tokio::select! {
            biased;
            out = future => Some(out),
            () = sleep => None,
        }
    }
}

/// tokio's clock. `real()` takes the day from the system's wall clock;
/// `virtual_from(epoch)` computes it from a fixed epoch plus tokio time, so
/// tests under `tokio::time::pause()` can roll days over deterministically.
#[derive(Debug, Clone)]
pub struct TokioClock {
    origin: tokio::time::Instant,
    /// `None`: the system's wall clock. `Some`: a fixed epoch at `origin`.
    epoch: Option<SystemTime>,
}

impl TokioClock {
    /// The production clock. Must be created inside a tokio runtime.
    pub fn real() -> Self {
        Self {
            origin: tokio::time::Instant::now(),
            epoch: None,
        }
    }

    /// A clock whose UTC day is `epoch` plus the tokio time elapsed since now.
    pub fn virtual_from(epoch: SystemTime) -> Self {
        Self {
            origin: tokio::time::Instant::now(),
            epoch: Some(epoch),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(duration))
    }

    fn utc_now(&self) -> SystemTime {
        match self.epoch {
            None => SystemTime::now(),
            Some(epoch) => epoch + self.now(),
        }
    }
}

/// The simulation clock: turmoil's simulated time, shared by every host, and
/// a scenario epoch for the UTC day. Sleeping uses tokio's timer, which
/// turmoil drives inside each host.
#[derive(Debug, Clone)]
pub struct SimClock {
    epoch: SystemTime,
}

impl SimClock {
    /// A clock whose simulated time zero is `epoch` (UTC).
    pub fn new(epoch: SystemTime) -> Self {
        Self { epoch }
    }
}

impl Clock for SimClock {
    fn now(&self) -> Duration {
        // Outside a simulation there is no simulated time; reaching here is
        // a wiring bug (a SimClock passed to real mode), not bad input.
        turmoil::sim_elapsed().expect("SimClock used outside a turmoil simulation")
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(duration))
    }

    fn utc_now(&self) -> SystemTime {
        self.epoch + self.now()
    }
}

/// A clock that moves only when told to ([`ManualClock::advance`]): for
/// hand-polled tests and state-machine models, where no runtime drives time.
/// Sleepers wake when an advance reaches their deadline.
#[derive(Clone)]
pub struct ManualClock {
    state: Arc<Mutex<ManualState>>,
}

struct ManualState {
    now: Duration,
    epoch: SystemTime,
    /// Pending sleeps by (deadline, id); ordered so wake order is fixed.
    sleepers: BTreeMap<(Duration, u64), Waker>,
    next_id: u64,
}

impl ManualClock {
    /// A clock at time zero, whose UTC day is taken from `epoch` + now.
    pub fn new(epoch: SystemTime) -> Self {
        Self {
            state: Arc::new(Mutex::new(ManualState {
                now: Duration::ZERO,
                epoch,
                sleepers: BTreeMap::new(),
                next_id: 0,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ManualState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves time forward by `by`, waking every sleep that is now due.
    pub fn advance(&self, by: Duration) {
        let due: Vec<Waker> = {
            let mut s = self.lock();
            s.now += by;
            let now = s.now;
            let later = s.sleepers.split_off(&(now, u64::MAX));
            std::mem::replace(&mut s.sleepers, later)
                .into_values()
                .collect()
        };
        due.into_iter().for_each(Waker::wake);
    }
}

impl Default for ManualClock {
    /// A clock at time zero whose days count from 1970-01-01.
    fn default() -> Self {
        Self::new(UNIX_EPOCH)
    }
}

struct ManualSleep {
    clock: ManualClock,
    deadline: Duration,
    id: u64,
}

impl Future for ManualSleep {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.clock.lock();
        if s.now >= self.deadline {
            return Poll::Ready(());
        }
        s.sleepers
            .insert((self.deadline, self.id), cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for ManualSleep {
    fn drop(&mut self) {
        self.clock.lock().sleepers.remove(&(self.deadline, self.id));
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        self.lock().now
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        let (deadline, id) = {
            let mut s = self.lock();
            s.next_id += 1;
            (s.now + duration, s.next_id)
        };
        Box::pin(ManualSleep {
            clock: self.clone(),
            deadline,
            id,
        })
    }

    fn utc_now(&self) -> SystemTime {
        let s = self.lock();
        s.epoch + s.now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_day_boundaries() {
        assert_eq!(UtcDay::of(UNIX_EPOCH), UtcDay(0));
        assert_eq!(
            UtcDay::of(UNIX_EPOCH + Duration::from_secs(DAY_SECONDS - 1)),
            UtcDay(0)
        );
        assert_eq!(
            UtcDay::of(UNIX_EPOCH + Duration::from_secs(DAY_SECONDS)),
            UtcDay(1)
        );
        assert_eq!(UtcDay::of(UNIX_EPOCH - Duration::from_secs(5)), UtcDay(0));
        assert_eq!(UtcDay(u32::MAX).next(), UtcDay(u32::MAX));
    }

    #[test]
    fn manual_clock_wakes_sleepers_when_advanced() {
        use std::task::Waker;
        let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(DAY_SECONDS - 1));
        let mut sleep = clock.sleep(Duration::from_millis(10));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(sleep.as_mut().poll(&mut cx).is_pending());
        clock.advance(Duration::from_millis(9));
        assert!(sleep.as_mut().poll(&mut cx).is_pending());
        assert_eq!(clock.utc_day(), UtcDay(0));
        clock.advance(Duration::from_millis(1));
        assert!(sleep.as_mut().poll(&mut cx).is_ready());
        clock.advance(Duration::from_secs(1));
        assert_eq!(clock.utc_day(), UtcDay(1));
    }

    #[tokio::test(start_paused = true)]
    async fn virtual_clock_rolls_the_day_over_at_midnight() {
        let epoch = UNIX_EPOCH + Duration::from_secs(20_000 * DAY_SECONDS + DAY_SECONDS - 10);
        let clock = TokioClock::virtual_from(epoch);
        assert_eq!(clock.utc_day(), UtcDay(20_000));
        clock.sleep(Duration::from_secs(9)).await;
        assert_eq!(clock.utc_day(), UtcDay(20_000));
        clock.sleep(Duration::from_secs(1)).await;
        assert_eq!(clock.utc_day(), UtcDay(20_001));
        assert_eq!(clock.now(), Duration::from_secs(10));
    }
}
