//! A circuit breaker on the drive link.
//!
//! After [`Breaker::failures_max`] consecutive drive failures the breaker
//! opens: new uploads are refused at once with `drive_unavailable` (instead
//! of taking slots for uploads that cannot finish). After the cool-down one
//! request is let through as a probe (half-open); its success closes the
//! breaker, its failure opens it again for another cool-down.
//!
//! Invariant: while open and cooling down, [`Breaker::admit`] refuses.

use std::time::Duration;

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum BreakerState {
    /// Normal operation.
    Closed {
        /// Drive failures in a row so far.
        consecutive_failures: u32,
    },
    /// Refusing until `until_ms`.
    Open {
        /// Clock time (ms) when a probe may go.
        until_ms: u64,
        /// Failures that opened it.
        consecutive_failures: u32,
    },
    /// One probe is in flight.
    HalfOpen,
}

/// Refused because the drive is failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriveUnavailable {
    /// Consecutive failures seen.
    pub consecutive_failures: u32,
    /// How long until a probe may go.
    pub retry_after: Duration,
}

/// The breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    failures_max: u32,
    cool_down: Duration,
    state: BreakerState,
}

impl Breaker {
    /// Opens after `failures_max` (≥ 1) failures in a row, for `cool_down`.
    pub fn new(failures_max: u32, cool_down: Duration) -> Self {
        Self {
            failures_max: failures_max.max(1),
            cool_down,
            state: BreakerState::Closed {
                consecutive_failures: 0,
            },
        }
    }

    /// Failures in a row that open the breaker.
    pub fn failures_max(&self) -> u32 {
        self.failures_max
    }

    /// The state now.
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// May a new upload start now (`now` is clock time)? In the half-open
    /// state only the first caller gets through, as the probe.
    pub fn admit(&mut self, now: Duration) -> Result<(), DriveUnavailable> {
        let now_ms = u64::try_from(now.as_millis()).unwrap_or(u64::MAX);
        match self.state {
            BreakerState::Closed { .. } => Ok(()),
            BreakerState::Open {
                until_ms,
                consecutive_failures,
            } if now_ms < until_ms => Err(DriveUnavailable {
                consecutive_failures,
                retry_after: Duration::from_millis(until_ms - now_ms),
            }),
            BreakerState::Open { .. } => {
                self.state = BreakerState::HalfOpen;
                Ok(())
            }
            BreakerState::HalfOpen => Err(DriveUnavailable {
                consecutive_failures: self.failures_max,
                retry_after: self.cool_down,
            }),
        }
    }

    /// A drive request succeeded.
    pub fn success(&mut self) {
        self.state = BreakerState::Closed {
            consecutive_failures: 0,
        };
    }

    /// A drive request failed at `now`.
    pub fn failure(&mut self, now: Duration) {
        let until_ms = u64::try_from((now + self.cool_down).as_millis()).unwrap_or(u64::MAX);
        self.state = match self.state {
            BreakerState::Closed {
                consecutive_failures,
            } if consecutive_failures + 1 < self.failures_max => BreakerState::Closed {
                consecutive_failures: consecutive_failures + 1,
            },
            BreakerState::Closed {
                consecutive_failures,
            } => BreakerState::Open {
                until_ms,
                consecutive_failures: consecutive_failures + 1,
            },
            BreakerState::Open {
                consecutive_failures,
                ..
            } => BreakerState::Open {
                until_ms,
                consecutive_failures: consecutive_failures + 1,
            },
            BreakerState::HalfOpen => BreakerState::Open {
                until_ms,
                consecutive_failures: self.failures_max,
            },
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn opens_after_failures_and_probes_after_cool_down() {
        let mut b = Breaker::new(3, 10 * S);
        b.failure(S);
        b.failure(S);
        assert_eq!(b.admit(S), Ok(()));
        b.failure(2 * S);
        let refused = b.admit(3 * S);
        assert_eq!(
            refused,
            Err(DriveUnavailable {
                consecutive_failures: 3,
                retry_after: 9 * S
            })
        );
        assert_eq!(b.admit(12 * S), Ok(()), "the probe goes");
        assert!(b.admit(12 * S).is_err(), "only one probe");
        b.failure(13 * S);
        assert!(b.admit(20 * S).is_err());
        assert_eq!(b.admit(23 * S), Ok(()));
        b.success();
        assert_eq!(b.admit(23 * S), Ok(()));
        assert_eq!(
            b.state(),
            BreakerState::Closed {
                consecutive_failures: 0
            }
        );
    }

    #[test]
    fn a_success_resets_the_count() {
        let mut b = Breaker::new(2, S);
        b.failure(S);
        b.success();
        b.failure(S);
        assert_eq!(b.admit(S), Ok(()));
    }
}
