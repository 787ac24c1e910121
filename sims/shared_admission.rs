//! Admission shared by replicas, against the real `redis-server` on
//! 127.0.0.1:6379 (`.ci/run` starts one if none answers; a missing Redis
//! fails these tests, it never skips them).
//!
//! Each test uses its own random key prefix and deletes its keys at the end
//! (a guard deletes them even when an assertion fails). "Replicas" are
//! [`SharedAdmitter`]s, each with its own [`SlotStore`] connection and
//! replica id, on one store.

use crate::support::{free_port, TestResult};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use upsim::admission::shared::{SharedConfig, SlotStore, StoreError};
use upsim::admission::{Admission, AdmissionError, SharedAdmitter, UploadSlot};
use upsim::env::{Clock, MemorySnapshot, ScriptedMemory, TokioClock};
use upsim::profile::Profile;
use upsim::units::{GIB, MIB};
use upsim::user::UserId;

const REDIS_URL: &str = "redis://127.0.0.1:6379/";
/// Bound on every wait for something the store does asynchronously (a
/// release, a ticket cancel): never a timing assertion, only a give-up.
const SETTLE: Duration = Duration::from_secs(10);

/// A random key prefix, and the deletion of its keys on drop.
struct Keys {
    prefix: String,
}

impl Keys {
    fn new() -> Self {
        let id = upsim::ids::os_random_id().expect("OS randomness");
        Self {
            prefix: format!("upsim-test:{}:", &id[..16]),
        }
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        let deleted = redis::Client::open(REDIS_URL)
            .and_then(|c| c.get_connection())
            .and_then(|mut c| {
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(format!("{}*", self.prefix))
                    .query(&mut c)?;
                if keys.is_empty() {
                    return Ok(());
                }
                redis::cmd("DEL").arg(&keys).query::<()>(&mut c)
            });
        if let Err(e) = deleted {
            eprintln!("could not delete test keys {}*: {e}", self.prefix);
        }
    }
}

/// Deletes every lease under `keys`' prefix but not the store's
/// generation: the leases are gone, and no restart is to be noticed.
async fn forget_leases(keys: &Keys) -> TestResult {
    let mut conn = redis::Client::open(REDIS_URL)?
        .get_multiplexed_async_connection()
        .await?;
    let mut doomed: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}user:*", keys.prefix))
        .query_async(&mut conn)
        .await?;
    doomed.push(format!("{}leases", keys.prefix));
    doomed.push(format!("{}holders", keys.prefix));
    redis::cmd("DEL")
        .arg(&doomed)
        .query_async::<()>(&mut conn)
        .await?;
    Ok(())
}

fn user(name: &str) -> UserId {
    UserId::new(name).expect("valid id")
}

fn store(keys: &Keys, replica: &str, ttl: Duration) -> Arc<SlotStore> {
    store_at(&keys.prefix, replica, ttl)
}

fn store_at(prefix: &str, replica: &str, ttl: Duration) -> Arc<SlotStore> {
    let config = SharedConfig {
        key_prefix: prefix.to_owned(),
        lease_ttl: ttl,
        ..SharedConfig::new(REDIS_URL, replica)
    };
    config.validate().expect("valid config");
    Arc::new(SlotStore::open(config).expect("a redis URL"))
}

fn replica(store: Arc<SlotStore>, profile: &Profile) -> SharedAdmitter {
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::real());
    let roomy = MemorySnapshot::new(64 * GIB, 60 * GIB).expect("valid figures");
    let memory = Arc::new(ScriptedMemory::new(clock.clone(), roomy));
    SharedAdmitter::new(profile.clone(), clock, memory, store)
}

/// Replicas "a" and "b" on one store (`keys`), leases of `ttl`.
fn two_replicas(keys: &Keys, ttl: Duration, profile: &Profile) -> (SharedAdmitter, SharedAdmitter) {
    (
        replica(store(keys, "a", ttl), profile),
        replica(store(keys, "b", ttl), profile),
    )
}

/// 20/5 slots, a daily quota of `daily_limit_bytes`, refunded on failure.
fn quota_profile(daily_limit_bytes: u64) -> Profile {
    Profile {
        upload_limits_enabled: true,
        daily_limit_bytes,
        refund_quota_on_failure: true,
        ..profile(20, 5, 5_000)
    }
}

fn profile(global: u32, per_user: u32, wait_ms: u64) -> Profile {
    Profile {
        global_slots: global,
        user_slots: per_user,
        slot_wait_timeout_ms: wait_ms,
        ..Profile::dev()
    }
}

/// Waits (bounded) until the store's state satisfies `ok`.
async fn settle(
    store: &SlotStore,
    who: Option<&UserId>,
    ok: impl Fn(&upsim::admission::shared::StoreState) -> bool,
) -> TestResult<upsim::admission::shared::StoreState> {
    let started = Instant::now();
    loop {
        let state = store.state(who).await?;
        if ok(&state) {
            return Ok(state);
        }
        if started.elapsed() > SETTLE {
            return Err(format!("store never settled: {state:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Slots held now, counted by the test: incremented after a grant and
/// decremented before the slot is dropped (the store frees it later
/// still), so these counts never exceed what the store holds.
#[derive(Default)]
struct Held {
    global: AtomicU32,
    global_max: AtomicU32,
    by_user: Mutex<BTreeMap<String, (u32, u32)>>,
}

impl Held {
    fn take(&self, user: &str) {
        let g = self.global.fetch_add(1, Ordering::SeqCst) + 1;
        self.global_max.fetch_max(g, Ordering::SeqCst);
        let mut by_user = self.by_user.lock().expect("lock");
        let (now, max) = by_user.entry(user.into()).or_default();
        *now += 1;
        *max = (*max).max(*now);
    }

    fn give(&self, user: &str) {
        self.global.fetch_sub(1, Ordering::SeqCst);
        let mut by_user = self.by_user.lock().expect("lock");
        if let Some((now, _)) = by_user.get_mut(user) {
            *now -= 1;
        }
    }
}

/// Admits every user of `names` at once, alternating replicas in runs of
/// five so each user's uploads land on both, each holding its slot 20 ms;
/// the most slots held at once, globally and per user. Also samples the
/// store meanwhile: never more than 20 valid leases.
async fn crowd(
    replicas: &[SharedAdmitter; 2],
    names: &[String],
) -> TestResult<(u32, BTreeMap<String, (u32, u32)>)> {
    let held = Arc::new(Held::default());
    let mut tasks = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let admitter = replicas[(i / 5) % 2].clone();
        let (held, name) = (Arc::clone(&held), name.clone());
        tasks.push(tokio::spawn(async move {
            let slot = admitter.admit_typed(user(&name), MIB).await?;
            held.take(&name);
            tokio::time::sleep(Duration::from_millis(20)).await;
            held.give(&name);
            drop(slot);
            Ok::<_, AdmissionError>(())
        }));
    }
    while tasks.iter().any(|t| !t.is_finished()) {
        let state = replicas[0].store().state(None).await?;
        assert!(state.global_in_use <= 20, "store holds {state:?}");
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    for t in tasks {
        t.await??;
    }
    settle(replicas[0].store(), None, |s| s.global_in_use == 0).await?;
    let by_user = held.by_user.lock().expect("lock").clone();
    Ok((held.global_max.load(Ordering::SeqCst), by_user))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_never_exceed_20_global_and_5_per_user_together() -> TestResult {
    let keys = Keys::new();
    let profile = profile(20, 5, 60_000);
    let ttl = Duration::from_secs(5);
    let replicas = [
        replica(store(&keys, "a", ttl), &profile),
        replica(store(&keys, "b", ttl), &profile),
    ];
    // One user, 15 uploads over both replicas: the user limit binds.
    let one: Vec<String> = vec!["solo".into(); 15];
    let (_, by_user) = crowd(&replicas, &one).await?;
    eprintln!("one user: held at once {by_user:?}");
    assert_eq!(
        by_user.get("solo").map(|&(_, max)| max),
        Some(5),
        "5 at once, never more (and the limit was reached)"
    );
    // Eight users, 60 uploads over both replicas: the global limit binds.
    let many: Vec<String> = (0..60).map(|i| format!("user{}", i % 8)).collect();
    let (global_max, by_user) = crowd(&replicas, &many).await?;
    eprintln!("eight users: held at once {global_max} global, per user {by_user:?}");
    assert_eq!(
        global_max, 20,
        "20 at once, never more (and the limit was reached)"
    );
    assert!(by_user.values().all(|&(_, max)| max <= 5), "{by_user:?}");
    Ok(())
}

/// A replica killed while it holds slots: its runtime (renewal tasks,
/// connection) is gone and its slots are never released.
fn killed_replica_holding(prefix: &str, ttl: Duration, count: u32) -> TestResult<u64> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let last = runtime.block_on(async {
        let b = replica(store_at(prefix, "doomed", ttl), &quota_profile(100 * MIB));
        let mut last = 0;
        for _ in 0..count {
            let slot = b.admit_typed(user("carol"), MIB).await?;
            last = slot.fencing_token().unwrap_or(0);
            std::mem::forget(slot); // never released: the process dies
        }
        Ok::<_, AdmissionError>(last)
    })?;
    runtime.shutdown_background(); // kill -9: renewals stop
    Ok(last)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_s_slots_come_back_within_the_ttl() -> TestResult {
    let keys = Keys::new();
    let ttl = Duration::from_millis(1_000);
    let prefix = keys.prefix.clone();
    let killed = tokio::task::spawn_blocking(move || {
        killed_replica_holding(&prefix, ttl, 5).map_err(|e| e.to_string())
    })
    .await??;
    let killed_at = Instant::now();
    let a = replica(
        store(&keys, "survivor", ttl),
        &Profile {
            slot_wait_timeout_ms: 10_000,
            ..quota_profile(100 * MIB)
        },
    );
    let state = a.store().state(Some(&user("carol"))).await?;
    // Unless the TTL already ran out on a slow machine, the dead replica
    // still holds all five.
    assert!(state.user_in_use <= 5);
    let slot = a.admit_typed(user("carol"), MIB).await?;
    let back_after = killed_at.elapsed();
    eprintln!(
        "dead replica's slots back after {back_after:?} (TTL {ttl:?}); store showed {} held right after the kill",
        state.user_in_use
    );
    assert!(
        slot.fencing_token() > Some(killed),
        "tokens keep increasing"
    );
    assert!(slot.lease_valid());
    // The dead replica's five charges were refunded when its leases
    // expired (the profile refunds failed uploads); the survivor's stands.
    let carol = user("carol");
    let state = settle(a.store(), Some(&carol), |s| s.user_in_use == 1).await?;
    assert_eq!(state.charged_bytes, MIB);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_tokens_strictly_increase_across_replicas() -> TestResult {
    let keys = Keys::new();
    let p = profile(20, 5, 5_000);
    let ttl = Duration::from_secs(5);
    let replicas = [
        replica(store(&keys, "a", ttl), &p),
        replica(store(&keys, "b", ttl), &p),
    ];
    let mut last = 0;
    for i in 0..12 {
        let slot = replicas[i % 2].admit_typed(user("dave"), MIB).await?;
        let token = slot.fencing_token().ok_or("a shared slot has a token")?;
        assert!(token > last, "token {token} after {last}");
        last = token;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_with_a_wrong_token_or_holder_deletes_nothing() -> TestResult {
    use upsim::admission::shared::{AcquireReply, LeaseRecord, LeaseRequest, RenewReply};
    let keys = Keys::new();
    let ttl = Duration::from_secs(5);
    let (a, b) = (store(&keys, "a", ttl), store(&keys, "b", ttl));
    let req = LeaseRequest {
        user: user("erin"),
        ticket: None,
        global_slots: 20,
        user_slots: 5,
        quota_bytes: MIB,
        daily_limit_bytes: Some(10 * MIB),
        waiters_max: 10,
        refund_on_expiry: true,
    };
    let AcquireReply::Granted(g) = a.acquire(&req).await? else {
        return Err("a free store grants".into());
    };
    assert_eq!(a.release(g.token + 1, &user("erin"), true).await?, None);
    assert_eq!(a.release(g.token, &user("frank"), true).await?, None);
    assert_eq!(
        b.release(g.token, &user("erin"), true).await?,
        None,
        "b is not the holder"
    );
    let record = LeaseRecord {
        token: g.token,
        user: user("erin"),
        day: g.day,
        quota_bytes: MIB,
        refund_on_expiry: true,
        generation: g.generation,
    };
    assert_eq!(
        b.renew(&record).await?,
        RenewReply::Gone,
        "nor may b renew it"
    );
    let state = a.state(Some(&user("erin"))).await?;
    assert_eq!(
        (state.global_in_use, state.user_in_use, state.charged_bytes),
        (1, 1, MIB)
    );
    assert_eq!(a.release(g.token, &user("erin"), true).await?, Some(MIB));
    assert_eq!(
        a.release(g.token, &user("erin"), true).await?,
        None,
        "only once"
    );
    let state = a.state(Some(&user("erin"))).await?;
    assert_eq!((state.global_in_use, state.charged_bytes), (0, 0));
    Ok(())
}

/// Admits `name` on `admitter` in a task that records the grant order
/// and holds the slot until `hold` passes.
fn queued(
    admitter: &SharedAdmitter,
    name: &'static str,
    order: &Arc<Mutex<Vec<&'static str>>>,
    hold: Duration,
) -> tokio::task::JoinHandle<Result<(), AdmissionError>> {
    let (admitter, order) = (admitter.clone(), Arc::clone(order));
    tokio::spawn(async move {
        let slot = admitter.admit_typed(user(name), MIB).await?;
        order.lock().expect("lock").push(name);
        tokio::time::sleep(hold).await;
        drop(slot);
        Ok(())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_are_served_fifo_across_replicas() -> TestResult {
    let keys = Keys::new();
    let p = profile(1, 1, 30_000);
    let ttl = Duration::from_secs(5);
    let (a, b) = two_replicas(&keys, ttl, &p);
    let holder = a.admit_typed(user("holder"), MIB).await?;
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    // Queued alternately on b and a, each once the one before is queued.
    for (i, name) in ["w1", "w2", "w3", "w4"].into_iter().enumerate() {
        let on = if i % 2 == 0 { &b } else { &a };
        tasks.push(queued(on, name, &order, Duration::from_millis(10)));
        let queued_now = u32::try_from(i + 1)?;
        settle(a.store(), None, |s| s.waiting == queued_now).await?;
    }
    drop(holder);
    for t in tasks {
        t.await??;
    }
    assert_eq!(*order.lock().expect("lock"), ["w1", "w2", "w3", "w4"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_wakes_a_waiter_on_the_other_replica_measured() -> TestResult {
    let keys = Keys::new();
    let p = profile(1, 1, 30_000);
    let ttl = Duration::from_secs(5);
    let (a, b) = two_replicas(&keys, ttl, &p);
    let mut latencies = Vec::new();
    for _ in 0..20 {
        let held = a.admit_typed(user("x"), MIB).await?;
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move {
                let slot = b.admit_typed(user("y"), MIB).await;
                (Instant::now(), slot)
            })
        };
        settle(a.store(), None, |s| s.waiting == 1).await?;
        // Let the waiter's backoff grow to its cap, as a long wait would.
        tokio::time::sleep(Duration::from_millis(120)).await;
        let released = Instant::now();
        drop(held);
        let (granted, slot) = waiter.await?;
        drop(slot?);
        latencies.push(granted.duration_since(released));
        settle(a.store(), None, |s| s.global_in_use == 0).await?;
    }
    latencies.sort();
    eprintln!(
        "wake-up latency over {} releases (release on a → grant on b): median {:?}, max {:?}",
        latencies.len(),
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
    assert_eq!(latencies.len(), 20);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_or_timed_out_waiter_removes_its_ticket() -> TestResult {
    let keys = Keys::new();
    let ttl = Duration::from_secs(5);
    let p = profile(1, 1, 300);
    let (a, b) = two_replicas(&keys, ttl, &p);
    let _held = a.admit_typed(user("x"), MIB).await?;
    // Timed out: refused with the store's numbers, ticket gone.
    match b.admit_typed(user("y"), MIB).await {
        Err(AdmissionError::SlotsBusy {
            global_in_use: 1,
            global_limit: 1,
            ..
        }) => {}
        other => return Err(format!("expected slots_busy, got {other:?}").into()),
    }
    settle(a.store(), None, |s| s.waiting == 0).await?;
    // Dropped while waiting.
    let long = replica(store(&keys, "c", ttl), &profile(1, 1, 30_000));
    let waiting = tokio::spawn(async move { long.admit_typed(user("z"), MIB).await.map(drop) });
    settle(a.store(), None, |s| s.waiting == 1).await?;
    waiting.abort();
    settle(a.store(), None, |s| s.waiting == 0).await?;
    assert!(b.state().ledger.is_idle(), "b gave its memory back");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_is_charged_once_per_grant_and_refunded_on_failure() -> TestResult {
    let keys = Keys::new();
    let ttl = Duration::from_secs(5);
    let p = quota_profile(10 * MIB);
    let (a, b) = two_replicas(&keys, ttl, &p);
    let who = user("gina");
    let first = a.admit_typed(who.clone(), 3 * MIB).await?;
    assert_eq!(a.store().state(Some(&who)).await?.charged_bytes, 3 * MIB);
    let second = b.admit_typed(who.clone(), 3 * MIB).await?;
    assert_eq!(a.store().state(Some(&who)).await?.charged_bytes, 6 * MIB);
    first.complete(); // the charge stands
    drop(second); // failed: refunded
    let state = settle(a.store(), Some(&who), |s| s.global_in_use == 0).await?;
    assert_eq!(state.charged_bytes, 3 * MIB);
    match b.admit_typed(who.clone(), 8 * MIB).await {
        Err(AdmissionError::QuotaExceeded {
            charged_bytes,
            requested_bytes,
            daily_limit_bytes,
            ..
        }) => assert_eq!(
            (charged_bytes, requested_bytes, daily_limit_bytes),
            (3 * MIB, 8 * MIB, 10 * MIB)
        ),
        other => return Err(format!("expected quota_exceeded, got {other:?}").into()),
    }
    let state = a.store().state(Some(&who)).await?;
    assert_eq!(
        (state.charged_bytes, state.global_in_use),
        (3 * MIB, 0),
        "a refusal charges nothing"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_store_refuses_with_slot_store_unavailable() -> TestResult {
    let keys = Keys::new();
    let closed = free_port()?; // nothing listens there
    let config = SharedConfig {
        key_prefix: keys.prefix.clone(),
        ..SharedConfig::new(format!("redis://127.0.0.1:{closed}/"), "lonely")
    };
    let a = replica(Arc::new(SlotStore::open(config)?), &profile(20, 5, 1_000));
    match a.admit_typed(user("hank"), MIB).await {
        Err(AdmissionError::SlotStoreUnavailable {
            error: StoreError::Unreachable { address, .. },
        }) => assert_eq!(address, format!("127.0.0.1:{closed}")),
        other => return Err(format!("expected slot_store_unavailable, got {other:?}").into()),
    }
    assert!(
        a.state().ledger.is_idle(),
        "nothing granted, memory given back"
    );
    assert_eq!(a.metrics().admitted, 0);
    assert_eq!(a.metrics().rejected.get("slot_store_unavailable"), Some(&1));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_lease_outlives_its_ttl_and_a_lost_one_stops_the_upload() -> TestResult {
    let keys = Keys::new();
    let ttl = Duration::from_millis(600);
    let a = replica(store(&keys, "a", ttl), &profile(20, 5, 5_000));
    let slot: UploadSlot = a.admit_typed(user("ivy"), MIB).await?;
    tokio::time::sleep(ttl * 3).await;
    assert!(slot.lease_valid(), "renewed");
    assert_eq!(a.store().state(None).await?.global_in_use, 1);
    assert!(a.lease_counts().renewals >= 1);
    // The store no longer holds the lease, in the same generation (a
    // restart that loses every key is `shared_restart`'s: leases come back).
    forget_leases(&keys).await?;
    let started = Instant::now();
    while slot.lease_valid() {
        if started.elapsed() > SETTLE {
            return Err("a lease gone from the store still counts as valid".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(a.lease_counts().leases_lost, 1);
    Ok(())
}

/// This is a regression test that ensures the backend sends no further
/// byte to the drive for an upload whose slot lease is lost (the
/// committer's check before each piece): the store loses the lease, the
/// renewal notices, and the next chunk ends the upload with
/// `slot_store_unavailable` while the drive still holds the first chunk
/// only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_whose_lease_is_lost_sends_nothing_more_to_the_drive() -> TestResult {
    use crate::support::{checksum, upload_id, user as user_header, Stack, TempDir};
    use upsim::chunk_api::{Phase, UploadStatus};
    use upsim::profile::MemoryPolicy;
    use upsim::real::{DriveSettings, ServeSettings};
    use upsim::units::KIB;
    const CHUNK: u64 = 256 * KIB;
    let keys = Keys::new();
    let tmp = TempDir::new("lease-lost")?;
    let config = SharedConfig {
        key_prefix: keys.prefix.clone(),
        lease_ttl: Duration::from_millis(600),
        ..SharedConfig::new(REDIS_URL, "committer")
    };
    let profile = Profile {
        chunk_size_bytes: CHUNK,
        memory_per_upload: MemoryPolicy::ChunkWindow { chunks: 4 },
        ..Profile::dev()
    };
    let drive = DriveSettings::new("127.0.0.1:0", tmp.path().join("drive"));
    let stack = Stack::real_mode(&drive, |drive_url| {
        let mut serve = ServeSettings::new("127.0.0.1:0", profile, drive_url);
        serve.slots = Some(config);
        serve
    })
    .await?;
    let alice = [user_header("alice")];
    let created = stack.create(&alice, 3 * CHUNK).await?;
    assert_eq!(created.status, 201, "{}", created.text());
    let id = upload_id(&created)?;
    let bytes = vec![7u8; 3 * CHUNK as usize];
    let chunk = |i: usize| &bytes[i * CHUNK as usize..(i + 1) * CHUNK as usize];
    let sent = stack
        .put_chunk(&alice, &id, 0, &[checksum(chunk(0))], chunk(0))
        .await?;
    assert_eq!(sent.status, 200, "{}", sent.text());
    let committed = |s: &UploadStatus| s.committed_bytes;
    let started = Instant::now();
    while committed(&stack.status(&alice, &id).await?) < CHUNK {
        assert!(
            started.elapsed() < SETTLE,
            "chunk 0 never reached the drive"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The store loses the lease; the renewal (every 200 ms) notices.
    forget_leases(&keys).await?;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let _ = stack
        .put_chunk(&alice, &id, 1, &[checksum(chunk(1))], chunk(1))
        .await?;
    let started = Instant::now();
    let status = loop {
        let status: UploadStatus = stack.status(&alice, &id).await?;
        if status.phase == Phase::Failed {
            break status;
        }
        assert!(started.elapsed() < SETTLE, "the upload went on: {status:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let cause = status.failure.as_ref().map(|f| f.cause.as_str());
    assert_eq!(cause, Some("slot_store_unavailable"), "{status:?}");
    assert_eq!(
        status.committed_bytes, CHUNK,
        "nothing after the lease was lost"
    );
    Ok(())
}

/// The FIFO rule's exception: a waiter blocked only by its own user's
/// limit competes with nobody else, so a newcomer of another user passes
/// it when a global slot is free (as in the in-process ledger).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_blocked_by_its_own_user_limit_is_passed_over() -> TestResult {
    let keys = Keys::new();
    let p = profile(2, 1, 30_000);
    let ttl = Duration::from_secs(5);
    let (a, b) = two_replicas(&keys, ttl, &p);
    let x_held = a.admit_typed(user("x"), MIB).await?;
    let order = Arc::new(Mutex::new(Vec::new()));
    let x_waits = queued(&b, "x", &order, Duration::from_millis(1));
    settle(a.store(), None, |s| s.waiting == 1).await?;
    let y = a.admit_typed(user("y"), MIB).await?;
    assert!(
        order.lock().expect("lock").is_empty(),
        "x still waits for its own slot"
    );
    drop(y);
    drop(x_held);
    x_waits.await??;
    assert_eq!(*order.lock().expect("lock"), ["x"]);
    Ok(())
}

/// A script that fails in the store (here a key of the wrong type under
/// the prefix) is a typed refusal naming the script and the store's error,
/// never a grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_script_refuses_with_slot_store_unavailable() -> TestResult {
    let keys = Keys::new();
    let mut conn = redis::Client::open(REDIS_URL)?
        .get_multiplexed_async_connection()
        .await?;
    redis::cmd("SET")
        .arg(format!("{}leases", keys.prefix))
        .arg("not a sorted set")
        .query_async::<()>(&mut conn)
        .await?;
    let a = replica(
        store(&keys, "a", Duration::from_secs(5)),
        &profile(20, 5, 1_000),
    );
    match a.admit_typed(user("jo"), MIB).await {
        Err(AdmissionError::SlotStoreUnavailable {
            error: StoreError::Script { script, reason },
        }) => assert!(
            script == "acquire" && reason.contains("WRONGTYPE"),
            "{reason}"
        ),
        other => return Err(format!("expected a script error, got {other:?}").into()),
    }
    assert!(a.state().ledger.is_idle());
    Ok(())
}

/// Measured, not asserted (timings vary): one shared admission (acquire
/// script) and one release (release script) beside a bare `PING` round trip
/// on the same loopback Redis. Asserts only that every acquire was granted
/// and released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_and_release_cost_is_measured_beside_a_ping() -> TestResult {
    use upsim::admission::shared::{AcquireReply, LeaseRequest};
    const ROUNDS: u32 = 300;
    let keys = Keys::new();
    let s = store(&keys, "a", Duration::from_secs(5));
    let mut conn = redis::Client::open(REDIS_URL)?
        .get_multiplexed_async_connection()
        .await?;
    let started = Instant::now();
    for _ in 0..ROUNDS {
        redis::cmd("PING").query_async::<String>(&mut conn).await?;
    }
    let ping = started.elapsed() / ROUNDS;
    let req = LeaseRequest {
        user: user("kim"),
        ticket: None,
        global_slots: 20,
        user_slots: 5,
        quota_bytes: MIB,
        daily_limit_bytes: None,
        waiters_max: 1_000,
        refund_on_expiry: false,
    };
    s.state(None).await?; // connects and loads the scripts' path
    let started = Instant::now();
    let mut released = 0;
    for _ in 0..ROUNDS {
        let AcquireReply::Granted(g) = s.acquire(&req).await? else {
            return Err("a free store grants".into());
        };
        released += u32::from(s.release(g.token, &req.user, false).await?.is_some());
    }
    let pair = started.elapsed() / ROUNDS;
    eprintln!(
        "loopback Redis: PING {ping:?}; acquire + release {pair:?} ({:.1} PINGs)",
        pair.as_secs_f64() / ping.as_secs_f64()
    );
    assert_eq!(released, ROUNDS);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_s_queue_is_bounded_across_replicas() -> TestResult {
    let keys = Keys::new();
    let ttl = Duration::from_secs(5);
    let p = Profile {
        waiters_max: 1,
        ..profile(1, 1, 30_000)
    };
    let (a, b) = two_replicas(&keys, ttl, &p);
    let _held = a.admit_typed(user("x"), MIB).await?;
    let order = Arc::new(Mutex::new(Vec::new()));
    let first = queued(&b, "y", &order, Duration::from_millis(1));
    settle(a.store(), None, |s| s.waiting == 1).await?;
    assert_eq!(
        a.admit_typed(user("z"), MIB).await.err(),
        Some(AdmissionError::QueueFull {
            waiting: 1,
            waiters_max: 1
        })
    );
    first.abort();
    Ok(())
}
