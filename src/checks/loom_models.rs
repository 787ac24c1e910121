//! loom models of the permit layer, parameterised by the implementation
//! under test; run by plain `cargo test` (`sims/loom_models.rs`, against
//! production) and by `upsim zoo` (against production and every mutant).
//!
//! The mechanism: [`Permits`] is generic over a
//! [`SyncFacade`](crate::admission::sync::SyncFacade). [`LoomSync`]
//! implements the facade with `loom::sync::Mutex`, so `Permits<LoomSync>` is
//! the production permit code (ledger, wakers, cancellation) with every lock
//! acquisition a loom scheduling point. The zoo's mutants are generic over
//! the same facade. No `--cfg loom`, no environment variables: loom explores
//! the interleavings of these threads inside each model's `check`.
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
//! 2-core machine for production (each extra preemption costs ~8×, see
//! CALIBRATION.md).
//!
//! The admission fast path ([`PermitGate::acquire_or_queue`]: a grant made
//! in the step that queues the request is claimed under that same lock) is
//! explored by each model again with every wait-for-a-grant going through
//! it ([`Via::FastPath`], the `*_fast_path` models), and by one model of its
//! own, [`FAST_PATH_NEVER_PASSES_A_WAITER`]. The `Via::Queue` models are the
//! ones `upsim zoo` runs (its mutants have no fast path of their own: the
//! trait's default queues).
//!
//! A model that finds a bug panics (an assertion, or loom's "deadlock"
//! report when every thread waits: a lost wake-up or a leaked slot). The
//! zoo catches that panic; `cargo test` reports it.

use crate::admission::gate::{BoxGrantFuture, PermitGate};
use crate::admission::sync::LoomSync;
use crate::admission::{Acquired, Grant, Limits, Permits, SlotRequest};
use crate::env::UtcDay;
use crate::user::UserId;
use loom::thread;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

/// Builds the permit layer under test on loom's primitives, for `limits`.
/// Called once per explored interleaving, inside the model.
pub type NewGate = fn(Limits) -> Arc<dyn PermitGate>;

/// Production's permit layer on loom's primitives.
pub fn production(limits: Limits) -> Arc<dyn PermitGate> {
    Permits::<LoomSync>::new(limits)
}

/// How a model's uploads ask for their slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// [`PermitGate::acquire`], then wait on the future (every grant is
    /// claimed by a poll).
    Queue,
    /// [`PermitGate::acquire_or_queue`]: a grant made at once is handed
    /// back without a future (the fast path the `Admitter` takes); else
    /// wait on the future.
    FastPath,
}

/// One loom model.
#[derive(Debug, Clone, Copy)]
pub struct LoomModel {
    /// Its name, as tests and the zoo report it.
    pub name: &'static str,
    /// The preemption bound it is explored to (see the module docs).
    pub preemption_bound: usize,
    /// How its uploads ask for slots.
    pub via: Via,
    body: fn(NewGate, Via),
}

impl LoomModel {
    /// Explores every interleaving up to the bound, on the gates `new_gate`
    /// builds. Returns the number of interleavings explored.
    ///
    /// # Panics
    /// At the first interleaving that breaks an assertion or deadlocks,
    /// with the model's message.
    pub fn check(&self, new_gate: NewGate) -> usize {
        let iterations = Arc::new(AtomicUsize::new(0));
        self.check_counting(new_gate, &iterations);
        iterations.load(Ordering::Relaxed)
    }

    /// As [`check`](Self::check), counting interleavings in `iterations`
    /// as it goes, so a caller that catches the panic knows how many it
    /// took.
    pub fn check_counting(&self, new_gate: NewGate, iterations: &Arc<AtomicUsize>) {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(self.preemption_bound);
        let (body, via, iterations) = (self.body, self.via, Arc::clone(iterations));
        builder.check(move || {
            iterations.fetch_add(1, Ordering::Relaxed);
            body(new_gate, via);
        });
    }
}

/// The models through the queue ([`Via::Queue`]), in the order they were
/// first written (`upsim zoo` orders its checks by cost instead).
pub const MODELS: [LoomModel; 4] = [
    CONCURRENT_ADMISSIONS,
    POLLED_ONCE_THEN_DROPPED,
    NO_GLOBAL_SLOT_WHILE_WAITING,
    MEMORY_WITH_SLOTS,
];

/// The fast-path models: each of [`MODELS`] through the fast path, and the
/// fast path's own.
pub const FAST_PATH_MODELS: [LoomModel; 5] = [
    CONCURRENT_ADMISSIONS_FAST_PATH,
    POLLED_ONCE_THEN_DROPPED_FAST_PATH,
    NO_GLOBAL_SLOT_WHILE_WAITING_FAST_PATH,
    MEMORY_WITH_SLOTS_FAST_PATH,
    FAST_PATH_NEVER_PASSES_A_WAITER,
];

/// Three uploads (two of one user) against global 2 / user 1: limits hold at
/// every step, everything comes back. Bound 4 (module docs).
pub const CONCURRENT_ADMISSIONS: LoomModel = LoomModel {
    name: "concurrent_admissions_stay_within_limits",
    preemption_bound: 4,
    via: Via::Queue,
    body: concurrent_admissions_stay_within_limits,
};

/// An acquire polled once and then dropped while another thread releases the
/// slot it waits for: whatever the release granted it comes back, and the
/// third waiter is not left asleep (a lost wake-up deadlocks the model).
/// Bound 4: the release, the drop and the third waiter's registration are
/// three critical sections racing (module docs).
pub const POLLED_ONCE_THEN_DROPPED: LoomModel = LoomModel {
    name: "acquire_polled_once_then_dropped_while_another_releases",
    preemption_bound: 4,
    via: Via::Queue,
    body: acquire_polled_once_then_dropped_while_another_releases,
};

/// Two users, global 2 / user 1: while `a` holds its one slot, a second
/// upload of `a` waits — and must not hold a global slot while waiting, or
/// `b` (which needs the second global slot) would deadlock the model. Bound
/// 4 (module docs); the race is a's queueing against b's request.
pub const NO_GLOBAL_SLOT_WHILE_WAITING: LoomModel = LoomModel {
    name: "a_user_at_its_limit_never_holds_a_global_slot_while_it_waits",
    preemption_bound: 4,
    via: Via::Queue,
    body: a_user_at_its_limit_never_holds_a_global_slot_while_it_waits,
};

/// Memory reservations move with the slots, in the same step: two uploads of
/// 60 bytes under a 100-byte budget and 2 global slots run one at a time,
/// and an observer never sees slots without their memory or memory without
/// its slot. Bound 4: two acquire/release pairs and the observer's read.
pub const MEMORY_WITH_SLOTS: LoomModel = LoomModel {
    name: "memory_reservation_is_released_together_with_the_slots",
    preemption_bound: 4,
    via: Via::Queue,
    body: memory_reservation_is_released_together_with_the_slots,
};

/// [`CONCURRENT_ADMISSIONS`] through the fast path.
pub const CONCURRENT_ADMISSIONS_FAST_PATH: LoomModel = LoomModel {
    name: "concurrent_admissions_stay_within_limits_fast_path",
    via: Via::FastPath,
    ..CONCURRENT_ADMISSIONS
};

/// [`POLLED_ONCE_THEN_DROPPED`] with the holder and the third waiter
/// through the fast path (the cancelled request still queues: it is the
/// poll-once-then-drop case).
pub const POLLED_ONCE_THEN_DROPPED_FAST_PATH: LoomModel = LoomModel {
    name: "acquire_polled_once_then_dropped_while_another_releases_fast_path",
    via: Via::FastPath,
    ..POLLED_ONCE_THEN_DROPPED
};

/// [`NO_GLOBAL_SLOT_WHILE_WAITING`] through the fast path.
pub const NO_GLOBAL_SLOT_WHILE_WAITING_FAST_PATH: LoomModel = LoomModel {
    name: "a_user_at_its_limit_never_holds_a_global_slot_while_it_waits_fast_path",
    via: Via::FastPath,
    ..NO_GLOBAL_SLOT_WHILE_WAITING
};

/// [`MEMORY_WITH_SLOTS`] through the fast path.
pub const MEMORY_WITH_SLOTS_FAST_PATH: LoomModel = LoomModel {
    name: "memory_reservation_is_released_together_with_the_slots_fast_path",
    via: Via::FastPath,
    ..MEMORY_WITH_SLOTS
};

/// A fast-path request racing a release and the waiter that release
/// grants: `b` waits for memory behind `a`; `c`, which would fit beside
/// `a`, asks through the fast path while another thread releases `a`.
/// FIFO: `c` is granted only once `b` no longer waits, whichever comes
/// first. A fast path that grants from the free counters without looking
/// at the queue fails it. Bound 4: the release, b's claim and c's
/// request-or-take (and its claim) are the critical sections racing.
pub const FAST_PATH_NEVER_PASSES_A_WAITER: LoomModel = LoomModel {
    name: "a_fast_path_grant_never_passes_a_queued_waiter",
    preemption_bound: 4,
    via: Via::FastPath,
    body: a_fast_path_grant_never_passes_a_queued_waiter,
};

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

fn queue(gate: &Arc<dyn PermitGate>, user: &str, memory_bytes: u64) -> Queued {
    let fut = Arc::clone(gate)
        .acquire(request(user, memory_bytes))
        .expect("not refused");
    Queued(Some(fut))
}

/// A queued request that, dropped while its thread unwinds from a failed
/// model, is leaked instead of dropped. Its drop takes the gate's lock, and
/// after loom has declared a deadlock no thread may take a lock: loom would
/// panic again inside the drop, and a panic during unwinding aborts the
/// process instead of failing the model. The model has failed by then;
/// what the request held no longer matters.
struct Queued(Option<BoxGrantFuture>);

impl Future for Queued {
    type Output = Grant;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Grant> {
        self.0
            .as_mut()
            .expect("a Queued request holds its future until dropped")
            .as_mut()
            .poll(cx)
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        if std::thread::panicking() {
            std::mem::forget(self.0.take());
        }
    }
}

/// Gets a grant on the current loom thread, waiting if need be, the way
/// `via` says.
fn acquire(gate: &Arc<dyn PermitGate>, via: Via, user: &str, memory_bytes: u64) -> Grant {
    match via {
        Via::Queue => block_on(queue(gate, user, memory_bytes)),
        Via::FastPath => match Arc::clone(gate)
            .acquire_or_queue(request(user, memory_bytes))
            .expect("not refused")
        {
            Acquired::Granted(grant) => grant,
            Acquired::Queued(fut) => block_on(Queued(Some(fut))),
        },
    }
}

/// A waker that notifies a loom `Notify`.
struct NotifyWaker(loom::sync::Notify);

impl Wake for NotifyWaker {
    fn wake(self: Arc<Self>) {
        self.0.notify();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.notify();
    }
}

/// Drives `f` to completion on the current loom thread, as
/// `loom::future::block_on` does (including loom's spurious wake-ups of a
/// waiting thread), but with the waker behind a std `Arc`. loom's own
/// `block_on` keeps its waker in a loom `Arc`, whose drop is a scheduling
/// point: when loom declares a deadlock, that drop runs during unwinding
/// with no thread active, panics again, and the process aborts instead of
/// the model failing. A model must be able to fail: that is what the zoo
/// checks.
fn block_on<F: Future>(f: F) -> F::Output {
    let notify = Arc::new(NotifyWaker(loom::sync::Notify::new()));
    let waker = Waker::from(Arc::clone(&notify));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(output) = f.as_mut().poll(&mut cx) {
            return output;
        }
        notify.0.wait();
    }
}

fn assert_idle(gate: &dyn PermitGate) {
    assert_eq!(gate.check(), Ok(()), "an invariant broke");
    let state = gate.state();
    assert!(
        state.is_idle(),
        "not everything was given back: {} global slots, {:?}, {} bytes, {} waiting: {state:?}",
        state.global_in_use,
        state.user_in_use,
        state.reserved_bytes,
        state.waiting
    );
}

fn concurrent_admissions_stay_within_limits(new_gate: NewGate, via: Via) {
    let gate = new_gate(limits(2, 1, u64::MAX));
    let workers: Vec<_> = ["a", "a"]
        .into_iter()
        .map(|user| {
            let gate = gate.clone();
            thread::spawn(move || {
                let grant = acquire(&gate, via, user, 1);
                let state = gate.state();
                assert!(
                    state.global_in_use <= 2,
                    "{} global slots in use, limit 2: {state:?}",
                    state.global_in_use
                );
                assert!(
                    state.user_in_use.values().all(|&n| n <= 1),
                    "a user over its limit of 1, {:?}: {state:?}",
                    state.user_in_use
                );
                gate.release(grant, false);
            })
        })
        .collect();
    let grant = acquire(&gate, via, "b", 1);
    assert!(gate.state().global_in_use <= 2);
    gate.release(grant, false);
    for w in workers {
        w.join().expect("worker finished");
    }
    assert_idle(&*gate);
}

fn acquire_polled_once_then_dropped_while_another_releases(new_gate: NewGate, via: Via) {
    let gate = new_gate(limits(1, 1, u64::MAX));
    let held = acquire(&gate, via, "a", 1);
    let canceller = {
        let gate = gate.clone();
        thread::spawn(move || {
            let mut fut = queue(&gate, "b", 1);
            let polled = Pin::new(&mut fut).poll(&mut Context::from_waker(Waker::noop()));
            match polled {
                // The release may come first and grant it: give it back.
                Poll::Ready(grant) => gate.release(grant, true),
                Poll::Pending => drop(fut),
            }
        })
    };
    let waiter = {
        let gate = gate.clone();
        thread::spawn(move || {
            let grant = acquire(&gate, via, "c", 1);
            gate.release(grant, false);
        })
    };
    gate.release(held, false);
    canceller.join().expect("canceller finished");
    waiter.join().expect("waiter was woken");
    assert_idle(&*gate);
}

fn a_user_at_its_limit_never_holds_a_global_slot_while_it_waits(new_gate: NewGate, via: Via) {
    let gate = new_gate(limits(2, 1, u64::MAX));
    let a1 = acquire(&gate, via, "a", 1);
    let a2 = {
        let gate = gate.clone();
        thread::spawn(move || {
            let grant = acquire(&gate, via, "a", 1);
            gate.release(grant, false);
        })
    };
    let b = {
        let gate = gate.clone();
        thread::spawn(move || {
            let grant = acquire(&gate, via, "b", 1);
            let state = gate.state();
            // a1 and b hold the two global slots; a2 holds nothing.
            assert_eq!(state.global_in_use, 2, "{state:?}");
            gate.release(grant, false);
        })
    };
    b.join().expect("b was never starved by a waiting a");
    let state = gate.state();
    assert_eq!(state.global_in_use, 1, "only a1 holds a slot: {state:?}");
    gate.release(a1, false);
    a2.join().expect("a2 was woken");
    assert_idle(&*gate);
}

fn memory_reservation_is_released_together_with_the_slots(new_gate: NewGate, via: Via) {
    let gate = new_gate(limits(2, 2, 100));
    let worker = {
        let gate = gate.clone();
        thread::spawn(move || {
            let grant = acquire(&gate, via, "a", 60);
            assert_eq!(gate.state().reserved_bytes, 60);
            gate.release(grant, false);
        })
    };
    let observer = {
        let gate = gate.clone();
        thread::spawn(move || {
            let state = gate.state();
            assert_eq!(
                state.reserved_bytes,
                60 * u64::from(state.global_in_use),
                "{state:?}"
            );
            assert!(state.reserved_bytes <= 100);
        })
    };
    let grant = acquire(&gate, via, "b", 60);
    assert_eq!(
        gate.state().global_in_use,
        1,
        "the budget admits one at a time"
    );
    gate.release(grant, false);
    worker.join().expect("worker finished");
    observer.join().expect("observer finished");
    assert_idle(&*gate);
}

fn a_fast_path_grant_never_passes_a_queued_waiter(new_gate: NewGate, via: Via) {
    let gate = new_gate(limits(2, 1, 100));
    let a = acquire(&gate, via, "a", 60);
    // b needs 60 more bytes than the 100 there are beside a: it waits.
    let b = queue(&gate, "b", 60);
    assert_eq!(gate.state().waiting, 1, "b waits for a's memory");
    let b = thread::spawn({
        let gate = gate.clone();
        move || {
            let grant = block_on(b);
            gate.release(grant, false);
        }
    });
    let releaser = thread::spawn({
        let gate = gate.clone();
        move || gate.release(a, false)
    });
    // c's 30 bytes fit beside a's 60 and a global slot is free, but b is
    // ahead of it for memory.
    let c = acquire(&gate, via, "c", 30);
    let state = gate.state();
    assert_eq!(
        state.waiting, 0,
        "c was granted while b, queued before it, still waited: {state:?}"
    );
    gate.release(c, false);
    releaser.join().expect("releaser finished");
    b.join().expect("b was woken");
    assert_idle(&*gate);
}
