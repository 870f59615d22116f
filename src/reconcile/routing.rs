//! Task routing: the first matching routing rule's team, owner and labels for each open
//! task, as desired objects that `objects` diffs like any other.

use std::sync::Arc;

use crate::dialect::Dialect;
use crate::model::DesiredState;
use crate::observe::Observed;

/// Teams not on the target yet, with the rule and how many tasks wait for them.
pub type Waiting = std::collections::BTreeMap<String, (String, usize)>;

/// One routing decision: an open task (index into `Observed::tasks`), the rule that routes
/// it (index into `DesiredState::routing_rules`) and what the rule's team and owner resolve
/// to. Compact: [`Routed::object`] makes the desired object when it is diffed.
#[derive(Clone, Debug, PartialEq)]
pub struct Routed {
    pub task: usize,
    pub rule: usize,
    /// `Group/<id>` of the rule's team (shared by the rule's tasks: 75,000 routed tasks
    /// hold no string of their own).
    team: Option<Arc<str>>,
    /// `Practitioner/<id>` of the rule's owner, and how the manifest names them.
    owner: Option<Arc<(String, String)>>,
}

impl Routed {
    /// The desired routing object of this task: the rule's team, owner and labels.
    pub fn object(
        &self,
        desired: &DesiredState,
        observed: &Observed,
        marker: bool,
    ) -> crate::vocab::DesiredObject {
        use crate::vocab::{DesiredObject, Fields, ObjectKind};
        use serde_json::json;
        let (t, r) = (
            &observed.tasks[self.task],
            &desired.routing_rules[self.rule],
        );
        let mut fields = Fields::new();
        let mut labels = std::collections::BTreeMap::new();
        if let Some(g) = &self.team {
            fields.insert("team".into(), json!(g.as_ref()));
        }
        if let Some((reference, label)) = self.owner.as_deref() {
            labels.insert(reference.clone(), label.clone());
            fields.insert("owner".into(), json!(reference));
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
        DesiredObject {
            kind: ObjectKind::TaskRouting,
            name: format!("Task/{}", t.id),
            natural_key: Some(format!("Task/{}", t.id)),
            fields,
            // every field comes from the rule: diff falls back to `source` for each
            field_sources: std::collections::BTreeMap::new(),
            source: r.source.clone(),
            labels,
            additive: vec!["labels"],
            max_removal_share: None,
            only_declared: true,
            operation: crate::vocab::Operation::RouteTask {
                rule: r.name.clone(),
                order: r.order,
            },
        }
    }
}

/// Desired routing of open tasks: the first matching rule's team, owner and labels, as
/// desired objects (all at once: [`routes`] keeps them compact).
pub fn objects(
    desired: &DesiredState,
    dialect: &dyn Dialect,
    observed: &Observed,
    memberships: &crate::vocab::Memberships,
    route_existing: bool,
) -> Result<(Vec<crate::vocab::DesiredObject>, Waiting), Vec<crate::manifest::Diagnostic>> {
    let (routed, waiting) = routes(desired, dialect, observed, memberships, route_existing)?;
    let marker = dialect.capabilities().target().task_marker;
    Ok((
        routed
            .iter()
            .map(|r| r.object(desired, observed, marker))
            .collect(),
        waiting,
    ))
}

/// Which open tasks the routing rules route, and where: the first matching rule's team,
/// owner and labels. Tasks for a team that is not on the target yet wait for the next
/// apply (`Waiting`).
///
/// Routing happens once per task (rules in the default `mode: once`): a task is routed the
/// first time careplane sees it open and unassigned, and marked as routed where the target
/// can carry the mark (`TargetCapability::task_marker`). A task careplane routed before, or
/// one that already had a team or an owner (someone routed it), is left alone, so a
/// person's re-route is never reverted. `route_existing` also routes the assigned ones (a
/// reviewed backfill); rules in `mode: enforce` keep every matching task on their routing.
pub fn routes(
    desired: &DesiredState,
    dialect: &dyn Dialect,
    observed: &Observed,
    memberships: &crate::vocab::Memberships,
    route_existing: bool,
) -> Result<(Vec<Routed>, Waiting), Vec<crate::manifest::Diagnostic>> {
    use crate::vocab::{Identity, ObjectKind};
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
    let team_refs: std::collections::HashMap<&str, Option<Arc<str>>> = rules
        .iter()
        .filter_map(|r| r.team.as_deref())
        .map(|t| (t, team_ref(t).map(Arc::from)))
        .collect();
    // A live task's non-null routing field, whole or compact.
    enum LiveTask<'a> {
        Full(&'a crate::vocab::ObservedObject),
        Compact(&'a crate::vocab::CompactObject),
    }
    impl LiveTask<'_> {
        fn set(&self, k: &str) -> Option<&serde_json::Value> {
            match self {
                LiveTask::Full(o) => o.fields.get(k).filter(|v| !v.is_null()),
                LiveTask::Compact(c) => c.field(k),
            }
        }
    }
    let mut live_tasks: std::collections::HashMap<&str, LiveTask> =
        std::collections::HashMap::new();
    for o in observed
        .objects
        .iter()
        .filter(|o| o.kind == ObjectKind::TaskRouting)
    {
        live_tasks.entry(o.id.as_str()).or_insert(LiveTask::Full(o)); // the first, as `find` would
    }
    for c in observed
        .task_objects
        .iter()
        .filter(|c| c.kind == ObjectKind::TaskRouting)
    {
        live_tasks.entry(c.id()).or_insert(LiveTask::Compact(c));
    }
    // Owners resolved once per rule.
    type Owner = Result<Arc<(String, String)>, crate::manifest::Diagnostic>;
    let owners: Vec<Option<Owner>> = rules
        .iter()
        .map(|r| {
            r.owner
                .as_ref()
                .map(|o| match observed.staff.resolve(&o.value) {
                    Ok(id) => Ok(Arc::new((
                        format!("Practitioner/{id}"),
                        o.value.to_string(),
                    ))),
                    Err(_) => Err(crate::manifest::Diagnostic {
                        source: o.source.clone(),
                        message: format!("no single Practitioner on the target has {}", o.value),
                        help: Some("careplane never creates staff: fix the reference".into()),
                    }),
                })
        })
        .collect();
    for (ti, ri) in crate::rules::route(&observed.tasks, rules, memberships) {
        let (t, r) = (&observed.tasks[ti], &rules[ri]);
        if r.mode == crate::model::rule::RoutingMode::Once {
            let live = live_tasks.get(t.id.as_str());
            let set = |k: &str| live.and_then(|o| o.set(k));
            let routed_before = set("routedBy").and_then(|v| v.as_str()) == Some(&desired.project);
            let assigned = set("team").is_some() || set("owner").is_some();
            if routed_before || (assigned && !route_existing) {
                continue;
            }
        }
        let mut team = None;
        if let Some(name) = &r.team {
            match team_refs.get(name.as_str()).cloned().flatten() {
                Some(g) => team = Some(g),
                None => {
                    waiting.entry(name.clone()).or_insert((r.name.clone(), 0)).1 += 1;
                    continue;
                }
            }
        }
        let owner = match &owners[ri] {
            None => None,
            Some(Ok(o)) => Some(o.clone()),
            Some(Err(e)) => {
                errors.push(e.clone());
                continue;
            }
        };
        out.push(Routed {
            task: ti,
            rule: ri,
            team,
            owner,
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
