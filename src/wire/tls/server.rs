//! The server side: a certificate and its key ([`TlsServer`]), and the
//! listener wrapper whose connections ([`TlsConn`]) handshake on first use,
//! in their own task, within the handshake bound (see the parent module's
//! notes).

use super::{
    provider, read_bounded, read_certificates, TlsConfigError, ALPN_HTTP1,
    TLS_HANDSHAKE_TIMEOUT_DEFAULT,
};
use crate::env::{BoxConn, BoxFuture, Listener};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

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
