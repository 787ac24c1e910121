//! End-of-run checks on admission's books, for the faults around creates
//! (lost and late create replies, duplicated creates): one client token is
//! admitted at most once, a refused admission is never charged, and a
//! failed upload's charge is refunded when the profile refunds.
//!
//! Each client (one per file) runs one create with one client token for
//! its whole life (a restarted client resumes with its upload id), so it
//! is admitted at most once: a completed client's admission is the upload
//! it completed, and every other admitted upload must belong to a client
//! that did not complete, one each. A second admission of one token shows
//! as an upload no client holds (its requester went on with the other).
//!
//! Quota: admission charges a user on a grant (a create's, or a resumed
//! upload's after a backend restart) and refunds a failed upload when the
//! profile says so. At the end, a user's charge is at most the bytes of
//! their grants — at most the bytes of their completed uploads when
//! failures are refunded.

use super::oracle::Oracle;
use crate::admission::LedgerState;
use crate::client::{ClientError, UploadOutcome};
use crate::trace::{Event, Stamped};
use std::collections::BTreeMap;

/// How one client ended (`None`: never), with its source's checksum.
type ClientEnd = (Option<Result<UploadOutcome, ClientError>>, String);

/// Per admitted upload: its user and size.
type Admissions<'a> = BTreeMap<&'a str, (&'a str, u64)>;

impl Oracle {
    /// The accounting checks (see the module docs). `final_admission` is
    /// `None` for a run cut short (its books may still be open).
    pub(super) fn check_accounting(
        &mut self,
        final_admission: Option<&LedgerState>,
        events: &[Stamped],
        results: &[ClientEnd],
        refund_quota_on_failure: bool,
    ) {
        let admitted: Admissions<'_> = events
            .iter()
            .filter_map(|e| match &e.event {
                Event::Admitted {
                    upload,
                    user,
                    file_size_bytes,
                    ..
                } => Some((upload.as_str(), (user.as_str(), *file_size_bytes))),
                _ => None,
            })
            .collect();
        self.check_one_admission_per_token(&admitted, results);
        if let Some(state) = final_admission {
            self.check_quota(&admitted, state, events, refund_quota_on_failure);
        }
    }

    /// Each client one admission at most: a completed client's admission
    /// is its upload, so the admitted uploads no completed client holds
    /// are at most the clients that did not complete; and no two completed
    /// clients hold the same upload.
    fn check_one_admission_per_token(&mut self, admitted: &Admissions<'_>, results: &[ClientEnd]) {
        let mut held: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, (result, _)) in results.iter().enumerate() {
            if let Some(Ok(outcome)) = result {
                if let Some(other) = held.insert(outcome.upload_id.as_str(), i) {
                    self.flag(
                        "no_double_admission",
                        format!(
                            "clients {other} and {i} both completed upload {}",
                            outcome.upload_id
                        ),
                    );
                }
            }
        }
        let unheld: Vec<&str> = admitted
            .keys()
            .filter(|u| !held.contains_key(*u))
            .copied()
            .collect();
        let unfinished = results.len() - held.len().min(results.len());
        if unheld.len() > unfinished {
            self.flag(
                "no_double_admission",
                format!(
                    "{} admitted uploads ({unheld:?}) are no completed client's, but only {unfinished} clients did not complete",
                    unheld.len()
                ),
            );
        }
    }

    /// Each user's final charge against their grants (and completions,
    /// when failures are refunded).
    fn check_quota(
        &mut self,
        admitted: &Admissions<'_>,
        state: &LedgerState,
        events: &[Stamped],
        refund_quota_on_failure: bool,
    ) {
        let mut granted: BTreeMap<&str, u64> = BTreeMap::new();
        let mut completed: BTreeMap<&str, u64> = BTreeMap::new();
        for (user, size) in admitted.values() {
            *granted.entry(user).or_insert(0) += size;
        }
        for e in events {
            let (upload, into) = match &e.event {
                Event::Resumed { upload, .. } => (upload, &mut granted),
                Event::UploadComplete { upload, .. } => (upload, &mut completed),
                _ => continue,
            };
            if let Some((user, size)) = admitted.get(upload.as_str()) {
                *into.entry(user).or_insert(0) += size;
            }
        }
        for (user, &charged) in &state.quota_charged {
            let user = user.as_str();
            let granted = granted.get(user).copied().unwrap_or(0);
            if charged > granted {
                self.flag(
                    "quota_only_for_admissions",
                    format!("{user} charged {charged} bytes; admission granted only {granted}"),
                );
            }
            let completed = completed.get(user).copied().unwrap_or(0);
            if refund_quota_on_failure && charged > completed {
                self.flag(
                    "quota_refunded",
                    format!("{user} charged {charged} bytes at the end; only {completed} completed and failures are refunded"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::Limits;
    use crate::chunk_api::Cause;
    use crate::user::UserId;

    fn at(event: Event) -> Stamped {
        Stamped {
            at_ms: 0,
            host: "backend".into(),
            event,
        }
    }

    fn admitted(upload: &str, user: &str, size: u64) -> Stamped {
        at(Event::Admitted {
            upload: upload.into(),
            user: user.into(),
            file_size_bytes: size,
            memory_bytes: 1,
            wait_ms: 0,
        })
    }

    fn complete(upload: &str, size: u64) -> Stamped {
        at(Event::UploadComplete {
            upload: upload.into(),
            size_bytes: size,
            checksum: "0".into(),
        })
    }

    /// A client that completed `upload`.
    fn done(upload: &str) -> ClientEnd {
        let outcome = super::super::oracle::completed_outcome("alice", upload, "0");
        (Some(Ok(outcome)), "0".into())
    }

    /// A client that failed.
    fn failed() -> ClientEnd {
        let e = ClientError::UploadFailed {
            cause: Cause::ClientGone,
            message: "m".into(),
        };
        (Some(Err(e)), "0".into())
    }

    fn books(charged: &[(&str, u64)]) -> LedgerState {
        LedgerState {
            limits: Limits {
                global_slots: 1,
                user_slots: 1,
                memory_budget_bytes: 1,
                waiters_max: 1,
                daily_limit_bytes: Some(100),
            },
            global_in_use: 0,
            user_in_use: BTreeMap::new(),
            reserved_bytes: 0,
            waiting: 0,
            quota_charged: charged
                .iter()
                .map(|(u, b)| (UserId::new(*u).expect("valid"), *b))
                .collect(),
        }
    }

    fn checks(
        state: Option<&LedgerState>,
        events: &[Stamped],
        results: &[ClientEnd],
        refund: bool,
    ) -> Vec<&'static str> {
        let mut o = Oracle::default();
        o.check_accounting(state, events, results, refund);
        o.violations.iter().map(|v| v.check).collect()
    }

    #[test]
    fn one_admission_per_client_passes() {
        let events = [
            admitted("u1", "alice", 10),
            admitted("u2", "alice", 20),
            complete("u1", 10),
            complete("u2", 20),
        ];
        let results = [done("u1"), done("u2")];
        assert!(checks(Some(&books(&[("alice", 30)])), &events, &results, true).is_empty());
    }

    #[test]
    fn a_second_admission_of_one_token_is_flagged() {
        // The client's create was admitted twice; it went on with u1.
        let events = [admitted("u1", "alice", 10), admitted("u2", "alice", 10)];
        assert_eq!(
            checks(None, &events, &[done("u1")], false),
            ["no_double_admission"]
        );
        // A client that did not complete accounts for one other upload.
        assert!(checks(None, &events, &[done("u1"), failed()], false).is_empty());
    }

    #[test]
    fn two_clients_completing_one_upload_are_flagged() {
        let events = [admitted("u1", "alice", 10)];
        assert_eq!(
            checks(None, &events, &[done("u1"), done("u1")], false),
            ["no_double_admission"]
        );
    }

    #[test]
    fn a_charge_beyond_the_grants_is_flagged() {
        // bob was refused (no Admitted event) yet charged.
        let events = [admitted("u1", "alice", 10)];
        let state = books(&[("alice", 10), ("bob", 5)]);
        assert_eq!(
            checks(Some(&state), &events, &[done("u1"), failed()], false),
            ["quota_only_for_admissions"]
        );
    }

    #[test]
    fn an_unrefunded_failure_is_flagged_only_when_the_profile_refunds() {
        let events = [admitted("u1", "alice", 10)];
        let state = books(&[("alice", 10)]);
        assert_eq!(
            checks(Some(&state), &events, &[failed()], true),
            ["quota_refunded"]
        );
        assert!(checks(Some(&state), &events, &[failed()], false).is_empty());
        // A resumed grant counts as a grant; a completion keeps its charge.
        let resumed = [
            admitted("u1", "alice", 10),
            at(Event::Resumed {
                upload: "u1".into(),
                committed_bytes: 0,
            }),
            complete("u1", 10),
        ];
        let twice = books(&[("alice", 20)]);
        assert!(checks(Some(&twice), &resumed, &[done("u1")], false).is_empty());
        assert_eq!(
            checks(Some(&twice), &resumed, &[done("u1")], true),
            ["quota_refunded"]
        );
    }
}
