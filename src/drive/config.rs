//! The emulator's knobs ([`DriveConfig`]), their defaults and their
//! validation, and the fixed limits that are not knobs.

use super::token_endpoint::OAuthClients;
use crate::auth::TokenTable;
use crate::ids::IdSource;
use crate::units::{DRIVE_CHUNK_ALIGN_BYTES, KIB, MIB};
use crate::wire::ServeOptions;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Largest initiation (metadata) body: Drive's metadata is a few hundred
/// bytes; anything near this is abuse.
pub const METADATA_BYTES_MAX: u64 = 64 * KIB;

/// Most sessions alive at once; initiations beyond answer 429. Bounds the
/// table (each open session holds a storage handle).
pub const LIVE_SESSIONS_MAX: usize = 65_536;

/// Default [`DriveConfig::piece_bytes_max`]: 1,024 units of 256 KiB.
pub const PIECE_BYTES_MAX_DEFAULT: u64 = 256 * MIB;

/// Default [`DriveConfig::commit_log_records_max`]: far above what a
/// simulated run commits (the oracle needs every record: a 3.38 GB
/// reference upload in 256 KiB pieces is about 13,000), and about 5 MiB of
/// records for a long-running real drive.
pub const COMMIT_LOG_RECORDS_MAX_DEFAULT: usize = 65_536;

/// Default [`DriveConfig::finished_files_max`]: as many as the session
/// table can hold ([`LIVE_SESSIONS_MAX`]), finished sessions included.
pub const FINISHED_FILES_MAX_DEFAULT: usize = LIVE_SESSIONS_MAX;

/// Default [`DriveConfig::request_header_bytes_max`]: Drive requests carry
/// a few headers; an OAuth token is under 2 KiB.
pub const DRIVE_REQUEST_HEADER_BYTES_MAX_DEFAULT: usize = 16 * KIB as usize;

// The defaults hold together (what `DriveConfig::validate` checks of a
// configured value, checked of the defaults at compile time).
const _: () = assert!(PIECE_BYTES_MAX_DEFAULT >= DRIVE_CHUNK_ALIGN_BYTES);
const _: () = assert!(PIECE_BYTES_MAX_DEFAULT.is_multiple_of(DRIVE_CHUNK_ALIGN_BYTES));
const _: () = assert!(COMMIT_LOG_RECORDS_MAX_DEFAULT > 0 && FINISHED_FILES_MAX_DEFAULT > 0);
// Finished files are kept for as long as the session table could still
// answer for them.
const _: () = assert!(FINISHED_FILES_MAX_DEFAULT >= LIVE_SESSIONS_MAX);

/// The emulator's knobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DriveConfig {
    /// Scheme, host and port that session URIs start with. Default `http://drive:8080`.
    pub public_base_url: String,
    /// A session idle longer than this is gone (404). Default 7 days.
    pub session_ttl: Duration,
    /// Largest piece accepted; larger ones answer 413. At least one
    /// 256 KiB unit. Default [`PIECE_BYTES_MAX_DEFAULT`] (256 MiB).
    ///
    /// The receiver's side of the concept the backend calls
    /// `BackendConfig::piece_bytes_max` (the largest piece it sends, default
    /// 32 MiB). The sender's limit must be ≤ this one, or every full-size
    /// piece is refused with 413 and no upload progresses. The defaults
    /// differ on purpose: this one only bounds what one peer can make the
    /// drive stream into a session, and is generous so any sane client fits
    /// (as Drive accepts large pieces); the backend keeps a piece's chunks
    /// buffered until the drive's reply confirms them, and its request
    /// timeout must cover sending a whole piece, so it chooses smaller ones.
    /// Named `piece_size_bytes_max` before; old files still load.
    #[serde(alias = "piece_size_bytes_max")]
    pub piece_bytes_max: u64,
    /// A piece body that delivers nothing for this long is treated as broken. Default 60 s.
    pub piece_idle_timeout: Duration,
    /// Seed of the ChaCha8 RNG that upload and file ids come from. Default 0.
    pub seed: u64,
    /// Where upload and file ids come from. Default [`IdSource::Seeded`];
    /// real mode uses [`IdSource::Os`]: a session URI is a capability, and
    /// ids must not repeat after a restart.
    pub id_source: IdSource,
    /// Bearer tokens accepted and the users they stand for; `None`: no
    /// authentication (simulation). Default `None`. Never serialised:
    /// tokens come from a token file.
    #[serde(skip)]
    pub access_tokens: Option<TokenTable>,
    /// OAuth clients the token endpoint (`POST /token`) serves; with them,
    /// the access tokens it issued are accepted (beside `access_tokens`)
    /// until they expire. `None`: no token endpoint. Default `None`. Never
    /// serialised: secrets come from a file.
    #[serde(skip)]
    pub oauth_clients: Option<OAuthClients>,
    /// Largest request header block (target, names and values) answered
    /// normally; beyond it 431. Default 16 KiB.
    pub request_header_bytes_max: usize,
    /// Most commit records kept for [`DriveControl::commit_log`](super::DriveControl::commit_log)
    /// (the newest; older ones are dropped and counted). At least 1. Default
    /// [`COMMIT_LOG_RECORDS_MAX_DEFAULT`] (65,536).
    pub commit_log_records_max: usize,
    /// Most finished files kept for [`DriveControl::finished_files`](super::DriveControl::finished_files)
    /// (the newest). At least 1. Default [`FINISHED_FILES_MAX_DEFAULT`] (65,536).
    pub finished_files_max: usize,
    /// How connections are served (header read timeout, buffer bound,
    /// close grace). Default: hyper's buffer bound, no header timeout, as
    /// the simulations have always run. Not serialised.
    #[serde(skip, default = "drive_serve_options")]
    pub serve: ServeOptions,
}

/// The emulator's default [`ServeOptions`]: hyper's own buffer bound (what
/// the simulations ran with before the options existed).
fn drive_serve_options() -> ServeOptions {
    ServeOptions {
        buf_bytes_max: None,
        ..ServeOptions::default()
    }
}

impl Default for DriveConfig {
    fn default() -> Self {
        Self {
            public_base_url: "http://drive:8080".to_owned(),
            session_ttl: Duration::from_secs(7 * 24 * 60 * 60),
            piece_bytes_max: PIECE_BYTES_MAX_DEFAULT,
            piece_idle_timeout: Duration::from_secs(60),
            seed: 0,
            id_source: IdSource::Seeded,
            access_tokens: None,
            oauth_clients: None,
            request_header_bytes_max: DRIVE_REQUEST_HEADER_BYTES_MAX_DEFAULT,
            commit_log_records_max: COMMIT_LOG_RECORDS_MAX_DEFAULT,
            finished_files_max: FINISHED_FILES_MAX_DEFAULT,
            serve: drive_serve_options(),
        }
    }
}

/// A [`DriveConfig`] that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriveConfigError {
    /// Pieces could never carry a whole unit.
    #[error("piece_bytes_max {piece_bytes_max} is below the {align_bytes}-byte unit every piece but the last must be a multiple of")]
    PieceLimitBelowUnit {
        /// The configured limit.
        piece_bytes_max: u64,
        /// The unit.
        align_bytes: u64,
    },
    /// A zero duration would expire or break everything at once.
    #[error("{field} is zero")]
    ZeroDuration {
        /// Which field.
        field: &'static str,
    },
    /// A retention of zero would keep nothing to observe.
    #[error("{field} is zero: keep at least one")]
    ZeroRetention {
        /// Which field.
        field: &'static str,
    },
    /// The base URL is not `http://host:port`-like.
    #[error("public_base_url {given:?} does not start with http:// or https://")]
    BadBaseUrl {
        /// What was configured.
        given: String,
    },
}

impl DriveConfig {
    /// Checks the knobs hold together.
    pub fn validate(&self) -> Result<(), DriveConfigError> {
        if self.piece_bytes_max < DRIVE_CHUNK_ALIGN_BYTES {
            return Err(DriveConfigError::PieceLimitBelowUnit {
                piece_bytes_max: self.piece_bytes_max,
                align_bytes: DRIVE_CHUNK_ALIGN_BYTES,
            });
        }
        for (field, value) in [
            ("session_ttl", self.session_ttl),
            ("piece_idle_timeout", self.piece_idle_timeout),
        ] {
            if value.is_zero() {
                return Err(DriveConfigError::ZeroDuration { field });
            }
        }
        for (field, value) in [
            ("commit_log_records_max", self.commit_log_records_max),
            ("finished_files_max", self.finished_files_max),
        ] {
            if value == 0 {
                return Err(DriveConfigError::ZeroRetention { field });
            }
        }
        let url = &self.public_base_url;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(DriveConfigError::BadBaseUrl { given: url.clone() });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This is a regression test that ensures configuration files written
    /// before the rename (`piece_size_bytes_max`) still load.
    #[test]
    fn the_old_piece_limit_name_still_loads() -> Result<(), serde_json::Error> {
        let old: DriveConfig = serde_json::from_str(r#"{"piece_size_bytes_max": 1048576}"#)?;
        let new: DriveConfig = serde_json::from_str(r#"{"piece_bytes_max": 1048576}"#)?;
        assert_eq!(old.piece_bytes_max, MIB);
        assert_eq!(old, new);
        Ok(())
    }

    #[test]
    fn validation_names_the_broken_knob() {
        assert_eq!(DriveConfig::default().validate(), Ok(()));
        let small_pieces = DriveConfig {
            piece_bytes_max: DRIVE_CHUNK_ALIGN_BYTES - 1,
            ..DriveConfig::default()
        };
        assert!(matches!(
            small_pieces.validate(),
            Err(DriveConfigError::PieceLimitBelowUnit { .. })
        ));
        for (config, field) in [
            (
                DriveConfig {
                    commit_log_records_max: 0,
                    ..DriveConfig::default()
                },
                "commit_log_records_max",
            ),
            (
                DriveConfig {
                    finished_files_max: 0,
                    ..DriveConfig::default()
                },
                "finished_files_max",
            ),
        ] {
            assert_eq!(
                config.validate(),
                Err(DriveConfigError::ZeroRetention { field })
            );
        }
    }
}
