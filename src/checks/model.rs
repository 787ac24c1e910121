//! A proptest state-machine model of admission, with shrinking,
//! parameterised by the admission implementation under test; run by plain
//! `cargo test` (`sims/admission_model.rs`, against production) and by
//! `upsim zoo` (against production and every mutant).
//!
//! The system under test is an [`Admission`] built by an
//! [`AdmissionFactory`] (production: the [`Admitter`](crate::admission::Admitter)
//! — ledger, permits, controller) on a [`ManualClock`] and a
//! [`ScriptedMemory`], its futures polled by hand. The reference is a
//! deliberately naive model of the same rules: plain vectors, a linear scan,
//! no locks; its decisions are [`Rules`]' (shared with the simulation's
//! lock-step check), its bookkeeping is its own. Random sequences of admit, release (completed or failed),
//! cancel, time passing (timeouts), memory changes and day rollovers run
//! against both; after every step the outcomes of the step (with their
//! causes) and the whole observable state (slots per user, reserved memory,
//! waiters, quota charged) must agree, and the implementation's own
//! invariant check must pass. A failure shrinks to a minimal sequence.
//!
//! Single-threaded by construction: every future is polled by this thread
//! in a fixed order, so the model explores sequences of operations, never
//! interleavings inside one (that is loom's job).

use super::rules::{Queued, Rules};
use crate::admission::AdmissionFactory;
use crate::admission::{Admission, AdmitFailure, UploadSlot};
use crate::env::{Clock, ManualClock, MemorySnapshot, ScriptedMemory};
use crate::profile::{MemoryPolicy, Profile};
use crate::units::MIB;
use crate::user::UserId;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, UNIX_EPOCH};

const GLOBAL_SLOTS: usize = 3;
const USER_SLOTS: usize = 2;
const WAITERS_MAX: usize = 3;
const TIMEOUT_MS: u64 = 1_000;
const DAILY_LIMIT_BYTES: u64 = 100 * MIB;
const FILE_SIZE_MAX_BYTES: u64 = 80 * MIB;
const MEMORY_TOTAL_BYTES: u64 = 1_000 * MIB;
const DAY_MS: u64 = 86_400_000;
const USERS: [&str; 3] = ["ana", "bo", "cy"];
/// Sizes that exercise every check: empty, small, around the quota and the
/// maximum, and absurd.
const SIZES: [u64; 8] = [
    0,
    MIB,
    10 * MIB,
    40 * MIB,
    80 * MIB,
    80 * MIB + 1,
    u64::MAX - 1,
    u64::MAX,
];

fn profile() -> Profile {
    Profile {
        name: "model".into(),
        upload_limits_enabled: true,
        daily_limit_bytes: DAILY_LIMIT_BYTES,
        file_size_bytes_max: FILE_SIZE_MAX_BYTES,
        memory_limit_percent: 90,
        reserved_memory_bytes: 0,
        global_slots: GLOBAL_SLOTS as u32,
        user_slots: USER_SLOTS as u32,
        memory_per_upload: MemoryPolicy::PercentOfFile { percent: 10 },
        slot_wait_timeout_ms: TIMEOUT_MS,
        waiters_max: WAITERS_MAX as u32,
        refund_quota_on_failure: true,
        ..Profile::dev()
    }
}

/// The rules the model applies: [`profile`]'s.
fn rules() -> Rules {
    Rules::of(&profile())
}

fn user(index: usize) -> UserId {
    UserId::new(USERS[index]).expect("valid id")
}

/// One step.
#[derive(Debug, Clone)]
enum Step {
    Admit { user: usize, size: u64 },
    Release { pick: usize, completed: bool },
    Cancel { pick: usize },
    Advance { ms: u64 },
    SetMemoryUsed { used_mib: u64 },
    NextDay,
}

/// What a step did to one request, as both sides report it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Admitted(usize),
    Waiting(usize),
    Refused(usize, &'static str),
}

#[derive(Debug, Clone)]
struct Held {
    handle: usize,
    user: usize,
    memory_bytes: u64,
    quota_bytes: u64,
    day: u64,
}

#[derive(Debug, Clone)]
struct Waiter {
    held: Held,
    ceiling_bytes: u64,
    deadline_ms: u64,
}

/// The reference model.
#[derive(Debug, Clone, Default)]
struct Model {
    now_ms: u64,
    memory_used_bytes: u64,
    active: Vec<Held>,
    /// FIFO.
    waiting: Vec<Waiter>,
    quota_day: u64,
    quota: BTreeMap<usize, u64>,
    next_handle: usize,
    /// What the last step did.
    outcomes: Vec<Outcome>,
}

impl Model {
    fn day(&self) -> u64 {
        self.now_ms / DAY_MS
    }

    fn reserved(&self) -> u64 {
        self.active.iter().map(|h| h.memory_bytes).sum()
    }

    fn user_count(&self, user: usize) -> usize {
        self.active.iter().filter(|h| h.user == user).count()
    }

    fn refund(&mut self, held: &Held) {
        if held.day == self.quota_day {
            if let Some(q) = self.quota.get_mut(&held.user) {
                *q -= held.quota_bytes;
                if *q == 0 {
                    self.quota.remove(&held.user);
                }
            }
        }
    }

    /// Grants front to back, by the rules' scan (skip a waiter blocked only
    /// by its own user, stop at one blocked on anything shared).
    fn scan(&mut self) {
        let rules = rules();
        loop {
            let queue = self.waiting.iter().map(|w| Queued {
                user: &w.held.user,
                memory_bytes: w.held.memory_bytes,
                ceiling_bytes: w.ceiling_bytes,
            });
            let global_in_use = u32::try_from(self.active.len()).expect("bounded by the slots");
            let user_in_use =
                |u: &usize| u32::try_from(self.user_count(*u)).expect("bounded by the slots");
            let Some(i) = rules.first_grantable(queue, global_in_use, self.reserved(), user_in_use)
            else {
                return;
            };
            let w = self.waiting.remove(i);
            self.outcomes.push(Outcome::Admitted(w.held.handle));
            self.active.push(w.held);
        }
    }

    fn admit(&mut self, user: usize, size: u64) {
        let handle = self.next_handle;
        self.next_handle += 1;
        let refuse = |m: &mut Self, cause| m.outcomes.push(Outcome::Refused(handle, cause));
        if size > 0 && size <= FILE_SIZE_MAX_BYTES && self.day() > self.quota_day {
            self.quota_day = self.day();
            self.quota.clear();
        }
        let rules = rules();
        let ceiling_bytes = rules.ceiling_bytes(&System::snapshot(self.memory_used_bytes));
        let charged = self.quota.get(&user).copied().unwrap_or(0);
        let memory_bytes = match rules.screen(size, charged, ceiling_bytes) {
            Ok(memory_bytes) => memory_bytes,
            Err(screened) => return refuse(self, screened.cause()),
        };
        *self.quota.entry(user).or_insert(0) += size;
        let held = Held {
            handle,
            user,
            memory_bytes,
            quota_bytes: size,
            day: self.quota_day,
        };
        self.waiting.push(Waiter {
            held: held.clone(),
            ceiling_bytes,
            deadline_ms: self.now_ms + TIMEOUT_MS,
        });
        self.scan();
        if self.waiting.iter().any(|w| w.held.handle == handle) {
            if self.waiting.len() > WAITERS_MAX {
                self.waiting.retain(|w| w.held.handle != handle);
                self.refund(&held);
                return refuse(self, "queue_full");
            }
            self.outcomes.push(Outcome::Waiting(handle));
        }
    }

    fn advance(&mut self, ms: u64) {
        self.now_ms += ms;
        // Expired waiters leave in FIFO order; each departure may grant
        // someone behind, even someone expired who has not noticed yet.
        let mut i = 0;
        while i < self.waiting.len() {
            if self.waiting[i].deadline_ms <= self.now_ms {
                let w = self.waiting.remove(i);
                self.refund(&w.held);
                self.outcomes
                    .push(Outcome::Refused(w.held.handle, "slots_busy"));
                let before = self.waiting.len();
                self.scan();
                i = i.min(self.waiting.len());
                if self.waiting.len() != before {
                    i = 0;
                }
            } else {
                i += 1;
            }
        }
    }
}

impl ReferenceStateMachine for Model {
    type State = Model;
    type Transition = Step;

    fn init_state() -> BoxedStrategy<Model> {
        (100u64..700)
            .prop_map(|used_mib| Model {
                memory_used_bytes: used_mib * MIB,
                ..Model::default()
            })
            .boxed()
    }

    fn transitions(_: &Model) -> BoxedStrategy<Step> {
        prop_oneof![
            6 => (0..USERS.len(), prop::sample::select(&SIZES[..])).prop_map(|(user, size)| Step::Admit { user, size }),
            4 => (any::<usize>(), any::<bool>()).prop_map(|(pick, completed)| Step::Release { pick, completed }),
            1 => any::<usize>().prop_map(|pick| Step::Cancel { pick }),
            2 => prop_oneof![Just(1), Just(TIMEOUT_MS / 2), Just(TIMEOUT_MS)].prop_map(|ms| Step::Advance { ms }),
            1 => (0u64..=1_000).prop_map(|used_mib| Step::SetMemoryUsed { used_mib }),
            1 => Just(Step::NextDay),
        ]
        .boxed()
    }

    fn apply(mut state: Model, step: &Step) -> Model {
        state.outcomes.clear();
        match *step {
            Step::Admit { user, size } => state.admit(user, size),
            Step::Release { pick, completed } => {
                if !state.active.is_empty() {
                    let held = state.active.remove(pick % state.active.len());
                    if !completed {
                        state.refund(&held);
                    }
                    state.scan();
                }
            }
            Step::Cancel { pick } => {
                if !state.waiting.is_empty() {
                    let w = state.waiting.remove(pick % state.waiting.len());
                    state.refund(&w.held);
                    state.scan();
                }
            }
            Step::Advance { ms } => state.advance(ms),
            Step::SetMemoryUsed { used_mib } => state.memory_used_bytes = used_mib * MIB,
            Step::NextDay => {
                let to_midnight = DAY_MS - state.now_ms % DAY_MS;
                state.advance(to_midnight);
            }
        }
        state
    }
}

type Pending = Pin<Box<dyn Future<Output = Result<UploadSlot, AdmitFailure>> + Send>>;

/// The admission implementation under test and the requests it is
/// handling.
struct System {
    clock: ManualClock,
    memory: ScriptedMemory,
    admitter: Arc<dyn Admission>,
    /// In handle order, which is FIFO order.
    pending: BTreeMap<usize, Pending>,
    /// Admitted slots in the model's `active` order.
    active: Vec<(usize, UploadSlot)>,
    next_handle: usize,
}

impl System {
    fn snapshot(used_bytes: u64) -> MemorySnapshot {
        MemorySnapshot::new(
            MEMORY_TOTAL_BYTES,
            MEMORY_TOTAL_BYTES - used_bytes.min(MEMORY_TOTAL_BYTES),
        )
        .expect("valid figures")
    }

    /// Polls every pending request (in FIFO order) until nothing changes.
    fn settle(&mut self, outcomes: &mut Vec<Outcome>) {
        loop {
            let mut changed = false;
            let handles: Vec<usize> = self.pending.keys().copied().collect();
            for handle in handles {
                let Some(fut) = self.pending.get_mut(&handle) else {
                    continue;
                };
                if let Poll::Ready(result) =
                    fut.as_mut().poll(&mut Context::from_waker(Waker::noop()))
                {
                    self.pending.remove(&handle);
                    changed = true;
                    match result {
                        Ok(slot) => {
                            outcomes.push(Outcome::Admitted(handle));
                            self.active.push((handle, slot));
                        }
                        Err(e) => outcomes.push(Outcome::Refused(handle, e.cause())),
                    }
                }
            }
            if !changed {
                return;
            }
        }
    }
}

struct AdmissionMachine;

impl StateMachineTest for AdmissionMachine {
    type SystemUnderTest = System;
    type Reference = Model;

    fn init_test(model: &Model) -> System {
        let clock = ManualClock::new(UNIX_EPOCH);
        let shared: Arc<dyn Clock> = Arc::new(clock.clone());
        let memory = ScriptedMemory::new(shared.clone(), System::snapshot(model.memory_used_bytes));
        let factory = SUBJECT
            .with(|s| s.borrow().clone())
            .expect("the model runs only through checks::model::check, which names the subject");
        let admitter = factory(profile(), shared, Arc::new(memory.clone()));
        System {
            clock,
            memory,
            admitter,
            pending: BTreeMap::new(),
            active: Vec::new(),
            next_handle: 0,
        }
    }

    fn apply(mut sys: System, model: &Model, step: Step) -> System {
        let mut outcomes = Vec::new();
        match step {
            Step::Admit { user: u, size } => {
                let handle = sys.next_handle;
                sys.next_handle += 1;
                let admitter = Arc::clone(&sys.admitter);
                let mut fut: Pending = Box::pin(async move { admitter.admit(user(u), size).await });
                match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                    Poll::Ready(Ok(slot)) => {
                        outcomes.push(Outcome::Admitted(handle));
                        sys.active.push((handle, slot));
                    }
                    Poll::Ready(Err(e)) => outcomes.push(Outcome::Refused(handle, e.cause())),
                    Poll::Pending => {
                        outcomes.push(Outcome::Waiting(handle));
                        sys.pending.insert(handle, fut);
                    }
                }
            }
            Step::Release { pick, completed } => {
                if !sys.active.is_empty() {
                    let (_, slot) = sys.active.remove(pick % sys.active.len());
                    if completed {
                        slot.complete();
                    } else {
                        drop(slot);
                    }
                }
            }
            Step::Cancel { pick } => {
                if !sys.pending.is_empty() {
                    let handle = *sys
                        .pending
                        .keys()
                        .nth(pick % sys.pending.len())
                        .expect("in range");
                    sys.pending.remove(&handle);
                }
            }
            Step::Advance { ms } => sys.clock.advance(Duration::from_millis(ms)),
            Step::SetMemoryUsed { used_mib } => {
                sys.memory.set_now(System::snapshot(used_mib * MIB))
            }
            Step::NextDay => {
                let now_ms = u64::try_from(sys.clock.now().as_millis()).expect("small");
                sys.clock
                    .advance(Duration::from_millis(DAY_MS - now_ms % DAY_MS));
            }
        }
        sys.settle(&mut outcomes);
        // Order within one step: compare as sets, per handle.
        let (mut got, mut want) = (outcomes, model.outcomes.clone());
        let key = |o: &Outcome| match o {
            Outcome::Admitted(h) | Outcome::Waiting(h) | Outcome::Refused(h, _) => *h,
        };
        got.sort_by_key(key);
        want.sort_by_key(key);
        assert_eq!(got, want, "outcomes of {step:?}");
        sys
    }

    fn check_invariants(sys: &System, model: &Model) {
        assert_eq!(sys.admitter.check(), Ok(()));
        let state = sys.admitter.state().ledger;
        assert_eq!(
            state.global_in_use as usize,
            model.active.len(),
            "global slots"
        );
        let users: BTreeMap<String, u32> = state
            .user_in_use
            .iter()
            .map(|(u, n)| (u.to_string(), *n))
            .collect();
        let mut want_users: BTreeMap<String, u32> = BTreeMap::new();
        for h in &model.active {
            *want_users.entry(USERS[h.user].to_string()).or_insert(0) += 1;
        }
        assert_eq!(users, want_users, "per-user slots");
        assert_eq!(state.reserved_bytes, model.reserved(), "reserved memory");
        assert_eq!(state.waiting as usize, model.waiting.len(), "waiters");
        let quota: BTreeMap<String, u64> = state
            .quota_charged
            .iter()
            .map(|(u, b)| (u.to_string(), *b))
            .collect();
        let want_quota: BTreeMap<String, u64> = model
            .quota
            .iter()
            .map(|(u, b)| (USERS[*u].to_string(), *b))
            .collect();
        assert_eq!(quota, want_quota, "quota charged");
        assert!(state.global_in_use as usize <= GLOBAL_SLOTS);
        assert!(state
            .user_in_use
            .values()
            .all(|&n| n as usize <= USER_SLOTS));
        assert!(state
            .quota_charged
            .values()
            .all(|&b| b <= DAILY_LIMIT_BYTES));
    }

    fn teardown(mut sys: System, _: Model) {
        // Conservation: once every request is dropped, everything is back.
        sys.pending.clear();
        sys.active.clear();
        let state = sys.admitter.state().ledger;
        assert!(
            state.is_idle(),
            "left held after every slot and request was dropped: {state:?}"
        );
        assert_eq!(sys.admitter.check(), Ok(()));
    }
}

thread_local! {
    /// The implementation under test, for [`AdmissionMachine::init_test`]:
    /// proptest-state-machine's hooks are associated functions with no
    /// instance to carry it, and the runner calls them on this thread.
    static SUBJECT: RefCell<Option<AdmissionFactory>> = const { RefCell::new(None) };
}

/// How hard to look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelRun {
    /// Random sequences to try.
    pub cases: u32,
    /// Shrinking steps after a failure.
    pub max_shrink_iters: u32,
    /// The RNG seed; `None`: a fresh one each run (more ground covered
    /// across CI runs; a failure prints its minimal sequence).
    pub seed: Option<u64>,
}

impl ModelRun {
    /// `cargo test`'s run of production: 2 000 sequences of 1–59 steps,
    /// from a fresh seed each time, shrunk hard on failure.
    pub const THOROUGH: Self = Self {
        cases: 2_000,
        max_shrink_iters: 10_000,
        seed: None,
    };
}

/// What a run found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelVerdict {
    /// Sequences run up to and including the first failing one (all of
    /// them if none failed).
    pub cases: u32,
    /// The minimal failing sequence and why it fails; `None`: every
    /// sequence agreed with the reference.
    pub failure: Option<String>,
}

/// Runs random sequences (1–59 steps) against the implementation `factory`
/// builds and against the reference model.
pub fn check(factory: AdmissionFactory, run: ModelRun) -> ModelVerdict {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            SUBJECT.with(|s| *s.borrow_mut() = None);
        }
    }
    SUBJECT.with(|s| *s.borrow_mut() = Some(factory));
    let _reset = Reset;
    let config = Config {
        cases: run.cases,
        max_shrink_iters: run.max_shrink_iters,
        failure_persistence: None,
        rng_seed: run.seed.map_or(RngSeed::Random, RngSeed::Fixed),
        ..Config::default()
    };
    let mut runner = TestRunner::new(config.clone());
    let (cases, first_failure) = (Cell::new(0u32), Cell::new(None::<u32>));
    let result = runner.run(
        &Model::sequential_strategy(1..60),
        |(initial, transitions, seen_counter)| {
            let case = cases.get() + 1;
            cases.set(case);
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                AdmissionMachine::test_sequential(
                    config.clone(),
                    initial,
                    transitions,
                    seen_counter,
                );
            }));
            outcome.map_err(|panic| {
                if first_failure.get().is_none() {
                    first_failure.set(Some(case));
                }
                TestCaseError::fail(crate::checks::panic_message(&*panic))
            })
        },
    );
    match result {
        Ok(()) => ModelVerdict {
            cases: cases.get(),
            failure: None,
        },
        Err(e) => ModelVerdict {
            cases: first_failure.get().unwrap_or(cases.get()),
            failure: Some(e.to_string()),
        },
    }
}
