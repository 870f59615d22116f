//! `careplane plan [DIR]`: observe, diff, print the plan; optionally save it.

use std::path::PathBuf;

use clap::ValueEnum;

use super::{EXIT_CHANGES, EXIT_ERROR, EXIT_OK, TargetArgs, default_dir, err, out, print_error};
use crate::manifest::Manifests;
use crate::ops::{self, OpsError};
use crate::plan::Plan;
use crate::render;
use crate::target::{self, ResolvedTarget};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Human,
    Json,
    Markdown,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Manifest directory (default: the current directory).
    pub dir: Option<PathBuf>,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Output format on stdout.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// Also save the plan (JSON) to this file, for `apply --plan`.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Exit 2 when the plan has changes, 0 when it has none (1 stays "error").
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Plan deletion of owned objects that are no longer declared.
    #[arg(long)]
    pub prune: bool,
    /// Plan to take over same-named objects careplane does not own yet (see `import`).
    #[arg(long)]
    pub adopt: bool,
    /// Also route open tasks someone already assigned (a one-off backfill, reviewed in
    /// the plan); by default a routing rule routes a task once, when careplane first sees it
    /// open and unassigned.
    #[arg(long)]
    pub route_existing: bool,
    /// Human format only: also list the patient ids that join or leave patient groups.
    /// For your terminal: never paste this output into a PR, a ticket or a CI log.
    #[arg(long)]
    pub show_members: bool,
}

/// Load the manifests and resolve the target (shared with apply).
pub fn prepare(
    dir: &std::path::Path,
    t: &TargetArgs,
) -> Result<(Manifests, ResolvedTarget), OpsError> {
    let m = ops::validate(dir, &t.load_options())?;
    let target = match &t.server {
        Some(url) => target::server(url)?,
        None => target::resolve(dir, &m.project, t.target.as_deref())?,
    };
    Ok((m, target))
}

pub fn render(plan: &Plan, format: Format, stats: Option<&ops::Stats>) -> String {
    match format {
        Format::Human => render::human::plan(plan, stats),
        Format::Json => crate::plan::file::to_json(plan),
        Format::Markdown => render::markdown::plan(plan),
    }
}

pub async fn run(a: Args) -> u8 {
    let dir = default_dir(a.dir);
    let result = async {
        let (m, target) = prepare(&dir, &a.target)?;
        let opts = crate::diff::Options {
            prune: a.prune,
            adopt: a.adopt,
            route_existing: a.route_existing,
        };
        let (plan, stats) = ops::plan_with(&m, &target, opts).await?;
        if let Some(path) = &a.out {
            crate::plan::file::write(&plan, path)?;
        }
        Ok::<_, OpsError>((plan, stats))
    }
    .await;
    match result {
        Ok((plan, stats)) => {
            if a.show_members
                && a.format == Format::Human
                && !std::io::IsTerminal::is_terminal(&std::io::stdout())
            {
                err(
                    "error: --show-members prints patient ids, so only to a terminal, not to a pipe or a file\n",
                );
                return EXIT_ERROR;
            }
            if a.show_members && a.format == Format::Human {
                out(&render::human::plan_with_members(&plan, Some(&stats), true));
            } else {
                out(&render(&plan, a.format, Some(&stats)));
            }
            if let Some(p) = &a.out {
                err(&format!(
                    "Saved the plan to {}; apply it with: careplane apply --plan {}\n",
                    p.display(),
                    p.display()
                ));
            }
            if a.detailed_exitcode && plan.has_changes() {
                EXIT_CHANGES
            } else {
                EXIT_OK
            }
        }
        Err(e) => {
            print_error(&e, &dir);
            EXIT_ERROR
        }
    }
}
