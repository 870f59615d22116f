//! The Canvas dialect against the Canvas API simulator (tests/canvas-simulator: a
//! stand-in written from canvas-api.md, since no Canvas server is available here). Each
//! documented quirk has a test that careplane handles it, and one that shows what a naive
//! client would have lost.

mod common;

use std::path::Path;

use common::canvas::{CLIENT_ID, CLIENT_SECRET, Sim, practitioner, practitioner_id};
use common::{careplane, write};
use reqwest::Method;
use serde_json::{Value, json};

fn manifests(sim: &Sim, teams: &str, extra_target: &str) -> Vec<(&'static str, String)> {
    vec![
        ("careplane.yaml", sim.project_file(extra_target)),
        (
            "roles.yaml",
            "apiVersion: careplane.dev/v1\nkind: Role\nmetadata:\n  name: physician\nspec:\n  code: MD\n  display: Physician\n  domain: clinical\n  type: provider\n---\napiVersion: careplane.dev/v1\nkind: Role\nmetadata:\n  name: nurse\nspec:\n  code: RN\n  display: Registered nurse\n  domain: clinical\n---\napiVersion: careplane.dev/v1\nkind: Role\nmetadata:\n  name: coordinator\nspec:\n  code: CC\n  display: Care coordinator\n  domain: hybrid\n---\napiVersion: careplane.dev/v1\nkind: CareTeamRole\nmetadata:\n  name: pcp\nspec:\n  code:\n    code: \"453231000124104\"\n    display: Primary care provider\n".into(),
        ),
        ("teams.yaml", teams.to_owned()),
        (
            "staff.yaml",
            format!(
                "apiVersion: careplane.dev/v1\nkind: RoleAssignment\nmetadata:\n  name: dr-zero\nspec:\n  practitioner:\n    npi: \"1000000000\"\n  roles: [physician]\n---\napiVersion: careplane.dev/v1\nkind: RoleAssignment\nmetadata:\n  name: nurse-one\nspec:\n  practitioner:\n    id: {}\n  roles: [nurse, coordinator]\n",
                practitioner_id(1)
            ),
        ),
    ]
}

fn team(name: &str, display: &str, responsibilities: &[&str], members: &[usize]) -> String {
    let members: String = members
        .iter()
        .map(|i| format!("    - email: staff{i}@canvas.example.org\n"))
        .collect();
    format!(
        "apiVersion: careplane.dev/v1\nkind: Team\nmetadata:\n  name: {name}\nspec:\n  displayName: {display}\n  responsibilities: [{}]\n  members:{}\n",
        responsibilities.join(", "),
        if members.is_empty() {
            " []\n".to_owned()
        } else {
            format!("\n{members}")
        }
    )
}

const TWO_TEAMS: &[(&str, &str, &[&str], &[usize])] = &[
    (
        "coordinators",
        "Care Coordinators",
        &[
            "COORDINATE_REFERRALS_FOR_PATIENT",
            "POPULATION_HEALTH_CAMPAIGN_OUTREACH",
        ],
        &[1, 2],
    ),
    ("lab", "Lab Team", &["COLLECT_SPECIMENS_FROM_PATIENT"], &[3]),
];

fn teams_yaml(teams: &[(&str, &str, &[&str], &[usize])]) -> String {
    teams
        .iter()
        .map(|(n, d, r, m)| team(n, d, r, m))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Six staff; staff 0 already holds MA, staff 5 is inactive and not schedulable.
fn seed(sim: &Sim) {
    let mut staff: Vec<Value> = (0..6)
        .map(|i| practitioner(i, if i == 0 { &["MA"] } else { &[] }))
        .collect();
    staff[5]["active"] = json!(false);
    sim.seed(json!({
        "resources": staff,
        "nonSchedulable": [practitioner_id(5)],
        "roles": ["MD", "RN", "MA", "CC"],
        "careTeamRoles": [{"system": "http://snomed.info/sct", "code": "453231000124104", "display": "Primary care provider"}]
    }));
}

fn run(dir: &Path, args: &[&str]) -> std::process::Output {
    careplane()
        .args(args)
        .arg(dir)
        .env("SIM_ID", CLIENT_ID)
        .env("SIM_SECRET", CLIENT_SECRET)
        .output()
        .unwrap()
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn setup(teams: &str, extra: &str) -> (Sim, tempfile::TempDir) {
    let sim = Sim::start();
    seed(&sim);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &manifests(&sim, teams, extra));
    (sim, dir)
}

#[test]
fn plan_and_apply_teams_and_role_assignments_then_nothing_to_do() {
    let (sim, dir) = setup(&teams_yaml(TWO_TEAMS), "");
    let out = run(dir.path(), &["plan", "--format", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["target"]["dialect"], "canvas");
    let by = |action: &str, kind: &str| {
        plan["changes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["action"] == action && c["target"]["kind"] == kind)
            .count()
    };
    assert_eq!(by("create", "team"), 2);
    assert_eq!(by("update", "role-assignment"), 2);
    // admin-only objects: checklist, never API writes
    assert_eq!(
        by("manual", "role"),
        3,
        "MD, RN, CC are not held by anyone yet"
    );
    assert_eq!(by("manual", "care-team-role"), 1);
    let caps = plan["capabilities"].as_array().unwrap();
    assert!(
        caps.iter().all(|c| c["delete"] == false),
        "Canvas has no DELETE"
    );

    let out = run(dir.path(), &["apply", "--auto-approve"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("[ ] create role MD 'Physician' in Settings → Practice: Roles"),
        "{text}"
    );
    assert!(text.contains("[ ] create care-team role 453231000124104 'Primary care provider' in Settings → Care Team Roles"), "{text}");
    assert!(
        text.contains("note: needs role MD ('physician'), which the target does not show yet"),
        "{text}"
    );

    // teams as Canvas documents them (canvas-api.md §2)
    let teams = sim.teams();
    let coord = teams
        .iter()
        .find(|g| g["name"] == "Care Coordinators")
        .unwrap();
    assert_eq!(coord["actual"], true);
    let resp: Vec<&str> = coord["characteristic"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert_eq!(c["code"]["text"], "responsibility");
            assert!(
                c["valueCodeableConcept"].get("coding").is_none(),
                "plain text, no system"
            );
            c["valueCodeableConcept"]["text"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        resp,
        [
            "COORDINATE_REFERRALS_FOR_PATIENT",
            "POPULATION_HEALTH_CAMPAIGN_OUTREACH"
        ]
    );
    assert_eq!(coord["member"].as_array().unwrap().len(), 2);
    // roles on the Practitioner (§5)
    let p0 = sim.stored("Practitioner", &practitioner_id(0));
    let roles: Vec<&str> = p0["extension"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["url"] == "http://schemas.canvasmedical.com/fhir/extensions/roles")
        .flat_map(|e| {
            e["extension"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["valueCoding"]["code"].as_str().unwrap())
        })
        .collect();
    assert_eq!(roles, ["MD"]);

    // converged: exit 0 although the checklist still lists what careplane cannot check
    let out = run(dir.path(), &["plan", "--detailed-exitcode"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains(
            "[x] role 'physician': seen on the target: role code MD is held by 1 staff member(s)"
        ),
        "{text}"
    );
    assert!(
        text.contains("[ ] create care-team role"),
        "still unverifiable: {text}"
    );
    // never a DELETE, one token per run
    let stats = sim.stats();
    assert!(
        stats["requests"]
            .as_object()
            .unwrap()
            .keys()
            .all(|k| !k.starts_with("DELETE")),
        "{stats}"
    );
}

#[test]
fn a_practitioner_role_update_changes_nothing_else() {
    let (sim, dir) = setup(&teams_yaml(TWO_TEAMS), "");
    let before = sim.stored("Practitioner", &practitioner_id(0));
    assert!(
        run(dir.path(), &["apply", "--auto-approve"])
            .status
            .success()
    );
    let after = sim.stored("Practitioner", &practitioner_id(0));
    let without = |p: &Value| {
        let mut p = p.clone();
        p.as_object_mut().unwrap().remove("meta");
        p["extension"] = Value::Array(
            p["extension"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["url"] != "http://schemas.canvasmedical.com/fhir/extensions/roles")
                .cloned()
                .collect(),
        );
        p
    };
    assert_eq!(
        without(&after),
        without(&before),
        "only the roles extension changed"
    );
    assert_ne!(after, before);
}

#[test]
fn naive_practitioner_put_would_have_dropped_the_other_extensions() {
    let sim = Sim::start();
    seed(&sim);
    let id = practitioner_id(2);
    let stored = sim.stored("Practitioner", &id);
    // a client that sends only what it wants to change (the roles extension)
    let mut naive = stored.clone();
    naive["extension"] = json!([{"url": "http://schemas.canvasmedical.com/fhir/extensions/roles",
        "extension": [{"url": "code", "valueCoding": {"system": "http://schemas.canvasmedical.com/fhir/roles", "code": "RN"}}]}]);
    let (status, body) = sim.fhir(Method::PUT, &format!("/Practitioner/{id}"), Some(&naive));
    assert_eq!(status, 200, "{body}");
    let after = sim.stored("Practitioner", &id);
    assert_eq!(
        after["extension"].as_array().unwrap().len(),
        1,
        "meeting link, signature and username are gone"
    );
}

#[test]
fn responsibilities_move_and_swap_between_teams() {
    let (sim, dir) = setup(&teams_yaml(TWO_TEAMS), "");
    assert!(
        run(dir.path(), &["apply", "--auto-approve"])
            .status
            .success()
    );
    // swap: coordinators take COLLECT_SPECIMENS, lab takes COORDINATE_REFERRALS
    let swapped: &[(&str, &str, &[&str], &[usize])] = &[
        (
            "coordinators",
            "Care Coordinators",
            &[
                "COLLECT_SPECIMENS_FROM_PATIENT",
                "POPULATION_HEALTH_CAMPAIGN_OUTREACH",
            ],
            &[1, 2],
        ),
        (
            "lab",
            "Lab Team",
            &["COORDINATE_REFERRALS_FOR_PATIENT"],
            &[3],
        ),
    ];
    std::fs::write(dir.path().join("teams.yaml"), teams_yaml(swapped)).unwrap();
    let plan = stdout(&run(dir.path(), &["plan"]));
    assert!(plan.contains("note: releases \"COORDINATE_REFERRALS_FOR_PATIENT\" (responsibilities) first, so that 'lab' can take it"), "{plan}");
    assert!(plan.contains("note: takes \"COLLECT_SPECIMENS_FROM_PATIENT\" (responsibilities) after 'lab' has released it"), "{plan}");
    let out = run(dir.path(), &["apply", "--auto-approve"]);
    assert!(out.status.success(), "{}", stdout(&out));
    let teams = sim.teams();
    let resp = |name: &str| -> Vec<String> {
        let g = teams.iter().find(|g| g["name"] == name).unwrap();
        g["characteristic"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                c["valueCodeableConcept"]["text"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    assert_eq!(
        resp("Care Coordinators"),
        [
            "COLLECT_SPECIMENS_FROM_PATIENT",
            "POPULATION_HEALTH_CAMPAIGN_OUTREACH"
        ]
    );
    assert_eq!(resp("Lab Team"), ["COORDINATE_REFERRALS_FOR_PATIENT"]);
    assert_eq!(
        run(dir.path(), &["plan", "--detailed-exitcode"])
            .status
            .code(),
        Some(0)
    );

    // a move into a new team: the old team releases before the new one is created
    let moved: &[(&str, &str, &[&str], &[usize])] = &[
        (
            "coordinators",
            "Care Coordinators",
            &["POPULATION_HEALTH_CAMPAIGN_OUTREACH"],
            &[1, 2],
        ),
        (
            "lab",
            "Lab Team",
            &["COORDINATE_REFERRALS_FOR_PATIENT"],
            &[3],
        ),
        (
            "specimens",
            "Specimen Team",
            &["COLLECT_SPECIMENS_FROM_PATIENT"],
            &[4],
        ),
    ];
    std::fs::write(dir.path().join("teams.yaml"), teams_yaml(moved)).unwrap();
    let out = run(dir.path(), &["apply", "--auto-approve"]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert_eq!(
        run(dir.path(), &["plan", "--detailed-exitcode"])
            .status
            .code(),
        Some(0)
    );
}

#[test]
fn naive_order_of_a_responsibility_move_is_refused_by_canvas() {
    let (sim, dir) = setup(&teams_yaml(TWO_TEAMS), "");
    assert!(
        run(dir.path(), &["apply", "--auto-approve"])
            .status
            .success()
    );
    let mut lab = sim
        .teams()
        .into_iter()
        .find(|g| g["name"] == "Lab Team")
        .unwrap();
    lab["characteristic"].as_array_mut().unwrap().push(json!({"code": {"text": "responsibility"}, "valueCodeableConcept": {"text": "COORDINATE_REFERRALS_FOR_PATIENT"}, "exclude": false}));
    lab.as_object_mut().unwrap().remove("quantity");
    let (status, body) = sim.fhir(
        Method::PUT,
        &format!("/Group/{}", lab["id"].as_str().unwrap()),
        Some(&lab),
    );
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("already assigned"), "{body}");
}

#[test]
fn prune_retires_teams_instead_of_deleting_them() {
    let (sim, dir) = setup(
        &teams_yaml(TWO_TEAMS),
        "      manageAllTeams: true\n      retirePrefix: \"[old] \"\n",
    );
    sim.seed(json!({"resources": [{"resourceType": "Group", "type": "practitioner", "actual": true, "name": "Night Shift",
        "characteristic": [{"code": {"text": "responsibility"}, "valueCodeableConcept": {"text": "REVIEW_COVERAGES"}, "exclude": false}],
        "member": [{"entity": {"reference": format!("Practitioner/{}", practitioner_id(4))}}]}]}));
    let plan = stdout(&run(dir.path(), &["plan"]));
    assert!(
        plan.contains("are no longer declared and are kept"),
        "{plan}"
    );
    let out = run(dir.path(), &["apply", "--auto-approve", "--prune"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    let night = sim
        .teams()
        .into_iter()
        .find(|g| g["name"] == "[old] Night Shift")
        .expect("renamed");
    assert!(
        night
            .get("member")
            .is_none_or(|m| m.as_array().unwrap().is_empty()),
        "{night}"
    );
    assert!(
        night
            .get("characteristic")
            .is_none_or(|m| m.as_array().unwrap().is_empty()),
        "{night}"
    );
    let stats = sim.stats();
    assert!(
        stats["requests"]
            .as_object()
            .unwrap()
            .keys()
            .all(|k| !k.starts_with("DELETE")),
        "{stats}"
    );
    // retired teams stay retired: nothing more to do, even with --prune
    let out = run(dir.path(), &["plan", "--prune", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    // and the server indeed refuses DELETE (canvas-api.md §0)
    let (status, _) = sim.fhir(
        Method::DELETE,
        &format!("/Group/{}", night["id"].as_str().unwrap()),
        None,
    );
    assert_eq!(status, 405);
}

#[test]
fn a_saved_plan_is_refused_when_the_team_changed_since() {
    let (sim, dir) = setup(&teams_yaml(TWO_TEAMS), "");
    assert!(
        run(dir.path(), &["apply", "--auto-approve"])
            .status
            .success()
    );
    std::fs::write(
        dir.path().join("teams.yaml"),
        teams_yaml(&[
            TWO_TEAMS[0],
            (
                "lab",
                "Lab Team",
                &["COLLECT_SPECIMENS_FROM_PATIENT"],
                &[3, 4],
            ),
        ]),
    )
    .unwrap();
    let plan_file = dir.path().join("plan.json");
    let out = run(dir.path(), &["plan", "--out", plan_file.to_str().unwrap()]);
    assert!(out.status.success());
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&plan_file).unwrap()).unwrap();
    let change = saved["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["action"] == "update" && c["target"]["kind"] == "team")
        .unwrap();
    assert!(
        change["precondition"]["last_updated"].is_string(),
        "Canvas has no versions: the plan keeps last-modified times"
    );

    // someone renames the lab team in Canvas's UI (a second later than the plan saw)
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let mut lab = sim
        .teams()
        .into_iter()
        .find(|g| g["name"] == "Lab Team")
        .unwrap();
    lab["name"] = json!("Lab Team (edited)");
    lab.as_object_mut().unwrap().remove("quantity");
    assert_eq!(
        sim.fhir(
            Method::PUT,
            &format!("/Group/{}", lab["id"].as_str().unwrap()),
            Some(&lab)
        )
        .0,
        200
    );

    let out = run(
        dir.path(),
        &["apply", "--plan", plan_file.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("changed on the server after the plan was made"),
        "{}",
        stdout(&out)
    );
    let now = sim
        .teams()
        .into_iter()
        .find(|g| g["id"] == lab["id"])
        .unwrap();
    assert_eq!(now["name"], "Lab Team (edited)");
}

#[test]
fn if_unmodified_since_is_refused_with_412_for_a_stale_write() {
    use careplane::fhir::{FhirError, Precondition};
    let sim = Sim::start();
    seed(&sim);
    let ids = sim.seed(json!({"resources": [{"resourceType": "Group", "type": "practitioner", "actual": true, "name": "T"}]}));
    let store = careplane::fhir::http::HttpStore::new(
        &sim.base,
        careplane::fhir::auth::Auth::oauth2(careplane::fhir::auth::OAuth2 {
            token_url: format!("{}/auth/token/", sim.base),
            client_id: CLIENT_ID.into(),
            client_secret: secrecy::SecretString::from(CLIENT_SECRET.to_owned()),
            scope: None,
        }),
    )
    .unwrap();
    let rt = common::runtime();
    rt.block_on(async {
        let g = store.read("Group", &ids[0]).await.unwrap().unwrap();
        let stale = Precondition { version_id: None, last_updated: Some("2020-01-01T00:00:00.000Z".into()) };
        let err = store.update(&json!({"resourceType": "Group", "id": ids[0], "type": "practitioner", "actual": true, "name": "T2"}), &stale).await.unwrap_err();
        assert!(matches!(err, FhirError::Conflict { status: 412, .. }), "{err}");
        let fresh = Precondition { version_id: None, last_updated: g["meta"]["lastUpdated"].as_str().map(str::to_owned) };
        store.update(&json!({"resourceType": "Group", "id": ids[0], "type": "practitioner", "actual": true, "name": "T2"}), &fresh).await.unwrap();
    });
    // one token for all of that; a revoked token is replaced once, transparently
    assert_eq!(sim.stats()["tokensIssued"], 1);
    sim.post_control("/__sim/revoke-tokens", json!({}));
    rt.block_on(async { store.read("Group", &ids[0]).await.unwrap().unwrap() });
    assert_eq!(sim.stats()["tokensIssued"], 2);
}

#[test]
fn staff_lookups_see_inactive_and_non_schedulable_staff_across_pages() {
    let sim = Sim::start();
    seed(&sim);
    // 230 more staff: three pages of at most 100
    let many: Vec<Value> = (10..240).map(|i| practitioner(i, &[])).collect();
    sim.seed(json!({"resources": many}));
    let dir = tempfile::tempdir().unwrap();
    let teams = format!(
        "{}---\n{}",
        team("night", "Night Team", &[], &[5]),
        team("late", "Late Team", &[], &[239])
    );
    write(dir.path(), &manifests(&sim, &teams, ""));
    let out = run(dir.path(), &["apply", "--auto-approve"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    let stats = sim.stats();
    assert!(
        stats["requests"]["GET Practitioner"].as_u64().unwrap() >= 4,
        "paged: {stats}"
    );
    assert_eq!(
        stats["tokensIssued"], 1,
        "one token for the whole apply run: {stats}"
    );
    let night = sim
        .teams()
        .into_iter()
        .find(|g| g["name"] == "Night Team")
        .unwrap();
    assert_eq!(
        night["member"][0]["entity"]["reference"],
        format!("Practitioner/{}", practitioner_id(5))
    );
}

#[test]
fn canvas_errors_name_the_manifest_line_and_never_the_secret() {
    let sim = Sim::start();
    let staff: Vec<Value> = (0..6).map(|i| practitioner(i, &[])).collect();
    // CC is not configured in this instance's Settings
    sim.seed(json!({"resources": staff, "roles": ["MD", "RN"]}));
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &manifests(&sim, &teams_yaml(TWO_TEAMS), ""));
    let out = run(dir.path(), &["apply", "--auto-approve"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("Unknown role code 'CC'"), "{text}");
    assert!(text.contains("staff.yaml:13:9"), "{text}");
    // wrong secret: a clear error without the secret
    let out = careplane()
        .args(["plan"])
        .arg(dir.path())
        .env("SIM_ID", CLIENT_ID)
        .env("SIM_SECRET", "wrong-s3cr3t-value")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("token endpoint answered HTTP 401"), "{err}");
    assert!(
        !err.contains("s3cr3t") && !stdout(&out).contains("s3cr3t"),
        "{err}"
    );
}

fn patient(i: usize) -> Value {
    json!({"resourceType": "Patient", "id": format!("{:032x}", 0xbeef_0000_u64 + i as u64),
           "name": [{"family": "Patient", "given": ["Test"]}], "birthDate": "1970-01-01"})
}

#[test]
fn care_team_roles_in_use_are_ticked_off_on_the_checklist() {
    let (sim, dir) = setup(&teams_yaml(TWO_TEAMS), "");
    let pid = sim.seed(json!({"resources": [patient(1)]}))[0].clone();
    let care_team = json!({"resourceType": "CareTeam", "id": pid, "status": "active",
        "subject": {"reference": format!("Patient/{pid}")},
        "participant": [{"role": [{"coding": [{"system": "http://snomed.info/sct", "code": "453231000124104", "display": "Primary care provider"}]}],
                          "member": {"reference": format!("Practitioner/{}", practitioner_id(0))}}]});
    let (status, body) = sim.fhir(Method::PUT, &format!("/CareTeam/{pid}"), Some(&care_team));
    assert_eq!(status, 200, "{body}");
    let text = stdout(&run(dir.path(), &["plan"]));
    assert!(
        text.contains("[x] care-team role 'pcp': seen on the target: care-team role 453231000124104 is used 1 time(s) on active care teams"),
        "{text}"
    );
    assert!(!text.contains(&pid), "no patient ids in the plan: {text}");
}

/// canvas-api.md §3: a CareTeam PUT replaces the active participants. careplane does not
/// write care teams yet (care-team assignment rules do); this pins down the quirk they
/// must handle: a naive upsert of one assignment drops everyone else from the team.
#[test]
fn naive_care_team_upsert_would_have_dropped_the_other_participants() {
    let sim = Sim::start();
    seed(&sim);
    let pid = sim.seed(json!({"resources": [patient(2)]}))[0].clone();
    let participant = |staff: usize, code: &str, display: &str| {
        json!({
        "role": [{"coding": [{"system": "http://snomed.info/sct", "code": code, "display": display}]}],
        "member": {"reference": format!("Practitioner/{}", practitioner_id(staff))}})
    };
    sim.seed(json!({"careTeamRoles": [
        {"system": "http://snomed.info/sct", "code": "453231000124104", "display": "Primary care provider"},
        {"system": "http://snomed.info/sct", "code": "224535009", "display": "Registered nurse"}]}));
    let team = |participants: Vec<Value>| {
        json!({"resourceType": "CareTeam", "id": pid, "status": "active",
        "subject": {"reference": format!("Patient/{pid}")}, "participant": participants})
    };
    let put = |body: Value| sim.fhir(Method::PUT, &format!("/CareTeam/{pid}"), Some(&body));
    assert_eq!(
        put(team(vec![participant(
            0,
            "453231000124104",
            "Primary care provider"
        )]))
        .0,
        200
    );
    // a naive client assigns a nurse with only the new participant in the payload
    assert_eq!(
        put(team(vec![participant(1, "224535009", "Registered nurse")])).0,
        200
    );
    let (_, active) = sim.fhir(Method::GET, &format!("/CareTeam/{pid}"), None);
    let members: Vec<&str> = active["participant"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["member"]["reference"].as_str().unwrap())
        .collect();
    assert_eq!(
        members,
        [format!("Practitioner/{}", practitioner_id(1))],
        "the PCP was made inactive"
    );
    let (_, inactive) = sim.fhir(Method::GET, &format!("/CareTeam/{pid}.inactive"), None);
    assert_eq!(inactive["participant"].as_array().unwrap().len(), 1);
}

/// canvas-api.md §4: a Task PUT clears omitted description/owner/restriction/input and
/// appends every note sent. Routing rules (a later release) must send all four back and
/// drop `note`; this pins down what a naive read-modify-write does.
#[test]
fn naive_task_put_would_have_cleared_fields_and_duplicated_notes() {
    let sim = Sim::start();
    seed(&sim);
    let pid = sim.seed(json!({"resources": [patient(3)]}))[0].clone();
    let task = json!({"resourceType": "Task", "status": "requested", "intent": "unknown",
        "description": "Refer patient to Psychiatry (TBD)",
        "requester": {"reference": format!("Practitioner/{}", practitioner_id(0))},
        "owner": {"reference": format!("Practitioner/{}", practitioner_id(1))},
        "for": {"reference": format!("Patient/{pid}")},
        "restriction": {"period": {"end": "2026-12-31"}},
        "input": [{"type": {"text": "label"}, "valueString": "Urgent"}],
        "note": [{"text": "called the patient"}]});
    let (status, _) = sim.fhir(Method::POST, "/Task", Some(&task));
    assert_eq!(status, 201);
    let id = sim.search("Task?status=requested")[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let read = sim.search(&format!("Task?_id={id}"))[0].clone();
    // read-modify-write that keeps the note: the note is appended a second time
    let mut same = read.clone();
    same.as_object_mut().unwrap().remove("lastModified");
    assert_eq!(
        sim.fhir(Method::PUT, &format!("/Task/{id}"), Some(&same)).0,
        200
    );
    assert_eq!(
        sim.search(&format!("Task?_id={id}"))[0]["note"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // a PUT with only the fields a router cares about: owner, due date and labels are gone
    let minimal = json!({"resourceType": "Task", "id": id, "status": "requested", "intent": "unknown",
        "description": "Refer patient to Psychiatry (TBD)",
        "requester": {"reference": format!("Practitioner/{}", practitioner_id(0))}});
    assert_eq!(
        sim.fhir(Method::PUT, &format!("/Task/{id}"), Some(&minimal))
            .0,
        200
    );
    let after = sim.search(&format!("Task?_id={id}"))[0].clone();
    assert!(
        after.get("owner").is_none()
            && after.get("restriction").is_none()
            && after.get("input").is_none(),
        "{after}"
    );
}

#[test]
fn a_responsibility_held_by_an_undeclared_team_stops_the_plan() {
    let (sim, dir) = setup(&teams_yaml(TWO_TEAMS), "");
    sim.seed(json!({"resources": [{"resourceType": "Group", "type": "practitioner", "actual": true, "name": "Legacy Lab",
        "characteristic": [{"code": {"text": "responsibility"}, "valueCodeableConcept": {"text": "COLLECT_SPECIMENS_FROM_PATIENT"}, "exclude": false}]}]}));
    let out = run(dir.path(), &["plan"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("COLLECT_SPECIMENS_FROM_PATIENT is held by team 'Legacy Lab'"),
        "{err}"
    );
    // with manageAllTeams and --prune the legacy team is retired, releasing it first
    let project = std::fs::read_to_string(dir.path().join("careplane.yaml")).unwrap();
    std::fs::write(
        dir.path().join("careplane.yaml"),
        sim.project_file("      manageAllTeams: true\n"),
    )
    .unwrap();
    let _ = project;
    let out = run(dir.path(), &["apply", "--auto-approve", "--prune"]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert_eq!(
        run(dir.path(), &["plan", "--prune", "--detailed-exitcode"])
            .status
            .code(),
        Some(0)
    );
}
