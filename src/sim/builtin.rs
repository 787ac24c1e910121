//! The built-in scenarios `upsim run` and `upsim sweep` know by name:
//! `reference`, `reference-prod` and `smoke` (hand-written, here) and
//! `crowd` and `swarm` (drawn from the seed, in [`swarm`](super::swarm)).

use super::scenario::{
    default_admission_wait_bound_ms, Expectation, Fault, FileSpec, Links, Scenario, ScheduledFault,
};
use super::swarm::{crowd, swarm};
use crate::env::MemorySnapshot;
use crate::profile::Profile;
use crate::units::{MIB, REFERENCE_FILE_SIZE_BYTES};
use crate::user::UserId;

/// Scenario names `upsim run` and `upsim sweep` know.
pub const BUILTIN_SCENARIOS: [&str; 5] = ["reference", "reference-prod", "smoke", "crowd", "swarm"];

impl Scenario {
    /// The reference scenario: the report's 3457 MiB file on `dev`, over a
    /// home uplink and a datacenter drive link, surviving a memory spike at
    /// start, a drive session expiry, a partition, a short `308`, a
    /// backend crash during a second memory spike, and a burst of drive
    /// 503s.
    pub fn reference(seed: u64) -> Self {
        let s = 1_000;
        Self {
            name: "reference".into(),
            seed,
            profile: Profile::dev(),
            memory: MemorySnapshot::REPORT,
            files: vec![FileSpec::chunks(
                UserId::new("reference-user").expect("a valid literal user id"),
                REFERENCE_FILE_SIZE_BYTES,
            )],
            parallel: 4,
            links: Links {
                client_uplink_mbit: 100,
                client_latency_ms: 20,
                drive_link_mbit: 1_000,
                drive_latency_ms: 2,
            },
            faults: vec![
                ScheduledFault {
                    at_ms: 0,
                    fault: Fault::MemoryPressure {
                        available_bytes: 200 * MIB,
                        duration_ms: 8 * s,
                    },
                },
                ScheduledFault {
                    at_ms: 25 * s,
                    fault: Fault::DriveSessionExpiry,
                },
                ScheduledFault {
                    at_ms: 70 * s,
                    fault: Fault::Partition {
                        duration_ms: 15 * s,
                    },
                },
                ScheduledFault {
                    at_ms: 110 * s,
                    fault: Fault::DriveShortPiece { keep_bytes: MIB },
                },
                ScheduledFault {
                    at_ms: 145 * s,
                    fault: Fault::MemoryPressure {
                        available_bytes: 200 * MIB,
                        duration_ms: 20 * s,
                    },
                },
                ScheduledFault {
                    at_ms: 150 * s,
                    fault: Fault::BackendCrash { down_ms: 5 * s },
                },
                ScheduledFault {
                    at_ms: 200 * s,
                    fault: Fault::DriveErrors {
                        status: 503,
                        count: 3,
                        reason: None,
                    },
                },
            ],
            tick_ms: 5,
            duration_max_ms: 3_600 * s,
            safety_ms: 210 * s,
            liveness_bound_ms: 1_800 * s,
            buggify: Vec::new(),
            admission_wait_bound_ms: default_admission_wait_bound_ms(),
            start_of_day_ms: 0,
            drive_oauth: None,
            follow_events: false,
            piece_bytes_max: None,
            expect: Expectation::Complete,
        }
    }

    /// The same file on `prod`: refused at admission for memory (80.2 %
    /// used against an 80 % limit), with no faults needed.
    pub fn reference_prod(seed: u64) -> Self {
        Self {
            name: "reference-prod".into(),
            profile: Profile::prod(),
            faults: Vec::new(),
            expect: Expectation::Refused {
                cause: "memory_pressure".into(),
            },
            ..Self::reference(seed)
        }
    }

    /// A small, fast scenario with every fault kind: 64 MiB on a slower
    /// link, for tests and quick checks.
    pub fn smoke(seed: u64) -> Self {
        let s = 1_000;
        let mut scenario = Self {
            name: "smoke".into(),
            links: Links {
                client_uplink_mbit: 20,
                ..Self::reference(seed).links
            },
            ..Self::reference(seed)
        };
        scenario.files[0].size_bytes = 64 * MIB + 12_345;
        scenario.faults = vec![
            ScheduledFault {
                at_ms: 0,
                fault: Fault::MemoryPressure {
                    available_bytes: MIB,
                    duration_ms: 2 * s,
                },
            },
            ScheduledFault {
                at_ms: 6 * s,
                fault: Fault::DriveSessionExpiry,
            },
            ScheduledFault {
                at_ms: 12 * s,
                fault: Fault::Partition { duration_ms: 3 * s },
            },
            ScheduledFault {
                at_ms: 16 * s,
                fault: Fault::DriveShortPiece { keep_bytes: MIB },
            },
            ScheduledFault {
                at_ms: 20 * s,
                fault: Fault::BackendCrash { down_ms: 2 * s },
            },
            ScheduledFault {
                at_ms: 26 * s,
                fault: Fault::DriveErrors {
                    status: 503,
                    count: 2,
                    reason: None,
                },
            },
        ];
        scenario
    }

    /// A built-in scenario by name.
    pub fn builtin(name: &str, seed: u64) -> Option<Self> {
        match name {
            "reference" => Some(Self::reference(seed)),
            "reference-prod" => Some(Self::reference_prod(seed)),
            "smoke" => Some(Self::smoke(seed)),
            "crowd" => Some(crowd(seed)),
            "swarm" => Some(swarm(seed)),
            _ => None,
        }
    }
}
