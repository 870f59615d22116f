//! End to end against the real FHIR R4 server that `tests/run.sh` starts: the binary,
//! over HTTP, no mocks.

mod common;

use common::*;
use serde_json::{Value, json};

fn setup(n_staff: usize) -> (Server, tempfile::TempDir, String, Vec<Staff>) {
    let server = Server::new();
    let project = unique("p");
    let staff = seed_staff(&server, &project, n_staff);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &org(&project, &staff));
    (server, dir, project, staff)
}

#[test]
fn plan_on_an_empty_server_creates_everything_with_reasons() {
    let (_server, dir, _project, staff) = setup(3);
    let plan = plan_json(dir.path(), &[]);
    assert_eq!(plan["format"], "careplane-plan");
    assert_eq!(plan["format_version"], 3);
    let creates = changes(&plan, "create");
    // role catalog, care-team-role catalog, 2 teams, 2 assignments
    assert_eq!(creates.len(), 6, "{plan:#}");
    assert_eq!(plan["summary"]["create"], 6);
    let team = creates
        .iter()
        .find(|c| c["target"]["name"] == "care-coordinators")
        .unwrap();
    assert_eq!(team["target"]["resource_type"], "Group");
    assert_eq!(team["reason"]["source"]["file"], "teams.yaml");
    assert_eq!(team["reason"]["source"]["line"], 5);
    assert!(team["precondition"]["absent"].as_bool().unwrap());
    let members = team["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["field"] == "members")
        .unwrap();
    let mut want = vec![
        format!("Practitioner/{}", staff[0].id),
        format!("Practitioner/{}", staff[1].id),
    ];
    want.sort();
    assert_eq!(members["after"], json!(want));
    assert_eq!(members["before"], Value::Null);

    // --detailed-exitcode: 2 = changes present
    careplane()
        .arg("plan")
        .arg(dir.path())
        .args(["--server", &fhir_url(), "--detailed-exitcode"])
        .assert()
        .code(2)
        .stdout(predicates::str::contains("6 to create"));
}

#[test]
fn apply_is_idempotent_and_converges_to_an_empty_plan() {
    let (server, dir, project, staff) = setup(3);
    let out = apply(dir.path(), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Apply complete. 6 change(s) applied"));

    // what landed on the server
    let groups = server.owned("Group", &project);
    assert_eq!(groups.len(), 2);
    let lab = groups
        .iter()
        .find(|g| g["name"] == format!("Lab {project}"))
        .unwrap();
    assert_eq!(lab["type"], "practitioner");
    assert_eq!(lab["actual"], true);
    assert_eq!(
        lab["member"][0]["entity"]["reference"],
        format!("Practitioner/{}", staff[2].id)
    );
    assert_eq!(lab["characteristic"].as_array().unwrap().len(), 2);
    let roles = server.owned("PractitionerRole", &project);
    assert_eq!(roles.len(), 2);
    let cs = server.owned("CodeSystem", &project);
    assert_eq!(cs.len(), 2);

    // second apply: nothing to do
    let again = apply(dir.path(), &[]);
    assert!(again.status.success());
    let text = String::from_utf8_lossy(&again.stdout);
    assert!(text.contains("No changes."), "{text}");
    // plan afterwards: exit 0 with --detailed-exitcode, versions untouched
    careplane()
        .arg("plan")
        .arg(dir.path())
        .args(["--server", &fhir_url(), "--detailed-exitcode"])
        .assert()
        .code(0);
    let lab_after = server.get(&format!("Group/{}", lab["id"].as_str().unwrap()));
    assert_eq!(lab_after["meta"]["versionId"], lab["meta"]["versionId"]);
}

#[test]
fn a_hand_edit_on_the_server_shows_as_exactly_that_drift() {
    let (server, dir, project, _staff) = setup(3);
    assert!(apply(dir.path(), &[]).status.success());
    let mut lab = server
        .owned("Group", &project)
        .into_iter()
        .find(|g| g["identifier"][0]["value"] == "team/lab")
        .unwrap();
    lab["name"] = json!("Lab (renamed by hand)");
    server.put(&lab);

    let plan = plan_json(dir.path(), &[]);
    let updates = changes(&plan, "update");
    assert_eq!(updates.len(), 1, "{plan:#}");
    let u = updates[0];
    assert_eq!(u["target"]["name"], "lab");
    assert_eq!(u["target"]["id"], lab["id"]);
    let fields = u["fields"].as_array().unwrap();
    assert_eq!(fields.len(), 1, "only the edited field: {fields:#?}");
    assert_eq!(fields[0]["field"], "name");
    assert_eq!(fields[0]["before"], "Lab (renamed by hand)");
    assert_eq!(fields[0]["after"], format!("Lab {project}"));
    assert_eq!(u["reason"]["source"]["file"], "teams.yaml");
    assert_eq!(u["reason"]["source"]["line"], 17);
    assert_eq!(plan["summary"]["no_op"], 5);

    // human output names the field and the manifest line
    careplane()
        .arg("plan")
        .arg(dir.path())
        .args(["--server", &fhir_url()])
        .assert()
        .success()
        .stdout(predicates::str::contains(
            "name: \"Lab (renamed by hand)\" → \"Lab",
        ))
        .stdout(predicates::str::contains("because teams.yaml:17:"));

    // apply repairs it; everything careplane does not manage is left as it was
    let mut with_extra = server.get(&format!("Group/{}", lab["id"].as_str().unwrap()));
    with_extra["extension"] =
        json!([{"url": "https://example.org/fhir/pager", "valueString": "x1234"}]);
    server.put(&with_extra);
    assert!(apply(dir.path(), &[]).status.success());
    let repaired = server.get(&format!("Group/{}", lab["id"].as_str().unwrap()));
    assert_eq!(repaired["name"], format!("Lab {project}"));
    assert_eq!(repaired["extension"], with_extra["extension"]);
}

#[test]
fn a_stale_saved_plan_is_refused_and_the_edit_survives() {
    let (server, dir, project, staff) = setup(4);
    assert!(apply(dir.path(), &[]).status.success());
    // change the manifest so the plan has an update for the lab team
    let teams = std::fs::read_to_string(dir.path().join("teams.yaml")).unwrap();
    let teams = teams.replace(
        &format!("    - id: {}\n", staff[2].id),
        &format!("    - id: {}\n    - id: {}\n", staff[2].id, staff[3].id),
    );
    std::fs::write(dir.path().join("teams.yaml"), teams).unwrap();
    let plan_file = dir.path().join("plan.json");
    save_plan(dir.path(), &plan_file);

    // someone edits the team on the server after the plan was made
    let mut lab = server
        .owned("Group", &project)
        .into_iter()
        .find(|g| g["identifier"][0]["value"] == "team/lab")
        .unwrap();
    lab["name"] = json!("Edited after planning");
    server.put(&lab);

    apply_saved(dir.path(), &plan_file)
        .code(1)
        .stdout(predicates::str::contains(
            "changed on the server after the plan was made",
        ));
    let now = server.get(&format!("Group/{}", lab["id"].as_str().unwrap()));
    assert_eq!(
        now["name"], "Edited after planning",
        "the edit was not clobbered"
    );
    assert_eq!(
        now["member"].as_array().unwrap().len(),
        1,
        "the stale change was not applied"
    );

    // a fresh plan applies cleanly
    assert!(apply(dir.path(), &[]).status.success());
    let now = server.get(&format!("Group/{}", lab["id"].as_str().unwrap()));
    assert_eq!(now["member"].as_array().unwrap().len(), 2);
}

#[test]
fn a_saved_plan_is_refused_for_other_manifests() {
    let (_server, dir, _project, _staff) = setup(3);
    let plan_file = dir.path().join("plan.json");
    save_plan(dir.path(), &plan_file);
    let roles = std::fs::read_to_string(dir.path().join("roles.yaml")).unwrap();
    std::fs::write(
        dir.path().join("roles.yaml"),
        roles.replace("display: Physician", "display: Doctor"),
    )
    .unwrap();
    apply_saved(dir.path(), &plan_file)
        .code(1)
        .stderr(predicates::str::contains("made from other manifests"));
}

#[test]
fn prune_is_off_by_default() {
    let (server, dir, project, _staff) = setup(3);
    assert!(apply(dir.path(), &[]).status.success());
    // drop the lab team from the manifests
    let teams = std::fs::read_to_string(dir.path().join("teams.yaml")).unwrap();
    let cut = teams
        .find("---\napiVersion: careplane.dev/v1\nkind: Team\nmetadata:\n  name: lab")
        .unwrap();
    std::fs::write(dir.path().join("teams.yaml"), &teams[..cut]).unwrap();

    let plan = plan_json(dir.path(), &[]);
    assert!(changes(&plan, "delete").is_empty());
    assert_eq!(plan["orphans"].as_array().unwrap().len(), 1);
    assert_eq!(plan["orphans"][0]["target"]["name"], "lab");
    let out = apply(dir.path(), &[]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--prune"));
    assert_eq!(
        server.owned("Group", &project).len(),
        2,
        "kept without --prune"
    );

    let plan = plan_json(dir.path(), &["--prune"]);
    let deletes = changes(&plan, "delete");
    assert_eq!(deletes.len(), 1);
    assert_eq!(deletes[0]["target"]["name"], "lab");
    assert!(apply(dir.path(), &["--prune"]).status.success());
    let left = server.owned("Group", &project);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["identifier"][0]["value"], "team/care-coordinators");
}

#[test]
fn resources_careplane_does_not_own_are_left_untouched() {
    let (server, dir, project, staff) = setup(3);
    let foreign = server.post(&json!({
        "resourceType": "Group", "type": "practitioner", "actual": true,
        "name": format!("Night shift {project}"),
        "member": [{"entity": {"reference": format!("Practitioner/{}", staff[0].id)}}]
    }));
    // looks like ours (same identifier scheme) but belongs to another project
    let other = server.post(&json!({
        "resourceType": "Group", "type": "practitioner", "actual": true, "name": format!("Other {project}"),
        "meta": {"tag": [{"system": "https://careplane.dev/project", "code": format!("{project}-other")}]},
        "identifier": [{"system": format!("https://careplane.dev/id/{project}"), "value": "team/lab"}]
    }));
    assert!(apply(dir.path(), &["--prune"]).status.success());
    assert!(apply(dir.path(), &["--prune"]).status.success());
    for g in [&foreign, &other] {
        let now = server.get(&format!("Group/{}", g["id"].as_str().unwrap()));
        assert_eq!(
            now["meta"]["versionId"], g["meta"]["versionId"],
            "{} untouched",
            g["name"]
        );
    }
}

#[test]
fn a_same_named_team_careplane_does_not_own_stops_the_plan() {
    let (server, dir, project, _staff) = setup(3);
    let existing = server.post(&json!({
        "resourceType": "Group", "type": "practitioner", "actual": true, "name": format!("Lab {project}")
    }));
    careplane()
        .arg("plan")
        .arg(dir.path())
        .args(["--server", &fhir_url()])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("teams.yaml:17:"))
        .stderr(predicates::str::contains(format!(
            "Group/{}",
            existing["id"].as_str().unwrap()
        )))
        .stderr(predicates::str::contains("not managed by careplane"));
}

#[test]
fn an_unknown_staff_member_is_a_plan_error_at_its_manifest_line_and_nothing_is_written() {
    let (server, dir, project, _staff) = setup(3);
    let teams = std::fs::read_to_string(dir.path().join("teams.yaml")).unwrap();
    std::fs::write(
        dir.path().join("teams.yaml"),
        teams.replace("    - email: ", "    - email: nobody."),
    )
    .unwrap();
    careplane()
        .arg("apply")
        .arg(dir.path())
        .args(["--server", &fhir_url(), "--auto-approve"])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("teams.yaml:12:7"))
        .stderr(predicates::str::contains(
            "no Practitioner on the target has email nobody.",
        ));
    assert!(server.owned("Group", &project).is_empty());
    assert!(server.owned("CodeSystem", &project).is_empty());
}

#[test]
fn apply_without_a_terminal_needs_auto_approve() {
    let (server, dir, project, _staff) = setup(3);
    careplane()
        .arg("apply")
        .arg(dir.path())
        .args(["--server", &fhir_url()])
        .write_stdin("")
        .assert()
        .code(1)
        .stderr(predicates::str::contains("--auto-approve"));
    assert!(server.owned("Group", &project).is_empty());
}

#[test]
fn the_request_log_names_requests_but_never_search_values() {
    let (_server, dir, _project, staff) = setup(3);
    let out = careplane()
        .arg("plan")
        .arg(dir.path())
        .args(["--server", &fhir_url()])
        .env("CAREPLANE_LOG", "requests")
        .output()
        .unwrap();
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains(
            "careplane: Practitioner search by _elements (GET Practitioner) attempt 1 → HTTP 200"
        ),
        "{log}"
    );
    assert!(
        log.contains("careplane: CodeSystem search by _tag"),
        "{log}"
    );
    assert!(
        !log.contains("careplane.dev/project|"),
        "no search values: {log}"
    );
    assert!(!log.contains(&staff[0].npi), "{log}");
}

#[test]
fn variables_fill_manifests_against_the_real_server() {
    let (server, dir, project, staff) = setup(3);
    let teams = std::fs::read_to_string(dir.path().join("teams.yaml")).unwrap();
    std::fs::write(
        dir.path().join("teams.yaml"),
        teams.replace(
            &format!("    - id: {}\n", staff[2].id),
            "    - id: ${LAB_LEAD}\n",
        ),
    )
    .unwrap();
    careplane()
        .arg("plan")
        .arg(dir.path())
        .args(["--server", &fhir_url()])
        .assert()
        .code(1)
        .stderr(predicates::str::contains(
            "variable ${LAB_LEAD} is not defined",
        ));
    assert!(
        apply(dir.path(), &["--var", &format!("LAB_LEAD={}", staff[1].id)])
            .status
            .success()
    );
    let lab = server
        .owned("Group", &project)
        .into_iter()
        .find(|g| g["identifier"][0]["value"] == "team/lab")
        .unwrap();
    assert_eq!(
        lab["member"][0]["entity"]["reference"],
        format!("Practitioner/{}", staff[1].id)
    );
}
