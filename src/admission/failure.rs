//! [`AdmitFailure`]: what [`Admission::admit`](super::Admission::admit)
//! fails with.
//!
//! Production's [`Admitter`](super::Admitter) only ever refuses with a
//! typed [`AdmissionError`] (its own [`admit`](super::Admitter::admit) says
//! so in its type). The trait is wider on purpose: an implementation that
//! throws its cause away — the bug zoo's masked-error mutant, the original
//! manager's `except Exception: return False` — must still be runnable
//! under the real backend, so that the harness can show it is caught.

use super::error::AdmissionError;

/// Why an [`Admission`](super::Admission) implementation did not admit an
/// upload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmitFailure {
    /// Refused, with the cause and its numbers.
    #[error(transparent)]
    Refused(#[from] AdmissionError),
    /// Refused without a cause: all the original manager's `return False`
    /// told its caller. Production never returns it; the simulation
    /// oracle's `typed_cause` check flags it wherever it surfaces.
    #[error("upload slot not acquired")]
    Unexplained,
}

impl AdmitFailure {
    /// The cause's stable name: the refusal's, or `unexplained`.
    pub fn cause(&self) -> &'static str {
        match self {
            Self::Refused(e) => e.cause(),
            Self::Unexplained => "unexplained",
        }
    }

    /// Whether the same request may succeed later (the client may retry).
    /// A bare failure says nothing, so it is not.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Refused(e) => e.is_transient(),
            Self::Unexplained => false,
        }
    }

    /// The typed refusal, if it is one.
    pub fn refusal(&self) -> Option<&AdmissionError> {
        match self {
            Self::Refused(e) => Some(e),
            Self::Unexplained => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This is a regression test that ensures a failure says what the
    /// refusal it wraps says (transient or not, the refusal itself), and a
    /// bare failure is neither transient nor a refusal.
    #[test]
    fn a_failure_is_as_transient_as_its_refusal_and_a_bare_one_is_not() {
        for e in AdmissionError::one_of_each() {
            let failure = AdmitFailure::Refused(e.clone());
            assert_eq!(failure.is_transient(), e.is_transient(), "{e}");
            assert_eq!(failure.refusal(), Some(&e));
        }
        assert!(!AdmitFailure::Unexplained.is_transient());
        assert_eq!(AdmitFailure::Unexplained.refusal(), None);
    }
}
