//! tus's core headers, parsed strictly: a number is 1 to 20 ASCII digits
//! that fit a `u64` (no sign, no spaces, no exponent), and a header that
//! appears twice is an error, never a guess at which one was meant.

use super::{header, OFFSET_OCTET_STREAM, TUS_VERSION};
use http::{HeaderMap, Method};
use std::time::SystemTime;

/// Most digits of a tus number: `u64::MAX` has 20.
const DIGITS_MAX: usize = 20;

/// A tus header that is missing, malformed or contradicts another.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TusHeaderError {
    /// A header the request needs is absent.
    #[error("{name} is missing")]
    Missing {
        /// The header.
        name: &'static str,
    },
    /// A header that must appear once appears more often.
    #[error("{name} appears {count} times; it must appear once")]
    Repeated {
        /// The header.
        name: &'static str,
        /// How often it appears.
        count: usize,
    },
    /// A number that is not 1 to 20 digits, or past `u64::MAX`.
    #[error("{name} must be a non-negative integer of at most {DIGITS_MAX} digits (at most {}), not {value:?}", u64::MAX)]
    NotAnInteger {
        /// The header.
        name: &'static str,
        /// Its value, lossily as text.
        value: String,
    },
    /// `Upload-Defer-Length` with a value other than `1`.
    #[error("Upload-Defer-Length must be 1, not {value:?}")]
    DeferLengthNotOne {
        /// Its value, lossily as text.
        value: String,
    },
    /// Both `Upload-Length` and `Upload-Defer-Length: 1`.
    #[error("Upload-Length and Upload-Defer-Length cannot both be given")]
    LengthAndDeferred,
    /// `Tus-Resumable` is absent or names another version.
    #[error("Tus-Resumable {given:?} is not a version this server speaks ({TUS_VERSION})")]
    UnsupportedVersion {
        /// What the request sent, if anything.
        given: Option<String>,
    },
    /// `X-HTTP-Method-Override` is not an HTTP method token.
    #[error("X-HTTP-Method-Override {value:?} is not a method")]
    BadMethod {
        /// Its value, lossily as text.
        value: String,
    },
}

/// The one value of header `name`, if present; two or more is an error.
fn single<'a>(
    headers: &'a HeaderMap,
    name: &'static str,
) -> Result<Option<&'a [u8]>, TusHeaderError> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    let extra = values.count();
    if extra > 0 {
        return Err(TusHeaderError::Repeated {
            name,
            count: extra + 1,
        });
    }
    Ok(first.map(|v| v.as_bytes()))
}

fn lossy(value: &[u8]) -> String {
    String::from_utf8_lossy(value).into_owned()
}

/// A tus number: 1 to 20 ASCII digits within `u64`.
fn number(name: &'static str, value: &[u8]) -> Result<u64, TusHeaderError> {
    let not_an_integer = || TusHeaderError::NotAnInteger {
        name,
        value: lossy(value),
    };
    if value.is_empty() || value.len() > DIGITS_MAX || !value.iter().all(u8::is_ascii_digit) {
        return Err(not_an_integer());
    }
    // All digits, so UTF-8; `parse` refuses what overflows.
    std::str::from_utf8(value)
        .ok()
        .and_then(|digits| digits.parse::<u64>().ok())
        .ok_or_else(not_an_integer)
}

/// Checks `Tus-Resumable`: present, once, and [`TUS_VERSION`].
///
/// # Errors
/// [`TusHeaderError::UnsupportedVersion`] (the server answers 412 with
/// `Tus-Version`), or `Repeated`.
pub fn resumable(headers: &HeaderMap) -> Result<(), TusHeaderError> {
    match single(headers, header::TUS_RESUMABLE)? {
        Some(v) if v == TUS_VERSION.as_bytes() => Ok(()),
        given => Err(TusHeaderError::UnsupportedVersion {
            given: given.map(lossy),
        }),
    }
}

/// `Upload-Offset`, which a PATCH needs.
///
/// # Errors
/// Missing, repeated, or not a number.
pub fn upload_offset(headers: &HeaderMap) -> Result<u64, TusHeaderError> {
    let name = header::UPLOAD_OFFSET;
    let value = single(headers, name)?.ok_or(TusHeaderError::Missing { name })?;
    number(name, value)
}

/// `Upload-Length`, if given.
///
/// # Errors
/// Repeated, or not a number.
pub fn upload_length(headers: &HeaderMap) -> Result<Option<u64>, TusHeaderError> {
    let name = header::UPLOAD_LENGTH;
    single(headers, name)?.map(|v| number(name, v)).transpose()
}

/// Whether `Upload-Defer-Length: 1` is given (any other value is an
/// error, as is giving it with `Upload-Length`).
///
/// # Errors
/// A value other than `1`, repeated, or beside `Upload-Length`.
pub fn defer_length(headers: &HeaderMap) -> Result<bool, TusHeaderError> {
    let Some(value) = single(headers, header::UPLOAD_DEFER_LENGTH)? else {
        return Ok(false);
    };
    if value != b"1" {
        return Err(TusHeaderError::DeferLengthNotOne {
            value: lossy(value),
        });
    }
    if headers.contains_key(header::UPLOAD_LENGTH) {
        return Err(TusHeaderError::LengthAndDeferred);
    }
    Ok(true)
}

/// `Content-Length`, if given (a chunked body has none).
///
/// # Errors
/// Repeated, or not a number.
pub fn content_length(headers: &HeaderMap) -> Result<Option<u64>, TusHeaderError> {
    let name = "content-length";
    single(headers, name)?.map(|v| number(name, v)).transpose()
}

/// Whether the body is `application/offset+octet-stream` (parameters and
/// case aside).
pub fn is_offset_stream(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case(OFFSET_OCTET_STREAM))
}

/// The method `X-HTTP-Method-Override` names, if the header is present
/// (clients whose environment cannot send PATCH or DELETE send a POST
/// with this header).
///
/// # Errors
/// Repeated, or not a method token.
pub fn method_override(headers: &HeaderMap) -> Result<Option<Method>, TusHeaderError> {
    let Some(value) = single(headers, header::X_HTTP_METHOD_OVERRIDE)? else {
        return Ok(None);
    };
    Method::from_bytes(value)
        .map(Some)
        .map_err(|_| TusHeaderError::BadMethod {
            value: lossy(value),
        })
}

/// `time` as an HTTP date (RFC 9110's IMF-fixdate), as `Upload-Expires`
/// carries it.
pub fn http_date(time: SystemTime) -> String {
    httpdate::fmt_http_date(time)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).expect("a valid value"));
        }
        map
    }

    #[test]
    fn numbers_are_strict_digits_within_u64() {
        let offset = |v: &str| upload_offset(&headers(&[("upload-offset", v)]));
        assert_eq!(offset("0"), Ok(0));
        assert_eq!(offset("007"), Ok(7));
        assert_eq!(offset("18446744073709551615"), Ok(u64::MAX));
        for bad in [
            "",
            "-1",
            "+1",
            " 1",
            "1 ",
            "1e3",
            "0x10",
            "18446744073709551616",
            "000000000000000000001",
            "1.0",
        ] {
            assert!(
                matches!(offset(bad), Err(TusHeaderError::NotAnInteger { .. })),
                "{bad:?}: {:?}",
                offset(bad)
            );
        }
        assert_eq!(
            upload_offset(&HeaderMap::new()),
            Err(TusHeaderError::Missing {
                name: "upload-offset"
            })
        );
    }

    #[test]
    fn a_repeated_header_is_an_error_not_a_guess() {
        let two = headers(&[("upload-offset", "0"), ("upload-offset", "5")]);
        assert_eq!(
            upload_offset(&two),
            Err(TusHeaderError::Repeated {
                name: "upload-offset",
                count: 2
            })
        );
    }

    #[test]
    fn the_version_must_be_1_0_0() {
        assert_eq!(resumable(&headers(&[("tus-resumable", "1.0.0")])), Ok(()));
        assert_eq!(
            resumable(&headers(&[("tus-resumable", "0.2.2")])),
            Err(TusHeaderError::UnsupportedVersion {
                given: Some("0.2.2".into())
            })
        );
        assert_eq!(
            resumable(&HeaderMap::new()),
            Err(TusHeaderError::UnsupportedVersion { given: None })
        );
    }

    #[test]
    fn defer_length_is_1_and_never_beside_a_length() {
        assert_eq!(defer_length(&HeaderMap::new()), Ok(false));
        assert_eq!(
            defer_length(&headers(&[("upload-defer-length", "1")])),
            Ok(true)
        );
        assert!(matches!(
            defer_length(&headers(&[("upload-defer-length", "0")])),
            Err(TusHeaderError::DeferLengthNotOne { .. })
        ));
        assert_eq!(
            defer_length(&headers(&[
                ("upload-defer-length", "1"),
                ("upload-length", "5")
            ])),
            Err(TusHeaderError::LengthAndDeferred)
        );
    }

    #[test]
    fn the_content_type_is_compared_without_parameters_or_case() {
        let is = |v: &str| is_offset_stream(&headers(&[("content-type", v)]));
        assert!(is("application/offset+octet-stream"));
        assert!(is("Application/Offset+Octet-Stream; charset=binary"));
        assert!(!is("application/octet-stream"));
        assert!(!is_offset_stream(&HeaderMap::new()));
    }

    #[test]
    fn method_override_names_a_method_or_is_refused() {
        let over = |v: &str| method_override(&headers(&[("x-http-method-override", v)]));
        assert_eq!(over("PATCH"), Ok(Some(Method::PATCH)));
        assert_eq!(over("DELETE"), Ok(Some(Method::DELETE)));
        assert!(matches!(
            over("PA TCH"),
            Err(TusHeaderError::BadMethod { .. })
        ));
        assert_eq!(method_override(&HeaderMap::new()), Ok(None));
    }

    #[test]
    fn expiry_dates_are_imf_fixdate() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_403_712_000);
        assert_eq!(http_date(t), "Wed, 25 Jun 2014 16:00:00 GMT");
    }
}
