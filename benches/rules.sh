#!/usr/bin/env bash
# Benchmark: patient-group rules over N synthetic patients (default 10,000), on the file
# store and on the real FHIR test server (loopback): plan time and request counts, the
# apply, and the plan after it. A measurement, not a test: no thresholds.
#   PATIENTS (default 10000)   RUNS (default 3)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PATIENTS="${PATIENTS:-10000}"
RUNS="${RUNS:-3}"
PORT="${FHIR_BENCH_PORT:-18182}"
cargo build --release --locked -q
BIN="$ROOT/target/release/careplane"
WORK="$(mktemp -d)"
export PIDFILE="$WORK/fhir.pid" LOG="$WORK/fhir.log" NO_COLOR=1 CAREPLANE_PSEUDONYM_KEY=bench-key
trap 'kill "$(cat "$PIDFILE" 2>/dev/null)" 2>/dev/null || true; rm -rf "$WORK"' EXIT
BASE="$(PORT="$PORT" MAX_COUNT=1000 bash tests/fhir-server/start-fhir-test-server.sh)"

python3 - "$WORK" "$PATIENTS" <<'PY'
import json, os, sys
work, n = sys.argv[1], int(sys.argv[2])
os.makedirs(f"{work}/org/store", exist_ok=True)
patients, consents = [], []
for i in range(n):
    pid = f"bp{i:08d}"
    patients.append({"resourceType": "Patient", "id": pid, "active": i % 17 != 0,
                     "gender": "female" if i % 2 else "male", "birthDate": f"{1930 + i % 80}-01-01",
                     "identifier": [{"system": "urn:bench:payer", "value": f"P{i}"}]})
    consents.append({"resourceType": "Consent", "id": f"bc{i:08d}", "status": "rejected" if i % 10 == 0 else "active",
                     "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
                     "category": [{"coding": [{"system": "urn:bench:consents", "code": "A0001"}]}],
                     "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTOUT"}]},
                     "patient": {"reference": f"Patient/{pid}"}})
for name, rows in (("Patient", patients), ("Consent", consents)):
    with open(f"{work}/org/store/{name}.ndjson", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    for k in range(0, n, 500):
        bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
            {"resource": r, "request": {"method": "PUT", "url": f"{name}/{r['id']}"}} for r in rows[k:k + 500]]}
        with open(f"{work}/{name}-{k // 500:04d}.json", "w") as f:
            json.dump(bundle, f)
open(f"{work}/org/careplane.yaml", "w").write(
    "apiVersion: careplane.dev/v1\nkind: Project\nmetadata:\n  name: bench\nspec:\n  defaultTarget: local\n  targets:\n    local: {type: file, path: store}\n"
    "    server: {type: fhir, url: \"${BENCH_FHIR_URL}\"}\n    server-1000: {type: fhir, url: \"${BENCH_FHIR_URL}\", pageSize: 1000}\n")
open(f"{work}/org/groups.yaml", "w").write(
    "apiVersion: careplane.dev/v1\nkind: PatientGroup\nmetadata:\n  name: opt-out\nspec:\n  mode: authoritative\n  maxRemovalShare: 1\n"
    "  rule:\n    all:\n      - active: true\n      - not:\n          consent: {code: A0001, status: rejected}\n"
    "---\napiVersion: careplane.dev/v1\nkind: PatientGroup\nmetadata:\n  name: seniors-on-payer\nspec:\n  rule:\n    all:\n"
    "      - memberOf: opt-out\n      - age: {min: 65}\n      - identifier: {system: \"urn:bench:payer\"}\n")
PY
for f in "$WORK"/Patient-*.json "$WORK"/Consent-*.json; do
  curl -sf -o /dev/null -X POST -H 'Content-Type: application/fhir+json' --data-binary "@$f" "$BASE"
done

measure() { # label args...
  local label=$1; shift
  local total=0 line=""
  for _ in $(seq 1 "$RUNS"); do
    local s e
    s=$(date +%s%N)
    line=$("$BIN" plan "$WORK/org" "$@" | grep 'Read live state' || true)
    e=$(date +%s%N)
    total=$((total + (e - s) / 1000))
  done
  printf '%-46s %9.1f ms   %s\n' "$label" "$(awk -v t="$total" -v r="$RUNS" 'BEGIN { print t / r / 1000 }')" "${line#Read live state with }"
}
echo "careplane plan with patient-group rules, $PATIENTS patients + $PATIENTS consents, mean of $RUNS runs (release)"
measure "file store" 
export BENCH_FHIR_URL="$BASE"
measure "FHIR server (loopback), pages of 100" --target server
measure "FHIR server (loopback), pages of 1000" --target server-1000
s=$(date +%s%N); "$BIN" apply "$WORK/org" --target server-1000 --auto-approve > "$WORK/apply.log"; e=$(date +%s%N)
printf '%-46s %9.1f ms   %s\n' "apply (create both groups), FHIR server" "$(awk -v a="$s" -v b="$e" 'BEGIN { print (b - a) / 1000000 }')" "$(tail -1 "$WORK/apply.log")"
measure "plan after apply (no changes), pages of 1000" --target server-1000
