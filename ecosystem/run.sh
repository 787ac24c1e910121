#!/usr/bin/env bash
# Google's own Drive client uploads through `upsim drive` (issue 14): installs
# the pinned client into a virtualenv, makes a throwaway CA and a certificate
# for localhost (openssl), starts the emulator over TLS with an OAuth client
# whose tokens live 60 s, uploads a 24 MiB file in 1 MiB chunks with
# google-api-python-client's resumable upload (google-auth fetching the access
# token from the emulator's token endpoint), and checks that the stored file
# is the source, byte for byte. (The client uploads only over https: it keeps
# the scheme of Google's root URL.) Run by .ci/run; locally:
#   cargo build --release && ecosystem/run.sh target/release/upsim
set -euo pipefail
upsim=$(realpath "${1:?usage: ecosystem/run.sh PATH_TO_UPSIM}")
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
drive_pid=""
cleanup() { [ -n "$drive_pid" ] && kill "$drive_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"

# A throwaway CA and a certificate for localhost, signed by it.
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=upsim ecosystem CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" \
  -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
  -keyout "$work/drive.key" -out "$work/drive.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' \
  > "$work/drive.ext"
openssl x509 -req -days 1 -in "$work/drive.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" \
  -CAcreateserial -extfile "$work/drive.ext" -out "$work/drive.pem" 2>/dev/null

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$work/clients.json" <<JSON
{"access_token_lifetime_s": 60, "clients": [{"client_id": "ecosystem",
 "client_secret": "ecosystem-secret", "refresh_token": "1//ecosystem-refresh", "user": "alice"}]}
JSON
cat > "$work/credentials.json" <<JSON
{"type": "authorized_user", "client_id": "ecosystem", "client_secret": "ecosystem-secret",
 "refresh_token": "1//ecosystem-refresh", "token_uri": "https://localhost:$port/token"}
JSON
"$upsim" drive --listen "127.0.0.1:$port" --dir "$work/drive" \
  --public-url "https://localhost:$port" --tls-cert "$work/drive.pem" --tls-key "$work/drive.key" \
  --oauth-clients "$work/clients.json" 2> "$work/drive.log" &
drive_pid=$!
for _ in $(seq 1 100); do
  (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done

head -c $((24 * 1024 * 1024 + 12345)) /dev/urandom > "$work/source.bin"
"$work/venv/bin/python" "$here/google_drive_upload.py" "https://localhost:$port" \
  "$work/credentials.json" "$work/source.bin" $((1024 * 1024)) "$work/ca.pem" | tee "$work/reply.json"

stored=$(find "$work/drive" -maxdepth 1 -type f -name '*ecosystem.bin')
if [ "$(echo "$stored" | wc -l)" != 1 ] || [ -z "$stored" ]; then
  echo "FAIL: expected one stored ecosystem.bin, found: $stored" >&2
  ls -la "$work/drive" >&2; cat "$work/drive.log" >&2; exit 1
fi
if ! cmp -s "$work/source.bin" "$stored"; then
  echo "FAIL: the stored file differs from the source" >&2; exit 1
fi
want_md5=$(md5sum "$work/source.bin" | cut -d' ' -f1)
got_md5=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["file"]["md5Checksum"])' "$work/reply.json")
if [ "$got_md5" != "$want_md5" ]; then
  echo "FAIL: the drive's md5Checksum $got_md5 is not the source's $want_md5" >&2; exit 1
fi
grep -q "access token issued" "$work/drive.log" || {
  echo "FAIL: google-auth never fetched a token from the emulator" >&2; cat "$work/drive.log" >&2; exit 1; }
if grep -q "ecosystem-secret\|ecosystem-refresh\|ya29\." "$work/drive.log"; then
  echo "FAIL: the drive logged a secret or a token" >&2; exit 1
fi
echo "ecosystem: google-api-python-client uploaded $(stat -c %s "$stored") bytes through upsim drive; identical to the source, md5Checksum $got_md5"
