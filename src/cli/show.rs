//! `careplane show PLANFILE`: print a saved plan (from `plan --out`), like `terraform
//! show`. The file is read as `apply --plan` reads it (bounded, checked); nothing is
//! contacted.

use std::path::PathBuf;

use super::plan::{Format, render};
use super::{EXIT_ERROR, EXIT_OK, err, note, out};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The saved plan (`careplane plan --out FILE`).
    pub plan: PathBuf,
    /// Output format on stdout.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
}

pub fn run(a: Args) -> u8 {
    let plan = match crate::plan::file::read(&a.plan) {
        Ok(p) => p,
        Err(e) => {
            err(&format!("error: {e}\n"));
            return EXIT_ERROR;
        }
    };
    out(&render(&plan, a.format, None));
    if a.format == Format::Human {
        note(&format!(
            "Plan file digest {}; apply it with: careplane apply DIR --plan {}\n",
            crate::plan::file::checksum(&plan),
            a.plan.display()
        ));
    }
    EXIT_OK
}
