//! Where a session's committed bytes go.
//!
//! A [`Storage`] opens one [`StorageHandle`] per upload session. The server
//! appends committed bytes to it in order, then either finishes it (size,
//! CRC-64/NVME and MD5 of everything appended) or discards it (session
//! expired).
//!
//! MD5 costs about forty times what CRC-64/NVME does (README,
//! "Performance"), so the simulation's [`DigestStore`] computes it only
//! for sessions that ask for `md5Checksum`; [`DirStore`], like Drive,
//! always does.
//!
//! Invariants:
//! - a handle's bytes are exactly the concatenation of its appends, in order;
//!   `len_bytes()` is their total and only grows;
//! - a handle is finished or discarded at most once (both consume it);
//! - [`DirStore`] never shows a half file under a final name: bytes go to
//!   `dir/.partial/<upload_id>` and only a finished, synced file is renamed to
//!   `dir/<upload_id>-<sanitised name>`.

use super::protocol::sanitise_file_name;
use crate::checksum::{FileDigest, Md5Digest};
use crate::env::BoxFuture;
use crate::units::DRIVE_CHUNK_ALIGN_BYTES;
use bytes::Bytes;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Buffer for re-reading a partial file's digest on reopen: large enough
/// to run near disk speed, small next to a server's memory.
const REOPEN_READ_BUFFER_BYTES: usize = 8 * 1024 * 1024;

/// Name of the directory, under a [`DirStore`]'s root, that holds unfinished
/// uploads. Hidden, so a listing of finished files does not show them.
pub const PARTIAL_DIR_NAME: &str = ".partial";

/// A storage operation that failed, with what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// An OS call failed.
    #[error("storage {operation} of {path} failed after {len_bytes} bytes: {source}")]
    Io {
        /// What was being done (`create`, `append`, `finish`, `discard`).
        operation: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// Bytes the handle held when it failed.
        len_bytes: u64,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A blocking task was cancelled or panicked, so the handle's file is
    /// lost.
    #[error("storage {operation} of {path} did not complete (blocking task lost) after {len_bytes} bytes")]
    TaskLost {
        /// What was being done.
        operation: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// Bytes the handle held before the operation.
        len_bytes: u64,
    },
}

/// A finished file, as storage saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    /// Bytes appended in total.
    pub size_bytes: u64,
    /// CRC-64/NVME of those bytes, sixteen lowercase hex digits.
    pub crc64nvme: String,
    /// MD5 of those bytes, 32 lowercase hex digits, if the store computed
    /// it (see the module docs).
    pub md5_checksum: Option<String>,
}

/// The digests of a handle's bytes: CRC-64/NVME always, MD5 when wanted.
struct Digests {
    crc64: FileDigest,
    md5: Option<Md5Digest>,
}

impl Digests {
    fn new(md5: bool) -> Self {
        Self {
            crc64: FileDigest::default(),
            md5: md5.then(Md5Digest::default),
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        self.crc64.update(bytes);
        if let Some(md5) = &mut self.md5 {
            md5.update(bytes);
        }
    }

    fn len_bytes(&self) -> u64 {
        self.crc64.len_bytes()
    }

    fn stored(&self) -> StoredFile {
        StoredFile {
            size_bytes: self.crc64.len_bytes(),
            crc64nvme: self.crc64.hex(),
            md5_checksum: self.md5.as_ref().map(Md5Digest::hex),
        }
    }
}

/// Where uploads are kept. Object safe; shared by every connection.
pub trait Storage: Send + Sync + 'static {
    /// Opens storage for a new session. `name` is the file's name as the
    /// client gave it (implementations sanitise it before using it in a
    /// path). `md5_wanted`: the initiation asked for `md5Checksum`; a store
    /// may compute MD5 regardless (see the module docs).
    fn create<'a>(
        &'a self,
        upload_id: &'a str,
        name: &'a str,
        md5_wanted: bool,
    ) -> BoxFuture<'a, Result<Box<dyn StorageHandle>, StorageError>>;

    /// Opens again the storage of a session this store held before a
    /// restart, with what survived: `Ok(None)` if nothing did (or the store
    /// keeps nothing across restarts, the default). Bytes past the last
    /// whole [`DRIVE_CHUNK_ALIGN_BYTES`] unit are cut off unless they end
    /// the file at `total_bytes`, so the handle holds what the protocol
    /// could have committed.
    fn reopen<'a>(
        &'a self,
        upload_id: &'a str,
        name: &'a str,
        total_bytes: Option<u64>,
    ) -> BoxFuture<'a, Result<Option<Box<dyn StorageHandle>>, StorageError>> {
        let _ = (upload_id, name, total_bytes);
        Box::pin(async { Ok(None) })
    }
}

/// One session's bytes.
pub trait StorageHandle: Send + 'static {
    /// Appends `bytes` after everything appended so far.
    ///
    /// # Cancel safety
    /// Not cancel safe: a dropped append may or may not have written. The
    /// server runs appends in a task of their own so they are never dropped.
    fn append(&mut self, bytes: Bytes) -> BoxFuture<'_, Result<(), StorageError>>;
    /// Bytes appended so far.
    fn len_bytes(&self) -> u64;
    /// Completes the file: everything appended becomes the finished file.
    fn finish(self: Box<Self>) -> BoxFuture<'static, Result<StoredFile, StorageError>>;
    /// Drops everything appended. Synchronous (an unlink at most) so that
    /// expiring sessions needs no runtime.
    fn discard(self: Box<Self>) -> Result<(), StorageError>;
}

/// Storage that keeps only streaming digests, never the bytes: what the
/// simulation uses, so a 3.38 GB upload costs no memory. MD5 only for
/// sessions that want it.
#[derive(Debug, Clone, Copy, Default)]
pub struct DigestStore;

struct DigestHandle {
    digest: Digests,
}

impl Storage for DigestStore {
    fn create<'a>(
        &'a self,
        _upload_id: &'a str,
        _name: &'a str,
        md5_wanted: bool,
    ) -> BoxFuture<'a, Result<Box<dyn StorageHandle>, StorageError>> {
        Box::pin(async move {
            Ok(Box::new(DigestHandle {
                digest: Digests::new(md5_wanted),
            }) as Box<dyn StorageHandle>)
        })
    }
}

impl StorageHandle for DigestHandle {
    fn append(&mut self, bytes: Bytes) -> BoxFuture<'_, Result<(), StorageError>> {
        // Synchronous: the whole append happens before the future exists,
        // so dropping it cannot lose a half-written state.
        self.digest.update(&bytes);
        Box::pin(async { Ok(()) })
    }

    fn len_bytes(&self) -> u64 {
        self.digest.len_bytes()
    }

    fn finish(self: Box<Self>) -> BoxFuture<'static, Result<StoredFile, StorageError>> {
        let stored = self.digest.stored();
        Box::pin(async { Ok(stored) })
    }

    fn discard(self: Box<Self>) -> Result<(), StorageError> {
        Ok(())
    }
}

/// Storage in a directory: unfinished uploads in `dir/.partial/<upload_id>`,
/// finished ones renamed to `dir/<upload_id>-<sanitised name>`. File IO (and
/// the digests, MD5 always, as Drive) runs on tokio's blocking pool.
#[derive(Debug, Clone)]
pub struct DirStore {
    dir: PathBuf,
}

impl DirStore {
    /// Storage rooted at `dir`. Directories are created on first use.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The root directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// An open partial file and the digest of what it holds. Moved into each
/// blocking task and back, so exactly one task touches it at a time.
struct DirFile {
    file: File,
    digest: Digests,
}

struct DirHandle {
    partial_path: PathBuf,
    final_path: PathBuf,
    /// `None` only if a blocking task was lost; every later call fails.
    open: Option<DirFile>,
    /// Bytes known appended; kept outside `open` so errors can report it.
    len_bytes: u64,
}

fn io_error<'a>(
    operation: &'static str,
    path: &'a Path,
    len_bytes: u64,
) -> impl FnOnce(std::io::Error) -> StorageError + 'a {
    move |source| StorageError::Io {
        operation,
        path: path.to_owned(),
        len_bytes,
        source,
    }
}

impl Storage for DirStore {
    fn create<'a>(
        &'a self,
        upload_id: &'a str,
        name: &'a str,
        _md5_wanted: bool,
    ) -> BoxFuture<'a, Result<Box<dyn StorageHandle>, StorageError>> {
        let (partial_dir, partial_path, final_path) = self.paths(upload_id, name);
        Box::pin(async move {
            let path = partial_path.clone();
            let opened = tokio::task::spawn_blocking(move || {
                std::fs::create_dir_all(&partial_dir)?;
                File::create(&path)
            })
            .await;
            let file = match opened {
                Ok(result) => result.map_err(io_error("create", &partial_path, 0))?,
                Err(_) => {
                    return Err(StorageError::TaskLost {
                        operation: "create",
                        path: partial_path,
                        len_bytes: 0,
                    })
                }
            };
            tracing::debug!(path = %partial_path.display(), "drive storage: partial file created");
            Ok(Box::new(DirHandle {
                partial_path,
                final_path,
                open: Some(DirFile {
                    file,
                    digest: Digests::new(true),
                }),
                len_bytes: 0,
            }) as Box<dyn StorageHandle>)
        })
    }

    fn reopen<'a>(
        &'a self,
        upload_id: &'a str,
        name: &'a str,
        total_bytes: Option<u64>,
    ) -> BoxFuture<'a, Result<Option<Box<dyn StorageHandle>>, StorageError>> {
        let (_, partial_path, final_path) = self.paths(upload_id, name);
        Box::pin(async move {
            let path = partial_path.clone();
            let opened = tokio::task::spawn_blocking(move || reopen_partial(&path, total_bytes))
                .await
                .map_err(|_| StorageError::TaskLost {
                    operation: "reopen",
                    path: partial_path.clone(),
                    len_bytes: 0,
                })?
                .map_err(io_error("reopen", &partial_path, 0))?;
            let Some(open) = opened else {
                return Ok(None);
            };
            let len_bytes = open.digest.len_bytes();
            tracing::info!(path = %partial_path.display(), len_bytes, "drive storage: partial file reopened");
            Ok(Some(Box::new(DirHandle {
                partial_path,
                final_path,
                open: Some(open),
                len_bytes,
            }) as Box<dyn StorageHandle>))
        })
    }
}

impl DirStore {
    fn paths(&self, upload_id: &str, name: &str) -> (PathBuf, PathBuf, PathBuf) {
        let partial_dir = self.dir.join(PARTIAL_DIR_NAME);
        let partial_path = partial_dir.join(sanitise_file_name(upload_id));
        let final_path = self.dir.join(format!(
            "{}-{}",
            sanitise_file_name(upload_id),
            sanitise_file_name(name)
        ));
        (partial_dir, partial_path, final_path)
    }
}

/// Opens `path` for appending after a restart: cuts a partial unit off the
/// end (unless the file is whole at `total_bytes`), digests what is kept and
/// leaves the cursor at its end. `None` if there is no such file.
fn reopen_partial(path: &Path, total_bytes: Option<u64>) -> std::io::Result<Option<DirFile>> {
    let mut file = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len_bytes = file.metadata()?.len();
    let keep_bytes = if Some(len_bytes) == total_bytes {
        len_bytes
    } else {
        len_bytes - len_bytes % DRIVE_CHUNK_ALIGN_BYTES
    };
    if keep_bytes < len_bytes {
        file.set_len(keep_bytes)?;
        file.sync_all()?;
    }
    file.seek(SeekFrom::Start(0))?;
    let mut digest = Digests::new(true);
    let mut buf = vec![0u8; REOPEN_READ_BUFFER_BYTES];
    let mut left_bytes = keep_bytes;
    while left_bytes > 0 {
        let want = usize::try_from(left_bytes.min(buf.len() as u64)).unwrap_or(buf.len());
        let got = file.read(&mut buf[..want])?;
        if got == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("partial file ended {left_bytes} bytes early"),
            ));
        }
        digest.update(&buf[..got]);
        left_bytes -= got as u64;
    }
    file.seek(SeekFrom::Start(keep_bytes))?;
    Ok(Some(DirFile { file, digest }))
}

impl DirHandle {
    fn lost(&self, operation: &'static str) -> StorageError {
        StorageError::TaskLost {
            operation,
            path: self.partial_path.clone(),
            len_bytes: self.len_bytes,
        }
    }
}

impl StorageHandle for DirHandle {
    fn append(&mut self, bytes: Bytes) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(async move {
            let mut open = self.open.take().ok_or_else(|| self.lost("append"))?;
            let joined = tokio::task::spawn_blocking(move || {
                let written = open.file.write_all(&bytes);
                if written.is_ok() {
                    open.digest.update(&bytes);
                }
                (open, written)
            })
            .await;
            let (open, written) = joined.map_err(|_| self.lost("append"))?;
            self.len_bytes = open.digest.len_bytes();
            self.open = Some(open);
            written.map_err(io_error("append", &self.partial_path, self.len_bytes))
        })
    }

    fn len_bytes(&self) -> u64 {
        self.len_bytes
    }

    fn finish(mut self: Box<Self>) -> BoxFuture<'static, Result<StoredFile, StorageError>> {
        Box::pin(async move {
            let open = self.open.take().ok_or_else(|| self.lost("finish"))?;
            let partial_path = self.partial_path.clone();
            let final_path = self.final_path.clone();
            let joined = tokio::task::spawn_blocking(move || {
                // Sync before the rename: the final name must never point at
                // bytes that are not on disk.
                open.file.sync_all()?;
                drop(open.file);
                std::fs::rename(&partial_path, &final_path)?;
                Ok::<_, std::io::Error>(open.digest)
            })
            .await;
            let digest = joined.map_err(|_| self.lost("finish"))?.map_err(io_error(
                "finish",
                &self.partial_path,
                self.len_bytes,
            ))?;
            tracing::info!(
                path = %self.final_path.display(),
                size_bytes = digest.len_bytes(),
                "drive storage: file finished"
            );
            Ok(digest.stored())
        })
    }

    fn discard(mut self: Box<Self>) -> Result<(), StorageError> {
        drop(self.open.take());
        match std::fs::remove_file(&self.partial_path) {
            Ok(()) => Ok(()),
            // Already gone is what discarding wants.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("discard", &self.partial_path, self.len_bytes)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn digest_store_digests_what_was_appended() -> Result<(), StorageError> {
        let mut expected = FileDigest::default();
        expected.update(b"hello world");
        let mut expected_md5 = Md5Digest::default();
        expected_md5.update(b"hello world");
        for md5_wanted in [false, true] {
            let mut handle = DigestStore.create("id", "n", md5_wanted).await?;
            handle.append(Bytes::from_static(b"hello ")).await?;
            handle.append(Bytes::from_static(b"world")).await?;
            assert_eq!(handle.len_bytes(), 11);
            let stored = handle.finish().await?;
            assert_eq!(stored.size_bytes, 11);
            assert_eq!(stored.crc64nvme, expected.hex());
            // MD5 costs nothing unless the session asked for it.
            assert_eq!(stored.md5_checksum, md5_wanted.then(|| expected_md5.hex()));
        }
        Ok(())
    }
}
