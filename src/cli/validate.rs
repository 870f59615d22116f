//! `careplane validate [DIR]`: offline checks, no network.

use std::path::PathBuf;

use super::{DiagnosticFormat, EXIT_ERROR, EXIT_OK, default_dir, err, print_diagnostics};
use crate::manifest::LoadError;
use crate::ops;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Manifest directory (default: the current directory).
    pub dir: Option<PathBuf>,
    /// How to print problems.
    #[arg(long, value_enum, default_value_t = DiagnosticFormat::Human)]
    pub format: DiagnosticFormat,
    /// Check variables against this target's Values (default: the default target).
    #[arg(long, short = 't')]
    pub target: Option<String>,
    /// Set a manifest variable, `NAME=VALUE` (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = super::parse_var)]
    pub vars: Vec<(String, String)>,
}

pub fn run(a: Args) -> u8 {
    let dir = default_dir(a.dir);
    let opts = crate::manifest::LoadOptions {
        target: a.target,
        vars: a.vars,
    };
    match ops::validate(&dir, &opts) {
        Ok(m) => {
            let d = &m.desired;
            err(&format!(
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
            err(&format!("error: {e}\n"));
            EXIT_ERROR
        }
    }
}
