//! The wire forms of the Drive resumable protocol, as pure functions: the
//! `Content-Range` a client sends, the `Range` a `308` answers with, the
//! request's query, the metadata body, the file resource and the error body.
//!
//! Invariants: nothing here panics on any input (no indexing, no unchecked
//! arithmetic on peer numbers); every parser is strict (decimal digits only,
//! no signs, no whitespace inside numbers) and every refusal is a typed
//! [`ProtocolError`] that quotes what was sent, cut to [`QUOTE_CHARS_MAX`].
//! Formatting and parsing round-trip.
//!
//! - [`range`]: `Content-Range` (client) and `Range` (a `308`'s answer);
//! - [`request`]: the query string and the initiation's metadata body;
//! - [`fields`]: the `fields=` selection of a file resource's fields;
//! - [`resource`]: the file resource, ids and stored file names;
//! - [`error_body`]: Drive's JSON error body and its [`DriveReason`].

mod error_body;
mod fields;
mod range;
mod request;
mod resource;

pub use error_body::{format_error_body, parse_error_body, DriveErrorBody, DriveReason};
pub use fields::{Field, FieldSelection};
pub use range::{
    format_content_range, format_range, parse_content_range, parse_range, ContentRange,
};
pub use request::{parse_metadata, parse_upload_query, Metadata, UploadQuery};
pub use resource::{
    format_file_resource, format_id, is_id, parse_file_resource, sanitise_file_name, FileResource,
    FILE_NAME_CHARS_MAX,
};

/// The only path the emulator serves (initiation and session URIs alike).
pub const UPLOAD_PATH: &str = "/upload/drive/v3/files";

/// The `uploadType` the emulator implements.
pub const UPLOAD_TYPE_RESUMABLE: &str = "resumable";

/// The `kind` of a file resource.
pub const FILE_KIND: &str = "drive#file";

/// Longest quote of peer input kept in an error message, so that a hostile
/// header cannot blow up logs or error bodies.
pub const QUOTE_CHARS_MAX: usize = 96;

/// Longest `u64` in decimal (`18446744073709551615`). Longer digit strings
/// are refused before parsing.
const U64_DIGITS_MAX: usize = 20;

/// A wire form that did not parse, with what was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A number that is not plain decimal digits fitting a `u64`.
    #[error("{what} {given:?} is not a decimal number of at most 20 digits below 2^64")]
    BadNumber {
        /// Which field.
        what: &'static str,
        /// What was sent.
        given: String,
    },
    /// A `Content-Range` that is not `bytes first-last/total` or `bytes */total`.
    #[error("Content-Range {given:?} is not 'bytes first-last/total' or 'bytes */total'")]
    BadContentRange {
        /// What was sent.
        given: String,
    },
    /// A `Content-Range` whose first byte is after its last byte.
    #[error("Content-Range first byte {first_byte} is after last byte {last_byte}")]
    InvertedRange {
        /// First byte of the piece.
        first_byte: u64,
        /// Last byte of the piece.
        last_byte: u64,
    },
    /// A `Content-Range` whose last byte is not below the total.
    #[error("Content-Range last byte {last_byte} is not below the total of {total_bytes} bytes")]
    BeyondTotal {
        /// Last byte of the piece.
        last_byte: u64,
        /// Declared total.
        total_bytes: u64,
    },
    /// A `Content-Range` whose length does not fit a `u64` (last byte 2^64-1).
    #[error("Content-Range {first_byte}-{last_byte} is longer than 2^64-1 bytes")]
    RangeOverflow {
        /// First byte of the piece.
        first_byte: u64,
        /// Last byte of the piece.
        last_byte: u64,
    },
    /// A `Range` that is not `bytes=0-N`.
    #[error("Range {given:?} is not 'bytes=0-N'")]
    BadRange {
        /// What was sent.
        given: String,
    },
    /// A query string with a repeated parameter.
    #[error("query parameter {name:?} appears more than once")]
    RepeatedParameter {
        /// The parameter's name.
        name: String,
    },
    /// A metadata body that is not a JSON object with string fields.
    #[error("metadata is not a JSON object with string name and mimeType: {reason}")]
    BadMetadata {
        /// What serde or the check said.
        reason: String,
    },
    /// A `fields=` name that is not a field of the file resource (Drive's
    /// own words for it).
    #[error("Invalid field selection {field}")]
    InvalidFieldSelection {
        /// The name, as sent.
        field: String,
    },
    /// A file resource that does not parse or does not hold together.
    #[error("file resource is malformed: {reason}")]
    BadFileResource {
        /// What serde or the check said.
        reason: String,
    },
}

fn quote(text: &str) -> String {
    text.chars().take(QUOTE_CHARS_MAX).collect()
}

/// Parses a plain decimal `u64`: one to twenty ASCII digits, nothing else
/// (no sign, no whitespace), below 2^64.
pub fn parse_decimal_u64(what: &'static str, text: &str) -> Result<u64, ProtocolError> {
    let bad = || ProtocolError::BadNumber {
        what,
        given: quote(text),
    };
    if text.is_empty() || text.len() > U64_DIGITS_MAX || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    text.parse::<u64>().map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_numbers_are_strict() {
        assert_eq!(parse_decimal_u64("n", "0"), Ok(0));
        assert_eq!(parse_decimal_u64("n", "18446744073709551615"), Ok(u64::MAX));
        for junk in [
            "",
            "+1",
            "-1",
            " 1",
            "1 ",
            "0x10",
            "1e3",
            "18446744073709551616",
            "000000000000000000001",
            "99999999999999999999999",
            "١٢",
        ] {
            assert!(parse_decimal_u64("n", junk).is_err(), "{junk:?} accepted");
        }
    }
}
