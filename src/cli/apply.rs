//! `careplane apply [DIR] [--plan FILE] [--report FILE]`: apply a fresh plan (after
//! confirmation) or a saved one (after checking it still fits the target, the manifests
//! and every object it writes), and keep a record of what was written (a Provenance on
//! targets that store one, the `--report` JSON everywhere).

use std::path::PathBuf;

use super::plan::{Format, prepare, render};
use super::{
    EXIT_ERROR, EXIT_OK, TargetArgs, confirmed, default_dir, err, out, print_error, write_report,
};
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
    /// Write the record of this apply (what was written and why; no patient ids, no
    /// credentials) to this file as JSON (schema/apply-report.schema.json).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
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
        let agent = ops::agent(&m, &target);
        Ok::<_, OpsError>((plan, target, agent))
    }
    .await;
    let (plan, target, agent) = match prepared {
        Ok(x) => x,
        Err(e) => {
            print_error(&e, &dir);
            return EXIT_ERROR;
        }
    };
    out(&render(&plan, Format::Human, None));
    let saved = a.plan.is_some();
    // A saved plan was reviewed already; a fresh one is confirmed here.
    if plan.has_changes() && !confirmed(a.auto_approve || saved, "apply", "Apply these changes?") {
        return EXIT_ERROR;
    }
    let applied = ops::apply_recorded(&plan, &target, agent, saved).await;
    // a file store writes what this apply changed now, each file once
    let saved_to_store = target.end_writes().await;
    let (report, record) = (&applied.report, &applied.record);
    if plan.has_changes() || report.is_refused() {
        out("\n");
        out(&r::human::report(&plan, report));
    }
    let mut code = if report.failed() == 0 && !report.is_refused() {
        EXIT_OK
    } else {
        EXIT_ERROR
    };
    if matches!(
        record.provenance,
        crate::apply::ProvenanceStatus::Failed { .. }
    ) {
        code = EXIT_ERROR;
    }
    if let Err(e) = saved_to_store {
        print_error(&e.into(), &dir);
        code = EXIT_ERROR;
    }
    let file = a.report.as_ref().map(|p| p.display().to_string());
    if let Some(path) = &a.report
        && let Err(e) = write_report(path, &r::report::json(record))
    {
        err(&format!(
            "error: cannot write the apply report {}: {e}\n",
            path.display()
        ));
        return EXIT_ERROR;
    }
    let where_ = r::human::record(record, file.as_deref());
    if !where_.is_empty() {
        out(&where_);
    }
    code
}
