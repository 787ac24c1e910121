//! `upsim drive`: the drive emulator on real TCP, storing files in a
//! directory.
//!
//! Layout of `DIR`: finished files as `<upload_id>-<name>`; unfinished ones
//! in `.partial/<upload_id>`; one JSON record per session in `.sessions/`.
//! A restarted emulator takes its sessions back: a status query answers
//! with the bytes its partial file holds (the file on disk is the truth).
//!
//! Invariants: ids come from the OS (a session URI is a capability); with a
//! token file every request is authenticated and sessions are private to
//! their user; every peer-controlled size and time is bounded.

use super::{
    init_logging, outcome_err, RealError, BODY_IDLE_TIMEOUT_DEFAULT, HEADER_READ_TIMEOUT_DEFAULT,
};
use crate::auth::TokenTable;
use crate::drive::{
    DirStore, DriveConfig, DriveServer, OAuthClients, RestoreReport, SessionJournal,
    FINISHED_FILES_MAX_DEFAULT,
};
use crate::env::{Clock, Listener, TokioClock};
use crate::ids::IdSource;
use crate::outcome::{Outcome, EXIT_USAGE};
use crate::wire::tls::TlsServer;
use crate::wire::{ServeOptions, ACCEPT_RETRY_REAL, CONNECTIONS_MAX_REAL, HEADER_BYTES_MAX};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// `upsim drive` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct DriveArgs {
    /// Address to listen on, e.g. 127.0.0.1:8081 (port 0 picks one).
    #[arg(long)]
    pub listen: String,
    /// Directory for files, partial files and session records.
    #[arg(long)]
    pub dir: PathBuf,
    /// Scheme, host and port that session URIs start with (default:
    /// http:// and the address bound).
    #[arg(long)]
    pub public_url: Option<String>,
    /// Token file (`TOKEN USER` a line): require `Authorization: Bearer`.
    #[arg(long)]
    pub tokens: Option<PathBuf>,
    /// Serve TLS (https://) with a certificate and its key.
    #[command(flatten)]
    pub tls: super::TlsArgs,
    /// OAuth client file (JSON: `access_token_lifetime_s` and `clients`,
    /// each with `client_id`, `client_secret`, `refresh_token`, `user`):
    /// serve a token endpoint at `POST /token` (refresh-token grant) and
    /// accept the access tokens it issues until they expire.
    #[arg(long)]
    pub oauth_clients: Option<PathBuf>,
    /// Longest time a client may take to send a request's headers, ms
    /// (with --tls-cert, also to finish its TLS handshake).
    #[arg(long, default_value_t = HEADER_READ_TIMEOUT_DEFAULT.as_millis() as u64)]
    pub header_read_timeout_ms: u64,
    /// Finished files whose resources are kept (answering a late status
    /// query), the oldest dropped first beyond it.
    #[arg(long, default_value_t = FINISHED_FILES_MAX_DEFAULT)]
    pub finished_files_max: usize,
    /// Logging.
    #[command(flatten)]
    pub log: super::LogArgs,
}

/// What the drive runs with.
#[derive(Debug, Clone)]
pub struct DriveSettings {
    /// Address to bind.
    pub listen: String,
    /// Storage root.
    pub dir: PathBuf,
    /// Base of session URIs; `None`: `http://` (`https://` with TLS) and
    /// the bound address.
    pub public_url: Option<String>,
    /// Serve TLS with this certificate; `None`: plain TCP. Its handshake
    /// is bounded by `header_read_timeout`.
    pub tls: Option<TlsServer>,
    /// Accepted tokens; `None`: no authentication (unless OAuth clients).
    pub tokens: Option<TokenTable>,
    /// The token endpoint's clients; `None`: no token endpoint.
    pub oauth_clients: Option<OAuthClients>,
    /// Slowloris bound.
    pub header_read_timeout: Duration,
    /// Longest silence inside a piece body.
    pub piece_idle_timeout: Duration,
    /// Finished files kept, at most.
    pub finished_files_max: usize,
}

impl DriveSettings {
    /// Real-mode defaults for `listen` and `dir`.
    pub fn new(listen: impl Into<String>, dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: listen.into(),
            dir: dir.into(),
            public_url: None,
            tls: None,
            tokens: None,
            oauth_clients: None,
            header_read_timeout: HEADER_READ_TIMEOUT_DEFAULT,
            piece_idle_timeout: BODY_IDLE_TIMEOUT_DEFAULT,
            finished_files_max: FINISHED_FILES_MAX_DEFAULT,
        }
    }

    /// From command-line arguments (reads the token file).
    pub fn from_args(args: &DriveArgs) -> Result<Self, RealError> {
        let tokens = args.tokens.as_deref().map(TokenTable::load).transpose()?;
        let oauth_clients = args
            .oauth_clients
            .as_deref()
            .map(OAuthClients::load)
            .transpose()?;
        Ok(Self {
            public_url: args.public_url.clone(),
            tls: args.tls.server()?,
            tokens,
            oauth_clients,
            header_read_timeout: Duration::from_millis(args.header_read_timeout_ms.max(1)),
            finished_files_max: args.finished_files_max,
            ..Self::new(args.listen.clone(), args.dir.clone())
        })
    }
}

/// A drive bound to its address with its sessions restored, not yet
/// serving.
pub struct BoundDrive {
    /// The server; [`DriveServer::control`] observes it.
    pub server: DriveServer,
    /// Its listener.
    pub listener: Box<dyn Listener>,
    /// The address bound.
    pub addr: SocketAddr,
    /// The base URL of its session URIs.
    pub base_url: String,
    /// What the journal gave back.
    pub restored: RestoreReport,
}

/// Binds the drive of `settings`, opens its storage and journal, and
/// restores the sessions of an earlier run. Must run inside a tokio
/// runtime.
pub async fn bind_drive(settings: &DriveSettings) -> Result<BoundDrive, RealError> {
    let (listener, addr) = super::listen(&settings.listen).await?;
    let (listener, scheme) = match &settings.tls {
        Some(tls) => (
            tls.clone()
                .with_handshake_timeout(settings.header_read_timeout)
                .wrap(listener),
            "https",
        ),
        None => (listener, "http"),
    };
    let base_url = match &settings.public_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None if addr.ip().is_unspecified() => {
            format!("{scheme}://127.0.0.1:{}", addr.port())
        }
        None => format!("{scheme}://{addr}"),
    };
    std::fs::create_dir_all(&settings.dir).map_err(|e| RealError::Start {
        what: "the drive directory",
        reason: format!("{}: {e}", settings.dir.display()),
    })?;
    let journal = SessionJournal::open(&settings.dir)?;
    let config = DriveConfig {
        public_base_url: base_url.clone(),
        piece_idle_timeout: settings.piece_idle_timeout,
        finished_files_max: settings.finished_files_max,
        id_source: IdSource::Os,
        access_tokens: settings.tokens.clone(),
        oauth_clients: settings.oauth_clients.clone(),
        serve: ServeOptions {
            buf_bytes_max: Some(HEADER_BYTES_MAX),
            header_read_timeout: Some(settings.header_read_timeout),
            connections_max: Some(CONNECTIONS_MAX_REAL),
            accept_retry: Some(ACCEPT_RETRY_REAL),
            ..ServeOptions::default()
        },
        ..DriveConfig::default()
    };
    config.validate()?;
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::real());
    let server = DriveServer::open(
        config,
        clock,
        Arc::new(DirStore::new(settings.dir.clone())),
        Some(journal),
    );
    let restored = server.restore().await?;
    Ok(BoundDrive {
        server,
        listener,
        addr,
        base_url,
        restored,
    })
}

/// `upsim drive`: serves until SIGINT or SIGTERM, then lets requests in
/// flight finish and exits 0.
pub fn drive_command(args: &DriveArgs) -> Outcome {
    init_logging("info", args.log.log_format);
    let settings = match DriveSettings::from_args(args) {
        Ok(s) => s,
        Err(e) => return outcome_err(EXIT_USAGE, e),
    };
    let run = async {
        let bound = bind_drive(&settings).await?;
        let shutdown = super::logged_shutdown("upsim drive")?;
        let authenticated = settings.tokens.is_some() || settings.oauth_clients.is_some();
        if !authenticated {
            tracing::warn!("no --tokens: anyone who can connect may upload (development only)");
        }
        tracing::info!(
            addr = %bound.addr,
            base_url = %bound.base_url,
            dir = %settings.dir.display(),
            authenticated,
            oauth = settings.oauth_clients.is_some(),
            tls = settings.tls.is_some(),
            restored = ?bound.restored,
            "upsim drive: ready"
        );
        bound
            .server
            .serve_until(bound.listener, shutdown)
            .await
            .map_err(super::serve_failed(bound.addr))?;
        Ok::<_, RealError>(format!("upsim drive: stopped ({})\n", bound.base_url))
    };
    super::run_server(run)
}
