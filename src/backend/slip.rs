//! [`Slip`]: one bug put back into the backend, for the bug zoo.
//!
//! The zoo's admission mutants live under `checks/zoo/` behind
//! admission's traits. The backend's blind spots of the first harness
//! (issue 10) are not behind a trait: each is one line of the backend done
//! wrong. A [`Slip`] names that line; [`BackendConfig::slip`] switches it
//! on, and the code at the line says what it does when it is. Production
//! (every constructor of [`BackendConfig`], real mode, every simulation but
//! the zoo's) is `Slip::None`, and no command-line flag sets anything else.
//!
//! Each variant says the bug, why the first harness let it through, and
//! which check now catches it (`upsim zoo` runs them).
//!
//! [`BackendConfig::slip`]: super::BackendConfig::slip
//! [`BackendConfig`]: super::BackendConfig

/// A deliberate bug in the backend, or none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Slip {
    /// Production: no bug.
    #[default]
    None,
    /// The reorder window is sized by the profile's largest window, not by
    /// the memory admission reserved (`register` in `create.rs`).
    ///
    /// Missed before: the oracle read the ledger's reservations, never the
    /// bytes an upload may buffer. Caught by `window_within_reservation`
    /// (`sim/buffers.rs`), which compares each upload's window with the
    /// reservation its slot holds, at every step.
    WindowIgnoresReservation,
    /// A chunk at the window's end index is taken in: `index > end`
    /// where `index >= end` is meant (`window_check` in `intake.rs`).
    ///
    /// Missed before: the simulated client sent only chunks inside the
    /// window, so no request ever stood at the edge. Caught once the
    /// client probes the edge (fault point `client_window_edge`) by the
    /// backend's own assertion that an upload buffers no more than its
    /// window, on in release builds, and by the oracle's
    /// `buffered_within_window`.
    WindowEdge,
    /// An upload that fails at the drive (`drive_failed`) never gives its
    /// slot back (`end` in `committer.rs`).
    ///
    /// Missed before: no sweep ever ended an upload with `drive_failed`.
    /// Caught on the zoo's `drive-fails` scenario, whose drive fails every
    /// piece until the retry budget runs out, by `quota_refunded` (the
    /// failed upload's charge comes back only with its slot) and then
    /// `released_at_end`.
    KeepsSlotOnDriveFailure,
    /// A chunk's CRC-32C is not compared with its header
    /// (`check_checksum` in `intake.rs`).
    ///
    /// Missed before: nothing corrupted bytes in transit. Caught on the
    /// zoo's `bit-flips` scenario (fault point `client_chunk_bit_flip`) by
    /// the oracle's `checksum` (the drive's whole-file checksum against the
    /// source's): a damaged chunk is stored and forwarded.
    UncheckedChunks,
    /// A create's client token is ignored: a retried create is a new
    /// upload (`check_token` in `create.rs`).
    ///
    /// Missed before: no create reply was ever lost, so no create was ever
    /// retried. Caught on the zoo's `lost-creates` scenario (fault points
    /// `backend_create_reply_lost`, `client_duplicate_create`) by
    /// `no_double_admission`.
    CreateForgetsToken,
}

impl Slip {
    /// Whether this is production.
    pub fn is_none(self) -> bool {
        self == Self::None
    }
}
