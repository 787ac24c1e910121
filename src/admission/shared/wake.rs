//! [`Wake`]: telling this replica's waiters that a lease was released
//! somewhere, through Redis pub/sub.
//!
//! The release script publishes on the channel `P..'released'`. Each
//! [`SlotStore`](super::SlotStore) runs one listener task, started by its
//! first waiter and stopped when the store is dropped, subscribed to that
//! channel on a connection of its own; every message wakes every waiter of
//! this replica ([`Notify::notify_waiters`]), which then polls the store at
//! once instead of at its next backoff tick.
//!
//! A wake-up is a hint, never a grant: waiters keep polling with backoff
//! (`waiter.rs`), so a message lost while the listener reconnects (or while
//! the store restarts) delays a waiter by at most
//! [`POLL_INTERVAL_MAX`](super::POLL_INTERVAL_MAX), and never strands it.
//! Every waiter of the replica polls once per release: at most
//! `waiters_max` scripts per release, the same order as the polling itself.

use super::config::STORE_IO_TIMEOUT;
use futures_util::StreamExt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::futures::Notified;
use tokio::sync::Notify;

/// How long the listener waits before subscribing again after it lost its
/// connection (or could not make one).
pub const RESUBSCRIBE_AFTER: Duration = Duration::from_millis(100);

/// The channel name under `prefix`.
pub(super) fn channel(prefix: &str) -> String {
    format!("{prefix}released")
}

/// Wakes this replica's waiters when the store says a lease was released.
pub(super) struct Wake {
    notify: Arc<Notify>,
    /// The listener task, once started; aborted on drop.
    listener: OnceLock<tokio::task::AbortHandle>,
}

impl Wake {
    pub(super) fn new() -> Self {
        Self {
            notify: Arc::new(Notify::new()),
            listener: OnceLock::new(),
        }
    }

    /// A future that completes at the next release message. Call
    /// [`Notified::enable`] on it before asking the store, so that a
    /// release between the answer and the wait still wakes it.
    pub(super) fn notified(&self) -> Notified<'_> {
        self.notify.notified()
    }

    /// Starts the listener unless it runs already. Must run inside a tokio
    /// runtime.
    pub(super) fn listen(&self, client: &redis::Client, channel: String) {
        self.listener.get_or_init(|| {
            let notify = Arc::clone(&self.notify);
            tokio::spawn(listen(client.clone(), channel, notify)).abort_handle()
        });
    }
}

impl Drop for Wake {
    fn drop(&mut self) {
        if let Some(listener) = self.listener.get() {
            listener.abort();
        }
    }
}

/// Subscribes, wakes waiters at every message, and subscribes again after
/// the connection broke. Runs until aborted.
async fn listen(client: redis::Client, channel: String, notify: Arc<Notify>) {
    loop {
        let subscribed = tokio::time::timeout(STORE_IO_TIMEOUT, async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        })
        .await;
        match subscribed {
            Ok(Ok(pubsub)) => {
                // Anything released while we were not listening.
                notify.notify_waiters();
                let mut messages = pubsub.into_on_message();
                while messages.next().await.is_some() {
                    notify.notify_waiters();
                }
                tracing::info!(%channel, "release channel closed; subscribing again");
            }
            Ok(Err(e)) => tracing::info!(%channel, error = %e, "cannot subscribe to releases"),
            Err(_) => tracing::info!(%channel, "subscribing to releases timed out"),
        }
        tokio::time::sleep(RESUBSCRIBE_AFTER).await;
    }
}
