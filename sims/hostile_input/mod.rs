//! Hostile input against both real-mode servers, wired exactly as `upsim
//! serve` and `upsim drive` wire them (`bind_backend`, `bind_drive`) but in
//! process, with short timeouts. One file per server, each a table of
//! cases run by [`Server::run_cases`]:
//!
//! - `backend`: the chunk API (credentials, creates, chunk framing and
//!   checks, headers, an aborted upload, concurrent PUTs of one chunk).
//! - `drive`: the resumable protocol (credentials, `Content-Range`,
//!   framing, headers, concurrent PUTs of one piece). Cases that
//!   `drive_protocol` already sends the same way are not repeated here.
//!
//! Each case sends what a broken or malicious peer would, asserts the exact
//! status (and, for the backend, the stable `cause`) and any header or body
//! the table names, and asserts that no stored byte changed: the drive's
//! files (finished, partial, journal), the backend's records and the
//! upload's committed prefix and window are the same before and after.
//! Every failure message names the case. The cases that are meant to store
//! bytes (concurrent PUTs of the same chunk or piece) check instead that
//! the bytes were stored exactly once and are the source's. The cases are
//! counted and the count printed.

mod backend;
mod drive;

use crate::support::{raw_exchange, token_table, RawReply, Stack, TestResult, REPLY_TIMEOUT};
use std::fmt::Debug;
use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use upsim::profile::{MemoryPolicy, Profile};
use upsim::real::DriveSettings;
use upsim::units::KIB;

const ALICE: &str = "hostile-alice-token-0000000001";
const BOB: &str = "hostile-bob-token-00000000000002";
const DRIVE_TOKEN: &str = "hostile-backend-drive-token-03";
const MALLORY_DRIVE: &str = "hostile-mallory-drive-token-04";
const CHUNK: u64 = 256 * KIB;
/// Short bounds, so that timeout cases take about a second.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(1);
const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(1);
const UPLOADS_PER_USER_MAX: u32 = 3;

/// One hostile request and what the server must answer to it.
pub(crate) struct Case<C> {
    /// What the case sends, in a few words; every failure names it.
    pub name: &'static str,
    /// The raw request, built from the server's context.
    pub request: fn(&C) -> Vec<u8>,
    /// The exact status.
    pub status: u16,
    /// The backend's stable `cause` in the error body, where it has one.
    pub cause: Option<&'static str>,
    /// Further checks on the reply.
    pub also: &'static [Also],
}

/// A further check on a case's reply.
pub(crate) enum Also {
    /// The header is present and its value starts with this (`""`: any).
    HeaderStarts(&'static str, &'static str),
    /// The header's value is exactly this.
    HeaderIs(&'static str, &'static str),
    /// The header is absent.
    HeaderLacks(&'static str),
    /// The body contains this.
    BodyHas(&'static str),
    /// The body does not contain this.
    BodyLacks(&'static str),
    /// The reply came within this long of sending the request.
    RepliedWithin(Duration),
}

impl<C> Case<C> {
    /// Asserts `reply` against the case, naming it in every message.
    fn assert_reply(&self, server: &str, reply: &RawReply, elapsed: Duration) {
        let name = self.name;
        assert_eq!(
            reply.status,
            self.status,
            "{server} case {name:?}: {}",
            reply.text()
        );
        if let Some(cause) = self.cause {
            assert_eq!(
                reply.cause().as_deref(),
                Some(cause),
                "{server} case {name:?}: {}",
                reply.text()
            );
        }
        for also in self.also {
            let failure = match *also {
                Also::HeaderStarts(header, prefix) => {
                    (!reply.header(header).is_some_and(|v| v.starts_with(prefix))).then(|| {
                        format!(
                            "{header} {:?} does not start with {prefix:?}",
                            reply.header(header)
                        )
                    })
                }
                Also::HeaderIs(header, value) => (reply.header(header) != Some(value))
                    .then(|| format!("{header} {:?} is not {value:?}", reply.header(header))),
                Also::HeaderLacks(header) => reply
                    .header(header)
                    .map(|v| format!("{header} is {v:?}, expected none")),
                Also::BodyHas(text) => (!reply.text().contains(text))
                    .then(|| format!("the body lacks {text:?}: {}", reply.text())),
                Also::BodyLacks(text) => reply
                    .text()
                    .contains(text)
                    .then(|| format!("the body names {text:?}: {}", reply.text())),
                Also::RepliedWithin(limit) => (elapsed >= limit)
                    .then(|| format!("answered after {elapsed:?}, limit {limit:?}")),
            };
            if let Some(failure) = failure {
                panic!("{server} case {name:?}: {failure}");
            }
        }
    }
}

/// A server under attack: where it listens, and the fingerprint of what
/// it stores, which no refused request may change.
pub(crate) struct Server<'a, F> {
    /// `backend`, `drive` or `tus`, in failure messages.
    pub name: &'static str,
    pub addr: &'a str,
    pub fingerprint: F,
}

impl<F, Fut, T> Server<'_, F>
where
    F: Fn() -> Fut,
    Fut: Future<Output = TestResult<T>>,
    T: PartialEq + Debug,
{
    /// The fingerprint now.
    pub async fn fingerprint(&self) -> TestResult<T> {
        (self.fingerprint)().await
    }

    /// Sends each case of `cases` and asserts its reply; after each,
    /// asserts that the fingerprint still equals `baseline` (nothing
    /// stored). Returns the names of the cases passed.
    pub async fn run_cases<C>(
        &self,
        context: &C,
        cases: &[Case<C>],
        baseline: &T,
    ) -> TestResult<Vec<&'static str>> {
        let mut passed = Vec::with_capacity(cases.len());
        for case in cases {
            let started = Instant::now();
            let reply = raw_exchange(self.addr, &(case.request)(context), REPLY_TIMEOUT)
                .await
                .map_err(|e| format!("{} case {:?}: {e}", self.name, case.name))?;
            case.assert_reply(self.name, &reply, started.elapsed());
            assert_eq!(
                &self.fingerprint().await?,
                baseline,
                "{} case {:?} changed stored bytes",
                self.name,
                case.name
            );
            passed.push(case.name);
        }
        Ok(passed)
    }

    /// A trickled header (slowloris): cut off within the header read
    /// timeout, storing nothing. Returns the case's name.
    async fn slowloris(&self, baseline: &T) -> TestResult<&'static str> {
        assert_slowloris_cut_off(self.name, self.addr).await?;
        assert_eq!(
            &self.fingerprint().await?,
            baseline,
            "{}: slowloris changed stored bytes",
            self.name
        );
        Ok("slowloris: headers trickled")
    }
}

/// Prints the cases passed and asserts their number.
pub(crate) fn report(server: &str, passed: &[&str], expected: usize) {
    eprintln!(
        "hostile_input: {server}: {} cases passed: {}",
        passed.len(),
        passed.join("; ")
    );
    assert_eq!(passed.len(), expected, "{}", passed.join("; "));
}

/// Sends headers slowly, one byte every 200 ms, until the server closes
/// the connection; asserts that took less than the header read timeout
/// plus two seconds.
async fn assert_slowloris_cut_off(server: &str, addr: &str) -> TestResult {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let started = Instant::now();
    stream
        .write_all(b"PUT /uploads/x/chunks/0 HTTP/1.1\r\nhost: a\r\nx-slow: ")
        .await?;
    let (mut reader, mut writer) = stream.into_split();
    let closed = tokio::spawn(async move {
        let mut buf = [0u8; 1024];
        loop {
            match tokio::io::AsyncReadExt::read(&mut reader, &mut buf).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(_) => {}
            }
        }
    });
    for _ in 0..50 {
        if closed.is_finished() {
            break;
        }
        if writer.write_all(b"a").await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let at = tokio::time::timeout(Duration::from_secs(2), closed)
        .await
        .map_err(|_| "the server kept a trickling connection open for 10 s")??;
    let closed_after = at.duration_since(started);
    assert!(
        closed_after < HEADER_READ_TIMEOUT + Duration::from_secs(2),
        "slowloris held the {server} for {closed_after:?}"
    );
    Ok(())
}

/// Both servers as `upsim drive` and `upsim serve` wire them, with tokens
/// and short timeouts; the drive stores under `root/drive`, the backend
/// under `root/state`.
async fn start(root: &Path) -> TestResult<Stack> {
    let mut drive = DriveSettings::new("127.0.0.1:0", root.join("drive"));
    drive.tokens = Some(token_table(&[
        (DRIVE_TOKEN, "backend"),
        (MALLORY_DRIVE, "mallory"),
    ])?);
    drive.header_read_timeout = HEADER_READ_TIMEOUT;
    drive.piece_idle_timeout = BODY_IDLE_TIMEOUT;
    let profile = Profile {
        name: "hostile".into(),
        chunk_size_bytes: CHUNK,
        memory_per_upload: MemoryPolicy::ChunkWindow { chunks: 4 },
        ..Profile::dev()
    };
    let users = [(ALICE, "alice"), (BOB, "bob")];
    Stack::real_mode_with_tokens(root, &drive, DRIVE_TOKEN, &users, profile, |serve| {
        serve.uploads_per_user_max = UPLOADS_PER_USER_MAX;
        serve.header_read_timeout = HEADER_READ_TIMEOUT;
        serve.chunk_body_idle_timeout = BODY_IDLE_TIMEOUT;
    })
    .await
}
