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
