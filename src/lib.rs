//! # upsim
//!
//! A large-file upload system done right, and the deterministic simulation
//! harness that proves it. This file is the table of contents.
//!
//! - [`units`]: byte-size constants and the relations between them.
//! - [`env`]: the environment the system runs in — clock, memory probe and
//!   network — as traits, each with a real and a simulated implementation.
//! - [`checksum`]: the chunk and whole-file checksums.
//! - [`user`]: validated user identifiers.
//! - [`profile`]: configuration profiles (TOML), their validation and drift.
//! - [`admission`]: the upload admission controller (the part that failed in
//!   the original system) and the permit ledger underneath it.
//! - [`diagnose`]: the root-cause report's step table, automated.
//! - [`drive`]: the Google-Drive-style resumable upload emulator, its client
//!   and its fault controls.

pub mod admission;
pub mod checksum;
pub mod diagnose;
pub mod drive;
pub mod env;
pub mod profile;
pub mod units;
pub mod user;
