//! `careplane apply [DIR] [--plan FILE]`: apply a fresh plan (after confirmation) or a
//! saved one (after checking it still fits the target and the manifests).

use std::path::PathBuf;

use super::plan::{Format, prepare, render};
use super::{EXIT_ERROR, EXIT_OK, TargetArgs, confirmed, default_dir, out, print_error};
use crate::ops::{self, OpsError};
use crate::render as r;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Manifest directory (default: the current directory).
    pub dir: Option<PathBuf>,
    /// Apply this saved plan (from `plan --out`) instead of planning now.
    #[arg(long)]
    pub plan: Option<PathBuf>,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub auto_approve: bool,
    /// Delete owned objects that are no longer declared.
    #[arg(long, conflicts_with = "plan")]
    pub prune: bool,
    /// Also take over same-named objects careplane does not own yet.
    #[arg(long, conflicts_with = "plan")]
    pub adopt: bool,
    /// Apply even if a patient group would lose more than its `maxRemovalShare`.
    #[arg(long)]
    pub allow_mass_removal: bool,
}

pub async fn run(a: Args) -> u8 {
    let dir = default_dir(a.dir);
    let prepared = async {
        let (m, target) = prepare(&dir, &a.target)?;
        // a file store stays locked from this read to the last write (see fhir::file)
        target
            .begin_writes(&|msg| super::err(&format!("careplane: {msg}\n")))
            .await?;
        let plan = match &a.plan {
            Some(path) => {
                let mut plan = crate::plan::file::read(path)?;
                ops::check_saved_plan(&plan, &target, Some(&m))?;
                ops::reseal(&mut plan, &m, &target).await?;
                plan
            }
            None => {
                let opts = crate::diff::Options {
                    prune: a.prune,
                    adopt: a.adopt,
                };
                ops::plan_with(&m, &target, opts).await?.0
            }
        };
        ops::check_blast_radius(&plan, a.allow_mass_removal)?;
        Ok::<_, OpsError>((plan, target))
    }
    .await;
    let (plan, target) = match prepared {
        Ok(x) => x,
        Err(e) => {
            print_error(&e, &dir);
            return EXIT_ERROR;
        }
    };
    out(&render(&plan, Format::Human, None));
    if !plan.has_changes() {
        return EXIT_OK;
    }
    // A saved plan was reviewed already; a fresh one is confirmed here.
    if !confirmed(
        a.auto_approve || a.plan.is_some(),
        "apply",
        "Apply these changes?",
    ) {
        return EXIT_ERROR;
    }
    let report = ops::apply(&plan, &target).await;
    out("\n");
    out(&r::human::report(&plan, &report));
    if report.failed() == 0 {
        EXIT_OK
    } else {
        EXIT_ERROR
    }
}
