//! upsim's integration checks: one test binary, one module per concern.
//!
//! Run with plain `cargo test`; nothing here needs flags or environment
//! variables.
//!
//! - `loom_models`: interleavings of the permit core, model-checked.
//! - `admission_model`: proptest state machine of admission against a
//!   reference model.
//! - `backend_api`: the backend's chunk API over real loopback TCP.
//! - `drive_protocol`: the drive emulator and client over real loopback TCP
//!   (and one turmoil run).
//! - `reference`: the reference scenario end to end, its prod twin, and
//!   determinism, with insta snapshots in `snapshots/`.

mod admission_model;
mod backend_api;
mod drive_protocol;
mod loom_models;
mod reference;
mod support;
mod zoo;
