//! `upsim sweep merge` on hand-made results files.

use super::*;
use crate::sim::sweep_results::UPSIM_VERSION;

fn record(seed: u64, shard: &str, outcome: SeedOutcome, hash: &str, from: HashFrom) -> SeedRecord {
    SeedRecord {
        seed,
        outcome,
        trace_hash: Some(hash.into()),
        hash_from: from,
        wall_ms: 100,
        violation: (outcome == SeedOutcome::Fail).then(|| "no_panic: boom".into()),
        scenario: "smoke".into(),
        seeds: "0..4".into(),
        shard: shard.into(),
        upsim: UPSIM_VERSION.into(),
        probes: BTreeMap::from([("end_complete".to_owned(), 2)]),
    }
}

/// Writes `lines` (records or raw text) to a file in a fresh directory.
fn file(dir: &std::path::Path, name: &str, lines: &[String]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").expect("write");
    path.to_string_lossy().into_owned()
}

fn line(r: &SeedRecord) -> String {
    serde_json::to_string(r).expect("serialises")
}

fn temp(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("upsim-merge-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

use HashFrom::{FreshProcess as Fresh, SweepProcess as Worker};
use SeedOutcome::{Fail, Pass};

#[test]
fn shards_merge_into_one_sweep_with_its_failures_and_gaps() {
    let dir = temp("gaps");
    let a = file(
        &dir,
        "a",
        &[
            line(&record(2, "0/2", Pass, "h2", Fresh)),
            line(&record(0, "0/2", Fail, "h0", Fresh)),
        ],
    );
    let b = file(&dir, "b", &[line(&record(1, "1/2", Pass, "h1", Fresh))]);
    let m = merge(&[a, b]).expect("merges");
    assert_eq!(m.records.keys().copied().collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!(m.missing(), [Range { start: 3, end: 4 }]);
    assert_eq!(m.failed().map(|r| r.seed).collect::<Vec<_>>(), [0]);
    assert!(!m.passed());
    let text = m.render();
    assert!(
        text.contains("3 of 4 seeds run, 1 failed, 0 duplicate(s), 0 conflict(s), 1 missing"),
        "{text}"
    );
    assert!(
        text.contains(
            "FAILED seed 0: replay: cargo run --release -- run smoke --seed 0\n  no_panic: boom"
        ),
        "{text}"
    );
    assert!(text.contains("MISSING 1 seed(s): 3\n"), "{text}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_seed_seen_twice_agrees_conflicts_or_cannot_be_compared() {
    let dir = temp("dups");
    let lines = [
        record(0, "0/1", Pass, "h0", Fresh),
        record(1, "0/1", Pass, "h1", Worker),
        record(2, "0/1", Pass, "h2", Fresh),
        record(3, "0/1", Pass, "h3", Fresh),
    ];
    let a = file(&dir, "a", &lines.iter().map(line).collect::<Vec<_>>());
    let again = [
        record(0, "0/1", Pass, "h0", Fresh),    // the same
        record(1, "0/1", Pass, "other", Fresh), // a worker's hash: not comparable
        record(2, "0/1", Pass, "other", Fresh), // two fresh hashes: conflict
        record(3, "0/1", Fail, "h3", Fresh),    // two outcomes: conflict
    ];
    let b = file(&dir, "b", &again.iter().map(line).collect::<Vec<_>>());
    let m = merge(&[a, b.clone()]).expect("merges");
    let kinds: Vec<(u64, DuplicateKind)> = m.duplicates.iter().map(|d| (d.seed, d.kind)).collect();
    assert_eq!(
        kinds,
        [
            (0, DuplicateKind::Agrees),
            (1, DuplicateKind::Incomparable),
            (2, DuplicateKind::Conflict),
            (3, DuplicateKind::Conflict)
        ]
    );
    assert!(!m.passed(), "a conflict fails the merge");
    let text = m.render();
    assert!(
        text.contains(&format!(
            "CONFLICT seed 2: disagree: {}:3: pass, hash h2 (fresh process)",
            dir.join("a").display()
        )),
        "{text}"
    );
    // Duplicates that agree fail nothing.
    let m = merge(&[b.clone(), b]).expect("merges");
    assert!(m.duplicates.iter().all(|d| d.kind == DuplicateKind::Agrees));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn what_cannot_be_merged_is_named_by_file_and_line() {
    let dir = temp("bad");
    let good = line(&record(0, "0/2", Pass, "h0", Fresh));
    let bad = file(&dir, "bad", &[good.clone(), "{\"seed\": 1".into()]);
    let e = merge(std::slice::from_ref(&bad)).expect_err("a torn line");
    assert!(
        matches!(&e, MergeError::Malformed { at, .. } if at.line == 2),
        "{e}"
    );
    assert!(
        e.to_string()
            .starts_with(&format!("{bad}:2: not a seed record")),
        "{e}"
    );

    let mut other = record(1, "1/2", Pass, "h1", Fresh);
    other.scenario = "swarm".into();
    let mixed = file(&dir, "mixed", &[good.clone(), line(&other)]);
    let e = merge(&[mixed]).expect_err("two scenarios").to_string();
    assert!(
        e.contains(":2: scenario is \"swarm\" but") && e.contains(":1 has \"smoke\""),
        "{e}"
    );

    let mut three = record(1, "1/3", Pass, "h1", Fresh);
    three.seeds = "0..4".into();
    let counts = file(&dir, "counts", &[good.clone(), line(&three)]);
    let e = merge(&[counts]).expect_err("two shard counts").to_string();
    assert!(e.contains("shard count is \"3\""), "{e}");

    let stray = file(&dir, "stray", &[line(&record(1, "0/2", Pass, "h1", Fresh))]);
    let e = merge(&[stray])
        .expect_err("seed 1 is not shard 0's")
        .to_string();
    assert!(
        e.contains(":1: seed 1 is not in shard 0/2 of seeds 0..4"),
        "{e}"
    );

    let mut probe = record(0, "0/2", Pass, "h0", Fresh);
    probe.probes.insert("no_such_probe".into(), 1);
    let probes = file(&dir, "probes", &[line(&probe)]);
    assert!(matches!(
        merge(&[probes]),
        Err(MergeError::BadField {
            field: "probes",
            ..
        })
    ));

    let empty = file(&dir, "empty", &[]);
    assert!(matches!(
        merge(&[empty]),
        Err(MergeError::Malformed { .. }) | Err(MergeError::Empty)
    ));
    assert!(matches!(merge(&[]), Err(MergeError::NoFiles)));
    let missing = dir.join("nope").to_string_lossy().into_owned();
    assert!(matches!(merge(&[missing]), Err(MergeError::Read { .. })));
    std::fs::remove_dir_all(&dir).ok();
}

/// Coverage is judged over every shard: two shards that each miss a
/// required probe of swarm pass together if each hits the other's.
#[test]
fn coverage_is_judged_over_all_shards_together() {
    let dir = temp("coverage");
    let required: Vec<Probe> = Probe::ALL
        .into_iter()
        .filter(|p| p.required_in("swarm"))
        .collect();
    let (half_a, half_b) = required.split_at(required.len() / 2);
    let with = |seed: u64, shard: &str, probes: &[Probe]| {
        let mut r = record(seed, shard, Pass, "h", Fresh);
        r.scenario = "swarm".into();
        r.seeds = "0..2".into();
        r.probes = probes.iter().map(|p| (p.name().to_owned(), 1)).collect();
        line(&r)
    };
    let a = file(&dir, "a", &[with(0, "0/2", half_a)]);
    let b = file(&dir, "b", &[with(1, "1/2", half_b)]);
    let alone = merge(std::slice::from_ref(&a)).expect("merges");
    assert!(!alone.missed().is_empty());
    let both = merge(&[a, b]).expect("merges");
    assert!(both.missed().is_empty(), "{:?}", both.missed());
    assert!(both.passed(), "{}", both.render());
    std::fs::remove_dir_all(&dir).ok();
}
