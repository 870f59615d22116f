//! Configuration and effects (issue 10): a saved plan applies its configuration exactly and
//! recomputes the effects of rules (memberships, task routing) from live data, under the
//! deviation guard. On the real FHIR server and on the Canvas simulator.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::canvas::{CLIENT_ID, CLIENT_SECRET, Sim, practitioner};
use common::*;
use serde_json::{Value, json};

const TEAM_EXT: &str = "https://careplane.dev/fhir/StructureDefinition/task-team";
const CANVAS_TEAM_EXT: &str = "http://schemas.canvasmedical.com/fhir/extensions/task-group";

fn consent(pid: &str, status: &str) -> Value {
    json!({"resourceType": "Consent", "status": status,
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "urn:test:consents", "code": "A0001"}]}],
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTOUT"}]},
        "patient": {"reference": format!("Patient/{pid}")}})
}

/// A patient of this test (its identifier system) and their consent.
fn patient(server: &Server, system: &str, status: &str) -> (String, Value) {
    let p = server.post(
        &json!({"resourceType": "Patient", "active": true, "birthDate": "1970-01-01",
        "identifier": [{"system": system, "value": "x"}]}),
    );
    let id = p["id"].as_str().unwrap().to_owned();
    let c = server.post(&consent(&id, status));
    (id, c)
}

fn task(server: &Server, description: &str) -> Value {
    server.post(
        &json!({"resourceType": "Task", "status": "requested", "intent": "order",
        "description": description}),
    )
}

fn project_file(project: &str) -> String {
    format!(
        "apiVersion: careplane.dev/v1\nkind: Project\nmetadata:\n  name: {project}\nspec: {{}}\n"
    )
}

fn group(project: &str, system: &str, extra: &str) -> String {
    format!(
        "apiVersion: careplane.dev/v1\nkind: PatientGroup\nmetadata:\n  name: opted-in\nspec:\n  displayName: Opted in {project}\n  mode: authoritative\n  maxRemovalShare: 1.0\n{extra}  rule:\n    all:\n      - identifier: {{system: \"{system}\"}}\n      - not:\n          consent: {{code: A0001, status: rejected}}\n"
    )
}

fn team(name: &str, display: &str) -> String {
    format!(
        "apiVersion: careplane.dev/v1\nkind: Team\nmetadata:\n  name: {name}\nspec:\n  displayName: {display}\n"
    )
}

fn rule(name: &str, description: &str, team: &str) -> String {
    format!(
        "apiVersion: careplane.dev/v1\nkind: RoutingRule\nmetadata:\n  name: {name}\nspec:\n  match:\n    description: \"{description}\"\n  set:\n    team: {team}\n"
    )
}

fn run(dir: &Path, args: &[&str]) -> std::process::Output {
    careplane()
        .args(args)
        .arg(dir)
        .args(["--server", &fhir_url()])
        .output()
        .unwrap()
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn members(server: &Server, name: &str) -> BTreeSet<String> {
    let groups = server.search("Group?type=person&_count=1000");
    let g = groups
        .iter()
        .find(|g| g["name"] == name)
        .unwrap_or_else(|| panic!("no group {name}"));
    g["member"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|m| m["entity"]["reference"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn team_of(t: &Value) -> Option<String> {
    t["extension"]
        .as_array()?
        .iter()
        .find(|e| e["url"] == TEAM_EXT)
        .and_then(|e| e["valueReference"]["reference"].as_str())
        .map(str::to_owned)
}

fn owned_team(server: &Server, project: &str, name: &str) -> String {
    let g = server
        .owned("Group", project)
        .into_iter()
        .find(|g| g["identifier"][0]["value"] == format!("team/{name}"))
        .unwrap_or_else(|| panic!("no team {name}"));
    format!("Group/{}", g["id"].as_str().unwrap())
}

/// The evidence: between review and merge, 20 new patients, 5 flipped consents,
/// comments on routed tasks and a task a person re-routes. `apply --plan` succeeds, the
/// configuration lands exactly, the members are the rule's result now, the hand-routed
/// task is untouched and new tasks are routed once. The old code refused the plan (the
/// group's members moved) and re-routed commented tasks' versions as stale.
#[test]
fn activity_between_plan_and_apply_never_stales_a_saved_plan() {
    let server = Server::new();
    let project = unique("eff");
    let system = format!("urn:test:{project}");
    let intake = format!("Intake {project}");
    let labs = format!("Lab draw {project}");
    let mut originals = Vec::new();
    for i in 0..30 {
        originals.push(patient(
            &server,
            &system,
            if i % 10 == 0 { "rejected" } else { "active" },
        ));
    }
    let routed: Vec<Value> = (0..3).map(|_| task(&server, &intake)).collect();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        &[
            ("careplane.yaml", project_file(&project)),
            ("groups.yaml", group(&project, &system, "")),
            (
                "teams.yaml",
                [
                    team("bh", &format!("BH {project}")),
                    rule("intake", &intake, "bh"),
                ]
                .join("---\n"),
            ),
        ],
    );
    let o = run(d, &["apply", "--auto-approve"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(d, &["apply", "--auto-approve"]); // routing to the new team
    assert!(o.status.success(), "{}", text(&o));
    let bh = owned_team(&server, &project, "bh");
    let now = |t: &Value| server.get(&format!("Task/{}", t["id"].as_str().unwrap()));
    assert!(
        routed
            .iter()
            .all(|t| team_of(&now(t)).as_deref() == Some(bh.as_str()))
    );

    // the pull request: rename a team, add a team and a rule that routes to it
    let lab_tasks: Vec<Value> = (0..2).map(|_| task(&server, &labs)).collect();
    write(
        d,
        &[(
            "teams.yaml",
            [
                team("bh", &format!("BH renamed {project}")),
                rule("intake", &intake, "bh"),
                team("lab", &format!("Lab {project}")),
                rule("labs", &labs, "lab"),
            ]
            .join("---\n"),
        )],
    );
    let file = d.join("plan.json");
    let o = run(d, &["plan", "--out", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let saved = std::fs::read_to_string(&file).unwrap();
    assert!(
        !saved.contains("Task/") && !saved.contains("Patient/"),
        "no task, no patient in the saved plan"
    );

    // the clinic's day
    let other = server.post(
        &json!({"resourceType": "Group", "type": "practitioner", "actual": true,
        "name": format!("Someone else's team {project}")}),
    );
    let other = format!("Group/{}", other["id"].as_str().unwrap());
    let mut fresh = Vec::new();
    for _ in 0..20 {
        fresh.push(patient(&server, &system, "active").0);
    }
    let flipped: Vec<&String> = originals
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 10 != 0)
        .take(5)
        .map(|(_, (id, c))| {
            let mut c = c.clone();
            c["status"] = json!("rejected");
            server.put(&c);
            id
        })
        .collect();
    let mut commented = now(&routed[1]);
    commented["note"] = json!([{"text": "called the patient twice"}]);
    let commented = server.put(&commented);
    let mut moved = now(&routed[0]);
    moved["extension"] = json!([{"url": TEAM_EXT, "valueReference": {"reference": other}}]);
    let moved = server.put(&moved);
    let new_task = task(&server, &intake);

    let report = d.join("report.json");
    let o = careplane()
        .args(["apply", "--plan", file.to_str().unwrap(), "--report"])
        .arg(&report)
        .arg(d)
        .args(["--server", &fhir_url()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let shown = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        !shown.contains("Task/"),
        "tasks are counted, never listed: {shown}"
    );
    for line in [
        "routing rule 'labs': 2 open task(s) routed",
        "patient group 'opted-in': reviewed +0 -0, now +20 -5 patient(s): applied",
        "routing rule 'intake': reviewed 0, now 1 open task(s) to route: applied",
        // the review counted the tasks waiting for the new team
        "routing rule 'labs': reviewed 2, now 2 open task(s) to route: applied",
    ] {
        assert!(shown.contains(line), "{line}\n{shown}");
    }
    // configuration: exactly as reviewed
    let lab = owned_team(&server, &project, "lab");
    let names: Vec<Value> = server
        .owned("Group", &project)
        .iter()
        .map(|g| g["name"].clone())
        .collect();
    assert!(
        names.contains(&json!(format!("BH renamed {project}"))),
        "{names:?}"
    );
    // effects: the rule's result now
    let expected: BTreeSet<String> = originals
        .iter()
        .enumerate()
        .filter(|(i, (id, _))| i % 10 != 0 && !flipped.contains(&id))
        .map(|(_, (id, _))| format!("Patient/{id}"))
        .chain(fresh.iter().map(|id| format!("Patient/{id}")))
        .collect();
    assert_eq!(expected.len(), 42);
    assert_eq!(members(&server, &format!("Opted in {project}")), expected);
    // the hand-routed task and the commented one: untouched
    let m = now(&moved);
    assert_eq!(m["meta"]["versionId"], moved["meta"]["versionId"]);
    assert_eq!(team_of(&m), Some(other.clone()));
    assert_eq!(
        now(&commented)["meta"]["versionId"],
        commented["meta"]["versionId"]
    );
    // new tasks: routed once, to the teams of now
    assert_eq!(team_of(&now(&new_task)), Some(bh.clone()));
    for t in &lab_tasks {
        assert_eq!(team_of(&now(t)), Some(lab.clone()));
    }
    let record: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(record["result"], "applied", "{record:#}");
    assert_eq!(record["effects"].as_array().unwrap().len(), 3, "{record:#}");
    let r = serde_json::to_string(&record).unwrap();
    assert!(
        fresh.iter().all(|id| !r.contains(id.as_str())),
        "no patient id in the record"
    );
    // nothing left, and a later pass does not touch the routed tasks again
    let o = run(d, &["plan", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

/// A rule whose effects moved beyond its `maxDeviation` between review and apply is held
/// back; the configuration and the other rules' effects are applied; apply exits 3 and
/// says why, in the human output and the report.
#[test]
fn a_deviation_beyond_tolerance_holds_that_rules_effects_back() {
    let server = Server::new();
    let project = unique("dev");
    let system = format!("urn:test:{project}");
    let intake = format!("Intake {project}");
    for _ in 0..20 {
        patient(&server, &system, "active");
    }
    let tasks: Vec<Value> = (0..2).map(|_| task(&server, &intake)).collect();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        &[
            ("careplane.yaml", project_file(&project)),
            (
                "groups.yaml",
                group(
                    &project,
                    &system,
                    "  maxDeviation: {share: 0.1, atLeast: 5}\n",
                ),
            ),
            (
                "teams.yaml",
                [
                    team("bh", &format!("BH {project}")),
                    rule("intake", &intake, "bh"),
                ]
                .join("---\n"),
            ),
        ],
    );
    let file = d.join("plan.json");
    let o = run(d, &["plan", "--out", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    // 10 more patients than the 20 reviewed: over max(0.1 × 20, 5)
    for _ in 0..10 {
        patient(&server, &system, "active");
    }
    let report = d.join("report.json");
    let o = careplane()
        .args(["apply", "--plan", file.to_str().unwrap(), "--report"])
        .arg(&report)
        .arg(d)
        .args(["--server", &fhir_url()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let shown = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        shown.contains("patient group 'opted-in': reviewed +20 -0, now +30 -0 patient(s): held back: they moved more than the rule's maxDeviation allows (±5 added"),
        "{shown}"
    );
    assert!(
        shown.contains("routing rule 'intake': reviewed 2, now 2 open task(s) to route: applied"),
        "{shown}"
    );
    // the configuration landed (the group exists, empty), the rest of the effects too
    assert!(members(&server, &format!("Opted in {project}")).is_empty());
    let bh = owned_team(&server, &project, "bh");
    for t in &tasks {
        let t = server.get(&format!("Task/{}", t["id"].as_str().unwrap()));
        assert_eq!(team_of(&t), Some(bh.clone()));
    }
    let record: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(record["result"], "held-back", "{record:#}");
    let held = record["effects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["rule"] == "opted-in")
        .unwrap();
    assert_eq!(held["decision"]["outcome"], "held-deviation", "{held:#}");
    assert_eq!(
        (held["reviewed_adds"].as_u64(), held["now_adds"].as_u64()),
        (Some(20), Some(30))
    );
    // a new review of the rule's effects, then they apply
    let o = run(d, &["plan", "--out", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(d, &["apply", "--plan", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(members(&server, &format!("Opted in {project}")).len(), 30);
}

/// The same on the Canvas simulator: Canvas has no Consent search in the simulator, so the
/// rule is `active: true` and the "flips" deactivate patients.
#[test]
fn canvas_activity_between_plan_and_apply_never_stales_a_saved_plan() {
    let sim = Sim::start();
    sim.seed(json!({"resources": (0..3).map(|i| practitioner(i, &[])).collect::<Vec<_>>()}));
    let patient = |i: usize, active: bool| {
        json!({"resourceType": "Patient", "id": format!("{:032x}", 0xabc0_0000_u64 + i as u64), "active": active,
               "name": [{"family": "P", "given": ["T"]}], "birthDate": "1980-01-01"})
    };
    sim.seed(json!({"resources": (0..30).map(|i| patient(i, true)).collect::<Vec<_>>()}));
    let new_task = |description: &str| {
        let t = json!({"resourceType": "Task", "status": "requested", "intent": "unknown",
            "description": description, "requester": {"reference": format!("Practitioner/{}", common::canvas::practitioner_id(0))}});
        let (status, body) = sim.fhir(reqwest::Method::POST, "/Task", Some(&t));
        assert_eq!(status, 201, "{body}");
    };
    let tasks = || sim.search("Task?status=requested");
    let find = |description: &str| -> Vec<Value> {
        tasks()
            .into_iter()
            .filter(|t| t["description"] == description)
            .collect()
    };
    let team_of = |t: &Value| -> Option<String> {
        t["extension"]
            .as_array()?
            .iter()
            .find(|e| e["url"] == CANVAS_TEAM_EXT)
            .and_then(|e| e["valueReference"]["reference"].as_str())
            .map(str::to_owned)
    };
    let team_ref = |name: &str| -> String {
        let g = sim
            .teams()
            .into_iter()
            .find(|g| g["name"] == name)
            .unwrap_or_else(|| panic!("no team {name}"));
        format!("Group/{}", g["id"].as_str().unwrap())
    };
    for _ in 0..3 {
        new_task("Intake");
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let group = "apiVersion: careplane.dev/v1\nkind: PatientGroup\nmetadata:\n  name: active-patients\nspec:\n  mode: authoritative\n  maxRemovalShare: 1.0\n  rule:\n    active: true\n";
    write(
        d,
        &[
            ("careplane.yaml", sim.project_file("")),
            ("groups.yaml", group.into()),
            (
                "teams.yaml",
                [
                    team("bh", "Behavioral Health"),
                    rule("intake", "Intake", "bh"),
                ]
                .join("---\n"),
            ),
        ],
    );
    let run = |args: &[&str]| {
        careplane()
            .args(args)
            .arg(d)
            .env("SIM_ID", CLIENT_ID)
            .env("SIM_SECRET", CLIENT_SECRET)
            .output()
            .unwrap()
    };
    for _ in 0..2 {
        let o = run(&["apply", "--auto-approve"]);
        assert!(o.status.success(), "{}", text(&o));
    }
    let bh = team_ref("Behavioral Health");
    assert!(
        find("Intake")
            .iter()
            .all(|t| team_of(t).as_deref() == Some(bh.as_str()))
    );

    new_task("Lab draw");
    write(
        d,
        &[(
            "teams.yaml",
            [
                team("bh", "Behavioral Health"),
                rule("intake", "Intake", "bh"),
                team("lab", "Lab"),
                rule("labs", "Lab draw", "lab"),
            ]
            .join("---\n"),
        )],
    );
    let file = d.join("plan.json");
    let o = run(&["plan", "--out", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));

    // the clinic's day: 20 new patients, 5 leave (inactive), a comment, a re-route
    sim.seed(json!({"resources": (30..50).map(|i| patient(i, true)).collect::<Vec<_>>()}));
    sim.seed(json!({"resources": (1..6).map(|i| patient(i, false)).collect::<Vec<_>>()}));
    sim.fhir(
        reqwest::Method::POST,
        "/Group",
        Some(&json!({"resourceType": "Group", "type": "practitioner", "actual": true, "name": "Front Desk"})),
    );
    let front = team_ref("Front Desk");
    let intake_tasks = find("Intake");
    let mut commented = intake_tasks[1].clone();
    commented["note"] = json!([{"text": "called the patient"}]);
    let id = commented["id"].as_str().unwrap().to_owned();
    assert_eq!(
        sim.fhir(
            reqwest::Method::PUT,
            &format!("/Task/{id}"),
            Some(&commented)
        )
        .0,
        200
    );
    let mut moved = intake_tasks[0].clone();
    moved["extension"] = json!([{"url": CANVAS_TEAM_EXT, "valueReference": {"reference": front}}]);
    moved.as_object_mut().unwrap().remove("note");
    let moved_id = moved["id"].as_str().unwrap().to_owned();
    assert_eq!(
        sim.fhir(
            reqwest::Method::PUT,
            &format!("/Task/{moved_id}"),
            Some(&moved)
        )
        .0,
        200
    );
    let moved_at = tasks()
        .into_iter()
        .find(|t| t["id"] == moved_id.as_str())
        .unwrap();
    new_task("Intake");

    let o = run(&["apply", "--plan", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let shown = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        shown.contains(
            "patient group 'active-patients': reviewed +0 -0, now +20 -5 patient(s): applied"
        ),
        "{shown}"
    );
    let lab = team_ref("Lab");
    let groups = sim.search("Group?type=person");
    assert_eq!(groups[0]["member"].as_array().unwrap().len(), 45);
    let now_moved = tasks()
        .into_iter()
        .find(|t| t["id"] == moved_id.as_str())
        .unwrap();
    assert_eq!(team_of(&now_moved), Some(front.clone()));
    assert_eq!(
        now_moved["meta"], moved_at["meta"],
        "the hand-routed task is untouched"
    );
    let intake_now = find("Intake");
    assert_eq!(intake_now.len(), 4);
    assert_eq!(
        intake_now
            .iter()
            .filter(|t| team_of(t).as_deref() == Some(bh.as_str()))
            .count(),
        3,
        "the new task routed, the moved one left with the front desk"
    );
    assert!(
        find("Lab draw")
            .iter()
            .all(|t| team_of(t).as_deref() == Some(lab.as_str()))
    );
    let c = tasks()
        .into_iter()
        .find(|t| t["id"] == id.as_str())
        .unwrap();
    assert_eq!(
        c["note"].as_array().map(Vec::len),
        Some(1),
        "the comment, not appended again"
    );
    let o = run(&["plan", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}
