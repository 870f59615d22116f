#!/usr/bin/env bash
# The whole test suite, as README and CI run it: installs and starts the real FHIR R4 test
# server (Medplum's FHIR router, pinned in tests/fhir-server/package-lock.json) on
# 127.0.0.1, runs every Rust test against it, and stops it again.
#   FHIR_TEST_PORT (default 18080)   extra arguments are passed to `cargo test`
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
command -v node >/dev/null || { echo "tests/run.sh: Node.js >= 20.19 is needed for the FHIR test server" >&2; exit 1; }
command -v cargo >/dev/null || { echo "tests/run.sh: cargo is needed" >&2; exit 1; }

PORT="${FHIR_TEST_PORT:-18080}"
STATE="$(mktemp -d)"
export PIDFILE="$STATE/fhir.pid" LOG="$STATE/fhir.log"
stop() {
  if [ -f "$PIDFILE" ]; then kill "$(cat "$PIDFILE")" 2>/dev/null || true; fi
  rm -rf "$STATE"
}
trap stop EXIT

echo "==> starting the FHIR R4 test server on 127.0.0.1:$PORT" >&2
CAREPLANE_TEST_FHIR_URL="$(PORT="$PORT" bash tests/fhir-server/start-fhir-test-server.sh)"
export CAREPLANE_TEST_FHIR_URL
echo "==> FHIR test server ready at $CAREPLANE_TEST_FHIR_URL" >&2

export NO_COLOR=1
cargo test --all-targets --locked "$@"
cargo test --doc --locked
