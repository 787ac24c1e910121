//! Byte-size units and the constants every other module agrees on.
//!
//! Sizes are `u64` bytes everywhere; names end in their unit (`_bytes`, `_ms`).
//! Relations between constants are checked at compile time.

/// One kibibyte.
pub const KIB: u64 = 1024;
/// One mebibyte.
pub const MIB: u64 = 1024 * KIB;
/// One gibibyte.
pub const GIB: u64 = 1024 * MIB;

/// Google's resumable protocol requires every piece but the last to be a
/// multiple of 256 KiB.
pub const DRIVE_CHUNK_ALIGN_BYTES: u64 = 256 * KIB;

/// The reference file of the root-cause report: 3457 MiB ("3.38 GB").
pub const REFERENCE_FILE_SIZE_BYTES: u64 = 3457 * MIB;

/// Default client chunk size. A multiple of the drive alignment, so that a
/// contiguous run of chunks is always a valid drive piece.
pub const DEFAULT_CHUNK_SIZE_BYTES: u64 = 8 * MIB;

const _: () = assert!(DEFAULT_CHUNK_SIZE_BYTES.is_multiple_of(DRIVE_CHUNK_ALIGN_BYTES));
const _: () = assert!(REFERENCE_FILE_SIZE_BYTES == 3_624_927_232);

/// Formats a byte count the way the root-cause report does (binary units,
/// two decimals), e.g. `3.38 GB` for 3457 MiB. Used only for messages.
pub fn human_bytes(bytes: u64) -> String {
    // Lossy conversions are fine here: this is display only.
    let b = bytes as f64;
    if bytes >= GIB {
        format!("{:.2} GB", b / GIB as f64)
    } else if bytes >= MIB {
        format!("{:.2} MB", b / MIB as f64)
    } else if bytes >= KIB {
        format!("{:.2} KB", b / KIB as f64)
    } else {
        format!("{bytes} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_size_prints_as_the_report_does() {
        assert_eq!(human_bytes(REFERENCE_FILE_SIZE_BYTES), "3.38 GB");
        assert_eq!(human_bytes(REFERENCE_FILE_SIZE_BYTES / 10), "345.70 MB");
        assert_eq!(human_bytes(512 * MIB), "512.00 MB");
        assert_eq!(human_bytes(7), "7 B");
    }
}
