//! upsim's integration checks: one test binary, one module per concern.
//!
//! Run with plain `cargo test`; nothing here needs flags or environment
//! variables.

mod drive_protocol;
