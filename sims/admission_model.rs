//! The proptest state-machine model of admission, run by plain `cargo
//! test` against the production [`Admitter`].
//!
//! The model itself (reference, steps, invariants) lives in
//! [`upsim::checks::model`], parameterised by the admission implementation
//! under test, so that `upsim zoo` runs the same model against each mutant
//! of the bug zoo.

use std::sync::Arc;
use upsim::admission::{Admission, Admitter};
use upsim::checks::model::{check, ModelRun};

/// Random sequences of admission operations agree with the reference
/// model at every step; failures shrink to a minimal sequence. 2 000 cases
/// from a fresh seed each run.
#[test]
fn admission_agrees_with_its_model() {
    let verdict = check(
        Arc::new(|profile, clock, memory| {
            Arc::new(Admitter::new(profile, clock, memory)) as Arc<dyn Admission>
        }),
        ModelRun::THOROUGH,
    );
    assert_eq!(verdict.cases, ModelRun::THOROUGH.cases);
    if let Some(failure) = verdict.failure {
        panic!("{failure}");
    }
}
