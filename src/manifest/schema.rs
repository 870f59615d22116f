//! The manifest JSON Schema (draft-07, the newest yaml-language-server validates with).
//!
//! Built from the registry of kinds (`kinds.rs`): each kind's `spec` type and description. The root schema dispatches on `kind` with
//! `if`/`then`, so an editor (and `validate`) reports errors against the right kind instead
//! of a useless "not valid under any of the schemas".

use schemars::generate::SchemaSettings;
use serde_json::{Value, json};

use super::kinds::{self, REGISTRY};
use super::types::{API_VERSION, Metadata, ReservedSpec};

/// The draft-07 JSON Schema of a manifest document.
pub fn manifest_schema() -> Value {
    let mut generator = SchemaSettings::draft07().into_generator();
    let metadata = generator.subschema_for::<Metadata>();
    let specs: Vec<(&str, Option<Value>, &str)> = REGISTRY
        .iter()
        .map(|e| (e.kind, e.schema.map(|s| s(&mut generator)), e.description))
        .collect();
    let reserved = generator.subschema_for::<ReservedSpec>().to_value();
    let mut definitions = generator.take_definitions(true);
    if let Some(v) = definitions
        .get_mut("ValuesSpec")
        .and_then(Value::as_object_mut)
    {
        v.insert(
            "propertyNames".into(),
            json!({"pattern": "^[A-Za-z_][A-Za-z0-9_]*$"}),
        );
    }
    debug_assert!(metadata.get("$ref").is_some());
    let mut all_of = Vec::new();
    for (kind, spec, description) in specs {
        let (spec, description) = match spec {
            Some(spec) => (spec, description.to_owned()),
            None => (
                reserved.clone(),
                format!("{kind}: reserved for rule support (not in this version)."),
            ),
        };
        let doc = json!({
            "description": description,
            "type": "object",
            "additionalProperties": false,
            "required": ["apiVersion", "kind", "metadata", "spec"],
            "properties": {
                "apiVersion": {"const": API_VERSION},
                "kind": {"const": kind},
                "metadata": {"$ref": "#/definitions/Metadata"},
                "spec": spec,
            }
        });
        definitions.insert(format!("{kind}Document"), doc);
        all_of.push(json!({
            "if": {"properties": {"kind": {"const": kind}}, "required": ["kind"]},
            "then": {"$ref": format!("#/definitions/{kind}Document")}
        }));
    }
    json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$id": "https://careplane.dev/schema/careplane.schema.json",
        "title": "careplane manifest",
        "description": "One document of a careplane manifest file (apiVersion careplane.dev/v1).",
        "type": "object",
        "required": ["apiVersion", "kind"],
        "properties": {
            "apiVersion": {"const": API_VERSION, "description": "Always careplane.dev/v1."},
            "kind": {"enum": kinds::names()},
        },
        "allOf": all_of,
        "definitions": definitions,
    })
}

/// The schema as committed at `schema/careplane.schema.json` (pretty, trailing newline).
pub fn manifest_schema_text() -> String {
    let mut s = serde_json::to_string_pretty(&manifest_schema()).expect("schema serializes");
    s.push('\n');
    s
}

/// A validator for one kind's document schema (`#/definitions/<Kind>Document`), so errors
/// are reported against the kind the document says it is.
pub struct KindValidators {
    root: jsonschema::Validator,
    kinds: Vec<(String, jsonschema::Validator)>,
}

impl KindValidators {
    pub fn new() -> Self {
        let schema = manifest_schema();
        let build = |v: &Value| {
            jsonschema::options()
                .with_draft(jsonschema::Draft::Draft7)
                .build(v)
                .expect("careplane's own schema compiles")
        };
        let mut root_only = schema.clone();
        root_only.as_object_mut().unwrap().remove("allOf");
        let kinds = kinds::names()
            .into_iter()
            .map(|k| {
                let mut s = schema.clone();
                let o = s.as_object_mut().unwrap();
                o.remove("allOf");
                o.remove("properties");
                o.remove("required");
                o.insert("$ref".into(), json!(format!("#/definitions/{k}Document")));
                (k.to_string(), build(&s))
            })
            .collect();
        KindValidators {
            root: build(&root_only),
            kinds,
        }
    }

    /// Schema errors of one document as (JSON Pointer, message).
    pub fn errors(&self, doc: &Value) -> Vec<(String, String)> {
        let collect = |v: &jsonschema::Validator| {
            v.iter_errors(doc)
                .map(|e| {
                    let mut message = e.to_string();
                    if let jsonschema::error::ValidationErrorKind::Enum { options } = e.kind() {
                        let allowed: Vec<String> = options
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|o| {
                                o.as_str()
                                    .map(str::to_owned)
                                    .unwrap_or_else(|| o.to_string())
                            })
                            .collect();
                        message = format!(
                            "{} is not one of the allowed values: {}",
                            e.instance(),
                            allowed.join(", ")
                        );
                    }
                    (e.instance_path().to_string(), message)
                })
                .collect::<Vec<_>>()
        };
        let root = collect(&self.root);
        if !root.is_empty() {
            return root;
        }
        let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
        match self.kinds.iter().find(|(k, _)| k == kind) {
            Some((_, v)) => collect(v),
            None => vec![],
        }
    }
}

impl Default for KindValidators {
    fn default() -> Self {
        Self::new()
    }
}
