//! Retention of ended uploads: an upload that has ended (complete, failed,
//! aborted) stays in the table, with its client token and its record, so
//! that its client can still read how it ended; after
//! [`ended_upload_retention`](super::BackendConfig::ended_upload_retention),
//! or once more than
//! [`ended_uploads_retained_max`](super::BackendConfig::ended_uploads_retained_max)
//! others have ended since, it is dropped from all three and answers like
//! an upload that never existed (404 `unknown_upload`).
//!
//! # Implementation Details
//!
//! Ended uploads wait in a queue in the order they ended, each with the
//! clock time it ended, so the next to go is always at the front: the
//! count bound pops from the front until the queue fits, the age bound
//! pops while the front is too old. Both run whenever an upload ends or is
//! created, so the table never holds more than the live uploads plus
//! `ended_uploads_retained_max` ended ones, however long the backend runs.
//! Nothing here is traced: retention never changes what a live upload
//! does, so traces (and their hashes) stay as they were.

use super::create::TokenState;
use super::server::Backend;
use crate::ids::UploadId;
use std::sync::PoisonError;

impl Backend {
    /// Remembers that upload `id` ended now, then drops what retention no
    /// longer covers.
    pub(super) fn retire(&self, id: &UploadId) {
        let now = self.now();
        self.inner
            .ended
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back((now, id.clone()));
        self.prune_ended();
    }

    /// Drops ended uploads beyond the count bound or older than the
    /// retention, oldest first: from the table, the token records and the
    /// store.
    pub(super) fn prune_ended(&self) {
        let config = &self.inner.config;
        let now = self.now();
        let expired: Vec<UploadId> = {
            let mut ended = self
                .inner
                .ended
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let mut expired = Vec::new();
            while let Some((ended_at, _)) = ended.front() {
                let too_many = ended.len() > config.ended_uploads_retained_max;
                let too_old = now.saturating_sub(*ended_at) >= config.ended_upload_retention;
                if !(too_many || too_old) {
                    break;
                }
                if let Some((_, id)) = ended.pop_front() {
                    expired.push(id);
                }
            }
            debug_assert!(ended.len() <= config.ended_uploads_retained_max);
            expired
        };
        for id in &expired {
            self.forget(id);
        }
    }

    /// Drops upload `id` (ended) from the table, its token, and the store.
    pub(super) fn forget(&self, id: &UploadId) {
        let Some(upload) = self.uploads().remove(id) else {
            return;
        };
        debug_assert!(
            upload.lock().slot.is_none(),
            "only ended uploads are forgotten, and they hold no slot"
        );
        if let Some(token) = &upload.client_token {
            let key = (upload.user.clone(), token.clone());
            let mut tokens = self.tokens();
            if tokens.get(&key) == Some(&TokenState::Created(id.clone())) {
                tokens.remove(&key);
            }
        }
        if let Err(e) = self.inner.env.store.remove(id) {
            // The record comes back at the next restart and is dropped
            // again then; nothing else depends on it.
            tracing::error!(upload = %id, error = %e, "removing an ended upload's record failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::committer::Ending;
    use super::super::create::TokenCheck;
    use super::super::refusals::Refusal;
    use super::super::{BackendConfig, BackendEnv, MemoryStore};
    use super::*;
    use crate::admission::Admitter;
    use crate::chunk_api::{Cause, CreateUpload};
    use crate::drive::SessionUri;
    use crate::env::{Clock, ManualClock, MemorySnapshot, ScriptedMemory, TokioNetwork};
    use crate::profile::Profile;
    use crate::trace::Tracer;
    use crate::units::GIB;
    use crate::user::UserId;
    use http::StatusCode;
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    /// Ended uploads kept in these tests: small, so that cycles ≫ it.
    const RETAINED_MAX: usize = 4;
    /// Cycles driven: at least ten times the bound.
    const CYCLES: usize = 12 * RETAINED_MAX;
    const _: () = assert!(CYCLES >= 10 * RETAINED_MAX);
    const RETENTION: Duration = Duration::from_secs(3600);

    fn backend() -> (Backend, Arc<ManualClock>, MemoryStore) {
        let clock = Arc::new(ManualClock::new(SystemTime::UNIX_EPOCH));
        let dyn_clock: Arc<dyn Clock> = clock.clone();
        let memory = MemorySnapshot::new(64 * GIB, 60 * GIB).expect("valid figures");
        let profile = Profile::dev();
        let admitter = Admitter::new(
            profile.clone(),
            dyn_clock.clone(),
            Arc::new(ScriptedMemory::new(dyn_clock.clone(), memory)),
        );
        let store = MemoryStore::default();
        let mut config = BackendConfig::new(profile, "http://127.0.0.1:9", 7);
        config.ended_uploads_retained_max = RETAINED_MAX;
        config.ended_upload_retention = RETENTION;
        let backend = Backend::new(
            config,
            BackendEnv {
                clock: dyn_clock,
                drive_net: Arc::new(TokioNetwork),
                admission: Arc::new(admitter),
                store: Arc::new(store.clone()),
                tracer: Tracer::off(),
            },
        );
        (backend, clock, store)
    }

    /// One create, as `POST /uploads` runs it after the body is read (token,
    /// admission, id, table), without the committer task.
    async fn create(
        backend: &Backend,
        user: &UserId,
        token: &str,
    ) -> Arc<super::super::upload::Upload> {
        let create = CreateUpload {
            file_name: "f.bin".into(),
            file_size_bytes: 1024,
            mime_type: None,
            client_token: Some(token.into()),
        };
        let claim = match backend.check_token(user, &create) {
            Ok(TokenCheck::Proceed(claim)) => claim,
            _ => panic!("a fresh token proceeds"),
        };
        let slot = match backend.admit(user, create.file_size_bytes).await {
            Ok(slot) => slot,
            Err(r) => panic!("admitted: {}", r.message),
        };
        let id = backend
            .new_id()
            .unwrap_or_else(|r| panic!("an id: {}", r.message));
        let session = SessionUri::parse(
            "http://127.0.0.1:9/upload/drive/v3/files?uploadType=resumable&upload_id=s",
        )
        .expect("a valid session URI");
        let admitted = super::super::create::Admitted::of(
            "application/octet-stream".into(),
            slot,
            session,
            None,
        );
        let upload = backend.register(id, user.clone(), create, admitted);
        claim.created(&upload.id);
        upload
    }

    fn assert_bounded(backend: &Backend, store: &MemoryStore) {
        let ended = backend
            .inner
            .ended
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        assert!(ended <= RETAINED_MAX, "{ended} ended uploads queued");
        assert!(backend.uploads().len() <= RETAINED_MAX + 1);
        assert!(backend.tokens().len() <= RETAINED_MAX + 1);
        assert!(store.len() <= RETAINED_MAX + 1);
    }

    /// This is a regression test that ensures ended uploads and their
    /// client tokens no longer accumulate forever: many create → complete
    /// or abort cycles leave the table, the tokens and the store within
    /// the retention bound, and a dropped upload answers 404
    /// `unknown_upload`.
    #[tokio::test]
    async fn ended_uploads_and_tokens_stay_within_the_retention_bound() {
        let (backend, _clock, store) = backend();
        let user = UserId::new("alice").expect("valid");
        let mut first = None;
        for cycle in 0..CYCLES {
            let upload = create(&backend, &user, &format!("token-{cycle}")).await;
            first.get_or_insert_with(|| upload.id.clone());
            let ending = if cycle % 2 == 0 {
                Ending::Complete
            } else {
                Ending::Failed(Refusal::new(StatusCode::GONE, Cause::Aborted, "aborted"))
            };
            backend.end(&upload, ending);
            assert_bounded(&backend, &store);
        }
        assert_eq!(backend.uploads().len(), RETAINED_MAX);
        assert_eq!(backend.tokens().len(), RETAINED_MAX);
        let first = first.expect("at least one cycle");
        match backend.find(first.as_str(), &user) {
            Err(r) => assert_eq!(
                (r.status, r.cause),
                (StatusCode::NOT_FOUND, Cause::UnknownUpload)
            ),
            Ok(_) => panic!("the first upload was dropped"),
        }
    }

    /// This is a regression test that ensures an ended upload also goes
    /// once it is older than the retention, even below the count bound.
    #[tokio::test]
    async fn ended_uploads_go_after_the_retention_time() {
        let (backend, clock, store) = backend();
        let user = UserId::new("alice").expect("valid");
        let old = create(&backend, &user, "old").await;
        backend.end(&old, Ending::Complete);
        clock.advance(RETENTION - Duration::from_secs(1));
        let live = create(&backend, &user, "live").await;
        assert!(
            backend.find(old.id.as_str(), &user).is_ok(),
            "still retained"
        );
        clock.advance(Duration::from_secs(1));
        let _another = create(&backend, &user, "another").await;
        assert!(backend.find(old.id.as_str(), &user).is_err(), "dropped");
        assert!(
            backend.find(live.id.as_str(), &user).is_ok(),
            "live uploads stay"
        );
        assert_eq!(backend.tokens().len(), 2);
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn a_zero_retention_does_not_validate() {
        let mut config = BackendConfig::new(Profile::dev(), "http://drive", 0);
        assert_eq!(config.validate(), Ok(()));
        config.ended_uploads_retained_max = 0;
        assert_eq!(
            config.validate(),
            Err(super::super::BackendConfigError::ZeroCount {
                field: "ended_uploads_retained_max"
            })
        );
    }
}
