//! What a target allows, per object kind: the data half of a dialect.

use serde::Serialize;
use serde_json::{Value, json};

use super::{Fields, ObjectKind, ObservedObject};

/// How live objects of a kind are matched with manifest objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Identity {
    /// By the manifest name careplane recorded on the resource (an identifier).
    ManifestName,
    /// By a key the server itself shows (a team's name, a practitioner's id), for targets
    /// where careplane cannot record anything of its own.
    NaturalKey,
}

/// What a target allows for one object kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KindCapability {
    pub kind: ObjectKind,
    pub resource_type: &'static str,
    pub create: bool,
    pub update: bool,
    pub delete: bool,
    pub identity: Identity,
    /// List fields whose values may belong to one object at a time on the server (a
    /// responsibility to one team): apply releases such values before another object of
    /// the same kind takes them, so moves and swaps work.
    pub exclusive: &'static [&'static str],
    /// Where a person makes the change the API cannot (shown on the manual checklist).
    pub manual_hint: Option<&'static str>,
}

/// How the target behaves as a whole (what every dialect says as data, not as code).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TargetCapability {
    /// A FHIR `Provenance` can be written: apply stores one per run that wrote something.
    pub provenance: bool,
    /// Creates may carry `If-None-Exist` (and so be retried safely); otherwise apply
    /// searches first ([`Capabilities::same_object`]).
    pub conditional_create: bool,
    /// The Task search parameter for "changed after" (`_lastUpdated`; Canvas `modified`).
    pub modified_since: &'static str,
    /// Whose care teams count as holding a care-team assignment.
    pub care_teams: CareTeams,
    /// How patient facts for rules are read.
    pub patient_reads: PatientReads,
    /// Fields a resource found by a create's search must share with the object before it
    /// counts as that object (targets whose search cannot narrow it down, like Canvas teams
    /// searched by type and matched by name).
    pub match_fields: &'static [(ObjectKind, &'static str)],
    /// Objects the target cannot delete but careplane may retire with `--prune`.
    pub retire: Vec<Retire>,
    /// References between kinds that the target checks when it accepts a write.
    pub references: &'static [Reference],
    /// A task can carry careplane's "routed by" mark (`routedBy`), so routing happens once
    /// per task. Without it, a task that already has a team or an owner counts as routed.
    pub task_marker: bool,
    /// The plain staff search (`Practitioner?active=true`) leaves out staff who cannot be
    /// scheduled (Canvas), so active staff missing from it are the non-schedulable ones.
    /// False: the target has no such notion.
    pub schedulable_staff_search: bool,
    /// Writes may be sent as FHIR `batch` Bundles (the target setting `batchSize` per
    /// Bundle) where the server's CapabilityStatement lists `batch`.
    pub batch: bool,
    /// Updates may be sent as JSON Patch (only what changed; a group's members joining
    /// or leaving instead of the whole group) where the server's CapabilityStatement lists
    /// `patch` for the resource type; elsewhere the whole resource is sent (PUT).
    pub patch: bool,
}

/// Whose care teams careplane reads and writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CareTeams {
    /// careplane keeps its own tagged CareTeam per patient: only those count.
    #[default]
    Own,
    /// One care team per patient, shared with everyone (Canvas): any participant counts.
    Shared,
}

/// How the searches that read patient facts are shaped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PatientReads {
    /// The server honours `_elements` (smaller answers).
    pub elements: bool,
    /// Active care teams are read by the dialect's own queries already (no extra search).
    pub care_teams_in_queries: bool,
    /// Patient, Consent and CareTeam searches take the "changed after" parameter
    /// (`modified_since`), so `watch` can read only the patients whose data changed.
    pub changed_since: bool,
}

/// Objects of kind `from` name objects of kind `to` in their list field `field`, by the
/// value of `to`'s field `key`, and the target refuses a write that names one it does not
/// have. When such an object can only be created by hand (a checklist item), reconcile
/// notes on each change that names it that the write waits for that person.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Reference {
    pub from: ObjectKind,
    pub field: &'static str,
    pub to: ObjectKind,
    pub key: &'static str,
}

/// How an object of one kind is retired where the target has no DELETE: emptied and
/// renamed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Retire {
    pub kind: ObjectKind,
    /// The field that gets `prefix` in front of its value.
    pub rename: &'static str,
    pub prefix: String,
    /// List fields emptied.
    pub clear: &'static [&'static str],
    /// What a person does so that careplane may retire such an object it does not manage
    /// (shown when one stands in the way), if anything.
    pub take_over: Option<&'static str>,
}

/// The capability table of a dialect: per object kind, and for the target as a whole.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Capabilities(pub Vec<KindCapability>, pub TargetCapability);

impl Capabilities {
    /// Whether apply may store its record as a FHIR `Provenance` on this target.
    pub fn provenance(&self) -> bool {
        self.1.provenance
    }

    pub fn of(&self, kind: ObjectKind) -> Option<&KindCapability> {
        self.0.iter().find(|c| c.kind == kind)
    }

    pub fn target(&self) -> &TargetCapability {
        &self.1
    }

    /// Whether the target runs careplane's rules as a plugin inside it: its table has the
    /// `plugin` kind (Canvas). Elsewhere `watch` / `reconcile --effects` keep the rules.
    pub fn runs_plugins(&self) -> bool {
        self.of(ObjectKind::Plugin).is_some()
    }

    /// Whether a resource a create's search found is the object the create would make.
    pub fn same_object(&self, kind: ObjectKind, fields: &Fields, resource: &Value) -> bool {
        self.1
            .match_fields
            .iter()
            .filter(|(k, _)| *k == kind)
            .all(|(_, f)| resource.get(*f) == fields.get(*f))
    }

    /// The fields that retire `o` (emptied and renamed), or `None` where its kind cannot
    /// be retired.
    pub fn retire(&self, o: &ObservedObject) -> Option<Fields> {
        let r = self.1.retire.iter().find(|r| r.kind == o.kind)?;
        let name = o
            .fields
            .get(r.rename)
            .and_then(Value::as_str)
            .unwrap_or_default();
        let mut fields =
            Fields::from([(r.rename.to_owned(), json!(format!("{}{name}", r.prefix)))]);
        for f in r.clear {
            fields.insert((*f).to_owned(), json!([]));
        }
        Some(fields)
    }
}
