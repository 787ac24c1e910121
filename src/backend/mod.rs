//! The upload backend: the chunk API (client → backend), admission at
//! upload creation, the reorder window, and the drive protocol (backend →
//! drive), with persistence so that its own crash loses no committed work.
//!
//! One file per concept:
//! The chunk API's wire forms live in [`crate::chunk_api`], which the
//! client imports too; the backend is not imported by the client.
//!
//! - [`config`]: [`BackendConfig`] (with its defaults) and [`BackendEnv`].
//! - [`server`]: [`Backend`], its shared state, the serve loop and its
//!   graceful shutdown.
//! - `routes`: the one routing table; who sent a request; status and abort.
//! - `probes`: which coverage probe a refusal or an ending marks.
//! - `refusals`: every refusal on its way to the wire, and the mapping of
//!   admission and drive errors onto them.
//! - `create`: the idempotent create (client tokens, the per-user limit,
//!   admission, the drive session).
//! - `intake`: the chunk handler: checks, the body, the window.
//! - `committer`: the per-upload committer task, session restarts, and the
//!   one way an upload ends.
//! - `resume`: taking persisted uploads back after a restart.
//! - `retention`: how long ended uploads (and their client tokens) are
//!   kept, and dropping them after.
//! - `health`: `GET /healthz` and the gauges of `GET /metrics`.
//! - [`events`]: the progress channel (`GET /uploads/{id}/events`, Server-
//!   Sent Events) with its bounds and tokens; `progress`, what each upload
//!   publishes to it.
//! - `page`: the upload page at `/` (HTML, CSS and JavaScript in the
//!   binary).
//! - [`observer`]: what the backend tells an observer about its windows
//!   (each chunk decision, piece and drive answer), for a simulation's
//!   lock-step model; nobody is told in production.
//! - `upload`: one upload's window and state; [`ReorderWindow`] drives the
//!   window on its own (for benchmarks).
//! - [`store`]: what is persisted ([`MemoryStore`] in simulation,
//!   [`DirStore`] for real).
//! - [`breaker`]: the drive link's circuit breaker.
//! - [`slip`]: one bug put back, for the bug zoo (production: none).
//! - [`metrics`]: the Prometheus metrics of `GET /metrics`.
//! - `tus`: the tus 1.0.0 endpoint at `/files/` (a file per concern:
//!   routing and replies, creation, HEAD, PATCH and the body's intake,
//!   the PATCH lock, the tail of a tus upload, termination, deferred
//!   lengths, concatenation), on the same admission, window, committer
//!   and records as the chunk API.

pub mod breaker;
mod committer;
pub mod config;
mod create;
pub mod events;
mod health;
mod intake;
pub mod metrics;
pub mod observer;
mod page;
mod probes;
mod progress;
mod refusals;
mod resume;
mod retention;
mod routes;
mod sent_digest;
pub mod server;
pub mod slip;
pub mod store;
mod tus;
mod upload;

pub use config::{
    BackendConfig, BackendConfigError, BackendEnv, CHUNK_BODY_IDLE_TIMEOUT_DEFAULT,
    CHUNK_BODY_IDLE_TIMEOUT_REAL, DRAIN_TIMEOUT_DEFAULT, ENDED_UPLOADS_RETAINED_MAX_DEFAULT,
    ENDED_UPLOAD_RETENTION_DEFAULT, REQUEST_HEADER_BYTES_MAX_DEFAULT, UPLOAD_IDLE_TIMEOUT_DEFAULT,
};
pub use events::{EventsConfig, Served};
pub use health::{BufferGauge, DriveLink, Health};
pub use observer::{
    ChunkStage, ChunkVerdict, DriveAnswer, NoObserver, Observed, PieceSent, WindowObserver,
    WindowView,
};
pub use server::{Backend, ShutdownReport};
pub use slip::Slip;
pub use store::{DirStore, MemoryStore, SentRecord, TusRecord, UploadRecord, UploadStore};
pub use upload::{BeyondWindow, BufferedUpload, Piece, ReorderWindow};
