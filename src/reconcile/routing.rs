//! Task routing: the first matching routing rule's team, owner and labels for each open
//! task, as desired objects that `objects` diffs like any other.

use crate::dialect::Dialect;
use crate::model::DesiredState;
use crate::observe::Observed;

/// Teams not on the target yet, with the rule and how many tasks wait for them.
pub type Waiting = std::collections::BTreeMap<String, (String, usize)>;

/// Desired routing of open tasks: the first matching rule's team, owner and labels. Tasks
/// for a team that is not on the target yet wait for the next apply (`Waiting`).
///
/// Routing happens once per task (rules in the default `mode: once`): a task is routed the
/// first time careplane sees it open and unassigned, and marked as routed where the target
/// can carry the mark (`TargetCapability::task_marker`). A task careplane routed before, or
/// one that already had a team or an owner (someone routed it), is left alone, so a
/// person's re-route is never reverted. `route_existing` also routes the assigned ones (a
/// reviewed backfill); rules in `mode: enforce` keep every matching task on their routing.
pub fn objects(
    desired: &DesiredState,
    dialect: &dyn Dialect,
    observed: &Observed,
    memberships: &crate::vocab::Memberships,
    route_existing: bool,
) -> Result<(Vec<crate::vocab::DesiredObject>, Waiting), Vec<crate::manifest::Diagnostic>> {
    use crate::vocab::{DesiredObject, Fields, Identity, ObjectKind};
    use serde_json::json;
    let rules = &desired.routing_rules;
    let mut out = Vec::new();
    let mut waiting = Waiting::new();
    let mut errors = Vec::new();
    if rules.is_empty() {
        return Ok((out, waiting));
    }
    let identity = dialect
        .capabilities()
        .of(ObjectKind::Team)
        .map(|c| c.identity);
    let team_ref = |name: &str| -> Option<String> {
        let team = desired.teams.iter().find(|t| t.name == name)?;
        observed
            .objects
            .iter()
            .find(|o| {
                o.kind == ObjectKind::Team
                    && match identity {
                        Some(Identity::ManifestName) => o.name.as_deref() == Some(name),
                        _ => o.natural_key.as_deref() == Some(team.display_name.as_str()),
                    }
            })
            .map(|o| format!("Group/{}", o.id))
    };
    // Looked up once, not once per task (100,000 open tasks scanned 100,000 objects each).
    let team_refs: std::collections::HashMap<&str, Option<String>> = rules
        .iter()
        .filter_map(|r| r.team.as_deref())
        .map(|t| (t, team_ref(t)))
        .collect();
    let mut live_tasks: std::collections::HashMap<&str, &crate::vocab::ObservedObject> =
        std::collections::HashMap::new();
    for o in observed
        .objects
        .iter()
        .filter(|o| o.kind == ObjectKind::TaskRouting)
    {
        live_tasks.entry(o.id.as_str()).or_insert(o); // the first, as `find` would
    }
    let marker = dialect.capabilities().target().task_marker;
    for (ti, ri) in crate::rules::route(&observed.tasks, rules, memberships) {
        let (t, r) = (&observed.tasks[ti], &rules[ri]);
        if r.mode == crate::model::rule::RoutingMode::Once {
            let live = live_tasks.get(t.id.as_str()).copied();
            let set = |k: &str| live.and_then(|o| o.fields.get(k)).filter(|v| !v.is_null());
            let routed_before = set("routedBy").and_then(|v| v.as_str()) == Some(&desired.project);
            let assigned = set("team").is_some() || set("owner").is_some();
            if routed_before || (assigned && !route_existing) {
                continue;
            }
        }
        let mut fields = Fields::new();
        let mut labels = std::collections::BTreeMap::new();
        if let Some(team) = &r.team {
            match team_refs.get(team.as_str()).cloned().flatten() {
                Some(g) => {
                    fields.insert("team".into(), json!(g));
                }
                None => {
                    waiting.entry(team.clone()).or_insert((r.name.clone(), 0)).1 += 1;
                    continue;
                }
            }
        }
        if let Some(o) = &r.owner {
            match observed.staff.resolve(&o.value) {
                Ok(id) => {
                    let reference = format!("Practitioner/{id}");
                    labels.insert(reference.clone(), o.value.to_string());
                    fields.insert("owner".into(), json!(reference));
                }
                Err(_) => {
                    errors.push(crate::manifest::Diagnostic {
                        source: o.source.clone(),
                        message: format!("no single Practitioner on the target has {}", o.value),
                        help: Some("careplane never creates staff: fix the reference".into()),
                    });
                    continue;
                }
            }
        }
        if marker {
            fields.insert("routedBy".into(), json!(desired.project));
        }
        if !r.add_labels.is_empty() {
            fields.insert(
                "labels".into(),
                crate::vocab::json::sorted_strings(r.add_labels.clone()),
            );
        }
        let field_sources = fields
            .keys()
            .map(|k| (k.clone(), r.source.clone()))
            .collect();
        out.push(DesiredObject {
            kind: ObjectKind::TaskRouting,
            name: format!("Task/{}", t.id),
            natural_key: Some(format!("Task/{}", t.id)),
            fields,
            field_sources,
            source: r.source.clone(),
            labels,
            additive: vec!["labels"],
            max_removal_share: None,
            only_declared: true,
            operation: crate::vocab::Operation::RouteTask {
                rule: r.name.clone(),
                order: r.order,
            },
        });
    }
    if errors.is_empty() {
        errors.dedup();
        Ok((out, waiting))
    } else {
        errors.dedup();
        Err(errors)
    }
}
