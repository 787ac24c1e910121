//! A run as one self-contained HTML page (`upsim run … --html FILE`): a
//! timeline over simulated time, drawn as inline SVG with no script and no
//! network — bytes committed per upload, global and per-user slots in use,
//! reserved memory against its limit, waiters, each fault as a shaded band
//! with its name, retries as marks, the liveness phase, the longest stall,
//! and every violation where the oracle found it, with its text.
//!
//! Meant to be read in five seconds: the header says PASS or FAIL and how
//! to replay the run; the longest stretch without committed progress is
//! named with the faults that overlap it; violations are red lines with
//! their check's name, and listed in full below. Every label is escaped;
//! the page's size is bounded by the timeline's own bounds and
//! [`MARKS_MAX`].

mod svg;

use super::report::{FileOutcome, Report};
use super::scenario::{Fault, Scenario, ScheduledFault};
use super::timeline::Timeline;
use crate::trace::{Event, Stamped};
use std::fmt::Write;

/// Most retry marks drawn (the rest are counted in the legend).
pub const MARKS_MAX: usize = 2_000;

/// A fault as a band of simulated time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Band {
    pub kind: &'static str,
    pub from_ms: u64,
    /// Equal to `from_ms` for a fault that happens at an instant.
    pub to_ms: u64,
    pub detail: String,
}

/// A retry or restart at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mark {
    pub at_ms: u64,
    pub what: String,
}

/// The stretch of simulated time with no committed progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stall {
    pub from_ms: u64,
    pub to_ms: u64,
}

/// The page for `report`, a run of `scenario` whose trace is `events`.
/// Without a timeline (a run not asked to record one) the page still shows
/// the faults, retries and violations.
pub fn html(scenario: &Scenario, report: &Report, events: &[Stamped]) -> String {
    let empty = Timeline::new(report.simulated_ms.max(1), scenario.tick_ms, 0);
    let timeline = report.timeline.as_ref().unwrap_or(&empty);
    let bands: Vec<Band> = scenario.faults.iter().map(band).collect();
    let marks = marks(events);
    let stall = longest_stall(timeline, report);
    let end_ms = report.simulated_ms.max(1);
    let mut page = String::new();
    page.push_str(&head(report));
    page.push_str(&summary(scenario, report, stall, &bands));
    page.push_str(&svg::draw(&svg::Drawing {
        timeline,
        end_ms,
        liveness_from_ms: scenario.safety_ms,
        bands: &bands,
        marks: &marks,
        stall,
        files: report.files.len(),
    }));
    page.push_str(&violations_list(timeline));
    page.push_str("</body>\n</html>\n");
    page
}

/// The document's head and title.
fn head(report: &Report) -> String {
    let verdict = if report.passed { "PASS" } else { "FAIL" };
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>upsim {} seed {} — {verdict}</title>\n<style>\n\
         body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }}\n\
         h1 {{ font-size: 20px; margin: 0 0 8px; }} .pass {{ color: #1a7f37; }} .fail {{ color: #c62828; }}\n\
         code {{ background: #f3f3f3; padding: 1px 4px; }} svg text {{ font: 11px sans-serif; }}\n\
         li.violation {{ color: #c62828; }}\n</style>\n</head>\n<body>\n",
        escape(&report.scenario),
        report.seed
    )
}

/// The header: verdict, figures, replay command, the longest stall.
fn summary(scenario: &Scenario, report: &Report, stall: Option<Stall>, bands: &[Band]) -> String {
    let (verdict, class) = if report.passed {
        ("PASS", "pass")
    } else {
        ("FAIL", "fail")
    };
    let complete = report
        .files
        .iter()
        .filter(|f| matches!(f.outcome, FileOutcome::Complete { .. }))
        .count();
    let mut s = format!(
        "<h1 id=\"verdict\" class=\"{class}\">{} seed {}: {verdict}</h1>\n<p id=\"figures\">{} of {} files complete, {} in all; {:.1} s simulated; {} violation(s); {} fault(s) scheduled. Replay: <code>{}</code></p>\n",
        escape(&report.scenario),
        report.seed,
        complete,
        report.files.len(),
        crate::units::human_bytes(report.total_bytes),
        report.simulated_ms as f64 / 1e3,
        report.violations.len(),
        scenario.faults.len(),
        escape(&report.replay_command()),
    );
    if let Some(stall) = stall {
        let during: Vec<&str> = bands
            .iter()
            .filter(|b| b.from_ms <= stall.to_ms && b.to_ms >= stall.from_ms)
            .map(|b| b.kind)
            .collect();
        let _ = writeln!(
            s,
            "<p id=\"stall\">Longest stretch without committed progress: {:.1} s, from {:.1} s to {:.1} s{}.</p>",
            (stall.to_ms - stall.from_ms) as f64 / 1e3,
            stall.from_ms as f64 / 1e3,
            stall.to_ms as f64 / 1e3,
            if during.is_empty() {
                ", with no fault scheduled in it".to_owned()
            } else {
                format!(", during {}", escape(&during.join(", ")))
            }
        );
    }
    s
}

/// Every violation with its time and full text.
fn violations_list(timeline: &Timeline) -> String {
    let placed = timeline.violations();
    if placed.is_empty() {
        return "<p id=\"violations\">No check failed.</p>\n".to_owned();
    }
    let mut s = String::from("<h2>Violations</h2>\n<ol id=\"violations\">\n");
    for p in placed {
        let _ = writeln!(
            s,
            "<li class=\"violation\"><b>{}</b> at {:.3} s: {}</li>",
            escape(p.violation.check),
            p.at_ms as f64 / 1e3,
            escape(&p.violation.detail)
        );
    }
    s.push_str("</ol>\n");
    s
}

/// A scheduled fault as a band.
fn band(f: &ScheduledFault) -> Band {
    let (length_ms, detail) = match &f.fault {
        Fault::Partition { duration_ms } => (
            *duration_ms,
            format!("clients cut off for {duration_ms} ms"),
        ),
        Fault::BackendCrash { down_ms } => (*down_ms, format!("backend down for {down_ms} ms")),
        Fault::MemoryPressure {
            available_bytes,
            duration_ms,
        } => (
            *duration_ms,
            format!(
                "{} available for {duration_ms} ms",
                crate::units::human_bytes(*available_bytes)
            ),
        ),
        Fault::DriveErrors { status, count, .. } => {
            (0, format!("{count} PUT(s) answered {status}"))
        }
        Fault::DriveShortPiece { keep_bytes } => (0, format!("a piece cut to {keep_bytes} bytes")),
        Fault::DriveSessionExpiry => (0, "every open drive session expires".to_owned()),
        Fault::DriveTokenExpiry => (0, "every access token is revoked".to_owned()),
    };
    Band {
        kind: f.fault.kind(),
        from_ms: f.at_ms,
        to_ms: f.at_ms.saturating_add(length_ms),
        detail,
    }
}

/// Backoffs and client restarts from the trace, at most [`MARKS_MAX`].
fn marks(events: &[Stamped]) -> Vec<Mark> {
    events
        .iter()
        .filter_map(|e| {
            let what = match &e.event {
                Event::Backoff {
                    what,
                    attempt,
                    backoff_ms,
                } => format!("{what}: attempt {attempt}, backs off {backoff_ms} ms"),
                Event::ClientRestart { upload } => format!("client restarts upload {upload}"),
                _ => return None,
            };
            Some(Mark {
                at_ms: e.at_ms,
                what,
            })
        })
        .take(MARKS_MAX)
        .collect()
}

/// The longest stretch in which the bytes committed did not grow while
/// more were still to come (the run's final total, or every file's size
/// when some file never ended).
fn longest_stall(timeline: &Timeline, report: &Report) -> Option<Stall> {
    let unfinished = report
        .files
        .iter()
        .any(|f| matches!(f.outcome, FileOutcome::Unfinished));
    let totals: Vec<(u64, u64)> = timeline
        .samples()
        .map(|s| (s.at_ms, s.committed_bytes.iter().sum()))
        .collect();
    let target = if unfinished {
        report.total_bytes
    } else {
        totals.last().map_or(0, |&(_, t)| t)
    };
    let mut best: Option<Stall> = None;
    let mut since: Option<(u64, u64)> = None;
    for &(at_ms, total) in &totals {
        match since {
            Some((from, held)) if held == total && total < target => {
                let stall = Stall {
                    from_ms: from,
                    to_ms: at_ms,
                };
                if best.is_none_or(|b| b.to_ms - b.from_ms < stall.to_ms - stall.from_ms) {
                    best = Some(stall);
                }
            }
            _ => since = Some((at_ms, total)),
        }
    }
    best.filter(|b| b.to_ms > b.from_ms)
}

/// `text` safe inside HTML text and attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests;
