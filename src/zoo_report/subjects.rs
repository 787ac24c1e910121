//! The zoo's subjects: production, the admission mutants of
//! [`checks::zoo`](crate::checks::zoo), and the backend's [`Slip`]s.

use crate::admission::gate::PermitGate;
use crate::admission::sync::{LoomSync, StdSync};
use crate::admission::{production_factory, AdmissionFactory};
use crate::admission::{Admission, Admitter, Limits};
use crate::backend::Slip;
use crate::checks::loom_models::{self, NewGate};
use crate::checks::zoo::{
    EntryRace, ForgottenReserve, HeuristicRelease, Hoarding, LeakOnCancel, LostWakeup, MaskedError,
};
use std::sync::Arc;

/// One implementation under test.
pub struct Subject {
    /// Its name in the table.
    pub name: &'static str,
    /// The bug it re-creates, in a few words.
    pub bug: &'static str,
    /// Its permit layer on loom's primitives; `None` where the bug lives
    /// above the permit layer (the loom models see only gates).
    pub loom_gate: Option<NewGate>,
    /// The whole admission controller, for the proptest model and the
    /// simulations.
    pub admission: AdmissionFactory,
    /// The backend's bug, for the simulations; `Slip::None` for production
    /// and the admission mutants.
    pub slip: Slip,
}

fn admitter_over(new_gate: fn(Limits) -> Arc<dyn PermitGate>) -> AdmissionFactory {
    Arc::new(move |profile, clock, memory| {
        Arc::new(Admitter::with_gate(profile, clock, memory, new_gate)) as Arc<dyn Admission>
    })
}

/// Production, the admission mutants (the report's six in its order, then
/// the forgotten reserve), then the backend's slips.
pub fn subjects() -> Vec<Subject> {
    vec![
        Subject {
            name: "production",
            bug: "none",
            loom_gate: Some(loom_models::production),
            slip: Slip::None,
            admission: Arc::new(|profile, clock, memory| {
                Arc::new(Admitter::new(profile, clock, memory)) as Arc<dyn Admission>
            }),
        },
        Subject {
            name: "masked-error",
            bug: "every failure becomes a bare rejection",
            loom_gate: None,
            slip: Slip::None,
            admission: Arc::new(|profile, clock, memory| {
                let inner = Arc::new(Admitter::new(profile, clock, memory));
                Arc::new(MaskedError::new(inner)) as Arc<dyn Admission>
            }),
        },
        Subject {
            name: "heuristic-release",
            bug: "on error, releases if the count is below the maximum",
            loom_gate: Some(|l| HeuristicRelease::<LoomSync>::new(l) as Arc<dyn PermitGate>),
            slip: Slip::None,
            admission: admitter_over(|l| {
                HeuristicRelease::<StdSync>::new(l) as Arc<dyn PermitGate>
            }),
        },
        Subject {
            name: "leak-on-cancel",
            bug: "a cancelled acquire keeps the permit it took",
            loom_gate: Some(|l| LeakOnCancel::<LoomSync>::new(l) as Arc<dyn PermitGate>),
            slip: Slip::None,
            admission: admitter_over(|l| LeakOnCancel::<StdSync>::new(l) as Arc<dyn PermitGate>),
        },
        Subject {
            name: "hoarding",
            bug: "holds its global slot while waiting for its user slot",
            loom_gate: Some(|l| Hoarding::<LoomSync>::new(l) as Arc<dyn PermitGate>),
            slip: Slip::None,
            admission: admitter_over(|l| Hoarding::<StdSync>::new(l) as Arc<dyn PermitGate>),
        },
        Subject {
            name: "entry-race",
            bug: "two first uploads of a user each create its limiter",
            loom_gate: Some(|l| EntryRace::<LoomSync>::new(l) as Arc<dyn PermitGate>),
            slip: Slip::None,
            admission: admitter_over(|l| EntryRace::<StdSync>::new(l) as Arc<dyn PermitGate>),
        },
        Subject {
            name: "lost-wakeup",
            bug: "a release misses a waiter that is registering",
            loom_gate: Some(|l| LostWakeup::<LoomSync>::new(l) as Arc<dyn PermitGate>),
            slip: Slip::None,
            admission: admitter_over(|l| LostWakeup::<StdSync>::new(l) as Arc<dyn PermitGate>),
        },
        Subject {
            name: "forgotten-reserve",
            bug: "the memory formula forgets its reserve term",
            // The loom models hand gates their ceilings directly, with no
            // profile and so no reserve to forget.
            loom_gate: None,
            slip: Slip::None,
            admission: Arc::new(|profile, clock, memory| {
                let reserve_bytes = profile.reserved_memory_bytes;
                Arc::new(Admitter::with_gate(profile, clock, memory, move |l| {
                    ForgottenReserve::<StdSync>::new(l, reserve_bytes) as Arc<dyn PermitGate>
                })) as Arc<dyn Admission>
            }),
        },
    ]
    .into_iter()
    .chain(backend_slips())
    .collect()
}

/// The backend's slips: production's admission, one line of the backend
/// done wrong (see [`Slip`] for each bug and the check that catches it).
fn backend_slips() -> Vec<Subject> {
    [
        (
            "window-oversized",
            "the reorder window sized by the profile, not the reservation",
            Slip::WindowIgnoresReservation,
        ),
        (
            "kept-on-failure",
            "an upload failed at the drive keeps its slot",
            Slip::KeepsSlotOnDriveFailure,
        ),
        (
            "unchecked-chunks",
            "a chunk's CRC-32C is never compared",
            Slip::UncheckedChunks,
        ),
        (
            "token-forgotten",
            "a retried create is admitted again",
            Slip::CreateForgetsToken,
        ),
    ]
    .into_iter()
    .map(|(name, bug, slip)| Subject {
        name,
        bug,
        loom_gate: None,
        admission: production_factory(),
        slip,
    })
    .collect()
}
