//! What the emulator answers with and names things by: the file resource,
//! ids, and file names safe on disk.

use super::{parse_decimal_u64, quote, ProtocolError, FILE_KIND};
use serde::{Deserialize, Serialize};

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
