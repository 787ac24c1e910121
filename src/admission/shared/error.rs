//! [`StoreError`]: why the shared slot store could not decide. Admission
//! turns every one of them into a refusal
//! ([`AdmissionError::SlotStoreUnavailable`](crate::admission::AdmissionError::SlotStoreUnavailable)),
//! never into a grant on a guess.

use serde::Serialize;

/// The store did not give a usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(tag = "store_error", rename_all = "snake_case")]
pub enum StoreError {
    /// No connection, or the connection broke or timed out.
    #[error("slot store {address} unreachable: {reason}")]
    Unreachable {
        /// `host:port` of the store (never its password).
        address: String,
        /// What the client said.
        reason: String,
    },
    /// The store answered a script with an error.
    #[error("slot store script {script} failed: {reason}")]
    Script {
        /// Which script.
        script: &'static str,
        /// The store's error.
        reason: String,
    },
    /// A script's reply is not one it can give (a bug, or a different
    /// script under the same name).
    #[error("slot store script {script} replied {reply:?}, which it never does")]
    BadReply {
        /// Which script.
        script: &'static str,
        /// The reply as received.
        reply: Vec<i64>,
    },
    /// A waiter's ticket is gone from the store's queue: it was not polled
    /// within the waiter TTL (a long pause), or the store lost its data.
    #[error("waiter ticket {ticket} is no longer in the slot store's queue")]
    TicketLost {
        /// The ticket.
        ticket: u64,
    },
}

impl StoreError {
    /// Whether the connection should be dropped and made again.
    pub fn is_connection(&self) -> bool {
        matches!(self, Self::Unreachable { .. })
    }
}
