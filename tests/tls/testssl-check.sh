#!/usr/bin/env bash
# Runs testssl.sh (Debian package `testssl.sh`) and openssl against a real collector on
# loopback and asserts what the identity issue promises of the transport:
#   - TLS 1.3 is offered, and SSLv2, SSLv3, TLS 1.0, 1.1 and 1.2 are not;
#   - the server requests a client certificate and names the deployment CA as acceptable.
# Usage: tests/tls/testssl-check.sh [path/to/commscan-collector]
# Needs: testssl (apt-get install testssl.sh), openssl, python3.
set -euo pipefail
cd "$(dirname "$0")/../.."

bin=${1:-}
if [ -z "$bin" ]; then
  cargo build --locked -q -p commscan-collector --bin commscan-collector
  bin=${CARGO_TARGET_DIR:-target}/debug/commscan-collector
fi
command -v testssl >/dev/null || { echo "testssl not found: apt-get install testssl.sh" >&2; exit 2; }

work=$(mktemp -d)
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" init --data-dir "$work/c" --org tls-check >/dev/null
"$bin" serve --data-dir "$work/c" --listen "127.0.0.1:$port" 2>"$work/serve.log" &
server_pid=$!
for _ in $(seq 1 100); do
  (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done

echo "== testssl --protocols against 127.0.0.1:$port"
testssl --quiet --color 0 --warnings off --protocols --jsonfile "$work/testssl.json" "127.0.0.1:$port" >"$work/testssl.txt" 2>&1 || true
python3 - "$work/testssl.json" <<'PY'
import json, sys
found = {e["id"]: e["finding"] for e in json.load(open(sys.argv[1]))}
problems = []
if not found.get("TLS1_3", "").startswith("offered"):
    problems.append(f"TLS 1.3 must be offered, testssl says: {found.get('TLS1_3')!r}")
for old in ["SSLv2", "SSLv3", "TLS1", "TLS1_1", "TLS1_2"]:
    if found.get(old) != "not offered":
        problems.append(f"{old} must not be offered, testssl says: {found.get(old)!r}")
for k in ["SSLv2", "SSLv3", "TLS1", "TLS1_1", "TLS1_2", "TLS1_3"]:
    print(f"  {k:7} {found.get(k)}")
if problems:
    print("FAIL:\n  " + "\n  ".join(problems)); sys.exit(1)
PY

echo "== openssl s_client -tls1_3: is a client certificate requested?"
out=$(echo | timeout 10 openssl s_client -connect "127.0.0.1:$port" -tls1_3 -CAfile "$work/c/pki/ca.crt" 2>&1 || true)
if ! grep -q "Acceptable client certificate CA names" <<<"$out" || ! grep -q "commscan CA" <<<"$out"; then
  echo "FAIL: the server did not request a client certificate from the deployment CA"; echo "$out" | head -40; exit 1
fi
grep -A1 "Acceptable client certificate CA names" <<<"$out" | sed 's/^/  /'
echo "testssl check ok: TLS 1.3 only, client certificate requested"
