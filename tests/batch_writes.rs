//! Batched and patched writes (issue 13) against the real FHIR server (Medplum's router,
//! which lists `batch` and `patch` in its CapabilityStatement) and against mock servers
//! that do not: FHIR `batch` Bundles give the same result as one request per change, a
//! failing entry fails only its change (with the server's words), a few members joining
//! or leaving a patient group go as a JSON Patch, and without the capability apply sends
//! whole resources one by one.

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
    let dialect = careplane::dialect::r4::R4::default();
    let report = runtime().block_on(apply::apply(
        &plan,
        &store,
        &dialect,
        Writes {
            concurrency: 4,
            batch_size: 100,
        },
    ));
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
        let dialect = careplane::dialect::r4::R4::default();
        let report = apply::apply(
            &mock_plan(project, &base),
            &store,
            &dialect,
            Writes {
                concurrency: 1,
                batch_size: 100,
            },
        )
        .await;
        assert_eq!(report.failed(), 0, "{report:#?}");
        mock.received_requests().await.unwrap()
    })
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
        let report = apply::apply(
            &plan,
            &store,
            &careplane::dialect::r4::R4::default(),
            Writes {
                concurrency: 1,
                batch_size: 4,
            },
        )
        .await;
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
