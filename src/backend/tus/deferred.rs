//! tus uploads created with `Upload-Defer-Length: 1`, not admitted yet.
//!
//! upsim admits an upload by its size (quota, memory, the drive session's
//! length), so such an upload holds nothing but this entry until a PATCH
//! declares `Upload-Length`; that PATCH runs the create's admission under
//! the entry's id, and the entry goes. Entries are bounded in number (in
//! all and per user), expire after the upload idle timeout like an upload
//! that receives nothing, and are not persisted (a restart forgets them:
//! HEAD answers 404 and the client creates the upload again).

use super::super::refusals::Refusal;
use crate::chunk_api::Cause;
use crate::ids::UploadId;
use crate::tus::Metadata;
use crate::user::UserId;
use http::StatusCode;
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Most length-deferred uploads held at once: each is a few hundred bytes.
const DEFERRED_MAX: usize = 1024;

/// Most length-deferred uploads one user holds at once.
const DEFERRED_PER_USER_MAX: usize = 16;
const _: () = assert!(DEFERRED_PER_USER_MAX <= DEFERRED_MAX);

/// `Retry-After` of a refusal for too many deferred uploads: one frees
/// when its length comes or it expires.
const DEFERRED_FULL_RETRY_AFTER: Duration = Duration::from_secs(10);

/// One length-deferred upload.
#[derive(Debug, Clone)]
pub(super) struct Deferred {
    pub user: UserId,
    pub metadata: Option<Metadata>,
    /// Clock time of its creation (it expires an upload idle timeout
    /// later).
    pub created_at: Duration,
    /// A PATCH declaring its length is being admitted.
    admitting: bool,
}

impl Deferred {
    pub fn new(user: UserId, metadata: Option<Metadata>, created_at: Duration) -> Self {
        Self {
            user,
            metadata,
            created_at,
            admitting: false,
        }
    }
}

/// The length-deferred uploads, by id.
#[derive(Debug, Default)]
pub(crate) struct DeferredTable {
    entries: Mutex<BTreeMap<UploadId, Deferred>>,
}

/// A length-deferred upload being admitted: its entry stays (marked) so
/// that a second PATCH declaring a length waits; dropped without
/// [`admitted`](Self::admitted), the mark is taken off again.
pub(super) struct Admitting<'a> {
    table: &'a DeferredTable,
    id: UploadId,
    done: bool,
}

impl Admitting<'_> {
    /// The upload is in the table now: the entry goes.
    pub fn admitted(mut self) {
        self.table.entries().remove(&self.id);
        self.done = true;
    }
}

impl Drop for Admitting<'_> {
    fn drop(&mut self) {
        if !self.done {
            if let Some(entry) = self.table.entries().get_mut(&self.id) {
                entry.admitting = false;
            }
        }
    }
}

impl DeferredTable {
    fn entries(&self) -> MutexGuard<'_, BTreeMap<UploadId, Deferred>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Drops entries created `expiry` or longer before `now`.
    fn prune(entries: &mut BTreeMap<UploadId, Deferred>, now: Duration, expiry: Duration) {
        entries.retain(|_, e| e.admitting || now.saturating_sub(e.created_at) < expiry);
    }

    /// Adds an entry (expired ones go first).
    ///
    /// # Errors
    /// 429 `too_many_uploads` beyond [`DEFERRED_MAX`] or the user's
    /// [`DEFERRED_PER_USER_MAX`].
    pub(super) fn insert(
        &self,
        id: UploadId,
        entry: Deferred,
        expiry: Duration,
    ) -> Result<(), Refusal> {
        let mut entries = self.entries();
        Self::prune(&mut entries, entry.created_at, expiry);
        let user_count = entries.values().filter(|e| e.user == entry.user).count();
        if entries.len() >= DEFERRED_MAX || user_count >= DEFERRED_PER_USER_MAX {
            let mut r = Refusal::new(
                StatusCode::TOO_MANY_REQUESTS,
                Cause::TooManyUploads,
                format!(
                    "{} holds {user_count} uploads of unknown length (limit {DEFERRED_PER_USER_MAX}); the server holds {} (limit {DEFERRED_MAX})",
                    entry.user,
                    entries.len()
                ),
            )
            .retry_after(DEFERRED_FULL_RETRY_AFTER);
            r.details = serde_json::json!({
                "deferred_uploads": entries.len(),
                "deferred_uploads_max": DEFERRED_MAX,
                "user_deferred_uploads": user_count,
                "user_deferred_uploads_max": DEFERRED_PER_USER_MAX,
            });
            return Err(r);
        }
        entries.insert(id, entry);
        Ok(())
    }

    /// `user`'s entry `id`, unless expired.
    pub(super) fn get(
        &self,
        id: &str,
        user: &UserId,
        now: Duration,
        expiry: Duration,
    ) -> Option<Deferred> {
        let mut entries = self.entries();
        Self::prune(&mut entries, now, expiry);
        entries.get(id).filter(|e| &e.user == user).cloned()
    }

    /// Marks `user`'s entry `id` as being admitted: `None` if there is no
    /// such entry.
    ///
    /// # Errors
    /// 423 `upload_locked` if another PATCH is admitting it.
    pub(super) fn begin_admission(
        &self,
        id: &str,
        user: &UserId,
    ) -> Result<Option<(Admitting<'_>, Deferred)>, Refusal> {
        let mut entries = self.entries();
        let Some((key, entry)) = entries.get_key_value(id) else {
            return Ok(None);
        };
        if &entry.user != user {
            return Ok(None);
        }
        if entry.admitting {
            return Err(Refusal::new(
                StatusCode::LOCKED,
                Cause::UploadLocked,
                "another PATCH is declaring this upload's length",
            )
            .retry_after(Duration::from_secs(1)));
        }
        let (key, snapshot) = (key.clone(), entry.clone());
        if let Some(entry) = entries.get_mut(&key) {
            entry.admitting = true;
        }
        Ok(Some((
            Admitting {
                table: self,
                id: key,
                done: false,
            },
            snapshot,
        )))
    }

    /// Removes `user`'s entry `id`; whether there was one.
    pub(super) fn remove(&self, id: &str, user: &UserId) -> bool {
        let mut entries = self.entries();
        let owned = entries
            .get(id)
            .is_some_and(|e| &e.user == user && !e.admitting);
        owned && entries.remove(id).is_some()
    }

    /// Entries held now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPIRY: Duration = Duration::from_secs(600);

    fn user(name: &str) -> UserId {
        UserId::new(name).expect("valid")
    }

    fn entry(name: &str, at_s: u64) -> Deferred {
        Deferred::new(user(name), None, Duration::from_secs(at_s))
    }

    #[test]
    fn entries_are_bounded_per_user_and_expire() {
        let table = DeferredTable::default();
        for i in 0..DEFERRED_PER_USER_MAX {
            let id = UploadId::new(format!("a{i}"));
            table.insert(id, entry("alice", 0), EXPIRY).expect("room");
        }
        let refused = table.insert(UploadId::new("a-more"), entry("alice", 0), EXPIRY);
        assert_eq!(refused.err().map(|r| r.cause), Some(Cause::TooManyUploads));
        table
            .insert(UploadId::new("b0"), entry("bob", 0), EXPIRY)
            .expect("another user has room");
        // Expired by the next insert's time: all of alice's go.
        table
            .insert(UploadId::new("a-later"), entry("alice", 600), EXPIRY)
            .expect("the old ones expired");
        assert_eq!(table.len(), 1);
        assert!(table
            .get("a-later", &user("alice"), Duration::from_secs(600), EXPIRY)
            .is_some());
        assert!(
            table
                .get("a-later", &user("bob"), Duration::from_secs(600), EXPIRY)
                .is_none(),
            "another user's entry is not theirs"
        );
    }

    #[test]
    fn one_admission_at_a_time_and_a_dropped_one_is_undone() {
        let table = DeferredTable::default();
        table
            .insert(UploadId::new("d"), entry("alice", 0), EXPIRY)
            .expect("room");
        let alice = user("alice");
        let (first, _) = table
            .begin_admission("d", &alice)
            .expect("not locked")
            .expect("present");
        let second = table.begin_admission("d", &alice);
        assert_eq!(second.err().map(|r| r.cause), Some(Cause::UploadLocked));
        assert!(!table.remove("d", &alice), "not while it is being admitted");
        drop(first);
        let (again, _) = table
            .begin_admission("d", &alice)
            .expect("free again")
            .expect("still present");
        again.admitted();
        assert_eq!(table.len(), 0);
    }
}
