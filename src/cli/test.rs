//! `careplane test [DIR]`: run the rule tests (`kind: RuleTest`) offline. Exit 0 when all
//! pass (or there are none: a note says so), 1 otherwise.

use std::path::PathBuf;

use clap::ValueEnum;

use super::{EXIT_ERROR, EXIT_OK, default_dir, note, out, print_error};
use crate::ops::OpsError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Human,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Manifest directory (default: the current directory).
    pub dir: Option<PathBuf>,
    /// Output format on stdout.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
}

pub fn run(a: Args) -> u8 {
    let dir = default_dir(a.dir);
    let m = match crate::ops::validate(&dir, &Default::default()) {
        Ok(m) => m,
        Err(e) => {
            print_error(&OpsError::Load(e), &dir);
            return EXIT_ERROR;
        }
    };
    let results = crate::ruletest::run(&m.desired);
    if a.format == Format::Json {
        out(&crate::render::summary::rule_tests(&results));
    } else if results.is_empty() {
        note("note: no rule tests (kind: RuleTest) in the manifests; nothing to run\n");
    } else {
        out(&crate::render::human::rule_tests(&results));
    }
    if results.iter().all(|r| r.failures.is_empty()) {
        EXIT_OK
    } else {
        EXIT_ERROR
    }
}
