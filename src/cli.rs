//! The command line: what each `upsim` subcommand prints, and its exit code.
//!
//! Kept in the library so tests can run the commands' logic without a
//! process; `main.rs` only parses arguments and exits with the code.

use crate::diagnose::{diagnose, DiagnoseInput};
use crate::env::{MemoryProbe, MemorySnapshot, OsMemory};
use crate::profile::{drift, with_field, Profile, ProfileError};
use std::fmt::Write as _;

/// Exit code for success.
pub const EXIT_OK: i32 = 0;
/// Exit code when a check fails (a diagnose step, a rejected profile).
pub const EXIT_FAILED: i32 = 1;
/// Exit code for bad arguments or unreadable input.
pub const EXIT_USAGE: i32 = 2;

/// What a command printed and how it exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Exit code.
    pub code: i32,
}

impl Outcome {
    fn ok(stdout: String) -> Self {
        Self {
            stdout,
            stderr: String::new(),
            code: EXIT_OK,
        }
    }

    fn usage(e: impl std::fmt::Display) -> Self {
        Self {
            stdout: String::new(),
            stderr: format!("upsim: {e}\n"),
            code: EXIT_USAGE,
        }
    }
}

/// `upsim diagnose --profile P [--file-size-bytes N] [--os-memory]`.
pub fn diagnose_command(profile: &str, file_size_bytes: Option<u64>, os_memory: bool) -> Outcome {
    let profile = match Profile::load(profile) {
        Ok(p) => p,
        Err(e @ ProfileError::Invalid { .. }) => {
            // An invalid profile is a diagnosis in itself: step 1 fails.
            return Outcome {
                stdout: String::new(),
                stderr: format!("upsim: step 1 (configuration validation) FAIL: {e}\n"),
                code: EXIT_FAILED,
            };
        }
        Err(e) => return Outcome::usage(e),
    };
    let mut input = DiagnoseInput::reference();
    if let Some(size) = file_size_bytes {
        input.file_size_bytes = size;
    }
    if os_memory {
        match OsMemory.snapshot() {
            Ok(m) => input.memory = m,
            Err(e) => return Outcome::usage(e),
        }
    }
    let d = diagnose(&profile, &input);
    Outcome {
        stdout: d.render(),
        stderr: String::new(),
        code: if d.passed() { EXIT_OK } else { EXIT_FAILED },
    }
}

/// `upsim config diff A B`: every differing field, and what each does on
/// its own to the reference upload on the report's machine.
pub fn config_diff_command(left: &str, right: &str) -> Outcome {
    let (l, r) = match (Profile::load(left), Profile::load(right)) {
        (Ok(l), Ok(r)) => (l, r),
        (Err(e), _) | (_, Err(e)) => return Outcome::usage(e),
    };
    let input = DiagnoseInput::reference();
    let verdict = |p: &Profile| match diagnose(p, &input).admission() {
        Some(s) if s.passed => "admitted".to_owned(),
        Some(s) => match &s.cause {
            Some(c) => format!("rejected ({})", c.cause()),
            None => format!("rejected ({})", s.detail),
        },
        None => "rejected (invalid profile)".to_owned(),
    };
    let mut out = String::new();
    let fields = drift(&l, &r);
    let _ = writeln!(
        out,
        "config diff {} → {}: {} field(s) differ\nreference upload: {} bytes on a machine with memory {}\n",
        l.name,
        r.name,
        fields.len(),
        input.file_size_bytes,
        MemorySnapshot::REPORT.describe()
    );
    let base = verdict(&l);
    for f in &fields {
        let alone = match with_field(&l, &f.field, &f.right) {
            Ok(p) => verdict(&p),
            Err(e) => format!("invalid: {e}"),
        };
        let effect = if alone == base {
            format!("alone: no change ({alone})")
        } else {
            format!("alone: {base} → {alone}")
        };
        let _ = writeln!(
            out,
            "  {:<28} {:>14} → {:<14} {effect}",
            f.field,
            f.left.to_string(),
            f.right.to_string()
        );
    }
    let _ = writeln!(
        out,
        "\nreference upload: {} on {}, {} on {}",
        base,
        l.name,
        verdict(&r),
        r.name
    );
    if let (Some(d), true) = (diagnose(&r, &input).admission(), base == "admitted") {
        if let Some(c) = &d.cause {
            // Does the smallest possible upload fare any better?
            let tiny = DiagnoseInput {
                file_size_bytes: 1,
                ..input.clone()
            };
            let scope = match diagnose(&r, &tiny).admission() {
                Some(s) if !s.passed => "every upload, whatever its size",
                _ => "every upload of this size",
            };
            let _ = writeln!(out, "consequence: {} rejects {scope}: {c}", r.name);
        }
    }
    Outcome::ok(out)
}

/// `upsim config show P`: the profile as TOML.
pub fn config_show_command(profile: &str) -> Outcome {
    match Profile::load(profile) {
        Ok(p) => Outcome::ok(p.to_toml()),
        Err(e) => Outcome::usage(e),
    }
}

/// `upsim config check FILE`: validates a profile file.
pub fn config_check_command(path: &str) -> Outcome {
    match Profile::load(path) {
        Ok(p) => Outcome::ok(format!("profile {} ({path}) is valid\n", p.name)),
        Err(e @ ProfileError::Invalid { .. }) | Err(e @ ProfileError::Parse { .. }) => Outcome {
            stdout: String::new(),
            stderr: format!("upsim: {e}\n"),
            code: EXIT_FAILED,
        },
        Err(e) => Outcome::usage(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagnose_prod_fails_with_the_memory_cause() {
        let o = diagnose_command("prod", None, false);
        assert_eq!(o.code, EXIT_FAILED);
        assert!(
            o.stdout.contains("memory availability        FAIL"),
            "{}",
            o.stdout
        );
        assert!(o.stdout.contains("80.2 % of memory in use"), "{}", o.stdout);
        let o = diagnose_command("dev", None, false);
        assert_eq!(o.code, EXIT_OK, "{}", o.stdout);
        assert_eq!(diagnose_command("nope", None, false).code, EXIT_USAGE);
    }

    #[test]
    fn config_diff_names_the_field_that_rejects() {
        let o = config_diff_command("dev", "prod");
        assert_eq!(o.code, EXIT_OK);
        assert!(o.stdout.contains("3 field(s) differ"), "{}", o.stdout);
        let line = o
            .stdout
            .lines()
            .find(|l| l.contains("memory_limit_percent"))
            .unwrap_or_default();
        assert!(line.contains("100") && line.contains("80"), "{line}");
        assert!(
            line.contains("admitted → rejected (memory_pressure)"),
            "{line}"
        );
        let line = o
            .stdout
            .lines()
            .find(|l| l.contains("upload_limits_enabled"))
            .unwrap_or_default();
        assert!(line.contains("no change"), "{line}");
        assert!(
            o.stdout
                .contains("consequence: prod rejects every upload, whatever its size"),
            "{}",
            o.stdout
        );
    }

    #[test]
    fn config_check_reports_bad_files() {
        let dir = std::env::temp_dir().join(format!("upsim-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let bad = dir.join("bad.toml");
        std::fs::write(
            &bad,
            Profile::prod()
                .to_toml()
                .replace("chunk_size_bytes = 8388608", "chunk_size_bytes = 1000"),
        )
        .expect("write");
        let o = config_check_command(&bad.to_string_lossy());
        assert_eq!(o.code, EXIT_FAILED);
        assert!(o.stderr.contains("chunk_size_bytes"), "{}", o.stderr);
        let good = dir.join("good.toml");
        std::fs::write(&good, Profile::prod().to_toml()).expect("write");
        assert_eq!(config_check_command(&good.to_string_lossy()).code, EXIT_OK);
        std::fs::remove_dir_all(&dir).ok();
    }
}
