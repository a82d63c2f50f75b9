#!/usr/bin/env bash
# A1111 v1.10.1's own API test suite (its test/ folder) against `sumi serve` on MODEL: a local
# check (the A1111 source is not available to CI). Extract the suite with
#   git --git-dir=<a1111 mirror> archive v1.10.1 test | tar -x -C DIR
# Usage: tools/apitest/a1111_suite.sh DIR/test MODEL [pytest args, e.g. test files]
# Needs pytest and pytest-base-url (A1111's requirements-test.txt; pinned in
# tools/reference/setup_env.sh) in $PYTHON (default: the
# reference venv's python), and target/release/sumi (or $SUMI).
set -euo pipefail
cd "$(dirname "$0")/../.."
tests="${1:?A1111 test folder}"
model="${2:?model file}"
shift 2
sumi="${SUMI:-${CARGO_TARGET_DIR:-target}/release/sumi}"
python="${PYTHON:-tools/reference/.venv/bin/python}"
port="${PORT:-7871}"
log="$(mktemp)"
"$sumi" serve --model "$model" --port "$port" >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 1 120); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
    sleep 0.5
done
cd "$tests"
"$OLDPWD/$python" -m pytest -q -p no:cacheprovider --base-url "http://127.0.0.1:$port" "$@" || status=$?
exit "${status:-0}"
