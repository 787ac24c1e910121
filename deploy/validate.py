"""What no schema checks in deploy/ (run by validate.sh after the schemas).

Kubernetes: the sweep Job is Indexed, restarts nothing in place, has
completions = parallelism = N and passes `--shard $(JOB_COMPLETION_INDEX)/N`;
its results go to the volume the merge Job reads, and the merge Job lists
exactly the N files the shards write. GitHub Actions: the matrix is shards
0..N-1 with N the workflow's SHARDS, the sweep step passes `--shard
"$SHARD/$SHARDS"`, every shard uploads its results even after a failure, and
the merge job runs after all of them, whatever they did.

Then every upsim command line of both is run for real, as written, with the
range cut to N seeds (one a shard) and the volume or workspace in a temporary
directory: each shard must pass, and the merge must see all N seeds, none
failed or missing (a merge of N swarm seeds may still fail coverage: that is
the only failure accepted).

Usage: validate.py PATH_TO_UPSIM DEPLOY_DIR
"""

import pathlib
import subprocess
import sys
import tempfile

import yaml

INDEX = "$(JOB_COMPLETION_INDEX)"


def fail(message):
    print(f"FAIL: deploy/: {message}", file=sys.stderr)
    sys.exit(1)


def expect(condition, message):
    if not condition:
        fail(message)


def documents(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def one(docs, kind, path):
    found = [d for d in docs if d.get("kind") == kind]
    expect(len(found) == 1, f"{path}: expected one {kind}, found {len(found)}")
    return found[0]


def container(job, name, path):
    found = [c for c in job["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    expect(len(found) == 1, f"{path}: no container {name!r}")
    return found[0]


def claim_at(job, cont, mount_path):
    """The PVC mounted at mount_path in cont."""
    mounts = [m for m in cont.get("volumeMounts", []) if m["mountPath"] == mount_path]
    expect(len(mounts) == 1, f"{job['metadata']['name']}: nothing mounted at {mount_path}")
    volumes = job["spec"]["template"]["spec"]["volumes"]
    volume = [v for v in volumes if v["name"] == mounts[0]["name"]]
    expect(len(volume) == 1 and "persistentVolumeClaim" in volume[0], "results volume is not a PVC")
    return volume[0]["persistentVolumeClaim"]["claimName"]


def arg_after(args, flag, what):
    expect(flag in args, f"{what}: no {flag}")
    return args[args.index(flag) + 1]


def run(command, what, cwd=None, env=None, shell=False):
    done = subprocess.run(command, cwd=cwd, env=env, shell=shell, capture_output=True,
                          text=True, timeout=600, executable="/bin/bash" if shell else None)
    return done.returncode, done.stdout + done.stderr


def check_merge_output(code, out, n, what):
    expect(f"{n} of {n} seeds run, 0 failed, 0 duplicate(s), 0 conflict(s), 0 missing" in out,
           f"{what}: the merge did not see every seed once:\n{out}")
    expect(code == 0 or (code == 1 and "FAILED coverage" in out),
           f"{what}: merge exited {code}:\n{out}")


def check_kubernetes(upsim, here, work):
    sweep_path, merge_path = here / "k8s/sweep-job.yaml", here / "k8s/merge-job.yaml"
    docs = documents(sweep_path)
    pvc = one(docs, "PersistentVolumeClaim", sweep_path)
    job = one(docs, "Job", sweep_path)
    spec = job["spec"]
    expect(spec.get("completionMode") == "Indexed", "the sweep Job is not Indexed")
    n = spec["completions"]
    expect(spec.get("parallelism") == n, f"parallelism {spec.get('parallelism')} != completions {n}")
    expect(spec["template"]["spec"]["restartPolicy"] == "Never", "restartPolicy is not Never")
    cont = container(job, "sweep", sweep_path)
    args = cont["args"]
    expect(arg_after(args, "--shard", "sweep Job") == f"{INDEX}/{n}",
           f"--shard is not {INDEX}/{n}")
    results = arg_after(args, "--results", "sweep Job")
    expect(INDEX in results, "each shard must write its own results file")
    mount = "/results"
    expect(results.startswith(mount + "/"), f"results {results} not under {mount}")
    claim = claim_at(job, cont, mount)
    expect(claim == pvc["metadata"]["name"], "the sweep Job does not mount the PVC")
    for rule in spec["podFailurePolicy"]["rules"]:
        if "onExitCodes" in rule:
            expect(rule["onExitCodes"]["containerName"] == "sweep", "a rule names another container")

    merge = one(documents(merge_path), "Job", merge_path)
    mcont = container(merge, "merge", merge_path)
    margs = mcont["args"]
    expect(margs[:2] == ["sweep", "merge"], "the merge Job does not run `upsim sweep merge`")
    files = sorted(results.replace(INDEX, str(k)) for k in range(n))
    expect(sorted(margs[2:]) == files, f"the merge Job reads {margs[2:]}, the shards write {files}")
    expect(claim_at(merge, mcont, mount) == claim, "the merge Job mounts another claim")

    # The shards and the merge, as written, on one seed a shard.
    volume = str(work / "volume")
    for k in range(n):
        shard_args = [a.replace(INDEX, str(k)).replace(mount, volume) for a in args]
        shard_args[shard_args.index("--seeds") + 1] = f"0..{n}"
        code, out = run([upsim] + shard_args, f"shard {k}")
        expect(code == 0, f"sweep Job index {k}: upsim {' '.join(shard_args)} exited {code}:\n{out}")
    code, out = run([upsim] + [a.replace(mount, volume) for a in margs], "merge")
    check_merge_output(code, out, n, "merge Job")
    print(f"ok -- k8s: Indexed Job of {n} shards and its merge, run on {n} seeds")


def check_workflow(upsim, here, work):
    path = here / "github-actions/sweep.yml"
    wf = documents(path)[0]
    n = int(wf["env"]["SHARDS"])
    shard_job, merge_job = wf["jobs"]["shard"], wf["jobs"]["merge"]
    strategy = shard_job["strategy"]
    expect(strategy["matrix"]["shard"] == list(range(n)), f"the matrix is not shards 0..{n - 1}")
    expect(strategy.get("fail-fast") is False, "fail-fast would cancel shards")
    sweep = [s for s in shard_job["steps"] if "upsim sweep " in s.get("run", "")]
    expect(len(sweep) == 1, "no sweep step")
    expect('--shard "$SHARD/$SHARDS"' in sweep[0]["run"], "the sweep step's --shard")
    expect(sweep[0]["env"]["SHARD"] == "${{ matrix.shard }}", "SHARD is not the matrix's")
    upload = [s for s in shard_job["steps"] if s.get("uses", "").startswith("actions/upload-artifact")]
    expect(len(upload) == 1 and upload[0].get("if") == "always()", "results uploaded only on success")
    expect(merge_job.get("needs") == "shard" and merge_job.get("if") == "always()",
           "the merge job must follow every shard, whatever they did")
    merge = [s for s in merge_job["steps"] if "upsim sweep merge" in s.get("run", "")]
    expect(len(merge) == 1, "no merge step")

    # The steps' commands, as written, in a workspace with the binary where
    # `cargo build --release` leaves it, on one seed a shard.
    space = work / "workspace"
    (space / "target/release").mkdir(parents=True)
    (space / "target/release/upsim").symlink_to(upsim)
    env = {"PATH": "/usr/bin:/bin", "SCENARIO": "swarm", "SEEDS": f"0..{n}", "SHARDS": str(n)}
    for k in range(n):
        code, out = run(sweep[0]["run"], f"shard {k}", cwd=space, env={**env, "SHARD": str(k)},
                        shell=True)
        expect(code == 0, f"workflow shard {k} exited {code}:\n{out}")
    code, out = run(merge[0]["run"], "merge", cwd=space, env=env, shell=True)
    check_merge_output(code, out, n, "workflow merge")
    print(f"ok -- GitHub Actions: matrix of {n} shards and its merge, run on {n} seeds")


def main():
    upsim, here = sys.argv[1], pathlib.Path(sys.argv[2])
    with tempfile.TemporaryDirectory() as work:
        check_kubernetes(upsim, here, pathlib.Path(work))
        check_workflow(upsim, here, pathlib.Path(work))


if __name__ == "__main__":
    main()
