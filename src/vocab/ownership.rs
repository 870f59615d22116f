//! How careplane marks what it owns where a target can carry marks (`meta.tag`).

use serde_json::{Value, json};

/// The `meta.tag` system whose code is the project that owns a resource.
pub const TAG_SYSTEM: &str = "https://careplane.dev/project";

/// The ownership tag of `project`.
pub fn tag(project: &str) -> Value {
    json!({"system": TAG_SYSTEM, "code": project})
}

/// The `meta.tag` (and identifier) system that marks a task careplane routed; its code is
/// the project. A marked task is not owned: careplane only remembers that it routed it.
pub const ROUTED_SYSTEM: &str = "https://careplane.dev/routed";

/// The project that routed `resource`, from its routing mark, if any.
pub fn routed_by(resource: &Value) -> Option<String> {
    tag_code(resource, ROUTED_SYSTEM)
}

/// The code of `resource`'s `meta.tag` of `system`, if any.
fn tag_code(resource: &Value, system: &str) -> Option<String> {
    resource
        .pointer("/meta/tag")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|t| t.get("system").and_then(Value::as_str) == Some(system))
        .and_then(|t| t.get("code").and_then(Value::as_str))
        .map(str::to_owned)
}

/// `resource` marked as routed by `project`: a `meta.tag` and an identifier (searchable by
/// either), every other tag and identifier kept.
pub fn mark_routed(resource: &mut Value, project: &str) {
    let tag = json!({"system": ROUTED_SYSTEM, "code": project});
    let id = json!({"system": ROUTED_SYSTEM, "value": project});
    let keep = |list: Option<&Value>, key: &str| -> Vec<Value> {
        list.and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|x| {
                x.get("system").and_then(Value::as_str) != Some(ROUTED_SYSTEM)
                    || x.get(key).is_none()
            })
            .cloned()
            .collect()
    };
    let mut tags = keep(resource.pointer("/meta/tag"), "code");
    tags.push(tag);
    let mut ids = keep(resource.get("identifier"), "value");
    ids.push(id);
    if !resource.get("meta").is_some_and(Value::is_object) {
        resource["meta"] = json!({});
    }
    resource["meta"]["tag"] = Value::Array(tags);
    resource["identifier"] = Value::Array(ids);
}

/// The project whose ownership tag a resource carries, if any.
///
/// ```
/// use careplane::vocab::ownership::{tag, tagged_project};
/// let r = serde_json::json!({"meta": {"tag": [tag("clinic")]}});
/// assert_eq!(tagged_project(&r).as_deref(), Some("clinic"));
/// ```
pub fn tagged_project(resource: &Value) -> Option<String> {
    tag_code(resource, TAG_SYSTEM)
}
