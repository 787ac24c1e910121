//! The rules for one piece ([`plan_piece`]) and the intake that turns its
//! body into whole units to commit ([`PieceIntake`]).
//!
//! # Implementation Details
//!
//! Bytes are committed in units of [`DRIVE_CHUNK_ALIGN_BYTES`]
//! ([`PieceIntake`]): a piece's bytes are held back until a whole unit has
//! arrived, so at most one unit is buffered per session, never a piece. Only
//! the file's exact final remainder may be shorter than a unit; the tail of a
//! broken piece beyond its last whole unit is dropped, and the client learns
//! it from `Range`.
//!
//! Invariants (of the session a plan is made for):
//! - `committed_bytes` only grows, and is a multiple of the unit unless it
//!   equals the file's total;
//! - `committed_bytes <= declared_total_bytes` whenever the total is known,
//!   and a declared total never changes once set;
//! - a piece's bytes below `committed_bytes` are discarded, never committed
//!   again ([`plan_piece`] computes how many).

use super::protocol::ContentRange;
use crate::units::DRIVE_CHUNK_ALIGN_BYTES;
use bytes::Bytes;

/// The commit unit as a `usize`, for buffer arithmetic. 256 KiB fits every
/// platform's `usize`.
const UNIT_BYTES: usize = DRIVE_CHUNK_ALIGN_BYTES as usize;
const _: () = assert!(UNIT_BYTES as u64 == DRIVE_CHUNK_ALIGN_BYTES);

/// A piece the session cannot take, with its numbers. Each answers `400`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PieceError {
    /// `Content-Length` disagrees with `Content-Range`.
    #[error("Content-Length {content_length_bytes} does not match Content-Range {first_byte}-{last_byte} ({range_len_bytes} bytes)")]
    LengthMismatch {
        /// What `Content-Length` said.
        content_length_bytes: u64,
        /// First byte of the range.
        first_byte: u64,
        /// Last byte of the range.
        last_byte: u64,
        /// The range's length.
        range_len_bytes: u64,
    },
    /// The total differs from one declared earlier.
    #[error("total of {given_total_bytes} bytes differs from the {declared_total_bytes} bytes declared earlier")]
    TotalMismatch {
        /// Total declared earlier (initiation or an earlier piece).
        declared_total_bytes: u64,
        /// Total this request states.
        given_total_bytes: u64,
    },
    /// The total is below what is already held.
    #[error("total of {given_total_bytes} bytes is below the {held_bytes} bytes already held")]
    TotalBelowHeld {
        /// Total this request states.
        given_total_bytes: u64,
        /// Bytes held.
        held_bytes: u64,
    },
    /// The piece's last byte is not below the declared total.
    #[error("piece ends at byte {last_byte} but the file has {total_bytes} bytes")]
    BeyondTotal {
        /// Last byte of the piece.
        last_byte: u64,
        /// Declared total.
        total_bytes: u64,
    },
    /// The piece ends at the largest offset, so the file could never end.
    #[error("piece ends at byte {last_byte}: a file cannot exceed 2^64-1 bytes")]
    EndOverflow {
        /// Last byte of the piece.
        last_byte: u64,
    },
    /// A piece that is not the last is not a whole number of units.
    #[error(
        "piece of {len_bytes} bytes is not the last and not a multiple of {align_bytes} bytes"
    )]
    Misaligned {
        /// The piece's length.
        len_bytes: u64,
        /// The required multiple.
        align_bytes: u64,
    },
    /// The piece starts after the bytes held.
    #[error("gap: piece starts at {first_byte} but {held_bytes} bytes are held")]
    Gap {
        /// First byte of the piece.
        first_byte: u64,
        /// Bytes held.
        held_bytes: u64,
    },
}

/// What to do with an acceptable piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PiecePlan {
    /// Leading bytes of the piece already held: discarded.
    pub skip_bytes: u64,
    /// Bytes of the piece after those: the candidates for committing.
    pub new_bytes: u64,
    /// The file's total after this piece, if known.
    pub total_bytes: Option<u64>,
    /// Whether the piece ends the file.
    pub is_last: bool,
}

/// Checks that `total` agrees with `declared` and with what is held, and
/// returns the total now known.
pub fn reconcile_total(
    declared_total_bytes: Option<u64>,
    given_total_bytes: Option<u64>,
    held_bytes: u64,
) -> Result<Option<u64>, PieceError> {
    if let (Some(declared_total_bytes), Some(given_total_bytes)) =
        (declared_total_bytes, given_total_bytes)
    {
        if declared_total_bytes != given_total_bytes {
            return Err(PieceError::TotalMismatch {
                declared_total_bytes,
                given_total_bytes,
            });
        }
    }
    let total = given_total_bytes.or(declared_total_bytes);
    if let Some(given_total_bytes) = total {
        if given_total_bytes < held_bytes {
            return Err(PieceError::TotalBelowHeld {
                given_total_bytes,
                held_bytes,
            });
        }
    }
    Ok(total)
}

/// Applies the protocol's rules to a piece `first_byte..=last_byte` against
/// a session holding `held_bytes` with `declared_total_bytes`.
pub fn plan_piece(
    held_bytes: u64,
    declared_total_bytes: Option<u64>,
    first_byte: u64,
    last_byte: u64,
    given_total_bytes: Option<u64>,
    content_length_bytes: u64,
) -> Result<PiecePlan, PieceError> {
    // 1. The body must be exactly the range.
    let range_len_bytes = ContentRange::Piece {
        first_byte,
        last_byte,
        total_bytes: given_total_bytes,
    }
    .len_bytes();
    if range_len_bytes == 0 || content_length_bytes != range_len_bytes {
        return Err(PieceError::LengthMismatch {
            content_length_bytes,
            first_byte,
            last_byte,
            range_len_bytes,
        });
    }
    // 2. The total must agree with what was declared and what is held.
    let total_bytes = reconcile_total(declared_total_bytes, given_total_bytes, held_bytes)?;
    let end_bytes = last_byte
        .checked_add(1)
        .ok_or(PieceError::EndOverflow { last_byte })?;
    if let Some(total_bytes) = total_bytes {
        if end_bytes > total_bytes {
            return Err(PieceError::BeyondTotal {
                last_byte,
                total_bytes,
            });
        }
    }
    // 3. Only the last piece may be a partial unit.
    let is_last = total_bytes == Some(end_bytes);
    if !is_last && !range_len_bytes.is_multiple_of(DRIVE_CHUNK_ALIGN_BYTES) {
        return Err(PieceError::Misaligned {
            len_bytes: range_len_bytes,
            align_bytes: DRIVE_CHUNK_ALIGN_BYTES,
        });
    }
    // 4. No gaps; an overlap's held prefix is skipped.
    if first_byte > held_bytes {
        return Err(PieceError::Gap {
            first_byte,
            held_bytes,
        });
    }
    let skip_bytes = (held_bytes - first_byte).min(range_len_bytes);
    Ok(PiecePlan {
        skip_bytes,
        new_bytes: range_len_bytes - skip_bytes,
        total_bytes,
        is_last,
    })
}

/// Turns a piece's body frames into whole units to commit, holding back at
/// most one partial unit. Never copies: a unit split across frames is kept
/// as the frames' slices and committed as they are once it is whole.
#[derive(Debug)]
pub struct PieceIntake {
    /// Leading bytes still to discard (already held).
    skip_bytes: u64,
    /// Bytes still allowed into the intake: the truncation fault's cap, a
    /// multiple of the unit, or `u64::MAX`.
    admit_bytes: u64,
    /// A partial unit, as frame slices: always shorter than [`UNIT_BYTES`]
    /// in all between calls.
    pending: Vec<Bytes>,
    /// Bytes in `pending`.
    pending_len: usize,
    /// Bytes received in total (discarded ones included).
    received_bytes: u64,
}

impl PieceIntake {
    /// An intake that discards `skip_bytes` first and admits at most
    /// `cap_bytes` rounded down to the unit (`None`: no cap).
    pub fn new(skip_bytes: u64, cap_bytes: Option<u64>) -> Self {
        let admit_bytes = cap_bytes.map_or(u64::MAX, |cap| cap - cap % DRIVE_CHUNK_ALIGN_BYTES);
        Self {
            skip_bytes,
            admit_bytes,
            pending: Vec::new(),
            pending_len: 0,
            received_bytes: 0,
        }
    }

    /// Bytes received so far, discarded ones included.
    pub fn received_bytes(&self) -> u64 {
        self.received_bytes
    }

    /// Bytes waiting for their unit to fill.
    pub fn pending_bytes(&self) -> usize {
        self.pending_len
    }

    /// Takes one body frame; returns the runs to commit, in order (their
    /// total a multiple of the unit). Zero copies.
    pub fn push(&mut self, mut frame: Bytes) -> Vec<Bytes> {
        self.received_bytes = self.received_bytes.saturating_add(frame.len() as u64);
        // 1. Discard the already-held prefix.
        let skip = usize::try_from(self.skip_bytes)
            .unwrap_or(usize::MAX)
            .min(frame.len());
        drop(frame.split_to(skip));
        self.skip_bytes -= skip as u64;
        // 2. Drop what the truncation cap does not admit.
        let admit = usize::try_from(self.admit_bytes)
            .unwrap_or(usize::MAX)
            .min(frame.len());
        frame.truncate(admit);
        self.admit_bytes -= admit as u64;
        // 3. Complete the partial unit first.
        let mut out = Vec::new();
        if self.pending_len > 0 {
            let take = (UNIT_BYTES - self.pending_len).min(frame.len());
            self.pending.push(frame.split_to(take));
            self.pending_len += take;
            if self.pending_len == UNIT_BYTES {
                out.append(&mut self.pending);
                self.pending_len = 0;
            }
        }
        // 4. Whole units straight from the frame.
        if self.pending_len == 0 {
            let whole = frame.len() - frame.len() % UNIT_BYTES;
            if whole > 0 {
                out.push(frame.split_to(whole));
            }
        }
        // 5. The rest starts (or, if step 3 did not fill it, is empty for)
        // the next partial unit.
        if !frame.is_empty() {
            self.pending_len += frame.len();
            self.pending.push(frame);
        }
        assert!(
            self.pending_len < UNIT_BYTES,
            "PieceIntake holds at most one partial unit"
        );
        out.retain(|b| !b.is_empty());
        out
    }

    /// Ends the piece. If the file's final remainder is pending
    /// (`committed_bytes + pending == total_bytes`) and the body arrived
    /// whole, returns it to commit; otherwise the partial unit is dropped.
    pub fn finish(
        self,
        body_complete: bool,
        committed_bytes: u64,
        total_bytes: Option<u64>,
    ) -> Option<Vec<Bytes>> {
        let pending_bytes = self.pending_len as u64;
        let ends_file =
            total_bytes.is_some() && committed_bytes.checked_add(pending_bytes) == total_bytes;
        (body_complete && pending_bytes > 0 && ends_file).then_some(self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNIT: u64 = DRIVE_CHUNK_ALIGN_BYTES;

    #[test]
    fn plan_accepts_an_aligned_piece_at_the_held_offset() {
        assert_eq!(
            plan_piece(
                UNIT,
                Some(10 * UNIT),
                UNIT,
                3 * UNIT - 1,
                Some(10 * UNIT),
                2 * UNIT
            ),
            Ok(PiecePlan {
                skip_bytes: 0,
                new_bytes: 2 * UNIT,
                total_bytes: Some(10 * UNIT),
                is_last: false
            })
        );
    }

    #[test]
    fn plan_accepts_a_short_last_piece_and_an_unknown_total() {
        let last = plan_piece(UNIT, None, UNIT, UNIT + 9, Some(UNIT + 10), 10);
        assert_eq!(last.map(|p| (p.is_last, p.new_bytes)), Ok((true, 10)));
        let open = plan_piece(0, None, 0, UNIT - 1, None, UNIT);
        assert_eq!(open.map(|p| (p.is_last, p.total_bytes)), Ok((false, None)));
        // The total declared at initiation makes a `*` piece the last one.
        let declared = plan_piece(0, Some(5), 0, 4, None, 5);
        assert_eq!(declared.map(|p| p.is_last), Ok(true));
    }

    #[test]
    fn plan_refuses_misaligned_middle_pieces() {
        assert_eq!(
            plan_piece(0, None, 0, UNIT, Some(10 * UNIT), UNIT + 1),
            Err(PieceError::Misaligned {
                len_bytes: UNIT + 1,
                align_bytes: UNIT
            })
        );
        assert!(plan_piece(0, None, 0, 99, None, 100).is_err());
    }

    #[test]
    fn plan_refuses_length_mismatch_and_total_changes() {
        assert!(matches!(
            plan_piece(0, None, 0, UNIT - 1, None, UNIT - 1),
            Err(PieceError::LengthMismatch { .. })
        ));
        assert_eq!(
            plan_piece(0, Some(100), 0, 99, Some(101), 100),
            Err(PieceError::TotalMismatch {
                declared_total_bytes: 100,
                given_total_bytes: 101
            })
        );
        assert_eq!(
            plan_piece(2 * UNIT, None, 0, 9, Some(10), 10),
            Err(PieceError::TotalBelowHeld {
                given_total_bytes: 10,
                held_bytes: 2 * UNIT
            })
        );
        assert_eq!(
            plan_piece(0, Some(10), 0, 19, None, 20),
            Err(PieceError::BeyondTotal {
                last_byte: 19,
                total_bytes: 10
            })
        );
        assert_eq!(
            plan_piece(0, None, UNIT, u64::MAX, None, u64::MAX - UNIT + 1),
            Err(PieceError::EndOverflow {
                last_byte: u64::MAX
            })
        );
    }

    #[test]
    fn plan_refuses_gaps_with_the_numbers() {
        let gap = plan_piece(UNIT, None, 2 * UNIT, 3 * UNIT - 1, None, UNIT);
        assert_eq!(
            gap,
            Err(PieceError::Gap {
                first_byte: 2 * UNIT,
                held_bytes: UNIT
            })
        );
        assert_eq!(
            gap.map_err(|e| e.to_string()),
            Err("gap: piece starts at 524288 but 262144 bytes are held".to_owned())
        );
    }

    #[test]
    fn plan_skips_the_held_prefix_of_an_overlap() {
        let overlap = plan_piece(2 * UNIT, None, UNIT, 3 * UNIT - 1, None, 2 * UNIT);
        assert_eq!(
            overlap.map(|p| (p.skip_bytes, p.new_bytes)),
            Ok((UNIT, UNIT))
        );
        let stale = plan_piece(4 * UNIT, None, 0, UNIT - 1, None, UNIT);
        assert_eq!(stale.map(|p| (p.skip_bytes, p.new_bytes)), Ok((UNIT, 0)));
    }

    fn bytes_of(len: usize, fill: u8) -> Bytes {
        Bytes::from(vec![fill; len])
    }

    fn total(out: &[Bytes]) -> usize {
        out.iter().map(Bytes::len).sum()
    }

    #[test]
    fn intake_passes_whole_units_through_and_buffers_one_partial() {
        let mut intake = PieceIntake::new(0, None);
        // 2.5 units: two pass straight through, half a unit waits.
        let out = intake.push(bytes_of(5 * UNIT_BYTES / 2, 1));
        assert_eq!(total(&out), 2 * UNIT_BYTES);
        assert_eq!(intake.pending_bytes(), UNIT_BYTES / 2);
        // Another 1.5 units: the partial completes, one passes through.
        let out = intake.push(bytes_of(3 * UNIT_BYTES / 2, 2));
        assert_eq!(total(&out), 2 * UNIT_BYTES);
        assert_eq!(
            out.len(),
            3,
            "the completed unit's two slices, then a whole unit"
        );
        assert_eq!(intake.pending_bytes(), 0);
        assert_eq!(intake.received_bytes(), 4 * UNIT);
    }

    #[test]
    fn intake_keeps_byte_order_across_small_frames() {
        let mut intake = PieceIntake::new(0, None);
        let mut committed = Vec::new();
        let source: Vec<u8> = (0..2 * UNIT_BYTES + 7).map(|i| (i % 251) as u8).collect();
        for frame in source.chunks(10_000) {
            let runs = intake.push(Bytes::copy_from_slice(frame));
            assert_eq!(total(&runs) % UNIT_BYTES, 0);
            for run in runs {
                committed.extend_from_slice(&run);
            }
        }
        let total = source.len() as u64;
        let rest = intake.finish(true, committed.len() as u64, Some(total));
        for run in rest.unwrap_or_default() {
            committed.extend_from_slice(&run);
        }
        assert_eq!(committed, source);
    }

    #[test]
    fn intake_drops_the_tail_of_a_broken_piece() {
        let mut intake = PieceIntake::new(0, None);
        let out = intake.push(bytes_of(UNIT_BYTES + 100, 1));
        assert_eq!(total(&out), UNIT_BYTES);
        // The body broke: the 100 bytes are not the file's end, or the body
        // is incomplete; either way they are dropped.
        let intake2 = intake;
        assert_eq!(intake2.finish(false, UNIT, Some(UNIT + 100)), None);
        let mut intake = PieceIntake::new(0, None);
        drop(intake.push(bytes_of(100, 1)));
        assert_eq!(intake.finish(true, 0, Some(1000)), None);
    }

    #[test]
    fn intake_skips_held_bytes_and_honours_the_cap() {
        let mut intake = PieceIntake::new(10, None);
        let out = intake.push(bytes_of(UNIT_BYTES + 10, 1));
        assert_eq!(total(&out), UNIT_BYTES);
        assert_eq!(intake.pending_bytes(), 0);

        // Cap of 1.5 units rounds down to one unit.
        let mut intake = PieceIntake::new(0, Some(UNIT + UNIT / 2));
        let out = intake.push(bytes_of(3 * UNIT_BYTES, 1));
        assert_eq!(total(&out), UNIT_BYTES);
        assert_eq!(intake.pending_bytes(), 0);
        let out = intake.push(bytes_of(UNIT_BYTES, 1));
        assert_eq!(total(&out), 0);
        assert_eq!(intake.received_bytes(), 4 * UNIT);
        assert_eq!(intake.finish(true, UNIT, Some(4 * UNIT)), None);
    }
}
