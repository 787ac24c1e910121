//! [`SharedConfig`]: where the shared slot store is, who this replica is,
//! and how long its leases last.

use std::time::Duration;

/// Lease TTL when none is given: long enough that a renewal every third of
/// it survives a few slow round trips, short enough that a dead replica's
/// slots come back within seconds.
pub const LEASE_TTL_DEFAULT: Duration = Duration::from_secs(10);
/// Shortest lease TTL accepted: renewals go out every third of it, and a
/// round trip to the store must fit well inside that.
pub const LEASE_TTL_MIN: Duration = Duration::from_millis(300);
/// Longest lease TTL accepted (issue 11): a dead replica's slots stay
/// taken at most this long.
pub const LEASE_TTL_MAX: Duration = Duration::from_secs(30);
/// Longest replica id (it is stored with every lease).
pub const REPLICA_ID_LEN_MAX: usize = 64;
/// The key prefix when none is given.
pub const KEY_PREFIX_DEFAULT: &str = "upsim:";
/// Bound on connecting to the store and on each reply.
pub const STORE_IO_TIMEOUT: Duration = Duration::from_secs(1);

/// A shared slot store and this replica's part in it.
///
/// Defaults: `key_prefix` [`KEY_PREFIX_DEFAULT`], `lease_ttl`
/// [`LEASE_TTL_DEFAULT`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedConfig {
    /// `redis://host:port/` (or with a database number).
    pub url: String,
    /// Prefix of every key: one deployment per prefix. Tests use a random
    /// one each.
    pub key_prefix: String,
    /// This replica's name, stored with its leases: only it may renew or
    /// release them.
    pub replica_id: String,
    /// How long a lease lasts unless renewed, on the store's clock.
    pub lease_ttl: Duration,
}

/// A [`SharedConfig`] that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SharedConfigError {
    /// The TTL is outside the accepted range.
    #[error("lease TTL {ttl_ms} ms is outside {min_ms}..={max_ms} ms")]
    LeaseTtl {
        /// Given.
        ttl_ms: u128,
        /// [`LEASE_TTL_MIN`].
        min_ms: u128,
        /// [`LEASE_TTL_MAX`].
        max_ms: u128,
    },
    /// The replica id is empty, too long or has characters outside
    /// `[A-Za-z0-9._-]`.
    #[error("replica id {id:?} must be 1 to {REPLICA_ID_LEN_MAX} characters of [A-Za-z0-9._-]")]
    ReplicaId {
        /// Given.
        id: String,
    },
    /// The key prefix is empty or has whitespace.
    #[error("key prefix {prefix:?} must be non-empty and without whitespace")]
    KeyPrefix {
        /// Given.
        prefix: String,
    },
}

impl SharedConfig {
    /// A config with the default prefix and TTL.
    pub fn new(url: impl Into<String>, replica_id: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            key_prefix: KEY_PREFIX_DEFAULT.into(),
            replica_id: replica_id.into(),
            lease_ttl: LEASE_TTL_DEFAULT,
        }
    }

    /// Checks the TTL, the replica id and the prefix.
    pub fn validate(&self) -> Result<(), SharedConfigError> {
        if !(LEASE_TTL_MIN..=LEASE_TTL_MAX).contains(&self.lease_ttl) {
            return Err(SharedConfigError::LeaseTtl {
                ttl_ms: self.lease_ttl.as_millis(),
                min_ms: LEASE_TTL_MIN.as_millis(),
                max_ms: LEASE_TTL_MAX.as_millis(),
            });
        }
        let id = &self.replica_id;
        let id_ok = !id.is_empty()
            && id.len() <= REPLICA_ID_LEN_MAX
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !id_ok {
            return Err(SharedConfigError::ReplicaId { id: id.clone() });
        }
        if self.key_prefix.is_empty() || self.key_prefix.chars().any(char::is_whitespace) {
            return Err(SharedConfigError::KeyPrefix {
                prefix: self.key_prefix.clone(),
            });
        }
        Ok(())
    }

    /// How often a holder renews its lease: a third of the TTL, so two
    /// renewals in a row may fail before the lease runs out.
    pub fn renew_interval(&self) -> Duration {
        self.lease_ttl / 3
    }

    /// How long a holder trusts its lease after sending a renewal (or the
    /// acquire) that succeeded: the TTL less 10 %, a margin for the
    /// replica's clock running slower than the store's.
    pub fn trusted_for(&self) -> Duration {
        self.lease_ttl - self.lease_ttl / 10
    }

    /// A queued waiter not polled for this long is dropped from the store's
    /// queue (its replica died or paused): the lease TTL.
    pub fn waiter_ttl(&self) -> Duration {
        self.lease_ttl
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_bad_values_are_refused() {
        let ok = SharedConfig::new("redis://127.0.0.1:6379/", "replica-1");
        assert_eq!(ok.validate(), Ok(()));
        assert!(ok.renew_interval() < ok.trusted_for() && ok.trusted_for() < ok.lease_ttl);
        for ttl_ms in [0, 299, 30_001] {
            let c = SharedConfig {
                lease_ttl: Duration::from_millis(ttl_ms),
                ..ok.clone()
            };
            assert!(
                matches!(c.validate(), Err(SharedConfigError::LeaseTtl { .. })),
                "{ttl_ms}"
            );
        }
        for id in ["", "a b", "x:y", &"r".repeat(65)] {
            let c = SharedConfig {
                replica_id: id.into(),
                ..ok.clone()
            };
            assert!(
                matches!(c.validate(), Err(SharedConfigError::ReplicaId { .. })),
                "{id:?}"
            );
        }
        let c = SharedConfig {
            key_prefix: " ".into(),
            ..ok
        };
        assert!(matches!(
            c.validate(),
            Err(SharedConfigError::KeyPrefix { .. })
        ));
    }
}
