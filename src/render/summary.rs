//! Machine-readable summaries of commands that otherwise print prose: `validate`, `test`
//! and `export` with `--format json`. One JSON document each, ending in a newline.

use serde_json::{Value, json};

use crate::manifest::Manifests;
use crate::ruletest::TestResult;

fn doc(v: Value) -> String {
    let mut s = serde_json::to_string_pretty(&v).expect("summaries serialize");
    s.push('\n');
    s
}

/// `validate --format json` on valid manifests.
pub fn validate(m: &Manifests, skipped: &[String]) -> String {
    let d = &m.desired;
    doc(json!({
        "valid": true,
        "project": d.project,
        "files": m.files.len(),
        "checksum": m.checksum,
        "counts": {
            "roles": d.roles.len(),
            "careTeamRoles": d.care_team_roles.len(),
            "teams": d.teams.len(),
            "roleAssignments": d.assignments.len(),
            "patientGroups": d.patient_groups.len(),
            "routingRules": d.routing_rules.len(),
            "ruleTests": d.rule_tests.len(),
        },
        "skipped": skipped,
        "errors": [],
    }))
}

/// `test --format json`: each rule test, passed or with its failures.
pub fn rule_tests(results: &[TestResult]) -> String {
    let tests: Vec<Value> = results
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "source": r.source.to_string(),
                "passed": r.failures.is_empty(),
                "failures": r.failures,
            })
        })
        .collect();
    let failed = results.iter().filter(|r| !r.failures.is_empty()).count();
    doc(json!({
        "passed": results.len() - failed,
        "failed": failed,
        "tests": tests,
    }))
}

/// `export --format json`: what was written where.
pub fn export(out: &str, target: &str, files: &[String]) -> String {
    doc(json!({
        "out": out,
        "target": target,
        "files": files,
    }))
}
