//! What a request carries besides its body's bytes: the query string of the
//! upload path and the initiation's metadata body.

use super::{quote, FieldSelection, ProtocolError};

/// The query parameters the emulator reads. Others (`alt=json`…) are
/// accepted and ignored, as Drive does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UploadQuery {
    /// `uploadType`, if present.
    pub upload_type: Option<String>,
    /// `upload_id`, if present.
    pub upload_id: Option<String>,
    /// `fields`, if present: the file resource's fields a reply carries.
    pub fields: Option<FieldSelection>,
}

/// Parses a query string (without the `?`). A parameter the emulator reads
/// may appear only once; `uploadType` and `upload_id` are taken verbatim
/// (ids and `resumable` need no percent-decoding), `fields` is decoded and
/// checked ([`FieldSelection::parse`]).
pub fn parse_upload_query(query: &str) -> Result<UploadQuery, ProtocolError> {
    let mut parsed = UploadQuery::default();
    let mut fields = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match name {
            "uploadType" => &mut parsed.upload_type,
            "upload_id" => &mut parsed.upload_id,
            "fields" => &mut fields,
            _ => continue,
        };
        if slot.is_some() {
            return Err(ProtocolError::RepeatedParameter { name: quote(name) });
        }
        *slot = Some(value.to_owned());
    }
    parsed.fields = fields.as_deref().map(FieldSelection::parse).transpose()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_is_parsed_in_any_order_with_extras() {
        assert_eq!(
            parse_upload_query("alt=json&uploadType=resumable&upload_id=ab&fields=id"),
            Ok(UploadQuery {
                upload_type: Some("resumable".to_owned()),
                upload_id: Some("ab".to_owned()),
                fields: Some(FieldSelection::of(&[super::super::Field::Id])),
            })
        );
        assert_eq!(
            parse_upload_query("uploadType=resumable&fields=id,parents"),
            Err(ProtocolError::InvalidFieldSelection {
                field: "parents".to_owned()
            })
        );
        assert_eq!(
            parse_upload_query("fields=id&fields=id"),
            Err(ProtocolError::RepeatedParameter {
                name: "fields".to_owned()
            })
        );
        assert_eq!(parse_upload_query(""), Ok(UploadQuery::default()));
        assert_eq!(
            parse_upload_query("uploadType&&"),
            Ok(UploadQuery {
                upload_type: Some(String::new()),
                upload_id: None,
                fields: None,
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
}
