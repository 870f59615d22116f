//! The machine-readable forms of a check run: the JSON report (`check --format json`,
//! schema `schema/check.schema.json`) and a SARIF 2.1.0 log (`check --format sarif`, for
//! GitHub code scanning). Pure: these build values; `cli::check` prints them.

use schemars::JsonSchema;
use serde::Serialize;

use super::{CHECKS, Finding, Severity};

/// `careplane check --format json`: every finding, and the counts per severity.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct CheckReport {
    /// The findings, in manifest order (file, line, column).
    pub findings: Vec<ReportedFinding>,
    /// How many findings are errors (any fails `check` with exit 1).
    pub errors: usize,
    /// How many findings are warnings.
    pub warnings: usize,
    /// How many findings are notes (`info`).
    pub infos: usize,
}

/// One finding in [`CheckReport`].
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ReportedFinding {
    /// Stable check id, e.g. `CP101`.
    pub id: String,
    /// Stable check name, e.g. `responsibility-unowned`.
    pub slug: String,
    /// The level after the project's `checks:` settings.
    pub severity: Severity,
    /// The manifest file, as given on the command line (DIR joined with the file).
    pub file: String,
    /// 1-based line in `file`.
    pub line: u64,
    /// 1-based column in `file`.
    pub col: u64,
    /// What is wrong, for the clinic.
    pub message: String,
    /// What to do.
    pub help: String,
}

/// The JSON report; `base` is prefixed to each manifest file (the DIR given, with `/`).
pub fn report(findings: &[Finding], base: &str) -> CheckReport {
    let count = |l: Severity| findings.iter().filter(|f| f.severity == l).count();
    CheckReport {
        findings: findings
            .iter()
            .map(|f| ReportedFinding {
                id: f.id.to_string(),
                slug: f.slug.to_string(),
                severity: f.severity,
                file: format!("{base}{}", f.source.file),
                line: f.source.line,
                col: f.source.col,
                message: f.message.clone(),
                help: f.help.clone(),
            })
            .collect(),
        errors: count(Severity::Error),
        warnings: count(Severity::Warning),
        infos: count(Severity::Info),
    }
}

/// The JSON Schema (draft-07) of [`CheckReport`], as committed in `schema/check.schema.json`.
pub fn schema_text() -> String {
    let mut s = schemars::generate::SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<CheckReport>()
        .to_value();
    if let Some(o) = s.as_object_mut() {
        o.insert(
            "$id".into(),
            "https://careplane.dev/schema/check.schema.json".into(),
        );
        o.insert(
            "title".into(),
            "careplane check report (check --format json)".into(),
        );
    }
    let mut t = serde_json::to_string_pretty(&s).expect("schema serializes");
    t.push('\n');
    t
}

/// SARIF's `level` for a severity.
fn level(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Info => "note",
    }
}

/// A relative path as a URI reference: `%` and spaces escaped, `\` as `/`.
fn uri(path: &str) -> String {
    path.replace('\\', "/")
        .replace('%', "%25")
        .replace(' ', "%20")
}

/// A SARIF 2.1.0 log with one run: the tool (`careplane`, its version, every check as a
/// rule with its default level) and one result per finding at its manifest line.
///
/// Each location's `uri` is the manifest file as the other formats print it (`base`, the
/// DIR given, joined with the file), so run from the repository root it is relative to
/// the root, which is what GitHub code scanning expects. A relative `uri` carries
/// `uriBaseId: SRCROOT` (the directory `careplane check` ran in); the log does not define
/// SRCROOT in `originalUriBaseIds`, which would put an absolute local path in the file:
/// consumers resolve it to their checkout (GitHub uses the repository root).
pub fn sarif(findings: &[Finding], base: &str, version: &str) -> serde_json::Value {
    let rules: Vec<serde_json::Value> = CHECKS
        .iter()
        .map(|(id, slug, sev, what)| {
            serde_json::json!({
                "id": id,
                "name": slug,
                "shortDescription": {"text": what},
                "defaultConfiguration": {"level": level(*sev)},
            })
        })
        .collect();
    let results: Vec<serde_json::Value> = findings
        .iter()
        .map(|f| {
            let path = format!("{base}{}", f.source.file);
            let mut artifact = serde_json::json!({"uri": uri(&path)});
            if !path.starts_with('/') {
                artifact["uriBaseId"] = "SRCROOT".into();
            }
            let mut r = serde_json::json!({
                "ruleId": f.id,
                "level": level(f.severity),
                "message": {"text": format!("{} (help: {})", f.message, f.help)},
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": artifact,
                        "region": {
                            "startLine": f.source.line.max(1),
                            "startColumn": f.source.col.max(1),
                        },
                    },
                }],
            });
            if let Some(i) = CHECKS.iter().position(|c| c.0 == f.id) {
                r["ruleIndex"] = i.into();
            }
            r
        })
        .collect();
    serde_json::json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "careplane",
                "version": version,
                "rules": rules,
            }},
            "results": results,
        }],
    })
}
