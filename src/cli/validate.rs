//! `careplane validate [DIR]`: offline checks, no network.

use std::path::PathBuf;

use super::{
    DiagnosticFormat, EXIT_ERROR, EXIT_OK, default_dir, err, note, out, print_diagnostics,
    print_skipped,
};
use crate::check::{Finding, Severity};
use crate::manifest::LoadError;
use crate::ops;

/// The `validate --format json` document with the findings added (`findings[]` as
/// `check --format json` lists them, `checks` their counts); `valid` is false when one is
/// an error.
fn with_findings(doc: &str, findings: &[Finding], dir: &std::path::Path) -> String {
    let Ok(mut v) = serde_json::from_str::<serde_json::Value>(doc) else {
        return doc.to_owned();
    };
    let checks: serde_json::Value =
        serde_json::from_str(&super::check::json(findings, &super::check::base(dir)))
            .unwrap_or_default();
    if checks["errors"].as_u64().unwrap_or(0) > 0 {
        v["valid"] = serde_json::Value::Bool(false);
    }
    v["findings"] = checks["findings"].clone();
    v["checks"] = serde_json::json!({
        "errors": checks["errors"],
        "warnings": checks["warnings"],
    });
    let mut s = serde_json::to_string_pretty(&v).expect("json");
    s.push('\n');
    s
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Manifest directory (default: the current directory).
    pub dir: Option<PathBuf>,
    /// How to print the result: problems as text, `file:line:col` lines, GitHub
    /// annotations, or one JSON document on stdout.
    #[arg(long, value_enum, default_value_t = DiagnosticFormat::Human)]
    pub format: DiagnosticFormat,
    /// Check variables against this target's Values (default: the default target).
    #[arg(long, short = 't')]
    pub target: Option<String>,
    /// Set a manifest variable, `NAME=VALUE` (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = super::parse_var)]
    pub vars: Vec<(String, String)>,
    /// Do not run the care-model checks of `careplane check` (errors fail validate,
    /// warnings are shown).
    #[arg(long)]
    pub no_checks: bool,
}

pub fn run(a: Args) -> u8 {
    let dir = default_dir(a.dir);
    let opts = crate::manifest::LoadOptions {
        target: a.target,
        vars: a.vars,
    };
    match ops::validate(&dir, &opts) {
        Ok(m) => {
            // the care-model checks, with the project's levels and markers: errors fail
            // validate, warnings do not; notes (info) only in `careplane check`
            let findings: Vec<Finding> = if a.no_checks {
                Vec::new()
            } else {
                let mut f = super::check::offline(&m);
                f.retain(|f| f.severity > Severity::Info);
                f
            };
            let errors = findings
                .iter()
                .filter(|f| f.severity == Severity::Error)
                .count();
            let code = if errors > 0 { EXIT_ERROR } else { EXIT_OK };
            if a.format == DiagnosticFormat::Json {
                out(&with_findings(
                    &crate::render::summary::validate(&m, &m.skipped),
                    &findings,
                    &dir,
                ));
                return code;
            }
            print_skipped(&m);
            if errors > 0 || super::verbosity() >= super::Verbosity::Normal {
                super::check::print(&findings, &dir, a.format, false);
            }
            let d = &m.desired;
            note(&format!(
                "{} manifest file(s) valid: project '{}', {} role(s), {} care-team role(s), {} team(s), {} role assignment(s).\n",
                m.files.len(),
                d.project,
                d.roles.len(),
                d.care_team_roles.len(),
                d.teams.len(),
                d.assignments.len()
            ));
            if errors > 0 {
                err(&format!(
                    "error: {errors} care-model finding(s) at level error (see `careplane check`; set a check's level under `checks:` in the Project document, or suppress one line with `# careplane:ignore ID reason: ...`)\n"
                ));
            }
            code
        }
        Err(LoadError::Invalid(e)) => {
            print_diagnostics(&e, &dir, a.format);
            EXIT_ERROR
        }
        Err(e) => {
            if a.format == DiagnosticFormat::Json {
                let mut s = serde_json::to_string_pretty(&serde_json::json!({
                    "valid": false,
                    "errors": [{"message": e.to_string()}],
                }))
                .expect("json");
                s.push('\n');
                out(&s);
            } else {
                err(&format!("error: {e}\n"));
            }
            EXIT_ERROR
        }
    }
}
