//! The reorder window, hand-driven.

use super::*;
use crate::units::KIB;

fn spec(size: u64, chunk: u64, memory: u64, window_chunks_max: u32) -> UploadSpec {
    UploadSpec {
        id: UploadId::new("u"),
        user: UserId::new("a").expect("valid"),
        file_name: "f".into(),
        mime_type: "application/octet-stream".into(),
        file_size_bytes: size,
        chunk_size_bytes: chunk,
        memory_bytes: memory,
        window_chunks_max,
        client_token: None,
        tus: None,
    }
}

fn upload(size: u64, chunk: u64, memory: u64) -> Upload {
    Upload::new(
        spec(size, chunk, memory, u32::MAX),
        UploadState::empty(Phase::Receiving),
    )
}

fn chunk(byte: u8, len: u64) -> Chunk {
    // Two frames, so slicing across frames is exercised.
    let half = (len / 2) as usize;
    let bytes = Bytes::from(vec![byte; len as usize]);
    Chunk {
        frames: vec![bytes.slice(..half), bytes.slice(half..)],
    }
}

/// This is a regression test that ensures the window's last slot is
/// inside it: the chunk exactly at the edge is buffered, and then the
/// bytes buffered are the whole reservation; one past is refused.
#[test]
fn the_last_window_slot_is_accepted_and_one_past_is_refused() {
    let chunk_bytes = 256 * KIB;
    let w = ReorderWindow::new(10 * chunk_bytes, chunk_bytes, 4);
    let frames = |b: u8| chunk(b, chunk_bytes).frames;
    for index in 0..3 {
        assert_eq!(w.insert(index, frames(1)), Ok(true));
    }
    assert_eq!(w.bounds(), (0, 4));
    assert_eq!(w.insert(3, frames(3)), Ok(true), "the last slot");
    assert_eq!(w.buffered_bytes(), 4 * chunk_bytes, "the whole reservation");
    assert_eq!(
        w.insert(4, frames(4)),
        Err(BeyondWindow {
            index: 4,
            head: 0,
            end: 4
        })
    );
    assert_eq!(w.buffered_bytes(), 4 * chunk_bytes, "nothing more stored");
}

#[test]
fn window_is_bounded_by_the_reservation() {
    let u = upload(10 * 256 * KIB, 256 * KIB, 3 * 256 * KIB + 1);
    assert_eq!((u.chunk_count, u.window_chunks), (10, 3));
    let capped = Upload::new(
        spec(10 * 256 * KIB, 256 * KIB, 1 << 30, 2),
        UploadState::empty(Phase::Receiving),
    );
    assert_eq!(
        capped.window_chunks, 2,
        "the profile's cap wins over a large reservation"
    );
    let tiny = upload(10 * 256 * KIB, 256 * KIB, 1);
    assert_eq!(tiny.window_chunks, 1, "the head chunk always fits");
    assert_eq!(upload(5, 256 * KIB, 1 << 40).window_chunks, 1);
}

#[test]
fn pieces_are_contiguous_runs_from_the_committed_offset() {
    let c = 256 * KIB;
    let u = upload(5 * c + 7, c, 1 << 30);
    let mut s = u.lock();
    assert!(u.next_piece(&s, 1 << 30).is_none(), "no head chunk");
    s.window.insert(1, chunk(1, c));
    assert!(u.next_piece(&s, 1 << 30).is_none(), "chunk 0 missing");
    s.window.insert(0, chunk(0, c));
    s.window.insert(3, chunk(3, c));
    let (first, frames, len) = u.next_piece(&s, 1 << 30).expect("run 0..2");
    assert_eq!((first, len), (0, 2 * c));
    assert_eq!(frames.iter().map(|f| f.len() as u64).sum::<u64>(), 2 * c);
    // The drive held half of chunk 1: resume from inside it.
    u.commit(&mut s, c + c / 2);
    assert_eq!(s.window.keys().copied().collect::<Vec<_>>(), vec![1, 3]);
    let (first, frames, len) = u.next_piece(&s, 1 << 30).expect("rest of chunk 1");
    assert_eq!((first, len), (c + c / 2, c / 2));
    assert!(frames.iter().all(|f| f.iter().all(|&b| b == 1)));
    // Pieces stop at the size bound, in whole chunks.
    s.window.insert(2, chunk(2, c));
    u.commit(&mut s, 2 * c);
    let (_, _, len) = u.next_piece(&s, 1).expect("at least one chunk");
    assert_eq!(len, c);
    assert_eq!(Upload::buffered_bytes(&s), 2 * c);
}

#[test]
fn the_public_window_refuses_beyond_and_forwards_contiguous_runs() {
    let c = 256 * KIB;
    let w = ReorderWindow::new(5 * c, c, 2);
    assert_eq!(
        (w.chunk_count(), w.window_chunks(), w.bounds()),
        (5, 2, (0, 2))
    );
    assert_eq!(
        w.insert(2, chunk(2, c).frames),
        Err(BeyondWindow {
            index: 2,
            head: 0,
            end: 2
        })
    );
    assert_eq!(w.insert(1, chunk(1, c).frames), Ok(true));
    assert_eq!(w.next_piece(u64::MAX), None, "chunk 0 missing");
    assert_eq!(w.insert(0, chunk(0, c).frames), Ok(true));
    let piece = w.next_piece(u64::MAX).expect("chunks 0 and 1");
    assert_eq!((piece.first_byte, piece.len_bytes), (0, 2 * c));
    w.commit(piece.first_byte + piece.len_bytes);
    assert_eq!(
        (w.committed_bytes(), w.buffered_bytes(), w.bounds()),
        (2 * c, 0, (2, 4))
    );
    assert_eq!(
        w.insert(1, chunk(1, c).frames),
        Ok(false),
        "already committed"
    );
    assert_eq!(
        w.buffered_bytes(),
        0,
        "a committed chunk is not stored again"
    );
}

#[test]
fn the_last_chunk_is_short() {
    let u = upload(1000, 256 * KIB, 1 << 30);
    assert_eq!((u.chunk_count, u.chunk_len(0)), (1, 1000));
    let u = upload(256 * KIB + 1, 256 * KIB, 1 << 30);
    assert_eq!((u.chunk_count, u.chunk_len(1)), (2, 1));
}

/// This is a regression test that ensures the release-mode guard on buffered
/// bytes holds at the window's edge and fires one byte past it (cargo-mutants
/// replaced it with `()` and nothing noticed: in correct code the intake never
/// buffers past the window, so only a direct test can see the guard work).
#[test]
#[should_panic(expected = "524289 bytes buffered, over its window of 2 chunks")]
fn the_buffered_bytes_guard_holds_at_the_window_and_fires_one_past() {
    let c = 256 * KIB;
    let u = upload(10 * c, c, 2 * c);
    assert_eq!(u.window_bytes(), 2 * c);
    let mut s = u.lock();
    s.window.insert(0, chunk(0, c));
    s.window.insert(1, chunk(1, c));
    u.assert_buffered_within_window(&s);
    s.window.insert(2, chunk(2, 1));
    u.assert_buffered_within_window(&s);
}

/// The simulation's window model compares only uploads whose change count
/// moved: every mutable access must move it, and reads must not.
#[test]
fn every_mutable_access_to_the_state_moves_the_change_count() {
    let u = upload(4 * KIB * 256, 256 * KIB, 4 * 256 * KIB);
    let before = u.changes();
    let _ = u.lock().committed_bytes;
    let _ = u.status();
    assert_eq!(u.changes(), before, "reads leave the count alone");
    u.lock().last_activity = Duration::from_secs(1);
    assert_eq!(u.changes(), before + 1);
    let mut state = u.lock();
    state.committed_bytes = 0;
    state.phase = Phase::Receiving;
    drop(state);
    assert!(u.changes() > before + 1, "each `&mut` counts");
}
