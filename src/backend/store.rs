//! What the backend persists so that its own crash loses no committed work:
//! per upload, the drive session and the committed offset.
//!
//! Invariants: a record is written after every change of session or
//! committed offset, before the change is acknowledged to anyone; the
//! committed offset of one session only moves forward; writes are atomic
//! (the directory store writes a temporary file and renames it).
//!
//! [`MemoryStore`] lives outside the simulated backend host, so it survives
//! that host's crash the way a disk would; [`DirStore`] is the real one.

pub use super::tus::TusRecord;
use crate::chunk_api::ErrorDetail;
use crate::chunk_api::UploadedFile;
use crate::ids::UploadId;
use crate::user::UserId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

/// Where a persisted upload stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum RecordPhase {
    /// In progress.
    Receiving,
    /// Finished.
    Complete {
        /// The drive's file.
        file: UploadedFile,
    },
    /// Ended without finishing.
    Failed {
        /// Why.
        failure: ErrorDetail,
    },
}

/// One upload, as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    /// Its id.
    pub upload_id: UploadId,
    /// Its owner.
    pub user: UserId,
    /// File name.
    pub file_name: String,
    /// MIME type.
    pub mime_type: String,
    /// Size.
    pub file_size_bytes: u64,
    /// Chunk size.
    pub chunk_size_bytes: u64,
    /// The drive session URI, once started.
    pub drive_session: Option<String>,
    /// How many sessions were started (restarts after a 404).
    pub session_generation: u32,
    /// Bytes the drive acknowledged holding.
    pub committed_bytes: u64,
    /// The digest of those bytes as the backend sent them, and of the
    /// piece in flight (fields of the record itself, not a nested object).
    #[serde(flatten)]
    pub sent: SentRecord,
    /// The client's idempotency key for the create, if it sent one.
    #[serde(default)]
    pub client_token: Option<String>,
    /// A tus upload's headers (absent for the chunk API, whose records
    /// keep the form they had).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tus: Option<TusRecord>,
    /// Where it stands.
    pub phase: RecordPhase,
}

/// What the backend knows of the bytes it sent, as persisted (the
/// end-of-upload check, see `backend/sent_digest.rs`): the digest of the
/// committed prefix, of the kind the backend checks, when it knows it, and
/// the digests of the piece in flight, `(end_bytes, digest)` of
/// `[0, end_bytes)` at each 256 KiB boundary and its end: what vouches for
/// bytes the drive took after the last save. Records from before MD5 have
/// only the CRC fields, which keep their names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentRecord {
    /// CRC-64/NVME of the committed prefix.
    #[serde(default)]
    pub sent_crc64: Option<u64>,
    /// MD5 of the committed prefix, as a saved state
    /// ([`Md5Digest::save`](crate::checksum::Md5Digest::save)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_md5: Option<String>,
    /// The piece in flight's CRC-64/NVME digests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sent_in_flight: Vec<(u64, u64)>,
    /// The piece in flight's MD5 digests, as saved states.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sent_in_flight_md5: Vec<(u64, String)>,
}

/// A store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("upload store {operation} failed: {reason}")]
pub struct StoreError {
    /// What was being done.
    pub operation: &'static str,
    /// Why it failed.
    pub reason: String,
}

/// The store trait.
pub trait UploadStore: Send + Sync + 'static {
    /// Writes (replaces) a record.
    fn save(&self, record: &UploadRecord) -> Result<(), StoreError>;
    /// Every record, ordered by id.
    fn load_all(&self) -> Result<Vec<UploadRecord>, StoreError>;
    /// Deletes the record of upload `id` (an ended upload past its
    /// retention); deleting a missing record is not an error.
    fn remove(&self, id: &UploadId) -> Result<(), StoreError>;
}

/// Records in memory, shared by every boot of a simulated backend.
#[derive(Clone, Default)]
pub struct MemoryStore {
    records: Arc<Mutex<BTreeMap<UploadId, UploadRecord>>>,
}

impl UploadStore for MemoryStore {
    fn save(&self, record: &UploadRecord) -> Result<(), StoreError> {
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(record.upload_id.clone(), record.clone());
        Ok(())
    }

    fn load_all(&self) -> Result<Vec<UploadRecord>, StoreError> {
        Ok(self
            .records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect())
    }

    fn remove(&self, id: &UploadId) -> Result<(), StoreError> {
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
        Ok(())
    }
}

impl MemoryStore {
    /// Records held now.
    pub fn len(&self) -> usize {
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One JSON file per upload in a directory.
pub struct DirStore {
    dir: PathBuf,
}

impl DirStore {
    /// A store in `dir` (created if missing).
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| StoreError {
            operation: "open",
            reason: format!("{}: {e}", dir.display()),
        })?;
        Ok(Self { dir })
    }
}

impl UploadStore for DirStore {
    fn save(&self, record: &UploadRecord) -> Result<(), StoreError> {
        let fail = |e: std::io::Error| StoreError {
            operation: "save",
            reason: e.to_string(),
        };
        // Upload ids are 32 hex digits (made by the backend), safe as names.
        let path = self.dir.join(format!("{}.json", record.upload_id));
        let tmp = self.dir.join(format!(".{}.json.tmp", record.upload_id));
        let text = serde_json::to_vec_pretty(record).expect("records always serialise");
        std::fs::write(&tmp, text).map_err(fail)?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(fail)?;
        std::fs::rename(&tmp, &path).map_err(fail)
    }

    fn load_all(&self) -> Result<Vec<UploadRecord>, StoreError> {
        let fail = |e: std::io::Error| StoreError {
            operation: "load",
            reason: e.to_string(),
        };
        let mut records = BTreeMap::new();
        for entry in std::fs::read_dir(&self.dir).map_err(fail)? {
            let path = entry.map_err(fail)?.path();
            let is_record = path.extension().is_some_and(|e| e == "json")
                && !path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if !is_record {
                continue;
            }
            let text = std::fs::read(&path).map_err(fail)?;
            let record: UploadRecord = serde_json::from_slice(&text).map_err(|e| StoreError {
                operation: "load",
                reason: format!("{}: {e}", path.display()),
            })?;
            records.insert(record.upload_id.clone(), record);
        }
        Ok(records.into_values().collect())
    }

    fn remove(&self, id: &UploadId) -> Result<(), StoreError> {
        // Upload ids are 32 hex digits (made by the backend), safe as names.
        let path = self.dir.join(format!("{id}.json"));
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError {
                operation: "remove",
                reason: format!("{}: {e}", path.display()),
            }),
        }
    }
}
