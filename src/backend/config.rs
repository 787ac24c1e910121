//! [`BackendConfig`]: the backend's settings beyond the profile, their
//! defaults (one named constant each), and [`BackendEnv`], what it runs on.

use crate::admission::Admission;
use crate::auth::Auth;
use crate::checksum::FileDigestKind;
use crate::drive::{CredentialsError, OAuthCredentials};
use crate::env::{Clock, Network};
use crate::ids::IdSource;
use crate::profile::Profile;
use crate::trace::Tracer;
use crate::wire::tls::TlsClient;
use crate::wire::ServeOptions;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::events::EventsConfig;
use super::slip::Slip;
use super::store::UploadStore;

/// Default [`BackendConfig::request_header_bytes_max`]: a chunk request
/// carries a handful of short headers (well under 1 KiB); 16 KiB leaves room
/// for proxies' additions and is a quarter of hyper's hard bound
/// ([`crate::wire::HEADER_BYTES_MAX`]), so oversized blocks in between get a
/// JSON 431 with a reason rather than hyper's bare one.
pub const REQUEST_HEADER_BYTES_MAX_DEFAULT: usize = 16 * 1024;
const _: () = assert!(REQUEST_HEADER_BYTES_MAX_DEFAULT < crate::wire::HEADER_BYTES_MAX);

/// Default [`BackendConfig::chunk_body_idle_timeout`]: longer than any
/// simulated partition (so simulations behave as before) and than a TCP
/// retransmission backoff on a lossy link, short enough that a trickling
/// peer cannot hold a handler for long.
pub const CHUNK_BODY_IDLE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(60);

/// Real mode's [`BackendConfig::chunk_body_idle_timeout`] (`upsim serve`):
/// on real TCP a stalled connection recovers in seconds or not at all, so
/// real mode frees a stalled handler sooner. The library default stays at
/// [`CHUNK_BODY_IDLE_TIMEOUT_DEFAULT`] because the simulations were
/// calibrated (and their reference trace hashed) with it: simulated
/// partitions may outlast 30 s without failing a chunk.
pub const CHUNK_BODY_IDLE_TIMEOUT_REAL: Duration = Duration::from_secs(30);
const _: () =
    assert!(CHUNK_BODY_IDLE_TIMEOUT_REAL.as_secs() <= CHUNK_BODY_IDLE_TIMEOUT_DEFAULT.as_secs());
const _: () = assert!(CHUNK_BODY_IDLE_TIMEOUT_REAL.as_secs() > 0);

/// Default [`BackendConfig::ended_uploads_retained_max`]: an ended
/// upload's entry is a few hundred bytes, so 10 000 of them stay under a
/// few MiB, and they cover far more uploads than end within any client's
/// polling interval.
pub const ENDED_UPLOADS_RETAINED_MAX_DEFAULT: usize = 10_000;

/// Default [`BackendConfig::ended_upload_retention`]: a day. A client
/// learns that its upload ended at its next status poll (every second by
/// default) and gives up after 15 minutes without progress, so a day
/// leaves every client still asking the real answer, and a resumed client
/// after an overnight outage too.
pub const ENDED_UPLOAD_RETENTION_DEFAULT: Duration = Duration::from_secs(24 * 60 * 60);
const _: () = assert!(ENDED_UPLOAD_RETENTION_DEFAULT.as_secs() > 15 * 60);
const _: () = assert!(ENDED_UPLOADS_RETAINED_MAX_DEFAULT > 0);

/// Default [`BackendConfig::upload_idle_timeout`]: ten minutes, well past
/// any client's retry budget, so only a client that is gone is failed.
pub const UPLOAD_IDLE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(600);

/// Default [`BackendConfig::drain_timeout`]: an 8 MiB chunk at 10 Mbit/s
/// takes under 7 s.
pub const DRAIN_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);

/// Backend settings beyond the profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    /// Admission and retry settings.
    pub profile: Profile,
    /// The drive's base URL, e.g. `http://drive:443`.
    pub drive_base_url: String,
    /// Bearer token for the drive, if it wants one.
    pub drive_token: Option<String>,
    /// A file holding the drive's access token, read again before every
    /// drive request (so an external refresher can rotate it); wins over
    /// `drive_token`. Default `None`.
    pub drive_token_file: Option<PathBuf>,
    /// The roots an `https://` drive's certificate is checked against;
    /// needed for an `https://` drive, refused for an `http://` one.
    /// Default `None` (simulation: plain TCP).
    pub drive_tls: Option<TlsClient>,
    /// OAuth credentials (a refresh token): access tokens are fetched from
    /// their token endpoint, shared by every upload, refreshed before they
    /// expire and once on a `401`. Wins over both token options. Default
    /// `None`. Secrets come from a file (`--drive-credentials`).
    pub drive_credentials: Option<OAuthCredentials>,
    /// Largest piece sent to the drive in one PUT. Default 32 MiB.
    pub piece_bytes_max: u64,
    /// The whole-file digest asked of the drive and checked against what
    /// was sent (`backend/sent_digest.rs`). Default
    /// [`FileDigestKind::Crc64Nvme`], the emulator's, near memory speed
    /// (what simulation keeps); `upsim serve` defaults to
    /// [`FileDigestKind::Md5`], the one real Drive reports.
    pub file_digest: FileDigestKind,
    /// An upload with no chunk for this long is failed (client gone).
    /// Default 10 minutes.
    pub upload_idle_timeout: Duration,
    /// Consecutive drive failures that open the breaker. Default 5.
    pub breaker_failures_max: u32,
    /// How long the breaker stays open. Default 30 s.
    pub breaker_cool_down: Duration,
    /// New sessions an upload may start after 404s, in a row without
    /// progress in between, before it fails. Default 3.
    pub session_restarts_max: u32,
    /// Seeds upload ids and backoff jitter.
    pub seed: u64,
    /// Who a request is from. Default [`Auth::UserHeader`].
    pub auth: Auth,
    /// Where upload ids come from. Default [`IdSource::Seeded`] (the
    /// jitter always comes from the seeded RNG).
    pub id_source: IdSource,
    /// Uploads one user may have receiving, resuming or being admitted at
    /// once; one more is refused at once with 429 `too_many_uploads`
    /// instead of queueing. `None`: only admission's slots bound them.
    /// Default `None`.
    pub uploads_per_user_max: Option<u32>,
    /// Largest request header block (request target, names and values)
    /// answered normally; beyond it 431 `header_too_large`. Default
    /// [`REQUEST_HEADER_BYTES_MAX_DEFAULT`].
    pub request_header_bytes_max: usize,
    /// How connections are served (header read timeout, buffer bound,
    /// close grace). Default [`ServeOptions::default`].
    pub serve: ServeOptions,
    /// A chunk body that delivers no byte for this long is refused with
    /// 408 `body_timeout`. Default [`CHUNK_BODY_IDLE_TIMEOUT_DEFAULT`].
    pub chunk_body_idle_timeout: Duration,
    /// On shutdown, how long chunks being received and chunks buffered for
    /// the drive get to finish. Default [`DRAIN_TIMEOUT_DEFAULT`].
    pub drain_timeout: Duration,
    /// Ended uploads (complete, failed, aborted) kept in memory, and in
    /// the store, so that their clients can still read how they ended;
    /// when one more ends, the oldest-ended goes. ≥ 1. Default
    /// [`ENDED_UPLOADS_RETAINED_MAX_DEFAULT`].
    ///
    /// A dropped upload answers like one that never existed: `GET`,
    /// `DELETE` and chunks get 404 `unknown_upload` (which the client
    /// treats as final), and a create retried with its client token makes
    /// a new upload, since the token is dropped with it.
    pub ended_uploads_retained_max: usize,
    /// How long an ended upload is kept at most (checked whenever an
    /// upload is created or ends, so memory stays bounded by the uploads
    /// created). > 0. Default [`ENDED_UPLOAD_RETENTION_DEFAULT`].
    pub ended_upload_retention: Duration,
    /// The progress channel's bounds and timings (`GET
    /// /uploads/{id}/events`). Default [`EventsConfig::default`].
    pub events: EventsConfig,
    /// A deliberate bug for the bug zoo ([`Slip`]); production is
    /// [`Slip::None`], the default, and no command-line flag sets it.
    pub slip: Slip,
}

/// A [`BackendConfig`] that cannot work, from [`BackendConfig::validate`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendConfigError {
    /// The drive credentials cannot be used (their token endpoint).
    #[error("drive credentials: {0}")]
    DriveCredentials(#[from] CredentialsError),
    /// A duration that must be positive is zero.
    #[error("{field} must be positive, not 0")]
    ZeroDuration {
        /// The field.
        field: &'static str,
    },
    /// A count or size that must be at least 1 is zero.
    #[error("{field} must be at least 1, not 0")]
    ZeroCount {
        /// The field.
        field: &'static str,
    },
    /// The header limit is beyond hyper's own bound (which would answer
    /// first, without a JSON body).
    #[error("request_header_bytes_max is {given} bytes; the most is {max}")]
    HeaderLimitTooLarge {
        /// The value given.
        given: usize,
        /// [`crate::wire::HEADER_BYTES_MAX`].
        max: usize,
    },
    /// Event streams could take every connection the server serves,
    /// leaving none for chunks.
    #[error("events.streams_max is {streams_max}; it must be below the server's {connections_max} connections, so that chunks still get through")]
    StreamsCrowdOutChunks {
        /// [`EventsConfig::streams_max`].
        streams_max: usize,
        /// [`ServeOptions::connections_max`].
        connections_max: usize,
    },
    /// The drive's URL is not an HTTP(S) URL.
    #[error("drive_base_url {given:?} must start with http:// or https://")]
    BadDriveUrl {
        /// The value given.
        given: String,
    },
    /// TLS settings and the drive's scheme disagree: an `https://` drive
    /// without `drive_tls`, or `drive_tls` for an `http://` one.
    #[error("drive_base_url {given:?} {reason}")]
    DriveTlsMismatch {
        /// The drive's URL.
        given: String,
        /// Which way they disagree.
        reason: &'static str,
    },
}

impl BackendConfig {
    /// Defaults around `profile`.
    pub fn new(profile: Profile, drive_base_url: impl Into<String>, seed: u64) -> Self {
        Self {
            profile,
            drive_base_url: drive_base_url.into(),
            drive_token: None,
            drive_token_file: None,
            drive_tls: None,
            drive_credentials: None,
            piece_bytes_max: 32 * 1024 * 1024,
            file_digest: FileDigestKind::Crc64Nvme,
            upload_idle_timeout: UPLOAD_IDLE_TIMEOUT_DEFAULT,
            breaker_failures_max: 5,
            breaker_cool_down: Duration::from_secs(30),
            session_restarts_max: 3,
            seed,
            auth: Auth::UserHeader,
            id_source: IdSource::Seeded,
            uploads_per_user_max: None,
            request_header_bytes_max: REQUEST_HEADER_BYTES_MAX_DEFAULT,
            serve: ServeOptions::default(),
            chunk_body_idle_timeout: CHUNK_BODY_IDLE_TIMEOUT_DEFAULT,
            drain_timeout: DRAIN_TIMEOUT_DEFAULT,
            ended_uploads_retained_max: ENDED_UPLOADS_RETAINED_MAX_DEFAULT,
            ended_upload_retention: ENDED_UPLOAD_RETENTION_DEFAULT,
            events: EventsConfig::default(),
            slip: Slip::None,
        }
    }

    /// Checks what a backend cannot work with; [`Backend::new`](super::Backend::new)
    /// calls it. The profile is validated where it is loaded.
    ///
    /// # Errors
    /// The first field found wrong, with its value.
    pub fn validate(&self) -> Result<(), BackendConfigError> {
        for (field, value) in [
            ("upload_idle_timeout", self.upload_idle_timeout),
            ("chunk_body_idle_timeout", self.chunk_body_idle_timeout),
            ("ended_upload_retention", self.ended_upload_retention),
        ]
        .into_iter()
        .chain(self.events.durations())
        {
            if value.is_zero() {
                return Err(BackendConfigError::ZeroDuration { field });
            }
        }
        for (field, value) in [
            ("piece_bytes_max", self.piece_bytes_max),
            ("breaker_failures_max", u64::from(self.breaker_failures_max)),
            (
                "request_header_bytes_max",
                self.request_header_bytes_max as u64,
            ),
            (
                "ended_uploads_retained_max",
                self.ended_uploads_retained_max as u64,
            ),
            (
                "uploads_per_user_max",
                self.uploads_per_user_max.map_or(1, u64::from),
            ),
        ]
        .into_iter()
        .chain(self.events.counts())
        {
            if value == 0 {
                return Err(BackendConfigError::ZeroCount { field });
            }
        }
        if let Some(connections_max) = self.serve.connections_max {
            if self.events.streams_max >= connections_max {
                return Err(BackendConfigError::StreamsCrowdOutChunks {
                    streams_max: self.events.streams_max,
                    connections_max,
                });
            }
        }
        if self.request_header_bytes_max > crate::wire::HEADER_BYTES_MAX {
            return Err(BackendConfigError::HeaderLimitTooLarge {
                given: self.request_header_bytes_max,
                max: crate::wire::HEADER_BYTES_MAX,
            });
        }
        let url = &self.drive_base_url;
        let https = url.starts_with("https://");
        if !(url.starts_with("http://") || https) {
            return Err(BackendConfigError::BadDriveUrl { given: url.clone() });
        }
        let mismatch = match (https, &self.drive_tls) {
            (true, None) => Some("is https:// but no TLS roots (drive_tls) are set"),
            (false, Some(_)) => Some("is plain http:// but TLS roots (drive_tls) are set"),
            _ => None,
        };
        if let Some(reason) = mismatch {
            return Err(BackendConfigError::DriveTlsMismatch {
                given: url.clone(),
                reason,
            });
        }
        Ok(())
    }
}

/// What the backend runs on.
#[derive(Clone)]
pub struct BackendEnv {
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// The network to the drive (shaped in simulation).
    pub drive_net: Arc<dyn Network>,
    /// Admission.
    pub admission: Arc<dyn Admission>,
    /// Persistence.
    pub store: Arc<dyn UploadStore>,
    /// The trace (off in real mode).
    pub tracer: Tracer,
}
