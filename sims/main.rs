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
//! - `faults`: swarm and crowd seeds, fault points, shrinking.
//! - `reference`: the reference scenario end to end, its prod twin, and
//!   determinism, with insta snapshots in `snapshots/`.
//! - `real_e2e`, `real_load`, `hostile_input`: real mode — the `upsim`
//!   binary's drive, serve and upload on loopback (restarts, interrupts,
//!   load against the slot limits, tables of hostile requests).
//! - `support`: the helpers all of them share (processes, raw HTTP, the
//!   in-process stacks, files, snapshots).

mod admission_model;
mod backend_api;
mod drive_protocol;
mod faults;
mod hostile_input;
mod loom_models;
mod real_e2e;
mod real_load;
mod reference;
mod support;
mod zoo;
