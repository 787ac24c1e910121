//! upsim's integration checks: one test binary, one module per concern.
//!
//! Run with plain `cargo test`; nothing here needs flags or environment
//! variables.
//!
//! One module per concern; `cargo test --test sims NAME` selects by these
//! names (docs and CI use `reference`, `zoo`, `loom`, `admission_model`,
//! `real_`, `hostile_input`):
//!
//! - `loom_models`: interleavings of the permit layer, model-checked, each
//!   model shown to catch its bug-zoo mutants at its bound.
//! - `admission_model`: proptest state machine of admission against a
//!   reference model.
//! - `zoo`: every bug-zoo mutant caught by the check named for it,
//!   production passing all of them (an insta snapshot of the table).
//! - `backend_api`: the backend's chunk API over real loopback TCP.
//! - `progress_events`: the progress channel (`GET /uploads/{id}/events`)
//!   over real loopback TCP: an upload reported to its end, resumption
//!   from `Last-Event-ID`, keep-alives, bounds, events tokens.
//! - `drive_protocol`: the drive emulator and client over real loopback TCP
//!   (and one turmoil run).
//! - `faults`: swarm and crowd seeds, fault points, shrinking.
//! - `reference`: the reference scenario end to end, its prod twin, and
//!   determinism, with insta snapshots in `snapshots/`.
//! - `real_e2e`, `real_load`: real mode, the `upsim` binary's drive, serve
//!   and upload as processes on loopback (restarts, interrupts, load
//!   against the slot limits), and a graceful shutdown in process.
//! - `real_replicas`: two `upsim serve --slots` replicas on one Redis and
//!   one drive: the README's curl check (7 creates for one user, 5 admitted).
//! - `shared_admission`: admission shared by replicas on the real Redis at
//!   127.0.0.1:6379 (limits held together, leases of a killed replica
//!   expiring, fencing tokens, release by the holder only, FIFO across
//!   replicas, wake-up latency, quota, an unreachable store).
//! - `shared_model`: random sequences against `SharedAdmitter` on the real
//!   Redis, compared at every step with a model on the same `Rules` as the
//!   in-process proptest model.
//! - `shared_restart`: the same across a restart of a private
//!   `redis-server` that loses every key: leases re-asserted, fencing
//!   tokens still increasing, over-admission measured against its bound.
//! - `real_tls`: real mode over TLS with throwaway CAs: the whole path
//!   `https://`, refused certificates and host names with typed errors,
//!   handshake bounds, unusable certificate files.
//! - `real_logs`: logs and progress for files and pipes (no colour codes,
//!   JSON lines, no carriage returns).
//! - `real_progress`: the progress channel with the binary's processes (an
//!   events token never logged; `upsim upload`'s committed progress from
//!   the stream, as plain lines in a pipe).
//! - `hostile_input::{backend, drive}`: a table of hostile requests per
//!   real-mode server, in process; nothing stored may change.
//! - `readme`: README's sample outputs against fresh runs of their commands.
//! - `sharding`: `upsim sweep --shard K/N --results FILE` as separate
//!   processes, merged by `upsim sweep merge`, equal seed for seed to one
//!   unsharded sweep; a killed shard's lines kept; `--check-determinism`
//!   passing and failing.
//! - `layering`: the house rules of ARCHITECTURE.md (imports point inward,
//!   no source file over 800 lines, the map names every module).
//! - `support`: what they share, a file per kind: `snapshots` (insta,
//!   replay hints), `files` (temporary dirs, payloads, digests,
//!   fingerprints), `process` (child processes, ports, bounded waits),
//!   `http` (raw HTTP/1.1, credentials), `stack` (a backend and a drive in
//!   process, and the chunk API's calls).

mod admission_model;
mod backend_api;
mod drive_protocol;
mod faults;
mod hostile_input;
mod layering;
mod loom_models;
mod progress_events;
mod readme;
mod real_e2e;
mod real_load;
mod real_logs;
mod real_oauth;
mod real_progress;
mod real_replicas;
mod real_tls;
mod reference;
mod sharding;
mod shared_admission;
mod shared_model;
mod shared_restart;
mod support;
mod tus;
mod zoo;
