//! The operations behind the commands, free of any command-line or printing concerns:
//! `validate`, `plan` and `apply` as functions that take options and return data. The CLI
//! layer maps flags onto these and hands the results to the renderers; tests call them
//! directly too.

use std::path::Path;
use std::time::Instant;

use crate::apply::{self, Report};
use crate::diff;
use crate::fhir::FhirError;
use crate::manifest::{self, LoadError, ManifestErrors, Manifests};
use crate::observe;
use crate::plan::file::PlanFileError;
use crate::plan::{Plan, TargetInfo};
use crate::reconcile;
use crate::target::{ResolvedTarget, TargetError};

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("reading the target's live state failed: {0}")]
    Observe(#[source] FhirError),
    /// The manifests are valid but cannot be planned against this target (a staff member
    /// that does not exist, a same-named object careplane does not own, ...).
    #[error(transparent)]
    Unplannable(ManifestErrors),
    #[error(transparent)]
    PlanFile(#[from] PlanFileError),
    #[error("the plan was made for target '{}' ({}), not '{}' ({}); make a new plan for this target", planned.name, planned.endpoint, given.name, given.endpoint)]
    WrongTarget {
        planned: Box<TargetInfo>,
        given: Box<TargetInfo>,
    },
    #[error(
        "the plan was made from other manifests (plan {planned}, manifests now {now}); make a new plan"
    )]
    ManifestsChanged { planned: String, now: String },
    #[error("{target}: {detail}; make a new plan")]
    MembershipChanged { target: String, detail: String },
    #[error(
        "{target} would lose {removed} of its {before} members ({share:.0}%), more than its limit of {limit:.0}%; check the rule, or apply with --allow-mass-removal"
    )]
    BlastRadius {
        target: String,
        removed: usize,
        before: usize,
        share: f64,
        limit: f64,
    },
}

pub use crate::plan::Stats;

pub fn validate(dir: &Path, opts: &manifest::LoadOptions) -> Result<Manifests, LoadError> {
    manifest::load(dir, opts)
}

/// Observe the target and diff it against the manifests.
pub async fn plan(
    m: &Manifests,
    target: &ResolvedTarget,
    prune: bool,
) -> Result<(Plan, Stats), OpsError> {
    plan_with(
        m,
        target,
        diff::Options {
            prune,
            adopt: false,
            route_existing: false,
        },
    )
    .await
}

/// `plan` with every option (adoption included).
pub async fn plan_with(
    m: &Manifests,
    target: &ResolvedTarget,
    opts: diff::Options,
) -> Result<(Plan, Stats), OpsError> {
    plan_since(m, target, opts, None).await
}

/// `plan_with`, reading only tasks changed after `tasks_since` (for `watch`).
pub async fn plan_since(
    m: &Manifests,
    target: &ResolvedTarget,
    opts: diff::Options,
    tasks_since: Option<String>,
) -> Result<(Plan, Stats), OpsError> {
    plan_observed(m, target, opts, tasks_since)
        .await
        .map(|(plan, stats, _)| (plan, stats))
}

/// `plan_with`, and the live care-model checks on what the plan read (`plan` shows them
/// as warnings; they never fail it). One more search on targets that need it for
/// schedulable staff (Canvas); if that search fails, those checks are left out.
pub async fn plan_checked(
    m: &Manifests,
    target: &ResolvedTarget,
    opts: diff::Options,
) -> Result<(Plan, Stats, Vec<crate::check::Finding>), OpsError> {
    let (plan, stats, observed) = plan_observed(m, target, opts, None).await?;
    let non_schedulable = non_schedulable(target, &observed).await.ok().flatten();
    Ok((plan, stats, live_findings(m, &observed, non_schedulable)))
}

/// `careplane check --target`: the offline checks and the live ones (reading the target
/// as `plan` does; nothing is written).
pub async fn check_live(
    m: &Manifests,
    target: &ResolvedTarget,
) -> Result<Vec<crate::check::Finding>, OpsError> {
    let reads = crate::rules::needed_reads(&m.desired);
    let observed = observe::observe(
        &target.store,
        target.dialect.as_ref(),
        &m.desired.project,
        reads,
    )
    .await
    .map_err(OpsError::Observe)?;
    let non_schedulable = non_schedulable(target, &observed)
        .await
        .map_err(OpsError::Observe)?;
    Ok(live_findings(m, &observed, non_schedulable))
}

fn live_findings(
    m: &Manifests,
    observed: &observe::Observed,
    non_schedulable: Option<std::collections::BTreeSet<String>>,
) -> Vec<crate::check::Finding> {
    let inputs = crate::check::inputs(m);
    let snapshot = crate::check::live::Snapshot::from_observed(observed, non_schedulable);
    let found = crate::check::live::run(&m.desired, &inputs.care_model, &snapshot);
    crate::check::configured(found, &m.project.checks, &m.files)
}

/// Staff the target does not list as schedulable, where it has the notion: Canvas's
/// Practitioner search leaves non-schedulable staff out unless asked (canvas-api.md §5),
/// so active staff missing from a plain search are the non-schedulable ones. `None`
/// elsewhere.
async fn non_schedulable(
    target: &ResolvedTarget,
    observed: &observe::Observed,
) -> Result<Option<std::collections::BTreeSet<String>>, FhirError> {
    if target.dialect.name() != "canvas" {
        return Ok(None);
    }
    let listed = target
        .store
        .search(&crate::fhir::Query::new("Practitioner").param("active", "true"))
        .await?;
    let schedulable: std::collections::BTreeSet<&str> =
        listed.iter().filter_map(|r| r["id"].as_str()).collect();
    Ok(Some(
        observed
            .staff
            .ids
            .iter()
            .filter(|id| {
                !observed.staff_inactive.contains(*id) && !schedulable.contains(id.as_str())
            })
            .cloned()
            .collect(),
    ))
}

async fn plan_observed(
    m: &Manifests,
    target: &ResolvedTarget,
    opts: diff::Options,
    tasks_since: Option<String>,
) -> Result<(Plan, Stats, observe::Observed), OpsError> {
    let prune = opts.prune;
    let started = Instant::now();
    let before = target.store.request_count();
    let project = &m.desired.project;
    // Which patient searches to run: derived from every rule evaluated, of any kind.
    let reads = observe::RuleReads {
        tasks_since,
        ..crate::rules::needed_reads(&m.desired)
    };
    let observed = observe::observe(&target.store, target.dialect.as_ref(), project, reads)
        .await
        .map_err(OpsError::Observe)?;
    let options = reconcile::Options {
        prune,
        adopt: opts.adopt,
        route_existing: opts.route_existing,
        today: crate::rules::today(),
        pseudo: crate::rules::Pseudonymizer::from_env(),
        target: target.info.clone(),
        checksum: m.checksum.clone(),
        manifests_commit: manifests_commit(&m.dir),
    };
    let plan = reconcile::plan(&m.desired, &observed, target.dialect.as_ref(), &options)
        .map_err(|d| OpsError::Unplannable(m.errors(d)))?;
    Ok((
        plan,
        Stats {
            searches: observed.searches,
            requests: target.store.request_count() - before,
            elapsed: started.elapsed(),
        },
        observed,
    ))
}

/// Manifest files (name → YAML text) for what is live on `target` for `project`.
pub async fn export(
    target: &ResolvedTarget,
    project: &str,
) -> Result<std::collections::BTreeMap<String, String>, OpsError> {
    let observed = observe::observe(
        &target.store,
        target.dialect.as_ref(),
        project,
        Default::default(),
    )
    .await
    .map_err(OpsError::Observe)?;
    Ok(crate::export::manifests(&observed))
}

/// The commit the manifests come from: CI's variables first, else git, else unknown.
fn manifests_commit(dir: &Path) -> Option<String> {
    for var in ["GITHUB_SHA", "CI_COMMIT_SHA"] {
        if let Ok(v) = std::env::var(var)
            && !v.is_empty()
        {
            return Some(v);
        }
    }
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let sha = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !sha.is_empty()).then_some(sha)
}

/// Saved plans carry patient lists only as counts and keyed digests. Re-evaluate the
/// rules now and, where the fresh lists have the same digests as the planned ones, put the
/// real lists back in memory; anything else is refused.
pub async fn reseal(
    plan: &mut Plan,
    m: &Manifests,
    target: &ResolvedTarget,
) -> Result<(), OpsError> {
    let unsealed = |f: &crate::plan::FieldChange| f.membership.is_some() && f.sealed.is_none();
    if !plan.changes.iter().any(|c| c.fields.iter().any(unsealed)) {
        return Ok(());
    }
    let opts = diff::Options {
        prune: plan.prune,
        adopt: plan
            .changes
            .iter()
            .any(|c| c.action == crate::plan::Action::Adopt),
        route_existing: false,
    };
    let (fresh, _) = plan_with(m, target, opts).await?;
    for c in plan.changes.iter_mut() {
        let fresh_change = fresh
            .changes
            .iter()
            .find(|x| x.target.kind == c.target.kind && x.target.name == c.target.name);
        for f in c.fields.iter_mut().filter(|f| unsealed(f)) {
            let planned = f.membership.as_ref().expect("membership");
            let changed = |detail: &str| OpsError::MembershipChanged {
                target: c.target.to_string(),
                detail: detail.to_owned(),
            };
            if planned.digest_after.starts_with("ephemeral:") {
                return Err(changed(&format!(
                    "the plan was made without {}, so its member lists cannot be checked later",
                    crate::rules::KEY_ENV
                )));
            }
            let now = fresh_change
                .and_then(|x| x.fields.iter().find(|y| y.field == f.field))
                .ok_or_else(|| {
                    changed(
                        "the rules now give this group's current members: nothing left to apply",
                    )
                })?;
            let same = now.membership.as_ref().is_some_and(|n| {
                n.digest_before == planned.digest_before && n.digest_after == planned.digest_after
            });
            if !same {
                return Err(changed(
                    "its members (or the rule's result) changed since the plan was made",
                ));
            }
            f.sealed = now.sealed.clone();
        }
    }
    Ok(())
}

/// Refuse a plan that would empty groups too fast (unless `allow`).
pub fn check_blast_radius(plan: &Plan, allow: bool) -> Result<(), OpsError> {
    if allow {
        return Ok(());
    }
    // deleting a whole group is asked for explicitly (--prune) and shown as a delete
    for c in plan
        .changes
        .iter()
        .filter(|c| c.action.is_change() && c.action != crate::plan::Action::Delete)
    {
        for m in c.fields.iter().filter_map(|f| f.membership.as_ref()) {
            if m.before > 0 && (m.removed as f64) > m.max_removal_share * m.before as f64 {
                return Err(OpsError::BlastRadius {
                    target: c.target.to_string(),
                    removed: m.removed,
                    before: m.before,
                    share: 100.0 * m.removed as f64 / m.before as f64,
                    limit: 100.0 * m.max_removal_share,
                });
            }
        }
    }
    Ok(())
}

/// Check that a saved plan belongs to this target (and, if given, these manifests).
pub fn check_saved_plan(
    plan: &Plan,
    target: &ResolvedTarget,
    manifests: Option<&Manifests>,
) -> Result<(), OpsError> {
    if plan.target.name != target.info.name || plan.target.endpoint != target.info.endpoint {
        return Err(OpsError::WrongTarget {
            planned: Box::new(plan.target.clone()),
            given: Box::new(target.info.clone()),
        });
    }
    if let Some(m) = manifests
        && m.checksum != plan.manifests_checksum
    {
        return Err(OpsError::ManifestsChanged {
            planned: plan.manifests_checksum.clone(),
            now: m.checksum.clone(),
        });
    }
    Ok(())
}

pub async fn apply(plan: &Plan, target: &ResolvedTarget) -> Report {
    apply::apply(
        plan,
        &target.store,
        target.dialect.as_ref(),
        target.concurrency,
    )
    .await
}

/// A saved plan, checked whole against the target before its first write: every object
/// it writes is re-read (creates: searched for) and compared with what the plan saw.
/// Returns every stale object; empty means the plan may be applied.
pub async fn stale_objects(plan: &Plan, target: &ResolvedTarget) -> Vec<apply::ApplyError> {
    apply::stale_objects(
        plan,
        &target.store,
        target.dialect.as_ref(),
        target.concurrency,
    )
    .await
}

/// What `apply_recorded` did: the outcomes and the record of them.
pub struct Applied {
    pub report: Report,
    pub record: apply::ApplyRecord,
}

/// Apply `plan` and keep a record of it: an [`apply::ApplyRecord`] (for `--report`) and,
/// on targets whose capability table says so, one FHIR `Provenance` naming the resources
/// written (none when nothing was written). A saved plan (`saved`) is first checked whole
/// ([`stale_objects`]): if any object is stale, nothing is written and the record says
/// why.
pub async fn apply_recorded(
    plan: &Plan,
    target: &ResolvedTarget,
    agent: apply::Agent,
    saved: bool,
) -> Applied {
    apply_recorded_with(plan, target, agent, saved, &apply::Control::default()).await
}

/// [`apply_recorded`], steered by `control` (stop flag, progress callback).
pub async fn apply_recorded_with(
    plan: &Plan,
    target: &ResolvedTarget,
    agent: apply::Agent,
    saved: bool,
    control: &apply::Control<'_>,
) -> Applied {
    let started = std::time::SystemTime::now();
    if saved {
        let stale = stale_objects(plan, target).await;
        if !stale.is_empty() {
            let record = apply::ApplyRecord::new(
                plan,
                agent,
                saved,
                started,
                std::time::SystemTime::now(),
                None,
                &stale,
            );
            let report = Report {
                outcomes: Vec::new(),
                refused: stale,
            };
            return Applied { report, record };
        }
    }
    let report = apply::apply_with(
        plan,
        &target.store,
        target.dialect.as_ref(),
        target.concurrency,
        control,
    )
    .await;
    let mut record = apply::ApplyRecord::new(
        plan,
        agent,
        saved,
        started,
        std::time::SystemTime::now(),
        Some(&report),
        &[],
    );
    record.provenance = if target.dialect.capabilities().provenance() {
        apply::store_provenance(&record, &target.store).await
    } else if record.wrote_anything() {
        apply::ProvenanceStatus::Unsupported
    } else {
        apply::ProvenanceStatus::NothingWritten
    };
    Applied { report, record }
}

/// Who applies: the project, and the caller the target's credentials name (the OAuth2
/// client id, or the `sub` of a bearer token that is a JWT). Never the secret or the
/// token itself.
pub fn agent(m: &Manifests, target: &ResolvedTarget) -> apply::Agent {
    use crate::fhir::auth::Caller;
    let (client, client_kind) = match target.store.caller() {
        Some(Caller::OauthClient(id)) => (Some(id), Some(apply::ClientKind::OauthClient)),
        Some(Caller::TokenSubject(sub)) => (Some(sub), Some(apply::ClientKind::TokenSubject)),
        None => (None, None),
    };
    apply::Agent {
        project: m.desired.project.clone(),
        client,
        client_kind,
    }
}

/// Effects passes (`reconcile --effects`, `watch`): effects only, under the guards.
pub mod effects;
