//! `Upload-Concat`: `partial` marks an upload as one part of a file;
//! `final;URL URL …` creates the file from partial uploads, in order.
//! A partial's URL may be absolute or relative; either way its path must
//! be `/files/{id}`, and only the id is kept (a final upload never makes
//! the server fetch a URL). Bounded in partials and bytes.

use super::FILES_PATH;

/// Most partial uploads one final upload concatenates: enough for any
/// client's parallelism (tus-js-client's `parallelUploads` is typically
/// 2–10), few enough that a final's bookkeeping stays small.
pub const CONCAT_PARTIALS_MAX: usize = 64;

/// Largest `Upload-Concat` value: [`CONCAT_PARTIALS_MAX`] absolute URLs of
/// reasonable length.
const CONCAT_BYTES_MAX: usize = 16 * 1024;

/// A parsed `Upload-Concat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Concat {
    /// `partial`: one part of a file, not sent anywhere until a final
    /// upload takes it.
    Partial,
    /// `final;…`: the file made of these partial uploads, in order.
    Final {
        /// The partial uploads' ids, in order (an id may repeat).
        partials: Vec<String>,
        /// The header as the client sent it, echoed by `HEAD`.
        raw: String,
    },
}

/// Why an `Upload-Concat` was refused (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConcatError {
    /// Neither `partial` nor `final;…`, or not printable ASCII, or longer
    /// than the bound.
    #[error("Upload-Concat must be `partial` or `final;` and the partial uploads' URLs (printable ASCII, at most {bytes_max} bytes)")]
    Malformed {
        /// The bound on its length.
        bytes_max: usize,
    },
    /// `final;` with no URL.
    #[error("Upload-Concat final names no partial upload")]
    NoPartials,
    /// More partials than [`CONCAT_PARTIALS_MAX`].
    #[error("Upload-Concat final names {partials} partial uploads; the limit is {partials_max}")]
    TooManyPartials {
        /// How many it names.
        partials: usize,
        /// [`CONCAT_PARTIALS_MAX`].
        partials_max: usize,
    },
    /// A URL whose path is not `/files/{id}`.
    #[error("Upload-Concat names {url:?}, which is not an upload of this server (/files/ID)")]
    NotAnUpload {
        /// The URL (at most 256 bytes of it).
        url: String,
    },
}

impl Concat {
    /// Parses a header value.
    ///
    /// # Errors
    /// The first thing wrong with it.
    pub fn parse(value: &[u8]) -> Result<Self, ConcatError> {
        let malformed = ConcatError::Malformed {
            bytes_max: CONCAT_BYTES_MAX,
        };
        if value.len() > CONCAT_BYTES_MAX || !value.iter().all(|b| (b' '..=b'~').contains(b)) {
            return Err(malformed);
        }
        let raw = String::from_utf8_lossy(value).into_owned();
        if raw == "partial" {
            return Ok(Self::Partial);
        }
        let Some(list) = raw.strip_prefix("final;") else {
            return Err(malformed);
        };
        let urls: Vec<&str> = list.split(' ').filter(|u| !u.is_empty()).collect();
        if urls.is_empty() {
            return Err(ConcatError::NoPartials);
        }
        if urls.len() > CONCAT_PARTIALS_MAX {
            return Err(ConcatError::TooManyPartials {
                partials: urls.len(),
                partials_max: CONCAT_PARTIALS_MAX,
            });
        }
        let partials = urls
            .into_iter()
            .map(upload_id)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::Final { partials, raw })
    }

    /// The header's value, as `HEAD` echoes it.
    pub fn as_header(&self) -> &str {
        match self {
            Self::Partial => "partial",
            Self::Final { raw, .. } => raw,
        }
    }
}

/// The upload id of a partial's URL: `/files/{id}` or
/// `scheme://authority/files/{id}`, the id one non-empty segment of
/// ASCII letters and digits.
fn upload_id(url: &str) -> Result<String, ConcatError> {
    let not_an_upload = || ConcatError::NotAnUpload {
        url: url.chars().take(256).collect(),
    };
    let path = match url.split_once("://") {
        Some((_, rest)) => &rest[rest.find('/').ok_or_else(not_an_upload)?..],
        None => url,
    };
    let id = path.strip_prefix(FILES_PATH).ok_or_else(not_an_upload)?;
    let id = id.strip_suffix('/').unwrap_or(id);
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(not_an_upload());
    }
    Ok(id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_and_final_parse() {
        assert_eq!(Concat::parse(b"partial"), Ok(Concat::Partial));
        let raw = "final;/files/a1 https://tus.example.org/files/b2 /files/a1";
        assert_eq!(
            Concat::parse(raw.as_bytes()),
            Ok(Concat::Final {
                partials: vec!["a1".into(), "b2".into(), "a1".into()],
                raw: raw.into()
            })
        );
    }

    #[test]
    fn every_malformation_has_its_error() {
        let err = |v: &str| Concat::parse(v.as_bytes()).expect_err("refused");
        assert!(matches!(err("Partial"), ConcatError::Malformed { .. }));
        assert!(matches!(
            err("final:/files/a"),
            ConcatError::Malformed { .. }
        ));
        assert_eq!(err("final;"), ConcatError::NoPartials);
        assert_eq!(err("final;   "), ConcatError::NoPartials);
        for url in [
            "/uploads/a",
            "/files/",
            "/files/a/b",
            "/files/../etc",
            "https://x",
            "files/a",
        ] {
            assert!(
                matches!(
                    err(&format!("final;{url}")),
                    ConcatError::NotAnUpload { .. }
                ),
                "{url}"
            );
        }
        let many: Vec<String> = (0..=CONCAT_PARTIALS_MAX)
            .map(|i| format!("/files/p{i}"))
            .collect();
        assert_eq!(
            err(&format!("final;{}", many.join(" "))),
            ConcatError::TooManyPartials {
                partials: CONCAT_PARTIALS_MAX + 1,
                partials_max: CONCAT_PARTIALS_MAX
            }
        );
        let long = format!("final;/files/{}", "a".repeat(CONCAT_BYTES_MAX));
        assert!(matches!(err(&long), ConcatError::Malformed { .. }));
    }
}
