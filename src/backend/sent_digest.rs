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
//! backend restart; so are the digests of the piece in flight at each
//! 256 KiB boundary (where the drive may stop keeping a broken piece),
//! saved before the piece is sent: after a restart the drive may hold more
//! than was committed, and those bytes are vouched for by the in-flight
//! digest ending where the drive's bytes end. Without one (a record from
//! before this check) the digest is unknown and the check is skipped until
//! a new session starts from byte zero.

use super::upload::{Upload, UploadState};
use crate::units::DRIVE_CHUNK_ALIGN_BYTES;
use crc_fast::{checksum_combine, CrcAlgorithm, Digest};

/// The most in-flight digests: one per 256 KiB of the largest piece (8 GiB
/// / 256 KiB), plus its end.
pub(crate) const IN_FLIGHT_DIGESTS_MAX: usize = 32 * 1024 + 1;

/// Digests of `[0, end_bytes)` as `(end_bytes, crc)`, for the piece in
/// flight, at each 256 KiB boundary inside it and at its end.
pub(crate) type InFlight = Vec<(u64, u64)>;

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
    let Some(range_crc) = window_crc(upload, state, first, end_bytes) else {
        // Not in the window (sent by a process before a restart): the
        // digest saved with the piece in flight vouches for it.
        return state
            .sent_in_flight
            .iter()
            .find(|(end, _)| *end == end_bytes)
            .map(|&(len_bytes, crc)| SentDigest { crc, len_bytes });
    };
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

/// The digests of the piece `[first, end)` about to be sent, at each
/// 256 KiB boundary inside it and at its end (see [`InFlight`]); empty when
/// the committed prefix's digest is unknown.
pub(super) fn in_flight(upload: &Upload, state: &UploadState, first: u64, end: u64) -> InFlight {
    let Some(base) = extend(state.sent, upload, state, first).filter(|b| b.len_bytes == first)
    else {
        return InFlight::new();
    };
    let mut points = InFlight::new();
    let mut digest = Digest::new(CrcAlgorithm::Crc64Nvme);
    let mut at = first;
    let mark = |digest: &Digest, at: u64, points: &mut InFlight| {
        let crc = if base.len_bytes == 0 {
            digest.finalize()
        } else {
            checksum_combine(
                CrcAlgorithm::Crc64Nvme,
                base.crc,
                digest.finalize(),
                at - first,
            )
        };
        if points.len() < IN_FLIGHT_DIGESTS_MAX {
            points.push((at, crc));
        }
    };
    let walked = walk_window(upload, state, first, end, |mut bytes| {
        while !bytes.is_empty() {
            let to_boundary = DRIVE_CHUNK_ALIGN_BYTES - at % DRIVE_CHUNK_ALIGN_BYTES;
            // At most 256 KiB: fits in usize.
            let take = (to_boundary as usize).min(bytes.len());
            digest.update(&bytes[..take]);
            at += take as u64;
            bytes = &bytes[take..];
            if at.is_multiple_of(DRIVE_CHUNK_ALIGN_BYTES) && at < end {
                mark(&digest, at, &mut points);
            }
        }
    });
    if walked.is_none() {
        return InFlight::new();
    }
    mark(&digest, end, &mut points);
    points
}

/// The CRC-64/NVME of the window's bytes `[first, end)`, if it holds them
/// all.
fn window_crc(upload: &Upload, state: &UploadState, first: u64, end: u64) -> Option<u64> {
    let mut digest = Digest::new(CrcAlgorithm::Crc64Nvme);
    walk_window(upload, state, first, end, |bytes| digest.update(bytes))?;
    Some(digest.finalize())
}

/// Feeds the window's bytes `[first, end)` to `feed`, in order; `None` if
/// the window lacks any of them.
fn walk_window(
    upload: &Upload,
    state: &UploadState,
    first: u64,
    end: u64,
    mut feed: impl FnMut(&[u8]),
) -> Option<()> {
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
                feed(&frame[(lo - at) as usize..(hi - at) as usize]);
                offset = hi;
            }
            at = frame_end;
        }
        let chunk_end = u64::from(index) * upload.chunk_size_bytes + upload.chunk_len(index);
        if offset < end.min(chunk_end) {
            return None; // the chunk is shorter than it should be
        }
    }
    Some(())
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
