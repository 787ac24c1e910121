//! Taking back the sessions of an earlier run from the [`SessionJournal`]
//! (real mode): [`DriveServer::restore`] and what it reports.

use super::control::{discard_all, DriveControl};
use super::journal::{JournalError, SessionJournal, SessionRecord};
use super::server::{DriveServer, Inner};
use super::session::{Session, SessionState};
use super::storage::StorageError;
use crate::ids::SessionId;
use serde::Serialize;
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// What [`DriveServer::restore`] found in the journal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RestoreReport {
    /// Open sessions taken back, with their bytes.
    pub open_sessions: u64,
    /// Bytes those sessions hold.
    pub held_bytes: u64,
    /// Finished sessions taken back (they answer with their file).
    pub finished_sessions: u64,
    /// Sessions whose partial file was gone: dropped (404 from now on).
    pub lost_sessions: u64,
}

/// The journal could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The journal failed.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// A partial file could not be reopened.
    #[error("reopening session {upload_id}: {source}")]
    Storage {
        /// The session.
        upload_id: SessionId,
        /// What storage said.
        #[source]
        source: StorageError,
    },
}

impl DriveServer {
    /// Takes back the journalled sessions of an earlier run: finished ones
    /// answer with their file again; open ones hold what their partial file
    /// holds (cut to whole 256 KiB units) and continue from there; a session
    /// whose partial file is gone is dropped. Each session's idle time starts
    /// again now. Without a journal there is nothing to restore.
    pub async fn restore(&self) -> Result<RestoreReport, RestoreError> {
        let mut report = RestoreReport::default();
        let Some(journal) = self.inner.control.journal().cloned() else {
            return Ok(report);
        };
        let records = load_records(&self.inner.control, &journal).await?;
        let now = self.inner.clock.now();
        for record in records {
            let revived = self.inner.revive(&journal, &record, now, &mut report);
            let Some(session) = revived.await? else {
                continue;
            };
            let mut state = self.inner.control.lock();
            if let Err(session) = state.sessions.insert(record.upload_id.clone(), session) {
                drop(state);
                if let SessionState::Open { handle } = session.state {
                    discard_all(vec![(record.upload_id, handle)]);
                }
            }
        }
        tracing::info!(?report, "drive: sessions restored");
        Ok(report)
    }
}

/// Every record in `journal`, read off the runtime's threads.
async fn load_records(
    control: &DriveControl,
    journal: &Arc<SessionJournal>,
) -> Result<Vec<SessionRecord>, JournalError> {
    let journal = Arc::clone(journal);
    tokio::task::spawn_blocking(move || journal.load_all())
        .await
        .map_err(|e| JournalError::Io {
            operation: "load",
            path: journal_dir(control),
            source: io::Error::other(e.to_string()),
        })?
}

impl Inner {
    /// The session `record` stands for, idle from `now`, counted in `report`: finished with
    /// its file, or open on its reopened partial file. `None` (and the
    /// record removed) if the partial file is gone.
    async fn revive(
        &self,
        journal: &SessionJournal,
        record: &SessionRecord,
        now: Duration,
        report: &mut RestoreReport,
    ) -> Result<Option<Session>, RestoreError> {
        let (state, committed_bytes) = match &record.finished {
            Some(resource) => {
                report.finished_sessions += 1;
                (
                    SessionState::Finished(resource.clone()),
                    resource.size_bytes,
                )
            }
            None => {
                let reopened = self
                    .storage
                    .reopen(
                        record.upload_id.as_str(),
                        &record.name,
                        record.declared_total_bytes,
                    )
                    .await
                    .map_err(|source| RestoreError::Storage {
                        upload_id: record.upload_id.clone(),
                        source,
                    })?;
                let Some(handle) = reopened else {
                    tracing::warn!(upload_id = %record.upload_id, "drive: session's partial file is gone; dropping it");
                    report.lost_sessions += 1;
                    journal.remove(&record.upload_id)?;
                    return Ok(None);
                };
                let held_bytes = handle.len_bytes();
                report.open_sessions += 1;
                report.held_bytes += held_bytes;
                (
                    SessionState::Open {
                        handle: Some(handle),
                    },
                    held_bytes,
                )
            }
        };
        Ok(Some(Session {
            file_id: record.file_id.clone(),
            name: record.name.clone(),
            mime_type: record.mime_type.clone(),
            declared_total_bytes: record.declared_total_bytes,
            committed_bytes,
            last_active_at: now,
            owner: record.owner.clone(),
            fields: record.fields,
            state,
        }))
    }

    /// Writes `record` to the journal, if there is one, off the runtime's
    /// threads (it syncs to disk).
    pub(super) async fn journal_save(&self, record: SessionRecord) -> Result<(), JournalError> {
        let Some(journal) = self.control.journal().cloned() else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || journal.save(&record))
            .await
            .map_err(|e| JournalError::Io {
                operation: "save",
                path: journal_dir(&self.control),
                source: io::Error::other(e.to_string()),
            })?
    }
}

/// The journal's directory, for error messages (empty without a journal).
fn journal_dir(control: &DriveControl) -> std::path::PathBuf {
    control
        .journal()
        .map(|j| j.dir().to_owned())
        .unwrap_or_default()
}
