//! One PATCH at a time per tus upload, and how a newer PATCH takes over
//! from an older one.
//!
//! # Implementation Details
//!
//! tusd's known trouble is a PATCH that the server still believes running
//! after its client gave up on it (a proxy that kept the connection, a
//! half-open TCP connection, tusd #1041): the client comes back, asks HEAD
//! and PATCHes again, and is told the upload is locked until the old
//! request times out. Here a PATCH that finds the upload held *asks the
//! holder to stop* (a `watch` flag the holder checks between frames and
//! while it waits for room) and waits, at most [`TAKEOVER_WAIT_MAX`], for
//! the holder's guard to drop; the holder keeps every verified byte it
//! stored, answers 409 `patch_superseded`, and lets go. The newcomer then
//! checks its `Upload-Offset` against the offset as the holder left it, so
//! two PATCHes at the same offset store their bytes once: the second finds
//! the first's bytes and gets 409 `offset_mismatch` (HEAD says where to go
//! on). A holder that does not let go in time (it cannot: it is between
//! two awaits that do not watch the flag) leaves the newcomer a 423
//! `upload_locked` with `Retry-After`. The guard is released in `Drop`, so
//! a PATCH that ends in any way, its client's disconnect and its task's
//! cancellation included, never leaves the upload locked.

use crate::env::Clock;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// Longest a PATCH waits for the PATCH holding its upload to stop. The
/// holder looks at its stop flag between body frames and while waiting
/// for room, so it lets go within a frame's time; a second is plenty on
/// any link that moves at all.
pub(super) const TAKEOVER_WAIT_MAX: Duration = Duration::from_secs(3);

/// The lock of one tus upload's PATCHes.
#[derive(Debug, Default)]
pub(crate) struct PatchLock {
    state: Mutex<LockState>,
    /// Told when a guard drops.
    released: Notify,
}

#[derive(Debug, Default)]
struct LockState {
    /// The PATCH holding the upload, if any.
    holder: Option<Holder>,
    /// The id the next guard gets (ids tell a guard's own holder record
    /// from a later one's).
    next_id: u64,
}

#[derive(Debug)]
struct Holder {
    id: u64,
    /// Set to ask the holder to stop.
    stop: watch::Sender<bool>,
}

/// Held by the PATCH that may write the upload; released on drop.
#[must_use = "the upload is locked only while the guard lives"]
pub(crate) struct PatchGuard<'a> {
    lock: &'a PatchLock,
    id: u64,
    /// Turns true when a newer PATCH asks this one to stop.
    stop: watch::Receiver<bool>,
}

/// The upload stayed locked for the whole wait.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("another PATCH of this upload is running and did not stop within {waited_ms} ms")]
pub(crate) struct Locked {
    /// How long the newcomer waited.
    pub waited_ms: u64,
}

impl PatchLock {
    fn state(&self) -> MutexGuard<'_, LockState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the lock, asking a holder to stop and waiting for it at most
    /// `wait_max` of `clock`'s time.
    ///
    /// # Cancel safety
    /// Dropping the future takes nothing (the holder, if asked, stops
    /// anyway: it was superseded by a request that gave up).
    ///
    /// # Errors
    /// [`Locked`] if the holder did not let go in time.
    pub async fn acquire(
        &self,
        clock: &dyn Clock,
        wait_max: Duration,
    ) -> Result<PatchGuard<'_>, Locked> {
        let started = clock.now();
        loop {
            // Enabled before the check, so a release in between is seen.
            let released = self.released.notified();
            let mut released = std::pin::pin!(released);
            released.as_mut().enable();
            {
                let mut state = self.state();
                match &state.holder {
                    None => {
                        let id = state.next_id;
                        state.next_id += 1;
                        let (stop, stopped) = watch::channel(false);
                        state.holder = Some(Holder { id, stop });
                        return Ok(PatchGuard {
                            lock: self,
                            id,
                            stop: stopped,
                        });
                    }
                    Some(holder) => {
                        holder.stop.send_replace(true);
                    }
                }
            }
            let waited = clock.now().saturating_sub(started);
            if waited >= wait_max {
                return Err(Locked {
                    waited_ms: u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
                });
            }
            tokio::select! {
                biased;
                () = released => {}
                () = clock.sleep(wait_max - waited) => {}
            }
        }
    }

    /// Whether a PATCH holds the upload now.
    #[cfg(test)]
    pub fn is_held(&self) -> bool {
        self.state().holder.is_some()
    }
}

impl PatchGuard<'_> {
    /// Completes once a newer PATCH asks this one to stop (at once if it
    /// already has).
    pub async fn stop_asked(&mut self) {
        // An error means the lock's record of this holder is gone, which
        // only a newer holder does: stop as well.
        let _ = self.stop.wait_for(|stop| *stop).await;
    }
}

impl Drop for PatchGuard<'_> {
    fn drop(&mut self) {
        let mut state = self.lock.state();
        if state.holder.as_ref().is_some_and(|h| h.id == self.id) {
            state.holder = None;
        }
        drop(state);
        self.lock.released.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::TokioClock;

    #[tokio::test(start_paused = true)]
    async fn a_newcomer_stops_the_holder_and_takes_over() {
        let clock = TokioClock::real();
        let lock = PatchLock::default();
        let mut first = lock.acquire(&clock, TAKEOVER_WAIT_MAX).await.expect("free");
        assert!(lock.is_held());
        let second = async {
            let guard = lock.acquire(&clock, TAKEOVER_WAIT_MAX).await;
            guard.map(|g| g.id)
        };
        let holder = async {
            first.stop_asked().await;
            drop(first);
        };
        let (second, ()) = tokio::join!(second, holder);
        assert_eq!(second, Ok(1), "the newcomer holds the lock");
        assert!(!lock.is_held(), "and released it on drop");
    }

    #[tokio::test(start_paused = true)]
    async fn a_holder_that_does_not_stop_leaves_the_newcomer_locked_out() {
        let clock = TokioClock::real();
        let lock = PatchLock::default();
        let _stuck = lock.acquire(&clock, TAKEOVER_WAIT_MAX).await.expect("free");
        let refused = lock.acquire(&clock, TAKEOVER_WAIT_MAX).await;
        assert_eq!(
            refused.err(),
            Some(Locked {
                waited_ms: u64::try_from(TAKEOVER_WAIT_MAX.as_millis()).expect("small")
            })
        );
        assert!(lock.is_held(), "the holder still holds it");
    }

    /// This is a regression test that ensures a guard dropped by a
    /// cancelled PATCH (its client disconnected) frees the upload at once.
    #[tokio::test(start_paused = true)]
    async fn a_dropped_guard_frees_the_upload() {
        let clock = TokioClock::real();
        let lock = PatchLock::default();
        let guard = lock.acquire(&clock, TAKEOVER_WAIT_MAX).await.expect("free");
        drop(guard);
        assert!(!lock.is_held());
        let again = lock.acquire(&clock, Duration::ZERO).await;
        assert!(again.is_ok(), "no wait needed");
    }
}
