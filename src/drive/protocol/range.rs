//! `Content-Range`, as a client sends it for a piece or a status query, and
//! `Range`, as a `308` answers with the bytes held.

use super::{parse_decimal_u64, quote, ProtocolError};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
