//! Helpers shared by the real-mode checks (`real_e2e`, `real_load`,
//! `hostile_input`): temporary directories and child processes that clean
//! up after themselves even when a test fails, free loopback ports, raw
//! HTTP/1.1 exchanges (so tests can send what no well-behaved client
//! would), payload files, and process figures from `/proc`.
//!
//! Invariants: every wait is bounded; every process started is killed and
//! reaped on drop; only 127.0.0.1 is ever dialled.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use upsim::checksum::FileDigest;
use upsim::payload::Payload;

pub type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The binary under test.
pub const UPSIM: &str = env!("CARGO_BIN_EXE_upsim");

/// Largest reply a raw exchange reads.
const RAW_REPLY_BYTES_MAX: usize = 1 << 20;

/// A temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A fresh directory named after `tag`, the process and the time.
    pub fn new(tag: &str) -> TestResult<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos();
        let dir = std::env::temp_dir().join(format!("upsim-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

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
    /// Starts `upsim ARGS`, logging to `dir/NAME.{out,err}` (appended, so
    /// restarts keep the earlier runs' lines).
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

/// A reply read by [`raw_exchange`].
#[derive(Debug, Clone)]
pub struct RawReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawReply {
    /// A header's value (names compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `cause` of a backend error body, if any.
    pub fn cause(&self) -> Option<String> {
        let value: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        value["error"]["cause"].as_str().map(str::to_owned)
    }
}

/// Writes `request` (raw bytes) to `addr` and reads one reply, keeping the
/// connection open meanwhile (a body shorter than its `Content-Length`
/// stays short). Bounded by `timeout`.
pub async fn raw_exchange(addr: &str, request: &[u8], timeout: Duration) -> TestResult<RawReply> {
    tokio::time::timeout(timeout, async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(request).await?;
        read_reply(&mut stream).await
    })
    .await
    .map_err(|_| format!("no reply from {addr} within {} ms", timeout.as_millis()))?
}

/// Reads one HTTP/1.1 reply (headers, then a `Content-Length` body).
pub async fn read_reply(stream: &mut tokio::net::TcpStream) -> TestResult<RawReply> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let got = stream.read(&mut chunk).await?;
        if got == 0 {
            return Err(format!(
                "connection closed before a reply ({} bytes read)",
                buf.len()
            )
            .into());
        }
        buf.extend_from_slice(&chunk[..got]);
        if buf.len() > RAW_REPLY_BYTES_MAX {
            return Err("reply head too large".into());
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    if len > RAW_REPLY_BYTES_MAX {
        return Err("reply body too large".into());
    }
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let got = stream.read(&mut chunk).await?;
        if got == 0 {
            return Err("connection closed inside the reply body".into());
        }
        body.extend_from_slice(&chunk[..got]);
    }
    body.truncate(len);
    Ok(RawReply {
        status,
        headers,
        body,
    })
}

/// Builds a request: `METHOD TARGET HTTP/1.1`, `Host`, the given headers,
/// `Content-Length` of `body` unless a header names the framing already,
/// then the body.
pub fn request(
    method: &str,
    addr: &str,
    target: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\nhost: {addr}\r\n");
    let framed = headers.iter().any(|(n, _)| {
        n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("transfer-encoding")
    });
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    if !framed {
        out.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// `GET path` with `headers`, the reply as a [`RawReply`].
pub async fn get(addr: &str, path: &str, headers: &[(&str, String)]) -> TestResult<RawReply> {
    raw_exchange(
        addr,
        &request("GET", addr, path, headers, b""),
        Duration::from_secs(10),
    )
    .await
}

/// Writes `size_bytes` of payload `seed` to `path`; returns its digest.
pub fn write_payload(path: &Path, seed: u64, size_bytes: u64) -> TestResult<FileDigest> {
    use std::io::Write;
    let payload = Payload::new(seed, size_bytes);
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut digest = FileDigest::default();
    let mut buf = vec![0u8; 8 << 20];
    let mut offset = 0u64;
    while offset < size_bytes {
        let len = (size_bytes - offset).min(buf.len() as u64) as usize;
        payload.fill(offset, &mut buf[..len]);
        file.write_all(&buf[..len])?;
        digest.update(&buf[..len]);
        offset += len as u64;
    }
    file.flush()?;
    Ok(digest)
}

/// The digest of a file on disk.
pub fn file_digest(path: &Path) -> TestResult<FileDigest> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut digest = FileDigest::default();
    let mut buf = vec![0u8; 8 << 20];
    loop {
        let got = file.read(&mut buf)?;
        if got == 0 {
            return Ok(digest);
        }
        digest.update(&buf[..got]);
    }
}

/// Finished files in a drive directory (names not starting with `.`).
pub fn finished_files(drive_dir: &Path) -> TestResult<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(drive_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    Ok(files)
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
