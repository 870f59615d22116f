//! The operations behind the commands, free of any command-line or printing concerns:
//! `validate`, `plan` and `apply` as functions that take options and return data. The CLI
//! layer maps flags onto these and hands the results to the renderers; tests call them
//! directly too.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::apply::{self, Report};
use crate::diff;
use crate::fhir::FhirError;
use crate::manifest::{self, LoadError, ManifestErrors, Manifests};
use crate::observe;
use crate::plan::file::PlanFileError;
use crate::plan::{Plan, TargetInfo};
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
}

/// Facts about one plan run, for the measurement line and the notes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub searches: usize,
    pub requests: u64,
    pub elapsed: Duration,
}

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
    let prune = opts.prune;
    let started = Instant::now();
    let before = target.store.request_count();
    let project = &m.desired.project;
    let observed = observe::observe(&target.store, target.dialect.as_ref(), project)
        .await
        .map_err(OpsError::Observe)?;
    let desired = target
        .dialect
        .desired(&m.desired, &observed.staff)
        .map_err(|diagnostics| {
            OpsError::Unplannable(ManifestErrors {
                diagnostics,
                files: m.files.clone(),
            })
        })?;
    let mut d = diff::diff(&desired, &observed, target.dialect.as_ref(), opts);
    // Name staff that the manifests no longer mention (removed members) for reviewers.
    for f in d.changes.iter_mut().flat_map(|c| c.fields.iter_mut()) {
        for v in f.before.iter().chain(f.after.iter()) {
            let items: Vec<&serde_json::Value> = match v {
                serde_json::Value::Array(a) => a.iter().collect(),
                other => vec![other],
            };
            for s in items.into_iter().filter_map(|x| x.as_str()) {
                if !f.labels.contains_key(s)
                    && let Some(name) = observed.staff.describe(s)
                {
                    f.labels.insert(s.to_owned(), name.clone());
                }
            }
        }
    }
    if !d.errors.is_empty() {
        return Err(OpsError::Unplannable(ManifestErrors {
            diagnostics: d.errors,
            files: m.files.clone(),
        }));
    }
    let plan = Plan::new(
        project,
        target.info.clone(),
        crate::plan::PlanCapability::from_table(target.dialect.capabilities()),
        &m.checksum,
        prune,
        d.changes,
        d.orphans,
    );
    let mut plan = plan;
    plan.manifests_commit = manifests_commit(&m.dir);
    Ok((
        plan,
        Stats {
            searches: observed.searches,
            requests: target.store.request_count() - before,
            elapsed: started.elapsed(),
        },
    ))
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
