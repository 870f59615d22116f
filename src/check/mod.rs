//! Care-model checks (`careplane check`, and warnings in `validate`): manifests that are
//! valid YAML with sound references, but a care model a clinic would regret.
//!
//! Pure: [`run`] takes the desired model and returns [`Finding`]s, each at the manifest
//! position it is about. Nothing here prints, reads files or touches the network. The
//! findings name manifest objects and staff references only, never patients.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

pub mod care_model;
pub mod config;
pub mod live;
pub mod report;

use crate::model::{DesiredState, PractitionerRef, Responsibility, RoutingRule, Source};
pub use care_model::{CareModel, FitRule, LabelCatalog};

/// How much a finding matters: `error` fails `check` (exit 1); `validate` shows every
/// finding as a warning and never fails on one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// One care-model problem.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable id, e.g. `CP101`.
    pub id: &'static str,
    /// Stable name, e.g. `responsibility-unowned`.
    pub slug: &'static str,
    pub severity: Severity,
    /// The manifest position the finding is about.
    pub source: Source,
    /// What is wrong, for the clinic.
    pub message: String,
    /// What to do.
    pub help: String,
}

/// Every check: id, slug, default severity, what it means (README and `--help`).
pub const CHECKS: &[(&str, &str, Severity, &str)] = &[
    (
        "CP101",
        "responsibility-unowned",
        Severity::Warning,
        "teams are declared, and a responsibility is on none of them",
    ),
    (
        "CP102",
        "team-empty",
        Severity::Warning,
        "a team has no members",
    ),
    (
        "CP103",
        "care-team-role-unused",
        Severity::Info,
        "a declared care-team role no CareTeamAssignment uses",
    ),
    (
        "CP104",
        "routing-rule-shadowed",
        Severity::Error,
        "an earlier routing rule matches every task this one matches",
    ),
    (
        "CP105",
        "care-team-lead-duplicate",
        Severity::Error,
        "two `lead: true` care-team assignments for the same patients",
    ),
    (
        "CP106",
        "administrative-on-care-team",
        Severity::Error,
        "a care-team assignment names staff none of whose declared roles may hold the care-team role (CareModel; shipped: administrative roles are not on care teams)",
    ),
    (
        "CP107",
        "label-unknown",
        Severity::Warning,
        "a routing rule matches or adds a label outside the declared label catalog (Labels)",
    ),
    (
        "CP108",
        "role-unfit-for-responsibility",
        Severity::Warning,
        "a team member's declared roles may not hold one of the team's responsibilities (CareModel)",
    ),
    (
        "CP109",
        "suppression-invalid",
        Severity::Warning,
        "a `careplane:ignore` comment gives no reason or names no check, so it suppresses nothing",
    ),
    (
        "CP201",
        "staff-inactive",
        Severity::Warning,
        "live: a team member, routing owner or care-team assignment names staff who are inactive on the target",
    ),
    (
        "CP202",
        "staff-not-schedulable",
        Severity::Warning,
        "live (Canvas): a team member or routing owner is not schedulable, so Canvas hides them from staff pickers",
    ),
    (
        "CP203",
        "live-role-unfit",
        Severity::Warning,
        "live: a team member without a RoleAssignment holds roles on the target that may not hold one of the team's responsibilities (CareModel)",
    ),
    (
        "CP204",
        "care-team-lead-changed",
        Severity::Warning,
        "live: on care teams where a `lead: true` assignment's staff member is, someone else is the lead (changed outside careplane)",
    ),
    (
        "CP205",
        "role-undeclared",
        Severity::Warning,
        "live (where staff hold roles): a role code staff hold on the target that no Role declares",
    ),
    (
        "CP206",
        "role-unheld",
        Severity::Info,
        "live (where staff hold roles): a declared Role nobody on the target holds",
    ),
    (
        "CP207",
        "staff-unresolved",
        Severity::Error,
        "live: a routing rule's owner is not exactly one staff member on the target (routing resolves it only when a task matches)",
    ),
];

/// All eleven responsibilities, in Canvas's order.
pub const RESPONSIBILITIES: [Responsibility; 11] = [
    Responsibility::CollectSpecimensFromPatient,
    Responsibility::CommunicateDiagnosticResultsToPatient,
    Responsibility::CoordinateReferralsForPatient,
    Responsibility::ProcessRefillRequests,
    Responsibility::ProcessChangeRequests,
    Responsibility::ScheduleLabVisitsForPatient,
    Responsibility::PopulationHealthCampaignOutreach,
    Responsibility::CollectPatientPayments,
    Responsibility::CompleteOpenLabOrders,
    Responsibility::ReviewEraPostingExceptions,
    Responsibility::ReviewCoverages,
];

/// What Canvas does with a responsibility's team (reference: Canvas Team admin), or
/// `None` where Canvas has no logic for it yet.
pub fn canvas_effect(r: Responsibility) -> Option<&'static str> {
    use Responsibility::*;
    match r {
        CommunicateDiagnosticResultsToPatient => {
            Some("the task made when a reviewed result is delegated")
        }
        CoordinateReferralsForPatient => Some("the task made when a referral is delegated"),
        ProcessRefillRequests => Some("refill-request notifications"),
        PopulationHealthCampaignOutreach => Some("the task made when a campaign is created"),
        CollectPatientPayments => Some("the team phone number printed on patient statements"),
        CompleteOpenLabOrders => Some("the task made when an open lab order needs changes"),
        ReviewCoverages => Some("the task to finish documenting a coverage"),
        CollectSpecimensFromPatient
        | ProcessChangeRequests
        | ScheduleLabVisitsForPatient
        | ReviewEraPostingExceptions => None,
    }
}

/// What the checks read besides the desired model: the fit rules and the label catalog.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Inputs {
    pub care_model: CareModel,
    /// `None`: no Labels document, labels are not checked.
    pub labels: Option<LabelCatalog>,
}

/// Run every offline check with the shipped care model, findings in manifest order.
pub fn run(d: &DesiredState) -> Vec<Finding> {
    run_with(d, &Inputs::default())
}

/// Run every offline check, findings in manifest order (file, line, col, then id).
pub fn run_with(d: &DesiredState, inputs: &Inputs) -> Vec<Finding> {
    let mut out = Vec::new();
    responsibility_unowned(d, &mut out);
    team_empty(d, &mut out);
    care_team_role_unused(d, &mut out);
    routing_rule_shadowed(d, &mut out);
    care_team_lead_duplicate(d, &mut out);
    care_team_role_unfit(d, &inputs.care_model, &mut out);
    if let Some(labels) = &inputs.labels {
        label_unknown(d, labels, &mut out);
    }
    role_unfit_for_responsibility(d, &inputs.care_model, &mut out);
    sort(&mut out);
    out
}

/// Manifest order: file, line, col, then id.
pub fn sort(findings: &mut [Finding]) {
    findings.sort_by(|a, b| a.source.cmp(&b.source).then(a.id.cmp(b.id)));
}

/// Every check [`run_with`] runs, then the project's levels (`checks:` in the Project
/// document) and the `careplane:ignore` markers in `files`.
pub fn configured(
    findings: Vec<Finding>,
    levels: &BTreeMap<String, config::Level>,
    files: &BTreeMap<String, String>,
) -> Vec<Finding> {
    let mut out = config::with_levels(config::suppress(findings, files), levels);
    sort(&mut out);
    out
}

/// The checks' inputs the manifests declare (CareModel, Labels), defaults otherwise.
pub fn inputs(m: &crate::manifest::Manifests) -> Inputs {
    inputs_of(&m.desired)
}

/// The checks' inputs a desired model declares.
pub fn inputs_of(d: &DesiredState) -> Inputs {
    Inputs {
        care_model: d
            .care_model
            .as_ref()
            .map(CareModel::from_decl)
            .unwrap_or_default(),
        labels: d.labels.clone(),
    }
}

/// [`configured`] with the manifests' project levels and files.
pub fn configure(findings: Vec<Finding>, m: &crate::manifest::Manifests) -> Vec<Finding> {
    configured(findings, &m.project.checks, &m.files)
}

/// Findings without those whose id or slug is in `skip`.
pub fn without(findings: Vec<Finding>, skip: &[String]) -> Vec<Finding> {
    findings
        .into_iter()
        .filter(|f| {
            !skip
                .iter()
                .any(|s| s.eq_ignore_ascii_case(f.id) || s.eq_ignore_ascii_case(f.slug))
        })
        .collect()
}

/// Whether `s` names a check (id or slug).
pub fn is_check(s: &str) -> bool {
    CHECKS
        .iter()
        .any(|(id, slug, _, _)| s.eq_ignore_ascii_case(id) || s.eq_ignore_ascii_case(slug))
}

pub(crate) fn finding(id: &'static str, source: &Source, message: String, help: String) -> Finding {
    let (_, slug, severity, _) = CHECKS
        .iter()
        .find(|c| c.0 == id)
        .copied()
        .expect("a declared check");
    Finding {
        id,
        slug,
        severity,
        source: source.clone(),
        message,
        help,
    }
}

/// CP101: one finding for the responsibilities no team holds, at the first team (a
/// project that declares no team does not manage teams, and is not checked).
fn responsibility_unowned(d: &DesiredState, out: &mut Vec<Finding>) {
    let Some(first) = d.teams.first() else {
        return;
    };
    let owned: Vec<Responsibility> = d
        .teams
        .iter()
        .flat_map(|t| t.responsibilities.iter().map(|r| r.value))
        .collect();
    let missing: Vec<Responsibility> = RESPONSIBILITIES
        .iter()
        .copied()
        .filter(|r| !owned.contains(r))
        .collect();
    if missing.is_empty() {
        return;
    }
    let with_tasks: Vec<String> = missing
        .iter()
        .filter_map(|r| canvas_effect(*r).map(|e| format!("{} ({e})", r.code())))
        .collect();
    let quiet: Vec<String> = missing
        .iter()
        .filter(|r| canvas_effect(**r).is_none())
        .map(|r| r.code())
        .collect();
    let mut message = format!(
        "{} of the 11 responsibilities are on no team",
        missing.len()
    );
    if with_tasks.is_empty() {
        message.push_str(&format!(
            " ({}); Canvas has no automated tasks for them yet",
            quiet.join(", ")
        ));
    } else {
        message.push_str(&format!(
            ", so Canvas has no team for: {}",
            with_tasks.join("; ")
        ));
        if !quiet.is_empty() {
            message.push_str(&format!(
                "; also unowned, with no Canvas logic yet: {}",
                quiet.join(", ")
            ));
        }
    }
    out.push(finding(
        "CP101",
        &first.source,
        message,
        "add each responsibility to the team that should receive its tasks (`spec.responsibilities`)".into(),
    ));
}

/// CP102: teams with no members.
fn team_empty(d: &DesiredState, out: &mut Vec<Finding>) {
    for t in d.teams.iter().filter(|t| t.members.is_empty()) {
        let holds = if t.responsibilities.is_empty() {
            String::new()
        } else {
            format!(
                "; the tasks of its {} responsibility(ies) reach nobody",
                t.responsibilities.len()
            )
        };
        out.push(finding(
            "CP102",
            &t.source,
            format!("team '{}' has no members{holds}", t.name),
            "list the staff who work this team's tasks under `spec.members`, or remove the team"
                .into(),
        ));
    }
}

/// CP103: declared care-team roles no assignment uses.
fn care_team_role_unused(d: &DesiredState, out: &mut Vec<Finding>) {
    for r in &d.care_team_roles {
        if !d.care_team_assignments.iter().any(|a| a.role == r.name) {
            out.push(finding(
                "CP103",
                &r.source,
                format!(
                    "care-team role '{}' is declared, and no CareTeamAssignment puts anyone in it",
                    r.name
                ),
                "assign it with a CareTeamAssignment, or remove the CareTeamRole".into(),
            ));
        }
    }
}

/// Whether every task `later` matches is matched by `earlier` (first match wins, so
/// `later` then never routes anything).
pub fn shadows(earlier: &RoutingRule, later: &RoutingRule) -> bool {
    let covers = |e: &Option<String>, l: &Option<String>| e.is_none() || e == l;
    let regex_covers = match &earlier.description_matches {
        None => true,
        Some(p) => {
            later.description_matches.as_ref() == Some(p)
                || later
                    .description
                    .as_ref()
                    .is_some_and(|title| regex::Regex::new(p).is_ok_and(|re| re.is_match(title)))
        }
    };
    covers(&earlier.description, &later.description)
        && regex_covers
        && covers(&earlier.label, &later.label)
        && covers(&earlier.patient_group, &later.patient_group)
}

/// CP104: rules that an earlier rule always wins over.
fn routing_rule_shadowed(d: &DesiredState, out: &mut Vec<Finding>) {
    for (i, later) in d.routing_rules.iter().enumerate() {
        if let Some(earlier) = d.routing_rules[..i].iter().find(|e| shadows(e, later)) {
            out.push(finding(
                "CP104",
                &later.source,
                format!(
                    "routing rule '{}' (order {}) never routes a task: rule '{}' (order {}, {}) comes first and matches every task it matches",
                    later.name, later.order, earlier.name, earlier.order, earlier.source
                ),
                format!(
                    "give '{}' a lower order than '{}', make its match narrower, or remove it",
                    later.name, earlier.name
                ),
            ));
        }
    }
}

/// CP105: two leads for the same patients (same group and rule).
fn care_team_lead_duplicate(d: &DesiredState, out: &mut Vec<Finding>) {
    let mut first: BTreeMap<String, &crate::model::CareTeamAssignment> = BTreeMap::new();
    for a in d.care_team_assignments.iter().filter(|a| a.lead) {
        let key = format!("{:?}|{:?}", a.group, a.rule);
        match first.get(&key) {
            None => {
                first.insert(key, a);
            }
            Some(f) => {
                let whom = match &a.group {
                    Some(g) => format!("patient group '{g}'"),
                    None => "the same patients".into(),
                };
                out.push(finding(
                    "CP105",
                    &a.source,
                    format!(
                        "care-team assignments '{}' ({}) and '{}' both make their staff the lead for {whom}; a care team has one lead, so each apply hands it back and forth",
                        f.name, f.source, a.name
                    ),
                    format!("keep `lead: true` on one of them and remove it from '{}'", a.name),
                ));
            }
        }
    }
}

/// The declared roles a staff reference holds (through RoleAssignments).
fn roles_of<'a>(d: &'a DesiredState, who: &PractitionerRef) -> Vec<&'a crate::model::Role> {
    d.assignments
        .iter()
        .filter(|a| &a.practitioner.value == who)
        .flat_map(|a| a.roles.iter().filter_map(|r| d.role(&r.value)))
        .collect()
}

/// CP106: staff on patients' care teams whom the care model does not let hold the
/// care-team role (shipped: administrative roles are not on care teams).
fn care_team_role_unfit(d: &DesiredState, model: &CareModel, out: &mut Vec<Finding>) {
    for a in &d.care_team_assignments {
        let Some(rule) = model.for_care_team_role(&a.role) else {
            continue;
        };
        let roles = roles_of(d, &a.practitioner.value);
        if roles.is_empty() || roles.iter().any(|r| rule.admits(r)) {
            continue;
        }
        let names: Vec<&str> = roles.iter().map(|r| r.name.as_str()).collect();
        out.push(finding(
            "CP106",
            &a.practitioner.source,
            format!(
                "care-team assignment '{}' puts {} in care-team role '{}', and none of their declared roles ({}) is {} ({}: {})",
                a.name,
                a.practitioner.value,
                a.role,
                names.join(", "),
                rule.wants(),
                model.origin(rule),
                rule.reason
                    .clone()
                    .unwrap_or_else(|| format!("rule '{}'", rule.pattern))
            ),
            format!(
                "assign staff who hold {}, or give this one such a role if they do that work",
                rule.wants()
            ),
        ));
    }
}

/// CP107: routing-rule labels outside the declared catalog.
fn label_unknown(d: &DesiredState, labels: &LabelCatalog, out: &mut Vec<Finding>) {
    let known = |l: &str| labels.labels.iter().any(|k| k == l);
    for r in &d.routing_rules {
        let used = r
            .label
            .iter()
            .map(|l| ("matches", l))
            .chain(r.add_labels.iter().map(|l| ("adds", l)));
        for (how, l) in used {
            if known(l) {
                continue;
            }
            let guess = labels
                .labels
                .iter()
                .find(|k| k.eq_ignore_ascii_case(l))
                .map(String::as_str)
                .or_else(|| {
                    crate::manifest::suggest::closest(l, labels.labels.iter().map(String::as_str))
                });
            let help = match guess {
                Some(g) => format!(
                    "did you mean '{g}'? Fix the label, or add it to the Labels at {}",
                    labels.source
                ),
                None => format!(
                    "add '{l}' to the Labels at {} (and to the target's task labels), or fix the rule",
                    labels.source
                ),
            };
            out.push(finding(
                "CP107",
                &r.source,
                format!(
                    "routing rule '{}' {how} label '{l}', which is not in the label catalog",
                    r.name
                ),
                help,
            ));
        }
    }
}

/// CP108: team members whose declared roles may not hold one of the team's
/// responsibilities.
fn role_unfit_for_responsibility(d: &DesiredState, model: &CareModel, out: &mut Vec<Finding>) {
    for t in &d.teams {
        for m in &t.members {
            let roles = roles_of(d, &m.value);
            if roles.is_empty() {
                continue;
            }
            if let Some((resp, rule)) = unfit(model, t, &roles) {
                let names: Vec<&str> = roles.iter().map(|r| r.name.as_str()).collect();
                out.push(finding(
                    "CP108",
                    &m.source,
                    unfit_message(t, &m.value, &names, resp, rule, model),
                    format!(
                        "move {} to a team that fits their roles, or move {} to a team of staff with {}",
                        m.value,
                        resp.code(),
                        rule.wants()
                    ),
                ));
            }
        }
    }
}

/// The first of a team's responsibilities that none of `roles` may hold, and its rule.
pub(crate) fn unfit<'a>(
    model: &'a CareModel,
    t: &crate::model::Team,
    roles: &[&crate::model::Role],
) -> Option<(Responsibility, &'a FitRule)> {
    t.responsibilities.iter().find_map(|r| {
        let rule = model.for_responsibility(r.value)?;
        (!roles.iter().any(|role| rule.admits(role))).then_some((r.value, rule))
    })
}

pub(crate) fn unfit_message(
    t: &crate::model::Team,
    who: &PractitionerRef,
    roles: &[&str],
    resp: Responsibility,
    rule: &FitRule,
    model: &CareModel,
) -> String {
    format!(
        "{who} is on team '{}', which holds {}, and none of their roles ({}) is {} ({}{})",
        t.name,
        resp.code(),
        roles.join(", "),
        rule.wants(),
        model.origin(rule),
        rule.reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default()
    )
}

#[cfg(test)]
mod tests;
