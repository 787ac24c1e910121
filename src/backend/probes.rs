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

#[cfg(test)]
mod tests {
    use super::*;

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
