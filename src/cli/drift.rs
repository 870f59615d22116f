//! `careplane drift [DIR]`: is the target still what the manifests say? Exit 0 in sync,
//! 2 drift, 1 error.

use std::path::PathBuf;

use super::plan::{Format, prepare};
use super::{EXIT_CHANGES, EXIT_ERROR, EXIT_OK, TargetArgs, default_dir, out, print_error};
use crate::ops::{self, OpsError};
use crate::render;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Manifest directory (default: the current directory).
    pub dir: Option<PathBuf>,
    #[command(flatten)]
    pub target: TargetArgs,
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// Also exit 2 when effects of rules are pending (patients joining or leaving groups
    /// and care teams, open tasks to route); by default only configuration drift does.
    #[arg(long)]
    pub include_effects: bool,
}

pub async fn run(a: Args) -> u8 {
    let dir = default_dir(a.dir);
    let result = async {
        let (m, target) = prepare(&dir, &a.target)?;
        let (plan, _) = ops::plan(&m, &target, false).await?;
        Ok::<_, OpsError>(crate::drift::report(&plan, &target.store, target.dialect.as_ref()).await)
    }
    .await;
    match result {
        Ok(report) => {
            out(&match a.format {
                Format::Human => render::drift::human(&report),
                Format::Json => {
                    let mut s = serde_json::to_string_pretty(&report).expect("reports serialize");
                    s.push('\n');
                    s
                }
                Format::Markdown => render::drift::markdown(&report),
            });
            if report.in_sync && (!a.include_effects || report.pending_effects.is_empty()) {
                EXIT_OK
            } else {
                EXIT_CHANGES
            }
        }
        Err(e) => {
            print_error(&e, &dir);
            EXIT_ERROR
        }
    }
}
