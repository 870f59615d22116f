//! The generic FHIR R4 dialect.
//!
//! | object | resource | identity |
//! |---|---|---|
//! | role catalog | `CodeSystem` (one concept per role; domain, type, level, auth groups as concept properties) | identifier |
//! | care-team-role catalog | `CodeSystem` (one concept per care-team role; the clinical coding as properties) | identifier |
//! | team | `Group` type `practitioner`, `actual: true`, members, responsibilities as `characteristic` | identifier |
//! | role assignment | `PractitionerRole` (practitioner + role codes) | identifier |
//!
//! Everything careplane writes carries `meta.tag` `https://careplane.dev/project|<project>`
//! and an identifier `https://careplane.dev/id/<project>|<kind>/<name>`.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::util::{self, sorted_strings, str_list};
use super::{Dialect, Purpose};
use crate::fhir::Query;
use crate::manifest::Diagnostic;
use crate::model::{DesiredState, Located, PractitionerRef};
use crate::vocab::{
    Capabilities, CareTeams, DesiredObject, Fields, ForeignObject, Identity, KindCapability,
    ObjectKind, ObservedObject, PatientReads, Recognised, StaffIndex, TargetCapability,
};

pub use crate::vocab::ownership::TAG_SYSTEM;
/// The lead of a care team (R4 has no lead flag on participants).
pub const CARE_TEAM_LEAD_EXTENSION: &str =
    "https://careplane.dev/fhir/StructureDefinition/care-team-lead";
/// The team a task is routed to (R4 has no Group-valued owner).
pub const TASK_TEAM_EXTENSION: &str = "https://careplane.dev/fhir/StructureDefinition/task-team";
pub const RESPONSIBILITY_SYSTEM: &str = "https://careplane.dev/fhir/CodeSystem/team-responsibility";
pub const CHARACTERISTIC_SYSTEM: &str =
    "https://careplane.dev/fhir/CodeSystem/group-characteristic";

pub fn id_system(project: &str) -> String {
    format!("https://careplane.dev/id/{project}")
}

pub fn catalog_url(project: &str, kind: ObjectKind) -> String {
    let what = match kind {
        ObjectKind::CareTeamRoleCatalog => "care-team-roles",
        _ => "roles",
    };
    format!("https://careplane.dev/fhir/CodeSystem/{project}/{what}")
}

/// A plain configuration kind R4 stores as one resource of its own: each manifest field
/// is one top-level element, written and read back as is. A new plain kind is one row
/// (its capability row, search and encode/decode all follow from it).
pub struct PlainMapping {
    pub kind: ObjectKind,
    pub resource_type: &'static str,
    /// (manifest field, FHIR element).
    pub fields: &'static [(&'static str, &'static str)],
}

/// The plain configuration kinds R4 stores.
pub const PLAIN: &[PlainMapping] = &[];

fn plain(kind: ObjectKind) -> Option<&'static PlainMapping> {
    PLAIN.iter().find(|p| p.kind == kind)
}

impl PlainMapping {
    /// The managed fields of a live resource.
    fn decode(&self, r: &Value) -> Fields {
        self.fields
            .iter()
            .filter_map(|(field, element)| Some(((*field).to_owned(), r.get(*element)?.clone())))
            .collect()
    }

    /// `r` with the given fields set (`None`: removed).
    fn encode(&self, r: &mut Value, fields: &BTreeMap<String, Option<Value>>) {
        for (field, element) in self.fields {
            let Some(v) = fields.get(*field) else {
                continue;
            };
            if let Some(o) = r.as_object_mut() {
                match v {
                    Some(v) if !v.is_null() => {
                        o.insert((*element).to_owned(), v.clone());
                    }
                    _ => {
                        o.remove(*element);
                    }
                }
            }
        }
    }
}

pub struct R4 {
    caps: Capabilities,
}

impl Default for R4 {
    fn default() -> Self {
        let all = |kind, resource_type| KindCapability {
            kind,
            resource_type,
            create: true,
            update: true,
            delete: true,
            identity: Identity::ManifestName,
            exclusive: &[],
            manual_hint: None,
        };
        let plain_kinds = PLAIN.iter().map(|p| all(p.kind, p.resource_type));
        R4 {
            caps: Capabilities(
                [
                    all(ObjectKind::RoleCatalog, "CodeSystem"),
                    all(ObjectKind::CareTeamRoleCatalog, "CodeSystem"),
                    all(ObjectKind::Team, "Group"),
                    all(ObjectKind::RoleAssignment, "PractitionerRole"),
                    all(ObjectKind::PatientGroup, "Group"),
                    KindCapability {
                        kind: ObjectKind::CareTeamAssignment,
                        resource_type: "CareTeam",
                        create: false,
                        update: true,
                        delete: false,
                        identity: Identity::ManifestName,
                        exclusive: &[],
                        manual_hint: None,
                    },
                    KindCapability {
                        kind: ObjectKind::TaskRouting,
                        resource_type: "Task",
                        create: false,
                        update: true,
                        delete: false,
                        identity: Identity::NaturalKey,
                        exclusive: &[],
                        manual_hint: None,
                    },
                ]
                .into_iter()
                .chain(plain_kinds)
                .collect(),
                TargetCapability {
                    // any resource type can be stored: one Provenance per apply
                    provenance: true,
                    conditional_create: true,
                    modified_since: "_lastUpdated",
                    // careplane keeps its own tagged CareTeam per patient
                    care_teams: CareTeams::Own,
                    patient_reads: PatientReads {
                        elements: true,
                        care_teams_in_queries: false,
                        changed_since: true,
                    },
                    // find_query searches by careplane's identifier: a match is the object
                    match_fields: &[],
                    // DELETE is available: nothing is retired
                    retire: Vec::new(),
                    // careplane writes every object a reference names (catalogs first)
                    references: &[],
                    // a meta.tag and an identifier say which project routed a task
                    task_marker: true,
                    schedulable_staff_search: false,
                    // R4 defines batch Bundles and PATCH: used where the server's
                    // CapabilityStatement lists them
                    batch: true,
                    patch: true,
                },
            ),
        }
    }
}

use crate::vocab::ownership::tag;

fn identifier(project: &str, kind: ObjectKind, name: &str) -> Value {
    json!({"system": id_system(project), "value": format!("{}/{name}", kind.slug())})
}

use crate::vocab::object::{catalog_entry as concept_code, catalog_field as concept_field};

/// The concept properties careplane writes on role catalog concepts, with their types.
const ROLE_PROPERTIES: &[(&str, &str, &str)] = &[
    // (field in the normalised concept, property code, value[x])
    ("domain", "domain", "valueCode"),
    ("abbreviation", "abbreviation", "valueString"),
    ("privilegeLevel", "privilege-level", "valueInteger"),
    ("type", "role-type", "valueCode"),
    ("authGroups", "auth-group", "valueString"),
    ("system", "coding-system", "valueString"),
    ("code", "coding-code", "valueString"),
];

/// Concept JSON → normalised object (display + properties).
fn read_concept(c: &Value) -> Value {
    let mut out = serde_json::Map::new();
    if let Some(d) = c.get("display") {
        out.insert("display".into(), d.clone());
    }
    for p in c
        .get("property")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let code = p.get("code").and_then(Value::as_str).unwrap_or_default();
        let Some((field, _, vx)) = ROLE_PROPERTIES.iter().find(|(_, pc, _)| *pc == code) else {
            continue;
        };
        let Some(v) = p.get(*vx) else { continue };
        if *field == "authGroups" {
            let list = out.entry(*field).or_insert_with(|| json!([]));
            if let Some(a) = list.as_array_mut() {
                a.push(v.clone());
                a.sort_by(|x, y| x.as_str().cmp(&y.as_str()));
            }
        } else {
            out.insert((*field).into(), v.clone());
        }
    }
    Value::Object(out)
}

/// Normalised object → concept JSON.
fn write_concept(code: &str, v: &Value) -> Value {
    let mut props = Vec::new();
    for (field, pc, vx) in ROLE_PROPERTIES {
        match v.get(*field) {
            Some(Value::Array(items)) => {
                for item in items {
                    props.push(json!({"code": pc, *vx: item}));
                }
            }
            Some(x) if !x.is_null() => props.push(json!({"code": pc, *vx: x})),
            _ => {}
        }
    }
    let mut c = json!({"code": code, "display": v.get("display").cloned().unwrap_or(json!(code))});
    if !props.is_empty() {
        c["property"] = Value::Array(props);
    }
    c
}

fn property_definitions(kind: ObjectKind) -> Value {
    let defs: Vec<Value> = ROLE_PROPERTIES
        .iter()
        .filter(|(f, _, _)| match kind {
            ObjectKind::CareTeamRoleCatalog => matches!(*f, "system" | "code"),
            _ => !matches!(*f, "system" | "code"),
        })
        .map(|(_, pc, vx)| {
            let t = match *vx {
                "valueCode" => "code",
                "valueInteger" => "integer",
                _ => "string",
            };
            json!({"code": pc, "type": t})
        })
        .collect();
    Value::Array(defs)
}

fn is_responsibility(ch: &Value) -> bool {
    ch.pointer("/code/text").and_then(Value::as_str) == Some("responsibility")
        || ch
            .pointer("/code/coding")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|c| c.get("code").and_then(Value::as_str) == Some("responsibility"))
}

fn responsibility_value(ch: &Value) -> Option<String> {
    ch.pointer("/valueCodeableConcept/coding/0/code")
        .or_else(|| ch.pointer("/valueCodeableConcept/text"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn responsibility_json(code: &str) -> Value {
    json!({
        "code": {"coding": [{"system": CHARACTERISTIC_SYSTEM, "code": "responsibility"}], "text": "responsibility"},
        "valueCodeableConcept": {"coding": [{"system": RESPONSIBILITY_SYSTEM, "code": code}], "text": code},
        "exclude": false
    })
}

/// A task's routing fields, and `routedBy`: the project whose routing mark it carries.
fn task_fields(r: &Value) -> Fields {
    let mut f = util::task_fields(r, TASK_TEAM_EXTENSION);
    f.insert(
        "routedBy".into(),
        crate::vocab::ownership::routed_by(r).map_or(Value::Null, Value::String),
    );
    f
}

impl R4 {
    fn role_codes_system(project: &str) -> String {
        catalog_url(project, ObjectKind::RoleCatalog)
    }

    fn project_fields(&self, kind: ObjectKind, r: &Value, project: &str) -> Fields {
        let mut f = Fields::new();
        match kind {
            ObjectKind::PatientGroup => return util::person_group_fields(r),
            ObjectKind::TaskRouting => return task_fields(r),
            // written patient by patient (`care_team_merge`), never read back as one object
            ObjectKind::CareTeamAssignment => return f,
            ObjectKind::RoleCatalog | ObjectKind::CareTeamRoleCatalog => {
                for c in r
                    .get("concept")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(code) = c.get("code").and_then(Value::as_str) {
                        f.insert(concept_field(code), read_concept(c));
                    }
                }
            }
            ObjectKind::Team => {
                f.insert("name".into(), r.get("name").cloned().unwrap_or(Value::Null));
                let resp: Vec<String> = r
                    .get("characteristic")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter(|c| is_responsibility(c))
                    .filter_map(responsibility_value)
                    .collect();
                f.insert("responsibilities".into(), sorted_strings(resp));
                let members: Vec<String> = r
                    .get("member")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|m| m.pointer("/entity/reference").and_then(Value::as_str))
                    .map(str::to_owned)
                    .collect();
                f.insert("members".into(), sorted_strings(members));
            }
            ObjectKind::RoleAssignment => {
                f.insert(
                    "practitioner".into(),
                    r.pointer("/practitioner/reference")
                        .cloned()
                        .unwrap_or(Value::Null),
                );
                let system = Self::role_codes_system(project);
                let codes: Vec<String> = r
                    .get("code")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .flat_map(|cc| {
                        cc.get("coding")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                    })
                    .filter(|c| c.get("system").and_then(Value::as_str) == Some(system.as_str()))
                    .filter_map(|c| c.get("code").and_then(Value::as_str).map(str::to_owned))
                    .collect();
                f.insert("roles".into(), sorted_strings(codes));
                f.insert(
                    "active".into(),
                    r.get("active").cloned().unwrap_or(json!(true)),
                );
            }
            // plain kinds (`PLAIN`); roles and care-team roles are not in R4's table (R4
            // keeps them in catalogs)
            _ => {
                if let Some(p) = plain(kind) {
                    return p.decode(r);
                }
            }
        }
        f
    }
}

impl Dialect for R4 {
    fn name(&self) -> &'static str {
        "fhir-r4"
    }

    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn queries(&self, project: &str) -> Vec<(Purpose, Query)> {
        let owned = format!("{TAG_SYSTEM}|{project}");
        let mut queries = vec![
            (
                Purpose::Staff,
                Query::new("Practitioner").param("_elements", "identifier,telecom,active"),
            ),
            (
                Purpose::Objects,
                Query::new("CodeSystem").param("_tag", owned.clone()),
            ),
            (
                Purpose::Objects,
                Query::new("Group").param("type", "practitioner,person"),
            ),
            (
                Purpose::Objects,
                Query::new("PractitionerRole").param("_tag", owned.clone()),
            ),
        ];
        // one search per resource type the plain kinds use
        let mut types: Vec<&str> = PLAIN.iter().map(|p| p.resource_type).collect();
        types.sort_unstable();
        types.dedup();
        queries.extend(types.into_iter().map(|rt| {
            (
                Purpose::Objects,
                Query::new(rt).param("_tag", owned.clone()),
            )
        }));
        queries
    }

    fn desired(
        &self,
        state: &DesiredState,
        staff: &StaffIndex,
        groups: &super::Memberships,
    ) -> Result<Vec<DesiredObject>, Vec<Diagnostic>> {
        let mut out = Vec::new();
        let mut errors = Vec::new();
        let mut labels = BTreeMap::new();
        let mut resolve = |r: &Located<PractitionerRef>| match staff.resolve_located(
            r,
            "on the target",
            "add the staff member in the EHR first",
        ) {
            Ok(reference) => {
                labels.insert(reference.clone(), r.value.to_string());
                Some(reference)
            }
            Err(d) => {
                errors.push(d);
                None
            }
        };

        if let Some(first) = state.roles.first() {
            let mut d = DesiredObject {
                kind: ObjectKind::RoleCatalog,
                name: "roles".into(),
                natural_key: None,
                fields: Fields::new(),
                field_sources: BTreeMap::new(),
                source: first.source.clone(),
                labels: BTreeMap::new(),
                additive: vec![],
                max_removal_share: None,
                only_declared: false,
                operation: Default::default(),
            };
            for r in &state.roles {
                let mut c = serde_json::Map::new();
                c.insert("display".into(), json!(r.display));
                if let Some(a) = &r.abbreviation {
                    c.insert("abbreviation".into(), json!(a));
                }
                if !r.auth_groups.is_empty() {
                    c.insert("authGroups".into(), sorted_strings(r.auth_groups.clone()));
                }
                c.insert(
                    "domain".into(),
                    serde_json::to_value(r.domain).unwrap_or_default(),
                );
                if let Some(p) = r.privilege_level {
                    c.insert("privilegeLevel".into(), json!(p));
                }
                if let Some(t) = r.role_type {
                    c.insert("type".into(), serde_json::to_value(t).unwrap_or_default());
                }
                let field = concept_field(&r.code);
                d.fields.insert(field.clone(), Value::Object(c));
                d.field_sources.insert(field, r.source.clone());
            }
            out.push(d);
        }
        if let Some(first) = state.care_team_roles.first() {
            let mut d = DesiredObject {
                kind: ObjectKind::CareTeamRoleCatalog,
                name: "care-team-roles".into(),
                natural_key: None,
                fields: Fields::new(),
                field_sources: BTreeMap::new(),
                source: first.source.clone(),
                labels: BTreeMap::new(),
                additive: vec![],
                max_removal_share: None,
                only_declared: false,
                operation: Default::default(),
            };
            for r in &state.care_team_roles {
                let field = concept_field(&r.name);
                d.fields.insert(
                    field.clone(),
                    json!({"display": r.display, "system": r.system, "code": r.code}),
                );
                d.field_sources.insert(field, r.source.clone());
            }
            out.push(d);
        }
        for t in &state.teams {
            let members: Vec<String> = t.members.iter().filter_map(&mut resolve).collect();
            let mut d = DesiredObject {
                kind: ObjectKind::Team,
                name: t.name.clone(),
                natural_key: Some(t.display_name.clone()),
                fields: Fields::new(),
                field_sources: BTreeMap::new(),
                source: t.source.clone(),
                labels: BTreeMap::new(),
                additive: vec![],
                max_removal_share: None,
                only_declared: false,
                operation: Default::default(),
            };
            d.fields.insert("name".into(), json!(t.display_name));
            d.fields.insert(
                "responsibilities".into(),
                sorted_strings(t.responsibilities.iter().map(|r| r.value.code()).collect()),
            );
            d.fields.insert("members".into(), sorted_strings(members));
            if let Some(r) = t.responsibilities.first() {
                d.field_sources
                    .insert("responsibilities".into(), r.source.clone());
            }
            if let Some(m) = t.members.first() {
                d.field_sources.insert("members".into(), m.source.clone());
            }
            d.field_sources.insert("name".into(), t.source.clone());
            out.push(d);
        }
        for g in &state.patient_groups {
            out.push(util::person_group_desired(g, groups));
        }
        for a in &state.assignments {
            let Some(practitioner) = resolve(&a.practitioner) else {
                continue;
            };
            let codes: Vec<String> = a
                .roles
                .iter()
                .filter_map(|r| state.role(&r.value).map(|role| role.code.clone()))
                .collect();
            let mut d = DesiredObject {
                kind: ObjectKind::RoleAssignment,
                name: a.name.clone(),
                natural_key: None,
                fields: Fields::new(),
                field_sources: BTreeMap::new(),
                source: a.source.clone(),
                labels: BTreeMap::new(),
                additive: vec![],
                max_removal_share: None,
                only_declared: false,
                operation: Default::default(),
            };
            d.fields.insert("practitioner".into(), json!(practitioner));
            d.fields.insert("roles".into(), sorted_strings(codes));
            d.fields.insert("active".into(), json!(true));
            d.field_sources
                .insert("practitioner".into(), a.practitioner.source.clone());
            if let Some(r) = a.roles.first() {
                d.field_sources.insert("roles".into(), r.source.clone());
            }
            out.push(d);
        }
        for d in &mut out {
            let mentioned = |reference: &str| {
                d.fields.values().any(|v| match v {
                    Value::String(s) => s == reference,
                    Value::Array(a) => a.iter().any(|x| x.as_str() == Some(reference)),
                    _ => false,
                })
            };
            d.labels = labels
                .iter()
                .filter(|(k, _)| mentioned(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }

    fn owns(&self, project: &str, kind: ObjectKind, r: &Value) -> bool {
        match kind {
            // tasks belong to the clinic's work, not to careplane: routing only sets fields
            ObjectKind::TaskRouting => r["resourceType"] == "Task",
            _ => owned_by(project, r),
        }
    }

    fn identify(&self, project: &str, r: &Value) -> Recognised {
        let rt = r
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let id = r.get("id").and_then(Value::as_str).unwrap_or_default();
        if rt == "Task" {
            return Recognised::Object(util::task_object(r, task_fields(r)));
        }
        let system = id_system(project);
        let key = r
            .get("identifier")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|i| i.get("system").and_then(Value::as_str) == Some(system.as_str()))
            .find_map(|i| i.get("value").and_then(Value::as_str))
            .and_then(|v| v.split_once('/'))
            .and_then(|(k, n)| ObjectKind::from_slug(k).map(|k| (k, n.to_owned())));
        match key {
            Some((kind, name))
                if owned_by(project, r)
                    && self.caps.of(kind).is_some_and(|c| c.resource_type == rt) =>
            {
                Recognised::Object(ObservedObject {
                    kind,
                    natural_key: r.get("name").and_then(Value::as_str).map(str::to_owned),
                    name: Some(name),
                    managed: true,
                    partial: false,
                    evidence: None,
                    resource_type: rt.to_owned(),
                    id: id.to_owned(),
                    version_id: util::meta(r, "versionId"),
                    last_updated: util::meta(r, "lastUpdated"),
                    fields: self.project_fields(kind, r, project),
                })
            }
            _ if rt == "Group" && !owned_by(project, r) => {
                let kind = if r["type"] == "person" {
                    ObjectKind::PatientGroup
                } else {
                    ObjectKind::Team
                };
                match r.get("name").and_then(Value::as_str) {
                    Some(n) => Recognised::Foreign(Box::new(ForeignObject {
                        kind,
                        natural_key: n.to_owned(),
                        resource_type: rt.to_owned(),
                        id: id.to_owned(),
                        version_id: util::meta(r, "versionId"),
                        last_updated: util::meta(r, "lastUpdated"),
                        fields: self.project_fields(kind, r, project),
                    })),
                    None => Recognised::Other,
                }
            }
            _ => Recognised::Other,
        }
    }

    fn build(&self, project: &str, kind: ObjectKind, name: &str, fields: &Fields) -> Value {
        let mut r = match kind {
            // Not creatable (routing only updates existing tasks): never planned.
            ObjectKind::TaskRouting => json!({"resourceType": "Task"}),
            ObjectKind::CareTeamAssignment => json!({"resourceType": "CareTeam"}),
            ObjectKind::PatientGroup => {
                json!({"resourceType": "Group", "type": "person", "actual": true})
            }
            ObjectKind::RoleCatalog | ObjectKind::CareTeamRoleCatalog => {
                let (title, cs_name) = match kind {
                    ObjectKind::RoleCatalog => ("staff roles", "StaffRoles"),
                    _ => ("care-team roles", "CareTeamRoles"),
                };
                json!({
                    "resourceType": "CodeSystem",
                    "url": catalog_url(project, kind),
                    "name": cs_name,
                    "title": format!("{project} {title}"),
                    "status": "active",
                    "content": "complete",
                    "caseSensitive": true,
                    "property": property_definitions(kind),
                })
            }
            ObjectKind::Team => {
                json!({"resourceType": "Group", "type": "practitioner", "actual": true})
            }
            ObjectKind::RoleAssignment => json!({"resourceType": "PractitionerRole"}),
            // plain kinds; roles and care-team roles are not in R4's table: never planned
            _ => json!({"resourceType": plain(kind).map_or("Basic", |p| p.resource_type)}),
        };
        r["meta"] = json!({"tag": [tag(project)]});
        r["identifier"] = json!([identifier(project, kind, name)]);
        let set: BTreeMap<String, Option<Value>> = fields
            .iter()
            .map(|(k, v)| (k.clone(), Some(v.clone())))
            .collect();
        self.merge_with_project(kind, r, &set, project)
    }

    fn merge(
        &self,
        kind: ObjectKind,
        live: &Value,
        fields: &BTreeMap<String, Option<Value>>,
    ) -> Value {
        self.merge_owned(kind, live.clone(), fields)
    }

    fn merge_owned(
        &self,
        kind: ObjectKind,
        live: Value,
        fields: &BTreeMap<String, Option<Value>>,
    ) -> Value {
        // The project is recorded in the resource's own tag.
        let project = crate::vocab::ownership::tagged_project(&live).unwrap_or_default();
        self.merge_with_project(kind, live, fields, &project)
    }

    fn aggregate(&self, _: &str, _: &[Value]) -> Vec<ObservedObject> {
        Vec::new() // every object is one resource
    }

    fn aggregates(&self, _: &str) -> bool {
        false
    }

    fn care_team_location(&self, project: &str, patient: &str) -> super::CareTeamLocation {
        // careplane keeps its own CareTeam per patient (tagged, identified by the patient)
        let pid = patient.strip_prefix("Patient/").unwrap_or(patient);
        super::CareTeamLocation::Search(
            Query::new("CareTeam")
                .param(
                    "identifier",
                    format!("{}|care-team/{pid}", id_system(project)),
                )
                .param("_tag", format!("{TAG_SYSTEM}|{project}")),
        )
    }

    fn care_team_merge(
        &self,
        project: &str,
        patient: &str,
        live: Option<&Value>,
        change: &super::ParticipantChange,
    ) -> Value {
        let pid = patient.strip_prefix("Patient/").unwrap_or(patient);
        let mut r = match live {
            Some(l) => l.clone(),
            None => json!({
                "resourceType": "CareTeam",
                "status": "active",
                "subject": {"reference": patient},
                "meta": {"tag": [tag(project)]},
                "identifier": [{"system": id_system(project), "value": format!("care-team/{pid}")}]
            }),
        };
        let participants = util::merge_participants(live, change, CARE_TEAM_LEAD_EXTENSION);
        set_or_remove(&mut r, "participant", participants);
        r
    }

    fn adopt(&self, project: &str, kind: ObjectKind, name: &str, live: &Value) -> Option<Value> {
        // Another project's tag: not ours to take.
        let tagged_elsewhere = live
            .pointer("/meta/tag")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|t| t.get("system").and_then(Value::as_str) == Some(TAG_SYSTEM));
        if tagged_elsewhere {
            return None;
        }
        let mut r = live.clone();
        let meta = r
            .as_object_mut()?
            .entry("meta")
            .or_insert_with(|| json!({}));
        let tags = meta
            .as_object_mut()?
            .entry("tag")
            .or_insert_with(|| json!([]));
        tags.as_array_mut()?.push(tag(project));
        let ids = r
            .as_object_mut()?
            .entry("identifier")
            .or_insert_with(|| json!([]));
        ids.as_array_mut()?.push(identifier(project, kind, name));
        Some(r)
    }

    fn find_query(&self, project: &str, kind: ObjectKind, name: &str) -> Query {
        let rt = self
            .caps
            .of(kind)
            .map(|c| c.resource_type)
            .unwrap_or("Basic");
        Query::new(rt)
            .param(
                "identifier",
                format!("{}|{}/{name}", id_system(project), kind.slug()),
            )
            .param("_tag", format!("{TAG_SYSTEM}|{project}"))
    }
}

impl R4 {
    fn merge_with_project(
        &self,
        kind: ObjectKind,
        live: Value,
        fields: &BTreeMap<String, Option<Value>>,
        project: &str,
    ) -> Value {
        let mut r = live;
        match kind {
            ObjectKind::TaskRouting => {
                let mut r = util::task_merge(&r, fields, TASK_TEAM_EXTENSION);
                if let Some(Some(by)) = fields.get("routedBy")
                    && let Some(by) = by.as_str()
                {
                    crate::vocab::ownership::mark_routed(&mut r, by);
                }
                return r;
            }
            ObjectKind::CareTeamAssignment => return r,
            ObjectKind::PatientGroup => {
                if let Some(v) = fields.get("name") {
                    r["name"] = v.clone().unwrap_or(Value::Null);
                }
                if let Some(v) = fields.get("members") {
                    let members = util::take_members(&mut r, &str_list(v.as_ref()), &json!({}));
                    set_or_remove(&mut r, "member", members);
                }
            }
            ObjectKind::RoleCatalog | ObjectKind::CareTeamRoleCatalog => {
                let mut concepts: BTreeMap<String, Value> = r
                    .get("concept")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|c| {
                        c.get("code")
                            .and_then(Value::as_str)
                            .map(|k| (k.to_owned(), c.clone()))
                    })
                    .collect();
                for (field, value) in fields {
                    let Some(code) = concept_code(field) else {
                        continue;
                    };
                    match value {
                        Some(v) => {
                            let mut c = write_concept(code, v);
                            // keep anything careplane does not manage on the concept
                            if let Some(old) = concepts.get(code).and_then(Value::as_object) {
                                for (k, v) in old {
                                    if !matches!(k.as_str(), "code" | "display" | "property") {
                                        c[k.as_str()] = v.clone();
                                    }
                                }
                            }
                            concepts.insert(code.to_owned(), c);
                        }
                        None => {
                            concepts.remove(code);
                        }
                    }
                }
                r["concept"] = Value::Array(concepts.into_values().collect());
                r["count"] = json!(r["concept"].as_array().map_or(0, Vec::len));
            }
            ObjectKind::Team => {
                if let Some(v) = fields.get("name") {
                    r["name"] = v.clone().unwrap_or(Value::Null);
                }
                if let Some(v) = fields.get("responsibilities") {
                    let add = str_list(v.as_ref())
                        .iter()
                        .map(|c| responsibility_json(c))
                        .collect();
                    let chars = util::replace_managed(&r, "characteristic", is_responsibility, add);
                    set_or_remove(&mut r, "characteristic", chars);
                }
                if let Some(v) = fields.get("members") {
                    let members = util::take_members(&mut r, &str_list(v.as_ref()), &json!({}));
                    set_or_remove(&mut r, "member", members);
                }
            }
            ObjectKind::RoleAssignment => {
                if let Some(v) = fields.get("practitioner") {
                    match v.as_ref().and_then(Value::as_str) {
                        Some(p) => r["practitioner"] = json!({"reference": p}),
                        None => {
                            r.as_object_mut().map(|o| o.remove("practitioner"));
                        }
                    }
                }
                if let Some(v) = fields.get("active") {
                    r["active"] = v.clone().unwrap_or(json!(true));
                }
                if let Some(v) = fields.get("roles") {
                    let system = Self::role_codes_system(project);
                    let mut codes: Vec<Value> = r
                        .get("code")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter(|cc| {
                            !cc.get("coding")
                                .and_then(Value::as_array)
                                .into_iter()
                                .flatten()
                                .any(|c| {
                                    c.get("system").and_then(Value::as_str) == Some(system.as_str())
                                })
                        })
                        .cloned()
                        .collect();
                    codes.extend(
                        str_list(v.as_ref())
                            .into_iter()
                            .map(|c| json!({"coding": [{"system": system, "code": c}]})),
                    );
                    set_or_remove(&mut r, "code", codes);
                }
            }
            // plain kinds; roles and care-team roles are not in R4's table (catalogs)
            _ => {
                if let Some(p) = plain(kind) {
                    p.encode(&mut r, fields);
                }
            }
        }
        r
    }
}

/// Whether `r` carries `project`'s ownership tag.
fn owned_by(project: &str, r: &Value) -> bool {
    r.pointer("/meta/tag")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|t| {
            t.get("system").and_then(Value::as_str) == Some(TAG_SYSTEM)
                && t.get("code").and_then(Value::as_str) == Some(project)
        })
}

fn set_or_remove(r: &mut Value, key: &str, list: Vec<Value>) {
    if let Some(o) = r.as_object_mut() {
        if list.is_empty() {
            o.remove(key);
        } else {
            o.insert(key.to_owned(), Value::Array(list));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_then_project_round_trips_every_kind() {
        let d = R4::default();
        let cases: Vec<(ObjectKind, Fields)> = vec![
            (
                ObjectKind::Team,
                Fields::from([
                    ("name".into(), json!("Care Coordinators")),
                    (
                        "responsibilities".into(),
                        json!(["COORDINATE_REFERRALS_FOR_PATIENT", "REVIEW_COVERAGES"]),
                    ),
                    (
                        "members".into(),
                        json!(["Practitioner/a", "Practitioner/b"]),
                    ),
                ]),
            ),
            (
                ObjectKind::RoleAssignment,
                Fields::from([
                    ("practitioner".into(), json!("Practitioner/a")),
                    ("roles".into(), json!(["MD", "RN"])),
                    ("active".into(), json!(true)),
                ]),
            ),
            (
                ObjectKind::RoleCatalog,
                Fields::from([(
                    "concept[MD]".into(),
                    json!({"display":"Physician","domain":"clinical","authGroups":["a","b"],"privilegeLevel":9,"type":"provider"}),
                )]),
            ),
            (
                ObjectKind::CareTeamRoleCatalog,
                Fields::from([(
                    "concept[pcp]".into(),
                    json!({"display":"Primary care provider","system":"http://snomed.info/sct","code":"453231000124104"}),
                )]),
            ),
        ];
        for (kind, fields) in cases {
            let r = d.build("p", kind, "x", &fields);
            let seen = d.identify("p", &r).object().expect("owned");
            assert_eq!(seen.kind, kind);
            assert_eq!(seen.name.as_deref(), Some("x"));
            assert_eq!(seen.fields, fields, "{kind}");
        }
    }

    #[test]
    fn merge_keeps_what_careplane_does_not_manage() {
        let d = R4::default();
        let live = json!({"resourceType":"Group","id":"g","type":"practitioner","actual":true,"name":"A",
            "meta":{"tag":[{"system":TAG_SYSTEM,"code":"p"}]},
            "extension":[{"url":"urn:x","valueString":"keep"}],
            "characteristic":[{"code":{"text":"shift"},"valueBoolean":true,"exclude":false},
                              responsibility_json("REVIEW_COVERAGES")],
            "member":[{"entity":{"reference":"Practitioner/a"},"period":{"start":"2020-01-01"}},
                      {"entity":{"reference":"Practitioner/b"}}]});
        let changes = BTreeMap::from([
            (
                "members".to_owned(),
                Some(json!(["Practitioner/a", "Practitioner/c"])),
            ),
            ("responsibilities".to_owned(), Some(json!([]))),
        ]);
        let out = d.merge(ObjectKind::Team, &live, &changes);
        assert_eq!(out["extension"], live["extension"]);
        assert_eq!(out["characteristic"], json!([live["characteristic"][0]]));
        assert_eq!(out["member"][0], live["member"][0], "member period kept");
        assert_eq!(out["member"][1]["entity"]["reference"], "Practitioner/c");
        assert_eq!(out["member"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn unowned_groups_are_foreign_not_owned() {
        let d = R4::default();
        let g = json!({"resourceType":"Group","id":"g","type":"practitioner","actual":true,"name":"Front Desk",
            "identifier":[{"system":id_system("p"),"value":"team/front-desk"}]});
        match d.identify("p", &g) {
            Recognised::Foreign(f) => assert_eq!(f.natural_key, "Front Desk"),
            other => panic!("expected foreign, got {other:?}"),
        }
    }
}
