//! The zoo's checks, in the order a mutant meets them: loom models, the
//! proptest model, and simulations judged by the oracle.

use super::scenarios::{bit_flips, drive_fails, lost_creates, reserve_decides, window_edge};
use crate::checks::loom_models::{self, LoomModel};
use crate::checks::model::ModelRun;
use crate::sim::Scenario;

/// The proptest model's run in the zoo: as many cases as `cargo test`'s
/// run of production, from a fixed seed (the table is a snapshot; `cargo
/// test` draws a fresh seed each time), and a shorter shrink (the zoo needs
/// the verdict, not the smallest example).
pub const ZOO_MODEL_RUN: ModelRun = ModelRun {
    cases: ModelRun::THOROUGH.cases,
    max_shrink_iters: 1_000,
    seed: Some(0x2005),
};

/// A scenario builder: seed → scenario.
type ScenarioOf = fn(u64) -> Scenario;

/// One check.
#[derive(Clone, Copy)]
pub enum Check {
    /// A loom model, on the subject's gate.
    Loom(LoomModel),
    /// The proptest model, on the subject's controller.
    Proptest(ModelRun),
    /// A simulated scenario, on the subject's controller, for each of
    /// `seeds` seeds from 0; judged by the oracle.
    Sim {
        /// The scenario's name.
        name: &'static str,
        /// Builds it for a seed.
        scenario: ScenarioOf,
        /// Seeds to run.
        seeds: u64,
    },
}

impl Check {
    /// Its name in the table.
    pub fn name(&self) -> String {
        match self {
            Self::Loom(m) => format!("loom {}", m.name),
            Self::Proptest(_) => "proptest admission_agrees_with_its_model".to_owned(),
            Self::Sim { name, .. } => format!("sim {name}"),
        }
    }

    pub(super) fn unit(&self) -> &'static str {
        match self {
            Self::Loom(_) => "interleavings",
            Self::Proptest(_) => "cases",
            Self::Sim { .. } => "seeds",
        }
    }
}

/// Every check, cheapest first: ordered by production's wall time on the
/// 2-core machine, in `cargo test`'s optimised profile (the figures in the
/// comments, seconds, measured while others compiled; `upsim zoo` prints
/// this run's under its table). A mutant stops at the first check that
/// catches it, so the order decides which check the table credits, and
/// keeps the zoo within its budget: the expensive checks only see the
/// mutants the cheap ones let through.
pub fn checks() -> Vec<Check> {
    use loom_models::{
        CONCURRENT_ADMISSIONS, MEMORY_WITH_SLOTS, NO_GLOBAL_SLOT_WHILE_WAITING,
        POLLED_ONCE_THEN_DROPPED,
    };
    vec![
        // 0.12
        Check::Loom(NO_GLOBAL_SLOT_WHILE_WAITING),
        // 0.19
        Check::Loom(POLLED_ONCE_THEN_DROPPED),
        // 0.63
        Check::Loom(MEMORY_WITH_SLOTS),
        // 0.67: 64 MiB, every fault kind; its first creates are refused for
        // memory.
        Check::Sim {
            name: "smoke",
            scenario: Scenario::smoke,
            seeds: 1,
        },
        // ~0.7: smoke where the profile's reserve decides admission.
        Check::Sim {
            name: "reserve-decides",
            scenario: reserve_decides,
            seeds: 1,
        },
        // 0.69
        Check::Proptest(ZOO_MODEL_RUN),
        // 0.74
        Check::Sim {
            name: "crowd",
            scenario: crate::sim::swarm::crowd,
            seeds: 2,
        },
        // The scenarios of the first harness's blind spots (issue 10),
        // each smoke-sized (~0.7), after the older checks above so that a
        // row credited to one of them shows the older ones let it through.
        Check::Sim {
            name: "drive-fails",
            scenario: drive_fails,
            seeds: 1,
        },
        Check::Sim {
            name: "bit-flips",
            scenario: bit_flips,
            seeds: 1,
        },
        Check::Sim {
            name: "lost-creates",
            scenario: lost_creates,
            seeds: 1,
        },
        Check::Sim {
            name: "window-edge",
            scenario: window_edge,
            seeds: 1,
        },
        // 1.86
        Check::Loom(CONCURRENT_ADMISSIONS),
        // 3.04: cheap to simulate, but it checksums the whole 3.38 GB
        // source first (0.7 in release, where it comes before the model
        // above).
        Check::Sim {
            name: "reference-prod",
            scenario: Scenario::reference_prod,
            seeds: 1,
        },
    ]
}
