//! The permit ledger: global slots, per-user slots, memory reservations,
//! daily quota charges and the queue of waiting uploads, as one plain state
//! machine with no locks, no wakers and no clock.
//!
//! # Implementation Details
//!
//! Everything admission decides lives in one struct so that one lock (held
//! by [`Permits`](super::Permits)) makes every decision atomic: a request
//! takes its global slot, its user slot and its memory reservation in **one
//! step**, or takes nothing and waits. Nothing is ever held while waiting,
//! which is what rules out the original manager's hoarding (a global slot
//! held while waiting for a user slot starves everybody).
//!
//! The waiters form one FIFO queue. After every change that frees something
//! (a release, a cancellation, a new request) the queue is *scanned* from
//! the front:
//!
//! 1. A waiter whose global slot, memory and user slot are all free is
//!    granted: the resources move to it at once, under the lock, so the
//!    grant cannot be lost between a release and a wake-up.
//! 2. A waiter blocked **only** by its own user's limit is skipped: it
//!    competes with nobody but its own user, so letting others pass cannot
//!    starve it (when its user frees a slot it is still ahead of everyone
//!    behind it).
//! 3. A waiter blocked on a shared resource (a global slot or memory) stops
//!    the scan: nobody behind it may take shared resources ahead of it. That
//!    is FIFO among waiters that ask for the same things.
//!
//! Because the scan runs after every such change, the queue is always a
//! fixpoint of it: no waiter waits while what it asks for is free and nobody
//! ahead of it is entitled to it. [`Ledger::check`] asserts that (a lost
//! wake-up would break it), together with the limits, the conservation of
//! counters and the quota bound.
//!
//! Quota is charged when a request is queued (so two requests cannot both
//! squeeze under the limit) and refunded if the request is cancelled or
//! times out; on release, a failed upload is refunded if the caller says so.

use super::quota::{OverQuota, QuotaCharge, QuotaLedger};
use crate::env::UtcDay;
use crate::user::UserId;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};

/// Identifies one request, from queueing until its grant is released.
pub type TicketId = u64;

/// The limits a ledger enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Slots across all users; at least 1.
    pub global_slots: u32,
    /// Slots per user; at least 1.
    pub user_slots: u32,
    /// Most memory ever reserved at once, whatever the machine reports.
    pub memory_budget_bytes: u64,
    /// Longest queue of waiting requests.
    pub waiters_max: u32,
    /// Daily quota per user; `None` when limits are off.
    pub daily_limit_bytes: Option<u64>,
}

/// One request for a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRequest {
    /// Who asks.
    pub user: UserId,
    /// Memory to reserve while the upload runs.
    pub memory_bytes: u64,
    /// The request may be granted only while total reservations stay at or
    /// under this (computed by the caller from the machine's memory now).
    pub memory_ceiling_bytes: u64,
    /// Bytes to charge against the user's daily quota.
    pub quota_bytes: u64,
    /// The UTC day to charge.
    pub day: UtcDay,
}

/// Why a request was refused at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The daily quota would be exceeded.
    OverQuota(OverQuota),
    /// The reservation can never fit under the request's ceiling.
    Memory {
        /// Reserved by uploads in flight.
        reserved_bytes: u64,
    },
    /// Too many requests are already waiting.
    QueueFull {
        /// Waiting now.
        waiting: u32,
        /// The bound.
        waiters_max: u32,
    },
}

/// Resources granted to one request. Must be given back exactly once with
/// [`Ledger::release`].
#[derive(Debug, PartialEq, Eq)]
pub struct Grant {
    /// The ticket it was granted to.
    pub ticket: TicketId,
    /// Holder of the user slot.
    pub user: UserId,
    /// Memory reserved.
    pub memory_bytes: u64,
    /// The quota charge that came with it.
    pub quota: QuotaCharge,
}

/// What [`Ledger::take`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Take {
    /// The grant, now owned by the caller.
    Granted(Grant),
    /// Still waiting.
    Waiting,
    /// No such ticket waiting (already taken or cancelled).
    Unknown,
}

/// A broken invariant. Any of these is a bug in the admission code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
pub enum Violation {
    /// More global slots in use than the limit.
    #[error("{in_use} global slots in use, limit {limit}")]
    GlobalOverLimit {
        /// In use.
        in_use: u32,
        /// Limit.
        limit: u32,
    },
    /// More of one user's slots in use than the limit.
    #[error("user {user} holds {in_use} slots, limit {limit}")]
    UserOverLimit {
        /// The user.
        user: String,
        /// In use.
        in_use: u32,
        /// Limit.
        limit: u32,
    },
    /// More memory reserved than the budget.
    #[error("{reserved_bytes} bytes reserved, budget {budget_bytes}")]
    MemoryOverBudget {
        /// Reserved.
        reserved_bytes: u64,
        /// Budget.
        budget_bytes: u64,
    },
    /// A user charged past the daily limit.
    #[error("user {user} charged {charged_bytes} bytes today, limit {limit_bytes}")]
    QuotaOverLimit {
        /// The user.
        user: String,
        /// Charged today.
        charged_bytes: u64,
        /// Limit.
        limit_bytes: u64,
    },
    /// The counters disagree with the grants that exist.
    #[error("counters disagree with grants: {what}")]
    CountersDisagree {
        /// What disagrees, with numbers.
        what: String,
    },
    /// A waiter waits although the scan would grant it (a lost wake-up).
    #[error("ticket {ticket} waits although its resources are free (lost wake-up)")]
    LostWakeup {
        /// The waiter.
        ticket: TicketId,
    },
    /// A grant was released that is not held (released twice, or never
    /// granted).
    #[error("ticket {ticket} released but not held (double release)")]
    DoubleRelease {
        /// The ticket.
        ticket: TicketId,
    },
}

/// A point-in-time view of the ledger, for health checks and oracles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerState {
    /// The limits.
    pub limits: Limits,
    /// Global slots in use (including granted-but-unclaimed).
    pub global_in_use: u32,
    /// Slots in use by user (users with none are absent).
    pub user_in_use: BTreeMap<UserId, u32>,
    /// Memory reserved.
    pub reserved_bytes: u64,
    /// Requests waiting.
    pub waiting: u32,
    /// Quota charged today by user.
    pub quota_charged: BTreeMap<UserId, u64>,
}

impl LedgerState {
    /// Nothing held, nothing waiting, nothing reserved.
    pub fn is_idle(&self) -> bool {
        self.global_in_use == 0
            && self.user_in_use.is_empty()
            && self.reserved_bytes == 0
            && self.waiting == 0
    }
}

#[derive(Debug)]
struct Waiter {
    ticket: TicketId,
    user: UserId,
    memory_bytes: u64,
    memory_ceiling_bytes: u64,
    quota: QuotaCharge,
    /// Resources already moved to this waiter; it has not claimed them yet.
    granted: bool,
}

#[derive(Debug)]
struct Held {
    user: UserId,
    memory_bytes: u64,
}

/// What blocks a waiter, if anything.
#[derive(Debug, PartialEq, Eq)]
enum Blocked {
    Nothing,
    OwnUserOnly,
    Shared,
}

/// The ledger. See the module documentation.
#[derive(Debug)]
pub struct Ledger {
    limits: Limits,
    global_in_use: u32,
    /// Entries are removed when they reach zero.
    user_in_use: BTreeMap<UserId, u32>,
    reserved_bytes: u64,
    quota: QuotaLedger,
    /// FIFO. Granted entries stay in place until claimed.
    waiters: VecDeque<Waiter>,
    /// Grants claimed and not yet released.
    held: BTreeMap<TicketId, Held>,
    next_ticket: TicketId,
}

impl Ledger {
    /// A ledger with nothing held.
    ///
    /// # Panics
    /// If either slot limit is zero: profiles are validated before a ledger
    /// is built, so a zero here is a wiring bug.
    pub fn new(limits: Limits) -> Self {
        assert!(
            limits.global_slots > 0 && limits.user_slots > 0,
            "Ledger::new: slot limits must be positive (validate the profile first): {limits:?}"
        );
        Self {
            limits,
            global_in_use: 0,
            user_in_use: BTreeMap::new(),
            reserved_bytes: 0,
            quota: QuotaLedger::new(limits.daily_limit_bytes),
            waiters: VecDeque::new(),
            held: BTreeMap::new(),
            next_ticket: 0,
        }
    }

    /// Queues a request, or refuses it at once. Checks, in order: quota,
    /// memory, queue bound. Returns its ticket and the tickets the scan
    /// granted (possibly including its own).
    pub fn request(&mut self, req: SlotRequest) -> Result<(TicketId, Vec<TicketId>), Refusal> {
        self.quota.roll_to(req.day);
        self.quota
            .check(&req.user, req.day, req.quota_bytes)
            .map_err(Refusal::OverQuota)?;
        if req.memory_bytes
            > req
                .memory_ceiling_bytes
                .min(self.limits.memory_budget_bytes)
        {
            return Err(Refusal::Memory {
                reserved_bytes: self.reserved_bytes,
            });
        }
        let quota = self
            .quota
            .charge(&req.user, req.day, req.quota_bytes)
            .map_err(Refusal::OverQuota)?;
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.waiters.push_back(Waiter {
            ticket,
            user: req.user,
            memory_bytes: req.memory_bytes,
            memory_ceiling_bytes: req
                .memory_ceiling_bytes
                .min(self.limits.memory_budget_bytes),
            quota,
            granted: false,
        });
        let granted = self.scan();
        // The queue holds every waiting request (and granted, unclaimed
        // ones): count the waiting only when the queue is over the bound.
        if self.waiters.len() > self.limits.waiters_max as usize && !granted.contains(&ticket) {
            let waiting = self.waiting();
            if waiting > self.limits.waiters_max {
                // It is the newest waiter: take it back out, it never held
                // anything.
                let woken = self.cancel(ticket);
                debug_assert!(woken.is_empty(), "removing the last waiter freed nothing");
                return Err(Refusal::QueueFull {
                    waiting: waiting - 1,
                    waiters_max: self.limits.waiters_max,
                });
            }
        }
        Ok((ticket, granted))
    }

    /// Claims a ticket's grant if it has one.
    pub fn take(&mut self, ticket: TicketId) -> Take {
        let Some(index) = self.waiters.iter().position(|w| w.ticket == ticket) else {
            return Take::Unknown;
        };
        if !self.waiters[index].granted {
            return Take::Waiting;
        }
        let Some(w) = self.waiters.remove(index) else {
            return Take::Unknown;
        };
        self.held.insert(
            ticket,
            Held {
                user: w.user.clone(),
                memory_bytes: w.memory_bytes,
            },
        );
        Take::Granted(Grant {
            ticket,
            user: w.user,
            memory_bytes: w.memory_bytes,
            quota: w.quota,
        })
    }

    /// Withdraws a queued ticket (cancelled or timed out): whatever it was
    /// granted goes back, its quota charge is refunded. Returns the tickets
    /// the resulting scan granted. An unknown ticket changes nothing.
    pub fn cancel(&mut self, ticket: TicketId) -> Vec<TicketId> {
        let Some(index) = self.waiters.iter().position(|w| w.ticket == ticket) else {
            return Vec::new();
        };
        let Some(w) = self.waiters.remove(index) else {
            return Vec::new();
        };
        if w.granted {
            self.give_back(&w.user, w.memory_bytes);
        }
        self.quota.refund(w.quota);
        self.scan()
    }

    /// Gives back a claimed grant; refunds its quota charge if asked.
    /// Returns the tickets the resulting scan granted.
    pub fn release(
        &mut self,
        grant: Grant,
        refund_quota: bool,
    ) -> Result<Vec<TicketId>, Violation> {
        let Some(held) = self.held.remove(&grant.ticket) else {
            return Err(Violation::DoubleRelease {
                ticket: grant.ticket,
            });
        };
        debug_assert_eq!(
            held.user, grant.user,
            "a grant is released by the user it was granted to"
        );
        debug_assert_eq!(held.memory_bytes, grant.memory_bytes);
        self.give_back(&held.user, held.memory_bytes);
        if refund_quota {
            self.quota.refund(grant.quota);
        }
        Ok(self.scan())
    }

    /// Position of a waiting ticket in the queue (0 = front), counting only
    /// those still waiting.
    pub fn waiters_ahead(&self, ticket: TicketId) -> Option<u32> {
        let mut ahead = 0u32;
        for w in &self.waiters {
            if w.ticket == ticket {
                return Some(ahead);
            }
            if !w.granted {
                ahead += 1;
            }
        }
        None
    }

    /// Slots `user` holds now.
    pub fn user_in_use(&self, user: &UserId) -> u32 {
        self.user_in_use.get(user).copied().unwrap_or(0)
    }

    /// A view of the ledger.
    pub fn state(&self) -> LedgerState {
        LedgerState {
            limits: self.limits,
            global_in_use: self.global_in_use,
            user_in_use: self.user_in_use.clone(),
            reserved_bytes: self.reserved_bytes,
            waiting: self.waiting(),
            quota_charged: self.quota.totals().map(|(u, b)| (u.clone(), b)).collect(),
        }
    }

    /// Checks every invariant in the module documentation.
    pub fn check(&self) -> Result<(), Violation> {
        self.check_limits()?;
        self.check_conservation()?;
        // No lost wake-up: the queue is a fixpoint of the scan.
        if let Some(index) = self.next_grantable() {
            return Err(Violation::LostWakeup {
                ticket: self.waiters[index].ticket,
            });
        }
        Ok(())
    }

    /// Slots, memory and quota within their limits; no user kept with zero
    /// slots.
    fn check_limits(&self) -> Result<(), Violation> {
        let l = &self.limits;
        if self.global_in_use > l.global_slots {
            return Err(Violation::GlobalOverLimit {
                in_use: self.global_in_use,
                limit: l.global_slots,
            });
        }
        if let Some((user, &in_use)) = self
            .user_in_use
            .iter()
            .find(|(_, &n)| n > l.user_slots || n == 0)
        {
            if in_use == 0 {
                return Err(Violation::CountersDisagree {
                    what: format!("user {user} kept with zero slots"),
                });
            }
            return Err(Violation::UserOverLimit {
                user: user.to_string(),
                in_use,
                limit: l.user_slots,
            });
        }
        if self.reserved_bytes > l.memory_budget_bytes {
            return Err(Violation::MemoryOverBudget {
                reserved_bytes: self.reserved_bytes,
                budget_bytes: l.memory_budget_bytes,
            });
        }
        if let Some(limit) = l.daily_limit_bytes {
            if let Some((user, charged)) = self.quota.totals().find(|&(_, b)| b > limit) {
                return Err(Violation::QuotaOverLimit {
                    user: user.to_string(),
                    charged_bytes: charged,
                    limit_bytes: limit,
                });
            }
        }
        Ok(())
    }

    /// Conservation: the counters are exactly the sum of what is held and
    /// what is granted but unclaimed.
    fn check_conservation(&self) -> Result<(), Violation> {
        let mut by_user: BTreeMap<&UserId, u32> = BTreeMap::new();
        let mut memory = 0u64;
        let holders = self.held.values().map(|h| (&h.user, h.memory_bytes)).chain(
            self.waiters
                .iter()
                .filter(|w| w.granted)
                .map(|w| (&w.user, w.memory_bytes)),
        );
        for (user, bytes) in holders {
            *by_user.entry(user).or_insert(0) += 1;
            memory += bytes;
        }
        let slots: u32 = by_user.values().sum();
        let same_users = by_user.len() == self.user_in_use.len()
            && by_user
                .iter()
                .all(|(u, n)| self.user_in_use.get(*u) == Some(n));
        if slots != self.global_in_use || memory != self.reserved_bytes || !same_users {
            return Err(Violation::CountersDisagree {
                what: format!(
                    "grants hold {slots} slots and {memory} bytes; counters say {} slots and {} bytes",
                    self.global_in_use, self.reserved_bytes
                ),
            });
        }
        Ok(())
    }

    fn waiting(&self) -> u32 {
        // The queue is bounded by `waiters_max` (≤ u32::MAX) plus one.
        u32::try_from(self.waiters.iter().filter(|w| !w.granted).count()).unwrap_or(u32::MAX)
    }

    fn blocked(&self, w: &Waiter) -> Blocked {
        let global_free = self.global_in_use < self.limits.global_slots;
        let memory_free = self
            .reserved_bytes
            .checked_add(w.memory_bytes)
            .is_some_and(|total| total <= w.memory_ceiling_bytes);
        let user_free = self.user_in_use(&w.user) < self.limits.user_slots;
        match (global_free && memory_free, user_free) {
            (true, true) => Blocked::Nothing,
            (true, false) => Blocked::OwnUserOnly,
            (false, _) => Blocked::Shared,
        }
    }

    /// Where in the queue the first waiter the scan would grant is, if any.
    fn next_grantable(&self) -> Option<usize> {
        for (index, w) in self.waiters.iter().enumerate() {
            if w.granted {
                continue;
            }
            match self.blocked(w) {
                Blocked::Nothing => return Some(index),
                Blocked::OwnUserOnly => continue,
                Blocked::Shared => return None,
            }
        }
        None
    }

    /// Grants, front to back, everything the policy allows (see the module
    /// documentation). Returns the tickets granted.
    fn scan(&mut self) -> Vec<TicketId> {
        let mut granted = Vec::new();
        while let Some(index) = self.next_grantable() {
            let w = &mut self.waiters[index];
            w.granted = true;
            self.global_in_use += 1;
            self.reserved_bytes += w.memory_bytes;
            // Only a user's first slot clones the id into the map.
            match self.user_in_use.get_mut(&w.user) {
                Some(in_use) => *in_use += 1,
                None => {
                    self.user_in_use.insert(w.user.clone(), 1);
                }
            }
            granted.push(w.ticket);
        }
        granted
    }

    fn give_back(&mut self, user: &UserId, memory_bytes: u64) {
        self.global_in_use = self.global_in_use.saturating_sub(1);
        self.reserved_bytes = self.reserved_bytes.saturating_sub(memory_bytes);
        if let Some(n) = self.user_in_use.get_mut(user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.user_in_use.remove(user);
            }
        }
    }
}

#[cfg(test)]
mod tests;
