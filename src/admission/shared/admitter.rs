//! [`SharedAdmitter`]: admission whose slots and quota live in the shared
//! store, so that several replicas together keep one set of limits.
//!
//! Steps, in order:
//! 1. the request and this replica's memory, by an in-process [`Admitter`]
//!    (memory stays per replica: each measures its own machine; its quota
//!    is off, since the store charges it, and its slot limits are lifted to
//!    [`SLOTS_MAX`]: the store's are the limits, and a request waiting for
//!    a local slot would bypass the store's FIFO);
//! 2. a global and a user slot and the day's quota charge, by the store in
//!    one script ([`wait_for_lease`]), waiting FIFO across replicas until
//!    the profile's slot-wait timeout (counted from step 1);
//! 3. the grant becomes a [`HeldLease`], renewed while the upload runs,
//!    inside the [`UploadSlot`] of step 1: the slot gives back the lease
//!    (refunding the quota on failure if the profile says so) and then the
//!    memory reservation, once.
//!
//! Memory is reserved before the store is asked, so a request may hold a
//! reservation on its replica while it waits in the store's queue; that
//! can delay only uploads on the same replica, and never past the timeout.
//! A store that cannot answer refuses with
//! [`AdmissionError::SlotStoreUnavailable`]; nothing is granted on a guess.

use super::error::StoreError;
use super::lease::HeldLease;
use super::metrics::{LeaseCounts, SharedMetrics};
use super::scripts::AcquireReply;
use super::store::{LeaseRecord, LeaseRequest, SlotStore};
use super::waiter::{wait_for_lease, WaitEnd};
use crate::admission::{
    Admission, AdmissionError, AdmissionMetrics, AdmissionState, AdmitFailure, Admitter,
    UploadSlot, Violation,
};
use crate::env::{BoxFuture, Clock, MemoryProbe};
use crate::profile::{Profile, SLOTS_MAX};
use crate::user::UserId;
use std::sync::Arc;

/// Admission shared through a [`SlotStore`]. Cheap to clone.
#[derive(Clone)]
pub struct SharedAdmitter {
    /// Step 1: the request and this replica's memory.
    local: Admitter,
    store: Arc<SlotStore>,
    clock: Arc<dyn Clock>,
    /// The profile in force (the local admitter's has its quota off).
    profile: Profile,
    metrics: Arc<SharedMetrics>,
}

impl SharedAdmitter {
    /// An admitter for `profile` over `store`.
    ///
    /// # Panics
    /// If `profile` fails [`Profile::validate`] (as [`Admitter::new`]).
    pub fn new(
        profile: Profile,
        clock: Arc<dyn Clock>,
        memory: Arc<dyn MemoryProbe>,
        store: Arc<SlotStore>,
    ) -> Self {
        let local_profile = Profile {
            upload_limits_enabled: false,
            global_slots: SLOTS_MAX,
            user_slots: SLOTS_MAX,
            ..profile.clone()
        };
        Self {
            local: Admitter::new(local_profile, Arc::clone(&clock), memory),
            store,
            clock,
            profile,
            metrics: Arc::new(SharedMetrics::default()),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<SlotStore> {
        &self.store
    }

    /// What this replica's leases did.
    pub fn lease_counts(&self) -> LeaseCounts {
        self.metrics.lease_counts()
    }

    fn refuse(&self, user: &UserId, file_size_bytes: u64, error: AdmissionError) -> AdmissionError {
        self.metrics.rejected(error.cause());
        tracing::info!(%user, file_size_bytes, cause = error.cause(), reason = %error, "upload refused");
        error
    }

    /// Admits an upload: [`Admission::admit`], with every refusal typed.
    ///
    /// # Cancel safety
    /// Dropping the future gives back the memory reservation and cancels
    /// the store ticket; a grant in flight when it is dropped expires
    /// within the lease TTL.
    pub async fn admit_typed(
        &self,
        user: UserId,
        file_size_bytes: u64,
    ) -> Result<UploadSlot, AdmissionError> {
        let started = self.clock.now();
        let deadline = started + self.profile.slot_wait_timeout();
        // 1. The request and this replica's memory.
        let local = match self.local.admit(user.clone(), file_size_bytes).await {
            Ok(slot) => slot,
            Err(e) => return Err(self.refuse(&user, file_size_bytes, e)),
        };
        // 2. Slots and quota, in the store.
        let req = LeaseRequest {
            user: user.clone(),
            ticket: None,
            global_slots: self.profile.global_slots,
            user_slots: self.profile.user_slots,
            quota_bytes: file_size_bytes,
            daily_limit_bytes: self
                .profile
                .upload_limits_enabled
                .then_some(self.profile.daily_limit_bytes),
            waiters_max: self.profile.waiters_max,
            refund_on_expiry: self.profile.refund_quota_on_failure,
        };
        let waited = wait_for_lease(&self.store, self.clock.as_ref(), req, deadline).await;
        let (granted, sent) = match waited {
            Ok(granted) => granted,
            Err(end) => {
                let e = self.refusal(&user, file_size_bytes, end);
                // Dropping `local` gives the memory back.
                return Err(self.refuse(&user, file_size_bytes, e));
            }
        };
        // 3. The lease, renewed while the upload runs.
        let waited = self.clock.now().saturating_sub(started);
        self.metrics.admitted(waited);
        tracing::info!(
            %user, file_size_bytes, token = granted.token, charged_bytes = granted.charged_bytes,
            wait_ms = u64::try_from(waited.as_millis()).unwrap_or(u64::MAX), "upload admitted (shared)"
        );
        let record = LeaseRecord {
            token: granted.token,
            user,
            day: granted.day,
            quota_bytes: file_size_bytes,
            refund_on_expiry: self.profile.refund_quota_on_failure,
            generation: granted.generation,
        };
        let lease = HeldLease::start(
            Arc::clone(&self.store),
            Arc::clone(&self.clock),
            record,
            sent,
            self.profile.refund_quota_on_failure,
            Arc::clone(&self.metrics),
        );
        Ok(local.with_lease(Box::new(lease), waited))
    }

    /// The refusal for a wait that ended without a grant.
    fn refusal(&self, user: &UserId, file_size_bytes: u64, end: WaitEnd) -> AdmissionError {
        let profile = &self.profile;
        match end {
            WaitEnd::TimedOut(w) => AdmissionError::SlotsBusy {
                user: user.clone(),
                waited_ms: profile.slot_wait_timeout_ms,
                global_in_use: w.global_in_use,
                global_limit: profile.global_slots,
                user_in_use: w.user_in_use,
                user_limit: profile.user_slots,
                waiters_ahead: w.waiters_ahead,
            },
            WaitEnd::Refused(AcquireReply::QuotaExceeded {
                charged_bytes,
                daily_limit_bytes,
                day,
            }) => AdmissionError::QuotaExceeded {
                user: user.clone(),
                day,
                charged_bytes,
                requested_bytes: file_size_bytes,
                daily_limit_bytes,
            },
            WaitEnd::Refused(AcquireReply::QueueFull {
                waiting,
                waiters_max,
            }) => AdmissionError::QueueFull {
                waiting,
                waiters_max,
            },
            WaitEnd::Refused(AcquireReply::TicketLost { ticket }) => {
                AdmissionError::SlotStoreUnavailable {
                    error: StoreError::TicketLost { ticket },
                }
            }
            // `wait_for_lease` returns grants as grants and keeps waiting
            // on `Waiting`: neither reaches here.
            WaitEnd::Refused(other @ (AcquireReply::Granted(_) | AcquireReply::Waiting(_))) => {
                AdmissionError::SlotStoreUnavailable {
                    error: StoreError::Script {
                        script: "acquire",
                        reason: format!("unexpected end of wait: {other:?}"),
                    },
                }
            }
            WaitEnd::Store(error) => AdmissionError::SlotStoreUnavailable { error },
        }
    }
}

impl Admission for SharedAdmitter {
    fn admit(
        &self,
        user: UserId,
        file_size_bytes: u64,
    ) -> BoxFuture<'_, Result<UploadSlot, AdmitFailure>> {
        Box::pin(async move { Ok(self.admit_typed(user, file_size_bytes).await?) })
    }

    /// This replica's view: its memory reservations and the slots its own
    /// uploads hold, beside the profile's limits, which hold across all
    /// replicas (the store's view is [`SlotStore::state`]).
    fn state(&self) -> AdmissionState {
        let mut state = self.local.state();
        let limits = &mut state.ledger.limits;
        limits.global_slots = self.profile.global_slots;
        limits.user_slots = self.profile.user_slots;
        limits.daily_limit_bytes = self
            .profile
            .upload_limits_enabled
            .then_some(self.profile.daily_limit_bytes);
        state
    }

    fn metrics(&self) -> AdmissionMetrics {
        self.metrics.admission_metrics()
    }

    fn begin_shutdown(&self) {
        self.local.begin_shutdown();
    }

    fn check(&self) -> Result<(), Violation> {
        self.local.check()
    }
}
