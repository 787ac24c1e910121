//! The binary under test as child processes (`upsim drive`, `serve`,
//! `upload`), killed and reaped on drop; free loopback ports, bounded
//! waits, token files and process figures from `/proc`.

use super::TestResult;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub const UPSIM: &str = env!("CARGO_BIN_EXE_upsim");

/// A free port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> TestResult<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A child process of the binary under test, killed (SIGKILL) and reaped
/// on drop. Its standard output and error go to files in `dir`.
pub struct Proc {
    pub name: String,
    child: Child,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
}

impl Proc {
    /// Starts `upsim ARGS` in `dir` (its working directory: nothing a
    /// process writes by a relative path lands in the repository), logging
    /// to `dir/NAME.{out,err}` (appended, so restarts keep the earlier
    /// runs' lines).
    pub fn spawn(name: &str, args: &[&str], dir: &Path, rust_log: &str) -> TestResult<Self> {
        let stdout_path = dir.join(format!("{name}.out"));
        let stderr_path = dir.join(format!("{name}.err"));
        let open = |p: &Path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
        };
        let child = Command::new(UPSIM)
            .current_dir(dir)
            .args(args)
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::from(open(&stdout_path)?))
            .stderr(Stdio::from(open(&stderr_path)?))
            .spawn()?;
        Ok(Self {
            name: name.to_owned(),
            child,
            stdout_path,
            stderr_path,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (`INT`, `TERM`, `KILL`).
    pub fn signal(&self, signal: &str) -> TestResult {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status()?;
        if !status.success() {
            return Err(format!("kill -{signal} {} failed", self.pid()).into());
        }
        Ok(())
    }

    /// Waits at most `timeout` for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> TestResult<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} did not exit within {} ms\n{}",
                    self.name,
                    timeout.as_millis(),
                    self.logs()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Its standard output so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// Its standard error so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// The tail of its standard error and output, for failure messages.
    pub fn logs(&self) -> String {
        let tail = |p: &Path| {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(30)..].join("\n")
        };
        format!(
            "--- {} stderr (tail) ---\n{}\n--- {} stdout ---\n{}",
            self.name,
            tail(&self.stderr_path),
            self.name,
            tail(&self.stdout_path)
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Polls `check` every `interval` until it is true, at most `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, interval: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(interval).await;
    }
}

/// A process's peak resident set (`VmHWM`), from `/proc`.
pub fn peak_rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Writes a token file with `pairs` (token, user) into `dir`; returns its
/// path.
pub fn token_file(dir: &Path, name: &str, pairs: &[(&str, &str)]) -> TestResult<PathBuf> {
    let path = dir.join(name);
    let text: String = pairs.iter().map(|(t, u)| format!("{t} {u}\n")).collect();
    std::fs::write(&path, text)?;
    Ok(path)
}
