//! Simulation speed: the reference scenario scaled to 512 MiB, in
//! simulated bytes per wall second, beside the generate-copy-checksum
//! baseline of the same bytes; and seeds per second of a small scenario.
//!
//! Groups:
//! - `simulation_reference_512mib`: `run` is [`upsim::sim::run`] of the
//!   scaled reference scenario (everything: source digest, turmoil world,
//!   client, backend, drive, oracle); `baseline_generate_copy_checksum` is
//!   [`upsim::sim::baseline::measure`] for the chunk requests that run sent
//!   (resends included). Both count the file's bytes as throughput, so the
//!   time ratio is the system's overhead factor (`upsim run` prints the
//!   same figure as `run / baseline`).
//! - `simulation_crowd`: a few seeds of a small scenario per iteration, in
//!   seeds per second.
//!
//! Every run must pass its oracle; a failing seed panics the bench with the
//! seed, since a fast wrong simulation measures nothing.

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use std::hint::black_box;
use std::time::Duration;
use upsim::payload::Payload;
use upsim::sim::{baseline, run, Fault, Report, RunOptions, Scenario};
use upsim::units::MIB;

/// The scaled reference file.
const FILE_SIZE_BYTES: u64 = 512 * MIB;
/// Seeds per iteration of `simulation_crowd`.
const CROWD_SEEDS: u64 = 3;

/// The reference scenario with a 512 MiB file. Its fault schedule is
/// scaled, not dropped: every fault's time and duration is multiplied by
/// 512 MiB / 3457 MiB, so each fault lands at the same point of the
/// shorter upload as in the full one (the backend crash still falls inside
/// the second memory spike). Links, profile and counts are unchanged.
fn reference_512mib(seed: u64) -> Scenario {
    let mut scenario = Scenario::reference(seed);
    let full_bytes = scenario.files[0].size_bytes;
    let scale = |ms: &mut u64| {
        let scaled = u128::from(*ms) * u128::from(FILE_SIZE_BYTES) / u128::from(full_bytes);
        *ms = u64::try_from(scaled).expect("smaller than the original");
    };
    scenario.name = "reference-512mib".into();
    scenario.files[0].size_bytes = FILE_SIZE_BYTES;
    for f in &mut scenario.faults {
        scale(&mut f.at_ms);
        match &mut f.fault {
            Fault::Partition { duration_ms } | Fault::MemoryPressure { duration_ms, .. } => {
                scale(duration_ms)
            }
            Fault::BackendCrash { down_ms } => scale(down_ms),
            Fault::DriveErrors { .. }
            | Fault::DriveSessionExpiry
            | Fault::DriveTokenExpiry
            | Fault::DriveShortPiece { .. } => {}
        }
    }
    scenario
}

fn run_passing(scenario: &Scenario) -> Report {
    let (report, _trace) = run(scenario, &RunOptions::default()).expect("a valid scenario");
    assert!(
        report.passed,
        "scenario {} failed with seed {}: replay with the same seed",
        scenario.name, scenario.seed
    );
    report
}

fn reference(c: &mut Criterion) {
    let scenario = reference_512mib(0);
    // One run outside the measurement: it checks that the scaled schedule
    // still passes and counts the chunk requests the baseline must match.
    let report = run_passing(&scenario);
    assert_eq!(
        report.faults_injected.len(),
        6,
        "every fault kind of the reference schedule fired: {:?}",
        report.faults_injected
    );
    let chunks_sent = report.files[0].chunks_sent;
    let payload = Payload::new(0x5eed, FILE_SIZE_BYTES);

    // Flat sampling, one run per sample (about 1 s each): criterion warns
    // that ten samples do not fit in the 5 s target and then takes them,
    // which is what keeps the whole bench under a minute.
    let mut group = flat_group(c, "simulation_reference_512mib");
    group.throughput(Throughput::Bytes(FILE_SIZE_BYTES));
    group.bench_function("run", |b| b.iter(|| black_box(run_passing(&scenario))));
    group.bench_function("baseline_generate_copy_checksum", |b| {
        b.iter(|| {
            black_box(baseline::measure(
                &payload,
                scenario.profile.chunk_size_bytes,
                chunks_sent,
            ))
        })
    });
    group.finish();
}

/// A group of whole-simulation runs: flat sampling, ten samples of about a
/// second each, so each group stays under a minute.
fn flat_group<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .nresamples(10_000)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5));
    group
}

fn crowd(c: &mut Criterion) {
    // The crowd scenario (24 users × 2–4 files against 20/5 slots, under a
    // drawn fault schedule), a few seeds per iteration: seeds per second.
    let scenarios: Vec<Scenario> = (1..=CROWD_SEEDS).map(upsim::sim::swarm::crowd).collect();
    let mut group = flat_group(c, "simulation_crowd");
    group.throughput(Throughput::Elements(CROWD_SEEDS));
    group.bench_function("crowd_seeds", |b| {
        b.iter(|| {
            for scenario in &scenarios {
                black_box(run_passing(scenario));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, reference, crowd);
criterion_main!(benches);
