//! The access tokens the emulator's token endpoint has issued, each with
//! its user and expiry, so that a request's bearer token can be judged:
//! valid, expired, or never issued.
//!
//! Invariants: at most [`ACCESS_TOKENS_MAX`] tokens are kept (an issue
//! first drops the expired ones, then the one that expires first); a token
//! is judged against the clock it was issued on (simulated time in a
//! simulation); tokens never reach a log line or a `Debug` output.

use crate::user::UserId;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Most access tokens kept at once. A backend holds one at a time and
/// refreshes it before it expires, so this bounds only what a misbehaving
/// client can make the emulator remember.
pub const ACCESS_TOKENS_MAX: usize = 4096;

/// What a bearer token is to the emulator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenStanding {
    /// Issued and not expired: it stands for this user.
    Valid(UserId),
    /// Issued, expired this long ago.
    Expired {
        /// How long ago it expired.
        ago: Duration,
    },
    /// Issued, then revoked (the token-expiry fault) before it expired.
    Revoked,
    /// Never issued here (or dropped).
    Unknown,
}

struct Issued {
    user: UserId,
    /// Clock time at which it stops being accepted.
    expires_at: Duration,
    /// Revoked before `expires_at`.
    revoked: bool,
}

/// The issued tokens.
#[derive(Default)]
pub(crate) struct IssuedTokens {
    tokens: BTreeMap<String, Issued>,
}

impl fmt::Debug for IssuedTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedTokens")
            .field("count", &self.tokens.len())
            .finish()
    }
}

impl IssuedTokens {
    /// Remembers `token` for `user` until `expires_at`, dropping expired
    /// tokens (and, when still full, the one that expires first).
    pub(crate) fn issue(
        &mut self,
        token: String,
        user: UserId,
        now: Duration,
        expires_at: Duration,
    ) {
        if self.tokens.len() >= ACCESS_TOKENS_MAX {
            self.tokens.retain(|_, issued| issued.expires_at > now);
        }
        while self.tokens.len() >= ACCESS_TOKENS_MAX {
            let first = self
                .tokens
                .iter()
                .min_by_key(|(token, issued)| (issued.expires_at, (*token).clone()))
                .map(|(token, _)| token.clone());
            let Some(first) = first else { break };
            self.tokens.remove(&first);
        }
        let issued = Issued {
            user,
            expires_at,
            revoked: false,
        };
        self.tokens.insert(token, issued);
        assert!(
            self.tokens.len() <= ACCESS_TOKENS_MAX,
            "issued tokens stay bounded"
        );
    }

    /// What `token` is at `now`.
    pub(crate) fn standing(&self, token: &str, now: Duration) -> TokenStanding {
        match self.tokens.get(token) {
            None => TokenStanding::Unknown,
            Some(issued) if now >= issued.expires_at => TokenStanding::Expired {
                ago: now - issued.expires_at,
            },
            Some(issued) if issued.revoked => TokenStanding::Revoked,
            Some(issued) => TokenStanding::Valid(issued.user.clone()),
        }
    }

    /// Every token is revoked (the token-expiry fault); one that has
    /// expired as well still reads as expired. Returns how many were not
    /// revoked before.
    pub(crate) fn revoke_all(&mut self) -> usize {
        let mut revoked = 0;
        for issued in self.tokens.values_mut() {
            if !issued.revoked {
                issued.revoked = true;
                revoked += 1;
            }
        }
        revoked
    }

    /// Tokens kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.tokens.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> UserId {
        UserId::new("alice".to_owned()).expect("valid")
    }

    #[test]
    fn a_token_is_valid_until_it_expires_and_expired_after() {
        let mut tokens = IssuedTokens::default();
        let s = Duration::from_secs;
        tokens.issue("t1".into(), alice(), s(0), s(10));
        assert_eq!(tokens.standing("t1", s(9)), TokenStanding::Valid(alice()));
        assert_eq!(
            tokens.standing("t1", s(12)),
            TokenStanding::Expired { ago: s(2) }
        );
        assert_eq!(tokens.standing("t2", s(1)), TokenStanding::Unknown);
        tokens.issue("t2".into(), alice(), s(1), s(11));
        assert_eq!(tokens.revoke_all(), 2);
        assert_eq!(tokens.standing("t2", s(5)), TokenStanding::Revoked);
        assert_eq!(
            tokens.standing("t2", s(12)),
            TokenStanding::Expired { ago: s(1) },
            "an expired token says so, revoked or not"
        );
        assert_eq!(tokens.revoke_all(), 0, "nothing left to revoke");
    }

    /// A client that refreshes in a loop cannot make the table grow past
    /// its bound: the expired go first, then the soonest to expire.
    #[test]
    fn the_table_stays_bounded_and_drops_the_soonest_to_expire() {
        let mut tokens = IssuedTokens::default();
        let s = Duration::from_secs;
        for i in 0..(ACCESS_TOKENS_MAX as u64 + 50) {
            tokens.issue(format!("t{i}"), alice(), s(0), s(1_000 + i));
            assert!(tokens.len() <= ACCESS_TOKENS_MAX);
        }
        assert_eq!(tokens.len(), ACCESS_TOKENS_MAX);
        assert_eq!(tokens.standing("t0", s(1)), TokenStanding::Unknown);
        let newest = format!("t{}", ACCESS_TOKENS_MAX as u64 + 49);
        assert_eq!(
            tokens.standing(&newest, s(1)),
            TokenStanding::Valid(alice())
        );
        // Once they have expired, one issue clears them all at once.
        tokens.issue("late".into(), alice(), s(1_000_000), s(1_000_010));
        assert_eq!(tokens.len(), 1);
    }
}
