//! `careplane plan [DIR]`: observe, diff, print the plan; optionally save it.

use std::path::PathBuf;

use clap::ValueEnum;

use super::{
    EXIT_CHANGES, EXIT_ERROR, EXIT_OK, TargetArgs, default_dir, err, note, out, print_error,
    print_skipped,
};
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
    print_skipped(&m);
    let target = match &t.server {
        Some(_) if !m.project.targets.is_empty() => {
            return Err(server_with_project(&m));
        }
        Some(url) => target::server(url)?,
        None => target::resolve(dir, &m.project, t.target.as_deref())?,
    };
    let mut target = target;
    if std::io::IsTerminal::is_terminal(&std::io::stderr())
        && super::verbosity() >= super::Verbosity::Normal
    {
        target.store.set_page_hook(read_progress());
    }
    Ok((m, target))
}

/// Progress of long reads on a terminal: one updating line with the pages read so far
/// (and the pages the searches need, where servers say), shown from the fifth page on so
/// that short reads stay quiet. Counts only: never what is read.
fn read_progress() -> crate::fhir::http::PageHook {
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    let seen: Mutex<BTreeMap<String, (u32, Option<u64>)>> = Mutex::new(BTreeMap::new());
    std::sync::Arc::new(move |rt: &str, page: u32, need: Option<u64>| {
        let Ok(mut seen) = seen.lock() else { return };
        let e = seen.entry(rt.to_owned()).or_insert((0, need));
        e.0 = e.0.max(page);
        e.1 = e.1.or(need);
        let read: u32 = seen.values().map(|(p, _)| *p).sum();
        if read < 5 {
            return;
        }
        let parts: Vec<String> = seen
            .iter()
            .map(|(t, (p, n))| match n {
                Some(n) => format!("{t} {p}/{n}"),
                None => format!("{t} {p}"),
            })
            .collect();
        super::progress_line(&format!(
            "  reading live state: {read} page(s) ({})",
            parts.join(", ")
        ));
    })
}

/// `--server` with a project file that declares targets: refused (at the project file),
/// since the ad-hoc server would silently skip the targets' Values and settings.
fn server_with_project(m: &Manifests) -> OpsError {
    let names: Vec<&str> = m.project.targets.keys().map(String::as_str).collect();
    let file = m
        .files
        .iter()
        .find(|(_, text)| text.lines().any(|l| l.trim_end() == "kind: Project"))
        .map(|(f, _)| f.clone())
        .unwrap_or_else(|| "careplane.yaml".into());
    OpsError::Unplannable(crate::manifest::ManifestErrors {
        diagnostics: vec![crate::manifest::Diagnostic {
            source: crate::model::Source {
                file,
                line: 1,
                col: 1,
            },
            message: format!(
                "--server (or CAREPLANE_SERVER) names an ad-hoc server, but this project file declares target(s) {}, whose Values and settings it would ignore",
                names.join(", ")
            ),
            help: Some(
                "use --target NAME (and unset CAREPLANE_SERVER), or use --server only with manifests that have no targets".into(),
            ),
        }],
        files: m.files.clone(),
        skipped: m.skipped.clone(),
    })
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
        let (plan, stats, mut findings) = ops::plan_checked(&m, &target, opts).await?;
        // live care-model checks: warnings only, never failing the plan
        findings.retain(|f| f.severity > crate::check::Severity::Info);
        let mut warnings = Vec::new();
        if let Some(path) = &a.out {
            crate::plan::file::write(&plan, path)?;
            warnings = ops::unappliable(
                &plan,
                &m,
                a.target.server.is_some() || a.target.target.is_some(),
            );
        }
        Ok::<_, OpsError>((plan, stats, warnings, findings))
    }
    .await;
    match result {
        Ok((plan, stats, warnings, findings)) => {
            super::check::print(&findings, &dir, super::DiagnosticFormat::Human, true);
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
                note(&format!(
                    "Saved the plan to {}; apply it with: careplane apply --plan {}\n",
                    p.display(),
                    p.display()
                ));
                // warnings are not notes: -q keeps them
                for w in &warnings {
                    err(&format!(
                        "warning: this saved plan will not apply as it is: {w}\n"
                    ));
                }
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
