//! Sweeps beyond one process: `upsim sweep --shard K/N --results FILE` in
//! separate processes of the binary, put back together by `upsim sweep
//! merge`, against one unsharded sweep of the same range, seed for seed;
//! and `--check-determinism`, shown to pass on a real seed and to fail, with
//! the first diverging event, on two runs that differ.
//!
//! Every sweep here checks determinism, so every trace hash compared is a
//! fresh process's (a sweep worker's hash is not a replay key: see
//! `HashFrom` in `src/sim/sweep_results.rs`).

use crate::readme::{masked, readme, sample_after};
use crate::support::{replay_hint, Proc, TempDir, TestResult, UPSIM};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use upsim::sim::determinism::{FreshRuns, Verdict};
use upsim::sim::sweep_results::{HashFrom, SeedOutcome, SeedRecord};

/// The sweep under test: cheap (about 0.3 s a run), with a backend crash
/// and drive faults in every world.
const SCENARIO: &str = "smoke";
const SEEDS: std::ops::Range<u64> = 0..8;
const SHARDS: u64 = 4;
/// Each sweep runs every seed three times (once in process, twice fresh).
const SWEEP_WALL_MAX: Duration = Duration::from_secs(300);

fn sweep_args(results: &str, shard: Option<String>) -> Vec<String> {
    let mut args: Vec<String> = [
        "sweep",
        SCENARIO,
        "--seeds",
        &format!("{}..{}", SEEDS.start, SEEDS.end),
        "--jobs",
        "1",
        "--quiet",
        "--no-shrink",
        "--check-determinism",
        "--results",
        results,
    ]
    .map(str::to_owned)
    .to_vec();
    if let Some(shard) = shard {
        args.extend(["--shard".to_owned(), shard]);
    }
    args
}

/// Runs `upsim ARGS` in `dir` and returns its exit code and stdout.
async fn upsim(dir: &Path, name: &str, args: &[String]) -> TestResult<(i32, String)> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut p = Proc::spawn(name, &args, dir, "warn")?;
    let status = p.wait_exit(SWEEP_WALL_MAX).await?;
    Ok((status.code().unwrap_or(-1), p.stdout()))
}

fn records(path: &Path) -> TestResult<Vec<SeedRecord>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?)
}

/// What must be the same, seed for seed, however the range was cut.
fn verdicts(records: &[SeedRecord]) -> BTreeMap<u64, (SeedOutcome, Option<String>, HashFrom)> {
    records
        .iter()
        .map(|r| (r.seed, (r.outcome, r.trace_hash.clone(), r.hash_from)))
        .collect()
}

/// This is a regression test that ensures a sweep cut into 4 shards, each a
/// separate `upsim sweep --shard K/4` process, gives seed for seed what one
/// unsharded sweep gives (outcome and fresh-process trace hash), each shard
/// running exactly its seeds; that `upsim sweep merge` of the shards prints
/// what the merge of the unsharded run prints, and the README's sample; and
/// that a merge missing two shards says which seeds are missing and fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_shard_processes_merge_to_the_unsharded_sweep() -> TestResult {
    let tmp = TempDir::new("sharding")?;
    let dir = tmp.path();
    let shard_file = |k: u64| format!("shard-{k}-of-{SHARDS}.jsonl");
    // Every sweep starts before any is waited for: they run at once.
    let mut sweeps = Vec::new();
    for k in 0..SHARDS {
        let args = sweep_args(&shard_file(k), Some(format!("{k}/{SHARDS}")));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        sweeps.push(Proc::spawn(&format!("shard-{k}"), &args, dir, "warn")?);
    }
    let args = sweep_args("whole.jsonl", None);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    sweeps.push(Proc::spawn("whole", &args, dir, "warn")?);
    for sweep in &mut sweeps {
        let status = sweep.wait_exit(SWEEP_WALL_MAX).await?;
        assert!(status.success(), "{} failed:\n{}", sweep.name, sweep.logs());
    }
    let whole = records(&dir.join("whole.jsonl"))?;
    let mut sharded = Vec::new();
    for k in 0..SHARDS {
        let lines = records(&dir.join(shard_file(k)))?;
        let mut seeds: Vec<u64> = lines.iter().map(|r| r.seed).collect();
        seeds.sort_unstable();
        let expected: Vec<u64> = SEEDS.filter(|s| s % SHARDS == k).collect();
        assert_eq!(seeds, expected, "shard {k}/{SHARDS} ran other seeds");
        assert!(lines.iter().all(|r| r.shard == format!("{k}/{SHARDS}")));
        sharded.extend(lines);
    }
    assert_eq!(sharded.len(), whole.len());
    let (a, b) = (verdicts(&sharded), verdicts(&whole));
    for seed in SEEDS {
        assert_eq!(
            a.get(&seed),
            b.get(&seed),
            "{}",
            replay_hint(SCENARIO, seed)
        );
        let (outcome, _, from) = &b[&seed];
        assert_eq!(
            *outcome,
            SeedOutcome::Pass,
            "{}",
            replay_hint(SCENARIO, seed)
        );
        assert_eq!(*from, HashFrom::FreshProcess);
    }
    // The hash `upsim run smoke --seed 7` prints (ARCHITECTURE.md).
    assert_eq!(b[&7].1.as_deref(), Some("322a36162bc04fbe"));

    let merge = |files: Vec<String>| {
        let mut args = vec!["sweep".to_owned(), "merge".to_owned()];
        args.extend(files);
        args
    };
    let (code, merged) = upsim(dir, "merge", &merge((0..SHARDS).map(shard_file).collect())).await?;
    assert_eq!(code, 0, "{merged}");
    let (code, merged_whole) =
        upsim(dir, "merge-whole", &merge(vec!["whole.jsonl".into()])).await?;
    assert_eq!(code, 0, "{merged_whole}");
    // Past the first line (file and shard counts), the same report.
    let tail = |text: &str| -> Vec<String> { text.lines().skip(1).map(masked).collect() };
    assert_eq!(tail(&merged), tail(&merged_whole));
    assert!(
        merged.contains("8 of 8 seeds run, 0 failed, 0 duplicate(s), 0 conflict(s), 0 missing"),
        "{merged}"
    );
    readme_sample_is_a_merge_prefix(&merged);

    let (code, partial) = upsim(
        dir,
        "merge-partial",
        &merge(vec![shard_file(0), shard_file(1)]),
    )
    .await?;
    assert_eq!(code, 1, "{partial}");
    assert!(
        partial.contains("MISSING 4 seed(s): 2..4, 6..8"),
        "{partial}"
    );
    Ok(())
}

/// README's merge sample: the lines before its `…` are what the merge
/// printed first (wall figures masked).
fn readme_sample_is_a_merge_prefix(printed: &str) {
    let documented = sample_after(&readme(), "merges them and prints:");
    let cut = documented
        .iter()
        .position(|l| l == "…")
        .expect("the README's merge sample ends in …");
    let printed: Vec<String> = printed.lines().map(masked).collect();
    assert!(printed.len() >= cut, "{printed:?}");
    for (n, line) in documented[..cut].iter().enumerate() {
        assert_eq!(
            masked(line),
            printed[n],
            "README's merge sample, line {}: documented vs printed",
            n + 1
        );
    }
}

/// A fake upsim for the determinism check: each run writes a trace whose
/// second event names the run, and reports a hash that differs each run.
const FAKE_UPSIM: &str = r#"#!/bin/sh
# run SCENARIO --seed S --json --trace FILE
dir=$(dirname "$0")
n=$(cat "$dir/runs" 2>/dev/null || echo 0); n=$((n + 1)); echo "$n" > "$dir/runs"
printf '{"at_ms":0,"host":"drive","kind":"host_started","boot":0}\n' > "$7"
printf '{"at_ms":5,"host":"client","kind":"client_done","outcome":"run %s"}\n' "$n" >> "$7"
printf '{"trace_hash":"%016x"}\n' "$n"
"#;

/// `--check-determinism` can fail: two runs that differ (a fake binary
/// whose every run differs) are reported with both hashes and the first
/// diverging event, index and both sides, and both traces are kept.
#[test]
fn two_fresh_runs_that_differ_are_named_at_their_first_diverging_event() -> TestResult {
    use std::os::unix::fs::PermissionsExt;
    let tmp = TempDir::new("determinism-fake")?;
    let fake = tmp.path().join("fake-upsim");
    std::fs::write(&fake, FAKE_UPSIM)?;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755))?;
    let fresh = FreshRuns {
        binary: fake,
        scenario: SCENARIO.into(),
        dir: tmp.path().to_owned(),
    };
    let Verdict::Differs {
        hashes,
        divergence,
        traces,
    } = fresh.check(3)?
    else {
        panic!("two different runs were found the same");
    };
    assert_eq!(
        hashes,
        ("0000000000000001".into(), "0000000000000002".into())
    );
    let d = divergence.expect("the traces differ");
    assert_eq!(d.index, 1);
    assert!(
        d.first.as_deref().is_some_and(|e| e.contains("run 1")),
        "{d}"
    );
    assert!(
        d.second.as_deref().is_some_and(|e| e.contains("run 2")),
        "{d}"
    );
    assert!(
        traces.0.exists() && traces.1.exists(),
        "a divergence keeps its traces"
    );
    Ok(())
}

/// `--check-determinism` passes a real seed: two fresh processes of the
/// binary give smoke seed 7 the hash `upsim run smoke --seed 7` prints, and
/// leave no trace files behind.
#[test]
fn two_fresh_runs_of_a_seed_agree() -> TestResult {
    let tmp = TempDir::new("determinism-real")?;
    let fresh = FreshRuns {
        binary: UPSIM.into(),
        scenario: SCENARIO.into(),
        dir: tmp.path().to_owned(),
    };
    assert_eq!(
        fresh.check(7)?,
        Verdict::Same {
            hash: "322a36162bc04fbe".into()
        },
        "{}",
        replay_hint(SCENARIO, 7)
    );
    assert_eq!(
        std::fs::read_dir(tmp.path())?.count(),
        0,
        "traces left behind"
    );
    Ok(())
}

/// This is a regression test that ensures a shard killed mid-sweep keeps
/// every line it wrote, each a whole record, and that the merge of what it
/// left names the seeds it never finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_shard_keeps_its_lines_and_the_merge_names_what_is_missing() -> TestResult {
    use crate::support::wait_until;
    let tmp = TempDir::new("killed-shard")?;
    let dir = tmp.path();
    let results = dir.join("killed.jsonl");
    let args = [
        "sweep",
        SCENARIO,
        "--seeds",
        "0..400",
        "--jobs",
        "1",
        "--quiet",
        "--no-shrink",
        "--results",
        "killed.jsonl",
    ];
    let mut shard = Proc::spawn("killed", &args, dir, "warn")?;
    let wrote_two = wait_until(SWEEP_WALL_MAX, Duration::from_millis(50), || async {
        std::fs::read_to_string(&results).is_ok_and(|t| t.lines().count() >= 2)
    })
    .await;
    assert!(wrote_two, "no two lines written:\n{}", shard.logs());
    shard.signal("KILL")?;
    shard.wait_exit(Duration::from_secs(10)).await?;
    let kept = records(&results)?;
    assert!(kept.len() >= 2 && kept.len() < 400, "{} lines", kept.len());
    let merge = ["sweep", "merge", "killed.jsonl"].map(str::to_owned);
    let (code, merged) = upsim(dir, "merge", &merge).await?;
    assert_eq!(code, 1, "{merged}");
    let missing = 400 - kept.len();
    assert!(
        merged.contains(&format!("MISSING {missing} seed(s)")),
        "{merged}"
    );
    Ok(())
}
