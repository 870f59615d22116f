//! `careplane validate [DIR]`: offline checks, no network.

use std::path::PathBuf;

use super::{
    DiagnosticFormat, EXIT_ERROR, EXIT_OK, default_dir, err, note, out, print_diagnostics,
    print_skipped,
};
use crate::manifest::LoadError;
use crate::ops;

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
    /// Do not run the care-model checks of `careplane check` (shown as warnings).
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
            if a.format == DiagnosticFormat::Json {
                out(&crate::render::summary::validate(&m, &m.skipped));
                return EXIT_OK;
            }
            print_skipped(&m);
            if !a.no_checks && super::verbosity() >= super::Verbosity::Normal {
                // errors and warnings, as warnings; notes only in `careplane check`
                let mut findings = crate::check::run(&m.desired);
                findings.retain(|f| f.severity > crate::check::Severity::Info);
                super::check::print(&findings, &dir, a.format, true);
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
            EXIT_OK
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
