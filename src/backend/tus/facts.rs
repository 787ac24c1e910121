//! What a tus upload is beyond an upload of the chunk API: the headers it
//! was created with (echoed by HEAD, kept across a restart in its record),
//! its PATCH lock, and, for concatenation, a final upload's partials and
//! whether a partial is taken.

use super::super::upload::Upload;
use super::lock::PatchLock;
use crate::tus::{Concat, Metadata};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A tus upload's own, on its [`Upload`](super::super::upload::Upload).
pub(crate) struct TusUpload {
    /// `Upload-Metadata`, as created.
    pub metadata: Option<Metadata>,
    /// `Upload-Concat`, as created.
    pub concat: Option<Concat>,
    /// One PATCH at a time (not persisted: a restart ends every PATCH).
    pub lock: PatchLock,
    /// A final upload's partial uploads, in order (an upload may repeat);
    /// empty for any other upload, and for a final read back after a
    /// restart (its partials lived in memory).
    pub parts: Vec<Arc<Upload>>,
    /// A partial upload taken by a final one: no other final may take it,
    /// and it no longer expires on its own (it ends with its final).
    taken: AtomicBool,
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
        Self::of_parts(metadata, concat, Vec::new())
    }

    /// A new final upload's own, made of `parts`.
    pub fn of_parts(
        metadata: Option<Metadata>,
        concat: Option<Concat>,
        parts: Vec<Arc<Upload>>,
    ) -> Self {
        Self {
            metadata,
            concat,
            lock: PatchLock::default(),
            parts,
            taken: AtomicBool::new(false),
        }
    }

    /// Takes a partial upload for a final one: `false` if another has.
    pub fn take(&self) -> bool {
        !self.taken.swap(true, Ordering::AcqRel)
    }

    /// Gives a partial upload back (the final that took it was not made).
    pub fn give_back(&self) {
        self.taken.store(false, Ordering::Release);
    }

    /// Whether a final upload has taken this partial.
    pub fn is_taken(&self) -> bool {
        self.taken.load(Ordering::Acquire)
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

    /// Whether this is a partial upload (held in memory, never sent on
    /// its own).
    pub fn is_partial(&self) -> bool {
        matches!(self.concat, Some(Concat::Partial))
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
