//! The fault schedule: a scenario's faults turned into timed actions — each
//! fault's injection and, for the faults that end, its recovery — and what
//! each action does to the world.
//!
//! Memory pressure is the exception: it is not an action but a stretch of
//! the scripted memory's timeline ([`script_memory`]), set up when the world
//! is built.

use super::scenario::{Fault, Scenario, ScheduledFault};
use super::world::World;
use crate::drive::protocol::DriveReason;
use crate::env::{MemorySnapshot, ScriptedMemory};
use std::collections::BTreeMap;
use std::iter::Peekable;
use std::time::Duration;
use std::vec::IntoIter;

/// Something the runner does to the world at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Action {
    /// A fault starts.
    Inject(Fault),
    /// A partition heals.
    Repair,
    /// The crashed backend boots again.
    Restart,
}

/// An action at a time, with its tie-breaker.
#[derive(Debug)]
struct Timed {
    at_ms: u64,
    /// Fault `n` injects as `2n` and recovers as `2n + 1`, so actions at the
    /// same time keep the scenario's order.
    order: u64,
    action: Action,
}

/// The actions of a run, by time.
#[derive(Debug)]
pub(super) struct Schedule {
    actions: Peekable<IntoIter<Timed>>,
}

impl Schedule {
    /// The schedule of `faults`: every injection, and the end of every
    /// partition and crash, ordered by time, then by the scenario's order.
    pub fn new(faults: &[ScheduledFault]) -> Self {
        let mut actions: Vec<Timed> = Vec::new();
        for (n, f) in faults.iter().enumerate() {
            let order = n as u64 * 2;
            actions.push(Timed {
                at_ms: f.at_ms,
                order,
                action: Action::Inject(f.fault.clone()),
            });
            let recovery = match f.fault {
                Fault::Partition { duration_ms } => Some((duration_ms, Action::Repair)),
                Fault::BackendCrash { down_ms } => Some((down_ms, Action::Restart)),
                _ => None,
            };
            if let Some((after_ms, action)) = recovery {
                actions.push(Timed {
                    at_ms: f.at_ms + after_ms,
                    order: order + 1,
                    action,
                });
            }
        }
        actions.sort_by_key(|t| (t.at_ms, t.order));
        Self {
            actions: actions.into_iter().peekable(),
        }
    }

    /// The next action due at `now_ms` or before, if any (taken off the
    /// schedule).
    pub fn next_due(&mut self, now_ms: u64) -> Option<Action> {
        self.actions
            .next_if(|t| t.at_ms <= now_ms)
            .map(|t| t.action)
    }
}

/// Puts the scenario's memory-pressure faults on the memory's timeline:
/// each spike at its time, and the scenario's memory back at its end.
pub(super) fn script_memory(memory: &ScriptedMemory, scenario: &Scenario) {
    for f in &scenario.faults {
        if let Fault::MemoryPressure {
            available_bytes,
            duration_ms,
        } = f.fault
        {
            let spike = MemorySnapshot {
                available_bytes: available_bytes.min(scenario.memory.total_bytes),
                ..scenario.memory
            };
            memory.set_at(Duration::from_millis(f.at_ms), spike);
            memory.set_at(
                Duration::from_millis(f.at_ms + duration_ms),
                scenario.memory,
            );
        }
    }
}

/// Does `action` to `world`, counting injected faults by kind in
/// `injected`. Returns the name the trace records for it.
pub(super) fn apply(
    world: &mut World<'_>,
    action: Action,
    injected: &mut BTreeMap<String, u32>,
) -> String {
    match action {
        Action::Inject(fault) => {
            let kind = fault.kind();
            *injected.entry(kind.to_owned()).or_insert(0) += 1;
            inject(world, fault);
            kind.to_owned()
        }
        Action::Repair => {
            for c in &world.client_names {
                world.sim.repair(c.as_str(), "backend");
            }
            "partition_healed".to_owned()
        }
        Action::Restart => {
            world.sim.bounce("backend");
            "backend_restarted".to_owned()
        }
    }
}

/// Starts `fault`. Drive faults before the drive has started do nothing.
fn inject(world: &mut World<'_>, fault: Fault) {
    let control = world.shared.drive_control();
    match fault {
        Fault::Partition { .. } => {
            for c in &world.client_names {
                world.sim.partition(c.as_str(), "backend");
            }
        }
        Fault::BackendCrash { .. } => world.sim.crash("backend"),
        Fault::DriveErrors {
            status,
            count,
            reason,
        } => {
            if let Some(c) = control {
                let reason = reason.unwrap_or_else(|| DriveReason::default_for(status));
                c.fail_next_puts_because(status, reason, count)
            }
        }
        Fault::DriveSessionExpiry => {
            if let Some(c) = control {
                c.expire_all_sessions()
            }
        }
        Fault::DriveShortPiece { keep_bytes } => {
            if let Some(c) = control {
                c.truncate_next_piece(keep_bytes)
            }
        }
        Fault::MemoryPressure { .. } => {} // on the scripted timeline
    }
}
