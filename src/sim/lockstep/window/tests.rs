//! The window model passes the decisions the backend must make and flags
//! each kind of wrong one, its numbers named.

use super::*;

/// 256 KiB chunks: one drive unit each.
const CHUNK: u64 = DRIVE_CHUNK_ALIGN_BYTES;
/// 10 chunks, the last one half a chunk.
const FILE: u64 = 9 * CHUNK + CHUNK / 2;
/// The reservation holds 4 chunks (the profile's cap is higher).
const WINDOW: u32 = 4;

fn view(committed_bytes: u64, chunks: &[u32]) -> WindowView {
    let g = geometry();
    WindowView {
        upload: "u".into(),
        file_size_bytes: FILE,
        chunk_size_bytes: CHUNK,
        chunk_count: 10,
        window_chunks: WINDOW,
        memory_bytes: u64::from(WINDOW) * CHUNK,
        phase: Phase::Receiving,
        committed_bytes,
        session_generation: 1,
        session: Some("s".into()),
        chunks_buffered: chunks.to_vec(),
        buffered_bytes: chunks.iter().map(|&i| g.chunk_len(i)).sum(),
        tail_bytes: 0,
    }
}

fn geometry() -> Geometry {
    Geometry {
        file_size_bytes: FILE,
        chunk_size_bytes: CHUNK,
        chunk_count: 10,
        window_chunks: WINDOW,
    }
}

fn model() -> Windows {
    // Pieces of at most 2 chunks.
    Windows::new(16, 2 * CHUNK)
}

fn ok(wrong: Vec<String>) {
    assert!(wrong.is_empty(), "{wrong:?}");
}

fn flagged(wrong: Vec<String>, what: &str) {
    assert!(
        wrong.iter().any(|w| w.contains(what)),
        "expected {what:?} in {wrong:?}"
    );
}

#[test]
fn geometry_is_derived_from_the_reservation_and_the_cap() {
    let mut v = view(0, &[]);
    assert_eq!(Geometry::of(&v, 16), Some(geometry()));
    assert_eq!(Geometry::of(&v, 3).map(|g| g.window_chunks), Some(3));
    v.memory_bytes = CHUNK / 2;
    assert_eq!(Geometry::of(&v, 16).map(|g| g.window_chunks), Some(1));
    v.memory_bytes = 100 * CHUNK;
    assert_eq!(Geometry::of(&v, 64).map(|g| g.window_chunks), Some(10));
    // A backend that sizes its window one chunk larger is flagged.
    let mut m = model();
    let mut wide = view(0, &[]);
    wide.window_chunks = WINDOW + 1;
    flagged(m.step(&[wide]), "window of 5");
}

#[test]
fn window_model_refuses_at_the_window_end_and_accepts_the_last_slot() {
    let mut m = model();
    let before = ChunkStage::BeforeBody;
    // The window is [0, 4): chunk 3 is its last slot, chunk 4 its end.
    ok(m.chunk(&view(0, &[]), 3, before, ChunkVerdict::Accepted));
    ok(m.chunk(
        &view(0, &[]),
        4,
        before,
        ChunkVerdict::Refused(Cause::WindowFull),
    ));
    // An off-by-one at the end: chunk 4 accepted.
    flagged(
        m.chunk(&view(0, &[]), 4, before, ChunkVerdict::Accepted),
        "window [0, 4)",
    );
    // And the other way: the last slot refused.
    flagged(
        m.chunk(
            &view(0, &[]),
            3,
            before,
            ChunkVerdict::Refused(Cause::WindowFull),
        ),
        "WindowFull",
    );
    // At the store too: chunk 4 stored is flagged, and the window then
    // holds a chunk the model never stored.
    let mut m = model();
    let wrong = m.chunk(&view(0, &[4]), 4, ChunkStage::Store, ChunkVerdict::Accepted);
    flagged(wrong, "window [0, 4)");
}

#[test]
fn window_model_judges_committed_chunks_and_phases() {
    let mut m = model();
    let mut v = view(2 * CHUNK, &[]);
    ok(m.chunk(
        &v,
        1,
        ChunkStage::BeforeBody,
        ChunkVerdict::AlreadyCommitted,
    ));
    flagged(
        m.chunk(&v, 1, ChunkStage::BeforeBody, ChunkVerdict::Accepted),
        "AlreadyCommitted",
    );
    // The window moved with the committed offset: [2, 6).
    ok(m.chunk(&v, 5, ChunkStage::BeforeBody, ChunkVerdict::Accepted));
    flagged(
        m.chunk(&v, 6, ChunkStage::BeforeBody, ChunkVerdict::Accepted),
        "window [2, 6)",
    );
    // Phases decide first.
    v.phase = Phase::Resuming;
    ok(m.chunk(
        &v,
        2,
        ChunkStage::BeforeBody,
        ChunkVerdict::Refused(Cause::Resuming),
    ));
    flagged(
        m.chunk(&v, 2, ChunkStage::BeforeBody, ChunkVerdict::Accepted),
        "Resuming",
    );
    v.phase = Phase::Failed;
    ok(m.chunk(
        &v,
        2,
        ChunkStage::Store,
        ChunkVerdict::Refused(Cause::UploadEnded),
    ));
    flagged(
        m.chunk(
            &v,
            2,
            ChunkStage::Store,
            ChunkVerdict::Refused(Cause::UploadFailed),
        ),
        "UploadEnded",
    );
}

#[test]
fn window_model_follows_what_is_buffered_and_committed() {
    let mut m = model();
    let store = ChunkStage::Store;
    ok(m.chunk(&view(0, &[1]), 1, store, ChunkVerdict::Accepted));
    ok(m.chunk(&view(0, &[0, 1]), 0, store, ChunkVerdict::Accepted));
    // A chunk stored without a decision, and one dropped.
    flagged(m.step(&[view(0, &[0, 1, 2])]), "the model [0, 1]");
    flagged(m.step(&[view(0, &[1])]), "the model [0, 1]");
    // The drive holds 1.5 chunks: chunk 0 leaves, chunk 1 stays.
    ok(m.answer(
        &view(0, &[0, 1]),
        DriveAnswer::Held {
            held_bytes: CHUNK + CHUNK / 2,
        },
    ));
    ok(m.step(&[view(CHUNK + CHUNK / 2, &[1])]));
    // A committed offset that moves without a drive answer.
    flagged(m.step(&[view(2 * CHUNK, &[])]), "without a drive answer");
    // A Range that goes back is not believed.
    let mut m = model();
    ok(m.answer(&view(0, &[]), DriveAnswer::Held { held_bytes: CHUNK }));
    ok(m.answer(&view(CHUNK, &[]), DriveAnswer::Held { held_bytes: 0 }));
    flagged(m.step(&[view(0, &[])]), "without a drive answer");
}

#[test]
fn window_model_restarts_with_a_new_session_and_empties_at_the_end() {
    let mut m = model();
    ok(m.chunk(&view(0, &[0]), 0, ChunkStage::Store, ChunkVerdict::Accepted));
    ok(m.answer(&view(0, &[0]), DriveAnswer::Held { held_bytes: CHUNK }));
    // A new session: from zero, nothing buffered.
    let mut restarted = view(0, &[]);
    restarted.session_generation = 2;
    ok(m.step(&[restarted.clone()]));
    restarted.session_generation = 1;
    flagged(m.step(&[restarted]), "went back");
    // The end: complete only after the drive's 200, and nothing buffered.
    let mut m = model();
    ok(m.step(&[view(0, &[])]));
    ok(m.answer(&view(0, &[]), DriveAnswer::Complete { size_bytes: FILE }));
    let mut done = view(FILE, &[]);
    done.phase = Phase::Complete;
    ok(m.step(&[done.clone()]));
    let mut m = model();
    ok(m.step(&[view(0, &[])]));
    flagged(m.step(&[done]), "without a drive answer");
    let mut failed = view(0, &[0]);
    failed.phase = Phase::Failed;
    flagged(m.step(&[failed]), "buffers chunks [0]");
}

#[test]
fn window_model_checks_every_piece_against_the_buffered_run() {
    let (mut m, v) = (model(), view(0, &[0, 1, 2]));
    for (i, set) in [(0, &[0][..]), (1, &[0, 1]), (2, &[0, 1, 2])] {
        ok(m.chunk(&view(0, set), i, ChunkStage::Store, ChunkVerdict::Accepted));
    }
    let piece = |first_byte, len_bytes, frames_bytes| PieceSent {
        first_byte,
        len_bytes,
        frames_bytes,
    };
    // piece_bytes_max is 2 chunks: the run is chunks 0 and 1.
    ok(m.piece(&v, piece(0, 2 * CHUNK, 2 * CHUNK)));
    flagged(m.piece(&v, piece(0, 3 * CHUNK, 3 * CHUNK)), "run from 0 is");
    flagged(m.piece(&v, piece(0, CHUNK, CHUNK)), "run from 0 is");
    flagged(
        m.piece(&v, piece(CHUNK, 2 * CHUNK, 2 * CHUNK)),
        "committed offset 0",
    );
    // A chunk's bytes twice, with the right count.
    flagged(m.piece(&v, piece(0, 2 * CHUNK, 3 * CHUNK)), "frames hold");
    // A piece that starts or ends off a unit.
    let mut m = model();
    ok(m.answer(
        &view(0, &[]),
        DriveAnswer::Held {
            held_bytes: CHUNK / 2,
        },
    ));
    ok(m.chunk(
        &view(CHUNK / 2, &[0]),
        0,
        ChunkStage::Store,
        ChunkVerdict::Accepted,
    ));
    let half = view(CHUNK / 2, &[0]);
    flagged(
        m.piece(&half, piece(CHUNK / 2, CHUNK / 2, CHUNK / 2)),
        "aligned",
    );
    // The file's last chunk is half a unit: a piece ending the file may.
    let mut m = model();
    ok(m.answer(
        &view(0, &[]),
        DriveAnswer::Held {
            held_bytes: 9 * CHUNK,
        },
    ));
    ok(m.chunk(
        &view(9 * CHUNK, &[9]),
        9,
        ChunkStage::Store,
        ChunkVerdict::Accepted,
    ));
    ok(m.piece(
        &view(9 * CHUNK, &[9]),
        piece(9 * CHUNK, CHUNK / 2, CHUNK / 2),
    ));
}

/// The step loop compares an upload only when it may have changed: this
/// guards that a hook, a new change count or a first sighting each make it
/// due, that an unchanged one is not, and that unseen uploads are forgotten.
#[test]
fn a_step_compares_exactly_the_uploads_that_may_have_changed() {
    let mut m = model();
    m.begin_step(None);
    assert!(m.due("u", 7), "first sighting");
    ok(m.compare_at_step(&view(0, &[]), Some(7)));
    m.end_step();
    m.begin_step(None);
    assert!(
        !m.due("u", 7),
        "same count, no hook: the last verdict stands"
    );
    assert!(m.due("u", 8), "the count moved");
    m.end_step();
    // A hook moves the model: due even with the same count.
    ok(m.chunk(&view(0, &[0]), 0, ChunkStage::Store, ChunkVerdict::Accepted));
    m.begin_step(None);
    assert!(m.due("u", 7));
    // And what the comparison finds is still found: the backend's view
    // lost the chunk the model saw stored.
    flagged(m.compare_at_step(&view(0, &[]), Some(7)), "the model [0]");
    m.end_step();
    // The drive's books moving is reported once per move.
    assert!(m.begin_step(Some(1)));
    assert!(!m.begin_step(Some(1)));
    // An upload no step sees is forgotten: first sighting again.
    m.end_step();
    m.begin_step(Some(1));
    assert!(m.due("u", 7));
}

#[test]
fn window_model_follows_tus_publishes_in_order_within_the_window() {
    let mut m = model();
    // tus bytes arrive in order: chunks 0 and 1, then 2 and 3 (the window
    // is [0, 4)).
    ok(m.tus_published(&view(0, &[0, 1]), 0..2));
    ok(m.tus_published(&view(0, &[0, 1, 2, 3]), 2..4));
    // The drive holds the first two; chunk 4 is the next, and fits.
    ok(m.answer(
        &view(0, &[0, 1, 2, 3]),
        DriveAnswer::Held {
            held_bytes: 2 * CHUNK,
        },
    ));
    ok(m.tus_published(&view(2 * CHUNK, &[2, 3, 4]), 4..5));
    // Every sighting in between compares as the chunk API's do.
    ok(m.step(&[view(2 * CHUNK, &[2, 3, 4])]));
}

#[test]
fn window_model_flags_a_wrong_tus_publish() {
    // A chunk skipped: 0 published, then 2.
    let mut m = model();
    ok(m.tus_published(&view(0, &[0]), 0..1));
    flagged(
        m.tus_published(&view(0, &[0, 2]), 2..3),
        "expects chunk 1 next",
    );
    // A chunk past the window's end (the window is [0, 4)).
    let mut m = model();
    ok(m.tus_published(&view(0, &[0, 1, 2, 3]), 0..4));
    flagged(
        m.tus_published(&view(0, &[0, 1, 2, 3, 4]), 4..5),
        "inside the window [0, 4)",
    );
    // A publish the backend made without telling the model shows at the
    // next sighting, and one in a phase that takes no bytes is flagged.
    let mut m = model();
    ok(m.tus_published(&view(0, &[0]), 0..1));
    flagged(
        m.step(&[view(0, &[0, 1])]),
        "buffers chunks [0, 1], the model [0]",
    );
    let mut m = model();
    let mut resuming = view(0, &[0]);
    resuming.phase = Phase::Resuming;
    flagged(
        m.tus_published(&resuming, 0..1),
        "published in phase Resuming",
    );
}
