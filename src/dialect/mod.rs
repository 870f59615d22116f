//! Dialects: how the desired model maps onto one kind of target.
//!
//! A dialect is data plus a mapping, nothing more:
//! - a [`Capabilities`] table says, per object kind, which resource type holds it and
//!   whether the target lets careplane create, update or delete it (what it cannot write
//!   becomes a `manual` change, what it cannot delete is never deleted);
//! - the [`Dialect`] methods turn the desired model into [`DesiredObject`]s, recognise the
//!   objects careplane owns among live resources, read a live resource back into the same
//!   field map (`project`), and write a field map into a resource (`build`, `merge`).
//!
//! diff, plan and apply only speak field maps and capabilities, so adding a dialect
//! (Canvas, for instance) touches this folder and nothing downstream.

pub mod canvas;
pub mod r4;

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::fhir::Query;
use crate::manifest::Diagnostic;
use crate::model::{DesiredState, PractitionerRef, Source};

/// The kinds of object careplane manages on a target.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum ObjectKind {
    /// All declared roles, as one catalog.
    RoleCatalog,
    /// All declared care-team roles, as one catalog.
    CareTeamRoleCatalog,
    Team,
    RoleAssignment,
    /// One role, where the target keeps roles one by one (and may not let careplane write
    /// them: then they are checklist items).
    Role,
    /// One care-team role, likewise.
    CareTeamRole,
    /// A patient group whose members follow a rule.
    PatientGroup,
    /// The routing of one open task (team, owner, labels), set by routing rules.
    TaskRouting,
    /// A staff member in a care-team role on the care teams of selected patients.
    CareTeamAssignment,
}

impl ObjectKind {
    pub const ALL: [ObjectKind; 9] = [
        ObjectKind::RoleCatalog,
        ObjectKind::CareTeamRoleCatalog,
        ObjectKind::Team,
        ObjectKind::RoleAssignment,
        ObjectKind::Role,
        ObjectKind::CareTeamRole,
        ObjectKind::PatientGroup,
        ObjectKind::TaskRouting,
        ObjectKind::CareTeamAssignment,
    ];

    /// Apply order: catalogs, then teams, then assignments. Deletes run in reverse.
    pub fn level(self) -> u8 {
        match self {
            ObjectKind::RoleCatalog
            | ObjectKind::CareTeamRoleCatalog
            | ObjectKind::Role
            | ObjectKind::CareTeamRole => 0,
            ObjectKind::Team | ObjectKind::PatientGroup => 1,
            ObjectKind::RoleAssignment | ObjectKind::CareTeamAssignment => 2,
            ObjectKind::TaskRouting => 3,
        }
    }

    pub fn slug(self) -> &'static str {
        match self {
            ObjectKind::RoleCatalog => "role-catalog",
            ObjectKind::CareTeamRoleCatalog => "care-team-role-catalog",
            ObjectKind::Team => "team",
            ObjectKind::RoleAssignment => "role-assignment",
            ObjectKind::Role => "role",
            ObjectKind::CareTeamRole => "care-team-role",
            ObjectKind::PatientGroup => "patient-group",
            ObjectKind::TaskRouting => "task-routing",
            ObjectKind::CareTeamAssignment => "care-team-assignment",
        }
    }

    /// Fields whose values identify patients: plans carry counts and keyed pseudonyms
    /// of them, never the values.
    pub fn sensitive_fields(self) -> &'static [&'static str] {
        match self {
            ObjectKind::PatientGroup => &["members"],
            ObjectKind::CareTeamAssignment => &["patients"],
            _ => &[],
        }
    }

    pub fn from_slug(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.slug() == s)
    }

    /// How a person would say it.
    pub fn label(self) -> &'static str {
        match self {
            ObjectKind::RoleCatalog => "role catalog",
            ObjectKind::CareTeamRoleCatalog => "care-team-role catalog",
            ObjectKind::Team => "team",
            ObjectKind::RoleAssignment => "role assignment",
            ObjectKind::Role => "role",
            ObjectKind::CareTeamRole => "care-team role",
            ObjectKind::PatientGroup => "patient group",
            ObjectKind::TaskRouting => "task routing",
            ObjectKind::CareTeamAssignment => "care-team assignment",
        }
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.slug())
    }
}

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

/// What a target keeps besides the objects careplane manages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RecordCapability {
    /// A FHIR `Provenance` can be written: apply stores one per run that wrote something.
    pub provenance: bool,
}

/// The capability table of a dialect: per object kind, and for the records apply keeps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Capabilities(pub Vec<KindCapability>, pub RecordCapability);

impl Capabilities {
    /// Whether apply may store its record as a FHIR `Provenance` on this target.
    pub fn provenance(&self) -> bool {
        self.1.provenance
    }

    pub fn of(&self, kind: ObjectKind) -> Option<&KindCapability> {
        self.0.iter().find(|c| c.kind == kind)
    }
}

/// Managed fields of one object, by field name. Lists whose order means nothing are kept
/// sorted so that order never shows up as drift.
pub type Fields = BTreeMap<String, Value>;

/// One object as the manifests want it on this target.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredObject {
    pub kind: ObjectKind,
    /// Manifest name (`metadata.name`), or the catalog's name.
    pub name: String,
    /// A name a person recognises on the server (team name), used to spot same-named
    /// objects careplane does not own.
    pub natural_key: Option<String>,
    pub fields: Fields,
    /// Where each field was asked for.
    pub field_sources: BTreeMap<String, Source>,
    /// The manifest position that declares the object.
    pub source: Source,
    /// How the manifests name values that are ids on the server (`Practitioner/ab12` →
    /// `npi 1234567893`), so a reviewer can tell who a reference is.
    pub labels: BTreeMap<String, String>,
    /// Fields careplane only adds to (additive membership): the live values stay.
    pub additive: Vec<&'static str>,
    /// Refuse to apply when a sensitive list would lose more than this share.
    pub max_removal_share: Option<f64>,
    /// Compare only the fields declared here (a routing rule sets some of a task's fields
    /// and says nothing about the others).
    pub only_declared: bool,
    /// Why the object is wanted, when it is not simply declared (the routing rule that
    /// matched a task).
    pub explain: Option<String>,
}

/// Evaluated patient-group memberships: group name → `Patient/<id>` references.
pub type Memberships = BTreeMap<String, std::collections::BTreeSet<String>>;

/// A live object the dialect recognised, read back into managed fields.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedObject {
    pub kind: ObjectKind,
    /// The manifest name careplane recorded on it, where the target can hold one.
    pub name: Option<String>,
    /// The key the server shows (team name, `Practitioner/<id>`, role code).
    pub natural_key: Option<String>,
    pub resource_type: String,
    pub id: String,
    pub version_id: Option<String>,
    pub last_updated: Option<String>,
    pub fields: Fields,
    /// careplane may delete or retire it once no manifest declares it (it carries the
    /// project's ownership tag, or the target declares every object of the kind managed).
    pub managed: bool,
    /// Only `fields` can be seen on the target: compare just those.
    pub partial: bool,
    /// What on the target shows that the object exists, when it cannot be read directly
    /// ("role code MD is held by 3 staff members").
    pub evidence: Option<String>,
}

impl ObservedObject {
    /// How to call it in messages: the manifest name, else the server's key, else the id.
    pub fn display_name(&self) -> String {
        self.name
            .clone()
            .or_else(|| self.natural_key.clone())
            .unwrap_or_else(|| self.id.clone())
    }
}

/// A live resource careplane does not own but that a manifest object could be mistaken for.
#[derive(Clone, Debug, PartialEq)]
pub struct ForeignObject {
    pub kind: ObjectKind,
    pub natural_key: String,
    pub resource_type: String,
    pub id: String,
    pub version_id: Option<String>,
    pub last_updated: Option<String>,
    /// Its managed fields, for adoption (`--adopt`, `import`).
    pub fields: Fields,
}

/// What a dialect makes of one live resource.
#[derive(Clone, Debug, PartialEq)]
pub enum Recognised {
    /// An object of a kind careplane manages (owned or, on natural-key targets, matched).
    Object(ObservedObject),
    /// An object careplane does not own that a manifest object could be mistaken for.
    Foreign(Box<ForeignObject>),
    /// Anything else.
    Other,
}

impl Recognised {
    pub fn object(self) -> Option<ObservedObject> {
        match self {
            Recognised::Object(o) => Some(o),
            _ => None,
        }
    }
}

/// Where a patient's care team lives on a target.
#[derive(Clone, Debug)]
pub enum CareTeamLocation {
    /// Read by id (Canvas: the CareTeam id is the patient id).
    Read { resource_type: String, id: String },
    /// The first match of a search (careplane's own CareTeam for the patient).
    Search(Query),
}

/// One participant change on one patient's care team.
#[derive(Clone, Debug)]
pub struct ParticipantChange {
    /// `Practitioner/<id>`.
    pub practitioner: String,
    /// The role coding: `{system, code, display}`.
    pub role: Value,
    pub lead: bool,
    /// Add (or keep) the participant; false: take the role off them.
    pub add: bool,
    /// Also take the role off anyone else holding it (authoritative).
    pub replace_role: bool,
}

/// What a query's results are for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Staff directory, to resolve practitioner references.
    Staff,
    /// Resources that may hold managed objects.
    Objects,
    /// Both: staff records that also hold managed fields (Canvas keeps role assignments
    /// on the Practitioner).
    StaffAndObjects,
    /// Patient data for rules (patients, consents): reduced to facts, never kept whole.
    Patients,
}

/// Practitioners indexed by the ways manifests name them.
#[derive(Clone, Debug, Default)]
pub struct StaffIndex {
    pub by_npi: BTreeMap<String, Vec<String>>,
    pub by_email: BTreeMap<String, Vec<String>>,
    pub ids: std::collections::BTreeSet<String>,
    /// id → how a manifest would name them (`npi …`, else `email …`).
    pub names: BTreeMap<String, String>,
}

/// Why a practitioner reference did not resolve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unresolved {
    Missing,
    Ambiguous(usize),
}

impl StaffIndex {
    pub const NPI_SYSTEM: &'static str = "http://hl7.org/fhir/sid/us-npi";

    pub fn from_practitioners(resources: &[Value]) -> Self {
        let mut idx = StaffIndex::default();
        for r in resources {
            let Some(id) = r.get("id").and_then(Value::as_str) else {
                continue;
            };
            idx.ids.insert(id.to_owned());
            for ident in r
                .get("identifier")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if ident.get("system").and_then(Value::as_str) == Some(Self::NPI_SYSTEM)
                    && let Some(v) = ident.get("value").and_then(Value::as_str)
                {
                    idx.by_npi
                        .entry(v.to_owned())
                        .or_default()
                        .push(id.to_owned());
                    idx.names.insert(id.to_owned(), format!("npi {v}"));
                }
            }
            for t in r
                .get("telecom")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if t.get("system").and_then(Value::as_str) == Some("email")
                    && let Some(v) = t.get("value").and_then(Value::as_str)
                {
                    let ids = idx.by_email.entry(v.trim().to_lowercase()).or_default();
                    if !ids.iter().any(|x| x == id) {
                        ids.push(id.to_owned());
                    }
                    idx.names
                        .entry(id.to_owned())
                        .or_insert_with(|| format!("email {v}"));
                }
            }
        }
        idx
    }

    /// `Practitioner/<id>` for a manifest reference, or a diagnostic at its position.
    /// `place` says where staff were looked for ("on the target"), `add` how to add them.
    pub fn resolve_located(
        &self,
        r: &crate::model::Located<PractitionerRef>,
        place: &str,
        add: &str,
    ) -> Result<String, Diagnostic> {
        self.resolve(&r.value)
            .map(|id| format!("Practitioner/{id}"))
            .map_err(|why| {
                let (message, help) = match why {
                    Unresolved::Missing => (
                        format!("no Practitioner {place} has {}", r.value),
                        format!("careplane never creates staff: {add}, or fix the reference"),
                    ),
                    Unresolved::Ambiguous(n) => (
                        format!("{n} Practitioners {place} have {}", r.value),
                        "name this staff member by id or NPI instead".to_owned(),
                    ),
                };
                Diagnostic {
                    source: r.source.clone(),
                    message,
                    help: Some(help),
                }
            })
    }

    /// How to name `Practitioner/<id>` for a reviewer.
    pub fn describe(&self, reference: &str) -> Option<&String> {
        self.names.get(reference.strip_prefix("Practitioner/")?)
    }

    /// The Practitioner id a reference names.
    pub fn resolve(&self, r: &PractitionerRef) -> Result<String, Unresolved> {
        let found: Vec<String> = match r {
            PractitionerRef::Id(id) => self.ids.get(id).cloned().into_iter().collect(),
            PractitionerRef::Npi(n) => self.by_npi.get(n).cloned().unwrap_or_default(),
            PractitionerRef::Email(e) => self
                .by_email
                .get(&e.trim().to_lowercase())
                .cloned()
                .unwrap_or_default(),
        };
        match found.len() {
            0 => Err(Unresolved::Missing),
            1 => Ok(found[0].clone()),
            n => Err(Unresolved::Ambiguous(n)),
        }
    }
}

/// Helpers shared by the dialects' mappings.
pub mod util {
    use serde_json::{Value, json};

    /// A sorted, de-duplicated list of strings: lists whose order means nothing.
    pub fn sorted_strings(mut v: Vec<String>) -> Value {
        v.sort();
        v.dedup();
        Value::Array(v.into_iter().map(Value::String).collect())
    }

    /// The strings of a JSON list.
    pub fn str_list(v: Option<&Value>) -> Vec<String> {
        v.and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect()
    }

    /// `meta.<field>` as a string.
    pub fn meta(r: &Value, field: &str) -> Option<String> {
        r.get("meta")?.get(field)?.as_str().map(str::to_owned)
    }

    /// The entries of `r[key]` that careplane does not manage (`managed` says which it
    /// does), followed by `add`.
    pub fn replace_managed(
        r: &Value,
        key: &str,
        managed: impl Fn(&Value) -> bool,
        add: Vec<Value>,
    ) -> Vec<Value> {
        let mut out: Vec<Value> = r
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|x| !managed(x))
            .cloned()
            .collect();
        out.extend(add);
        out
    }

    /// A task's routing fields: `team` (the team extension's reference), `owner`, `labels`.
    pub fn task_fields(r: &Value, team_extension: &str) -> super::Fields {
        let team = r["extension"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["url"] == team_extension)
            .and_then(|e| e.pointer("/valueReference/reference"))
            .cloned()
            .unwrap_or(Value::Null);
        let labels = r["input"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| i.pointer("/type/text").and_then(Value::as_str) == Some("label"))
            .filter_map(|i| i["valueString"].as_str().map(str::to_owned))
            .collect();
        super::Fields::from([
            ("team".to_owned(), team),
            (
                "owner".to_owned(),
                r.pointer("/owner/reference")
                    .cloned()
                    .unwrap_or(Value::Null),
            ),
            ("labels".to_owned(), sorted_strings(labels)),
        ])
    }

    /// A task as an observed routing object.
    pub fn task_object(r: &Value, fields: super::Fields) -> super::ObservedObject {
        let id = r["id"].as_str().unwrap_or_default().to_owned();
        super::ObservedObject {
            kind: super::ObjectKind::TaskRouting,
            name: None,
            natural_key: Some(format!("Task/{id}")),
            resource_type: "Task".into(),
            id,
            version_id: meta(r, "versionId"),
            last_updated: meta(r, "lastUpdated")
                .or_else(|| r["lastModified"].as_str().map(str::to_owned)),
            fields,
            managed: false,
            partial: false,
            evidence: None,
        }
    }

    /// `live` with routing fields set; every other field is sent back as read.
    pub fn task_merge(
        live: &Value,
        fields: &std::collections::BTreeMap<String, Option<Value>>,
        team_extension: &str,
    ) -> Value {
        let mut r = live.clone();
        if let Some(team) = fields.get("team") {
            let mut exts: Vec<Value> = r["extension"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| e["url"] != team_extension)
                .cloned()
                .collect();
            if let Some(t) = team.as_ref().and_then(Value::as_str) {
                exts.push(json!({"url": team_extension, "valueReference": {"reference": t}}));
            }
            r["extension"] = Value::Array(exts);
        }
        if let Some(owner) = fields.get("owner") {
            match owner.as_ref().and_then(Value::as_str) {
                Some(o) => r["owner"] = json!({"reference": o}),
                None => {
                    r.as_object_mut().map(|m| m.remove("owner"));
                }
            }
        }
        if let Some(labels) = fields.get("labels") {
            let want = str_list(labels.as_ref());
            let have = str_list(Some(&task_fields(&r, team_extension)["labels"]));
            let mut input: Vec<Value> = r["input"].as_array().cloned().unwrap_or_default();
            for l in want.iter().filter(|l| !have.contains(l)) {
                input.push(json!({"type": {"text": "label"}, "valueString": l}));
            }
            r["input"] = Value::Array(input);
        }
        r
    }

    /// Participants after one change: the role taken off (`replace_role`) or the
    /// practitioner's entry for that role removed or replaced; every other entry as read.
    pub fn merge_participants(
        live: Option<&Value>,
        change: &super::ParticipantChange,
        lead_extension: &str,
    ) -> Vec<Value> {
        let code = |p: &Value| {
            p.pointer("/role/0/coding/0/code")
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let want_code = change.role["code"].as_str().map(str::to_owned);
        let mut out: Vec<Value> = live
            .and_then(|l| l["participant"].as_array())
            .into_iter()
            .flatten()
            .filter(|p| {
                let same_role = code(p) == want_code;
                let same_member = p.pointer("/member/reference").and_then(Value::as_str)
                    == Some(change.practitioner.as_str());
                // authoritative also moves the practitioner off another role they hold here
                // (Canvas allows one role per practitioner)
                !(same_role && (same_member || change.replace_role))
                    && !(same_member && change.replace_role && change.add)
            })
            .cloned()
            .collect();
        for p in &mut out {
            if let Some(m) = p.get_mut("member").and_then(Value::as_object_mut) {
                m.remove("display");
            }
        }
        if change.add {
            let mut p = json!({
                "role": [{"coding": [change.role.clone()]}],
                "member": {"reference": change.practitioner, "type": "Practitioner"}
            });
            if change.lead {
                p["extension"] = json!([{"url": lead_extension, "valueBoolean": true}]);
                // the old lead says so explicitly: an omitted lead flag keeps the lead (§3)
                for other in &mut out {
                    let exts = other
                        .as_object_mut()
                        .map(|o| o.entry("extension").or_insert_with(|| json!([])));
                    if let Some(exts) = exts.and_then(Value::as_array_mut) {
                        exts.retain(|e| e["url"] != lead_extension);
                        exts.push(json!({"url": lead_extension, "valueBoolean": false}));
                    }
                }
            }
            out.push(p);
        }
        out
    }

    /// A patient group's managed fields, read back.
    pub fn person_group_fields(r: &Value) -> super::Fields {
        let members = r["member"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| {
                m.pointer("/entity/reference")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .collect();
        super::Fields::from([
            (
                "name".to_owned(),
                r.get("name").cloned().unwrap_or(Value::Null),
            ),
            ("members".to_owned(), sorted_strings(members)),
        ])
    }

    /// The desired object for a patient group with its evaluated members.
    pub fn person_group_desired(
        g: &crate::model::PatientGroup,
        groups: &super::Memberships,
    ) -> super::DesiredObject {
        use crate::manifest::types::MembershipMode;
        let members: Vec<String> = groups
            .get(&g.name)
            .map(|m| m.iter().cloned().collect())
            .unwrap_or_default();
        super::DesiredObject {
            kind: super::ObjectKind::PatientGroup,
            name: g.name.clone(),
            natural_key: Some(g.display_name.clone()),
            fields: super::Fields::from([
                ("name".to_owned(), json!(g.display_name)),
                ("members".to_owned(), sorted_strings(members)),
            ]),
            field_sources: std::collections::BTreeMap::from([(
                "name".to_owned(),
                g.source.clone(),
            )]),
            source: g.source.clone(),
            labels: Default::default(),
            additive: if g.mode == MembershipMode::Additive {
                vec!["members"]
            } else {
                vec![]
            },
            max_removal_share: Some(g.max_removal_share),
            only_declared: false,
            explain: None,
        }
    }

    /// A Group's members set to `want` (references): entries still wanted are kept as
    /// they are (periods, extensions), missing ones are added with `extra` merged into
    /// their `entity`.
    pub fn merge_members(r: &Value, want: &[String], extra: &Value) -> Vec<Value> {
        let reference = |m: &Value| {
            m.pointer("/entity/reference")
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let mut members: Vec<Value> = r
            .get("member")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|m| reference(m).is_some_and(|x| want.contains(&x)))
            .cloned()
            .collect();
        for w in want {
            if !members.iter().any(|m| reference(m).as_deref() == Some(w)) {
                let mut entity = json!({"reference": w});
                if let (Some(e), Some(x)) = (entity.as_object_mut(), extra.as_object()) {
                    e.extend(x.clone());
                }
                members.push(json!({ "entity": entity }));
            }
        }
        members
    }
}

/// The mapping half of a dialect.
pub trait Dialect: Send + Sync {
    /// Short name shown in plans (`fhir-r4`, `canvas`).
    fn name(&self) -> &'static str;

    fn capabilities(&self) -> &Capabilities;

    /// The searches that observe everything this dialect needs (one paged search per
    /// resource type, never one read per object).
    fn queries(&self, project: &str) -> Vec<(Purpose, Query)>;

    /// The desired objects, with practitioner references resolved against live staff.
    /// Unresolvable references come back as diagnostics naming the manifest line.
    fn desired(
        &self,
        state: &DesiredState,
        staff: &StaffIndex,
        groups: &Memberships,
    ) -> Result<Vec<DesiredObject>, Vec<Diagnostic>>;

    /// The searches that read patient facts for rules (all patients; all consents and
    /// active care teams when a rule looks at them). Keep results small where the server
    /// allows it.
    fn patient_queries(&self, consents: bool, care_teams: bool) -> Vec<Query> {
        let mut q = vec![
            Query::new("Patient").param("_elements", "active,gender,birthDate,identifier,address"),
        ];
        if consents {
            q.push(Query::new("Consent").param("_elements", "patient,status,category"));
        }
        if care_teams {
            q.push(
                Query::new("CareTeam")
                    .param("status", "active")
                    .param("_elements", "status,subject,participant"),
            );
        }
        q
    }

    /// The search parameter for "changed after" on tasks (`_lastUpdated`; Canvas: `modified`).
    fn modified_since_param(&self) -> &'static str {
        "_lastUpdated"
    }

    /// Recognise a live resource.
    fn identify(&self, project: &str, resource: &Value) -> Recognised;

    /// A new resource holding `fields`, tagged as owned by `project`.
    fn build(&self, project: &str, kind: ObjectKind, name: &str, fields: &Fields) -> Value;

    /// `live` with the given managed fields set (a `None` value removes the field);
    /// everything careplane does not manage is kept exactly as it was.
    fn merge(
        &self,
        kind: ObjectKind,
        live: &Value,
        fields: &BTreeMap<String, Option<Value>>,
    ) -> Value;

    /// A search that finds the object if it already exists (for conditional create and
    /// for checking that a planned create is still valid).
    fn find_query(&self, project: &str, kind: ObjectKind, name: &str) -> Query;

    /// Whether a resource `find_query` returned is the object a create would make (for
    /// targets whose search cannot narrow it down, like Canvas teams by name).
    fn same_object(&self, _kind: ObjectKind, _fields: &Fields, _resource: &Value) -> bool {
        true
    }

    /// Whether creates may carry `If-None-Exist` (and so be retried safely).
    fn conditional_create(&self) -> bool {
        true
    }

    /// Objects only visible across many resources (a role code held by several staff
    /// members), read from everything the queries returned.
    fn aggregate(&self, _project: &str, _resources: &[Value]) -> Vec<ObservedObject> {
        Vec::new()
    }

    /// Whether careplane may write to a live resource of this kind for `project` (writes
    /// to anything else are refused at apply time).
    fn owns(&self, project: &str, kind: ObjectKind, resource: &Value) -> bool;

    /// Whether careplane writes only care teams of its own here (then only those count
    /// as holding an assignment).
    fn care_teams_are_own(&self) -> bool {
        false
    }

    /// Where `patient`'s (`Patient/<id>`) care team is.
    fn care_team_location(&self, project: &str, patient: &str) -> CareTeamLocation;

    /// The care team with one participant change made; every other participant and field
    /// as read. `live` is `None` when the patient has no care team yet.
    fn care_team_merge(
        &self,
        project: &str,
        patient: &str,
        live: Option<&Value>,
        change: &ParticipantChange,
    ) -> Value;

    /// `live` marked as owned by `project` under the manifest name `name` (adoption), or
    /// `None` where the target cannot record ownership.
    fn adopt(
        &self,
        _project: &str,
        _kind: ObjectKind,
        _name: &str,
        _live: &Value,
    ) -> Option<Value> {
        None
    }

    /// For targets without DELETE: the fields that retire an object that left the
    /// manifests (emptied and renamed), or `None` if it cannot be retired.
    fn retire(&self, _observed: &ObservedObject) -> Option<Fields> {
        None
    }
}
