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
//! - [`metrics`]: the Prometheus metrics of `GET /metrics`.

pub mod api;
pub mod breaker;
pub mod metrics;
pub mod server;
pub mod store;
mod upload;

pub use server::{
    Backend, BackendConfig, BackendEnv, DriveLink, Health, ShutdownReport,
    CHUNK_BODY_IDLE_TIMEOUT_DEFAULT, DRAIN_TIMEOUT_DEFAULT, REQUEST_HEADER_BYTES_MAX_DEFAULT,
};
pub use store::{DirStore, MemoryStore, UploadRecord, UploadStore};
pub use upload::{BeyondWindow, Piece, ReorderWindow};
