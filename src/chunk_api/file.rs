//! [`UploadedFile`]: the file a completed upload became, as the chunk API
//! reports it (`UploadStatus.file`).
//!
//! The chunk API has its own type rather than the drive's file resource so
//! that the client does not depend on the drive: the backend converts the
//! drive's resource into this one. The JSON is the same, field for field
//! (camelCase names, `size` as a decimal string, as Drive's int64 fields
//! are), so that nothing on the wire changes; the backend's tests check
//! that the two serialise identically.

use serde::{Deserialize, Serialize};

/// A completed upload's file on the drive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UploadedFile {
    /// The drive's kind of resource (`drive#file`).
    pub kind: String,
    /// The drive's id of the file.
    pub id: String,
    /// The file's name.
    pub name: String,
    /// The file's MIME type.
    pub mime_type: String,
    /// Size in bytes; a decimal string on the wire.
    #[serde(rename = "size", with = "decimal_string")]
    pub size_bytes: u64,
    /// MD5 of the whole file, 32 lowercase hex digits (Drive's
    /// `md5Checksum`), when the backend checks MD5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5_checksum: Option<String>,
    /// CRC-64/NVME of the whole file, sixteen lowercase hex digits (the
    /// emulator's), when the backend checks CRC-64.
    #[serde(default, rename = "crc64nvme", skip_serializing_if = "Option::is_none")]
    pub crc64nvme: Option<String>,
}

impl UploadedFile {
    /// The whole-file digest the backend checked, as the drive reported
    /// it: `crc64nvme` if there is one, else `md5Checksum`.
    pub fn digest(&self) -> Option<&str> {
        self.crc64nvme.as_deref().or(self.md5_checksum.as_deref())
    }
}

/// A `u64` as a JSON string of decimal digits.
mod decimal_string {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Digits in `u64::MAX`: a longer string cannot be a `u64`.
    const U64_DIGITS_MAX: usize = 20;

    pub fn serialize<S: Serializer>(value: &u64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(value)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        let text = String::deserialize(deserializer)?;
        let digits_only = !text.is_empty()
            && text.len() <= U64_DIGITS_MAX
            && text.bytes().all(|b| b.is_ascii_digit());
        digits_only
            .then(|| text.parse::<u64>().ok())
            .flatten()
            .ok_or_else(|| serde::de::Error::custom(format!("size {text:?} is not a decimal u64")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_is_a_decimal_string_and_nothing_else() {
        let json = r#"{"kind":"drive#file","id":"f","name":"n","mimeType":"m","size":"42","crc64nvme":"00"}"#;
        let file: UploadedFile = serde_json::from_str(json).expect("valid");
        assert_eq!(file.size_bytes, 42);
        assert_eq!(file.digest(), Some("00"));
        assert_eq!(serde_json::to_string(&file).expect("serialises"), json);
        let md5 = json.replace(r#""crc64nvme":"00""#, r#""md5Checksum":"ff""#);
        let file: UploadedFile = serde_json::from_str(&md5).expect("valid");
        assert_eq!(
            (file.crc64nvme.as_deref(), file.digest()),
            (None, Some("ff"))
        );
        assert_eq!(serde_json::to_string(&file).expect("serialises"), md5);
        for bad in ["\"\"", "\"-1\"", "\"+1\"", "\"18446744073709551616\"", "42"] {
            let text = json.replace("\"42\"", bad);
            assert!(
                serde_json::from_str::<UploadedFile>(&text).is_err(),
                "size {bad} must be refused"
            );
        }
    }
}
