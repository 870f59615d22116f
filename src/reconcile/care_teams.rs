//! Care-team participants: one change per care-team assignment, with who joins and who
//! leaves as counts, pseudonyms and sealed lists (never patient ids in the plan).

use crate::dialect::Dialect;
use crate::model::DesiredState;
use crate::observe::Observed;

/// The participants of a patient's care teams that count: careplane's own care teams only
/// where the target says so (`own_only`), else every active one.
fn counted<'a>(
    p: &'a crate::rules::PatientFacts,
    own_only: bool,
    project: &'a str,
) -> impl Iterator<Item = &'a crate::rules::CareTeamFact> {
    p.care_team
        .iter()
        .filter(move |f| !own_only || f.owner.as_deref() == Some(project))
}

/// One change per care-team assignment: who joins and who leaves (as counts, pseudonyms
/// and sealed lists), and the participant it is about.
#[allow(clippy::too_many_arguments)]
pub fn changes(
    desired: &DesiredState,
    dialect: &dyn Dialect,
    observed: &Observed,
    memberships: &crate::vocab::Memberships,
    pseudo: &crate::rules::Pseudonymizer,
    staff: &dyn Fn(&crate::model::PractitionerRef) -> Option<String>,
    care_team_roles: &std::collections::BTreeMap<String, String>,
    today: (i64, u32, u32),
) -> Result<Vec<crate::plan::Change>, Vec<crate::manifest::Diagnostic>> {
    use std::collections::BTreeSet;

    use crate::plan::reason::Why;
    use crate::plan::{
        Action, Change, Coding, FieldChange, Operation, Participant, Precondition, Reason, Target,
    };
    use crate::vocab::ObjectKind;
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let project = desired.project.as_str();
    for a in &desired.care_team_assignments {
        let Some(practitioner) = staff(&a.practitioner.value) else {
            errors.push(crate::manifest::Diagnostic {
                source: a.practitioner.source.clone(),
                message: format!(
                    "no single Practitioner on the target has {}",
                    a.practitioner.value
                ),
                help: Some("careplane never creates staff: fix the reference".into()),
            });
            continue;
        };
        let Some(role) = desired.care_team_roles.iter().find(|r| r.name == a.role) else {
            continue;
        };
        let role_key = care_team_roles.get(&a.role).cloned().unwrap_or_default();
        let selected: BTreeSet<String> = match (&a.group, &a.rule) {
            (Some(g), _) => memberships.get(g).cloned().unwrap_or_default(),
            (None, Some(rule)) => {
                let ctx = crate::rules::Context {
                    groups: memberships,
                    on: today,
                    staff,
                    care_team_roles,
                };
                observed
                    .patients
                    .values()
                    .filter(|p| crate::rules::holds(rule, p, &ctx))
                    .map(|p| format!("Patient/{}", p.id))
                    .collect()
            }
            (None, None) => BTreeSet::new(),
        };
        // Targets where careplane keeps its own care teams (R4) only count those.
        let own_only = dialect.capabilities().target().care_teams == crate::vocab::CareTeams::Own;
        // One pass over the patients: whom the participant's care teams already have, which
        // of those it leads, which someone else leads, and where the role is taken by
        // someone else or the participant holds another role (one role per practitioner
        // and one practitioner per role).
        let mut current = BTreeSet::new();
        let mut led_now = BTreeSet::new();
        let mut led_by_others = BTreeSet::new();
        let mut taken_by_others = BTreeSet::new();
        for p in observed.patients.values() {
            let (mut mine, mut leads, mut other_leads, mut taken) = (false, false, false, false);
            for f in counted(p, own_only, project) {
                let me = f.member == practitioner && f.role == role_key;
                mine |= me;
                leads |= me && f.lead;
                other_leads |= !me && f.lead;
                taken |= (f.role == role_key && f.member != practitioner)
                    || (f.member == practitioner && f.role != role_key);
            }
            let reference = format!("Patient/{}", p.id);
            for (set, yes) in [
                (&mut current, mine),
                (&mut led_now, leads),
                (&mut led_by_others, other_leads),
                (&mut taken_by_others, taken),
            ] {
                if yes {
                    set.insert(reference.clone());
                }
            }
        }
        let mut add: BTreeSet<String> = selected.difference(&current).cloned().collect();
        let conflicts: BTreeSet<String> = if a.authoritative {
            BTreeSet::new()
        } else {
            add.intersection(&taken_by_others).cloned().collect()
        };
        add.retain(|p| !conflicts.contains(p));
        let remove: BTreeSet<String> = if a.authoritative {
            current.difference(&selected).cloned().collect()
        } else {
            BTreeSet::new()
        };
        let after: BTreeSet<String> = current
            .union(&add)
            .filter(|p| !remove.contains(*p))
            .cloned()
            .collect();
        // Lead handovers (`lead: true`): selected care teams that will have the participant
        // and that it does not lead yet, where it is on the team already (the lead is set
        // on it) or someone else leads (who loses the lead). A participant joining a team
        // nobody leads joins as the lead: that is an add, not a handover.
        let handovers: BTreeSet<String> = if a.lead {
            after
                .iter()
                .filter(|p| selected.contains(*p) && !led_now.contains(*p))
                .filter(|p| current.contains(*p) || led_by_others.contains(*p))
                .cloned()
                .collect()
        } else {
            BTreeSet::new()
        };
        let as_list = |s: &BTreeSet<String>| {
            serde_json::Value::Array(s.iter().cloned().map(serde_json::Value::String).collect())
        };
        let participant = Participant {
            practitioner: practitioner.clone(),
            role: Coding {
                system: role.system.clone(),
                code: role.code.clone(),
                display: role.display.clone(),
            },
            lead: a.lead,
            authoritative: a.authoritative,
        };
        let target = Target {
            kind: ObjectKind::CareTeamAssignment,
            name: a.name.clone(),
            resource_type: "CareTeam".into(),
            id: None,
        };
        let mut notes = Vec::new();
        if !conflicts.is_empty() {
            notes.push(format!(
                "{} selected patient(s) have someone else as {}: left alone (authoritative: false)",
                conflicts.len(),
                role.display
            ));
        }
        if add.is_empty() && remove.is_empty() && handovers.is_empty() {
            out.push(Change {
                action: Action::NoOp,
                target,
                fields: Vec::new(),
                reason: Reason::new(
                    Some(a.source.clone()),
                    Why::CareTeam {
                        assignment: &a.name,
                        practitioner: &a.practitioner.value.to_string(),
                        role: &role.display,
                        lead: a.lead,
                        done: true,
                        handovers: 0,
                    },
                ),
                operation: Operation::CareTeamParticipant(participant.clone()),
                precondition: Precondition::default(),
                notes,
            });
            continue;
        }
        let mode = if a.authoritative {
            "authoritative"
        } else {
            "additive"
        };
        let patients = crate::diff::sensitive_change(
            "patients",
            Some(&as_list(&current)),
            Some(&as_list(&after)),
            mode,
            Some(a.max_removal_share),
            Some(a.source.clone()),
            pseudo,
        );
        // The care teams the participant leads, kept (those it leaves are in `patients`)
        // and handed over: `added` counts the handovers. Nobody leaves this list, so the
        // removal guard never trips on it (a share of 1).
        let leads = (!handovers.is_empty()).then(|| {
            let kept: BTreeSet<String> = led_now.intersection(&after).cloned().collect();
            let after_leads: BTreeSet<String> = kept.union(&handovers).cloned().collect();
            crate::diff::sensitive_change(
                crate::plan::LEAD_FIELD,
                Some(&as_list(&kept)),
                Some(&as_list(&after_leads)),
                "lead",
                Some(1.0),
                Some(a.source.clone()),
                pseudo,
            )
        });
        let shown = FieldChange {
            field: "participant".into(),
            before: None,
            after: Some(serde_json::json!({
                "practitioner": practitioner,
                "role": {"system": role.system, "code": role.code, "display": role.display},
                "lead": a.lead,
                "authoritative": a.authoritative,
            })),
            source: Some(a.practitioner.source.clone()),
            labels: std::collections::BTreeMap::from([(
                practitioner.clone(),
                a.practitioner.value.to_string(),
            )]),
            membership: None,
            sealed: None,
        };
        let why = if add.is_empty() && remove.is_empty() {
            Why::CareTeamLead {
                assignment: &a.name,
                practitioner: &a.practitioner.value.to_string(),
                role: &role.display,
                handovers: handovers.len(),
            }
        } else {
            Why::CareTeam {
                assignment: &a.name,
                practitioner: &a.practitioner.value.to_string(),
                role: &role.display,
                lead: a.lead,
                done: false,
                handovers: handovers.len(),
            }
        };
        let mut fields = vec![patients];
        fields.extend(leads);
        fields.push(shown);
        out.push(Change {
            action: Action::Update,
            target,
            fields,
            reason: Reason::new(Some(a.source.clone()), why),
            operation: Operation::CareTeamParticipant(participant),
            precondition: Precondition::default(),
            notes,
        });
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}
