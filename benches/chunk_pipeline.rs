//! Chunk pipeline: what the backend does to the bytes of 8 MiB chunks,
//! beside a plain copy and a plain CRC-32C of the same buffers.
//!
//! One iteration is one batch of [`PARALLEL`] chunks — what a client keeps
//! in flight — arriving last-first, so every chunk but the head waits in the
//! reorder window before the batch goes out as one drive piece:
//! 1. each chunk's request frames are checksummed frame by frame with the
//!    streaming CRC-32C and compared with the client's header, as
//!    `put_chunk` does;
//! 2. the chunk is inserted into the upload's reorder window
//!    ([`ReorderWindow`]: the backend's own window code, not a copy);
//! 3. the committer's step: build the drive piece from the window (frames
//!    are sliced, never copied) and commit the drive's answer.
//!
//! Baselines, same bytes: `baseline_crc32c` (one-shot CRC-32C of each
//! chunk), `baseline_crc64nvme` (the whole-file CRC-64/NVME the backend
//! checks in simulation, streamed over the chunks' frames) and
//! `baseline_memcpy` (each chunk copied into a buffer).
//!
//! `md5`: the whole-file MD5 real mode checks instead (Drive's
//! `md5Checksum`, `checksum::Md5Digest`), streamed over the same frames as
//! the committer digests a piece; its ratio to `baseline_crc64nvme` is what
//! MD5 costs over CRC-64, and its rate what it adds to an upload (README,
//! "Performance").
//!
//! Throughput is the batch's bytes, so `upsim bench-report` reads the
//! ratio from one run.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::time::Duration;
use upsim::backend::{BackendConfig, ReorderWindow};
use upsim::checksum::{crc32c, Crc32c, FileDigest, Md5Digest};
use upsim::payload::Payload;
use upsim::profile::Profile;

/// Chunks in flight per upload in the reference scenario (`parallel`).
const PARALLEL: usize = 4;
/// The backend sees a body as the frames hyper reads; the simulated links
/// write 256 KiB at a time.
const FRAME_BYTES: usize = 256 * 1024;

/// One chunk as the backend receives it: its frames and the client's CRC.
struct Arrival {
    frames: Vec<Bytes>,
    crc32c: u32,
}

/// Checksums a chunk's frames as `put_chunk` does; panics on a mismatch,
/// which would be a bug in the benchmark's data, not a measured case.
fn verify(frames: &[Bytes], expected: u32) {
    let mut crc = Crc32c::default();
    for frame in frames {
        crc.update(frame);
    }
    assert_eq!(crc.value(), expected, "chunk checksum mismatch");
}

fn chunk_pipeline(c: &mut Criterion) {
    let profile = Profile::dev();
    let chunk_bytes = profile.chunk_size_bytes;
    let chunk_len = usize::try_from(chunk_bytes).expect("8 MiB fits in usize");
    let piece_bytes_max = BackendConfig::new(profile.clone(), "http://drive", 0).piece_bytes_max;
    assert!(
        piece_bytes_max >= PARALLEL as u64 * chunk_bytes,
        "one batch must go out as one drive piece"
    );
    let payload = Payload::new(0x5eed, PARALLEL as u64 * chunk_bytes);
    let buffers: Vec<Bytes> = (0..PARALLEL)
        .map(|i| {
            let mut buf = vec![0u8; chunk_len];
            payload.fill(i as u64 * chunk_bytes, &mut buf);
            Bytes::from(buf)
        })
        .collect();
    let arrivals: Vec<Arrival> = buffers
        .iter()
        .map(|b| Arrival {
            frames: (0..b.len())
                .step_by(FRAME_BYTES)
                .map(|at| b.slice(at..(at + FRAME_BYTES).min(b.len())))
                .collect(),
            crc32c: crc32c(b),
        })
        .collect();
    // A file long enough that the window never reaches its end while
    // measuring (2^20 chunks); rebuilt if it ever does.
    let file_chunks: u32 = 1 << 20;
    let new_window = || {
        ReorderWindow::new(
            u64::from(file_chunks) * chunk_bytes,
            chunk_bytes,
            profile.reorder_window_chunks_max,
        )
    };

    let mut group = c.benchmark_group("chunk_pipeline");
    group
        .throughput(Throughput::Bytes(PARALLEL as u64 * chunk_bytes))
        .sample_size(10)
        // criterion's default of 100 000 resamples makes the html report's
        // plots slower than the measurement.
        .nresamples(10_000)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));

    let mut window = new_window();
    let mut base: u32 = 0;
    group.bench_function("backend", |b| {
        b.iter(|| {
            if base + PARALLEL as u32 > file_chunks {
                window = new_window();
                base = 0;
            }
            // Last-first: chunks base+3, base+2, base+1 wait for base.
            for (i, arrival) in arrivals.iter().enumerate().rev() {
                verify(&arrival.frames, arrival.crc32c);
                let stored = window
                    .insert(base + i as u32, arrival.frames.clone())
                    .expect("the batch lies inside the window");
                assert!(stored);
            }
            let piece = window
                .next_piece(piece_bytes_max)
                .expect("the head chunk arrived");
            debug_assert_eq!(piece.len_bytes, PARALLEL as u64 * chunk_bytes);
            // The drive holds everything it was sent.
            window.commit(piece.first_byte + piece.len_bytes);
            base += PARALLEL as u32;
            black_box(piece)
        });
    });

    group.bench_function("baseline_crc32c", |b| {
        b.iter(|| {
            let mut checks = 0u32;
            for buf in &buffers {
                checks ^= crc32c(black_box(buf));
            }
            black_box(checks)
        });
    });

    group.bench_function("baseline_crc64nvme", |b| {
        b.iter(|| {
            let mut digest = FileDigest::default();
            for frame in arrivals.iter().flat_map(|a| &a.frames) {
                digest.update(black_box(frame));
            }
            black_box(digest.value())
        });
    });

    group.bench_function("md5", |b| {
        b.iter(|| {
            let mut digest = Md5Digest::default();
            for frame in arrivals.iter().flat_map(|a| &a.frames) {
                digest.update(black_box(frame));
            }
            black_box(digest.hex())
        });
    });

    let mut copies: Vec<Vec<u8>> = (0..PARALLEL).map(|_| vec![0u8; chunk_len]).collect();
    group.bench_function("baseline_memcpy", |b| {
        b.iter(|| {
            for (dst, src) in copies.iter_mut().zip(&buffers) {
                dst.copy_from_slice(black_box(src));
            }
            black_box(&mut copies);
        });
    });
    group.finish();
}

criterion_group!(benches, chunk_pipeline);
criterion_main!(benches);
