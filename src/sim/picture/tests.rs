//! The picture of a real (small) run, and of a failing one.

use super::*;
use crate::sim::oracle::Violation;
use crate::sim::{run, RunOptions};

fn smoke_with_timeline() -> (Scenario, Report, Vec<Stamped>) {
    let scenario = Scenario::builtin("smoke", 7).expect("smoke is built in");
    let options = RunOptions {
        timeline: true,
        ..RunOptions::default()
    };
    let (report, trace) = run(&scenario, &options).expect("smoke runs");
    (scenario, report, trace.events())
}

#[test]
fn a_run_is_drawn_with_its_axes_faults_and_series() {
    let (scenario, report, events) = smoke_with_timeline();
    assert!(report.passed, "{:?}", report.violations);
    let timeline = report.timeline.as_ref().expect("asked for");
    assert!(timeline.samples().count() > 10);
    let page = html(&scenario, &report, &events);
    for needle in [
        "smoke seed 7: PASS",
        "simulated time (s)",
        "Bytes committed per upload (MB)",
        "Slots in use, global and per user (slots)",
        "Reserved memory against its limit (MB)",
        "Uploads waiting for admission (waiters)",
        "liveness phase (faults off)",
        "No check failed.",
        "<polyline",
    ] {
        assert!(page.contains(needle), "{needle:?} missing");
    }
    for f in &scenario.faults {
        assert!(
            page.contains(&format!(">{}</text>", f.fault.kind())),
            "fault {} not drawn",
            f.fault.kind()
        );
    }
    // Self-contained: nothing to fetch, nothing to run.
    for fetch in ["src=", "href=", "<script", "url("] {
        assert!(!page.contains(fetch), "{fetch:?} in the page");
    }
}

/// This is a regression test that ensures a violation's text, whatever a
/// peer put in it, is shown escaped and where it was found.
#[test]
fn a_violation_is_marked_where_it_was_found_and_its_text_escaped() {
    let (scenario, mut report, events) = smoke_with_timeline();
    let v = Violation {
        check: "global_limit",
        detail: "21 of 20 <script>alert(1)</script> & more".into(),
    };
    report.passed = false;
    report.violations.push(v.clone());
    if let Some(t) = report.timeline.as_mut() {
        t.place_violations(1_234, &report.violations);
    }
    let page = html(&scenario, &report, &events);
    assert!(page.contains("smoke seed 7: FAIL"));
    assert!(page.contains(
        "<b>global_limit</b> at 1.234 s: 21 of 20 &lt;script&gt;alert(1)&lt;/script&gt; &amp; more"
    ));
    assert!(page.contains("✖ global_limit"));
    assert!(!page.contains("<script>"));
}

#[test]
fn the_longest_stall_is_the_longest_flat_stretch_before_the_end() {
    let (_, mut report, _) = smoke_with_timeline();
    let mut t = Timeline::new(10_000, 10, 0);
    let l = crate::sim::timeline::tests::ledger(0, 0);
    for (ms, committed) in [
        (0, 0),
        (10, 5),
        (20, 5),
        (30, 5),
        (40, 5),
        (50, 9),
        (60, 9),
        (70, 12),
    ] {
        t.sample(ms, &l, &[committed]);
    }
    report.timeline = Some(t);
    let tl = report.timeline.as_ref().expect("set");
    assert_eq!(
        longest_stall(tl, &report),
        Some(Stall {
            from_ms: 10,
            to_ms: 40
        })
    );
}
