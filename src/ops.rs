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
    plan_since(m, target, opts, None).await
}

/// `plan_with`, reading only tasks changed after `tasks_since` (for `watch`).
pub async fn plan_since(
    m: &Manifests,
    target: &ResolvedTarget,
    opts: diff::Options,
    tasks_since: Option<String>,
) -> Result<(Plan, Stats), OpsError> {
    let prune = opts.prune;
    let started = Instant::now();
    let before = target.store.request_count();
    let project = &m.desired.project;
    let groups = &m.desired.patient_groups;
    // Which patient searches to run: derived from every rule evaluated, of any kind.
    let reads = observe::RuleReads {
        tasks_since,
        ..crate::rules::needed_reads(&m.desired)
    };
    let observed = observe::observe(&target.store, target.dialect.as_ref(), project, reads)
        .await
        .map_err(OpsError::Observe)?;
    let unplannable = |diagnostics| {
        OpsError::Unplannable(ManifestErrors {
            diagnostics,
            files: m.files.clone(),
        })
    };
    // Patients named in include/exclude must exist (their ids are not printed).
    let missing: Vec<crate::manifest::Diagnostic> = groups
        .iter()
        .flat_map(|g| g.include.iter().chain(&g.exclude))
        .filter(|p| !observed.patients.contains_key(&p.value))
        .map(|p| crate::manifest::Diagnostic {
            source: p.source.clone(),
            message: "no Patient on the target has this id".into(),
            help: Some("fix the id, or remove the entry".into()),
        })
        .collect();
    if !missing.is_empty() {
        return Err(unplannable(missing));
    }
    let staff = |r: &crate::model::PractitionerRef| {
        observed
            .staff
            .resolve(r)
            .ok()
            .map(|id| format!("Practitioner/{id}"))
    };
    let care_team_roles: std::collections::BTreeMap<String, String> = m
        .desired
        .care_team_roles
        .iter()
        .map(|r| (r.name.clone(), format!("{}|{}", r.system, r.code)))
        .collect();
    let memberships = crate::rules::evaluate(
        groups,
        &observed.patients,
        crate::rules::today(),
        &staff,
        &care_team_roles,
    );
    let mut desired = target
        .dialect
        .desired(&m.desired, &observed.staff, &memberships)
        .map_err(unplannable)?;
    let (routed, waiting) =
        routing_objects(m, target, &observed, &memberships).map_err(unplannable)?;
    desired.extend(routed);
    let pseudo = crate::rules::Pseudonymizer::from_env();
    let mut d = diff::diff(&desired, &observed, target.dialect.as_ref(), opts, &pseudo);
    d.changes.extend(
        care_team_changes(
            m,
            target,
            &observed,
            &memberships,
            &pseudo,
            &staff,
            &care_team_roles,
        )
        .map_err(unplannable)?,
    );
    for (team, (rule, n)) in &waiting {
        if let Some(c) = d
            .changes
            .iter_mut()
            .find(|c| c.target.kind == crate::dialect::ObjectKind::Team && &c.target.name == team)
        {
            c.notes.push(format!(
                "routing rule '{rule}' matches {n} open task(s) for this team: the next apply routes them, once the team exists"
            ));
        }
    }
    for c in &mut d.changes {
        let mut notes = Vec::new();
        for f in &c.fields {
            if let Some(m) = &f.membership {
                if m.before > 0 && (m.removed as f64) > m.max_removal_share * m.before as f64 {
                    notes.push(format!(
                        "would remove {} of {} members, over this group's limit of {:.0}%: apply refuses without --allow-mass-removal",
                        m.removed,
                        m.before,
                        100.0 * m.max_removal_share
                    ));
                }
                if !pseudo.enabled() && (m.added + m.removed) > 0 {
                    notes.push(format!(
                        "set {} to see pseudonymous samples of who changes",
                        crate::rules::KEY_ENV
                    ));
                }
            }
        }
        c.notes.extend(notes);
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

/// One change per care-team assignment: who joins and who leaves (as counts, pseudonyms
/// and sealed lists), and the participant it is about.
#[allow(clippy::too_many_arguments)]
pub(crate) fn care_team_changes(
    m: &Manifests,
    target: &ResolvedTarget,
    observed: &observe::Observed,
    memberships: &crate::dialect::Memberships,
    pseudo: &crate::rules::Pseudonymizer,
    staff: &dyn Fn(&crate::model::PractitionerRef) -> Option<String>,
    care_team_roles: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<crate::plan::Change>, Vec<crate::manifest::Diagnostic>> {
    use std::collections::BTreeSet;

    use crate::dialect::ObjectKind;
    use crate::plan::{Action, Change, FieldChange, Precondition, Reason, Target};
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let project = m.desired.project.as_str();
    for a in &m.desired.care_team_assignments {
        let Some(practitioner) = staff(&a.practitioner.value) else {
            errors.push(crate::manifest::Diagnostic {
                source: a.practitioner.source.clone(),
                message: format!(
                    "no single Practitioner on the target has {}",
                    a.practitioner.value
                ),
                help: Some("careplane never creates staff: fix the reference".into()),
            });
            continue;
        };
        let Some(role) = m.desired.care_team_roles.iter().find(|r| r.name == a.role) else {
            continue;
        };
        let role_key = care_team_roles.get(&a.role).cloned().unwrap_or_default();
        let selected: BTreeSet<String> = match (&a.group, &a.rule) {
            (Some(g), _) => memberships.get(g).cloned().unwrap_or_default(),
            (None, Some(rule)) => {
                let ctx = crate::rules::Context {
                    groups: memberships,
                    on: crate::rules::today(),
                    staff,
                    care_team_roles,
                };
                observed
                    .patients
                    .values()
                    .filter(|p| crate::rules::holds(rule, p, &ctx))
                    .map(|p| format!("Patient/{}", p.id))
                    .collect()
            }
            (None, None) => BTreeSet::new(),
        };
        // Targets where careplane keeps its own care teams (R4) only count those.
        let own_only = target.dialect.care_teams_are_own();
        let entries = |p: &crate::rules::PatientFacts| -> Vec<(String, String)> {
            p.care_team
                .iter()
                .filter(|(_, _, owner)| !own_only || owner.as_deref() == Some(project))
                .map(|(m, r, _)| (m.clone(), r.clone()))
                .collect()
        };
        let holds = |p: &crate::rules::PatientFacts, who: Option<&str>| {
            entries(p)
                .iter()
                .any(|(member, r)| r == &role_key && who.is_none_or(|w| w == member))
        };
        let current: BTreeSet<String> = observed
            .patients
            .values()
            .filter(|p| holds(p, Some(&practitioner)))
            .map(|p| format!("Patient/{}", p.id))
            .collect();
        let taken_by_others: BTreeSet<String> = observed
            .patients
            .values()
            .filter(|p| {
                // someone else in this role, or this practitioner in another role (one
                // role per practitioner and one practitioner per role)
                entries(p).iter().any(|(member, r)| {
                    (r == &role_key && member != &practitioner)
                        || (member == &practitioner && r != &role_key)
                })
            })
            .map(|p| format!("Patient/{}", p.id))
            .collect();
        let mut add: BTreeSet<String> = selected.difference(&current).cloned().collect();
        let conflicts: BTreeSet<String> = if a.authoritative {
            BTreeSet::new()
        } else {
            add.intersection(&taken_by_others).cloned().collect()
        };
        add.retain(|p| !conflicts.contains(p));
        let remove: BTreeSet<String> = if a.authoritative {
            current.difference(&selected).cloned().collect()
        } else {
            BTreeSet::new()
        };
        let after: BTreeSet<String> = current
            .union(&add)
            .filter(|p| !remove.contains(*p))
            .cloned()
            .collect();
        let as_list = |s: &BTreeSet<String>| {
            serde_json::Value::Array(s.iter().cloned().map(serde_json::Value::String).collect())
        };
        let target = Target {
            kind: ObjectKind::CareTeamAssignment,
            name: a.name.clone(),
            resource_type: "CareTeam".into(),
            id: None,
        };
        let mut notes = Vec::new();
        if !conflicts.is_empty() {
            notes.push(format!(
                "{} selected patient(s) have someone else as {}: left alone (authoritative: false)",
                conflicts.len(),
                role.display
            ));
        }
        if add.is_empty() && remove.is_empty() {
            out.push(Change {
                action: Action::NoOp,
                target,
                fields: Vec::new(),
                reason: Reason {
                    source: Some(a.source.clone()),
                    rule: format!(
                        "every selected patient has {} as {}",
                        a.practitioner.value, role.display
                    ),
                },
                precondition: Precondition::default(),
                notes,
            });
            continue;
        }
        let mode = if a.authoritative {
            "authoritative"
        } else {
            "additive"
        };
        let patients = crate::diff::sensitive_change(
            "patients",
            Some(&as_list(&current)),
            Some(&as_list(&after)),
            mode,
            Some(a.max_removal_share),
            Some(a.source.clone()),
            pseudo,
        );
        let participant = FieldChange {
            field: "participant".into(),
            before: None,
            after: Some(serde_json::json!({
                "practitioner": practitioner,
                "role": {"system": role.system, "code": role.code, "display": role.display},
                "lead": a.lead,
                "authoritative": a.authoritative,
            })),
            source: Some(a.practitioner.source.clone()),
            labels: std::collections::BTreeMap::from([(
                practitioner.clone(),
                a.practitioner.value.to_string(),
            )]),
            membership: None,
            sealed: None,
        };
        out.push(Change {
            action: Action::Update,
            target,
            fields: vec![patients, participant],
            reason: Reason {
                source: Some(a.source.clone()),
                rule: format!(
                    "care-team assignment '{}': {} as {} for the selected patients",
                    a.name, a.practitioner.value, role.display
                ),
            },
            precondition: Precondition::default(),
            notes,
        });
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

pub(crate) type Waiting = std::collections::BTreeMap<String, (String, usize)>;

/// Desired routing of open tasks: the first matching rule's team, owner and labels. Tasks
/// for a team that is not on the target yet wait for the next apply (`Waiting`).
pub(crate) fn routing_objects(
    m: &Manifests,
    target: &ResolvedTarget,
    observed: &observe::Observed,
    memberships: &crate::dialect::Memberships,
) -> Result<(Vec<crate::dialect::DesiredObject>, Waiting), Vec<crate::manifest::Diagnostic>> {
    use crate::dialect::{DesiredObject, Fields, Identity, ObjectKind};
    use serde_json::json;
    let rules = &m.desired.routing_rules;
    let mut out = Vec::new();
    let mut waiting = Waiting::new();
    let mut errors = Vec::new();
    if rules.is_empty() {
        return Ok((out, waiting));
    }
    let identity = target
        .dialect
        .capabilities()
        .of(ObjectKind::Team)
        .map(|c| c.identity);
    let team_ref = |name: &str| -> Option<String> {
        let team = m.desired.teams.iter().find(|t| t.name == name)?;
        observed
            .objects
            .iter()
            .find(|o| {
                o.kind == ObjectKind::Team
                    && match identity {
                        Some(Identity::ManifestName) => o.name.as_deref() == Some(name),
                        _ => o.natural_key.as_deref() == Some(team.display_name.as_str()),
                    }
            })
            .map(|o| format!("Group/{}", o.id))
    };
    for (ti, ri) in crate::rules::route(&observed.tasks, rules, memberships) {
        let (t, r) = (&observed.tasks[ti], &rules[ri]);
        let mut fields = Fields::new();
        let mut labels = std::collections::BTreeMap::new();
        if let Some(team) = &r.team {
            match team_ref(team) {
                Some(g) => {
                    fields.insert("team".into(), json!(g));
                }
                None => {
                    waiting.entry(team.clone()).or_insert((r.name.clone(), 0)).1 += 1;
                    continue;
                }
            }
        }
        if let Some(o) = &r.owner {
            match observed.staff.resolve(&o.value) {
                Ok(id) => {
                    let reference = format!("Practitioner/{id}");
                    labels.insert(reference.clone(), o.value.to_string());
                    fields.insert("owner".into(), json!(reference));
                }
                Err(_) => {
                    errors.push(crate::manifest::Diagnostic {
                        source: o.source.clone(),
                        message: format!("no single Practitioner on the target has {}", o.value),
                        help: Some("careplane never creates staff: fix the reference".into()),
                    });
                    continue;
                }
            }
        }
        if !r.add_labels.is_empty() {
            fields.insert(
                "labels".into(),
                crate::dialect::util::sorted_strings(r.add_labels.clone()),
            );
        }
        let field_sources = fields
            .keys()
            .map(|k| (k.clone(), r.source.clone()))
            .collect();
        out.push(DesiredObject {
            kind: ObjectKind::TaskRouting,
            name: format!("Task/{}", t.id),
            natural_key: Some(format!("Task/{}", t.id)),
            fields,
            field_sources,
            source: r.source.clone(),
            labels,
            additive: vec!["labels"],
            max_removal_share: None,
            only_declared: true,
            explain: Some(format!(
                "routing rule '{}' (order {}) is the first to match this open task",
                r.name, r.order
            )),
        });
    }
    if errors.is_empty() {
        errors.dedup();
        Ok((out, waiting))
    } else {
        errors.dedup();
        Err(errors)
    }
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
    let report = apply(plan, target).await;
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

/// Who applies: the project, and the OAuth2 client id (or the `sub` of a bearer token
/// that is a JWT) of the chosen target, read from the same environment variables the
/// target's credentials come from. Never the secret or the token itself.
pub fn agent(m: &Manifests, target: &ResolvedTarget) -> apply::Agent {
    use crate::manifest::types::TargetType;
    let env = |var: &str| std::env::var(var).ok().filter(|v| !v.is_empty());
    let spec = m.project.targets.get(&target.info.name);
    let (client_env, token_env): (Option<String>, Option<String>) = match spec {
        // `--server URL`: CAREPLANE_TOKEN
        None if target.info.name == "server" => (None, Some("CAREPLANE_TOKEN".into())),
        None => (None, None),
        Some(s) => match (&s.auth, s.target_type) {
            (Some(a), _) if a.bearer_token_env.is_some() => (None, a.bearer_token_env.clone()),
            (Some(a), _) if a.oauth2.is_some() => {
                (a.oauth2.as_ref().map(|o| o.client_id_env.clone()), None)
            }
            (_, TargetType::Canvas) => (Some("CANVAS_CLIENT_ID".into()), None),
            _ => (None, None),
        },
    };
    let (client, client_kind) = match (client_env.and_then(|v| env(&v)), token_env) {
        (Some(id), _) => (Some(id), Some(apply::ClientKind::OauthClient)),
        (None, Some(var)) => match env(&var).as_deref().and_then(jwt_subject) {
            Some(sub) => (Some(sub), Some(apply::ClientKind::TokenSubject)),
            None => (None, None),
        },
        _ => (None, None),
    };
    apply::Agent {
        project: m.desired.project.clone(),
        client,
        client_kind,
    }
}

/// The `sub` claim of a JWT (the payload decoded, the signature not checked: it names the
/// caller in the record, it grants nothing). `None` for tokens that are not JWTs.
pub fn jwt_subject(token: &str) -> Option<String> {
    let mut parts = token.split('.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = base64url(payload)?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims
        .get("sub")?
        .as_str()
        .filter(|s| !s.is_empty() && s.len() <= 256)
        .map(str::to_owned)
}

/// Unpadded base64url, as JWT segments are.
fn base64url(s: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        } as u32)
    };
    let s = s.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        if chunk.len() == 1 {
            return None;
        }
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(c)? << (18 - 6 * i);
        }
        out.push((n >> 16) as u8);
        if chunk.len() > 2 {
            out.push((n >> 8) as u8);
        }
        if chunk.len() > 3 {
            out.push(n as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subject_of_a_jwt_and_nothing_of_other_tokens() {
        // {"alg":"none"} . {"sub":"svc-careplane","scope":"system/*.*"} . sig
        let token =
            "eyJhbGciOiJub25lIn0.eyJzdWIiOiJzdmMtY2FyZXBsYW5lIiwic2NvcGUiOiJzeXN0ZW0vKi4qIn0.c2ln";
        assert_eq!(jwt_subject(token).as_deref(), Some("svc-careplane"));
        assert_eq!(jwt_subject("opaque-token-value"), None);
        assert_eq!(jwt_subject("a.b.c.d"), None);
        assert_eq!(jwt_subject("x.!!!.y"), None);
        assert_eq!(base64url("aGk").unwrap(), b"hi");
        assert_eq!(base64url("aGVsbG8").unwrap(), b"hello");
    }
}
