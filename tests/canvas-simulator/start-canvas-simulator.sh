#!/usr/bin/env bash
# Start the Canvas Medical FHIR API SIMULATOR (canvas-simulator.cjs; a test double of Canvas's
# documented API, not Canvas), wait until it answers, print its base URL.
# Stop it with: kill "$(cat "$PIDFILE")"
#   PORT (default 8090)  PIDFILE (default ./canvas-simulator.pid)  LOG (default ./canvas-simulator.log)
#   SIM_CLIENT_ID, SIM_CLIENT_SECRET, SIM_TOKEN_TTL are passed through to the simulator.
set -euo pipefail
DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PORT="${PORT:-8090}"
PIDFILE="${PIDFILE:-$PWD/canvas-simulator.pid}"
LOG="${LOG:-$PWD/canvas-simulator.log}"
PORT="$PORT" HOST=127.0.0.1 node "$DIR/canvas-simulator.cjs" >"$LOG" 2>&1 &
echo $! >"$PIDFILE"
for _ in $(seq 1 150); do                                          # up to 30 s; ~0.1 s when idle
  # The health answer carries the server's pid, so a leftover server on this port is not taken for ours.
  health="$(curl -sf "http://127.0.0.1:$PORT/__sim/health" 2>/dev/null || true)"
  case "$health" in *"\"pid\":$(cat "$PIDFILE")"[,}]*) echo "http://127.0.0.1:$PORT"; exit 0 ;; esac
  kill -0 "$(cat "$PIDFILE")" 2>/dev/null || { cat "$LOG" >&2; exit 1; }
  sleep 0.2
done
echo "Canvas simulator did not become ready; log:" >&2; cat "$LOG" >&2
kill "$(cat "$PIDFILE")" 2>/dev/null || true
exit 1
