#!/usr/bin/env bash
# Real mode against the disk (issue 12): `upsim upload` of one file through
# `upsim serve` to `upsim drive` on loopback, beside a baseline that does
# only the work the bytes must have on this machine — read the file once,
# write it into a directory on the same disk with one fsync (as the drive
# does when it finishes a file), and one MD5 pass (Drive's md5Checksum,
# which the drive must compute) — alternated ROUNDS times in one run, so
# the ratio comes from the same machine state. Prints each round and the
# medians; nothing is asserted (README "Performance" has the figures).
#
#   benches/real_vs_disk.sh [SIZE_MIB] [ROUNDS]     # defaults: 1024 3
#
# Needs a release build (`cargo build --release`), curl, coreutils.
set -euo pipefail
size_mib=${1:-1024}
rounds=${2:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
upsim="$root/target/release/upsim"
[ -x "$upsim" ] || { echo "build first: cargo build --release" >&2; exit 2; }
work=$(mktemp -d "${TMPDIR:-/tmp}/upsim-real-vs-disk.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
cd "$work"

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
secs() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2 - $1:.3f}')"; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

T=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'); D=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
echo "$T alice" > tokens; echo "$T" > alice-token
echo "$D backend" > drive-tokens; echo "$D" > drive-token
drive_port=$(port); serve_port=$(port)
"$upsim" drive --listen "127.0.0.1:$drive_port" --dir drive --tokens drive-tokens 2> drive.log &
pids+=($!)
"$upsim" serve --listen "127.0.0.1:$serve_port" --profile dev --drive "http://127.0.0.1:$drive_port" \
  --state state --tokens tokens --drive-token-file drive-token ${SERVE_ARGS:-} 2> serve.log &
pids+=($!)
for _ in $(seq 1 100); do curl -sf "127.0.0.1:$serve_port/healthz" >/dev/null && break; sleep 0.1; done

head -c "$((size_mib * 1024 * 1024))" /dev/urandom > file.bin
mkdir -p copies
echo "file: $size_mib MiB; $rounds rounds, baseline and upload alternated"
base=(); real=()
for r in $(seq 1 "$rounds"); do
  t0=$(secs)
  dd if=file.bin bs=8M status=none | tee >(md5sum > baseline.md5) \
    | dd of="copies/copy-$r" bs=8M conv=fsync status=none
  t1=$(secs)
  "$upsim" upload file.bin --server "http://127.0.0.1:$serve_port" --token-file alice-token \
    > "upload-$r.out" 2>&1
  t2=$(secs)
  rm -f "copies/copy-$r" drive/*-file.bin
  b=$(elapsed "$t0" "$t1"); u=$(elapsed "$t1" "$t2")
  base+=("$b"); real+=("$u")
  echo "round $r: baseline $b s, upsim upload $u s ($(python3 -c "print(f'{$u / $b:.2f}')")×)"
done
mb=$(median "${base[@]}"); mu=$(median "${real[@]}")
python3 - "$size_mib" "$mb" "$mu" <<'PY'
import sys
mib, b, u = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
mb = mib * 1048576 / 1e6
print(f"median: baseline {b:.3f} s ({mb / b:.0f} MB/s), upsim upload {u:.3f} s ({mb / u:.0f} MB/s); upload / baseline = {u / b:.2f}")
PY
tail -n 1 "upload-$rounds.out"
