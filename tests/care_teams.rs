//! Care-team assignment rules: a staff member in a care-team role on the care teams of
//! selected patients, merged into what is there (Canvas: CareTeam PUT replaces the active
//! team), on the Canvas simulator and the real FHIR server. No patient ids in plans.

mod common;

use common::canvas::{CLIENT_ID, CLIENT_SECRET, Sim, practitioner, practitioner_id};
use common::*;
use serde_json::{Value, json};

const PCP: (&str, &str) = ("453231000124104", "Primary care provider");
const RN: (&str, &str) = ("224535009", "Registered nurse");

fn role(c: (&str, &str)) -> Value {
    json!([{"coding": [{"system": "http://snomed.info/sct", "code": c.0, "display": c.1}]}])
}

fn manifests(authoritative: bool) -> String {
    format!(
        "apiVersion: careplane.dev/v1\nkind: CareTeamRole\nmetadata:\n  name: pcp\nspec:\n  code: {{code: \"{}\", display: {}}}\n---\napiVersion: careplane.dev/v1\nkind: PatientGroup\nmetadata:\n  name: active\nspec:\n  mode: authoritative\n  rule:\n    active: true\n---\napiVersion: careplane.dev/v1\nkind: CareTeamAssignment\nmetadata:\n  name: dr-zero-pcp\nspec:\n  practitioner: {{id: {}}}\n  careTeamRole: pcp\n  patients: {{group: active}}\n  lead: true\n  authoritative: {authoritative}\n  maxRemovalShare: 1\n",
        PCP.0,
        PCP.1,
        practitioner_id(0)
    )
}

#[test]
fn canvas_care_teams_are_merged_never_replaced() {
    let sim = Sim::start();
    let staff: Vec<Value> = (0..3).map(|i| practitioner(i, &[])).collect();
    sim.seed(json!({"resources": staff, "careTeamRoles": [
        {"system": "http://snomed.info/sct", "code": PCP.0, "display": PCP.1},
        {"system": "http://snomed.info/sct", "code": RN.0, "display": RN.1}]}));
    let patients: Vec<Value> = (0..6)
        .map(|i| json!({"resourceType": "Patient", "id": format!("{:032x}", 0xabc0_u64 + i), "active": i != 5,
                        "name": [{"family": "P", "given": ["T"]}], "birthDate": "1970-01-01"}))
        .collect();
    let ids: Vec<String> = sim.seed(json!({"resources": patients}));
    let put = |pid: &str, participants: Value| {
        let body = json!({"resourceType": "CareTeam", "id": pid, "status": "active", "subject": {"reference": format!("Patient/{pid}")}, "participant": participants});
        let (status, b) = sim.fhir(
            reqwest::Method::PUT,
            &format!("/CareTeam/{pid}"),
            Some(&body),
        );
        assert_eq!(status, 200, "{b}");
    };
    // p1 already has a nurse; p2 already has another PCP
    put(
        &ids[1],
        json!([{"role": role(RN), "member": {"reference": format!("Practitioner/{}", practitioner_id(1))}}]),
    );
    put(
        &ids[2],
        json!([{"role": role(PCP), "member": {"reference": format!("Practitioner/{}", practitioner_id(2))}}]),
    );

    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            ("careplane.yaml", sim.project_file("")),
            ("care.yaml", manifests(false)),
        ],
    );
    let run = |args: &[&str]| {
        careplane()
            .args(args)
            .arg(dir.path())
            .env("SIM_ID", CLIENT_ID)
            .env("SIM_SECRET", CLIENT_SECRET)
            .env("CAREPLANE_PSEUDONYM_KEY", "k")
            .output()
            .unwrap()
    };
    let out = run(&["plan", "--format", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        ids.iter().all(|id| !text.contains(id.as_str())),
        "no patient ids in the plan"
    );
    let plan: Value = serde_json::from_str(&text).unwrap();
    // care-team participants are an effect of the assignment: previewed per rule
    let c = plan["effects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "care-team-assignment")
        .unwrap();
    assert_eq!(
        (c["adds"].as_u64(), c["removes"].as_u64()),
        (Some(4), Some(0)),
        "{c:#}"
    );
    assert!(
        c["notes"][0]
            .as_str()
            .unwrap()
            .contains("1 selected patient(s) have someone else as Primary care provider")
    );

    let out = careplane()
        .args(["apply", "--auto-approve"])
        .arg(dir.path())
        .env("SIM_ID", CLIENT_ID)
        .env("SIM_SECRET", CLIENT_SECRET)
        .env("CAREPLANE_PSEUDONYM_KEY", "k")
        .env("CAREPLANE_LOG", "requests")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(log.contains("update CareTeam/(id withheld)"), "{log}");
    assert!(
        ids.iter().all(|id| !log.contains(id.as_str())),
        "Canvas CareTeam ids are patient ids: never logged: {log}"
    );
    let team = |pid: &str| {
        sim.fhir(reqwest::Method::GET, &format!("/CareTeam/{pid}"), None)
            .1
    };
    let members = |t: &Value| -> Vec<(String, String)> {
        t["participant"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                (
                    p["member"]["reference"].as_str().unwrap().to_owned(),
                    p["role"][0]["coding"][0]["code"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                )
            })
            .collect()
    };
    let p1 = members(&team(&ids[1]));
    assert!(
        p1.contains(&(
            format!("Practitioner/{}", practitioner_id(1)),
            RN.0.to_owned()
        )),
        "the nurse stays: {p1:?}"
    );
    assert!(
        p1.contains(&(
            format!("Practitioner/{}", practitioner_id(0)),
            PCP.0.to_owned()
        )),
        "{p1:?}"
    );
    assert_eq!(
        members(&team(&ids[2])),
        [(
            format!("Practitioner/{}", practitioner_id(2)),
            PCP.0.to_owned()
        )],
        "another PCP left alone"
    );
    assert!(
        members(&team(&ids[5])).is_empty(),
        "inactive patient not selected"
    );
    let lead = team(&ids[0])["participant"][0]["extension"].clone();
    assert!(
        lead.to_string().contains("careteam-lead") && lead.to_string().contains("true"),
        "{lead}"
    );
    assert_eq!(
        run(&["plan", "--detailed-exitcode"]).status.code(),
        Some(0),
        "converged"
    );

    // authoritative: the role is taken over on p2, and dropped where a patient leaves
    std::fs::write(dir.path().join("care.yaml"), manifests(true)).unwrap();
    let out = run(&["apply", "--auto-approve"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        members(&team(&ids[2])),
        [(
            format!("Practitioner/{}", practitioner_id(0)),
            PCP.0.to_owned()
        )]
    );
    assert_eq!(run(&["plan", "--detailed-exitcode"]).status.code(), Some(0));
}

#[test]
fn fhir_care_teams_are_careplanes_own_and_converge() {
    let server = Server::new();
    let project = unique("cta");
    let staff = seed_staff(&server, &project, 1);
    let system = format!("urn:test:{project}");
    for i in 0..5 {
        server.post(&json!({"resourceType": "Patient", "identifier": [{"system": system, "value": format!("{i}")}]}));
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
                "care.yaml",
                format!(
                    "apiVersion: careplane.dev/v1\nkind: CareTeamRole\nmetadata:\n  name: pcp\nspec:\n  code: {{code: \"{}\", display: {}}}\n---\napiVersion: careplane.dev/v1\nkind: CareTeamAssignment\nmetadata:\n  name: panel\nspec:\n  practitioner: {{npi: \"{}\"}}\n  careTeamRole: pcp\n  patients:\n    rule:\n      identifier: {{system: \"{system}\"}}\n",
                    PCP.0, PCP.1, staff[0].npi
                ),
            ),
        ],
    );
    let out = apply(dir.path(), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let teams = server.owned("CareTeam", &project);
    assert_eq!(teams.len(), 5);
    assert!(
        teams
            .iter()
            .all(|t| t["participant"][0]["member"]["reference"]
                == format!("Practitioner/{}", staff[0].id))
    );
    careplane()
        .arg("plan")
        .arg(dir.path())
        .args(["--server", &fhir_url(), "--detailed-exitcode"])
        .assert()
        .code(0);
}

/// A care team's (member, role code, lead) triples, as read back.
fn leads(t: &Value) -> Vec<(String, String, bool)> {
    t["participant"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let lead = p["extension"].as_array().into_iter().flatten().any(|e| {
                e["url"].as_str().unwrap_or("").ends_with("lead") && e["valueBoolean"] == true
            });
            (
                p["member"]["reference"].as_str().unwrap().to_owned(),
                p["role"][0]["coding"][0]["code"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                lead,
            )
        })
        .collect()
}

/// The one care-team assignment's effects preview in a JSON plan.
fn preview<'a>(plan: &'a Value, rule: &str) -> &'a Value {
    plan["effects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "care-team-assignment" && e["rule"] == rule)
        .unwrap_or_else(|| panic!("no preview for {rule}: {plan:#}"))
}

#[test]
fn canvas_lead_handovers_are_planned_counted_pseudonymised_and_applied() {
    let sim = Sim::start();
    let staff: Vec<Value> = (0..2).map(|i| practitioner(i, &[])).collect();
    sim.seed(json!({"resources": staff, "careTeamRoles": [
        {"system": "http://snomed.info/sct", "code": PCP.0, "display": PCP.1},
        {"system": "http://snomed.info/sct", "code": RN.0, "display": RN.1}]}));
    let patients: Vec<Value> = (0..3)
        .map(|i| json!({"resourceType": "Patient", "id": format!("{:032x}", 0xdef0_u64 + i), "active": true,
                        "name": [{"family": "P", "given": ["T"]}], "birthDate": "1970-01-01"}))
        .collect();
    let ids: Vec<String> = sim.seed(json!({"resources": patients}));
    let lead_ext = |on: bool| json!([{"url": "http://schemas.canvasmedical.com/fhir/extensions/careteam-lead", "valueBoolean": on}]);
    let (zero, one) = (
        format!("Practitioner/{}", practitioner_id(0)),
        format!("Practitioner/{}", practitioner_id(1)),
    );
    let put = |pid: &str, participants: Value| {
        let body = json!({"resourceType": "CareTeam", "id": pid, "status": "active", "subject": {"reference": format!("Patient/{pid}")}, "participant": participants});
        let (status, b) = sim.fhir(
            reqwest::Method::PUT,
            &format!("/CareTeam/{pid}"),
            Some(&body),
        );
        assert_eq!(status, 200, "{b}");
    };
    // p0: the nurse leads, dr zero is PCP but not lead (set by hand): a handover to a member;
    // p1: the nurse leads, dr zero joins: an add and a handover;
    // p2: dr zero leads already: nothing
    put(
        &ids[0],
        json!([{"extension": lead_ext(true), "role": role(RN), "member": {"reference": one}},
               {"extension": lead_ext(false), "role": role(PCP), "member": {"reference": zero}}]),
    );
    put(
        &ids[1],
        json!([{"extension": lead_ext(true), "role": role(RN), "member": {"reference": one}}]),
    );
    put(
        &ids[2],
        json!([{"extension": lead_ext(true), "role": role(PCP), "member": {"reference": zero}},
               {"extension": lead_ext(false), "role": role(RN), "member": {"reference": one}}]),
    );
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            ("careplane.yaml", sim.project_file("")),
            ("care.yaml", manifests(false)),
        ],
    );
    let run = |args: &[&str]| {
        careplane()
            .args(args)
            .arg(dir.path())
            .env("SIM_ID", CLIENT_ID)
            .env("SIM_SECRET", CLIENT_SECRET)
            .env("CAREPLANE_PSEUDONYM_KEY", "k")
            .env("CAREPLANE_LOG", "requests")
            .output()
            .unwrap()
    };
    let out = run(&["plan", "--format", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        ids.iter().all(|id| !text.contains(id.as_str())),
        "no patient ids: {text}"
    );
    let plan: Value = serde_json::from_str(&text).unwrap();
    let e = preview(&plan, "dr-zero-pcp");
    assert_eq!(
        (
            e["adds"].as_u64(),
            e["removes"].as_u64(),
            e["lead_handovers"].as_u64()
        ),
        (Some(1), Some(0), Some(2)),
        "{e:#}"
    );
    let samples = e["sample_lead_handovers"].as_array().unwrap();
    assert_eq!(samples.len(), 2);
    assert!(
        samples
            .iter()
            .all(|s| s.as_str().unwrap().starts_with("pt-")),
        "{e:#}"
    );
    // the human and Markdown plans say so too
    let human = String::from_utf8(run(&["plan"]).stdout).unwrap();
    assert!(
        human.contains("+1 -0 patient care team(s), 2 lead handover(s)"),
        "{human}"
    );
    assert!(human.contains("lead handed over, e.g.: pt-"), "{human}");
    let md = String::from_utf8(run(&["plan", "--format", "markdown"]).stdout).unwrap();
    assert!(
        md.contains("patient care team(s), 2 lead handover(s)"),
        "{md}"
    );
    assert!(
        ids.iter()
            .all(|id| !human.contains(id.as_str()) && !md.contains(id.as_str()))
    );

    let out = run(&["apply", "--auto-approve"]);
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{log}");
    // one CareTeam PUT per patient handed over (the join carries its handover)
    assert_eq!(
        log.matches("update CareTeam/(id withheld)").count(),
        2,
        "{log}"
    );
    let team = |pid: &str| {
        sim.fhir(reqwest::Method::GET, &format!("/CareTeam/{pid}"), None)
            .1
    };
    let mut want = vec![
        (zero.clone(), PCP.0.to_owned(), true),
        (one.clone(), RN.0.to_owned(), false),
    ];
    want.sort();
    for pid in &ids[..2] {
        let mut t = leads(&team(pid));
        t.sort();
        assert_eq!(
            t, want,
            "dr zero leads, the nurse stays on the team without the lead"
        );
    }
    assert_eq!(
        run(&["plan", "--detailed-exitcode"]).status.code(),
        Some(0),
        "converged"
    );
}

#[test]
fn fhir_lead_handovers_are_planned_counted_pseudonymised_and_applied() {
    let server = Server::new();
    let project = unique("ctl");
    let staff = seed_staff(&server, &project, 2);
    let system = format!("urn:test:{project}");
    for i in 0..3 {
        server.post(&json!({"resourceType": "Patient", "identifier": [{"system": system, "value": format!("{i}")}]}));
    }
    let dir = tempfile::tempdir().unwrap();
    // the nurse leads first; then the PCP, on the care teams already, takes the lead
    let care = |pcp_leads: bool| {
        format!(
            "apiVersion: careplane.dev/v1\nkind: CareTeamRole\nmetadata:\n  name: pcp\nspec:\n  code: {{code: \"{}\", display: {}}}\n---\napiVersion: careplane.dev/v1\nkind: CareTeamRole\nmetadata:\n  name: rn\nspec:\n  code: {{code: \"{}\", display: {}}}\n---\napiVersion: careplane.dev/v1\nkind: CareTeamAssignment\nmetadata:\n  name: panel\nspec:\n  practitioner: {{npi: \"{}\"}}\n  careTeamRole: pcp\n  patients:\n    rule:\n      identifier: {{system: \"{system}\"}}\n  lead: {pcp_leads}\n---\napiVersion: careplane.dev/v1\nkind: CareTeamAssignment\nmetadata:\n  name: nursing\nspec:\n  practitioner: {{npi: \"{}\"}}\n  careTeamRole: rn\n  patients:\n    rule:\n      identifier: {{system: \"{system}\"}}\n  lead: {}\n",
            PCP.0, PCP.1, RN.0, RN.1, staff[0].npi, staff[1].npi, !pcp_leads
        )
    };
    write(
        dir.path(),
        &[
            (
                "careplane.yaml",
                format!(
                    "apiVersion: careplane.dev/v1\nkind: Project\nmetadata:\n  name: {project}\nspec: {{}}\n"
                ),
            ),
            ("care.yaml", care(false)),
        ],
    );
    let out = apply(dir.path(), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let (pcp, rn) = (
        format!("Practitioner/{}", staff[0].id),
        format!("Practitioner/{}", staff[1].id),
    );
    let sorted = |t: &Value| {
        let mut l = leads(t);
        l.sort();
        l
    };
    for t in server.owned("CareTeam", &project) {
        assert!(
            sorted(&t).contains(&(rn.clone(), RN.0.to_owned(), true)),
            "{t:#}"
        );
    }

    std::fs::write(dir.path().join("care.yaml"), care(true)).unwrap();
    let plan = |format: &str| {
        careplane()
            .arg("plan")
            .arg(dir.path())
            .args(["--server", &fhir_url(), "--format", format])
            .env("CAREPLANE_PSEUDONYM_KEY", "k")
            .output()
            .unwrap()
    };
    let out = plan("json");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let teams = server.owned("CareTeam", &project);
    assert_eq!(teams.len(), 3);
    for t in &teams {
        let pid = t["subject"]["reference"]
            .as_str()
            .unwrap()
            .trim_start_matches("Patient/");
        assert!(!text.contains(pid), "no patient ids in the plan");
    }
    let plan_value: Value = serde_json::from_str(&text).unwrap();
    let e = preview(&plan_value, "panel");
    assert_eq!(
        (
            e["adds"].as_u64(),
            e["removes"].as_u64(),
            e["lead_handovers"].as_u64()
        ),
        (Some(0), Some(0), Some(3)),
        "{e:#}"
    );
    assert_eq!(e["sample_lead_handovers"].as_array().unwrap().len(), 3);
    // `lead: false` takes nobody's lead away: the nurse's assignment plans nothing
    assert!(
        plan_value["effects"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["rule"] != "nursing"),
        "{plan_value:#}"
    );
    let human = String::from_utf8(plan("human").stdout).unwrap();
    assert!(
        human.contains("+0 -0 patient care team(s), 3 lead handover(s)"),
        "{human}"
    );

    // reviewed as a saved plan: apply --plan recomputes the handovers and compares them
    let file = dir.path().join("reviewed.plan.json");
    save_plan(dir.path(), &file);
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(preview(&saved, "panel")["lead_handovers"], 3, "{saved:#}");
    let out = apply_saved(dir.path(), &file).success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(
        text.contains("reviewed +0 -0, now +0 -0 patient care team(s); lead handovers reviewed 3, now 3: applied"),
        "{text}"
    );
    let mut want = vec![
        (pcp.clone(), PCP.0.to_owned(), true),
        (rn.clone(), RN.0.to_owned(), false),
    ];
    want.sort();
    for t in server.owned("CareTeam", &project) {
        assert_eq!(sorted(&t), want, "{t:#}");
    }
    careplane()
        .arg("plan")
        .arg(dir.path())
        .args(["--server", &fhir_url(), "--detailed-exitcode"])
        .assert()
        .code(0);
}
