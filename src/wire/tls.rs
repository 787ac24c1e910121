//! TLS for real mode, in one place: which roots a client trusts and its
//! handshake ([`TlsClient`], [`dial`], in `client.rs`), and a server's
//! certificate, key and handshake ([`TlsServer`], whose
//! [`wrap`](TlsServer::wrap) turns a listener's connections into TLS ones,
//! in `server.rs`). This file holds what both share: the bounds, the
//! provider and reading PEM files. rustls on the `ring` provider.
//!
//! Simulation never comes here: it passes no [`TlsClient`] and wraps no
//! listener, so its connections stay plain TCP on turmoil, byte for byte.
//!
//! # Implementation Details
//!
//! A server's handshake runs in the task that serves the connection, not in
//! the accept loop: [`TlsServer::wrap`]'s listener hands out a `TlsConn`
//! at once, and the handshake advances when hyper first reads from it. So a
//! peer that never finishes its handshake holds one connection slot
//! (counted against [`ServeOptions::connections_max`](super::ServeOptions::connections_max)
//! like any connection) for at most the handshake timeout, and never holds
//! up the accept loop; hyper's header read timeout starts after it.
//!
//! Invariants: every handshake, client or server, is bounded in time; PEM
//! files are read within [`PEM_FILE_BYTES_MAX`]; every error names the file
//! or the address, and the reason.

mod client;
mod server;

pub use client::{dial, DialError, Roots, TlsClient};
pub use server::TlsServer;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

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
pub(super) const ALPN_HTTP1: &[u8] = b"http/1.1";

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

/// The crypto provider: `ring`, named here so that no other provider a
/// dependency might enable is picked by accident.
pub(super) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads `path` whole, refusing more than [`PEM_FILE_BYTES_MAX`].
pub(super) fn read_bounded(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsConfigError> {
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
pub(super) fn read_certificates(
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
