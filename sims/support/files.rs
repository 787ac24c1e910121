//! Bytes on disk and in memory: temporary directories that clean up after
//! themselves, payload bytes and files, and digests and fingerprints of
//! what a server stored.

use super::TestResult;
use std::path::{Path, PathBuf};
use upsim::checksum::FileDigest;
use upsim::payload::Payload;

/// A temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A fresh directory named after `tag`, the process and the time.
    pub fn new(tag: &str) -> TestResult<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos();
        let dir = std::env::temp_dir().join(format!("upsim-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Bytes `from..to` of `payload`.
pub fn payload_bytes(payload: &Payload, from: u64, to: u64) -> Vec<u8> {
    let mut buf = vec![0u8; (to - from) as usize];
    payload.fill(from, &mut buf);
    buf
}

/// Chunk `index` of `payload` cut in chunks of `chunk_size_bytes` (the
/// last one short).
pub fn chunk_of(payload: &Payload, chunk_size_bytes: u64, index: u64) -> Vec<u8> {
    let from = index * chunk_size_bytes;
    let to = payload.size_bytes_total().min(from + chunk_size_bytes);
    payload_bytes(payload, from, to)
}

/// Writes `size_bytes` of payload `seed` to `path`; returns its digest.
pub fn write_payload(path: &Path, seed: u64, size_bytes: u64) -> TestResult<FileDigest> {
    use std::io::Write;
    let payload = Payload::new(seed, size_bytes);
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut digest = FileDigest::default();
    let mut buf = vec![0u8; 8 << 20];
    let mut offset = 0u64;
    while offset < size_bytes {
        let len = (size_bytes - offset).min(buf.len() as u64) as usize;
        payload.fill(offset, &mut buf[..len]);
        file.write_all(&buf[..len])?;
        digest.update(&buf[..len]);
        offset += len as u64;
    }
    file.flush()?;
    Ok(digest)
}

/// The digest of a file on disk.
pub fn file_digest(path: &Path) -> TestResult<FileDigest> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut digest = FileDigest::default();
    let mut buf = vec![0u8; 8 << 20];
    loop {
        let got = file.read(&mut buf)?;
        if got == 0 {
            return Ok(digest);
        }
        digest.update(&buf[..got]);
    }
}

/// Finished files in a drive directory (names not starting with `.`).
pub fn finished_files(drive_dir: &Path) -> TestResult<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(drive_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// One stored file: its path, size and CRC-64.
pub type FileFingerprint = (String, u64, String);

/// Every file directly under `dirs` (not recursive; a missing directory
/// has none), sorted.
pub fn files_fingerprint(dirs: &[PathBuf]) -> TestResult<Vec<FileFingerprint>> {
    let mut out = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries {
            let path = entry?.path();
            if !path.is_file() {
                continue;
            }
            let bytes = std::fs::read(&path)?;
            let mut digest = FileDigest::default();
            digest.update(&bytes);
            out.push((
                path.to_string_lossy().into_owned(),
                bytes.len() as u64,
                digest.hex(),
            ));
        }
    }
    out.sort();
    Ok(out)
}
