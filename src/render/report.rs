//! The record of an apply ([`crate::apply::ApplyRecord`]) as JSON, for `apply --report`;
//! its schema is `schema/apply-report.schema.json`.

use crate::apply::ApplyRecord;

/// The apply report as pretty JSON, ending in a newline.
pub fn json(record: &ApplyRecord) -> String {
    let mut s = serde_json::to_string_pretty(record).expect("apply records serialize");
    s.push('\n');
    s
}
