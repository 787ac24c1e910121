//! Waiting for a lease: polling the store's ticket queue with backoff.
//!
//! # FIFO across replicas
//!
//! A request that cannot be granted at once takes a ticket (a number from
//! one counter in the store, so tickets order requests across every
//! replica). A waiter is granted when, in one script run,
//! 1. a global slot and a slot of its user are free (valid leases only),
//!    and
//! 2. every waiter queued before it waits for a user whose slots are all
//!    held: such a waiter competes with nobody but its own user (as in the
//!    in-process ledger's scan), so passing it cannot starve it.
//!
//! Equivalently: among waiters whose user has a free slot, the lowest
//! ticket goes first. A newcomer is granted at once only if no ticket is
//! entitled ahead of it. A ticket not polled within the waiter TTL (its
//! replica died or paused) is dropped, so a dead replica's waiters cannot
//! block the queue; a waiter that times out or is dropped removes its
//! ticket itself (a task, since `Drop` cannot wait).
//!
//! # Wake-up
//!
//! A release publishes a message that wakes every waiter of every replica
//! at once (`wake.rs`, Redis pub/sub): each then asks again, so a release
//! is noticed within about two round trips (`benches/shared_admission.rs`,
//! `shared_wakeup`). Messages are hints: each waiter also asks again after
//! [`POLL_INTERVAL_MIN`], doubling up to [`POLL_INTERVAL_MAX`], so a lost
//! message (a reconnecting listener, a slot freed by expiry, which
//! publishes nothing) delays a waiter by at most [`POLL_INTERVAL_MAX`]
//! plus a round trip.

use super::error::StoreError;
use super::scripts::{AcquireReply, Granted, Waiting};
use super::store::{LeaseRequest, SlotStore};
use crate::env::Clock;
use std::sync::Arc;
use std::time::Duration;

/// First wait between polls.
pub const POLL_INTERVAL_MIN: Duration = Duration::from_millis(2);
/// Longest wait between polls: bounds the wake-up latency. Well under the
/// shortest waiter TTL ([`LEASE_TTL_MIN`](super::config::LEASE_TTL_MIN)),
/// so a live waiter never loses its ticket.
pub const POLL_INTERVAL_MAX: Duration = Duration::from_millis(50);

const _: () = assert!(POLL_INTERVAL_MAX.as_millis() * 4 < super::config::LEASE_TTL_MIN.as_millis());

/// How waiting ended without a grant.
#[derive(Debug)]
pub(super) enum WaitEnd {
    /// The store refused (quota, queue full, ticket lost).
    Refused(AcquireReply),
    /// The deadline passed; the last figures seen.
    TimedOut(Waiting),
    /// The store could not decide.
    Store(StoreError),
}

/// A queued ticket, cancelled in the store if the wait ends without a
/// grant (also when the waiting future is dropped).
struct Ticket {
    store: Arc<SlotStore>,
    number: Option<u64>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let Some(ticket) = self.number.take() else {
            return;
        };
        let store = Arc::clone(&self.store);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = store.cancel(ticket).await {
                    tracing::info!(ticket, error = %e, "ticket not cancelled: the store drops it after the waiter TTL");
                }
            });
        }
    }
}

/// Polls until `req` is granted (the grant, and when the request that got
/// it was sent), refused, or `deadline` (on `clock`) passes.
///
/// # Cancel safety
/// Dropping the future cancels its ticket. A grant whose reply is lost
/// with the future is held by nobody and expires within the lease TTL.
pub(super) async fn wait_for_lease(
    store: &Arc<SlotStore>,
    clock: &dyn Clock,
    mut req: LeaseRequest,
    deadline: Duration,
) -> Result<(Granted, Duration), WaitEnd> {
    let mut ticket = Ticket {
        store: Arc::clone(store),
        number: None,
    };
    let mut backoff = POLL_INTERVAL_MIN;
    // The generation the ticket was taken in.
    let mut ticket_generation = 0;
    loop {
        // Registered before asking, so a release between the answer and
        // the wait below still wakes this waiter.
        let released = store.released();
        tokio::pin!(released);
        released.as_mut().enable();
        let sent = clock.now();
        let waiting = match store.acquire(&req).await.map_err(WaitEnd::Store)? {
            AcquireReply::Granted(g) => {
                ticket.number = None;
                return Ok((g, sent));
            }
            AcquireReply::Waiting(w) => w,
            AcquireReply::TicketLost { .. } if store.generation() != ticket_generation => {
                // The store lost its queue with its data: queue again (at
                // the back: FIFO order does not survive a store restart).
                ticket.number = None;
                req.ticket = None;
                continue;
            }
            refused => {
                // Every refusal has dropped the ticket in the store.
                ticket.number = None;
                return Err(WaitEnd::Refused(refused));
            }
        };
        ticket.number = Some(waiting.ticket);
        ticket_generation = store.generation();
        // Only a replica that had to wait subscribes (once).
        store.listen_for_releases();
        req.ticket = Some(waiting.ticket);
        let now = clock.now();
        if now >= deadline {
            return Err(WaitEnd::TimedOut(waiting));
        }
        tokio::select! {
            () = released => {}
            () = clock.sleep(backoff.min(deadline - now)) => {}
        }
        backoff = (backoff * 2).min(POLL_INTERVAL_MAX);
    }
}
