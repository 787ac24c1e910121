//! Raw HTTP/1.1 on loopback, so that tests can send what no well-behaved
//! client would: requests built byte by byte, one exchange per connection,
//! replies read with a bound on time and size; and the credentials the
//! servers take.

use super::TestResult;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use upsim::chunk_api::USER_HEADER;

/// A request header: name and value.
pub type Header = (&'static str, String);

/// Largest reply a raw exchange reads.
const RAW_REPLY_BYTES_MAX: usize = 1 << 20;

/// How long [`send`] waits for a reply.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(15);

/// A bearer credential.
pub fn bearer(token: &str) -> Header {
    ("authorization", format!("Bearer {token}"))
}

/// The user header, for a backend without tokens (no credential check).
pub fn user(name: &str) -> Header {
    (USER_HEADER, name.to_owned())
}

/// A reply read by [`raw_exchange`].
#[derive(Debug, Clone)]
pub struct RawReply {
    pub status: u16,
    /// The status line's reason phrase.
    pub reason: String,
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

    /// A drive error body's code and message; an error if it is not one.
    pub fn drive_error(&self) -> TestResult<(u64, String)> {
        let value: serde_json::Value = serde_json::from_slice(&self.body)?;
        let code = value["error"]["code"].as_u64().ok_or("no error.code")?;
        let message = value["error"]["message"]
            .as_str()
            .ok_or("no error.message")?
            .to_owned();
        Ok((code, message))
    }
}

/// Writes `request` (raw bytes) to `addr` and reads one reply, keeping the
/// connection open meanwhile (a body shorter than its `Content-Length`
/// stays short). Bounded by `timeout`.
pub async fn raw_exchange(addr: &str, request: &[u8], timeout: Duration) -> TestResult<RawReply> {
    tokio::time::timeout(timeout, async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        // A reply to HEAD has no body, whatever its Content-Length says.
        let to_head = request.starts_with(b"HEAD ");
        if let Err(e) = stream.write_all(request).await {
            // A server may refuse before reading the whole body and close
            // (an early 413, say): its reply is there to read all the same.
            use std::io::ErrorKind::{BrokenPipe, ConnectionReset};
            if !matches!(e.kind(), BrokenPipe | ConnectionReset) {
                return Err(e.into());
            }
            return read_reply_after(&mut stream, to_head)
                .await
                .map_err(|r| format!("writing failed ({e}), and then: {r}").into());
        }
        read_reply_after(&mut stream, to_head).await
    })
    .await
    .map_err(|_| format!("no reply from {addr} within {} ms", timeout.as_millis()))?
}

/// [`request`] then [`raw_exchange`], bounded by [`REPLY_TIMEOUT`].
pub async fn send(
    addr: &str,
    method: &str,
    target: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> TestResult<RawReply> {
    let bytes = request(method, addr, target, headers, body);
    raw_exchange(addr, &bytes, REPLY_TIMEOUT).await
}

/// `GET path` with `headers`, bounded by 10 s (polls retry sooner than
/// [`REPLY_TIMEOUT`]).
pub async fn get(addr: &str, path: &str, headers: &[(&str, String)]) -> TestResult<RawReply> {
    let bytes = request("GET", addr, path, headers, b"");
    raw_exchange(addr, &bytes, Duration::from_secs(10)).await
}

/// Reads one HTTP/1.1 reply (headers, then a `Content-Length` body).
pub async fn read_reply(stream: &mut tokio::net::TcpStream) -> TestResult<RawReply> {
    read_reply_after(stream, false).await
}

/// Reads one HTTP/1.1 reply; its body too unless it answers a HEAD.
async fn read_reply_after(
    stream: &mut tokio::net::TcpStream,
    to_head: bool,
) -> TestResult<RawReply> {
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
    let mut status_parts = status_line.splitn(3, ' ').skip(1);
    let status: u16 = status_parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let reason = status_parts.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length") && !to_head)
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
        reason,
        headers,
        body,
    })
}

/// `request` with its `content-length: 0` line taken out: a request with
/// neither `Content-Length` nor `Transfer-Encoding`, as curl sends a
/// bodyless `PUT` (its body is empty, RFC 9112 §6.3).
///
/// # Panics
/// If `request` has no such line.
pub fn unframed(request: Vec<u8>) -> Vec<u8> {
    let line = b"content-length: 0\r\n";
    let at = request
        .windows(line.len())
        .position(|w| w == line)
        .expect("a request with an empty body and its content-length line");
    [&request[..at], &request[at + line.len()..]].concat()
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
