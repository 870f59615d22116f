//! Small helpers over FHIR JSON shared by every stage.

use serde_json::Value;

/// A sorted, de-duplicated list of strings: lists whose order means nothing.
pub fn sorted_strings(mut v: Vec<String>) -> Value {
    v.sort();
    v.dedup();
    Value::Array(v.into_iter().map(Value::String).collect())
}

/// The strings of a JSON list.
pub fn str_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str().map(str::to_owned))
        .collect()
}

/// `meta.<field>` as a string.
pub fn meta(r: &Value, field: &str) -> Option<String> {
    r.get("meta")?.get(field)?.as_str().map(str::to_owned)
}

/// The entries of `r[key]` that careplane does not manage (`managed` says which it
/// does), followed by `add`.
pub fn replace_managed(
    r: &Value,
    key: &str,
    managed: impl Fn(&Value) -> bool,
    add: Vec<Value>,
) -> Vec<Value> {
    let mut out: Vec<Value> = r
        .get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|x| !managed(x))
        .cloned()
        .collect();
    out.extend(add);
    out
}
