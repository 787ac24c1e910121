//! Unit tests of [`ledger`](super), apart so the module itself stays short.

use super::*;

fn user(name: &str) -> UserId {
    UserId::new(name).expect("valid id")
}

fn limits(global: u32, per_user: u32) -> Limits {
    Limits {
        global_slots: global,
        user_slots: per_user,
        memory_budget_bytes: 1_000,
        waiters_max: 10,
        daily_limit_bytes: Some(10_000),
    }
}

fn req(name: &str, memory_bytes: u64) -> SlotRequest {
    SlotRequest {
        user: user(name),
        memory_bytes,
        memory_ceiling_bytes: 1_000,
        quota_bytes: 100,
        day: UtcDay(1),
    }
}

/// Requests each `(user, memory_bytes)` in order; each ticket and what its
/// request granted at once.
fn queue<const N: usize>(l: &mut Ledger, asks: [(&str, u64); N]) -> [(TicketId, Vec<TicketId>); N] {
    asks.map(|(name, memory_bytes)| l.request(req(name, memory_bytes)).expect("queued"))
}

fn grant(l: &mut Ledger, ticket: TicketId) -> Grant {
    match l.take(ticket) {
        Take::Granted(g) => g,
        other => panic!("ticket {ticket} not granted: {other:?}"),
    }
}

#[test]
fn a_user_at_its_limit_never_holds_a_global_slot_while_waiting() {
    let mut l = Ledger::new(limits(2, 1));
    let (a1, g) = l.request(req("a", 1)).expect("queued");
    assert_eq!(g, vec![a1]);
    let (a2, g) = l.request(req("a", 1)).expect("queued");
    assert!(g.is_empty());
    assert_eq!(l.state().global_in_use, 1, "the waiting a2 holds nothing");
    // b passes a2, which waits only for its own user's slot.
    let (b1, g) = l.request(req("b", 1)).expect("queued");
    assert_eq!(g, vec![b1]);
    assert_eq!(l.check(), Ok(()));
    let ga1 = grant(&mut l, a1);
    // a1's release frees a's slot, but no global slot is left: a2 waits on.
    let _gb1 = grant(&mut l, b1);
    assert_eq!(l.release(ga1, false), Ok(vec![a2]));
    assert_eq!(l.check(), Ok(()));
}

#[test]
fn fifo_among_waiters_for_shared_resources() {
    let mut l = Ledger::new(limits(1, 1));
    let [(a, _), (b, _), (c, _)] = queue(&mut l, [("a", 1), ("b", 1), ("c", 1)]);
    let ga = grant(&mut l, a);
    assert_eq!(l.release(ga, false), Ok(vec![b]), "b was first in line");
    assert_eq!(l.take(c), Take::Waiting);
    assert_eq!(l.waiters_ahead(c), Some(0));
}

#[test]
fn a_memory_blocked_head_holds_back_smaller_requests() {
    let mut l = Ledger::new(limits(5, 5));
    let [(a, _), (big, _), (small, g)] = queue(&mut l, [("a", 600), ("b", 500), ("c", 10)]);
    assert!(g.is_empty(), "FIFO: small may not overtake big on memory");
    // Cancelling the head must wake whoever it was holding back.
    assert_eq!(l.cancel(big), vec![small]);
    assert_eq!(l.check(), Ok(()));
    let _ = (a, grant(&mut l, small));
}

#[test]
fn refusals_carry_their_numbers_and_charge_nothing() {
    let mut l = Ledger::new(limits(1, 1));
    let mut too_big = req("a", 2_000);
    assert_eq!(
        l.request(too_big.clone()),
        Err(Refusal::Memory { reserved_bytes: 0 })
    );
    too_big.memory_bytes = 1;
    too_big.quota_bytes = 10_001;
    assert!(matches!(
        l.request(too_big),
        Err(Refusal::OverQuota(OverQuota {
            charged_bytes: 0,
            daily_limit_bytes: 10_000
        }))
    ));
    assert!(l.state().is_idle());
    assert!(l.state().quota_charged.is_empty());
}

#[test]
fn the_queue_is_bounded() {
    let mut l = Ledger::new(Limits {
        waiters_max: 2,
        ..limits(1, 1)
    });
    let _ = l.request(req("a", 1)).expect("granted");
    let _ = l.request(req("b", 1)).expect("queued");
    let _ = l.request(req("c", 1)).expect("queued");
    assert_eq!(
        l.request(req("d", 1)),
        Err(Refusal::QueueFull {
            waiting: 2,
            waiters_max: 2
        })
    );
    assert_eq!(
        l.state().quota_charged.get(&user("d")),
        None,
        "the refused request is refunded"
    );
    assert_eq!(l.check(), Ok(()));
}

#[test]
fn double_release_is_detected() {
    let mut l = Ledger::new(limits(1, 1));
    let (a, _) = l.request(req("a", 1)).expect("granted");
    let g = grant(&mut l, a);
    let forged = Grant {
        ticket: g.ticket,
        user: g.user.clone(),
        memory_bytes: g.memory_bytes,
        quota: g.quota.clone(),
    };
    assert_eq!(l.release(g, true), Ok(vec![]));
    assert_eq!(
        l.release(forged, true),
        Err(Violation::DoubleRelease { ticket: a })
    );
    assert!(l.state().is_idle());
}

#[test]
fn cancelling_a_granted_but_unclaimed_ticket_gives_everything_back() {
    let mut l = Ledger::new(limits(1, 1));
    let (a, _) = l.request(req("a", 7)).expect("granted");
    let (b, _) = l.request(req("b", 7)).expect("queued");
    assert_eq!(l.cancel(a), vec![b]);
    assert_eq!(l.state().reserved_bytes, 7);
    assert!(l.cancel(b).is_empty());
    assert!(l.state().is_idle());
    assert!(l.state().quota_charged.is_empty());
}

/// Breaks one counter of a ledger on purpose.
type Forge = fn(&mut Ledger);

/// A ledger exactly at every limit of [`limits`]`(1, 1)`: one grant held by
/// `a` with the whole memory budget and the whole daily quota.
fn at_every_limit() -> Ledger {
    let mut l = Ledger::new(limits(1, 1));
    let mut ask = req("a", 1_000);
    ask.quota_bytes = 10_000;
    let (a, _) = l.request(ask).expect("granted");
    let _held = grant(&mut l, a);
    l
}

/// This is a regression test that ensures every limit check of
/// [`Ledger::check`] holds at its limit and fails one past it: each case
/// forges one counter a unit over its limit and must be reported, with its
/// numbers. The negative space of the invariants the simulations rely on.
#[test]
fn each_limit_holds_at_its_bound_and_is_reported_one_past_it() {
    assert_eq!(
        at_every_limit().check(),
        Ok(()),
        "at every limit, nothing is violated"
    );
    let cases: [(&str, Forge, Violation); 4] = [
        (
            "global",
            |l| l.global_in_use = 2,
            Violation::GlobalOverLimit {
                in_use: 2,
                limit: 1,
            },
        ),
        (
            "user",
            |l| {
                l.user_in_use.insert(user("a"), 2);
            },
            Violation::UserOverLimit {
                user: "a".into(),
                in_use: 2,
                limit: 1,
            },
        ),
        (
            "memory",
            |l| l.reserved_bytes = 1_001,
            Violation::MemoryOverBudget {
                reserved_bytes: 1_001,
                budget_bytes: 1_000,
            },
        ),
        (
            "quota",
            |l| {
                // An unlimited quota ledger accepts the charge the limits forbid.
                l.quota = QuotaLedger::new(None);
                let _ = l.quota.charge(&user("a"), UtcDay(1), 10_001);
            },
            Violation::QuotaOverLimit {
                user: "a".into(),
                charged_bytes: 10_001,
                limit_bytes: 10_000,
            },
        ),
    ];
    for (name, forge, expected) in cases {
        let mut l = at_every_limit();
        forge(&mut l);
        assert_eq!(l.check(), Err(expected), "{name} one past its limit");
    }
}

/// This is a regression test that ensures conservation is checked term by
/// term: counters that disagree with the grants in one term only (slots,
/// bytes, or which user holds them) are each reported, and a user kept
/// with zero slots is too.
#[test]
fn counters_that_disagree_with_the_grants_in_any_one_term_are_reported() {
    let cases: [(&str, Forge); 4] = [
        ("slots", |l| l.global_in_use = 0),
        ("bytes", |l| l.reserved_bytes = 999),
        ("holder", |l| {
            l.user_in_use.clear();
            l.user_in_use.insert(user("b"), 1);
        }),
        ("zero slots", |l| {
            l.user_in_use.insert(user("b"), 0);
        }),
    ];
    for (name, forge) in cases {
        let mut l = at_every_limit();
        forge(&mut l);
        assert!(
            matches!(l.check(), Err(Violation::CountersDisagree { .. })),
            "{name}: {:?}",
            l.check()
        );
    }
}

/// This is a regression test that ensures a waiter's position counts only
/// the tickets still waiting ahead of it, and an unknown ticket has none.
#[test]
fn waiters_ahead_counts_only_those_still_waiting_in_front() {
    let mut l = Ledger::new(limits(1, 1));
    let [(_a, _), (_b, _), (_c, _), (d, _)] =
        queue(&mut l, [("a", 1), ("b", 1), ("c", 1), ("d", 1)]);
    assert_eq!(
        l.waiters_ahead(d),
        Some(2),
        "b and c wait ahead of d; a holds"
    );
    assert_eq!(l.waiters_ahead(99), None);
}

/// This is a regression test that ensures a user's second slot is counted:
/// with two slots a user, the third request of one user waits for its own
/// slot while global slots are free.
#[test]
fn a_users_second_slot_is_counted() {
    let mut l = Ledger::new(limits(3, 2));
    let [(_, g1), (_, g2), (_, g3)] = queue(&mut l, [("a", 1), ("a", 1), ("a", 1)]);
    assert_eq!((g1.len(), g2.len(), g3.len()), (1, 1, 0));
    assert_eq!(l.user_in_use(&user("a")), 2);
    assert_eq!(l.check(), Ok(()));
}
