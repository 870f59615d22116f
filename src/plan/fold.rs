//! Routing changes, folded: a plan that routes 100,000 open tasks holds one change per
//! routing rule and shape (the fields it sets, its reason, its notes) instead of one per
//! task, each task kept as its id, its precondition and, where they differ, its own
//! before/after values ([`RoutedTask`]). Folding is exact: [`Change::unfolded`] gives back
//! every task's change as the planner made it, which is what apply writes.

use std::collections::HashMap;

use super::{Change, FieldChange, Precondition, Target};
use crate::vocab::{Operation, RoutedTask};

/// Folded changes tried per rule before a task's change is kept whole (tasks whose changes
/// differ in more than values: the previous owners a reroute names, say).
const MAX_SHAPES: usize = 64;

/// Folds routing changes as the planner makes them, one at a time.
#[derive(Default)]
pub struct Fold {
    folded: Vec<Change>,
    /// Indexes into `folded`, by rule.
    by_rule: HashMap<String, Vec<usize>>,
    /// Changes that do not fold, kept whole.
    whole: Vec<Change>,
}

impl Fold {
    /// Fold `c` into the folded change of its rule and shape (a new one if none fits), or
    /// keep it whole (not a task routing, or unlike every folded change of its rule).
    pub fn push(&mut self, c: Change) {
        let Some(task) = task_of(&c) else {
            self.whole.push(c);
            return;
        };
        let Operation::RouteTask { rule, order } = &c.operation else {
            unreachable!("task_of accepts RouteTask changes only")
        };
        let candidates = match self.by_rule.get_mut(rule.as_str()) {
            Some(v) => v,
            None => self.by_rule.entry(rule.clone()).or_default(),
        };
        for &i in candidates.iter() {
            let f = &mut self.folded[i];
            if fits(f, &c) {
                let values = (!f
                    .fields
                    .iter()
                    .zip(&c.fields)
                    .all(|(a, b)| a.before == b.before && a.after == b.after))
                .then(|| {
                    c.fields
                        .into_iter()
                        .map(|x| (x.before, x.after))
                        .collect::<Box<[_]>>()
                });
                if let Operation::RouteTasks { tasks, .. } = &mut f.operation {
                    let mut task = task;
                    task.values = values;
                    tasks.push(task);
                }
                return;
            }
        }
        if candidates.len() >= MAX_SHAPES {
            self.whole.push(c);
            return;
        }
        candidates.push(self.folded.len());
        let (rule, order) = (rule.clone(), *order);
        self.folded.push(Change {
            action: c.action,
            target: Target {
                kind: c.target.kind,
                name: rule.clone(),
                resource_type: c.target.resource_type,
                id: None,
            },
            fields: c.fields,
            reason: c.reason,
            operation: Operation::RouteTasks {
                rule,
                order,
                tasks: vec![task],
            },
            precondition: Precondition::default(),
            notes: c.notes,
        });
    }

    /// The changes: those kept whole, then the folded ones (in the order their first task
    /// came).
    pub fn finish(self) -> Vec<Change> {
        let mut out = self.whole;
        out.extend(self.folded.into_iter().map(|mut c| {
            if let Operation::RouteTasks { tasks, .. } = &mut c.operation {
                tasks.shrink_to_fit();
            }
            c
        }));
        out
    }
}

/// The task a routing change is about, when the change folds: a `RouteTask` on
/// `<type>/<id>` of a live task (its precondition what was seen), with no patient lists.
fn task_of(c: &Change) -> Option<RoutedTask> {
    if !matches!(c.operation, Operation::RouteTask { .. })
        || c.precondition.absent
        || c.fields
            .iter()
            .any(|f| f.membership.is_some() || f.sealed.is_some())
    {
        return None;
    }
    let id = c.target.id.as_deref()?;
    let named = c
        .target
        .name
        .strip_prefix(c.target.resource_type.as_str())
        .and_then(|n| n.strip_prefix('/'));
    if named != Some(id) {
        return None;
    }
    RoutedTask::new(
        id,
        c.precondition.version_id.as_deref(),
        c.precondition.last_updated.as_deref(),
    )
}

/// Whether `c` is the folded change `f` but for its task and the fields' values.
fn fits(f: &Change, c: &Change) -> bool {
    let Operation::RouteTasks { order, .. } = &f.operation else {
        return false;
    };
    matches!(&c.operation, Operation::RouteTask { order: o, .. } if o == order)
        && f.action == c.action
        && f.target.kind == c.target.kind
        && f.target.resource_type == c.target.resource_type
        && f.reason == c.reason
        && f.notes == c.notes
        && f.fields.len() == c.fields.len()
        && f.fields
            .iter()
            .zip(&c.fields)
            .all(|(a, b)| a.field == b.field && a.source == b.source && a.labels == b.labels)
}

impl Change {
    /// How many changes this one stands for: one per task when folded, else one.
    pub fn width(&self) -> usize {
        match &self.operation {
            Operation::RouteTasks { tasks, .. } => tasks.len(),
            _ => 1,
        }
    }

    /// Whether this is a folded change ([`Change::unfolded`] makes more than itself).
    pub fn unfolds(&self) -> bool {
        matches!(self.operation, Operation::RouteTasks { .. })
    }

    /// The changes this one stands for, one by one: each task's own change when folded,
    /// else itself.
    pub fn unfolded(&self) -> Vec<Change> {
        self.unfolded_part(0..self.width())
    }

    /// [`Change::unfolded`], tasks `part` only (itself for `0..1` when not folded).
    pub fn unfolded_part(&self, part: std::ops::Range<usize>) -> Vec<Change> {
        let Operation::RouteTasks { rule, order, tasks } = &self.operation else {
            return if part.contains(&0) {
                vec![self.clone()]
            } else {
                Vec::new()
            };
        };
        tasks
            .get(part)
            .unwrap_or_default()
            .iter()
            .map(|t| Change {
                action: self.action,
                target: Target {
                    kind: self.target.kind,
                    name: format!("{}/{}", self.target.resource_type, t.id()),
                    resource_type: self.target.resource_type.clone(),
                    id: Some(t.id().to_owned()),
                },
                fields: match &t.values {
                    None => self.fields.clone(),
                    Some(values) => self
                        .fields
                        .iter()
                        .zip(values.iter())
                        .map(|(f, (before, after))| FieldChange {
                            before: before.clone(),
                            after: after.clone(),
                            ..f.clone()
                        })
                        .collect(),
                },
                reason: self.reason.clone(),
                operation: Operation::RouteTask {
                    rule: rule.clone(),
                    order: *order,
                },
                precondition: Precondition {
                    version_id: t.version_id().map(str::to_owned),
                    last_updated: t.last_updated().map(str::to_owned),
                    absent: false,
                },
                notes: self.notes.clone(),
            })
            .collect()
    }
}

/// Test fixture: the change routing open task `Task/<id>` (seen at version `1`) by rule
/// `rule`, setting `fields`.
#[cfg(test)]
pub(crate) fn routed_task(
    id: &str,
    rule: &str,
    action: super::Action,
    fields: Vec<FieldChange>,
) -> Change {
    Change {
        action,
        target: Target {
            kind: crate::vocab::ObjectKind::TaskRouting,
            name: format!("Task/{id}"),
            resource_type: "Task".into(),
            id: Some(id.into()),
        },
        fields,
        reason: super::Reason {
            code: super::ReasonCode::RoutingRule,
            source: None,
            rule: format!("routing rule '{rule}' routes it"),
        },
        operation: Operation::RouteTask {
            rule: rule.into(),
            order: 10,
        },
        precondition: Precondition {
            version_id: Some("1".into()),
            last_updated: None,
            absent: false,
        },
        notes: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Source;
    use crate::plan::Action;
    use serde_json::{Value, json};

    fn routed(id: &str, rule: &str, labels_before: Option<Vec<&str>>, version: &str) -> Change {
        let source = Some(Source {
            file: "rules.yaml".into(),
            line: 3,
            col: 5,
        });
        let field = |name: &str, before: Option<Value>, after: Value| FieldChange {
            field: name.into(),
            before,
            after: Some(after),
            source: source.clone(),
            labels: Default::default(),
            membership: None,
            sealed: None,
        };
        let mut after = vec!["Internal Referral"];
        after.extend(labels_before.iter().flatten());
        after.sort();
        let fields = vec![
            field("team", None, json!("Group/t1")),
            field("labels", labels_before.map(|l| json!(l)), json!(after)),
        ];
        let mut c = routed_task(id, rule, Action::Update, fields);
        c.reason.source = source;
        c.precondition.version_id = Some(version.into());
        c.precondition.last_updated = Some("2026-12-01T10:00:00Z".into());
        c
    }

    #[test]
    fn folding_then_unfolding_gives_every_change_back() {
        let mut whole = routed("t9", "psych", None, "1");
        whole.precondition.absent = true; // not a live task: kept whole
        let changes = vec![
            routed("t1", "psych", None, "1"),
            routed("t2", "psych", Some(vec!["Urgent"]), "4"),
            routed("t3", "labs", None, "2"),
            routed("t4", "psych", None, "7"),
            whole.clone(),
        ];
        let mut fold = Fold::default();
        for c in changes.clone() {
            fold.push(c);
        }
        let folded = fold.finish();
        // one kept whole, one folded change per rule (labels' values differ, not shape)
        assert_eq!(folded.len(), 3);
        assert_eq!(folded[0], whole);
        assert_eq!(folded.iter().map(Change::width).sum::<usize>(), 5);
        let psych = &folded[1];
        assert_eq!(psych.width(), 3);
        assert_eq!(psych.target.name, "psych");
        let Operation::RouteTasks { tasks, .. } = &psych.operation else {
            panic!("not folded")
        };
        // only the task whose values differ carries them
        assert_eq!(
            tasks.iter().map(|t| t.values.is_some()).collect::<Vec<_>>(),
            [false, true, false]
        );
        let mut back: Vec<Change> = folded.iter().flat_map(Change::unfolded).collect();
        let key = |c: &Change| c.target.name.clone();
        back.sort_by_key(key);
        let mut want = changes;
        want.sort_by_key(key);
        assert_eq!(back, want);
    }

    #[test]
    fn a_task_keeps_its_precondition_exactly() {
        for (version, time) in [(Some("3"), None), (None, Some("2026")), (None, None)] {
            let mut c = routed("t1", "psych", None, "1");
            c.precondition.version_id = version.map(str::to_owned);
            c.precondition.last_updated = time.map(str::to_owned);
            let mut fold = Fold::default();
            fold.push(c.clone());
            let folded = fold.finish();
            assert!(folded[0].unfolds());
            assert_eq!(folded[0].unfolded(), vec![c]);
        }
        // a version with a line break is not folded (kept whole, as it came)
        let mut odd = routed("t1", "psych", None, "1\n2");
        odd.precondition.last_updated = None;
        let mut fold = Fold::default();
        fold.push(odd.clone());
        assert_eq!(fold.finish(), vec![odd]);
    }

    #[test]
    fn changes_of_another_shape_fold_apart() {
        let mut other = routed("t2", "psych", None, "1");
        other.fields.truncate(1); // sets the team only: another reason, another shape
        other.reason.rule = "routing rule 'psych' routes it; it sets team".into();
        let mut fold = Fold::default();
        fold.push(routed("t1", "psych", None, "1"));
        fold.push(other.clone());
        let folded = fold.finish();
        assert_eq!(folded.len(), 2);
        assert_eq!(folded[1].unfolded(), vec![other]);
    }
}
