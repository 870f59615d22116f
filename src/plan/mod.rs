//! The plan: the one data type that flows from diff to the plan file, to apply and to the
//! renderers.
//!
//! A [`Change`] says what will happen (`action`), to what (`target`), field by field
//! (`fields`, before → after), and why (`reason`: the manifest position and the rule). The
//! reason only explains; what apply acts on is recorded separately (`precondition`: the
//! version or last-modified time seen when planning, and whether the object must still be
//! absent).

pub mod file;
pub mod fold;
pub mod reason;
pub mod schema;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::Source;
use crate::vocab::ObjectKind;
pub use crate::vocab::{Coding, Operation, Participant, RoutedTask};

pub const FORMAT: &str = "careplane-plan";
/// 3: `changes` holds the configuration layer only; the effects of rules are `effects`, a
/// preview (counts per rule), recomputed from live data by `apply --plan`. Care-team lead
/// handovers (`EffectPreview::lead_handovers`) were added within 3: optional, absent = 0.
pub const FORMAT_VERSION: u32 = 3;

/// The patient-list field of a care-team assignment's change that holds the care teams its
/// participant leads (before: those it leads and stays on; after: plus the lead handovers).
/// Its `added` members are the lead handovers; the participant's own joins and leaves are
/// in the `patients` field.
pub const LEAD_FIELD: &str = "lead";

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Create,
    Update,
    Delete,
    /// Take ownership of an existing object careplane did not create (`--adopt`,
    /// `import`), then bring its managed fields in line.
    Adopt,
    /// The target cannot make this change through its API: a person must (checklist).
    Manual,
    NoOp,
}

impl Action {
    /// One-character symbol, as in the human plan.
    pub fn symbol(self) -> &'static str {
        match self {
            Action::Create => "+",
            Action::Update => "~",
            Action::Delete => "-",
            Action::Adopt => "*",
            Action::Manual => "!",
            Action::NoOp => "=",
        }
    }
    /// The action as a word (`create`, `no-op`, ...).
    pub fn word(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Adopt => "adopt",
            Action::Manual => "manual",
            Action::NoOp => "no-op",
        }
    }

    pub fn is_change(self) -> bool {
        !matches!(self, Action::NoOp)
    }
}

/// The object a change is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Target {
    pub kind: ObjectKind,
    /// Manifest name (`metadata.name`), or the catalog's name.
    pub name: String,
    pub resource_type: String,
    /// Server id; absent for creates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} '{}' ({}",
            self.kind.label(),
            self.name,
            self.resource_type
        )?;
        match (&self.id, self.kind) {
            (_, ObjectKind::CareTeamAssignment) => write!(f, ", per patient)"),
            (Some(id), _) => write!(f, "/{id})"),
            (None, _) => write!(f, ", new)"),
        }
    }
}

/// One managed field, before and after. `None` = absent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FieldChange {
    pub field: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
    /// The manifest position that asks for the `after` value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// How the manifests name ids that appear in `before`/`after`
    /// (`"Practitioner/ab12": "npi 1234567893"`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// For lists that identify patients: `before`/`after` are counts, and this says what
    /// changes, with keyed pseudonyms instead of ids.
    // Boxed, as is `sealed`: most changes have neither, and a plan may hold 100,000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub membership: Option<Box<MembershipDelta>>,
    /// The real values of such a list, in memory only: never serialised into a plan file,
    /// so a saved plan is re-evaluated (and compared by digest) before apply.
    #[serde(skip)]
    #[schemars(skip)]
    pub sealed: Option<Box<(Option<Value>, Option<Value>)>>,
}

/// What a change does to a list of patients, without naming them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MembershipDelta {
    /// `additive` (never removes) or `authoritative`.
    pub mode: String,
    pub before: usize,
    pub after: usize,
    pub added: usize,
    pub removed: usize,
    pub kept: usize,
    /// Up to five keyed pseudonyms (`pt-…`) of added / removed members; empty without
    /// `CAREPLANE_PSEUDONYM_KEY`.
    pub sample_added: Vec<String>,
    pub sample_removed: Vec<String>,
    /// Keyed digests of the member lists, checked when a saved plan is applied.
    pub digest_before: String,
    pub digest_after: String,
    /// The group's blast-radius limit (share of members one apply may remove).
    pub max_removal_share: f64,
}

/// Why a change is planned, as a code (for tools: counting, filtering, grouping).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum ReasonCode {
    /// Declared, and not on the target.
    Missing,
    /// Declared, and its live fields differ from the manifest.
    Differs,
    /// Declared, and the target already matches.
    Matches,
    /// A same-named object careplane does not own yet is taken over.
    Adopt,
    /// Owned, no longer declared, and `--prune` was given.
    Prune,
    /// Likewise, on a target without DELETE: emptied and renamed instead.
    Retire,
    /// A routing rule routes an open task.
    RoutingRule,
    /// A care-team assignment puts a participant on patients' care teams.
    CareTeamAssignment,
    /// A `lead: true` care-team assignment makes its participant, already on the care
    /// teams, their lead (the previous lead, if any, loses it).
    CareTeamLead,
}

/// Why a change is planned: for people, never for apply's decisions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Reason {
    pub code: ReasonCode,
    /// The manifest position that declares the object (absent for deletes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// The rule that produced the change, in words.
    pub rule: String,
}

/// What apply requires before it writes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Precondition {
    /// `meta.versionId` seen when planning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    /// `meta.lastUpdated` seen when planning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<String>,
    /// The object must still not exist (creates).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub absent: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Change {
    pub action: Action,
    pub target: Target,
    pub fields: Vec<FieldChange>,
    pub reason: Reason,
    /// What apply does: write the object's fields, put a participant on patients' care
    /// teams, or route a task.
    pub operation: Operation,
    pub precondition: Precondition,
    /// How apply will go about it, when that is not obvious (ordering of moves).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// The two layers of a plan: configuration (reviewed exactly) and the effects of rules
/// (recomputed from live data: patient-group memberships, care-team participants, task
/// routing).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Layer {
    Configuration,
    Effects,
}

impl Change {
    /// Which layer the change belongs to: routing and care-team participants are effects,
    /// and so is a change to a patient group that only moves members; everything else
    /// (a group's name, rule or mode included) is configuration.
    pub fn layer(&self) -> Layer {
        match self.operation {
            Operation::RouteTask { .. }
            | Operation::RouteTasks { .. }
            | Operation::CareTeamParticipant(_) => Layer::Effects,
            Operation::Object
                if self.action == Action::Update
                    && !self.fields.is_empty()
                    && self.fields.iter().all(|f| {
                        self.target
                            .kind
                            .sensitive_fields()
                            .contains(&f.field.as_str())
                    }) =>
            {
                Layer::Effects
            }
            Operation::Object | Operation::Plugin { .. } => Layer::Configuration,
        }
    }

    /// The rule an effect comes from (a routing rule, a care-team assignment, a patient
    /// group), by manifest name.
    pub fn rule_name(&self) -> &str {
        match &self.operation {
            Operation::RouteTask { rule, .. } | Operation::RouteTasks { rule, .. } => rule,
            _ => &self.target.name,
        }
    }
}

/// An owned object that left the manifests and is kept because `--prune` was not given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Orphan {
    pub target: Target,
}

/// Where the plan was made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TargetInfo {
    /// Target name from the project file (or `server` for `--server`).
    pub name: String,
    /// Dialect (`fhir-r4`).
    pub dialect: String,
    /// Base URL or store directory (never credentials).
    pub endpoint: String,
}

/// What the target lets careplane do with one kind of object (from the dialect's
/// capability table), so that readers of a plan know what is automatic and what is a
/// checklist item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PlanCapability {
    pub kind: ObjectKind,
    pub resource_type: String,
    pub create: bool,
    pub update: bool,
    pub delete: bool,
    /// Where a person makes the changes careplane cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manual_hint: Option<String>,
}

impl PlanCapability {
    pub fn from_table(caps: &crate::vocab::Capabilities) -> Vec<Self> {
        caps.0
            .iter()
            .map(|c| PlanCapability {
                kind: c.kind,
                resource_type: c.resource_type.into(),
                create: c.create,
                update: c.update,
                delete: c.delete,
                manual_hint: c.manual_hint.map(str::to_owned),
            })
            .collect()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Summary {
    pub create: usize,
    #[serde(default)]
    pub adopt: usize,
    pub update: usize,
    pub delete: usize,
    pub manual: usize,
    pub no_op: usize,
    pub orphaned: usize,
}

/// The effects of one rule, as a plan previews them: counts (and keyed pseudonyms of
/// patients), never ids, never tasks one by one. `apply --plan` recomputes the effects from
/// live data and compares them with this preview ([`EffectCheck`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EffectPreview {
    /// `patient-group` (patients join / leave), `care-team-assignment` (the participant
    /// is put on / taken off patients' care teams) or `task-routing` (open tasks routed).
    pub kind: ObjectKind,
    /// The rule's manifest name.
    pub rule: String,
    /// The manifest position that declares the rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declared_at: Option<Source>,
    /// Patients to add, care teams to put the participant on, or tasks to route.
    pub adds: u64,
    /// Patients to remove, or care teams to take the participant off (routing: 0).
    pub removes: u64,
    /// Up to five keyed pseudonyms (`pt-…`) of patients added / removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sample_added: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sample_removed: Vec<String>,
    /// Care-team assignments with `lead: true`: care teams whose lead passes to the
    /// participant, from someone else (who loses it) or, where the participant is on the
    /// team already, from nobody. Not counted in `adds` or `removes` (a participant joining
    /// a team nobody leads joins as the lead: that is an add only).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lead_handovers: u64,
    /// Up to five keyed pseudonyms (`pt-…`) of patients whose care team's lead is handed
    /// over.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sample_lead_handovers: Vec<String>,
    /// The rule's `maxDeviation`: how far `apply --plan` may find the effects moved.
    pub max_deviation: crate::model::rule::MaxDeviation,
    /// What a reviewer should know (a removal over the rule's limit, patients left alone
    /// because someone else holds the role); counts only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl EffectPreview {
    /// What the counts count, in words.
    pub fn unit(&self) -> &'static str {
        match self.kind {
            ObjectKind::TaskRouting => "open task(s) to route",
            ObjectKind::CareTeamAssignment => "patient care team(s)",
            _ => "patient(s)",
        }
    }
}

/// Care-team lead handovers in words (`3 lead handover(s)`), when there are any.
pub fn lead_handovers_words(n: u64) -> Option<String> {
    (n > 0).then(|| format!("{n} lead handover(s)"))
}

/// The manifest kind of the rule behind an effect (`maxDeviation` is looked up by it).
pub fn rule_manifest_kind(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::TaskRouting => "RoutingRule",
        ObjectKind::CareTeamAssignment => "CareTeamAssignment",
        _ => "PatientGroup",
    }
}

/// The effects preview of `changes`: per rule, the patients a group adds and removes (a
/// group's create included), the care teams an assignment changes, and the open tasks a
/// routing rule routes. `limit` gives each rule's `maxDeviation`.
pub fn preview(
    changes: &[Change],
    limit: &dyn Fn(ObjectKind, &str) -> crate::model::rule::MaxDeviation,
) -> Vec<EffectPreview> {
    let mut out: Vec<EffectPreview> = Vec::new();
    let mut add = |kind: ObjectKind,
                   rule: &str,
                   source: Option<&Source>,
                   (adds, removes, handovers): (u64, u64, u64),
                   samples: (&[String], &[String], &[String]),
                   notes: &[String]| {
        let i = match out.iter().position(|e| e.kind == kind && e.rule == rule) {
            Some(i) => i,
            None => {
                out.push(EffectPreview {
                    kind,
                    rule: rule.to_owned(),
                    declared_at: source.cloned(),
                    adds: 0,
                    removes: 0,
                    sample_added: Vec::new(),
                    sample_removed: Vec::new(),
                    lead_handovers: 0,
                    sample_lead_handovers: Vec::new(),
                    max_deviation: limit(kind, rule),
                    notes: Vec::new(),
                });
                out.len() - 1
            }
        };
        let e = &mut out[i];
        for n in notes {
            if !e.notes.contains(n) {
                e.notes.push(n.clone());
            }
        }
        e.adds += adds;
        e.removes += removes;
        e.lead_handovers += handovers;
        for (have, more) in [
            (&mut e.sample_added, samples.0),
            (&mut e.sample_removed, samples.1),
            (&mut e.sample_lead_handovers, samples.2),
        ] {
            for s in more {
                if have.len() < 5 && !have.contains(s) {
                    have.push(s.clone());
                }
            }
        }
    };
    for c in changes
        .iter()
        .filter(|c| c.action.is_change() && !matches!(c.action, Action::Delete | Action::Manual))
    {
        if let Operation::RouteTask { rule, .. } | Operation::RouteTasks { rule, .. } = &c.operation
        {
            add(
                ObjectKind::TaskRouting,
                rule,
                c.reason.source.as_ref(),
                (c.width() as u64, 0, 0),
                (&[], &[], &[]),
                &[],
            );
            continue;
        }
        for f in &c.fields {
            let Some(m) = &f.membership else { continue };
            // a care-team assignment's lead list counts its handovers only
            let lead =
                matches!(c.operation, Operation::CareTeamParticipant(_)) && f.field == LEAD_FIELD;
            let (counts, samples) = if lead {
                (
                    (0, 0, m.added as u64),
                    (&[][..], &[][..], &m.sample_added[..]),
                )
            } else {
                (
                    (m.added as u64, m.removed as u64, 0),
                    (&m.sample_added[..], &m.sample_removed[..], &[][..]),
                )
            };
            add(
                c.target.kind,
                &c.target.name,
                c.reason.source.as_ref(),
                counts,
                samples,
                &c.notes,
            );
        }
    }
    out.retain(|e| e.adds + e.removes + e.lead_handovers > 0);
    out.sort_by(|a, b| (a.kind, &a.rule).cmp(&(b.kind, &b.rule)));
    out
}

/// One rule's effects at `apply --plan`: the reviewed preview against the counts
/// recomputed from live data, and whether they were applied or held back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EffectCheck {
    pub kind: ObjectKind,
    pub rule: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declared_at: Option<Source>,
    /// The counts in the saved plan (0 when the plan previewed nothing for this rule).
    pub reviewed_adds: u64,
    pub reviewed_removes: u64,
    /// The counts recomputed now, after the configuration was applied.
    pub now_adds: u64,
    pub now_removes: u64,
    /// The largest difference tolerated on each side (`max(share × reviewed, atLeast)`).
    pub tolerance_adds: u64,
    pub tolerance_removes: u64,
    /// Care-team lead handovers, reviewed and now, compared like adds and removes (a
    /// third side with its own tolerance).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reviewed_lead_handovers: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub now_lead_handovers: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tolerance_lead_handovers: u64,
    /// `applied`, or why this rule's effects were held back.
    pub decision: EffectDecision,
}

/// What `apply --plan` did with one rule's recomputed effects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum EffectDecision {
    /// Within tolerance: applied (with nothing to do, nothing is written).
    Applied,
    /// Held back: the fresh counts differ from the reviewed ones by more than
    /// `maxDeviation`.
    HeldDeviation,
    /// Held back: a patient group (or care-team assignment) would lose more than its
    /// `maxRemovalShare` (`--allow-mass-removal` lifts this).
    HeldBlastRadius,
    /// Held back: the effects could not be recomputed (the reason, in words).
    NotRecomputed { reason: String },
    /// The apply was interrupted before the effects started.
    NotStarted,
}

impl EffectCheck {
    pub fn held(&self) -> bool {
        !matches!(self.decision, EffectDecision::Applied)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Plan {
    pub format: String,
    pub format_version: u32,
    pub careplane_version: String,
    pub project: String,
    pub target: TargetInfo,
    /// What the target lets careplane write, per kind.
    pub capabilities: Vec<PlanCapability>,
    /// Checksum of the manifests the plan was made from.
    pub manifests_checksum: String,
    /// The git commit of the manifests, when known (`GITHUB_SHA`, `CI_COMMIT_SHA`, or
    /// `git rev-parse HEAD` in the manifest directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifests_commit: Option<String>,
    pub prune: bool,
    /// Planned with `--route-existing` (assigned open tasks are routed too); `apply --plan`
    /// recomputes the effects the same way.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub route_existing: bool,
    /// Counts of the configuration changes.
    pub summary: Summary,
    /// The configuration layer, reviewed and applied exactly (with preconditions). In
    /// memory a fresh plan also holds the effects of rules here (what `apply DIR` writes);
    /// they are never written out: a plan file previews them in `effects`.
    #[serde(serialize_with = "configuration_only")]
    pub changes: Vec<Change>,
    /// The effects of rules, as a preview: counts per rule, recomputed from live data at
    /// apply time.
    #[serde(default)]
    pub effects: Vec<EffectPreview>,
    pub orphans: Vec<Orphan>,
    /// Who keeps the effects of routing and patient-group rules current between applies on
    /// this target: `plugin` (careplane's plugin inside it) or `watch`.
    #[serde(default)]
    pub effects_by: crate::manifest::types::EffectsBy,
    /// What a reviewer must know that is no change (both keepers of effects active).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Plans are written with their configuration layer only.
fn configuration_only<S: serde::Serializer>(changes: &[Change], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(None)?;
    for c in changes.iter().filter(|c| c.layer() == Layer::Configuration) {
        seq.serialize_element(c)?;
    }
    seq.end()
}

impl Plan {
    pub fn new(
        project: &str,
        target: TargetInfo,
        capabilities: Vec<PlanCapability>,
        manifests_checksum: &str,
        prune: bool,
        changes: Vec<Change>,
        orphans: Vec<Orphan>,
    ) -> Self {
        let mut summary = Summary {
            orphaned: orphans.len(),
            ..Summary::default()
        };
        for c in changes.iter().filter(|c| c.layer() == Layer::Configuration) {
            match c.action {
                Action::Create => summary.create += 1,
                Action::Update => summary.update += 1,
                Action::Delete => summary.delete += 1,
                Action::Adopt => summary.adopt += 1,
                Action::Manual => summary.manual += 1,
                Action::NoOp => summary.no_op += 1,
            }
        }
        Plan {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            careplane_version: env!("CARGO_PKG_VERSION").into(),
            project: project.into(),
            target,
            capabilities,
            manifests_checksum: manifests_checksum.into(),
            manifests_commit: None,
            prune,
            route_existing: false,
            summary,
            effects: preview(&changes, &|_, _| Default::default()),
            changes,
            orphans,
            effects_by: Default::default(),
            warnings: Vec::new(),
        }
    }

    /// The same plan with only `changes` (and no orphans): the part of a plan a command
    /// applies on its own (`import`: adoptions, `watch`: routing).
    pub fn with_changes(&self, changes: Vec<Change>) -> Plan {
        let mut p = Plan::new(
            &self.project,
            self.target.clone(),
            self.capabilities.clone(),
            &self.manifests_checksum,
            self.prune,
            changes,
            Vec::new(),
        );
        p.manifests_commit = self.manifests_commit.clone();
        p.route_existing = self.route_existing;
        p.effects_by = self.effects_by;
        p.effects = preview(&p.changes, &|kind, rule| self.max_deviation(kind, rule));
        p
    }

    /// A rule's `maxDeviation`, as this plan's preview records it (default otherwise).
    pub fn max_deviation(&self, kind: ObjectKind, rule: &str) -> crate::model::rule::MaxDeviation {
        self.effects
            .iter()
            .find(|e| e.kind == kind && e.rule == rule)
            .map(|e| e.max_deviation)
            .unwrap_or_default()
    }

    /// The changes of the configuration layer.
    pub fn configuration(&self) -> impl Iterator<Item = &Change> {
        self.changes
            .iter()
            .filter(|c| c.layer() == Layer::Configuration)
    }

    /// The capability entry of a kind.
    pub fn capability(&self, kind: ObjectKind) -> Option<&PlanCapability> {
        self.capabilities.iter().find(|c| c.kind == kind)
    }

    /// Changes a person has to make or check by hand: manual actions, and objects the
    /// target only lets careplane verify (neither create nor update).
    pub fn checklist(&self) -> impl Iterator<Item = &Change> {
        self.changes.iter().filter(|c| {
            c.action == Action::Manual
                || (c.action == Action::NoOp
                    && self
                        .capability(c.target.kind)
                        .is_some_and(|k| !k.create && !k.update))
        })
    }

    /// Whether applying would write anything. Manual checklist items do not count: the
    /// target cannot show careplane whether a person has done them, so counting them
    /// would make every plan "changed" forever.
    pub fn has_changes(&self) -> bool {
        self.changes.iter().any(|c| {
            matches!(
                c.action,
                Action::Create | Action::Update | Action::Delete | Action::Adopt
            )
        }) || !self.effects.is_empty()
    }
}

/// Facts about one plan run, for the measurement line and the notes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub searches: usize,
    pub requests: u64,
    pub elapsed: std::time::Duration,
}

/// Test fixture: a plan of project `proj` on a file-store target named `local`.
#[cfg(test)]
impl Plan {
    pub(crate) fn local(changes: Vec<Change>) -> Plan {
        let target = TargetInfo {
            name: "local".into(),
            dialect: "fhir-r4".into(),
            endpoint: "store".into(),
        };
        Plan::new(
            "proj",
            target,
            Vec::new(),
            "sha",
            false,
            changes,
            Vec::new(),
        )
    }
}
