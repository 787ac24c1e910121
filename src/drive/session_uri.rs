//! A session's URI ([`SessionUri`]), parsed once from the drive's
//! `Location` and carried by the backend until the upload ends.

use super::client_error::DriveError;
use super::protocol::{parse_upload_query, QUOTE_CHARS_MAX, UPLOAD_PATH};
use crate::ids::SessionId;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A session's URI, as the drive's `Location` gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SessionUri {
    uri: String,
    path_and_query: String,
    upload_id: SessionId,
}

impl SessionUri {
    /// Parses an absolute session URI: `http(s)://host/upload/drive/v3/files?…&upload_id=…`.
    pub fn parse(text: &str) -> Result<Self, DriveError> {
        let bad = |why: &str| DriveError::Protocol {
            reason: format!(
                "session URI {:?} {why}",
                text.chars().take(QUOTE_CHARS_MAX).collect::<String>()
            ),
        };
        let uri: http::Uri = text.parse().map_err(|_| bad("does not parse"))?;
        if uri.scheme().is_none() || uri.authority().is_none() {
            return Err(bad("is not absolute"));
        }
        if uri.path() != UPLOAD_PATH {
            return Err(bad("has the wrong path"));
        }
        let query =
            parse_upload_query(uri.query().unwrap_or_default()).map_err(|e| bad(&e.to_string()))?;
        let upload_id = query
            .upload_id
            .filter(|id| !id.is_empty())
            .ok_or_else(|| bad("has no upload_id"))?;
        let path_and_query = uri
            .path_and_query()
            .map(|pq| pq.as_str().to_owned())
            .ok_or_else(|| bad("has no path"))?;
        Ok(Self {
            uri: text.to_owned(),
            path_and_query,
            upload_id: SessionId::new(upload_id),
        })
    }

    /// The URI as given.
    pub fn as_str(&self) -> &str {
        &self.uri
    }

    /// The session's `upload_id`.
    pub fn upload_id(&self) -> &str {
        self.upload_id.as_str()
    }

    /// The session's id, typed: what the drive's commit log and journal
    /// records name the session by.
    pub fn session_id(&self) -> &SessionId {
        &self.upload_id
    }

    /// The path and query, what a request line carries.
    pub fn path_and_query(&self) -> &str {
        &self.path_and_query
    }
}

impl fmt::Display for SessionUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

impl TryFrom<String> for SessionUri {
    type Error = DriveError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<SessionUri> for String {
    fn from(value: SessionUri) -> Self {
        value.uri
    }
}
