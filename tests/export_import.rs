//! Bootstrapping: export what is live, plan it (nothing changes), and import objects that
//! careplane does not own yet without recreating them.

mod common;

use std::path::Path;

use common::canvas::{CLIENT_ID, CLIENT_SECRET, Sim, practitioner};
use common::*;
use serde_json::json;

fn export(dir: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    careplane()
        .arg("export")
        .arg(dir)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn export_then_plan_changes_nothing_on_a_fhir_server() {
    let server = Server::new();
    let project = unique("x");
    let staff = seed_staff(&server, &project, 4);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &org(&project, &staff));
    assert!(apply(dir.path(), &[]).status.success());

    let out = tempfile::tempdir().unwrap();
    let o = export(dir.path(), out.path(), &["--server", &fhir_url()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for f in [
        "careplane.yaml",
        "roles.yaml",
        "care-team-roles.yaml",
        "teams.yaml",
        "staff.yaml",
    ] {
        assert!(out.path().join(f).exists(), "{f} exported");
    }
    let teams = std::fs::read_to_string(out.path().join("teams.yaml")).unwrap();
    // the shared test server holds other tests' teams too (not managed by this project,
    // exported for import): keep this project's
    let ours: Vec<&str> = teams
        .split("---\n")
        .filter(|d| d.contains(&project))
        .collect();
    assert_eq!(ours.len(), 2, "{teams}");
    assert!(
        ours.iter().all(|d| !d.contains("careplane import")),
        "both are managed already"
    );
    let teams = ours.join("---\n");
    std::fs::write(out.path().join("teams.yaml"), &teams).unwrap();
    assert!(
        teams.contains(&format!("npi: \"{}\"", staff[0].npi)),
        "members by NPI: {teams}"
    );
    careplane()
        .arg("validate")
        .arg(out.path())
        .assert()
        .success();
    let plan = plan_json(out.path(), &[]);
    assert_eq!(plan["summary"]["create"], 0, "{plan:#}");
    assert_eq!(plan["summary"]["update"], 0, "{plan:#}");
    assert_eq!(plan["summary"]["no_op"], 6);
    // never overwrites
    let again = export(dir.path(), out.path(), &["--server", &fhir_url()]);
    assert_eq!(again.status.code(), Some(1));
}

#[test]
fn import_takes_over_existing_teams_without_recreating_them() {
    let server = Server::new();
    let project = unique("imp");
    let staff = seed_staff(&server, &project, 3);
    // an organisation that ran without careplane: a team made by hand
    let legacy = server.post(&json!({
        "resourceType": "Group", "type": "practitioner", "actual": true, "name": format!("Front Desk {project}"),
        "member": [{"entity": {"reference": format!("Practitioner/{}", staff[0].id)}}],
        "extension": [{"url": "https://example.org/fhir/pager", "valueString": "x1"}]
    }));
    let empty = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let o = export(
        empty.path(),
        out.path(),
        &["--server", &fhir_url(), "--project", &project],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let teams = std::fs::read_to_string(out.path().join("teams.yaml")).unwrap();
    assert!(
        teams.contains("careplane import"),
        "marked as not managed yet: {teams}"
    );
    // the other tests' teams are on the shared server too: keep only ours
    let ours: Vec<&str> = teams
        .split("---\n")
        .filter(|d| d.contains(&format!("Front Desk {project}")))
        .collect();
    assert_eq!(ours.len(), 1);
    std::fs::write(out.path().join("teams.yaml"), ours[0]).unwrap();

    // the exported project file names the server as target 'server' (--server with it is refused)
    // plain plan stops: a same-named team careplane does not own
    careplane()
        .arg("plan")
        .arg(out.path())
        .args(["--target", "server"])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("careplane import"));
    // plan --adopt shows it as adopt
    let o = careplane()
        .arg("plan")
        .arg(out.path())
        .args(["--target", "server", "--adopt", "--format", "json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(plan["summary"]["adopt"], 1, "{plan:#}");
    assert_eq!(plan["changes"][0]["target"]["id"], legacy["id"]);
    // import takes it over
    let o = careplane()
        .arg("import")
        .arg(out.path())
        .args(["--target", "server", "--auto-approve"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let now = server.get(&format!("Group/{}", legacy["id"].as_str().unwrap()));
    assert_eq!(now["meta"]["tag"][0]["code"], project.as_str());
    assert_eq!(
        now["extension"], legacy["extension"],
        "nothing else changed"
    );
    assert_eq!(now["member"], legacy["member"]);
    // managed from now on: nothing to do, and no second Group with that name
    careplane()
        .arg("plan")
        .arg(out.path())
        .args(["--target", "server", "--detailed-exitcode"])
        .assert()
        .code(0);
    let same_name = server
        .search("Group?type=practitioner&_count=1000")
        .into_iter()
        .filter(|g| g["name"] == format!("Front Desk {project}"))
        .count();
    assert_eq!(same_name, 1);
}

#[test]
fn export_then_plan_changes_nothing_on_canvas() {
    let sim = Sim::start();
    let mut staff: Vec<serde_json::Value> = (0..4)
        .map(|i| practitioner(i, if i < 2 { &["MD"] } else { &["RN", "MA"] }))
        .collect();
    staff[3]["active"] = json!(false);
    sim.seed(json!({"resources": staff}));
    sim.seed(json!({"resources": [{"resourceType": "Group", "type": "practitioner", "actual": true, "name": "Care Coordinators",
        "characteristic": [{"code": {"text": "responsibility"}, "valueCodeableConcept": {"text": "COORDINATE_REFERRALS_FOR_PATIENT"}, "exclude": false}],
        "member": [{"entity": {"reference": format!("Practitioner/{}", common::canvas::practitioner_id(2))}}]}]}));
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &[("careplane.yaml", sim.project_file(""))]);
    let out = tempfile::tempdir().unwrap();
    let o = careplane()
        .arg("export")
        .arg(dir.path())
        .arg("--out")
        .arg(out.path())
        .env("SIM_ID", CLIENT_ID)
        .env("SIM_SECRET", CLIENT_SECRET)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let roles = std::fs::read_to_string(out.path().join("roles.yaml")).unwrap();
    assert!(roles.contains("fill them in from Settings"), "{roles}");
    let plan = careplane()
        .arg("plan")
        .arg(out.path())
        .args(["--detailed-exitcode", "--format", "json"])
        .env("SIM_ID", CLIENT_ID)
        .env("SIM_SECRET", CLIENT_SECRET)
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(plan.status.code(), Some(0), "{json:#}");
    assert_eq!(
        json["summary"]["no_op"],
        1 + 4 + 3,
        "team, 4 role assignments (one inactive), 3 roles verified: {json:#}"
    );
}
