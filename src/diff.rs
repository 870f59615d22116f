//! Stage 4: diff desired objects against observed ones, field by field, into [`Change`]s.
//!
//! Pure: no I/O, no printing. The dialect's capability table decides whether a needed
//! write is a create/update/delete or a `manual` checklist item; owned objects that left
//! the manifests are deleted only with `prune`, otherwise listed as orphans.

use std::collections::{BTreeMap, BTreeSet};

use crate::dialect::{Capabilities, DesiredObject, ObservedObject};
use crate::manifest::Diagnostic;
use crate::observe::Observed;
use crate::plan::{Action, Change, FieldChange, Orphan, Precondition, Reason, Target};

pub struct DiffResult {
    pub changes: Vec<Change>,
    pub orphans: Vec<Orphan>,
    /// Problems that make a plan unsafe (a same-named object careplane does not own, two
    /// live objects claiming one manifest name).
    pub errors: Vec<Diagnostic>,
}

fn field_changes(desired: &DesiredObject, observed: Option<&ObservedObject>) -> Vec<FieldChange> {
    let empty = BTreeMap::new();
    let live = observed.map(|o| &o.fields).unwrap_or(&empty);
    let names: BTreeSet<&String> = desired.fields.keys().chain(live.keys()).collect();
    names
        .into_iter()
        .filter_map(|name| {
            let before = live.get(name).filter(|v| !v.is_null());
            let after = desired.fields.get(name).filter(|v| !v.is_null());
            (before != after).then(|| FieldChange {
                labels: labels_for(desired, before, after),
                field: name.clone(),
                before: before.cloned(),
                after: after.cloned(),
                source: desired
                    .field_sources
                    .get(name)
                    .cloned()
                    .or_else(|| Some(desired.source.clone())),
            })
        })
        .collect()
}

/// The labels of ids that appear in a field's values.
fn labels_for(
    desired: &DesiredObject,
    before: Option<&serde_json::Value>,
    after: Option<&serde_json::Value>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for v in before.into_iter().chain(after) {
        let items: Vec<&serde_json::Value> = match v {
            serde_json::Value::Array(a) => a.iter().collect(),
            other => vec![other],
        };
        for item in items {
            if let Some(s) = item.as_str()
                && let Some(label) = desired.labels.get(s)
            {
                out.insert(s.to_owned(), label.clone());
            }
        }
    }
    out
}

pub fn diff(
    desired: &[DesiredObject],
    observed: &Observed,
    caps: &Capabilities,
    prune: bool,
) -> DiffResult {
    let mut changes = Vec::new();
    let mut orphans = Vec::new();
    let mut errors = Vec::new();
    let mut matched = BTreeSet::new();

    for d in desired {
        let Some(cap) = caps.of(d.kind) else { continue };
        let live: Vec<&ObservedObject> = observed
            .owned
            .iter()
            .filter(|o| o.kind == d.kind && o.name == d.name)
            .collect();
        if live.len() > 1 {
            let ids: Vec<String> = live
                .iter()
                .map(|o| format!("{}/{}", o.resource_type, o.id))
                .collect();
            errors.push(Diagnostic {
                source: d.source.clone(),
                message: format!(
                    "{} '{}' is held by {} resources on the target ({})",
                    d.kind.label(),
                    d.name,
                    live.len(),
                    ids.join(", ")
                ),
                help: Some(
                    "remove the duplicates on the server (keep one), then plan again".into(),
                ),
            });
            for o in &live {
                matched.insert((o.resource_type.clone(), o.id.clone()));
            }
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
                    errors.push(Diagnostic {
                        source: d.source.clone(),
                        message: format!(
                            "{}/{} is already named '{nk}' on the target and is not managed by careplane",
                            f.resource_type, f.id
                        ),
                        help: Some(
                            "careplane does not rewrite what it does not own: rename this team, or rename or remove the existing one".into(),
                        ),
                    });
                    continue;
                }
                changes.push(Change {
                    action: if cap.create {
                        Action::Create
                    } else {
                        Action::Manual
                    },
                    target: Target {
                        kind: d.kind,
                        name: d.name.clone(),
                        resource_type: cap.resource_type.into(),
                        id: None,
                    },
                    fields: field_changes(d, None),
                    reason: Reason {
                        source: Some(d.source.clone()),
                        rule: format!(
                            "{} '{}' is declared but not on the target",
                            d.kind.label(),
                            d.name
                        ),
                    },
                    precondition: Precondition {
                        absent: true,
                        ..Precondition::default()
                    },
                });
            }
            Some(o) => {
                matched.insert((o.resource_type.clone(), o.id.clone()));
                let fields = field_changes(d, Some(o));
                let (action, rule) = if fields.is_empty() {
                    (Action::NoOp, "matches its manifest".to_owned())
                } else {
                    let names: Vec<&str> = fields.iter().map(|f| f.field.as_str()).collect();
                    (
                        if cap.update {
                            Action::Update
                        } else {
                            Action::Manual
                        },
                        format!(
                            "live {} differs from its manifest in {}",
                            d.kind.label(),
                            names.join(", ")
                        ),
                    )
                };
                changes.push(Change {
                    action,
                    target: Target {
                        kind: d.kind,
                        name: d.name.clone(),
                        resource_type: o.resource_type.clone(),
                        id: Some(o.id.clone()),
                    },
                    fields,
                    reason: Reason {
                        source: Some(d.source.clone()),
                        rule,
                    },
                    precondition: Precondition {
                        version_id: o.version_id.clone(),
                        last_updated: o.last_updated.clone(),
                        absent: false,
                    },
                });
            }
        }
    }

    for o in &observed.owned {
        if matched.contains(&(o.resource_type.clone(), o.id.clone())) {
            continue;
        }
        let target = Target {
            kind: o.kind,
            name: o.name.clone(),
            resource_type: o.resource_type.clone(),
            id: Some(o.id.clone()),
        };
        let deletable = caps.of(o.kind).is_some_and(|c| c.delete);
        if prune && deletable {
            changes.push(Change {
                action: Action::Delete,
                target,
                fields: o
                    .fields
                    .iter()
                    .map(|(k, v)| FieldChange {
                        field: k.clone(),
                        before: Some(v.clone()),
                        after: None,
                        source: None,
                        labels: BTreeMap::new(),
                    })
                    .collect(),
                reason: Reason {
                    source: None,
                    rule: "owned by careplane but no longer declared, and --prune was given".into(),
                },
                precondition: Precondition {
                    version_id: o.version_id.clone(),
                    last_updated: o.last_updated.clone(),
                    absent: false,
                },
            });
        } else {
            orphans.push(Orphan { target });
        }
    }

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
