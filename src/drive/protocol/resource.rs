//! What the emulator answers with and names things by: the file resource,
//! ids, and file names safe on disk.

use super::{parse_decimal_u64, quote, Field, FieldSelection, ProtocolError, FILE_KIND};
use crate::checksum::{is_lower_hex, FileDigestKind};
use serde::{Deserialize, Serialize};

/// A finished file's resource: everything the emulator knows of it, and
/// what a client parses from a reply (which carries only the fields asked
/// for, see [`FieldSelection`]).
///
/// Drive returns `md5Checksum`; the emulator returns it too, and also its
/// own `crc64nvme` (CRC-64/NVME, [`crate::checksum::FileDigest`]), because
/// MD5 runs at under 1 GB/s and would dominate a 3.38 GB simulation while
/// CRC-64/NVME runs near memory speed. The simulation's storage computes
/// MD5 only for sessions that ask for it, so either may be absent.
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
    /// MD5 of the whole file, 32 lowercase hex digits (Drive's field), when
    /// known and asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5_checksum: Option<String>,
    /// CRC-64/NVME of the whole file, sixteen lowercase hex digits (the
    /// emulator's own field), when known and asked for.
    #[serde(default, rename = "crc64nvme", skip_serializing_if = "Option::is_none")]
    pub crc64nvme: Option<String>,
}

impl FileResource {
    /// The digest of `kind` this resource carries, if it does.
    pub fn digest(&self, kind: FileDigestKind) -> Option<&str> {
        match kind {
            FileDigestKind::Crc64Nvme => self.crc64nvme.as_deref(),
            FileDigestKind::Md5 => self.md5_checksum.as_deref(),
        }
    }
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

/// The fields of a resource a reply carries, in resource order; each
/// `None` when not selected (or not known).
#[derive(Serialize)]
struct Projection<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(rename = "mimeType", skip_serializing_if = "Option::is_none")]
    mime_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<String>,
    #[serde(rename = "md5Checksum", skip_serializing_if = "Option::is_none")]
    md5_checksum: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    crc64nvme: Option<&'a str>,
}

/// The JSON of a file resource, with the fields `selection` asks for (a
/// field the emulator does not know for this file, such as the MD5 of a
/// simulated file whose session did not ask for it, is left out, as Drive
/// leaves out `md5Checksum` for files that have none).
pub fn format_file_resource(resource: &FileResource, selection: FieldSelection) -> String {
    let pick = |field: Field| selection.contains(field);
    let projection = Projection {
        kind: pick(Field::Kind).then_some(resource.kind.as_str()),
        id: pick(Field::Id).then_some(resource.id.as_str()),
        name: pick(Field::Name).then_some(resource.name.as_str()),
        mime_type: pick(Field::MimeType).then_some(resource.mime_type.as_str()),
        size: pick(Field::Size).then(|| resource.size_bytes.to_string()),
        md5_checksum: resource
            .md5_checksum
            .as_deref()
            .filter(|_| pick(Field::Md5Checksum)),
        crc64nvme: resource
            .crc64nvme
            .as_deref()
            .filter(|_| pick(Field::Crc64Nvme)),
    };
    // Serialising strings cannot fail; fall back to an empty object rather
    // than panic if serde ever says otherwise.
    serde_json::to_string(&projection).unwrap_or_else(|_| "{}".to_owned())
}

/// Parses a file resource and checks it holds together: kind `drive#file`,
/// and each digest present in its wire form (`md5Checksum` 32 and
/// `crc64nvme` 16 lowercase hex digits). `kind`, `id`, `name`, `mimeType`
/// and `size` are required: [`DriveClient`](crate::drive::DriveClient)
/// always asks for them. Whether the digest a caller checks is there is
/// the caller's question ([`FileResource::digest`]).
pub fn parse_file_resource(body: &[u8]) -> Result<FileResource, ProtocolError> {
    let bad = |reason: String| ProtocolError::BadFileResource {
        reason: quote(&reason),
    };
    let resource: FileResource = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
    if resource.kind != FILE_KIND {
        return Err(bad(format!("kind is {:?}", resource.kind)));
    }
    for kind in [FileDigestKind::Crc64Nvme, FileDigestKind::Md5] {
        if let Some(digest) = resource.digest(kind) {
            if !is_lower_hex(digest, kind.hex_digits()) {
                return Err(bad(format!(
                    "{} {digest:?} is not {} lowercase hex digits",
                    kind.field_name(),
                    kind.hex_digits()
                )));
            }
        }
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
            md5_checksum: Some("0123456789abcdef0123456789abcdef".to_owned()),
            crc64nvme: Some("00112233445566ff".to_owned()),
        }
    }

    #[test]
    fn file_resource_has_drive_field_names_and_round_trips() {
        let resource = sample_resource();
        let json = format_file_resource(&resource, FieldSelection::ALL);
        let value: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
        assert_eq!(value["kind"], "drive#file");
        assert_eq!(value["mimeType"], "application/octet-stream");
        assert_eq!(value["size"], "3624927232");
        assert_eq!(value["md5Checksum"], "0123456789abcdef0123456789abcdef");
        assert_eq!(value["crc64nvme"], "00112233445566ff");
        assert_eq!(parse_file_resource(json.as_bytes()), Ok(resource.clone()));
        // The projection of everything is the resource's own form.
        assert_eq!(json, serde_json::to_string(&resource).unwrap_or_default());
    }

    #[test]
    fn a_reply_carries_the_selected_fields_in_resource_order() {
        let resource = sample_resource();
        assert_eq!(
            format_file_resource(&resource, FieldSelection::DEFAULT),
            r#"{"kind":"drive#file","id":"00000000000000010000000000000002","name":"report.bin","mimeType":"application/octet-stream"}"#
        );
        let asked = FieldSelection::parse("md5Checksum,size,id").expect("valid");
        assert_eq!(
            format_file_resource(&resource, asked),
            r#"{"id":"00000000000000010000000000000002","size":"3624927232","md5Checksum":"0123456789abcdef0123456789abcdef"}"#
        );
        // A digest the file does not have is left out, even when asked.
        let without_md5 = FileResource {
            md5_checksum: None,
            ..resource
        };
        let json = format_file_resource(&without_md5, FieldSelection::ALL);
        assert!(!json.contains("md5Checksum"), "{json}");
        assert_eq!(parse_file_resource(json.as_bytes()), Ok(without_md5));
    }

    #[test]
    fn file_resource_junk_is_refused() {
        let good = format_file_resource(&sample_resource(), FieldSelection::ALL);
        for junk in [
            good.replace("drive#file", "drive#folder"),
            good.replace("00112233445566ff", "00112233445566FF"),
            good.replace("00112233445566ff", "0011"),
            good.replace(
                "0123456789abcdef0123456789abcdef",
                "0123456789ABCDEF0123456789ABCDEF",
            ),
            good.replace("0123456789abcdef0123456789abcdef", "0123456789abcdef"),
            good.replace(",\"size\":\"3624927232\"", ""),
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
