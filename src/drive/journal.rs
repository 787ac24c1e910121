//! The session journal: what a real drive emulator keeps on disk so that a
//! restart keeps its sessions.
//!
//! One JSON file per session, `DIR/.sessions/<upload_id>.json`, written
//! atomically (a temporary file, synced, then renamed over the old one):
//! a crash leaves the old record or the new one, never half of either. A
//! record holds what the session table cannot learn from storage — the
//! file's id, name and type, the declared total, the owner, and, once
//! finished, the file resource — and never the bytes held: the partial
//! file on disk is the truth about those ([`Storage::reopen`](super::Storage::reopen)).
//!
//! Invariants: a record exists for every session initiated and not yet
//! dropped (expired, abandoned); record names are upload ids made by the
//! server (32 hex digits), checked again before any path is built from one.

use super::protocol::{is_id, FieldSelection, FileResource};
use crate::ids::SessionId;
use crate::user::UserId;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Directory, under the drive's storage root, that holds the journal.
/// Hidden, like the partial files, so a listing of finished files does not
/// show it.
pub const SESSIONS_DIR_NAME: &str = ".sessions";

/// Largest record read back: a record is a few hundred bytes (a name is at
/// most [`super::METADATA_BYTES_MAX`]); a larger file is not ours.
const RECORD_BYTES_MAX: u64 = 256 * 1024;
// A record holds a name of at most a metadata body, plus ids and numbers.
const _: () = assert!(RECORD_BYTES_MAX > 2 * super::METADATA_BYTES_MAX);

/// One session, as journalled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionRecord {
    /// The session's upload id.
    pub upload_id: SessionId,
    /// The id of the file it makes.
    pub file_id: String,
    /// The file's name.
    pub name: String,
    /// The file's MIME type.
    pub mime_type: String,
    /// The total, once declared.
    pub declared_total_bytes: Option<u64>,
    /// Who initiated it (token mode), if anyone.
    pub owner: Option<UserId>,
    /// The initiation's `fields=` (Drive's default in records from before
    /// it was kept).
    #[serde(default)]
    pub fields: FieldSelection,
    /// The file, once finished.
    pub finished: Option<FileResource>,
}

/// A journal operation failed.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// An OS call failed.
    #[error("session journal {operation} of {path} failed: {source}")]
    Io {
        /// What was being done.
        operation: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A record does not parse or does not name itself.
    #[error("session journal record {path} is not valid: {reason}")]
    BadRecord {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An id that the server never makes.
    #[error("session id {given:?} is not 32 hex digits")]
    BadId {
        /// What was given (cut to 64 characters).
        given: String,
    },
}

/// The journal directory.
#[derive(Debug, Clone)]
pub struct SessionJournal {
    dir: PathBuf,
}

fn io(operation: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> JournalError {
    let path = path.to_owned();
    move |source| JournalError::Io {
        operation,
        path,
        source,
    }
}

impl SessionJournal {
    /// The journal under `root` (`root/.sessions`, created if missing).
    pub fn open(root: &Path) -> Result<Self, JournalError> {
        let dir = root.join(SESSIONS_DIR_NAME);
        std::fs::create_dir_all(&dir).map_err(io("open", &dir))?;
        Ok(Self { dir })
    }

    /// The journal's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_of(&self, upload_id: &str) -> Result<PathBuf, JournalError> {
        if !is_id(upload_id) {
            return Err(JournalError::BadId {
                given: upload_id.chars().take(64).collect(),
            });
        }
        Ok(self.dir.join(format!("{upload_id}.json")))
    }

    /// Writes (replaces) a record, atomically and durably.
    pub fn save(&self, record: &SessionRecord) -> Result<(), JournalError> {
        let path = self.path_of(record.upload_id.as_str())?;
        let tmp = self.dir.join(format!(".{}.json.tmp", record.upload_id));
        let text = serde_json::to_vec_pretty(record).map_err(|e| JournalError::BadRecord {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        std::fs::write(&tmp, text).map_err(io("write", &tmp))?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io("sync", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io("rename", &path))?;
        // The rename is durable once the directory is synced.
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io("sync", &self.dir))
    }

    /// Removes a record; a missing one is fine.
    pub fn remove(&self, upload_id: &SessionId) -> Result<(), JournalError> {
        let path = self.path_of(upload_id.as_str())?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("remove", &path)(e)),
        }
    }

    /// Every record, ordered by upload id. Temporary files are skipped.
    pub fn load_all(&self) -> Result<Vec<SessionRecord>, JournalError> {
        let mut records = Vec::new();
        let entries = std::fs::read_dir(&self.dir).map_err(io("list", &self.dir))?;
        for entry in entries {
            let path = entry.map_err(io("list", &self.dir))?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some(upload_id) = name.strip_suffix(".json") else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let bad = |reason: String| JournalError::BadRecord {
                path: path.clone(),
                reason,
            };
            let len_bytes = std::fs::metadata(&path).map_err(io("read", &path))?.len();
            if len_bytes > RECORD_BYTES_MAX {
                return Err(bad(format!(
                    "{len_bytes} bytes, over the {RECORD_BYTES_MAX}-byte limit"
                )));
            }
            let text = std::fs::read(&path).map_err(io("read", &path))?;
            let record: SessionRecord =
                serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
            if record.upload_id.as_str() != upload_id || !is_id(upload_id) {
                return Err(bad(format!(
                    "the record names upload {:?}",
                    record.upload_id
                )));
            }
            records.push(record);
        }
        records.sort_by(|a, b| a.upload_id.cmp(&b.upload_id));
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_ids_are_checked() -> Result<(), JournalError> {
        let root = std::env::temp_dir().join(format!("upsim-journal-{}", std::process::id()));
        let journal = SessionJournal::open(&root)?;
        let record = SessionRecord {
            upload_id: SessionId::new("0123456789abcdef0123456789abcdef"),
            file_id: "fedcba9876543210fedcba9876543210".into(),
            name: "a.bin".into(),
            mime_type: "application/octet-stream".into(),
            declared_total_bytes: Some(10),
            owner: None,
            fields: FieldSelection::ALL,
            finished: None,
        };
        journal.save(&record)?;
        journal.save(&record)?;
        assert_eq!(journal.load_all()?, vec![record.clone()]);
        assert!(journal.remove(&SessionId::new("../etc/passwd")).is_err());
        journal.remove(&record.upload_id)?;
        journal.remove(&record.upload_id)?;
        assert!(journal.load_all()?.is_empty());
        std::fs::remove_dir_all(&root).ok();
        Ok(())
    }
}
