#!/usr/bin/env bash
# The whole test suite, as README and CI run it: installs and starts the real FHIR R4 test
# server (Medplum's FHIR router, pinned in tests/fhir-server/package-lock.json) on
# 127.0.0.1, runs every Rust test (unit, integration, property, doc) against it, stops it.
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

# Tools of the install / CI-template / Kubernetes tests (shellcheck, a static musl build,
# kubernetes-validate and kubectl in target/ci-tools/venv); a tool that cannot be installed
# is named here and its test fails saying so.
bash tests/ci-tools/setup.sh || echo "tests/run.sh: some test tools are missing (above); their tests will fail" >&2

# Build first, so the server is not left idle through a long compile.
cargo test --locked --no-run

echo "==> starting the FHIR R4 test server on 127.0.0.1:$PORT" >&2
CAREPLANE_TEST_FHIR_URL="$(PORT="$PORT" bash tests/fhir-server/start-fhir-test-server.sh)"
export CAREPLANE_TEST_FHIR_URL
echo "==> FHIR test server ready at $CAREPLANE_TEST_FHIR_URL" >&2

# The Canvas API simulator checks its own documented behaviour first (the Rust tests start
# a private simulator each).
SIM_PORT="${CANVAS_SIM_PORT:-18090}"
SIM_BASE="$(PORT="$SIM_PORT" PIDFILE="$STATE/sim.pid" LOG="$STATE/sim.log" bash tests/canvas-simulator/start-canvas-simulator.sh)"
bash tests/canvas-simulator/smoke.sh "$SIM_BASE" > "$STATE/smoke.out" || { cat "$STATE/smoke.out"; exit 1; }
echo "==> Canvas simulator smoke check: $(tail -1 "$STATE/smoke.out")" >&2
kill "$(cat "$STATE/sim.pid")" 2>/dev/null || true

export NO_COLOR=1
set +e
cargo test --locked "$@" 2>&1 | tee "$STATE/out"
status=${PIPESTATUS[0]}
set -e
# One closing line over every test binary (cargo prints one per binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     END { printf "all test binaries: %d passed, %d failed\n", p, f }' "$STATE/out"
exit "$status"
