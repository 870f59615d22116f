//! `careplane reconcile --effects [DIR]`: one effects pass, for a scheduler (a CronJob).
//! Routes new open tasks and brings patient-group memberships and care-team participants
//! in line with the rules, under the blast-radius guard; never writes configuration (it
//! counts configuration drift and points to plan / apply). SIGINT/SIGTERM: the writes in
//! flight finish, a summary is printed, exit 130/143.
//!
//! Also the printing `watch` shares: one line per effect applied, the summary.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use super::plan::prepare;
use super::{EXIT_ERROR, EXIT_HELD, EXIT_OK, TargetArgs, default_dir, err, note, out, print_error};
use crate::ops::effects::{Effects, PassOutcome, Totals};
use crate::vocab::Operation;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Manifest directory (default: the current directory).
    pub dir: Option<PathBuf>,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Reconcile the effects of the rules (routing, memberships, care teams) only; the
    /// configuration goes through a reviewed plan and apply. Required.
    #[arg(long, required = true)]
    pub effects: bool,
    /// Apply removals even where a patient group or care-team assignment would lose more
    /// than its `maxRemovalShare`.
    #[arg(long)]
    pub allow_mass_removal: bool,
    /// Write the record of the writes (no patient ids, no credentials) to this file as
    /// JSON (schema/apply-report.schema.json).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

/// A stop flag set by SIGINT / SIGTERM, the exit code the signal asks for (130 / 143),
/// and a wake-up for a process sleeping between passes.
pub struct Stopper {
    pub stop: Arc<AtomicBool>,
    code: Arc<AtomicU8>,
    pub wake: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Stopper {
    pub fn start(command: &'static str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let code = Arc::new(AtomicU8::new(0));
        let wake = Arc::new(tokio::sync::Notify::new());
        let task = {
            let (stop, code, wake) = (stop.clone(), code.clone(), wake.clone());
            tokio::spawn(async move {
                let c = super::interrupted().await;
                code.store(c, Ordering::SeqCst);
                stop.store(true, Ordering::SeqCst);
                wake.notify_one();
                err(&format!(
                    "careplane {command}: interrupted: the writes in flight finish, no new write starts\n"
                ));
            })
        };
        Stopper {
            stop,
            code,
            wake,
            task,
        }
    }

    /// 0 while no signal came; else 130 (SIGINT) or 143 (SIGTERM).
    pub fn code(&self) -> u8 {
        self.code.load(Ordering::SeqCst)
    }
}

impl Drop for Stopper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Print what one pass did: one line per effect applied (tasks by id, groups and care-team
/// assignments by name with counts, never patients), failures, effects held back, and
/// configuration drift as a count. Returns whether anything failed (an effect held back
/// by a guard is not a failure: [`PassOutcome::held`] says so apart).
pub fn print_pass(prefix: &str, o: &PassOutcome) -> bool {
    let mut trouble = false;
    if let Some(applied) = &o.applied {
        for outcome in &applied.report.outcomes {
            let c = &o.plan.changes[outcome.change];
            match &outcome.result {
                Ok(_) => {
                    let m = c.fields.iter().find_map(|f| f.membership.as_ref());
                    match (&c.operation, m) {
                        (
                            Operation::RouteTask { rule, order }
                            | Operation::RouteTasks { rule, order, .. },
                            _,
                        ) => {
                            let fields: Vec<&str> =
                                c.fields.iter().map(|f| f.field.as_str()).collect();
                            // the task is the outcome's (a folded change stands for many)
                            out(&format!(
                                "{prefix}: routed {} (routing rule '{rule}' (order {order})): {}\n",
                                outcome.target.name,
                                fields.join(", ")
                            ));
                        }
                        (Operation::CareTeamParticipant(_), Some(m)) => out(&format!(
                            "{prefix}: care-team assignment '{}': +{} -{} patient(s)\n",
                            c.target.name, m.added, m.removed
                        )),
                        (Operation::Object, Some(m)) => out(&format!(
                            "{prefix}: patient group '{}': +{} -{} member(s)\n",
                            c.target.name, m.added, m.removed
                        )),
                        _ => out(&format!("{prefix}: updated {}\n", c.target)),
                    }
                }
                Err(e) => {
                    trouble = true;
                    err(&format!("{prefix}: {e}\n"));
                }
            }
        }
        if let crate::apply::ProvenanceStatus::Failed { error } = &applied.record.provenance {
            trouble = true;
            err(&format!(
                "{prefix}: the effects were applied but their Provenance could not be written: {error}\n"
            ));
        }
    }
    for h in &o.held {
        err(&format!("{prefix}: {h}\n"));
    }
    if o.configuration_drift > 0 {
        note(&format!(
            "{prefix}: {} configuration object(s) differ from the manifests; effects passes never change configuration: review them with 'careplane plan' and apply with 'careplane apply'\n",
            o.configuration_drift
        ));
    }
    trouble
}

/// The summary printed when a watch or reconcile ends: counts only.
pub fn summary(prefix: &str, t: &Totals) -> String {
    format!(
        "{prefix}: {} pass(es) ({} full, {} failed): {} task(s) routed; group members +{} -{}; care-team assignments +{} -{} ({} lead handover(s)); {} failed write(s), {} not started, {} held back by the removal guard\n",
        t.passes,
        t.full_passes,
        t.failed_passes,
        t.tasks_routed,
        t.members_added,
        t.members_removed,
        t.care_team_added,
        t.care_team_removed,
        t.care_team_lead_handovers,
        t.failures,
        t.not_started,
        t.held
    )
}

pub async fn run(a: Args) -> u8 {
    let dir = default_dir(a.dir);
    let prefix = "careplane reconcile";
    let (m, target) = match prepare(&dir, &a.target)
        .and_then(|(m, t)| crate::ops::effects::may_run(&m, &t).map(|()| (m, t)))
    {
        Ok(x) => x,
        Err(e) => {
            print_error(&e, &dir);
            return EXIT_ERROR;
        }
    };
    let stopper = Stopper::start("reconcile");
    let control = crate::apply::Control {
        stop: Some(&stopper.stop),
        on_done: None,
    };
    let mut effects = Effects::new(1, a.allow_mass_removal);
    let waiting = |msg: &str| err(&format!("{prefix}: {msg}\n"));
    let result = effects.locked_pass(&m, &target, &control, &waiting).await;
    let mut code = EXIT_OK;
    match &result {
        Ok(o) => {
            if print_pass(prefix, o) {
                code = EXIT_ERROR;
            } else if !o.held.is_empty() {
                // as apply: what could go was written, some effects wait for a person
                code = EXIT_HELD;
            }
            if let (Some(path), Some(applied)) = (&a.report, &o.applied)
                && let Err(e) =
                    super::write_report(path, &crate::render::report::json(&applied.record))
            {
                err(&format!(
                    "error: cannot write the apply report {}: {e}\n",
                    path.display()
                ));
                code = EXIT_ERROR;
            }
        }
        Err(e) => {
            print_error(e, &dir);
            code = EXIT_ERROR;
        }
    }
    out(&summary(prefix, &effects.totals));
    match stopper.code() {
        0 => code,
        signal => signal,
    }
}
