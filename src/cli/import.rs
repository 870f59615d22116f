//! `careplane import [DIR]`: take ownership of existing objects that the manifests
//! describe (same team name), without recreating them. Only adoptions are applied; run
//! `plan` afterwards for anything else.

use std::path::PathBuf;

use super::plan::{Format, prepare, render};
use super::{EXIT_ERROR, EXIT_OK, TargetArgs, confirmed, default_dir, out, print_error};
use crate::ops::{self, OpsError};
use crate::plan::Action;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Manifest directory (default: the current directory).
    pub dir: Option<PathBuf>,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub auto_approve: bool,
}

pub async fn run(a: Args) -> u8 {
    let dir = default_dir(a.dir);
    let prepared = async {
        let (m, target) = prepare(&dir, &a.target)?;
        // a file store stays locked from this read to the last write (see fhir::file)
        target
            .begin_writes(&|msg| super::err(&format!("careplane: {msg}\n")))
            .await?;
        let opts = crate::diff::Options {
            prune: false,
            adopt: true,
            route_existing: false,
        };
        let (full, _) = ops::plan_with(&m, &target, opts).await?;
        let adoptions = full
            .changes
            .iter()
            .filter(|c| c.action == Action::Adopt)
            .cloned()
            .collect();
        let plan = full.with_changes(adoptions);
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
    if plan.summary.adopt == 0 {
        out(
            "Nothing to import: no existing object matches a manifest without being managed already.\n",
        );
        return EXIT_OK;
    }
    out(&render(&plan, Format::Human, None));
    if !confirmed(a.auto_approve, "import", "Take these objects over?") {
        return EXIT_ERROR;
    }
    let applied = ops::apply_recorded(&plan, &target, agent, false).await;
    // a file store writes what this import changed now, each file once
    let saved = target.end_writes().await;
    let report = applied.report;
    out("\n");
    out(&crate::render::human::report(&plan, &report));
    out(&crate::render::human::record(&applied.record, None));
    let recorded = !matches!(
        applied.record.provenance,
        crate::apply::ProvenanceStatus::Failed { .. }
    );
    if let Err(e) = saved {
        super::print_error(&e.into(), &dir);
        return EXIT_ERROR;
    }
    if report.failed() == 0 && recorded {
        EXIT_OK
    } else {
        EXIT_ERROR
    }
}
