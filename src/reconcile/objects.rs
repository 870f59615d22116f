//! Stage 4: diff desired objects against observed ones, field by field, into [`Change`]s.
//!
//! Pure: no I/O, no printing. What it may plan comes from the dialect's capability table:
//! - objects are matched by manifest name or by the server's own key (`Identity`);
//! - a needed write the target cannot make is a `manual` checklist item;
//! - an object careplane manages that left the manifests is deleted (or, on targets
//!   without DELETE, retired) only with `prune`, otherwise listed as an orphan;
//! - values of exclusive fields (a responsibility belongs to one team) that move between
//!   objects are noted, so the plan says apply will release them before taking them.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;

use crate::dialect::Dialect;
use crate::manifest::Diagnostic;
use crate::observe::Observed;
use crate::plan::reason::{Route, Why};
use crate::plan::{
    Action, Change, FieldChange, MembershipDelta, Operation, Orphan, Precondition, Reason, Target,
};
use crate::rules::Pseudonymizer;
use crate::vocab::{CompactObject, DesiredObject, Identity, ObjectKind, ObservedObject};

pub struct DiffResult {
    pub changes: Vec<Change>,
    pub orphans: Vec<Orphan>,
    /// Problems that make a plan unsafe (a same-named object careplane does not own, two
    /// live objects claiming one manifest object).
    pub errors: Vec<Diagnostic>,
}

/// The labels of ids that appear in a field's values.
fn labels_for(
    desired: &DesiredObject,
    before: Option<&Value>,
    after: Option<&Value>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for v in before.into_iter().chain(after) {
        for item in items(v) {
            if let Some(s) = item.as_str()
                && let Some(label) = desired.labels.get(s)
            {
                out.insert(s.to_owned(), label.clone());
            }
        }
    }
    out
}

/// A value's items: the elements of a list, or the value itself.
fn items(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    }
}

fn field_changes(
    desired: &DesiredObject,
    observed: Option<&ObservedObject>,
    pseudo: &Pseudonymizer,
) -> Vec<FieldChange> {
    let empty = BTreeMap::new();
    let live = observed.map(|o| &o.fields).unwrap_or(&empty);
    let partial = observed.is_some_and(|o| o.partial);
    let names: BTreeSet<&String> = if partial {
        live.keys().collect()
    } else if desired.only_declared {
        desired.fields.keys().collect()
    } else {
        desired.fields.keys().chain(live.keys()).collect()
    };
    let mut out: Vec<FieldChange> = names
        .into_iter()
        .filter_map(|name| {
            let before = live.get(name).filter(|v| !v.is_null());
            let mut after = desired.fields.get(name).filter(|v| !v.is_null()).cloned();
            if desired.additive.contains(&name.as_str()) {
                // additive: the live values stay, the rule's are added
                let mut union: BTreeSet<String> = set_of(before);
                union.extend(set_of(after.as_ref()));
                after = Some(Value::Array(union.into_iter().map(Value::String).collect()));
            }
            if before == after.as_ref() {
                return None;
            }
            let source = desired
                .field_sources
                .get(name)
                .cloned()
                .or_else(|| Some(desired.source.clone()));
            if desired.kind.sensitive_fields().contains(&name.as_str()) {
                let mode = if desired.additive.contains(&name.as_str()) {
                    "additive"
                } else {
                    "authoritative"
                };
                return Some(sensitive_change(
                    name,
                    before,
                    after.as_ref(),
                    mode,
                    desired.max_removal_share,
                    source,
                    pseudo,
                ));
            }
            Some(FieldChange {
                labels: labels_for(desired, before, after.as_ref()),
                membership: None,
                sealed: None,
                field: name.clone(),
                before: before.cloned(),
                after,
                source,
            })
        })
        .collect();
    // one per routed task, 100,000 of them: no spare room
    out.shrink_to_fit();
    out
}

fn set_of(v: Option<&Value>) -> BTreeSet<String> {
    crate::vocab::json::str_list(v).into_iter().collect()
}

/// A change to a list of patients: counts and pseudonyms in the open, the real lists
/// sealed in memory.
pub(crate) fn sensitive_change(
    name: &str,
    before: Option<&Value>,
    after: Option<&Value>,
    mode: &str,
    max_removal_share: Option<f64>,
    source: Option<crate::model::Source>,
    pseudo: &Pseudonymizer,
) -> FieldChange {
    let (b, a) = (set_of(before), set_of(after));
    let sample = |s: Vec<&String>| -> Vec<String> {
        s.into_iter()
            .take(5)
            .filter_map(|r| pseudo.pseudonym(r))
            .collect()
    };
    let added: Vec<&String> = a.difference(&b).collect();
    let removed: Vec<&String> = b.difference(&a).collect();
    let membership = MembershipDelta {
        mode: mode.into(),
        before: b.len(),
        after: a.len(),
        added: added.len(),
        removed: removed.len(),
        kept: b.intersection(&a).count(),
        sample_added: sample(added),
        sample_removed: sample(removed),
        digest_before: pseudo.digest(&b),
        digest_after: pseudo.digest(&a),
        max_removal_share: max_removal_share.unwrap_or(0.2),
    };
    FieldChange {
        field: name.to_owned(),
        before: before.map(|_| serde_json::json!({"count": b.len()})),
        after: after.map(|_| serde_json::json!({"count": a.len()})),
        source,
        labels: BTreeMap::new(),
        membership: Some(Box::new(membership)),
        sealed: Some(Box::new((before.cloned(), after.cloned()))),
    }
}

/// Fields of an object that is going away, with sensitive lists reduced to counts.
fn vanishing_fields(o: &ObservedObject, pseudo: &Pseudonymizer) -> Vec<FieldChange> {
    o.fields
        .iter()
        .map(|(k, v)| {
            if o.kind.sensitive_fields().contains(&k.as_str()) {
                sensitive_change(k, Some(v), None, "authoritative", None, None, pseudo)
            } else {
                FieldChange {
                    field: k.clone(),
                    before: Some(v.clone()),
                    after: None,
                    source: None,
                    labels: BTreeMap::new(),
                    membership: None,
                    sealed: None,
                }
            }
        })
        .collect()
}

fn matches(identity: Identity, d: &DesiredObject, o: &ObservedObject) -> bool {
    o.kind == d.kind
        && match identity {
            Identity::ManifestName => o.name.as_deref() == Some(d.name.as_str()),
            Identity::NaturalKey => o.natural_key.is_some() && o.natural_key == d.natural_key,
        }
}

fn target_of(o: &ObservedObject, name: String) -> Target {
    Target {
        kind: o.kind,
        name,
        resource_type: o.resource_type.clone(),
        id: Some(o.id.clone()),
    }
}

fn seen(o: &ObservedObject) -> Precondition {
    Precondition {
        version_id: o.version_id.clone(),
        last_updated: o.last_updated.clone(),
        absent: false,
    }
}

/// What a plan may do besides creating and updating.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Delete (or retire) managed objects no manifest declares.
    pub prune: bool,
    /// Take over same-named objects careplane does not own instead of stopping.
    pub adopt: bool,
    /// Route open tasks someone already assigned, once (`apply --route-existing`: a
    /// reviewed backfill); by default routing leaves them alone.
    pub route_existing: bool,
}

pub fn diff(
    desired: &[DesiredObject],
    observed: &Observed,
    dialect: &dyn Dialect,
    opts: Options,
    pseudo: &Pseudonymizer,
) -> DiffResult {
    diff_streamed(
        desired,
        &mut std::iter::empty(),
        observed,
        dialect,
        opts,
        pseudo,
    )
}

/// A live object as diff finds it: whole, or compact (materialised when matched).
#[derive(Clone, Copy)]
enum Live<'a> {
    Full(&'a ObservedObject),
    Compact(&'a CompactObject),
}

/// [`diff`], with more desired objects made one at a time (`streamed`: one routed task
/// each) and dropped once diffed, so that 100,000 of them are never all held at once.
pub fn diff_streamed(
    desired: &[DesiredObject],
    streamed: &mut dyn Iterator<Item = DesiredObject>,
    observed: &Observed,
    dialect: &dyn Dialect,
    opts: Options,
    pseudo: &Pseudonymizer,
) -> DiffResult {
    let prune = opts.prune;
    let caps = dialect.capabilities();
    // streamed objects' changes are folded (one per routing rule): not counted here
    let mut changes = Vec::with_capacity(desired.len());
    let mut orphans = Vec::new();
    let mut errors = Vec::new();
    let mut matched: std::collections::HashSet<(&str, &str)> = std::collections::HashSet::new();
    // Live objects by kind and name, and by kind and natural key, in observed order: one
    // lookup per desired object (100,000 routed tasks scanned 100,000 objects each).
    let mut by_name: HashMap<(ObjectKind, &str), Vec<Live>> = HashMap::new();
    let mut by_key: HashMap<(ObjectKind, &str), Vec<Live>> = HashMap::new();
    for o in &observed.objects {
        if let Some(n) = &o.name {
            by_name
                .entry((o.kind, n.as_str()))
                .or_default()
                .push(Live::Full(o));
        }
        if let Some(k) = &o.natural_key {
            by_key
                .entry((o.kind, k.as_str()))
                .or_default()
                .push(Live::Full(o));
        }
    }
    for o in &observed.task_objects {
        if let Some(n) = o.name() {
            by_name
                .entry((o.kind, n))
                .or_default()
                .push(Live::Compact(o));
        }
        if let Some(k) = o.natural_key() {
            by_key
                .entry((o.kind, k))
                .or_default()
                .push(Live::Compact(o));
        }
    }
    // streamed objects of kinds with exclusive fields, kept for the check below
    let mut kept: Vec<DesiredObject> = Vec::new();

    let all = desired
        .iter()
        .map(std::borrow::Cow::Borrowed)
        .chain(streamed.map(std::borrow::Cow::Owned));
    // Changes of streamed objects (routed tasks) are folded as they are made, one per
    // routing rule (`plan::fold`): `changes[streamed..]` is the one not folded yet.
    let mut fold = crate::plan::fold::Fold::default();
    let mut streamed: Option<usize> = None;
    for d in all {
        if let std::borrow::Cow::Owned(_) = &d {
            let from = *streamed.get_or_insert(changes.len());
            fold_from(&mut changes, from, &mut fold, observed);
        }
        let Some(cap) = caps.of(d.kind) else { continue };
        if let std::borrow::Cow::Owned(o) = &d
            && !cap.exclusive.is_empty()
        {
            kept.push(o.clone());
        }
        let found: &[Live] = match cap.identity {
            Identity::ManifestName => by_name.get(&(d.kind, d.name.as_str())),
            Identity::NaturalKey => d
                .natural_key
                .as_deref()
                .and_then(|k| by_key.get(&(d.kind, k))),
        }
        .map_or(&[], Vec::as_slice);
        // compact objects (open tasks: never managed, no exclusive fields) are only
        // materialised here, and never take part in the orphan and holder checks below
        let materialised: Vec<ObservedObject> = found
            .iter()
            .filter_map(|l| match l {
                Live::Compact(c) => Some(c.to_observed()),
                Live::Full(_) => None,
            })
            .collect();
        for l in found {
            if let Live::Full(o) = l {
                matched.insert((o.resource_type.as_str(), o.id.as_str()));
            }
        }
        let live: Vec<&ObservedObject> = found
            .iter()
            .filter_map(|l| match l {
                Live::Full(o) => Some(*o),
                Live::Compact(_) => None,
            })
            .chain(&materialised)
            .collect();
        debug_assert!(live.iter().all(|o| matches(cap.identity, &d, o)));
        if live.len() > 1 {
            let ids: Vec<String> = live
                .iter()
                .map(|o| format!("{}/{}", o.resource_type, o.id))
                .collect();
            errors.push(Diagnostic {
                source: d.source.clone(),
                message: format!(
                    "{} '{}' matches {} resources on the target ({})",
                    d.kind.label(),
                    d.name,
                    live.len(),
                    ids.join(", ")
                ),
                help: Some(
                    "remove or rename the duplicates on the server (keep one), then plan again"
                        .into(),
                ),
            });
            continue;
        }
        match live.first() {
            None => {
                if let Some(nk) = &d.natural_key
                    && let Some(f) = observed
                        .foreign
                        .iter()
                        .find(|f| f.kind == d.kind && &f.natural_key == nk)
                {
                    if opts.adopt {
                        let as_observed = ObservedObject {
                            kind: f.kind,
                            name: None,
                            natural_key: Some(f.natural_key.clone()),
                            resource_type: f.resource_type.clone(),
                            id: f.id.clone(),
                            version_id: f.version_id.clone(),
                            last_updated: f.last_updated.clone(),
                            fields: f.fields.clone(),
                            managed: false,
                            partial: false,
                            evidence: None,
                        };
                        changes.push(Change {
                            action: Action::Adopt,
                            target: target_of(&as_observed, d.name.clone()),
                            fields: field_changes(&d, Some(&as_observed), pseudo),
                            reason: Reason::new(
                                Some(d.source.clone()),
                                Why::Adopt {
                                    resource_type: &f.resource_type,
                                    id: &f.id,
                                    natural_key: nk,
                                },
                            ),
                            operation: d.operation.clone(),
                            precondition: seen(&as_observed),
                            notes: Vec::new(),
                        });
                        continue;
                    }
                    errors.push(Diagnostic {
                        source: d.source.clone(),
                        message: format!(
                            "{}/{} is already named '{nk}' on the target and is not managed by careplane",
                            f.resource_type, f.id
                        ),
                        help: Some(
                            "take it over with `careplane import` (or plan/apply --adopt), or rename this team".into(),
                        ),
                    });
                    continue;
                }
                let action = if cap.create {
                    Action::Create
                } else {
                    Action::Manual
                };
                let why = Why::Missing {
                    kind: d.kind,
                    name: &d.name,
                    manual: !cap.create,
                };
                changes.push(Change {
                    action,
                    target: Target {
                        kind: d.kind,
                        name: d.name.clone(),
                        resource_type: cap.resource_type.into(),
                        id: None,
                    },
                    fields: field_changes(&d, None, pseudo),
                    reason: Reason::new(Some(d.source.clone()), why),
                    operation: d.operation.clone(),
                    precondition: Precondition {
                        absent: true,
                        ..Precondition::default()
                    },
                    notes: Vec::new(),
                });
            }
            Some(o) => {
                let fields = field_changes(&d, Some(o), pseudo);
                let route = match &d.operation {
                    Operation::RouteTask { rule, order } => Some(Route {
                        rule,
                        order: *order,
                    }),
                    _ => None,
                };
                let (action, why) = if fields.is_empty() {
                    let why = Why::Matches {
                        evidence: o.evidence.as_deref(),
                        route,
                    };
                    (Action::NoOp, why)
                } else {
                    let why = Why::Differs {
                        kind: d.kind,
                        fields: fields.iter().map(|f| f.field.as_str()).collect(),
                        route,
                        manual: !cap.update,
                    };
                    let action = if cap.update {
                        Action::Update
                    } else {
                        Action::Manual
                    };
                    (action, why)
                };
                let reason = Reason::new(Some(d.source.clone()), why);
                changes.push(Change {
                    action,
                    target: target_of(o, d.name.clone()),
                    fields,
                    reason,
                    operation: d.operation.clone(),
                    precondition: seen(o),
                    notes: Vec::new(),
                });
            }
        }
    }

    if let Some(from) = streamed {
        fold_from(&mut changes, from, &mut fold, observed);
    }
    changes.extend(fold.finish());

    for o in &observed.objects {
        if !o.managed || matched.contains(&(o.resource_type.as_str(), o.id.as_str())) {
            continue;
        }
        let Some(cap) = caps.of(o.kind) else { continue };
        let target = target_of(o, o.display_name());
        if prune && cap.delete {
            changes.push(Change {
                action: Action::Delete,
                target,
                fields: vanishing_fields(o, pseudo),
                reason: Reason::new(None, Why::Prune),
                operation: Operation::Object,
                precondition: seen(o),
                notes: Vec::new(),
            });
        } else if prune
            && cap.update
            && let Some(retired) = caps.retire(o)
        {
            let fields: Vec<FieldChange> = retired
                .iter()
                .filter(|(k, v)| o.fields.get(*k) != Some(*v))
                .map(|(k, v)| FieldChange {
                    field: k.clone(),
                    before: o.fields.get(k).cloned(),
                    after: Some(v.clone()),
                    source: None,
                    labels: BTreeMap::new(),
                    membership: None,
                    sealed: None,
                })
                .collect();
            if !fields.is_empty() {
                changes.push(Change {
                    action: Action::Update,
                    target,
                    fields,
                    reason: Reason::new(None, Why::Retire),
                    operation: Operation::Object,
                    precondition: seen(o),
                    notes: Vec::new(),
                });
            }
        } else if !prune || caps.retire(o).is_none() {
            orphans.push(Orphan { target });
        }
    }

    // A value of an exclusive field (a responsibility) wanted here but held by an object
    // this plan does not touch (a team the manifests do not declare): the target would
    // refuse the write, so say so now.
    let touched: std::collections::HashSet<(&str, &str)> = changes
        .iter()
        .filter_map(|c| {
            c.target
                .id
                .as_deref()
                .map(|id| (c.target.resource_type.as_str(), id))
        })
        .collect();
    let take_over = |kind| {
        caps.target()
            .retire
            .iter()
            .find(|r| r.kind == kind)
            .and_then(|r| r.take_over)
    };
    for o in &observed.objects {
        let key = (o.resource_type.as_str(), o.id.as_str());
        if matched.contains(&key) || touched.contains(&key) {
            continue;
        }
        let Some(cap) = caps.of(o.kind) else { continue };
        for field in cap.exclusive {
            for v in o.fields.get(*field).map(items).unwrap_or_default() {
                let wanted_by = desired.iter().chain(&kept).find(|d| {
                    d.kind == o.kind
                        && d.fields
                            .get(*field)
                            .map(items)
                            .unwrap_or_default()
                            .contains(&v)
                });
                if let Some(d) = wanted_by {
                    errors.push(Diagnostic {
                        source: d.field_sources.get(*field).cloned().unwrap_or_else(|| d.source.clone()),
                        message: format!(
                            "{field} value {} is held by {} '{}' ({}/{}), which these manifests do not declare, and the target allows one holder",
                            v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string()),
                            o.kind.label(),
                            o.display_name(),
                            o.resource_type,
                            o.id
                        ),
                        help: Some(match take_over(o.kind) {
                            Some(t) => format!(
                                "declare that {} here too, take the value off it on the target, or {t}",
                                o.kind.label()
                            ),
                            None => format!(
                                "declare that {} here too, or take the value off it on the target",
                                o.kind.label()
                            ),
                        }),
                    });
                }
            }
        }
    }
    // Name staff in values that the manifests no longer mention (a member who leaves, a
    // deleted team's members) the way a manifest would, for reviewers (folded routing
    // changes were named before they were folded).
    for f in changes.iter_mut().flat_map(|c| c.fields.iter_mut()) {
        name_staff(f, observed);
    }
    note_moves(&mut changes, dialect);
    note_manual_references(&mut changes, dialect);
    changes.sort_by(|a, b| {
        (a.target.kind.level(), &a.target.kind, &a.target.name).cmp(&(
            b.target.kind.level(),
            &b.target.kind,
            &b.target.name,
        ))
    });
    DiffResult {
        changes,
        orphans,
        errors,
    }
}

/// A change that names an object the target does not show yet and that only a person can
/// create (a checklist item: a role, on targets where roles are made by hand) will be
/// refused until that person has: say so on the change. Which kinds name which is the
/// capability table's `references`.
/// Label the staff ids in a field's values that the labels do not name yet.
fn name_staff(f: &mut FieldChange, observed: &Observed) {
    let values: Vec<String> = f
        .before
        .iter()
        .chain(f.after.iter())
        .flat_map(|v| {
            items(v)
                .into_iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
        })
        .collect();
    for s in values {
        if !f.labels.contains_key(&s)
            && let Some(name) = observed.staff.describe(&s)
        {
            f.labels.insert(s, name.clone());
        }
    }
}

/// Fold the changes made since `from` (at most the last streamed object's), with their
/// staff named first, as the final pass names everyone else's.
fn fold_from(
    changes: &mut Vec<Change>,
    from: usize,
    fold: &mut crate::plan::fold::Fold,
    observed: &Observed,
) {
    for mut c in changes.drain(from..) {
        for f in &mut c.fields {
            name_staff(f, observed);
        }
        fold.push(c);
    }
}

fn note_manual_references(changes: &mut [Change], dialect: &dyn Dialect) {
    for r in dialect.capabilities().target().references {
        let pending: BTreeMap<String, String> = changes
            .iter()
            .filter(|c| {
                c.action == Action::Manual && c.target.kind == r.to && c.precondition.absent
            })
            .filter_map(|c| {
                let key = c
                    .fields
                    .iter()
                    .find(|f| f.field == r.key)?
                    .after
                    .as_ref()?
                    .as_str()?
                    .to_owned();
                Some((key, c.target.name.clone()))
            })
            .collect();
        if pending.is_empty() {
            continue;
        }
        for c in changes
            .iter_mut()
            .filter(|c| c.target.kind == r.from && c.action.is_change())
        {
            let wanted: Vec<String> = c
                .fields
                .iter()
                .filter(|f| f.field == r.field)
                .flat_map(|f| {
                    f.after
                        .as_ref()
                        .map(items)
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect::<Vec<_>>()
                })
                .collect();
            for key in wanted {
                if let Some(name) = pending.get(&key) {
                    c.notes.push(format!(
                        "needs {} {key} ('{name}'), which the target does not show yet: create it first (manual checklist), or this write will be refused",
                        r.to.label()
                    ));
                }
            }
        }
    }
}

/// For exclusive fields: say which values move from one object to another, and that
/// apply releases them first.
fn note_moves(changes: &mut [Change], dialect: &dyn Dialect) {
    let caps = dialect.capabilities();
    // who gives a value up and who takes it, by kind and name (a routing rule's folded
    // change may share a team's name)
    type Holder = (ObjectKind, String);
    let mut released: BTreeMap<(String, String), Holder> = BTreeMap::new();
    let mut taken: BTreeMap<(String, String), Holder> = BTreeMap::new();
    for c in changes.iter() {
        let Some(cap) = caps.of(c.target.kind) else {
            continue;
        };
        for f in c
            .fields
            .iter()
            .filter(|f| cap.exclusive.contains(&f.field.as_str()))
        {
            let before: Vec<&Value> = f.before.as_ref().map(items).unwrap_or_default();
            let after: Vec<&Value> = f.after.as_ref().map(items).unwrap_or_default();
            let holder = || (c.target.kind, c.target.name.clone());
            for v in before.iter().filter(|v| !after.contains(v)) {
                released.insert((f.field.clone(), v.to_string()), holder());
            }
            for v in after.iter().filter(|v| !before.contains(v)) {
                taken.insert((f.field.clone(), v.to_string()), holder());
            }
        }
    }
    for c in changes.iter_mut() {
        let is = |h: &Holder| h.0 == c.target.kind && h.1 == c.target.name;
        let mut notes = Vec::new();
        for ((field, value), from) in &released {
            if let Some(to) = taken.get(&(field.clone(), value.clone())) {
                if is(from) {
                    notes.push(format!(
                        "releases {value} ({field}) first, so that '{}' can take it",
                        to.1
                    ));
                } else if is(to) {
                    notes.push(format!(
                        "takes {value} ({field}) after '{}' has released it",
                        from.1
                    ));
                }
            }
        }
        c.notes.extend(notes);
    }
}
