//! [`HeldLease`]: one granted lease, renewed while its upload runs.
//!
//! A renewal task extends the lease every [`renew_interval`] (a third of
//! the TTL). The holder trusts the lease until [`trusted_for`] after it
//! *sent* the last request that succeeded (the acquire, then each renewal):
//! the store set the expiry to its own now + TTL, which is later than that.
//! Once that time passes without a renewal, or the store says the lease is
//! gone, the lease is **lost** for good: [`HeldLease::is_valid`] turns
//! false and the committer sends no further byte for the upload.
//!
//! After a store restart (Redis without persistence forgets every lease),
//! the next renewal finds the lease gone in a new generation and, while
//! the store is in quarantine, puts it back as it was (`renew.lua`): the
//! upload keeps going, and the store counts its slots again before it
//! grants anything new. A renewal that comes after the quarantine finds
//! the lease gone for good.
//!
//! This is a lease, not a lock (Kleppmann, "How to do distributed locking",
//! 2016): it assumes bounded pauses and bounded clock drift. A holder
//! paused between its check and its write can still write once after
//! expiry; the drive cannot check fencing tokens, so the check before each
//! piece is what narrows that window, not what closes it.
//!
//! [`renew_interval`]: super::SharedConfig::renew_interval
//! [`trusted_for`]: super::SharedConfig::trusted_for

use super::metrics::SharedMetrics;
use super::scripts::RenewReply;
use super::store::{LeaseRecord, SlotStore};
use crate::admission::{SlotLease, SlotOutcome};
use crate::env::Clock;
use crate::user::UserId;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What the renewal task and the committer share.
struct Validity {
    /// Set once, never cleared: the lease is gone.
    lost: AtomicBool,
    /// The holder's clock ([`Clock::now`], ms) until which it trusts the
    /// lease. Only moves forward.
    trusted_until_ms: AtomicU64,
}

impl Validity {
    fn is_valid(&self, clock: &dyn Clock) -> bool {
        !self.lost.load(Ordering::Acquire)
            && ms(clock.now()) < self.trusted_until_ms.load(Ordering::Acquire)
    }
}

/// A lease this replica holds, and its renewal task.
pub struct HeldLease {
    store: Arc<SlotStore>,
    clock: Arc<dyn Clock>,
    token: u64,
    user: UserId,
    refund_on_failure: bool,
    validity: Arc<Validity>,
    renewal: tokio::task::AbortHandle,
    metrics: Arc<SharedMetrics>,
}

impl HeldLease {
    /// Starts renewing `lease`, granted by a request sent at `sent`
    /// (holder's clock). Must run inside a tokio runtime.
    pub(super) fn start(
        store: Arc<SlotStore>,
        clock: Arc<dyn Clock>,
        lease: LeaseRecord,
        sent: Duration,
        refund_on_failure: bool,
        metrics: Arc<SharedMetrics>,
    ) -> Self {
        let (token, user) = (lease.token, lease.user.clone());
        let trusted_for = store.config().trusted_for();
        let validity = Arc::new(Validity {
            lost: AtomicBool::new(false),
            trusted_until_ms: AtomicU64::new(ms(sent + trusted_for)),
        });
        let renewal = tokio::spawn(renew_loop(
            Arc::clone(&store),
            Arc::clone(&clock),
            lease,
            Arc::clone(&validity),
            Arc::clone(&metrics),
        ))
        .abort_handle();
        Self {
            store,
            clock,
            token,
            user,
            refund_on_failure,
            validity,
            renewal,
            metrics,
        }
    }
}

/// Renews every interval (re-asserting the lease in a store that lost
/// it); on a failed renewal tries again sooner, and gives the lease up
/// once the store says it is gone or its trusted time has passed.
async fn renew_loop(
    store: Arc<SlotStore>,
    clock: Arc<dyn Clock>,
    mut lease: LeaseRecord,
    validity: Arc<Validity>,
    metrics: Arc<SharedMetrics>,
) {
    let token = lease.token;
    let interval = store.config().renew_interval();
    let trusted_for = store.config().trusted_for();
    let mut wait = interval;
    loop {
        clock.sleep(wait).await;
        let sent = clock.now();
        match store.renew(&lease).await {
            Ok(reply @ (RenewReply::Renewed { .. } | RenewReply::Reasserted { .. })) => {
                if let RenewReply::Reasserted { generation, .. } = reply {
                    tracing::warn!(
                        token,
                        generation,
                        "slot store lost its data: lease re-asserted"
                    );
                    lease.generation = generation;
                    metrics.reasserted();
                }
                validity
                    .trusted_until_ms
                    .fetch_max(ms(sent + trusted_for), Ordering::AcqRel);
                metrics.renewed();
                wait = interval;
            }
            Ok(RenewReply::Gone) => {
                tracing::warn!(token, "lease gone from the slot store: upload stops");
                break;
            }
            Err(e) => {
                metrics.renewal_failed();
                if !validity.is_valid(clock.as_ref()) {
                    tracing::warn!(token, error = %e, "lease not renewed in time: upload stops");
                    break;
                }
                tracing::info!(token, error = %e, "lease renewal failed; retrying");
                wait = interval / 4;
            }
        }
    }
    validity.lost.store(true, Ordering::Release);
    metrics.lost();
}

impl SlotLease for HeldLease {
    fn is_valid(&self) -> bool {
        self.validity.is_valid(self.clock.as_ref())
    }

    fn fencing_token(&self) -> u64 {
        self.token
    }

    /// Stops renewing and deletes the lease in the store (a task: `Drop`
    /// cannot wait). If that fails, or no runtime is left to run it, the
    /// lease expires within the TTL.
    fn release(&self, outcome: SlotOutcome) {
        self.renewal.abort();
        self.validity.lost.store(true, Ordering::Release);
        self.metrics.released(outcome);
        let refund = outcome == SlotOutcome::Failed && self.refund_on_failure;
        let (store, token, user) = (Arc::clone(&self.store), self.token, self.user.clone());
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                token,
                "no runtime to release the lease: it expires within the TTL"
            );
            return;
        };
        let metrics = Arc::clone(&self.metrics);
        runtime.spawn(async move {
            match store.release(token, &user, refund).await {
                Ok(Some(refunded_bytes)) => {
                    metrics.release_confirmed();
                    tracing::debug!(token, %user, refunded_bytes, "lease released");
                }
                Ok(None) => tracing::warn!(token, %user, "lease was already gone at release"),
                Err(e) => {
                    tracing::warn!(token, error = %e, "lease release failed: it expires within the TTL");
                }
            }
        });
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::shared::SharedConfig;
    use crate::env::ManualClock;

    /// Lets the renewal task reach its next sleep before time moves.
    async fn settle() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    async fn until(what: &str, check: impl Fn() -> bool) {
        for _ in 0..2_000 {
            if check() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("never: {what}");
    }

    /// This is a regression test that ensures a holder cut off from the
    /// store keeps its lease only until the time it trusts it for (90 % of
    /// the TTL after the last successful request), then loses it for good,
    /// and that failed renewals are retried meanwhile. The store is a
    /// closed port, so every renewal fails at once.
    #[tokio::test]
    async fn an_unreachable_store_keeps_a_lease_only_until_its_trusted_time() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let config = SharedConfig {
            lease_ttl: Duration::from_millis(1_000),
            ..SharedConfig::new(format!("redis://127.0.0.1:{closed}/"), "cut-off")
        };
        let store = Arc::new(SlotStore::open(config).expect("a redis URL"));
        let clock = ManualClock::default();
        let metrics = Arc::new(SharedMetrics::default());
        let user = UserId::new("u").expect("valid id");
        let lease = HeldLease::start(
            store,
            Arc::new(clock.clone()),
            LeaseRecord {
                token: 7,
                user,
                day: crate::env::UtcDay(20_000),
                quota_bytes: 1,
                refund_on_expiry: true,
                generation: 1,
            },
            Duration::ZERO,
            true,
            Arc::clone(&metrics),
        );
        assert!(lease.is_valid() && lease.fencing_token() == 7);
        // First renewal (at a third of the TTL) fails: still trusted.
        settle().await;
        clock.advance(Duration::from_millis(334));
        until("a failed renewal", || {
            metrics.lease_counts().renewal_failures >= 1
        })
        .await;
        assert!(lease.is_valid(), "trusted until 900 ms");
        // Retried sooner (a quarter interval), failing again.
        settle().await;
        clock.advance(Duration::from_millis(100));
        until("a retried renewal", || {
            metrics.lease_counts().renewal_failures >= 2
        })
        .await;
        assert!(lease.is_valid());
        // Past 900 ms: invalid at once by time, and lost at the next try.
        settle().await;
        clock.advance(Duration::from_millis(500));
        assert!(!lease.is_valid(), "past its trusted time");
        until("the lease lost", || metrics.lease_counts().leases_lost == 1).await;
        assert!(!lease.is_valid());
        assert_eq!(metrics.lease_counts().renewals, 0);
    }
}
