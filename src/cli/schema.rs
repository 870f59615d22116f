//! `careplane schema`: print the manifest JSON Schema (draft-07), or the plan file schema.

use super::{EXIT_OK, out};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the schema of plan files (`plan --format json`, `plan --out`) instead.
    #[arg(long, conflicts_with = "drift")]
    pub plan: bool,
    /// Print the schema of drift reports (`drift --format json`) instead.
    #[arg(long, conflicts_with = "apply_report")]
    pub drift: bool,
    /// Print the schema of apply reports (`apply --report FILE`) instead.
    #[arg(long, conflicts_with = "plan")]
    pub apply_report: bool,
    /// Print the schema of check reports (`check --format json`) instead.
    #[arg(long, conflicts_with_all = ["plan", "drift", "apply_report"])]
    pub check: bool,
}

pub fn run(a: Args) -> u8 {
    if a.check {
        out(&crate::check::report::schema_text());
    } else if a.apply_report {
        out(&crate::apply::record_schema_text());
    } else if a.drift {
        out(&crate::drift::schema_text());
    } else if a.plan {
        out(&crate::plan::schema::plan_schema_text());
    } else {
        out(&crate::manifest::schema::manifest_schema_text());
    }
    EXIT_OK
}
