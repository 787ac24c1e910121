//! upsim's integration checks: one test binary, one module per concern.
//!
//! Run with plain `cargo test`; nothing here needs flags or environment
//! variables.
//!
//! - `loom_models`: interleavings of the permit core, model-checked.
//! - `admission_model`: proptest state machine of admission against a
//!   reference model.

mod admission_model;
mod loom_models;
