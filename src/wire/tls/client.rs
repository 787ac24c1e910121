//! The client side: which roots to trust ([`Roots`], [`TlsClient`]) and
//! [`dial`], the one way every client opens a connection.

use super::{
    provider, read_certificates, TlsConfigError, ALPN_HTTP1, TLS_HANDSHAKE_TIMEOUT_DEFAULT,
};
use crate::env::{split_host_port, BoxConn, Network};
use rustls_pki_types::ServerName;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The certificate authorities a client trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roots {
    /// The operating system's trust store (`rustls-native-certs`: on
    /// Linux the distribution's bundle, or `SSL_CERT_FILE`/`SSL_CERT_DIR`).
    System,
    /// Only the CA certificates of this PEM file (a private CA), as curl's
    /// `--cacert` does: the system's roots are not trusted besides.
    CaFile(PathBuf),
}

impl fmt::Display for Roots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::System => f.write_str("the system roots"),
            Self::CaFile(path) => write!(f, "the CA file {}", path.display()),
        }
    }
}

/// The client side of TLS: the roots loaded once, cheap to clone.
#[derive(Clone)]
pub struct TlsClient {
    connector: tokio_rustls::TlsConnector,
    roots: Roots,
    handshake_timeout: Duration,
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClient")
            .field("roots", &self.roots)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

/// Two clients are equal when they trust the same roots with the same
/// timeout (they were loaded from the same source, so they behave alike):
/// what configurations that hold one compare.
impl PartialEq for TlsClient {
    fn eq(&self, other: &Self) -> bool {
        self.roots == other.roots && self.handshake_timeout == other.handshake_timeout
    }
}

impl Eq for TlsClient {}

impl TlsClient {
    /// A client trusting `roots`, with [`TLS_HANDSHAKE_TIMEOUT_DEFAULT`].
    ///
    /// # Errors
    /// A CA file that cannot be read or holds no certificate, or a system
    /// trust store with no usable root.
    pub fn new(roots: Roots) -> Result<Self, TlsConfigError> {
        let store = match &roots {
            Roots::System => system_roots()?,
            Roots::CaFile(path) => ca_file_roots(path)?,
        };
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports rustls's default protocol versions")
            .with_root_certificates(store)
            .with_no_client_auth();
        config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
        Ok(Self {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            roots,
            handshake_timeout: TLS_HANDSHAKE_TIMEOUT_DEFAULT,
        })
    }

    /// The same client with another handshake bound.
    ///
    /// # Panics
    /// If `timeout` is zero (no handshake could finish).
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        assert!(
            !timeout.is_zero(),
            "a TLS handshake timeout must be positive"
        );
        self.handshake_timeout = timeout;
        self
    }

    /// What it trusts.
    pub fn roots(&self) -> &Roots {
        &self.roots
    }

    /// The handshake over `conn`, within the handshake timeout, checking
    /// the peer's certificate against the roots and the host of `addr`
    /// (`host:port`: a DNS name or an IP address).
    async fn handshake(&self, addr: &str, conn: BoxConn) -> Result<BoxConn, DialError> {
        let name = server_name(addr)?;
        let handshake = self.connector.connect(name, conn);
        match tokio::time::timeout(self.handshake_timeout, handshake).await {
            Ok(Ok(stream)) => Ok(Box::new(stream)),
            Ok(Err(error)) => Err(classify(addr, &error)),
            Err(_elapsed) => Err(DialError::Connect {
                addr: addr.to_owned(),
                reason: format!(
                    "the TLS handshake did not finish within {} ms",
                    self.handshake_timeout.as_millis()
                ),
            }),
        }
    }
}

/// The name the peer's certificate must carry: the host of `addr`.
fn server_name(addr: &str) -> Result<ServerName<'static>, DialError> {
    let refused = |reason: String| DialError::Tls {
        addr: addr.to_owned(),
        reason,
    };
    let (host, _port) = split_host_port(addr).map_err(|e| refused(e.to_string()))?;
    ServerName::try_from(host.to_owned()).map_err(|e| {
        refused(format!(
            "{host:?} cannot be checked against a certificate: {e}"
        ))
    })
}

/// A failed handshake: refused when TLS itself said no (an untrusted
/// certificate, a wrong name, an alert from the peer, a peer that does not
/// speak TLS), a connection failure when the transport broke.
fn classify(addr: &str, error: &io::Error) -> DialError {
    let tls = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls {
        Some(tls) => DialError::Tls {
            addr: addr.to_owned(),
            reason: tls.to_string(),
        },
        None => DialError::Connect {
            addr: addr.to_owned(),
            reason: format!("during the TLS handshake: {error}"),
        },
    }
}

/// The system's roots; an error only when none is usable.
fn system_roots() -> Result<rustls::RootCertStore, TlsConfigError> {
    let loaded = rustls_native_certs::load_native_certs();
    let mut store = rustls::RootCertStore::empty();
    let (added, _ignored) = store.add_parsable_certificates(loaded.certs);
    if added == 0 {
        let errors: Vec<String> = loaded.errors.iter().map(ToString::to_string).collect();
        return Err(TlsConfigError::NoSystemRoots {
            reason: if errors.is_empty() {
                "the trust store is empty (install ca-certificates, or give a CA file)".to_owned()
            } else {
                errors.join("; ")
            },
        });
    }
    Ok(store)
}

/// The CA certificates of `path`, every one of which must be usable.
fn ca_file_roots(path: &Path) -> Result<rustls::RootCertStore, TlsConfigError> {
    const WHAT: &str = "CA file";
    let certs = read_certificates(WHAT, path)?;
    let mut store = rustls::RootCertStore::empty();
    for cert in certs {
        store.add(cert).map_err(|e| TlsConfigError::Invalid {
            what: WHAT,
            path: path.to_owned(),
            expected: "CA certificate",
            reason: e.to_string(),
        })?;
    }
    Ok(store)
}

/// Why [`dial`] gave no connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialError {
    /// No connection: the transport failed, or the TLS handshake broke off
    /// or did not finish in time. Waiting may help.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// The address dialled.
        addr: String,
        /// The OS's, the simulator's or the handshake's reason.
        reason: String,
    },
    /// TLS refused the peer, or the peer refused us: a certificate not
    /// signed by a trusted CA, not valid for the host name or expired, a
    /// peer that does not speak TLS. Waiting will not help.
    #[error("TLS with {addr} failed: {reason}")]
    Tls {
        /// The address dialled.
        addr: String,
        /// rustls's reason.
        reason: String,
    },
}

/// A connection to `addr` on `net`, with TLS over it when `tls` is given:
/// what every client (the drive client, [`send`](crate::wire::send)) opens.
///
/// # Cancel safety
/// Dropping the future drops the connection.
pub async fn dial(
    net: &dyn Network,
    addr: &str,
    tls: Option<&TlsClient>,
) -> Result<BoxConn, DialError> {
    let conn = net.connect(addr).await.map_err(|e| DialError::Connect {
        addr: addr.to_owned(),
        reason: e.to_string(),
    })?;
    match tls {
        None => Ok(conn),
        Some(tls) => tls.handshake(addr, conn).await,
    }
}
