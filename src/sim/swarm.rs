//! Scenarios drawn from a seed: the crowd, and swarm testing.
//!
//! Swarm testing (TigerBeetle's VOPR, "Swarm Testing" by Groce et al.):
//! rather than one configuration with every fault at a moderate rate, each
//! seed draws its own world — how many users and files, their sizes, chunk
//! size, parallelism, link rates and latencies, profile limits — and turns
//! whole fault kinds and fault points on or off, each with its own rate.
//! Most seeds are then unusual in some direction, which is where bugs hide.
//!
//! Everything is drawn from one `ChaCha8Rng` seeded by the scenario seed, in
//! a fixed order, and faults become an explicit schedule, so a failing
//! seed's schedule can be shrunk and replayed as a file.

use super::scenario::{
    DriveOAuth, Expectation, Fault, FileSpec, Links, Protocol, Scenario, ScheduledFault, DAY_MS,
};
use crate::backend::BackendConfig;
use crate::buggify::{Site, SiteConfig};
use crate::drive::protocol::DriveReason;
use crate::drive::DriveErrorClass;
use crate::env::MemorySnapshot;
use crate::profile::{MemoryPolicy, Profile};
use crate::units::{DRIVE_CHUNK_ALIGN_BYTES, GIB, KIB, MIB};
use crate::user::UserId;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Separates the crowd's and the swarm's draws from other uses of a seed.
const CROWD_SALT: u64 = 0xc0_d0_c0_d0;
const SWARM_SALT: u64 = 0x5a_4a_5a_4a;
/// The tuning draws (see [`tune`]) come from their own stream, so adding
/// them left every earlier swarm knob as it was.
const TUNE_SALT: u64 = 0x7e_57_7e_57;
/// The tus draws (see [`draw_tus`]) come from their own stream too, made
/// after every other draw, so a world without tus is the one it was.
const TUS_SALT: u64 = 0x70_05_70_05;
/// The share of swarm worlds with tus clients.
const TUS_WORLD_CHANCE: f64 = 0.4;
/// The PATCH sizes a tus client is drawn: below, at and past the chunk
/// sizes swarm draws (an odd one, so PATCHes end inside chunks).
const TUS_PATCH_BYTES: [u64; 4] = [256 * KIB, MIB + 7, 4 * MIB, 16 * MIB];
/// Uploads committing at once in a world drawn to open the drive breaker:
/// above the backend's `breaker_failures_max` (5).
const BREAKER_CROWD_UPLOADS: u32 = 8;
/// The largest piece limit tweak 9 of [`tune`] draws, in drive units of
/// 256 KiB (3 MiB).
const SMALL_PIECE_UNITS_MAX: u64 = 12;
/// The most faults one kind may contribute to a schedule.
const FAULTS_PER_KIND_MAX: usize = 6;

fn user(index: usize) -> UserId {
    UserId::new(format!("user{index:02}")).expect("user ids of this form are valid")
}

/// Draws fault times for one kind: a Poisson process of `rate_per_s` over
/// `[start_ms, end_ms)`, at most [`FAULTS_PER_KIND_MAX`].
fn poisson_times(rng: &mut ChaCha8Rng, rate_per_s: f64, start_ms: u64, end_ms: u64) -> Vec<u64> {
    let mut times = Vec::new();
    if rate_per_s <= 0.0 || end_ms <= start_ms {
        return times;
    }
    let mut t = start_ms as f64;
    while times.len() < FAULTS_PER_KIND_MAX {
        // Exponential gap: −ln(U)/λ seconds.
        let u: f64 = rng.random_range(f64::EPSILON..1.0);
        t += -u.ln() / rate_per_s * 1000.0;
        if t >= end_ms as f64 {
            break;
        }
        times.push(t as u64);
    }
    times
}

/// A fault of `kind` drawn with its parameters.
fn draw_fault(rng: &mut ChaCha8Rng, kind: usize, memory: &MemorySnapshot) -> Fault {
    match kind {
        0 => Fault::Partition {
            duration_ms: rng.random_range(500..8_000),
        },
        1 => Fault::BackendCrash {
            down_ms: rng.random_range(100..5_000),
        },
        2 => {
            let (status, reason) = RECOVERABLE_DRIVE_ERRORS
                [rng.random_range(0..RECOVERABLE_DRIVE_ERRORS.len())]
            .clone();
            Fault::DriveErrors {
                status,
                count: rng.random_range(1..4),
                reason,
            }
        }
        3 => Fault::DriveSessionExpiry,
        4 => Fault::DriveShortPiece {
            keep_bytes: rng.random_range(0..4) * 256 * KIB,
        },
        _ => Fault::MemoryPressure {
            available_bytes: rng.random_range(0..=memory.available_bytes / 4),
            duration_ms: rng.random_range(500..10_000),
        },
    }
}

const FAULT_KINDS: usize = 6;

/// The drive errors a schedule draws (Drive API v3, "Resolve errors"), all
/// of which an upload survives: 5xx (back off, resume from a status query),
/// 429 and the two 403 rate limits (back off with jitter), 410 (new session).
const RECOVERABLE_DRIVE_ERRORS: [(u16, Option<DriveReason>); 6] = [
    (500, None),
    (503, None),
    (429, None),
    (403, Some(DriveReason::UserRateLimitExceeded)),
    (403, Some(DriveReason::RateLimitExceeded)),
    (410, None),
];

/// The drive errors that end an upload for good (`drive_refused`): a full
/// account, a bad request. Only [`tune`] draws them.
const FINAL_DRIVE_ERRORS: [(u16, Option<DriveReason>); 2] = [
    (403, Some(DriveReason::StorageQuotaExceeded)),
    (400, Some(DriveReason::BadRequest)),
];

/// A schedule: each kind on with probability ½ and, if on, at a rate drawn
/// up to `rate_max_per_s`, over `[1 s, safety_ms)`.
fn draw_schedule(
    rng: &mut ChaCha8Rng,
    safety_ms: u64,
    rate_max_per_s: f64,
    memory: &MemorySnapshot,
) -> Vec<ScheduledFault> {
    let mut faults = Vec::new();
    for kind in 0..FAULT_KINDS {
        let on = rng.random_bool(0.5);
        let rate = rng.random_range(0.0..rate_max_per_s);
        if !on {
            continue;
        }
        for at_ms in poisson_times(rng, rate, 1_000, safety_ms) {
            let fault = draw_fault(rng, kind, memory);
            faults.push(ScheduledFault { at_ms, fault });
        }
    }
    faults.sort_by_key(|f| f.at_ms);
    faults
}

/// Typed, non-retryable endings a crowd may legitimately produce: users out
/// of quota, and the drive endings its schedule can cause (as in swarm:
/// [`drive_causes`]).
fn crowd_causes(s: &Scenario) -> Vec<String> {
    let mut causes = vec!["quota_exceeded".to_owned()];
    causes.extend(drive_causes(s));
    causes
}

/// The crowd: 24 users with 2–4 files each (64 KiB to 3 MiB) on 10 Mbit/s
/// uplinks, against the report's 20 global / 5 per-user slots, a 200 Mbit/s
/// drive link and a 6 MiB daily quota (so some users run out: their later
/// uploads must end with `quota_exceeded`), under a drawn fault schedule
/// over the first 15 s.
pub fn crowd(seed: u64) -> Scenario {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ CROWD_SALT);
    let sizes = [64 * KIB, 256 * KIB + 7, MIB, 2 * MIB, 3 * MIB];
    let mut files = Vec::new();
    for u in 0..24 {
        for _ in 0..rng.random_range(2..=4) {
            files.push(FileSpec::chunks(
                user(u),
                sizes[rng.random_range(0..sizes.len())],
            ));
        }
    }
    let memory = MemorySnapshot::new(64 * GIB, 48 * GIB).expect("valid figures");
    let safety_ms = 15_000;
    let faults = draw_schedule(&mut rng, safety_ms, 0.4, &memory);
    let mut scenario = Scenario {
        name: "crowd".into(),
        seed,
        profile: Profile {
            name: "crowd".into(),
            upload_limits_enabled: true,
            daily_limit_bytes: 6 * MIB,
            chunk_size_bytes: 256 * KIB,
            slot_wait_timeout_ms: 30_000,
            ..Profile::prod()
        },
        memory,
        files,
        parallel: 2,
        // Slow enough that the crowd is still uploading while the faults
        // land, and that slots are contended on the shared drive link.
        links: Links {
            client_uplink_mbit: 10,
            client_latency_ms: 20,
            drive_link_mbit: 200,
            drive_latency_ms: 2,
        },
        faults,
        tick_ms: 10,
        duration_max_ms: 3_600_000,
        safety_ms,
        liveness_bound_ms: 900_000,
        buggify: Vec::new(),
        admission_wait_bound_ms: 300_000,
        start_of_day_ms: 0,
        drive_oauth: None,
        follow_events: false,
        piece_bytes_max: None,
        expect: Expectation::Settled {
            allowed_causes: Vec::new(),
        },
    };
    scenario.expect = Expectation::Settled {
        allowed_causes: crowd_causes(&scenario),
    };
    scenario
}

/// A swarm world: every knob drawn from the seed (see the module docs).
///
/// The draws happen in the order of the statements here and in the helpers
/// they call; reordering them changes every swarm world.
pub fn swarm(seed: u64) -> Scenario {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ SWARM_SALT);
    let users = rng.random_range(1..=10);
    let global_slots = rng.random_range(1..=20);
    let user_slots = rng.random_range(1..=5u32).min(global_slots);
    let chunk_size_bytes = [256 * KIB, MIB, 4 * MIB, 8 * MIB][rng.random_range(0..4)];
    let files = draw_files(&mut rng, users);
    let total_bytes: u64 = files.iter().map(|f| f.size_bytes).sum();
    let largest = files.iter().map(|f| f.size_bytes).max().unwrap_or(1);
    let memory_policy = draw_memory_policy(&mut rng);
    // The machine always has room for the largest upload's reservation with
    // every slot busy: memory pressure comes from the faults, not from an
    // impossible world (where waiting would never end).
    let required = memory_policy.required_bytes(largest, chunk_size_bytes);
    let available = required
        .saturating_mul(u64::from(global_slots) + 1)
        .clamp(GIB, 512 * GIB);
    let memory = MemorySnapshot::new(available * 2, available).expect("available ≤ total");
    let limits_on = rng.random_bool(0.5);
    let profile = Profile {
        name: "swarm".into(),
        upload_limits_enabled: limits_on,
        daily_limit_bytes: rng.random_range(MIB..=2 * total_bytes.max(MIB)),
        global_slots,
        user_slots,
        chunk_size_bytes,
        memory_limit_percent: 100,
        reserved_memory_bytes: 0,
        memory_per_upload: memory_policy,
        reorder_window_chunks_max: rng.random_range(1..=32),
        slot_wait_timeout_ms: rng.random_range(1_000..=60_000),
        ..Profile::dev()
    };
    let links = draw_links(&mut rng);
    let parallel = rng.random_range(1..=8);
    let safety_ms = rng.random_range(10_000..=90_000);
    let faults = draw_schedule(&mut rng, safety_ms, 0.2, &memory);
    let buggify = draw_fault_points(&mut rng);
    // Drawn last, so every earlier draw (and so the world) is as before.
    let follow_events = rng.random_bool(0.5);
    let liveness_bound_ms = liveness_bound_ms(total_bytes, &links);
    let mut scenario = Scenario {
        name: "swarm".into(),
        seed,
        profile,
        memory,
        files,
        parallel,
        links,
        faults,
        tick_ms: 10,
        duration_max_ms: safety_ms + liveness_bound_ms + 60_000,
        safety_ms,
        liveness_bound_ms,
        buggify,
        admission_wait_bound_ms: liveness_bound_ms,
        start_of_day_ms: 0,
        drive_oauth: None,
        follow_events,
        piece_bytes_max: None,
        expect: Expectation::Settled {
            allowed_causes: Vec::new(),
        },
    };
    tune(&mut scenario, seed);
    draw_tus(&mut scenario, seed);
    scenario.expect = Expectation::Settled {
        allowed_causes: swarm_causes(&scenario),
    };
    scenario
}

/// Swarm tuning: pushes a share of the worlds to the edges the plain draws
/// rarely reach, so that CI's sweep (seeds 0..300) hits every required
/// [coverage probe](crate::coverage). Each tweak is on or off per seed, its
/// parameters drawn either way (so one tweak's choice never shifts the
/// next one's draws), in this order:
/// 1. prod-like memory: an 80 % limit, a nonzero reserve, and headroom
///    for one to three of the largest upload's reservations and a half
///    (the reserve decides, and memory refusals happen);
/// 2. a fatal drive error burst, longer than every in-flight upload's
///    retry budget (`drive_failed`, and the breaker opens);
/// 3. a fatal train of session expiries, more than `session_restarts_max`
///    in a row (`drive_session_lost`);
/// 4. a start shortly before a UTC midnight (the quota's day rolls over);
/// 5. a file size bound just below the largest file (`file_too_large`);
/// 6. a waiting queue of one or two (`queue_full`; with a fatal burst,
///    the retried creates meet the open breaker: `breaker_open`);
/// 7. a drive that refuses for good once or twice (403
///    `storageQuotaExceeded` or 400: `drive_refused`);
/// 8. a drive that wants OAuth access tokens living 1–30 s, revoked one
///    to three times (the backend refreshes before expiry and on a 401);
/// 9. small drive pieces (256 KiB to 3 MiB, [`Scenario::piece_bytes_max`])
///    and one to three pieces the drive keeps only 256–768 KiB of: pieces
///    are cut at the limit with more buffered behind them, and, where a
///    chunk is 1 MiB or more, the next piece starts in the middle of a
///    chunk (probes `piece_cut_at_max`, `piece_from_mid_chunk`; the window
///    model judges both cuts).
fn tune(s: &mut Scenario, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ TUNE_SALT);
    // 1.
    let (prod_like, reserve_bytes) = (rng.random_bool(0.3), rng.random_range(64 * MIB..=2 * GIB));
    let uploads_fit = rng.random_range(1..=3u64);
    // 2. (Applied before 1, whose memory is sized for the files 2 adds.)
    let fatal_errors = rng.random_bool(0.25);
    let errors_at_ms = rng.random_range(1_000..3_000);
    let status = [500, 503][rng.random_range(0..2)];
    let extra = rng.random_range(0..s.profile.retry.attempts_max);
    if fatal_errors {
        crowd_the_drive(s);
    }
    if prod_like {
        prod_like_memory(s, reserve_bytes, uploads_fit);
    }
    if fatal_errors {
        let in_flight = u64::from(s.profile.global_slots).min(s.files.len() as u64);
        let budget = u64::from(s.profile.retry.attempts_max) * in_flight;
        let count = u32::try_from(budget)
            .unwrap_or(u32::MAX)
            .saturating_add(extra);
        let reason = None;
        add_fault(
            s,
            errors_at_ms,
            Fault::DriveErrors {
                status,
                count,
                reason,
            },
        );
    }
    // 3.
    let session_loss = rng.random_bool(0.2);
    let expiries = session_restarts_max(s) + rng.random_range(1..=3);
    let first_ms = rng.random_range(1_000..s.safety_ms / 2);
    let gaps_ms: Vec<u64> = (0..expiries)
        .map(|_| rng.random_range(50..=1_500))
        .collect();
    if session_loss {
        let mut at_ms = first_ms;
        for gap_ms in gaps_ms {
            if at_ms < s.safety_ms {
                add_fault(s, at_ms, Fault::DriveSessionExpiry);
            }
            at_ms += gap_ms;
        }
    }
    // 4.
    let midnight = rng.random_bool(0.25);
    let before_midnight_ms = rng.random_range(1_000..s.safety_ms);
    if midnight {
        s.start_of_day_ms = DAY_MS - before_midnight_ms;
    }
    // 5.
    let (size_cap, queue_small) = (rng.random_bool(0.1), rng.random_bool(0.1));
    let waiters_max = rng.random_range(1..=2);
    let largest = s.files.iter().map(|f| f.size_bytes).max().unwrap_or(1);
    if size_cap && largest > 1 {
        s.profile.file_size_bytes_max = largest - 1;
    }
    // 6. (Also with a fatal burst: clients refused `queue_full` keep
    //    retrying their creates, and meet the open breaker.)
    if queue_small || fatal_errors {
        s.profile.waiters_max = waiters_max;
    }
    // 7.
    let refuses = rng.random_bool(0.15);
    let refused_at_ms = rng.random_range(1_000..s.safety_ms);
    let (status, reason) =
        FINAL_DRIVE_ERRORS[rng.random_range(0..FINAL_DRIVE_ERRORS.len())].clone();
    let count = rng.random_range(1..=2);
    if refuses {
        let fault = Fault::DriveErrors {
            status,
            count,
            reason,
        };
        add_fault(s, refused_at_ms, fault);
    }
    // 8.
    let oauth = rng.random_bool(0.25);
    let access_token_lifetime_s = rng.random_range(1..=30);
    let revocations = rng.random_range(1..=3);
    let revoked_at_ms: Vec<u64> = (0..revocations)
        .map(|_| rng.random_range(1_000..s.safety_ms))
        .collect();
    if oauth {
        s.drive_oauth = Some(DriveOAuth {
            access_token_lifetime_s,
        });
        for at_ms in revoked_at_ms {
            add_fault(s, at_ms, Fault::DriveTokenExpiry);
        }
    }
    // 9.
    let small_pieces = rng.random_bool(0.3);
    let piece_units = rng.random_range(1..=SMALL_PIECE_UNITS_MAX);
    let cuts: Vec<(u64, u64)> = (0..rng.random_range(1..=3))
        .map(|_| {
            let at_ms = rng.random_range(1_000..s.safety_ms);
            (at_ms, rng.random_range(1..4) * DRIVE_CHUNK_ALIGN_BYTES)
        })
        .collect();
    if small_pieces {
        s.piece_bytes_max = Some(piece_units * DRIVE_CHUNK_ALIGN_BYTES);
        for (at_ms, keep_bytes) in cuts {
            add_fault(s, at_ms, Fault::DriveShortPiece { keep_bytes });
        }
    }
}

/// tus clients as a client kind: in [`TUS_WORLD_CHANCE`] of the worlds,
/// each file is uploaded by a tus client with odds ½ (at least one file),
/// with a drawn PATCH size and, in two cases of five, an
/// `Upload-Checksum` algorithm; the tus client's fault points (tusd's
/// races, [`Site::TUS`]) are each on with odds 0.7 at 5–25 %. Every draw
/// is made either way, from its own stream.
fn draw_tus(s: &mut Scenario, seed: u64) {
    use crate::tus::ChecksumAlgorithm::{Crc32, Md5, Sha1};
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ TUS_SALT);
    let on = rng.random_bool(TUS_WORLD_CHANCE);
    let checksums = [None, None, None, Some(Sha1), Some(Md5), Some(Crc32)];
    let kinds: Vec<(bool, Protocol)> = s
        .files
        .iter()
        .map(|_| {
            let tus = rng.random_bool(0.5);
            let patch_bytes = TUS_PATCH_BYTES[rng.random_range(0..TUS_PATCH_BYTES.len())];
            let checksum = checksums[rng.random_range(0..checksums.len())];
            let protocol = Protocol::Tus {
                patch_bytes,
                checksum,
            };
            (tus, protocol)
        })
        .collect();
    let sites: Vec<SiteConfig> = Site::TUS
        .iter()
        .filter_map(|&site| {
            let site_on = rng.random_bool(0.7);
            let permille = rng.random_range(50..=250);
            site_on.then_some(SiteConfig { site, permille })
        })
        .collect();
    if !on {
        return;
    }
    let any = kinds.iter().any(|(tus, _)| *tus);
    for (i, (file, (tus, protocol))) in s.files.iter_mut().zip(kinds).enumerate() {
        if tus || (!any && i == 0) {
            file.protocol = protocol;
        }
    }
    s.buggify.extend(sites);
}

/// Enough uploads streaming at once for the drive breaker to open. A
/// status answer closes the breaker again, so piece failures open it only
/// when [`BREAKER_CROWD_UPLOADS`] committers fail before the first of them
/// asks the drive again: many uploads, fast uplinks and small chunks, so
/// every committer has a piece on its way when the burst is armed (at 1–3 s,
/// while the first wave of 32 MiB files is still streaming). Twice as many
/// files as slots, so later clients retry their creates while it is open.
fn crowd_the_drive(s: &mut Scenario) {
    let p = &mut s.profile;
    p.global_slots = p.global_slots.max(BREAKER_CROWD_UPLOADS);
    p.user_slots = p.user_slots.max(2);
    p.chunk_size_bytes = 256 * KIB;
    s.links.client_uplink_mbit = s.links.client_uplink_mbit.max(200);
    let users: std::collections::BTreeSet<&UserId> = s.files.iter().map(|f| &f.user).collect();
    let first_new = users.len();
    let mut added = 0;
    while s.files.len() < 2 * BREAKER_CROWD_UPLOADS as usize {
        s.files
            .push(FileSpec::chunks(user(first_new + added / 2), 32 * MIB));
        added += 1;
    }
    // Room for the largest reservation with every slot busy, as `swarm`
    // draws it.
    let largest = s.files.iter().map(|f| f.size_bytes).max().unwrap_or(1);
    let required = p
        .memory_per_upload
        .required_bytes(largest, p.chunk_size_bytes);
    let available = required
        .saturating_mul(u64::from(p.global_slots) + 1)
        .clamp(GIB, 512 * GIB);
    s.memory = MemorySnapshot::new(available * 2, available).expect("available ≤ total");
    clamp_memory_pressure(s);
}

/// Keeps every memory-pressure fault within the machine's memory.
fn clamp_memory_pressure(s: &mut Scenario) {
    for f in &mut s.faults {
        if let Fault::MemoryPressure {
            available_bytes, ..
        } = &mut f.fault
        {
            *available_bytes = (*available_bytes).min(s.memory.available_bytes);
        }
    }
}

/// How often the backend restarts an upload's drive session without
/// progress before it gives up: the world's own backend setting.
fn session_restarts_max(s: &Scenario) -> u32 {
    BackendConfig::new(s.profile.clone(), "http://drive", 0).session_restarts_max
}

/// Adds `fault` at `at_ms`, keeping the schedule in time order.
fn add_fault(s: &mut Scenario, at_ms: u64, fault: Fault) {
    let at = s.faults.partition_point(|f| f.at_ms <= at_ms);
    s.faults.insert(at, ScheduledFault { at_ms, fault });
}

/// Makes `s` prod-like: an 80 % limit, `reserve_bytes` reserved, and the
/// machine's use set so that uploads may reserve `uploads_fit` and a half
/// times the largest upload's reservation (the largest always fits alone,
/// so waiting ends). Memory-pressure faults are kept within the machine.
fn prod_like_memory(s: &mut Scenario, reserve_bytes: u64, uploads_fit: u64) {
    let p = &mut s.profile;
    let largest = s.files.iter().map(|f| f.size_bytes).max().unwrap_or(1);
    let required = p
        .memory_per_upload
        .required_bytes(largest, p.chunk_size_bytes);
    let headroom = (required * uploads_fit + required / 2).max(MIB);
    p.memory_limit_percent = 80;
    p.reserved_memory_bytes = reserve_bytes;
    // limit = 0.8 × total ≥ reserve + headroom whenever total is twice
    // their sum; the rest of the limit is the machine's own use.
    let total = (2 * (headroom + reserve_bytes)).max(GIB);
    let limit = total / 100 * 80;
    let used = limit - reserve_bytes - headroom;
    s.memory = MemorySnapshot::new(total, total - used).expect("used ≤ total");
    clamp_memory_pressure(s);
}

/// The typed endings a swarm world may end with: quota, size, and a drive
/// failure, a lost session or a drive refusal only if the schedule holds a
/// cause for it — retryable errors enough to spend a retry budget, session
/// losses (expiries and 410s) enough to spend the session restarts, a
/// refusal for good. A world without one that ends an upload so has a bug,
/// and the oracle says so (`swarm_allows_drive_endings_only_with_a_cause`).
fn swarm_causes(s: &Scenario) -> Vec<String> {
    let mut causes = vec!["quota_exceeded".to_owned(), "file_too_large".to_owned()];
    causes.extend(drive_causes(s));
    causes
}

/// The drive endings `s`'s schedule can cause (see [`swarm_causes`]).
fn drive_causes(s: &Scenario) -> Vec<String> {
    let (mut errors, mut losses, mut refusals) = (0u64, 0u64, 0u64);
    for f in &s.faults {
        match &f.fault {
            Fault::DriveErrors {
                status,
                count,
                reason,
            } => {
                let reason = reason
                    .clone()
                    .unwrap_or_else(|| DriveReason::default_for(*status));
                let count = u64::from(*count);
                match DriveErrorClass::of(*status, &reason) {
                    DriveErrorClass::SessionGone | DriveErrorClass::Rejected => losses += count,
                    DriveErrorClass::Refused => refusals += count,
                    _ => errors += count,
                }
            }
            Fault::DriveSessionExpiry => losses += 1,
            _ => {}
        }
    }
    let mut causes = Vec::new();
    if errors >= u64::from(s.profile.retry.attempts_max) {
        causes.push("drive_failed".to_owned());
    }
    if losses > u64::from(session_restarts_max(s)) {
        causes.push("drive_session_lost".to_owned());
    }
    if refusals > 0 {
        causes.push("drive_refused".to_owned());
    }
    causes
}

/// 1 to 4 files per user, sizes log-uniform from 1 byte to 48 MiB, plus
/// odd offsets.
fn draw_files(rng: &mut ChaCha8Rng, users: usize) -> Vec<FileSpec> {
    let mut files = Vec::new();
    for u in 0..users {
        for _ in 0..rng.random_range(1..=4) {
            let exp = rng.random_range(0.0..(48.0 * MIB as f64).log2());
            let size = (2f64.powf(exp) as u64).max(1) + rng.random_range(0..3);
            files.push(FileSpec::chunks(user(u), size));
        }
    }
    files
}

/// A percentage of the file or a window of chunks, with equal odds.
fn draw_memory_policy(rng: &mut ChaCha8Rng) -> MemoryPolicy {
    if rng.random_bool(0.5) {
        MemoryPolicy::PercentOfFile {
            percent: rng.random_range(1..=100),
        }
    } else {
        MemoryPolicy::ChunkWindow {
            chunks: rng.random_range(1..=32),
        }
    }
}

/// Link rates and latencies.
fn draw_links(rng: &mut ChaCha8Rng) -> Links {
    Links {
        client_uplink_mbit: rng.random_range(5..=500),
        client_latency_ms: rng.random_range(1..=80),
        drive_link_mbit: rng.random_range(100..=2_000),
        drive_latency_ms: rng.random_range(1..=10),
    }
}

/// Each fault point on with probability 0.3, at a drawn rate (drawn either
/// way, so one site's choice does not shift the next site's draws).
fn draw_fault_points(rng: &mut ChaCha8Rng) -> Vec<SiteConfig> {
    Site::ALL
        .iter()
        .filter_map(|&site| {
            let on = rng.random_bool(0.3);
            let permille = rng.random_range(5..=100);
            on.then_some(SiteConfig { site, permille })
        })
        .collect()
}

/// Liveness: enough to move every byte several times over the slowest
/// link, plus the backoff ceilings.
fn liveness_bound_ms(total_bytes: u64, links: &Links) -> u64 {
    let per_user_worst =
        total_bytes.saturating_mul(8) / (links.client_uplink_mbit * 125_000).max(1);
    600_000 + per_user_worst.saturating_mul(4_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drawn_scenarios_are_valid_and_seeded() {
        for seed in 0..200 {
            for s in [crowd(seed), swarm(seed)] {
                assert_eq!(s.validate(), Ok(()), "{} seed {seed}", s.name);
            }
        }
        assert_eq!(swarm(3), swarm(3));
        assert_ne!(swarm(3), swarm(4));
        assert_ne!(crowd(3).faults, crowd(4).faults);
    }

    #[test]
    fn swarm_varies_its_knobs() {
        let worlds: Vec<Scenario> = (0..100).map(swarm).collect();
        let distinct = |f: &dyn Fn(&Scenario) -> u64| {
            let mut v: Vec<u64> = worlds.iter().map(f).collect();
            v.sort();
            v.dedup();
            v.len()
        };
        assert!(distinct(&|s| s.files.len() as u64) > 5);
        assert!(distinct(&|s| s.profile.chunk_size_bytes) == 4);
        assert!(distinct(&|s| s.faults.len() as u64) > 3);
        assert!(
            worlds.iter().any(|s| s.buggify.is_empty())
                && worlds.iter().any(|s| s.buggify.len() > 2)
        );
    }

    /// A drive failure or a lost session is an allowed ending only in a
    /// world whose schedule holds a cause for it; a world without one
    /// keeps them forbidden, so the oracle fails a run that ends so.
    #[test]
    fn swarm_allows_drive_endings_only_with_a_cause() {
        let causes = |s: &Scenario| match &s.expect {
            Expectation::Settled { allowed_causes } => allowed_causes.clone(),
            other => panic!("swarm settles, got {other:?}"),
        };
        let worlds: Vec<Scenario> = (0..300).map(swarm).collect();
        let fatal_errors = |s: &Scenario| {
            s.faults.iter().any(|f| {
                matches!(f.fault, Fault::DriveErrors { count, .. } if count >= s.profile.retry.attempts_max)
            })
        };
        for w in &worlds {
            let allowed = causes(w);
            if fatal_errors(w) {
                assert!(allowed.contains(&"drive_failed".into()), "seed {}", w.seed);
            }
            let errors: u32 = w
                .faults
                .iter()
                .map(|f| match f.fault {
                    Fault::DriveErrors { count, .. } => count,
                    _ => 0,
                })
                .sum();
            if errors < w.profile.retry.attempts_max {
                assert!(!allowed.contains(&"drive_failed".into()), "seed {}", w.seed);
            }
        }
        let without = worlds
            .iter()
            .filter(|w| !causes(w).contains(&"drive_failed".into()));
        let lossless = worlds
            .iter()
            .filter(|w| !causes(w).contains(&"drive_session_lost".into()));
        assert!(without.count() > 100 && lossless.count() > 100);
        // A refusal for good is allowed exactly where the schedule holds
        // one, and some worlds hold one.
        let refuses = |s: &Scenario| {
            s.faults.iter().any(|f| {
                matches!(&f.fault, Fault::DriveErrors { status: 400 | 403, reason: Some(r), .. }
                    if !r.is_rate_limit())
            })
        };
        for w in &worlds {
            let allowed = causes(w).contains(&"drive_refused".into());
            assert_eq!(allowed, refuses(w), "seed {}", w.seed);
        }
        assert!(worlds.iter().filter(|w| refuses(w)).count() > 20);
        assert!(worlds.iter().filter(|w| fatal_errors(w)).count() > 30);
        assert!(worlds
            .iter()
            .any(|w| w.start_of_day_ms > 0 && w.utc_days_spanned() == 2));
        assert!(worlds.iter().any(|w| w.profile.reserved_memory_bytes > 0));
    }
}
