//! loom models of the permit core, run by plain `cargo test`.
//!
//! The mechanism: [`upsim::admission::Permits`] is generic over a
//! [`SyncFacade`]. Here the facade is implemented with `loom::sync::Mutex`,
//! so `Permits<LoomSync>` is the production permit code (ledger, wakers,
//! cancellation) with every lock acquisition a loom scheduling point. No
//! `--cfg loom`, no environment variables: loom explores the interleavings
//! of these threads inside each `model` call.
//!
//! Each model asserts bounds inside the threads and conservation at the end
//! (everything back to zero, no invariant violation recorded), and states
//! its preemption bound. Why bounded: the interesting interleavings here are
//! a release racing a registration or a cancellation — a race between two
//! lock acquisitions, which needs one preemption to expose. Every model has
//! at most three threads with at most three critical sections each (request,
//! claim, release or cancel), and a bound of 4 lets any one thread be
//! preempted at each of its critical sections, so every relative order of
//! those sections is explored. All four models together take ~2 s on the
//! 2-core machine (each extra preemption costs ~8×, see CALIBRATION.md).
//!
//! Mutation check, done by hand when these models were written: removing
//! the scan from `Ledger::release` (a lost wake-up) fails all four models
//! (loom reports the deadlock).

use loom::thread;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use upsim::admission::sync::{FacadeMutex, SyncFacade};
use upsim::admission::{Grant, Limits, Permits, SlotRequest};
use upsim::env::UtcDay;
use upsim::user::UserId;

/// loom's primitives behind the permit core's facade.
struct LoomSync;

struct LoomMutex<T>(loom::sync::Mutex<T>);

impl<T: Send> FacadeMutex<T> for LoomMutex<T> {
    fn new(value: T) -> Self {
        Self(loom::sync::Mutex::new(value))
    }

    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        // loom's mutex poisons only if a model thread panicked, which has
        // already failed the model.
        let mut guard = self
            .0
            .lock()
            .expect("loom mutex poisoned by a failed model thread");
        f(&mut guard)
    }
}

impl SyncFacade for LoomSync {
    type Mutex<T: Send + 'static> = LoomMutex<T>;
}

type LoomPermits = Permits<LoomSync>;

fn limits(global_slots: u32, user_slots: u32, memory_budget_bytes: u64) -> Limits {
    Limits {
        global_slots,
        user_slots,
        memory_budget_bytes,
        waiters_max: 16,
        daily_limit_bytes: Some(1_000),
    }
}

fn request(user: &str, memory_bytes: u64) -> SlotRequest {
    SlotRequest {
        user: UserId::new(user).expect("valid id"),
        memory_bytes,
        memory_ceiling_bytes: u64::MAX,
        quota_bytes: 10,
        day: UtcDay(0),
    }
}

/// Waits for a grant on the current loom thread.
fn acquire(permits: &Arc<LoomPermits>, user: &str, memory_bytes: u64) -> Grant {
    let acquire = permits
        .request(request(user, memory_bytes))
        .expect("not refused");
    loom::future::block_on(acquire)
}

fn model(preemption_bound: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(preemption_bound);
    builder.check(f);
}

fn assert_idle(permits: &LoomPermits) {
    assert_eq!(permits.check(), Ok(()));
    let state = permits.state();
    assert!(state.is_idle(), "not everything was given back: {state:?}");
}

/// Three uploads (two of one user) against global 2 / user 1: limits hold at
/// every step, everything comes back. Bound 4 (module docs).
#[test]
fn concurrent_admissions_stay_within_limits() {
    model(4, || {
        let permits = LoomPermits::new(limits(2, 1, u64::MAX));
        let workers: Vec<_> = ["a", "a"]
            .into_iter()
            .map(|user| {
                let permits = permits.clone();
                thread::spawn(move || {
                    let grant = acquire(&permits, user, 1);
                    let state = permits.state();
                    assert!(state.global_in_use <= 2, "{state:?}");
                    assert!(state.user_in_use.values().all(|&n| n <= 1), "{state:?}");
                    permits.release(grant, false);
                })
            })
            .collect();
        let grant = acquire(&permits, "b", 1);
        assert!(permits.state().global_in_use <= 2);
        permits.release(grant, false);
        for w in workers {
            w.join().expect("worker finished");
        }
        assert_idle(&permits);
    });
}

/// An acquire polled once and then dropped while another thread releases the
/// slot it waits for: whatever the release granted it comes back, and the
/// third waiter is not left asleep (a lost wake-up deadlocks the model).
/// Bound 4: the release, the drop and the third waiter's registration are
/// three critical sections racing (module docs).
#[test]
fn acquire_polled_once_then_dropped_while_another_releases() {
    model(4, || {
        let permits = LoomPermits::new(limits(1, 1, u64::MAX));
        let held = acquire(&permits, "a", 1);
        let canceller = {
            let permits = permits.clone();
            thread::spawn(move || {
                let mut fut = permits.request(request("b", 1)).expect("not refused");
                let polled =
                    std::pin::Pin::new(&mut fut).poll(&mut Context::from_waker(Waker::noop()));
                match polled {
                    // The release may come first and grant it: give it back.
                    Poll::Ready(grant) => permits.release(grant, true),
                    Poll::Pending => drop(fut),
                }
            })
        };
        let waiter = {
            let permits = permits.clone();
            thread::spawn(move || {
                let grant = acquire(&permits, "c", 1);
                permits.release(grant, false);
            })
        };
        permits.release(held, false);
        canceller.join().expect("canceller finished");
        waiter.join().expect("waiter was woken");
        assert_idle(&permits);
    });
}

/// Two users, global 2 / user 1: while `a` holds its one slot, a second
/// upload of `a` waits — and must not hold a global slot while waiting, or
/// `b` (which needs the second global slot) would deadlock the model. Bound
/// 4 (module docs); the race is a's queueing against b's request.
#[test]
fn a_user_at_its_limit_never_holds_a_global_slot_while_it_waits() {
    model(4, || {
        let permits = LoomPermits::new(limits(2, 1, u64::MAX));
        let a1 = acquire(&permits, "a", 1);
        let a2 = {
            let permits = permits.clone();
            thread::spawn(move || {
                let grant = acquire(&permits, "a", 1);
                permits.release(grant, false);
            })
        };
        let b = {
            let permits = permits.clone();
            thread::spawn(move || {
                let grant = acquire(&permits, "b", 1);
                let state = permits.state();
                // a1 and b hold the two global slots; a2 holds nothing.
                assert_eq!(state.global_in_use, 2, "{state:?}");
                permits.release(grant, false);
            })
        };
        b.join().expect("b was never starved by a waiting a");
        let state = permits.state();
        assert_eq!(state.global_in_use, 1, "only a1 holds a slot: {state:?}");
        permits.release(a1, false);
        a2.join().expect("a2 was woken");
        assert_idle(&permits);
    });
}

/// Memory reservations move with the slots, in the same step: two uploads of
/// 60 bytes under a 100-byte budget and 2 global slots run one at a time,
/// and an observer never sees slots without their memory or memory without
/// its slot. Bound 4: two acquire/release pairs and the observer's read.
#[test]
fn memory_reservation_is_released_together_with_the_slots() {
    model(4, || {
        let permits = LoomPermits::new(limits(2, 2, 100));
        let worker = {
            let permits = permits.clone();
            thread::spawn(move || {
                let grant = acquire(&permits, "a", 60);
                assert_eq!(permits.state().reserved_bytes, 60);
                permits.release(grant, false);
            })
        };
        let observer = {
            let permits = permits.clone();
            thread::spawn(move || {
                let state = permits.state();
                assert_eq!(
                    state.reserved_bytes,
                    60 * u64::from(state.global_in_use),
                    "{state:?}"
                );
                assert!(state.reserved_bytes <= 100);
            })
        };
        let grant = acquire(&permits, "b", 60);
        assert_eq!(
            permits.state().global_in_use,
            1,
            "the budget admits one at a time"
        );
        permits.release(grant, false);
        worker.join().expect("worker finished");
        observer.join().expect("observer finished");
        assert_idle(&permits);
    });
}
