//! User identifiers. A `UserId` is validated once, at the edge; everything
//! inside the system can rely on it being short and printable.
//!
//! The text is shared (`Arc<str>`), not owned: admission keeps the id of
//! every request, held grant, quota charge and per-user count, and a clone
//! must not be an allocation and a copy on every admission.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// Longest accepted user id, in bytes. Bounds log lines and map keys.
pub const USER_ID_LEN_MAX: usize = 64;

/// A validated user id: 1 to [`USER_ID_LEN_MAX`] bytes of `[A-Za-z0-9._-]`.
/// Cheap to clone (the text is shared); compares, orders, hashes and prints
/// as its text.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserId(Arc<str>);

/// Why a user id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadUserId {
    /// The id was empty.
    #[error("user id is empty")]
    Empty,
    /// The id was longer than [`USER_ID_LEN_MAX`].
    #[error("user id is {len_bytes} bytes long; the limit is {USER_ID_LEN_MAX}")]
    TooLong {
        /// Its length.
        len_bytes: usize,
    },
    /// The id held a character outside `[A-Za-z0-9._-]`.
    #[error(
        "user id has the character {found:?} at byte {at}; only A-Z a-z 0-9 . _ - are allowed"
    )]
    BadCharacter {
        /// The first offending character.
        found: char,
        /// Its byte offset.
        at: usize,
    },
}

impl UserId {
    /// Validates and wraps a user id.
    pub fn new(id: impl Into<String>) -> Result<Self, BadUserId> {
        let id = id.into();
        if id.is_empty() {
            return Err(BadUserId::Empty);
        }
        if id.len() > USER_ID_LEN_MAX {
            return Err(BadUserId::TooLong {
                len_bytes: id.len(),
            });
        }
        if let Some((at, found)) = id
            .char_indices()
            .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(BadUserId::BadCharacter { found, at });
        }
        Ok(Self(Arc::from(id)))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for UserId {
    type Error = BadUserId;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<UserId> for String {
    fn from(value: UserId) -> Self {
        value.0.as_ref().to_owned()
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_are_validated() {
        assert_eq!(
            UserId::new("alice-01.x_y").map(|u| u.to_string()),
            Ok("alice-01.x_y".into())
        );
        assert_eq!(UserId::new(""), Err(BadUserId::Empty));
        assert_eq!(
            UserId::new("a".repeat(65)),
            Err(BadUserId::TooLong { len_bytes: 65 })
        );
        assert_eq!(
            UserId::new("bob smith"),
            Err(BadUserId::BadCharacter { found: ' ', at: 3 })
        );
        assert!(UserId::new("é").is_err());
    }
}
