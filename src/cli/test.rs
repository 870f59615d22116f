//! `careplane test [DIR]`: run the rule tests (`kind: RuleTest`) offline. Exit 0 when all
//! pass, 1 otherwise.

use std::path::PathBuf;

use super::{EXIT_ERROR, EXIT_OK, default_dir, err, out, print_error};
use crate::ops::OpsError;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Manifest directory (default: the current directory).
    pub dir: Option<PathBuf>,
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
    if m.desired.rule_tests.is_empty() {
        err("no rule tests (kind: RuleTest) in the manifests\n");
        return EXIT_ERROR;
    }
    let results = crate::ruletest::run(&m.desired);
    out(&crate::render::human::rule_tests(&results));
    if results.iter().all(|r| r.failures.is_empty()) {
        EXIT_OK
    } else {
        EXIT_ERROR
    }
}
