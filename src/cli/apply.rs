//! `careplane apply [DIR] [--plan FILE] [--report FILE]`: apply a fresh plan (after
//! confirmation) or a saved one (after checking it still fits the target, the manifests
//! and every object it writes), and keep a record of what was written (a Provenance on
//! targets that store one, the `--report` JSON everywhere).

use std::path::PathBuf;

use clap::ValueEnum;

use super::plan::{Format, prepare, render};
use super::{
    EXIT_ERROR, EXIT_HELD, EXIT_OK, TargetArgs, confirmed, default_dir, err, out, print_error,
    write_report,
};
use crate::ops::{self, OpsError};
use crate::render as r;

/// What `apply` prints on stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ApplyFormat {
    /// The plan, then what was done.
    Human,
    /// Only the apply record (schema/apply-report.schema.json); the plan goes to stderr.
    Json,
}

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
    /// Also route open tasks someone already assigned (a one-off backfill, reviewed in
    /// the plan); by default a routing rule routes a task once, when careplane first sees it
    /// open and unassigned.
    #[arg(long, conflicts_with = "plan")]
    pub route_existing: bool,
    /// Apply even if a patient group would lose more than its `maxRemovalShare`.
    #[arg(long)]
    pub allow_mass_removal: bool,
    /// Write the record of this apply (what was written and why; no patient ids, no
    /// credentials) to this file as JSON (schema/apply-report.schema.json).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Output format on stdout.
    #[arg(long, value_enum, default_value_t = ApplyFormat::Human)]
    pub format: ApplyFormat,
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
            // a saved plan's effects are recomputed and guarded rule by rule at apply
            Some(path) => {
                let plan = crate::plan::file::read(path)?;
                ops::check_saved_plan(&plan, &target, Some(&m))?;
                plan
            }
            None => {
                let opts = crate::diff::Options {
                    prune: a.prune,
                    adopt: a.adopt,
                    route_existing: a.route_existing,
                };
                let plan = ops::plan_with(&m, &target, opts).await?.0;
                ops::check_blast_radius(&plan, a.allow_mass_removal)?;
                plan
            }
        };
        let agent = ops::agent(&m, &target);
        Ok::<_, OpsError>((plan, target, agent, m))
    }
    .await;
    let (plan, target, agent, m) = match prepared {
        Ok(x) => x,
        Err(e) => {
            print_error(&e, &dir);
            return EXIT_ERROR;
        }
    };
    let json = a.format == ApplyFormat::Json;
    // with --format json, stdout carries the record only; the plan is for people
    let show = |text: &str| if json { err(text) } else { out(text) };
    show(&render(&plan, Format::Human, None));
    let saved = a.plan.is_some();
    // A saved plan was reviewed already; a fresh one is confirmed here.
    if plan.has_changes() && !confirmed(a.auto_approve || saved, "apply", "Apply these changes?") {
        return EXIT_ERROR;
    }
    // Ctrl-C / SIGTERM: start no new write, let the ones in flight finish, then report.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let signal_code = std::sync::Arc::new(std::sync::atomic::AtomicU8::new(0));
    let watcher = {
        let (stop, signal_code) = (stop.clone(), signal_code.clone());
        tokio::spawn(async move {
            let code = super::interrupted().await;
            signal_code.store(code, std::sync::atomic::Ordering::SeqCst);
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            err("\ncareplane: interrupted: the writes in flight finish, no new write starts\n");
        })
    };
    let progress = Progress::new();
    let on_done =
        |o: &crate::apply::Outcome, done: usize, total: usize| progress.tick(o, done, total);
    let control = crate::apply::Control {
        stop: Some(&stop),
        on_done: (plan.has_changes() && super::verbosity() >= super::Verbosity::Normal)
            .then_some(&on_done as &(dyn Fn(&crate::apply::Outcome, usize, usize) + Sync)),
    };
    let (applied, plan) = if saved {
        let done =
            ops::apply_saved(&plan, &m, &target, agent, a.allow_mass_removal, &control).await;
        (done.applied, done.plan)
    } else {
        let applied = ops::apply_recorded_with(&plan, &target, agent, false, &control).await;
        (applied, plan)
    };
    watcher.abort();
    progress.finish();
    // a file store writes what this apply changed now, each file once
    let saved_to_store = target.end_writes().await;
    let (report, record) = (&applied.report, &applied.record);
    if plan.has_changes() || report.is_refused() {
        show("\n");
        show(&r::human::report(&plan, report));
    }
    if !record.effects.is_empty() {
        show("\n");
        show(&r::human::effect_checks(&record.effects));
    }
    let held = record.effects.iter().any(crate::plan::EffectCheck::held);
    let mut code = if report.failed() != 0 || report.is_refused() {
        EXIT_ERROR
    } else if held {
        EXIT_HELD
    } else {
        EXIT_OK
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
        show(&where_);
    }
    if json {
        out(&r::report::json(record));
    }
    match signal_code.load(std::sync::atomic::Ordering::SeqCst) {
        0 => code,
        signal => {
            err(&format!(
                "careplane: apply interrupted: {} change(s) applied, {} failed, {} not started; nothing is half-written, and the next plan shows what remains\n",
                report.succeeded(),
                report.failed() - report.not_started(),
                report.not_started()
            ));
            signal
        }
    }
}

/// Progress of an apply on stderr: one updating line on a terminal, one line per finished
/// write otherwise (CI logs). Names objects as plans do, never patients.
struct Progress {
    tty: bool,
}

impl Progress {
    fn new() -> Self {
        Progress {
            tty: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        }
    }

    fn tick(&self, o: &crate::apply::Outcome, done: usize, total: usize) {
        if self.tty {
            super::progress_line(&format!("  applying: {done}/{total} change(s) done"));
            return;
        }
        let how = match &o.result {
            Ok(_) => "done",
            Err(crate::apply::ApplyError::NotStarted { .. }) => "not started",
            Err(_) => "failed",
        };
        err(&format!(
            "careplane: [{done}/{total}] {} {}: {how}\n",
            o.action.word(),
            o.target
        ));
    }

    /// Closes the progress line, if one is open (any output does).
    fn finish(&self) {
        err("");
    }
}
