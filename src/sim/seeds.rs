//! [`Seeds`]: every seed a run uses, drawn from the one root RNG.
//!
//! The root RNG is seeded by the scenario's seed and draws the others in a
//! fixed order (the order of [`Seeds::draw`]'s statements). Changing that
//! order, or drawing one more seed before another, changes every trace.

use super::scenario::Scenario;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One file's seeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FileSeeds {
    /// The payload's content.
    pub payload: u64,
    /// The client's ids and retry jitter.
    pub client: u64,
}

/// Every seed of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Seeds {
    /// turmoil's network (message delivery order, host RNGs).
    pub turmoil: u64,
    /// The drive's session ids.
    pub drive: u64,
    /// The backend's ids and jitter (mixed with the boot number).
    pub backend: u64,
    /// Per file, in the scenario's order.
    pub files: Vec<FileSeeds>,
    /// The fault points' draws.
    pub buggify: u64,
}

impl Seeds {
    /// Draws every seed from a root RNG seeded by `scenario.seed`.
    pub fn draw(scenario: &Scenario) -> Self {
        let mut root = ChaCha8Rng::seed_from_u64(scenario.seed);
        // Statements, not a struct literal, so the draw order is explicit.
        let turmoil = root.next_u64();
        let drive = root.next_u64();
        let backend = root.next_u64();
        let files = scenario
            .files
            .iter()
            .map(|_| {
                let payload = root.next_u64();
                let client = root.next_u64();
                FileSeeds { payload, client }
            })
            .collect();
        let buggify = root.next_u64();
        Self {
            turmoil,
            drive,
            backend,
            files,
            buggify,
        }
    }
}
