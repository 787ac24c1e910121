//! The bug zoo: each of the original manager's bugs, re-created as an
//! alternative admission implementation, and each blind spot of the first
//! harness, as an admission mutant or a backend slip, is caught — each by the check the
//! table names — and production passes every one of the same checks. The
//! table (wall times redacted) is an insta snapshot, so a check that starts
//! catching a mutant later, or another way, shows up in review.

use crate::support::snapshot_settings;
use upsim::backend::Slip;
use upsim::sim::{run, RunOptions, Scenario};
use upsim::zoo_report::{checks, reserve_decides, run_check, run_zoo, subjects};

/// Which check catches which mutant, and why that one (each mutant's file
/// in `src/checks/zoo/` says more).
const CAUGHT_BY: [(&str, &str); 11] = [
    // The loom models see only permit gates; smoke's first creates are
    // refused for memory, and the refusal carries no typed cause.
    ("masked-error", "sim smoke: typed_cause"),
    // The first loom model with an error path (a cancelled request).
    (
        "heuristic-release",
        "loom acquire_polled_once_then_dropped_while_another_releases",
    ),
    // "Poll once, then drop": the grant made between the two leaks.
    (
        "leak-on-cancel",
        "loom acquire_polled_once_then_dropped_while_another_releases",
    ),
    // The model of this very scenario.
    (
        "hoarding",
        "loom a_user_at_its_limit_never_holds_a_global_slot_while_it_waits",
    ),
    // Two concurrent first uploads of one user: only this model has them.
    (
        "entry-race",
        "loom concurrent_admissions_stay_within_limits",
    ),
    // a2 waits while a1 releases: the release lands in the window.
    (
        "lost-wakeup",
        "loom a_user_at_its_limit_never_holds_a_global_slot_while_it_waits",
    ),
    // Only the lock-step model recomputes the formula with its reserve, and
    // only reserve-decides has a machine where the reserve decides.
    ("forgotten-reserve", "sim reserve-decides: admission_model"),
    // Smoke's reservation is under one chunk: any bigger window is over it.
    ("window-oversized", "sim smoke: window_within_reservation"),
    // Only drive-fails ends an upload with drive_failed; its charge is
    // refunded only when its slot is dropped.
    ("kept-on-failure", "sim drive-fails: quota_refunded"),
    // Only bit-flips damages a chunk; the drive then holds other bytes.
    ("unchecked-chunks", "sim bit-flips: checksum"),
    // Only lost-creates retries a create.
    ("token-forgotten", "sim lost-creates: no_double_admission"),
];

/// The checks added for the first harness's blind spots (issue 10): the
/// lock-step models, the buffered-bytes checks and the accounting checks.
const NEW_CHECKS: [&str; 9] = [
    "admission_model",
    "window_model",
    "drive_ranges_model",
    "buffered_within_window",
    "window_within_reservation",
    "buffered_within_reserved",
    "no_double_admission",
    "quota_only_for_admissions",
    "quota_refunded",
];

/// This is a regression test that ensures each backend slip is a blind
/// spot of the first harness: on its scenarios (smoke, two crowd seeds)
/// every violation a slip causes is one of the new checks', so the old
/// checks alone let it through.
#[test]
fn the_backend_slips_pass_the_first_harness() {
    let old: [(&str, Scenario); 3] = [
        ("smoke", Scenario::smoke(0)),
        ("crowd 0", upsim::sim::swarm::crowd(0)),
        ("crowd 1", upsim::sim::swarm::crowd(1)),
    ];
    for subject in subjects().into_iter().filter(|s| s.slip != Slip::None) {
        let options = RunOptions {
            backend_slip: subject.slip,
            ..RunOptions::default()
        };
        for (name, scenario) in &old {
            let (report, _) = run(scenario, &options).expect("valid scenario");
            for v in &report.violations {
                assert!(
                    NEW_CHECKS.contains(&v.check),
                    "{} on {name}: the old check {} caught it: {}",
                    subject.name,
                    v.check,
                    v.detail
                );
            }
        }
    }
}

/// This is a regression test that ensures every bug of the original
/// manager is caught by the harness, by the check named here, while
/// production passes all of the same checks.
#[test]
fn every_mutant_is_caught_and_production_passes_every_check() {
    let report = run_zoo(&|line| eprintln!("{line}"));
    eprintln!("{}", report.table(true));
    let production = &report.rows[0];
    assert_eq!(production.subject, "production");
    assert_eq!(
        production.runs.len(),
        checks().len(),
        "production runs every check"
    );
    for run in &production.runs {
        assert!(
            !run.caught,
            "production failed {}: {:?}",
            run.check, run.evidence
        );
    }
    assert_eq!(report.rows.len(), 1 + CAUGHT_BY.len());
    for ((mutant, check), row) in CAUGHT_BY.iter().zip(&report.rows[1..]) {
        assert_eq!(row.subject, *mutant);
        let caught = row
            .caught_by()
            .unwrap_or_else(|| panic!("{mutant} escaped every check"));
        assert_eq!(caught.check, *check, "{mutant} caught by another check");
    }
    assert!(report.passed());
    snapshot_settings().bind(|| insta::assert_snapshot!("zoo", report.table(false)));
}

/// This is a regression test that ensures the forgotten reserve is a blind
/// spot of every check but the lock-step admission model: every other
/// check of the zoo passes it, and on `reserve-decides` the only violations
/// are `admission_model`'s (the upload completes; nothing else is wrong but
/// the decision).
#[test]
fn the_forgotten_reserve_is_seen_only_by_the_lockstep_model() {
    let subject = subjects()
        .into_iter()
        .find(|s| s.name == "forgotten-reserve")
        .expect("in the zoo");
    for check in checks() {
        if check.name() == "sim reserve-decides" {
            continue;
        }
        if let Some(run) = run_check(&check, &subject) {
            assert!(!run.caught, "{} caught it: {:?}", run.check, run.evidence);
        }
    }
    let options = RunOptions {
        admission: Some(subject.admission.clone()),
        ..RunOptions::default()
    };
    let (report, _) = run(&reserve_decides(0), &options).expect("valid scenario");
    assert!(!report.violations.is_empty(), "the model saw nothing");
    for v in &report.violations {
        assert_eq!(v.check, "admission_model", "{v:?}");
    }
    let (report, _) = run(&reserve_decides(0), &RunOptions::default()).expect("valid scenario");
    assert!(report.passed, "production: {:?}", report.violations);
}
