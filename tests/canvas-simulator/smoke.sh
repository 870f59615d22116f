#!/usr/bin/env bash
# Smoke test of the Canvas API SIMULATOR (canvas-simulator.cjs): exercises every simulated
# behaviour against a running instance and prints PASS/FAIL lines, then "N passed, M failed".
# Usage: smoke.sh BASE   (e.g. smoke.sh "$(bash start-canvas-simulator.sh)")
# Needs curl and node (JSON checks use `node -e`, not jq). RESETS the simulator's state.
set -uo pipefail
BASE="${1:?usage: smoke.sh BASE}"
BASE="${BASE%/}"
CID="${SIM_CLIENT_ID:-careplane-test}"
CSECRET="${SIM_CLIENT_SECRET:-careplane-secret}"
TMP="$(mktemp -d)"; trap 'rm -rf "$TMP"' EXIT
PASSED=0; FAILED=0; TOKEN=""; STATUS=""

ok() { PASSED=$((PASSED + 1)); echo "PASS $1"; }
ko() { FAILED=$((FAILED + 1)); echo "FAIL $1 -- $2"; }
# req METHOD PATH [BODY [extra curl args...]]: sets STATUS, $TMP/body, $TMP/headers
req() {
  local m=$1 p=$2 body=${3-}
  shift 2; [ $# -gt 0 ] && shift
  local args=(-s -o "$TMP/body" -D "$TMP/headers" -w '%{http_code}' -X "$m")
  [ -n "$TOKEN" ] && args+=(-H "Authorization: Bearer $TOKEN")
  [ -n "$body" ] && args+=(-H 'Content-Type: application/json' --data-binary "$body")
  STATUS=$(curl "${args[@]}" "$@" "$BASE$p")
}
# js EXPR: evaluates EXPR with b = parsed body, header(name), oo(code[, text]), hex32(s), uuid(s)
js() {
  node -e '
const fs = require("fs");
const t = fs.readFileSync(process.argv[1], "utf8"); let b = null; try { b = t ? JSON.parse(t) : null; } catch (e) { b = t; }
const hs = fs.readFileSync(process.argv[2], "utf8").split(/\r?\n/);
const header = (n) => { const l = hs.find((x) => x.toLowerCase().startsWith(n.toLowerCase() + ":")); return l ? l.slice(n.length + 1).trim() : null; };
const oo = (c, text) => !!b && b.resourceType === "OperationOutcome" && b.issue[0].severity === "error" && b.issue[0].code === c
  && (text === undefined || (text instanceof RegExp ? text.test(b.issue[0].details.text) : b.issue[0].details.text === text));
const hex32 = (s) => /^[0-9a-f]{32}$/.test(s);
const uuid = (s) => /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(s);
const ents = () => (b.entry || []).map((e) => e.resource);
const link = (rel) => { const l = (b.link || []).find((x) => x.relation === rel); return l ? l.url : null; };
const v = eval(process.argv[3]);
process.stdout.write(typeof v === "string" ? v : String(JSON.stringify(v)));' "$TMP/body" "$TMP/headers" "$1" 2>&1
}
# expect NAME STATUS [JS-BOOLEAN-EXPR]
expect() {
  local name=$1 st=$2 expr=${3-true} r
  if [ "$STATUS" != "$st" ]; then ko "$name" "HTTP $STATUS, expected $st: $(head -c 300 "$TMP/body")"; return; fi
  r=$(js "$expr")
  if [ "$r" = "true" ]; then ok "$name"; else ko "$name" "($expr) gave ${r:0:200}; body: $(head -c 300 "$TMP/body")"; fi
}
get_token() {
  curl -s -X POST "$BASE/auth/token/" --data-urlencode grant_type=client_credentials \
    --data-urlencode "client_id=$CID" --data-urlencode "client_secret=$CSECRET" \
    | node -e 'let s="";process.stdin.on("data",(d)=>s+=d).on("end",()=>process.stdout.write(JSON.parse(s).access_token||""))'
}
last_id() { js 'header("location").split("/").pop()'; }

PA=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa; PB=bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb; PC=cccccccccccccccccccccccccccccccc
PD=dddddddddddddddddddddddddddddddd; PT1=11111111111111111111111111111111; PT2=22222222222222222222222222222222
PCP='{"system":"http://snomed.info/sct","code":"453231000124104","display":"Primary care provider"}'
CARD='{"system":"http://snomed.info/sct","code":"17561000","display":"Cardiologist"}'
LEADX='http://schemas.canvasmedical.com/fhir/extensions/careteam-lead'
ROLESX='http://schemas.canvasmedical.com/fhir/extensions/roles'
TGX='http://schemas.canvasmedical.com/fhir/extensions/task-group'

echo "== control endpoints"
req GET /__sim/health; expect "health answers 200" 200
req POST /__sim/reset; expect "reset answers 200" 200
req GET /__sim/stats; expect "stats start at zero" 200 'b.tokensIssued === 0 && Object.keys(b.requests).length === 0'

echo "== auth (§1 OAuth2)"
req POST /auth/token/ "" --data-urlencode grant_type=client_credentials --data-urlencode client_id=nope --data-urlencode client_secret=bad
expect "wrong client credentials -> 401 invalid_client" 401 'b.error === "invalid_client"'
req POST /auth/token/ "" -d "grant_type=client_credentials&client_id=$CID&client_secret=$CSECRET&scope=user/Group.read"
expect "token issued" 200 'typeof b.access_token === "string" && b.access_token.length > 10 && b.token_type === "Bearer" && b.expires_in === 36000 && b.scope === ""'
req POST /auth/token/ "" -d "grant_type=password&client_id=$CID&client_secret=$CSECRET"
expect "unsupported grant_type -> 400" 400 'b.error === "unsupported_grant_type"'
req GET /Group; expect "no token -> 401 OperationOutcome unknown" 401 'oo("unknown")'
TOKEN=bogus req GET /Group; expect "unknown token -> 401" 401 'oo("unknown")'
TOKEN="$(get_token)"
req GET /Group; expect "valid token -> 200 empty searchset" 200 'b.resourceType === "Bundle" && b.type === "searchset" && b.total === 0 && !("entry" in b) && !("link" in b)'

echo "== seed"
SEED=$(cat <<EOF
{"resources":[
 {"resourceType":"Practitioner","id":"$PA","active":true,"name":[{"use":"usual","family":"Nightingale","given":["Florence"]}],
  "identifier":[{"system":"http://hl7.org/fhir/sid/us-npi","value":"1234567890"}],
  "telecom":[{"system":"email","value":"flo@example.org","rank":1},{"system":"phone","use":"work","value":"555"}],
  "extension":[{"url":"http://schemas.canvasmedical.com/fhir/extensions/practitioner-personal-meeting-room-link","valueUrl":"https://meet.example/flo"}]},
 {"resourceType":"Practitioner","id":"$PB","name":[{"use":"usual","family":"Barton","given":["Clara"]}],"telecom":[{"system":"email","value":"clara@example.org"}]},
 {"resourceType":"Practitioner","id":"$PC","active":false,"name":[{"use":"usual","family":"Inactive","given":["Ian"]}]},
 {"resourceType":"Practitioner","id":"$PD","name":[{"use":"usual","family":"Frontdesk","given":["Dana"]}]},
 {"resourceType":"Patient","id":"$PT1","name":[{"family":"Doe","given":["Jane"]}],"identifier":[{"system":"urn:mrn","value":"MRN-1"}]},
 {"resourceType":"Patient","id":"$PT2","active":false,"name":[{"family":"Roe","given":["Rick"]}]},
 {"resourceType":"Patient","name":[{"family":"Generated","given":["Gen"]}]},
 {"resourceType":"Group","type":"person","actual":true,"name":"Seeded group"}],
 "nonSchedulable":["$PD"],"roles":["MD","RN"],"careTeamRoles":[$PCP,$CARD]}
EOF
)
req POST /__sim/seed "$SEED"
expect "seed keeps ids and generates missing ones" 200 "b.ids.length === 8 && b.ids[0] === '$PA' && b.ids[5] === '$PT2' && hex32(b.ids[6]) && uuid(b.ids[7])"
SEEDED_GROUP=$(js 'b.ids[7]')
req GET "/__sim/resource/Practitioner/$PA"; expect "seeded resource stored with meta.lastUpdated" 200 'b.id && /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/.test(b.meta.lastUpdated) && !("versionId" in b.meta)'

echo "== Group: teams (§2)"
TEAM1='{"resourceType":"Group","type":"practitioner","actual":true,"name":"Care Coordinators","characteristic":[{"code":{"text":"responsibility"},"valueCodeableConcept":{"text":"COORDINATE_REFERRALS_FOR_PATIENT"},"exclude":false}],"member":[{"entity":{"reference":"Practitioner/'$PA'","type":"Practitioner"}},{"entity":{"reference":"Practitioner/'$PB'"}}]}'
req POST /Group "$TEAM1"
expect "create team -> 201, empty body, Location without _history, no ETag" 201 '(b === null) && /^http:\/\/127\.0\.0\.1:\d+\/Group\/[0-9a-f-]{36}$/.test(header("location")) && header("etag") === null'
G1=$(last_id)
req GET "/Group/$G1"
expect "read team: quantity, member display, meta.lastUpdated, no versionId/ETag" 200 "b.id === '$G1' && b.quantity === 2 && b.member[0].entity.display === 'Florence Nightingale' && b.member[1].entity.type === 'Practitioner' && /Z\$/.test(b.meta.lastUpdated) && !('versionId' in b.meta) && header('etag') === null && b.characteristic[0].exclude === false"
req POST /Group '{"resourceType":"Group","type":"practitioner","actual":true}'; expect "create without name -> 400" 400 'oo("invalid")'
req POST /Group '{"resourceType":"Group","type":"practitioner","actual":true,"name":""}'; expect "create with empty name -> 400" 400 'oo("invalid")'
req POST /Group '{"resourceType":"Group","type":"practitioner","name":"X"}'; expect "create without actual -> 400" 400 'oo("invalid")'
req POST /Group '{"resourceType":"Group","actual":true,"name":"X"}'; expect "create without type -> 400" 400 'oo("invalid")'
req POST /Group '{"resourceType":"Group","type":"practitioner","actual":true,"name":"X","characteristic":[{"code":{"text":"responsibility"},"valueCodeableConcept":{"text":"MAKE_COFFEE"}}]}'
expect "unknown responsibility -> 400" 400 'oo("invalid", /MAKE_COFFEE/)'
req POST /Group '{"resourceType":"Group","type":"practitioner","actual":true,"name":"X","member":[{"entity":{"reference":"Practitioner/ffffffffffffffffffffffffffffffff"}}]}'
expect "team member: unknown practitioner -> 400" 400 'oo("invalid")'
req POST /Group '{"resourceType":"Group","type":"practitioner","actual":true,"name":"X","member":[{"entity":{"reference":"Patient/'$PT1'"}}]}'
expect "team member must be a Practitioner -> 400" 400 'oo("invalid")'
req POST /Group '{"resourceType":"Group","type":"practitioner","actual":true,"name":"Intake","characteristic":[{"code":{"text":"responsibility"},"valueCodeableConcept":{"text":"REVIEW_COVERAGES"}},{"code":{"text":"responsibility"},"valueCodeableConcept":{"text":"COORDINATE_REFERRALS_FOR_PATIENT"}}]}'
expect "duplicate responsibility on create -> 422 business-rule" 422 "oo('business-rule', \"Responsibility COORDINATE_REFERRALS_FOR_PATIENT is already assigned to team 'Care Coordinators'\")"
req GET "/Group?type=practitioner"; expect "rejected create stored nothing" 200 'b.total === 1'
req POST /Group '{"resourceType":"Group","type":"practitioner","actual":true,"name":"Intake","characteristic":[{"code":{"text":"responsibility"},"valueCodeableConcept":{"text":"REVIEW_COVERAGES"}}]}'
expect "second team with a free responsibility -> 201" 201
G2=$(last_id)
req GET "/__sim/resource/Group/$G2"; G2_BEFORE=$(cat "$TMP/body")
req PUT "/Group/$G2" '{"resourceType":"Group","id":"'$G2'","type":"practitioner","actual":true,"name":"Intake 2","characteristic":[{"code":{"text":"responsibility"},"valueCodeableConcept":{"text":"COORDINATE_REFERRALS_FOR_PATIENT"}}]}'
expect "duplicate responsibility on update -> 422 naming the other team" 422 "oo('business-rule', \"Responsibility COORDINATE_REFERRALS_FOR_PATIENT is already assigned to team 'Care Coordinators'\")"
req GET "/__sim/resource/Group/$G2"; expect "rejected update stored nothing" 200 "JSON.stringify(b) === JSON.stringify($G2_BEFORE)"
req PUT "/Group/$G1" '{"resourceType":"Group","id":"'$G1'","type":"practitioner","actual":true,"name":"Care Coordinators","member":[{"entity":{"reference":"Practitioner/'$PB'"}}]}'
expect "update team -> 200 empty body" 200 'b === null'
req GET "/Group/$G1"; expect "PUT replaced members; omitted characteristic cleared" 200 "b.quantity === 1 && b.member[0].entity.reference === 'Practitioner/$PB' && !('characteristic' in b)"
req PUT "/Group/$G2" '{"resourceType":"Group","id":"'$G2'","type":"practitioner","actual":true,"name":"Intake","characteristic":[{"code":{"text":"responsibility"},"valueCodeableConcept":{"text":"COORDINATE_REFERRALS_FOR_PATIENT"}}]}'
expect "responsibility moves once released" 200
req PUT "/Group/$G1" '{"resourceType":"Group","id":"'$G1'","type":"practitioner","actual":true,"name":"Care Coordinators"}'
req GET "/Group/$G1"; expect "omitted member clears the team" 200 'b.quantity === 0 && !("member" in b)'
req PUT "/Group/$G1" '{"resourceType":"Group","id":"'$G1'","type":"person","actual":true,"name":"Care Coordinators"}'
expect "type change on update -> 400" 400 'oo("invalid")'
req PUT /Group/00000000-0000-4000-8000-000000000000 '{"resourceType":"Group","type":"practitioner","actual":true,"name":"X"}'
expect "update unknown Group -> 404" 404 "oo('not-found', \"Unknown Group resource '00000000-0000-4000-8000-000000000000'\")"
req GET /Group/00000000-0000-4000-8000-000000000000
expect "read unknown Group -> 404 text" 404 "oo('not-found', \"Unknown Group resource '00000000-0000-4000-8000-000000000000'\")"
req DELETE "/Group/$G1"; expect "DELETE -> 405 not-supported" 405 'oo("not-supported")'
req PATCH "/Group/$G1" '{}'; expect "PATCH -> 405" 405 'oo("not-supported")'
req POST /Group '{"resourceType":"Group","type":"person","actual":true,"name":"High needs","member":[{"entity":{"reference":"Patient/'$PT1'"}}]}'
expect "create patient group" 201
PG=$(last_id)
req GET "/Group/$PG"; expect "patient group read: quantity and display" 200 "b.type === 'person' && b.quantity === 1 && b.member[0].entity.display === 'Jane Doe'"
req POST /Group '{"resourceType":"Group","type":"person","actual":true,"name":"X","characteristic":[{"code":{"text":"responsibility"},"valueCodeableConcept":{"text":"REVIEW_COVERAGES"}}]}'
expect "responsibilities on a patient group -> 400" 400 'oo("invalid")'
req POST /Group '{"resourceType":"Group","type":"practitioner","actual":true,"name":"X"'; expect "bad JSON -> 400" 400 'oo("invalid")'
req POST /Group '{"resourceType":"Patient","name":"X"}'; expect "wrong resourceType -> 400" 400 'oo("invalid")'
req GET "/Group?name=Intake"; expect "unknown search parameter -> 400 naming it" 400 'oo("invalid", /name/)'
req GET "/Group?type=practitioner&_id=$G2"; expect "search by _id and type" 200 "b.total === 1 && b.entry[0].resource.id === '$G2' && b.entry[0].resource.quantity === 0"
req GET "/Group?type=person" "" -H 'Prefer: handling=strict'; expect "search type=person (Prefer ignored)" 200 "b.total === 2 && b.entry.every((r) => r.resource.type === 'person')"

echo "== paging (§1)"
MANY=$(node -e 'console.log(JSON.stringify({resources: Array.from({length: 23}, (_, i) => ({resourceType: "Group", type: "person", actual: true, name: "PG" + i}))}))')
req POST /__sim/seed "$MANY"; expect "seed 23 more patient groups" 200 'b.ids.length === 23'
req GET "/Group?type=person"
expect "page 1: default _count 10, relative links" 200 'b.total === 25 && b.entry.length === 10 && link("self") === "/Group?type=person&_count=10&_offset=0" && link("first") === "/Group?type=person&_count=10&_offset=0" && link("next") === "/Group?type=person&_count=10&_offset=10" && link("last") === "/Group?type=person&_count=10&_offset=20"'
req GET "/Group?type=person&_count=10&_offset=20"; expect "last page has no next" 200 'b.entry.length === 5 && link("next") === null && link("self") === "/Group?type=person&_count=10&_offset=20"'
req GET "/Group?type=person&_count=500"; expect "_count above 100 treated as 100" 200 'b.entry.length === 25 && link("self") === "/Group?type=person&_count=100&_offset=0" && link("next") === null'
req GET "/Group?_id=nope"; expect "empty result: no link, no entry" 200 'b.total === 0 && !("link" in b) && !("entry" in b)'
req GET "/Group?type=person&_count=abc"; expect "invalid _count -> 400" 400 'oo("invalid")'

echo "== If-Unmodified-Since (§1 Concurrency)"
req GET "/Group/$G2"; LU=$(js 'new Date(b.meta.lastUpdated).toUTCString()'); OLD=$(js 'new Date(Date.parse(b.meta.lastUpdated) - 5000).toUTCString()')
req GET "/__sim/resource/Group/$G2"; G2_BEFORE=$(cat "$TMP/body")
req PUT "/Group/$G2" '{"resourceType":"Group","id":"'$G2'","type":"practitioner","actual":true,"name":"Renamed"}' -H "If-Unmodified-Since: $OLD"
expect "stale If-Unmodified-Since -> 412 conflict" 412 'oo("conflict", "Resource updated since If-Unmodified-Since date")'
req GET "/__sim/resource/Group/$G2"; expect "412 stored nothing" 200 "JSON.stringify(b) === JSON.stringify($G2_BEFORE)"
req PUT "/Group/$G2" '{"resourceType":"Group","id":"'$G2'","type":"practitioner","actual":true,"name":"Intake","characteristic":[{"code":{"text":"responsibility"},"valueCodeableConcept":{"text":"COORDINATE_REFERRALS_FOR_PATIENT"}}]}' -H "If-Unmodified-Since: $LU"
expect "current If-Unmodified-Since (lastUpdated truncated to seconds) -> 200" 200

echo "== Practitioner (§5)"
req GET /Practitioner; expect "default search: active and schedulable only" 200 "b.total === 2 && ents().map((r) => r.id).join() === '$PA,$PB'"
req GET "/Practitioner?active=false"; expect "active=false" 200 "b.total === 1 && ents()[0].id === '$PC'"
req GET "/Practitioner?include-non-schedulable-practitioners=true"; expect "include-non-schedulable-practitioners=true" 200 "b.total === 3 && ents().some((r) => r.id === '$PD')"
req GET "/Practitioner?include-non-schedulable-practitioners=true&active=true&active=false"; expect "all staff with active=true&active=false" 200 'b.total === 4'
req GET "/Practitioner?name=nIGHT"; expect "name: case-insensitive partial match" 200 "b.total === 1 && ents()[0].id === '$PA'"
req GET "/Practitioner?name=clar"; expect "name matches given" 200 "b.total === 1 && ents()[0].id === '$PB'"
req GET "/Practitioner?email=flo@example.org"; expect "email search" 200 "b.total === 1 && ents()[0].id === '$PA'"
req GET "/Practitioner?npiNumber=1234567890"; expect "npiNumber search" 200 "b.total === 1 && ents()[0].id === '$PA'"
req GET "/Practitioner?role=RN"; expect "unknown Practitioner search parameter -> 400" 400 'oo("invalid", /role/)'
req GET "/Practitioner/$PD"; expect "read non-schedulable by id" 200 "b.id === '$PD'"
PUTPA='{"resourceType":"Practitioner","id":"'$PA'","active":true,"name":[{"use":"usual","family":"Nightingale","given":["Florence"]}],"telecom":[{"system":"email","value":"flo@example.org","rank":1}],"extension":[{"url":"'$ROLESX'","extension":[{"url":"code","valueCoding":{"system":"http://schemas.canvasmedical.com/fhir/roles","code":"RN"}}]}]}'
req PUT "/Practitioner/$PA" "$PUTPA"; expect "update practitioner with roles -> 200 empty" 200 'b === null'
req GET "/__sim/resource/Practitioner/$PA"
expect "omitted extensions deleted (extension is exactly what was sent)" 200 "b.extension.length === 1 && b.extension[0].url === '$ROLESX' && b.extension[0].extension[0].valueCoding.code === 'RN' && !('identifier' in b)"
req PUT "/Practitioner/$PA" "${PUTPA/\"RN\"/\"XX\"}"; expect "unknown role code -> 422" 422 "oo('business-rule', \"Unknown role code 'XX'\")"
req PUT "/Practitioner/$PA" "${PUTPA/flo@example.org/other@example.org}"; expect "changing an email -> 400" 400 'oo("invalid", "Emails cannot be changed on update")'
req PUT "/Practitioner/$PA" '{"resourceType":"Practitioner","id":"'$PA'","name":[{"use":"usual","family":"Nightingale","given":["Florence"]}]}'
req GET "/Practitioner/$PA"; expect "PUT without extension removes roles" 200 '!("extension" in b) && /Z$/.test(b.meta.lastUpdated)'
req POST /Practitioner '{"resourceType":"Practitioner","name":[{"use":"usual","family":"New","given":["Nina"]}]}'
expect "create practitioner -> 201 with 32-hex id" 201 'hex32(header("location").split("/").pop())'

echo "== CareTeam (§3)"
ct() { # ct PID PARTICIPANTS-JSON [STATUS]
  echo '{"resourceType":"CareTeam","status":"'"${3:-active}"'","subject":{"reference":"Patient/'"$1"'","type":"Patient"},"participant":'"$2"'}'
}
P_A_LEAD='{"extension":[{"url":"'$LEADX'","valueBoolean":true}],"role":[{"coding":['$PCP']}],"member":{"reference":"Practitioner/'$PA'","type":"Practitioner"}}'
P_A='{"role":[{"coding":['$PCP']}],"member":{"reference":"Practitioner/'$PA'"}}'
P_B='{"role":[{"coding":['$CARD']}],"member":{"reference":"Practitioner/'$PB'"}}'
P_B_LEAD='{"extension":[{"url":"'$LEADX'","valueBoolean":true}],"role":[{"coding":['$CARD']}],"member":{"reference":"Practitioner/'$PB'"}}'
req GET "/CareTeam/$PT1"; expect "patient without care team reads as empty active CareTeam" 200 "b.id === '$PT1' && b.status === 'active' && !('participant' in b) && b.subject.reference === 'Patient/$PT1'"
req PUT "/CareTeam/$PT1" '{"resourceType":"CareTeam","subject":{"reference":"Patient/'$PT1'"},"participant":['"$P_A"']}'; expect "PUT without status -> 400" 400 'oo("invalid")'
req PUT "/CareTeam/$PT1" "$(ct $PT2 "[$P_A]")"; expect "subject not matching the URL -> 400" 400 'oo("invalid")'
req PUT "/CareTeam/$PT1" "$(ct $PT1 '[{"role":[{"coding":[{"system":"http://snomed.info/sct","code":"1","display":"Nope"}]}],"member":{"reference":"Practitioner/'$PA'"}}]')"
expect "unconfigured care-team role -> 422" 422 'oo("business-rule")'
req PUT "/CareTeam/$PT1" "$(ct $PT1 '[{"role":[{"coding":[{"system":"http://snomed.info/sct","code":"17561000"}]}],"member":{"reference":"Practitioner/'$PA'"}}]')"
expect "role without display -> 400" 400 'oo("invalid")'
req PUT "/CareTeam/$PT1" "$(ct $PT1 "[$P_A,${P_B/$PB/$PA}]")"; expect "one role per practitioner -> 422" 422 'oo("business-rule")'
req PUT "/CareTeam/$PT1" "$(ct $PT1 "[$P_A,${P_A/$PA/$PB}]")"; expect "one practitioner per role -> 422" 422 'oo("business-rule")'
req PUT "/CareTeam/$PT1" "$(ct $PT1 "[$P_A_LEAD,$P_B_LEAD]")"; expect "two leads -> 422" 422 'oo("business-rule")'
req PUT "/CareTeam/ffffffffffffffffffffffffffffffff" "$(ct ffffffffffffffffffffffffffffffff "[$P_A]")"; expect "upsert for unknown patient -> 404" 404 'oo("not-found")'
req GET "/__sim/resource/CareTeam/$PT1"; expect "rejected PUTs stored nothing" 404
req PUT "/CareTeam/$PT1" "$(ct $PT1 "[$P_A_LEAD,$P_B]")"; expect "upsert care team -> 200 empty" 200 'b === null'
req GET "/CareTeam/$PT1"
expect "read: both active, A is lead, name/display read-only fields" 200 "b.participant.length === 2 && b.participant[0].extension[0].valueBoolean === true && b.participant[1].extension[0].valueBoolean === false && b.name === 'Care Team for Doe, Jane' && b.participant[0].member.display === 'Florence Nightingale' && /Z\$/.test(b.meta.lastUpdated)"
req PUT "/CareTeam/$PT1" "$(ct $PT1 "[$P_B,$P_A]")"
req GET "/CareTeam/$PT1"; expect "no lead extension sent: current lead stays" 200 "b.participant.find((p) => p.member.reference === 'Practitioner/$PA').extension[0].valueBoolean === true"
req PUT "/CareTeam/$PT1" "$(ct $PT1 "[$P_B]")"
req GET "/CareTeam/$PT1"; expect "payload becomes the active team" 200 "b.participant.length === 1 && b.participant[0].member.reference === 'Practitioner/$PB'"
req GET "/CareTeam/$PT1.inactive"; expect "left-out participant is inactive (.inactive suffix)" 200 "b.id === '$PT1.inactive' && b.status === 'inactive' && b.participant.length === 1 && b.participant[0].member.reference === 'Practitioner/$PA'"
req GET "/CareTeam?patient=Patient/$PT1"; expect "search by patient: one CareTeam per status present" 200 "b.total === 2 && ents().map((r) => r.status).join() === 'active,inactive'"
req GET "/CareTeam?participant=Practitioner/$PB&status=active"; expect "search by participant and status" 200 "b.total === 1 && ents()[0].id === '$PT1'"
req GET "/CareTeam?member=x"; expect "unknown CareTeam search parameter -> 400" 400 'oo("invalid", /member/)'
req GET "/Patient?_has:CareTeam:participant:member=Practitioner/$PB"; expect "Patient reverse lookup by care-team member" 200 "b.total === 1 && ents()[0].id === '$PT1'"
req PUT "/CareTeam/$PT1" "$(ct $PT1 "[$P_A]" | sed 's/,"participant":\[.*\]//')"
req GET "/CareTeam/$PT1"; expect "omitted participant inactivates everyone" 200 '!("participant" in b)'
req GET "/CareTeam/$PT1.inactive"; expect "... and they all show as inactive" 200 'b.participant.length === 2'
req GET "/CareTeam/$PT1"; OLD=$(js 'new Date(Date.parse(b.meta.lastUpdated) - 5000).toUTCString()')
req PUT "/CareTeam/$PT1" "$(ct $PT1 "[$P_A]")" -H "If-Unmodified-Since: $OLD"; expect "stale If-Unmodified-Since on CareTeam -> 412" 412 'oo("conflict")'
req GET "/CareTeam/$PT1"; expect "... nothing stored" 200 '!("participant" in b)'
req POST /CareTeam "$(ct $PT1 "[$P_A]")"; expect "POST CareTeam (no create) -> 405" 405 'oo("not-supported")'
req GET "/CareTeam/$PT1.bogus"; expect "unknown status suffix -> 404" 404 'oo("not-found")'

echo "== Task (§4)"
TASK='{"resourceType":"Task","status":"requested","intent":"unknown","description":"Call patient","requester":{"reference":"Practitioner/'$PA'"},"owner":{"reference":"Practitioner/'$PB'"},"for":{"reference":"Patient/'$PT1'"},"restriction":{"period":{"end":"2030-01-01"}},"input":[{"type":{"text":"label"},"valueString":"Urgent"}],"note":[{"text":"first"}],"extension":[{"url":"'$TGX'","valueReference":{"reference":"Group/'$G2'"}}]}'
req POST /Task "$TASK"; expect "create task -> 201 with UUID Location" 201 'b === null && uuid(header("location").split("/").pop())'
T1=$(last_id)
req POST /Task "${TASK/\"intent\":\"unknown\"/\"intent\":\"order\"}"; expect "intent other than unknown -> 400" 400 'oo("invalid")'
req POST /Task "${TASK/\"status\":\"requested\"/\"status\":\"open\"}"; expect "bad status -> 400" 400 'oo("invalid")'
req POST /Task '{"resourceType":"Task","status":"requested","intent":"unknown","description":"x"}'; expect "missing requester -> 400" 400 'oo("invalid")'
req GET "/Task/$T1"
expect "read task: lastModified, authoredOn, task-group type+display" 200 "b.lastModified === b.meta.lastUpdated && typeof b.authoredOn === 'string' && b.extension[0].valueReference.display === 'Intake' && b.extension[0].valueReference.type === 'Group'"
AUTH=$(js 'b.authoredOn')
req PUT "/Task/$T1" '{"resourceType":"Task","id":"'$T1'","status":"requested","intent":"unknown","description":"Call patient again","requester":{"reference":"Practitioner/'$PA'"},"note":[{"text":"first"}]}'
expect "update task -> 200" 200
req GET "/Task/$T1"
expect "PUT cleared owner/input/restriction, kept task-group, authoredOn and for, appended note" 200 "b.for.reference === 'Patient/$PT1' && !('owner' in b) && !('input' in b) && !('restriction' in b) && b.extension[0].valueReference.reference === 'Group/$G2' && b.authoredOn === '$AUTH' && b.note.length === 2 && b.note.every((n) => n.text === 'first')"
req PUT "/Task/$T1" '{"resourceType":"Task","id":"'$T1'","status":"completed","intent":"unknown","requester":{"reference":"Practitioner/'$PA'"}}'
expect "PUT without description -> 400" 400 'oo("invalid")'
req POST /Task '{"resourceType":"Task","status":"completed","intent":"unknown","description":"Review labs","requester":{"reference":"Practitioner/'$PB'"},"owner":{"reference":"Practitioner/'$PA'"},"input":[{"type":{"text":"label"},"valueString":"Routine"}]}'
T2=$(last_id)
req GET "/Task?owner=$PA&_id=$T2"; expect "search by owner (bare id) and _id" 200 "b.total === 1 && ents()[0].id === '$T2'"
req GET "/Task?label=routine"; expect "search by label" 200 "b.total === 1 && ents()[0].id === '$T2'"
req GET "/Task?status=requested"; expect "search by status" 200 "b.total === 1 && ents()[0].id === '$T1'"
req GET "/Task?requester=Practitioner/$PA&patient=Patient/$PT1"; expect "search by requester and patient" 200 "b.total === 1 && ents()[0].id === '$T1'"
req GET "/Task?description=labs"; expect "search by description" 200 "b.total === 1"
req GET "/Task?modified=gt2020-01-01&modified=lt2999-01-01"; expect "modified range (gt/lt)" 200 'b.total === 2'
req GET "/Task?modified=le2020-01-01"; expect "modified le past -> none" 200 'b.total === 0'
req GET "/Task?owner=Practitioner/$PB"; expect "owner cleared by PUT -> no match" 200 'b.total === 0'
req GET "/Task?team=x"; expect "unknown Task search parameter -> 400" 400 'oo("invalid", /team/)'

echo "== Patient (§6)"
req GET "/Patient?identifier=urn:mrn|MRN-1"; expect "search by identifier sys|value" 200 "b.total === 1 && ents()[0].id === '$PT1'"
req GET "/Patient?active=false"; expect "search by active" 200 "b.total === 1 && ents()[0].id === '$PT2'"

echo "== faults, stats, revocation"
req POST /__sim/fail '{"method":"GET","type":"Group","status":429,"times":1,"retryAfter":"1"}'; expect "queue a fault" 200
req GET /__sim/stats; BEFORE=$(js 'b.requests["GET Group"]')
req GET /Group; expect "injected 429 with Retry-After" 429 'header("retry-after") === "1" && b.resourceType === "OperationOutcome"'
req GET /Group; expect "fault used up after 'times'" 200
req GET /__sim/stats; expect "stats count FHIR requests by method and type" 200 "b.requests['GET Group'] === $BEFORE + 2 && b.requests['PUT CareTeam'] >= 1 && b.tokensIssued === 2"
req POST /__sim/revoke-tokens; expect "revoke tokens" 200
req GET /Group; expect "revoked token -> 401" 401 'oo("unknown")'
TOKEN="$(get_token)"
req GET /Group; expect "fresh token works" 200
req GET /ResearchStudy; expect "unsupported resource type -> 404" 404 'oo("not-found")'
req GET "/Consent?patient=Patient/nobody"; expect "Consent search (canvas-api.md §6)" 200 'b.resourceType === "Bundle" && b.total === 0'
req POST /__sim/reset; expect "reset" 200
req GET /Group; expect "reset invalidates tokens" 401
req GET "/__sim/resource/Group/$G1"; expect "reset empties resources" 404
req GET /__sim/stats; expect "reset clears stats" 200 'b.tokensIssued === 0 && Object.keys(b.requests).length === 1'

echo "== unconfigured catalogues accept any code"
TOKEN="$(get_token)"
req POST /__sim/seed '{"resources":[{"resourceType":"Practitioner","id":"'$PA'","name":[{"family":"A","given":["A"]}]},{"resourceType":"Patient","id":"'$PT1'"}]}'
req PUT "/Practitioner/$PA" '{"resourceType":"Practitioner","extension":[{"url":"'$ROLESX'","extension":[{"url":"code","valueCoding":{"code":"ANYTHING"}}]}]}'
expect "any role code accepted when roles were never seeded" 200
req PUT "/CareTeam/$PT1" "$(ct $PT1 '[{"role":[{"coding":[{"system":"INTERNAL","code":"x","display":"Whatever"}]}],"member":{"reference":"Practitioner/'$PA'"}}]')"
expect "any care-team role accepted when careTeamRoles were never seeded" 200
req POST /__sim/reset

echo "== plugin API (canvas_cli's plugin endpoints)"
TOKEN=""
req GET /plugin-io/plugins/; expect "plugin list needs a token" 401
TOKEN="$(get_token)"
req GET /plugin-io/plugins/; expect "no plugins installed" 200 'b.results.length === 0 && b.next === null'
mkdir -p "$TMP/pkg" && printf '{"name":"smoke_plugin","plugin_version":"0.0.1"}' > "$TMP/pkg/CANVAS_MANIFEST.json"
tar -czf "$TMP/pkg.tar.gz" -C "$TMP/pkg" CANVAS_MANIFEST.json
STATUS=$(curl -s -o "$TMP/body" -D "$TMP/headers" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" -F "package=@$TMP/pkg.tar.gz" -F is_enabled=True "$BASE/plugin-io/plugins/")
expect "install a package (multipart)" 201 'b.name === "smoke_plugin" && b.is_enabled === true'
STATUS=$(curl -s -o "$TMP/body" -D "$TMP/headers" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" -F "package=@$TMP/pkg.tar.gz" "$BASE/plugin-io/plugins/")
expect "installing the same name again -> 409" 409
req PATCH /plugin-io/plugins/smoke_plugin/ '' --data 'is_enabled=False'; expect "disable" 200 'b.is_enabled === false'
req GET /plugin-io/plugins/; expect "listed disabled" 200 'b.results[0].name === "smoke_plugin" && b.results[0].is_enabled === false'
req DELETE /plugin-io/plugins/smoke_plugin/; expect "uninstall -> 204" 204
req GET /plugin-io/plugins/; expect "gone" 200 'b.results.length === 0'
req POST /__sim/reset

echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
