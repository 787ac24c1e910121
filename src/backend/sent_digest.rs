//! What the backend sent the drive, as a running CRC-64/NVME of the
//! committed prefix: the end-of-upload check that the drive's file is the
//! bytes the backend meant to send.
//!
//! The drive protocol has no per-piece checksum (like Google Drive's
//! resumable uploads): a piece damaged on the way is stored as it arrived.
//! Chunks are checked on arrival (CRC-32C), so the backend's window holds
//! the true bytes; it digests every range the drive acknowledges, from the
//! window, before dropping it. When the drive finishes the file, its
//! CRC-64/NVME must equal this digest; otherwise the backend restarts the
//! upload in a new drive session instead of reporting success.
//!
//! The digest is persisted with the committed offset, so it survives a
//! backend restart. It is unknown when the backend did not see every
//! committed byte leave its window: after a restart, the drive may hold
//! more than was persisted (bytes the old process sent, acknowledged after
//! its last save). The check is then skipped until a new session starts
//! from byte zero.

use super::upload::{Upload, UploadState};
use crc_fast::{checksum_combine, CrcAlgorithm, Digest};

/// A drive file whose checksum is not the bytes the backend sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("drive_checksum_mismatch: the drive's {len_bytes}-byte file has CRC-64/NVME {drive}, the backend sent {sent:016x}")]
pub(super) struct DriveChecksumMismatch {
    /// The drive's `crc64nvme`.
    pub drive: String,
    /// The digest of what the backend sent.
    pub sent: u64,
    /// The file's length.
    pub len_bytes: u64,
}

/// The CRC-64/NVME of the bytes `[0, len_bytes)` the drive acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SentDigest {
    crc: u64,
    len_bytes: u64,
}

/// The digest of a committed prefix, or `None` when unknown.
pub(crate) type Sent = Option<SentDigest>;

/// The persisted form: the CRC of the committed prefix, if the digest
/// covers exactly `committed_bytes`.
pub(super) fn crc_of_prefix(sent: Sent, committed_bytes: u64) -> Option<u64> {
    sent.filter(|s| s.len_bytes == committed_bytes)
        .map(|s| s.crc)
}

/// The digest read back from a record.
pub(super) fn known(crc: Option<u64>, committed_bytes: u64) -> Sent {
    crc.map(|crc| SentDigest {
        crc,
        len_bytes: committed_bytes,
    })
}

/// `sent` extended to `end_bytes` with the window's bytes: a fresh digest
/// when the committed offset is zero (a new session), `None` when the
/// digest does not end at the committed offset or the window lacks a byte
/// of the range.
pub(super) fn extend(sent: Sent, upload: &Upload, state: &UploadState, end_bytes: u64) -> Sent {
    let first = state.committed_bytes;
    let base = if first == 0 {
        SentDigest {
            crc: 0,
            len_bytes: 0,
        }
    } else {
        sent.filter(|s| s.len_bytes == first)?
    };
    if end_bytes <= first {
        return Some(base);
    }
    let range_crc = window_crc(upload, state, first, end_bytes)?;
    let len = end_bytes - first;
    let crc = if base.len_bytes == 0 {
        range_crc
    } else {
        checksum_combine(CrcAlgorithm::Crc64Nvme, base.crc, range_crc, len)
    };
    Some(SentDigest {
        crc,
        len_bytes: end_bytes,
    })
}

/// The CRC-64/NVME of the window's bytes `[first, end)`, if it holds them
/// all.
fn window_crc(upload: &Upload, state: &UploadState, first: u64, end: u64) -> Option<u64> {
    let mut digest = Digest::new(CrcAlgorithm::Crc64Nvme);
    let mut offset = first;
    while offset < end {
        let index = upload.chunk_of(offset);
        let chunk = state.window.get(&index)?;
        let mut at = u64::from(index) * upload.chunk_size_bytes;
        for frame in &chunk.frames {
            let frame_end = at + frame.len() as u64;
            let (lo, hi) = (offset.max(at), end.min(frame_end));
            if lo < hi {
                // Both bounds lie inside this frame, which fits in memory.
                digest.update(&frame[(lo - at) as usize..(hi - at) as usize]);
                offset = hi;
            }
            at = frame_end;
        }
        let chunk_end = u64::from(index) * upload.chunk_size_bytes + upload.chunk_len(index);
        if offset < end.min(chunk_end) {
            return None; // the chunk is shorter than it should be
        }
    }
    Some(digest.finalize())
}

/// Whether the drive's finished file is what the backend sent: `Ok` when it
/// is, or when the digest is unknown (nothing to compare).
pub(super) fn verify(sent: Sent, drive_crc64: &str) -> Result<(), DriveChecksumMismatch> {
    let Some(s) = sent else { return Ok(()) };
    if format!("{:016x}", s.crc) == drive_crc64 {
        return Ok(());
    }
    Err(DriveChecksumMismatch {
        drive: drive_crc64.to_owned(),
        sent: s.crc,
        len_bytes: s.len_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combining_matches_one_pass() {
        let bytes: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let whole = crc_fast::checksum(CrcAlgorithm::Crc64Nvme, &bytes);
        let (a, b) = bytes.split_at(3_333);
        let head = crc_fast::checksum(CrcAlgorithm::Crc64Nvme, a);
        let tail = crc_fast::checksum(CrcAlgorithm::Crc64Nvme, b);
        let combined = checksum_combine(CrcAlgorithm::Crc64Nvme, head, tail, b.len() as u64);
        assert_eq!(combined, whole);
    }

    #[test]
    fn verify_catches_a_mismatch_and_skips_an_unknown_digest() {
        let sent = Some(SentDigest {
            crc: 0x00112233aabbccdd,
            len_bytes: 9,
        });
        assert_eq!(verify(sent, "00112233aabbccdd"), Ok(()));
        let err = verify(sent, "00112233aabbccdc").expect_err("a flipped digest");
        assert!(err.to_string().starts_with("drive_checksum_mismatch"));
        assert_eq!(verify(None, "anything"), Ok(()));
    }
}
