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
