//! Where upload and session ids come from.
//!
//! In simulation ids come from a seeded RNG, so that a seed replays the same
//! world. In real mode an id is a capability (whoever knows a drive session
//! URI can write to it; an upload id is half of what a chunk request needs),
//! so it must be unguessable and must not repeat after a restart: 128 bits
//! from the OS.
//!
//! Invariant: every id is 32 lowercase hex digits, whatever its source.

use serde::{Deserialize, Serialize};

/// Declares an id newtype over the 32-hex-digit string every id is.
///
/// The newtypes keep ids of different things apart at compile time (an
/// upload id cannot be passed where a drive session id is meant); on the
/// wire and in traces they are the same plain strings as before
/// (`#[serde(transparent)]`), so no wire format or trace hash changes.
macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps an id string as it came (from a generator, a path, a
            /// journal or a peer's reply). Whether such an id names anything
            /// is the owning map's business: an unknown id is answered
            /// `404`, never trusted.
            pub fn new(id: impl Into<String>) -> Self {
                Self(id.into())
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
    };
}

id_type!(
    /// The backend's id of one upload (chunk API: `/uploads/{id}`).
    UploadId
);

id_type!(
    /// The drive's id of one resumable session (the `upload_id` query
    /// parameter of a session URI).
    SessionId
);

/// Which source a server draws its ids from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdSource {
    /// The server's seeded RNG (simulation: replayable). The default.
    #[default]
    Seeded,
    /// 128 bits from the operating system (real mode: unguessable, never
    /// repeated across restarts).
    Os,
}

/// The OS could not give random bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the operating system's random source failed: {reason}")]
pub struct OsRandomError {
    /// What `getrandom` said.
    pub reason: String,
}

/// An id of 128 bits drawn from `rng` (a seeded one, in simulation), as
/// 32 lowercase hex digits: the high 64 bits drawn first.
pub fn seeded_id(rng: &mut impl rand::Rng) -> String {
    format!("{:016x}{:016x}", rng.random::<u64>(), rng.random::<u64>())
}

/// An id of 128 random bits from the OS, as 32 lowercase hex digits.
pub fn os_random_id() -> Result<String, OsRandomError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| OsRandomError {
        reason: e.to_string(),
    })?;
    Ok(format!("{:032x}", u128::from_be_bytes(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_ids_are_32_hex_digits_and_differ() {
        let a = os_random_id().expect("the OS has randomness");
        let b = os_random_id().expect("the OS has randomness");
        assert_eq!(a.len(), 32);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
        assert_ne!(a, b);
    }
}
