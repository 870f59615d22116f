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
    #[error(
        "on target '{target}' the project's routing and patient-group rules are kept by the plugin {plugin} inside the target (effects: plugin{}); an effects pass would route and maintain them a second time. Set `effects: watch` in the project file to keep them from outside instead (then plan warns while the plugin is still enabled)",
        if *declared { "" } else { ", the default where the target runs plugins" }
    )]
    EffectsByPlugin {
        target: String,
        plugin: String,
        declared: bool,
    },
    #[error(
        "target '{target}' is a {dialect} target; plugins run inside Canvas only (on other targets `careplane watch` keeps the rules)"
    )]
    NotPluginTarget { target: String, dialect: String },
    #[error("reading the target's plugins failed: {0}")]
    Plugins(#[source] crate::dialect::plugin::live::PluginApiError),
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

/// Staff the target does not list as schedulable, where it has the notion
/// (`TargetCapability::schedulable_staff_search`): active staff missing from a plain
/// search are the non-schedulable ones. `None` elsewhere.
async fn non_schedulable(
    target: &ResolvedTarget,
    observed: &observe::Observed,
) -> Result<Option<std::collections::BTreeSet<String>>, FhirError> {
    if !target.dialect.capabilities().1.schedulable_staff_search {
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
    let plugin = plugin_input(m, target, &observed).await?;
    let options = reconcile::Options {
        prune,
        adopt: opts.adopt,
        route_existing: opts.route_existing,
        today: crate::rules::today(),
        pseudo: crate::rules::Pseudonymizer::from_env(),
        target: target.info.clone(),
        checksum: m.checksum.clone(),
        manifests_commit: manifests_commit(&m.dir),
        plugin,
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

/// The plugin part of a plan's inputs: who keeps the effects of rules on this target
/// (the project's `effects`, else `plugin` where the capability table has the plugin kind);
/// where the project declares rules and the target has a plugin API, what it lists and
/// what careplane recorded there; with `effects: plugin`, the package the rules build,
/// with team and group ids resolved from `observed` (a rule the plugin cannot run makes
/// the plan fail at its position).
async fn plugin_input(
    m: &Manifests,
    target: &ResolvedTarget,
    observed: &observe::Observed,
) -> Result<reconcile::plugin::Input, OpsError> {
    use crate::dialect::plugin;
    let caps = target.dialect.capabilities();
    let has_kind = caps.runs_plugins();
    let effects = effects_by(m, target);
    let mut input = reconcile::plugin::Input {
        effects,
        ..Default::default()
    };
    let has_rules = m.desired.has_plugin_rules();
    let (Some(api), true) = (&target.plugin_api, has_kind) else {
        return Ok(input);
    };
    let name = plugin::plugin_name(&m.desired.project);
    input.applied = observe::plugin_record(api, &name);
    // a project without rules reads the plugin API only if careplane installed the plugin
    // from here: it may still run the rules it was built with
    if !has_rules && input.applied.is_none() {
        return Ok(input);
    }
    match observe::plugins(api).await {
        Ok(list) => input.installed = Some(list),
        // with effects: watch the list only serves a warning: the plan goes on without it
        Err(e) if effects == crate::manifest::types::EffectsBy::Watch || !has_rules => {
            input.unreadable = Some(e.to_string());
        }
        Err(e) => return Err(OpsError::Plugins(e)),
    }
    input.record_at = api
        .record
        .as_ref()
        .and_then(|p| p.strip_prefix(&m.dir).ok().map(|r| r.display().to_string()));
    input.name = Some(name);
    if effects == crate::manifest::types::EffectsBy::Plugin && has_rules {
        let resolved = plugin::resolve_ids(&m.desired, &observed.objects, caps, &target.info.name);
        input.package = Some(plugin::build(m, &resolved).map_err(OpsError::Unplannable)?);
    }
    Ok(input)
}

/// Why a plan for `target` has no plugin change (for `plugin status` / `plugin install`):
/// decided from the project's `effects` on the target and whether the manifests declare
/// routing or patient-group rules.
pub fn plugin_unmanaged(m: &Manifests, target: &ResolvedTarget) -> reconcile::plugin::Unmanaged {
    reconcile::plugin::unmanaged(effects_by(m, target), m.desired.has_plugin_rules())
}

/// `plugin build --target`, `plugin status` and `plugin install` need a target whose
/// capability table has the plugin kind.
pub fn plugin_target(target: &ResolvedTarget) -> Result<(), OpsError> {
    if target.dialect.capabilities().runs_plugins() {
        return Ok(());
    }
    Err(OpsError::NotPluginTarget {
        target: target.info.name.clone(),
        dialect: target.info.dialect.clone(),
    })
}

/// Who keeps the effects of rules on `target`: the project's `effects`, else `plugin`
/// where the target's capability table has the plugin kind, `watch` elsewhere.
pub fn effects_by(m: &Manifests, target: &ResolvedTarget) -> crate::manifest::types::EffectsBy {
    crate::manifest::types::EffectsBy::on(
        m.project.effects,
        target.dialect.capabilities().runs_plugins(),
    )
}

/// `plugin build --target`: the ids of the teams and patient groups the manifests declare,
/// read from the target once and matched as plan matches them.
pub async fn plugin_ids(
    m: &Manifests,
    target: &ResolvedTarget,
) -> Result<crate::dialect::plugin::Resolved, OpsError> {
    let observed = observe::observe(
        &target.store,
        target.dialect.as_ref(),
        &m.desired.project,
        observe::RuleReads::default(),
    )
    .await
    .map_err(OpsError::Observe)?;
    Ok(crate::dialect::plugin::resolve_ids(
        &m.desired,
        &observed.objects,
        target.dialect.capabilities(),
        &target.info.name,
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

/// Why a plan saved now will not apply as it is (each a sentence, for `plan --out` to warn
/// with): a rule's effects the removal guard would hold back, or a default target implied
/// (`target_named` false) in a project that declares several, which apply refuses.
pub fn unappliable(plan: &Plan, m: &Manifests, target_named: bool) -> Vec<String> {
    let mut why = Vec::new();
    // effects are recomputed at apply: a removal over a limit holds that rule back then
    if let Err(e) = check_blast_radius(plan, false) {
        why.push(format!(
            "{e}; apply holds this rule's effects back (exit 3) unless --allow-mass-removal is given"
        ));
    }
    if !target_named && m.project.targets.len() > 1 {
        why.push(format!(
            "it is for the default target '{}' (no --target was given): apply it with --target {}, or it is refused as made for another target",
            plan.target.name, plan.target.name
        ));
    }
    why
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
    apply::apply(plan, &target.store, target.dialect.as_ref(), writes(target)).await
}

/// How apply writes to `target`: its concurrency and batch size.
fn writes(target: &ResolvedTarget) -> apply::Writes {
    apply::Writes {
        concurrency: target.concurrency,
        batch_size: target.batch_size,
    }
}

/// A saved plan, checked whole against the target before its first write: every object
/// it writes is re-read (creates: searched for) and compared with what the plan saw.
/// The rules plugin is checked too, against its plugin API's list (it is written last,
/// but a stale plugin stops the configuration as any stale object does).
/// Returns every stale object; empty means the plan may be applied.
pub async fn stale_objects(plan: &Plan, target: &ResolvedTarget) -> Vec<apply::ApplyError> {
    let mut stale =
        apply::stale_objects(plan, &target.store, target.dialect.as_ref(), writes(target)).await;
    if let Some(c) = plan
        .changes
        .iter()
        .find(|c| apply::is_plugin(c) && c.action.is_change())
    {
        let api_err = |source| apply::ApplyError::PluginApi {
            target: c.target.clone(),
            source,
        };
        let plugin = match &target.plugin_api {
            None => Some(api_err(
                crate::dialect::plugin::live::PluginApiError::NoPluginApi(target.info.name.clone()),
            )),
            Some(api) => match observe::plugins(api).await {
                Ok(listed) => apply::plugin::stale_against(c, &listed),
                Err(e) => Some(api_err(e)),
            },
        };
        stale.extend(plugin);
    }
    stale
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
    let mut report = apply::apply_with(
        plan,
        &target.store,
        target.dialect.as_ref(),
        writes(target),
        control,
    )
    .await;
    install_plugin(plan, &plan.changes, target, &mut report, control).await;
    let mut record = apply::ApplyRecord::new(
        plan,
        agent,
        saved,
        started,
        std::time::SystemTime::now(),
        Some(&report),
        &[],
    );
    record.provenance = provenance(&record, target).await;
    Applied { report, record }
}

/// What `apply --plan` did: the record (configuration and recomputed effects, one
/// apply), the plan of what was attempted (the saved configuration, then the effects
/// recomputed now) and, per rule, the reviewed effects against the fresh ones.
pub struct AppliedSaved {
    pub applied: Applied,
    pub plan: Plan,
}

/// Apply a saved plan (`apply --plan`). The configuration layer is checked whole first
/// ([`stale_objects`]: one stale object and nothing is written) and applied exactly; the
/// patient lists a plan carries only as counts are not written with it. Then the effects
/// of rules are recomputed from live data (a fresh observe, after the configuration is on
/// the target, so a new rule's effects see its new team or group) and guarded per rule
/// ([`reconcile::effects::guard`]): a rule whose fresh counts differ from the reviewed
/// preview by more than its `maxDeviation`, or that would remove more than its
/// `maxRemovalShare` (unless `allow_mass_removal`), is held back; the rest is applied.
pub async fn apply_saved(
    saved: &Plan,
    m: &Manifests,
    target: &ResolvedTarget,
    agent: apply::Agent,
    allow_mass_removal: bool,
    control: &apply::Control<'_>,
) -> AppliedSaved {
    use crate::plan::{EffectCheck, EffectDecision, Layer};
    let started = std::time::SystemTime::now();
    let sha = crate::plan::file::checksum(saved);
    let mut config: Vec<crate::plan::Change> = saved.configuration().cloned().collect();
    for c in &mut config {
        // a group's members are an effect: recomputed below, never written from a count
        c.fields.retain(|f| f.membership.is_none());
    }
    let config = saved.with_changes(config);
    let record_of = |plan: &Plan, report: Option<&Report>, stale: &[apply::ApplyError]| {
        let mut r = apply::ApplyRecord::new(
            plan,
            agent.clone(),
            true,
            started,
            std::time::SystemTime::now(),
            report,
            stale,
        );
        r.plan_sha256 = sha.clone();
        r
    };
    let stale = stale_objects(&config, target).await;
    if !stale.is_empty() {
        let record = record_of(saved, None, &stale);
        let report = Report {
            outcomes: Vec::new(),
            refused: stale,
        };
        return AppliedSaved {
            applied: Applied { report, record },
            plan: saved.clone(),
        };
    }
    let configured = apply::apply_with(
        &config,
        &target.store,
        target.dialect.as_ref(),
        writes(target),
        control,
    )
    .await;
    let unguarded = |decision: EffectDecision| -> Vec<EffectCheck> {
        saved
            .effects
            .iter()
            .map(|e| EffectCheck {
                kind: e.kind,
                rule: e.rule.clone(),
                declared_at: e.declared_at.clone(),
                reviewed_adds: e.adds,
                reviewed_removes: e.removes,
                now_adds: 0,
                now_removes: 0,
                tolerance_adds: e.max_deviation.tolerance(e.adds),
                tolerance_removes: e.max_deviation.tolerance(e.removes),
                reviewed_lead_handovers: e.lead_handovers,
                now_lead_handovers: 0,
                tolerance_lead_handovers: e.max_deviation.tolerance(e.lead_handovers),
                decision: decision.clone(),
            })
            .collect()
    };
    let stopped = control
        .stop
        .is_some_and(|s| s.load(std::sync::atomic::Ordering::SeqCst));
    let fresh = if stopped {
        Err(None)
    } else {
        let opts = diff::Options {
            prune: false,
            adopt: false,
            route_existing: saved.route_existing,
        };
        // the reason goes into the record: no server message (it may quote patient data)
        plan_with(m, target, opts).await.map_err(|e| {
            Some(match e {
                OpsError::Observe(_) => {
                    "reading the target's live state failed; run plan to see why".to_owned()
                }
                OpsError::Unplannable(_) => {
                    "the manifests cannot be planned against the target now; run plan to see why"
                        .to_owned()
                }
                other => other.to_string(),
            })
        })
    };
    // the plugin: the reviewed change (its precondition), with the rules rebuilt now from
    // the same manifests and the ids that are live after the configuration
    // (with no fresh plan, interrupted or not plannable, the reviewed change still gets
    // its outcome: not started, or refused for want of rules)
    let mut configured = configured;
    let rebuilt = with_rebuilt_plugin(&config.changes, fresh.as_ref().ok().map(|(f, _)| f));
    install_plugin(&config, &rebuilt, target, &mut configured, control).await;
    let (effects, checks) = match fresh {
        Ok((fresh, _)) => {
            let effects: Vec<crate::plan::Change> = fresh
                .changes
                .iter()
                .filter(|c| c.layer() == Layer::Effects && c.action.is_change())
                .cloned()
                .collect();
            let now = crate::plan::preview(&effects, &|k, r| fresh.max_deviation(k, r));
            let over = reconcile::effects::over_removal_limit(&effects, allow_mass_removal);
            let checks = reconcile::effects::guard(&saved.effects, &now, &over);
            let go: Vec<crate::plan::Change> = effects
                .into_iter()
                .filter(|c| {
                    let (k, r) = reconcile::effects::rule_of(c);
                    !checks
                        .iter()
                        .any(|x| x.kind == k && x.rule == r && x.held())
                })
                .collect();
            (go, checks)
        }
        Err(None) => (Vec::new(), unguarded(EffectDecision::NotStarted)),
        Err(Some(reason)) => (
            Vec::new(),
            unguarded(EffectDecision::NotRecomputed { reason }),
        ),
    };
    let effects = saved.with_changes(effects);
    let recomputed = apply::apply_with(
        &effects,
        &target.store,
        target.dialect.as_ref(),
        writes(target),
        control,
    )
    .await;
    let n = config.changes.len();
    let mut all = config.changes;
    all.extend(effects.changes);
    let mut plan = saved.with_changes(all);
    plan.effects = saved.effects.clone();
    let mut outcomes = configured.outcomes;
    outcomes.extend(recomputed.outcomes.into_iter().map(|mut o| {
        o.change += n;
        o
    }));
    let report = Report {
        outcomes,
        refused: Vec::new(),
    };
    let mut record = record_of(&plan, Some(&report), &[]);
    if checks.iter().any(EffectCheck::held)
        && matches!(
            record.result,
            apply::RecordResult::Applied | apply::RecordResult::NoChanges
        )
    {
        record.result = apply::RecordResult::HeldBack;
    }
    record.effects = checks;
    record.provenance = provenance(&record, target).await;
    AppliedSaved {
        applied: Applied { report, record },
        plan,
    }
}

/// A saved plan's configuration `changes` with the rules plugin's fields taken from
/// `fresh` (a plan made now: a saved plan carries no rules data); unchanged without one.
fn with_rebuilt_plugin(
    changes: &[crate::plan::Change],
    fresh: Option<&Plan>,
) -> Vec<crate::plan::Change> {
    let built = fresh.and_then(|f| f.changes.iter().find(|c| apply::is_plugin(c)));
    changes
        .iter()
        .map(|c| {
            let mut c = c.clone();
            if apply::is_plugin(&c)
                && let Some(f) = built
            {
                c.fields = f.fields.clone();
            }
            c
        })
        .collect()
}

/// Apply's last write: the rules plugin among `changes` (numbered as in `plan`), after
/// every other write of `report` (the package carries the ids of the teams and groups they
/// created); then what was installed is recorded for the next plan's rule-level diff.
async fn install_plugin(
    plan: &Plan,
    changes: &[crate::plan::Change],
    target: &ResolvedTarget,
    report: &mut Report,
    control: &apply::Control<'_>,
) {
    let Some((i, c)) = changes
        .iter()
        .enumerate()
        .find(|(_, c)| apply::is_plugin(c) && c.action.is_change())
    else {
        return;
    };
    let outcome = match &target.plugin_api {
        _ if control
            .stop
            .is_some_and(|s| s.load(std::sync::atomic::Ordering::SeqCst)) =>
        {
            apply::Outcome {
                change: i,
                action: c.action,
                target: c.target.clone(),
                result: Err(apply::ApplyError::NotStarted {
                    target: c.target.clone(),
                }),
                note: None,
                writes: 0,
            }
        }
        None => apply::Outcome {
            change: i,
            action: c.action,
            target: c.target.clone(),
            result: Err(apply::ApplyError::PluginApi {
                target: c.target.clone(),
                source: crate::dialect::plugin::live::PluginApiError::NoPluginApi(
                    target.info.name.clone(),
                ),
            }),
            note: None,
            writes: 0,
        },
        Some(api) => {
            let created: apply::plugin::Created = report
                .outcomes
                .iter()
                .filter(|o| o.action == crate::plan::Action::Create)
                .filter_map(|o| {
                    let w = o.result.as_ref().ok()?.as_ref()?;
                    Some(((o.target.kind, o.target.name.clone()), w.id.clone()))
                })
                .collect();
            let unwritten = apply::plugin::unwritten(&report.outcomes);
            let done = apply::plugin::install(i, c, &plan.project, api, &created, &unwritten).await;
            if let (Some(record), Some(path), Some(root)) =
                (&done.record, &api.record, &api.record_root)
                && let Ok(text) = serde_json::to_string_pretty(record)
            {
                // the record only serves the next plan's diff: a failure to write it loses
                // that diff, never the install
                let _ = write_inside(root, path, &(text + "\n"));
            }
            done.outcome
        }
    };
    if let Some(f) = control.on_done {
        f(
            &outcome,
            report.outcomes.len() + 1,
            report.outcomes.len() + 1,
        );
    }
    report.outcomes.push(outcome);
    report.outcomes.sort_by_key(|o| o.change);
}

/// Writes `text` to `path` inside the directory `root`, atomically (a new file beside it,
/// then renamed over it), creating the directories between; refuses a path that leaves
/// `root` or passes through a symbolic link (a manifest repository may hold one at
/// `.careplane` or at the file itself), and never follows one.
fn write_inside(root: &Path, path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let outside = || std::io::Error::other("the path leaves the manifest directory");
    let relative = path.strip_prefix(root).map_err(|_| outside())?;
    let (Some(file), Some(parent)) = (relative.file_name(), relative.parent()) else {
        return Err(outside());
    };
    let mut dir = root.to_path_buf();
    for part in parent.components() {
        let std::path::Component::Normal(part) = part else {
            return Err(outside());
        };
        dir.push(part);
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(_) => return Err(outside()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir(&dir)?,
            Err(e) => return Err(e),
        }
    }
    let target = dir.join(file);
    if std::fs::symlink_metadata(&target).is_ok_and(|m| !m.file_type().is_file()) {
        return Err(outside());
    }
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        file.to_string_lossy(),
        std::process::id()
    ));
    // create_new: fails on anything already there, a symbolic link included
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|_| f.sync_all()))
        .and_then(|_| std::fs::rename(&tmp, &target));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

async fn provenance(
    record: &apply::ApplyRecord,
    target: &ResolvedTarget,
) -> apply::ProvenanceStatus {
    if target.dialect.capabilities().provenance() {
        apply::store_provenance(record, &target.store).await
    } else if record.wrote_anything() {
        apply::ProvenanceStatus::Unsupported
    } else {
        apply::ProvenanceStatus::NothingWritten
    }
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

#[cfg(test)]
mod tests {
    use super::write_inside;

    /// A plan's change that installs project `clinic`'s rules plugin, with `fields`.
    fn plugin_create(fields: Vec<crate::plan::FieldChange>) -> crate::plan::Change {
        use crate::plan::{Action, Change, Precondition, Reason, ReasonCode, Target};
        Change {
            action: Action::Create,
            target: Target {
                kind: crate::vocab::ObjectKind::Plugin,
                name: "careplane_clinic".into(),
                resource_type: "Plugin".into(),
                id: None,
            },
            fields,
            reason: Reason {
                code: ReasonCode::Missing,
                source: None,
                rule: "missing".into(),
            },
            operation: crate::vocab::Operation::Plugin {
                sdk_version: crate::dialect::plugin::SDK_VERSION.into(),
            },
            precondition: Precondition {
                absent: true,
                ..Default::default()
            },
            notes: Vec::new(),
        }
    }

    /// A saved plan's plugin change gets an outcome even when apply is interrupted before
    /// it (no fresh plan to rebuild its rules from): not started, never silently dropped.
    #[test]
    fn an_interrupted_saved_apply_reports_its_plugin_as_not_started() {
        use crate::plan::Plan;
        use crate::vocab::ObjectKind;
        use wiremock::matchers::{method, path};
        use wiremock::{Mock, MockServer, ResponseTemplate};
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let api = MockServer::start().await;
            Mock::given(method("GET"))
                .and(path("/plugin-io/plugins/"))
                .respond_with(
                    ResponseTemplate::new(200)
                        .set_body_json(serde_json::json!({"results": [], "next": null})),
                )
                .mount(&api)
                .await;
            let m = crate::manifest::load_from_memory(Default::default(), "clinic").unwrap();
            let mut target = crate::target::resolve(dir.path(), &m.project, None).unwrap();
            target.plugin_api = Some(crate::dialect::plugin::live::Endpoint::new(
                &api.uri(),
                crate::fhir::auth::Auth::None,
            ));
            let plugin = plugin_create(Vec::new());
            let saved = Plan::new(
                "clinic",
                target.info.clone(),
                Vec::new(),
                &m.checksum,
                false,
                vec![plugin],
                Vec::new(),
            );
            let stop = std::sync::atomic::AtomicBool::new(true);
            let control = crate::apply::Control {
                stop: Some(&stop),
                on_done: None,
            };
            let agent = super::agent(&m, &target);
            let done = super::apply_saved(&saved, &m, &target, agent, false, &control).await;
            let report = &done.applied.report;
            assert!(report.refused.is_empty(), "{:?}", report.refused);
            let plugin: Vec<_> = report
                .outcomes
                .iter()
                .filter(|o| o.target.kind == ObjectKind::Plugin)
                .collect();
            assert_eq!(plugin.len(), 1, "{:?}", report.outcomes);
            assert!(
                matches!(
                    plugin[0].result,
                    Err(crate::apply::ApplyError::NotStarted { .. })
                ),
                "{:?}",
                plugin[0].result
            );
        });
    }

    /// The plugin waits for the teams and groups its rules carry the ids of: when such a
    /// create failed or never started, apply leaves the plugin alone and says which write
    /// it waits for (a plugin with a null team id would route tasks to no team).
    #[test]
    fn the_plugin_is_not_installed_when_a_create_it_depends_on_failed() {
        use crate::apply::{ApplyError, Outcome, Report};
        use crate::plan::{Action, FieldChange, Plan, Target};
        use crate::vocab::ObjectKind;
        use wiremock::matchers::{method, path};
        use wiremock::{Mock, MockServer, ResponseTemplate};
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let target_of = |kind, name: &str, rt: &str| Target {
            kind,
            name: name.into(),
            resource_type: rt.into(),
            id: None,
        };
        let rules = serde_json::json!({
            "routing": [{"name": "psych", "set": {"team": {"name": "bh", "displayName": "BH", "groupId": null}}}],
            "groups": [{"name": "opted-out", "displayName": "Opted out", "groupId": null}],
        });
        let plugin = plugin_create(vec![FieldChange {
            field: crate::dialect::plugin::RULES_FIELD.into(),
            before: None,
            after: None,
            source: None,
            labels: Default::default(),
            membership: None,
            sealed: Some(Box::new((None, Some(rules)))),
        }]);
        let failed = |kind, name: &str, rt: &str, e: ApplyError| Outcome {
            change: 0,
            action: Action::Create,
            target: target_of(kind, name, rt),
            result: Err(e),
            note: None,
            writes: 0,
        };
        rt.block_on(async {
            let api = MockServer::start().await;
            Mock::given(method("GET"))
                .and(path("/plugin-io/plugins/"))
                .respond_with(
                    ResponseTemplate::new(200)
                        .set_body_json(serde_json::json!({"results": [], "next": null})),
                )
                .mount(&api)
                .await;
            Mock::given(method("POST"))
                .respond_with(ResponseTemplate::new(201))
                .expect(0)
                .mount(&api)
                .await;
            let m = crate::manifest::load_from_memory(Default::default(), "clinic").unwrap();
            let mut target = crate::target::resolve(dir.path(), &m.project, None).unwrap();
            target.plugin_api = Some(crate::dialect::plugin::live::Endpoint::new(
                &api.uri(),
                crate::fhir::auth::Auth::None,
            ));
            let plan = Plan::new(
                "clinic",
                target.info.clone(),
                Vec::new(),
                &m.checksum,
                false,
                vec![plugin.clone()],
                Vec::new(),
            );
            // the team's create failed; the group's was never started
            let team = target_of(ObjectKind::Team, "bh", "Group");
            let group = target_of(ObjectKind::PatientGroup, "opted-out", "Group");
            let mut report = Report {
                outcomes: vec![
                    failed(
                        ObjectKind::Team,
                        "bh",
                        "Group",
                        ApplyError::Stale {
                            target: team,
                            detail: "test".into(),
                        },
                    ),
                    failed(
                        ObjectKind::PatientGroup,
                        "opted-out",
                        "Group",
                        ApplyError::NotStarted { target: group },
                    ),
                ],
                refused: Vec::new(),
            };
            let control = crate::apply::Control::default();
            super::install_plugin(&plan, &plan.changes, &target, &mut report, &control).await;
            let outcome = report
                .outcomes
                .iter()
                .find(|o| o.target.kind == ObjectKind::Plugin)
                .expect("the plugin change has an outcome");
            let Err(e @ ApplyError::DependencyUnwritten { .. }) = &outcome.result else {
                panic!("{:?}", outcome.result);
            };
            let text = e.to_string();
            assert!(text.contains("team 'bh'"), "{text}");
            assert!(text.contains("failed"), "{text}");
            assert_eq!(outcome.writes, 0);
            // the record says it too
            let record = crate::apply::ApplyRecord::new(
                &plan,
                super::agent(&m, &target),
                false,
                std::time::SystemTime::now(),
                std::time::SystemTime::now(),
                Some(&report),
                &[],
            );
            let json = serde_json::to_string(&record).unwrap();
            assert!(json.contains("team 'bh'"), "{json}");
        });
    }

    #[test]
    fn the_plugin_record_is_written_inside_the_manifest_directory_only() {
        let root = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let (root, elsewhere) = (root.path(), elsewhere.path());
        let file = |r: &str| root.join(r);
        // the plain case: directories made, the file written, then replaced whole
        write_inside(root, &file(".careplane/plugins/canvas.json"), "one\n").unwrap();
        write_inside(root, &file(".careplane/plugins/canvas.json"), "two\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(file(".careplane/plugins/canvas.json")).unwrap(),
            "two\n"
        );
        let names: Vec<_> = std::fs::read_dir(file(".careplane/plugins"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["canvas.json"], "no temporary file left behind");
        // a path that leaves the directory
        assert!(write_inside(root, &file(".careplane/plugins/../../../x.json"), "x").is_err());
        assert!(write_inside(root, &elsewhere.join("x.json"), "x").is_err());
        #[cfg(unix)]
        {
            // a symbolic link to elsewhere at the record's file, and at a directory on the way
            std::os::unix::fs::symlink(
                elsewhere.join("victim.json"),
                file(".careplane/plugins/linked.json"),
            )
            .unwrap();
            assert!(write_inside(root, &file(".careplane/plugins/linked.json"), "x").is_err());
            let other = tempfile::tempdir().unwrap();
            std::os::unix::fs::symlink(elsewhere, other.path().join(".careplane")).unwrap();
            assert!(
                write_inside(
                    other.path(),
                    &other.path().join(".careplane/plugins/canvas.json"),
                    "x"
                )
                .is_err()
            );
            assert_eq!(
                std::fs::read_dir(elsewhere).unwrap().count(),
                0,
                "nothing written or made through a link"
            );
        }
    }
}
