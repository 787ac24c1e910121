//! Admission cost: [`Admitter`] admit + release of an `UploadSlot`, beside
//! one `tokio::sync::Semaphore` acquire + release on the same runtime.
//!
//! Groups (each: `admitter` and its `baseline_semaphore`):
//! - `admission_uncontended`: one task, a free slot every time; current-thread
//!   runtime.
//! - `admission_contended`: two tasks on a two-worker runtime, both admitting
//!   and releasing as fast as they can; enough slots that neither waits, so
//!   they contend only for the lock (the semaphore's atomic).
//! - `admission_queued`: a global limit of one, held, and a queue of 100
//!   waiters; one cycle is release → grant to the head → the head's task
//!   wakes, claims its slot, releases it and queues again at the tail. The
//!   semaphore does the same with one permit (tokio's semaphore is FIFO too).
//!
//! The environment is the production one except memory: the clock is
//! [`TokioClock::real`], but the probe is a fixed snapshot, because the OS
//! probe reads `/proc/meminfo` (tens of µs) and would measure the kernel,
//! not admission. Each admit passes an owned `UserId`, as the server does.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;
use upsim::admission::{Admission, Admitter};
use upsim::env::{MemoryProbe, MemoryProbeError, MemorySnapshot, TokioClock};
use upsim::profile::Profile;
use upsim::units::{GIB, MIB};
use upsim::user::UserId;

/// Size of each admitted file (it only sets the memory reservation).
const FILE_SIZE_BYTES: u64 = 64 * MIB;
/// Waiters queued behind a full global limit in `admission_queued`.
const QUEUE_WAITERS: usize = 100;

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

/// An admitter for `profile`; must be called inside the runtime (the
/// clock reads tokio's time).
fn admitter(profile: Profile) -> Admitter {
    let memory = MemorySnapshot::new(64 * GIB, 60 * GIB).expect("valid figures");
    Admitter::new(
        profile,
        Arc::new(TokioClock::real()),
        Arc::new(FixedMemory(memory)),
    )
}

async fn admit_release(admitter: &Admitter, user: &UserId, count: u64) {
    for _ in 0..count {
        let slot = admitter
            .admit(user.clone(), FILE_SIZE_BYTES)
            .await
            .expect("a free slot");
        slot.complete();
    }
}

async fn acquire_release(semaphore: &Semaphore, count: u64) {
    for _ in 0..count {
        let permit = semaphore.acquire().await.expect("never closed");
        drop(permit);
    }
}

/// Small samples and 10 000 bootstrap resamples (criterion's default is
/// 100 000): with html reports on, the plots of the bootstrap
/// distributions cost more than the measurement, and six benchmarks must
/// fit in a minute.
fn configure(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    group
        .throughput(Throughput::Elements(1))
        .sample_size(10)
        .nresamples(10_000)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
}

fn uncontended(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let profile = Profile::dev();
    let semaphore = Semaphore::new(profile.global_slots as usize);
    let admitter = rt.block_on(async { admitter(profile) });
    let alice = user("alice");
    let mut group = c.benchmark_group("admission_uncontended");
    configure(&mut group);
    group.bench_function("admitter", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                admit_release(&admitter, &alice, iters).await;
                start.elapsed()
            })
        });
    });
    group.bench_function("baseline_semaphore", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                acquire_release(&semaphore, iters).await;
                start.elapsed()
            })
        });
    });
    group.finish();
    assert!(admitter.state().ledger.is_idle(), "every slot given back");
}

/// Runs `work(half)` on two tasks of `rt` and returns the wall time until
/// both are done.
fn on_two_tasks<F, Fut>(rt: &Runtime, iters: u64, work: F) -> Duration
where
    F: Fn(u64, usize) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    rt.block_on(async {
        let start = Instant::now();
        let first = tokio::spawn(work(iters - iters / 2, 0));
        let second = tokio::spawn(work(iters / 2, 1));
        first.await.expect("no panic");
        second.await.expect("no panic");
        start.elapsed()
    })
}

fn contended(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let profile = Profile::dev();
    let semaphore = Arc::new(Semaphore::new(profile.global_slots as usize));
    let admitter = rt.block_on(async { admitter(profile) });
    let users = [user("alice"), user("bob")];
    let mut group = c.benchmark_group("admission_contended");
    configure(&mut group);
    group.bench_function("admitter", |b| {
        b.iter_custom(|iters| {
            on_two_tasks(&rt, iters, |count, task| {
                let (admitter, user) = (admitter.clone(), users[task].clone());
                async move { admit_release(&admitter, &user, count).await }
            })
        });
    });
    group.bench_function("baseline_semaphore", |b| {
        b.iter_custom(|iters| {
            on_two_tasks(&rt, iters, |count, _| {
                let semaphore = semaphore.clone();
                async move { acquire_release(&semaphore, count).await }
            })
        });
    });
    group.finish();
    assert!(admitter.state().ledger.is_idle(), "every slot given back");
}

/// Counts cycles in a ring of waiters and stamps the moment the target is
/// reached, so the ring's wind-down is not measured.
struct Cycles {
    done: AtomicU64,
    target: u64,
    reached: Mutex<Option<Instant>>,
}

impl Cycles {
    fn new(target: u64) -> Arc<Self> {
        Arc::new(Self {
            done: AtomicU64::new(0),
            target: target.max(1),
            reached: Mutex::new(None),
        })
    }

    /// Counts one cycle; `true` when the ring should stop.
    fn count(&self) -> bool {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        if done == self.target {
            *self.reached.lock().expect("not poisoned") = Some(Instant::now());
        }
        done >= self.target
    }

    fn elapsed_since(&self, start: Instant) -> Duration {
        self.reached
            .lock()
            .expect("not poisoned")
            .expect("the ring reached its target")
            .duration_since(start)
    }
}

/// Yields until `ready()` holds: lets the spawned ring tasks queue up.
async fn until(ready: impl Fn() -> bool) {
    while !ready() {
        tokio::task::yield_now().await;
    }
}

fn queued(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    // One global slot: held by one task while QUEUE_WAITERS wait behind it
    // (a user may not hold more slots than there are).
    let profile = Profile {
        global_slots: 1,
        user_slots: 1,
        ..Profile::dev()
    };
    assert!(profile.waiters_max as usize > QUEUE_WAITERS);
    let admitter = rt.block_on(async { admitter(profile) });
    let users: Vec<UserId> = (0..=QUEUE_WAITERS)
        .map(|i| user(&format!("user-{i}")))
        .collect();
    let mut group = c.benchmark_group("admission_queued");
    configure(&mut group);
    group.bench_function("admitter", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let cycles = Cycles::new(iters);
                let held = admitter
                    .admit(user("holder"), FILE_SIZE_BYTES)
                    .await
                    .expect("the slot is free");
                // QUEUE_WAITERS + 1 tasks: one holds, QUEUE_WAITERS wait.
                let tasks: Vec<_> = users
                    .iter()
                    .map(|u| {
                        let (admitter, user, cycles) =
                            (admitter.clone(), u.clone(), cycles.clone());
                        tokio::spawn(async move {
                            loop {
                                let slot = admitter
                                    .admit(user.clone(), FILE_SIZE_BYTES)
                                    .await
                                    .expect("granted in turn");
                                let stop = cycles.count();
                                slot.complete();
                                if stop {
                                    break;
                                }
                            }
                        })
                    })
                    .collect();
                until(|| admitter.state().ledger.waiting as usize == users.len()).await;
                let start = Instant::now();
                held.complete();
                for task in tasks {
                    task.await.expect("no panic");
                }
                cycles.elapsed_since(start)
            })
        });
    });
    let semaphore = Arc::new(Semaphore::new(1));
    group.bench_function("baseline_semaphore", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let cycles = Cycles::new(iters);
                let queued = Arc::new(AtomicU64::new(0));
                let held = semaphore.acquire().await.expect("never closed");
                let tasks: Vec<_> = (0..=QUEUE_WAITERS)
                    .map(|_| {
                        let (semaphore, cycles, queued) =
                            (semaphore.clone(), cycles.clone(), queued.clone());
                        tokio::spawn(async move {
                            // Counted in the same poll that queues the
                            // first acquire.
                            queued.fetch_add(1, Ordering::Relaxed);
                            loop {
                                let permit = semaphore.acquire().await.expect("never closed");
                                let stop = cycles.count();
                                drop(permit);
                                if stop {
                                    break;
                                }
                            }
                        })
                    })
                    .collect();
                until(|| queued.load(Ordering::Relaxed) as usize == QUEUE_WAITERS + 1).await;
                let start = Instant::now();
                drop(held);
                for task in tasks {
                    task.await.expect("no panic");
                }
                cycles.elapsed_since(start)
            })
        });
    });
    group.finish();
    assert!(admitter.state().ledger.is_idle(), "every slot given back");
}

criterion_group!(benches, uncontended, contended, queued);
criterion_main!(benches);
