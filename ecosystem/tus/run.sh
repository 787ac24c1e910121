#!/usr/bin/env bash
# tus-js-client, the tus project's own client, uploads through upsim's tus
# endpoint (issue 15): installs the pinned client (`npm ci` from
# package-lock.json), starts `upsim drive` and `upsim serve` (tokens, records
# on disk), and uploads a 64 MiB file with upload.mjs, which aborts its own
# upload at a quarter and resumes it from its URL storage; past 60 % this
# script kills `upsim serve` outright (SIGKILL) and starts it again on the
# same records, and the client's retries carry the upload to the end. Then a
# 16 MiB file goes up with `parallelUploads: 4` (four partial uploads and a
# final one that concatenates them). The drive's stored files must be the
# sources, byte for byte. A missing node or
# npm fails the run; nothing is skipped. Run by .ci/run; locally:
#   cargo build --release && ecosystem/tus/run.sh target/release/upsim
set -euo pipefail
upsim=$(realpath "${1:?usage: ecosystem/tus/run.sh PATH_TO_UPSIM}")
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
drive_pid="" serve_pid="" client_pid=""
cleanup() {
  for pid in "$client_pid" "$serve_pid" "$drive_pid"; do
    [ -n "$pid" ] && kill "$pid" 2>/dev/null
  done
  wait 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; cat "$work"/*.log >&2 2>/dev/null || true; exit 1; }
# A process's peak resident set, MiB (VmHWM).
peak_rss_mib() { awk '/^VmHWM:/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }

command -v node >/dev/null || fail "node is not installed"
command -v npm >/dev/null || fail "npm is not installed"
(cd "$here" && npm ci --no-audit --no-fund --silent) || fail "npm ci"

free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
wait_port() {
  for _ in $(seq 1 300); do
    (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  fail "nothing listens on port $1"
}
drive_port=$(free_port)
serve_port=$(free_port)
token="tus-ecosystem-alice-0123456789"
drive_token="tus-ecosystem-backend-drive-42"
printf '%s alice\n' "$token" > "$work/tokens"
printf '%s backend\n' "$drive_token" > "$work/drive-tokens"
printf '%s\n' "$drive_token" > "$work/drive-token"

"$upsim" drive --listen "127.0.0.1:$drive_port" --dir "$work/drive" --tokens "$work/drive-tokens" \
  2> "$work/drive.log" &
drive_pid=$!
wait_port "$drive_port"
start_serve() {
  "$upsim" serve --listen "127.0.0.1:$serve_port" --profile dev --drive "http://127.0.0.1:$drive_port" \
    --state "$work/state" --tokens "$work/tokens" --drive-token-file "$work/drive-token" \
    2>> "$work/serve.log" &
  serve_pid=$!
  wait_port "$serve_port"
}
start_serve

size=$((64 * 1024 * 1024 + 12345))
head -c "$size" /dev/urandom > "$work/source.bin"
head -c $((16 * 1024 * 1024 + 7)) /dev/urandom > "$work/parallel.bin"
started=$(date +%s.%N)
node "$here/upload.mjs" "http://127.0.0.1:$serve_port/files/" "$work/source.bin" "$token" \
  "$work/urls.json" "$work/progress" "$work/parallel.bin" > "$work/client.out" 2> "$work/client.log" &
client_pid=$!

# Past 60 % of the resumed upload: kill the backend outright, start it again.
killed_at=""
for _ in $(seq 1 1200); do
  kill -0 "$client_pid" 2>/dev/null || break
  if [ -f "$work/progress" ]; then read -r phase sent < "$work/progress" || true; fi
  if [ "${phase:-}" = second ] && [ "${sent:-0}" -ge $((size * 6 / 10)) ]; then
    first_rss=$(peak_rss_mib "$serve_pid")
    kill -KILL "$serve_pid"
    wait "$serve_pid" 2>/dev/null || true
    killed_at=$sent
    start_serve
    break
  fi
  sleep 0.05
done
[ -n "$killed_at" ] || fail "the backend was never killed mid-upload (progress: $(cat "$work/progress" 2>/dev/null))"
[ "$killed_at" -lt "$size" ] || fail "the upload finished before the kill"

wait "$client_pid" || fail "tus-js-client failed"
client_pid=""
finished=$(date +%s.%N)
second_rss=$(peak_rss_mib "$serve_pid")

for name in source.bin parallel.bin; do
  stored=$(find "$work/drive" -maxdepth 1 -type f -name "*$name")
  [ -n "$stored" ] && [ "$(echo "$stored" | wc -l)" = 1 ] || fail "expected one stored $name, found: $stored"
  cmp -s "$work/$name" "$stored" || fail "the drive's $name differs from the source"
done
cat "$work/client.out"
printf 'tus-js-client %s: %d bytes through upsim serve (aborted at a quarter and resumed; backend killed at %d bytes and restarted) and 16 MiB in 4 parallel partial uploads, %.1f s; the drive copies are byte-identical\n' \
  "$(node -p 'require("'"$here"'/node_modules/tus-js-client/package.json").version')" \
  "$size" "$killed_at" "$(awk "BEGIN { print $finished - $started }")"
printf 'upsim serve peak RSS (VmHWM): %s MiB before the kill, %s MiB after the restart (dev profile: an 8 MiB window per upload)\n' \
  "$first_rss" "$second_rss"
