//! `careplane drift` against the real FHIR server: exit codes, what changed and when, and
//! no false drift from what servers do on their own.

mod common;

use std::path::Path;

use common::*;
use serde_json::{Value, json};

fn drift(dir: &Path) -> (i32, Value) {
    let out = careplane()
        .arg("drift")
        .arg(dir)
        .args(["--server", &fhir_url(), "--format", "json"])
        .output()
        .unwrap();
    let code = out.status.code().unwrap();
    assert!(
        code != 1,
        "drift failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (code, serde_json::from_slice(&out.stdout).unwrap())
}

fn applied() -> (Server, tempfile::TempDir, String, Vec<Staff>) {
    let server = Server::new();
    let project = unique("d");
    let staff = seed_staff(&server, &project, 4);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &org(&project, &staff));
    assert!(apply(dir.path(), &[]).status.success());
    (server, dir, project, staff)
}

fn lab(server: &Server, project: &str) -> Value {
    server
        .owned("Group", project)
        .into_iter()
        .find(|g| g["identifier"][0]["value"] == "team/lab")
        .unwrap()
}

#[test]
fn in_sync_after_apply_and_the_report_follows_its_schema() {
    let (_server, dir, _project, _staff) = applied();
    let (code, report) = drift(dir.path());
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["format"], "careplane-drift");
    assert_eq!(report["in_sync"], true);
    assert_eq!(report["summary"]["in_sync"], 6);
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/drift.schema.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let errors: Vec<String> = jsonschema::draft7::new(&schema)
        .unwrap()
        .iter_errors(&report)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn a_server_edit_is_drift_with_its_fields_and_when_it_happened() {
    let (server, dir, project, _staff) = applied();
    let mut g = lab(&server, &project);
    g["name"] = json!("Lab (edited in the EHR)");
    let edited = server.put(&g);
    let (code, report) = drift(dir.path());
    assert_eq!(code, 2);
    assert_eq!(report["summary"]["changed"], 1);
    let d = &report["drifted"][0];
    assert_eq!(d["state"], "changed");
    assert_eq!(d["cause"], "server-edit");
    assert_eq!(d["since"], edited["meta"]["lastUpdated"]);
    assert_eq!(d["fields"][0]["field"], "name");
    assert_eq!(d["fields"][0]["actual"], "Lab (edited in the EHR)");
    assert_eq!(d["fields"][0]["source"]["file"], "teams.yaml");
    // markdown for an issue body starts with a marker a workflow can find
    let out = careplane()
        .arg("drift")
        .arg(dir.path())
        .args(["--server", &fhir_url(), "--format", "markdown"])
        .output()
        .unwrap();
    let md = String::from_utf8(out.stdout).unwrap();
    assert!(
        md.starts_with(&format!(
            "<!-- careplane-drift project={project} target=server -->"
        )),
        "{md}"
    );
    assert!(md.contains("changed on the server since"), "{md}");
}

#[test]
fn a_manifest_change_not_yet_applied_is_told_apart_from_a_server_edit() {
    let (_server, dir, _project, _staff) = applied();
    let roles = std::fs::read_to_string(dir.path().join("roles.yaml")).unwrap();
    std::fs::write(
        dir.path().join("roles.yaml"),
        roles.replace("display: Physician", "display: Doctor"),
    )
    .unwrap();
    let (code, report) = drift(dir.path());
    assert_eq!(code, 2);
    assert_eq!(
        report["drifted"][0]["cause"], "manifest-change",
        "{report:#}"
    );
}

#[test]
fn a_deleted_object_is_missing() {
    let (server, dir, project, _staff) = applied();
    let g = lab(&server, &project);
    let rt = common::runtime();
    rt.block_on(async {
        reqwest::Client::new()
            .delete(format!(
                "{}/Group/{}",
                fhir_url(),
                g["id"].as_str().unwrap()
            ))
            .send()
            .await
            .unwrap();
    });
    let (code, report) = drift(dir.path());
    assert_eq!(code, 2);
    assert_eq!(report["summary"]["missing"], 1);
    assert_eq!(report["drifted"][0]["state"], "missing");
}

#[test]
fn no_false_drift_from_server_managed_meta() {
    let (server, dir, project, _staff) = applied();
    // the same content written again: new versionId, new lastUpdated, extra meta fields
    let mut g = lab(&server, &project);
    g["meta"]["source"] = json!("https://ehr.example.org");
    g["meta"]["security"] =
        json!([{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HTEST"}]);
    server.put(&g);
    let (code, report) = drift(dir.path());
    assert_eq!(code, 0, "{report:#}");
}

#[test]
fn no_false_drift_from_list_order() {
    let (server, dir, project, staff) = applied();
    let teams = std::fs::read_to_string(dir.path().join("teams.yaml")).unwrap();
    std::fs::write(
        dir.path().join("teams.yaml"),
        teams.replace(
            &format!("    - id: {}\n", staff[2].id),
            &format!("    - id: {}\n    - id: {}\n", staff[2].id, staff[3].id),
        ),
    )
    .unwrap();
    assert!(apply(dir.path(), &[]).status.success());
    let mut g = lab(&server, &project);
    g["member"].as_array_mut().unwrap().reverse();
    g["characteristic"].as_array_mut().unwrap().reverse();
    server.put(&g);
    let (code, report) = drift(dir.path());
    assert_eq!(code, 0, "{report:#}");
}

#[test]
fn no_false_drift_from_server_added_defaults_and_unmanaged_fields() {
    let (server, dir, project, staff) = applied();
    let mut g = lab(&server, &project);
    // what servers and other tools add: member display/inactive flags, narrative, extensions,
    // a quantity, other characteristics
    g["member"][0]["entity"]["display"] = json!("Test2, Staff");
    g["member"][0]["inactive"] = json!(false);
    g["quantity"] = json!(1);
    g["text"] = json!({"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Lab</div>"});
    g["extension"] = json!([{"url": "https://example.org/fhir/pager", "valueString": "x1234"}]);
    g["characteristic"]
        .as_array_mut()
        .unwrap()
        .push(json!({"code": {"text": "shift"}, "valueBoolean": true, "exclude": false}));
    server.put(&g);
    let (code, report) = drift(dir.path());
    assert_eq!(code, 0, "{report:#}");
    let _ = staff;
}

/// Task activity is not configuration drift: a new open task a routing rule matches is a
/// pending effect (exit 0, counted per rule); `--include-effects` makes it drift; a team
/// edited by hand is drift either way.
#[test]
fn pending_effects_are_reported_apart_and_only_configuration_drift_exits_2() {
    let (server, dir, project, staff) = applied();
    let description = format!("Check specimen {project}");
    write(
        dir.path(),
        &[(
            "routing.yaml",
            format!(
                "apiVersion: careplane.dev/v1\nkind: RoutingRule\nmetadata:\n  name: specimens\nspec:\n  order: 10\n  match:\n    description: \"{description}\"\n  set:\n    team: lab\n"
            ),
        )],
    );
    let (code, report) = drift(dir.path());
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["pending_effects"], json!([]));

    // ordinary clinical activity: two new open tasks the rule routes
    for _ in 0..2 {
        server.post(
            &json!({"resourceType": "Task", "status": "requested", "intent": "order",
            "description": description,
            "requester": {"reference": format!("Practitioner/{}", staff[0].id)}}),
        );
    }
    let (code, report) = drift(dir.path());
    assert_eq!(code, 0, "task activity is not drift: {report:#}");
    assert_eq!(report["in_sync"], true);
    let pending = report["pending_effects"].as_array().unwrap();
    assert_eq!(pending.len(), 1, "{report:#}");
    assert_eq!(pending[0]["rule"], "specimens");
    assert_eq!(pending[0]["kind"], "task-routing");
    assert_eq!(pending[0]["tasks"], 2);
    assert!(
        report["drifted"].as_array().unwrap().is_empty(),
        "{report:#}"
    );
    // the human report names the rule and the count, and says it is not drift
    let out = careplane()
        .arg("drift")
        .arg(dir.path())
        .args(["--server", &fhir_url()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("routing rule 'specimens': 2 open task(s) to route")
            && text.contains("not configuration drift"),
        "{text}"
    );
    // --include-effects: pending effects count
    let out = careplane()
        .arg("drift")
        .arg(dir.path())
        .args(["--server", &fhir_url(), "--include-effects"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));

    // a team edited by hand is configuration drift
    let mut g = lab(&server, &project);
    g["name"] = json!("Lab (renamed by hand)");
    server.put(&g);
    let (code, report) = drift(dir.path());
    assert_eq!(code, 2, "{report:#}");
    assert_eq!(report["summary"]["changed"], 1);
    assert_eq!(report["pending_effects"][0]["tasks"], 2);
}
