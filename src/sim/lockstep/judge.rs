//! The judgements of the lock-step check, one function per event (see the
//! parent module for what is and is not checked).

use super::{before_quota, Books, Decision, Lockstep, Pending, Seen, PENDING_MAX};
use crate::admission::{AdmissionError, AdmitFailure, LedgerState, UploadSlot};
use crate::checks::rules::{Queued, Screened};
use crate::env::{MemorySnapshot, UtcDay};
use crate::user::UserId;

impl Lockstep {
    /// Quota charged to `user` on `day`, as the ledger will count it.
    fn charged(&self, books: &Books, ledger: &LedgerState, user: &UserId, day: UtcDay) -> u64 {
        if books.day.is_some_and(|d| d < day) {
            return 0; // the ledger rolls to the new day on this request
        }
        ledger.quota_charged.get(user).copied().unwrap_or(0)
    }

    /// Judges a first poll; returns the request's id if it now waits.
    ///
    /// 1. Refusals the rules do not decide (shutting down, unknown user,
    ///    a failed memory probe) end the judgement.
    /// 2. The rules' cause for these inputs must be the admitter's, and a
    ///    refusal must carry the numbers the rules reproduce.
    /// 3. Quota moves by the request for a grant or a wait, never for a
    ///    refusal.
    /// 4. A waiting request joins the books' queue.
    pub(super) fn judge_first(
        &self,
        before: &Seen,
        user: &UserId,
        file_size_bytes: u64,
        decision: &Decision<'_>,
    ) -> Option<u64> {
        if self.not_the_rules_to_judge(before, user, decision) {
            return None;
        }
        let memory = before.memory?;
        let mut books = self.books();
        let charged = self.charged(&books, &before.ledger, user, before.day);
        let ceiling_bytes = self.rules.ceiling_bytes(&memory);
        let screened = self.rules.screen(file_size_bytes, charged, ceiling_bytes);
        let sized = !matches!(screened, Err(Screened::EmptyFile | Screened::FileTooLarge));
        if sized {
            books.day = Some(books.day.map_or(before.day, |d| d.max(before.day)));
        }
        let want = match screened {
            Err(s) => s.cause(),
            Ok(required_bytes) => self.queue_cause(
                &books,
                before,
                user,
                decision,
                required_bytes,
                ceiling_bytes,
            ),
        };
        if want != decision.cause() {
            self.flag(
                before.now_ms,
                user,
                format!(
                    "{file_size_bytes} bytes: the model says {want}, the admitter {} ({decision:?}); {}",
                    decision.cause(),
                    self.inputs(before, &memory, user, charged)
                ),
            );
        }
        if let Decision::Refused(e) = decision {
            self.check_numbers(before, &memory, user, file_size_bytes, charged, e);
        }
        let charged_before = if sized {
            charged
        } else {
            before_quota(&before.ledger, user)
        };
        self.check_quota_moved(before, user, file_size_bytes, decision, charged_before);
        let Decision::Waiting = decision else {
            return None;
        };
        Some(self.enqueue(&mut books, before, user, file_size_bytes, ceiling_bytes))
    }

    /// Step 1: a refusal while shutting down (checked to be one), or one
    /// the rules do not model; `true` ends the judgement.
    fn not_the_rules_to_judge(
        &self,
        before: &Seen,
        user: &UserId,
        decision: &Decision<'_>,
    ) -> bool {
        let at = before.now_ms;
        if let Decision::Refused(AdmissionError::ShuttingDown) = decision {
            if !before.shutting_down {
                self.flag(
                    at,
                    user,
                    "refused shutting_down while not shutting down".into(),
                );
            }
            return true;
        }
        if before.shutting_down {
            let got = decision.cause();
            self.flag(at, user, format!("{got} while shutting down"));
            return true;
        }
        // Not the rules' to judge (see the module docs).
        matches!(
            decision,
            Decision::Refused(
                AdmissionError::UnknownUser { .. } | AdmissionError::MemoryProbe { .. }
            )
        )
    }

    /// Step 2 for a request the rules would queue: the cause the queue
    /// rules give, after checking that a grant fits the formula.
    fn queue_cause(
        &self,
        books: &Books,
        before: &Seen,
        user: &UserId,
        decision: &Decision<'_>,
        required_bytes: u64,
        ceiling_bytes: u64,
    ) -> &'static str {
        let after = self.inner.state().ledger;
        let want = self.queue_decision(books, before, user, required_bytes, ceiling_bytes);
        self.check_grant_fits(
            before,
            &after,
            user,
            decision,
            required_bytes,
            ceiling_bytes,
        );
        let queue_outcome = matches!(
            decision,
            Decision::Granted
                | Decision::Waiting
                | Decision::Refused(AdmissionError::QueueFull { .. })
        );
        match want {
            Some(want) => want,
            None if queue_outcome => decision.cause(),
            None => "granted, waiting or queue_full",
        }
    }

    /// Step 3: quota went up by the request for a grant or a wait, and
    /// stayed for a refusal.
    fn check_quota_moved(
        &self,
        before: &Seen,
        user: &UserId,
        file_size_bytes: u64,
        decision: &Decision<'_>,
        charged_before: u64,
    ) {
        let expect_after = match decision {
            Decision::Granted | Decision::Waiting => charged_before.saturating_add(file_size_bytes),
            Decision::Refused(_) => charged_before,
        };
        let got_after = before_quota(&self.inner.state().ledger, user);
        if self.rules.daily_limit_bytes.is_some() && got_after != expect_after {
            self.flag(
                before.now_ms,
                user,
                format!(
                    "{} for {file_size_bytes} bytes: quota charged {charged_before} → {got_after}, expected {expect_after}",
                    decision.cause()
                ),
            );
        }
    }

    /// Step 4: the waiting request, in the books' FIFO (bounded by
    /// `PENDING_MAX`; past it the queue is no longer known exactly).
    fn enqueue(
        &self,
        books: &mut Books,
        before: &Seen,
        user: &UserId,
        file_size_bytes: u64,
        ceiling_bytes: u64,
    ) -> u64 {
        let id = books.next_id;
        books.next_id += 1;
        if books.pending.len() < PENDING_MAX {
            books.pending.push(Pending {
                id,
                user: user.clone(),
                file_size_bytes,
                memory_bytes: self.rules.required_bytes(file_size_bytes),
                ceiling_bytes,
                queued_at_ms: before.now_ms,
                day: before.day,
            });
        }
        id
    }

    /// Granted, waiting or `queue_full`, by the rules' scan, when the queue
    /// is known exactly; `None` when it is not. Flags a waiter left waiting
    /// that the scan would grant.
    fn queue_decision(
        &self,
        books: &Books,
        before: &Seen,
        user: &UserId,
        required_bytes: u64,
        ceiling_bytes: u64,
    ) -> Option<&'static str> {
        let ledger = &before.ledger;
        if books.pending.len() != ledger.waiting as usize {
            return None;
        }
        let queue = books
            .pending
            .iter()
            .map(|p| Queued {
                user: &p.user,
                memory_bytes: p.memory_bytes,
                ceiling_bytes: p.ceiling_bytes,
            })
            .chain(std::iter::once(Queued {
                user,
                memory_bytes: required_bytes,
                ceiling_bytes,
            }));
        let in_use = |u: &UserId| ledger.user_in_use.get(u).copied().unwrap_or(0);
        let first =
            self.rules
                .first_grantable(queue, ledger.global_in_use, ledger.reserved_bytes, in_use);
        match first {
            Some(i) if i < books.pending.len() => {
                let p = &books.pending[i];
                self.flag(
                    before.now_ms,
                    &p.user,
                    format!("left waiting though it could be granted: {p:?}, ledger {ledger:?}"),
                );
                None
            }
            Some(_) => Some("granted"),
            None if ledger.waiting + 1 > self.rules.waiters_max => Some("queue_full"),
            None => Some("waiting"),
        }
    }

    /// A grant must fit the memory formula and reserve exactly what the
    /// rules require.
    fn check_grant_fits(
        &self,
        before: &Seen,
        after: &LedgerState,
        user: &UserId,
        decision: &Decision<'_>,
        required_bytes: u64,
        ceiling_bytes: u64,
    ) {
        let Decision::Granted = decision else {
            return;
        };
        let reserved = before.ledger.reserved_bytes;
        if reserved.saturating_add(required_bytes) > ceiling_bytes {
            self.flag(
                before.now_ms,
                user,
                format!(
                    "granted though reserved {reserved} + required {required_bytes} > headroom {ceiling_bytes} (limit − reserve {} − machine use)",
                    self.rules.reserve_bytes
                ),
            );
        }
        if after.reserved_bytes != reserved.saturating_add(required_bytes) {
            self.flag(
                before.now_ms,
                user,
                format!(
                    "granted: reserved {reserved} → {}, expected + {required_bytes}",
                    after.reserved_bytes
                ),
            );
        }
    }

    /// A refusal's numbers must be the ones the rules reproduce.
    fn check_numbers(
        &self,
        before: &Seen,
        memory: &MemorySnapshot,
        user: &UserId,
        file_size_bytes: u64,
        charged: u64,
        e: &AdmissionError,
    ) {
        let wrong = match *e {
            AdmissionError::MemoryPressure {
                used_bytes,
                limit_bytes,
                reserve_bytes,
                required_bytes,
                headroom_bytes,
                reserved_by_uploads_bytes,
                ..
            } => {
                let want = (
                    memory.used_bytes(),
                    self.rules.limit_bytes(memory),
                    self.rules.reserve_bytes,
                    self.rules.required_bytes(file_size_bytes),
                    self.rules.ceiling_bytes(memory),
                    before.ledger.reserved_bytes,
                );
                let got = (
                    used_bytes,
                    limit_bytes,
                    reserve_bytes,
                    required_bytes,
                    headroom_bytes,
                    reserved_by_uploads_bytes,
                );
                (got != want || required_bytes <= headroom_bytes).then(|| {
                    format!("memory_pressure (used, limit, reserve, required, headroom, reserved) = {got:?}, the formula gives {want:?}")
                })
            }
            AdmissionError::QuotaExceeded {
                charged_bytes,
                requested_bytes,
                daily_limit_bytes,
                ..
            } => {
                let want = (charged, file_size_bytes, self.rules.daily_limit_bytes);
                let got = (charged_bytes, requested_bytes, Some(daily_limit_bytes));
                let deserved = charged_bytes.saturating_add(requested_bytes) > daily_limit_bytes;
                (got != want || !deserved).then(|| {
                    format!("quota_exceeded (charged, requested, daily limit) = {got:?}, the ledger says {want:?}")
                })
            }
            _ => None,
        };
        if let Some(detail) = wrong {
            self.flag(before.now_ms, user, detail);
        }
    }

    /// Judges a later poll that ended request `id`'s wait.
    pub(super) fn judge_end_of_wait(
        &self,
        id: u64,
        before: &Seen,
        result: &Result<UploadSlot, AdmitFailure>,
    ) {
        let Some(p) = self.take_pending(id) else {
            return;
        };
        let at = before.now_ms;
        let waited_ms = at.saturating_sub(p.queued_at_ms);
        let timeout_ms = self.rules.slot_wait_timeout_ms;
        match result {
            Ok(_) | Err(AdmitFailure::Unexplained) => {}
            Err(AdmitFailure::Refused(AdmissionError::SlotsBusy {
                waited_ms: said_ms, ..
            })) => {
                if waited_ms < timeout_ms || *said_ms != timeout_ms {
                    self.flag(at, &p.user, format!("slots_busy after {waited_ms} ms (says {said_ms} ms), timeout {timeout_ms} ms"));
                }
                let after = self.inner.state().ledger;
                let (was, now) = (
                    before_quota(&before.ledger, &p.user),
                    before_quota(&after, &p.user),
                );
                let same_day = self.books().day == Some(p.day);
                if self.rules.daily_limit_bytes.is_some()
                    && same_day
                    && now != was.saturating_sub(p.file_size_bytes)
                {
                    self.flag(
                        at,
                        &p.user,
                        format!(
                            "slots_busy for {} bytes: quota charged {was} → {now}, not refunded",
                            p.file_size_bytes
                        ),
                    );
                }
            }
            Err(AdmitFailure::Refused(e)) => {
                self.flag(
                    at,
                    &p.user,
                    format!(
                        "a wait ended with {}, not a grant or slots_busy: {e}",
                        e.cause()
                    ),
                );
            }
        }
    }

    fn inputs(
        &self,
        before: &Seen,
        memory: &MemorySnapshot,
        user: &UserId,
        charged: u64,
    ) -> String {
        let l = &before.ledger;
        format!(
            "memory total {} used {}, limit {} reserve {} headroom {}, reserved {}, slots {}/{} (user {}), waiting {}, charged {charged}",
            memory.total_bytes,
            memory.used_bytes(),
            self.rules.limit_bytes(memory),
            self.rules.reserve_bytes,
            self.rules.ceiling_bytes(memory),
            l.reserved_bytes,
            l.global_in_use,
            self.rules.global_slots,
            l.user_in_use.get(user).copied().unwrap_or(0),
            l.waiting,
        )
    }
}
