//! The runner: builds a turmoil world from a [`Scenario`], drives it step
//! by step, injects the fault schedule, samples the oracle after every
//! step, and writes the [`Report`].
//!
//! Determinism: one root RNG, seeded by the scenario's seed, draws every
//! other seed (turmoil's network, the drive's ids, the backend's ids and
//! jitter, each client's jitter, each payload) in a fixed order. The hosts
//! run on turmoil's single-threaded, simulated-time runtimes; the only wall
//! clock read is for the report's wall figures, which never reach the
//! trace.

use super::oracle::{Bounds, Oracle};
use super::report::{peak_rss_bytes, FileOutcome, FileReport, Report, WallFigures};
use super::scenario::{Fault, Scenario};
use crate::admission::{Admission, Admitter, MemoryBudget};
use crate::backend::{Backend, BackendConfig, BackendEnv, MemoryStore};
use crate::buggify;
use crate::client::{ClientConfig, ClientError, Progress, UploadOutcome, Uploader};
use crate::drive::{DigestStore, DriveConfig, DriveControl, DriveServer};
use crate::env::{
    Clock, Link, LinkRate, MemoryProbe, MemorySnapshot, Network, ScriptedMemory, ShapedNetwork,
    SimClock, SimNetwork,
};
use crate::payload::Payload;
use crate::profile::Profile;
use crate::trace::{Event, Trace, Tracer};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
/// After the clients finish, how long the backend may take to release what
/// it still holds before the end-of-run checks.
const DRAIN_MS: u64 = 120_000;
/// Buffer used to compute a source's checksum.
const DIGEST_BUFFER_BYTES: usize = 8 << 20;

/// A progress callback: (simulated ms, bytes committed by all clients,
/// total bytes).
pub type RunProgress = Arc<dyn Fn(u64, u64, u64) + Send + Sync>;

/// Builds the backend's admission controller for one boot: the production
/// [`Admitter`] by default; the bug zoo passes its mutants here.
pub type AdmissionFactory =
    Arc<dyn Fn(Profile, Arc<dyn Clock>, Arc<dyn MemoryProbe>) -> Arc<dyn Admission> + Send + Sync>;

/// How to run.
#[derive(Clone, Default)]
pub struct RunOptions {
    /// Called about every 10 simulated seconds.
    pub progress: Option<RunProgress>,
    /// The admission implementation (default: the production `Admitter`).
    pub admission: Option<AdmissionFactory>,
}

/// A run that could not be carried out (as opposed to one that failed a
/// check, which is a report with violations).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    /// The scenario does not make sense.
    #[error("invalid scenario: {0}")]
    InvalidScenario(String),
}

thread_local! {
    /// Panics seen on this thread while a run is in progress. The hosts of
    /// a simulation run on the thread that steps it, and tokio catches a
    /// panicking task (a connection handler, say), so without this a panic
    /// inside a simulated server would go unnoticed.
    static PANICS: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Installs (once per process) a panic hook that records panics in
/// [`PANICS`] and then defers to the previous hook.
fn record_panics() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.with(|p| {
                if let Ok(mut p) = p.try_borrow_mut() {
                    p.push(
                        info.to_string()
                            .lines()
                            .next()
                            .unwrap_or_default()
                            .to_owned(),
                    );
                }
            });
            previous(info);
        }));
    });
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

type ClientResult = Option<Result<UploadOutcome, ClientError>>;

/// Runs `scenario`, returning its report and its full trace.
pub fn run(scenario: &Scenario, options: &RunOptions) -> Result<(Report, Arc<Trace>), RunError> {
    scenario.validate().map_err(RunError::InvalidScenario)?;
    record_panics();
    PANICS.with(|p| p.borrow_mut().clear());
    let wall_start = Instant::now();

    // 1. Seeds, all drawn from the one root RNG, in a fixed order.
    let mut root = ChaCha8Rng::seed_from_u64(scenario.seed);
    let turmoil_seed = root.next_u64();
    let drive_seed = root.next_u64();
    let backend_seed = root.next_u64();
    let file_seeds: Vec<(u64, u64)> = scenario
        .files
        .iter()
        .map(|_| (root.next_u64(), root.next_u64()))
        .collect();

    let buggify_seed = root.next_u64();

    // 2. The sources' checksums (the oracle's reference).
    let digest_start = Instant::now();
    let payloads: Vec<Payload> = scenario
        .files
        .iter()
        .zip(&file_seeds)
        .map(|(f, (payload_seed, _))| Payload::new(*payload_seed, f.size_bytes))
        .collect();
    let source_checksums: Vec<String> = payloads
        .iter()
        .map(|p| p.digest(DIGEST_BUFFER_BYTES).hex())
        .collect();
    let source_digest_ms = u64::try_from(digest_start.elapsed().as_millis()).unwrap_or(u64::MAX);

    // 3. The world.
    let epoch: SystemTime = UNIX_EPOCH + Duration::from_secs(EPOCH_DAYS * 86_400);
    let tick = Duration::from_millis(scenario.tick_ms);
    let mut sim = turmoil::Builder::new()
        .rng_seed(turmoil_seed)
        .epoch(epoch)
        .tick_duration(tick)
        .simulation_duration(Duration::from_millis(scenario.duration_max_ms) + tick)
        .tcp_capacity(TCP_CAPACITY)
        .build();
    let clock: Arc<dyn Clock> = Arc::new(SimClock::new(epoch));
    let trace = Trace::new(clock.clone());
    let memory = ScriptedMemory::new(clock.clone(), scenario.memory);
    for f in &scenario.faults {
        if let Fault::MemoryPressure {
            available_bytes,
            duration_ms,
        } = f.fault
        {
            let spike = MemorySnapshot {
                available_bytes: available_bytes.min(scenario.memory.total_bytes),
                ..scenario.memory
            };
            memory.set_at(Duration::from_millis(f.at_ms), spike);
            memory.set_at(
                Duration::from_millis(f.at_ms + duration_ms),
                scenario.memory,
            );
        }
    }
    let store = MemoryStore::default();
    let drive_control: Arc<Mutex<Option<DriveControl>>> = Arc::default();
    let admission: Arc<Mutex<Option<Arc<dyn Admission>>>> = Arc::default();
    let factory: AdmissionFactory = options.admission.clone().unwrap_or_else(|| {
        Arc::new(|profile, clock, memory| {
            Arc::new(Admitter::new(profile, clock, memory)) as Arc<dyn Admission>
        })
    });
    let boots = Arc::new(AtomicU32::new(0));
    let committed: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(vec![0; scenario.files.len()]));
    let results: Arc<Mutex<Vec<ClientResult>>> =
        Arc::new(Mutex::new(vec![None; scenario.files.len()]));
    let counters: Arc<Mutex<Vec<(u64, u64, u64)>>> =
        Arc::new(Mutex::new(vec![(0, 0, 0); scenario.files.len()]));

    {
        let (clock, control_slot, trace) = (clock.clone(), drive_control.clone(), trace.clone());
        sim.host("drive", move || {
            let (clock, control_slot, trace) = (clock.clone(), control_slot.clone(), trace.clone());
            async move {
                let config = DriveConfig {
                    public_base_url: format!("http://drive:{DRIVE_PORT}"),
                    seed: drive_seed,
                    ..DriveConfig::default()
                };
                let server = DriveServer::new(config, clock, Arc::new(DigestStore));
                *lock(&control_slot) = Some(server.control());
                Tracer::new(trace, "drive").record(Event::HostStarted { boot: 0 });
                let listener = SimNetwork.listen(&format!("drive:{DRIVE_PORT}")).await?;
                server.serve(listener).await?;
                Ok(())
            }
        });
    }
    {
        let (clock, trace, memory, store) =
            (clock.clone(), trace.clone(), memory.clone(), store.clone());
        let (admission_slot, boots, factory) = (admission.clone(), boots.clone(), factory.clone());
        let profile = scenario.profile.clone();
        let drive_rate = LinkRate::mbit_per_second(scenario.links.drive_link_mbit)
            .map_err(|e| RunError::InvalidScenario(e.to_string()))?;
        sim.host("backend", move || {
            let boot = boots.fetch_add(1, Ordering::SeqCst);
            let (clock, trace, memory, store) =
                (clock.clone(), trace.clone(), memory.clone(), store.clone());
            let (admission_slot, profile, factory) =
                (admission_slot.clone(), profile.clone(), factory.clone());
            async move {
                let tracer = Tracer::new(trace, "backend");
                tracer.record(Event::HostStarted { boot });
                let admitter = factory(profile.clone(), clock.clone(), Arc::new(memory));
                *lock(&admission_slot) = Some(admitter.clone());
                let drive_net =
                    ShapedNetwork::new(Arc::new(SimNetwork), Link::new(clock.clone(), drive_rate));
                let config = BackendConfig::new(
                    profile,
                    format!("http://drive:{DRIVE_PORT}"),
                    backend_seed ^ u64::from(boot).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                );
                let env = BackendEnv {
                    clock,
                    drive_net: Arc::new(drive_net),
                    admission: admitter,
                    store: Arc::new(store),
                    tracer,
                };
                let listener = SimNetwork.listen(BACKEND_ADDR).await?;
                Backend::new(config, env).run(listener).await?;
                Ok(())
            }
        });
    }
    let uplink_rate = LinkRate::mbit_per_second(scenario.links.client_uplink_mbit)
        .map_err(|e| RunError::InvalidScenario(e.to_string()))?;
    // One client host per user, uploading that user's files concurrently
    // over the user's one uplink.
    let mut by_user: Vec<(crate::user::UserId, Vec<usize>)> = Vec::new();
    for (i, file) in scenario.files.iter().enumerate() {
        match by_user.iter_mut().find(|(u, _)| *u == file.user) {
            Some((_, files)) => files.push(i),
            None => by_user.push((file.user.clone(), vec![i])),
        }
    }
    let client_names: Vec<String> = (0..by_user.len()).map(|u| format!("client{u}")).collect();
    for (u, (user, file_indexes)) in by_user.iter().enumerate() {
        let uploads: Vec<(usize, Payload, ClientConfig)> = file_indexes
            .iter()
            .map(|&i| {
                let mut config = ClientConfig::new(BACKEND_ADDR, user.clone(), file_seeds[i].1);
                config.parallel = scenario.parallel;
                config.retry = scenario.profile.retry;
                (i, payloads[i].clone(), config)
            })
            .collect();
        let (clock, trace) = (clock.clone(), trace.clone());
        let (results, committed, counters) = (results.clone(), committed.clone(), counters.clone());
        sim.client(client_names[u].as_str(), async move {
            let net: Arc<dyn Network> = Arc::new(ShapedNetwork::new(
                Arc::new(SimNetwork),
                Link::new(clock.clone(), uplink_rate),
            ));
            let mut tasks = tokio::task::JoinSet::new();
            for (i, payload, config) in uploads {
                let (net, clock, trace) = (net.clone(), clock.clone(), trace.clone());
                let (results, committed, counters) =
                    (results.clone(), committed.clone(), counters.clone());
                tasks.spawn(async move {
                    let progress = {
                        let committed = committed.clone();
                        Arc::new(move |p: Progress| lock(&committed)[i] = p.committed_bytes)
                    };
                    let uploader = Uploader::new(
                        net,
                        clock,
                        config,
                        Tracer::new(trace, "client"),
                        Some(progress),
                    );
                    let result = uploader.upload(Arc::new(payload), None).await;
                    if let Ok(o) = &result {
                        lock(&committed)[i] = o.file.size_bytes;
                        lock(&counters)[i] = (o.chunks_sent, o.chunk_failures, o.sent_bytes);
                    }
                    lock(&results)[i] = Some(result);
                });
            }
            while tasks.join_next().await.is_some() {}
            Ok(())
        });
    }
    for name in &client_names {
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

    // 4. The schedule: faults and their recoveries, by time.
    enum Action {
        Inject(Fault),
        Repair,
        Restart,
    }
    let mut schedule: Vec<(u64, u64, Action)> = Vec::new();
    for (n, f) in scenario.faults.iter().enumerate() {
        let n = n as u64 * 2;
        schedule.push((f.at_ms, n, Action::Inject(f.fault.clone())));
        match f.fault {
            Fault::Partition { duration_ms } => {
                schedule.push((f.at_ms + duration_ms, n + 1, Action::Repair))
            }
            Fault::BackendCrash { down_ms } => {
                schedule.push((f.at_ms + down_ms, n + 1, Action::Restart))
            }
            _ => {}
        }
    }
    schedule.sort_by_key(|(at, n, _)| (*at, *n));
    let mut schedule = schedule.into_iter().peekable();

    // 5. Step until every client is done, sampling the oracle each step.
    let memory_limit = MemoryBudget::of(&scenario.profile, &scenario.memory).limit_bytes;
    let mut oracle = Oracle::new(Bounds {
        memory_limit_bytes: memory_limit,
        admission_wait_ms: scenario.admission_wait_bound_ms,
        daily_limit_bytes: scenario
            .profile
            .upload_limits_enabled
            .then_some(scenario.profile.daily_limit_bytes),
    });
    let mut faults_injected: BTreeMap<String, u32> = BTreeMap::new();
    let mut next_progress_ms = 0u64;
    let total_bytes: u64 = scenario.files.iter().map(|f| f.size_bytes).sum();
    let mut finished = false;
    let mut safety = true;
    let mut buggify_fired = BTreeMap::new();
    buggify::install(&scenario.buggify, buggify_seed);
    loop {
        let now_ms = u64::try_from(sim.elapsed().as_millis()).unwrap_or(u64::MAX);
        // The liveness phase: faults and fault points off, and every upload
        // must end within the bound.
        if safety && now_ms >= scenario.safety_ms {
            safety = false;
            buggify_fired = buggify::stop();
            trace.record_at(
                "runner",
                now_ms,
                Event::Fault {
                    fault: "liveness_phase".into(),
                },
            );
        }
        if !safety && now_ms > scenario.safety_ms + scenario.liveness_bound_ms {
            let pending = lock(&results).iter().filter(|r| r.is_none()).count();
            oracle.flag(
                "liveness",
                format!(
                    "{pending} upload(s) still running {} ms after the faults stopped (bound {} ms)",
                    now_ms - scenario.safety_ms,
                    scenario.liveness_bound_ms
                ),
            );
            break;
        }
        while schedule.peek().is_some_and(|(at, _, _)| *at <= now_ms) {
            let Some((_, _, action)) = schedule.next() else {
                break;
            };
            let name = match action {
                Action::Inject(fault) => {
                    let kind = fault.kind();
                    *faults_injected.entry(kind.to_owned()).or_insert(0) += 1;
                    let control = lock(&drive_control).clone();
                    match fault {
                        Fault::Partition { .. } => {
                            for c in &client_names {
                                sim.partition(c.as_str(), "backend");
                            }
                        }
                        Fault::BackendCrash { .. } => sim.crash("backend"),
                        Fault::DriveErrors { status, count } => {
                            if let Some(c) = control {
                                c.fail_next_puts(status, count)
                            }
                        }
                        Fault::DriveSessionExpiry => {
                            if let Some(c) = control {
                                c.expire_all_sessions()
                            }
                        }
                        Fault::DriveShortPiece { keep_bytes } => {
                            if let Some(c) = control {
                                c.truncate_next_piece(keep_bytes)
                            }
                        }
                        Fault::MemoryPressure { .. } => {} // on the scripted timeline
                    }
                    kind.to_owned()
                }
                Action::Repair => {
                    for c in &client_names {
                        sim.repair(c.as_str(), "backend");
                    }
                    "partition_healed".to_owned()
                }
                Action::Restart => {
                    sim.bounce("backend");
                    "backend_restarted".to_owned()
                }
            };
            trace.record_at("runner", now_ms, Event::Fault { fault: name });
        }
        match sim.step() {
            Ok(true) => {
                // Every client is done. Drain: give the backend a bounded
                // time to release what it still holds (a late release is
                // allowed; a leak is not).
                finished = true;
                let drain_until = now_ms + DRAIN_MS;
                loop {
                    let idle = lock(&admission)
                        .as_ref()
                        .is_none_or(|a| a.state().ledger.is_idle());
                    let at = u64::try_from(sim.elapsed().as_millis()).unwrap_or(u64::MAX);
                    if idle || at >= drain_until || sim.step().is_err() {
                        break;
                    }
                }
                break;
            }
            Ok(false) => {}
            Err(e) => {
                oracle.flag("liveness", format!("the simulation stopped: {e}"));
                break;
            }
        }
        if let Some(a) = lock(&admission).clone() {
            oracle.sample(&*a, now_ms);
        }
        if now_ms >= next_progress_ms {
            next_progress_ms = now_ms + 10_000;
            if let Some(progress) = &options.progress {
                progress(now_ms, lock(&committed).iter().sum(), total_bytes);
            }
        }
    }
    if safety {
        buggify_fired = buggify::stop();
    }
    let simulated_ms = u64::try_from(sim.elapsed().as_millis()).unwrap_or(u64::MAX);
    let simulation_wall = wall_start
        .elapsed()
        .saturating_sub(Duration::from_millis(source_digest_ms));

    // 6. The oracle's end checks.
    let final_state = lock(&admission).as_ref().map(|a| a.state().ledger);
    let drive = lock(&drive_control).clone();
    let commits = drive.as_ref().map(|c| c.commit_log()).unwrap_or_default();
    let events = trace.events();
    let results = std::mem::take(&mut *lock(&results));
    let paired: Vec<(ClientResult, String)> = results
        .iter()
        .cloned()
        .zip(source_checksums.iter().cloned())
        .collect();
    // A run cut short is checked for safety only: uploads may still hold
    // their slots.
    oracle.finish(
        if finished { final_state.as_ref() } else { None },
        &commits,
        &events,
        &paired,
        &scenario.expect,
    );

    for panic in PANICS.with(|p| std::mem::take(&mut *p.borrow_mut())) {
        oracle.flag("no_panic", panic);
    }

    // 7. The report.
    let mut retries: BTreeMap<String, u32> = BTreeMap::new();
    for e in &events {
        if let Event::Backoff { what, .. } = &e.event {
            let kind = what.split(':').next().unwrap_or(what).to_owned();
            *retries.entry(kind).or_insert(0) += 1;
        }
    }
    let counters = lock(&counters).clone();
    let files = scenario
        .files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let outcome = match &results[i] {
                Some(Ok(o)) => FileOutcome::Complete {
                    drive_checksum: o.file.crc64nvme.clone(),
                    checksum_match: o.file.crc64nvme == source_checksums[i],
                },
                Some(Err(e)) => FileOutcome::Failed {
                    error: e.to_string(),
                },
                None => FileOutcome::Unfinished,
            };
            FileReport {
                user: f.user.to_string(),
                size_bytes: f.size_bytes,
                source_checksum: source_checksums[i].clone(),
                outcome,
                chunks_sent: counters[i].0,
                chunk_failures: counters[i].1,
                sent_bytes: counters[i].2,
            }
        })
        .collect();
    let wall_s = simulation_wall.as_secs_f64().max(1e-9);
    let report = Report {
        scenario: scenario.name.clone(),
        seed: scenario.seed,
        profile: scenario.profile.name.clone(),
        passed: oracle.violations.is_empty(),
        files,
        total_bytes,
        chunk_size_bytes: scenario.profile.chunk_size_bytes,
        faults_injected,
        retries,
        drive: drive.map(|c| c.stats()).unwrap_or_default(),
        backend_boots: boots.load(Ordering::SeqCst),
        fault_points_fired: buggify_fired
            .iter()
            .map(|(site, n)| (format!("{site:?}"), *n))
            .collect(),
        simulated_ms,
        peaks: oracle.peaks.clone(),
        trace_events: events.len(),
        trace_hash: trace.hash(),
        violations: oracle.violations.clone(),
        wall: WallFigures {
            simulation_ms: u64::try_from(simulation_wall.as_millis()).unwrap_or(u64::MAX),
            source_digest_ms,
            sim_seconds_per_wall_second: (simulated_ms as f64 / 1e3) / wall_s,
            peak_rss_bytes: peak_rss_bytes(),
        },
    };
    Ok((report, trace))
}
