//! tus clients as a client kind in the turmoil harness: swarm worlds with
//! tus files, and tusd's three races played on them (a HEAD during a
//! PATCH, a second PATCH at the same offset, a PATCH cut mid-body) — each
//! world passes every check (the drive's copy byte-identical, every range
//! committed once, the window model following the tus uploads, every
//! upload ended), and the races really happened.

use upsim::buggify::Site;
use upsim::coverage::Probe;
use upsim::sim::{run, Protocol, RunOptions, Scenario};

/// The tus probes, each of which the chosen worlds must hit.
const TUS_PROBES: [Probe; 4] = [
    Probe::TusHeadDuringPatch,
    Probe::TusPatchSuperseded,
    Probe::TusPatchCut,
    Probe::TusResumedFromHead,
];

/// Swarm worlds to run: with tus files and every tus race on.
const WORLDS: usize = 6;

fn has_tus(world: &Scenario) -> bool {
    world
        .files
        .iter()
        .any(|f| matches!(f.protocol, Protocol::Tus { .. }))
}

fn every_race_on(world: &Scenario) -> bool {
    Site::TUS
        .iter()
        .all(|site| world.buggify.iter().any(|b| b.site == *site))
}

#[test]
fn swarm_worlds_with_tus_clients_pass_and_play_every_race() {
    let worlds: Vec<Scenario> = (0..300)
        .filter_map(|seed| Scenario::builtin("swarm", seed))
        .filter(|w| has_tus(w) && every_race_on(w))
        .take(WORLDS)
        .collect();
    assert_eq!(
        worlds.len(),
        WORLDS,
        "swarm draws tus worlds with every race on"
    );
    let mut hits = [0u64; TUS_PROBES.len()];
    for world in &worlds {
        let (report, _) = run(world, &RunOptions::default()).expect("runs");
        assert!(
            report.passed,
            "{}{:?}\n{}",
            report.render(),
            report.violations,
            crate::support::replay_hint("swarm", world.seed)
        );
        for (hit, probe) in hits.iter_mut().zip(TUS_PROBES) {
            *hit += report.probes.get(probe);
        }
    }
    for (hit, probe) in hits.iter().zip(TUS_PROBES) {
        assert!(
            *hit > 0,
            "{} never hit in seeds {:?}",
            probe.name(),
            seeds(&worlds)
        );
    }
}

fn seeds(worlds: &[Scenario]) -> Vec<u64> {
    worlds.iter().map(|w| w.seed).collect()
}

/// The chunk API's built-ins keep their chunk clients (their traces and
/// snapshots are unchanged), and swarm keeps every world without tus as
/// it was: only some worlds draw tus clients, from their own stream.
#[test]
fn only_swarm_draws_tus_clients() {
    for name in ["reference", "reference-prod", "smoke", "crowd", "zoo"] {
        for seed in 0..20 {
            if let Some(world) = Scenario::builtin(name, seed) {
                assert!(!has_tus(&world), "{name} seed {seed} has a tus file");
                assert!(!world.describe().contains("tus"), "{name} seed {seed}");
            }
        }
    }
    let tus = (0..300)
        .filter_map(|seed| Scenario::builtin("swarm", seed))
        .filter(has_tus)
        .inspect(|w| {
            assert!(
                w.describe().contains("tus clients: files"),
                "seed {}",
                w.seed
            )
        })
        .count();
    assert!(
        (60..=180).contains(&tus),
        "{tus} of 300 swarm worlds have tus files"
    );
}
