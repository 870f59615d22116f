//! How careplane marks what it owns where a target can carry marks (`meta.tag`).

use serde_json::{Value, json};

/// The `meta.tag` system whose code is the project that owns a resource.
pub const TAG_SYSTEM: &str = "https://careplane.dev/project";

/// The ownership tag of `project`.
pub fn tag(project: &str) -> Value {
    json!({"system": TAG_SYSTEM, "code": project})
}

/// The project whose ownership tag a resource carries, if any.
///
/// ```
/// use careplane::vocab::ownership::{tag, tagged_project};
/// let r = serde_json::json!({"meta": {"tag": [tag("clinic")]}});
/// assert_eq!(tagged_project(&r).as_deref(), Some("clinic"));
/// ```
pub fn tagged_project(resource: &Value) -> Option<String> {
    resource
        .pointer("/meta/tag")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|t| t.get("system").and_then(Value::as_str) == Some(TAG_SYSTEM))
        .and_then(|t| t.get("code").and_then(Value::as_str))
        .map(str::to_owned)
}
