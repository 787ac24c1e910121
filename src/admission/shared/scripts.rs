//! The slot store's Lua scripts and their replies, typed.
//!
//! Each script is `lua/common.lua` (key layout, the store's clock, purging
//! expired leases and waiters, the FIFO rule) followed by its own file, and
//! runs atomically in Redis: one script is one decision, so no replica ever
//! sees a partial grant. `redis::Script` sends `EVALSHA` and loads the
//! script on `NOSCRIPT` (after a store restart, say).
//!
//! Replies are flat arrays of integers whose first element says which
//! answer it is and whose last is the store's generation ([`split_generation`]
//! takes it off first); [`AcquireReply::decode`] and friends turn anything
//! else into [`StoreError::BadReply`].

use super::error::StoreError;
use crate::env::UtcDay;
use redis::Script;

const COMMON: &str = include_str!("lua/common.lua");

/// The scripts, hashed once.
pub(super) struct Scripts {
    pub(super) acquire: Script,
    pub(super) renew: Script,
    pub(super) release: Script,
    pub(super) cancel: Script,
    pub(super) state: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        let with_common = |own: &str| Script::new(&format!("{COMMON}\n{own}"));
        Self {
            acquire: with_common(include_str!("lua/acquire.lua")),
            renew: with_common(include_str!("lua/renew.lua")),
            release: with_common(include_str!("lua/release.lua")),
            cancel: with_common(include_str!("lua/cancel.lua")),
            state: with_common(include_str!("lua/state.lua")),
        }
    }
}

/// A lease the store granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Granted {
    /// The fencing token: strictly greater than every token granted before
    /// it under the same prefix.
    pub token: u64,
    /// When the lease expires unless renewed, ms since the epoch on the
    /// store's clock.
    pub expiry_ms: u64,
    /// The UTC day (store clock) the quota was charged to.
    pub day: UtcDay,
    /// The user's charge that day, this grant included.
    pub charged_bytes: u64,
    /// The store's generation the lease was granted in (common.lua).
    pub generation: u64,
}

/// A request waiting in the store's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waiting {
    /// Its ticket (its place in the FIFO).
    pub ticket: u64,
    /// Valid leases now.
    pub global_in_use: u32,
    /// The user's valid leases now.
    pub user_in_use: u32,
    /// Waiters queued before it.
    pub waiters_ahead: u32,
}

/// The acquire script's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcquireReply {
    /// Both slots and the quota charge, taken together.
    Granted(Granted),
    /// Queued (or still queued); poll again with the ticket.
    Waiting(Waiting),
    /// The charge would pass the daily limit (any ticket is dropped).
    QuotaExceeded {
        /// Charged that day already.
        charged_bytes: u64,
        /// The limit.
        daily_limit_bytes: u64,
        /// The UTC day (store clock).
        day: UtcDay,
    },
    /// The queue is at its bound.
    QueueFull {
        /// Waiting now.
        waiting: u32,
        /// The bound.
        waiters_max: u32,
    },
    /// The ticket is no longer queued.
    TicketLost {
        /// The ticket.
        ticket: u64,
    },
}

/// What the store holds now (valid leases only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreState {
    /// Valid leases.
    pub global_in_use: u32,
    /// The asked-about user's valid leases.
    pub user_in_use: u32,
    /// Queued waiters.
    pub waiting: u32,
    /// The last fencing token granted.
    pub last_token: u64,
    /// The store's clock, ms since the epoch.
    pub now_ms: u64,
    /// The asked-about user's quota charge today (store clock).
    pub charged_bytes: u64,
    /// The store's generation: when it began (store clock, ms). A new one
    /// begins when the store lost its data.
    pub generation: u64,
}

/// The renew script's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewReply {
    /// Extended to this expiry (store clock, ms).
    Renewed {
        /// The new expiry.
        expiry_ms: u64,
    },
    /// The store had lost the lease with all its data and took it back in
    /// its new generation, as it was, until this expiry.
    Reasserted {
        /// The new expiry.
        expiry_ms: u64,
        /// The generation it now belongs to.
        generation: u64,
    },
    /// No longer this holder's: expired, gone (and too late to re-assert),
    /// or another replica's.
    Gone,
}

fn bad(script: &'static str, reply: &[i64]) -> StoreError {
    StoreError::BadReply {
        script,
        reply: reply.to_vec(),
    }
}

/// A reply and the generation at its end (every script ends with it), or
/// a [`StoreError::BadReply`].
pub(super) fn split_generation(
    script: &'static str,
    mut reply: Vec<i64>,
) -> Result<(Vec<i64>, u64), StoreError> {
    match reply.pop().map(u64::try_from) {
        Some(Ok(generation)) if generation > 0 => Ok((reply, generation)),
        _ => Err(bad(script, &reply)),
    }
}

/// Field `i` of a reply as `T`, or a [`StoreError::BadReply`].
fn field<T: TryFrom<i64>>(script: &'static str, reply: &[i64], i: usize) -> Result<T, StoreError> {
    reply
        .get(i)
        .and_then(|&v| T::try_from(v).ok())
        .ok_or_else(|| bad(script, reply))
}

impl AcquireReply {
    /// `r` without its generation, which `generation` is.
    pub(super) fn decode(r: &[i64], generation: u64) -> Result<Self, StoreError> {
        const S: &str = "acquire";
        let at = |i| field::<u64>(S, r, i);
        let small = |i| field::<u32>(S, r, i);
        let reply = match (r.first(), r.len()) {
            (Some(1), 5) => Self::Granted(Granted {
                token: at(1)?,
                expiry_ms: at(2)?,
                day: UtcDay(small(3)?),
                charged_bytes: at(4)?,
                generation,
            }),
            (Some(2), 5) => Self::Waiting(Waiting {
                ticket: at(1)?,
                global_in_use: small(2)?,
                user_in_use: small(3)?,
                waiters_ahead: small(4)?,
            }),
            (Some(3), 4) => Self::QuotaExceeded {
                charged_bytes: at(1)?,
                daily_limit_bytes: at(2)?,
                day: UtcDay(small(3)?),
            },
            (Some(4), 3) => Self::QueueFull {
                waiting: small(1)?,
                waiters_max: small(2)?,
            },
            (Some(5), 2) => Self::TicketLost { ticket: at(1)? },
            _ => return Err(bad(S, r)),
        };
        if let Self::Granted(g) = &reply {
            if g.token == 0 {
                return Err(bad(S, r));
            }
        }
        Ok(reply)
    }
}

/// The renew script's answer (`r` without its generation, which
/// `generation` is).
pub(super) fn decode_renew(r: &[i64], generation: u64) -> Result<RenewReply, StoreError> {
    match (r.first(), r.len()) {
        (Some(1), 2) => Ok(RenewReply::Renewed {
            expiry_ms: field("renew", r, 1)?,
        }),
        (Some(2), 2) => Ok(RenewReply::Reasserted {
            expiry_ms: field("renew", r, 1)?,
            generation,
        }),
        (Some(0), 2) => Ok(RenewReply::Gone),
        _ => Err(bad("renew", r)),
    }
}

/// The release script's answer: the bytes refunded if the lease was held
/// (and is now deleted), `None` if it was not (nothing deleted).
pub(super) fn decode_release(r: &[i64]) -> Result<Option<u64>, StoreError> {
    match (r.first(), r.len()) {
        (Some(1), 2) => Ok(Some(field("release", r, 1)?)),
        (Some(0), 2) => Ok(None),
        _ => Err(bad("release", r)),
    }
}

/// The cancel script's answer: whether the ticket was queued.
pub(super) fn decode_cancel(r: &[i64]) -> Result<bool, StoreError> {
    match r {
        [1] => Ok(true),
        [0] => Ok(false),
        _ => Err(bad("cancel", r)),
    }
}

impl StoreState {
    /// `r` without its generation, which `generation` is.
    pub(super) fn decode(r: &[i64], generation: u64) -> Result<Self, StoreError> {
        const S: &str = "state";
        if r.len() != 6 {
            return Err(bad(S, r));
        }
        Ok(Self {
            global_in_use: field(S, r, 0)?,
            user_in_use: field(S, r, 1)?,
            waiting: field(S, r, 2)?,
            last_token: field(S, r, 3)?,
            now_ms: field(S, r, 4)?,
            charged_bytes: field(S, r, 5)?,
            generation,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_decode_into_their_answers() {
        assert_eq!(
            split_generation("acquire", vec![1, 7, 1_000, 20_000, 42, 5]),
            Ok((vec![1, 7, 1_000, 20_000, 42], 5))
        );
        assert_eq!(
            AcquireReply::decode(&[1, 7, 1_000, 20_000, 42], 5),
            Ok(AcquireReply::Granted(Granted {
                token: 7,
                expiry_ms: 1_000,
                day: UtcDay(20_000),
                charged_bytes: 42,
                generation: 5,
            }))
        );
        assert_eq!(
            AcquireReply::decode(&[4, 3, 3], 5),
            Ok(AcquireReply::QueueFull {
                waiting: 3,
                waiters_max: 3
            })
        );
        assert_eq!(decode_renew(&[0, 5], 9), Ok(RenewReply::Gone));
        assert_eq!(
            decode_renew(&[2, 5], 9),
            Ok(RenewReply::Reasserted {
                expiry_ms: 5,
                generation: 9
            })
        );
        assert_eq!(decode_release(&[1, 10]), Ok(Some(10)));
        assert_eq!(decode_cancel(&[1]), Ok(true));
    }

    /// This is a regression test that ensures a reply the scripts never
    /// give (wrong tag, wrong length, a negative count, token 0) is an
    /// error, never read as a grant.
    #[test]
    fn replies_the_scripts_never_give_are_errors() {
        for r in [
            &[][..],
            &[1, 7, 1_000, 20_000][..],
            &[1, 0, 1_000, 20_000, 42][..],
            &[2, 1, -1, 0, 0][..],
            &[9, 1][..],
            &[3, 1, 2][..],
        ] {
            assert!(
                matches!(AcquireReply::decode(r, 1), Err(StoreError::BadReply { .. })),
                "{r:?}"
            );
        }
        assert!(decode_renew(&[3, 0], 1).is_err());
        // A reply without a generation (or with 0 or a negative one).
        for r in [vec![], vec![1, 0], vec![1, -4]] {
            assert!(split_generation("renew", r).is_err());
        }
        assert!(decode_release(&[1]).is_err());
        assert!(decode_cancel(&[1, 1]).is_err());
        assert!(StoreState::decode(&[0; 5], 1).is_err());
    }
}
