//! The admission rules as the reference model states them, apart from any
//! driver: the proptest model ([`super::model`]) replays random sequences
//! through them, and the simulation's lock-step check
//! (`sim::lockstep`) asks them about every decision the real admitter makes
//! in a run. One statement of the rules, two drivers: a fix to the rules is
//! a fix to both.
//!
//! Deliberately naive and written apart from production: no ledger, no
//! locks, the memory formula spelled out term by term, so that a term
//! production forgets is a term the model still has.

use crate::env::MemorySnapshot;
use crate::profile::{MemoryPolicy, Profile};

/// The limits and formulas of one profile, as the model applies them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// Uploads running at once, all users.
    pub global_slots: u32,
    /// Uploads running at once, per user.
    pub user_slots: u32,
    /// Requests waiting at once.
    pub waiters_max: u32,
    /// How long a request may wait for its slots.
    pub slot_wait_timeout_ms: u64,
    /// Per user per UTC day; `None` when limits are off.
    pub daily_limit_bytes: Option<u64>,
    /// Largest file admitted.
    pub file_size_bytes_max: u64,
    /// The memory limit, in percent of total.
    pub memory_limit_percent: u64,
    /// Memory kept free for everything else, under the limit.
    pub reserve_bytes: u64,
    /// What one upload reserves.
    pub policy: MemoryPolicy,
    /// The profile's chunk size (for [`MemoryPolicy::ChunkWindow`]).
    pub chunk_size_bytes: u64,
}

/// A refusal decided before the queue, in the admitter's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screened {
    /// A zero-byte file.
    EmptyFile,
    /// Over the profile's maximum.
    FileTooLarge,
    /// `charged + requested > daily limit`.
    QuotaExceeded,
    /// `required > limit − reserve − machine use`.
    MemoryPressure,
}

impl Screened {
    /// The cause's stable name, as admission names it.
    pub fn cause(self) -> &'static str {
        match self {
            Self::EmptyFile => "empty_file",
            Self::FileTooLarge => "file_too_large",
            Self::QuotaExceeded => "quota_exceeded",
            Self::MemoryPressure => "memory_pressure",
        }
    }
}

/// One request in the FIFO queue, as the scan sees it.
#[derive(Debug, Clone, Copy)]
pub struct Queued<'a, U> {
    /// Whose.
    pub user: &'a U,
    /// What it would reserve.
    pub memory_bytes: u64,
    /// The formula's headroom when it was queued: all reservations
    /// together, its own included, may not exceed it.
    pub ceiling_bytes: u64,
}

impl Rules {
    /// The rules `profile` sets.
    pub fn of(profile: &Profile) -> Self {
        Self {
            global_slots: profile.global_slots,
            user_slots: profile.user_slots,
            waiters_max: profile.waiters_max,
            slot_wait_timeout_ms: profile.slot_wait_timeout_ms,
            daily_limit_bytes: profile
                .upload_limits_enabled
                .then_some(profile.daily_limit_bytes),
            file_size_bytes_max: profile.file_size_bytes_max,
            memory_limit_percent: u64::from(profile.memory_limit_percent),
            reserve_bytes: profile.reserved_memory_bytes,
            policy: profile.memory_per_upload,
            chunk_size_bytes: profile.chunk_size_bytes,
        }
    }

    /// `limit %` of total memory.
    pub fn limit_bytes(&self, memory: &MemorySnapshot) -> u64 {
        let limit = u128::from(memory.total_bytes) * u128::from(self.memory_limit_percent) / 100;
        u64::try_from(limit).unwrap_or(u64::MAX)
    }

    /// The memory formula: what all uploads may reserve together,
    /// `limit − reserve − machine use` (zero if negative).
    pub fn ceiling_bytes(&self, memory: &MemorySnapshot) -> u64 {
        self.limit_bytes(memory)
            .saturating_sub(self.reserve_bytes)
            .saturating_sub(memory.used_bytes())
    }

    /// What an upload of `file_size_bytes` reserves: the policy's figure,
    /// at least one chunk, never more than the file, never zero for a
    /// non-empty file.
    pub fn required_bytes(&self, file_size_bytes: u64) -> u64 {
        let raw = match self.policy {
            MemoryPolicy::PercentOfFile { percent } => {
                let bytes = u128::from(file_size_bytes) * u128::from(percent) / 100;
                u64::try_from(bytes).unwrap_or(u64::MAX)
            }
            MemoryPolicy::Fixed { bytes } => bytes,
            MemoryPolicy::ChunkWindow { chunks } => {
                u64::from(chunks).saturating_mul(self.chunk_size_bytes)
            }
        };
        raw.max(self.chunk_size_bytes)
            .clamp(1, file_size_bytes.max(1))
    }

    /// The refusals decided before the queue, in the admitter's order:
    /// size, quota (`charged_bytes` already charged to the user today),
    /// memory (against `ceiling_bytes`, from [`Rules::ceiling_bytes`]).
    /// `Ok` with the bytes the request would reserve.
    pub fn screen(
        &self,
        file_size_bytes: u64,
        charged_bytes: u64,
        ceiling_bytes: u64,
    ) -> Result<u64, Screened> {
        if file_size_bytes == 0 {
            return Err(Screened::EmptyFile);
        }
        if file_size_bytes > self.file_size_bytes_max {
            return Err(Screened::FileTooLarge);
        }
        if self
            .daily_limit_bytes
            .is_some_and(|limit| charged_bytes.saturating_add(file_size_bytes) > limit)
        {
            return Err(Screened::QuotaExceeded);
        }
        let required_bytes = self.required_bytes(file_size_bytes);
        if required_bytes > ceiling_bytes {
            return Err(Screened::MemoryPressure);
        }
        Ok(required_bytes)
    }

    /// FIFO with one exception: the index of the first request in `queue`
    /// that can be granted now, given the slots in use and the memory
    /// reserved. A request blocked only by its own user's limit is skipped
    /// (it must not hold up other users); one blocked on anything shared
    /// (a global slot, memory) stops the scan, so nobody behind overtakes it.
    pub fn first_grantable<'a, U: 'a>(
        &self,
        queue: impl IntoIterator<Item = Queued<'a, U>>,
        global_in_use: u32,
        reserved_bytes: u64,
        user_in_use: impl Fn(&U) -> u32,
    ) -> Option<usize> {
        for (i, q) in queue.into_iter().enumerate() {
            let shared_free = global_in_use < self.global_slots
                && reserved_bytes.saturating_add(q.memory_bytes) <= q.ceiling_bytes;
            let user_free = user_in_use(q.user) < self.user_slots;
            if shared_free && user_free {
                return Some(i);
            }
            if !shared_free {
                return None;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::{GIB, MIB};

    #[test]
    fn the_memory_formula_has_every_term() {
        let rules = Rules::of(&Profile {
            memory_limit_percent: 80,
            reserved_memory_bytes: GIB,
            ..Profile::prod()
        });
        let memory = MemorySnapshot::new(10 * GIB, 6 * GIB).expect("valid figures");
        // 8 GiB limit − 1 GiB reserve − 4 GiB used.
        assert_eq!(rules.ceiling_bytes(&memory), 3 * GIB);
        assert_eq!(rules.screen(MIB, 0, 0), Err(Screened::MemoryPressure));
    }

    #[test]
    fn the_scan_skips_a_user_at_its_limit_but_not_a_shared_block() {
        let rules = Rules::of(&Profile {
            global_slots: 3,
            user_slots: 1,
            ..Profile::prod()
        });
        let (a, b) = ("a", "b");
        let q = |user, memory_bytes| Queued {
            user,
            memory_bytes,
            ceiling_bytes: 10,
        };
        let in_use = |u: &&str| u32::from(*u == "a");
        assert_eq!(
            rules.first_grantable([q(&a, 1), q(&b, 1)], 1, 0, in_use),
            Some(1)
        );
        assert_eq!(
            rules.first_grantable([q(&b, 11), q(&b, 1)], 1, 0, in_use),
            None
        );
    }
}
