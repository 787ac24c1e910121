//! The `fields=` parameter: which fields of the file resource a reply
//! carries.
//!
//! Drive answers a finished upload with `kind`, `id`, `name` and
//! `mimeType` only, unless the request's `fields=` asks for others
//! (`fields=id,name,size,md5Checksum`, or `*` for all); a name it does not
//! know is refused `400 Invalid field selection NAME`. The emulator does
//! the same over the fields it has, plus its own `crc64nvme` (returned only
//! when asked for, like every field beyond the default four).
//!
//! Invariants: a selection is a set (order and repeats in the request do
//! not matter); its text form ([`FieldSelection`]'s `Display`) lists the
//! fields in resource order and parses back to the same set.

use super::{quote, ProtocolError};
use crate::checksum::FileDigestKind;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A field of the file resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `kind`.
    Kind,
    /// `id`.
    Id,
    /// `name`.
    Name,
    /// `mimeType`.
    MimeType,
    /// `size`.
    Size,
    /// `md5Checksum` (Drive's).
    Md5Checksum,
    /// `crc64nvme` (the emulator's own).
    Crc64Nvme,
}

impl Field {
    /// Every field, in resource order.
    pub const ALL: [Self; 7] = [
        Self::Kind,
        Self::Id,
        Self::Name,
        Self::MimeType,
        Self::Size,
        Self::Md5Checksum,
        Self::Crc64Nvme,
    ];

    /// The field's name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Self::Kind => "kind",
            Self::Id => "id",
            Self::Name => "name",
            Self::MimeType => "mimeType",
            Self::Size => "size",
            Self::Md5Checksum => "md5Checksum",
            Self::Crc64Nvme => "crc64nvme",
        }
    }

    /// The field that carries digest `kind`.
    pub fn of_digest(kind: FileDigestKind) -> Self {
        match kind {
            FileDigestKind::Crc64Nvme => Self::Crc64Nvme,
            FileDigestKind::Md5 => Self::Md5Checksum,
        }
    }

    fn bit(self) -> u8 {
        // At most 7 variants: the shift stays inside a u8.
        1 << (self as u8)
    }
}

/// Which fields a file resource reply carries.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FieldSelection {
    bits: u8,
}

impl FieldSelection {
    /// What Drive answers without `fields=`: `kind,id,name,mimeType`.
    pub const DEFAULT: Self = Self::of(&[Field::Kind, Field::Id, Field::Name, Field::MimeType]);

    /// `fields=*`: everything.
    pub const ALL: Self = Self::of(&Field::ALL);

    /// The selection of exactly `fields`.
    pub const fn of(fields: &[Field]) -> Self {
        let mut bits = 0;
        let mut i = 0;
        while i < fields.len() {
            bits |= 1 << (fields[i] as u8);
            i += 1;
        }
        Self { bits }
    }

    /// What a client checking digest `kind` asks for: the default four,
    /// `size` and the digest's field.
    pub fn for_digest(kind: FileDigestKind) -> Self {
        Self {
            bits: Self::DEFAULT.bits | Field::Size.bit() | Field::of_digest(kind).bit(),
        }
    }

    /// Whether `field` is selected.
    pub fn contains(self, field: Field) -> bool {
        self.bits & field.bit() != 0
    }

    /// Parses a `fields=` value as it appears in a query string
    /// (percent-encoded): names separated by commas, spaces around them
    /// ignored, `*` for all. An empty value selects the default.
    ///
    /// # Errors
    /// [`ProtocolError::InvalidFieldSelection`] naming the first name that
    /// is not a field of the file resource (or the whole value, if it does
    /// not decode).
    pub fn parse(query_value: &str) -> Result<Self, ProtocolError> {
        let invalid = |field: &str| ProtocolError::InvalidFieldSelection {
            field: quote(field),
        };
        let text = percent_decode(query_value).ok_or_else(|| invalid(query_value))?;
        if text.trim().is_empty() {
            return Ok(Self::DEFAULT);
        }
        let mut bits = 0;
        for name in text.split(',').map(str::trim) {
            if name == "*" {
                bits |= Self::ALL.bits;
                continue;
            }
            let field = Field::ALL
                .into_iter()
                .find(|f| f.name() == name)
                .ok_or_else(|| invalid(name))?;
            bits |= field.bit();
        }
        Ok(Self { bits })
    }
}

impl Default for FieldSelection {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl fmt::Display for FieldSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Field::ALL
            .into_iter()
            .filter(|field| self.contains(*field))
            .map(Field::name)
            .collect();
        f.write_str(&names.join(","))
    }
}

impl fmt::Debug for FieldSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FieldSelection({self})")
    }
}

impl TryFrom<String> for FieldSelection {
    type Error = ProtocolError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<FieldSelection> for String {
    fn from(value: FieldSelection) -> Self {
        value.to_string()
    }
}

/// `%XX` escapes decoded and `+` read as a space, as a query string
/// encodes them; `None` for a bad escape or bytes that are not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selections_parse_in_any_order_and_print_in_resource_order() {
        let asked = FieldSelection::parse("size, md5Checksum,id,id").expect("valid");
        assert_eq!(asked.to_string(), "id,size,md5Checksum");
        assert_eq!(
            FieldSelection::parse("id%2Csize"),
            FieldSelection::parse("id,size")
        );
        assert_eq!(
            FieldSelection::parse("id,+size"),
            FieldSelection::parse("id,size")
        );
        assert_eq!(FieldSelection::parse(""), Ok(FieldSelection::DEFAULT));
        assert_eq!(FieldSelection::parse("*"), Ok(FieldSelection::ALL));
        assert_eq!(
            FieldSelection::ALL.to_string(),
            "kind,id,name,mimeType,size,md5Checksum,crc64nvme"
        );
        assert_eq!(FieldSelection::DEFAULT.to_string(), "kind,id,name,mimeType");
        for selection in [FieldSelection::DEFAULT, FieldSelection::ALL, asked] {
            assert_eq!(FieldSelection::parse(&selection.to_string()), Ok(selection));
        }
        assert_eq!(
            FieldSelection::for_digest(FileDigestKind::Md5).to_string(),
            "kind,id,name,mimeType,size,md5Checksum"
        );
        assert_eq!(
            FieldSelection::for_digest(FileDigestKind::Crc64Nvme).to_string(),
            "kind,id,name,mimeType,size,crc64nvme"
        );
    }

    #[test]
    fn unknown_names_are_an_invalid_field_selection() {
        for (given, named) in [
            ("id,owners", "owners"),
            ("ID", "ID"),
            ("id,", ""),
            ("files(id)", "files(id)"),
            ("capabilities/canEdit", "capabilities/canEdit"),
            ("md5checksum", "md5checksum"),
            ("%zz", "%zz"),
            ("%ff", "%ff"),
        ] {
            assert_eq!(
                FieldSelection::parse(given),
                Err(ProtocolError::InvalidFieldSelection {
                    field: named.to_owned()
                }),
                "{given:?}"
            );
        }
        let long = "x".repeat(1000);
        let Err(ProtocolError::InvalidFieldSelection { field }) = FieldSelection::parse(&long)
        else {
            panic!("a long unknown name is refused");
        };
        assert_eq!(field.len(), super::super::QUOTE_CHARS_MAX);
    }
}
