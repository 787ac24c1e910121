//! The model checks, as library code parameterised by the implementation
//! under test, so that `cargo test` runs them against production and
//! `upsim zoo` runs them against every mutant of the bug zoo.
//!
//! - [`loom_models`]: interleavings of the permit layer ([`PermitGate`]),
//!   model-checked by loom on [`LoomSync`].
//! - [`model`]: a proptest state machine of the whole admission controller
//!   ([`Admission`]) against a reference model.
//! - [`zoo`]: the bug zoo, the original manager's bugs re-created one at a
//!   time behind production's traits, for these checks to catch.
//!
//! A check that finds a bug panics, as a test should. [`quietly`] runs one
//! with that panic caught and its message kept off the terminal, for the
//! zoo, which expects mutants to fail.
//!
//! [`PermitGate`]: crate::admission::PermitGate
//! [`LoomSync`]: crate::admission::sync::LoomSync
//! [`Admission`]: crate::admission::Admission

pub mod loom_models;
pub mod model;
pub mod rules;
pub mod zoo;

use std::any::Any;
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};

thread_local! {
    /// Whether panics on this thread are expected and kept quiet.
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// The text of a panic's payload.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-text payload".to_owned()
    }
}

/// Runs `f`, catching a panic as `Err(message)`. While `f` runs, panics on
/// this thread print nothing (the zoo expects its mutants to fail, possibly
/// thousands of times while proptest shrinks); other threads are untouched.
///
/// Not for simulations: the runner records panics in its own hook, which
/// this one must not bypass.
pub fn quietly<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    install_quiet_hook();
    struct Loud(bool);
    impl Drop for Loud {
        fn drop(&mut self) {
            QUIET.with(|q| q.set(self.0));
        }
    }
    let _restore = Loud(QUIET.with(|q| q.replace(true)));
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| panic_message(&*payload))
}

/// Installs (once per process) a panic hook that says nothing on a thread
/// inside [`quietly`] and defers to the previous hook everywhere else.
fn install_quiet_hook() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                previous(info);
            }
        }));
    });
}
