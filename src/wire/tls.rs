//! TLS for real mode, in one place: which roots a client trusts and its
//! handshake ([`TlsClient`], [`dial`]), and a server's certificate, key and
//! handshake ([`TlsServer`], whose [`wrap`](TlsServer::wrap) turns a
//! listener's connections into TLS ones). rustls on the `ring` provider.
//!
//! Simulation never comes here: it passes no [`TlsClient`] and wraps no
//! listener, so its connections stay plain TCP on turmoil, byte for byte.
//!
//! # Implementation Details
//!
//! A server's handshake runs in the task that serves the connection, not in
//! the accept loop: [`TlsServer::wrap`]'s listener hands out a [`TlsConn`]
//! at once, and the handshake advances when hyper first reads from it. So a
//! peer that never finishes its handshake holds one connection slot
//! (counted against [`ServeOptions::connections_max`](super::ServeOptions)
//! like any connection) for at most the handshake timeout, and never holds
//! up the accept loop; hyper's header read timeout starts after it.
//!
//! Invariants: every handshake, client or server, is bounded in time; PEM
//! files are read within [`PEM_FILE_BYTES_MAX`]; every error names the file
//! or the address, and the reason.

use crate::env::{split_host_port, BoxConn, BoxFuture, Listener, Network};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::fmt;
use std::future::Future;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Default bound on a TLS handshake, client and server: a handshake is two
/// round trips and a few kilobytes, done in milliseconds even on a
/// congested link; 10 s, like real mode's header read timeout, ends a peer
/// that connects and stalls.
pub const TLS_HANDSHAKE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);

/// Largest PEM file read (certificate chain, key, CA bundle): the whole
/// Mozilla bundle is about 220 KiB.
pub const PEM_FILE_BYTES_MAX: u64 = 1024 * 1024;

/// The one application protocol spoken over TLS (ALPN): real mode's
/// servers and clients speak HTTP/1.1 only.
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// A TLS setting that cannot be used: a file unreadable or invalid, or no
/// roots to trust. Each names the file and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsConfigError {
    /// The file could not be read.
    #[error("cannot read the {what} {path}: {reason}")]
    Unreadable {
        /// Which file it is (`certificate file`, `key file`, `CA file`).
        what: &'static str,
        /// The path given.
        path: PathBuf,
        /// The OS's reason.
        reason: String,
    },
    /// The file is larger than [`PEM_FILE_BYTES_MAX`].
    #[error("the {what} {path} is over the {limit_bytes}-byte limit")]
    TooLarge {
        /// Which file it is.
        what: &'static str,
        /// The path given.
        path: PathBuf,
        /// [`PEM_FILE_BYTES_MAX`].
        limit_bytes: u64,
    },
    /// The file is not PEM, or holds nothing of the kind wanted.
    #[error("the {what} {path} holds no usable {expected}: {reason}")]
    Invalid {
        /// Which file it is.
        what: &'static str,
        /// The path given.
        path: PathBuf,
        /// What it should hold (`PEM certificate`, `PEM private key`).
        expected: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The certificate chain and the key do not make a server (the key is
    /// of an unsupported kind, or not the certificate's).
    #[error("the certificate {cert} and the key {key} cannot serve TLS: {reason}")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason.
        reason: String,
    },
    /// The system's trust store gave no usable root.
    #[error("no system root certificate could be loaded: {reason}")]
    NoSystemRoots {
        /// What the loader said.
        reason: String,
    },
}

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

/// The crypto provider: `ring`, named here so that no other provider a
/// dependency might enable is picked by accident.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

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
/// what every client (the drive client, [`send`](super::send)) opens.
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

/// The server side of TLS: a certificate chain and its key, loaded once,
/// cheap to clone.
#[derive(Clone)]
pub struct TlsServer {
    acceptor: tokio_rustls::TlsAcceptor,
    handshake_timeout: Duration,
}

impl fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("TlsServer")
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl TlsServer {
    /// A server presenting the PEM certificate chain in `cert` (its own
    /// certificate first) with the PEM private key in `key` (PKCS#8,
    /// PKCS#1 or SEC1), with [`TLS_HANDSHAKE_TIMEOUT_DEFAULT`].
    ///
    /// # Errors
    /// Either file unreadable or invalid, or a key that is not the
    /// certificate's.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, TlsConfigError> {
        let chain = read_certificates("certificate file", cert)?;
        let key_der = read_key(key)?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports rustls's default protocol versions")
            .with_no_client_auth()
            .with_single_cert(chain, key_der)
            .map_err(|e| TlsConfigError::Mismatch {
                cert: cert.to_owned(),
                key: key.to_owned(),
                reason: e.to_string(),
            })?;
        config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
        Ok(Self {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            handshake_timeout: TLS_HANDSHAKE_TIMEOUT_DEFAULT,
        })
    }

    /// The same server with another handshake bound.
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

    /// `listener` with TLS on every connection it accepts (the handshake
    /// runs in the connection's task; see the module's notes).
    pub fn wrap(&self, listener: Box<dyn Listener>) -> Box<dyn Listener> {
        Box::new(TlsListener {
            inner: listener,
            server: self.clone(),
        })
    }
}

/// Reads `path` whole, refusing more than [`PEM_FILE_BYTES_MAX`].
fn read_bounded(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsConfigError> {
    let unreadable = |e: io::Error| TlsConfigError::Unreadable {
        what,
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let mut bytes = Vec::new();
    file.take(PEM_FILE_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > PEM_FILE_BYTES_MAX {
        return Err(TlsConfigError::TooLarge {
            what,
            path: path.to_owned(),
            limit_bytes: PEM_FILE_BYTES_MAX,
        });
    }
    Ok(bytes)
}

/// The PEM certificates of `path`, at least one.
fn read_certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let invalid = |reason: String| TlsConfigError::Invalid {
        what,
        path: path.to_owned(),
        expected: "PEM certificate",
        reason,
    };
    let bytes = read_bounded(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(e.to_string()))?;
    if certs.is_empty() {
        return Err(invalid("no CERTIFICATE block".to_owned()));
    }
    Ok(certs)
}

/// The PEM private key of `path`.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsConfigError> {
    const WHAT: &str = "key file";
    let bytes = read_bounded(WHAT, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsConfigError::Invalid {
        what: WHAT,
        path: path.to_owned(),
        expected: "PEM private key",
        reason: e.to_string(),
    })
}

/// A listener whose connections are [`TlsConn`]s.
struct TlsListener {
    inner: Box<dyn Listener>,
    server: TlsServer,
}

impl Listener for TlsListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxConn, SocketAddr)>> {
        Box::pin(async move {
            let (conn, peer) = self.inner.accept().await?;
            let tls = TlsConn {
                state: ConnState::Handshaking {
                    accept: Box::new(self.server.acceptor.accept(conn)),
                    deadline: Box::pin(tokio::time::sleep(self.server.handshake_timeout)),
                    timeout: self.server.handshake_timeout,
                },
                peer,
            };
            Ok((Box::new(tls) as BoxConn, peer))
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A server connection whose TLS handshake runs on first use, bounded by
/// the handshake timeout, in the task that serves it.
struct TlsConn {
    state: ConnState,
    peer: SocketAddr,
}

enum ConnState {
    /// The handshake (boxed, as the stream: rustls's state is large), and
    /// when it must be done by.
    Handshaking {
        accept: Box<tokio_rustls::Accept<BoxConn>>,
        deadline: Pin<Box<tokio::time::Sleep>>,
        timeout: Duration,
    },
    /// Handshake done: the TLS stream.
    Ready(Box<tokio_rustls::server::TlsStream<BoxConn>>),
    /// The handshake failed or timed out; the connection is dead.
    Failed,
}

impl TlsConn {
    /// The TLS stream, once the handshake is done (driving it meanwhile).
    fn poll_stream(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<&mut tokio_rustls::server::TlsStream<BoxConn>>> {
        if let ConnState::Handshaking {
            accept,
            deadline,
            timeout,
        } = &mut self.state
        {
            let failed = match Pin::new(accept.as_mut()).poll(cx) {
                Poll::Ready(Ok(stream)) => {
                    self.state = ConnState::Ready(Box::new(stream));
                    None
                }
                Poll::Ready(Err(error)) => Some(error),
                Poll::Pending => match deadline.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(()) => Some(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "the TLS handshake did not finish within {} ms",
                            timeout.as_millis()
                        ),
                    )),
                },
            };
            if let Some(error) = failed {
                tracing::info!(peer = %self.peer, %error, "TLS handshake failed");
                self.state = ConnState::Failed;
                return Poll::Ready(Err(error));
            }
        }
        match &mut self.state {
            ConnState::Ready(stream) => Poll::Ready(Ok(&mut **stream)),
            ConnState::Failed | ConnState::Handshaking { .. } => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the TLS handshake failed",
            ))),
        }
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut().poll_stream(cx) {
            Poll::Ready(Ok(stream)) => Pin::new(stream).poll_read(cx, buf),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().poll_stream(cx) {
            Poll::Ready(Ok(stream)) => Pin::new(stream).poll_write(cx, buf),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().poll_stream(cx) {
            Poll::Ready(Ok(stream)) => Pin::new(stream).poll_flush(cx),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().state {
            ConnState::Ready(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
            // Nothing was said over TLS: dropping the socket closes it.
            ConnState::Handshaking { .. } | ConnState::Failed => Poll::Ready(Ok(())),
        }
    }
}
