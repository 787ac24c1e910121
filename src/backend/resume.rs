//! Resumption after a restart: every persisted upload is taken back into
//! the table; each one still receiving gets an admission slot again, asks
//! the drive what it holds, and goes on.

use super::committer::Ending;
use super::create::TokenState;
use super::metrics::RetryKind;
use super::refusals::{admit_failure_cause, admit_refusal};
use super::server::{ms, Backend};
use super::store::{RecordPhase, UploadRecord};
use super::tus::TusUpload;
use super::upload::{Upload, UploadSpec, UploadState};
use crate::chunk_api::Phase;
use crate::drive::SessionUri;
use crate::trace::Event;
use std::sync::Arc;

impl Backend {
    /// Takes back every persisted upload still receiving: each gets its
    /// slot again (waiting out transient refusals), learns from the drive
    /// what it holds, and goes on.
    pub(super) fn resume_persisted(&self) {
        let records = match self.inner.env.store.load_all() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot load persisted uploads");
                return;
            }
        };
        for record in records {
            let upload = Arc::new(self.upload_from(&record));
            if let Some(token) = &record.client_token {
                self.tokens().insert(
                    (record.user.clone(), token.clone()),
                    TokenState::Created(record.upload_id.clone()),
                );
            }
            self.uploads()
                .insert(record.upload_id.clone(), upload.clone());
            if let Some(ending) = super::tus::unresumable(&record) {
                // A final tus upload whose partials died with the process.
                self.end(&upload, ending);
            } else if record.phase == RecordPhase::Receiving {
                let this = self.clone();
                tokio::spawn(async move { this.resume(upload, record).await });
            } else {
                // Ended before the restart: retained from now on.
                self.retire(&record.upload_id);
            }
        }
    }

    fn upload_from(&self, record: &UploadRecord) -> Upload {
        let (phase, file, failure) = match &record.phase {
            RecordPhase::Receiving => (Phase::Resuming, None, None),
            RecordPhase::Complete { file } => (Phase::Complete, Some(file.clone()), None),
            RecordPhase::Failed { failure } => (Phase::Failed, None, Some(failure.clone())),
        };
        let memory_bytes = self
            .inner
            .config
            .profile
            .memory_per_upload
            .required_bytes(record.file_size_bytes, record.chunk_size_bytes);
        let (sent, sent_in_flight) =
            super::sent_digest::restored(&record.sent, record.committed_bytes);
        Upload::new(
            UploadSpec {
                id: record.upload_id.clone(),
                user: record.user.clone(),
                file_name: record.file_name.clone(),
                mime_type: record.mime_type.clone(),
                file_size_bytes: record.file_size_bytes,
                chunk_size_bytes: record.chunk_size_bytes,
                memory_bytes,
                window_chunks_max: self.inner.config.profile.reorder_window_chunks_max,
                client_token: record.client_token.clone(),
                tus: record.tus.as_ref().map(TusUpload::restored),
            },
            UploadState {
                committed_bytes: record.committed_bytes,
                session: record
                    .drive_session
                    .as_deref()
                    .and_then(|s| SessionUri::parse(s).ok()),
                session_generation: record.session_generation,
                last_activity: self.now(),
                file,
                failure,
                sent,
                sent_in_flight,
                ..UploadState::empty(phase)
            },
        )
    }

    async fn resume(&self, upload: Arc<Upload>, record: UploadRecord) {
        let clock = &self.inner.env.clock;
        let retry = self.inner.config.profile.retry;
        // 1. A slot again (the old one died with the old process).
        let mut attempt = 0u32;
        let started = clock.now();
        let slot = loop {
            match self
                .inner
                .env
                .admission
                .admit(upload.user.clone(), upload.file_size_bytes)
                .await
            {
                Ok(slot) => break slot,
                Err(e)
                    if e.is_transient()
                        && clock.now() - started < self.inner.config.upload_idle_timeout =>
                {
                    let backoff = self.jitter(retry.backoff_ceiling(attempt.min(16)));
                    attempt += 1;
                    self.inner.metrics.retry(RetryKind::ResumeAdmission);
                    self.trace(Event::Backoff {
                        what: format!("resume:{}", upload.id),
                        attempt,
                        backoff_ms: ms(backoff),
                    });
                    clock.sleep(backoff).await;
                }
                Err(e) => {
                    self.trace(Event::Refused {
                        user: upload.user.to_string(),
                        cause: admit_failure_cause(&e).as_str().into(),
                    });
                    self.inner.metrics.refused(admit_failure_cause(&e));
                    self.end(&upload, Ending::Failed(admit_refusal(&e)));
                    return;
                }
            }
        };
        self.inner.metrics.admitted(slot.waited());
        {
            let mut state = upload.lock();
            state.slot = Some(slot);
            state.phase = Phase::Receiving;
            state.last_activity = clock.now();
            upload.publish(&state);
        }
        crate::coverage::hit(crate::coverage::Probe::BackendResume);
        self.trace(Event::Resumed {
            upload: upload.id.to_string(),
            committed_bytes: record.committed_bytes,
        });
        // 2. The committer starts by asking the drive what it holds (the
        //    drive may hold more than was persisted, never less).
        let drive = self.drive_client();
        let this = self.clone();
        let upload_for_task = upload.clone();
        tokio::spawn(async move {
            let ending = this.commit_loop_resumed(&upload_for_task, &drive).await;
            this.end(&upload_for_task, ending);
        });
    }
}
