//! What the backend sent the drive, as a running digest of the committed
//! prefix: the end-of-upload check that the drive's file is the bytes the
//! backend meant to send.
//!
//! The drive protocol has no per-piece checksum (like Google Drive's
//! resumable uploads): a piece damaged on the way is stored as it arrived.
//! Chunks are checked on arrival (CRC-32C), so the backend's window holds
//! the true bytes; it digests every range the drive acknowledges before
//! dropping it. When the drive finishes the file, the digest the file
//! resource reports must equal this one; otherwise the backend restarts the
//! upload in a new drive session instead of reporting success.
//!
//! Which digest is configuration ([`FileDigestKind`],
//! [`BackendConfig::file_digest`](super::BackendConfig::file_digest)):
//! CRC-64/NVME, the emulator's `crc64nvme`, which carries on from the
//! prefix's CRC ([`FileDigest::resume`]), so it is taken from the window
//! when the drive acknowledges a range; or MD5, Drive's `md5Checksum`,
//! whose state can only be carried forward, at a fortieth of the speed. So
//! that MD5 reads each byte once, the piece's digests are computed from its
//! frames before it is sent, outside the upload's lock, and the drive's
//! answer takes the one that ends where the drive's bytes end.
//!
//! The digest is persisted with the committed offset, so it survives a
//! backend restart; so are the digests of the piece in flight at each
//! 256 KiB boundary (where the drive may stop keeping a broken piece),
//! saved before the piece is sent: after a restart the drive may hold more
//! than was committed, and those bytes are vouched for by the in-flight
//! digest ending where the drive's bytes end. Without one (a record from
//! before this check, or of the other kind of digest) the digest is
//! unknown and the check is skipped until a new session starts from byte
//! zero.

use super::store::SentRecord;
use super::upload::{Upload, UploadState};
use crate::checksum::{FileDigest, FileDigestKind, Md5Digest};
use crate::drive::FileResource;
use crate::units::DRIVE_CHUNK_ALIGN_BYTES;
use bytes::Bytes;

/// The most in-flight digests: one per 256 KiB of the largest piece (8 GiB
/// / 256 KiB), plus its end.
pub(crate) const IN_FLIGHT_DIGESTS_MAX: usize = 32 * 1024 + 1;

/// The digests of `[0, end)` for the piece in flight, at each 256 KiB
/// boundary inside it and at its end (each's `len_bytes` is its end).
pub(crate) type InFlight = Vec<SentDigest>;

/// A drive file whose digest is not the bytes the backend sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("drive_checksum_mismatch: the drive's {len_bytes}-byte file has {}, the backend sent {sent}", shown(*.kind, .drive.as_deref()))]
pub(super) struct DriveChecksumMismatch {
    /// Which digest.
    pub kind: FileDigestKind,
    /// The drive's, as its file resource gave it (`None`: it gave none).
    pub drive: Option<String>,
    /// The digest of what the backend sent, in the same wire form.
    pub sent: String,
    /// The file's length.
    pub len_bytes: u64,
}

fn shown(kind: FileDigestKind, drive: Option<&str>) -> String {
    match drive {
        Some(digest) => format!("{kind} {digest}"),
        None => format!("no {}", kind.field_name()),
    }
}

/// A running digest of a prefix.
#[derive(Debug, Clone)]
pub(crate) enum Running {
    /// CRC-64/NVME.
    Crc64(u64),
    /// MD5's state (boxed: it is ten times a CRC's size).
    Md5(Box<Md5Digest>),
}

impl Running {
    fn kind(&self) -> FileDigestKind {
        match self {
            Self::Crc64(_) => FileDigestKind::Crc64Nvme,
            Self::Md5(_) => FileDigestKind::Md5,
        }
    }

    /// The wire form, as the drive's file resource writes it.
    fn hex(&self) -> String {
        match self {
            Self::Crc64(crc) => format!("{crc:016x}"),
            Self::Md5(md5) => md5.hex(),
        }
    }
}

/// The digest of the bytes `[0, len_bytes)` the drive acknowledged.
#[derive(Debug, Clone)]
pub(crate) struct SentDigest {
    value: Running,
    len_bytes: u64,
}

impl SentDigest {
    /// The digest of nothing.
    fn empty(kind: FileDigestKind) -> Self {
        let value = match kind {
            FileDigestKind::Crc64Nvme => Running::Crc64(0),
            FileDigestKind::Md5 => Running::Md5(Box::default()),
        };
        Self {
            value,
            len_bytes: 0,
        }
    }
}

/// The digest of a committed prefix, or `None` when unknown.
pub(crate) type Sent = Option<SentDigest>;

/// The persisted form of `sent` (if it covers exactly `committed_bytes`)
/// and of the piece in flight.
pub(super) fn saved(sent: &Sent, in_flight: &[SentDigest], committed_bytes: u64) -> SentRecord {
    let mut record = SentRecord::default();
    match sent.as_ref().filter(|s| s.len_bytes == committed_bytes) {
        Some(SentDigest {
            value: Running::Crc64(crc),
            ..
        }) => record.sent_crc64 = Some(*crc),
        Some(SentDigest {
            value: Running::Md5(md5),
            ..
        }) => record.sent_md5 = Some(md5.save()),
        None => {}
    }
    for point in in_flight {
        match &point.value {
            Running::Crc64(crc) => record.sent_in_flight.push((point.len_bytes, *crc)),
            Running::Md5(md5) => record
                .sent_in_flight_md5
                .push((point.len_bytes, md5.save())),
        }
    }
    record
}

/// The digest and the piece in flight read back from a record (a saved MD5
/// state that does not restore, or does not cover what it says, counts as
/// unknown).
pub(super) fn restored(record: &SentRecord, committed_bytes: u64) -> (Sent, InFlight) {
    let md5 = |len_bytes: u64, saved: &str| {
        Md5Digest::restore(saved)
            .ok()
            .filter(|md5| md5.len_bytes() == len_bytes)
            .map(|md5| SentDigest {
                value: Running::Md5(Box::new(md5)),
                len_bytes,
            })
    };
    let sent = match (&record.sent_crc64, &record.sent_md5) {
        (Some(crc), _) => Some(SentDigest {
            value: Running::Crc64(*crc),
            len_bytes: committed_bytes,
        }),
        (None, Some(saved)) => md5(committed_bytes, saved),
        (None, None) => None,
    };
    let crc_points = record.sent_in_flight.iter().map(|&(len_bytes, crc)| {
        Some(SentDigest {
            value: Running::Crc64(crc),
            len_bytes,
        })
    });
    let md5_points =
        (record.sent_in_flight_md5.iter()).map(|(len_bytes, saved)| md5(*len_bytes, saved));
    let in_flight = crc_points
        .chain(md5_points)
        .flatten()
        .take(IN_FLIGHT_DIGESTS_MAX)
        .collect();
    (sent, in_flight)
}

/// `sent` extended to `end_bytes` (a digest of `kind`): a fresh digest
/// when the committed offset is zero (a new session), `None` when the
/// digest does not end at the committed offset or neither the window nor
/// a digest of the piece in flight covers the range.
pub(super) fn extend(
    kind: FileDigestKind,
    sent: Sent,
    upload: &Upload,
    state: &UploadState,
    end_bytes: u64,
) -> Sent {
    let first = state.committed_bytes;
    let base = if first == 0 {
        SentDigest::empty(kind)
    } else {
        sent.filter(|s| s.len_bytes == first && s.value.kind() == kind)?
    };
    if end_bytes <= first {
        return Some(base);
    }
    let vouched = || {
        state
            .sent_in_flight
            .iter()
            .find(|point| point.len_bytes == end_bytes && point.value.kind() == kind)
            .cloned()
    };
    let value = match base.value {
        Running::Crc64(crc) => {
            let mut digest = FileDigest::resume(crc, first);
            let Some(()) = walk_window(upload, state, first, end_bytes, |b| digest.update(b))
            else {
                // Not in the window (sent by a process before a restart):
                // the digest saved with the piece in flight vouches for it.
                return vouched();
            };
            debug_assert_eq!(digest.len_bytes(), end_bytes);
            Running::Crc64(digest.value())
        }
        Running::Md5(mut md5) => {
            // MD5 reads each byte once: the piece's digest, computed
            // before it was sent, if one ends here.
            if let Some(point) = vouched() {
                return Some(point);
            }
            walk_window(upload, state, first, end_bytes, |bytes| md5.update(bytes))?;
            Running::Md5(md5)
        }
    };
    Some(SentDigest {
        value,
        len_bytes: end_bytes,
    })
}

/// The digest the piece starting at `first` extends: the committed
/// prefix's (under the upload's lock), `None` when unknown.
pub(super) fn in_flight_base(
    kind: FileDigestKind,
    upload: &Upload,
    state: &UploadState,
    first: u64,
) -> Sent {
    extend(kind, state.sent.clone(), upload, state, first).filter(|b| b.len_bytes == first)
}

/// A digest being carried across a piece.
// One lives on the stack while a piece is digested: its size does not
// matter, a box would be an allocation per piece for nothing.
#[allow(clippy::large_enum_variant)]
enum Runner {
    /// Carried on from the prefix's CRC.
    Crc64(FileDigest),
    Md5(Box<Md5Digest>),
}

impl Runner {
    fn update(&mut self, bytes: &[u8]) {
        match self {
            Self::Crc64(digest) => digest.update(bytes),
            Self::Md5(md5) => md5.update(bytes),
        }
    }

    /// The digest of `[0, at)`, the runner having been fed up to `at`.
    fn at(&self, at: u64) -> SentDigest {
        let value = match self {
            Self::Crc64(digest) => {
                assert_eq!(
                    digest.len_bytes(),
                    at,
                    "a digest is taken where it was fed to"
                );
                Running::Crc64(digest.value())
            }
            Self::Md5(md5) => Running::Md5(md5.clone()),
        };
        SentDigest {
            value,
            len_bytes: at,
        }
    }
}

/// The digests of the piece of `frames` that starts where `base` ends, at
/// each 256 KiB boundary inside it and at its end (see [`InFlight`]);
/// empty when `base` is unknown. Runs outside the upload's lock.
pub(super) fn in_flight(base: Sent, frames: &[Bytes]) -> InFlight {
    let Some(base) = base else {
        return InFlight::new();
    };
    let first = base.len_bytes;
    let end = first + frames.iter().map(|f| f.len() as u64).sum::<u64>();
    let mut runner = match base.value {
        Running::Crc64(base_crc) => Runner::Crc64(FileDigest::resume(base_crc, first)),
        Running::Md5(md5) => Runner::Md5(md5),
    };
    let mut points = InFlight::new();
    let mut at = first;
    for frame in frames {
        let mut bytes = &frame[..];
        while !bytes.is_empty() {
            let to_boundary = DRIVE_CHUNK_ALIGN_BYTES - at % DRIVE_CHUNK_ALIGN_BYTES;
            // At most 256 KiB: fits in usize.
            let take = (to_boundary as usize).min(bytes.len());
            runner.update(&bytes[..take]);
            at += take as u64;
            bytes = &bytes[take..];
            if at.is_multiple_of(DRIVE_CHUNK_ALIGN_BYTES)
                && at < end
                && points.len() < IN_FLIGHT_DIGESTS_MAX
            {
                points.push(runner.at(at));
            }
        }
    }
    assert_eq!(at, end, "a piece's digests cover exactly its frames");
    if points.len() < IN_FLIGHT_DIGESTS_MAX {
        points.push(runner.at(end));
    }
    points
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

/// Whether the drive's finished `file` carries the digest of `kind` the
/// backend sent: `Ok` when it does, or when the backend's digest is
/// unknown (nothing to compare); a mismatch, with both digests, when the
/// drive's differs or is missing.
pub(super) fn verify(
    kind: FileDigestKind,
    sent: &Sent,
    file: &FileResource,
) -> Result<(), DriveChecksumMismatch> {
    let Some(s) = sent.as_ref().filter(|s| s.value.kind() == kind) else {
        return Ok(());
    };
    let ours = s.value.hex();
    let drive = file.digest(kind);
    if drive == Some(ours.as_str()) {
        return Ok(());
    }
    Err(DriveChecksumMismatch {
        kind,
        drive: drive.map(str::to_owned),
        sent: ours,
        len_bytes: s.len_bytes,
    })
}

#[cfg(test)]
mod tests;
