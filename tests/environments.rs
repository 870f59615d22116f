//! One set of manifests, several environments: ${NAME} variables from --var, the
//! environment, or the target's Values document.

mod common;

use common::{careplane, write};
use predicates::str::contains;

const PRACTITIONERS: &str = r#"{"resourceType":"Practitioner","id":"dev-1","identifier":[{"system":"http://hl7.org/fhir/sid/us-npi","value":"1111111111"}]}
{"resourceType":"Practitioner","id":"prod-1","identifier":[{"system":"http://hl7.org/fhir/sid/us-npi","value":"2222222222"}]}
"#;

fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            (
                "careplane.yaml",
                "apiVersion: careplane.dev/v1\nkind: Project\nmetadata:\n  name: env\nspec:\n  defaultTarget: dev\n  targets:\n    dev:\n      type: file\n      path: store\n      values: dev\n    prod:\n      type: file\n      path: store\n      values: prod\n".into(),
            ),
            (
                "values.yaml",
                "apiVersion: careplane.dev/v1\nkind: Values\nmetadata:\n  name: dev\nspec:\n  LEAD: dev-1\n  SUFFIX: (dev)\n---\napiVersion: careplane.dev/v1\nkind: Values\nmetadata:\n  name: prod\nspec:\n  LEAD: prod-1\n".into(),
            ),
            (
                "teams.yaml",
                "apiVersion: careplane.dev/v1\nkind: Team\nmetadata:\n  name: leads\nspec:\n  displayName: Leads ${SUFFIX} $${not-a-variable}\n  members:\n    - id: ${LEAD}\n".into(),
            ),
            ("store/Practitioner.ndjson", PRACTITIONERS.into()),
        ],
    );
    dir
}

fn plan_json(dir: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let out = careplane()
        .arg("plan")
        .arg(dir)
        .args(["--format", "json"])
        .args(args)
        .env_remove("SUFFIX")
        .env_remove("LEAD")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn fields(plan: &serde_json::Value) -> (serde_json::Value, serde_json::Value) {
    let f = plan["changes"][0]["fields"].as_array().unwrap();
    let get = |n: &str| f.iter().find(|x| x["field"] == n).unwrap()["after"].clone();
    (get("name"), get("members"))
}

#[test]
fn the_targets_values_fill_the_variables() {
    let dir = project();
    let (name, members) = fields(&plan_json(dir.path(), &[]));
    assert_eq!(name, "Leads (dev) ${not-a-variable}");
    assert_eq!(members, serde_json::json!(["Practitioner/dev-1"]));
}

#[test]
fn an_undefined_variable_is_a_validation_error_at_its_position() {
    let dir = project();
    careplane()
        .arg("validate")
        .arg(dir.path())
        .args(["--target", "prod", "--format", "plain"])
        .env_remove("SUFFIX")
        .assert()
        .code(1)
        .stderr(contains(
            "teams.yaml:6:16: error: variable ${SUFFIX} is not defined for target 'prod'",
        ))
        .stderr(contains("--var SUFFIX="));
}

#[test]
fn the_environment_and_var_flags_win_over_values() {
    let dir = project();
    let out = careplane()
        .arg("plan")
        .arg(dir.path())
        .args(["--target", "prod", "--format", "json"])
        .env("SUFFIX", "(prod)")
        .output()
        .unwrap();
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(fields(&plan).0, "Leads (prod) ${not-a-variable}");
    let (name, _) = fields(&plan_json(dir.path(), &["--var", "SUFFIX=(cli)"]));
    assert_eq!(name, "Leads (cli) ${not-a-variable}");
}

#[test]
fn a_saved_plan_is_refused_when_the_variables_differ() {
    let dir = project();
    let plan_file = dir.path().join("plan.json");
    careplane()
        .arg("plan")
        .arg(dir.path())
        .args(["--var", "SUFFIX=(a)", "--out"])
        .arg(&plan_file)
        .assert()
        .success();
    careplane()
        .arg("apply")
        .arg(dir.path())
        .args(["--var", "SUFFIX=(b)", "--plan"])
        .arg(&plan_file)
        .assert()
        .code(1)
        .stderr(contains("made from other manifests"));
    careplane()
        .arg("apply")
        .arg(dir.path())
        .args(["--var", "SUFFIX=(a)", "--plan"])
        .arg(&plan_file)
        .assert()
        .success();
}

#[test]
fn a_missing_values_document_is_named() {
    let dir = project();
    std::fs::write(dir.path().join("values.yaml"), "apiVersion: careplane.dev/v1\nkind: Values\nmetadata:\n  name: dev\nspec:\n  LEAD: dev-1\n  SUFFIX: x\n").unwrap();
    careplane()
        .arg("validate")
        .arg(dir.path())
        .args(["--target", "prod", "--format", "plain"])
        .assert()
        .code(1)
        .stderr(contains(
            "target 'prod' uses values 'prod', but no Values document has that name",
        ));
}

#[test]
fn per_target_overlays_pick_the_document_for_the_target() {
    let dir = project();
    std::fs::write(
        dir.path().join("overlays.yaml"),
        "apiVersion: careplane.dev/v1\nkind: Team\nmetadata:\n  name: on-call\n  targets: [dev]\nspec:\n  displayName: On call (dev)\n  members: [{id: dev-1}]\n---\napiVersion: careplane.dev/v1\nkind: Team\nmetadata:\n  name: on-call\n  targets: [prod]\nspec:\n  displayName: On call\n  members: [{id: prod-1}]\n",
    )
    .unwrap();
    let team = |plan: &serde_json::Value| {
        let c = plan["changes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["target"]["name"] == "on-call")
            .unwrap()
            .clone();
        c["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["field"] == "name")
            .unwrap()["after"]
            .clone()
    };
    assert_eq!(team(&plan_json(dir.path(), &[])), "On call (dev)");
    assert_eq!(
        team(&plan_json(
            dir.path(),
            &["--target", "prod", "--var", "SUFFIX=x"]
        )),
        "On call"
    );

    std::fs::write(
        dir.path().join("overlays.yaml"),
        "apiVersion: careplane.dev/v1\nkind: Team\nmetadata:\n  name: on-call\n  targets: [qa]\nspec: {}\n",
    )
    .unwrap();
    careplane()
        .arg("validate")
        .arg(dir.path())
        .args(["--format", "plain"])
        .assert()
        .code(1)
        .stderr(contains("overlays.yaml:5:13: error: metadata.targets names 'qa', which the project file does not declare"));
}

#[test]
fn a_variable_only_another_target_uses_need_not_be_defined() {
    let dir = project();
    let project = std::fs::read_to_string(dir.path().join("careplane.yaml")).unwrap();
    std::fs::write(
        dir.path().join("careplane.yaml"),
        format!("{project}    remote:\n      type: fhir\n      url: ${{REMOTE_URL}}\n"),
    )
    .unwrap();
    careplane()
        .arg("validate")
        .arg(dir.path())
        .env_remove("REMOTE_URL")
        .env_remove("SUFFIX")
        .assert()
        .success();
    careplane()
        .arg("validate")
        .arg(dir.path())
        .args(["--target", "remote", "--format", "plain"])
        .env_remove("REMOTE_URL")
        .assert()
        .code(1)
        .stderr(contains(
            "variable ${REMOTE_URL} is not defined for target 'remote'",
        ));
}
