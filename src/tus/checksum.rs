//! tus's checksum extension: `Upload-Checksum: <algorithm> <base64>`
//! names the digest of one PATCH body; the server digests the body as it
//! arrives ([`BodyDigest`]) and keeps nothing of it unless they match.
//! Algorithms: sha1 (which the protocol requires), md5 and crc32 (IEEE,
//! four bytes big-endian, as tusd computes it), each from a well-kept crate.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use md5::Digest as _;

/// The checksum algorithms served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChecksumAlgorithm {
    /// SHA-1 (RustCrypto's `sha1`), 20 bytes.
    Sha1,
    /// MD5 (RustCrypto's `md-5`), 16 bytes.
    Md5,
    /// CRC-32/IEEE (`crc32fast`), 4 bytes big-endian.
    Crc32,
}

impl ChecksumAlgorithm {
    /// The algorithm's tus name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Sha1 => "sha1",
            Self::Md5 => "md5",
            Self::Crc32 => "crc32",
        }
    }

    /// The digest's length in bytes.
    pub const fn digest_bytes(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Md5 => 16,
            Self::Crc32 => 4,
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        [Self::Sha1, Self::Md5, Self::Crc32]
            .into_iter()
            .find(|a| a.name() == name)
    }
}

/// Why an `Upload-Checksum` was refused (400 either way; nothing of the
/// body is kept).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChecksumError {
    /// Not `<algorithm> <base64>`, or a digest of the wrong length.
    #[error("Upload-Checksum must be `<algorithm> <base64 digest>` with a {expected}-byte digest for {algorithm}; got {value:?}")]
    Malformed {
        /// The header's value, lossily as text (at most 128 bytes of it).
        value: String,
        /// The algorithm named, if one was recognised.
        algorithm: &'static str,
        /// The digest length it needs (0 when the algorithm is unknown).
        expected: usize,
    },
    /// An algorithm this server does not support.
    #[error("Upload-Checksum names {algorithm:?}; this server supports sha1, md5 and crc32")]
    Unsupported {
        /// The name given (at most 32 bytes of it).
        algorithm: String,
    },
}

/// A parsed `Upload-Checksum`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadChecksum {
    /// Its algorithm.
    pub algorithm: ChecksumAlgorithm,
    /// The digest the client computed.
    pub digest: Vec<u8>,
}

/// Clips `text` to at most `max` bytes at a char boundary, for messages
/// about values a peer chose.
fn clipped(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

impl UploadChecksum {
    /// Parses a header value.
    ///
    /// # Errors
    /// [`ChecksumError::Unsupported`] for an unknown algorithm (checked
    /// first: the protocol answers it with its own 400),
    /// [`ChecksumError::Malformed`] for anything else wrong.
    pub fn parse(value: &[u8]) -> Result<Self, ChecksumError> {
        let text = String::from_utf8_lossy(value);
        let malformed = |algorithm: &'static str, expected: usize| ChecksumError::Malformed {
            value: clipped(&text, 128),
            algorithm,
            expected,
        };
        let Some((name, encoded)) = text.split_once(' ') else {
            return Err(malformed("none", 0));
        };
        let algorithm =
            ChecksumAlgorithm::from_name(name).ok_or_else(|| ChecksumError::Unsupported {
                algorithm: clipped(name, 32),
            })?;
        let expected = algorithm.digest_bytes();
        let digest = STANDARD
            .decode(encoded)
            .map_err(|_| malformed(algorithm.name(), expected))?;
        if digest.len() != expected {
            return Err(malformed(algorithm.name(), expected));
        }
        Ok(Self { algorithm, digest })
    }
}

/// The digest of a body as it arrives, in one of the algorithms.
#[derive(Clone)]
pub enum BodyDigest {
    /// SHA-1.
    Sha1(sha1::Sha1),
    /// MD5.
    Md5(md5::Md5),
    /// CRC-32/IEEE.
    Crc32(crc32fast::Hasher),
}

impl BodyDigest {
    /// An empty digest in `algorithm`.
    pub fn new(algorithm: ChecksumAlgorithm) -> Self {
        match algorithm {
            ChecksumAlgorithm::Sha1 => Self::Sha1(sha1::Sha1::new()),
            ChecksumAlgorithm::Md5 => Self::Md5(md5::Md5::new()),
            ChecksumAlgorithm::Crc32 => Self::Crc32(crc32fast::Hasher::new()),
        }
    }

    /// Digests `bytes` after what came before.
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Self::Sha1(h) => h.update(bytes),
            Self::Md5(h) => h.update(bytes),
            Self::Crc32(h) => h.update(bytes),
        }
    }

    /// The digest of everything given.
    pub fn finish(self) -> Vec<u8> {
        match self {
            Self::Sha1(h) => h.finalize().to_vec(),
            Self::Md5(h) => h.finalize().to_vec(),
            Self::Crc32(h) => h.finalize().to_be_bytes().to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(algorithm: ChecksumAlgorithm, bytes: &[u8]) -> String {
        let mut d = BodyDigest::new(algorithm);
        // In two parts, as a body arrives.
        let (a, b) = bytes.split_at(bytes.len() / 2);
        d.update(a);
        d.update(b);
        STANDARD.encode(d.finish())
    }

    /// The protocol's own example (`hello world`, sha1), and the same
    /// bytes' md5 and crc32 as `openssl`/`cksum`-style tools compute them.
    #[test]
    fn digests_match_known_values() {
        assert_eq!(
            digest(ChecksumAlgorithm::Sha1, b"hello world"),
            "Kq5sNclPz7QV2+lfQIuc6R7oRu0="
        );
        // md5("hello world") = 5eb63bbbe01eeed093cb22bb8f5acdc3.
        assert_eq!(
            digest(ChecksumAlgorithm::Md5, b"hello world"),
            "XrY7u+Ae7tCTyyK7j1rNww=="
        );
        // crc32("hello world") = 0x0d4a1185.
        assert_eq!(digest(ChecksumAlgorithm::Crc32, b"hello world"), "DUoRhQ==");
    }

    #[test]
    fn parsing_checks_algorithm_then_digest() {
        let ok = UploadChecksum::parse(b"sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=").expect("valid");
        assert_eq!(ok.algorithm, ChecksumAlgorithm::Sha1);
        assert_eq!(ok.digest.len(), 20);
        assert_eq!(
            UploadChecksum::parse(b"sha256 AAAA"),
            Err(ChecksumError::Unsupported {
                algorithm: "sha256".into()
            })
        );
        for bad in [
            &b"sha1"[..],
            b"sha1 !!!!",
            b"sha1 DUoRhQ==",
            b"crc32 Kq5sNclPz7QV2+lfQIuc6R7oRu0=",
            b"",
        ] {
            assert!(
                matches!(
                    UploadChecksum::parse(bad),
                    Err(ChecksumError::Malformed { .. })
                ),
                "{bad:?}"
            );
        }
    }
}
