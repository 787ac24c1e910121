//! Real mode: the drive emulator, the backend and the upload client as
//! processes on tokio and real TCP — the same code the simulations check,
//! given the real clock ([`TokioClock::real`](crate::env::TokioClock::real)),
//! the OS's memory figures ([`OsMemory`](crate::env::OsMemory)), TCP
//! ([`TokioNetwork`](crate::env::TokioNetwork)) and on-disk stores; TLS
//! where a URL says `https://` or a server is given `--tls-cert` and
//! `--tls-key` ([`crate::wire::tls`]).
//!
//! - [`drive`]: `upsim drive` — the emulator storing files in a directory,
//!   sessions journalled so that a restart keeps them.
//! - [`serve`]: `upsim serve` — the backend, records in a state directory
//!   so that a restart resumes, bearer tokens, metrics, graceful shutdown.
//! - [`upload`]: `upsim upload` — the client on a file, with progress
//!   (sent and committed, [`upload_progress`]), the final checksum, and
//!   resumption after its own interruption.
//! - [`resume`]: the client's record of which upload a file belongs to.
//!
//! Each command is split into a `bind_*`/settings part that tests call in
//! process, and a `*_command` that adds the runtime, logging and signals.
//! Invariant: nothing here decides anything about uploads; it only wires
//! the environment, so what the simulations prove holds here.

pub mod drive;
pub mod resume;
pub mod serve;
pub mod upload;
pub mod upload_progress;

pub use drive::{bind_drive, drive_command, BoundDrive, DriveArgs, DriveSettings};
pub use serve::{bind_backend, serve_command, BoundBackend, ServeArgs, ServeSettings};
pub use upload::{upload_command, UploadArgs};

use crate::auth::TokenFileError;
use crate::outcome::{Outcome, EXIT_OK};
use crate::wire::tls::{Roots, TlsClient, TlsConfigError, TlsServer};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Real mode's slowloris bound: a client sends a request's few hundred
/// bytes of headers in one segment; 10 s covers a congested uplink's
/// retransmissions and ends a trickling or idle connection.
pub const HEADER_READ_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);

/// Real mode's bound on the time between two body bytes (backend chunks
/// and drive pieces): a stalled TCP connection recovers in seconds or not
/// at all.
pub const BODY_IDLE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);

/// Why a real-mode command could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum RealError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// What was asked for.
        addr: String,
        /// The OS's reason.
        reason: String,
    },
    /// A URL that real mode cannot use.
    #[error("bad URL {given:?}: {reason}")]
    BadUrl {
        /// What was given.
        given: String,
        /// Why not.
        reason: String,
    },
    /// A token file was refused.
    #[error(transparent)]
    Tokens(#[from] TokenFileError),
    /// The drive's OAuth client file was refused.
    #[error(transparent)]
    OAuthClients(#[from] crate::drive::OAuthClientsError),
    /// The backend's drive credentials were refused.
    #[error(transparent)]
    DriveCredentials(#[from] crate::drive::CredentialsError),
    /// The profile was refused.
    #[error(transparent)]
    Profile(#[from] crate::profile::ProfileError),
    /// The backend's record store could not be opened.
    #[error(transparent)]
    Store(#[from] crate::backend::store::StoreError),
    /// The drive's session journal could not be opened or read.
    #[error(transparent)]
    Journal(#[from] crate::drive::JournalError),
    /// The drive's sessions could not be restored.
    #[error(transparent)]
    Restore(#[from] crate::drive::RestoreError),
    /// The drive's configuration was refused.
    #[error(transparent)]
    DriveConfig(#[from] crate::drive::DriveConfigError),
    /// The backend's configuration, as the flags made it, is invalid.
    #[error(transparent)]
    BackendConfig(#[from] crate::backend::BackendConfigError),
    /// The tokio runtime or a signal handler could not start.
    #[error("cannot start {what}: {reason}")]
    Start {
        /// What.
        what: &'static str,
        /// Why not.
        reason: String,
    },
    /// A certificate, key or CA file was refused, or no system roots.
    #[error(transparent)]
    Tls(#[from] TlsConfigError),
    /// Two options that cannot go together, or a missing one.
    #[error("{0}")]
    Usage(String),
}

/// A command that ended well: `stdout`, exit 0.
pub(crate) fn outcome_ok(stdout: String) -> Outcome {
    Outcome {
        stdout,
        stderr: String::new(),
        code: EXIT_OK,
    }
}

/// A command that failed with `e`: exit `code`.
pub(crate) fn outcome_err(code: i32, e: impl std::fmt::Display) -> Outcome {
    Outcome {
        stdout: String::new(),
        stderr: format!("upsim: {e}\n"),
        code,
    }
}

/// A server URL as real mode takes it: `http://host:port` or
/// `https://host:port` (a trailing `/` allowed, no path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl {
    /// Whether it is `https://`.
    pub tls: bool,
    /// `host:port`, what is dialled (and, for TLS, whose host the
    /// certificate must name).
    pub authority: String,
}

impl ServerUrl {
    /// Parses `url`.
    ///
    /// # Errors
    /// [`RealError::BadUrl`] for another scheme, a path, or no port.
    pub fn parse(url: &str) -> Result<Self, RealError> {
        let bad = |reason: &str| RealError::BadUrl {
            given: url.to_owned(),
            reason: reason.to_owned(),
        };
        let (tls, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
            (Some(rest), _) => (true, rest),
            (None, Some(rest)) => (false, rest),
            (None, None) => return Err(bad("only http:// and https:// URLs are supported")),
        };
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err(bad("expected http(s)://host:port with no path"));
        }
        crate::env::split_host_port(authority).map_err(|e| bad(&e.to_string()))?;
        Ok(Self {
            tls,
            authority: authority.to_owned(),
        })
    }

    /// The TLS client for this URL: `None` for `http://` (where a CA file
    /// is a usage error); for `https://`, trusting `ca_file`'s CAs, or the
    /// system's roots without one. `flag` names the CA option in errors.
    pub fn tls_client(
        &self,
        ca_file: Option<&Path>,
        flag: &str,
    ) -> Result<Option<TlsClient>, RealError> {
        match (self.tls, ca_file) {
            (false, None) => Ok(None),
            (false, Some(_)) => Err(RealError::Usage(format!(
                "{flag} is for https:// URLs, not plain http://"
            ))),
            (true, None) => Ok(Some(TlsClient::new(Roots::System)?)),
            (true, Some(path)) => Ok(Some(TlsClient::new(Roots::CaFile(path.to_owned()))?)),
        }
    }
}

/// The TLS server of `--tls-cert` and `--tls-key` (both or neither).
pub(crate) fn tls_server(
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<Option<TlsServer>, RealError> {
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some(TlsServer::from_pem_files(cert, key)?)),
        _ => Err(RealError::Usage(
            "--tls-cert and --tls-key go together".to_owned(),
        )),
    }
}

/// The options that make a server speak TLS (`upsim serve`, `upsim
/// drive`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// Serve TLS with this PEM certificate chain (the server's own
    /// certificate first); needs --tls-key.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// The TLS server these options ask for, if any.
    pub fn server(&self) -> Result<Option<TlsServer>, RealError> {
        tls_server(self.tls_cert.as_deref(), self.tls_key.as_deref())
    }
}

/// Binds `addr` on real TCP: the listener and the address it got (port 0
/// becomes a real port). Both failures name the address.
pub(crate) async fn listen(
    addr: &str,
) -> Result<(Box<dyn crate::env::Listener>, std::net::SocketAddr), RealError> {
    use crate::env::Network;
    let failed = |e: std::io::Error| RealError::Listen {
        addr: addr.to_owned(),
        reason: e.to_string(),
    };
    let listener = crate::env::TokioNetwork
        .listen(addr)
        .await
        .map_err(failed)?;
    let bound = listener.local_addr().map_err(failed)?;
    Ok((listener, bound))
}

/// How the real-mode commands write their logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Lines for people; coloured only on a terminal without `NO_COLOR`.
    #[default]
    Text,
    /// One JSON object per line, for machines (never coloured).
    Json,
}

/// The logging options every real-mode command takes.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct LogArgs {
    /// Log lines as text (coloured only on a terminal, never with
    /// NO_COLOR set) or as JSON objects, one per line.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Whether log lines may carry ANSI colour: standard error is a terminal
/// and `NO_COLOR` is unset or empty (<https://no-color.org>).
pub fn colour_allowed(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Installs the `tracing` subscriber: `RUST_LOG` if set, else `default`,
/// to standard error, in `format`. A second call is a no-op.
pub fn init_logging(default: &str, format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let ansi = colour_allowed(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // An error means a subscriber is already installed: keep it.
    let _ = match format {
        LogFormat::Text => builder.with_ansi(ansi).try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
}

/// A multi-threaded tokio runtime for a command.
pub fn runtime() -> Result<tokio::runtime::Runtime, RealError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| RealError::Start {
            what: "the tokio runtime",
            reason: e.to_string(),
        })
}

/// A future that completes on the first SIGINT or SIGTERM, with the
/// signal's name. Handlers are installed now (inside a runtime), so a
/// signal that arrives before the future is polled is not lost.
pub fn shutdown_signal() -> Result<impl Future<Output = &'static str> + Send, RealError> {
    use tokio::signal::unix::{signal, SignalKind};
    let start = |e: std::io::Error| RealError::Start {
        what: "a signal handler",
        reason: e.to_string(),
    };
    let mut interrupt = signal(SignalKind::interrupt()).map_err(start)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(start)?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        }
    })
}

/// The shutdown of the server `name`: the first SIGINT or SIGTERM, logged
/// when it comes.
pub(crate) fn logged_shutdown(
    name: &'static str,
) -> Result<impl Future<Output = ()> + Send, RealError> {
    let signal = shutdown_signal()?;
    Ok(async move {
        let received = signal.await;
        tracing::info!(signal = received, "{name}: shutting down");
    })
}

/// Runs a server command's body on a fresh runtime: its stdout and exit 0,
/// or the error and [`EXIT_FAILED`](crate::outcome::EXIT_FAILED).
pub(crate) fn run_server(run: impl Future<Output = Result<String, RealError>>) -> Outcome {
    match runtime().and_then(|rt| rt.block_on(run)) {
        Ok(stdout) => outcome_ok(stdout),
        Err(e) => outcome_err(crate::outcome::EXIT_FAILED, e),
    }
}

/// A server that stopped serving `addr` with an error.
pub(crate) fn serve_failed(addr: std::net::SocketAddr) -> impl FnOnce(std::io::Error) -> RealError {
    move |e| RealError::Listen {
        addr: addr.to_string(),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour_allowed(true, None));
        assert!(colour_allowed(true, Some(OsStr::new(""))));
        assert!(!colour_allowed(true, Some(OsStr::new("1"))));
        assert!(!colour_allowed(false, None));
        assert!(!colour_allowed(false, Some(OsStr::new(""))));
    }

    #[test]
    fn http_and_https_urls_with_a_port_and_no_path_are_accepted() {
        let parse = |url: &str| ServerUrl::parse(url).ok().map(|u| (u.tls, u.authority));
        assert_eq!(
            parse("http://127.0.0.1:8080/"),
            Some((false, "127.0.0.1:8080".to_owned()))
        );
        assert_eq!(
            parse("https://localhost:8443"),
            Some((true, "localhost:8443".to_owned()))
        );
        for bad in [
            "https://www.googleapis.com",
            "ftp://host:21",
            "127.0.0.1:80",
            "http://",
            "https://",
            "http://host:1/path",
            "http://host",
        ] {
            assert!(ServerUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_ca_file_is_refused_for_plain_http_and_tls_files_go_in_pairs() {
        let plain = ServerUrl::parse("http://127.0.0.1:1").expect("valid");
        assert!(matches!(plain.tls_client(None, "--ca-file"), Ok(None)));
        assert!(matches!(
            plain.tls_client(Some(Path::new("ca.pem")), "--ca-file"),
            Err(RealError::Usage(_))
        ));
        let secure = ServerUrl::parse("https://127.0.0.1:1").expect("valid");
        let missing = secure.tls_client(Some(Path::new("/nonexistent/ca.pem")), "--ca-file");
        assert!(
            matches!(&missing, Err(RealError::Tls(TlsConfigError::Unreadable { path, .. })) if path == Path::new("/nonexistent/ca.pem")),
            "{missing:?}"
        );
        assert!(matches!(tls_server(None, None), Ok(None)));
        assert!(matches!(
            tls_server(Some(Path::new("c.pem")), None),
            Err(RealError::Usage(_))
        ));
    }
}
