#!/usr/bin/env bash
# Benchmark: how long `careplane plan` takes and how many requests it sends, for the
# example clinic and for a synthetic large organisation, on the embedded file store and on
# the real FHIR test server (loopback). Prints a table; no thresholds (this is a
# measurement, not a test).
#   RUNS (default 10)   LARGE_STAFF (default 2000)   LARGE_TEAMS (default 200)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RUNS="${RUNS:-10}"
LARGE_STAFF="${LARGE_STAFF:-2000}"
LARGE_TEAMS="${LARGE_TEAMS:-200}"
PORT="${FHIR_BENCH_PORT:-18181}"
cargo build --release --locked -q
BIN="$ROOT/target/release/careplane"
WORK="$(mktemp -d)"
export PIDFILE="$WORK/fhir.pid" LOG="$WORK/fhir.log" NO_COLOR=1
trap 'kill "$(cat "$PIDFILE" 2>/dev/null)" 2>/dev/null || true; rm -rf "$WORK"' EXIT
BASE="$(PORT="$PORT" bash tests/fhir-server/start-fhir-test-server.sh)"

# Load a store directory (NDJSON) into the server, keeping ids (PUT = update-as-create).
load() {
  local store=$1
  for f in "$store"/*.ndjson; do
    local rt; rt=$(basename "$f" .ndjson)
    while IFS= read -r line; do
      [ -z "$line" ] && continue
      local id; id=$(printf '%s' "$line" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
      curl -sf -o /dev/null -X PUT -H 'Content-Type: application/fhir+json' --data-binary "$line" "$BASE/$rt/$id"
    done < "$f"
  done
}

# A synthetic organisation: N staff, T teams of ~10, one role assignment each.
synth() {
  local dir=$1 n=$2 t=$3
  python3 - "$dir" "$n" "$t" <<'PY'
import json, os, sys
d, n, t = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.makedirs(d + "/store", exist_ok=True)
with open(d + "/store/Practitioner.ndjson", "w") as f:
    for i in range(n):
        f.write(json.dumps({"resourceType": "Practitioner", "id": f"bench{i:027d}", "active": True,
            "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": f"2{i:09d}"}],
            "telecom": [{"system": "email", "value": f"s{i}@bench.example.org"}]}) + "\n")
docs = ["apiVersion: careplane.dev/v1\nkind: Project\nmetadata:\n  name: bench\nspec:\n  defaultTarget: local\n  targets:\n    local: {type: file, path: store}\n"]
roles = ["md", "rn", "ma", "cc", "fd"]
for r in roles:
    docs.append(f"apiVersion: careplane.dev/v1\nkind: Role\nmetadata:\n  name: {r}\nspec:\n  code: {r.upper()}\n  display: Role {r}\n  domain: clinical\n")
for k in range(t):
    members = "".join(f"    - npi: \"2{i:09d}\"\n" for i in range(k * (n // t), k * (n // t) + min(10, n // t)))
    docs.append(f"apiVersion: careplane.dev/v1\nkind: Team\nmetadata:\n  name: team-{k}\nspec:\n  displayName: Team {k}\n  members:\n{members}")
for i in range(n):
    docs.append(f"apiVersion: careplane.dev/v1\nkind: RoleAssignment\nmetadata:\n  name: s{i}\nspec:\n  practitioner: {{email: s{i}@bench.example.org}}\n  roles: [{roles[i % 5]}]\n")
open(d + "/org.yaml", "w").write("---\n".join(docs))
PY
}

measure() { # label dir [args...]
  local label=$1 dir=$2; shift 2
  local total=0 line=""
  for _ in $(seq 1 "$RUNS"); do
    local s e
    s=$(date +%s%N)
    line=$("$BIN" plan "$dir" "$@" | grep 'Read live state' || true)
    e=$(date +%s%N)
    total=$((total + (e - s) / 1000))
  done
  printf '%-44s %8.1f ms   %s\n' "$label" "$(awk -v t="$total" -v r="$RUNS" 'BEGIN { print t / r / 1000 }')" "${line#Read live state with }"
}

echo "careplane plan, mean wall time over $RUNS runs (release build, whole process)"
cp -r examples/clinic "$WORK/clinic"
measure "example clinic, file store" "$WORK/clinic"
load "$WORK/clinic/store"
measure "example clinic, FHIR server (loopback)" "$WORK/clinic" --server "$BASE"
"$BIN" apply "$WORK/clinic" --server "$BASE" --auto-approve >/dev/null
measure "example clinic applied (no changes), FHIR" "$WORK/clinic" --server "$BASE"

synth "$WORK/large" "$LARGE_STAFF" "$LARGE_TEAMS"
measure "$LARGE_STAFF staff / $LARGE_TEAMS teams, file store" "$WORK/large"
load "$WORK/large/store"
measure "$LARGE_STAFF staff / $LARGE_TEAMS teams, FHIR server" "$WORK/large" --server "$BASE"
s=$(date +%s%N); "$BIN" apply "$WORK/large" --server "$BASE" --auto-approve > "$WORK/apply.log"; e=$(date +%s%N)
printf '%-44s %8.1f ms   %s\n' "apply of that plan, FHIR server" "$(awk -v a="$s" -v b="$e" 'BEGIN { print (b - a) / 1000000 }')" "$(tail -1 "$WORK/apply.log")"
measure "$LARGE_STAFF staff applied (no changes), FHIR" "$WORK/large" --server "$BASE"
