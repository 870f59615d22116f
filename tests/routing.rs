//! Routing rules: open tasks get their team, owner and labels from the first matching
//! rule, on the real FHIR server and on the Canvas simulator; every other task field is
//! left exactly as it was.

mod common;

use common::canvas::{CLIENT_ID, CLIENT_SECRET, Sim, practitioner, practitioner_id};
use common::*;
use serde_json::{Value, json};

const PSYCH: &str = "Refer patient to Psychiatry (TBD)";

fn rules(project: &str, staff: &Staff) -> String {
    format!(
        "apiVersion: careplane.dev/v1\nkind: Team\nmetadata:\n  name: bh\nspec:\n  displayName: Behavioral Health Coordinators {project}\n---\napiVersion: careplane.dev/v1\nkind: Team\nmetadata:\n  name: lab\nspec:\n  displayName: Lab {project}\n---\napiVersion: careplane.dev/v1\nkind: RoutingRule\nmetadata:\n  name: psych-referrals\nspec:\n  order: 10\n  match:\n    description: \"{PSYCH}\"\n  set:\n    team: bh\n    addLabels: [Internal Referral]\n---\napiVersion: careplane.dev/v1\nkind: RoutingRule\nmetadata:\n  name: lab-orders\nspec:\n  order: 20\n  match:\n    descriptionMatches: \"^Complete lab order\"\n  set:\n    team: lab\n    owner: {{npi: \"{}\"}}\n---\napiVersion: careplane.dev/v1\nkind: RoutingRule\nmetadata:\n  name: urgent\nspec:\n  order: 30\n  match:\n    label: Urgent\n  set:\n    team: bh\n",
        staff.npi
    )
}

fn task(server: &Server, staff: &Staff, description: &str, labels: &[&str], status: &str) -> Value {
    let input: Vec<Value> = labels
        .iter()
        .map(|l| json!({"type": {"text": "label"}, "valueString": l}))
        .collect();
    let mut t = json!({"resourceType": "Task", "status": status, "intent": "order", "description": description,
        "requester": {"reference": format!("Practitioner/{}", staff.id)},
        "restriction": {"period": {"end": "2026-12-31"}},
        "note": [{"text": "called twice"}]});
    if !input.is_empty() {
        t["input"] = json!(input);
    }
    server.post(&t)
}

fn strip(t: &Value) -> Value {
    let mut t = t.clone();
    for k in ["meta", "extension", "owner", "input", "identifier"] {
        t.as_object_mut().unwrap().remove(k);
    }
    t
}

#[test]
fn open_tasks_are_routed_by_the_first_matching_rule_and_nothing_else_changes() {
    let server = Server::new();
    let project = unique("rt");
    let staff = seed_staff(&server, &project, 2);
    // the other descriptions are unique to this test (the server is shared)
    let psych = PSYCH.to_string();
    let tasks = [
        task(&server, &staff[0], &psych, &[], "requested"),
        task(
            &server,
            &staff[0],
            &format!("Complete lab order {project}"),
            &["Urgent"],
            "requested",
        ),
        task(
            &server,
            &staff[0],
            &format!("Something else {project}"),
            &["Urgent"],
            "requested",
        ),
        task(&server, &staff[0], &psych, &[], "completed"),
    ];
    // a few hundred more lab follow-ups, all for the lab team
    let bulk: Vec<Value> = (0..200)
        .map(|i| {
            task(
                &server,
                &staff[0],
                &format!("Complete lab order {project} #{i}"),
                &[],
                "requested",
            )
        })
        .collect();
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
            ("routing.yaml", rules(&project, &staff[1])),
        ],
    );
    // teams first: routing to them waits for the next apply
    let first = String::from_utf8(
        careplane()
            .arg("plan")
            .arg(dir.path())
            .args(["--server", &fhir_url()])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(
        first.contains("the next apply routes them, once the team exists"),
        "{first}"
    );
    assert!(apply(dir.path(), &[]).status.success());

    // a reviewer sees counts per rule, never tasks one by one
    for format in ["human", "markdown"] {
        let text = String::from_utf8(
            careplane()
                .arg("plan")
                .arg(dir.path())
                .args(["--server", &fhir_url(), "--format", format])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        assert!(!text.contains("Task/"), "{format}: {text}");
        let lab = if format == "human" {
            "routing rule 'lab-orders': 201 open task(s) to route"
        } else {
            "| routing rule 'lab-orders' | 201 | 0 | open task(s) to route |"
        };
        assert!(text.contains(lab), "{format}: {text}");
    }
    // the JSON plan too: counts per rule, no task one by one
    let plan = plan_json(dir.path(), &[]);
    let routes = |rule: &str| {
        plan["effects"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == "task-routing" && e["rule"] == rule)
            .map(|e| e["adds"].as_u64().unwrap())
    };
    // the psych task; the urgent lab order goes to 'lab-orders' (first match wins), with
    // the 200 bulk ones; 'urgent' gets the other urgent task; the completed one is left
    assert_eq!(routes("psych-referrals"), Some(1), "{plan:#}");
    assert_eq!(routes("lab-orders"), Some(201), "{plan:#}");
    assert_eq!(routes("urgent"), Some(1), "{plan:#}");
    assert!(
        !serde_json::to_string(&plan).unwrap().contains("Task/"),
        "no task one by one in the JSON plan"
    );
    let text = serde_json::to_string(&plan).unwrap();
    assert!(
        !text.contains(&format!("Complete lab order {project}")),
        "task titles are never printed"
    );

    assert!(apply(dir.path(), &[]).status.success());
    let groups = server.owned("Group", &project);
    let bh = groups
        .iter()
        .find(|g| g["identifier"][0]["value"] == "team/bh")
        .unwrap();
    let lab = groups
        .iter()
        .find(|g| g["identifier"][0]["value"] == "team/lab")
        .unwrap();
    let now = |t: &Value| server.get(&format!("Task/{}", t["id"].as_str().unwrap()));
    let p = now(&tasks[0]);
    assert_eq!(
        p["extension"][0]["valueReference"]["reference"],
        format!("Group/{}", bh["id"].as_str().unwrap())
    );
    assert_eq!(
        p["input"],
        json!([{"type": {"text": "label"}, "valueString": "Internal Referral"}])
    );
    assert_eq!(strip(&p), strip(&tasks[0]), "every other field as it was");
    // careplane remembers on the task itself that it routed it (no local state)
    assert!(
        p["meta"]["tag"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["system"] == "https://careplane.dev/routed" && t["code"] == project.as_str()),
        "{p:#}"
    );
    assert_eq!(
        p["identifier"],
        json!([{"system": "https://careplane.dev/routed", "value": project}])
    );
    let l = now(&tasks[1]);
    assert_eq!(
        l["owner"]["reference"],
        format!("Practitioner/{}", staff[1].id)
    );
    assert_eq!(
        l["extension"][0]["valueReference"]["reference"],
        format!("Group/{}", lab["id"].as_str().unwrap())
    );
    assert_eq!(l["input"], tasks[1]["input"], "existing labels kept");
    assert_eq!(
        now(&tasks[2])["extension"][0]["valueReference"]["reference"],
        format!("Group/{}", bh["id"].as_str().unwrap()),
        "the other urgent task: rule 'urgent'"
    );
    assert_eq!(strip(&l), strip(&tasks[1]));
    assert_eq!(
        now(&tasks[3])["meta"]["versionId"],
        tasks[3]["meta"]["versionId"]
    );
    for t in &bulk {
        assert_eq!(
            now(t)["extension"][0]["valueReference"]["reference"],
            format!("Group/{}", lab["id"].as_str().unwrap())
        );
    }
    // idempotent
    careplane()
        .arg("plan")
        .arg(dir.path())
        .args(["--server", &fhir_url(), "--detailed-exitcode"])
        .assert()
        .code(0);
}

#[test]
fn the_guides_routing_example_on_canvas_keeps_every_other_task_field() {
    let sim = Sim::start();
    let staff: Vec<Value> = (0..3).map(|i| practitioner(i, &[])).collect();
    sim.seed(json!({"resources": staff}));
    let pid = sim.seed(json!({"resources": [{"resourceType": "Patient", "name": [{"family": "P", "given": ["T"]}], "birthDate": "1970-01-01"}]}))[0].clone();
    let task = json!({"resourceType": "Task", "status": "requested", "intent": "unknown", "description": PSYCH,
        "requester": {"reference": format!("Practitioner/{}", practitioner_id(0))},
        "owner": {"reference": format!("Practitioner/{}", practitioner_id(1))},
        "for": {"reference": format!("Patient/{pid}")},
        "restriction": {"period": {"end": "2026-12-31"}},
        "input": [{"type": {"text": "label"}, "valueString": "Urgent"}],
        "note": [{"text": "called the patient"}]});
    assert_eq!(sim.fhir(reqwest::Method::POST, "/Task", Some(&task)).0, 201);
    let before = sim.search("Task?status=requested")[0].clone();
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            ("careplane.yaml", sim.project_file("")),
            (
                "routing.yaml",
                format!(
                    "apiVersion: careplane.dev/v1\nkind: Team\nmetadata:\n  name: bh\nspec:\n  displayName: Behavioral Health Coordinators\n---\napiVersion: careplane.dev/v1\nkind: RoutingRule\nmetadata:\n  name: psych-referrals\nspec:\n  match:\n    description: \"{PSYCH}\"\n  set:\n    team: bh\n    addLabels: [Internal Referral]\n"
                ),
            ),
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
    assert!(run(&["apply", "--auto-approve"]).status.success()); // the team
    // the task already has an owner: someone assigned it, so routing leaves it alone...
    assert_eq!(run(&["plan", "--detailed-exitcode"]).status.code(), Some(0));
    // ...unless a reviewed backfill asks for it
    let out = run(&["apply", "--auto-approve", "--route-existing"]); // the routing
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let after = sim.search("Task?status=requested")[0].clone();
    let team = sim
        .teams()
        .into_iter()
        .find(|g| g["name"] == "Behavioral Health Coordinators")
        .unwrap();
    let group_ext = after["extension"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["url"] == "http://schemas.canvasmedical.com/fhir/extensions/task-group")
        .unwrap();
    assert_eq!(
        group_ext["valueReference"]["reference"],
        format!("Group/{}", team["id"].as_str().unwrap())
    );
    for k in [
        "description",
        "owner",
        "restriction",
        "for",
        "requester",
        "status",
    ] {
        assert_eq!(after[k], before[k], "{k} kept");
    }
    let labels: Vec<&str> = after["input"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["valueString"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["Urgent", "Internal Referral"]);
    assert_eq!(
        after["note"].as_array().unwrap().len(),
        1,
        "no note appended twice"
    );
    assert_eq!(run(&["plan", "--detailed-exitcode"]).status.code(), Some(0));

    // a person moves the task to another team: careplane never moves it back
    let other = sim.fhir(
        reqwest::Method::POST,
        "/Group",
        Some(&json!({"resourceType": "Group", "type": "practitioner", "actual": true, "name": "Front Desk"})),
    );
    let other_id = sim
        .teams()
        .into_iter()
        .find(|g| g["name"] == "Front Desk")
        .map(|g| g["id"].as_str().unwrap().to_owned())
        .unwrap_or_else(|| panic!("{other:?}"));
    let mut moved = after.clone();
    moved["extension"] = json!([{"url": "http://schemas.canvasmedical.com/fhir/extensions/task-group",
        "valueReference": {"reference": format!("Group/{other_id}")}}]);
    moved.as_object_mut().unwrap().remove("note");
    let id = after["id"].as_str().unwrap();
    assert_eq!(
        sim.fhir(reqwest::Method::PUT, &format!("/Task/{id}"), Some(&moved))
            .0,
        200
    );
    assert_eq!(run(&["plan", "--detailed-exitcode"]).status.code(), Some(0));
    assert!(run(&["apply", "--auto-approve"]).status.success());
    let now = sim.search("Task?status=requested")[0].clone();
    assert_eq!(
        now["extension"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["url"] == "http://schemas.canvasmedical.com/fhir/extensions/task-group")
            .unwrap()["valueReference"]["reference"],
        format!("Group/{other_id}")
    );
}

/// Routing happens once per task: a task a person re-routes after careplane routed it is
/// never reverted, and a task someone assigned before careplane saw it is left alone; a
/// new task is routed once (issue 10).
#[test]
fn a_persons_re_route_is_never_reverted_and_assigned_tasks_are_left_alone() {
    let server = Server::new();
    let project = unique("once");
    let staff = seed_staff(&server, &project, 2);
    let description = format!("Psych intake {project}");
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
                "routing.yaml",
                format!(
                    "apiVersion: careplane.dev/v1\nkind: Team\nmetadata:\n  name: bh\nspec:\n  displayName: BH {project}\n---\napiVersion: careplane.dev/v1\nkind: RoutingRule\nmetadata:\n  name: intake\nspec:\n  match:\n    description: \"{description}\"\n  set:\n    team: bh\n"
                ),
            ),
        ],
    );
    assert!(apply(dir.path(), &[]).status.success()); // the team
    let other = server.post(
        &json!({"resourceType": "Group", "type": "practitioner", "actual": true,
        "name": format!("Someone else's team {project}")}),
    );
    let other_ref = format!("Group/{}", other["id"].as_str().unwrap());
    let ext = |g: &str| json!([{"url": "https://careplane.dev/fhir/StructureDefinition/task-team", "valueReference": {"reference": g}}]);
    let new_task = task(&server, &staff[0], &description, &[], "requested");
    let mut assigned = json!({"resourceType": "Task", "status": "requested", "intent": "order",
        "description": description, "requester": {"reference": format!("Practitioner/{}", staff[0].id)}});
    assigned["extension"] = ext(&other_ref);
    let assigned = server.post(&assigned);

    assert!(apply(dir.path(), &[]).status.success());
    let now = |t: &Value| server.get(&format!("Task/{}", t["id"].as_str().unwrap()));
    let bh = server
        .owned("Group", &project)
        .into_iter()
        .find(|g| g["identifier"][0]["value"] == "team/bh")
        .unwrap();
    let bh_ref = format!("Group/{}", bh["id"].as_str().unwrap());
    let routed = now(&new_task);
    assert_eq!(
        routed["extension"][0]["valueReference"]["reference"],
        bh_ref
    );
    assert_eq!(
        now(&assigned)["meta"]["versionId"],
        assigned["meta"]["versionId"],
        "a task someone assigned before careplane saw it is not touched"
    );

    // a person re-routes the task careplane routed
    let mut moved = routed.clone();
    moved["extension"] = ext(&other_ref);
    let moved = server.put(&moved);
    careplane()
        .arg("plan")
        .arg(dir.path())
        .args(["--server", &fhir_url(), "--detailed-exitcode"])
        .assert()
        .code(0);
    assert!(apply(dir.path(), &[]).status.success());
    let after = now(&moved);
    assert_eq!(after["meta"]["versionId"], moved["meta"]["versionId"]);
    assert_eq!(
        after["extension"][0]["valueReference"]["reference"],
        other_ref
    );
}
