//! The zoo's own scenarios: `smoke` bent so that one blind spot of the
//! first harness decides the run. Each passes production and fails the
//! mutant it was built for (`sims/zoo.rs` checks both).

use crate::buggify::{Site, SiteConfig};
use crate::checks::rules::Rules;
use crate::sim::scenario::{Expectation, Fault, ScheduledFault};
use crate::sim::Scenario;
use crate::units::MIB;

/// `smoke` where the reserve decides: the dev profile with 512 MiB kept in
/// reserve, and the opening memory spike leaving 1 MiB of headroom under
/// `limit − reserve − machine use` — less than the 8 MiB (one chunk) the file needs,
/// but 513 MiB if the reserve is forgotten. Production refuses the first
/// creates (`memory_pressure`) and completes once the spike ends; every
/// other check passes either way.
pub fn reserve_decides(seed: u64) -> Scenario {
    let mut scenario = Scenario::smoke(seed);
    scenario.name = "reserve-decides".into();
    scenario.profile.reserved_memory_bytes = 512 * MIB;
    let limit_bytes = Rules::of(&scenario.profile).limit_bytes(&scenario.memory);
    let used_bytes = limit_bytes - scenario.profile.reserved_memory_bytes - MIB;
    for f in &mut scenario.faults {
        if let Fault::MemoryPressure {
            available_bytes, ..
        } = &mut f.fault
        {
            *available_bytes = scenario.memory.total_bytes - used_bytes;
        }
    }
    scenario
}

/// `smoke` with fault points on at `permille` each, everything else as
/// smoke's.
fn smoke_with(seed: u64, name: &str, sites: &[Site], permille: u32) -> Scenario {
    let mut scenario = Scenario::smoke(seed);
    scenario.name = name.into();
    scenario.buggify = sites
        .iter()
        .map(|&site| SiteConfig { site, permille })
        .collect();
    scenario
}

/// `smoke` whose drive fails every piece from 10 s on, more times than
/// the backend retries: the upload must end `drive_failed`, and everything
/// it held must come back.
pub fn drive_fails(seed: u64) -> Scenario {
    let mut scenario = Scenario::smoke(seed);
    scenario.name = "drive-fails".into();
    scenario.faults = vec![ScheduledFault {
        at_ms: 10_000,
        fault: Fault::DriveErrors {
            status: 500,
            count: 1_000,
            reason: None,
        },
    }];
    scenario.expect = Expectation::Settled {
        allowed_causes: vec!["drive_failed".into()],
    };
    scenario
}

/// `smoke` whose chunk bodies lose a bit on the way, one in three.
pub fn bit_flips(seed: u64) -> Scenario {
    smoke_with(seed, "bit-flips", &[Site::ClientChunkBitFlip], 300)
}

/// `smoke` whose creates are duplicated and whose create replies are
/// lost, often.
pub fn lost_creates(seed: u64) -> Scenario {
    let sites = [Site::BackendCreateReplyLost, Site::ClientDuplicateCreate];
    smoke_with(seed, "lost-creates", &sites, 500)
}

/// `smoke` whose client probes the window's edge in every round.
pub fn window_edge(seed: u64) -> Scenario {
    smoke_with(seed, "window-edge", &[Site::ClientWindowEdge], 1000)
}
