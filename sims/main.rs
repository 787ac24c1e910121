//! upsim's integration checks: one test binary, one module per concern.
//!
//! Run with plain `cargo test`; nothing here needs flags or environment
//! variables.
//!
//! - `loom_models`: interleavings of the permit core, model-checked.
//! - `admission_model`: proptest state machine of admission against a
//!   reference model.
//! - `drive_protocol`: the drive emulator and client over real loopback TCP
//!   (and one turmoil run).

mod admission_model;
mod drive_protocol;
mod loom_models;
