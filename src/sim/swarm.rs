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

use super::scenario::{Expectation, Fault, FileSpec, Links, Scenario, ScheduledFault};
use crate::buggify::{Site, SiteConfig};
use crate::env::MemorySnapshot;
use crate::profile::{MemoryPolicy, Profile};
use crate::units::{GIB, KIB, MIB};
use crate::user::UserId;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Separates the crowd's and the swarm's draws from other uses of a seed.
const CROWD_SALT: u64 = 0xc0_d0_c0_d0;
const SWARM_SALT: u64 = 0x5a_4a_5a_4a;
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
        2 => Fault::DriveErrors {
            status: [500, 503, 429][rng.random_range(0..3)],
            count: rng.random_range(1..4),
        },
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
/// of quota, and uploads whose drive sessions the fault schedule expired
/// several times in a row (the backend gives up after
/// `session_restarts_max` losses without progress) or whose drive failed
/// `retry.attempts_max` times in a row.
fn crowd_causes() -> Vec<String> {
    ["quota_exceeded", "drive_session_lost", "drive_failed"]
        .into_iter()
        .map(String::from)
        .collect()
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
            files.push(FileSpec {
                user: user(u),
                size_bytes: sizes[rng.random_range(0..sizes.len())],
            });
        }
    }
    let memory = MemorySnapshot::new(64 * GIB, 48 * GIB).expect("valid figures");
    let safety_ms = 15_000;
    let faults = draw_schedule(&mut rng, safety_ms, 0.4, &memory);
    Scenario {
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
        expect: Expectation::Settled {
            allowed_causes: crowd_causes(),
        },
    }
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
    let liveness_bound_ms = liveness_bound_ms(total_bytes, &links);
    Scenario {
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
        expect: Expectation::Settled {
            allowed_causes: {
                let mut causes = crowd_causes();
                causes.push("file_too_large".into());
                causes
            },
        },
    }
}

/// 1 to 4 files per user, sizes log-uniform from 1 byte to 48 MiB, plus
/// odd offsets.
fn draw_files(rng: &mut ChaCha8Rng, users: usize) -> Vec<FileSpec> {
    let mut files = Vec::new();
    for u in 0..users {
        for _ in 0..rng.random_range(1..=4) {
            let exp = rng.random_range(0.0..(48.0 * MIB as f64).log2());
            let size = (2f64.powf(exp) as u64).max(1) + rng.random_range(0..3);
            files.push(FileSpec {
                user: user(u),
                size_bytes: size,
            });
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
}
