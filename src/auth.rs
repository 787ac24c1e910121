//! Bearer-token authentication shared by the backend and the drive emulator
//! in real mode: the token file format, the table it loads into, and the
//! parsing of an `Authorization: Bearer TOKEN` header.
//!
//! Token file: one `TOKEN USER` pair a line, separated by whitespace; blank
//! lines and lines starting with `#` are ignored.
//!
//! ```text
//! # token                              user
//! 3f9c1e0b7a5d4c2e8f6a1b3c5d7e9f01     alice
//! ```
//!
//! Invariants: a loaded [`TokenTable`] holds at least one token; every token
//! is [`TOKEN_LEN_MIN`] to [`TOKEN_LEN_MAX`] characters of RFC 6750's
//! `b64token` alphabet and appears once; every user is a valid [`UserId`].
//! Tokens never reach a log line or a `Debug` output (only their count does).

use crate::user::UserId;
use http::HeaderMap;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

/// Shortest token accepted: 16 characters of a 66-letter alphabet is about
/// 96 bits even if every character were guessed independently; shorter
/// secrets are typos or placeholders.
pub const TOKEN_LEN_MIN: usize = 16;
/// Longest token accepted; bounds the header a client must send.
pub const TOKEN_LEN_MAX: usize = 512;
/// Largest token file read: ten thousand users at ~100 bytes a line fits
/// with room to spare; anything larger is the wrong file.
pub const TOKEN_FILE_BYTES_MAX: u64 = 4 * 1024 * 1024;

/// The `Authorization` scheme, compared case-insensitively (RFC 9110 §11.1).
const BEARER_SCHEME: &str = "bearer";

/// A token file that could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenFileError {
    /// The file could not be read.
    #[error("cannot read token file {path}: {reason}")]
    Unreadable {
        /// The file.
        path: String,
        /// The OS's reason.
        reason: String,
    },
    /// The file is larger than [`TOKEN_FILE_BYTES_MAX`].
    #[error("token file {path} is {len_bytes} bytes; the limit is {TOKEN_FILE_BYTES_MAX}")]
    TooLarge {
        /// The file.
        path: String,
        /// Its size.
        len_bytes: u64,
    },
    /// A line is not `TOKEN USER`.
    #[error("token file {path} line {line_number}: {reason}")]
    BadLine {
        /// The file.
        path: String,
        /// 1-based line number.
        line_number: usize,
        /// What is wrong (never quotes the token).
        reason: String,
    },
    /// A token appears twice.
    #[error("token file {path} line {line_number}: the token was already given on line {first_line_number}")]
    Duplicate {
        /// The file.
        path: String,
        /// 1-based line number of the repeat.
        line_number: usize,
        /// 1-based line number of the first occurrence.
        first_line_number: usize,
    },
    /// No token at all: a server would refuse everyone.
    #[error("token file {path} holds no tokens")]
    Empty {
        /// The file.
        path: String,
    },
}

/// Tokens and the users they stand for.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct TokenTable {
    users: BTreeMap<String, UserId>,
}

impl fmt::Debug for TokenTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print a secret.
        f.debug_struct("TokenTable")
            .field("tokens", &self.users.len())
            .finish()
    }
}

/// Whether `token` is 16–512 characters of RFC 6750's `b64token` alphabet
/// (`A-Z a-z 0-9 - . _ ~ + /`, then optional trailing `=`).
pub fn is_valid_token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    (TOKEN_LEN_MIN..=TOKEN_LEN_MAX).contains(&token.len())
        && !body.is_empty()
        && body.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
}

impl TokenTable {
    /// A table from pairs, checked like a file's lines.
    pub fn from_pairs<I, T>(pairs: I) -> Result<Self, TokenFileError>
    where
        I: IntoIterator<Item = (T, UserId)>,
        T: Into<String>,
    {
        let text: String = pairs
            .into_iter()
            .map(|(t, u)| format!("{} {u}\n", t.into()))
            .collect();
        Self::parse(&text, "(inline)")
    }

    /// Parses the text of a token file; `path` names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<Self, TokenFileError> {
        let mut users = BTreeMap::new();
        let mut first_seen: BTreeMap<String, usize> = BTreeMap::new();
        for (index, line) in text.lines().enumerate() {
            let line_number = index + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |reason: String| TokenFileError::BadLine {
                path: path.to_owned(),
                line_number,
                reason,
            };
            let mut fields = line.split_whitespace();
            let (Some(token), Some(user), None) = (fields.next(), fields.next(), fields.next())
            else {
                return Err(bad("expected two fields: TOKEN USER".into()));
            };
            if !is_valid_token(token) {
                return Err(bad(format!(
                    "the token ({} characters) is not {TOKEN_LEN_MIN} to {TOKEN_LEN_MAX} characters of A-Z a-z 0-9 - . _ ~ + / (then optional '=')",
                    token.len()
                )));
            }
            let user = UserId::new(user).map_err(|e| bad(e.to_string()))?;
            if let Some(&first_line_number) = first_seen.get(token) {
                return Err(TokenFileError::Duplicate {
                    path: path.to_owned(),
                    line_number,
                    first_line_number,
                });
            }
            first_seen.insert(token.to_owned(), line_number);
            users.insert(token.to_owned(), user);
        }
        if users.is_empty() {
            return Err(TokenFileError::Empty {
                path: path.to_owned(),
            });
        }
        Ok(Self { users })
    }

    /// Reads and parses a token file.
    pub fn load(path: &Path) -> Result<Self, TokenFileError> {
        let name = path.display().to_string();
        let unreadable = |e: std::io::Error| TokenFileError::Unreadable {
            path: name.clone(),
            reason: e.to_string(),
        };
        let len_bytes = std::fs::metadata(path).map_err(unreadable)?.len();
        if len_bytes > TOKEN_FILE_BYTES_MAX {
            return Err(TokenFileError::TooLarge {
                path: name,
                len_bytes,
            });
        }
        let text = std::fs::read_to_string(path).map_err(unreadable)?;
        Self::parse(&text, &name)
    }

    /// The user `token` stands for.
    pub fn user_of(&self, token: &str) -> Option<&UserId> {
        self.users.get(token)
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether the table is empty (a loaded table never is).
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// How the backend learns who sends a request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Auth {
    /// The user names itself in the `x-upsim-user` header. Trusts the
    /// client: for simulations, tests and a backend behind a proxy that
    /// authenticates. The default.
    #[default]
    UserHeader,
    /// `Authorization: Bearer TOKEN`, the token looked up in a table.
    Tokens(TokenTable),
}

/// Why a request's credentials were refused. Every variant answers 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("missing Authorization header: send 'Authorization: Bearer TOKEN'")]
    Missing,
    /// The header is not `Bearer TOKEN` with a well-formed token.
    #[error("malformed Authorization header: expected 'Bearer TOKEN' with a {TOKEN_LEN_MIN}- to {TOKEN_LEN_MAX}-character token")]
    Malformed,
    /// The token is not in the table.
    #[error("unknown bearer token")]
    UnknownToken,
    /// The token was issued (by an OAuth token endpoint) and has expired.
    #[error("access token expired {ago_ms} ms ago: refresh it")]
    Expired {
        /// How long ago, in milliseconds.
        ago_ms: u64,
    },
    /// The token was issued (by an OAuth token endpoint) and revoked.
    #[error("access token revoked: refresh it")]
    Revoked,
}

/// The token of an `Authorization: Bearer TOKEN` header.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthError> {
    let value = headers
        .get(http::header::AUTHORIZATION)
        .ok_or(AuthError::Missing)?;
    let text = value.to_str().map_err(|_| AuthError::Malformed)?;
    let (scheme, token) = text.split_once(' ').ok_or(AuthError::Malformed)?;
    let token = token.trim_start_matches(' ');
    if !scheme.eq_ignore_ascii_case(BEARER_SCHEME) || !is_valid_token(token) {
        return Err(AuthError::Malformed);
    }
    Ok(token)
}

/// The user a request's bearer token stands for.
pub fn authenticate<'t>(
    table: &'t TokenTable,
    headers: &HeaderMap,
) -> Result<&'t UserId, AuthError> {
    let token = bearer_token(headers)?;
    table.user_of(token).ok_or(AuthError::UnknownToken)
}

/// Reads a small credentials file (a token, OAuth client secrets) whole,
/// refusing one over `len_bytes_max` before reading it. The error is the
/// OS's reason or the size with its limit, for the caller's typed error
/// (which names the file).
pub fn read_credentials_file(path: &Path, len_bytes_max: u64) -> Result<String, String> {
    let len_bytes = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    if len_bytes > len_bytes_max {
        return Err(format!(
            "{len_bytes} bytes is over the {len_bytes_max}-byte limit"
        ));
    }
    std::fs::read_to_string(path).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const ALICE: &str = "alice-token-0123456789";

    #[test]
    fn token_files_are_parsed_and_junk_refused() {
        let table = TokenTable::parse(
            &format!("# comment\n\n{ALICE}  alice\nbob-token-abcdefghijkl== bob\n"),
            "t",
        )
        .map_err(|e| e.to_string());
        let table = table.expect("valid file");
        assert_eq!(table.len(), 2);
        assert_eq!(table.user_of(ALICE).map(UserId::as_str), Some("alice"));
        assert!(!format!("{table:?}").contains(ALICE), "Debug leaks a token");
        for (text, needle) in [
            ("short alice\n", "line 1"),
            (&format!("{ALICE}\n") as &str, "two fields"),
            (&format!("{ALICE} bob smith\n"), "two fields"),
            (&format!("{ALICE} b@d\n"), "character"),
            (&format!("{ALICE} a\n{ALICE} b\n"), "line 1"),
            ("# nothing\n", "no tokens"),
        ] {
            let e = TokenTable::parse(text, "t")
                .map(|_| ())
                .map_err(|e| e.to_string());
            assert!(
                e.as_ref().is_err_and(|m| m.contains(needle)),
                "{text:?}: {e:?}"
            );
        }
    }

    #[test]
    fn bearer_headers_are_checked() {
        let table = TokenTable::parse(&format!("{ALICE} alice\n"), "t").expect("valid");
        let mut headers = HeaderMap::new();
        assert_eq!(authenticate(&table, &headers), Err(AuthError::Missing));
        for (value, expected) in [
            (format!("Bearer {ALICE}"), Ok("alice")),
            (format!("bearer {ALICE}"), Ok("alice")),
            (format!("Basic {ALICE}"), Err(AuthError::Malformed)),
            ("Bearer".to_owned(), Err(AuthError::Malformed)),
            ("Bearer short".to_owned(), Err(AuthError::Malformed)),
            (
                "Bearer someone-elses-token-000".to_owned(),
                Err(AuthError::UnknownToken),
            ),
        ] {
            headers.insert(
                http::header::AUTHORIZATION,
                HeaderValue::from_str(&value).expect("ASCII"),
            );
            assert_eq!(
                authenticate(&table, &headers).map(UserId::as_str),
                expected,
                "{value}"
            );
        }
    }
}
