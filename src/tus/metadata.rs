//! `Upload-Metadata`: comma-separated `key base64value` pairs, validated
//! and bounded, kept both parsed and as the client sent it (a `HEAD`
//! echoes it back verbatim, which is safe once validated: only printable
//! ASCII gets through).

use base64::engine::general_purpose::STANDARD_PAD_INDIFFERENT;
use base64::Engine;
use std::collections::BTreeMap;

/// Largest `Upload-Metadata` value taken: a file name and type, and room
/// for a few application keys (tus-js-client sends `filename`, `filetype`
/// and whatever the application adds); well under the backend's header
/// limit, so the limit answered is this one, with its numbers.
pub const METADATA_BYTES_MAX: usize = 4 * 1024;

/// Most pairs in `Upload-Metadata`.
pub const METADATA_PAIRS_MAX: usize = 32;

/// Why an `Upload-Metadata` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    /// Longer than [`METADATA_BYTES_MAX`].
    #[error("Upload-Metadata is {bytes} bytes; the limit is {bytes_max}")]
    TooLarge {
        /// Its length.
        bytes: usize,
        /// [`METADATA_BYTES_MAX`].
        bytes_max: usize,
    },
    /// More pairs than [`METADATA_PAIRS_MAX`].
    #[error("Upload-Metadata has {pairs} pairs; the limit is {pairs_max}")]
    TooManyPairs {
        /// Pairs given.
        pairs: usize,
        /// [`METADATA_PAIRS_MAX`].
        pairs_max: usize,
    },
    /// A byte outside printable ASCII.
    #[error("Upload-Metadata must be printable ASCII; byte {byte:#04x} at {at} is not")]
    NotPrintable {
        /// The byte.
        byte: u8,
        /// Where.
        at: usize,
    },
    /// An empty pair (two commas in a row, a trailing comma) or key.
    #[error("Upload-Metadata pair {index} has an empty key")]
    EmptyKey {
        /// The pair's index.
        index: usize,
    },
    /// A value that is not base64, or more than one value.
    #[error("Upload-Metadata value of {key:?} is not one base64 string")]
    BadValue {
        /// The key.
        key: String,
    },
    /// A key given twice.
    #[error("Upload-Metadata names {key:?} twice")]
    DuplicateKey {
        /// The key.
        key: String,
    },
}

/// A validated `Upload-Metadata`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// As the client sent it (printable ASCII, at most
    /// [`METADATA_BYTES_MAX`]).
    raw: String,
    /// Keys and decoded values.
    pairs: BTreeMap<String, Vec<u8>>,
}

impl Metadata {
    /// Parses and validates a header value.
    ///
    /// # Errors
    /// The first thing wrong with it, with its numbers.
    pub fn parse(value: &[u8]) -> Result<Self, MetadataError> {
        if value.len() > METADATA_BYTES_MAX {
            return Err(MetadataError::TooLarge {
                bytes: value.len(),
                bytes_max: METADATA_BYTES_MAX,
            });
        }
        if let Some(at) = value.iter().position(|b| !(b' '..=b'~').contains(b)) {
            return Err(MetadataError::NotPrintable {
                byte: value[at],
                at,
            });
        }
        // Printable ASCII, so UTF-8.
        let raw = String::from_utf8_lossy(value).into_owned();
        let elements: Vec<&str> = raw.split(',').collect();
        if elements.len() > METADATA_PAIRS_MAX {
            return Err(MetadataError::TooManyPairs {
                pairs: elements.len(),
                pairs_max: METADATA_PAIRS_MAX,
            });
        }
        let mut pairs = BTreeMap::new();
        for (index, element) in elements.iter().enumerate() {
            let (key, decoded) = pair(index, element.trim_matches(' '))?;
            if pairs.insert(key.to_owned(), decoded).is_some() {
                return Err(MetadataError::DuplicateKey { key: key.into() });
            }
        }
        Ok(Self { raw, pairs })
    }

    /// The value as the client sent it, for echoing in a header.
    pub fn as_header(&self) -> &str {
        &self.raw
    }

    /// The decoded value of `key`.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.pairs.get(key).map(Vec::as_slice)
    }

    /// The decoded value of `key`, if it is UTF-8.
    pub fn text(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Pairs held.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether no pair is held (never, once parsed: a header has one).
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

/// One `key[ value]` element.
fn pair(index: usize, element: &str) -> Result<(&str, Vec<u8>), MetadataError> {
    let (key, value) = element.split_once(' ').unwrap_or((element, ""));
    if key.is_empty() {
        return Err(MetadataError::EmptyKey { index });
    }
    let bad_value = || MetadataError::BadValue { key: key.into() };
    if value.contains(' ') {
        return Err(bad_value());
    }
    let decoded = STANDARD_PAD_INDIFFERENT
        .decode(value)
        .map_err(|_| bad_value())?;
    Ok((key, decoded))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_protocols_example_parses() {
        let m = Metadata::parse(b"filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential")
            .expect("valid");
        assert_eq!(m.text("filename"), Some("world_domination_plan.pdf"));
        assert_eq!(m.get("is_confidential"), Some(&b""[..]));
        assert_eq!(m.len(), 2);
        assert_eq!(
            m.as_header(),
            "filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential"
        );
    }

    #[test]
    fn spaces_around_pairs_are_allowed() {
        let m = Metadata::parse(b"a YQ==, b Yg").expect("valid");
        assert_eq!(m.text("a"), Some("a"));
        assert_eq!(m.text("b"), Some("b"));
    }

    #[test]
    fn every_malformation_has_its_error() {
        let err = |v: &[u8]| Metadata::parse(v).expect_err("refused");
        assert_eq!(err(b"a YQ==,,b Yg=="), MetadataError::EmptyKey { index: 1 });
        assert_eq!(err(b"a YQ==,"), MetadataError::EmptyKey { index: 1 });
        assert_eq!(err(b"a !!!"), MetadataError::BadValue { key: "a".into() });
        assert_eq!(
            err(b"a YQ== Yg=="),
            MetadataError::BadValue { key: "a".into() }
        );
        assert_eq!(
            err(b"a YQ==,a Yg=="),
            MetadataError::DuplicateKey { key: "a".into() }
        );
        assert_eq!(
            err(b"a \xff"),
            MetadataError::NotPrintable { byte: 0xff, at: 2 }
        );
        assert_eq!(
            err(b"a\tYQ=="),
            MetadataError::NotPrintable { byte: b'\t', at: 1 }
        );
    }

    #[test]
    fn limits_are_enforced_with_their_numbers() {
        let long = vec![b'k'; METADATA_BYTES_MAX + 1];
        assert_eq!(
            Metadata::parse(&long),
            Err(MetadataError::TooLarge {
                bytes: METADATA_BYTES_MAX + 1,
                bytes_max: METADATA_BYTES_MAX
            })
        );
        let at_limit = vec![b'k'; METADATA_BYTES_MAX];
        assert!(Metadata::parse(&at_limit).is_ok());
        let many: Vec<String> = (0..=METADATA_PAIRS_MAX).map(|i| format!("k{i}")).collect();
        assert_eq!(
            Metadata::parse(many.join(",").as_bytes()),
            Err(MetadataError::TooManyPairs {
                pairs: METADATA_PAIRS_MAX + 1,
                pairs_max: METADATA_PAIRS_MAX
            })
        );
        let most: Vec<String> = (0..METADATA_PAIRS_MAX).map(|i| format!("k{i}")).collect();
        assert_eq!(
            Metadata::parse(most.join(",").as_bytes()).map(|m| m.len()),
            Ok(METADATA_PAIRS_MAX)
        );
    }
}
