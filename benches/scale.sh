#!/usr/bin/env bash
# Benchmark (issue 13): a deterministic synthetic organisation of N patients (default
# 10,000) with consents, open tasks, care teams, STAFF practitioners in TEAMS teams, two
# chained patient groups, a care-team assignment and two routing rules; loaded into the
# FHIR test server (loopback) and into a file store. For plan, apply, a second apply that
# updates the large patient group, and the no-op plan after them, on both targets:
#   wall time, CPU time (user + sys), peak RSS (/usr/bin/time), requests (plan: its own
#   count = pages; apply: CAREPLANE_LOG=requests lines), and, for the server's no-op plan,
#   the time curl takes to download the same pages one after another in the same run.
# A measurement, not a test: no thresholds.
#
#   benches/scale.sh [N]       STAFF (2000)  TEAMS (200)  PAGE (1000, the server's page size)
#   CHAIN=10000 benches/scale.sh   only: validate + plan (file store) of CHAIN chained
#                                  memberOf groups over 100 patients
#   MANIFEST_MB=10 benches/scale.sh  only: validate one manifest file of that many MB
#                                  (RoleAssignment documents, about 6,850 per MB)
#   CAREPLANE_BIN=path          measure another build (e.g. an older commit's)
#   FHIR_BENCH_PORT (18183)     the test server's port
#   APPLY_SERVER=0              on the server, plan only (the in-memory test server takes
#                               minutes for the applies at 10,000 patients)
#   TARGETS=local               the file store only (no test server): for N the in-memory
#                               test server cannot load in reasonable time (200,000)
#   TASKS=N                     open tasks (default N/2)
#   CURL=0                      skip the curl download of the same pages (it doubles a
#                               server run: at 200,000 the test server's paging takes minutes)
#   GROUP_ONLY=1                only the opt-out patient group as rules (no memberOf group,
#                               care-team assignment or routing rule): the group-update
#                               apply is then the large group's write alone
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
N="${1:-10000}"
STAFF="${STAFF:-2000}"
TEAMS="${TEAMS:-200}"
PAGE="${PAGE:-1000}"
PORT="${FHIR_BENCH_PORT:-18183}"
if [ -z "${CAREPLANE_BIN:-}" ]; then
  cargo build --release --locked -q
  BIN="$ROOT/target/release/careplane"
else
  BIN="$CAREPLANE_BIN"
fi
WORK="$(mktemp -d)"
export NO_COLOR=1 CAREPLANE_PSEUDONYM_KEY=bench-key
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/fhir.pid" ] && kill "$(cat "$WORK/fhir.pid")" 2>/dev/null || true
  [ -n "${KEEP:-}" ] && echo "kept $WORK" >&2 || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# One timed careplane run: prints "wall_s cpu_s rss_mb"; its stdout/stderr go to $WORK/out, $WORK/err.
timed() {
  /usr/bin/time -f '%e %U %S %M' -o "$WORK/time" "$BIN" "$@" >"$WORK/out" 2>"$WORK/err" || {
    echo "careplane $1 failed:" >&2; tail -5 "$WORK/err" >&2; tail -5 "$WORK/out" >&2; exit 1; }
  awk '{ printf "%.2f %.2f %.0f", $1, $2 + $3, $4 / 1024 }' "$WORK/time"
}
plan_requests() { sed -n 's/.*Read live state with [0-9]* searches (\([0-9]*\) requests).*/\1/p' "$WORK/out" | head -1; }
applied() { grep -o '[0-9]* change(s) applied' "$WORK/out" | head -1 | sed 's/(s) applied//' || true; }
log_requests() { grep -c ' attempt [0-9]* → ' "$WORK/err" || true; }
row() { # what target wall cpu rss requests [curl]
  printf '%-34s %-7s %8s s %8s s %7s MB %9s %s\n' "$@"
}

if [ -n "${MANIFEST_MB:-}" ]; then
  mkdir -p "$WORK/big/store"
  python3 - "$WORK/big" "$MANIFEST_MB" <<'PY'
import sys
d, mb = sys.argv[1], float(sys.argv[2])
docs = ["apiVersion: careplane.dev/v1\nkind: Project\nmetadata:\n  name: big\nspec:\n  defaultTarget: local\n  targets:\n    local: {type: file, path: store}\n"]
roles = ["md", "rn", "ma", "cc", "fd"]
for r in roles:
    docs.append(f"apiVersion: careplane.dev/v1\nkind: Role\nmetadata:\n  name: {r}\nspec:\n  code: {r.upper()}\n  display: Role {r}\n  domain: clinical\n")
size, i = sum(map(len, docs)), 0
while size < mb * 1e6:
    doc = f"apiVersion: careplane.dev/v1\nkind: RoleAssignment\nmetadata:\n  name: s{i:06d}\nspec:\n  practitioner: {{email: s{i}@bench.example.org}}\n  roles: [{roles[i % 5]}]\n"
    docs.append(doc); size += len(doc) + 4; i += 1
open(d + "/org.yaml", "w").write("---\n".join(docs))
print(len(docs), "documents,", size, "bytes", file=sys.stderr)
PY
  echo "one manifest file of $MANIFEST_MB MB (release build)"
  row "what" "target" "wall" "cpu" "peak" "requests"
  read -r w c m <<<"$(CAREPLANE_MAX_MANIFEST_BYTES=64MiB timed validate "$WORK/big")"; row "validate" "-" "$w" "$c" "$m" "-"
  exit 0
fi

if [ -n "${CHAIN:-}" ]; then
  python3 - "$WORK/chain" "$CHAIN" <<'PY'
import json, os, sys
d, n = sys.argv[1], int(sys.argv[2])
os.makedirs(d + "/store", exist_ok=True)
with open(d + "/store/Patient.ndjson", "w") as f:
    for i in range(100):
        f.write(json.dumps({"resourceType": "Patient", "id": f"cp{i:06d}", "active": i % 3 != 0}) + "\n")
docs = ["apiVersion: careplane.dev/v1\nkind: Project\nmetadata:\n  name: chain\nspec:\n  defaultTarget: local\n  targets:\n    local: {type: file, path: store}\n"]
# declared last-first, so an order-as-declared evaluation needs one pass per group
for i in reversed(range(n)):
    rule = "{active: true}" if i == 0 else f"{{memberOf: g{i - 1}}}"
    docs.append(f"apiVersion: careplane.dev/v1\nkind: PatientGroup\nmetadata:\n  name: g{i}\nspec:\n  displayName: G{i}\n  rule: {rule}\n")
open(d + "/groups.yaml", "w").write("---\n".join(docs))
PY
  echo "memberOf chain of $CHAIN groups (release build)"
  row "what" "target" "wall" "cpu" "peak" "requests"
  read -r w c m <<<"$(timed validate "$WORK/chain")"; row "validate" "-" "$w" "$c" "$m" "-"
  read -r w c m <<<"$(timed plan "$WORK/chain")"; row "plan" "file" "$w" "$c" "$m" "$(plan_requests)"
  exit 0
fi

TARGETS="${TARGETS:-local server}"
BASE=http://127.0.0.1:9/fhir
if [ "$TARGETS" != local ]; then
  BASE="$(PORT="$PORT" MAX_COUNT=1000 PIDFILE="$WORK/fhir.pid" LOG="$WORK/fhir.log" bash tests/fhir-server/start-fhir-test-server.sh)"
fi

python3 - "$WORK" "$N" "$STAFF" "$TEAMS" "$PAGE" "${TASKS:-$((N / 2))}" "$TARGETS" "${GROUP_ONLY:-0}" <<'PY'
import json, os, sys
work, n, staff, teams, page, tasks = sys.argv[1], *map(int, sys.argv[2:7])
bundles = sys.argv[7] != "local"
group_only = sys.argv[8] == "1"
org = f"{work}/org"
os.makedirs(f"{org}/store", exist_ok=True)
os.makedirs(f"{work}/bundles", exist_ok=True)
rows = {"Practitioner": [], "Patient": [], "Consent": [], "Task": []}
for i in range(staff):
    rows["Practitioner"].append({"resourceType": "Practitioner", "id": f"bs{i:08d}", "active": True,
        "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": f"2{i:09d}"}],
        "telecom": [{"system": "email", "value": f"s{i}@bench.example.org"}]})
descriptions = ["Lab follow-up", "Refer patient to Psychiatry (TBD)", "Call the patient back", "Result follow-up"]
for i in range(n):
    pid = f"bp{i:08d}"
    p = {"resourceType": "Patient", "id": pid, "active": i % 17 != 0,
         "gender": "female" if i % 2 else "male", "birthDate": f"{1930 + i % 80}-01-01"}
    if i % 3 == 0:
        p["identifier"] = [{"system": "urn:bench:payer", "value": f"P{i}"}]
    rows["Patient"].append(p)
    rows["Consent"].append({"resourceType": "Consent", "id": f"bc{i:08d}", "status": "rejected" if i % 10 == 0 else "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "urn:bench:consents", "code": "A0001"}]}],
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTOUT"}]},
        "patient": {"reference": f"Patient/{pid}"}})
    if i % 2 == 0 and i // 2 < tasks or i % 2 == 1 and (n + 1) // 2 + i // 2 < tasks:
        rows["Task"].append({"resourceType": "Task", "id": f"bt{i:08d}", "status": "requested", "intent": "order",
            "description": descriptions[(i // 2) % 4], "for": {"reference": f"Patient/{pid}"}})
for rt, rs in rows.items():
    with open(f"{org}/store/{rt}.ndjson", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rs)
    for k in range(0, len(rs) if bundles else 0, 500):
        bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
            {"resource": r, "request": {"method": "PUT", "url": f"{rt}/{r['id']}"}} for r in rs[k:k + 500]]}
        with open(f"{work}/bundles/{rt}-{k // 500:05d}.json", "w") as f:
            json.dump(bundle, f)
docs = ["apiVersion: careplane.dev/v1\nkind: Project\nmetadata:\n  name: bench\nspec:\n  defaultTarget: local\n  targets:\n"
        f"    local: {{type: file, path: store}}\n    server: {{type: fhir, url: \"${{BENCH_FHIR_URL}}\", pageSize: {page}}}\n"]
roles = ["md", "rn", "ma", "cc", "fd"]
for r in roles:
    docs.append(f"apiVersion: careplane.dev/v1\nkind: Role\nmetadata:\n  name: {r}\nspec:\n  code: {r.upper()}\n  display: Role {r}\n  domain: clinical\n")
per = max(1, staff // teams)
for k in range(teams):
    members = "".join(f"    - npi: \"2{i:09d}\"\n" for i in range(k * per, k * per + min(10, per)))
    docs.append(f"apiVersion: careplane.dev/v1\nkind: Team\nmetadata:\n  name: team-{k}\nspec:\n  displayName: Team {k}\n  members:\n{members}")
for i in range(staff):
    docs.append(f"apiVersion: careplane.dev/v1\nkind: RoleAssignment\nmetadata:\n  name: s{i}\nspec:\n  practitioner: {{email: s{i}@bench.example.org}}\n  roles: [{roles[i % 5]}]\n")
docs.append("apiVersion: careplane.dev/v1\nkind: CareTeamRole\nmetadata:\n  name: pcp\nspec:\n  code: {code: \"453231000124104\", display: Primary care provider}\n")
# the opt-out group (the large one); OPT_OUT_EXTRA is replaced for the second apply
docs.append("apiVersion: careplane.dev/v1\nkind: PatientGroup\nmetadata:\n  name: opt-out\nspec:\n  displayName: Opt-out\n  mode: authoritative\n  maxRemovalShare: 1\n"
            "  rule:\n    all:\n      - active: true\n      - not:\n          consent: {code: A0001, status: rejected}\nOPT_OUT_EXTRA")
if not group_only:
    docs.append("apiVersion: careplane.dev/v1\nkind: PatientGroup\nmetadata:\n  name: seniors-on-payer\nspec:\n  displayName: Seniors on payer\n  rule:\n    all:\n"
                "      - memberOf: opt-out\n      - age: {min: 65}\n      - identifier: {system: \"urn:bench:payer\"}\n")
    docs.append("apiVersion: careplane.dev/v1\nkind: CareTeamAssignment\nmetadata:\n  name: s0-pcp\nspec:\n  practitioner: {npi: \"2000000000\"}\n"
                "  careTeamRole: pcp\n  patients: {group: seniors-on-payer}\n  lead: true\n  maxRemovalShare: 1\n")
    docs.append("apiVersion: careplane.dev/v1\nkind: RoutingRule\nmetadata:\n  name: psychiatry\nspec:\n  order: 10\n  match:\n    description: \"Refer patient to Psychiatry (TBD)\"\n  set:\n    team: team-0\n    addLabels: [Internal Referral]\n")
    docs.append("apiVersion: careplane.dev/v1\nkind: RoutingRule\nmetadata:\n  name: labs\nspec:\n  order: 20\n  match:\n    descriptionMatches: \"(?i)^(lab|result) follow-up\"\n  set:\n    team: team-1\n")
text = "---\n".join(docs)
open(f"{work}/org-0.yaml", "w").write(text.replace("OPT_OUT_EXTRA", ""))
open(f"{work}/org-1.yaml", "w").write(text.replace("OPT_OUT_EXTRA", "      - identifier: {system: \"urn:bench:payer\"}\n"))
PY
started=$(date +%s)
for f in $([ "$TARGETS" = local ] || echo "$WORK"/bundles/*.json); do
  curl -sf -o /dev/null -X POST -H 'Content-Type: application/fhir+json' --data-binary "@$f" "$BASE"
done
[ "$TARGETS" = local ] || echo "loaded $N patients, $N consents, $(wc -l <"$WORK/org/store/Task.ndjson") open tasks, $STAFF staff into the test server in $(( $(date +%s) - started )) s"

if [ "$TARGETS" != local ]; then
# A loopback proxy that records the URL of every request (for the curl comparison only;
# never in a timed run).
python3 - "$WORK/proxy.port" "$WORK/proxy.log" "${BASE#http://}" <<'PY' &
import http.client, http.server, sys
port_file, log_file, upstream = sys.argv[1], sys.argv[2], sys.argv[3].split("/")[0]
log = open(log_file, "a", buffering=1)
class P(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def relay(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        log.write(f"{self.command} {self.path}\n")
        c = http.client.HTTPConnection(upstream, timeout=600)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection",)}
        c.request(self.command, self.path, body or None, headers)
        r = c.getresponse(); data = r.read()
        self.send_response(r.status)
        for k, v in r.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data))); self.end_headers(); self.wfile.write(data)
    do_GET = do_POST = do_PUT = do_DELETE = relay
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), P)
open(port_file, "w").write(str(s.server_address[1]))
for _ in range(100000):
    s.handle_request()
PY
PIDS+=($!)
for _ in $(seq 1 50); do [ -s "$WORK/proxy.port" ] && break; sleep 0.1; done
PROXY="http://127.0.0.1:$(cat "$WORK/proxy.port")/fhir"
HOSTPORT="$(echo "${BASE#http://}" | cut -d/ -f1)"
fi

echo
echo "careplane at $N patients, $N consents, $(wc -l <"$WORK/org/store/Task.ndjson") open tasks (release build; $(nproc) cores; server page size $PAGE)"
row "what" "target" "wall" "cpu" "peak" "requests" "curl, same pages"
# the same pages as careplane's plan, one after another with curl (URLs recorded through
# the proxy in an untimed plan)
curl_pages() { # dir
  : >"$WORK/proxy.log"
  BENCH_FHIR_URL="$PROXY" "$BIN" plan "$1" --target server >/dev/null 2>&1
  grep '^GET ' "$WORK/proxy.log" | cut -d' ' -f2 >"$WORK/urls"
  local s e
  s=$(date +%s%N)
  while read -r u; do curl -sf -o /dev/null "http://$HOSTPORT$u"; done <"$WORK/urls"
  e=$(date +%s%N)
  awk -v a="$s" -v b="$e" -v p="$(wc -l <"$WORK/urls")" 'BEGIN { printf "%.2f s (%d pages)", (b - a) / 1e9, p }'
}
for target in $TARGETS; do
  export BENCH_FHIR_URL="$BASE"
  cp -r "$WORK/org" "$WORK/run-$target"
  D="$WORK/run-$target"
  cp "$WORK/org-0.yaml" "$D/org.yaml"
  read -r w c m <<<"$(timed plan "$D" --target "$target")"
  pages=$(plan_requests)
  row "plan (first)" "$target" "$w" "$c" "$m" "$pages" "$([ "$target" = server ] && [ "${CURL:-1}" != 0 ] && curl_pages "$D" || echo -)"
  if [ "$target" = server ] && [ "${APPLY_SERVER:-1}" = 0 ]; then
    break
  fi
  read -r w c m <<<"$(CAREPLANE_LOG=requests timed apply "$D" --target "$target" --auto-approve)"
  row "apply (first): $(applied)" "$target" "$w" "$c" "$m" "$([ "$target" = server ] && log_requests || echo -)"
  cp "$WORK/org-1.yaml" "$D/org.yaml"
  read -r w c m <<<"$(CAREPLANE_LOG=requests timed apply "$D" --target "$target" --auto-approve)"
  row "apply (group update): $(applied)" "$target" "$w" "$c" "$m" "$([ "$target" = server ] && log_requests || echo -)"
  read -r w c m <<<"$(timed plan "$D" --target "$target")"
  pages=$(plan_requests)
  row "plan (no changes)" "$target" "$w" "$c" "$m" "$pages" "$([ "$target" = server ] && [ "${CURL:-1}" != 0 ] && curl_pages "$D" || echo -)"
done
