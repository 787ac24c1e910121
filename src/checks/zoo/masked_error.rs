//! Mutant 1, the masked error: any failure becomes a bare rejection.
//!
//! The original (`upload_concurrency_manager.py:92-99`):
//!
//! ```python
//! except Exception as e:
//!     ...
//!     print(f"Failed to acquire upload slot: {e}")
//!     return False  # Masks the real exception
//! ```
//!
//! Here the production [`Admitter`](crate::admission::Admitter) decides as
//! usual, and this wrapper logs its error and hands the caller
//! [`AdmitFailure::Unexplained`] instead. The slots themselves are
//! handled correctly: the bug is only that the cause is lost, which is why
//! it lives in the controller layer ([`Admission`]) and not in a permit
//! gate, and why the loom models (which see only gates) cannot see it.
//!
//! Caught by: the simulation oracle's `typed_cause` check, on the `smoke`
//! scenario, the cheapest check that applies (the loom models see only
//! permit gates). `smoke` starts with 1 MiB of memory available for 2 s, so
//! its first creates are refused for memory pressure; the backend records
//! each refusal in the trace with the cause admission gave it, and a bare
//! `unexplained` is not a typed cause. The proptest model, which compares
//! every refusal's cause with its reference, catches it too (on its first
//! case), and so does `reference-prod` (the report's own refusal: 80.2 %
//! used against prod's 80 % limit); both come later in the order.

use crate::admission::{Admission, AdmitFailure, UploadSlot};
use crate::env::BoxFuture;
use crate::user::UserId;
use std::sync::Arc;

/// Production admission with every error's cause thrown away.
pub struct MaskedError {
    inner: Arc<dyn Admission>,
}

impl MaskedError {
    /// Masks `inner`'s errors.
    pub fn new(inner: Arc<dyn Admission>) -> Self {
        Self { inner }
    }
}

impl Admission for MaskedError {
    fn admit(
        &self,
        user: UserId,
        file_size_bytes: u64,
    ) -> BoxFuture<'_, Result<UploadSlot, AdmitFailure>> {
        let admit = self.inner.admit(user, file_size_bytes);
        Box::pin(async move {
            admit.await.map_err(|e| {
                // The report's `print(...)`: the cause reaches a log line
                // and nobody else.
                tracing::warn!("Failed to acquire upload slot: {e}");
                AdmitFailure::Unexplained
            })
        })
    }

    crate::admission::forward_admission_to_inner!();
}
