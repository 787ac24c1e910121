//! What a tus upload is beyond an upload of the chunk API: the headers it
//! was created with (echoed by HEAD, kept across a restart in its record)
//! and its PATCH lock.

use super::lock::PatchLock;
use crate::tus::{Concat, Metadata};
use serde::{Deserialize, Serialize};

/// A tus upload's own, on its [`Upload`](super::super::upload::Upload).
#[derive(Debug)]
pub(crate) struct TusUpload {
    /// `Upload-Metadata`, as created.
    pub metadata: Option<Metadata>,
    /// `Upload-Concat`, as created.
    pub concat: Option<Concat>,
    /// One PATCH at a time (not persisted: a restart ends every PATCH).
    pub lock: PatchLock,
}

/// A tus upload's own, as persisted in its record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TusRecord {
    /// `Upload-Metadata` as the client sent it (validated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
    /// `Upload-Concat` as the client sent it (validated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concat: Option<String>,
}

impl TusUpload {
    /// A new tus upload's own.
    pub fn new(metadata: Option<Metadata>, concat: Option<Concat>) -> Self {
        Self {
            metadata,
            concat,
            lock: PatchLock::default(),
        }
    }

    /// The persistent form.
    pub fn record(&self) -> TusRecord {
        TusRecord {
            metadata: self.metadata.as_ref().map(|m| m.as_header().to_owned()),
            concat: self.concat.as_ref().map(|c| c.as_header().to_owned()),
        }
    }

    /// Read back from a record. A value that no longer parses (a record
    /// edited by hand) is dropped with a warning rather than failing the
    /// upload: HEAD then omits it.
    pub fn restored(record: &TusRecord) -> Self {
        let metadata = record.metadata.as_deref().and_then(|raw| {
            Metadata::parse(raw.as_bytes())
                .inspect_err(|e| tracing::warn!(error = %e, "a tus record's metadata is dropped"))
                .ok()
        });
        let concat = record.concat.as_deref().and_then(|raw| {
            Concat::parse(raw.as_bytes())
                .inspect_err(|e| tracing::warn!(error = %e, "a tus record's concat is dropped"))
                .ok()
        });
        Self::new(metadata, concat)
    }

    /// Whether this is a final upload (its bytes come from partials; no
    /// PATCH may write it).
    pub fn is_final(&self) -> bool {
        matches!(self.concat, Some(Concat::Final { .. }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips() {
        let tus = TusUpload::new(
            Some(Metadata::parse(b"filename YS5iaW4=").expect("valid")),
            Some(Concat::Partial),
        );
        let record = tus.record();
        let json = serde_json::to_string(&record).expect("serialises");
        assert_eq!(
            json,
            r#"{"metadata":"filename YS5iaW4=","concat":"partial"}"#
        );
        let back = TusUpload::restored(&serde_json::from_str(&json).expect("parses"));
        assert_eq!(back.metadata, tus.metadata);
        assert_eq!(back.concat, tus.concat);
    }

    #[test]
    fn a_record_that_no_longer_parses_loses_only_that_field() {
        let record = TusRecord {
            metadata: Some("a,,b".into()),
            concat: Some("partial".into()),
        };
        let back = TusUpload::restored(&record);
        assert_eq!(back.metadata, None);
        assert_eq!(back.concat, Some(Concat::Partial));
    }
}
