//! Admission shared by several backend replicas through Redis (issue 11).
//!
//! In process, one lock makes every admission decision atomic. Across
//! replicas the store takes that role: each decision is one Lua script run
//! by Redis, atomically, on the store's clock (`TIME`). Rooms:
//! - `lua/`: the scripts (`common.lua` is prepended to each);
//! - [`scripts`]: loading them and typing their replies;
//! - [`store`]: [`SlotStore`], the connection and one method per script;
//! - [`waiter`]: waiting FIFO across replicas (the rule is defined there);
//! - [`wake`]: waking waiters at a release (pub/sub);
//! - [`lease`]: [`HeldLease`], renewal, and when a lease counts as lost;
//! - [`admitter`]: [`SharedAdmitter`], the [`Admission`](super::Admission)
//!   built from those and the in-process memory check;
//! - [`config`], [`error`], [`metrics`].
//!
//! Invariants (the store's; each held by one script run):
//! - valid leases ≤ global limit, and a user's valid leases ≤ user limit,
//!   a lease being valid while its expiry (store clock) is in the future;
//! - a grant takes the global slot, the user slot and the quota charge in
//!   one step, or none of them;
//! - fencing tokens strictly increase under a prefix (one `INCR` counter,
//!   seeded at each generation's start × 1 000, so also across a store
//!   restart while the store's clock moves forward);
//! - a store that lost its data begins a new generation; a replica that saw
//!   an earlier one puts it in quarantine for one lease TTL at its first
//!   call (nothing new granted), while holders re-assert their leases
//!   (`lua/common.lua`, `begin`; README, "Several replicas", for the bound
//!   on over-admission);
//! - renew and release act only on the caller's own lease (token, replica
//!   and user must all match);
//! - the queue holds at most `waiters_max` tickets, and a ticket not polled
//!   within the waiter TTL is dropped.

pub mod admitter;
pub mod config;
pub mod error;
pub mod lease;
pub mod metrics;
pub mod scripts;
pub mod store;
pub mod waiter;
pub mod wake;

pub use admitter::SharedAdmitter;
pub use config::{
    SharedConfig, SharedConfigError, LEASE_TTL_DEFAULT, LEASE_TTL_MAX, LEASE_TTL_MIN,
};
pub use error::StoreError;
pub use lease::HeldLease;
pub use metrics::{LeaseCounts, SharedMetrics};
pub use scripts::{AcquireReply, Granted, RenewReply, StoreState, Waiting};
pub use store::{LeaseRecord, LeaseRequest, SlotStore};
pub use waiter::{POLL_INTERVAL_MAX, POLL_INTERVAL_MIN};
