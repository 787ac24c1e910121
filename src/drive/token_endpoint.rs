//! The emulator's OAuth 2.0 token endpoint, as Google's
//! `https://oauth2.googleapis.com/token`: the refresh-token grant (RFC 6749
//! §6) gives a known client an access token that expires
//! ([`OAuthClients::access_token_lifetime`]); uploads then carry it as a
//! bearer token until it does, and an expired one is answered `401
//! authError`, as Drive does.
//!
//! Configured by a JSON file (`upsim drive --oauth-clients FILE`):
//!
//! ```json
//! { "access_token_lifetime_s": 3600,
//!   "clients": [ { "client_id": "…", "client_secret": "…",
//!                  "refresh_token": "…", "user": "alice" } ] }
//! ```
//!
//! Invariants: the request body is read up to [`TOKEN_REQUEST_BYTES_MAX`];
//! secrets and tokens never reach a log line or a `Debug` output; issued
//! tokens are bounded ([`super::issued_tokens::ACCESS_TOKENS_MAX`]); a
//! refusal is RFC 6749 §5.2's JSON (`error`, `error_description`).

use super::body::read_small_body;
use super::server::Inner;
use crate::user::UserId;
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde::Deserialize;
use std::fmt;
use std::path::Path;
use std::time::Duration;

/// The token endpoint's path.
pub const TOKEN_PATH: &str = "/token";
/// Largest token request body read (a refresh grant is a few hundred bytes).
pub const TOKEN_REQUEST_BYTES_MAX: u64 = 8 * 1024;
/// Largest client file read.
const CLIENTS_FILE_BYTES_MAX: u64 = 1024 * 1024;
/// Most clients in a file.
const CLIENTS_MAX: usize = 1024;

/// One OAuth client the emulator knows, and the user its refresh token
/// stands for.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthClient {
    /// The client id.
    pub client_id: String,
    /// The client secret.
    pub client_secret: String,
    /// The refresh token it holds.
    pub refresh_token: String,
    /// The user the tokens stand for.
    pub user: UserId,
}

impl fmt::Debug for OAuthClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthClient")
            .field("client_id", &self.client_id)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// The clients the token endpoint serves and how long its tokens live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthClients {
    /// The clients; at least one, at most 1024.
    pub clients: Vec<OAuthClient>,
    /// How long an access token is accepted. At least 1 s.
    pub access_token_lifetime: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientsFile {
    access_token_lifetime_s: u64,
    clients: Vec<OAuthClient>,
}

/// A client file that could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OAuthClientsError {
    /// Unreadable, or over the size limit.
    #[error("cannot read OAuth client file {path}: {reason}")]
    Unreadable {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// Not the JSON shape the module docs give, or out of bounds.
    #[error("OAuth client file {path}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong, with its numbers.
        reason: String,
    },
}

impl OAuthClients {
    /// Reads and checks a client file.
    pub fn load(path: &Path) -> Result<Self, OAuthClientsError> {
        let shown = path.display().to_string();
        let text =
            crate::auth::read_credentials_file(path, CLIENTS_FILE_BYTES_MAX).map_err(|reason| {
                OAuthClientsError::Unreadable {
                    path: shown.clone(),
                    reason,
                }
            })?;
        Self::parse(&text).map_err(|reason| OAuthClientsError::Invalid {
            path: shown,
            reason,
        })
    }

    /// Parses and checks a client file's text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: ClientsFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let clients = Self {
            clients: file.clients,
            access_token_lifetime: Duration::from_secs(file.access_token_lifetime_s),
        };
        clients.validate()?;
        Ok(clients)
    }

    /// Checks the bounds the type's fields state.
    pub fn validate(&self) -> Result<(), String> {
        let count = self.clients.len();
        if count == 0 || count > CLIENTS_MAX {
            return Err(format!(
                "{count} clients; between 1 and {CLIENTS_MAX} are needed"
            ));
        }
        if self.access_token_lifetime < Duration::from_secs(1) {
            return Err("access_token_lifetime_s must be at least 1".to_owned());
        }
        let empty = self.clients.iter().position(|c| {
            c.client_id.is_empty() || c.client_secret.is_empty() || c.refresh_token.is_empty()
        });
        match empty {
            Some(i) => Err(format!(
                "client {i} has an empty id, secret or refresh token"
            )),
            None => Ok(()),
        }
    }

    /// The client whose id, secret and refresh token are these.
    fn find(&self, grant: &Grant) -> Option<&OAuthClient> {
        self.clients.iter().find(|c| {
            c.client_id == grant.client_id
                && c.client_secret == grant.client_secret
                && c.refresh_token == grant.refresh_token
        })
    }
}

/// A refresh-token grant's fields (`application/x-www-form-urlencoded`).
#[derive(Default)]
struct Grant {
    grant_type: String,
    client_id: String,
    client_secret: String,
    refresh_token: String,
}

fn parse_grant(body: &[u8]) -> Grant {
    let mut grant = Grant::default();
    for (name, value) in form_urlencoded::parse(body) {
        let field = match name.as_ref() {
            "grant_type" => &mut grant.grant_type,
            "client_id" => &mut grant.client_id,
            "client_secret" => &mut grant.client_secret,
            "refresh_token" => &mut grant.refresh_token,
            _ => continue,
        };
        *field = value.into_owned();
    }
    grant
}

/// RFC 6749 §5.2's error reply.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "error": error, "error_description": description });
    json_reply(status, body.to_string())
}

fn json_reply(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut reply = Response::new(Full::new(Bytes::from(body)));
    *reply.status_mut() = status;
    let headers = reply.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    reply
}

impl Inner {
    /// `POST /token`: a refresh-token grant.
    pub(super) async fn token(&self, body: Incoming) -> Response<Full<Bytes>> {
        let Some(clients) = &self.config.oauth_clients else {
            return oauth_error(
                StatusCode::NOT_FOUND,
                "invalid_request",
                "this drive issues no tokens",
            );
        };
        let idle = self.config.piece_idle_timeout;
        let bytes = match read_small_body(
            body,
            &*self.clock,
            idle,
            TOKEN_REQUEST_BYTES_MAX,
            "token request",
        )
        .await
        {
            Ok(bytes) => bytes,
            Err(refusal) => return refusal.into_reply(),
        };
        let grant = parse_grant(&bytes);
        if grant.grant_type != "refresh_token" {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only grant_type=refresh_token is supported",
            );
        }
        let Some(client) = clients.find(&grant) else {
            tracing::info!(client_id = %grant.client_id, "drive: token refused");
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "unknown client, wrong secret or revoked refresh token",
            );
        };
        self.issue_token(client.user.clone(), clients.access_token_lifetime)
    }

    fn issue_token(&self, user: UserId, lifetime: Duration) -> Response<Full<Bytes>> {
        let now = self.clock.now();
        let mut state = self.control.lock();
        let token = match state.next_id() {
            Ok(id) => format!("ya29.upsim-{id}"),
            Err(e) => {
                return oauth_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    &e.to_string(),
                )
            }
        };
        state
            .issued_tokens
            .issue(token.clone(), user.clone(), now, now + lifetime);
        state.stats.access_tokens_issued += 1;
        drop(state);
        tracing::info!(%user, lifetime_s = lifetime.as_secs(), "drive: access token issued");
        let body = serde_json::json!({
            "access_token": token,
            "expires_in": lifetime.as_secs(),
            "token_type": "Bearer",
            "scope": "https://www.googleapis.com/auth/drive.file",
        });
        json_reply(StatusCode::OK, body.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"{"access_token_lifetime_s": 60, "clients": [
        {"client_id": "cid", "client_secret": "sec", "refresh_token": "1//rt", "user": "alice"}]}"#;

    #[test]
    fn a_client_file_parses_and_junk_is_refused_with_its_reason() {
        let clients = OAuthClients::parse(FILE).expect("valid");
        assert_eq!(clients.access_token_lifetime, Duration::from_secs(60));
        assert!(
            !format!("{clients:?}").contains("sec"),
            "no secret in Debug"
        );
        assert!(
            !format!("{clients:?}").contains("1//rt"),
            "no token in Debug"
        );
        for (junk, why) in [
            (
                r#"{"access_token_lifetime_s": 60, "clients": []}"#,
                "0 clients",
            ),
            (&FILE.replace("60", "0"), "at least 1"),
            (&FILE.replace("\"sec\"", "\"\""), "empty id, secret"),
            ("{}", "missing field"),
        ] {
            let error = OAuthClients::parse(junk).expect_err(junk);
            assert!(error.contains(why), "{junk}: {error}");
        }
    }

    #[test]
    fn a_grant_is_read_from_its_form_and_matched_on_all_three_secrets() {
        let clients = OAuthClients::parse(FILE).expect("valid");
        let grant = parse_grant(
            b"grant_type=refresh_token&client_id=cid&client_secret=sec&refresh_token=1%2F%2Frt&x=y",
        );
        assert_eq!(grant.grant_type, "refresh_token");
        assert_eq!(clients.find(&grant).map(|c| c.user.as_str()), Some("alice"));
        let wrong = parse_grant(
            b"grant_type=refresh_token&client_id=cid&client_secret=nope&refresh_token=1%2F%2Frt",
        );
        assert!(clients.find(&wrong).is_none());
    }
}
