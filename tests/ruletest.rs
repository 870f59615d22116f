//! `careplane test`: rule tests next to the manifests, offline.

mod common;

use common::{careplane, write};
use predicates::str::contains;

#[test]
fn the_example_clinics_rule_tests_pass() {
    careplane()
        .arg("test")
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/clinic"))
        .assert()
        .success()
        .stdout(contains("ok opt-out-and-aco-seniors"))
        .stdout(contains("ok pcp-panel"))
        .stdout(contains("rule tests: 3 passed, 0 failed"));
}

#[test]
fn a_failing_expectation_says_what_differs() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            ("teams.yaml", "apiVersion: careplane.dev/v1\nkind: Team\nmetadata:\n  name: bh\nspec: {}\n".into()),
            (
                "rules.yaml",
                "apiVersion: careplane.dev/v1\nkind: PatientGroup\nmetadata:\n  name: women\nspec:\n  rule:\n    gender: female\n---\napiVersion: careplane.dev/v1\nkind: RoutingRule\nmetadata:\n  name: r\nspec:\n  match:\n    label: Urgent\n  set:\n    team: bh\n".into(),
            ),
            (
                "tests/t.yaml",
                "apiVersion: careplane.dev/v1\nkind: RuleTest\nmetadata:\n  name: wrong\nspec:\n  fixtures:\n    - {resourceType: Patient, id: a, gender: female}\n    - {resourceType: Patient, id: b, gender: male}\n    - {resourceType: Task, id: t, status: requested, description: x}\n  expect:\n    groups:\n      women: [b]\n    routing:\n      t: {rule: r}\n".into(),
            ),
        ],
    );
    careplane()
        .arg("test")
        .arg(dir.path())
        .assert()
        .code(1)
        .stdout(contains("FAILED wrong  tests/t.yaml:4:9"))
        .stdout(contains("- Patient/b   (expected, not there)"))
        .stdout(contains("+ Patient/a   (there, not expected)"))
        .stdout(contains("task 't': routed by 'none', expected 'r'"))
        .stdout(contains("rule tests: 0 passed, 1 failed"));
}

#[test]
fn an_expectation_about_an_undeclared_group_is_a_validation_error() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[(
            "t.yaml",
            "apiVersion: careplane.dev/v1\nkind: RuleTest\nmetadata:\n  name: t\nspec:\n  fixtures: []\n  expect:\n    groups:\n      nope: []\n".into(),
        )],
    );
    careplane()
        .arg("validate")
        .arg(dir.path())
        .assert()
        .code(1)
        .stderr(contains(
            "expects members of 'nope', which is not a declared PatientGroup",
        ));
}

/// A care-team assignment's expectation, by patient group and by rule: the test passes when
/// it selects exactly the expected patients and says who differs when not.
#[test]
fn care_team_expectations_check_the_patients_an_assignment_selects() {
    let dir = tempfile::tempdir().unwrap();
    let manifests = "apiVersion: careplane.dev/v1\nkind: CareTeamRole\nmetadata:\n  name: pcp\nspec:\n  code: {code: \"453231000124104\", display: Primary care provider}\n---\napiVersion: careplane.dev/v1\nkind: PatientGroup\nmetadata:\n  name: women\nspec:\n  rule:\n    gender: female\n---\napiVersion: careplane.dev/v1\nkind: CareTeamAssignment\nmetadata:\n  name: by-group\nspec:\n  practitioner: {npi: \"1234567893\"}\n  careTeamRole: pcp\n  patients: {group: women}\n---\napiVersion: careplane.dev/v1\nkind: CareTeamAssignment\nmetadata:\n  name: by-rule\nspec:\n  practitioner: {npi: \"1234567893\"}\n  careTeamRole: pcp\n  patients:\n    rule:\n      gender: male\n";
    let test = |by_group: &str, by_rule: &str| {
        format!(
            "apiVersion: careplane.dev/v1\nkind: RuleTest\nmetadata:\n  name: panel\nspec:\n  fixtures:\n    - {{resourceType: Patient, id: a, gender: female}}\n    - {{resourceType: Patient, id: b, gender: male}}\n  expect:\n    careTeams:\n      by-group: [{by_group}]\n      by-rule: [{by_rule}]\n"
        )
    };
    write(
        dir.path(),
        &[("rules.yaml", manifests.into()), ("t.yaml", test("a", "b"))],
    );
    careplane()
        .arg("test")
        .arg(dir.path())
        .assert()
        .success()
        .stdout(contains("ok panel"));
    write(dir.path(), &[("t.yaml", test("b", "a"))]);
    careplane()
        .arg("test")
        .arg(dir.path())
        .assert()
        .code(1)
        .stdout(contains(
            "care-team assignment 'by-group' puts npi 1234567893 on other care teams",
        ))
        .stdout(contains(
            "care-team assignment 'by-rule' puts npi 1234567893 on other care teams",
        ))
        .stdout(contains("- Patient/b   (expected, not there)"))
        .stdout(contains("+ Patient/a   (there, not expected)"));
    // an assignment that is not declared is a validation error, not a silent pass
    write(
        dir.path(),
        &[("t.yaml", test("a", "b").replace("by-rule:", "by-typo:"))],
    );
    careplane()
        .arg("validate")
        .arg(dir.path())
        .assert()
        .code(1)
        .stderr(contains(
            "expects the care teams of 'by-typo', which is not a declared CareTeamAssignment",
        ));
}
