//! How many event streams are open, per user and in all, and the slot each
//! open stream holds until it closes.
//!
//! Invariants: `total` ≤ `streams_max`; each user's count ≤
//! `streams_per_user_max`; `total` is the sum of the users' counts. A
//! [`StreamSlot`] gives its place back exactly once, in `Drop`, however its
//! stream ends (the reader went away, the upload ended, the server shut
//! down).

use super::super::refusals::Refusal;
use crate::chunk_api::Cause;
use crate::user::UserId;
use http::StatusCode;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// `Retry-After` of a refused stream: a page or client tries again after
/// about the time a finished upload's stream takes to close.
const STREAMS_FULL_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Open streams, counted.
#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_user: BTreeMap<UserId, u32>,
}

/// The event streams' bounds and counts. Shared (`Arc`) with the slots.
#[derive(Debug)]
pub(crate) struct EventStreams {
    streams_max: usize,
    streams_per_user_max: u32,
    /// Only accessed through [`EventStreams::open`].
    open: Mutex<Open>,
}

/// One open stream's place; given back when dropped.
#[derive(Debug)]
pub(crate) struct StreamSlot {
    streams: Arc<EventStreams>,
    user: UserId,
}

impl EventStreams {
    /// Bounds of `streams_max` streams in all and `streams_per_user_max`
    /// per user (both ≥ 1: the config validates them).
    pub(crate) fn new(streams_max: usize, streams_per_user_max: u32) -> Arc<Self> {
        Arc::new(Self {
            streams_max,
            streams_per_user_max,
            open: Mutex::new(Open::default()),
        })
    }

    fn open(&self) -> MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place for one more stream of `user`, or the typed refusal: 503
    /// `event_streams_full` when the server serves as many as it allows,
    /// 429 `user_event_streams_full` when the user has as many open.
    pub(crate) fn acquire(self: &Arc<Self>, user: &UserId) -> Result<StreamSlot, Refusal> {
        let mut open = self.open();
        if open.total >= self.streams_max {
            let mut r = Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                Cause::EventStreamsFull,
                format!(
                    "{} event streams are open, the most this server serves; try again later",
                    open.total
                ),
            )
            .retry_after(STREAMS_FULL_RETRY_AFTER);
            r.details = serde_json::json!({
                "streams_open": open.total,
                "streams_max": self.streams_max,
            });
            return Err(r);
        }
        let user_open = open.by_user.get(user).copied().unwrap_or(0);
        if user_open >= self.streams_per_user_max {
            let mut r = Refusal::new(
                StatusCode::TOO_MANY_REQUESTS,
                Cause::UserEventStreamsFull,
                format!(
                    "{user} has {user_open} event streams open, the most allowed per user; close one"
                ),
            )
            .retry_after(STREAMS_FULL_RETRY_AFTER);
            r.details = serde_json::json!({
                "user_streams_open": user_open,
                "user_streams_max": self.streams_per_user_max,
            });
            return Err(r);
        }
        open.total += 1;
        *open.by_user.entry(user.clone()).or_insert(0) += 1;
        Ok(StreamSlot {
            streams: self.clone(),
            user: user.clone(),
        })
    }

    /// Streams open now, in all.
    pub(crate) fn open_count(&self) -> usize {
        self.open().total
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.streams.open();
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_user.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                open.by_user.remove(&self.user);
            }
        }
        debug_assert_eq!(
            open.total,
            open.by_user.values().map(|&n| n as usize).sum::<usize>(),
            "the total is the users' streams added up"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> UserId {
        UserId::new(name).expect("a valid user id")
    }

    #[test]
    fn streams_are_bounded_per_user_and_in_all_and_given_back_on_drop() {
        let streams = EventStreams::new(3, 2);
        let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
        let a1 = streams.acquire(&alice).expect("room");
        let a2 = streams.acquire(&alice).expect("room");
        let refused = streams.acquire(&alice).expect_err("alice's third");
        assert_eq!(
            (refused.status, refused.cause),
            (StatusCode::TOO_MANY_REQUESTS, Cause::UserEventStreamsFull)
        );
        assert_eq!(refused.details["user_streams_max"], 2);
        let b1 = streams.acquire(&bob).expect("room");
        let refused = streams.acquire(&carol).expect_err("the server's fourth");
        assert_eq!(
            (refused.status, refused.cause),
            (StatusCode::SERVICE_UNAVAILABLE, Cause::EventStreamsFull)
        );
        assert_eq!(refused.details["streams_open"], 3);
        assert!(refused.retry_after.is_some());
        drop(a1);
        assert_eq!(streams.open_count(), 2);
        let c1 = streams.acquire(&carol).expect("a place was given back");
        drop((a2, b1, c1));
        assert_eq!(streams.open_count(), 0);
        assert!(streams.open().by_user.is_empty());
    }
}
