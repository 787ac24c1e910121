#!/usr/bin/env bash
# Validates deploy/ (run by .ci/run; locally:
#   cargo build --release && deploy/validate.sh target/release/upsim):
# 1. the Kubernetes manifests against the Kubernetes 1.33 JSON schema, strict
#    (unknown fields refused), with kubernetes-validate's offline schemas;
# 2. the GitHub Actions workflow against SchemaStore's workflow schema
#    (check-jsonschema's vendored copy);
# 3. what no schema knows (validate.py): Indexed mode, N the same in
#    completions, parallelism, --shard …/N, the matrix and the merge's files;
#    and every upsim command in them run for real on a tiny range, shard by
#    shard, then merged.
# Needs python3 with venv and PyPI; a missing piece fails, it never skips.
set -euo pipefail
upsim=$(realpath "${1:?usage: deploy/validate.sh PATH_TO_UPSIM}")
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
"$work/venv/bin/kubernetes-validate" --strict --kubernetes-version 1.33.0 "$here"/k8s/*.yaml
"$work/venv/bin/check-jsonschema" --builtin-schema vendor.github-workflows "$here"/github-actions/*.yml
"$work/venv/bin/python" "$here/validate.py" "$upsim" "$here"
