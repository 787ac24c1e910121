//! The README's sample outputs, checked against fresh runs of the commands
//! they show, so that they cannot drift (issue 14 found the reference
//! block's trace hash stale).
//!
//! Each sample is the fenced block that follows a marker sentence in the
//! README. Lines are compared exactly, except the figures of lines that
//! report wall-clock measurements (they vary run to run): there every digit
//! is masked (a run of digits becomes `#`), so the line's form is still
//! checked.

use crate::support::replay_hint;
use std::path::Path;
use std::process::Command;

/// Lines whose numbers are wall-clock measurements.
const WALL_LINE_PREFIXES: &[&str] = &["  simulated ", "  baseline ", "  total wall "];

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md is readable")
}

/// The fenced block that follows the first line containing `marker`.
fn sample_after(readme: &str, marker: &str) -> Vec<String> {
    let rest = &readme[readme
        .find(marker)
        .unwrap_or_else(|| panic!("README has no {marker:?}"))..];
    let open = rest
        .find("\n```\n")
        .expect("a fenced block after the marker")
        + 5;
    let body = &rest[open..];
    let close = body.find("```").expect("the block closes");
    body[..close].lines().map(str::to_owned).collect()
}

fn masked(line: &str) -> String {
    if WALL_LINE_PREFIXES.iter().any(|p| line.starts_with(p)) {
        // A run of digits becomes one `#`: 99 and 175 simulated s per wall
        // s are the same form.
        let mut out = String::new();
        for c in line.chars() {
            if !c.is_ascii_digit() {
                out.push(c);
            } else if !out.ends_with('#') {
                out.push('#');
            }
        }
        out
    } else {
        line.to_owned()
    }
}

/// Runs `upsim ARGS` and returns its stdout's lines.
fn upsim(args: &[&str]) -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_upsim"))
        .args(args)
        .output()
        .expect("the upsim binary runs");
    String::from_utf8(out.stdout)
        .expect("upsim prints UTF-8")
        .lines()
        .map(str::to_owned)
        .collect()
}

fn assert_same(what: &str, documented: &[String], printed: &[String]) {
    let documented: Vec<String> = documented.iter().map(|l| masked(l)).collect();
    let printed: Vec<String> = printed.iter().map(|l| masked(l)).collect();
    for (n, (d, p)) in documented.iter().zip(&printed).enumerate() {
        assert_eq!(
            d,
            p,
            "README's {what}, line {}: documented vs printed",
            n + 1
        );
    }
    assert_eq!(
        documented.len(),
        printed.len(),
        "README's {what} has {} lines, the command printed {}:\n{}",
        documented.len(),
        printed.len(),
        printed.join("\n")
    );
}

/// This is a regression test that ensures README's reference output —
/// trace hash included — is what `upsim run reference` prints.
#[test]
fn readme_reference_output_is_what_the_run_prints() {
    let documented = sample_after(&readme(), "It prints:");
    let printed = upsim(&["run", "reference"]);
    assert!(
        printed.first().is_some_and(|l| l.ends_with("PASS")),
        "the reference run failed:\n{}\n{}",
        printed.join("\n"),
        replay_hint("reference", 0)
    );
    assert_same("`upsim run reference` block", &documented, &printed);
}

#[test]
fn readme_diagnose_output_is_what_diagnose_prints() {
    let documented = sample_after(&readme(), "## Reading `upsim diagnose`");
    let printed = upsim(&["diagnose", "--profile", "prod"]);
    assert_same(
        "`upsim diagnose --profile prod` block",
        &documented,
        &printed,
    );
}

#[test]
fn the_comparison_masks_only_wall_figures() {
    assert_eq!(masked("  total wall 16.51 s"), "  total wall #.# s");
    assert_eq!(masked("  trace: 1881 events"), "  trace: 1881 events");
}
