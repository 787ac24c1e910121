//! A tus upload's tail, and where its offset stands.
//!
//! # Implementation Details
//!
//! A tus PATCH is a contiguous run of bytes at the upload's offset, cut
//! wherever the client likes; the reorder window holds whole chunks (the
//! committer sends whole chunks, so every piece but the last is a multiple
//! of 256 KiB). The bytes of a PATCH therefore go first into the upload's
//! *tail*, and each chunk the tail completes is *published* into the
//! window, where the committer finds it. The tail starts where the
//! window's whole chunks end ([`Upload::tail_start`]); it holds less than
//! a chunk of verified bytes between PATCHes (the chunk a PATCH ended
//! inside), plus, while a checksummed PATCH arrives, that PATCH's bytes,
//! *unverified*: counted in memory, never published, never part of the
//! offset, and dropped unless the checksum matches.
//!
//! The upload's tus offset ([`Upload::tus_offset`]) is the end of its
//! verified bytes: on the drive, in the window or in the tail. A HEAD
//! reads it under the upload's lock, so it never counts half a frame or
//! an unverified byte.
//!
//! Invariants (asserted by [`Upload::publish`] and the window's own
//! assertion, `assert_buffered_within_window`, which counts the tail):
//! - for a tus upload the window's chunks are contiguous from the chunk
//!   holding the committed offset, and the tail starts at a chunk boundary
//!   (or the file's end) right after them;
//! - every byte held lies below the window's end (`(head + window_chunks)
//!   × chunk size`, at most the file size), so window and tail together
//!   hold at most `window_chunks × chunk size`: the upload's reservation;
//! - unverified bytes come after every verified byte of the tail.

use super::super::upload::{Chunk, Upload, UploadState};
use bytes::Bytes;
use std::collections::VecDeque;
use std::ops::Range;

/// A tus upload's bytes past the window's whole chunks.
#[derive(Debug, Default)]
pub(crate) struct Tail {
    frames: VecDeque<Bytes>,
    /// Total length of `frames`.
    len_bytes: u64,
    /// Of `len_bytes`, the last ones: a checksummed PATCH's, until
    /// verified.
    unverified_bytes: u64,
}

impl Tail {
    /// Bytes held.
    pub fn len_bytes(&self) -> u64 {
        self.len_bytes
    }

    /// Bytes held that count towards the offset.
    pub fn verified_bytes(&self) -> u64 {
        self.len_bytes - self.unverified_bytes
    }

    /// Appends `data`: unverified if `provisional` (a checksummed PATCH's),
    /// else verified.
    ///
    /// # Panics
    /// If verified bytes would follow unverified ones (one PATCH at a time
    /// holds the upload).
    pub fn push(&mut self, data: Bytes, provisional: bool) {
        assert!(
            provisional || self.unverified_bytes == 0,
            "Tail::push: verified bytes after unverified ones"
        );
        let len = data.len() as u64;
        if len == 0 {
            return;
        }
        self.len_bytes += len;
        if provisional {
            self.unverified_bytes += len;
        }
        self.frames.push_back(data);
    }

    /// The checksum matched: the unverified bytes count from now on.
    pub fn confirm(&mut self) {
        self.unverified_bytes = 0;
    }

    /// Drops the unverified bytes (a checksum mismatch, or a checksummed
    /// PATCH that did not finish): nothing of them is kept.
    pub fn discard_unverified(&mut self) {
        let mut keep = self.verified_bytes();
        let mut kept = VecDeque::with_capacity(self.frames.len());
        for frame in self.frames.drain(..) {
            if keep == 0 {
                break;
            }
            let len = frame.len() as u64;
            if len <= keep {
                keep -= len;
                kept.push_back(frame);
            } else {
                // `keep` < len ≤ usize::MAX.
                kept.push_back(frame.slice(..keep as usize));
                keep = 0;
            }
        }
        self.frames = kept;
        self.len_bytes -= self.unverified_bytes;
        self.unverified_bytes = 0;
    }

    /// Takes the first `n` verified bytes off the front, as frames (slices
    /// of the request's, never copied).
    ///
    /// # Panics
    /// If fewer than `n` verified bytes are held.
    fn take_front(&mut self, n: u64) -> Vec<Bytes> {
        assert!(
            n <= self.verified_bytes(),
            "Tail::take_front: {n} bytes asked, {} verified",
            self.verified_bytes()
        );
        self.split_front(n)
    }

    /// Drops the first `n` bytes (all of them if fewer are held): the
    /// drive holds them already. Verified bytes go first; unverified ones
    /// dropped stay counted as such until their PATCH ends.
    pub fn skip_front(&mut self, n: u64) {
        let n = n.min(self.len_bytes);
        let verified = self.verified_bytes();
        self.split_front(n);
        self.unverified_bytes -= n.saturating_sub(verified);
    }

    /// Removes the first `n` bytes (`n` ≤ the bytes held) and returns them
    /// as frames, splitting the last one if it straddles `n`.
    fn split_front(&mut self, n: u64) -> Vec<Bytes> {
        let mut frames = Vec::new();
        let mut left = n;
        while left > 0 {
            let Some(mut frame) = self.frames.pop_front() else {
                break;
            };
            if frame.len() as u64 > left {
                // `left` < len ≤ usize::MAX.
                let rest = frame.split_off(left as usize);
                self.frames.push_front(rest);
            }
            left -= frame.len() as u64;
            frames.push(frame);
        }
        self.len_bytes -= n;
        frames
    }

    /// The frames held, in order.
    pub fn frames(&self) -> impl Iterator<Item = &Bytes> {
        self.frames.iter()
    }

    /// Drops everything.
    pub fn clear(&mut self) {
        *self = Self::default();
    }
}

impl Upload {
    /// Where the tail starts: right after the window's whole chunks, or at
    /// the chunk holding the committed offset when the window is empty (a
    /// resumed upload whose drive holds part of a chunk gets that chunk
    /// again, whole), or at the file's end.
    pub(crate) fn tail_start(&self, state: &UploadState) -> u64 {
        let chunk_start = |index: u32| u64::from(index) * self.chunk_size_bytes;
        let start = match state.window.last_key_value() {
            Some((&last, _)) => chunk_start(last.saturating_add(1)),
            None if state.committed_bytes >= self.file_size_bytes => self.file_size_bytes,
            None => chunk_start(self.chunk_of(state.committed_bytes)),
        };
        start.min(self.file_size_bytes)
    }

    /// The upload's tus offset: the end of its verified bytes.
    pub(crate) fn tus_offset(&self, state: &UploadState) -> u64 {
        self.tail_start(state) + state.tail.verified_bytes()
    }

    /// Where the next byte of a PATCH goes: after every byte held,
    /// unverified ones included.
    pub(crate) fn tail_end(&self, state: &UploadState) -> u64 {
        self.tail_start(state) + state.tail.len_bytes()
    }

    /// The end of the room the window gives now: no byte at or past it
    /// may be held (`min((head + window_chunks) × chunk size, file size)`).
    pub(crate) fn room_end(&self, state: &UploadState) -> u64 {
        let (_, end) = self.window_bounds(state);
        (u64::from(end) * self.chunk_size_bytes).min(self.file_size_bytes)
    }

    /// The most room the window can ever give the tail as it stands: what
    /// it gives once every published chunk is on the drive. A checksummed
    /// PATCH must end within it, since none of its bytes are published
    /// before the last one arrives.
    pub(crate) fn room_end_reachable(&self, state: &UploadState) -> u64 {
        let head = self.chunk_of(self.tail_start(state));
        let end = head
            .saturating_add(self.window_chunks)
            .min(self.chunk_count);
        (u64::from(end) * self.chunk_size_bytes).min(self.file_size_bytes)
    }

    /// Moves every chunk the tail's verified bytes complete into the
    /// window; the chunks that moved (contiguous, ascending; the committer
    /// has work unless empty), for the window's observer.
    pub(crate) fn publish_tail(&self, state: &mut UploadState) -> Range<u32> {
        let mut published: Option<Range<u32>> = None;
        loop {
            let start = self.tail_start(state);
            if start >= self.file_size_bytes {
                break;
            }
            let index = self.chunk_of(start);
            let len = self.chunk_len(index);
            // Paired with `tail_start`: the tail begins at a chunk
            // boundary, right after the window's last chunk.
            assert_eq!(start, u64::from(index) * self.chunk_size_bytes);
            assert!(state
                .window
                .last_key_value()
                .is_none_or(|(&k, _)| k + 1 == index));
            if state.tail.verified_bytes() < len {
                break;
            }
            let frames = state.tail.take_front(len);
            state.window.insert(index, Chunk { frames });
            let first = published.map_or(index, |p| p.start);
            published = Some(first..index + 1);
        }
        if published.is_some() {
            self.assert_buffered_within_window(state);
        }
        published.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(tail: &mut Tail, n: u64) -> Vec<u8> {
        tail.take_front(n).concat()
    }

    #[test]
    fn frames_are_split_where_a_chunk_ends_and_kept_in_order() {
        let mut tail = Tail::default();
        tail.push(Bytes::from_static(b"abc"), false);
        tail.push(Bytes::from_static(b"defg"), false);
        assert_eq!(tail.len_bytes(), 7);
        assert_eq!(bytes(&mut tail, 5), b"abcde");
        assert_eq!(tail.len_bytes(), 2);
        assert_eq!(bytes(&mut tail, 2), b"fg");
        assert_eq!(tail.len_bytes(), 0);
    }

    #[test]
    fn unverified_bytes_are_dropped_or_confirmed_whole() {
        let mut tail = Tail::default();
        tail.push(Bytes::from_static(b"ab"), false);
        tail.push(Bytes::from_static(b"cd"), true);
        tail.push(Bytes::from_static(b"ef"), true);
        assert_eq!((tail.len_bytes(), tail.verified_bytes()), (6, 2));
        tail.discard_unverified();
        assert_eq!((tail.len_bytes(), tail.verified_bytes()), (2, 2));
        tail.push(Bytes::from_static(b"xy"), true);
        tail.confirm();
        assert_eq!((tail.len_bytes(), tail.verified_bytes()), (4, 4));
        assert_eq!(bytes(&mut tail, 4), b"abxy");
    }

    #[test]
    fn a_mismatch_inside_a_frame_keeps_exactly_the_verified_prefix() {
        let mut tail = Tail::default();
        tail.push(Bytes::from_static(b"abc"), false);
        tail.push(Bytes::from_static(b"def"), true);
        tail.discard_unverified();
        assert_eq!(tail.verified_bytes(), 3);
        assert_eq!(bytes(&mut tail, 3), b"abc");
    }

    /// This is a regression test that ensures bytes the drive already
    /// holds leave the tail from its front, verified ones first, so what
    /// stays keeps its place in the file.
    #[test]
    fn skipped_bytes_leave_from_the_front() {
        let mut tail = Tail::default();
        tail.push(Bytes::from_static(b"abc"), false);
        tail.push(Bytes::from_static(b"def"), true);
        tail.skip_front(2);
        assert_eq!((tail.len_bytes(), tail.verified_bytes()), (4, 1));
        tail.skip_front(2);
        assert_eq!((tail.len_bytes(), tail.verified_bytes()), (2, 0));
        tail.confirm();
        assert_eq!(bytes(&mut tail, 2), b"ef");
        tail.push(Bytes::from_static(b"xyz"), false);
        tail.skip_front(10);
        assert_eq!((tail.len_bytes(), tail.verified_bytes()), (0, 0));
    }

    #[test]
    #[should_panic(expected = "verified bytes after unverified ones")]
    fn verified_bytes_never_follow_unverified_ones() {
        let mut tail = Tail::default();
        tail.push(Bytes::from_static(b"a"), true);
        tail.push(Bytes::from_static(b"b"), false);
    }

    #[test]
    #[should_panic(expected = "2 bytes asked, 1 verified")]
    fn unverified_bytes_are_never_taken() {
        let mut tail = Tail::default();
        tail.push(Bytes::from_static(b"a"), false);
        tail.push(Bytes::from_static(b"b"), true);
        tail.take_front(2);
    }
}
