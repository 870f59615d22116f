//! Every apply leaves a record: one FHIR Provenance per apply on targets that store it
//! (the real FHIR server, the file store), the `--report FILE` JSON everywhere (the Canvas
//! simulator cannot store Provenance). Neither carries patient ids.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// The report follows schema/apply-report.schema.json.
fn assert_valid_report(report: &Value) {
    let schema = read_json(&root().join("schema/apply-report.schema.json"));
    let errors: Vec<String> = jsonschema::draft7::new(&schema)
        .unwrap()
        .iter_errors(report)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}\n{report:#}");
    assert_eq!(report["format"], "careplane-apply-report");
    assert_eq!(report["format_version"], 1);
}

/// References a Provenance names (targets with a `reference`).
fn references(p: &Value) -> BTreeSet<String> {
    p["target"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["reference"].as_str().map(str::to_owned))
        .collect()
}

fn written(report: &Value) -> BTreeSet<String> {
    report["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["outcome"] == "done" && r["id"].is_string())
        .map(|r| {
            format!(
                "{}/{}",
                r["resource_type"].as_str().unwrap(),
                r["id"].as_str().unwrap()
            )
        })
        .collect()
}

fn no_patient_references(p: &Value) {
    let text = p.to_string();
    for t in ["Patient/", "CareTeam/", "Consent/"] {
        assert!(!text.contains(t), "{t} in {p:#}");
    }
}

#[test]
fn the_committed_apply_report_schema_is_current() {
    let committed =
        std::fs::read_to_string(root().join("schema/apply-report.schema.json")).unwrap();
    assert!(
        committed == careplane::apply::record_schema_text(),
        "schema/apply-report.schema.json is stale: run `cargo run -- schema --apply-report > schema/apply-report.schema.json`"
    );
}

#[test]
fn an_apply_on_fhir_r4_writes_one_provenance_naming_what_it_wrote() {
    let server = Server::new();
    let project = unique("audit");
    let staff = seed_staff(&server, &project, 3);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &org(&project, &staff));
    let report_file = dir.path().join("apply-report.json");

    let out = apply(dir.path(), &["--report", report_file.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}");
    let report = read_json(&report_file);
    assert_valid_report(&report);
    assert_eq!(report["result"], "applied");
    assert_eq!(report["project"], project.as_str());
    assert_eq!(report["agent"]["project"], project.as_str());
    assert_eq!(report["target"]["name"], "server");
    assert!(
        report["plan_sha256"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert_eq!(report["resources"].as_array().unwrap().len(), 6);

    let provenances = server.owned("Provenance", &project);
    assert_eq!(provenances.len(), 1, "{provenances:#?}");
    let p = &provenances[0];
    assert_eq!(
        report["provenance"]["reference"],
        format!("Provenance/{}", p["id"].as_str().unwrap())
    );
    assert!(stdout.contains("Recorded as Provenance/"), "{stdout}");
    // its targets are exactly the resources written, which are everything careplane owns
    let owned: BTreeSet<String> = ["CodeSystem", "Group", "PractitionerRole"]
        .iter()
        .flat_map(|rt| server.owned(rt, &project))
        .map(|r| {
            format!(
                "{}/{}",
                r["resourceType"].as_str().unwrap(),
                r["id"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(owned.len(), 6);
    assert_eq!(references(p), owned);
    assert_eq!(written(&report), owned);
    no_patient_references(p);
    // tagged like everything careplane owns; the plan digest and the agent are named
    assert_eq!(p["meta"]["tag"][0]["code"], project.as_str());
    assert!(
        p["entity"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["what"]["identifier"]["value"] == report["plan_sha256"]),
        "{p:#}"
    );
    assert!(
        p["agent"][0]["who"]["display"]
            .as_str()
            .unwrap()
            .contains(&project)
    );
    assert!(p["recorded"].is_string());

    // nothing to write: no second Provenance, and the report says so
    let out = apply(dir.path(), &["--report", report_file.to_str().unwrap()]);
    assert!(out.status.success());
    let report = read_json(&report_file);
    assert_valid_report(&report);
    assert_eq!(report["result"], "no-changes");
    assert_eq!(report["provenance"]["status"], "nothing-written");
    assert_eq!(server.owned("Provenance", &project).len(), 1);
}

#[test]
fn the_file_store_keeps_a_provenance_without_patient_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("clinic");
    copy_dir(&root().join("examples/clinic"), &dir);
    let report_file = tmp.path().join("report.json");
    let out = careplane()
        .arg("apply")
        .arg(&dir)
        .args(["--auto-approve", "--report"])
        .arg(&report_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let report = read_json(&report_file);
    assert_valid_report(&report);
    let text = std::fs::read_to_string(dir.join("store/Provenance.ndjson")).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{text}");
    let p: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(references(&p), written(&report));
    no_patient_references(&p);
    // the example's patients: none of their ids in the Provenance or the report
    let patients = std::fs::read_to_string(dir.join("store/Patient.ndjson")).unwrap();
    let report_text = std::fs::read_to_string(&report_file).unwrap();
    for line in patients.lines().filter(|l| !l.trim().is_empty()) {
        let id = serde_json::from_str::<Value>(line).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(!lines[0].contains(&id), "patient id in the Provenance");
        assert!(!report_text.contains(&id), "patient id in the report");
    }
}

#[test]
fn canvas_gets_no_provenance_and_the_report_file_is_the_record() {
    use common::canvas::{CLIENT_ID, CLIENT_SECRET, Sim, practitioner};
    let sim = Sim::start();
    sim.seed(serde_json::json!({
        "resources": (0..3).map(|i| practitioner(i, &[])).collect::<Vec<_>>(),
        "roles": ["MD"],
        "careTeamRoles": []
    }));
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            ("careplane.yaml", sim.project_file("")),
            (
                "teams.yaml",
                "apiVersion: careplane.dev/v1\nkind: Team\nmetadata:\n  name: lab\nspec:\n  displayName: Lab Team\n  responsibilities: [COLLECT_SPECIMENS_FROM_PATIENT]\n  members:\n    - email: staff1@canvas.example.org\n"
                    .into(),
            ),
        ],
    );
    let report_file = dir.path().join("apply-report.json");
    let out = careplane()
        .arg("apply")
        .arg(dir.path())
        .args(["--auto-approve", "--report"])
        .arg(&report_file)
        .env("SIM_ID", CLIENT_ID)
        .env("SIM_SECRET", CLIENT_SECRET)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("the report file is the record"), "{stdout}");
    let report = read_json(&report_file);
    assert_valid_report(&report);
    assert_eq!(report["provenance"]["status"], "unsupported");
    assert_eq!(report["agent"]["client"], CLIENT_ID);
    assert_eq!(report["agent"]["client_kind"], "oauth-client");
    let text = std::fs::read_to_string(&report_file).unwrap();
    assert!(!text.contains(CLIENT_SECRET), "no secrets in the report");
    let team = sim
        .teams()
        .into_iter()
        .find(|g| g["name"] == "Lab Team")
        .unwrap();
    assert_eq!(
        written(&report),
        BTreeSet::from([format!("Group/{}", team["id"].as_str().unwrap())])
    );
    // no Provenance request ever reached Canvas
    let stats = sim.stats();
    assert!(
        stats["requests"]
            .as_object()
            .unwrap()
            .keys()
            .all(|k| !k.contains("Provenance")),
        "{stats:#}"
    );
}
