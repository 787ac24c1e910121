//! Faults at scale: swarm and crowd seeds pass their safety and liveness
//! checks, fault points are deterministic, and a failing schedule shrinks
//! to a minimal one that still fails when replayed from a file.

use crate::support::replay_hint;
use upsim::sim::sweep::{run_fails, shrink, sweep};
use upsim::sim::{run, Fault, RunOptions, Scenario, ScheduledFault};

fn sweep_clean(name: &str, seeds: std::ops::Range<u64>) {
    let make = |seed| Scenario::builtin(name, seed).expect("a built-in scenario");
    let summary = sweep(&make, seeds, 2, &RunOptions::default(), &|_, _| {});
    let failures: Vec<String> = summary
        .failures
        .iter()
        .map(|f| format!("{:?}\n{}", f.report.violations, replay_hint(name, f.seed)))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn crowd_seeds_hold_every_check() {
    sweep_clean("crowd", 0..4);
}

#[test]
fn swarm_seeds_hold_every_check() {
    sweep_clean("swarm", 0..24);
}

/// Fault points fire from the run's seed: the same seed fires them the same
/// way (same trace), and a swarm world with sites on does fire some.
#[test]
fn fault_points_are_deterministic() {
    let seed = (0..200)
        .find(|&s| {
            Scenario::builtin("swarm", s)
                .is_some_and(|w| w.buggify.len() >= 3 && w.files.len() >= 4)
        })
        .expect("some swarm world has several fault points");
    let world = Scenario::builtin("swarm", seed).expect("built-in");
    let (a, _) = run(&world, &RunOptions::default()).expect("runs");
    let (b, _) = run(&world, &RunOptions::default()).expect("runs");
    assert_eq!(a.trace_hash, b.trace_hash, "{}", replay_hint("swarm", seed));
    assert_eq!(a.fault_points_fired, b.fault_points_fired);
    assert!(a.passed, "{}", a.render());
}

/// This is a regression test that ensures shrinking finds the one fault
/// that matters: a smoke run with a noisy schedule plus one fatal fault (a
/// drive that fails more PUTs in a row than the retry policy allows) must
/// shrink to at most one fault, and that minimal scenario, written to a
/// file and read back, must still fail.
#[test]
fn a_failing_schedule_shrinks_to_its_cause_and_replays() {
    let mut scenario = Scenario::smoke(3);
    scenario.name = "smoke-fatal".into();
    // After the schedule's own drive-error burst (at 26 s), which would
    // otherwise re-arm the drive with a shorter count.
    scenario.faults.push(ScheduledFault {
        at_ms: 27_000,
        fault: Fault::DriveErrors {
            status: 503,
            count: 60,
        },
    });
    scenario.faults.sort_by_key(|f| f.at_ms);
    assert!(scenario.faults.len() >= 7);
    assert!(
        run_fails(&scenario),
        "the fatal schedule must fail to begin with"
    );
    let shrunk = shrink(&scenario, &run_fails);
    assert!(
        shrunk.scenario.faults.len() <= 1,
        "shrunk to {:?}",
        shrunk.scenario.faults
    );
    assert!(
        matches!(
            shrunk.scenario.faults.first().map(|f| &f.fault),
            Some(Fault::DriveErrors { count: 60, .. })
        ),
        "{:?}",
        shrunk.scenario.faults
    );
    let dir = std::env::temp_dir().join(format!("upsim-shrink-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("shrunk.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&shrunk.scenario).expect("serialises"),
    )
    .expect("write");
    let replayed =
        upsim::cli::load_scenario_file(&path.to_string_lossy()).expect("the shrunk file loads");
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(replayed, shrunk.scenario);
    assert!(
        run_fails(&replayed),
        "the shrunk scenario must still fail when replayed"
    );
}
