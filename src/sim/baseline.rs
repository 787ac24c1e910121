//! The baseline a simulated run is measured against: the same bytes,
//! generated, copied and checksummed the same number of times, with no
//! network stack, no HTTP, no admission, no scheduler — what the run would
//! cost if the system around the bytes were free.
//!
//! Copies are counted as a byte stream makes them: each hop copies a byte
//! once into the stream (the sender's write) and once out of it (the
//! receiver's read), as a kernel socket does and as turmoil's simulated TCP
//! does. Two hops (client → backend → drive): four copies.

use crate::checksum::{crc32c, FileDigest};
use crate::payload::Payload;
use std::time::{Duration, Instant};

/// What the baseline did and how long it took.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Baseline {
    /// Bytes generated and checksummed as chunks.
    pub chunk_bytes: u64,
    /// Wall time.
    pub wall: Duration,
}

/// For `chunks_sent` chunks of `chunk_size_bytes` of `payload`: generate
/// each (client), CRC-32C it (client), copy it into and out of the first
/// hop, CRC-32C it again (backend verifies), copy it into and out of the
/// second hop and fold it into the whole-file digest (drive). Plus the
/// source digest (generate + digest once). That is the work a run does on
/// its bytes.
pub fn measure(payload: &Payload, chunk_size_bytes: u64, chunks_sent: u64) -> Baseline {
    let start = Instant::now();
    let size = payload.size_bytes_total();
    let chunk = usize::try_from(chunk_size_bytes)
        .unwrap_or(usize::MAX)
        .max(1);
    let mut generated = vec![0u8; chunk];
    let mut in_flight = vec![0u8; chunk];
    let mut at_backend = vec![0u8; chunk];
    let mut at_drive = vec![0u8; chunk];
    let mut drive_digest = FileDigest::default();
    let chunk_count = size.div_ceil(chunk_size_bytes).max(1);
    let mut checks = 0u32;
    let mut bytes = 0u64;
    for n in 0..chunks_sent {
        let index = n % chunk_count;
        let offset = index * chunk_size_bytes;
        let len = chunk_size_bytes.min(size - offset) as usize;
        payload.fill(offset, &mut generated[..len]);
        checks = checks.wrapping_add(crc32c(&generated[..len]));
        in_flight[..len].copy_from_slice(&generated[..len]);
        at_backend[..len].copy_from_slice(&in_flight[..len]);
        checks = checks.wrapping_add(crc32c(&at_backend[..len]));
        in_flight[..len].copy_from_slice(&at_backend[..len]);
        at_drive[..len].copy_from_slice(&in_flight[..len]);
        drive_digest.update(&at_drive[..len]);
        bytes += len as u64;
    }
    let source = payload.digest(chunk);
    std::hint::black_box((checks, drive_digest.value(), source.value()));
    Baseline {
        chunk_bytes: bytes,
        wall: start.elapsed(),
    }
}
