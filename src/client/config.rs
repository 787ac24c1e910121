//! The client's settings: [`ClientConfig`] (defaults documented per
//! field) and [`ClientAuth`], how it says who it is.

use crate::profile::RetryPolicy;
use crate::user::UserId;
use crate::wire::tls::TlsClient;
use std::time::Duration;

/// How the client says who it is.
#[derive(Clone, PartialEq, Eq)]
pub enum ClientAuth {
    /// The `x-upsim-user` header (a backend with `Auth::UserHeader`).
    UserHeader(UserId),
    /// `Authorization: Bearer TOKEN` (a backend with `Auth::Tokens`).
    Bearer(String),
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UserHeader(user) => f.debug_tuple("UserHeader").field(user).finish(),
            // Never print a secret.
            Self::Bearer(_) => f.write_str("Bearer(…)"),
        }
    }
}

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The backend, `host:port`.
    pub server_addr: String,
    /// TLS to the backend, checking its certificate against these roots
    /// and the host of `server_addr`. Default `None` (plain TCP).
    pub tls: Option<TlsClient>,
    /// Who uploads, and how that is said.
    pub auth: ClientAuth,
    /// Chunks in flight at once. Default 4.
    pub parallel: u32,
    /// Backoff bounds and attempts (for creating the upload).
    pub retry: RetryPolicy,
    /// Longest one request may take. Default 60 s.
    pub request_timeout: Duration,
    /// How often to ask while the backend finishes on the drive. Default 1 s.
    pub status_poll: Duration,
    /// Give up after this long without progress. Default 15 minutes.
    pub stall_limit: Duration,
    /// Seeds the backoff jitter.
    pub seed: u64,
}

impl ClientConfig {
    /// Defaults for `user` uploading to `server_addr`, naming itself in
    /// the user header.
    pub fn new(server_addr: impl Into<String>, user: UserId, seed: u64) -> Self {
        Self::with_auth(server_addr, ClientAuth::UserHeader(user), seed)
    }

    /// Defaults for uploading to `server_addr` as `auth` says.
    pub fn with_auth(server_addr: impl Into<String>, auth: ClientAuth, seed: u64) -> Self {
        Self {
            server_addr: server_addr.into(),
            tls: None,
            auth,
            parallel: 4,
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(60),
            status_poll: Duration::from_secs(1),
            stall_limit: Duration::from_secs(15 * 60),
            seed,
        }
    }
}
