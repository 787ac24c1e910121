//! A typed client for the Drive resumable protocol: what the upload backend
//! speaks to the drive.
//!
//! One HTTP/1.1 connection per [`DriveClient`], opened on first use through
//! the [`Network`] trait (TLS over it for an `https://` drive, through
//! [`crate::wire::tls::dial`]) and opened again after any connection error.
//! Requests on one client are serialised (HTTP/1.1 carries one at a time).
//! A session URI's path and query are sent on that connection: Drive's
//! session URIs point at the host the session was initiated on.
//!
//! The client never retries: every answer becomes a [`PieceReply`] or a typed
//! [`DriveError`], and [`DriveError::is_retryable`] tells the caller's retry
//! policy which is which.
//!
//! The initiation asks for the file resource's fields the caller needs
//! (`fields=kind,id,name,mimeType,size` and the digest it checks, see
//! [`DriveClient::with_file_digest`]); the session keeps that selection
//! for the final reply (Drive carries the initiation's query into the
//! session URI; the emulator keeps it with the session).
//!
//! Invariants: a piece's bytes are sent as the caller's `Bytes`, one frame
//! each, never copied; every request carries an exact `Content-Length`
//! (bodies are framed by length, never by EOF); a reply's `Range` is checked
//! against the total before it is believed.
//!
//! Files: this one holds the client and its requests; [`super::exchange`]
//! the kept connection; [`super::session_uri`] the session URI;
//! [`super::client_error`] the errors.

use super::access_token::AccessTokens;
use super::client_error::{error_for, DriveError};
use super::protocol::{
    format_content_range, parse_file_resource, parse_range, ContentRange, FieldSelection,
    FileResource, UPLOAD_PATH, UPLOAD_TYPE_RESUMABLE,
};
use super::session_uri::SessionUri;
use crate::checksum::FileDigestKind;
use crate::env::Network;
use crate::wire::tls::TlsClient;
use crate::wire::FramesBody;
use bytes::Bytes;
use http::header::{CONTENT_RANGE, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use hyper::client::conn::http1::SendRequest;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

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

/// Where the client's access token comes from.
#[derive(Clone)]
pub(super) enum TokenSource {
    /// No `Authorization` header.
    None,
    /// A fixed token.
    Fixed(String),
    /// A file read before every request, so that whoever refreshes the
    /// token (OAuth access tokens live an hour) can replace it while
    /// uploads run. Surrounding whitespace is ignored.
    File(PathBuf),
    /// Access tokens from an OAuth refresh token, shared by every client of
    /// a backend; refreshed before expiry and once on a `401`.
    OAuth(Arc<AccessTokens>),
}

/// Largest token file read: an OAuth access token is a few hundred bytes.
const TOKEN_FILE_BYTES_MAX: u64 = 64 * 1024;

impl TokenSource {
    /// The token to send now, if any (read afresh from a file source,
    /// refreshed when due from an OAuth one).
    pub(super) async fn token(&self) -> Result<Option<String>, DriveError> {
        match self {
            Self::None => Ok(None),
            Self::OAuth(tokens) => tokens.token().await.map(Some),
            Self::Fixed(token) => Ok(Some(token.clone())),
            Self::File(path) => {
                let unreadable = |reason: String| DriveError::InvalidRequest {
                    reason: format!("drive token file {}: {reason}", path.display()),
                };
                let text = crate::auth::read_credentials_file(path, TOKEN_FILE_BYTES_MAX)
                    .map_err(unreadable)?;
                let token = text.trim();
                if token.is_empty() {
                    return Err(unreadable("it is empty".to_owned()));
                }
                Ok(Some(token.to_owned()))
            }
        }
    }
}

/// How the client speaks to the drive: the base URL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scheme {
    /// `http://`: plain TCP.
    Http,
    /// `https://`: TLS, with the client given to [`DriveClient::with_tls`].
    Https,
}

/// The typed drive client.
pub struct DriveClient {
    pub(super) net: Arc<dyn Network>,
    /// `host:port` to dial.
    pub(super) addr: String,
    /// Plain or TLS, from the base URL.
    pub(super) scheme: Scheme,
    /// The roots an `https://` drive's certificate is checked against.
    pub(super) tls: Option<TlsClient>,
    /// Where the `Authorization` token comes from.
    pub(super) access_token: TokenSource,
    /// The whole-file digest asked for with the file resource.
    file_digest: FileDigestKind,
    /// The connection, when open. Locked for a whole exchange.
    pub(super) conn: tokio::sync::Mutex<Option<SendRequest<FramesBody>>>,
}

impl fmt::Debug for DriveClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DriveClient")
            .field("addr", &self.addr)
            .field("scheme", &self.scheme)
            .field("tls", &self.tls)
            .field("file_digest", &self.file_digest)
            .field(
                "access_token",
                &match &self.access_token {
                    TokenSource::None => "none",
                    TokenSource::Fixed(_) => "fixed",
                    TokenSource::File(_) => "file",
                    TokenSource::OAuth(_) => "oauth",
                },
            )
            .finish_non_exhaustive()
    }
}

impl DriveClient {
    /// A client for the drive at `base_url` (`http://host[:port]`, port 80
    /// by default, or `https://host[:port]`, port 443 by default, which
    /// also needs [`with_tls`](Self::with_tls): without it every request
    /// fails with [`DriveError::Tls`]). Sends `Authorization: Bearer
    /// {access_token}` when a token is given. Connects on first use.
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

    /// A client like [`new`](Self::new) whose tokens come from `tokens`
    /// (OAuth; shared by every client of a backend).
    pub fn with_access_tokens(
        net: Arc<dyn Network>,
        base_url: &str,
        tokens: Arc<AccessTokens>,
    ) -> Self {
        Self::with_source(net, base_url, TokenSource::OAuth(tokens))
    }

    fn with_source(net: Arc<dyn Network>, base_url: &str, access_token: TokenSource) -> Self {
        let (scheme, authority, default_port) = match base_url.strip_prefix("https://") {
            Some(rest) => (Scheme::Https, rest, 443),
            None => (
                Scheme::Http,
                base_url.strip_prefix("http://").unwrap_or(base_url),
                80,
            ),
        };
        let authority = authority.trim_end_matches('/');
        let addr = if authority.contains(':') {
            authority.to_owned()
        } else {
            format!("{authority}:{default_port}")
        };
        Self {
            net,
            addr,
            scheme,
            tls: None,
            access_token,
            file_digest: FileDigestKind::default(),
            conn: tokio::sync::Mutex::new(None),
        }
    }

    /// The same client, checking an `https://` drive's certificate with
    /// `tls` (unused for an `http://` drive).
    pub fn with_tls(mut self, tls: TlsClient) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The same client, asking the drive for digest `kind` with the file
    /// resource (`md5Checksum` for real Drive). Default
    /// [`FileDigestKind::Crc64Nvme`], the emulator's.
    #[must_use]
    pub fn with_file_digest(mut self, kind: FileDigestKind) -> Self {
        self.file_digest = kind;
        self
    }

    /// The digest this client asks the drive for.
    pub fn file_digest(&self) -> FileDigestKind {
        self.file_digest
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
        let fields = FieldSelection::for_digest(self.file_digest);
        let path = format!("{UPLOAD_PATH}?uploadType={UPLOAD_TYPE_RESUMABLE}&fields={fields}");
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
            return Err(error_for(reply.status.as_u16(), &reply.body));
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
        // Paired with the drive's check of what it plans to take
        // (`put::plan_request`): the range sent spans exactly the body, and
        // ends inside the file.
        assert_eq!(
            range.len_bytes(),
            len_bytes,
            "a piece's Content-Range spans exactly its body"
        );
        assert!(last_byte < total_bytes, "a piece ends inside its file");
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
            _ => return Err(error_for(reply.status.as_u16(), &reply.body)),
        };
        tracing::debug!(
            upload_id = session.upload_id(),
            status = reply.status.as_u16(),
            reply = ?piece_reply,
            "drive client: answered"
        );
        Ok(piece_reply)
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
}
