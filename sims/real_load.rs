//! Real mode under load: 48 concurrent uploads (8 users × 6 files, one
//! more per user than the 5 per-user slots) against `upsim drive` and
//! `upsim serve` processes on loopback, with the dev profile's 20 global and
//! 5 per-user slots. `/metrics` is sampled throughout: no sample may show
//! more slots in use than the limits (and the run must reach them, or it
//! proved nothing). Every upload must complete with the source's checksum.
//! Prints throughput and the backend's peak RSS (from /proc).
//!
//! Bounded: 48 uploads, one run, a 180 s limit.

use crate::support::{
    finished_files, free_port, get, peak_rss_bytes, token_file, wait_until, Proc, TempDir,
    TestResult,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use upsim::backend::metrics::sample;
use upsim::client::{ClientAuth, ClientConfig, Uploader};
use upsim::env::{TokioClock, TokioNetwork};
use upsim::payload::Payload;
use upsim::profile::{MemoryPolicy, Profile};
use upsim::trace::Tracer;
use upsim::units::MIB;

const USERS: usize = 8;
const FILES_PER_USER: usize = 6;
const GLOBAL_SLOTS: u64 = 20;
const USER_SLOTS: u64 = 5;
const CHUNK_SIZE_BYTES: u64 = 2 * MIB;
const RUN_LIMIT: Duration = Duration::from_secs(180);
const SAMPLE_EVERY: Duration = Duration::from_millis(5);

fn token(user: usize) -> String {
    format!("load-user-{user}-token-0123456789")
}

/// File sizes from 6 to 13 MiB (and never a whole number of chunks, so
/// every upload ends with a short piece).
fn size_of(file: usize) -> u64 {
    (6 + (file as u64 % 8)) * MIB + 12_345
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uploads_stay_within_the_limits_and_all_complete() -> TestResult {
    let tmp = TempDir::new("load")?;
    let root = tmp.path();
    let profile = Profile {
        name: "load".into(),
        chunk_size_bytes: CHUNK_SIZE_BYTES,
        memory_per_upload: MemoryPolicy::ChunkWindow { chunks: 4 },
        // Long enough that queued uploads wait their turn instead of
        // being refused and retried.
        slot_wait_timeout_ms: 120_000,
        ..Profile::dev()
    };
    assert_eq!(
        (
            u64::from(profile.global_slots),
            u64::from(profile.user_slots)
        ),
        (GLOBAL_SLOTS, USER_SLOTS)
    );
    let profile_path = root.join("load.toml");
    std::fs::write(&profile_path, profile.to_toml())?;
    let pairs: Vec<(String, String)> = (0..USERS).map(|u| (token(u), format!("user{u}"))).collect();
    let pair_refs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(t, u)| (t.as_str(), u.as_str()))
        .collect();
    let tokens = token_file(root, "tokens", &pair_refs)?;
    let (drive_addr, backend_addr) = (
        format!("127.0.0.1:{}", free_port()?),
        format!("127.0.0.1:{}", free_port()?),
    );
    let drive_dir = root.join("drive");
    let s = |p: &std::path::Path| p.to_string_lossy().into_owned();
    let mut drive = Proc::spawn(
        "drive",
        &["drive", "--listen", &drive_addr, "--dir", &s(&drive_dir)],
        root,
        "warn",
    )?;
    let drive_url = format!("http://{drive_addr}");
    let mut backend = Proc::spawn(
        "serve",
        &[
            "serve",
            "--listen",
            &backend_addr,
            "--profile",
            &s(&profile_path),
            "--drive",
            &drive_url,
            "--state",
            &s(&root.join("state")),
            "--tokens",
            &s(&tokens),
        ],
        root,
        "warn",
    )?;
    let up = wait_until(
        Duration::from_secs(30),
        Duration::from_millis(20),
        || async {
            get(&backend_addr, "/healthz", &[])
                .await
                .is_ok_and(|r| r.status == 200 && r.text().contains("\"reachable\":true"))
        },
    )
    .await;
    assert!(
        up,
        "servers did not start\n{}\n{}",
        drive.logs(),
        backend.logs()
    );

    // The sampler: slots in use, as /metrics reports them, all run long.
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (done, addr) = (done.clone(), backend_addr.clone());
        tokio::spawn(async move {
            let (mut samples, mut peak_global, mut peak_user, mut peak_active) =
                (0u64, 0f64, 0f64, 0f64);
            while !done.load(Ordering::Acquire) {
                if let Ok(reply) = get(&addr, "/metrics", &[]).await {
                    let text = reply.text();
                    let global = sample(&text, "upsim_global_slots_in_use").unwrap_or(0.0);
                    let user = sample(&text, "upsim_user_slots_in_use_max").unwrap_or(0.0);
                    let active = sample(&text, "upsim_active_uploads").unwrap_or(0.0);
                    peak_global = peak_global.max(global);
                    peak_user = peak_user.max(user);
                    peak_active = peak_active.max(active);
                    samples += 1;
                }
                tokio::time::sleep(SAMPLE_EVERY).await;
            }
            (samples, peak_global, peak_user, peak_active)
        })
    };

    let started = Instant::now();
    let mut uploads = tokio::task::JoinSet::new();
    let mut total_bytes = 0u64;
    for user in 0..USERS {
        for n in 0..FILES_PER_USER {
            let file = user * FILES_PER_USER + n;
            let payload = Payload::new(1000 + file as u64, size_of(file));
            total_bytes += payload.size_bytes_total();
            let mut config = ClientConfig::with_auth(
                backend_addr.clone(),
                ClientAuth::Bearer(token(user)),
                file as u64,
            );
            config.parallel = 4;
            config.stall_limit = RUN_LIMIT;
            uploads.spawn(async move {
                let uploader = Uploader::new(
                    Arc::new(TokioNetwork),
                    Arc::new(TokioClock::real()),
                    config,
                    Tracer::off(),
                    None,
                );
                let expected = payload.md5(1 << 20).hex();
                let outcome = uploader.upload(Arc::new(payload), None).await;
                (file, expected, outcome)
            });
        }
    }
    let mut completed = 0usize;
    let joined = tokio::time::timeout(RUN_LIMIT, async {
        while let Some(joined) = uploads.join_next().await {
            let (file, expected, outcome) = joined?;
            let outcome = outcome.map_err(|e| format!("upload {file}: {e}"))?;
            // `upsim serve` checks Drive's MD5 by default.
            assert_eq!(outcome.file.md5_checksum, Some(expected), "upload {file}");
            assert_eq!(outcome.file.size_bytes, size_of(file), "upload {file}");
            completed += 1;
        }
        TestResult::Ok(())
    })
    .await;
    let wall_s = started.elapsed().as_secs_f64();
    done.store(true, Ordering::Release);
    let (samples, peak_global, peak_user, peak_active) = sampler.await?;
    joined.map_err(|_| {
        format!(
            "uploads not done within {} s\n{}",
            RUN_LIMIT.as_secs(),
            backend.logs()
        )
    })??;
    assert_eq!(completed, USERS * FILES_PER_USER);

    // None over-admitted, and the limits were actually reached.
    assert!(samples > 10, "only {samples} metric samples");
    assert!(
        peak_global <= GLOBAL_SLOTS as f64,
        "global slots peaked at {peak_global}"
    );
    assert!(
        peak_user <= USER_SLOTS as f64,
        "a user's slots peaked at {peak_user}"
    );
    assert_eq!(
        peak_global, GLOBAL_SLOTS as f64,
        "the run never filled the global slots"
    );
    assert_eq!(
        peak_user, USER_SLOTS as f64,
        "the run never filled a user's slots"
    );
    let metrics = get(&backend_addr, "/metrics", &[]).await?.text();
    let admitted = sample(
        &metrics,
        r#"upsim_admissions_total{outcome="admitted",cause="none"}"#,
    );
    assert_eq!(admitted, Some((USERS * FILES_PER_USER) as f64), "{metrics}");
    assert_eq!(
        sample(&metrics, "upsim_global_slots_in_use"),
        Some(0.0),
        "everything released"
    );
    assert_eq!(
        sample(&metrics, "upsim_committed_bytes_total"),
        Some(total_bytes as f64)
    );
    assert_eq!(finished_files(&drive_dir)?.len(), USERS * FILES_PER_USER);

    let backend_rss = peak_rss_bytes(backend.pid()).unwrap_or(0);
    let drive_rss = peak_rss_bytes(drive.pid()).unwrap_or(0);
    backend.signal("TERM")?;
    assert!(backend.wait_exit(Duration::from_secs(30)).await?.success());
    drive.signal("TERM")?;
    assert!(drive.wait_exit(Duration::from_secs(30)).await?.success());
    eprintln!(
        "real_load: {} uploads ({} users), {:.1} MiB in {wall_s:.2} s = {:.1} MiB/s; \
         peak slots global {peak_global}/{GLOBAL_SLOTS}, per user {peak_user}/{USER_SLOTS}, \
         active uploads {peak_active} ({samples} samples); peak RSS backend {:.1} MiB, drive {:.1} MiB",
        USERS * FILES_PER_USER,
        USERS,
        total_bytes as f64 / MIB as f64,
        total_bytes as f64 / MIB as f64 / wall_s,
        backend_rss as f64 / MIB as f64,
        drive_rss as f64 / MIB as f64,
    );
    Ok(())
}
