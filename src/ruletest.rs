//! `careplane test`: run the rule tests written next to the manifests (`kind: RuleTest`):
//! evaluate patient-group and routing rules over the fixtures, compare with the
//! expectations. Decides only; the CLI renders the results.

use std::collections::{BTreeMap, BTreeSet};

use similar::{ChangeTag, TextDiff};

use crate::model::{DesiredState, RuleTest, Source};
use crate::rules;
use crate::vocab::StaffIndex;

/// The outcome of one rule test.
#[derive(Clone, Debug, PartialEq)]
pub struct TestResult {
    pub name: String,
    pub source: Source,
    /// Readable failures (empty: passed).
    pub failures: Vec<String>,
}

/// `- expected` / `+ got` lines for two sets.
fn set_diff(expected: &BTreeSet<String>, got: &BTreeSet<String>) -> String {
    let a = expected.iter().cloned().collect::<Vec<_>>().join("\n") + "\n";
    let b = got.iter().cloned().collect::<Vec<_>>().join("\n") + "\n";
    let mut out = String::new();
    for c in TextDiff::from_lines(&a, &b).iter_all_changes() {
        let line = c.value().trim_end();
        if line.is_empty() {
            continue;
        }
        match c.tag() {
            ChangeTag::Delete => {
                out.push_str(&format!("\n        - {line}   (expected, not there)"))
            }
            ChangeTag::Insert => {
                out.push_str(&format!("\n        + {line}   (there, not expected)"))
            }
            ChangeTag::Equal => {}
        }
    }
    out
}

fn run_one(desired: &DesiredState, t: &RuleTest) -> TestResult {
    let mut failures = Vec::new();
    let facts = rules::facts(&t.fixtures);
    let staff = StaffIndex::from_practitioners(
        &t.fixtures
            .iter()
            .filter(|r| r["resourceType"] == "Practitioner")
            .cloned()
            .collect::<Vec<_>>(),
    );
    let resolve = |r: &crate::model::PractitionerRef| {
        staff.resolve(r).ok().map(|id| format!("Practitioner/{id}"))
    };
    let ctr: BTreeMap<String, String> = desired
        .care_team_roles
        .iter()
        .map(|r| (r.name.clone(), format!("{}|{}", r.system, r.code)))
        .collect();
    let groups = rules::evaluate(
        &desired.patient_groups,
        &facts,
        rules::today(),
        &resolve,
        &ctr,
    );
    for (name, ids) in &t.expect.groups {
        let expected: BTreeSet<String> = ids.iter().map(|i| format!("Patient/{i}")).collect();
        let got = groups.get(name).cloned().unwrap_or_default();
        if expected != got {
            failures.push(format!(
                "group '{name}' has other members:{}",
                set_diff(&expected, &got)
            ));
        }
    }
    for (name, ids) in &t.expect.care_teams {
        // load checks the name; a test built in memory may still miss it
        let Some(a) = desired
            .care_team_assignments
            .iter()
            .find(|a| &a.name == name)
        else {
            failures.push(format!("care-team assignment '{name}' is not declared"));
            continue;
        };
        // the patients it selects, as reconcile selects them: its group's members, or
        // the patients its rule holds for
        let got: BTreeSet<String> = match (&a.group, &a.rule) {
            (Some(g), _) => groups.get(g).cloned().unwrap_or_default(),
            (None, Some(rule)) => {
                let ctx = rules::Context {
                    groups: &groups,
                    on: rules::today(),
                    staff: &resolve,
                    care_team_roles: &ctr,
                };
                facts
                    .values()
                    .filter(|p| rules::holds(rule, p, &ctx))
                    .map(|p| format!("Patient/{}", p.id))
                    .collect()
            }
            (None, None) => BTreeSet::new(),
        };
        let expected: BTreeSet<String> = ids.iter().map(|i| format!("Patient/{i}")).collect();
        if expected != got {
            failures.push(format!(
                "care-team assignment '{name}' puts {} on other care teams:{}",
                a.practitioner.value,
                set_diff(&expected, &got)
            ));
        }
    }
    let tasks = rules::task_facts(&t.fixtures);
    let routes: BTreeMap<&str, usize> = rules::route(&tasks, &desired.routing_rules, &groups)
        .into_iter()
        .map(|(ti, ri)| (tasks[ti].id.as_str(), ri))
        .collect();
    for (task, want) in &t.expect.routing {
        let Some(facts) = tasks.iter().find(|x| &x.id == task) else {
            failures.push(format!(
                "task '{task}' is not an open task among the fixtures"
            ));
            continue;
        };
        let rule = routes
            .get(task.as_str())
            .map(|ri| &desired.routing_rules[*ri]);
        let got_rule = rule.map(|r| r.name.as_str()).unwrap_or("none");
        if got_rule != want.rule {
            failures.push(format!(
                "task '{task}': routed by '{got_rule}', expected '{}'",
                want.rule
            ));
            continue;
        }
        if let Some(team) = &want.team {
            let got = rule.and_then(|r| r.team.as_deref()).unwrap_or("(none)");
            if got != team {
                failures.push(format!("task '{task}': team '{got}', expected '{team}'"));
            }
        }
        if let Some(labels) = &want.labels {
            let mut got: BTreeSet<String> = facts.labels.iter().cloned().collect();
            if let Some(r) = rule {
                got.extend(r.add_labels.iter().cloned());
            }
            let expected: BTreeSet<String> = labels.iter().cloned().collect();
            if expected != got {
                failures.push(format!(
                    "task '{task}' has other labels:{}",
                    set_diff(&expected, &got)
                ));
            }
        }
    }
    TestResult {
        name: t.name.clone(),
        source: t.source.clone(),
        failures,
    }
}

/// Run every rule test.
pub fn run(desired: &DesiredState) -> Vec<TestResult> {
    desired
        .rule_tests
        .iter()
        .map(|t| run_one(desired, t))
        .collect()
}
