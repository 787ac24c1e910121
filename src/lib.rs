//! # upsim
//!
//! A large-file upload system done right, and the deterministic simulation
//! harness that proves it. This file is the table of contents.
//!
//! Listed from the inside out: each module imports only those above it
//! (ARCHITECTURE.md has the map; `sims/layering.rs` checks it).
//!
//! Leaves and the environment:
//! - [`units`]: byte-size constants and the relations between them.
//! - [`ids`]: `UploadId` and `SessionId`, and where ids come from (seeded
//!   or the OS).
//! - [`user`]: validated user identifiers.
//! - [`auth`]: bearer tokens (token files, `Authorization` headers).
//! - [`checksum`]: the chunk and whole-file checksums.
//! - [`payload`]: upload sources (files, and a seeded generator addressable
//!   by offset, so a simulated upload never holds the file).
//! - [`buggify`]: fault points inside the code, active only in simulation.
//! - [`coverage`]: named probes at the decisions that matter, counted in
//!   simulation; a sweep fails when a required one was never hit.
//! - [`env`](mod@env): the environment the system runs in — clock, memory probe and
//!   network — as traits, each with a real and a simulated implementation.
//! - [`profile`]: configuration profiles (TOML), their validation and drift.
//! - [`trace`]: ordered events of a run and their hash (determinism).
//! - [`wire`]: HTTP/1.1 plumbing shared by every server and client.
//!
//! The upload system:
//! - [`admission`]: the upload admission controller (the part that failed in
//!   the original system) and the permit ledger underneath it.
//! - [`chunk_api`]: the chunk API's wire forms and refusal causes, shared
//!   by the backend and the client (which import it, never each other).
//! - [`drive`]: the Google-Drive-style resumable upload emulator, its client
//!   and its fault controls.
//! - [`tus`]: tus 1.0.0's wire forms (headers, metadata, checksums,
//!   concatenation), which the backend serves at `/files/`.
//! - [`backend`]: the upload backend: admission at create, chunk intake,
//!   reorder window, committer to the drive, persistence and resume.
//! - [`client`]: the upload client (chunks, retries, resume).
//!
//! The harness and the programs:
//! - [`checks`]: the loom models, the proptest state machine and the bug
//!   zoo, as library code parameterised by the implementation under test.
//! - [`sim`]: deterministic simulation: scenarios, runner, oracle, reports,
//!   sweeps.
//! - [`real`]: real mode: `upsim drive`, `serve` and `upload` on tokio and
//!   real TCP, with the same code the simulations check.
//! - [`outcome`]: a command's output and exit code, and the exit codes.
//! - [`diagnose`]: the root-cause report's step table, automated.
//! - [`zoo_report`]: `upsim zoo`: every bug-zoo mutant and production through
//!   the checks, cheapest first.
//! - [`bench_report`]: `upsim bench-report`, criterion's results beside
//!   their baselines.
//! - [`cli`]: what each `upsim` subcommand prints, wired to the modules
//!   above.

pub mod admission;
pub mod auth;
pub mod backend;
pub mod bench_report;
pub mod buggify;
pub mod checks;
pub mod checksum;
pub mod chunk_api;
pub mod cli;
pub mod client;
pub mod coverage;
pub mod diagnose;
pub mod drive;
pub mod env;
pub mod ids;
pub mod outcome;
pub mod payload;
pub mod profile;
pub mod real;
pub mod sim;
pub mod trace;
pub mod tus;
pub mod units;
pub mod user;
pub mod wire;
pub mod zoo_report;
