//! The backend's reorder window in lock-step (`window_model`): a model of
//! each upload's window, fed what the backend's decisions are fed, says
//! what must be buffered, refused or forwarded; every decision the backend
//! makes, and every step's state, is compared with it.
//!
//! The model ([`Windows`]) is pure. Per upload it keeps the committed
//! offset — moved only by a drive answer, by the rule the committer must
//! follow (forward progress within the file is believed; anything else is
//! not) — and the set of chunks buffered — a chunk joins it only when
//! stored, and leaves it when wholly below the committed offset, when a new
//! drive session starts (committed back to 0) or when the upload ends. Its
//! geometry is derived on its own: `chunk_count = ⌈file / chunk⌉` and
//! `window_chunks = reservation / chunk` capped by the profile's
//! `reorder_window_chunks_max`, at least 1, at most `chunk_count`.
//!
//! # What is checked, at each event
//! - **A chunk decision** (before the body, and at the store): given the
//!   upload's phase and committed offset as the backend saw them, the
//!   window is `[head, end)`, `head = ⌊committed / chunk⌋`, `end = min(head +
//!   window_chunks, chunk_count)`. Before the body: `resuming`,
//!   `upload_complete`, `upload_failed` by phase; then `index < head` →
//!   `200 already_committed`, `index ≥ end` → `503 window_full` (the chunk
//!   AT `end` is refused, the one at `end − 1` accepted), else read the body.
//!   At the store: `upload_ended` unless receiving, then the same window
//!   rule, else stored. The verdict must be the model's, cause and all.
//! - **A tus publish** (a tus upload's tail moved whole chunks into the
//!   window): the upload receives, and each chunk is the next after the
//!   model's buffered run (the chunk holding the committed offset when
//!   none is buffered) and inside the window: tus bytes come in order.
//!   The chunks join the model's buffered set.
//! - **A piece sent**: it starts at the model's committed offset and is
//!   exactly the contiguous run of the model's buffered chunks from there,
//!   cut as the committer must cut it (whole chunks until `piece_bytes_max`
//!   is reached or the file ends); its frames hold its length; it starts on
//!   a 256 KiB unit and is a multiple of one unless it ends the file; it
//!   passes `piece_bytes_max` only within its last chunk.
//! - **A drive answer**: the backend's state before acting on it must be
//!   the model's; a `308` is then applied by the model's rule, and the
//!   `Range` must be one the drive reported ([`DriveRanges::believed`]).
//! - **Every sighting** (each event above, and every simulation step for
//!   every upload whose state may have changed since it was last compared:
//!   its change count moved — every `&mut` to an upload's state counts,
//!   `backend/upload/guard.rs` — or a hook moved the model; comparing an
//!   unchanged upload with an unchanged model could only repeat the last
//!   verdict): the backend's committed offset and buffered chunk set
//!   are exactly the model's (a committed offset that moved without a
//!   drive answer, a chunk kept or dropped wrongly, a window not emptied at
//!   the end, all show here); its bytes are the chunks' lengths; its
//!   geometry is the model's (once per upload); its session generation
//!   never goes back. And (`drive_ranges_model`) its committed offset is
//!   never past what its drive session holds (re-checked when either the
//!   upload or the drive's books changed).
//!
//! # What is not
//! - Requests refused before the window is consulted (authentication, the
//!   index past the file — `416` —, lengths, checksums, draining).
//! - Whether a piece *should* have been sent (liveness is the oracle's
//!   run-level check), and the piece's bytes (checksums, end of run).
//! - Uploads taken back after a backend restart are followed from their
//!   first sighting in the new boot (a fresh model per boot).

use super::drive_ranges::DriveRanges;
use super::Findings;
use crate::backend::{
    BufferGauge, ChunkStage, ChunkVerdict, DriveAnswer, Observed, PieceSent, WindowObserver,
    WindowView,
};
use crate::chunk_api::{Cause, Phase};
use crate::units::DRIVE_CHUNK_ALIGN_BYTES;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};

/// The oracle's name for this check.
pub const CHECK: &str = "window_model";

/// What an upload's window is made of, derived by the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// The file's size.
    pub file_size_bytes: u64,
    /// The chunk size; > 0.
    pub chunk_size_bytes: u64,
    /// `⌈file / chunk⌉`.
    pub chunk_count: u32,
    /// `reservation / chunk`, capped, at least 1, at most `chunk_count`.
    pub window_chunks: u32,
}

impl Geometry {
    /// The geometry of `view`'s upload under a profile whose window cap is
    /// `window_chunks_max`; `None` for a zero chunk size.
    pub fn of(view: &WindowView, window_chunks_max: u32) -> Option<Self> {
        let chunk = view.chunk_size_bytes;
        if chunk == 0 {
            return None;
        }
        let count = u32::try_from(view.file_size_bytes.div_ceil(chunk)).unwrap_or(u32::MAX);
        let fits = u32::try_from(view.memory_bytes / chunk).unwrap_or(u32::MAX);
        Some(Self {
            file_size_bytes: view.file_size_bytes,
            chunk_size_bytes: chunk,
            chunk_count: count,
            window_chunks: fits.min(window_chunks_max).max(1).min(count.max(1)),
        })
    }

    /// The chunk holding byte `offset`.
    fn chunk_of(&self, offset: u64) -> u32 {
        u32::try_from(offset / self.chunk_size_bytes).unwrap_or(u32::MAX)
    }

    /// Bytes of chunk `index`.
    fn chunk_len(&self, index: u32) -> u64 {
        let start = u64::from(index) * self.chunk_size_bytes;
        self.chunk_size_bytes
            .min(self.file_size_bytes.saturating_sub(start))
    }

    /// The window `[head, end)` at `committed_bytes`.
    pub fn window(&self, committed_bytes: u64) -> (u32, u32) {
        let head = self.chunk_of(committed_bytes);
        let end = head
            .saturating_add(self.window_chunks)
            .min(self.chunk_count);
        (head, end)
    }

    /// The piece the committer must cut from `buffered` at
    /// `committed_bytes`: its length (0 if the head chunk is missing).
    pub fn run_bytes(
        &self,
        committed_bytes: u64,
        buffered: &BTreeSet<u32>,
        piece_bytes_max: u64,
    ) -> u64 {
        let mut index = self.chunk_of(committed_bytes);
        let mut skip = committed_bytes - u64::from(index) * self.chunk_size_bytes;
        let mut len = 0u64;
        while buffered.contains(&index) {
            len += self.chunk_len(index).saturating_sub(skip);
            skip = 0;
            index += 1;
            if len >= piece_bytes_max || index >= self.chunk_count {
                break;
            }
        }
        len
    }
}

/// The verdict the model expects of chunk `index` at `stage`, the upload
/// being in `phase` with `committed_bytes` committed.
pub fn expected_verdict(
    g: &Geometry,
    phase: Phase,
    committed_bytes: u64,
    stage: ChunkStage,
    index: u32,
) -> ChunkVerdict {
    let refused = |cause| ChunkVerdict::Refused(cause);
    match (stage, phase) {
        (ChunkStage::BeforeBody, Phase::Resuming) => return refused(Cause::Resuming),
        (ChunkStage::BeforeBody, Phase::Complete) => return refused(Cause::UploadComplete),
        (ChunkStage::BeforeBody, Phase::Failed) => return refused(Cause::UploadFailed),
        (ChunkStage::Store, Phase::Resuming | Phase::Complete | Phase::Failed) => {
            return refused(Cause::UploadEnded)
        }
        (_, Phase::Receiving) => {}
    }
    let (head, end) = g.window(committed_bytes);
    if index < head {
        ChunkVerdict::AlreadyCommitted
    } else if index >= end {
        refused(Cause::WindowFull)
    } else {
        ChunkVerdict::Accepted
    }
}

/// One upload as the model follows it.
#[derive(Debug, Clone)]
struct Tracked {
    geometry: Option<Geometry>,
    generation: u32,
    committed_bytes: u64,
    buffered: BTreeSet<u32>,
    /// The drive answered `200` in this generation.
    complete_answered: bool,
    /// The backend's change count for the upload when a step last compared
    /// it (`None`: never, or not by count).
    compared_changes: Option<u64>,
    /// A hook moved the model since a step last compared the upload.
    touched: bool,
    /// The last step that saw the upload in the backend.
    seen_step: u64,
}

/// Every upload of one backend boot, as the model follows it (pure).
#[derive(Debug)]
pub struct Windows {
    window_chunks_max: u32,
    piece_bytes_max: u64,
    uploads: BTreeMap<String, Tracked>,
    /// Steps begun.
    step: u64,
    /// The drive books' change count at the last step.
    ranges_changes: Option<u64>,
}

impl Windows {
    /// The model of a backend whose profile caps windows at
    /// `window_chunks_max` and whose committer sends at most
    /// `piece_bytes_max` (rounded up to whole chunks).
    pub fn new(window_chunks_max: u32, piece_bytes_max: u64) -> Self {
        Self {
            window_chunks_max,
            piece_bytes_max,
            uploads: BTreeMap::new(),
            step: 0,
            ranges_changes: None,
        }
    }

    /// The upload of `view`, first seen now or followed since, brought to
    /// its generation; with what is wrong.
    fn sync(&mut self, view: &WindowView, wrong: &mut Vec<String>) -> &mut Tracked {
        let (max, step) = (self.window_chunks_max, self.step);
        let t = self.uploads.entry(view.upload.clone()).or_insert_with(|| {
            let geometry = Geometry::of(view, max);
            judge_geometry(view, geometry.as_ref(), wrong);
            Tracked {
                geometry,
                generation: view.session_generation,
                committed_bytes: view.committed_bytes,
                buffered: view.chunks_buffered.iter().copied().collect(),
                complete_answered: false,
                compared_changes: None,
                touched: true,
                seen_step: step,
            }
        });
        // Every sighting may move the model; a step that compares resets it.
        t.touched = true;
        if view.session_generation < t.generation {
            wrong.push(format!(
                "session generation went back from {} to {}",
                t.generation, view.session_generation
            ));
        } else if view.session_generation > t.generation {
            // A new drive session: from byte zero, nothing buffered.
            t.generation = view.session_generation;
            t.committed_bytes = 0;
            t.buffered.clear();
            t.complete_answered = false;
        }
        if view.phase == Phase::Complete && t.complete_answered {
            t.committed_bytes = view.file_size_bytes;
        }
        t
    }

    /// A chunk decision.
    pub fn chunk(
        &mut self,
        view: &WindowView,
        index: u32,
        stage: ChunkStage,
        verdict: ChunkVerdict,
    ) -> Vec<String> {
        let mut wrong = Vec::new();
        let t = self.sync(view, &mut wrong);
        if let Some(g) = t.geometry {
            let expected = expected_verdict(&g, view.phase, view.committed_bytes, stage, index);
            if verdict != expected {
                let (head, end) = g.window(view.committed_bytes);
                wrong.push(format!(
                    "chunk {index} ({stage:?}): the backend decided {verdict:?}, the model {expected:?} (phase {:?}, committed {} bytes, window [{head}, {end}) of {} chunks, chunk_count {})",
                    view.phase, view.committed_bytes, g.window_chunks, g.chunk_count
                ));
            }
        }
        if stage == ChunkStage::Store && verdict == ChunkVerdict::Accepted {
            t.buffered.insert(index);
        }
        compare(view, t, &mut wrong);
        wrong
    }

    /// Chunks `published` that a tus upload's tail moved into the window
    /// (the view is the window after). tus's rule: its bytes arrive in
    /// order, so each chunk published is the next after the buffered run
    /// (or the chunk holding the committed offset when nothing is
    /// buffered), inside the window, while the upload receives.
    pub fn tus_published(&mut self, view: &WindowView, published: Range<u32>) -> Vec<String> {
        let mut wrong = Vec::new();
        let known = self.uploads.contains_key(&view.upload);
        let t = self.sync(view, &mut wrong);
        if !known {
            // First seen now (a new boot's model): the view is the window
            // after the publish, so the published chunks are not yet ours.
            for index in published.clone() {
                t.buffered.remove(&index);
            }
        }
        if view.phase != Phase::Receiving {
            wrong.push(format!(
                "tus chunks {published:?} published in phase {:?}",
                view.phase
            ));
        }
        if let Some(g) = t.geometry {
            let (head, end) = g.window(t.committed_bytes);
            for index in published.clone() {
                let next = t.buffered.last().map_or(head, |&last| last + 1);
                if index != next || index >= end {
                    wrong.push(format!(
                        "tus chunk {index} published; the model expects chunk {next} next, inside the window [{head}, {end}) (buffered {})",
                        shown(&t.buffered.iter().copied().collect::<Vec<_>>())
                    ));
                }
                t.buffered.insert(index);
            }
        }
        compare(view, t, &mut wrong);
        wrong
    }

    /// A piece on its way to the drive.
    pub fn piece(&mut self, view: &WindowView, piece: PieceSent) -> Vec<String> {
        let piece_bytes_max = self.piece_bytes_max;
        let mut wrong = Vec::new();
        let t = self.sync(view, &mut wrong);
        compare(view, t, &mut wrong);
        if let Some(g) = t.geometry {
            judge_piece(&g, t, piece, piece_bytes_max, &mut wrong);
        }
        wrong
    }

    /// A drive answer, before the backend acts on it; applied by the
    /// model's rule.
    pub fn answer(&mut self, view: &WindowView, answer: DriveAnswer) -> Vec<String> {
        let mut wrong = Vec::new();
        let t = self.sync(view, &mut wrong);
        compare(view, t, &mut wrong);
        match answer {
            DriveAnswer::Held { held_bytes } => {
                // Believed only if it is progress (or none) within the file.
                if held_bytes >= t.committed_bytes && held_bytes <= view.file_size_bytes {
                    t.committed_bytes = held_bytes;
                    if let Some(g) = t.geometry {
                        let first_kept = g.chunk_of(held_bytes);
                        t.buffered.retain(|&i| i >= first_kept);
                    }
                    if held_bytes == view.file_size_bytes {
                        t.buffered.clear();
                    }
                }
            }
            DriveAnswer::Complete { .. } => t.complete_answered = true,
            DriveAnswer::Failed => {}
        }
        wrong
    }

    /// Every upload's state at a step, each compared; uploads no longer
    /// there are forgotten.
    pub fn step(&mut self, views: &[WindowView]) -> Vec<String> {
        self.begin_step(None);
        let mut wrong = Vec::new();
        for view in views {
            wrong.extend(self.compare_at_step(view, None));
        }
        self.end_step();
        wrong
    }

    /// Starts a step; whether the drive's books changed since the last
    /// (`ranges_changes`: their count now, if there are books).
    pub fn begin_step(&mut self, ranges_changes: Option<u64>) -> bool {
        self.step += 1;
        let moved = ranges_changes.is_some() && ranges_changes != self.ranges_changes;
        self.ranges_changes = ranges_changes;
        moved
    }

    /// Whether `upload`, whose change count is `changes`, must be compared
    /// at this step: first seen, changed, or touched by a hook since.
    /// Marks it seen.
    pub fn due(&mut self, upload: &str, changes: u64) -> bool {
        let step = self.step;
        self.uploads.get_mut(upload).is_none_or(|t| {
            t.seen_step = step;
            t.touched || t.compared_changes != Some(changes)
        })
    }

    /// Compares one upload at this step (`changes`: its change count, if
    /// known); what is wrong, named.
    pub fn compare_at_step(&mut self, view: &WindowView, changes: Option<u64>) -> Vec<String> {
        let step = self.step;
        let mut here = Vec::new();
        let t = self.sync(view, &mut here);
        compare(view, t, &mut here);
        (t.compared_changes, t.touched, t.seen_step) = (changes, false, step);
        here.into_iter()
            .map(|w| format!("upload {}: {w}", view.upload))
            .collect()
    }

    /// Ends a step: uploads it did not see are forgotten.
    pub fn end_step(&mut self) {
        let step = self.step;
        self.uploads.retain(|_, t| t.seen_step == step);
    }
}

/// The backend's geometry against the model's.
fn judge_geometry(view: &WindowView, g: Option<&Geometry>, wrong: &mut Vec<String>) {
    let Some(g) = g else {
        wrong.push("a zero chunk size".into());
        return;
    };
    if (view.chunk_count, view.window_chunks) != (g.chunk_count, g.window_chunks) {
        wrong.push(format!(
            "the backend counts {} chunks with a window of {}; the model {} and {} (file {} bytes, chunk {}, reservation {})",
            view.chunk_count, view.window_chunks, g.chunk_count, g.window_chunks,
            view.file_size_bytes, view.chunk_size_bytes, view.memory_bytes
        ));
    }
}

/// The backend's state against the model's.
fn compare(view: &WindowView, t: &mut Tracked, wrong: &mut Vec<String>) {
    if view.committed_bytes != t.committed_bytes {
        wrong.push(format!(
            "committed offset {} bytes, but the drive's answers say {} (phase {:?}): it moved without a drive answer",
            view.committed_bytes, t.committed_bytes, view.phase
        ));
    }
    if matches!(view.phase, Phase::Complete | Phase::Failed) {
        // An ended upload buffers nothing.
        t.buffered.clear();
    }
    let buffered: Vec<u32> = t.buffered.iter().copied().collect();
    if view.chunks_buffered != buffered {
        wrong.push(format!(
            "buffers chunks {}, the model {} (phase {:?}, committed {} bytes)",
            shown(&view.chunks_buffered),
            shown(&buffered),
            view.phase,
            view.committed_bytes
        ));
    }
    if let Some(g) = t.geometry {
        let bytes: u64 = view.chunks_buffered.iter().map(|&i| g.chunk_len(i)).sum();
        if view.buffered_bytes != bytes + view.tail_bytes {
            wrong.push(format!(
                "buffers {} bytes; its chunks hold {bytes} and its tus tail {}",
                view.buffered_bytes, view.tail_bytes
            ));
        }
    }
}

/// A chunk list, abbreviated.
fn shown(chunks: &[u32]) -> String {
    const SHOWN_MAX: usize = 12;
    if chunks.len() <= SHOWN_MAX {
        return format!("{chunks:?}");
    }
    format!("{:?}… ({} in all)", &chunks[..SHOWN_MAX], chunks.len())
}

/// A piece against the model's committed offset and buffered run.
fn judge_piece(
    g: &Geometry,
    t: &Tracked,
    p: PieceSent,
    piece_bytes_max: u64,
    wrong: &mut Vec<String>,
) {
    let unit = DRIVE_CHUNK_ALIGN_BYTES;
    let end = p.first_byte.saturating_add(p.len_bytes);
    let piece = format!("piece [{}, {end})", p.first_byte);
    if p.first_byte != t.committed_bytes {
        wrong.push(format!(
            "{piece} does not start at the committed offset {}",
            t.committed_bytes
        ));
    }
    let run = g.run_bytes(t.committed_bytes, &t.buffered, piece_bytes_max);
    if p.len_bytes != run || run == 0 {
        wrong.push(format!(
            "{piece} is {} bytes; the contiguous buffered run from {} is {run} (chunks {}, piece_bytes_max {piece_bytes_max})",
            p.len_bytes, t.committed_bytes, shown(&t.buffered.iter().copied().collect::<Vec<_>>())
        ));
    }
    if p.frames_bytes != p.len_bytes {
        wrong.push(format!("{piece}: its frames hold {} bytes", p.frames_bytes));
    }
    if !p.first_byte.is_multiple_of(unit)
        || (!p.len_bytes.is_multiple_of(unit) && end != g.file_size_bytes)
    {
        wrong.push(format!(
            "{piece} is not {unit}-byte aligned and does not end the file ({} bytes)",
            g.file_size_bytes
        ));
    }
    let last_start =
        (u64::from(g.chunk_of(end.saturating_sub(1))) * g.chunk_size_bytes).max(p.first_byte);
    if p.len_bytes > piece_bytes_max && last_start - p.first_byte >= piece_bytes_max {
        wrong.push(format!(
            "{piece} passes piece_bytes_max {piece_bytes_max} before its last chunk"
        ));
    }
}

/// The model attached to a running backend: judges each hook, keeps what
/// it finds for the step loop.
pub struct WindowModel {
    windows: Mutex<Windows>,
    findings: Findings,
    /// The drive's model, for what the backend believes of it.
    ranges: Option<Arc<DriveRanges>>,
}

impl WindowModel {
    /// A model of one backend boot (see [`Windows::new`]); what it finds
    /// goes to `findings`; what the backend believes of the drive is
    /// checked against `ranges`.
    pub fn new(
        windows: Windows,
        findings: Findings,
        ranges: Option<Arc<DriveRanges>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            windows: Mutex::new(windows),
            findings,
            ranges,
        })
    }

    fn windows(&self) -> std::sync::MutexGuard<'_, Windows> {
        self.windows.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn flag(&self, upload: &str, wrong: Vec<String>) {
        for w in wrong {
            self.findings.push(format!("upload {upload}: {w}"));
        }
    }

    /// Every upload's state at a simulation step, from the backend's
    /// gauge: compared where it may have changed (see the module docs),
    /// and its committed offset against the drive's books where either
    /// moved.
    pub fn step(&self, gauge: &BufferGauge) {
        let mut windows = self.windows();
        let books_moved = windows.begin_step(self.ranges.as_ref().map(|r| r.changes()));
        gauge.visit_windows(|upload, changes, view| {
            let due = windows.due(upload, changes);
            if !due && !books_moved {
                return;
            }
            let view = view();
            if due {
                for w in windows.compare_at_step(&view, Some(changes)) {
                    self.findings.push(w);
                }
            }
            self.check_held(&view);
        });
        windows.end_step();
    }

    /// The upload's committed offset is not past what its drive session
    /// holds.
    fn check_held(&self, v: &WindowView) {
        let (Some(ranges), Some(session)) = (&self.ranges, &v.session) else {
            return;
        };
        let holds = ranges.holds_at_most(session);
        if v.committed_bytes > holds {
            ranges.flag(format!("upload {}: committed offset {} bytes, past the {holds} bytes its drive session {session} holds", v.upload, v.committed_bytes));
        }
    }
}

impl WindowObserver for WindowModel {
    fn chunk_decided(
        &self,
        upload: Observed<'_>,
        index: u32,
        stage: ChunkStage,
        verdict: ChunkVerdict,
    ) {
        let view = upload.view();
        let wrong = self.windows().chunk(&view, index, stage, verdict);
        self.flag(&view.upload, wrong);
    }

    fn tus_published(&self, upload: Observed<'_>, published: Range<u32>) {
        let view = upload.view();
        let wrong = self.windows().tus_published(&view, published);
        self.flag(&view.upload, wrong);
    }

    fn piece_sent(&self, upload: Observed<'_>, piece: PieceSent) {
        let view = upload.view();
        let wrong = self.windows().piece(&view, piece);
        self.flag(&view.upload, wrong);
    }

    fn drive_answered(&self, upload: Observed<'_>, answer: DriveAnswer) {
        let view = upload.view();
        let wrong = self.windows().answer(&view, answer);
        self.flag(&view.upload, wrong);
        let held = match answer {
            DriveAnswer::Held { held_bytes } => held_bytes,
            DriveAnswer::Complete { size_bytes } => size_bytes,
            DriveAnswer::Failed => return,
        };
        if let (Some(ranges), Some(session)) = (&self.ranges, &view.session) {
            ranges.believed(&view.upload, session, held);
        }
    }
}

#[cfg(test)]
mod tests;
