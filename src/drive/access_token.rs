//! Access tokens from an OAuth 2.0 refresh token, for the drive client
//! (`upsim serve --drive-credentials FILE`): fetched from the token endpoint
//! (RFC 6749 §6, the refresh-token grant), kept until shortly before they
//! expire, dropped and fetched again once when the drive answers `401`, and
//! shared by every upload of a backend ([`AccessTokens`] behind an `Arc`).
//!
//! The credentials file is Google's `authorized_user` JSON (what
//! `gcloud auth application-default login` writes): `client_id`,
//! `client_secret`, `refresh_token`, and optionally `token_uri` (default
//! [`GOOGLE_TOKEN_URI`]); other fields are ignored.
//!
//! Invariants: one refresh at a time (callers wait on the one in flight);
//! the secret, the refresh token and access tokens never reach a log line
//! or a `Debug` output; a refusal by the token endpoint is a typed,
//! non-retryable [`DriveError::Refused`] with the endpoint's `error`.

use super::client::DriveClient;
use super::client_error::DriveError;
use super::protocol::DriveReason;
use crate::coverage::{self, Probe};
use crate::env::{Clock, Network};
use crate::wire::tls::TlsClient;
use crate::wire::FramesBody;
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Method};
use serde::Deserialize;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Google's token endpoint.
pub const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// A token is refreshed this long before it expires, or at three quarters
/// of its life if that is sooner (short-lived test tokens).
pub const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// Largest credentials file read.
const CREDENTIALS_FILE_BYTES_MAX: u64 = 64 * 1024;
/// Longest token lifetime believed (a day); a longer `expires_in` is cut.
const LIFETIME_MAX: Duration = Duration::from_secs(86_400);

/// What a backend needs to fetch access tokens.
#[derive(Clone, PartialEq, Eq, Deserialize)]
pub struct OAuthCredentials {
    /// The OAuth client id.
    pub client_id: String,
    /// The OAuth client secret.
    pub client_secret: String,
    /// The refresh token.
    pub refresh_token: String,
    /// The token endpoint, `http(s)://host[:port]/path`.
    #[serde(default = "google_token_uri")]
    pub token_uri: String,
}

fn google_token_uri() -> String {
    GOOGLE_TOKEN_URI.to_owned()
}

impl fmt::Debug for OAuthCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthCredentials")
            .field("client_id", &self.client_id)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

/// A credentials file that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    /// Unreadable, over its size limit, or not the JSON the module docs give.
    #[error("drive credentials {path}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// `token_uri` is not an `http(s)://host[:port]/path` URL.
    #[error("drive credentials: {reason}")]
    BadTokenUri {
        /// What is wrong, quoting the URI.
        reason: String,
    },
}

impl OAuthCredentials {
    /// Reads and checks a credentials file.
    pub fn load(path: &Path) -> Result<Self, CredentialsError> {
        let invalid = |reason: String| CredentialsError::Invalid {
            path: path.display().to_string(),
            reason,
        };
        let text = crate::auth::read_credentials_file(path, CREDENTIALS_FILE_BYTES_MAX)
            .map_err(invalid)?;
        let credentials: Self = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        credentials.endpoint().map_err(invalid)?;
        if credentials.client_id.is_empty() || credentials.refresh_token.is_empty() {
            return Err(invalid(
                "client_id and refresh_token must not be empty".into(),
            ));
        }
        Ok(credentials)
    }

    /// `(base URL, path)` of `token_uri`.
    fn endpoint(&self) -> Result<(String, String), String> {
        let uri = &self.token_uri;
        let rest = ["http://", "https://"]
            .iter()
            .find_map(|scheme| uri.strip_prefix(scheme).map(|rest| (scheme, rest)));
        let Some((scheme, rest)) = rest else {
            return Err(format!("token_uri {uri:?} is not an http(s) URL"));
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.is_empty() {
            return Err(format!("token_uri {uri:?} has no host"));
        }
        Ok((format!("{scheme}{authority}"), format!("/{path}")))
    }
}

/// A token in hand and when to stop using it.
struct Cached {
    token: String,
    /// Clock time from which the next caller refreshes.
    refresh_at: Duration,
}

/// The access tokens of one backend.
pub struct AccessTokens {
    credentials: OAuthCredentials,
    endpoint: DriveClient,
    token_path: String,
    clock: Arc<dyn Clock>,
    /// Held across a refresh, so there is one at a time.
    cached: tokio::sync::Mutex<Option<Cached>>,
    refreshes: AtomicU64,
}

impl fmt::Debug for AccessTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessTokens")
            .field("credentials", &self.credentials)
            .field("refreshes", &self.refreshes())
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenReply {
    access_token: String,
    expires_in: u64,
}

#[derive(Deserialize)]
struct TokenRefusal {
    error: String,
    #[serde(default)]
    error_description: String,
}

impl AccessTokens {
    /// Tokens for `credentials`, fetched over `net` and timed on `clock`;
    /// an `https://` token endpoint's certificate is checked with `tls`
    /// (the backend passes the drive's roots: Google's endpoints and the
    /// emulator's are trusted alike).
    pub fn new(
        net: Arc<dyn Network>,
        clock: Arc<dyn Clock>,
        credentials: OAuthCredentials,
        tls: Option<TlsClient>,
    ) -> Result<Self, CredentialsError> {
        let (base_url, token_path) = credentials
            .endpoint()
            .map_err(|reason| CredentialsError::BadTokenUri { reason })?;
        Ok(Self {
            endpoint: match tls {
                Some(tls) => DriveClient::new(net, &base_url, None).with_tls(tls),
                None => DriveClient::new(net, &base_url, None),
            },
            credentials,
            token_path,
            clock,
            cached: tokio::sync::Mutex::new(None),
            refreshes: AtomicU64::new(0),
        })
    }

    /// A token to send now: the one in hand, or a fresh one once it is
    /// within [`REFRESH_MARGIN`] of expiring (or was dropped).
    pub async fn token(&self) -> Result<String, DriveError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref().filter(|c| self.clock.now() < c.refresh_at) {
            return Ok(c.token.clone());
        }
        let fresh = self.refresh().await?;
        let token = fresh.token.clone();
        *cached = Some(fresh);
        Ok(token)
    }

    /// The drive refused `token` (`401`): drop it, so the next
    /// [`token`](Self::token) fetches another (unless someone already has).
    pub async fn invalidate(&self, token: &str) {
        let mut cached = self.cached.lock().await;
        if cached.as_ref().is_some_and(|c| c.token == token) {
            *cached = None;
        }
    }

    /// Tokens fetched so far.
    pub fn refreshes(&self) -> u64 {
        self.refreshes.load(Ordering::Relaxed)
    }

    async fn refresh(&self) -> Result<Cached, DriveError> {
        let c = &self.credentials;
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "refresh_token")
            .append_pair("client_id", &c.client_id)
            .append_pair("client_secret", &c.client_secret)
            .append_pair("refresh_token", &c.refresh_token)
            .finish();
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        let body = FramesBody::new([Bytes::from(form)]);
        let reply = self
            .endpoint
            .exchange_once(Method::POST, &self.token_path, headers, body, None)
            .await?;
        let status = reply.status.as_u16();
        match status {
            200 => self.accept(&reply.body),
            400 | 401 => Err(refused(status, &reply.body)),
            500..=599 => Err(DriveError::Unavailable {
                status,
                message: "token endpoint unavailable".into(),
            }),
            _ => Err(DriveError::Protocol {
                reason: format!("token endpoint answered {status}"),
            }),
        }
    }

    /// A `200` from the token endpoint, as the token to keep.
    fn accept(&self, body: &[u8]) -> Result<Cached, DriveError> {
        let reply: TokenReply = serde_json::from_slice(body).map_err(|e| DriveError::Protocol {
            reason: format!("token endpoint's reply: {e}"),
        })?;
        let lifetime = Duration::from_secs(reply.expires_in).min(LIFETIME_MAX);
        let margin = REFRESH_MARGIN.min(lifetime / 4);
        let refreshes = self.refreshes.fetch_add(1, Ordering::Relaxed) + 1;
        coverage::hit(Probe::DriveTokenRefresh);
        tracing::info!(
            lifetime_s = lifetime.as_secs(),
            refreshes,
            "drive client: access token refreshed"
        );
        Ok(Cached {
            token: reply.access_token,
            refresh_at: self.clock.now() + lifetime - margin,
        })
    }
}

/// The token endpoint refused the refresh token (RFC 6749 §5.2): never
/// retryable; the upload ends with the endpoint's `error`.
fn refused(status: u16, body: &[u8]) -> DriveError {
    let message = serde_json::from_slice::<TokenRefusal>(body).map_or_else(
        |_| "token endpoint refused the refresh token".to_owned(),
        |r| {
            format!(
                "token endpoint refused the refresh token: {}: {}",
                r.error, r.error_description
            )
        },
    );
    DriveError::Refused {
        status,
        reason: DriveReason::AuthError,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_read_googles_authorized_user_file_and_name_the_endpoint() {
        let text = r#"{"type": "authorized_user", "client_id": "cid.apps.googleusercontent.com",
            "client_secret": "s3cret", "refresh_token": "1//rt", "quota_project_id": "p"}"#;
        let c: OAuthCredentials = serde_json::from_str(text).expect("parses");
        assert_eq!(c.token_uri, GOOGLE_TOKEN_URI);
        assert_eq!(
            c.endpoint(),
            Ok(("https://oauth2.googleapis.com".into(), "/token".into()))
        );
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("1//rt"),
            "{shown}"
        );
        let local = OAuthCredentials {
            token_uri: "http://127.0.0.1:9/token".into(),
            ..c.clone()
        };
        assert_eq!(
            local.endpoint(),
            Ok(("http://127.0.0.1:9".into(), "/token".into()))
        );
        let bad = OAuthCredentials {
            token_uri: "ftp://x/token".into(),
            ..c
        };
        assert!(bad.endpoint().is_err());
    }

    #[test]
    fn a_refusal_is_typed_and_not_retryable() {
        let e = refused(
            400,
            br#"{"error":"invalid_grant","error_description":"revoked"}"#,
        );
        assert!(!e.is_retryable());
        assert_eq!(
            e.to_string(),
            "drive refused the upload: status 400 authError: token endpoint refused the refresh token: invalid_grant: revoked"
        );
    }
}
