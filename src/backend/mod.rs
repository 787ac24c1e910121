//! The upload backend: the chunk API (client → backend), admission at
//! upload creation, the reorder window, and the drive protocol (backend →
//! drive), with persistence so that its own crash loses no committed work.
//!
//! - [`api`]: the wire forms both sides share.
//! - [`server`]: [`Backend`], its handlers and committer tasks.
//! - `upload`: one upload's window and state; [`ReorderWindow`] drives the
//!   window on its own (for benchmarks).
//! - [`store`]: what is persisted ([`MemoryStore`] in simulation,
//!   [`DirStore`] for real).
//! - [`breaker`]: the drive link's circuit breaker.

pub mod api;
pub mod breaker;
pub mod server;
pub mod store;
mod upload;

pub use server::{Backend, BackendConfig, BackendEnv, Health};
pub use store::{DirStore, MemoryStore, UploadRecord, UploadStore};
pub use upload::{BeyondWindow, Piece, ReorderWindow};
