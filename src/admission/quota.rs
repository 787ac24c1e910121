//! The daily quota ledger: bytes charged per user per UTC day.
//!
//! Invariants: a (user, day) total never exceeds the daily limit; days
//! before the current one are forgotten (a new day starts from zero); a
//! refund never takes a total below zero and is a no-op for a forgotten day.

use crate::env::UtcDay;
use crate::user::UserId;
use serde::Serialize;
use std::collections::BTreeMap;

/// Bytes charged to one user on one day; owned by whoever may refund it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuotaCharge {
    /// Who was charged.
    pub user: UserId,
    /// The day the charge counts against.
    pub day: UtcDay,
    /// How much.
    pub bytes: u64,
}

/// A charge that would go over the daily limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverQuota {
    /// Already charged today.
    pub charged_bytes: u64,
    /// The daily limit.
    pub daily_limit_bytes: u64,
}

/// The ledger.
#[derive(Debug, Clone)]
pub struct QuotaLedger {
    /// `None`: limits are off; charges are recorded but never refused.
    daily_limit_bytes: Option<u64>,
    /// The newest day seen; older days are dropped.
    today: Option<UtcDay>,
    /// Today's totals by user. Ordered so that iteration is deterministic.
    charged: BTreeMap<UserId, u64>,
}

impl QuotaLedger {
    /// A ledger with the given limit (`None` for unlimited).
    pub fn new(daily_limit_bytes: Option<u64>) -> Self {
        Self {
            daily_limit_bytes,
            today: None,
            charged: BTreeMap::new(),
        }
    }

    /// The daily limit, if any.
    pub fn daily_limit_bytes(&self) -> Option<u64> {
        self.daily_limit_bytes
    }

    /// Moves the ledger to `day`: a later day forgets all totals. An earlier
    /// day than already seen changes nothing (clocks may disagree slightly;
    /// quotas never go back in time).
    pub fn roll_to(&mut self, day: UtcDay) {
        if self.today.is_none_or(|today| day > today) {
            if self.today.is_some() {
                crate::coverage::hit(crate::coverage::Probe::QuotaDayRollover);
            }
            self.today = Some(day);
            self.charged.clear();
        }
    }

    /// What `user` has been charged on `day` (zero for a forgotten day).
    pub fn charged(&self, user: &UserId, day: UtcDay) -> u64 {
        if self.today == Some(day) {
            self.charged.get(user).copied().unwrap_or(0)
        } else {
            0
        }
    }

    /// Whether `bytes` more would fit for `user` on `day`.
    pub fn check(&self, user: &UserId, day: UtcDay, bytes: u64) -> Result<(), OverQuota> {
        let charged_bytes = self.charged(user, day);
        match self.daily_limit_bytes {
            Some(limit)
                if charged_bytes
                    .checked_add(bytes)
                    .is_none_or(|total| total > limit) =>
            {
                Err(OverQuota {
                    charged_bytes,
                    daily_limit_bytes: limit,
                })
            }
            _ => Ok(()),
        }
    }

    /// Charges `bytes` to `user` on `day` (rolling the ledger to `day`).
    pub fn charge(
        &mut self,
        user: &UserId,
        day: UtcDay,
        bytes: u64,
    ) -> Result<QuotaCharge, OverQuota> {
        self.roll_to(day);
        let day = self.today.unwrap_or(day);
        self.check(user, day, bytes)?;
        // Look up before inserting: `entry` would clone the id (an
        // allocation) on every charge, not only a user's first of the day.
        match self.charged.get_mut(user) {
            Some(total) => *total = total.saturating_add(bytes),
            None => {
                self.charged.insert(user.clone(), bytes);
            }
        }
        Ok(QuotaCharge {
            user: user.clone(),
            day,
            bytes,
        })
    }

    /// Gives a charge back. A charge from a forgotten day is dropped.
    pub fn refund(&mut self, charge: QuotaCharge) {
        if self.today != Some(charge.day) {
            return;
        }
        if let Some(total) = self.charged.get_mut(&charge.user) {
            *total = total.saturating_sub(charge.bytes);
            if *total == 0 {
                self.charged.remove(&charge.user);
            }
        }
    }

    /// Today's totals, for invariant checks and health reports.
    pub fn totals(&self) -> impl Iterator<Item = (&UserId, u64)> {
        self.charged.iter().map(|(u, b)| (u, *b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> UserId {
        UserId::new("alice").expect("valid id")
    }

    #[test]
    fn exact_limit_fits_and_one_byte_over_does_not() {
        let mut q = QuotaLedger::new(Some(100));
        let day = UtcDay(10);
        assert!(q.charge(&alice(), day, 60).is_ok());
        assert_eq!(
            q.charge(&alice(), day, 41),
            Err(OverQuota {
                charged_bytes: 60,
                daily_limit_bytes: 100
            })
        );
        assert!(q.charge(&alice(), day, 40).is_ok());
        assert_eq!(q.charged(&alice(), day), 100);
        assert!(q.charge(&alice(), day, 1).is_err());
        assert!(q.charge(&alice(), day, 0).is_ok());
    }

    #[test]
    fn a_new_day_starts_from_zero_and_old_refunds_are_dropped() {
        let mut q = QuotaLedger::new(Some(100));
        let yesterday = q.charge(&alice(), UtcDay(10), 100).expect("fits");
        assert!(q.charge(&alice(), UtcDay(10), 1).is_err());
        assert!(q.charge(&alice(), UtcDay(11), 100).is_ok());
        q.refund(yesterday);
        assert_eq!(q.charged(&alice(), UtcDay(11)), 100);
        assert_eq!(q.charged(&alice(), UtcDay(10)), 0);
        // Time never goes back: a charge stamped with an older day counts today.
        let late = q.charge(&alice(), UtcDay(9), 0).expect("fits");
        assert_eq!(late.day, UtcDay(11));
    }

    #[test]
    fn refunds_restore_room_and_unlimited_never_refuses() {
        let mut q = QuotaLedger::new(Some(100));
        let c = q.charge(&alice(), UtcDay(1), 70).expect("fits");
        q.refund(c);
        assert_eq!(q.charged(&alice(), UtcDay(1)), 0);
        assert_eq!(q.daily_limit_bytes(), Some(100));
        assert_eq!(q.totals().count(), 0);
        let mut open = QuotaLedger::new(None);
        assert_eq!(open.daily_limit_bytes(), None);
        assert!(open.charge(&alice(), UtcDay(1), u64::MAX).is_ok());
        assert!(open.charge(&alice(), UtcDay(1), u64::MAX).is_ok());
    }

    #[test]
    fn sizes_near_u64_max_do_not_overflow() {
        let mut q = QuotaLedger::new(Some(u64::MAX));
        assert!(q.charge(&alice(), UtcDay(1), u64::MAX).is_ok());
        assert!(q.charge(&alice(), UtcDay(1), 1).is_err());
    }
}
