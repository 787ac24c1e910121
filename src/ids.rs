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
