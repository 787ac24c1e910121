//! What real mode writes for machines and files: logs that go to a file or
//! a pipe carry no ANSI colour codes, `--log-format json` writes one JSON
//! object per line, and `upsim run`'s progress goes to a pipe as plain
//! lines, never carriage-return redraws. (Colour on a terminal and
//! `NO_COLOR` are decided by `real::colour_allowed`, unit-tested in the
//! library.)

use crate::support::{free_port, wait_until, Proc, TempDir, TestResult, UPSIM};
use std::time::Duration;

const START_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);

/// Starts `upsim drive` with `extra` arguments, its standard error going
/// to a file, and returns its log once it says it is ready.
async fn drive_log(tag: &str, extra: &[&str]) -> TestResult<String> {
    let dir = TempDir::new(tag)?;
    let listen = format!("127.0.0.1:{}", free_port()?);
    let store = dir.path().join("store");
    let store = store.to_string_lossy();
    let mut args = vec!["drive", "--listen", &listen, "--dir", &store];
    args.extend_from_slice(extra);
    let drive = Proc::spawn("drive", &args, dir.path(), "info")?;
    let ready = wait_until(START_TIMEOUT, POLL, || async {
        drive.stderr().contains("upsim drive: ready")
    })
    .await;
    assert!(ready, "the drive never said it was ready\n{}", drive.logs());
    Ok(drive.stderr())
}

#[tokio::test]
async fn real_logs_to_a_file_carry_no_colour_codes() -> TestResult {
    let log = drive_log("logs-text", &[]).await?;
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escapes in a log file:\n{log:?}"
    );
    assert!(log.lines().any(|l| l.contains("INFO")), "{log}");
    Ok(())
}

#[tokio::test]
async fn real_json_logs_are_one_object_per_line() -> TestResult {
    let log = drive_log("logs-json", &["--log-format", "json"]).await?;
    let mut lines = 0;
    for line in log.lines() {
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("not a JSON object: {e}: {line:?}"))?;
        assert!(value["level"].is_string(), "{line}");
        assert!(value["timestamp"].is_string(), "{line}");
        assert!(value["fields"].is_object(), "{line}");
        lines += 1;
    }
    assert!(log.contains(r#""message":"upsim drive: ready""#), "{log}");
    assert!(lines >= 1);
    Ok(())
}

#[test]
fn real_progress_to_a_pipe_is_plain_lines() -> TestResult {
    let out = std::process::Command::new(UPSIM)
        .args(["run", "smoke"])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8(out.stderr)?;
    assert!(
        !stderr.contains('\r'),
        "carriage returns in a pipe: {stderr:?}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("[sim ") && l.contains("committed")),
        "no progress line: {stderr}"
    );
    Ok(())
}
