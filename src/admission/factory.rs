//! [`AdmissionFactory`]: how a backend boot gets its admission controller.
//!
//! A host builds a fresh controller on every boot from the profile, its
//! clock and its memory probe. Production's is the [`Admitter`]; the checks
//! pass other implementations (the bug zoo's mutants) the same way, so they
//! run under the same backend and harness.

use super::{Admission, Admitter};
use crate::env::{Clock, MemoryProbe};
use crate::profile::Profile;
use std::sync::Arc;

/// Builds the backend's admission controller for one boot: the production
/// [`Admitter`] by default; the bug zoo passes its mutants here.
pub type AdmissionFactory =
    Arc<dyn Fn(Profile, Arc<dyn Clock>, Arc<dyn MemoryProbe>) -> Arc<dyn Admission> + Send + Sync>;

/// The factory of production's [`Admitter`].
pub fn production_factory() -> AdmissionFactory {
    Arc::new(|profile, clock, memory| {
        Arc::new(Admitter::new(profile, clock, memory)) as Arc<dyn Admission>
    })
}
