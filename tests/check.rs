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
