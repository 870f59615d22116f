//! `careplane validate`: offline, every mistake reported at file:line:col with advice.

mod common;

use common::{careplane, write};
use predicates::str::contains;

const H: &str = "# yaml-language-server: $schema=../schema/careplane.schema.json\n";

fn validate(files: &[(&str, String)]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), files);
    let out = careplane()
        .arg("validate")
        .arg(dir.path())
        .args(["--format", "plain"])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).replace(&format!("{}/", dir.path().display()), "");
    (out.status.code().unwrap(), text)
}

fn role(name: &str, code: &str) -> String {
    format!(
        "apiVersion: careplane.dev/v1\nkind: Role\nmetadata:\n  name: {name}\nspec:\n  code: {code}\n  display: {name}\n  domain: clinical\n"
    )
}

#[test]
fn a_clean_directory_validates() {
    let (code, text) = validate(&[("roles.yaml", format!("{H}{}", role("physician", "MD")))]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("1 role(s)"), "{text}");
}

#[test]
fn each_kind_of_mistake_is_reported_at_its_position() {
    let teams = format!(
        "{H}apiVersion: careplane.dev/v1
kind: Team
metadata:
  name: front-desk
spec:
  responsibilities: [COLLECT_PATIENT_PAYMENTS, REVIEW_COVERAGES]
  members:
    - npi: \"1\"
---
apiVersion: careplane.dev/v1
kind: Team
metadata:
  name: billing
spec:
  responsibilities:
    - REVIEW_COVERAGES
    - PAY_EVERYTHING
  colour: blue
---
apiVersion: careplane.dev/v1
kind: Team
metadata:
  name: Front_Desk
spec: {{}}
"
    );
    let staff = format!(
        "{H}apiVersion: careplane.dev/v1
kind: RoleAssignment
metadata:
  name: dr-a
spec:
  practitioner:
    npi: \"1\"
  roles: [physician, surgeon]
---
apiVersion: careplane.dev/v1
kind: Role
metadata:
  name: physician
spec:
  code: MD
  display: Physician
  domain: clinical
---
apiVersion: careplane.dev/v1
kind: Role
metadata:
  name: physician
spec:
  code: DR
  display: Doctor
  domain: clinical
"
    );
    let dup_key = format!("{H}apiVersion: careplane.dev/v1\nkind: Role\nkind: Team\n");
    let reserved = format!(
        "{H}apiVersion: careplane.dev/v1\nkind: CareTeamAssignment\nmetadata:\n  name: r\nspec: {{}}\n"
    );
    let no_api = format!("{H}kind: Role\nmetadata:\n  name: x\nspec: {{}}\n");
    let (code, text) = validate(&[
        ("teams.yaml", teams),
        ("staff.yaml", staff),
        ("broken.yaml", dup_key),
        ("rules.yaml", reserved),
        ("old.yaml", no_api),
    ]);
    assert_eq!(code, 1);
    let expect = [
        // unknown enum value, with the allowed values
        ("teams.yaml:18:7:", "PAY_EVERYTHING"),
        // unknown field, pointing at the key
        ("teams.yaml:19:3:", "colour"),
        // bad name
        ("teams.yaml:24:9:", "Front_Desk"),
        // undeclared role
        ("staff.yaml:9:22:", "role 'surgeon' is not declared"),
        // duplicate name, naming the first
        (
            "staff.yaml:23:9:",
            "duplicate Role name 'physician' (first declared at staff.yaml:14:9)",
        ),
        // duplicate key
        ("broken.yaml:4:1:", "duplicate"),
        // a rule with its required parts missing
        ("rules.yaml:6:7:", "\"practitioner\" is a required property"),
        // missing apiVersion
        ("old.yaml:2:1:", "apiVersion"),
    ];
    for (pos, what) in expect {
        assert!(
            text.lines().any(|l| l.starts_with(pos) && l.contains(what)),
            "expected {pos} … {what} in:\n{text}"
        );
    }
    // every error comes with advice
    assert_eq!(
        text.matches(": error: ").count(),
        text.matches("    help: ").count(),
        "{text}"
    );
    assert!(text.contains("nothing was sent to any server"));
}

#[test]
fn a_responsibility_claimed_by_two_teams_names_both() {
    let teams = format!(
        "{H}apiVersion: careplane.dev/v1\nkind: Team\nmetadata:\n  name: a\nspec:\n  responsibilities: [PROCESS_REFILL_REQUESTS]\n---\napiVersion: careplane.dev/v1\nkind: Team\nmetadata:\n  name: b\nspec:\n  responsibilities:\n    - PROCESS_REFILL_REQUESTS\n"
    );
    let (code, text) = validate(&[("teams.yaml", teams)]);
    assert_eq!(code, 1);
    assert!(
        text.contains("teams.yaml:15:7: error: responsibility PROCESS_REFILL_REQUESTS is already claimed by team 'a' at teams.yaml:7:22"),
        "{text}"
    );
}

#[test]
fn github_format_emits_annotations() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[(
            "r.yaml",
            format!(
                "{H}apiVersion: careplane.dev/v1\nkind: Role\nmetadata:\n  name: x\nspec:\n  code: X\n  display: X\n  domain: surgical\n"
            ),
        )],
    );
    careplane()
        .current_dir(dir.path())
        .args(["validate", "--format", "github"])
        .assert()
        .code(1)
        .stdout(contains("::error file=r.yaml,line=9,col=11::"))
        .stdout(contains("surgical"));
}

#[test]
fn a_boolean_looking_string_is_not_silently_converted() {
    // `y` in YAML 1.1 is true; careplane reads it as the string "y" and the schema rejects it
    let (code, text) = validate(&[(
        "r.yaml",
        format!(
            "{H}apiVersion: careplane.dev/v1\nkind: Team\nmetadata:\n  name: y\nspec:\n  members:\n    - npi: yes\n"
        ),
    )]);
    assert_eq!(code, 0, "{text}");
}

#[test]
fn an_empty_directory_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    careplane()
        .arg("validate")
        .arg(dir.path())
        .assert()
        .code(1)
        .stderr(contains("no manifest files"));
}
