//! End-of-run checks on admission's books, for the faults around creates
//! (lost and late create replies, duplicated creates): one client token is
//! admitted at most once, a refused admission is never charged, and a
//! failed upload's charge is refunded when the profile refunds.
//!
//! Each client host runs one create with one client token for its whole
//! life (a restarted client resumes with its upload id), so:
//! - a client host sends chunks to one upload, and an upload gets chunks
//!   from one client host;
//! - an admitted upload no client ever sent a chunk to is a second
//!   admission of some token (its requester went on with the other one),
//!   unless a client that sent nothing accounts for it.
//!
//! Quota: admission charges a user on a grant (a create's, or a resumed
//! upload's after a backend restart) and refunds a failed upload when the
//! profile says so. At the end, a user's charge is at most the bytes of
//! their grants — at most the bytes of their completed uploads when
//! failures are refunded.

use super::oracle::Oracle;
use crate::admission::LedgerState;
use crate::trace::{Event, Stamped};
use std::collections::{BTreeMap, BTreeSet};

/// Per admitted upload: its user and size.
type Admissions<'a> = BTreeMap<&'a str, (&'a str, u64)>;

impl Oracle {
    /// The accounting checks (see the module docs). `final_admission` is
    /// `None` for a run cut short (its books may still be open).
    pub(super) fn check_accounting(
        &mut self,
        final_admission: Option<&LedgerState>,
        events: &[Stamped],
        clients: usize,
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
        self.check_one_admission_per_token(&admitted, events, clients);
        if let Some(state) = final_admission {
            self.check_quota(&admitted, state, events, refund_quota_on_failure);
        }
    }

    /// One upload per client host, one client host per upload, and no
    /// admitted upload left unclaimed beyond the clients that sent nothing.
    fn check_one_admission_per_token(
        &mut self,
        admitted: &Admissions<'_>,
        events: &[Stamped],
        clients: usize,
    ) {
        let mut by_host: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        let mut by_upload: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for e in events {
            if let Event::ChunkSent { upload, .. } = &e.event {
                by_host.entry(&e.host).or_default().insert(upload);
                by_upload.entry(upload).or_default().insert(&e.host);
            }
        }
        for (host, uploads) in &by_host {
            if uploads.len() > 1 {
                self.flag(
                    "no_double_admission",
                    format!(
                        "{host} sent chunks to {} uploads: {uploads:?}",
                        uploads.len()
                    ),
                );
            }
        }
        for (upload, hosts) in &by_upload {
            if hosts.len() > 1 {
                self.flag(
                    "no_double_admission",
                    format!("upload {upload} got chunks from {hosts:?}"),
                );
            }
        }
        let unclaimed: Vec<&str> = admitted
            .keys()
            .filter(|u| !by_upload.contains_key(*u))
            .copied()
            .collect();
        let silent_clients = clients.saturating_sub(by_host.len());
        if unclaimed.len() > silent_clients {
            self.flag(
                "no_double_admission",
                format!(
                    "{} admitted uploads got no chunk ({unclaimed:?}) but only {silent_clients} clients sent none",
                    unclaimed.len()
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
    use crate::user::UserId;

    fn at(host: &str, event: Event) -> Stamped {
        Stamped {
            at_ms: 0,
            host: host.into(),
            event,
        }
    }

    fn admitted(upload: &str, user: &str, size: u64) -> Stamped {
        at(
            "backend",
            Event::Admitted {
                upload: upload.into(),
                user: user.into(),
                file_size_bytes: size,
                memory_bytes: 1,
                wait_ms: 0,
            },
        )
    }

    fn sent(host: &str, upload: &str) -> Stamped {
        at(
            host,
            Event::ChunkSent {
                upload: upload.into(),
                index: 0,
            },
        )
    }

    fn complete(upload: &str, size: u64) -> Stamped {
        at(
            "backend",
            Event::UploadComplete {
                upload: upload.into(),
                size_bytes: size,
                checksum: "0".into(),
            },
        )
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
        clients: usize,
        refund: bool,
    ) -> Vec<&'static str> {
        let mut o = Oracle::default();
        o.check_accounting(state, events, clients, refund);
        o.violations.iter().map(|v| v.check).collect()
    }

    #[test]
    fn one_admission_per_client_passes() {
        let events = [
            admitted("u1", "alice", 10),
            admitted("u2", "alice", 20),
            sent("client0", "u1"),
            sent("client1", "u2"),
            complete("u1", 10),
            complete("u2", 20),
        ];
        assert!(checks(Some(&books(&[("alice", 30)])), &events, 2, true).is_empty());
    }

    #[test]
    fn a_second_admission_of_one_token_is_flagged() {
        // client0's create was admitted twice; it went on with u1.
        let events = [
            admitted("u1", "alice", 10),
            admitted("u2", "alice", 10),
            sent("client0", "u1"),
        ];
        assert_eq!(checks(None, &events, 1, false), ["no_double_admission"]);
        // One client that sent nothing accounts for one unclaimed upload.
        assert!(checks(None, &events, 2, false).is_empty());
    }

    #[test]
    fn one_client_on_two_uploads_or_two_clients_on_one_are_flagged() {
        let two_uploads = [
            admitted("u1", "alice", 10),
            admitted("u2", "alice", 10),
            sent("client0", "u1"),
            sent("client0", "u2"),
        ];
        assert_eq!(
            checks(None, &two_uploads, 2, false),
            ["no_double_admission"]
        );
        let shared = [
            admitted("u1", "alice", 10),
            sent("client0", "u1"),
            sent("client1", "u1"),
        ];
        assert_eq!(checks(None, &shared, 2, false), ["no_double_admission"]);
    }

    #[test]
    fn a_charge_beyond_the_grants_is_flagged() {
        // bob was refused (no Admitted event) yet charged.
        let events = [admitted("u1", "alice", 10), sent("client0", "u1")];
        let state = books(&[("alice", 10), ("bob", 5)]);
        assert_eq!(
            checks(Some(&state), &events, 2, false),
            ["quota_only_for_admissions"]
        );
    }

    #[test]
    fn an_unrefunded_failure_is_flagged_only_when_the_profile_refunds() {
        let events = [admitted("u1", "alice", 10), sent("client0", "u1")];
        let state = books(&[("alice", 10)]);
        assert_eq!(checks(Some(&state), &events, 1, true), ["quota_refunded"]);
        assert!(checks(Some(&state), &events, 1, false).is_empty());
        // A resumed grant counts as a grant; a completion keeps its charge.
        let resumed = [
            admitted("u1", "alice", 10),
            at(
                "backend",
                Event::Resumed {
                    upload: "u1".into(),
                    committed_bytes: 0,
                },
            ),
            sent("client0", "u1"),
            complete("u1", 10),
        ];
        let twice = books(&[("alice", 20)]);
        assert!(checks(Some(&twice), &resumed, 1, false).is_empty());
        assert_eq!(checks(Some(&twice), &resumed, 1, true), ["quota_refunded"]);
    }
}
