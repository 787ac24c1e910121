//! What the backend really holds: the bytes each upload buffers in its
//! reorder window, measured at every step, against the window, the
//! upload's reservation and the ledger's reserved bytes.
//!
//! Checks (each its own name in the oracle):
//! - `buffered_within_window`: an upload buffers at most `window_chunks ×
//!   chunk size` (the backend asserts it too, in release builds);
//! - `window_within_reservation`: that window fits the reservation the
//!   upload's slot holds (admission reserves at least one chunk, or the
//!   whole file if smaller, so a window of one chunk fits too);
//! - `buffered_within_reserved`: all receiving uploads together buffer at
//!   most what the ledger reserved.

use super::oracle::Oracle;
use crate::backend::BufferedUpload;

/// Checks one step's measurements; returns the backend's total buffered
/// bytes.
pub fn check(
    oracle: &mut Oracle,
    uploads: &[BufferedUpload],
    reserved_bytes: u64,
    at_ms: u64,
) -> u64 {
    let mut total_bytes = 0u64;
    for u in uploads {
        if u.buffered_bytes > u.window_bytes {
            oracle.flag(
                "buffered_within_window",
                format!(
                    "at {at_ms} ms: upload {} buffers {} bytes, window {} bytes",
                    u.upload, u.buffered_bytes, u.window_bytes
                ),
            );
        }
        if u.window_bytes > u.reservation_bytes {
            oracle.flag(
                "window_within_reservation",
                format!("at {at_ms} ms: upload {} has a window of {} bytes over its reservation of {} bytes", u.upload, u.window_bytes, u.reservation_bytes),
            );
        }
        if u.receiving {
            total_bytes = total_bytes.saturating_add(u.buffered_bytes);
        }
    }
    if total_bytes > reserved_bytes {
        oracle.flag(
            "buffered_within_reserved",
            format!("at {at_ms} ms: receiving uploads buffer {total_bytes} bytes, the ledger reserved {reserved_bytes}"),
        );
    }
    total_bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::oracle::Bounds;

    fn upload(buffered_bytes: u64, window_bytes: u64, reservation_bytes: u64) -> BufferedUpload {
        BufferedUpload {
            upload: "u".into(),
            receiving: true,
            buffered_bytes,
            window_bytes,
            chunk_size_bytes: 8,
            reservation_bytes,
        }
    }

    #[test]
    fn each_buffer_check_can_fail() {
        let mut o = Oracle::new(Bounds::default());
        // Within every bound.
        assert_eq!(
            check(&mut o, &[upload(16, 16, 16), upload(8, 8, 8)], 24, 0),
            24
        );
        assert!(o.violations.is_empty(), "{:?}", o.violations);
        check(&mut o, &[upload(17, 16, 16)], 16, 1);
        check(&mut o, &[upload(8, 24, 16)], 16, 2);
        check(&mut o, &[upload(16, 16, 16)], 8, 3);
        // A one-chunk window over a smaller reservation: no allowance.
        check(&mut o, &[upload(8, 8, 4)], 8, 4);
        let names: Vec<_> = o.violations.iter().map(|v| v.check).collect();
        assert_eq!(
            names,
            [
                "buffered_within_window",
                "buffered_within_reserved",
                "window_within_reservation",
                "buffered_within_reserved",
                "window_within_reservation"
            ]
        );
    }
}
