//! [`BackendConfig`]: the backend's settings beyond the profile, their
//! defaults (one named constant each), and [`BackendEnv`], what it runs on.

use crate::admission::Admission;
use crate::auth::Auth;
use crate::env::{Clock, Network};
use crate::ids::IdSource;
use crate::profile::Profile;
use crate::trace::Tracer;
use crate::wire::ServeOptions;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

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
    /// Largest piece sent to the drive in one PUT. Default 32 MiB.
    pub piece_bytes_max: u64,
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
}

impl BackendConfig {
    /// Defaults around `profile`.
    pub fn new(profile: Profile, drive_base_url: impl Into<String>, seed: u64) -> Self {
        Self {
            profile,
            drive_base_url: drive_base_url.into(),
            drive_token: None,
            drive_token_file: None,
            piece_bytes_max: 32 * 1024 * 1024,
            upload_idle_timeout: Duration::from_secs(600),
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
        }
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
