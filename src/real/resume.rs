//! The upload client's memory of which upload a file belongs to, so that an
//! interrupted `upsim upload` run again resumes instead of starting over.
//!
//! One small JSON file per (server, file) in a state directory, named by a
//! hash of the key: the server URL, the file's canonical path, its size and
//! its modification time (nanoseconds). A file that changed (size or mtime)
//! gets a new key, so its stale upload is never resumed with other bytes.
//! Written atomically (temporary file, then rename).
//!
//! Invariant: an entry is read back only if every field of its key matches
//! (a hash collision cannot hand over another file's upload).

use crate::checksum::FileDigest;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

/// Largest entry read back: an entry is a few hundred bytes.
const ENTRY_BYTES_MAX: u64 = 64 * 1024;

/// What identifies a file to upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeKey {
    /// The backend's URL.
    pub server: String,
    /// The file's canonical path.
    pub path: String,
    /// Its size.
    pub size_bytes: u64,
    /// Its modification time, ns since the epoch.
    pub mtime_ns: u128,
}

/// One remembered upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    key: ResumeKey,
    upload_id: String,
}

/// A resume-state operation failed.
#[derive(Debug, thiserror::Error)]
#[error("upload state {operation} of {path} failed: {reason}")]
pub struct ResumeError {
    /// What was being done.
    pub operation: &'static str,
    /// The file concerned.
    pub path: PathBuf,
    /// Why.
    pub reason: String,
}

impl ResumeKey {
    /// The key of `file` uploaded to `server`.
    pub fn of(server: &str, file: &Path) -> Result<Self, ResumeError> {
        let fail = |operation, e: std::io::Error| ResumeError {
            operation,
            path: file.to_owned(),
            reason: e.to_string(),
        };
        let canonical = file.canonicalize().map_err(|e| fail("canonicalize", e))?;
        let meta = std::fs::metadata(&canonical).map_err(|e| fail("stat", e))?;
        let mtime_ns = meta
            .modified()
            .map_err(|e| fail("stat", e))?
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        Ok(Self {
            server: server.trim_end_matches('/').to_owned(),
            path: canonical.to_string_lossy().into_owned(),
            size_bytes: meta.len(),
            mtime_ns,
        })
    }

    fn file_name(&self) -> String {
        let mut digest = FileDigest::default();
        for part in [
            self.server.as_bytes(),
            self.path.as_bytes(),
            &self.size_bytes.to_le_bytes(),
            &self.mtime_ns.to_le_bytes(),
        ] {
            // Length-prefixed, so that ("ab", "c") and ("a", "bc") differ.
            digest.update(&(part.len() as u64).to_le_bytes());
            digest.update(part);
        }
        format!("{}.json", digest.hex())
    }
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct ResumeState {
    dir: PathBuf,
}

impl ResumeState {
    /// The default directory: `$XDG_STATE_HOME/upsim/uploads`, else
    /// `$HOME/.local/state/upsim/uploads`, else `./.upsim-uploads`.
    pub fn default_dir() -> PathBuf {
        let base = std::env::var_os("XDG_STATE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")));
        match base {
            Some(base) => base.join("upsim").join("uploads"),
            None => PathBuf::from(".upsim-uploads"),
        }
    }

    /// State in `dir` (created when first written).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The upload remembered for `key`, if any.
    pub fn load(&self, key: &ResumeKey) -> Result<Option<String>, ResumeError> {
        let path = self.dir.join(key.file_name());
        let fail = |reason: String| ResumeError {
            operation: "read",
            path: path.clone(),
            reason,
        };
        let len_bytes = match std::fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(fail(e.to_string())),
        };
        if len_bytes > ENTRY_BYTES_MAX {
            return Err(fail(format!("{len_bytes} bytes is not an upload entry")));
        }
        let text = std::fs::read(&path).map_err(|e| fail(e.to_string()))?;
        let entry: Entry = serde_json::from_slice(&text).map_err(|e| fail(e.to_string()))?;
        Ok((entry.key == *key).then_some(entry.upload_id))
    }

    /// Remembers `upload_id` for `key`.
    pub fn save(&self, key: &ResumeKey, upload_id: &str) -> Result<(), ResumeError> {
        let path = self.dir.join(key.file_name());
        let tmp = self.dir.join(format!(".{}.tmp", key.file_name()));
        let fail = |operation, e: std::io::Error| ResumeError {
            operation,
            path: path.clone(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(&self.dir).map_err(|e| fail("create", e))?;
        let entry = Entry {
            key: key.clone(),
            upload_id: upload_id.to_owned(),
        };
        let text = serde_json::to_vec_pretty(&entry).map_err(|e| ResumeError {
            operation: "encode",
            path: path.clone(),
            reason: e.to_string(),
        })?;
        std::fs::write(&tmp, text).map_err(|e| fail("write", e))?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| fail("sync", e))?;
        std::fs::rename(&tmp, &path).map_err(|e| fail("rename", e))
    }

    /// Forgets `key` (the upload finished, or is gone on the server).
    pub fn forget(&self, key: &ResumeKey) -> Result<(), ResumeError> {
        let path = self.dir.join(key.file_name());
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ResumeError {
                operation: "remove",
                path,
                reason: e.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_a_changed_file_is_a_new_key() -> Result<(), ResumeError> {
        let dir = std::env::temp_dir().join(format!("upsim-resume-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| ResumeError {
            operation: "test",
            path: dir.clone(),
            reason: e.to_string(),
        })?;
        let file = dir.join("f.bin");
        std::fs::write(&file, b"hello").ok();
        let state = ResumeState::new(dir.join("state"));
        let key = ResumeKey::of("http://127.0.0.1:1", &file)?;
        assert_eq!(state.load(&key)?, None);
        state.save(&key, "abc")?;
        assert_eq!(state.load(&key)?, Some("abc".into()));
        let other = ResumeKey {
            size_bytes: 6,
            ..key.clone()
        };
        assert_eq!(state.load(&other)?, None);
        state.forget(&key)?;
        assert_eq!(state.load(&key)?, None);
        std::fs::remove_dir_all(&dir).ok();
        Ok(())
    }
}
