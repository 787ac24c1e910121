//! Which coverage probe a refusal or an ending marks. The chunk API's
//! causes are the backend's vocabulary, so the mapping lives here: the
//! probes themselves ([`crate::coverage`]) sit below admission and know no
//! cause.

use crate::chunk_api::Cause;
use crate::coverage::Probe;

/// The probe of an admission refusal with `cause`.
pub(super) fn refused(cause: Cause) -> Probe {
    match cause {
        Cause::EmptyFile => Probe::RefusedEmptyFile,
        Cause::FileTooLarge => Probe::RefusedFileTooLarge,
        Cause::UnknownUser => Probe::RefusedUnknownUser,
        Cause::QuotaExceeded => Probe::RefusedQuotaExceeded,
        Cause::MemoryPressure => Probe::RefusedMemoryPressure,
        Cause::MemoryProbe => Probe::RefusedMemoryProbe,
        Cause::SlotsBusy => Probe::RefusedSlotsBusy,
        Cause::QueueFull => Probe::RefusedQueueFull,
        Cause::ShuttingDown => Probe::RefusedShuttingDown,
        Cause::SlotStoreUnavailable => Probe::RefusedSlotStoreUnavailable,
        _ => Probe::RefusedUnexplained,
    }
}

/// The probe of an upload that failed with `cause`.
pub(super) fn ended(cause: Cause) -> Probe {
    match cause {
        Cause::Aborted => Probe::EndAborted,
        Cause::ClientGone => Probe::EndClientGone,
        Cause::NoSession => Probe::EndNoSession,
        Cause::DriveSizeMismatch => Probe::EndDriveSizeMismatch,
        Cause::DriveFailed => Probe::EndDriveFailed,
        // Sessions restarted until none was left, each for a bad file.
        Cause::DriveSessionLost | Cause::DriveChecksumMismatch => Probe::EndDriveSessionLost,
        Cause::DriveRefused => Probe::EndDriveRefused,
        c if refused(c) != Probe::RefusedUnexplained => Probe::EndRefusedOnResume,
        _ => Probe::EndOther,
    }
}

/// The probes a piece of `len_bytes` from `first_byte` marks, for a file
/// of `file_bytes` in chunks of `chunk_bytes`, cut at `piece_bytes_max`:
/// [`Probe::PieceFromMidChunk`] when it starts inside a chunk,
/// [`Probe::PieceCutAtMax`] when it reached the limit before the file's
/// end.
pub(super) fn piece_cut(
    (first_byte, len_bytes): (u64, u64),
    chunk_bytes: u64,
    file_bytes: u64,
    piece_bytes_max: u64,
) -> impl Iterator<Item = Probe> {
    let mid_chunk = !first_byte.is_multiple_of(chunk_bytes);
    let at_max = len_bytes >= piece_bytes_max && first_byte + len_bytes < file_bytes;
    [
        mid_chunk.then_some(Probe::PieceFromMidChunk),
        at_max.then_some(Probe::PieceCutAtMax),
    ]
    .into_iter()
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each shape of cut marks its own probe, and only it.
    #[test]
    fn a_piece_marks_how_it_was_cut() {
        let probes = |piece, max| piece_cut(piece, 1 << 20, 10 << 20, max).collect::<Vec<_>>();
        // Whole chunks from a chunk boundary, under the limit.
        assert_eq!(probes((1 << 20, 2 << 20), 4 << 20), []);
        // From the middle of chunk 1, cut at the limit.
        assert_eq!(
            probes((3 << 18, 5 << 18), 1 << 20),
            [Probe::PieceFromMidChunk, Probe::PieceCutAtMax]
        );
        // At the limit but ending the file: not a cut.
        assert_eq!(probes((8 << 20, 2 << 20), 1 << 20), []);
    }

    /// This is a regression test that ensures each admission refusal marks
    /// the probe named for its cause: the simulations never see some of
    /// them (the scripted memory probe never fails), so a lost arm would
    /// only miscount coverage, silently (cargo-mutants deleted the
    /// `MemoryProbe` arm and nothing noticed).
    #[test]
    fn each_admission_refusal_marks_the_probe_named_for_its_cause() {
        use Cause::*;
        for cause in [
            EmptyFile,
            FileTooLarge,
            UnknownUser,
            QuotaExceeded,
            MemoryPressure,
            MemoryProbe,
            SlotsBusy,
            QueueFull,
            ShuttingDown,
            SlotStoreUnavailable,
        ] {
            assert_eq!(refused(cause).name(), format!("refused_{cause}"));
            assert_eq!(ended(cause), Probe::EndRefusedOnResume, "{cause}");
        }
        assert_eq!(refused(Unexplained), Probe::RefusedUnexplained);
    }
}
