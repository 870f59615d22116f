//! Live checks (`check --target`, and warnings in `plan`): the desired model against a
//! [`Snapshot`] of the target.
//!
//! Pure: the snapshot is built from what the observe stage read; nothing here reads the
//! network, the clock or the environment. Findings name manifest objects, staff
//! references as the manifests write them (NPI, email, id) and counts, never patients.

use std::collections::{BTreeMap, BTreeSet};

use super::{CareModel, Finding, finding, sort};
use crate::model::{DesiredState, Located, PractitionerRef};
use crate::observe::Observed;
use crate::vocab::{ObjectKind, StaffIndex, staff::Unresolved};

/// What the live checks see of the target.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Every staff member read (inactive ones included).
    pub staff: StaffIndex,
    /// Practitioner ids with `active: false`.
    pub inactive: BTreeSet<String>,
    /// Practitioner ids the target does not list as schedulable; `None` where the target
    /// has no such notion (or it was not read).
    pub non_schedulable: Option<BTreeSet<String>>,
    /// `Practitioner/<id>` → the role codes they hold, where staff records hold roles
    /// (Canvas); `None` where the target keeps no roles on staff.
    pub roles: Option<BTreeMap<String, Vec<String>>>,
    /// Active care teams, one list of participants each: (`Practitioner/<id>`, role
    /// `system|code`, lead). No patient: only counts are ever reported.
    pub care_teams: Vec<Vec<(String, String, bool)>>,
}

impl Snapshot {
    /// The snapshot of what `observe` read (`non_schedulable`: from the extra search the
    /// target needs for it, if any).
    pub fn from_observed(o: &Observed, non_schedulable: Option<BTreeSet<String>>) -> Self {
        let staff_roles: BTreeMap<String, Vec<String>> = o
            .objects
            .iter()
            .filter(|x| x.kind == ObjectKind::RoleAssignment)
            .filter_map(|x| {
                let who = x.natural_key.as_deref()?;
                who.starts_with("Practitioner/").then(|| {
                    let codes = x
                        .fields
                        .get("roles")
                        .and_then(|v| v.as_array())
                        .into_iter()
                        .flatten()
                        .filter_map(|c| c.as_str().map(str::to_owned))
                        .collect();
                    (who.to_owned(), codes)
                })
            })
            .collect();
        Snapshot {
            staff: o.staff.clone(),
            inactive: o.staff_inactive.clone(),
            non_schedulable,
            roles: (!staff_roles.is_empty()).then_some(staff_roles),
            care_teams: o.care_teams.clone(),
        }
    }

    fn id(&self, r: &PractitionerRef) -> Option<String> {
        self.staff.resolve(r).ok()
    }
}

/// Every live check, findings in manifest order.
pub fn run(d: &DesiredState, model: &CareModel, s: &Snapshot) -> Vec<Finding> {
    let mut out = Vec::new();
    staff_inactive(d, s, &mut out);
    staff_not_schedulable(d, s, &mut out);
    live_role_unfit(d, model, s, &mut out);
    care_team_lead_changed(d, s, &mut out);
    roles_undeclared_and_unheld(d, s, &mut out);
    staff_unresolved(d, s, &mut out);
    sort(&mut out);
    out
}

/// Where the manifests name staff for work: (reference, what it is for).
fn placements(d: &DesiredState) -> Vec<(&Located<PractitionerRef>, String)> {
    let mut v = Vec::new();
    for t in &d.teams {
        for m in &t.members {
            v.push((m, format!("a member of team '{}'", t.name)));
        }
    }
    for r in &d.routing_rules {
        if let Some(o) = &r.owner {
            v.push((
                o,
                format!("the owner routing rule '{}' gives tasks", r.name),
            ));
        }
    }
    for a in &d.care_team_assignments {
        v.push((
            &a.practitioner,
            format!("put on care teams by care-team assignment '{}'", a.name),
        ));
    }
    v
}

/// CP201: inactive staff on teams, routing rules and care-team assignments.
fn staff_inactive(d: &DesiredState, s: &Snapshot, out: &mut Vec<Finding>) {
    for (r, what) in placements(d) {
        if s.id(&r.value).is_some_and(|id| s.inactive.contains(&id)) {
            out.push(finding(
                "CP201",
                &r.source,
                format!(
                    "{} is {what}, and is inactive on the target, so the work sent to them waits for nobody",
                    r.value
                ),
                "replace them with active staff, or reactivate them on the target if they are back".into(),
            ));
        }
    }
}

/// CP202: non-schedulable staff on teams and as routing owners.
fn staff_not_schedulable(d: &DesiredState, s: &Snapshot, out: &mut Vec<Finding>) {
    let Some(ns) = &s.non_schedulable else {
        return;
    };
    for (r, what) in placements(d) {
        if what.starts_with("put on care teams") {
            continue;
        }
        if let Some(id) = s.id(&r.value)
            && ns.contains(&id)
            && !s.inactive.contains(&id)
        {
            out.push(finding(
                "CP202",
                &r.source,
                format!(
                    "{} is {what}, and is not schedulable on the target (Canvas leaves them out of staff searches and pickers by default)",
                    r.value
                ),
                "give them a role that makes them schedulable, or choose schedulable staff".into(),
            ));
        }
    }
}

/// CP203: team members with no RoleAssignment in the manifests whose live roles may not
/// hold one of the team's responsibilities (declared members are CP108's).
fn live_role_unfit(d: &DesiredState, model: &CareModel, s: &Snapshot, out: &mut Vec<Finding>) {
    let Some(roles) = &s.roles else { return };
    for t in &d.teams {
        for m in &t.members {
            if d.assignments
                .iter()
                .any(|a| a.practitioner.value == m.value)
            {
                continue;
            }
            let Some(id) = s.id(&m.value) else { continue };
            let held: Vec<&crate::model::Role> = roles
                .get(&format!("Practitioner/{id}"))
                .into_iter()
                .flatten()
                .filter_map(|code| d.roles.iter().find(|r| &r.code == code))
                .collect();
            if held.is_empty() {
                continue;
            }
            if let Some((resp, rule)) = super::unfit(model, t, &held) {
                let names: Vec<&str> = held.iter().map(|r| r.name.as_str()).collect();
                out.push(finding(
                    "CP203",
                    &m.source,
                    format!(
                        "{} (roles on the target)",
                        super::unfit_message(t, &m.value, &names, resp, rule, model)
                    ),
                    format!(
                        "declare their roles with a RoleAssignment and move them to a team that fits, or move {} to staff with {}",
                        resp.code(),
                        rule.wants()
                    ),
                ));
            }
        }
    }
}

/// CP204: care teams where a `lead: true` assignment's staff member holds the role but is
/// not the lead. The lead is read as the planner reads it (`rules::care_team_participant`):
/// where every care team counts (Canvas), each one counted here whose patient is still
/// selected is a lead handover in the next plan.
fn care_team_lead_changed(d: &DesiredState, s: &Snapshot, out: &mut Vec<Finding>) {
    for a in d.care_team_assignments.iter().filter(|a| a.lead) {
        let Some(id) = s.id(&a.practitioner.value) else {
            continue;
        };
        let Some(role) = d.care_team_roles.iter().find(|r| r.name == a.role) else {
            continue;
        };
        let me = format!("Practitioner/{id}");
        let key = format!("{}|{}", role.system, role.code);
        let (mut other, mut none) = (0usize, 0usize);
        for team in &s.care_teams {
            let mine = team
                .iter()
                .any(|(who, r, lead)| who == &me && r == &key && !lead);
            if !mine {
                continue;
            }
            if team.iter().any(|(_, _, lead)| *lead) {
                other += 1;
            } else {
                none += 1;
            }
        }
        if other + none == 0 {
            continue;
        }
        let mut parts = Vec::new();
        if other > 0 {
            parts.push(format!("someone else is the lead on {other}"));
        }
        if none > 0 {
            parts.push(format!("nobody is on {none}"));
        }
        out.push(finding(
            "CP204",
            &a.source,
            format!(
                "care-team assignment '{}' makes {} the lead, and of the care teams where they are '{}', {} (changed outside careplane)",
                a.name,
                a.practitioner.value,
                a.role,
                parts.join(" and ")
            ),
            "ask who changed the lead and why; then set `lead:` to match the clinic's decision (until then, plan shows each such care team as a lead handover, and apply makes the manifests' lead the lead again)".into(),
        ));
    }
}

/// CP205 and CP206: role codes held on the target and the declared roles, compared (only
/// where staff records hold roles and the manifests declare roles).
fn roles_undeclared_and_unheld(d: &DesiredState, s: &Snapshot, out: &mut Vec<Finding>) {
    let (Some(roles), Some(first)) = (&s.roles, d.roles.first()) else {
        return;
    };
    let mut held: BTreeMap<&str, usize> = BTreeMap::new();
    for codes in roles.values() {
        for c in codes {
            *held.entry(c.as_str()).or_default() += 1;
        }
    }
    for (code, n) in &held {
        if !d.roles.iter().any(|r| r.code == *code) {
            out.push(finding(
                "CP205",
                &first.source,
                format!(
                    "role code {code} is held by {n} staff member(s) on the target, and no Role declares it, so the care-model checks cannot tell what it may do"
                ),
                format!("declare it (`kind: Role` with `code: {code}`, its domain and type), or take it off those staff on the target"),
            ));
        }
    }
    for r in &d.roles {
        if !held.contains_key(r.code.as_str()) {
            out.push(finding(
                "CP206",
                &r.source,
                format!(
                    "role '{}' (code {}) is declared, and nobody on the target holds it",
                    r.name, r.code
                ),
                "assign it with a RoleAssignment, or remove the Role if the clinic no longer uses it".into(),
            ));
        }
    }
}

/// CP207: routing owners that are not exactly one staff member on the target.
fn staff_unresolved(d: &DesiredState, s: &Snapshot, out: &mut Vec<Finding>) {
    for r in &d.routing_rules {
        let Some(o) = &r.owner else { continue };
        let why = match s.staff.resolve(&o.value) {
            Ok(_) => continue,
            Err(Unresolved::Missing) => "no staff member on the target has it".to_owned(),
            Err(Unresolved::Ambiguous(n)) => format!("{n} staff members on the target have it"),
        };
        out.push(finding(
            "CP207",
            &o.source,
            format!(
                "routing rule '{}' gives tasks to owner {}, and {why}; routing resolves the owner only when a task matches, so the first such task fails to route",
                r.name, o.value
            ),
            "fix the reference (an id or NPI names one staff member), or add the staff member on the target first".into(),
        ));
    }
}
