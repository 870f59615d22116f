//! Stage 4: reconcile, the one pure planner: the desired model × the observed state × the
//! dialect's capability table → a [`Plan`].
//!
//! No I/O, no printing, no clock or environment reads: today's date, the pseudonym key, the
//! target's description and the manifests' commit come in [`Options`]. Its parts:
//! - [`objects`]: configuration objects (and patient-group memberships, task routing) field
//!   by field, with identity matching, adoption, prune / retire and exclusive values;
//! - [`routing`]: which open tasks the routing rules route, and where;
//! - [`care_teams`]: care-team participants of care-team assignments.
//!
//! `ops` only orchestrates: load, observe, reconcile, guard, apply.

pub mod care_teams;
pub mod effects;
pub mod objects;
pub mod plugin;
pub mod routing;

#[cfg(test)]
mod tests;

use crate::dialect::Dialect;
use crate::manifest::Diagnostic;
use crate::model::DesiredState;
use crate::observe::Observed;
use crate::plan::{Plan, TargetInfo};
use crate::rules::Pseudonymizer;

/// Everything the planner needs besides the desired model, the observed state and the
/// dialect.
pub struct Options {
    /// Plan deletion (or retirement) of owned objects no manifest declares.
    pub prune: bool,
    /// Take over same-named objects careplane does not own yet.
    pub adopt: bool,
    /// Route open tasks that someone already assigned (a reviewed one-off backfill).
    pub route_existing: bool,
    /// Today's date (rules with ages), read by the caller.
    pub today: (i64, u32, u32),
    /// Keyed pseudonyms for patient samples.
    pub pseudo: Pseudonymizer,
    /// The target the plan is for.
    pub target: TargetInfo,
    /// The manifests' checksum (files and variable values).
    pub checksum: String,
    /// The commit the manifests come from, if known.
    pub manifests_commit: Option<String>,
    /// The rules plugin: who keeps effects, the package the rules build, what the target
    /// lists ([`plugin::Input`]).
    pub plugin: plugin::Input,
}

/// Plan: what it takes to make the observed state match the desired model, or the
/// problems that make a plan unsafe (each at its manifest position).
pub fn plan(
    desired: &DesiredState,
    observed: &Observed,
    dialect: &dyn Dialect,
    opts: &Options,
) -> Result<Plan, Vec<Diagnostic>> {
    let groups = &desired.patient_groups;
    // Patients named in include/exclude must exist (their ids are not printed).
    let missing: Vec<crate::manifest::Diagnostic> = groups
        .iter()
        .flat_map(|g| g.include.iter().chain(&g.exclude))
        .filter(|p| !observed.patients.contains_key(&p.value))
        .map(|p| crate::manifest::Diagnostic {
            source: p.source.clone(),
            message: "no Patient on the target has this id".into(),
            help: Some("fix the id, or remove the entry".into()),
        })
        .collect();
    if !missing.is_empty() {
        return Err(missing);
    }
    let staff = |r: &crate::model::PractitionerRef| {
        observed
            .staff
            .resolve(r)
            .ok()
            .map(|id| format!("Practitioner/{id}"))
    };
    let care_team_roles: std::collections::BTreeMap<String, String> = desired
        .care_team_roles
        .iter()
        .map(|r| (r.name.clone(), format!("{}|{}", r.system, r.code)))
        .collect();
    let memberships = crate::rules::evaluate(
        groups,
        &observed.patients,
        opts.today,
        &staff,
        &care_team_roles,
    );
    let wanted = crate::dialect::desired(dialect, desired, &observed.staff, &memberships)?;
    let (routed, waiting) = routing::routes(
        desired,
        dialect,
        observed,
        &memberships,
        opts.route_existing,
    )?;
    let marker = dialect.capabilities().target().task_marker;
    let pseudo = &opts.pseudo;
    // routed tasks become desired objects one at a time, as they are diffed
    let mut d = objects::diff_streamed(
        &wanted,
        &mut routed.iter().map(|r| r.object(desired, observed, marker)),
        observed,
        dialect,
        objects::Options {
            prune: opts.prune,
            adopt: opts.adopt,
            route_existing: opts.route_existing,
        },
        pseudo,
    );
    d.changes.extend(care_teams::changes(
        desired,
        dialect,
        observed,
        &memberships,
        pseudo,
        &staff,
        &care_team_roles,
        opts.today,
    )?);
    for (team, (rule, n)) in &waiting {
        if let Some(c) = d
            .changes
            .iter_mut()
            .find(|c| c.target.kind == crate::vocab::ObjectKind::Team && &c.target.name == team)
        {
            c.notes.push(format!(
                "routing rule '{rule}' matches {n} open task(s) for this team: the next apply routes them, once the team exists"
            ));
        }
    }
    for c in &mut d.changes {
        let mut notes = Vec::new();
        for f in &c.fields {
            if let Some(m) = &f.membership {
                if m.before > 0 && (m.removed as f64) > m.max_removal_share * m.before as f64 {
                    notes.push(format!(
                        "would remove {} of {} members, over this group's limit of {:.0}%: apply refuses without --allow-mass-removal",
                        m.removed,
                        m.before,
                        100.0 * m.max_removal_share
                    ));
                }
                if !pseudo.enabled() && (m.added + m.removed) > 0 {
                    notes.push(format!(
                        "set {} to see pseudonymous samples of who changes",
                        crate::rules::KEY_ENV
                    ));
                }
            }
        }
        c.notes.extend(notes);
    }
    if !d.errors.is_empty() {
        return Err(d.errors);
    }
    // the plugin carries the ids of teams and groups: those this plan creates are filled
    // in at apply
    let created: Vec<String> = d
        .changes
        .iter()
        .filter(|c| {
            c.action == crate::plan::Action::Create
                && matches!(
                    c.target.kind,
                    crate::vocab::ObjectKind::Team | crate::vocab::ObjectKind::PatientGroup
                )
        })
        .map(|c| c.target.name.clone())
        .collect();
    let (plugin_change, warnings) = plugin::change(&opts.plugin, &created);
    d.changes.extend(plugin_change);
    let mut plan = Plan::new(
        &desired.project,
        opts.target.clone(),
        crate::plan::PlanCapability::from_table(dialect.capabilities()),
        &opts.checksum,
        opts.prune,
        d.changes,
        d.orphans,
    );
    plan.manifests_commit = opts.manifests_commit.clone();
    plan.effects_by = opts.plugin.effects;
    plan.warnings = warnings;
    plan.route_existing = opts.route_existing;
    let limit =
        |kind, rule: &str| desired.max_deviation(crate::plan::rule_manifest_kind(kind), rule);
    plan.effects = crate::plan::preview(&plan.changes, &limit);
    // tasks for a team this plan creates: `apply --plan` routes them once the team exists
    // (it recomputes effects after the configuration), so the review counts them
    for (team, (rule, n)) in &waiting {
        let kind = crate::vocab::ObjectKind::TaskRouting;
        let at = match plan
            .effects
            .iter()
            .position(|e| e.kind == kind && &e.rule == rule)
        {
            Some(i) => i,
            None => {
                plan.effects.push(crate::plan::EffectPreview {
                    kind,
                    rule: rule.clone(),
                    declared_at: desired
                        .routing_rules
                        .iter()
                        .find(|r| &r.name == rule)
                        .map(|r| r.source.clone()),
                    adds: 0,
                    removes: 0,
                    sample_added: Vec::new(),
                    sample_removed: Vec::new(),
                    lead_handovers: 0,
                    sample_lead_handovers: Vec::new(),
                    max_deviation: limit(kind, rule),
                    notes: Vec::new(),
                });
                plan.effects.len() - 1
            }
        };
        let e = &mut plan.effects[at];
        e.adds += *n as u64;
        e.notes.push(format!(
            "{n} of them wait for team '{team}', which this plan creates: apply --plan routes them once it exists, apply DIR on its next run"
        ));
    }
    plan.effects
        .sort_by(|a, b| (a.kind, &a.rule).cmp(&(b.kind, &b.rule)));
    Ok(plan)
}
