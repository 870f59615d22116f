//! Effects passes, for `careplane reconcile --effects` (one pass, for a scheduler) and
//! `careplane watch` (a pass every interval): keep the *effects* of the rules current
//! (task routing, patient-group memberships, care-team participants) and never write
//! configuration, which goes through a reviewed `plan` / `apply`.
//!
//! The decisions are pure functions with unit tests:
//! - [`next_pass`]: full or incremental, and what each pass reads;
//! - [`select`]: which changes of a plan an effects pass applies (effects only, restricted
//!   to the re-evaluated patients on an incremental pass, over-limit removals held back);
//! - [`FactsCache`]: the patient facts `watch` keeps between passes, updated from the
//!   resources changed since the last pass;
//! - [`Totals`]: what the passes did, for the summary printed at the end.
//!
//! [`Effects::pass`] strings them together (observe, reconcile, select, apply); nothing
//! here prints.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::{Applied, OpsError};
use crate::apply;
use crate::fhir::Query;
use crate::manifest::Manifests;
use crate::plan::{Action, Change, Layer, Plan};
use crate::rules::{PatientFacts, Pseudonymizer};
use crate::target::ResolvedTarget;
use crate::vocab::{ObjectKind, Operation};

/// How far back an incremental pass reads beyond the previous pass's start, for clock
/// skew between careplane and the server (re-reading a patient or a task is harmless).
pub const OVERLAP: Duration = Duration::from_secs(60);

/// Every how many passes `watch` recomputes every effect from all patients (default).
pub const FULL_EVERY: u64 = 10;

/// What one pass reads of the patients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PatientRead {
    /// Every patient (and their consents and care teams): a full recompute.
    All,
    /// Only the patients, consents and care teams changed after this instant.
    ChangedSince(String),
    /// None: a routing-only pass (a target that cannot read patient changes, between
    /// full passes).
    Skip,
}

/// What one pass does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pass {
    /// A full recompute: memberships and care teams of every patient may change.
    /// Otherwise only those of patients whose data changed since the last pass.
    pub full: bool,
    pub patients: PatientRead,
    /// Only open tasks changed after this instant (None: every open task).
    pub tasks_since: Option<String>,
}

/// Decide pass number `number` (0 first): the first pass (no watermark) and every
/// `full_every`-th pass are full; the others read only what changed since `watermark`.
/// A target whose patient searches take no "changed after" parameter (Canvas) reads no
/// patients between full passes, unless routing tests patient groups, which needs every
/// patient anyway (then the pass is full for memberships too).
pub fn next_pass(
    number: u64,
    watermark: Option<&str>,
    full_every: u64,
    patients_changed_since: bool,
    routing_needs_patients: bool,
) -> Pass {
    let due = full_every <= 1 || number.is_multiple_of(full_every);
    let Some(since) = watermark.filter(|_| !due) else {
        return Pass {
            full: true,
            patients: PatientRead::All,
            tasks_since: None,
        };
    };
    let tasks_since = Some(since.to_owned());
    if patients_changed_since {
        Pass {
            full: false,
            patients: PatientRead::ChangedSince(since.to_owned()),
            tasks_since,
        }
    } else if routing_needs_patients {
        Pass {
            full: true,
            patients: PatientRead::All,
            tasks_since,
        }
    } else {
        Pass {
            full: false,
            patients: PatientRead::Skip,
            tasks_since,
        }
    }
}

/// How many rules have effects a pass keeps current (routing rules, patient groups,
/// care-team assignments); 0 means there is nothing to watch.
pub fn rules_with_effects(d: &crate::model::DesiredState) -> usize {
    d.routing_rules.len() + d.patient_groups.len() + d.care_team_assignments.len()
}

/// Whether an effects pass (`watch`, `reconcile --effects`) may run for this project on
/// this target: not where the project's routing and patient-group rules are kept by the
/// plugin (`effects: plugin`, the default on targets that run plugins), since the two
/// would route and maintain the same groups twice.
pub fn may_run(m: &Manifests, target: &ResolvedTarget) -> Result<(), OpsError> {
    if super::effects_by(m, target) == crate::manifest::types::EffectsBy::Plugin
        && m.desired.has_plugin_rules()
    {
        return Err(OpsError::EffectsByPlugin {
            target: target.info.name.clone(),
            plugin: crate::dialect::plugin::plugin_name(&m.desired.project),
            declared: m.project.effects.is_some(),
        });
    }
    Ok(())
}

/// An effect held back by the blast-radius guard (`maxRemovalShare`).
#[derive(Clone, Debug, PartialEq)]
pub struct Held {
    pub target: crate::plan::Target,
    pub removed: usize,
    pub before: usize,
    pub limit: f64,
}

impl std::fmt::Display for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} would lose {} of its {} members, more than its limit of {:.0}%: held back (check the rule, or pass --allow-mass-removal)",
            self.target,
            self.removed,
            self.before,
            100.0 * self.limit
        )
    }
}

/// What an effects pass applies out of a plan.
#[derive(Clone, Debug, Default)]
pub struct Selected {
    /// Effects to apply: routing, memberships and care-team participants that change.
    pub apply: Vec<Change>,
    /// Effects the blast-radius guard holds back.
    pub held: Vec<Held>,
    /// Configuration objects that differ from the manifests (never written here).
    pub configuration_drift: usize,
}

/// Which patients a pass re-evaluated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every patient (a full pass).
    Everyone,
    /// Only these (`Patient/<id>`): an incremental pass changes no one else's memberships
    /// or care teams, so a patient it did not re-read is never removed on a guess.
    Patients(BTreeSet<String>),
}

/// The changes an effects pass applies: effects only (a change to configuration is
/// counted, never applied), restricted to the patients `scope` re-evaluated, and with
/// any change that would remove more than its `maxRemovalShare` held back (unless
/// `allow_mass_removal`).
pub fn select(
    plan: &Plan,
    scope: &Scope,
    allow_mass_removal: bool,
    pseudo: &Pseudonymizer,
) -> Selected {
    let mut out = Selected::default();
    for c in &plan.changes {
        match c.layer() {
            Layer::Configuration => {
                if matches!(
                    c.action,
                    Action::Create | Action::Update | Action::Delete | Action::Adopt
                ) {
                    out.configuration_drift += 1;
                }
            }
            Layer::Effects if c.action == Action::Update => {
                let Some(c) = restrict(c, scope, pseudo) else {
                    continue;
                };
                match over_limit(&c) {
                    Some(held) if !allow_mass_removal => out.held.push(held),
                    _ => out.apply.push(c),
                }
            }
            Layer::Effects => {}
        }
    }
    out
}

/// The change limited to the patients in `scope`: members (or care-team patients) outside
/// it keep what they have. None when nothing is left to change.
fn restrict(c: &Change, scope: &Scope, pseudo: &Pseudonymizer) -> Option<Change> {
    let Scope::Patients(changed) = scope else {
        return Some(c.clone());
    };
    if !matches!(
        c.target.kind,
        ObjectKind::PatientGroup | ObjectKind::CareTeamAssignment
    ) {
        return Some(c.clone());
    }
    let mut out = c.clone();
    let mut moved = false;
    for f in out.fields.iter_mut() {
        let (Some(m), Some((before, after))) = (f.membership.as_deref(), f.sealed.as_deref())
        else {
            continue;
        };
        let list = |v: &Option<Value>| -> BTreeSet<String> {
            crate::vocab::json::str_list(v.as_ref())
                .into_iter()
                .collect()
        };
        let (b, a) = (list(before), list(after));
        let kept: BTreeSet<String> = b
            .iter()
            .filter(|p| !changed.contains(*p))
            .chain(a.iter().filter(|p| changed.contains(*p)))
            .cloned()
            .collect();
        if kept != b {
            moved = true;
        }
        let as_value = |s: &BTreeSet<String>| Value::from(s.iter().cloned().collect::<Vec<_>>());
        *f = crate::diff::sensitive_change(
            &f.field,
            before.as_ref(),
            Some(&as_value(&kept)),
            &m.mode,
            Some(m.max_removal_share),
            f.source.clone(),
            pseudo,
        );
    }
    moved.then_some(out)
}

/// Whether a change removes more than its blast-radius limit allows.
fn over_limit(c: &Change) -> Option<Held> {
    c.fields
        .iter()
        .filter_map(|f| f.membership.as_ref())
        .find_map(|m| {
            (m.before > 0 && (m.removed as f64) > m.max_removal_share * m.before as f64).then(
                || Held {
                    target: c.target.clone(),
                    removed: m.removed,
                    before: m.before,
                    limit: m.max_removal_share,
                },
            )
        })
}

/// The patient facts `watch` keeps between passes on targets that can search patient data
/// by change time: each resource's facts by its id, so that a changed consent replaces its
/// old facts. Facts are what rules use (no names, no free text), in memory only.
#[derive(Clone, Debug, Default)]
pub struct FactsCache {
    patients: BTreeMap<String, PatientFacts>,
    /// Consent id → (patient id, its facts).
    consents: BTreeMap<String, (String, PatientFacts)>,
    /// CareTeam id → (patient id, its facts: none unless active).
    care_teams: BTreeMap<String, (String, PatientFacts)>,
}

impl FactsCache {
    /// Take in changed (or, on a full pass, all) Patient, Consent and CareTeam resources.
    /// Returns the patients they touch (`Patient/<id>`), old owners of a moved resource
    /// included.
    pub fn absorb(&mut self, resources: &[Value]) -> BTreeSet<String> {
        let mut touched = BTreeSet::new();
        for r in resources {
            let Some(id) = r["id"].as_str() else { continue };
            let rt = r["resourceType"].as_str().unwrap_or_default();
            let reference = |pointer: &str| {
                r.pointer(pointer)
                    .and_then(Value::as_str)
                    .and_then(|p| p.strip_prefix("Patient/"))
            };
            let patient = match rt {
                "Patient" => Some(id),
                "Consent" => reference("/patient/reference"),
                "CareTeam" => reference("/subject/reference"),
                _ => None,
            }
            .map(str::to_owned);
            let Some(patient) = patient else { continue };
            // the rules' own reading of the resource, on a stand-in patient
            let stub = serde_json::json!({"resourceType": "Patient", "id": patient});
            let facts = |r: &Value| {
                crate::rules::facts(&[stub.clone(), r.clone()])
                    .remove(&patient)
                    .unwrap_or_default()
            };
            let previous = match rt {
                "Patient" => {
                    let f = crate::rules::facts(std::slice::from_ref(r))
                        .remove(id)
                        .unwrap_or_default();
                    self.patients.insert(id.to_owned(), f);
                    None
                }
                "Consent" => self
                    .consents
                    .insert(id.to_owned(), (patient.clone(), facts(r)))
                    .map(|(p, _)| p),
                "CareTeam" => self
                    .care_teams
                    .insert(id.to_owned(), (patient.clone(), facts(r)))
                    .map(|(p, _)| p),
                _ => None,
            };
            touched.extend(previous.map(|p| format!("Patient/{p}")));
            touched.insert(format!("Patient/{patient}"));
        }
        touched
    }

    /// Every patient's facts, as a full read would give them.
    pub fn facts(&self) -> BTreeMap<String, PatientFacts> {
        let mut out = self.patients.clone();
        for (patient, f) in self.consents.values() {
            if let Some(p) = out.get_mut(patient) {
                p.consents.extend(f.consents.iter().cloned());
            }
        }
        for (patient, f) in self.care_teams.values() {
            if let Some(p) = out.get_mut(patient) {
                p.care_team.extend(f.care_team.iter().cloned());
            }
        }
        out
    }

    pub fn len(&self) -> usize {
        self.patients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.patients.is_empty()
    }
}

/// The searches that read patient data changed after `since` (every care team, not only
/// active ones: one that stopped being active must be seen too).
pub fn changed_patient_queries(
    how: crate::vocab::PatientReads,
    consents: bool,
    care_teams: bool,
    param: &str,
    since: &str,
) -> Vec<Query> {
    crate::observe::patient_queries(how, consents, care_teams)
        .into_iter()
        .map(|mut q| {
            q.params.retain(|(k, _)| k != "status");
            q.param(param, format!("gt{since}"))
        })
        .collect()
}

/// What the passes did, for the summary at the end (counts only, never patients).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub passes: u64,
    pub full_passes: u64,
    pub failed_passes: u64,
    pub tasks_routed: usize,
    pub members_added: usize,
    pub members_removed: usize,
    pub care_team_added: usize,
    pub care_team_removed: usize,
    /// Care teams whose lead passed to a `lead: true` assignment's participant.
    pub care_team_lead_handovers: usize,
    /// Writes that failed.
    pub failures: usize,
    /// Writes an interruption kept from starting.
    pub not_started: usize,
    /// Effects the blast-radius guard held back.
    pub held: usize,
}

impl Totals {
    /// Count one pass's outcomes (`applied` is the plan that was applied).
    pub fn add(&mut self, full: bool, applied: &Plan, report: &apply::Report, held: usize) {
        self.passes += 1;
        self.full_passes += u64::from(full);
        self.held += held;
        for o in &report.outcomes {
            let c = &applied.changes[o.change];
            match &o.result {
                Err(apply::ApplyError::NotStarted { .. }) => self.not_started += 1,
                Err(_) => self.failures += 1,
                Ok(_) => {
                    let m = c.fields.iter().find_map(|f| f.membership.as_ref());
                    match (&c.operation, m) {
                        // one outcome per task, folded or not
                        (Operation::RouteTask { .. } | Operation::RouteTasks { .. }, _) => {
                            self.tasks_routed += 1
                        }
                        (Operation::CareTeamParticipant(_), Some(m)) => {
                            self.care_team_added += m.added;
                            self.care_team_removed += m.removed;
                            self.care_team_lead_handovers += c
                                .fields
                                .iter()
                                .filter(|f| f.field == crate::plan::LEAD_FIELD)
                                .filter_map(|f| f.membership.as_ref())
                                .map(|m| m.added)
                                .sum::<usize>();
                        }
                        (Operation::Object, Some(m)) => {
                            self.members_added += m.added;
                            self.members_removed += m.removed;
                        }
                        _ => {}
                    }
                }
            }
        }
        self.failures += report.refused.len();
    }

    /// Count a pass that failed before it wrote anything.
    pub fn add_failed_pass(&mut self) {
        self.passes += 1;
        self.failed_passes += 1;
    }
}

/// One pass, done.
pub struct PassOutcome {
    pub pass: Pass,
    /// The effects applied (and the record of them), if there were any.
    pub plan: Plan,
    pub applied: Option<Applied>,
    pub held: Vec<Held>,
    pub configuration_drift: usize,
    /// Patients re-evaluated on an incremental pass (None on a full pass).
    pub re_evaluated: Option<usize>,
}

/// The state an effects process keeps between passes: the pass count, the point the next
/// incremental pass reads from, the patient facts (where the target can read changes), and
/// the totals so far.
pub struct Effects {
    pub full_every: u64,
    pub allow_mass_removal: bool,
    number: u64,
    watermark: Option<String>,
    cache: Option<FactsCache>,
    pub totals: Totals,
}

impl Effects {
    pub fn new(full_every: u64, allow_mass_removal: bool) -> Self {
        Effects {
            full_every,
            allow_mass_removal,
            number: 0,
            watermark: None,
            cache: None,
            totals: Totals::default(),
        }
    }

    /// [`Effects::pass`] inside the target's write session: a file store is locked for
    /// the pass (not between passes) and writes each changed file once at its end.
    /// `on_wait` hears about a lock another process holds.
    pub async fn locked_pass(
        &mut self,
        m: &Manifests,
        target: &ResolvedTarget,
        control: &apply::Control<'_>,
        on_wait: &dyn Fn(&str),
    ) -> Result<PassOutcome, OpsError> {
        let mut result = match target.begin_writes(on_wait).await {
            Ok(()) => self.pass(m, target, control).await,
            Err(e) => {
                self.totals.add_failed_pass();
                Err(e.into())
            }
        };
        if let Err(e) = target.end_writes().await
            && result.is_ok()
        {
            result = Err(e.into());
        }
        result
    }

    /// Run one pass: observe (in full or what changed), plan, select the effects, apply
    /// them under `control` (its stop flag lets the writes in flight finish and starts no
    /// new one). A failed pass keeps the watermark, so the next one reads from the last
    /// good point; the failure is counted.
    pub async fn pass(
        &mut self,
        m: &Manifests,
        target: &ResolvedTarget,
        control: &apply::Control<'_>,
    ) -> Result<PassOutcome, OpsError> {
        let started = SystemTime::now() - OVERLAP;
        let result = self.run(m, target, control).await;
        self.number += 1;
        match &result {
            Ok(o) => {
                self.watermark = Some(humantime::format_rfc3339_millis(started).to_string());
                let (plan, empty) = (&o.plan, apply::Report::default());
                let report = o.applied.as_ref().map_or(&empty, |a| &a.report);
                self.totals.add(o.pass.full, plan, report, o.held.len());
            }
            Err(_) => self.totals.add_failed_pass(),
        }
        result
    }

    async fn run(
        &mut self,
        m: &Manifests,
        target: &ResolvedTarget,
        control: &apply::Control<'_>,
    ) -> Result<PassOutcome, OpsError> {
        let caps = target.dialect.capabilities().target();
        let needed = crate::rules::needed_reads(&m.desired);
        let routing_needs_patients = m
            .desired
            .routing_rules
            .iter()
            .any(|r| r.patient_group.is_some());
        let cacheable = caps.patient_reads.changed_since && needed.patients;
        // an incremental pass needs the facts of a full one to build on
        let watermark = self
            .watermark
            .as_deref()
            .filter(|_| !cacheable || self.cache.is_some());
        let pass = next_pass(
            self.number,
            watermark,
            self.full_every,
            cacheable,
            routing_needs_patients,
        );
        // a routing-only pass plans without the rules over patients
        let stripped;
        let desired = if pass.patients == PatientRead::Skip {
            stripped = crate::model::DesiredState {
                patient_groups: Vec::new(),
                care_team_assignments: Vec::new(),
                ..m.desired.clone()
            };
            &stripped
        } else {
            &m.desired
        };
        let mut reads = crate::rules::RuleReads {
            tasks_since: pass.tasks_since.clone(),
            ..crate::rules::needed_reads(desired)
        };
        let mut fresh = None;
        if cacheable && pass.patients != PatientRead::Skip {
            // read the patient data here, into the facts kept between passes
            reads.patients = false;
            reads.consents = false;
            reads.care_teams = false;
            let how = caps.patient_reads;
            let queries = match &pass.patients {
                PatientRead::ChangedSince(since) => changed_patient_queries(
                    how,
                    needed.consents,
                    needed.care_teams,
                    caps.modified_since,
                    since,
                ),
                _ => crate::observe::patient_queries(how, needed.consents, needed.care_teams),
            };
            // concurrently, as observe runs its searches
            let answers =
                futures::future::join_all(queries.iter().map(|q| target.store.search(q))).await;
            let mut resources = Vec::new();
            for a in answers {
                resources.extend(a.map_err(OpsError::Observe)?);
            }
            fresh = Some(resources);
        }
        let mut observed = crate::observe::observe(
            &target.store,
            target.dialect.as_ref(),
            &m.desired.project,
            reads,
        )
        .await
        .map_err(OpsError::Observe)?;
        let mut scope = Scope::Everyone;
        if let Some(resources) = fresh {
            let cache = match (&pass.patients, self.cache.take()) {
                (PatientRead::ChangedSince(_), Some(cache)) => cache,
                _ => FactsCache::default(),
            };
            let cache = self.cache.insert(cache);
            let touched = cache.absorb(&resources);
            if !pass.full {
                scope = Scope::Patients(touched);
            }
            observed.patients = cache.facts();
        }
        let pseudo = Pseudonymizer::from_env();
        let options = crate::reconcile::Options {
            prune: false,
            adopt: false,
            route_existing: false,
            today: crate::rules::today(),
            pseudo: Pseudonymizer::from_env(),
            target: target.info.clone(),
            checksum: m.checksum.clone(),
            manifests_commit: super::manifests_commit(&m.dir),
            plugin: Default::default(),
        };
        let full_plan =
            crate::reconcile::plan(desired, &observed, target.dialect.as_ref(), &options)
                .map_err(|d| OpsError::Unplannable(m.errors(d)))?;
        let selected = select(&full_plan, &scope, self.allow_mass_removal, &pseudo);
        let plan = full_plan.with_changes(selected.apply);
        // applied even when empty: the record then says nothing was written
        let agent = super::agent(m, target);
        let applied = Some(super::apply_recorded_with(&plan, target, agent, false, control).await);
        let re_evaluated = match &scope {
            Scope::Everyone => None,
            Scope::Patients(p) => Some(p.len()),
        };
        Ok(PassOutcome {
            pass,
            plan,
            applied,
            held: selected.held,
            // a routing-only pass did not plan groups: their drift is not known
            configuration_drift: selected.configuration_drift,
            re_evaluated,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{FieldChange, Precondition, Reason, ReasonCode, Target};
    use serde_json::json;

    fn change(kind: ObjectKind, action: Action, fields: Vec<FieldChange>, op: Operation) -> Change {
        Change {
            action,
            target: Target {
                kind,
                name: "x".into(),
                resource_type: "Group".into(),
                id: Some("g1".into()),
            },
            fields,
            reason: Reason {
                code: ReasonCode::Differs,
                source: None,
                rule: "r".into(),
            },
            operation: op,
            precondition: Precondition::default(),
            notes: vec![],
        }
    }

    fn members(before: &[&str], after: &[&str], mode: &str, share: f64) -> FieldChange {
        let refs = |s: &[&str]| json!(s.iter().map(|p| format!("Patient/{p}")).collect::<Vec<_>>());
        crate::diff::sensitive_change(
            "members",
            Some(&refs(before)),
            Some(&refs(after)),
            mode,
            Some(share),
            None,
            &Pseudonymizer::with_key("k"),
        )
    }

    fn plan(changes: Vec<Change>) -> Plan {
        Plan::new(
            "p",
            crate::plan::TargetInfo {
                name: "t".into(),
                dialect: "fhir-r4".into(),
                endpoint: "e".into(),
            },
            vec![],
            "sum",
            false,
            changes,
            vec![],
        )
    }

    fn sealed_after(c: &Change) -> BTreeSet<String> {
        let (_, after) = *c.fields[0].sealed.clone().unwrap();
        crate::vocab::json::str_list(after.as_ref())
            .into_iter()
            .collect()
    }

    fn scope(ids: &[&str]) -> Scope {
        Scope::Patients(ids.iter().map(|p| format!("Patient/{p}")).collect())
    }

    #[test]
    fn the_first_pass_and_every_nth_are_full_the_others_read_changes() {
        // no watermark: full, every task
        let first = next_pass(0, None, 10, true, false);
        assert!(first.full);
        assert_eq!(first.patients, PatientRead::All);
        assert_eq!(first.tasks_since, None);
        // later: what changed since the watermark
        let later = next_pass(3, Some("T"), 10, true, false);
        assert!(!later.full);
        assert_eq!(later.patients, PatientRead::ChangedSince("T".into()));
        assert_eq!(later.tasks_since.as_deref(), Some("T"));
        // every 10th pass is full again, and --full-every 1 makes every pass full
        assert!(next_pass(10, Some("T"), 10, true, false).full);
        assert!(next_pass(3, Some("T"), 1, true, false).full);
        // a target without patient change searches: routing only between full passes,
        // unless routing needs every patient anyway
        let canvas = next_pass(3, Some("T"), 10, false, false);
        assert_eq!(canvas.patients, PatientRead::Skip);
        assert!(!canvas.full);
        let canvas = next_pass(3, Some("T"), 10, false, true);
        assert_eq!(canvas.patients, PatientRead::All);
        assert_eq!(canvas.tasks_since.as_deref(), Some("T"));
    }

    #[test]
    fn an_effects_pass_applies_effects_only_and_counts_configuration_drift() {
        // this is the decision `watch` made inline before (routing updates only)
        let routed = change(
            ObjectKind::TaskRouting,
            Action::Update,
            vec![],
            Operation::RouteTask {
                rule: "r".into(),
                order: 1,
            },
        );
        let team = change(
            ObjectKind::Team,
            Action::Update,
            vec![FieldChange {
                field: "name".into(),
                before: Some(json!("A")),
                after: Some(json!("B")),
                source: None,
                labels: Default::default(),
                membership: None,
                sealed: None,
            }],
            Operation::Object,
        );
        let created = change(
            ObjectKind::PatientGroup,
            Action::Create,
            vec![],
            Operation::Object,
        );
        let manual = change(ObjectKind::Role, Action::Manual, vec![], Operation::Object);
        let noop = change(ObjectKind::Team, Action::NoOp, vec![], Operation::Object);
        let group = change(
            ObjectKind::PatientGroup,
            Action::Update,
            vec![members(&["a"], &["a", "b"], "additive", 0.2)],
            Operation::Object,
        );
        let p = plan(vec![routed, team, created, manual, noop, group]);
        let s = select(&p, &Scope::Everyone, false, &Pseudonymizer::with_key("k"));
        let kinds: Vec<ObjectKind> = s.apply.iter().map(|c| c.target.kind).collect();
        assert_eq!(kinds, [ObjectKind::TaskRouting, ObjectKind::PatientGroup]);
        // the team's rename and the group's creation are configuration: counted, not applied
        assert_eq!(s.configuration_drift, 2);
        assert!(s.held.is_empty());
    }

    #[test]
    fn an_incremental_pass_changes_only_the_patients_it_re_evaluated() {
        // authoritative group: live a, b, c; the rule over the facts now says a, d.
        // Only b and d were re-read: b leaves, d joins; c (not re-read) stays.
        let group = change(
            ObjectKind::PatientGroup,
            Action::Update,
            vec![members(&["a", "b", "c"], &["a", "d"], "authoritative", 1.0)],
            Operation::Object,
        );
        let p = plan(vec![group]);
        let pseudo = Pseudonymizer::with_key("k");
        let s = select(&p, &scope(&["b", "d"]), false, &pseudo);
        assert_eq!(s.apply.len(), 1);
        assert_eq!(
            sealed_after(&s.apply[0]),
            ["Patient/a", "Patient/c", "Patient/d"]
                .map(String::from)
                .into()
        );
        let m = s.apply[0].fields[0].membership.clone().unwrap();
        assert_eq!((m.before, m.added, m.removed, m.after), (3, 1, 1, 3));
        // a full pass applies the whole result
        let s = select(&p, &Scope::Everyone, false, &pseudo);
        assert_eq!(
            sealed_after(&s.apply[0]),
            ["Patient/a", "Patient/d"].map(String::from).into()
        );
        // nobody re-read who moves: nothing to apply
        assert!(
            select(&p, &scope(&["a", "z"]), false, &pseudo)
                .apply
                .is_empty()
        );
    }

    #[test]
    fn an_incremental_pass_restricts_care_team_assignments_too() {
        // authoritative assignment: a, b, c hold the role; the rule selects a, d now.
        // Only c and d were re-read: c loses the role, d gains it, b keeps it.
        let mut patients = members(&["a", "b", "c"], &["a", "d"], "authoritative", 0.5);
        patients.field = "patients".into();
        let p = plan(vec![change(
            ObjectKind::CareTeamAssignment,
            Action::Update,
            vec![patients],
            Operation::CareTeamParticipant(crate::plan::Participant {
                practitioner: "Practitioner/x".into(),
                role: crate::plan::Coding {
                    system: "s".into(),
                    code: "c".into(),
                    display: "d".into(),
                },
                lead: true,
                authoritative: true,
            }),
        )]);
        let s = select(
            &p,
            &scope(&["c", "d"]),
            false,
            &Pseudonymizer::with_key("k"),
        );
        assert_eq!(s.apply.len(), 1, "{:?}", s.held);
        let f = &s.apply[0].fields[0];
        assert_eq!(f.field, "patients");
        assert_eq!(
            sealed_after(&s.apply[0]),
            ["Patient/a", "Patient/b", "Patient/d"]
                .map(String::from)
                .into()
        );
        // the guard counts against everyone who holds the role, not only those re-read
        let m = f.membership.clone().unwrap();
        assert_eq!((m.before, m.removed), (3, 1));
    }

    #[test]
    fn removals_over_the_limit_are_held_back_on_every_pass_unless_allowed() {
        let group = change(
            ObjectKind::PatientGroup,
            Action::Update,
            vec![members(&["a", "b", "c", "d"], &["a"], "authoritative", 0.2)],
            Operation::Object,
        );
        let routed = change(
            ObjectKind::TaskRouting,
            Action::Update,
            vec![],
            Operation::RouteTask {
                rule: "r".into(),
                order: 1,
            },
        );
        let p = plan(vec![group, routed]);
        let pseudo = Pseudonymizer::with_key("k");
        let s = select(&p, &Scope::Everyone, false, &pseudo);
        // the routing still goes ahead; the group waits
        assert_eq!(s.apply.len(), 1);
        assert_eq!(s.held.len(), 1);
        assert_eq!((s.held[0].removed, s.held[0].before), (3, 4));
        assert!(s.held[0].to_string().contains("--allow-mass-removal"));
        // an incremental pass that re-read one patient removes 1 of 4 (25% > 20%): held too
        let s = select(&p, &scope(&["b"]), false, &pseudo);
        assert_eq!(s.held.len(), 1);
        // allowed
        let s = select(&p, &Scope::Everyone, true, &pseudo);
        assert_eq!((s.apply.len(), s.held.len()), (2, 0));
    }

    #[test]
    fn the_facts_cache_replaces_a_changed_consent_and_names_whom_it_touched() {
        let consent = |id: &str, patient: &str, status: &str| {
            json!({"resourceType": "Consent", "id": id, "status": status,
                "patient": {"reference": format!("Patient/{patient}")},
                "category": [{"coding": [{"code": "A0001"}]}]})
        };
        let mut cache = FactsCache::default();
        let all = [
            json!({"resourceType": "Patient", "id": "p1", "active": true}),
            json!({"resourceType": "Patient", "id": "p2", "active": true}),
            consent("c1", "p1", "active"),
            consent("c2", "p2", "active"),
            json!({"resourceType": "CareTeam", "id": "ct1", "status": "active",
                "subject": {"reference": "Patient/p2"},
                "participant": [{"member": {"reference": "Practitioner/d"},
                    "role": [{"coding": [{"system": "s", "code": "pcp"}]}]}]}),
        ];
        assert_eq!(cache.absorb(&all).len(), 2);
        assert_eq!(cache.len(), 2);
        let facts = cache.facts();
        assert_eq!(
            facts["p1"].consents,
            [("".into(), "A0001".into(), "active".into())]
        );
        assert_eq!(facts["p2"].care_team.len(), 1);
        // p1's consent is rejected now; p2's care team stopped being active
        let changed = [
            consent("c1", "p1", "rejected"),
            json!({"resourceType": "CareTeam", "id": "ct1", "status": "inactive",
                "subject": {"reference": "Patient/p2"}}),
        ];
        let touched = cache.absorb(&changed);
        assert_eq!(
            touched,
            ["Patient/p1", "Patient/p2"].map(String::from).into()
        );
        let facts = cache.facts();
        // replaced, not added to: one consent, now rejected
        assert_eq!(
            facts["p1"].consents,
            [("".into(), "A0001".into(), "rejected".into())]
        );
        assert!(facts["p2"].care_team.is_empty());
        assert_eq!(facts["p2"].consents.len(), 1, "an unchanged consent stays");
    }

    #[test]
    fn changed_patient_searches_carry_the_changed_after_parameter() {
        let how = crate::vocab::PatientReads {
            elements: true,
            care_teams_in_queries: false,
            changed_since: true,
        };
        let qs = changed_patient_queries(how, true, true, "_lastUpdated", "2026-01-01T00:00:00Z");
        assert_eq!(qs.len(), 3);
        for q in &qs {
            assert!(
                q.params
                    .contains(&("_lastUpdated".into(), "gt2026-01-01T00:00:00Z".into()))
            );
            // care teams that stopped being active must be seen too
            assert!(!q.params.iter().any(|(k, _)| k == "status"), "{q:?}");
        }
    }

    #[test]
    fn totals_count_what_landed() {
        let routed = change(
            ObjectKind::TaskRouting,
            Action::Update,
            vec![],
            Operation::RouteTask {
                rule: "r".into(),
                order: 1,
            },
        );
        let group = change(
            ObjectKind::PatientGroup,
            Action::Update,
            vec![members(&["a", "b"], &["a", "c", "d"], "authoritative", 1.0)],
            Operation::Object,
        );
        let p = plan(vec![routed.clone(), group, routed]);
        let outcome = |i: usize, result| apply::Outcome {
            change: i,
            action: Action::Update,
            target: p.changes[i].target.clone(),
            result,
            note: None,
            writes: 1,
        };
        let report = apply::Report {
            outcomes: vec![
                outcome(0, Ok(None)),
                outcome(1, Ok(None)),
                outcome(
                    2,
                    Err(apply::ApplyError::NotStarted {
                        target: p.changes[2].target.clone(),
                    }),
                ),
            ],
            refused: vec![],
        };
        let mut t = Totals::default();
        t.add(true, &p, &report, 1);
        t.add_failed_pass();
        assert_eq!(
            t,
            Totals {
                passes: 2,
                full_passes: 1,
                failed_passes: 1,
                tasks_routed: 1,
                members_added: 2,
                members_removed: 1,
                not_started: 1,
                held: 1,
                ..Totals::default()
            }
        );
    }
}
