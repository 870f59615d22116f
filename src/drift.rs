//! Drift: does the live state still match the manifests? A report derived from a plan
//! (made without `--prune`), plus, where the target keeps versions, when each drifted
//! object changed and whether the server changed or the manifests did.
//!
//! Decides nothing new and prints nothing: the diff already normalised away what is not
//! drift (server-managed `meta`, list order where order means nothing, fields careplane
//! does not manage, server-added defaults such as member `display`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::dialect::Dialect;
use crate::fhir::Store;
use crate::model::Source;
use crate::plan::{Action, Layer, Plan, TargetInfo};
use crate::vocab::ObjectKind;

pub const FORMAT: &str = "careplane-drift";
pub const FORMAT_VERSION: u32 = 2;
/// How many versions of a drifted object to read to date the drift.
const HISTORY_DEPTH: u32 = 50;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DriftState {
    /// The object exists but some managed fields differ.
    Changed,
    /// Declared, but not on the target.
    Missing,
    /// Managed by careplane, no longer declared, still on the target (kept without
    /// `--prune`); informational, not counted as drift.
    Undeclared,
}

/// Who moved: the server, or the manifests (a change not applied yet).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DriftCause {
    /// A past version had the declared values; someone changed them on the server.
    ServerEdit,
    /// No version ever had the declared values: the manifests changed and were not applied.
    ManifestChange,
    /// The target keeps no history (or not far enough back) to tell.
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DriftField {
    pub field: String,
    /// What the manifests declare.
    pub expected: Option<Value>,
    /// What the target has.
    pub actual: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// How the manifests name ids in the values (`Practitioner/ab12` → `npi …`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Drifted {
    pub kind: ObjectKind,
    pub name: String,
    pub resource_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub state: DriftState,
    pub cause: DriftCause,
    pub fields: Vec<DriftField>,
    /// When the live object last changed (`meta.lastUpdated`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<String>,
    /// When the live values that differ first appeared (from `_history`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// The manifest position that declares the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declared_at: Option<Source>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DriftSummary {
    pub changed: usize,
    pub missing: usize,
    pub undeclared: usize,
    pub in_sync: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Effects of one rule that are not current on the target (ordinary clinical activity:
/// new patients, flipped consents, new open tasks). Counts only, never patient ids.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PendingEffect {
    /// The kind of rule: `patient-group`, `care-team-assignment` or `task-routing`.
    pub kind: ObjectKind,
    /// The rule's manifest name.
    pub rule: String,
    /// Open tasks the rule would route now.
    pub tasks: usize,
    /// Patients the rule would add now.
    pub patients_added: usize,
    /// Patients the rule would remove now.
    pub patients_removed: usize,
    /// Care teams whose lead a `lead: true` care-team assignment would hand over now.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lead_handovers: usize,
    /// The manifest position that declares the rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declared_at: Option<Source>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DriftReport {
    pub format: String,
    pub format_version: u32,
    pub careplane_version: String,
    pub project: String,
    pub target: TargetInfo,
    pub manifests_checksum: String,
    /// No configuration object changed or missing (pending effects do not count).
    pub in_sync: bool,
    pub summary: DriftSummary,
    /// Configuration drift: objects that changed on the target, are missing, or are kept
    /// although no longer declared.
    pub drifted: Vec<Drifted>,
    /// Effects of rules not current yet, per rule (`drift --include-effects` counts them
    /// as drift).
    pub pending_effects: Vec<PendingEffect>,
}

/// Date a changed object's drift from its versions (newest first).
fn date_drift(
    dialect: &dyn Dialect,
    project: &str,
    versions: &[Value],
    fields: &[DriftField],
    complete: bool,
) -> (DriftCause, Option<String>) {
    let projected = |v: &Value| dialect.identify(project, v).object().map(|o| o.fields);
    let matches = |v: &Value, pick: &dyn Fn(&DriftField) -> Option<Value>| {
        projected(v).is_some_and(|f| {
            fields
                .iter()
                .all(|d| f.get(&d.field).filter(|x| !x.is_null()).cloned() == pick(d))
        })
    };
    let mut since = None;
    for v in versions {
        if matches(v, &|d| d.actual.clone()) {
            since = v
                .pointer("/meta/lastUpdated")
                .and_then(Value::as_str)
                .map(str::to_owned);
            continue;
        }
        if matches(v, &|d| d.expected.clone()) {
            return (DriftCause::ServerEdit, since);
        }
        return (DriftCause::Unknown, since);
    }
    if complete {
        (DriftCause::ManifestChange, since)
    } else {
        (DriftCause::Unknown, since)
    }
}

pub async fn report(plan: &Plan, store: &Store, dialect: &dyn Dialect) -> DriftReport {
    let mut drifted = Vec::new();
    let mut summary = DriftSummary::default();
    let mut pending: Vec<PendingEffect> = Vec::new();
    for c in &plan.changes {
        if c.layer() == Layer::Effects && c.action.is_change() {
            let at = match pending
                .iter()
                .position(|p| p.kind == c.target.kind && p.rule == c.rule_name())
            {
                Some(i) => i,
                None => {
                    pending.push(PendingEffect {
                        kind: c.target.kind,
                        rule: c.rule_name().to_owned(),
                        tasks: 0,
                        patients_added: 0,
                        patients_removed: 0,
                        lead_handovers: 0,
                        declared_at: c.reason.source.clone(),
                    });
                    pending.len() - 1
                }
            };
            let p = &mut pending[at];
            match c.target.kind {
                ObjectKind::TaskRouting => p.tasks += c.width(),
                _ => {
                    for f in &c.fields {
                        let Some(m) = &f.membership else { continue };
                        if f.field == crate::plan::LEAD_FIELD
                            && matches!(
                                c.operation,
                                crate::vocab::Operation::CareTeamParticipant(_)
                            )
                        {
                            p.lead_handovers += m.added;
                        } else {
                            p.patients_added += m.added;
                            p.patients_removed += m.removed;
                        }
                    }
                }
            }
            continue;
        }
        let state = match c.action {
            Action::Update => DriftState::Changed,
            Action::Create => DriftState::Missing,
            Action::NoOp => {
                // a folded routing change stands for its tasks
                summary.in_sync += c.width();
                continue;
            }
            // Checklist items cannot be observed; deletes are not planned without --prune.
            Action::Manual | Action::Delete | Action::Adopt => continue,
        };
        let fields: Vec<DriftField> = c
            .fields
            .iter()
            // the plugin's rules ride in the plan for apply; what differs is shown already
            .filter(|f| {
                !(f.field == crate::dialect::plugin::RULES_FIELD
                    && matches!(c.operation, crate::vocab::Operation::Plugin { .. }))
            })
            .map(|f| DriftField {
                field: f.field.clone(),
                expected: f.after.clone(),
                actual: f.before.clone(),
                source: f.source.clone(),
                labels: f.labels.clone(),
            })
            .collect();
        let (mut cause, mut since) = (DriftCause::Unknown, None);
        // the plugin API keeps no history
        if state == DriftState::Changed
            && !matches!(c.operation, crate::vocab::Operation::Plugin { .. })
            && let Some(id) = &c.target.id
            && let Ok(Some(versions)) = store
                .history(&c.target.resource_type, id, HISTORY_DEPTH)
                .await
        {
            let complete = (versions.len() as u32) < HISTORY_DEPTH;
            (cause, since) = date_drift(dialect, &plan.project, &versions, &fields, complete);
        }
        match state {
            DriftState::Changed => summary.changed += 1,
            _ => summary.missing += 1,
        }
        drifted.push(Drifted {
            kind: c.target.kind,
            name: c.target.name.clone(),
            resource_type: c.target.resource_type.clone(),
            id: c.target.id.clone(),
            state,
            cause,
            fields,
            last_updated: c.precondition.last_updated.clone(),
            since,
            declared_at: c.reason.source.clone(),
        });
    }
    for o in &plan.orphans {
        summary.undeclared += 1;
        drifted.push(Drifted {
            kind: o.target.kind,
            name: o.target.name.clone(),
            resource_type: o.target.resource_type.clone(),
            id: o.target.id.clone(),
            state: DriftState::Undeclared,
            cause: DriftCause::ManifestChange,
            fields: Vec::new(),
            last_updated: None,
            since: None,
            declared_at: None,
        });
    }
    DriftReport {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        careplane_version: env!("CARGO_PKG_VERSION").into(),
        project: plan.project.clone(),
        target: plan.target.clone(),
        manifests_checksum: plan.manifests_checksum.clone(),
        in_sync: summary.changed == 0 && summary.missing == 0,
        summary,
        drifted,
        pending_effects: pending,
    }
}

/// JSON Schema (draft-07) of the drift report, committed at `schema/drift.schema.json`.
pub fn schema_text() -> String {
    let mut s = schemars::generate::SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<DriftReport>()
        .to_value();
    if let Some(o) = s.as_object_mut() {
        o.insert(
            "$id".into(),
            "https://careplane.dev/schema/drift.schema.json".into(),
        );
        o.insert(
            "title".into(),
            "careplane drift report (format_version 2)".into(),
        );
    }
    let mut t = serde_json::to_string_pretty(&s).expect("schema serializes");
    t.push('\n');
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task already routed as its `mode: enforce` rule says is in sync, and a plan folds
    /// such tasks into one change per rule: drift counts each task, not the folded change.
    #[test]
    fn tasks_in_sync_are_counted_one_by_one_when_folded() {
        let mut fold = crate::plan::fold::Fold::default();
        for i in 0..3 {
            fold.push(crate::plan::fold::routed_task(
                &format!("t{i}"),
                "labs",
                Action::NoOp,
                Vec::new(),
            ));
        }
        let changes = fold.finish();
        assert_eq!(changes.len(), 1);
        let plan = Plan::local(changes);
        let dir = tempfile::tempdir().unwrap();
        let store = Store::File(crate::fhir::file::FileStore::new(dir.path()));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let r = rt.block_on(report(&plan, &store, &crate::dialect::r4::R4::default()));
        assert_eq!(r.summary.in_sync, 3);
    }
}
