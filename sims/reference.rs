//! The reference scenario and its neighbours, end to end on turmoil: real
//! bytes through client → backend → drive, under the fault schedule, with
//! the oracle's checks and insta snapshots of the reports.
//!
//! Each run happens in its own process (`upsim run NAME --json`, the
//! binary this package builds): tokio numbers tasks process-wide, and a
//! crashed host drops its tasks in an order that follows those numbers, so
//! runtimes busy in parallel tests of this binary could reorder a crash's
//! effects. A fresh process per run makes the trace hash the same one that
//! `cargo run --release -- run NAME --seed N` prints.

use crate::support::{html_structure, replay_hint, snapshot_settings, UPSIM};
use serde_json::Value;
use std::path::PathBuf;

fn run_scenario(name: &str, seed: u64) -> Value {
    run_scenario_with(name, seed, &[])
}

/// Where a test keeps a scenario's picture (an artifact of the run).
fn picture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("picture-{name}.html"))
}

fn run_scenario_with(name: &str, seed: u64, extra: &[&str]) -> Value {
    let out = std::process::Command::new(UPSIM)
        .args(["run", name, "--seed", &seed.to_string(), "--json"])
        .args(extra)
        .output()
        .expect("the upsim binary runs");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}); stderr: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            replay_hint(name, seed)
        )
    });
    assert!(
        out.status.success() && report["passed"] == true,
        "violations: {}\n{}",
        report["violations"],
        replay_hint(name, seed)
    );
    report
}

fn snapshot(name: &str, report: &Value) {
    snapshot_settings().bind(|| {
        insta::assert_json_snapshot!(name, report, { ".wall" => "[wall-clock figures redacted]" });
    });
}

/// This is a regression test that ensures the report's 3457 MiB upload
/// arrives whole (drive checksum equals the source's) through every fault
/// of the reference schedule, and that its report — including the trace
/// hash — does not drift.
///
/// The same run draws its picture (`--html`): the page's structure —
/// panels, axis labels, each fault band's name, the retries, the stall,
/// no violation — is snapshotted too (not its pixels), and kept as
/// `target/tmp/picture-reference.html`.
#[test]
fn reference_upload_survives_its_faults_with_integrity() {
    let picture = picture_path("reference");
    let picture_arg = picture.to_string_lossy().into_owned();
    let report = run_scenario_with("reference", 0, &["--html", &picture_arg]);
    let page = std::fs::read_to_string(&picture).expect("the picture was written");
    for label in [
        "simulated time (s)",
        "Bytes committed per upload (MB)",
        "No check failed.",
    ] {
        assert!(page.contains(label), "{label:?} not in the picture");
    }
    let file = &report["files"][0];
    assert_eq!(file["outcome"]["result"], "complete", "{file}");
    assert_eq!(file["outcome"]["checksum_match"], true);
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
            page.contains(&format!(">{kind}</text>")),
            "{kind} not drawn in the picture"
        );
        assert!(
            report["faults_injected"][kind].as_u64() >= Some(1),
            "{kind} not injected"
        );
    }
    assert_eq!(report["backend_boots"], 2);
    assert_eq!(report["drive"]["sessions_expired"], 1);
    assert_eq!(report["peaks"]["slots_in_use"], 1);
    assert!(report["peaks"]["reserved_bytes"].as_u64() > Some(0));
    snapshot("reference", &report);
    snapshot_settings().bind(|| {
        insta::assert_snapshot!("reference-picture", html_structure(&page));
    });
}

/// The same file on `prod` is refused at admission for memory pressure,
/// with the cause on the wire, and nothing reaches the drive.
#[test]
fn reference_on_prod_is_refused_for_memory() {
    let report = run_scenario("reference-prod", 0);
    let outcome = &report["files"][0]["outcome"];
    assert_eq!(outcome["result"], "failed", "{outcome}");
    assert!(
        outcome["error"]
            .as_str()
            .is_some_and(|e| e.contains("memory_pressure")),
        "{outcome}"
    );
    assert_eq!(report["drive"]["bytes_committed"], 0);
    assert_eq!(report["peaks"]["slots_in_use"], 0);
    snapshot("reference-prod", &report);
}

/// Same seed, same trace hash; another seed, another schedule.
#[test]
fn the_same_seed_replays_the_same_trace() {
    let a = run_scenario("smoke", 7);
    let b = run_scenario("smoke", 7);
    assert_eq!(
        a["trace_hash"],
        b["trace_hash"],
        "{}",
        replay_hint("smoke", 7)
    );
    assert_eq!(a["trace_events"], b["trace_events"]);
    let c = run_scenario("smoke", 8);
    assert_ne!(
        a["trace_hash"], c["trace_hash"],
        "seeds 7 and 8 produced the same trace"
    );
    snapshot("smoke-seed-7", &a);
}
