//! [`AdmissionError`]: every reason an upload is not admitted, with its
//! numbers, and [`AdmissionCause`], its cause without them. Nothing is ever
//! reduced to a bare `false`.

use super::shared::StoreError;
use crate::env::{MemoryProbeError, UtcDay};
use crate::units::human_bytes;
use crate::user::UserId;
use serde::Serialize;

/// Why an upload was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(tag = "cause", rename_all = "snake_case")]
pub enum AdmissionError {
    /// A file of zero bytes.
    #[error("invalid request: the file is empty (0 bytes)")]
    EmptyFile,
    /// A file over the profile's maximum.
    #[error("file too large: {file_size_bytes} bytes ({}) exceeds the maximum of {file_size_bytes_max} bytes ({})",
        human_bytes(*file_size_bytes), human_bytes(*file_size_bytes_max))]
    FileTooLarge {
        /// Requested size.
        file_size_bytes: u64,
        /// The profile's maximum.
        file_size_bytes_max: u64,
    },
    /// A user the server does not know.
    #[error("unknown user {user:?}")]
    UnknownUser {
        /// Who asked.
        user: UserId,
    },
    /// The daily quota would be exceeded.
    #[error("daily quota exceeded for {user} on {day}: {charged_bytes} bytes already charged + {requested_bytes} requested > limit {daily_limit_bytes}")]
    QuotaExceeded {
        /// Who asked.
        user: UserId,
        /// The UTC day.
        day: UtcDay,
        /// Already charged that day.
        charged_bytes: u64,
        /// This upload's size.
        requested_bytes: u64,
        /// The limit.
        daily_limit_bytes: u64,
    },
    /// Not enough memory under the profile's limit.
    #[error(
        "memory pressure: {}.{} % of memory in use ({} of {}); the upload needs {} and {} stay reserved, \
         but the limit is {limit_percent} % ({}), leaving {}",
        used_permille / 10, used_permille % 10, human_bytes(*used_bytes), human_bytes(*total_bytes),
        human_bytes(*required_bytes), human_bytes(*reserve_bytes), human_bytes(*limit_bytes),
        human_bytes(*headroom_bytes)
    )]
    MemoryPressure {
        /// Machine memory.
        total_bytes: u64,
        /// In use on the machine.
        used_bytes: u64,
        /// In use, in tenths of a percent.
        used_permille: u64,
        /// The profile's limit.
        limit_percent: u8,
        /// The limit in bytes.
        limit_bytes: u64,
        /// The profile's reserve.
        reserve_bytes: u64,
        /// What this upload needs.
        required_bytes: u64,
        /// What uploads could reserve in all now (limit − reserve − used).
        headroom_bytes: u64,
        /// Already reserved by uploads in flight.
        reserved_by_uploads_bytes: u64,
    },
    /// The memory probe failed: admission refuses rather than guesses.
    #[error("memory probe failed: {error}")]
    MemoryProbe {
        /// What the probe said.
        error: MemoryProbeError,
    },
    /// No slot came free within the timeout.
    #[error("slots busy: waited {waited_ms} ms; {global_in_use}/{global_limit} global slots and {user_in_use}/{user_limit} of {user}'s slots in use, {waiters_ahead} waiting ahead")]
    SlotsBusy {
        /// Who asked.
        user: UserId,
        /// How long it waited.
        waited_ms: u64,
        /// Global slots in use at the timeout.
        global_in_use: u32,
        /// Global limit.
        global_limit: u32,
        /// The user's slots in use at the timeout.
        user_in_use: u32,
        /// Per-user limit.
        user_limit: u32,
        /// Requests ahead in the queue at the timeout.
        waiters_ahead: u32,
    },
    /// Too many uploads are already waiting.
    #[error("admission queue full: {waiting} uploads waiting, limit {waiters_max}")]
    QueueFull {
        /// Waiting now.
        waiting: u32,
        /// The bound.
        waiters_max: u32,
    },
    /// The server is shutting down.
    #[error("shutting down: no new uploads are admitted")]
    ShuttingDown,
    /// The shared slot store (several replicas) could not decide: admission
    /// refuses rather than grants on a guess.
    #[error("slot store unavailable: {error}")]
    SlotStoreUnavailable {
        /// What went wrong, with the store's address.
        error: StoreError,
    },
}

/// Declares [`AdmissionCause`], its [`ALL`](AdmissionCause::ALL), its
/// names and [`AdmissionError::TYPED_CAUSES`] from one table, so that the
/// lists cannot drift from the enum: a cause is added in one place.
macro_rules! admission_causes {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// The cause of an [`AdmissionError`], without its numbers.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum AdmissionCause {
            $($(#[$doc])* $variant,)*
        }

        impl AdmissionCause {
            /// Every cause, in declaration order.
            pub const ALL: [Self; [$($name),*].len()] = [$(Self::$variant),*];

            /// Its stable name: the `cause` of the wire, the trace and the
            /// metrics.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)*
                }
            }
        }

        impl AdmissionError {
            /// Every [`cause`](Self::cause) an admission refusal can name.
            /// The oracle accepts only these (and the backend's own
            /// `drive_unavailable`).
            pub const TYPED_CAUSES: [&'static str; [$($name),*].len()] = [$($name),*];
        }
    };
}

admission_causes! {
    /// [`AdmissionError::EmptyFile`].
    EmptyFile => "empty_file",
    /// [`AdmissionError::FileTooLarge`].
    FileTooLarge => "file_too_large",
    /// [`AdmissionError::UnknownUser`].
    UnknownUser => "unknown_user",
    /// [`AdmissionError::QuotaExceeded`].
    QuotaExceeded => "quota_exceeded",
    /// [`AdmissionError::MemoryPressure`].
    MemoryPressure => "memory_pressure",
    /// [`AdmissionError::MemoryProbe`].
    MemoryProbe => "memory_probe",
    /// [`AdmissionError::SlotsBusy`].
    SlotsBusy => "slots_busy",
    /// [`AdmissionError::QueueFull`].
    QueueFull => "queue_full",
    /// [`AdmissionError::ShuttingDown`].
    ShuttingDown => "shutting_down",
    /// [`AdmissionError::SlotStoreUnavailable`].
    SlotStoreUnavailable => "slot_store_unavailable",
}

impl AdmissionError {
    /// Its cause, without the numbers. Exhaustive: a new variant does not
    /// compile until it names its cause.
    pub fn kind(&self) -> AdmissionCause {
        match self {
            Self::EmptyFile => AdmissionCause::EmptyFile,
            Self::FileTooLarge { .. } => AdmissionCause::FileTooLarge,
            Self::UnknownUser { .. } => AdmissionCause::UnknownUser,
            Self::QuotaExceeded { .. } => AdmissionCause::QuotaExceeded,
            Self::MemoryPressure { .. } => AdmissionCause::MemoryPressure,
            Self::MemoryProbe { .. } => AdmissionCause::MemoryProbe,
            Self::SlotsBusy { .. } => AdmissionCause::SlotsBusy,
            Self::QueueFull { .. } => AdmissionCause::QueueFull,
            Self::ShuttingDown => AdmissionCause::ShuttingDown,
            Self::SlotStoreUnavailable { .. } => AdmissionCause::SlotStoreUnavailable,
        }
    }

    /// A short stable name for metrics and traces.
    pub fn cause(&self) -> &'static str {
        self.kind().name()
    }

    /// Whether the same request may succeed later (the client may retry).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::MemoryPressure { .. }
                | Self::MemoryProbe { .. }
                | Self::SlotsBusy { .. }
                | Self::QueueFull { .. }
                | Self::SlotStoreUnavailable { .. }
        )
    }
}

/// One value of every variant, in [`AdmissionCause::ALL`]'s order, for the
/// tests that must cover every variant (a new variant fails
/// `every_variant_has_its_own_cause_and_every_cause_is_typed` until it is
/// added here).
#[cfg(test)]
impl AdmissionError {
    pub(crate) fn one_of_each() -> Vec<AdmissionError> {
        use crate::env::{MemoryProbeError, UtcDay};
        use crate::user::UserId;
        vec![
            AdmissionError::EmptyFile,
            AdmissionError::FileTooLarge {
                file_size_bytes: 2,
                file_size_bytes_max: 1,
            },
            AdmissionError::UnknownUser {
                user: UserId::new("u").expect("valid id"),
            },
            AdmissionError::QuotaExceeded {
                user: UserId::new("u").expect("valid id"),
                day: UtcDay(0),
                charged_bytes: 0,
                requested_bytes: 0,
                daily_limit_bytes: 0,
            },
            AdmissionError::MemoryPressure {
                total_bytes: 0,
                used_bytes: 0,
                used_permille: 0,
                limit_percent: 0,
                limit_bytes: 0,
                reserve_bytes: 0,
                required_bytes: 0,
                headroom_bytes: 0,
                reserved_by_uploads_bytes: 0,
            },
            AdmissionError::MemoryProbe {
                error: MemoryProbeError::Unreadable {
                    source_name: "s".into(),
                    reason: "r".into(),
                },
            },
            AdmissionError::SlotsBusy {
                user: UserId::new("u").expect("valid id"),
                waited_ms: 0,
                global_in_use: 0,
                global_limit: 0,
                user_in_use: 0,
                user_limit: 0,
                waiters_ahead: 0,
            },
            AdmissionError::QueueFull {
                waiting: 0,
                waiters_max: 0,
            },
            AdmissionError::ShuttingDown,
            AdmissionError::SlotStoreUnavailable {
                error: StoreError::Unreachable {
                    address: "127.0.0.1:1".into(),
                    reason: "r".into(),
                },
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This is a regression test that ensures every variant names its own
    /// cause, every cause is some variant's, and the oracle's list of typed
    /// causes is exactly the causes' names, in order.
    #[test]
    fn every_variant_has_its_own_cause_and_every_cause_is_typed() {
        let every = AdmissionError::one_of_each();
        let kinds: Vec<AdmissionCause> = every.iter().map(AdmissionError::kind).collect();
        assert_eq!(kinds, AdmissionCause::ALL, "one sample per cause, in order");
        let names = AdmissionCause::ALL.map(AdmissionCause::name);
        assert_eq!(names, AdmissionError::TYPED_CAUSES);
        let causes: Vec<&str> = every.iter().map(AdmissionError::cause).collect();
        assert_eq!(causes, AdmissionError::TYPED_CAUSES);
    }

    /// This is a regression test that ensures exactly the refusals that may
    /// pass later are transient (memory, slots, the queue, a shared slot
    /// store that may answer again): a resumed upload retries only those
    /// (`backend/resume.rs`).
    #[test]
    fn only_memory_probe_slot_queue_and_store_refusals_are_transient() {
        let transient: Vec<&str> = AdmissionError::one_of_each()
            .iter()
            .filter(|e| e.is_transient())
            .map(AdmissionError::cause)
            .collect();
        assert_eq!(
            transient,
            [
                "memory_pressure",
                "memory_probe",
                "slots_busy",
                "queue_full",
                "slot_store_unavailable"
            ]
        );
    }
}
