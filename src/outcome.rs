//! [`Outcome`]: what a command printed and how it exits, and the exit codes.
//!
//! Its own module so that every command — the CLI's, real mode's, the zoo's
//! and the bench report's — can return one without importing the CLI.

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
    /// Success, printing `stdout`.
    pub fn ok(stdout: String) -> Self {
        Self {
            stdout,
            stderr: String::new(),
            code: EXIT_OK,
        }
    }

    /// Bad arguments or unreadable input: `e` on stderr, [`EXIT_USAGE`].
    pub fn usage(e: impl std::fmt::Display) -> Self {
        Self {
            stdout: String::new(),
            stderr: format!("upsim: {e}\n"),
            code: EXIT_USAGE,
        }
    }
}
