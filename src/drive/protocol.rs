//! The wire forms of the Drive resumable protocol, as pure functions: the
//! `Content-Range` a client sends, the `Range` a `308` answers with, the
//! request's query, the metadata body, the file resource and the error body.
//!
//! Invariants: nothing here panics on any input (no indexing, no unchecked
//! arithmetic on peer numbers); every parser is strict (decimal digits only,
//! no signs, no whitespace inside numbers) and every refusal is a typed
//! [`ProtocolError`] that quotes what was sent, cut to [`QUOTE_CHARS_MAX`].
//! Formatting and parsing round-trip.

use serde::{Deserialize, Serialize};

/// The only path the emulator serves (initiation and session URIs alike).
pub const UPLOAD_PATH: &str = "/upload/drive/v3/files";

/// The `uploadType` the emulator implements.
pub const UPLOAD_TYPE_RESUMABLE: &str = "resumable";

/// The reason Drive gives in a 403 that means "slow down" rather than "not
/// allowed"; clients treat such a 403 like a 429.
pub const RATE_LIMIT_REASON: &str = "rateLimitExceeded";

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

/// What a client's `Content-Range` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentRange {
    /// `bytes first-last/total`: a piece. `total_bytes` is `None` for `*`.
    Piece {
        /// Offset of the piece's first byte.
        first_byte: u64,
        /// Offset of the piece's last byte (inclusive).
        last_byte: u64,
        /// The file's total size, if the client knows it yet.
        total_bytes: Option<u64>,
    },
    /// `bytes */total` or `bytes */*`: a status query.
    Status {
        /// The file's total size, if the client states it.
        total_bytes: Option<u64>,
    },
}

impl ContentRange {
    /// The piece's length in bytes (`last - first + 1`); zero for a status
    /// query. Never overflows: [`parse_content_range`] refuses ranges whose
    /// length does not fit.
    pub fn len_bytes(&self) -> u64 {
        match *self {
            Self::Piece {
                first_byte,
                last_byte,
                ..
            } => last_byte
                .checked_sub(first_byte)
                .and_then(|d| d.checked_add(1))
                .unwrap_or(0),
            Self::Status { .. } => 0,
        }
    }

    /// The total the client states, if any.
    pub fn total_bytes(&self) -> Option<u64> {
        match *self {
            Self::Piece { total_bytes, .. } | Self::Status { total_bytes } => total_bytes,
        }
    }
}

/// Parses `bytes first-last/total`, `bytes first-last/*`, `bytes */total`
/// or `bytes */*`. Checks `first <= last`, `last < total` and that the length
/// `last - first + 1` fits a `u64`.
pub fn parse_content_range(text: &str) -> Result<ContentRange, ProtocolError> {
    let bad = || ProtocolError::BadContentRange { given: quote(text) };
    let rest = text.strip_prefix("bytes ").ok_or_else(bad)?;
    let (range, total) = rest.split_once('/').ok_or_else(bad)?;
    let total_bytes = match total {
        "*" => None,
        digits => Some(parse_decimal_u64("Content-Range total", digits)?),
    };
    if range == "*" {
        return Ok(ContentRange::Status { total_bytes });
    }
    let (first, last) = range.split_once('-').ok_or_else(bad)?;
    let first_byte = parse_decimal_u64("Content-Range first byte", first)?;
    let last_byte = parse_decimal_u64("Content-Range last byte", last)?;
    if first_byte > last_byte {
        return Err(ProtocolError::InvertedRange {
            first_byte,
            last_byte,
        });
    }
    if let Some(total_bytes) = total_bytes {
        if last_byte >= total_bytes {
            return Err(ProtocolError::BeyondTotal {
                last_byte,
                total_bytes,
            });
        }
    }
    // The length is last - first + 1; it overflows only for 0-(2^64-1).
    if (last_byte - first_byte).checked_add(1).is_none() {
        return Err(ProtocolError::RangeOverflow {
            first_byte,
            last_byte,
        });
    }
    Ok(ContentRange::Piece {
        first_byte,
        last_byte,
        total_bytes,
    })
}

/// Formats a `Content-Range` header value.
pub fn format_content_range(range: &ContentRange) -> String {
    let total = |t: Option<u64>| t.map_or_else(|| "*".to_owned(), |t| t.to_string());
    match *range {
        ContentRange::Piece {
            first_byte,
            last_byte,
            total_bytes,
        } => format!("bytes {first_byte}-{last_byte}/{}", total(total_bytes)),
        ContentRange::Status { total_bytes } => format!("bytes */{}", total(total_bytes)),
    }
}

/// The `Range` header of a `308` holding `held_bytes`: `bytes=0-{held-1}`,
/// or `None` (no header at all) when nothing is held.
pub fn format_range(held_bytes: u64) -> Option<String> {
    held_bytes
        .checked_sub(1)
        .map(|last_byte| format!("bytes=0-{last_byte}"))
}

/// Parses a `308`'s `Range: bytes=0-N` into the bytes held (`N + 1`).
/// Refuses a start other than 0 and `N = 2^64-1` (its count overflows).
pub fn parse_range(text: &str) -> Result<u64, ProtocolError> {
    let bad = || ProtocolError::BadRange { given: quote(text) };
    let last = text.strip_prefix("bytes=0-").ok_or_else(bad)?;
    let last_byte = parse_decimal_u64("Range last byte", last)?;
    last_byte.checked_add(1).ok_or_else(bad)
}

/// The query parameters the emulator reads. Others (`alt=json`, `fields`…)
/// are accepted and ignored, as Drive does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UploadQuery {
    /// `uploadType`, if present.
    pub upload_type: Option<String>,
    /// `upload_id`, if present.
    pub upload_id: Option<String>,
}

/// Parses a query string (without the `?`). A parameter the emulator reads
/// may appear only once; values are taken verbatim (ids and `resumable`
/// need no percent-decoding).
pub fn parse_upload_query(query: &str) -> Result<UploadQuery, ProtocolError> {
    let mut parsed = UploadQuery::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match name {
            "uploadType" => &mut parsed.upload_type,
            "upload_id" => &mut parsed.upload_id,
            _ => continue,
        };
        if slot.is_some() {
            return Err(ProtocolError::RepeatedParameter { name: quote(name) });
        }
        *slot = Some(value.to_owned());
    }
    Ok(parsed)
}

/// The metadata of an initiation request, as far as the emulator uses it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    /// `name`, if given.
    pub name: Option<String>,
    /// `mimeType`, if given.
    pub mime_type: Option<String>,
}

/// Parses an initiation body: empty (no metadata) or a JSON object whose
/// `name` and `mimeType`, when present, are strings. Other fields are
/// ignored.
pub fn parse_metadata(body: &[u8]) -> Result<Metadata, ProtocolError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Metadata::default());
    }
    let bad = |reason: String| ProtocolError::BadMetadata {
        reason: quote(&reason),
    };
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
    let object = value
        .as_object()
        .ok_or_else(|| bad(format!("top level is {}", json_kind(&value))))?;
    let field = |key: &str| match object.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(bad(format!("{key} is {}", json_kind(other)))),
    };
    Ok(Metadata {
        name: field("name")?,
        mime_type: field("mimeType")?,
    })
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// The file resource a finished upload answers with.
///
/// Drive returns `md5Checksum`; the emulator returns `crc64nvme` (CRC-64/NVME,
/// [`crate::checksum::FileDigest`]) instead, because MD5 runs at under
/// 1 GB/s and would dominate a 3.38 GB simulation, while CRC-64/NVME runs
/// near memory speed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileResource {
    /// Always [`FILE_KIND`].
    pub kind: String,
    /// The file's id (32 lowercase hex digits, from the server's seeded RNG).
    pub id: String,
    /// The file's name.
    pub name: String,
    /// The file's MIME type.
    pub mime_type: String,
    /// Size in bytes; a decimal string on the wire, as Drive's int64 fields are.
    #[serde(rename = "size", with = "decimal_string")]
    pub size_bytes: u64,
    /// CRC-64/NVME of the whole file, sixteen lowercase hex digits.
    pub crc64nvme: String,
}

mod decimal_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &u64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(value)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::parse_decimal_u64("size", &text).map_err(serde::de::Error::custom)
    }
}

fn is_lower_hex(text: &str, digits: usize) -> bool {
    text.len() == digits
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The JSON of a file resource.
pub fn format_file_resource(resource: &FileResource) -> String {
    // Serialising a struct of strings and a u64 cannot fail; fall back to
    // an empty object rather than panic if serde ever says otherwise.
    serde_json::to_string(resource).unwrap_or_else(|_| "{}".to_owned())
}

/// Parses a file resource and checks it holds together: kind `drive#file`,
/// `crc64nvme` sixteen lowercase hex digits.
pub fn parse_file_resource(body: &[u8]) -> Result<FileResource, ProtocolError> {
    let bad = |reason: String| ProtocolError::BadFileResource {
        reason: quote(&reason),
    };
    let resource: FileResource = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
    if resource.kind != FILE_KIND {
        return Err(bad(format!("kind is {:?}", resource.kind)));
    }
    if !is_lower_hex(&resource.crc64nvme, 16) {
        return Err(bad(format!(
            "crc64nvme {:?} is not 16 lowercase hex digits",
            resource.crc64nvme
        )));
    }
    Ok(resource)
}

#[derive(Serialize, Deserialize)]
struct ErrorEnvelope {
    error: ErrorDetail,
}

#[derive(Serialize, Deserialize)]
struct ErrorDetail {
    code: u16,
    message: String,
}

/// The JSON body of every 4xx/5xx: `{"error":{"code":N,"message":"…"}}`.
pub fn format_error_body(code: u16, message: &str) -> String {
    let envelope = ErrorEnvelope {
        error: ErrorDetail {
            code,
            message: message.to_owned(),
        },
    };
    serde_json::to_string(&envelope)
        .unwrap_or_else(|_| format!("{{\"error\":{{\"code\":{code}}}}}"))
}

/// Parses an error body into its code and message; `None` if it is not one.
pub fn parse_error_body(body: &[u8]) -> Option<(u16, String)> {
    let envelope: ErrorEnvelope = serde_json::from_slice(body).ok()?;
    Some((envelope.error.code, envelope.error.message))
}

/// A fresh id: 32 lowercase hex digits from two draws of `next_u64`.
pub fn format_id(high: u64, low: u64) -> String {
    format!("{high:016x}{low:016x}")
}

/// Whether `text` has the form of an id made by [`format_id`].
pub fn is_id(text: &str) -> bool {
    is_lower_hex(text, 32)
}

/// Turns a file name into something safe as one path component: ASCII
/// letters, digits, `.`, `-` and `_` are kept, everything else becomes `_`;
/// at most [`FILE_NAME_CHARS_MAX`] characters; never empty.
pub fn sanitise_file_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .take(FILE_NAME_CHARS_MAX)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() {
        "_".to_owned()
    } else {
        cleaned
    }
}

/// Longest sanitised file name kept in a stored file's name (well under the
/// 255-byte component limit of common file systems, with the id prefix).
pub const FILE_NAME_CHARS_MAX: usize = 128;

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

    #[test]
    fn content_range_pieces_parse() {
        assert_eq!(
            parse_content_range("bytes 0-262143/1000000"),
            Ok(ContentRange::Piece {
                first_byte: 0,
                last_byte: 262_143,
                total_bytes: Some(1_000_000)
            })
        );
        let open = parse_content_range("bytes 262144-524287/*");
        assert_eq!(
            open,
            Ok(ContentRange::Piece {
                first_byte: 262_144,
                last_byte: 524_287,
                total_bytes: None
            })
        );
        assert_eq!(open.map(|r| r.len_bytes()), Ok(262_144));
        assert_eq!(
            parse_content_range("bytes 5-5/6").map(|r| r.len_bytes()),
            Ok(1)
        );
        assert_eq!(
            parse_content_range("bytes 0-18446744073709551614/18446744073709551615")
                .map(|r| r.len_bytes()),
            Ok(u64::MAX)
        );
    }

    #[test]
    fn content_range_status_queries_parse() {
        assert_eq!(
            parse_content_range("bytes */1000"),
            Ok(ContentRange::Status {
                total_bytes: Some(1000)
            })
        );
        assert_eq!(
            parse_content_range("bytes */*"),
            Ok(ContentRange::Status { total_bytes: None })
        );
        assert_eq!(
            parse_content_range("bytes */0").map(|r| r.len_bytes()),
            Ok(0)
        );
    }

    #[test]
    fn content_range_junk_is_refused() {
        for junk in [
            "",
            "bytes",
            "bytes ",
            "bytes 0-1",
            "bytes 0-1/",
            "bytes -1/5",
            "bytes 0-/5",
            "bytes 1/5",
            "byte 0-1/5",
            "bytes  0-1/5",
            "bytes 0-1/5 ",
            "Bytes 0-1/5",
            "bytes 0 - 1/5",
            "bytes */",
            "bytes * /5",
            "bytes 0-1/*/",
            "bytes 0-1-2/5",
            "bytes +0-1/5",
        ] {
            assert!(parse_content_range(junk).is_err(), "{junk:?} accepted");
        }
    }

    #[test]
    fn content_range_rules_are_checked() {
        assert_eq!(
            parse_content_range("bytes 9-3/100"),
            Err(ProtocolError::InvertedRange {
                first_byte: 9,
                last_byte: 3
            })
        );
        assert_eq!(
            parse_content_range("bytes 0-100/100"),
            Err(ProtocolError::BeyondTotal {
                last_byte: 100,
                total_bytes: 100
            })
        );
        assert_eq!(
            parse_content_range("bytes 0-0/0"),
            Err(ProtocolError::BeyondTotal {
                last_byte: 0,
                total_bytes: 0
            })
        );
    }

    #[test]
    fn content_range_u64_overflow_is_refused_not_wrapped() {
        // The total is 2^64: not a u64.
        assert!(matches!(
            parse_content_range("bytes 0-18446744073709551615/18446744073709551616"),
            Err(ProtocolError::BadNumber { .. })
        ));
        // Every number fits, but the length 2^64 does not.
        assert_eq!(
            parse_content_range("bytes 0-18446744073709551615/*"),
            Err(ProtocolError::RangeOverflow {
                first_byte: 0,
                last_byte: u64::MAX
            })
        );
        // last == total == u64::MAX: beyond the total.
        assert!(matches!(
            parse_content_range("bytes 0-18446744073709551615/18446744073709551615"),
            Err(ProtocolError::BeyondTotal { .. })
        ));
        assert!(parse_content_range("bytes 99999999999999999999999-1/5").is_err());
        assert!(parse_content_range("bytes */99999999999999999999999").is_err());
    }

    #[test]
    fn content_range_round_trips() {
        for range in [
            ContentRange::Piece {
                first_byte: 0,
                last_byte: 262_143,
                total_bytes: Some(262_144),
            },
            ContentRange::Piece {
                first_byte: 7,
                last_byte: 9,
                total_bytes: None,
            },
            ContentRange::Status {
                total_bytes: Some(0),
            },
            ContentRange::Status { total_bytes: None },
        ] {
            assert_eq!(
                parse_content_range(&format_content_range(&range)),
                Ok(range)
            );
        }
        assert_eq!(
            format_content_range(&ContentRange::Status { total_bytes: None }),
            "bytes */*"
        );
    }

    #[test]
    fn range_header_round_trips_and_is_absent_when_nothing_is_held() {
        assert_eq!(format_range(0), None);
        assert_eq!(format_range(1).as_deref(), Some("bytes=0-0"));
        assert_eq!(format_range(262_144).as_deref(), Some("bytes=0-262143"));
        for held in [1, 2, 262_144, u64::MAX] {
            let text = format_range(held).unwrap_or_default();
            assert_eq!(parse_range(&text), Ok(held), "{text}");
        }
    }

    #[test]
    fn range_header_junk_is_refused() {
        for junk in [
            "",
            "bytes=0-",
            "bytes=1-5",
            "bytes 0-5",
            "bytes=0-5 ",
            "bytes=0--5",
            "bytes=0-+5",
            "bytes=0-18446744073709551615",
            "bytes=0-18446744073709551616",
        ] {
            assert!(parse_range(junk).is_err(), "{junk:?} accepted");
        }
    }

    #[test]
    fn query_is_parsed_in_any_order_with_extras() {
        assert_eq!(
            parse_upload_query("alt=json&uploadType=resumable&upload_id=ab&fields=id"),
            Ok(UploadQuery {
                upload_type: Some("resumable".to_owned()),
                upload_id: Some("ab".to_owned()),
            })
        );
        assert_eq!(parse_upload_query(""), Ok(UploadQuery::default()));
        assert_eq!(
            parse_upload_query("uploadType&&"),
            Ok(UploadQuery {
                upload_type: Some(String::new()),
                upload_id: None
            })
        );
        assert_eq!(
            parse_upload_query("upload_id=a&upload_id=b"),
            Err(ProtocolError::RepeatedParameter {
                name: "upload_id".to_owned()
            })
        );
    }

    #[test]
    fn metadata_is_a_json_object_or_nothing() {
        assert_eq!(parse_metadata(b""), Ok(Metadata::default()));
        assert_eq!(parse_metadata(b" \n"), Ok(Metadata::default()));
        assert_eq!(
            parse_metadata(br#"{"name":"a.bin","mimeType":"x/y","parents":["p"]}"#),
            Ok(Metadata {
                name: Some("a.bin".to_owned()),
                mime_type: Some("x/y".to_owned())
            })
        );
        assert_eq!(parse_metadata(b"{}"), Ok(Metadata::default()));
        for junk in [
            &b"{"[..],
            b"[]",
            b"\"name\"",
            b"42",
            b"null",
            br#"{"name":5}"#,
            br#"{"mimeType":["a"]}"#,
            b"\xff\xfe",
        ] {
            assert!(parse_metadata(junk).is_err(), "{junk:?} accepted");
        }
    }

    fn sample_resource() -> FileResource {
        FileResource {
            kind: FILE_KIND.to_owned(),
            id: format_id(1, 2),
            name: "report.bin".to_owned(),
            mime_type: "application/octet-stream".to_owned(),
            size_bytes: 3_624_927_232,
            crc64nvme: "00112233445566ff".to_owned(),
        }
    }

    #[test]
    fn file_resource_has_drive_field_names_and_round_trips() {
        let resource = sample_resource();
        let json = format_file_resource(&resource);
        let value: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
        assert_eq!(value["kind"], "drive#file");
        assert_eq!(value["mimeType"], "application/octet-stream");
        assert_eq!(value["size"], "3624927232");
        assert_eq!(value["crc64nvme"], "00112233445566ff");
        assert_eq!(parse_file_resource(json.as_bytes()), Ok(resource));
    }

    #[test]
    fn file_resource_junk_is_refused() {
        let good = format_file_resource(&sample_resource());
        for junk in [
            good.replace("drive#file", "drive#folder"),
            good.replace("00112233445566ff", "00112233445566FF"),
            good.replace("00112233445566ff", "0011"),
            good.replace("\"3624927232\"", "3624927232"),
            good.replace("\"3624927232\"", "\"-1\""),
            good.replace("\"3624927232\"", "\"18446744073709551616\""),
            "{}".to_owned(),
            "not json".to_owned(),
        ] {
            assert!(
                parse_file_resource(junk.as_bytes()).is_err(),
                "{junk} accepted"
            );
        }
    }

    #[test]
    fn error_body_round_trips() {
        let body = format_error_body(400, "gap: piece starts at 5 but 0 bytes are held");
        assert_eq!(
            body,
            r#"{"error":{"code":400,"message":"gap: piece starts at 5 but 0 bytes are held"}}"#
        );
        assert_eq!(
            parse_error_body(body.as_bytes()),
            Some((
                400,
                "gap: piece starts at 5 but 0 bytes are held".to_owned()
            ))
        );
        assert_eq!(parse_error_body(b"<html>"), None);
        assert_eq!(parse_error_body(br#"{"error":{"code":70000}}"#), None);
    }

    #[test]
    fn ids_are_32_lower_hex() {
        let id = format_id(u64::MAX, 0);
        assert_eq!(id, "ffffffffffffffff0000000000000000");
        assert!(is_id(&id));
        assert!(!is_id("FFFFFFFFFFFFFFFF0000000000000000"));
        assert!(!is_id("abc"));
    }

    #[test]
    fn file_names_are_sanitised() {
        assert_eq!(sanitise_file_name("a.bin"), "a.bin");
        assert_eq!(sanitise_file_name("../../etc/passwd"), ".._.._etc_passwd");
        assert_eq!(sanitise_file_name(""), "_");
        assert_eq!(sanitise_file_name("ünï cödé"), "_n__c_d_");
        assert_eq!(
            sanitise_file_name(&"x".repeat(1000)).len(),
            FILE_NAME_CHARS_MAX
        );
    }
}
