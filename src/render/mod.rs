//! Stage 7: render. Renderers read plans, reports and diagnostics and return text; they
//! never decide anything and never print (the CLI writes what they return).

pub mod diagnostics;
pub mod drift;
pub mod human;
pub mod markdown;
pub mod report;
pub mod summary;

use serde_json::Value;

/// A value as one short line: strings unquoted when simple, everything else as JSON.
pub fn inline(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// For list fields: (removed, added) items, in order.
pub fn list_delta(
    before: Option<&Value>,
    after: Option<&Value>,
) -> Option<(Vec<Value>, Vec<Value>)> {
    let b = match before {
        None => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(_) => return None,
    };
    let a = match after {
        None => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(_) => return None,
    };
    if before.is_none() && after.is_none() {
        return None;
    }
    let removed = b.iter().filter(|x| !a.contains(x)).cloned().collect();
    let added = a.iter().filter(|x| !b.contains(x)).cloned().collect();
    Some((removed, added))
}

/// Routing changes grouped by rule: a plan shows tasks as counts per rule, never one by
/// one (a reviewer approves the rule, not a list of tasks).
pub struct RoutingGroup<'a> {
    pub rule: &'a str,
    pub order: i64,
    pub tasks: usize,
    /// The fields the rule sets on them.
    pub fields: std::collections::BTreeSet<&'a str>,
    pub source: Option<&'a crate::model::Source>,
}

/// Whether a change routes one task.
pub fn is_routing(c: &crate::plan::Change) -> bool {
    matches!(
        c.operation,
        crate::plan::Operation::RouteTask { .. } | crate::plan::Operation::RouteTasks { .. }
    )
}

/// The routing changes among `changes`, by rule (in rule order).
pub fn routing_groups<'a>(changes: &[&'a crate::plan::Change]) -> Vec<RoutingGroup<'a>> {
    let mut groups: Vec<RoutingGroup<'a>> = Vec::new();
    for c in changes {
        let (crate::plan::Operation::RouteTask { rule, order, .. }
        | crate::plan::Operation::RouteTasks { rule, order, .. }) = &c.operation
        else {
            continue;
        };
        let at = match groups.iter().position(|g| g.rule == rule.as_str()) {
            Some(i) => i,
            None => {
                groups.push(RoutingGroup {
                    rule,
                    order: *order,
                    tasks: 0,
                    fields: Default::default(),
                    source: c.reason.source.as_ref(),
                });
                groups.len() - 1
            }
        };
        let g = &mut groups[at];
        g.tasks += c.width();
        g.fields.extend(
            c.fields
                .iter()
                .filter(|f| f.field != "routedBy")
                .map(|f| f.field.as_str()),
        );
    }
    groups.sort_by_key(|g| (g.order, g.rule));
    groups
}
