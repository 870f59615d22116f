//! Care-team participants: one change per care-team assignment, with who joins and who
//! leaves as counts, pseudonyms and sealed lists (never patient ids in the plan).

use crate::dialect::Dialect;
use crate::model::DesiredState;
use crate::observe::Observed;

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
        let entries = |p: &crate::rules::PatientFacts| -> Vec<(String, String)> {
            p.care_team
                .iter()
                .filter(|(_, _, owner)| !own_only || owner.as_deref() == Some(project))
                .map(|(m, r, _)| (m.clone(), r.clone()))
                .collect()
        };
        let holds = |p: &crate::rules::PatientFacts, who: Option<&str>| {
            entries(p)
                .iter()
                .any(|(member, r)| r == &role_key && who.is_none_or(|w| w == member))
        };
        let current: BTreeSet<String> = observed
            .patients
            .values()
            .filter(|p| holds(p, Some(&practitioner)))
            .map(|p| format!("Patient/{}", p.id))
            .collect();
        let taken_by_others: BTreeSet<String> = observed
            .patients
            .values()
            .filter(|p| {
                // someone else in this role, or this practitioner in another role (one
                // role per practitioner and one practitioner per role)
                entries(p).iter().any(|(member, r)| {
                    (r == &role_key && member != &practitioner)
                        || (member == &practitioner && r != &role_key)
                })
            })
            .map(|p| format!("Patient/{}", p.id))
            .collect();
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
        if add.is_empty() && remove.is_empty() {
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
                        done: true,
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
        out.push(Change {
            action: Action::Update,
            target,
            fields: vec![patients, shown],
            reason: Reason::new(
                Some(a.source.clone()),
                Why::CareTeam {
                    assignment: &a.name,
                    practitioner: &a.practitioner.value.to_string(),
                    role: &role.display,
                    done: false,
                },
            ),
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
