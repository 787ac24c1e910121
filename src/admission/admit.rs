//! [`Admit`]: the future [`Admitter::admit`](super::Admitter::admit)
//! returns.
//!
//! A concrete future rather than a boxed one, so that an admission granted
//! at once (the fast path) allocates no future and builds no timer: its
//! first poll decides — refused, granted (the slot is returned from that
//! poll), or queued — and only a queued request builds the wait (a boxed
//! future holding the timer), polled in that same first poll so that its
//! place in the queue and its timeout start together.

use super::controller::Admitter;
use super::error::AdmissionError;
use super::permits::Acquired;
use super::slot::UploadSlot;
use crate::env::BoxFuture;
use crate::user::UserId;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// An admission in progress; resolves to the slot or the refusal.
///
/// # Cancel safety
/// Dropping it at any point gives back whatever it held: before its first
/// poll it holds nothing; while waiting, its request leaves the queue and
/// its quota charge is refunded (as the permit layer's future does).
#[must_use = "an admission decides only when polled"]
pub struct Admit<'a> {
    admitter: &'a Admitter,
    state: State<'a>,
}

enum State<'a> {
    /// Not polled yet: nothing asked, nothing held.
    Start { user: UserId, file_size_bytes: u64 },
    /// Queued: the wait for the grant, bounded by the timeout.
    Waiting(BoxFuture<'a, Result<UploadSlot, AdmissionError>>),
    /// Resolved (or in the middle of a poll).
    Done,
}

impl<'a> Admit<'a> {
    pub(super) fn new(admitter: &'a Admitter, user: UserId, file_size_bytes: u64) -> Self {
        Self {
            admitter,
            state: State::Start {
                user,
                file_size_bytes,
            },
        }
    }
}

impl Future for Admit<'_> {
    type Output = Result<UploadSlot, AdmissionError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let admitter = this.admitter;
        let mut waiting = match std::mem::replace(&mut this.state, State::Done) {
            State::Start {
                user,
                file_size_bytes,
            } => match admitter.admit_or_queue(&user, file_size_bytes) {
                Err(e) => return Poll::Ready(Err(e)),
                // Granted in the step that queued it: no time has passed
                // on any clock the decision reads.
                Ok(Acquired::Granted(grant)) => {
                    let slot = admitter.admitted(&user, file_size_bytes, grant, Duration::ZERO);
                    return Poll::Ready(Ok(slot));
                }
                Ok(Acquired::Queued(acquire)) => {
                    Box::pin(admitter.wait_for_grant(user, file_size_bytes, acquire))
                }
            },
            State::Waiting(waiting) => waiting,
            State::Done => panic!("Admit polled after it completed"),
        };
        let polled = waiting.as_mut().poll(cx);
        if polled.is_pending() {
            this.state = State::Waiting(waiting);
        }
        polled
    }
}
