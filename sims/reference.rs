//! The reference scenario and its neighbours, end to end on turmoil: real
//! bytes through client → backend → drive, under the fault schedule, with
//! the oracle's checks and insta snapshots of the reports.

use crate::support::{replay_hint, snapshot_settings};
use upsim::sim::report::FileOutcome;
use upsim::sim::{run, Report, RunOptions, Scenario};

fn run_scenario(scenario: &Scenario) -> Report {
    let (report, _trace) = run(scenario, &RunOptions::default()).expect("a valid scenario runs");
    assert!(
        report.passed,
        "{}\n{}",
        report.render(),
        replay_hint(&scenario.name, scenario.seed)
    );
    report
}

fn snapshot(name: &str, report: &Report) {
    snapshot_settings().bind(|| {
        insta::assert_json_snapshot!(name, report, { ".wall" => "[wall-clock figures redacted]" });
    });
}

/// This is a regression test that ensures the report's 3457 MiB upload
/// arrives whole (drive checksum equals the source's) through every fault
/// of the reference schedule, and that its report — including the trace
/// hash — does not drift.
#[test]
fn reference_upload_survives_its_faults_with_integrity() {
    let report = run_scenario(&Scenario::reference(0));
    let file = &report.files[0];
    assert!(
        matches!(
            file.outcome,
            FileOutcome::Complete {
                checksum_match: true,
                ..
            }
        ),
        "{:?}",
        file.outcome
    );
    // Every fault kind of the schedule was injected, and the backend came
    // back from its crash.
    for kind in [
        "backend_crash",
        "drive_errors",
        "drive_session_expiry",
        "drive_short_piece",
        "memory_pressure",
        "partition",
    ] {
        assert!(
            report.faults_injected.contains_key(kind),
            "{kind} not injected"
        );
    }
    assert_eq!(report.backend_boots, 2);
    assert_eq!(report.drive.sessions_expired, 1);
    assert!(report.peaks.reserved_bytes > 0 && report.peaks.slots_in_use == 1);
    snapshot("reference", &report);
}

/// The same file on `prod` is refused at admission for memory pressure,
/// with the cause on the wire, and nothing reaches the drive.
#[test]
fn reference_on_prod_is_refused_for_memory() {
    let report = run_scenario(&Scenario::reference_prod(0));
    match &report.files[0].outcome {
        FileOutcome::Failed { error } => assert!(error.contains("memory_pressure"), "{error}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(report.drive.bytes_committed, 0);
    assert_eq!(report.peaks.slots_in_use, 0);
    snapshot("reference-prod", &report);
}

/// Same seed, same trace hash; another seed, another schedule.
#[test]
fn the_same_seed_replays_the_same_trace() {
    let a = run_scenario(&Scenario::smoke(7));
    let b = run_scenario(&Scenario::smoke(7));
    assert_eq!(a.trace_hash, b.trace_hash, "{}", replay_hint("smoke", 7));
    assert_eq!(a.trace_events, b.trace_events);
    let c = run_scenario(&Scenario::smoke(8));
    assert_ne!(
        a.trace_hash, c.trace_hash,
        "seeds 7 and 8 produced the same trace"
    );
    snapshot("smoke-seed-7", &a);
}
