//! Events tokens: short-lived, upload-scoped secrets that open one upload's
//! event stream for a reader that cannot send the API's credentials (a
//! browser's `EventSource` sets no headers).
//!
//! # Implementation Details
//!
//! A token is 128 bits from the OS (never the seeded RNG: it is a secret),
//! issued by `POST /uploads/{id}/events/token` to whoever may read the
//! upload, and good for [`EventsConfig::token_lifetime`](super::EventsConfig)
//! for that upload only. It is checked when a stream opens (an open stream
//! outlives it; a browser's automatic reconnect reuses it until it
//! expires, then the page asks for a new one). It travels in the stream's
//! query string, which nothing here logs; the page that uses it sends no
//! `Referer`.
//!
//! Invariants: at most `tokens_max` grants are kept, and at most
//! [`TOKENS_PER_USER_MAX`] per user (one more replaces the user's oldest,
//! so a user can crowd out only their own); expired grants are dropped
//! whenever one is issued; a grant names one upload and its user.
//! Tokens never reach a log line or a `Debug` output.

use super::super::refusals::Refusal;
use crate::chunk_api::Cause;
use crate::ids::UploadId;
use crate::user::UserId;
use http::StatusCode;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Unexpired tokens one user may hold: a page asks for one per stream it
/// opens (a few files at once, a new one after each expiry), a client for
/// one per upload.
pub const TOKENS_PER_USER_MAX: usize = 16;

/// `Retry-After` of a refused issue: about the time it takes tokens to
/// expire or be redeemed and pruned.
const TOKENS_FULL_RETRY_AFTER: Duration = Duration::from_secs(10);

/// What a token opens.
#[derive(Clone)]
struct Grant {
    upload: UploadId,
    user: UserId,
    issued_at: Duration,
    expires_at: Duration,
}

/// The issued tokens.
pub(crate) struct EventTokens {
    tokens_max: usize,
    /// Token → grant; at most `tokens_max`.
    grants: Mutex<BTreeMap<String, Grant>>,
}

impl fmt::Debug for EventTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print a secret.
        f.debug_struct("EventTokens")
            .field("tokens", &self.grants().len())
            .finish()
    }
}

impl EventTokens {
    /// A table of at most `tokens_max` (≥ 1) tokens.
    pub(crate) fn new(tokens_max: usize) -> Self {
        Self {
            tokens_max,
            grants: Mutex::new(BTreeMap::new()),
        }
    }

    fn grants(&self) -> MutexGuard<'_, BTreeMap<String, Grant>> {
        self.grants.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records `token`, opening `upload` of `user` until `now + lifetime`;
    /// drops expired tokens first, and `user`'s oldest if they hold
    /// [`TOKENS_PER_USER_MAX`].
    ///
    /// # Errors
    /// 503 `event_tokens_full` when the table still holds `tokens_max`.
    pub(crate) fn issue(
        &self,
        token: String,
        upload: UploadId,
        user: UserId,
        now: Duration,
        lifetime: Duration,
    ) -> Result<(), Refusal> {
        let mut grants = self.grants();
        grants.retain(|_, g| g.expires_at > now);
        let mut users: Vec<(Duration, &String)> = grants
            .iter()
            .filter(|(_, g)| g.user == user)
            .map(|(t, g)| (g.issued_at, t))
            .collect();
        if users.len() >= TOKENS_PER_USER_MAX {
            users.sort();
            let oldest = users[0].1.clone();
            grants.remove(&oldest);
        }
        if grants.len() >= self.tokens_max {
            let mut r = Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                Cause::EventTokensFull,
                format!(
                    "{} events tokens are unexpired, the most this server keeps; try again later",
                    grants.len()
                ),
            )
            .retry_after(TOKENS_FULL_RETRY_AFTER);
            r.details = serde_json::json!({
                "tokens_held": grants.len(),
                "tokens_max": self.tokens_max,
            });
            return Err(r);
        }
        grants.insert(
            token,
            Grant {
                upload,
                user,
                issued_at: now,
                expires_at: now + lifetime,
            },
        );
        Ok(())
    }

    /// The user `token` opens upload `upload` for, now.
    ///
    /// # Errors
    /// 401 `unauthenticated`: no such token, one for another upload, or
    /// an expired one (the message says which; never the token).
    pub(crate) fn redeem(
        &self,
        token: &str,
        upload: &str,
        now: Duration,
    ) -> Result<UserId, Refusal> {
        let grants = self.grants();
        let refused = |message: String| {
            Refusal::new(StatusCode::UNAUTHORIZED, Cause::Unauthenticated, message)
        };
        let grant = grants.get(token).ok_or_else(|| {
            refused("unknown events token: ask for one with POST /uploads/{id}/events/token".into())
        })?;
        if grant.upload.as_str() != upload {
            return Err(refused(
                "this events token opens another upload's stream".into(),
            ));
        }
        if grant.expires_at <= now {
            let ago_ms = now.saturating_sub(grant.expires_at).as_millis();
            return Err(refused(format!(
                "events token expired {ago_ms} ms ago: ask for a new one"
            )));
        }
        Ok(grant.user.clone())
    }

    /// Tokens held now (expired ones included until the next issue).
    pub(crate) fn len(&self) -> usize {
        self.grants().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn user(name: &str) -> UserId {
        UserId::new(name).expect("a valid user id")
    }

    fn token(i: usize) -> String {
        format!("{i:032x}")
    }

    #[test]
    fn a_token_opens_its_upload_until_it_expires() {
        let tokens = EventTokens::new(8);
        let now = Duration::from_secs(100);
        let up = UploadId::new("u1");
        tokens
            .issue(token(1), up.clone(), user("alice"), now, MINUTE)
            .expect("room");
        assert_eq!(
            tokens
                .redeem(&token(1), "u1", now + MINUTE / 2)
                .map(|u| u.to_string())
                .ok(),
            Some("alice".into())
        );
        for (t, upload, at, says) in [
            (token(2), "u1", now, "unknown"),
            (token(1), "u2", now, "another upload"),
            (token(1), "u1", now + MINUTE, "expired 0 ms ago"),
        ] {
            let r = tokens.redeem(&t, upload, at).expect_err("refused");
            assert_eq!(
                (r.status, r.cause),
                (StatusCode::UNAUTHORIZED, Cause::Unauthenticated)
            );
            assert!(r.message.contains(says), "{}", r.message);
            assert!(
                !r.message.contains(&t),
                "the token is echoed: {}",
                r.message
            );
        }
        assert!(
            !format!("{tokens:?}").contains(&token(1)),
            "Debug leaks a token"
        );
    }

    #[test]
    fn the_table_is_bounded_per_user_and_in_all() {
        let tokens = EventTokens::new(TOKENS_PER_USER_MAX + 1);
        let now = Duration::ZERO;
        for i in 0..=TOKENS_PER_USER_MAX {
            let at = now + Duration::from_millis(i as u64);
            tokens
                .issue(token(i), UploadId::new("u"), user("alice"), at, MINUTE)
                .expect("a user's oldest makes room");
        }
        assert_eq!(tokens.len(), TOKENS_PER_USER_MAX);
        assert!(
            tokens.redeem(&token(0), "u", now).is_err(),
            "the oldest went"
        );
        assert!(tokens.redeem(&token(1), "u", now).is_ok());
        tokens
            .issue(token(100), UploadId::new("v"), user("bob"), now, MINUTE)
            .expect("the last place");
        let full = tokens
            .issue(token(101), UploadId::new("w"), user("carol"), now, MINUTE)
            .expect_err("full");
        assert_eq!(
            (full.status, full.cause),
            (StatusCode::SERVICE_UNAVAILABLE, Cause::EventTokensFull)
        );
        assert_eq!(full.details["tokens_max"], TOKENS_PER_USER_MAX + 1);
        // Once they expire, they make room.
        let later = now + MINUTE + Duration::from_secs(1);
        tokens
            .issue(token(101), UploadId::new("w"), user("carol"), later, MINUTE)
            .expect("expired tokens are dropped");
        assert_eq!(tokens.len(), 1);
    }
}
