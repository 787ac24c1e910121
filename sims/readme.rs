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
const WALL_LINE_PREFIXES: &[&str] = &[
    "  simulated ",
    "  baseline ",
    "  total wall ",
    "wall of the runs ",
];

pub(crate) fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md is readable")
}

/// The fenced block that follows the first line containing `marker`.
pub(crate) fn sample_after(readme: &str, marker: &str) -> Vec<String> {
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

pub(crate) fn masked(line: &str) -> String {
    if WALL_LINE_PREFIXES.iter().any(|p| line.starts_with(p)) {
        // 99 and 175 simulated s per wall s are the same form.
        mask_digit_runs(line)
    } else {
        line.to_owned()
    }
}

/// Each run of digits becomes one `#`.
fn mask_digit_runs(line: &str) -> String {
    let mut out = String::new();
    for c in line.chars() {
        if !c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('#') {
            out.push('#');
        }
    }
    out
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

/// The form of a line whose ids, digests and numbers change run to run:
/// a run of 8 or more lowercase hex digits becomes `<hex>` when it holds a
/// letter or is 16 long (a plain number such as a size does not), then a
/// run of digits becomes `#`.
fn form(line: &str) -> String {
    let mut out = String::new();
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        let id_like = run.len() >= 16 || run.chars().any(|c| c.is_ascii_alphabetic());
        if run.len() >= 8 && id_like {
            out.push_str("<hex>");
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in line.chars() {
        if c.is_ascii_digit() || ('a'..='f').contains(&c) {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    mask_digit_runs(&out)
}

/// Whether `printed` has the form of `documented`, where the README cuts a
/// long value or the line's tail with `…`: the pieces between the cuts
/// appear in order, the first at the start.
fn has_form(documented: &str, printed: &str) -> bool {
    let (documented, printed) = (form(documented), form(printed));
    let mut pieces = documented.split('…');
    let first = pieces.next().unwrap_or_default();
    let Some(mut rest) = printed.strip_prefix(first) else {
        return false;
    };
    for piece in pieces {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    true
}

/// This is a regression test that ensures README's `upsim upload` sample
/// (the created and uploaded lines) has the form the client prints, run
/// through `upsim drive` and `upsim serve` as the README's commands run them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_upload_output_has_the_form_upload_prints() -> crate::support::TestResult {
    use crate::support::{pair_addrs, write_payload, Proc, RealPair, TempDir};
    use std::time::Duration;
    let documented = sample_after(&readme(), "exit 0 only if they match):");
    let tmp = TempDir::new("readme-upload")?;
    let root = tmp.path();
    write_payload(&root.join("big.bin"), 0x8ead, 3 * 1024 * 1024 + 7)?;
    let mut pair = RealPair::start(root, pair_addrs()?, &[], &[], "warn").await?;
    let backend_addr = &pair.backend_addr;
    let backend_url = format!("http://{backend_addr}");
    let state = root.join("client-state").to_string_lossy().into_owned();
    // Run in the file's directory, as the README's commands are: the client
    // names the file as it was given.
    let upload_args = [
        "upload",
        "big.bin",
        "--server",
        &backend_url,
        "--user",
        "alice",
        "--state-dir",
        &state,
    ];
    let mut client = Proc::spawn("upload", &upload_args, root, "warn")?;
    let status = client.wait_exit(Duration::from_secs(120)).await?;
    assert!(status.success(), "{}", client.logs());
    let mut printed: Vec<String> = client
        .stderr()
        .lines()
        .filter(|l| l.starts_with("created upload"))
        .map(str::to_owned)
        .collect();
    printed.extend(client.stdout().lines().map(str::to_owned));
    assert_eq!(documented.len(), printed.len(), "{printed:?}");
    for (d, p) in documented.iter().zip(&printed) {
        assert!(
            has_form(d, p),
            "README's upload sample:\n  {d}\nprinted:\n  {p}"
        );
    }
    pair.stop().await
}

#[test]
fn the_form_keeps_words_and_cuts_and_masks_ids_and_numbers() {
    assert_eq!(
        form("upload 172276f9c949344f: 13 chunks"),
        "upload <hex>: # chunks"
    );
    assert!(has_form(
        "as upload 172276f9…: drive x; …",
        "as upload 0123456789abcdef0123: drive x; 3 more"
    ));
    assert!(!has_form(
        "drive md5Checksum 2f28 == source",
        "drive crc64nvme 2f28 == source"
    ));
}
