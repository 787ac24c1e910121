//! Shared admission's cost on loopback Redis (issue 11), beside a bare
//! `PING` round trip on the same runtime and connection kind.
//!
//! Groups:
//! - `shared_admit_release`: `admit_release` is one [`SharedAdmitter`]
//!   admit + `UploadSlot` release, each iteration waiting until the store
//!   confirmed the release (so releases never pile up behind the clock);
//!   `baseline_redis_ping` is one `PING` on a multiplexed connection. The
//!   goal is a ratio ≤ 3 (README, "Performance").
//! - `shared_wakeup`: two replicas on one prefix, a global limit of one.
//!   Replica `a` holds the slot, replica `b`'s request waits in the store's
//!   queue for [`HOLD`] (long enough to reach its slowest poll), then `a`
//!   releases; measured is the time from `a`'s release until `b` holds the
//!   slot.
//!
//! Needs Redis at [`REDIS_URL`]: without it the bench fails at once with a
//! message, it never skips. Keys live under a random prefix, deleted at the
//! end. Memory is a fixed snapshot (as in `benches/admission.rs`), so the
//! figures measure admission and the store, not `/proc/meminfo`.

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;
use upsim::admission::shared::{SharedConfig, SlotStore};
use upsim::admission::SharedAdmitter;
use upsim::env::{Clock, MemoryProbe, MemoryProbeError, MemorySnapshot, TokioClock};
use upsim::profile::Profile;
use upsim::units::{GIB, MIB};
use upsim::user::UserId;

/// The store (`.ci/run` starts one here if none answers).
const REDIS_URL: &str = "redis://127.0.0.1:6379/";
/// Size of each admitted file (sets the memory reservation and the charge).
const FILE_SIZE_BYTES: u64 = 64 * MIB;
/// How long the waiter of `shared_wakeup` waits before the release: past
/// the sum of its polling backoff (2 + 4 + … ms up to the 50 ms cap), so
/// a polling waiter is measured at its slowest.
const HOLD: Duration = Duration::from_millis(150);
/// Bound on waiting for the store to show a queued waiter.
const SETTLE: Duration = Duration::from_secs(10);

/// A machine whose memory never changes: 64 GiB, 60 GiB available.
struct FixedMemory(MemorySnapshot);

impl MemoryProbe for FixedMemory {
    fn snapshot(&self) -> Result<MemorySnapshot, MemoryProbeError> {
        Ok(self.0)
    }
}

fn user(name: &str) -> UserId {
    UserId::new(name).expect("a valid literal user id")
}

/// Fails the bench, with what to do, unless Redis answers `PING`.
async fn redis_or_fail() -> redis::aio::MultiplexedConnection {
    let connected = async {
        let client = redis::Client::open(REDIS_URL)?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await?;
        Ok::<_, redis::RedisError>(conn)
    };
    match connected.await {
        Ok(conn) => conn,
        Err(e) => panic!(
            "the shared admission bench needs Redis at {REDIS_URL} and got: {e}; start one with \
             `redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" --appendonly no`"
        ),
    }
}

/// A random prefix for this run's keys.
fn bench_prefix() -> String {
    let id = upsim::ids::os_random_id().expect("OS randomness");
    format!("upsim-bench:{}:", &id[..16])
}

/// Replica `replica` on `prefix`; must be called inside the runtime.
fn replica(prefix: &str, replica: &str, profile: &Profile) -> SharedAdmitter {
    let config = SharedConfig {
        key_prefix: prefix.to_owned(),
        ..SharedConfig::new(REDIS_URL, replica)
    };
    config.validate().expect("a valid config");
    let store = Arc::new(SlotStore::open(config).expect("a redis URL"));
    let memory = MemorySnapshot::new(64 * GIB, 60 * GIB).expect("valid figures");
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::real());
    SharedAdmitter::new(profile.clone(), clock, Arc::new(FixedMemory(memory)), store)
}

/// Waits until `admitter`'s store confirmed `count` releases in all.
async fn released(admitter: &SharedAdmitter, count: u64) {
    while admitter.lease_counts().releases < count {
        tokio::task::yield_now().await;
    }
}

async fn admit_release(admitter: &SharedAdmitter, who: &UserId, iters: u64) {
    let before = admitter.lease_counts().releases;
    for i in 1..=iters {
        let slot = admitter
            .admit_typed(who.clone(), FILE_SIZE_BYTES)
            .await
            .unwrap_or_else(|e| panic!("a free slot every time: {e}"));
        slot.complete();
        released(admitter, before + i).await;
    }
}

/// Small samples and 10 000 bootstrap resamples, as in `benches/admission.rs`.
fn configure(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    group
        .throughput(Throughput::Elements(1))
        .sample_size(10)
        .nresamples(10_000)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

fn admit_release_vs_ping(c: &mut Criterion) {
    let rt = runtime();
    let mut ping = rt.block_on(redis_or_fail());
    let prefix = bench_prefix();
    let admitter = rt.block_on(async { replica(&prefix, "bench-a", &Profile::dev()) });
    let alice = user("alice");
    let mut group = c.benchmark_group("shared_admit_release");
    configure(&mut group);
    group.bench_function("admit_release", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                admit_release(&admitter, &alice, iters).await;
                start.elapsed()
            })
        });
    });
    group.bench_function("baseline_redis_ping", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    redis::cmd("PING")
                        .query_async::<String>(&mut ping)
                        .await
                        .expect("PING answered");
                }
                start.elapsed()
            })
        });
    });
    group.finish();
    rt.block_on(clean_up(&admitter, &prefix));
}

/// One wake-up: `a` holds the only slot, `b` waits [`HOLD`], `a`
/// releases; the time from the release until `b` holds the slot.
async fn one_wakeup(a: &SharedAdmitter, b: &SharedAdmitter) -> Duration {
    let held = a
        .admit_typed(user("ann"), FILE_SIZE_BYTES)
        .await
        .unwrap_or_else(|e| panic!("the free slot: {e}"));
    let waiter = {
        let b = b.clone();
        tokio::spawn(async move { b.admit_typed(user("bob"), FILE_SIZE_BYTES).await })
    };
    let queued_by = Instant::now() + SETTLE;
    while b.store().state(None).await.expect("store state").waiting == 0 {
        assert!(Instant::now() < queued_by, "b never queued");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tokio::time::sleep(HOLD).await;
    let start = Instant::now();
    held.complete();
    let slot = waiter
        .await
        .expect("no panic")
        .unwrap_or_else(|e| panic!("b granted after a's release: {e}"));
    let woken = start.elapsed();
    let before = b.lease_counts().releases;
    slot.complete();
    released(b, before + 1).await;
    woken
}

fn wakeup(c: &mut Criterion) {
    let rt = runtime();
    rt.block_on(redis_or_fail());
    let prefix = bench_prefix();
    let one_slot = Profile {
        global_slots: 1,
        user_slots: 1,
        ..Profile::dev()
    };
    let (a, b) = rt.block_on(async {
        (
            replica(&prefix, "bench-a", &one_slot),
            replica(&prefix, "bench-b", &one_slot),
        )
    });
    let mut group = c.benchmark_group("shared_wakeup");
    configure(&mut group);
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function("release_to_grant_on_another_replica", |bench| {
        bench.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += one_wakeup(&a, &b).await;
                }
                total
            })
        });
    });
    group.finish();
    rt.block_on(clean_up(&a, &prefix));
}

async fn clean_up(admitter: &SharedAdmitter, prefix: &str) {
    if let Err(e) = admitter.store().delete_all_keys().await {
        eprintln!("could not delete the bench keys {prefix}*: {e}");
    }
}

criterion_group!(benches, admit_release_vs_ping, wakeup);
criterion_main!(benches);
