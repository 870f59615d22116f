//! JSON Schema (draft-07) of the plan document, committed at `schema/plan.schema.json`.

use schemars::generate::SchemaSettings;

use super::Plan;

pub fn plan_schema() -> serde_json::Value {
    let mut s = SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<Plan>()
        .to_value();
    if let Some(o) = s.as_object_mut() {
        o.insert(
            "$id".into(),
            "https://careplane.dev/schema/plan.schema.json".into(),
        );
        o.insert("title".into(), "careplane plan (format_version 1)".into());
    }
    s
}

pub fn plan_schema_text() -> String {
    let mut s = serde_json::to_string_pretty(&plan_schema()).expect("schema serializes");
    s.push('\n');
    s
}
