//! Checksums: CRC-32C per chunk (what Google Cloud Storage uses on the wire)
//! and, for whole files, CRC-64/NVME (both near memory speed, `crc-fast`)
//! or MD5 (what Google Drive reports, [`Md5Digest`]); [`FileDigestKind`]
//! names which whole-file digest a check uses.
//!
//! The wire form of a chunk checksum is eight lowercase hex digits; parsing
//! rejects anything else with a typed error.

mod md5;

pub use md5::{BadMd5State, Md5Digest, STATE_HEX_DIGITS as MD5_STATE_HEX_DIGITS};

use crc_fast::{CrcAlgorithm, Digest};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Which whole-file digest the backend checks against the drive's file
/// resource, and asks the drive for (`fields=`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum FileDigestKind {
    /// CRC-64/NVME, the emulator's own `crc64nvme` field (real Drive has
    /// none): near memory speed, so what simulation checks. The default.
    #[default]
    #[value(name = "crc64nvme")]
    #[serde(rename = "crc64nvme")]
    Crc64Nvme,
    /// MD5, Drive's `md5Checksum`: what real Google Drive reports, so what
    /// `upsim serve` checks unless told otherwise.
    #[value(name = "md5")]
    Md5,
}

impl FileDigestKind {
    /// The file resource's field that carries this digest.
    pub fn field_name(self) -> &'static str {
        match self {
            Self::Crc64Nvme => "crc64nvme",
            Self::Md5 => "md5Checksum",
        }
    }

    /// Lowercase hex digits in the digest's wire form.
    pub fn hex_digits(self) -> usize {
        match self {
            Self::Crc64Nvme => 16,
            Self::Md5 => 32,
        }
    }
}

impl fmt::Display for FileDigestKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Crc64Nvme => "CRC-64/NVME",
            Self::Md5 => "MD5",
        })
    }
}

/// Whether `text` is exactly `digits` lowercase hex digits (the wire form
/// of every digest here).
pub fn is_lower_hex(text: &str, digits: usize) -> bool {
    text.len() == digits
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// CRC-32C (Castagnoli) of one buffer.
pub fn crc32c(bytes: &[u8]) -> u32 {
    // The algorithm is 32 bits wide: the result always fits.
    crc_fast::checksum(CrcAlgorithm::Crc32Iscsi, bytes) as u32
}

/// Streaming CRC-32C.
#[derive(Clone)]
pub struct Crc32c(Digest);

impl Default for Crc32c {
    fn default() -> Self {
        Self(Digest::new(CrcAlgorithm::Crc32Iscsi))
    }
}

impl Crc32c {
    /// Feeds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    /// The checksum of everything fed so far.
    pub fn value(&self) -> u32 {
        self.0.finalize() as u32
    }
}

/// Streaming whole-file digest (CRC-64/NVME), with the byte count it covers.
#[derive(Clone)]
pub struct FileDigest {
    digest: Digest,
    len_bytes: u64,
}

impl Default for FileDigest {
    fn default() -> Self {
        Self {
            digest: Digest::new(CrcAlgorithm::Crc64Nvme),
            len_bytes: 0,
        }
    }
}

/// CRC-64/NVME's final XOR (and initial value): the running state after a
/// prefix is the prefix's CRC with this XOR undone.
const CRC64_NVME_XOROUT: u64 = u64::MAX;

impl FileDigest {
    /// Carries on from a prefix of `len_bytes` bytes whose CRC-64/NVME is
    /// `prefix_crc`: feeding the rest gives the whole's digest, with no
    /// matrix combine (`crc_fast::checksum_combine` costs a 64×64 GF(2)
    /// matrix squaring per bit of the length, which showed in profiles).
    pub fn resume(prefix_crc: u64, len_bytes: u64) -> Self {
        Self {
            digest: Digest::new_with_init_state(
                CrcAlgorithm::Crc64Nvme,
                prefix_crc ^ CRC64_NVME_XOROUT,
            ),
            len_bytes,
        }
    }

    /// Feeds the next bytes of the file.
    pub fn update(&mut self, bytes: &[u8]) {
        self.digest.update(bytes);
        self.len_bytes += bytes.len() as u64;
    }
    /// Bytes fed so far.
    pub fn len_bytes(&self) -> u64 {
        self.len_bytes
    }
    /// The digest of everything fed so far.
    pub fn value(&self) -> u64 {
        self.digest.finalize()
    }
    /// The wire form: sixteen lowercase hex digits.
    pub fn hex(&self) -> String {
        format!("{:016x}", self.value())
    }
}

/// A chunk checksum that did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("checksum {given:?} is not 8 lowercase hex digits (CRC-32C)")]
pub struct BadChecksum {
    /// What was sent, cut to 64 characters.
    pub given: String,
}

/// Formats a CRC-32C for the wire.
pub fn crc32c_hex(value: u32) -> String {
    format!("{value:08x}")
}

/// Parses the wire form of a CRC-32C.
pub fn parse_crc32c_hex(text: &str) -> Result<u32, BadChecksum> {
    if !is_lower_hex(text, 8) {
        return Err(BadChecksum {
            given: text.chars().take(64).collect(),
        });
    }
    u32::from_str_radix(text, 16).map_err(|_| BadChecksum {
        given: text.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        // The CRC catalogue's check value for CRC-32/ISCSI over "123456789".
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        let mut s = Crc32c::default();
        s.update(b"12345");
        s.update(b"6789");
        assert_eq!(s.value(), 0xe306_9283);
    }

    #[test]
    fn file_digest_is_streaming() {
        let mut whole = FileDigest::default();
        whole.update(b"hello world");
        let mut parts = FileDigest::default();
        parts.update(b"hello ");
        parts.update(b"world");
        assert_eq!(whole.value(), parts.value());
        assert_eq!(parts.len_bytes(), 11);
        assert_eq!(whole.hex().len(), 16);
    }

    #[test]
    fn a_resumed_digest_equals_the_whole_and_the_combined() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        let mut whole = FileDigest::default();
        whole.update(&data);
        for cut in [0, 1, 255, 262_144, 299_999, 300_000] {
            let mut prefix = FileDigest::default();
            prefix.update(&data[..cut]);
            let mut resumed = FileDigest::resume(prefix.value(), prefix.len_bytes());
            resumed.update(&data[cut..]);
            assert_eq!(resumed.value(), whole.value(), "cut at {cut}");
            assert_eq!(resumed.len_bytes(), 300_000);
            let rest = crc_fast::checksum(CrcAlgorithm::Crc64Nvme, &data[cut..]);
            let combined = crc_fast::checksum_combine(
                CrcAlgorithm::Crc64Nvme,
                prefix.value(),
                rest,
                (data.len() - cut) as u64,
            );
            assert_eq!(resumed.value(), combined, "cut at {cut}");
        }
    }

    #[test]
    fn checksum_wire_form_round_trips_and_rejects_junk() {
        assert_eq!(parse_crc32c_hex(&crc32c_hex(0xe306_9283)), Ok(0xe306_9283));
        for junk in [
            "",
            "E3069283",
            "e30692831",
            "e306928",
            "zzzzzzzz",
            "+3069283",
        ] {
            assert!(parse_crc32c_hex(junk).is_err(), "{junk:?} accepted");
        }
    }
}
