//! `upsim serve`: the backend on real TCP.
//!
//! Wiring: [`TokioClock::real`], [`OsMemory`] for admission's memory
//! checks, [`TokioNetwork`] to the drive, the backend [`DirStore`] for
//! upload records (so a restart resumes every upload where the drive says
//! it stands), upload ids from the OS, bearer tokens from a token file, and
//! the real-mode bounds on headers, bodies and uploads per user. SIGINT or
//! SIGTERM drains and exits 0 ([`Backend::run_until`]).
//!
//! Invariant: nothing here changes what the backend decides; it only picks
//! the environment and the configuration.

use super::{init_logging, outcome_err, RealError, ServerUrl, HEADER_READ_TIMEOUT_DEFAULT};
use crate::admission::shared::{SharedConfig, SlotStore, LEASE_TTL_DEFAULT};
use crate::admission::{Admission, Admitter, SharedAdmitter};
use crate::auth::{Auth, TokenTable};
use crate::backend::{
    Backend, BackendConfig, BackendEnv, DirStore, MemoryStore, UploadStore,
    CHUNK_BODY_IDLE_TIMEOUT_REAL, DRAIN_TIMEOUT_DEFAULT, ENDED_UPLOADS_RETAINED_MAX_DEFAULT,
    ENDED_UPLOAD_RETENTION_DEFAULT, UPLOAD_IDLE_TIMEOUT_DEFAULT,
};
use crate::checksum::FileDigestKind;
use crate::drive::OAuthCredentials;
use crate::env::{Clock, Listener, OsMemory, TokioClock, TokioNetwork};
use crate::ids::IdSource;
use crate::outcome::{Outcome, EXIT_USAGE};
use crate::profile::Profile;
use crate::trace::Tracer;
use crate::wire::tls::{TlsClient, TlsServer};
use crate::wire::{ServeOptions, ACCEPT_RETRY_REAL, CONNECTIONS_MAX_REAL, HEADER_BYTES_MAX};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// `upsim serve` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on, e.g. 127.0.0.1:8080 (port 0 picks one).
    #[arg(long)]
    pub listen: String,
    /// dev, prod, or a path to a TOML profile.
    #[arg(long, default_value = "dev")]
    pub profile: String,
    /// The drive's base URL, e.g. http://127.0.0.1:8081 or
    /// https://drive.example:443.
    #[arg(long)]
    pub drive: String,
    /// Trust only the CA certificates of this PEM file for an https://
    /// drive (default: the system's roots).
    #[arg(long)]
    pub drive_ca_file: Option<PathBuf>,
    /// Serve TLS (https://) with a certificate and its key.
    #[command(flatten)]
    pub tls: super::TlsArgs,
    /// Directory for upload records (a restart resumes them). Without it
    /// records live in memory and a restart forgets every upload.
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Token file (`TOKEN USER` a line): require `Authorization: Bearer`.
    /// Without it the `x-upsim-user` header is trusted (development only).
    #[arg(long)]
    pub tokens: Option<PathBuf>,
    /// File holding the drive's access token, read before every drive
    /// request (so it can be refreshed while uploads run).
    #[arg(long)]
    pub drive_token_file: Option<PathBuf>,
    /// OAuth credentials for the drive (Google's `authorized_user` JSON:
    /// `client_id`, `client_secret`, `refresh_token`, optional
    /// `token_uri`): access tokens are fetched, shared by every upload,
    /// refreshed before they expire and once on a 401. Wins over
    /// --drive-token-file. Never logged.
    #[arg(long)]
    pub drive_credentials: Option<PathBuf>,
    /// The whole-file digest asked of the drive and checked against the
    /// bytes sent: md5 (Drive's md5Checksum) or crc64nvme (the emulator's,
    /// about 40 times cheaper to compute; real Drive has no such field).
    #[arg(long, value_enum, default_value_t = FileDigestKind::Md5)]
    pub file_digest: FileDigestKind,
    /// Uploads one user may have in progress at once (default: twice the
    /// profile's per-user slots: as many running as queued).
    #[arg(long)]
    pub uploads_per_user_max: Option<u32>,
    /// Longest time a client may take to send a request's headers, ms
    /// (with --tls-cert, also to finish its TLS handshake).
    #[arg(long, default_value_t = HEADER_READ_TIMEOUT_DEFAULT.as_millis() as u64)]
    pub header_read_timeout_ms: u64,
    /// On shutdown, how long chunks in flight get to finish, ms.
    #[arg(long, default_value_t = DRAIN_TIMEOUT_DEFAULT.as_millis() as u64)]
    pub drain_timeout_ms: u64,
    /// Ended uploads kept answerable (status, idempotent create), the
    /// oldest dropped first beyond it.
    #[arg(long, default_value_t = ENDED_UPLOADS_RETAINED_MAX_DEFAULT)]
    pub ended_uploads_max: usize,
    /// How long an ended upload stays answerable, s.
    #[arg(long, default_value_t = ENDED_UPLOAD_RETENTION_DEFAULT.as_secs())]
    pub ended_upload_retention_s: u64,
    /// Share admission (slots, quota, waiting) with other replicas through
    /// this Redis, e.g. redis://127.0.0.1:6379/. Without it admission is
    /// in-process.
    #[arg(long)]
    pub slots: Option<String>,
    /// This replica's name in the slot store (needed with --slots).
    #[arg(long, requires = "slots")]
    pub replica_id: Option<String>,
    /// Slot lease TTL on the store's clock, ms (300 to 30000).
    #[arg(long, default_value_t = LEASE_TTL_DEFAULT.as_millis() as u64)]
    pub lease_ttl_ms: u64,
    /// Prefix of the slot store's keys: replicas of one deployment share it.
    #[arg(long, default_value = crate::admission::shared::config::KEY_PREFIX_DEFAULT)]
    pub slots_prefix: String,
    /// Logging.
    #[command(flatten)]
    pub log: super::LogArgs,
}

/// What the backend runs with.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// Address to bind.
    pub listen: String,
    /// Admission and retry settings.
    pub profile: Profile,
    /// The drive's base URL (`http://host:port` or `https://host:port`).
    pub drive_url: String,
    /// The roots an `https://` drive's certificate is checked against
    /// (needed for one, refused for an `http://` drive).
    pub drive_tls: Option<TlsClient>,
    /// Serve TLS with this certificate; `None`: plain TCP. Its handshake
    /// is bounded by `header_read_timeout`.
    pub tls: Option<TlsServer>,
    /// Where records live; `None`: in memory.
    pub state_dir: Option<PathBuf>,
    /// Accepted tokens; `None`: trust `x-upsim-user`.
    pub tokens: Option<TokenTable>,
    /// The drive's access token file.
    pub drive_token_file: Option<PathBuf>,
    /// OAuth credentials for the drive; win over `drive_token_file`.
    pub drive_credentials: Option<OAuthCredentials>,
    /// The whole-file digest checked (real mode: MD5, what Drive reports).
    pub file_digest: FileDigestKind,
    /// Uploads per user at once.
    pub uploads_per_user_max: u32,
    /// Slowloris bound.
    pub header_read_timeout: Duration,
    /// Longest silence inside a chunk body.
    pub chunk_body_idle_timeout: Duration,
    /// An upload that receives nothing this long fails (`client_gone`; a
    /// tus upload's `Upload-Expires`). Default: the backend's.
    pub upload_idle_timeout: Duration,
    /// Shutdown drain bound.
    pub drain_timeout: Duration,
    /// Ended uploads kept, at most.
    pub ended_uploads_max: usize,
    /// How long an ended upload is kept.
    pub ended_upload_retention: Duration,
    /// The shared slot store; `None`: admission in process.
    pub slots: Option<SharedConfig>,
}

impl ServeSettings {
    /// Real-mode defaults around `profile`.
    pub fn new(listen: impl Into<String>, profile: Profile, drive_url: impl Into<String>) -> Self {
        Self {
            listen: listen.into(),
            uploads_per_user_max: profile.user_slots.saturating_mul(2),
            profile,
            drive_url: drive_url.into(),
            drive_tls: None,
            tls: None,
            state_dir: None,
            tokens: None,
            drive_token_file: None,
            drive_credentials: None,
            file_digest: FileDigestKind::Md5,
            header_read_timeout: HEADER_READ_TIMEOUT_DEFAULT,
            chunk_body_idle_timeout: CHUNK_BODY_IDLE_TIMEOUT_REAL,
            upload_idle_timeout: UPLOAD_IDLE_TIMEOUT_DEFAULT,
            drain_timeout: DRAIN_TIMEOUT_DEFAULT,
            ended_uploads_max: ENDED_UPLOADS_RETAINED_MAX_DEFAULT,
            ended_upload_retention: ENDED_UPLOAD_RETENTION_DEFAULT,
            slots: None,
        }
    }

    /// From command-line arguments (loads the profile and the token file).
    pub fn from_args(args: &ServeArgs) -> Result<Self, RealError> {
        let profile = Profile::load(&args.profile)?;
        let tokens = args.tokens.as_deref().map(TokenTable::load).transpose()?;
        let mut settings = Self::new(args.listen.clone(), profile, args.drive.clone());
        if let Some(max) = args.uploads_per_user_max {
            if max == 0 {
                return Err(RealError::Usage(
                    "--uploads-per-user-max must be at least 1".into(),
                ));
            }
            settings.uploads_per_user_max = max;
        }
        settings.state_dir = args.state.clone();
        settings.drive_tls = ServerUrl::parse(&args.drive)?
            .tls_client(args.drive_ca_file.as_deref(), "--drive-ca-file")?;
        settings.tls = args.tls.server()?;
        settings.tokens = tokens;
        settings.drive_token_file = args.drive_token_file.clone();
        settings.drive_credentials = args
            .drive_credentials
            .as_deref()
            .map(OAuthCredentials::load)
            .transpose()?;
        settings.file_digest = args.file_digest;
        settings.header_read_timeout = Duration::from_millis(args.header_read_timeout_ms.max(1));
        settings.drain_timeout = Duration::from_millis(args.drain_timeout_ms);
        settings.ended_uploads_max = args.ended_uploads_max;
        settings.ended_upload_retention = Duration::from_secs(args.ended_upload_retention_s);
        settings.slots = shared_config(args)?;
        Ok(settings)
    }

    /// The backend configuration these settings make.
    pub fn backend_config(&self) -> Result<BackendConfig, RealError> {
        ServerUrl::parse(&self.drive_url)?;
        // Jitter only (ids come from the OS): any seed will do, but a
        // different one per process keeps restarted backends from backing
        // off in step.
        let seed = crate::ids::os_random_id()
            .ok()
            .and_then(|id| u64::from_str_radix(&id[..16], 16).ok())
            .unwrap_or(0);
        let mut config = BackendConfig::new(self.profile.clone(), self.drive_url.clone(), seed);
        config.auth = match &self.tokens {
            Some(table) => Auth::Tokens(table.clone()),
            None => Auth::UserHeader,
        };
        config.id_source = IdSource::Os;
        config.drive_token_file = self.drive_token_file.clone();
        config.drive_tls = self.drive_tls.clone();
        config.drive_credentials = self.drive_credentials.clone();
        config.file_digest = self.file_digest;
        config.uploads_per_user_max = Some(self.uploads_per_user_max);
        config.serve = ServeOptions {
            buf_bytes_max: Some(HEADER_BYTES_MAX),
            header_read_timeout: Some(self.header_read_timeout),
            connections_max: Some(CONNECTIONS_MAX_REAL),
            accept_retry: Some(ACCEPT_RETRY_REAL),
            ..ServeOptions::default()
        };
        config.chunk_body_idle_timeout = self.chunk_body_idle_timeout;
        config.upload_idle_timeout = self.upload_idle_timeout;
        config.drain_timeout = self.drain_timeout;
        config.ended_uploads_retained_max = self.ended_uploads_max;
        config.ended_upload_retention = self.ended_upload_retention;
        Ok(config)
    }
}

/// The shared slot store's settings, if `--slots` is given.
fn shared_config(args: &ServeArgs) -> Result<Option<SharedConfig>, RealError> {
    let Some(url) = &args.slots else {
        return Ok(None);
    };
    let Some(replica_id) = &args.replica_id else {
        return Err(RealError::Usage(
            "--slots needs --replica-id NAME (unique per replica)".into(),
        ));
    };
    let config = SharedConfig {
        key_prefix: args.slots_prefix.clone(),
        lease_ttl: Duration::from_millis(args.lease_ttl_ms),
        ..SharedConfig::new(url.clone(), replica_id.clone())
    };
    config
        .validate()
        .map_err(|e| RealError::Usage(format!("--slots: {e}")))?;
    Ok(Some(config))
}

/// The admission controller `settings` ask for: shared through the slot
/// store, or in process.
fn admission(
    settings: &ServeSettings,
    clock: Arc<dyn Clock>,
) -> Result<Arc<dyn Admission>, RealError> {
    let memory = Arc::new(OsMemory);
    let Some(config) = &settings.slots else {
        return Ok(Arc::new(Admitter::new(
            settings.profile.clone(),
            clock,
            memory,
        )));
    };
    let store =
        SlotStore::open(config.clone()).map_err(|e| RealError::Usage(format!("--slots: {e}")))?;
    tracing::info!(
        store = store.address(),
        replica = %config.replica_id,
        lease_ttl_ms = config.lease_ttl.as_millis() as u64,
        prefix = %config.key_prefix,
        "admission shared through the slot store"
    );
    Ok(Arc::new(SharedAdmitter::new(
        settings.profile.clone(),
        clock,
        memory,
        Arc::new(store),
    )))
}

/// A backend bound to its address, not yet serving.
pub struct BoundBackend {
    /// The backend ([`Backend::run_until`] serves it).
    pub backend: Backend,
    /// Its listener.
    pub listener: Box<dyn Listener>,
    /// The address bound.
    pub addr: SocketAddr,
}

/// Builds the backend of `settings` and binds its address. Must run inside
/// a tokio runtime.
pub async fn bind_backend(settings: &ServeSettings) -> Result<BoundBackend, RealError> {
    let config = settings.backend_config()?;
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::real());
    let store: Arc<dyn UploadStore> = match &settings.state_dir {
        Some(dir) => Arc::new(DirStore::open(dir.clone())?),
        None => Arc::new(MemoryStore::default()),
    };
    let admission = admission(settings, clock.clone())?;
    let env = BackendEnv {
        clock,
        drive_net: Arc::new(TokioNetwork),
        admission,
        store,
        tracer: Tracer::off(),
    };
    let (listener, addr) = super::listen(&settings.listen).await?;
    let listener = match &settings.tls {
        Some(tls) => tls
            .clone()
            .with_handshake_timeout(settings.header_read_timeout)
            .wrap(listener),
        None => listener,
    };
    Ok(BoundBackend {
        backend: Backend::try_new(config, env)?,
        listener,
        addr,
    })
}

/// `upsim serve`: serves until SIGINT or SIGTERM, drains, persists and
/// exits 0.
pub fn serve_command(args: &ServeArgs) -> Outcome {
    init_logging("info", args.log.log_format);
    let settings = match ServeSettings::from_args(args) {
        Ok(s) => s,
        Err(e) => return outcome_err(EXIT_USAGE, e),
    };
    let run = async {
        let bound = bind_backend(&settings).await?;
        let shutdown = super::logged_shutdown("upsim serve")?;
        if settings.tokens.is_none() {
            tracing::warn!("no --tokens: trusting the x-upsim-user header (development only)");
        }
        if settings.state_dir.is_none() {
            tracing::warn!("no --state: upload records live in memory; a restart forgets them");
        }
        tracing::info!(
            addr = %bound.addr,
            profile = %settings.profile.name,
            drive = %settings.drive_url,
            tls = settings.tls.is_some(),
            uploads_per_user_max = settings.uploads_per_user_max,
            "upsim serve: ready"
        );
        let report = bound
            .backend
            .run_until(bound.listener, shutdown)
            .await
            .map_err(super::serve_failed(bound.addr))?;
        Ok::<_, RealError>(format!(
            "upsim serve: stopped: drained {}, {} chunk(s) in flight, {} byte(s) buffered left for resend, {} upload record(s) written\n",
            report.drained, report.chunks_in_flight, report.buffered_bytes, report.uploads_persisted
        ))
    };
    super::run_server(run)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(extra: &[&str]) -> Result<ServeArgs, clap::Error> {
        let base = [
            "upsim",
            "--listen",
            "127.0.0.1:0",
            "--drive",
            "http://127.0.0.1:1",
        ];
        Cli::try_parse_from(base.iter().chain(extra)).map(|c| c.serve)
    }

    #[test]
    fn slots_are_in_process_unless_asked_and_validated_when_asked() {
        let plain = parse(&[]).expect("parses");
        assert_eq!(shared_config(&plain).expect("valid"), None);
        let shared =
            parse(&["--slots", "redis://127.0.0.1:6379/", "--replica-id", "r1"]).expect("parses");
        let config = shared_config(&shared).expect("valid").expect("shared");
        assert_eq!(
            (config.replica_id.as_str(), config.lease_ttl),
            ("r1", LEASE_TTL_DEFAULT)
        );
        let no_id = parse(&["--slots", "redis://127.0.0.1:6379/"]).expect("parses");
        assert!(matches!(shared_config(&no_id), Err(RealError::Usage(_))));
        let long = parse(&[
            "--slots",
            "redis://127.0.0.1:6379/",
            "--replica-id",
            "r1",
            "--lease-ttl-ms",
            "30001",
        ])
        .expect("parses");
        assert!(matches!(shared_config(&long), Err(RealError::Usage(_))));
        assert!(
            parse(&["--replica-id", "r1"]).is_err(),
            "--replica-id needs --slots"
        );
    }
}
