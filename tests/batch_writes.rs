//! Batched and patched writes (issue 13) against the real FHIR server (Medplum's router,
//! which lists `batch` and `patch` in its CapabilityStatement) and against mock servers
//! that do not: FHIR `batch` Bundles give the same result as one request per change, a
//! failing entry fails only its change (with the server's words), a few members joining
//! or leaving a patient group go as a JSON Patch, care-team removals and joins into care
//! teams that exist go as Bundles of searches and of PUTs, a saved plan's stale check reads
//! in Bundles, and without the capability apply sends whole resources one by one.

mod common;

use std::path::Path;

use careplane::apply::{self, Writes};
use careplane::fhir::auth::Auth;
use careplane::fhir::http::HttpStore;
use careplane::fhir::{BatchAnswer, BatchEntry, Precondition, Query, Store};
use careplane::plan::{Action, Change, FieldChange, Plan, Precondition as Pre, Reason, Target};
use careplane::vocab::ObjectKind;
use common::*;
use serde_json::{Value, json};

const KEY: &str = "test-pseudonym-key";

/// A project with `teams` teams of two staff each, a role per staff member, and a
/// patient group over the patients carrying `system`; target `srv` with `batchSize`.
fn project(dir: &Path, project: &str, staff: &[Staff], system: &str, batch: usize) {
    let mut files = vec![(
        "careplane.yaml".to_owned(),
        format!(
            "apiVersion: careplane.dev/v1\nkind: Project\nmetadata:\n  name: {project}\nspec:\n  defaultTarget: srv\n  targets:\n    srv: {{type: fhir, url: \"{}\", batchSize: {batch}}}\n",
            fhir_url()
        ),
    )];
    let mut docs = vec![
        "apiVersion: careplane.dev/v1\nkind: Role\nmetadata:\n  name: nurse\nspec:\n  code: RN\n  display: Nurse\n  domain: clinical\n".to_owned(),
        "apiVersion: careplane.dev/v1\nkind: Role\nmetadata:\n  name: ma\nspec:\n  code: MA\n  display: Medical assistant\n  domain: clinical\n".to_owned(),
    ];
    for (k, pair) in staff.chunks(2).enumerate() {
        let members: String = pair
            .iter()
            .map(|s| format!("    - npi: \"{}\"\n", s.npi))
            .collect();
        docs.push(format!(
            "apiVersion: careplane.dev/v1\nkind: Team\nmetadata:\n  name: team-{k}\nspec:\n  displayName: Team {k} {project}\n  members:\n{members}"
        ));
    }
    for (i, s) in staff.iter().enumerate() {
        docs.push(format!(
            "apiVersion: careplane.dev/v1\nkind: RoleAssignment\nmetadata:\n  name: s{i}\nspec:\n  practitioner: {{npi: \"{}\"}}\n  roles: [nurse]\n",
            s.npi
        ));
    }
    docs.push(format!(
        "apiVersion: careplane.dev/v1\nkind: PatientGroup\nmetadata:\n  name: panel\nspec:\n  displayName: Panel {project}\n  mode: authoritative\n  maxRemovalShare: 1\n  rule:\n    all:\n      - identifier: {{system: \"{system}\"}}\n      - active: true\n"
    ));
    files.push(("org.yaml".to_owned(), docs.join("---\n")));
    let files: Vec<(&str, String)> = files.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    write(dir, &files);
}

fn run(dir: &Path, cmd: &str, extra: &[&str]) -> std::process::Output {
    careplane()
        .arg(cmd)
        .arg(dir)
        .args(extra)
        .env("CAREPLANE_PSEUDONYM_KEY", KEY)
        .env("CAREPLANE_LOG", "requests")
        .output()
        .unwrap()
}

fn apply_logged(dir: &Path) -> String {
    let out = run(dir, "apply", &["--auto-approve"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "apply failed: {err}\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    err
}

fn plan_is_empty(dir: &Path) {
    let out = careplane()
        .arg("plan")
        .arg(dir)
        .args(["--format", "json"])
        .env("CAREPLANE_PSEUDONYM_KEY", KEY)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let writes: Vec<&Value> = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] != "no-op")
        .collect();
    assert!(
        writes.is_empty(),
        "plan after apply is not empty: {writes:#?}"
    );
}

/// Lines of the request log that were sent (one per attempt).
fn requests(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains(" attempt 1 → "))
        .collect()
}

/// What careplane wrote for `project`, with ids, versions and the project's name taken
/// out (so two projects' writes compare), sorted.
fn written(server: &Server, project: &str) -> Vec<String> {
    let mut all = Vec::new();
    for rt in ["CodeSystem", "Group", "PractitionerRole"] {
        for mut r in server.owned(rt, project) {
            let o = r.as_object_mut().unwrap();
            o.remove("id");
            o.remove("meta");
            if let Some(m) = o.get_mut("member").and_then(Value::as_array_mut) {
                m.sort_by_key(|x| x.to_string());
            }
            all.push(r.to_string().replace(project, "PROJECT"));
        }
    }
    all.sort();
    all
}

struct Pair {
    server: Server,
    system: String,
    patients: Vec<String>,
    batched: (String, tempfile::TempDir),
    single: (String, tempfile::TempDir),
}

/// Two projects with the same manifests over the same staff and patients: one writing in
/// batches of 100, one a request at a time.
fn pair(staff_n: usize, patients_n: usize) -> Pair {
    let server = Server::new();
    let tag = unique("bw");
    let staff = seed_staff(&server, &tag, staff_n);
    let system = format!("urn:test:{tag}");
    let patients = (0..patients_n)
        .map(|i| {
            let p = server.post(&json!({"resourceType": "Patient", "active": true,
                "identifier": [{"system": system, "value": format!("{i}")}]}));
            p["id"].as_str().unwrap().to_owned()
        })
        .collect();
    let mk = |prefix: &str, batch: usize| {
        let name = unique(prefix);
        let dir = tempfile::tempdir().unwrap();
        project(dir.path(), &name, &staff, &system, batch);
        (name, dir)
    };
    Pair {
        batched: mk("bwb", 100),
        single: mk("bws", 1),
        server,
        system,
        patients,
    }
}

#[test]
fn batches_write_what_single_requests_write_in_far_fewer_requests() {
    let p = pair(40, 30);
    let batched = apply_logged(p.batched.1.path());
    let single = apply_logged(p.single.1.path());
    let (b, s) = (requests(&batched), requests(&single));
    assert!(
        b.iter().any(|l| l.contains("batch of ")),
        "no batch Bundle sent: {batched}"
    );
    assert!(
        !s.iter().any(|l| l.contains("batch of ")),
        "batchSize 1 sent a Bundle: {single}"
    );
    // 1 catalog + 20 teams + 40 role assignments + 1 group = 62 creates
    assert!(s.len() >= 62, "{} single requests: {single}", s.len());
    assert!(
        b.len() * 4 < s.len(),
        "{} requests batched against {} single",
        b.len(),
        s.len()
    );
    assert_eq!(
        written(&p.server, &p.batched.0),
        written(&p.server, &p.single.0)
    );
    plan_is_empty(p.batched.1.path());
    plan_is_empty(p.single.1.path());

    // updates: every team renamed, a role changed: read in one Bundle, written in another
    for (_, dir) in [&p.batched, &p.single] {
        let path = dir.path().join("org.yaml");
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("displayName: Team ", "displayName: Renamed team ")
            .replace("roles: [nurse]\n", "roles: [ma]\n");
        std::fs::write(&path, text).unwrap();
    }
    let batched = apply_logged(p.batched.1.path());
    let single = apply_logged(p.single.1.path());
    assert!(
        requests(&batched)
            .iter()
            .any(|l| l.contains("batch of ") && l.contains("patch ")),
        "updates not patched in a Bundle: {batched}"
    );
    assert!(
        requests(&batched).len() * 4 < requests(&single).len(),
        "{batched}\n---\n{single}"
    );
    assert_eq!(
        written(&p.server, &p.batched.0),
        written(&p.server, &p.single.0)
    );
    plan_is_empty(p.batched.1.path());
    plan_is_empty(p.single.1.path());
}

#[test]
fn a_few_members_leaving_and_joining_a_group_are_sent_as_a_patch() {
    let p = pair(2, 300);
    let dir = p.single.1.path();
    apply_logged(dir);
    // two patients leave (inactive), one joins
    for id in &p.patients[..2] {
        let mut r = p.server.get(&format!("Patient/{id}"));
        r["active"] = json!(false);
        p.server.put(&r);
    }
    p.server
        .post(&json!({"resourceType": "Patient", "active": true,
        "identifier": [{"system": p.system, "value": "new"}]}));
    let log = apply_logged(dir);
    let sent = requests(&log);
    assert!(
        sent.iter().any(|l| l.contains("patch Group/")),
        "no patch of the group: {log}"
    );
    assert!(
        !sent.iter().any(|l| l.contains("update Group/")),
        "the group was sent whole: {log}"
    );
    plan_is_empty(dir);
    let group = p
        .server
        .owned("Group", &p.single.0)
        .into_iter()
        .find(|g| g["type"] == "person")
        .unwrap();
    let members = group["member"].as_array().unwrap();
    assert_eq!(members.len(), 299);
    assert!(!log.contains(&p.patients[0]), "a patient id in the log");
}

fn change(kind: ObjectKind, rt: &str, name: &str, fields: &[(&str, Value)]) -> Change {
    Change {
        action: Action::Create,
        target: Target {
            kind,
            name: name.into(),
            resource_type: rt.into(),
            id: None,
        },
        fields: fields
            .iter()
            .map(|(f, v)| FieldChange {
                field: (*f).into(),
                before: None,
                after: Some(v.clone()),
                source: None,
                labels: Default::default(),
                membership: None,
                sealed: None,
            })
            .collect(),
        reason: Reason {
            code: careplane::plan::ReasonCode::Missing,
            source: None,
            rule: "missing".into(),
        },
        operation: Default::default(),
        precondition: Pre::default(),
        notes: Vec::new(),
    }
}

fn plan(project: &str, changes: Vec<Change>) -> Plan {
    Plan::new(
        project,
        careplane::plan::TargetInfo {
            name: "srv".into(),
            dialect: "fhir-r4".into(),
            endpoint: fhir_url(),
        },
        vec![],
        "sha256:0",
        false,
        changes,
        vec![],
    )
}

#[test]
fn a_failing_entry_fails_only_its_change_with_the_servers_words() {
    let project = unique("bwf");
    let team = |name: &str, display: Value| {
        change(
            ObjectKind::Team,
            "Group",
            name,
            &[("name", display), ("members", json!([]))],
        )
    };
    // the server refuses a Group whose name is a number (not a FHIR string)
    let changes = vec![
        team("a", json!("Team A")),
        team("b", json!(42)),
        team("c", json!("Team C")),
    ];
    let plan = plan(&project, changes);
    let store = Store::Http(HttpStore::new(&fhir_url(), Auth::None).unwrap());
    let report = runtime().block_on(apply_r4(&plan, &store, 4, 100));
    // the CapabilityStatement, then one Bundle with the three creates
    assert_eq!(store.request_count(), 2, "{report:#?}");
    let results: Vec<bool> = report.outcomes.iter().map(|o| o.result.is_ok()).collect();
    assert_eq!(results, vec![true, false, true], "{report:#?}");
    let err = report.outcomes[1].result.as_ref().unwrap_err().to_string();
    assert!(err.starts_with("team 'b' (Group"), "{err}");
    assert!(err.contains("create Group failed: HTTP 400: "), "{err}");
    assert!(
        err.to_lowercase().contains("string"),
        "no server words: {err}"
    );
    let server = Server::new();
    assert_eq!(server.owned("Group", &project).len(), 2);
}

// ---------------------------------------------------------------------------------------
// Without the capability: a mock server whose CapabilityStatement lists neither batch nor
// patch gets whole resources, one request each; the same server listing both gets them.

fn mock_plan(project: &str, base: &str) -> Plan {
    let mut c = change(
        ObjectKind::Team,
        "Group",
        "t",
        &[("name", json!("New name"))],
    );
    c.action = Action::Update;
    c.target.id = Some("g1".into());
    c.fields[0].before = Some(json!("Old name"));
    c.precondition.version_id = Some("3".into());
    let mut p = plan(
        project,
        vec![c.clone(), {
            let mut d = c;
            d.target.id = Some("g2".into());
            d.target.name = "u".into();
            d
        }],
    );
    p.target.endpoint = base.into();
    p
}

fn live_group(project: &str, id: &str, name: &str) -> Value {
    let members: Vec<Value> = (0..200)
        .map(|i| json!({"entity": {"reference": format!("Practitioner/p{i}")}}))
        .collect();
    json!({"resourceType": "Group", "id": id, "meta": {"versionId": "3",
        "tag": [{"system": "https://careplane.dev/project", "code": project}]},
        "identifier": [{"system": format!("https://careplane.dev/id/{project}"), "value": format!("team/{name}")}],
        "type": "practitioner", "actual": true, "name": "Old name", "member": members})
}

fn mock_apply(statement: Value) -> Vec<wiremock::Request> {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    runtime().block_on(async {
        let mock = MockServer::start().await;
        let project = "mockproj";
        Mock::given(method("GET"))
            .and(path("/fhir/metadata"))
            .respond_with(ResponseTemplate::new(200).set_body_json(statement))
            .mount(&mock)
            .await;
        for (id, name) in [("g1", "t"), ("g2", "u")] {
            let g = live_group(project, id, name);
            Mock::given(method("GET"))
                .and(path(format!("/fhir/Group/{id}")))
                .respond_with(ResponseTemplate::new(200).set_body_json(&g))
                .mount(&mock)
                .await;
            let mut done = g.clone();
            done["name"] = json!("New name");
            done["meta"]["versionId"] = json!("4");
            for m in ["PUT", "PATCH"] {
                Mock::given(method(m))
                    .and(path(format!("/fhir/Group/{id}")))
                    .respond_with(ResponseTemplate::new(200).set_body_json(&done))
                    .mount(&mock)
                    .await;
            }
        }
        let entry = |r: &Value| json!({"resource": r, "response": {"status": "200 OK"}});
        let mut done: Vec<Value> = [("g1", "t"), ("g2", "u")]
            .iter()
            .map(|(id, name)| live_group(project, id, name))
            .collect();
        let reads = json!({"resourceType": "Bundle", "type": "batch-response",
            "entry": done.iter().map(entry).collect::<Vec<_>>()});
        for d in &mut done {
            d["name"] = json!("New name");
            d["meta"]["versionId"] = json!("4");
        }
        let writes = json!({"resourceType": "Bundle", "type": "batch-response",
            "entry": done.iter().map(entry).collect::<Vec<_>>()});
        Mock::given(method("POST"))
            .and(path("/fhir/"))
            .and(wiremock::matchers::body_string_contains("\"GET\""))
            .respond_with(ResponseTemplate::new(200).set_body_json(reads))
            .mount(&mock)
            .await;
        Mock::given(method("POST"))
            .and(path("/fhir/"))
            .and(wiremock::matchers::body_string_contains("\"PATCH\""))
            .respond_with(ResponseTemplate::new(200).set_body_json(writes))
            .mount(&mock)
            .await;
        let base = format!("{}/fhir", mock.uri());
        let store = Store::Http(HttpStore::new(&base, Auth::None).unwrap());
        let report = apply_r4(&mock_plan(project, &base), &store, 1, 100).await;
        assert_eq!(report.failed(), 0, "{report:#?}");
        mock.received_requests().await.unwrap()
    })
}

/// Apply `plan` to `store` as an R4 target, `concurrency` requests at a time and
/// `batch_size` writes per Bundle.
async fn apply_r4(
    plan: &Plan,
    store: &Store,
    concurrency: usize,
    batch_size: usize,
) -> apply::Report {
    let writes = Writes {
        concurrency,
        batch_size,
    };
    apply::apply(plan, store, &careplane::dialect::r4::R4::default(), writes).await
}

fn sent(requests: &[wiremock::Request]) -> Vec<String> {
    requests
        .iter()
        .map(|r| format!("{} {}", r.method, r.url.path()))
        .collect()
}

#[test]
fn without_batch_or_patch_in_the_capability_statement_whole_resources_go_one_by_one() {
    let without = json!({"resourceType": "CapabilityStatement", "rest": [{"mode": "server",
        "resource": [{"type": "Group", "interaction": [{"code": "read"}, {"code": "update"}]}]}]});
    let got = sent(&mock_apply(without));
    assert_eq!(
        got,
        vec![
            "GET /fhir/metadata",
            "GET /fhir/Group/g1",
            "PUT /fhir/Group/g1",
            "GET /fhir/Group/g2",
            "PUT /fhir/Group/g2"
        ]
    );
    let with = json!({"resourceType": "CapabilityStatement", "rest": [{"mode": "server",
        "interaction": [{"code": "batch"}],
        "resource": [{"type": "Group", "interaction": [{"code": "read"}, {"code": "update"}, {"code": "patch"}]}]}]});
    let requests = mock_apply(with);
    assert_eq!(
        sent(&requests),
        vec!["GET /fhir/metadata", "POST /fhir/", "POST /fhir/"]
    );
    // the write Bundle carries two guarded patches of the name, not the 200 members
    let body: Value = serde_json::from_slice(&requests[2].body).unwrap();
    for e in body["entry"].as_array().unwrap() {
        assert_eq!(e["request"]["method"], "PATCH");
        assert_eq!(e["request"]["ifMatch"], "W/\"3\"");
        use base64::Engine;
        let ops: Value = serde_json::from_slice(
            &base64::engine::general_purpose::STANDARD
                .decode(e["resource"]["data"].as_str().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            ops,
            json!([{"op": "test", "path": "/meta/versionId", "value": "3"},
                   {"op": "replace", "path": "/name", "value": "New name"}])
        );
    }
}

/// The store's batch answers entry by entry (the real server): reads, a conditional create
/// that finds its resource, a stale ifMatch.
#[test]
fn each_batch_entry_is_answered_as_its_single_request_would_be() {
    let server = Server::new();
    let tag = unique("bwe");
    let g = server.post(
        &json!({"resourceType": "Group", "type": "person", "actual": true,
        "identifier": [{"system": "urn:test", "value": tag}]}),
    );
    let id = g["id"].as_str().unwrap().to_owned();
    let store = Store::Http(HttpStore::new(&fhir_url(), Auth::None).unwrap());
    let answers = runtime()
        .block_on(store.batch(&[
            BatchEntry::Read {
                resource_type: "Group".into(),
                id: id.clone(),
            },
            BatchEntry::Read {
                resource_type: "Group".into(),
                id: "does-not-exist".into(),
            },
            BatchEntry::Create {
                resource: json!({"resourceType": "Group", "type": "person", "actual": true}),
                if_none_exist: Some(
                    Query::new("Group").param("identifier", format!("urn:test|{tag}")),
                ),
            },
            BatchEntry::Update {
                resource: g.clone(),
                pre: Precondition {
                    version_id: Some("stale".into()),
                    last_updated: None,
                },
            },
        ]))
        .unwrap();
    assert!(matches!(&answers[0], Ok(BatchAnswer::Read(Some(r))) if r["id"] == id.as_str()));
    assert!(matches!(&answers[1], Ok(BatchAnswer::Read(None))));
    assert!(matches!(&answers[2], Ok(BatchAnswer::Written(w)) if w.existed && w.id == id));
    assert!(
        matches!(
            &answers[3],
            Err(careplane::fhir::FhirError::Conflict { status: 412, .. })
        ),
        "{:?}",
        answers[3]
    );
}

/// A server slower per entry than the target's timeouts allow for a whole Bundle: the
/// Bundle that got no answer is not sent again, its changes are read back and written one
/// by one, and the Bundles after it are smaller.
#[test]
fn bundles_that_get_no_answer_in_time_shrink_and_their_changes_go_one_by_one() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let statement = json!({"resourceType": "CapabilityStatement", "rest": [{"mode": "server",
        "interaction": [{"code": "batch"}]}]});
    let requests = runtime().block_on(async {
        let mock = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/fhir/metadata"))
            .respond_with(ResponseTemplate::new(200).set_body_json(statement))
            .mount(&mock)
            .await;
        Mock::given(method("POST"))
            .and(path("/fhir/"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_delay(std::time::Duration::from_secs(3))
                    .set_body_json(json!({"resourceType": "Bundle", "type": "batch-response"})),
            )
            .mount(&mock)
            .await;
        Mock::given(method("GET"))
            .and(path("/fhir/Group"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"resourceType": "Bundle", "type": "searchset"})),
            )
            .mount(&mock)
            .await;
        Mock::given(method("POST"))
            .and(path("/fhir/Group"))
            .respond_with(ResponseTemplate::new(201).set_body_json(
                json!({"resourceType": "Group", "id": "x", "meta": {"versionId": "1"}}),
            ))
            .mount(&mock)
            .await;
        let base = format!("{}/fhir", mock.uri());
        let limits = careplane::fhir::http::Limits {
            read_timeout: std::time::Duration::from_secs(1),
            ..Default::default()
        };
        let store = Store::Http(HttpStore::with_limits(&base, Auth::None, limits).unwrap());
        let teams: Vec<Change> = (0..8)
            .map(|i| {
                change(
                    ObjectKind::Team,
                    "Group",
                    &format!("t{i}"),
                    &[("name", json!(format!("Team {i}")))],
                )
            })
            .collect();
        let mut plan = plan("slowproj", teams);
        plan.target.endpoint = base.clone();
        let report = apply_r4(&plan, &store, 1, 4).await;
        assert_eq!(report.failed(), 0, "{report:#?}");
        mock.received_requests().await.unwrap()
    });
    let bundles: Vec<usize> = requests
        .iter()
        .filter(|r| r.url.path() == "/fhir/" && r.method.as_str() == "POST")
        .map(|r| {
            let b: Value = serde_json::from_slice(&r.body).unwrap();
            b["entry"].as_array().unwrap().len()
        })
        .collect();
    assert_eq!(bundles, vec![4, 2], "each sent once, the second smaller");
    let singles = requests
        .iter()
        .filter(|r| r.url.path() == "/fhir/Group" && r.method.as_str() == "POST")
        .count();
    assert_eq!(singles, 8, "every change written one by one after all");
}

// ---------------------------------------------------------------------------------------
// Care-team assignments and the saved-plan stale check, batched.

const PCP: (&str, &str) = ("453231000124104", "Primary care provider");
const RN: (&str, &str) = ("224535009", "Registered nurse");

/// A project putting `staff[0]` (authoritative) on the care teams of the patients carrying
/// `panel`, and with `nursing`, `staff[1]` on those carrying `system`; target `srv` with
/// `batchSize`.
fn care_project(
    dir: &Path,
    project: &str,
    staff: &[Staff],
    (system, panel): (&str, &str),
    nursing: bool,
    batch: usize,
) {
    let mut care = format!(
        "apiVersion: careplane.dev/v1\nkind: CareTeamRole\nmetadata:\n  name: pcp\nspec:\n  code: {{code: \"{}\", display: {}}}\n---\napiVersion: careplane.dev/v1\nkind: CareTeamRole\nmetadata:\n  name: rn\nspec:\n  code: {{code: \"{}\", display: {}}}\n---\napiVersion: careplane.dev/v1\nkind: CareTeamAssignment\nmetadata:\n  name: panel\nspec:\n  practitioner: {{npi: \"{}\"}}\n  careTeamRole: pcp\n  authoritative: true\n  maxRemovalShare: 1\n  patients:\n    rule:\n      identifier: {{system: \"{panel}\"}}\n",
        PCP.0, PCP.1, RN.0, RN.1, staff[0].npi
    );
    if nursing {
        care.push_str(&format!(
            "---\napiVersion: careplane.dev/v1\nkind: CareTeamAssignment\nmetadata:\n  name: nursing\nspec:\n  practitioner: {{npi: \"{}\"}}\n  careTeamRole: rn\n  patients:\n    rule:\n      identifier: {{system: \"{system}\"}}\n",
            staff[1].npi
        ));
    }
    write(
        dir,
        &[
            (
                "careplane.yaml",
                format!(
                    "apiVersion: careplane.dev/v1\nkind: Project\nmetadata:\n  name: {project}\nspec:\n  defaultTarget: srv\n  targets:\n    srv: {{type: fhir, url: \"{}\", batchSize: {batch}}}\n",
                    fhir_url()
                ),
            ),
            ("care.yaml", care),
        ],
    );
}

/// The project's care teams with ids, versions and the project's name taken out (so two
/// projects' care teams compare), sorted.
fn care_teams(server: &Server, project: &str) -> Vec<String> {
    let mut all: Vec<String> = server
        .owned("CareTeam", project)
        .into_iter()
        .map(|mut t| {
            let o = t.as_object_mut().unwrap();
            o.remove("id");
            o.remove("meta");
            if let Some(p) = o.get_mut("participant").and_then(Value::as_array_mut) {
                p.sort_by_key(|x| x.to_string());
            }
            t.to_string().replace(project, "PROJECT")
        })
        .collect();
    all.sort();
    all
}

/// The requests apply sent after it read the CapabilityStatement (its writes and the
/// reads before them; the plan's searches come first).
fn apply_requests(log: &str) -> Vec<&str> {
    let sent = requests(log);
    let start = sent
        .iter()
        .position(|l| l.contains("read the CapabilityStatement"))
        .expect("no CapabilityStatement read");
    sent[start + 1..].to_vec()
}

/// Patients joining care teams that exist already, then every patient leaving one: on a
/// server that takes batches the care teams are read in Bundles of searches and written
/// in Bundles of PUTs (each under `ifMatch`), with the same care teams as one request at
/// a time, and the next plan is empty.
#[test]
fn care_team_joins_into_existing_care_teams_and_removals_go_in_bundles() {
    let server = Server::new();
    let tag = unique("bwc");
    let staff = seed_staff(&server, &tag, 2);
    let system = format!("urn:test:{tag}");
    let n = 30;
    for i in 0..n {
        server.post(&json!({"resourceType": "Patient", "active": true,
            "identifier": [{"system": system, "value": format!("{i}")}]}));
    }
    let projects: Vec<(String, tempfile::TempDir, usize)> = [("bcb", 20), ("bcs", 1)]
        .into_iter()
        .map(|(prefix, batch)| (unique(prefix), tempfile::tempdir().unwrap(), batch))
        .collect();
    let step = |panel: &str, nursing: bool| -> Vec<String> {
        projects
            .iter()
            .map(|(name, dir, batch)| {
                care_project(dir.path(), name, &staff, (&system, panel), nursing, *batch);
                apply_logged(dir.path())
            })
            .collect()
    };
    step(&system, false);
    assert_eq!(
        care_teams(&server, &projects[0].0),
        care_teams(&server, &projects[1].0)
    );

    // the nurse joins every care team: each conditional create finds the care team, which
    // is then read (one Bundle of searches) and merged (one Bundle of PUTs)
    let logs = step(&system, true);
    let batched = apply_requests(&logs[0]);
    assert!(
        !batched
            .iter()
            .any(|l| l.contains("update CareTeam") || l.contains("CareTeam search by")),
        "a care team read or written alone: {}",
        logs[0]
    );
    let bundles = |want: &str| batched.iter().filter(|l| l.contains(want)).count();
    assert_eq!(
        (bundles("(search 20)"), bundles("(search 10)")),
        (1, 1),
        "{}",
        logs[0]
    );
    assert_eq!(
        (bundles("(update 20)"), bundles("(update 10)")),
        (1, 1),
        "{}",
        logs[0]
    );
    let single = apply_requests(&logs[1]);
    assert!(
        single.len() >= 2 * n,
        "{} single requests: {}",
        single.len(),
        logs[1]
    );
    assert_eq!(
        care_teams(&server, &projects[0].0),
        care_teams(&server, &projects[1].0)
    );

    // the PCP leaves every care team: 2 Bundles of searches and 2 of PUTs (and the
    // Provenance), against a read and a PUT per patient
    let logs = step("urn:test:nobody", true);
    let batched = apply_requests(&logs[0]);
    assert!(
        batched
            .iter()
            .all(|l| l.contains("batch of ") || l.contains("create Provenance")),
        "{}",
        logs[0]
    );
    assert_eq!(batched.len(), 5, "{}", logs[0]);
    assert!(apply_requests(&logs[1]).len() >= 2 * n, "{}", logs[1]);
    let teams = care_teams(&server, &projects[0].0);
    assert_eq!(teams, care_teams(&server, &projects[1].0));
    assert_eq!(teams.len(), n);
    assert!(
        teams
            .iter()
            .all(|t| !t.contains(&staff[0].id) && t.contains(&staff[1].id)),
        "{teams:#?}"
    );
    for (_, dir, _) in &projects {
        plan_is_empty(dir.path());
    }
}

/// A patient's care team on the mock server of project `mockcare`: the PCP `dr` and the
/// nurse `rn`, version 7.
fn mock_team(pid: &str) -> Value {
    let project = "mockcare";
    json!({"resourceType": "CareTeam", "id": format!("ct-{pid}"), "meta": {"versionId": "7",
    "tag": [{"system": "https://careplane.dev/project", "code": project}]},
    "identifier": [{"system": format!("https://careplane.dev/id/{project}"), "value": format!("care-team/{pid}")}],
    "status": "active", "subject": {"reference": format!("Patient/{pid}")},
    "participant": [
        {"member": {"reference": "Practitioner/dr"}, "role": [{"coding": [{"system": "http://snomed.info/sct", "code": PCP.0}]}]},
        {"member": {"reference": "Practitioner/rn"}, "role": [{"coding": [{"system": "http://snomed.info/sct", "code": RN.0}]}]}
    ]})
}

/// Apply the PCP `dr` joining (`before` → `after`) patients' care teams on a mock server
/// that takes batches and answers each kind of Bundle (conditional creates, searches,
/// PUTs) with `answers` (the entries of its batch-response): the outcome and the
/// requests it got.
fn mock_care_apply(
    patients: (&[&str], &[&str]),
    answers: [(&str, Vec<Value>); 3],
) -> (apply::Report, Vec<wiremock::Request>) {
    mock_care_apply_with(patients, answers, Vec::new())
}

/// [`mock_care_apply`], the mock also answering single requests: (method, path, answer).
fn mock_care_apply_with(
    patients: (&[&str], &[&str]),
    answers: [(&str, Vec<Value>); 3],
    singles: Vec<(&str, String, Value)>,
) -> (apply::Report, Vec<wiremock::Request>) {
    use wiremock::matchers::{body_string_contains, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    runtime().block_on(async {
        let mock = MockServer::start().await;
        let statement = json!({"resourceType": "CapabilityStatement", "rest": [{"mode": "server",
            "interaction": [{"code": "batch"}]}]});
        Mock::given(method("GET"))
            .and(path("/fhir/metadata"))
            .respond_with(ResponseTemplate::new(200).set_body_json(statement))
            .mount(&mock)
            .await;
        for (verb, entries) in answers {
            Mock::given(method("POST"))
                .and(path("/fhir/"))
                .and(body_string_contains(format!("\"{verb}\"")))
                .respond_with(ResponseTemplate::new(200).set_body_json(
                    json!({"resourceType": "Bundle", "type": "batch-response", "entry": entries}),
                ))
                .mount(&mock)
                .await;
        }
        for (verb, at, answer) in singles {
            Mock::given(method(verb))
                .and(path(at))
                .respond_with(ResponseTemplate::new(200).set_body_json(answer))
                .mount(&mock)
                .await;
        }
        let base = format!("{}/fhir", mock.uri());
        let mut c = change(ObjectKind::CareTeamAssignment, "CareTeam", "panel", &[]);
        c.action = Action::Update;
        c.operation =
            careplane::vocab::Operation::CareTeamParticipant(careplane::vocab::Participant {
                practitioner: "Practitioner/dr".into(),
                role: careplane::vocab::Coding {
                    system: "http://snomed.info/sct".into(),
                    code: PCP.0.into(),
                    display: PCP.1.into(),
                },
                lead: false,
                authoritative: true,
            });
        let list = |pids: &[&str]| {
            json!(
                pids.iter()
                    .map(|p| format!("Patient/{p}"))
                    .collect::<Vec<_>>()
            )
        };
        c.fields.push(FieldChange {
            field: "patients".into(),
            before: None,
            after: None,
            source: None,
            labels: Default::default(),
            membership: None,
            sealed: Some(Box::new((Some(list(patients.0)), Some(list(patients.1))))),
        });
        let mut p = plan("mockcare", vec![c]);
        p.target.endpoint = base.clone();
        let store = Store::Http(HttpStore::new(&base, Auth::None).unwrap());
        let report = apply_r4(&p, &store, 4, 100).await;
        (report, mock.received_requests().await.unwrap())
    })
}

/// A search entry's answer: a searchset of `teams`.
fn found(teams: Vec<Value>) -> Value {
    let entries: Vec<Value> = teams.into_iter().map(|t| json!({"resource": t})).collect();
    json!({"response": {"status": "200 OK"}, "resource": {"resourceType": "Bundle",
        "type": "searchset", "entry": entries}})
}

/// A write entry's answer: `team` at version 8.
fn stored(mut team: Value, status: &str) -> Value {
    team["meta"]["versionId"] = json!("8");
    json!({"response": {"status": status}, "resource": team})
}

/// A care-team assignment whose PUT of one patient's care team is refused inside the
/// Bundle: that patient fails (in the words of a single request's failure), the others are
/// written, and the reads and writes went as one Bundle each, every PUT under the version
/// read.
#[test]
fn a_failing_care_team_entry_fails_only_its_patient() {
    let pids = ["p1", "p2", "p3"];
    let refused = json!({"response": {"status": "422 Unprocessable Entity", "outcome": {
        "resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "invariant",
        "details": {"text": "participant.role is not allowed here"}}]}}});
    let (report, requests) = mock_care_apply(
        (&pids, &[]),
        [
            ("POST", vec![]),
            (
                "GET",
                pids.iter().map(|p| found(vec![mock_team(p)])).collect(),
            ),
            (
                "PUT",
                vec![
                    stored(mock_team("p1"), "200 OK"),
                    refused,
                    stored(mock_team("p3"), "200 OK"),
                ],
            ),
        ],
    );
    assert_eq!(
        sent(&requests),
        vec!["GET /fhir/metadata", "POST /fhir/", "POST /fhir/"],
        "{report:#?}"
    );
    let reads: Value = serde_json::from_slice(&requests[1].body).unwrap();
    assert_eq!(reads["entry"].as_array().unwrap().len(), 3);
    assert!(
        reads["entry"][0]["request"]["url"]
            .as_str()
            .unwrap()
            .starts_with("CareTeam?identifier="),
        "{reads:#}"
    );
    let writes: Value = serde_json::from_slice(&requests[2].body).unwrap();
    for e in writes["entry"].as_array().unwrap() {
        assert_eq!(e["request"]["method"], "PUT");
        assert_eq!(e["request"]["ifMatch"], "W/\"7\"");
        let members: Vec<&Value> = e["resource"]["participant"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| &p["member"]["reference"])
            .collect();
        assert_eq!(members, vec!["Practitioner/rn"], "the PCP taken off");
    }
    let err = report.outcomes[0].result.as_ref().unwrap_err().to_string();
    assert!(
        err.contains(
            "1 of 3 patient care team(s) could not be written (the others were); first error: update CareTeam/(id withheld) failed: HTTP 422: "
        ),
        "{err}"
    );
    // as for a single request: the server's message on a care team may quote patient data
    assert!(
        err.ends_with("(the server's message is withheld: it may quote patient data)"),
        "{err}"
    );
    assert!(!err.contains("p2"), "a patient id in the error: {err}");
}

/// A care-team read the Bundle cannot answer (the server refuses that entry) is not that
/// patient's failure: nothing was written for them yet, so their care team is read and
/// written the single way, and every patient is done.
#[test]
fn a_care_team_read_a_bundle_cannot_answer_is_done_the_single_way() {
    let refused = json!({"response": {"status": "400 Bad Request"}});
    let (report, requests) = mock_care_apply_with(
        (&["p1", "p2", "p3"], &[]),
        [
            ("POST", vec![]),
            (
                "GET",
                vec![
                    found(vec![mock_team("p1")]),
                    refused,
                    found(vec![mock_team("p3")]),
                ],
            ),
            (
                "PUT",
                vec![
                    stored(mock_team("p1"), "200 OK"),
                    stored(mock_team("p3"), "200 OK"),
                ],
            ),
        ],
        vec![
            (
                "GET",
                "/fhir/CareTeam".into(),
                json!({"resourceType": "Bundle", "type": "searchset",
                    "entry": [{"resource": mock_team("p2")}]}),
            ),
            (
                "PUT",
                "/fhir/CareTeam/ct-p2".into(),
                stored(mock_team("p2"), "200 OK")["resource"].clone(),
            ),
        ],
    );
    let outcome = &report.outcomes[0];
    assert!(outcome.result.is_ok(), "{report:#?}");
    assert_eq!(outcome.writes, 3);
    assert_eq!(
        sent(&requests),
        vec![
            "GET /fhir/metadata",
            "POST /fhir/",
            "POST /fhir/",
            "GET /fhir/CareTeam",
            "PUT /fhir/CareTeam/ct-p2"
        ]
    );
    let put = requests.last().unwrap();
    assert_eq!(
        put.headers.get("if-match").map(|v| v.to_str().unwrap()),
        Some("W/\"7\""),
        "the single write is under the version read"
    );
}

/// Patients joining: a conditional create in the Bundle that finds the patient's care
/// team (200) or meets more than one (412) is not a failure: those care teams are read
/// (in a Bundle of searches, the first match, as a single read takes) and the PCP merged
/// into each by a PUT under the version read (in a Bundle of PUTs), never one request per
/// patient.
#[test]
fn joins_whose_conditional_create_finds_care_teams_are_merged_in_bundles() {
    let without_pcp = |pid: &str| {
        let mut t = mock_team(pid);
        t["participant"] = json!([t["participant"][1]]);
        t
    };
    let mut copy = mock_team("p2");
    copy["id"] = json!("ct-p2-copy");
    let several = json!({"response": {"status": "412 Precondition Failed", "outcome": {
        "resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "duplicate",
        "details": {"text": "Multiple resources found matching condition"}}]}}});
    let (report, requests) = mock_care_apply(
        (&[], &["p1", "p2", "p3"]),
        [
            (
                "POST",
                vec![
                    stored(mock_team("p1"), "201 Created"),
                    several,
                    stored(without_pcp("p3"), "200 OK"),
                ],
            ),
            (
                "GET",
                vec![
                    found(vec![without_pcp("p2"), copy]),
                    found(vec![without_pcp("p3")]),
                ],
            ),
            (
                "PUT",
                vec![
                    stored(mock_team("p2"), "200 OK"),
                    stored(mock_team("p3"), "200 OK"),
                ],
            ),
        ],
    );
    assert_eq!(
        sent(&requests),
        vec![
            "GET /fhir/metadata",
            "POST /fhir/",
            "POST /fhir/",
            "POST /fhir/"
        ],
        "{report:#?}"
    );
    let outcome = &report.outcomes[0];
    assert!(outcome.result.is_ok(), "{report:#?}");
    assert_eq!(outcome.writes, 3);
    let creates: Value = serde_json::from_slice(&requests[1].body).unwrap();
    assert!(
        creates["entry"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["request"]["ifNoneExist"].is_string()),
        "{creates:#}"
    );
    let searches: Value = serde_json::from_slice(&requests[2].body).unwrap();
    assert_eq!(searches["entry"].as_array().unwrap().len(), 2);
    let puts: Value = serde_json::from_slice(&requests[3].body).unwrap();
    let entries = puts["entry"].as_array().unwrap();
    let urls: Vec<&Value> = entries.iter().map(|e| &e["request"]["url"]).collect();
    assert_eq!(urls, vec!["CareTeam/ct-p2", "CareTeam/ct-p3"]);
    for e in entries {
        assert_eq!(e["request"]["ifMatch"], "W/\"7\"");
        let members: Vec<&Value> = e["resource"]["participant"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| &p["member"]["reference"])
            .collect();
        assert!(
            members.contains(&&json!("Practitioner/dr"))
                && members.contains(&&json!("Practitioner/rn")),
            "{e:#}"
        );
    }
}

/// A saved plan checked in Bundles of reads before its first write: an object edited on
/// the server after the plan was made still refuses the whole plan (nothing written, the
/// object named); a plan that holds is checked and applied without a read of its own per
/// object.
#[test]
fn a_saved_plan_is_checked_in_bundles_and_a_stale_object_still_refuses_it() {
    let p = pair(40, 0);
    let (project, dir) = (&p.batched.0, p.batched.1.path());
    apply_logged(dir);
    let path = dir.join("org.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("displayName: Team ", "displayName: Renamed team ");
    std::fs::write(&path, text).unwrap();
    let file = dir.join("saved.plan.json");
    let save = || {
        let out = run(dir, "plan", &["--out", file.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    save();
    // one team edited by hand after the plan was made
    let groups = p.server.owned("Group", project);
    let mut edited = groups
        .iter()
        .find(|g| g["identifier"][0]["value"] == "team/team-7")
        .unwrap()
        .clone();
    edited["name"] = json!("Edited by hand");
    p.server.put(&edited);
    let versions = || {
        let mut v: Vec<String> = ["Group", "CodeSystem", "PractitionerRole"]
            .iter()
            .flat_map(|rt| p.server.owned(rt, project))
            .map(|r| format!("{}/{}", r["id"], r["meta"]["versionId"]))
            .collect();
        v.sort();
        v
    };
    let before = versions();
    let out = run(dir, "apply", &["--plan", file.to_str().unwrap()]);
    let (stdout, log) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{log}");
    assert!(stdout.contains("Nothing was written"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "team 'team-7' (Group/{}) changed on the server after the plan was made",
            edited["id"].as_str().unwrap()
        )),
        "{stdout}"
    );
    assert_eq!(stdout.matches("✗ stale").count(), 1, "{stdout}");
    assert_eq!(versions(), before, "nothing written");
    let sent = requests(&log);
    assert!(
        sent.iter().any(|l| l.contains("batch of 20 (read 20)")),
        "the 20 teams not read in a Bundle: {log}"
    );
    assert!(
        !sent.iter().any(|l| l.contains(" read Group/")),
        "a team read alone: {log}"
    );

    // planned again, with three new teams: the check reads the teams and searches for
    // the new ones in one Bundle, the apply reads the teams in another
    let mut text = std::fs::read_to_string(&path).unwrap();
    for k in 0..3 {
        text.push_str(&format!(
            "---\napiVersion: careplane.dev/v1\nkind: Team\nmetadata:\n  name: new-{k}\nspec:\n  displayName: New team {k} {project}\n  members: []\n"
        ));
    }
    std::fs::write(&path, text).unwrap();
    save();
    let out = run(dir, "apply", &["--plan", file.to_str().unwrap()]);
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    let sent = requests(&log);
    assert_eq!(
        sent.iter()
            .filter(|l| l.contains("batch of 23 (")
                && l.contains("read 20")
                && l.contains("search 3"))
            .count(),
        1,
        "{log}"
    );
    assert_eq!(
        sent.iter()
            .filter(|l| l.contains("batch of 20 (read 20)"))
            .count(),
        1,
        "{log}"
    );
    assert!(
        !sent
            .iter()
            .any(|l| l.contains(" read Group/") || l.contains("Group search by identifier")),
        "{log}"
    );
    assert_eq!(
        p.server
            .owned("Group", project)
            .iter()
            .filter(|g| g["name"]
                .as_str()
                .unwrap_or_default()
                .starts_with("New team"))
            .count(),
        3
    );
    plan_is_empty(dir);
}
