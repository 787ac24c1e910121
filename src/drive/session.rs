//! The session table: every session by upload id, and where each is in
//! its life.
//!
//! # Implementation Details
//!
//! A session is `Open` while bytes are still expected and `Finished` once
//! its file is complete. An open session's storage handle is checked out
//! (`handle == None`) while one request streams a piece into it: requests
//! for one session are thereby serialised, and a second piece arriving
//! meanwhile is told the session is busy rather than interleaving bytes.
//! The rules a piece must follow are in [`super::piece`].

use super::protocol::{FieldSelection, FileResource};
use super::storage::StorageHandle;
use crate::ids::SessionId;
use crate::user::UserId;
use std::collections::BTreeMap;
use std::time::Duration;

/// Where a session is in its life.
pub enum SessionState {
    /// Bytes are expected. `handle` is `None` while a request has it checked
    /// out.
    Open {
        /// The session's storage, when no request is using it.
        handle: Option<Box<dyn StorageHandle>>,
    },
    /// The file is complete; every later PUT answers this resource.
    Finished(FileResource),
}

/// One upload session.
pub struct Session {
    /// The id of the file this session makes.
    pub file_id: String,
    /// The file's name.
    pub name: String,
    /// The file's MIME type.
    pub mime_type: String,
    /// The total, once the client has declared it.
    pub declared_total_bytes: Option<u64>,
    /// Bytes committed to storage.
    pub committed_bytes: u64,
    /// Clock time of the last request for this session.
    pub last_active_at: Duration,
    /// Who initiated it, when the emulator checks tokens: only they may
    /// use it (anyone else is told it does not exist).
    pub owner: Option<UserId>,
    /// The initiation's `fields=`: the file resource's fields the final
    /// reply carries, unless that PUT asks otherwise.
    pub fields: FieldSelection,
    /// Open or finished.
    pub state: SessionState,
}

impl Session {
    /// Whether the session has been idle longer than `ttl` at `now`. A session
    /// with a request in flight is never idle.
    pub fn is_expired(&self, now: Duration, ttl: Duration) -> bool {
        let busy = matches!(self.state, SessionState::Open { handle: None });
        !busy && now.saturating_sub(self.last_active_at) > ttl
    }

    /// Whether the file is complete.
    pub fn is_finished(&self) -> bool {
        matches!(self.state, SessionState::Finished(_))
    }
}

/// What a lookup found.
pub enum Lookup<'a> {
    /// A live session.
    Live(&'a mut Session),
    /// No such session (never created, or already dropped).
    Unknown,
    /// The session was idle past its ttl and has just been dropped; its
    /// handle (if open) is returned for discarding.
    Expired(Option<Box<dyn StorageHandle>>),
}

/// Every session by upload id. Ordered, so anything iterating it is
/// deterministic.
#[derive(Default)]
pub struct SessionTable {
    sessions: BTreeMap<SessionId, Session>,
}

impl SessionTable {
    /// Live sessions.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Adds a session. Returns it back if the id is taken.
    pub fn insert(&mut self, upload_id: SessionId, session: Session) -> Result<(), Box<Session>> {
        if self.sessions.contains_key(&upload_id) {
            return Err(Box::new(session));
        }
        self.sessions.insert(upload_id, session);
        Ok(())
    }

    /// Finds a live session, dropping it if it has expired at `now`.
    pub fn lookup(&mut self, upload_id: &SessionId, now: Duration, ttl: Duration) -> Lookup<'_> {
        let expired = match self.sessions.get(upload_id) {
            None => return Lookup::Unknown,
            Some(session) => session.is_expired(now, ttl),
        };
        if expired {
            return Lookup::Expired(self.remove(upload_id).into_handle());
        }
        match self.sessions.get_mut(upload_id) {
            Some(session) => Lookup::Live(session),
            None => Lookup::Unknown,
        }
    }

    /// A live session, without expiry checks.
    pub fn get_mut(&mut self, upload_id: &SessionId) -> Option<&mut Session> {
        self.sessions.get_mut(upload_id)
    }

    /// Removes a session, saying whether it was there and handing back its
    /// storage handle if it held one.
    pub fn remove(&mut self, upload_id: &SessionId) -> Removed {
        match self.sessions.remove(upload_id) {
            None => Removed::Absent,
            Some(session) => Removed::Was(match session.state {
                SessionState::Open { handle } => handle,
                SessionState::Finished(_) => None,
            }),
        }
    }

    /// Drops every session idle past `ttl` at `now`, in id order; returns
    /// their ids and handles.
    pub fn drop_idle(
        &mut self,
        now: Duration,
        ttl: Duration,
    ) -> Vec<(SessionId, Option<Box<dyn StorageHandle>>)> {
        self.remove_where(|s| s.is_expired(now, ttl))
    }

    /// Removes every session `doomed` picks, in id order; returns their ids
    /// and handles.
    fn remove_where(
        &mut self,
        doomed: impl Fn(&Session) -> bool,
    ) -> Vec<(SessionId, Option<Box<dyn StorageHandle>>)> {
        let ids: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| doomed(s))
            .map(|(id, _)| id.clone())
            .collect();
        ids.into_iter()
            .map(|id| {
                let handle = self.remove(&id).into_handle();
                (id, handle)
            })
            .collect()
    }

    /// Drops every session that is not finished, in id order; returns their
    /// ids and handles (`None` for a checked-out one: its request discards it
    /// when it finds the session gone).
    pub fn drop_unfinished(&mut self) -> Vec<(SessionId, Option<Box<dyn StorageHandle>>)> {
        self.remove_where(|s| !s.is_finished())
    }
}

/// What [`SessionTable::remove`] found.
pub enum Removed {
    /// No such session.
    Absent,
    /// The session was there. Its storage handle, if it was open and the
    /// handle was not checked out by a request (a finished session, or one
    /// whose handle a request holds, hands back none).
    Was(Option<Box<dyn StorageHandle>>),
}

impl Removed {
    /// Whether there was such a session.
    pub fn existed(&self) -> bool {
        matches!(self, Self::Was(_))
    }

    /// The storage handle to discard, if any.
    pub fn into_handle(self) -> Option<Box<dyn StorageHandle>> {
        match self {
            Self::Absent => None,
            Self::Was(handle) => handle,
        }
    }
}
