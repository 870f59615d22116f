//! Patient-group rules on the real FHIR server (and the Canvas simulator): a few hundred
//! synthetic patients, consents flipped by hand, both membership modes, the blast-radius
//! guard, and no patient ids in any shareable output.

mod common;

use std::path::Path;

use common::canvas::{CLIENT_ID, CLIENT_SECRET, Sim};
use common::*;
use serde_json::{Value, json};

const KEY: &str = "test-pseudonym-key";

struct World {
    project: String,
    server: Server,
    dir: tempfile::TempDir,
    patients: Vec<String>,
    consents: Vec<Value>,
}

fn consent(pid: &str, status: &str) -> Value {
    json!({
        "resourceType": "Consent", "status": status,
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "urn:test:consents", "code": "A0001"}]}],
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTOUT"}]},
        "patient": {"reference": format!("Patient/{pid}")}
    })
}

/// `n` patients marked with this test's identifier system; every tenth has opted out.
fn world(n: usize, mode: &str) -> World {
    let server = Server::new();
    let project = unique("pg");
    let system = format!("urn:test:{project}");
    let mut patients = Vec::new();
    let mut consents = Vec::new();
    for i in 0..n {
        let p = server.post(&json!({"resourceType": "Patient", "active": true, "gender": if i % 2 == 0 { "female" } else { "male" },
            "birthDate": "1960-01-01", "identifier": [{"system": system, "value": format!("{i}")}]}));
        let id = p["id"].as_str().unwrap().to_owned();
        consents.push(server.post(&consent(
            &id,
            if i % 10 == 0 { "rejected" } else { "active" },
        )));
        patients.push(id);
    }
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
            (
                "groups.yaml",
                format!(
                    "apiVersion: careplane.dev/v1\nkind: PatientGroup\nmetadata:\n  name: care-management\nspec:\n  displayName: Care management {project}\n  mode: {mode}\n  rule:\n    all:\n      - identifier: {{system: \"{system}\"}}\n      - not:\n          consent: {{code: A0001, status: rejected}}\n"
                ),
            ),
        ],
    );
    World {
        project,
        server,
        dir,
        patients,
        consents,
    }
}

fn run(dir: &Path, args: &[&str]) -> std::process::Output {
    careplane()
        .args(args)
        .arg(dir)
        .args(["--server", &fhir_url()])
        .env("CAREPLANE_PSEUDONYM_KEY", KEY)
        .output()
        .unwrap()
}

fn plan(dir: &Path) -> Value {
    let out = run(dir, &["plan", "--format", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A group's membership change: on its create, the change's delta; afterwards (members
/// are an effect of the rule, previewed per rule) the effects preview's counts.
fn membership(plan: &Value) -> Value {
    plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["fields"].as_array().unwrap().iter())
        .find(|f| f["membership"].is_object())
        .map(|f| f["membership"].clone())
        .or_else(|| {
            plan["effects"].as_array().unwrap().first().map(|e| {
                json!({"added": e["adds"], "removed": e["removes"],
                       "sample_added": e["sample_added"], "sample_removed": e["sample_removed"]})
            })
        })
        .unwrap_or(Value::Null)
}

fn flip(w: &World, i: usize, status: &str) {
    let mut c = w.consents[i].clone();
    c["status"] = json!(status);
    w.server.put(&c);
}

#[test]
fn apply_then_plan_is_empty_and_one_flipped_consent_removes_exactly_that_patient() {
    let w = world(300, "authoritative");
    let p = plan(w.dir.path());
    let m = membership(&p);
    assert_eq!(m["after"], 270);
    assert_eq!(m["added"], 270);
    // shareable outputs carry counts and pseudonyms, never ids
    let text = serde_json::to_string(&p).unwrap();
    assert!(
        w.patients.iter().all(|id| !text.contains(id.as_str())),
        "no patient id in the plan"
    );
    assert_eq!(m["sample_added"].as_array().unwrap().len(), 5);
    assert!(m["sample_added"][0].as_str().unwrap().starts_with("pt-"));
    let md =
        String::from_utf8(run(w.dir.path(), &["plan", "--format", "markdown"]).stdout).unwrap();
    assert!(
        w.patients.iter().all(|id| !md.contains(id.as_str())),
        "no patient id in the PR comment"
    );
    assert!(md.contains("270 members: +270"), "{md}");

    let out = run(w.dir.path(), &["apply", "--auto-approve"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        run(w.dir.path(), &["plan", "--detailed-exitcode"])
            .status
            .code(),
        Some(0)
    );

    // patient 1 opts out: exactly one removal, and the same pseudonym every run
    flip(&w, 1, "rejected");
    let p = plan(w.dir.path());
    let m = membership(&p);
    assert_eq!(
        (m["removed"].as_u64(), m["added"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(
        m["sample_removed"],
        membership(&plan(w.dir.path()))["sample_removed"]
    );
    // --show-members prints ids on a terminal only: piped (as here) it refuses
    let shown = run(w.dir.path(), &["plan", "--show-members"]);
    assert_eq!(shown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&shown.stderr).contains("only to a terminal"));
    assert!(!String::from_utf8_lossy(&shown.stdout).contains(&w.patients[1]));
    assert!(
        run(w.dir.path(), &["apply", "--auto-approve"])
            .status
            .success()
    );
    let groups = w.server.search("Group?type=person&_count=1000");
    let g = groups
        .iter()
        .find(|g| g["name"] == format!("Care management {}", w.project))
        .unwrap();
    let members: Vec<&str> = g["member"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["entity"]["reference"].as_str().unwrap())
        .collect();
    assert_eq!(members.len(), 269);
    assert!(!members.contains(&format!("Patient/{}", w.patients[1]).as_str()));
}

#[test]
fn additive_mode_never_removes() {
    let w = world(60, "additive");
    assert!(
        run(w.dir.path(), &["apply", "--auto-approve"])
            .status
            .success()
    );
    flip(&w, 1, "rejected");
    flip(&w, 10, "active"); // patient 10 opted back in: added
    let m = membership(&plan(w.dir.path()));
    assert_eq!(
        (m["removed"].as_u64(), m["added"].as_u64()),
        (Some(0), Some(1))
    );
}

#[test]
fn the_blast_radius_guard_refuses_mass_removals() {
    let w = world(50, "authoritative");
    assert!(
        run(w.dir.path(), &["apply", "--auto-approve"])
            .status
            .success()
    );
    for i in (1..20).filter(|i| i % 10 != 0).take(15) {
        flip(&w, i, "rejected"); // 15 more of 45 members leave: 33% > 20%
    }
    let text = String::from_utf8(run(w.dir.path(), &["plan"]).stdout).unwrap();
    assert!(
        text.contains("apply refuses without --allow-mass-removal"),
        "{text}"
    );
    let out = run(w.dir.path(), &["apply", "--auto-approve"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("would lose 15 of its 45 members (33%)"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        run(
            w.dir.path(),
            &["apply", "--auto-approve", "--allow-mass-removal"]
        )
        .status
        .success()
    );
    assert_eq!(membership(&plan(w.dir.path())), Value::Null, "converged");
}

#[test]
fn a_saved_plan_applies_the_members_the_rule_gives_now() {
    let w = world(40, "authoritative");
    let file = w.dir.path().join("plan.json");
    assert!(
        run(w.dir.path(), &["plan", "--out", file.to_str().unwrap()])
            .status
            .success()
    );
    let saved = std::fs::read_to_string(&file).unwrap();
    assert!(
        w.patients.iter().all(|id| !saved.contains(id.as_str())),
        "no patient id in the plan file"
    );
    // unchanged: the saved plan applies (members recomputed, as reviewed)
    let out = run(w.dir.path(), &["apply", "--plan", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // a new plan, then a consent changes before apply: members are an effect of the
    // rule, recomputed at apply (issue 10): the plan applies, with the members of now
    flip(&w, 1, "rejected");
    std::fs::remove_file(&file).unwrap();
    assert!(
        run(w.dir.path(), &["plan", "--out", file.to_str().unwrap()])
            .status
            .success()
    );
    flip(&w, 2, "rejected");
    let out = run(w.dir.path(), &["apply", "--plan", file.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(
            "patient group 'care-management': reviewed +0 -1, now +0 -2 patient(s): applied"
        ),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        run(w.dir.path(), &["plan", "--detailed-exitcode"])
            .status
            .code(),
        Some(0),
        "the members match the rule now"
    );
}

#[test]
fn patient_groups_on_canvas() {
    let sim = Sim::start();
    let patients: Vec<Value> = (0..300)
        .map(|i| json!({"resourceType": "Patient", "id": format!("{:032x}", 0xfeed_0000_u64 + i), "active": i % 3 != 0,
                        "name": [{"family": "P", "given": ["T"]}], "birthDate": "1980-01-01"}))
        .collect();
    sim.seed(json!({"resources": patients}));
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            ("careplane.yaml", sim.project_file("")),
            ("groups.yaml", "apiVersion: careplane.dev/v1\nkind: PatientGroup\nmetadata:\n  name: active-patients\nspec:\n  mode: authoritative\n  rule:\n    active: true\n".into()),
        ],
    );
    let run = |args: &[&str]| {
        careplane()
            .args(args)
            .arg(dir.path())
            .env("SIM_ID", CLIENT_ID)
            .env("SIM_SECRET", CLIENT_SECRET)
            .output()
            .unwrap()
    };
    let out = run(&["apply", "--auto-approve"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let groups = sim.search("Group?type=person");
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0]["name"], "active-patients");
    assert_eq!(groups[0]["member"].as_array().unwrap().len(), 200);
    assert_eq!(run(&["plan", "--detailed-exitcode"]).status.code(), Some(0));
}

#[test]
fn care_team_participation_selects_patients() {
    let server = Server::new();
    let project = unique("ct");
    let staff = seed_staff(&server, &project, 2);
    let system = format!("urn:test:{project}");
    let mut ids = Vec::new();
    for i in 0..6 {
        let p = server.post(&json!({"resourceType": "Patient", "identifier": [{"system": system, "value": format!("{i}")}]}));
        ids.push(p["id"].as_str().unwrap().to_owned());
    }
    for (i, pid) in ids.iter().enumerate().take(3) {
        server.post(&json!({"resourceType": "CareTeam", "status": if i == 2 { "inactive" } else { "active" },
            "subject": {"reference": format!("Patient/{pid}")},
            "participant": [{"role": [{"coding": [{"system": "http://snomed.info/sct", "code": "453231000124104", "display": "Primary care provider"}]}],
                             "member": {"reference": format!("Practitioner/{}", staff[0].id)}}]}));
    }
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &[
        ("careplane.yaml", format!("apiVersion: careplane.dev/v1\nkind: Project\nmetadata:\n  name: {project}\nspec: {{}}\n")),
        ("roles.yaml", "apiVersion: careplane.dev/v1\nkind: CareTeamRole\nmetadata:\n  name: pcp\nspec:\n  code: {code: \"453231000124104\", display: Primary care provider}\n".into()),
        ("groups.yaml", format!("apiVersion: careplane.dev/v1\nkind: PatientGroup\nmetadata:\n  name: panel\nspec:\n  displayName: Panel {project}\n  rule:\n    careTeam:\n      practitioner: {{npi: \"{}\"}}\n      role: pcp\n", staff[0].npi)),
    ]);
    let m = membership(&plan(dir.path()));
    assert_eq!(m["after"], 2, "active care teams only: {m}");
}
