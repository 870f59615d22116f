//! Which patient searches a plan runs is derived from every rule it evaluates (issue 8,
//! item 12): a CareTeamAssignment whose inline rule reads consents must trigger the Consent
//! search even when no PatientGroup reads consents, or opted-out patients get a care team.
//! One test on the embedded file store (no server needed), one on the real FHIR server.

mod common;

use common::*;
use serde_json::{Value, json};

const PCP: (&str, &str) = ("453231000124104", "Primary care provider");

fn consent(pid: &str, status: &str) -> Value {
    json!({
        "resourceType": "Consent", "status": status,
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "urn:test:consents", "code": "A0001"}]}],
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTOUT"}]},
        "patient": {"reference": format!("Patient/{pid}")}
    })
}

/// A care-team role and an assignment selecting, by an inline rule, this test's patients
/// who have not opted out. No PatientGroup at all (so none reads consents).
fn assignment(npi: &str, system: &str) -> String {
    format!(
        "apiVersion: careplane.dev/v1\nkind: CareTeamRole\nmetadata:\n  name: pcp\nspec:\n  code: {{code: \"{}\", display: {}}}\n---\napiVersion: careplane.dev/v1\nkind: CareTeamAssignment\nmetadata:\n  name: panel\nspec:\n  practitioner: {{npi: \"{npi}\"}}\n  careTeamRole: pcp\n  patients:\n    rule:\n      all:\n        - identifier: {{system: \"{system}\"}}\n        - not:\n            consent: {{code: A0001, status: rejected}}\n",
        PCP.0, PCP.1
    )
}

fn ndjson(resources: &[Value]) -> String {
    resources.iter().map(|r| format!("{r}\n")).collect()
}

/// The care-team change of the plan: how many patients join.
fn added(plan: &Value) -> u64 {
    plan["effects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "care-team-assignment")
        .and_then(|e| e["adds"].as_u64())
        .unwrap_or(0)
}

#[test]
fn file_store_inline_consent_rule_leaves_opted_out_patients_off() {
    let dir = tempfile::tempdir().unwrap();
    let system = "urn:test:rule-searches";
    let patients: Vec<Value> = (0..4)
        .map(|i| {
            json!({"resourceType": "Patient", "id": format!("p{i}"), "active": true,
                        "identifier": [{"system": system, "value": format!("{i}")}]})
        })
        .collect();
    // p0 and p3 opted out; p1 consented; p2 has no consent on file
    let consents: Vec<Value> = [
        ("c0", "p0", "rejected"),
        ("c1", "p1", "active"),
        ("c3", "p3", "rejected"),
    ]
    .iter()
    .map(|(id, p, s)| {
        let mut c = consent(p, s);
        c["id"] = json!(id);
        c
    })
    .collect();
    let practitioner = json!({"resourceType": "Practitioner", "id": "dr", "active": true,
        "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567893"}]});
    write(
        dir.path(),
        &[
            (
                "careplane.yaml",
                "apiVersion: careplane.dev/v1\nkind: Project\nmetadata:\n  name: rule-searches\nspec:\n  targets:\n    local: {type: file, path: store}\n".to_owned(),
            ),
            ("care.yaml", assignment("1234567893", system)),
            ("store/Patient.ndjson", ndjson(&patients)),
            ("store/Consent.ndjson", ndjson(&consents)),
            ("store/Practitioner.ndjson", ndjson(&[practitioner])),
        ],
    );
    let out = careplane()
        .args(["plan", "--format", "json"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        added(&plan),
        2,
        "p1 and p2 join; p0 and p3 opted out and must not: {plan:#}"
    );
}

#[test]
fn fhir_inline_consent_rule_leaves_opted_out_patients_off() {
    let server = Server::new();
    let project = unique("rs");
    let staff = seed_staff(&server, &project, 1);
    let system = format!("urn:test:{project}");
    let mut ids = Vec::new();
    for i in 0..3 {
        let p = server.post(&json!({"resourceType": "Patient", "active": true,
            "identifier": [{"system": system, "value": format!("{i}")}]}));
        ids.push(p["id"].as_str().unwrap().to_owned());
    }
    // ids[0] opted out, ids[1] consented, ids[2] has no consent on file
    server.post(&consent(&ids[0], "rejected"));
    server.post(&consent(&ids[1], "active"));
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            (
                "careplane.yaml",
                format!(
                    "apiVersion: careplane.dev/v1\nkind: Project\nmetadata:\n  name: {project}\nspec: {{}}\n"
                ),
            ),
            ("care.yaml", assignment(&staff[0].npi, &system)),
        ],
    );
    let out = apply(dir.path(), &[]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut subjects: Vec<String> = server
        .owned("CareTeam", &project)
        .iter()
        .map(|t| t["subject"]["reference"].as_str().unwrap().to_owned())
        .collect();
    subjects.sort();
    let mut want = vec![format!("Patient/{}", ids[1]), format!("Patient/{}", ids[2])];
    want.sort();
    assert_eq!(
        subjects, want,
        "the opted-out patient must not be put on a care team"
    );
    careplane()
        .arg("plan")
        .arg(dir.path())
        .args(["--server", &fhir_url(), "--detailed-exitcode"])
        .assert()
        .code(0);
}
