//! The world: turmoil's simulation with its hosts — `drive`, `backend` and
//! `clients` (every user's uploads, each user on its own uplink) — their
//! links, and the [`Shared`] slots through which the hosts hand the runner
//! what it checks.
//!
//! Order matters here: turmoil assigns addresses and host RNG seeds, and
//! tokio numbers tasks process-wide, in the order hosts are registered and
//! futures spawned, and the trace depends on both. [`World::build`]
//! registers the drive, then the backend, then the client host (its uploads
//! spawned in user order, users in the order of their first file), then
//! sets the latencies.

use super::lockstep::drive_ranges::DriveRanges;
use super::lockstep::window::{WindowModel, Windows};
use super::lockstep::{Findings, Lockstep};
use super::progress::FollowLog;
use super::runner::RunError;
use super::scenario::{DriveOAuth, Protocol, Scenario};
use super::seeds::Seeds;
use crate::admission::{Admission, AdmissionFactory};
use crate::backend::{Backend, BackendConfig, BackendEnv, BufferGauge, MemoryStore, Slip};
use crate::client::tus::{TusOptions, TusUploader};
use crate::client::{ClientConfig, ClientError, Progress, UploadOutcome, Uploader};
use crate::drive::{
    DigestStore, DriveConfig, DriveControl, DriveServer, OAuthClient, OAuthClients,
    OAuthCredentials, TOKEN_PATH,
};
use crate::env::{
    Clock, Link, LinkRate, Network, ScriptedMemory, ShapedNetwork, SimClock, SimNetwork,
};
use crate::payload::Payload;
use crate::trace::{Event, Trace, Tracer};
use crate::user::UserId;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The simulated calendar starts on a fixed day (2024-10-04 UTC), so
/// quotas and traces never depend on the real date.
const EPOCH_DAYS: u64 = 20_000;
const BACKEND_ADDR: &str = "backend:8080";
const DRIVE_PORT: u16 = 443;
/// turmoil's TCP capacity, in messages (writes), not bytes. It bounds two
/// things: each stream's unread messages, and each listener's queue of
/// connections not yet accepted — and turmoil *panics* when that queue
/// overflows. A swarm world opens up to ~350 connections at once (10 users ×
/// 4 files × 8 chunks in flight, plus status queries), so the queue needs
/// room for them. Streams stay small in practice: writers are paced by the
/// link shaper and readers read as bytes arrive, so unread messages are
/// about rate × latency, not the capacity.
const TCP_CAPACITY: usize = 1024;

/// Locks `m`, taking over a lock poisoned by a panicking host (the panic
/// is recorded and flagged on its own).
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How one upload ended: `None` while it runs.
pub(super) type ClientResult = Option<Result<UploadOutcome, ClientError>>;

/// One completed upload's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct ClientCounters {
    /// Chunk requests sent.
    pub chunks_sent: u64,
    /// Chunk requests that failed.
    pub chunk_failures: u64,
    /// Bytes sent, retries included.
    pub sent_bytes: u64,
}

/// What the hosts hand the runner. The hosts write these slots; the runner
/// reads them between steps. Every `Vec` has one entry per file, in the
/// scenario's order.
#[derive(Clone)]
pub(super) struct Shared {
    /// The drive's fault controls, once the drive host has started.
    pub drive_control: Arc<Mutex<Option<DriveControl>>>,
    /// The current boot's admission controller, once the backend started.
    pub admission: Arc<Mutex<Option<Arc<dyn Admission>>>>,
    /// Backend boots so far (each boot takes the next number).
    pub boots: Arc<AtomicU32>,
    /// Bytes each upload has committed so far.
    pub committed: Arc<Mutex<Vec<u64>>>,
    /// How each upload ended.
    pub results: Arc<Mutex<Vec<ClientResult>>>,
    /// Each completed upload's figures.
    pub counters: Arc<Mutex<Vec<ClientCounters>>>,
    /// What the lock-step admission check found, for the oracle.
    pub model_findings: Findings,
    /// What the current boot's backend buffers, once it started.
    pub buffers: Arc<Mutex<Option<BufferGauge>>>,
    /// The current boot's lock-step window model, once the backend started.
    pub window_model: Arc<Mutex<Option<Arc<WindowModel>>>>,
    /// What the window model found, for the oracle.
    pub window_findings: Findings,
    /// The drive's lock-step ranges model, once the drive started.
    pub drive_ranges: Arc<Mutex<Option<Arc<DriveRanges>>>>,
    /// What the ranges model found, for the oracle.
    pub ranges_findings: Findings,
    /// What each upload's event-stream follower saw (empty unless the
    /// scenario follows events).
    pub follow_logs: Arc<Vec<Arc<Mutex<FollowLog>>>>,
}

impl Shared {
    fn new(file_count: usize) -> Self {
        Self {
            drive_control: Arc::default(),
            admission: Arc::default(),
            boots: Arc::new(AtomicU32::new(0)),
            committed: Arc::new(Mutex::new(vec![0; file_count])),
            results: Arc::new(Mutex::new(vec![None; file_count])),
            counters: Arc::new(Mutex::new(vec![ClientCounters::default(); file_count])),
            model_findings: Findings::default(),
            buffers: Arc::default(),
            window_model: Arc::default(),
            window_findings: Findings::default(),
            drive_ranges: Arc::default(),
            ranges_findings: Findings::default(),
            follow_logs: Arc::new((0..file_count).map(|_| Arc::default()).collect()),
        }
    }

    /// The current boot's admission controller, if the backend has started.
    pub fn admission(&self) -> Option<Arc<dyn Admission>> {
        lock(&self.admission).clone()
    }

    /// The drive's fault controls, if the drive has started.
    pub fn drive_control(&self) -> Option<DriveControl> {
        lock(&self.drive_control).clone()
    }
}

/// A built world, ready to step.
pub(super) struct World<'a> {
    /// turmoil's simulation.
    pub sim: turmoil::Sim<'a>,
    /// The run's trace.
    pub trace: Arc<Trace>,
    /// The client hosts' names (one host, `clients`, holds every user).
    pub client_names: Vec<String>,
    /// What the hosts hand back.
    pub shared: Shared,
}

/// What every host is built from.
struct Env {
    clock: Arc<dyn Clock>,
    trace: Arc<Trace>,
    shared: Shared,
}

impl World<'static> {
    /// Builds the world of `scenario`: the simulation, the memory timeline,
    /// the hosts and the links, in that order (see the module docs).
    ///
    /// # Errors
    /// [`RunError::InvalidScenario`] if a link rate is out of range.
    pub fn build(
        scenario: &Scenario,
        seeds: &Seeds,
        payloads: &[Payload],
        factory: AdmissionFactory,
        slip: Slip,
    ) -> Result<Self, RunError> {
        let rate = |mbit| {
            LinkRate::mbit_per_second(mbit).map_err(|e| RunError::InvalidScenario(e.to_string()))
        };
        let drive_rate = rate(scenario.links.drive_link_mbit)?;
        let uplink_rate = rate(scenario.links.client_uplink_mbit)?;
        let epoch: SystemTime = UNIX_EPOCH
            + Duration::from_secs(EPOCH_DAYS * 86_400)
            + Duration::from_millis(scenario.start_of_day_ms);
        let tick = Duration::from_millis(scenario.tick_ms);
        let mut sim = turmoil::Builder::new()
            .rng_seed(seeds.turmoil)
            .epoch(epoch)
            .tick_duration(tick)
            .simulation_duration(Duration::from_millis(scenario.duration_max_ms) + tick)
            .tcp_capacity(TCP_CAPACITY)
            .build();
        let clock: Arc<dyn Clock> = Arc::new(SimClock::new(epoch));
        let trace = Trace::new(clock.clone());
        let memory = ScriptedMemory::new(clock.clone(), scenario.memory);
        super::schedule::script_memory(&memory, scenario);
        let store = MemoryStore::default();
        let env = Env {
            clock,
            trace: trace.clone(),
            shared: Shared::new(scenario.files.len()),
        };
        add_drive(&mut sim, &env, seeds.drive, scenario.drive_oauth);
        let backend = BackendParts {
            memory,
            store,
            factory,
            seed: seeds.backend,
            drive_rate,
            slip,
        };
        add_backend(&mut sim, &env, scenario, backend);
        let client_names = add_clients(&mut sim, &env, scenario, seeds, payloads, uplink_rate);
        set_latencies(&sim, scenario, &client_names);
        Ok(Self {
            sim,
            trace,
            client_names,
            shared: env.shared,
        })
    }
}

/// The `drive` host: the emulator, publishing its fault controls, its
/// answers judged by the lock-step ranges model.
fn add_drive(
    sim: &mut turmoil::Sim<'static>,
    env: &Env,
    drive_seed: u64,
    oauth: Option<DriveOAuth>,
) {
    let (clock, control_slot, trace) = (
        env.clock.clone(),
        env.shared.drive_control.clone(),
        env.trace.clone(),
    );
    let (ranges_slot, findings) = (
        env.shared.drive_ranges.clone(),
        env.shared.ranges_findings.clone(),
    );
    sim.host("drive", move || {
        let (clock, control_slot, trace) = (clock.clone(), control_slot.clone(), trace.clone());
        let (ranges_slot, findings) = (ranges_slot.clone(), findings.clone());
        async move {
            let config = DriveConfig {
                public_base_url: format!("http://drive:{DRIVE_PORT}"),
                seed: drive_seed,
                oauth_clients: oauth.map(sim_oauth_clients),
                ..DriveConfig::default()
            };
            let server = DriveServer::new(config, clock, Arc::new(DigestStore));
            let ranges = DriveRanges::new(findings);
            server.control().observe_puts(ranges.clone());
            *lock(&ranges_slot) = Some(ranges);
            *lock(&control_slot) = Some(server.control());
            Tracer::new(trace, "drive").record(Event::HostStarted { boot: 0 });
            let listener = SimNetwork.listen(&format!("drive:{DRIVE_PORT}")).await?;
            server.serve(listener).await?;
            Ok(())
        }
    });
}

/// What the backend host keeps across boots.
struct BackendParts {
    /// The machine's memory (scripted).
    memory: ScriptedMemory,
    /// Persistence: survives a crash, as a disk would.
    store: MemoryStore,
    /// Builds each boot's admission controller.
    factory: AdmissionFactory,
    /// Mixed with the boot number for each boot's ids and jitter.
    seed: u64,
    /// The backend's link to the drive.
    drive_rate: LinkRate,
    /// The bug zoo's backend bug, if any.
    slip: Slip,
}

/// The `backend` host: each boot (turmoil calls the closure again after a
/// bounce) takes the next boot number and a fresh admission controller.
fn add_backend(
    sim: &mut turmoil::Sim<'static>,
    env: &Env,
    scenario: &Scenario,
    parts: BackendParts,
) {
    let (clock, trace) = (env.clock.clone(), env.trace.clone());
    let (admission_slot, boots) = (env.shared.admission.clone(), env.shared.boots.clone());
    let findings = env.shared.model_findings.clone();
    let shared = env.shared.clone();
    let profile = scenario.profile.clone();
    let oauth = scenario.drive_oauth;
    let piece_bytes_max = scenario.piece_bytes_max;
    sim.host("backend", move || {
        let boot = boots.fetch_add(1, Ordering::SeqCst);
        let BackendParts {
            memory,
            store,
            factory,
            seed,
            drive_rate,
            slip,
        } = &parts;
        let (clock, trace, memory, store) =
            (clock.clone(), trace.clone(), memory.clone(), store.clone());
        let (admission_slot, profile, factory, findings) = (
            admission_slot.clone(),
            profile.clone(),
            factory.clone(),
            findings.clone(),
        );
        let shared = shared.clone();
        let (backend_seed, drive_rate, slip) = (*seed, *drive_rate, *slip);
        async move {
            let tracer = Tracer::new(trace, "backend");
            tracer.record(Event::HostStarted { boot });
            let real = factory(profile.clone(), clock.clone(), Arc::new(memory.clone()));
            // Every decision judged by the reference rules, in lock-step.
            let admitter: Arc<dyn Admission> = Arc::new(Lockstep::new(
                real,
                &profile,
                clock.clone(),
                Arc::new(memory),
                findings,
            ));
            *lock(&admission_slot) = Some(admitter.clone());
            let drive_net =
                ShapedNetwork::new(Arc::new(SimNetwork), Link::new(clock.clone(), drive_rate));
            let window_chunks_max = profile.reorder_window_chunks_max;
            let mut config = BackendConfig::new(
                profile,
                format!("http://drive:{DRIVE_PORT}"),
                backend_seed ^ u64::from(boot).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            );
            config.slip = slip;
            config.drive_credentials = oauth.map(|_| sim_oauth_credentials());
            if let Some(bytes) = piece_bytes_max {
                config.piece_bytes_max = bytes;
            }
            let piece_bytes_max = config.piece_bytes_max;
            let env = BackendEnv {
                clock,
                drive_net: Arc::new(drive_net),
                admission: admitter,
                store: Arc::new(store),
                tracer,
            };
            let listener = SimNetwork.listen(BACKEND_ADDR).await?;
            let backend = Backend::new(config, env);
            *lock(&shared.buffers) = Some(backend.buffer_gauge());
            observe_windows(&backend, &shared, window_chunks_max, piece_bytes_max);
            backend.run(listener).await?;
            Ok(())
        }
    });
}

/// The one OAuth client of a simulated drive with `oauth`: the backend.
fn sim_oauth_clients(oauth: DriveOAuth) -> OAuthClients {
    let credentials = sim_oauth_credentials();
    OAuthClients {
        clients: vec![OAuthClient {
            client_id: credentials.client_id,
            client_secret: credentials.client_secret,
            refresh_token: credentials.refresh_token,
            user: UserId::new("backend").expect("a valid user id"),
        }],
        access_token_lifetime: Duration::from_secs(oauth.access_token_lifetime_s),
    }
}

/// The simulated backend's refresh token, for the drive's token endpoint.
fn sim_oauth_credentials() -> OAuthCredentials {
    OAuthCredentials {
        client_id: "upsim-backend".into(),
        client_secret: "simulated-secret".into(),
        refresh_token: "1//simulated-refresh-token".into(),
        token_uri: format!("http://drive:{DRIVE_PORT}{TOKEN_PATH}"),
    }
}

/// A fresh lock-step window model for this boot's `backend`, attached and
/// published; what the backend believes of the drive is checked against
/// the drive's ranges model.
fn observe_windows(
    backend: &Backend,
    shared: &Shared,
    window_chunks_max: u32,
    piece_bytes_max: u64,
) {
    let model = WindowModel::new(
        Windows::new(window_chunks_max, piece_bytes_max),
        shared.window_findings.clone(),
        lock(&shared.drive_ranges).clone(),
    );
    backend.observe_windows(model.clone());
    *lock(&shared.window_model) = Some(model);
}

/// The scenario's users in the order of their first file, each with the
/// indexes of their files.
fn files_by_user(scenario: &Scenario) -> Vec<(UserId, Vec<usize>)> {
    let mut by_user: Vec<(UserId, Vec<usize>)> = Vec::new();
    for (i, file) in scenario.files.iter().enumerate() {
        match by_user.iter_mut().find(|(u, _)| *u == file.user) {
            Some((_, files)) => files.push(i),
            None => by_user.push((file.user.clone(), vec![i])),
        }
    }
    by_user
}

/// The one client host's name.
const CLIENTS_HOST: &str = "clients";

/// One client host for every user: each user's files upload concurrently
/// over that user's own uplink (a [`Link`] each, so users never share
/// bandwidth), all in one host. One host, not one per user: turmoil polls
/// every host's runtime and scans every link at every tick, so per-user
/// hosts made a crowd tick cost ~25 hosts' worth of polling while the
/// clients share the same latency and the same partitions anyway. Returns
/// the host's name.
fn add_clients(
    sim: &mut turmoil::Sim<'static>,
    env: &Env,
    scenario: &Scenario,
    seeds: &Seeds,
    payloads: &[Payload],
    uplink_rate: LinkRate,
) -> Vec<String> {
    let users: Vec<Vec<(usize, Payload, ClientConfig, Protocol)>> = files_by_user(scenario)
        .into_iter()
        .map(|(user, file_indexes)| {
            file_indexes
                .iter()
                .map(|&i| {
                    let mut config =
                        ClientConfig::new(BACKEND_ADDR, user.clone(), seeds.files[i].client);
                    config.parallel = scenario.parallel;
                    config.retry = scenario.profile.retry;
                    let protocol = scenario.files[i].protocol;
                    (i, payloads[i].clone(), config, protocol)
                })
                .collect()
        })
        .collect();
    let (clock, trace, shared) = (env.clock.clone(), env.trace.clone(), env.shared.clone());
    let follow_events = scenario.follow_events;
    sim.client(CLIENTS_HOST, async move {
        let mut tasks = tokio::task::JoinSet::new();
        for uploads in users {
            let net: Arc<dyn Network> = Arc::new(ShapedNetwork::new(
                Arc::new(SimNetwork),
                Link::new(clock.clone(), uplink_rate),
            ));
            for (i, payload, config, protocol) in uploads {
                let upload = Upload {
                    index: i,
                    net: net.clone(),
                    clock: clock.clone(),
                    trace: trace.clone(),
                    shared: shared.clone(),
                    follow_events,
                    protocol,
                };
                tasks.spawn(upload.run(payload, config));
            }
        }
        while tasks.join_next().await.is_some() {}
        Ok(())
    });
    vec![CLIENTS_HOST.to_owned()]
}

/// One file's upload inside the client host.
struct Upload {
    /// The file's index in the scenario.
    index: usize,
    net: Arc<dyn Network>,
    clock: Arc<dyn Clock>,
    trace: Arc<Trace>,
    shared: Shared,
    /// Whether the client follows the upload's event stream meanwhile
    /// (the chunk API's: a tus client does not).
    follow_events: bool,
    /// Which client kind uploads it.
    protocol: Protocol,
}

impl Upload {
    /// Uploads `payload`, publishing progress, figures and the ending.
    async fn run(self, payload: Payload, config: ClientConfig) {
        let Self {
            index: i,
            net,
            clock,
            trace,
            shared,
            follow_events,
            protocol,
        } = self;
        let progress = {
            let committed = shared.committed.clone();
            Arc::new(move |p: Progress| lock(&committed)[i] = p.committed_bytes)
        };
        let tracer = Tracer::new(trace, "client");
        let result = match protocol {
            Protocol::Chunks => {
                let uploader = Uploader::new(net, clock.clone(), config, tracer, Some(progress));
                Self::chunks(uploader, payload, clock, &shared, i, follow_events).await
            }
            Protocol::Tus {
                patch_bytes,
                checksum,
            } => {
                let options = TusOptions {
                    patch_bytes,
                    checksum,
                };
                let tus = TusUploader::new(net, clock, config, options, tracer, Some(progress));
                tus.upload(Arc::new(payload)).await
            }
        };
        if let Ok(o) = &result {
            lock(&shared.committed)[i] = o.file.size_bytes;
            lock(&shared.counters)[i] = ClientCounters {
                chunks_sent: o.chunks_sent,
                chunk_failures: o.chunk_failures,
                sent_bytes: o.sent_bytes,
            };
        }
        lock(&shared.results)[i] = Some(result);
    }

    /// The chunk API's client, following the upload's events if asked.
    async fn chunks(
        uploader: Uploader,
        payload: Payload,
        clock: Arc<dyn Clock>,
        shared: &Shared,
        i: usize,
        follow_events: bool,
    ) -> Result<UploadOutcome, ClientError> {
        if follow_events {
            let log = shared.follow_logs[i].clone();
            super::progress::upload_followed(uploader, payload, clock, log).await
        } else {
            uploader.upload(Arc::new(payload), None).await
        }
    }
}

/// Each client ↔ backend link, then backend ↔ drive.
fn set_latencies(sim: &turmoil::Sim<'static>, scenario: &Scenario, client_names: &[String]) {
    for name in client_names {
        sim.set_link_latency(
            name.as_str(),
            "backend",
            Duration::from_millis(scenario.links.client_latency_ms),
        );
    }
    sim.set_link_latency(
        "backend",
        "drive",
        Duration::from_millis(scenario.links.drive_latency_ms),
    );
}
