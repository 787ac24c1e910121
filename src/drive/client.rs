//! A typed client for the Drive resumable protocol: what the upload backend
//! speaks to the drive.
//!
//! One HTTP/1.1 connection per [`DriveClient`], opened on first use through
//! the [`Network`] trait and opened again after any connection error.
//! Requests on one client are serialised (HTTP/1.1 carries one at a time).
//! A session URI's path and query are sent on that connection: Drive's
//! session URIs point at the host the session was initiated on.
//!
//! The client never retries: every answer becomes a [`PieceReply`] or a typed
//! [`DriveError`], and [`DriveError::is_retryable`] tells the caller's retry
//! policy which is which.
//!
//! Invariants: a piece's bytes are sent as the caller's `Bytes`, one frame
//! each, never copied; every request carries an exact `Content-Length`
//! (bodies are framed by length, never by EOF); a reply's `Range` is checked
//! against the total before it is believed.

use super::protocol::{
    format_content_range, parse_error_body, parse_file_resource, parse_range, parse_upload_query,
    ContentRange, FileResource, QUOTE_CHARS_MAX, RATE_LIMIT_REASON, UPLOAD_PATH,
    UPLOAD_TYPE_RESUMABLE,
};
use crate::env::Network;
use crate::wire::FramesBody;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONNECTION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, HOST};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// Largest reply body read: a file resource or an error is well under a
/// kilobyte; a reply beyond this is a protocol error, not something to buffer.
pub const REPLY_BYTES_MAX: usize = 64 * 1024;

/// Why a drive request did not give an answer the protocol allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriveError {
    /// A 5xx: the drive is unavailable for now. Retry with backoff.
    #[error("drive unavailable: status {status}: {message}")]
    Unavailable {
        /// The status.
        status: u16,
        /// The error body's message.
        message: String,
    },
    /// A 429, or a 403 whose message names `rateLimitExceeded`: too many
    /// requests. Retry with backoff.
    #[error("drive rate limited: status {status}: {message}")]
    RateLimited {
        /// The status (429).
        status: u16,
        /// The error body's message.
        message: String,
    },
    /// A 404: the session is gone (expired or unknown). Start a new one.
    #[error("drive session gone: status 404: {message}")]
    SessionGone {
        /// The error body's message.
        message: String,
    },
    /// Any other 4xx: the request was refused. Restart the upload.
    #[error("drive refused the request: status {status}: {message}")]
    Rejected {
        /// The status.
        status: u16,
        /// The error body's message.
        message: String,
    },
    /// An answer the protocol does not allow (a 308 with a bad `Range`, a
    /// 200 without a file resource, an unexpected status).
    #[error("drive protocol violation: {reason}")]
    Protocol {
        /// What was wrong.
        reason: String,
    },
    /// The connection could not be opened.
    #[error("cannot connect to the drive at {addr}: {reason}")]
    Connect {
        /// The address dialled.
        addr: String,
        /// The OS or hyper error.
        reason: String,
    },
    /// The connection broke during the exchange; the server may or may not
    /// have acted on the request (ask with a status query).
    #[error("drive connection failed: {reason}")]
    Io {
        /// The hyper error.
        reason: String,
    },
    /// The caller asked for something the protocol cannot express.
    #[error("invalid drive request: {reason}")]
    InvalidRequest {
        /// What was wrong, with its numbers.
        reason: String,
    },
}

impl DriveError {
    /// Whether the same request may succeed later: 5xx, 429 and connection
    /// failures. A classification for the caller's retry policy; the client
    /// itself never retries.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Unavailable { .. }
                | Self::RateLimited { .. }
                | Self::Connect { .. }
                | Self::Io { .. }
        )
    }
}

/// A session's URI, as the drive's `Location` gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SessionUri {
    uri: String,
    path_and_query: String,
    upload_id: String,
}

impl SessionUri {
    /// Parses an absolute session URI: `http(s)://host/upload/drive/v3/files?…&upload_id=…`.
    pub fn parse(text: &str) -> Result<Self, DriveError> {
        let bad = |why: &str| DriveError::Protocol {
            reason: format!(
                "session URI {:?} {why}",
                text.chars().take(QUOTE_CHARS_MAX).collect::<String>()
            ),
        };
        let uri: http::Uri = text.parse().map_err(|_| bad("does not parse"))?;
        if uri.scheme().is_none() || uri.authority().is_none() {
            return Err(bad("is not absolute"));
        }
        if uri.path() != UPLOAD_PATH {
            return Err(bad("has the wrong path"));
        }
        let query =
            parse_upload_query(uri.query().unwrap_or_default()).map_err(|e| bad(&e.to_string()))?;
        let upload_id = query
            .upload_id
            .filter(|id| !id.is_empty())
            .ok_or_else(|| bad("has no upload_id"))?;
        let path_and_query = uri
            .path_and_query()
            .map(|pq| pq.as_str().to_owned())
            .ok_or_else(|| bad("has no path"))?;
        Ok(Self {
            uri: text.to_owned(),
            path_and_query,
            upload_id,
        })
    }

    /// The URI as given.
    pub fn as_str(&self) -> &str {
        &self.uri
    }

    /// The session's `upload_id`.
    pub fn upload_id(&self) -> &str {
        &self.upload_id
    }

    /// The path and query, what a request line carries.
    pub fn path_and_query(&self) -> &str {
        &self.path_and_query
    }
}

impl fmt::Display for SessionUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

impl TryFrom<String> for SessionUri {
    type Error = DriveError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<SessionUri> for String {
    fn from(value: SessionUri) -> Self {
        value.uri
    }
}

/// What a piece PUT or a status query answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PieceReply {
    /// `308`: the drive holds the first `held_bytes` bytes (0 when the reply
    /// had no `Range`). Continue from there.
    Incomplete {
        /// Bytes held, from `Range: bytes=0-N` (`N + 1`).
        held_bytes: u64,
    },
    /// `200`/`201`: the file is complete.
    Complete(FileResource),
}

/// A reply, read whole (bounded by [`REPLY_BYTES_MAX`]).
struct RawReply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

/// Where the client's access token comes from.
#[derive(Clone)]
enum TokenSource {
    /// No `Authorization` header.
    None,
    /// A fixed token.
    Fixed(String),
    /// A file read before every request, so that whoever refreshes the
    /// token (OAuth access tokens live an hour) can replace it while
    /// uploads run. Surrounding whitespace is ignored.
    File(PathBuf),
}

/// Largest token file read: an OAuth access token is a few hundred bytes.
const TOKEN_FILE_BYTES_MAX: u64 = 64 * 1024;

impl TokenSource {
    fn token(&self) -> Result<Option<String>, DriveError> {
        match self {
            Self::None => Ok(None),
            Self::Fixed(token) => Ok(Some(token.clone())),
            Self::File(path) => {
                let unreadable = |reason: String| DriveError::InvalidRequest {
                    reason: format!("drive token file {}: {reason}", path.display()),
                };
                let len_bytes = std::fs::metadata(path)
                    .map_err(|e| unreadable(e.to_string()))?
                    .len();
                if len_bytes > TOKEN_FILE_BYTES_MAX {
                    return Err(unreadable(format!(
                        "{len_bytes} bytes is over the {TOKEN_FILE_BYTES_MAX}-byte limit"
                    )));
                }
                let text = std::fs::read_to_string(path).map_err(|e| unreadable(e.to_string()))?;
                let token = text.trim();
                if token.is_empty() {
                    return Err(unreadable("it is empty".to_owned()));
                }
                Ok(Some(token.to_owned()))
            }
        }
    }
}

/// The typed drive client.
pub struct DriveClient {
    net: Arc<dyn Network>,
    /// `host:port` to dial.
    addr: String,
    /// Where the `Authorization` token comes from.
    access_token: TokenSource,
    /// The connection, when open. Locked for a whole exchange.
    conn: tokio::sync::Mutex<Option<SendRequest<FramesBody>>>,
}

impl fmt::Debug for DriveClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DriveClient")
            .field("addr", &self.addr)
            .field(
                "access_token",
                &match &self.access_token {
                    TokenSource::None => "none",
                    TokenSource::Fixed(_) => "fixed",
                    TokenSource::File(_) => "file",
                },
            )
            .finish_non_exhaustive()
    }
}

/// Holds the connection slot for one exchange; if the exchange is dropped
/// midway (the caller's timeout), the connection is dropped with it, because
/// its state (half a body sent, a reply unread) is unknown.
struct Exchange<'a> {
    slot: tokio::sync::MutexGuard<'a, Option<SendRequest<FramesBody>>>,
    done: bool,
}

impl Drop for Exchange<'_> {
    fn drop(&mut self) {
        if !self.done {
            *self.slot = None;
        }
    }
}

impl DriveClient {
    /// A client for the drive at `base_url` (`http://host:port`; the port
    /// defaults to 80; plain HTTP only: any other scheme fails every request
    /// with [`DriveError::Connect`]). Sends `Authorization: Bearer {access_token}` when a
    /// token is given. Connects on first use.
    pub fn new(net: Arc<dyn Network>, base_url: &str, access_token: Option<String>) -> Self {
        let source = access_token.map_or(TokenSource::None, TokenSource::Fixed);
        Self::with_source(net, base_url, source)
    }

    /// A client like [`new`](Self::new) whose token is read from
    /// `token_file` before every request (so it can be rotated while
    /// uploads run). A missing or empty file fails the request with
    /// [`DriveError::InvalidRequest`].
    pub fn with_token_file(net: Arc<dyn Network>, base_url: &str, token_file: PathBuf) -> Self {
        Self::with_source(net, base_url, TokenSource::File(token_file))
    }

    fn with_source(net: Arc<dyn Network>, base_url: &str, access_token: TokenSource) -> Self {
        let authority = base_url
            .strip_prefix("http://")
            .unwrap_or(base_url)
            .trim_end_matches('/');
        let addr = if authority.contains(':') {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        Self {
            net,
            addr,
            access_token,
            conn: tokio::sync::Mutex::new(None),
        }
    }

    /// Opens a resumable session for a file of `total_bytes`.
    ///
    /// # Cancel safety
    /// Dropping the future drops the connection; a session may or may not
    /// have been created (an orphan expires on the drive).
    pub async fn initiate(
        &self,
        name: &str,
        mime_type: &str,
        total_bytes: u64,
    ) -> Result<SessionUri, DriveError> {
        let metadata = serde_json::json!({ "name": name, "mimeType": mime_type }).to_string();
        let path = format!("{UPLOAD_PATH}?uploadType={UPLOAD_TYPE_RESUMABLE}");
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=UTF-8"),
        );
        headers.insert("x-upload-content-length", HeaderValue::from(total_bytes));
        headers.insert(
            "x-upload-content-type",
            HeaderValue::from_str(mime_type).map_err(|_| DriveError::InvalidRequest {
                reason: format!("MIME type {mime_type:?} is not a header value"),
            })?,
        );
        let reply = self
            .exchange(
                Method::POST,
                &path,
                headers,
                FramesBody::new([Bytes::from(metadata)]),
            )
            .await?;
        if reply.status != StatusCode::OK {
            return Err(error_for(&reply));
        }
        let location = reply
            .headers
            .get(http::header::LOCATION)
            .ok_or_else(|| DriveError::Protocol {
                reason: "initiation answered 200 without Location".to_owned(),
            })?
            .to_str()
            .map_err(|_| DriveError::Protocol {
                reason: "Location is not visible ASCII".to_owned(),
            })?;
        let session = SessionUri::parse(location)?;
        tracing::info!(
            upload_id = session.upload_id(),
            total_bytes,
            "drive client: session initiated"
        );
        Ok(session)
    }

    /// Sends the bytes `data` (concatenated) as the piece starting at
    /// `first_byte` of a file of `total_bytes`.
    ///
    /// # Cancel safety
    /// Dropping the future drops the connection; the drive may hold part of
    /// the piece. Ask with [`status`](Self::status).
    pub async fn put_piece(
        &self,
        session: &SessionUri,
        first_byte: u64,
        data: Vec<Bytes>,
        total_bytes: u64,
    ) -> Result<PieceReply, DriveError> {
        let body = FramesBody::new(data);
        let len_bytes = body.len_bytes();
        let last_byte = len_bytes
            .checked_sub(1)
            .and_then(|span| first_byte.checked_add(span))
            .filter(|last| *last < total_bytes)
            .ok_or_else(|| DriveError::InvalidRequest {
                reason: format!(
                    "piece of {len_bytes} bytes at byte {first_byte} does not fit a file of {total_bytes} bytes"
                ),
            })?;
        let range = ContentRange::Piece {
            first_byte,
            last_byte,
            total_bytes: Some(total_bytes),
        };
        tracing::debug!(
            upload_id = session.upload_id(),
            first_byte,
            len_bytes,
            total_bytes,
            "drive client: piece"
        );
        self.put(session, range, body, total_bytes).await
    }

    /// Asks how many bytes the drive holds (`bytes */total_bytes`).
    ///
    /// # Cancel safety
    /// Cancel safe: a status query changes nothing on the drive.
    pub async fn status(
        &self,
        session: &SessionUri,
        total_bytes: u64,
    ) -> Result<PieceReply, DriveError> {
        let range = ContentRange::Status {
            total_bytes: Some(total_bytes),
        };
        tracing::debug!(
            upload_id = session.upload_id(),
            total_bytes,
            "drive client: status"
        );
        self.put(session, range, FramesBody::new([]), total_bytes)
            .await
    }

    async fn put(
        &self,
        session: &SessionUri,
        range: ContentRange,
        body: FramesBody,
        total_bytes: u64,
    ) -> Result<PieceReply, DriveError> {
        let mut headers = HeaderMap::new();
        let range_value = HeaderValue::from_str(&format_content_range(&range)).map_err(|_| {
            DriveError::InvalidRequest {
                reason: "Content-Range is not a header value".to_owned(),
            }
        })?;
        headers.insert(CONTENT_RANGE, range_value);
        let reply = self
            .exchange(Method::PUT, session.path_and_query(), headers, body)
            .await?;
        let piece_reply = match reply.status.as_u16() {
            200 | 201 => PieceReply::Complete(parse_file_resource(&reply.body).map_err(|e| {
                DriveError::Protocol {
                    reason: e.to_string(),
                }
            })?),
            308 => {
                let held_bytes = match reply.headers.get(http::header::RANGE) {
                    None => 0,
                    Some(value) => value
                        .to_str()
                        .map_err(|e| e.to_string())
                        .and_then(|text| parse_range(text).map_err(|e| e.to_string()))
                        .map_err(|reason| DriveError::Protocol { reason })?,
                };
                if held_bytes > total_bytes {
                    return Err(DriveError::Protocol {
                        reason: format!(
                            "308 says {held_bytes} bytes are held of a {total_bytes}-byte file"
                        ),
                    });
                }
                PieceReply::Incomplete { held_bytes }
            }
            _ => return Err(error_for(&reply)),
        };
        tracing::debug!(
            upload_id = session.upload_id(),
            status = reply.status.as_u16(),
            reply = ?piece_reply,
            "drive client: answered"
        );
        Ok(piece_reply)
    }

    /// One request and its whole reply, on the kept connection (opened or
    /// reopened as needed).
    async fn exchange(
        &self,
        method: Method,
        path_and_query: &str,
        mut headers: HeaderMap,
        body: FramesBody,
    ) -> Result<RawReply, DriveError> {
        let invalid = |what: &str| DriveError::InvalidRequest {
            reason: format!("{what} is not a header value"),
        };
        headers.insert(
            HOST,
            HeaderValue::from_str(&self.addr).map_err(|_| invalid("drive address"))?,
        );
        headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len_bytes()));
        if let Some(token) = self.access_token.token()? {
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| invalid("access token"))?;
            headers.insert(AUTHORIZATION, value);
        }
        let mut request = Request::new(body);
        *request.method_mut() = method;
        *request.uri_mut() = path_and_query
            .parse()
            .map_err(|_| DriveError::InvalidRequest {
                reason: format!("{path_and_query:?} is not a request target"),
            })?;
        *request.headers_mut() = headers;

        let mut exchange = Exchange {
            slot: self.conn.lock().await,
            done: false,
        };
        // A kept connection that closed while idle is replaced before
        // anything is sent: that is reconnecting, not retrying a request.
        let reusable = match exchange.slot.as_mut() {
            Some(sender) => sender.ready().await.is_ok(),
            None => false,
        };
        if !reusable {
            *exchange.slot = None;
            let mut sender = self.connect().await?;
            sender.ready().await.map_err(|e| DriveError::Connect {
                addr: self.addr.clone(),
                reason: e.to_string(),
            })?;
            *exchange.slot = Some(sender);
        }
        let Some(sender) = exchange.slot.as_mut() else {
            return Err(DriveError::Connect {
                addr: self.addr.clone(),
                reason: "no connection after connecting".to_owned(),
            });
        };
        // From here any failure leaves the connection in an unknown state:
        // `exchange` drops it unless `done` is set.
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| DriveError::Io {
                reason: e.to_string(),
            })?;
        let (parts, mut incoming) = response.into_parts();
        let mut body = Vec::new();
        while let Some(frame) = incoming.frame().await {
            let frame = frame.map_err(|e| DriveError::Io {
                reason: format!("reading the {} reply: {e}", parts.status),
            })?;
            if let Ok(data) = frame.into_data() {
                if body.len().saturating_add(data.len()) > REPLY_BYTES_MAX {
                    return Err(DriveError::Protocol {
                        reason: format!(
                            "{} reply body exceeds {REPLY_BYTES_MAX} bytes",
                            parts.status
                        ),
                    });
                }
                body.extend_from_slice(&data);
            }
        }
        let closing = parts
            .headers
            .get(CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        exchange.done = !closing;
        Ok(RawReply {
            status: parts.status,
            headers: parts.headers,
            body: Bytes::from(body),
        })
    }

    /// Checks that the drive accepts a TCP connection (opened and closed at
    /// once; the kept connection is not touched). For health checks.
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is sent.
    pub async fn probe(&self) -> Result<(), DriveError> {
        self.net
            .connect(&self.addr)
            .await
            .map(drop)
            .map_err(|e| DriveError::Connect {
                addr: self.addr.clone(),
                reason: e.to_string(),
            })
    }

    async fn connect(&self) -> Result<SendRequest<FramesBody>, DriveError> {
        let connect_error = |reason: String| DriveError::Connect {
            addr: self.addr.clone(),
            reason,
        };
        let stream = self
            .net
            .connect(&self.addr)
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        let addr = self.addr.clone();
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%addr, %error, "drive client: connection ended with an error");
            }
        });
        tracing::debug!(addr = %self.addr, "drive client: connected");
        Ok(sender)
    }
}

/// The typed error for a reply that is neither 200/201 nor 308.
fn error_for(reply: &RawReply) -> DriveError {
    let status = reply.status.as_u16();
    let message = parse_error_body(&reply.body).map_or_else(
        || {
            String::from_utf8_lossy(&reply.body)
                .chars()
                .take(QUOTE_CHARS_MAX)
                .collect()
        },
        |(_, message)| message,
    );
    match status {
        404 => DriveError::SessionGone { message },
        429 => DriveError::RateLimited { status, message },
        403 if message.contains(RATE_LIMIT_REASON) => DriveError::RateLimited { status, message },
        500..=599 => DriveError::Unavailable { status, message },
        400..=499 => DriveError::Rejected { status, message },
        _ => DriveError::Protocol {
            reason: format!("unexpected status {status}: {message}"),
        },
    }
}
