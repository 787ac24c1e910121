//! Upload sources: where a client's bytes come from.
//!
//! [`ChunkSource`] is what the client reads chunks from: a real file, or a
//! [`Payload`] — a seeded generator addressable by offset, so a simulated
//! 3.38 GB upload never holds the file, and any chunk can be regenerated
//! (for a retry, a resume, or the oracle) at memory speed.
//!
//! Payload content: a 64 KiB block of words drawn from the seed, XORed
//! with a per-block key derived from the seed and the block's index. So the
//! content is cheap (one XOR per word, vectorised), different in every
//! 64 KiB block (a chunk sent to the wrong offset changes the file's
//! checksum), and the same for the same seed on every machine.

use crate::checksum::{FileDigest, Md5Digest};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Something a client can upload.
pub trait ChunkSource: Send + Sync + 'static {
    /// Total size.
    fn size_bytes(&self) -> u64;
    /// Fills `buf` with the bytes at `offset`. The range must lie within
    /// the source.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// A name for the drive's file resource.
    fn name(&self) -> String;
}

/// Words in the seeded block: 64 KiB.
const BLOCK_WORDS: usize = 8 * 1024;
const BLOCK_BYTES: u64 = (BLOCK_WORDS * 8) as u64;

/// splitmix64: a good 64-bit mixer, used to derive the block and the keys.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A generated payload: `size_bytes` of seeded content.
#[derive(Clone)]
pub struct Payload {
    seed: u64,
    size_bytes: u64,
    block: Arc<[u64]>,
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Payload")
            .field("seed", &self.seed)
            .field("size_bytes", &self.size_bytes)
            .finish()
    }
}

impl Payload {
    /// `size_bytes` of content derived from `seed`.
    pub fn new(seed: u64, size_bytes: u64) -> Self {
        let block: Arc<[u64]> = (0..BLOCK_WORDS as u64)
            .map(|i| mix(seed ^ mix(i)))
            .collect();
        Self {
            seed,
            size_bytes,
            block,
        }
    }

    /// The key of 64 KiB block `index`.
    fn key(&self, index: u64) -> u64 {
        mix(self.seed.rotate_left(17) ^ index)
    }

    /// Fills `buf` with the content at `offset` (may run past the end: the
    /// generator is defined for every offset; [`ChunkSource::read_at`]
    /// checks bounds).
    pub fn fill(&self, offset: u64, buf: &mut [u8]) {
        let mut pos = offset;
        let mut out = buf;
        while !out.is_empty() {
            let block_index = pos / BLOCK_BYTES;
            let in_block = pos % BLOCK_BYTES;
            let key = self.key(block_index);
            let take = out.len().min((BLOCK_BYTES - in_block) as usize);
            let (head, rest) = out.split_at_mut(take);
            if in_block.is_multiple_of(8) && take.is_multiple_of(8) {
                // Fast path: whole words.
                let first_word = (in_block / 8) as usize;
                let words = &self.block[first_word..first_word + take / 8];
                for (dst, w) in head.chunks_exact_mut(8).zip(words) {
                    dst.copy_from_slice(&(w ^ key).to_le_bytes());
                }
            } else {
                for (i, dst) in head.iter_mut().enumerate() {
                    let at = in_block + i as u64;
                    let word = self.block[(at / 8) as usize] ^ key;
                    *dst = word.to_le_bytes()[(at % 8) as usize];
                }
            }
            pos += take as u64;
            out = rest;
        }
    }

    /// The payload's size.
    pub fn size_bytes_total(&self) -> u64 {
        self.size_bytes
    }

    /// The whole-file digest, computed by generating the file once in
    /// buffers of `buffer_bytes` (nothing else is held).
    pub fn digest(&self, buffer_bytes: usize) -> FileDigest {
        let mut digest = FileDigest::default();
        let mut buf = vec![0u8; self.buffer_len(buffer_bytes)];
        let mut offset = 0u64;
        while offset < self.size_bytes {
            let len = (self.size_bytes - offset).min(buf.len() as u64) as usize;
            self.fill(offset, &mut buf[..len]);
            digest.update(&buf[..len]);
            offset += len as u64;
        }
        digest
    }

    /// A digest's buffer: `buffer_bytes`, but never more than the payload
    /// (a crowd run digests 73 files of 64 KiB–3 MiB; zeroing an 8 MiB
    /// buffer for each was a fifth of the run), at least one word.
    fn buffer_len(&self, buffer_bytes: usize) -> usize {
        let size = usize::try_from(self.size_bytes).unwrap_or(usize::MAX);
        buffer_bytes.min(size).max(8)
    }

    /// The MD5 of the whole payload (Drive's `md5Checksum`), computed
    /// `buffer_bytes` at a time.
    pub fn md5(&self, buffer_bytes: usize) -> Md5Digest {
        let mut digest = Md5Digest::default();
        let mut buf = vec![0u8; self.buffer_len(buffer_bytes)];
        let mut offset = 0u64;
        while offset < self.size_bytes {
            let len = (self.size_bytes - offset).min(buf.len() as u64) as usize;
            self.fill(offset, &mut buf[..len]);
            digest.update(&buf[..len]);
            offset += len as u64;
        }
        digest
    }
}

/// A read of `len` bytes at `offset` stays within `size_bytes`, or an
/// `InvalidInput` error that says by how much it does not.
fn within(offset: u64, len: usize, size_bytes: u64) -> io::Result<()> {
    if offset
        .checked_add(len as u64)
        .is_none_or(|end| end > size_bytes)
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("read of {len} bytes at {offset} runs past the end ({size_bytes} bytes)"),
        ));
    }
    Ok(())
}

impl ChunkSource for Payload {
    fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        within(offset, buf.len(), self.size_bytes)?;
        self.fill(offset, buf);
        Ok(())
    }

    fn name(&self) -> String {
        format!("payload-{:016x}-{}.bin", self.seed, self.size_bytes)
    }
}

/// A file on disk, read with positioned reads (no shared cursor).
pub struct FileSource {
    path: PathBuf,
    file: File,
    size_bytes: u64,
}

impl FileSource {
    /// Opens `path`.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        let size_bytes = file.metadata()?.len();
        Ok(Self {
            path: path.to_owned(),
            file,
            size_bytes,
        })
    }
}

impl ChunkSource for FileSource {
    fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        within(offset, buf.len(), self.size_bytes)?;
        self.file.read_exact_at(buf, offset)
    }

    fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "upload.bin".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_addressable_by_offset() {
        let p = Payload::new(7, 1 << 20);
        let mut whole = vec![0u8; 1 << 20];
        p.fill(0, &mut whole);
        // Any sub-range, aligned or not, equals the same bytes of the whole.
        for (offset, len) in [
            (0usize, 8usize),
            (3, 5),
            (65_530, 20),
            (131_072, 65_536),
            (1_000_001, 999),
        ] {
            let mut part = vec![0u8; len];
            p.fill(offset as u64, &mut part);
            assert_eq!(
                part,
                whole[offset..offset + len],
                "offset {offset} len {len}"
            );
        }
    }

    #[test]
    fn blocks_differ_and_seeds_differ() {
        let p = Payload::new(7, 1 << 20);
        let (mut a, mut b) = (vec![0u8; 64], vec![0u8; 64]);
        p.fill(0, &mut a);
        p.fill(BLOCK_BYTES, &mut b);
        assert_ne!(a, b, "two 64 KiB blocks with the same content");
        Payload::new(8, 1 << 20).fill(0, &mut b);
        assert_ne!(a, b);
    }

    #[test]
    fn digest_matches_a_one_shot_digest() {
        let p = Payload::new(1, 3 * BLOCK_BYTES + 5);
        let mut whole = vec![0u8; p.size_bytes() as usize];
        p.read_at(0, &mut whole).expect("in range");
        let mut d = FileDigest::default();
        d.update(&whole);
        assert_eq!(p.digest(4096).value(), d.value());
        assert_eq!(p.digest(4096).len_bytes(), p.size_bytes());
    }

    #[test]
    fn reads_past_the_end_are_refused() {
        let p = Payload::new(1, 100);
        assert!(p.read_at(96, &mut [0u8; 4]).is_ok());
        assert!(p.read_at(97, &mut [0u8; 4]).is_err());
        assert!(p.read_at(u64::MAX, &mut [0u8; 4]).is_err());
    }
}
