//! The Canvas Medical dialect (Canvas's FHIR API, "Fumage").
//!
//! What Canvas lets an API client do, and so what careplane plans (see the capability
//! table in [`Canvas::default`] and `canvas-api.md` §0):
//!
//! | object | where | careplane |
//! |---|---|---|
//! | team | `Group` type `practitioner`: name, members, responsibilities as `characteristic` with `code.text = "responsibility"` | create, update; no DELETE in Canvas, so `--prune` *retires* (empties and renames with a prefix) |
//! | role assignment | the `roles` extension on `Practitioner` | update (read-modify-write that keeps every other field and extension) |
//! | role, care-team role | Settings only | manual checklist; verified where live data shows the code in use |
//!
//! Canvas Groups have no identifier and careplane cannot tag them, so teams are matched by
//! name and staff by id. Canvas has no ETag: writes carry `If-Unmodified-Since` with the
//! `meta.lastUpdated` seen when planning. One responsibility may belong to one team only:
//! the capability table marks `responsibilities` exclusive, so apply releases a
//! responsibility before another team takes it.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::util::{self, sorted_strings, str_list};
use super::{Dialect, Purpose};
use crate::fhir::Query;
use crate::manifest::Diagnostic;
use crate::model::{DesiredState, Located, PractitionerRef};
use crate::vocab::{
    Capabilities, CareTeams, DesiredObject, Fields, Identity, KindCapability, ObjectKind,
    ObservedObject, PatientReads, Recognised, Reference, Retire, StaffIndex, TargetCapability,
};

pub const ROLES_EXTENSION: &str = "http://schemas.canvasmedical.com/fhir/extensions/roles";
pub const ROLES_SYSTEM: &str = "http://schemas.canvasmedical.com/fhir/roles";
pub const DEFAULT_RETIRE_PREFIX: &str = "zz-retired ";
/// canvas-api.md §3: the care team's lead.
pub const CARETEAM_LEAD_EXTENSION: &str =
    "http://schemas.canvasmedical.com/fhir/extensions/careteam-lead";
/// canvas-api.md §4: the team a task is assigned to.
pub const TASK_GROUP_EXTENSION: &str =
    "http://schemas.canvasmedical.com/fhir/extensions/task-group";
/// canvas-api.md §4: read-only.
const TASK_PERMALINK_EXTENSION: &str =
    "http://schemas.canvasmedical.com/fhir/extensions/task-permalink";

pub struct Canvas {
    caps: Capabilities,
    /// Prepended to the name of a team that `--prune` retires.
    pub retire_prefix: String,
    /// Whether every practitioner Group in the instance is managed by the manifests (so
    /// undeclared teams are retired with `--prune`). Off by default: careplane then only
    /// touches teams the manifests name.
    pub manage_all_teams: bool,
}

impl Default for Canvas {
    fn default() -> Self {
        Canvas::new(DEFAULT_RETIRE_PREFIX, false)
    }
}

impl Canvas {
    pub fn new(retire_prefix: &str, manage_all_teams: bool) -> Self {
        let cap = |kind, resource_type, create, update, identity, exclusive, manual_hint| {
            KindCapability {
                kind,
                resource_type,
                create,
                update,
                delete: false, // canvas-api.md §0: no delete interaction for any resource
                identity,
                exclusive,
                manual_hint,
            }
        };
        Canvas {
            caps: Capabilities(
                vec![
                    cap(
                        ObjectKind::Role,
                        "Settings/Role",
                        false,
                        false,
                        Identity::NaturalKey,
                        &[],
                        Some("Settings → Practice: Roles"),
                    ),
                    cap(
                        ObjectKind::CareTeamRole,
                        "Settings/CareTeamRole",
                        false,
                        false,
                        Identity::NaturalKey,
                        &[],
                        Some("Settings → Care Team Roles"),
                    ),
                    cap(
                        ObjectKind::Team,
                        "Group",
                        true,
                        true,
                        Identity::NaturalKey,
                        &["responsibilities"],
                        None,
                    ),
                    // canvas-api.md §3: care teams are upserted patient by patient
                    cap(
                        ObjectKind::CareTeamAssignment,
                        "CareTeam",
                        false,
                        true,
                        Identity::ManifestName,
                        &[],
                        None,
                    ),
                    // canvas-api.md §4: routing updates open tasks; tasks are never created or deleted
                    cap(
                        ObjectKind::TaskRouting,
                        "Task",
                        false,
                        true,
                        Identity::NaturalKey,
                        &[],
                        None,
                    ),
                    // canvas-api.md §2: patient groups are Groups of type person (name + members)
                    cap(
                        ObjectKind::PatientGroup,
                        "Group",
                        true,
                        true,
                        Identity::NaturalKey,
                        &[],
                        None,
                    ),
                    cap(
                        ObjectKind::RoleAssignment,
                        "Practitioner",
                        false,
                        true,
                        Identity::NaturalKey,
                        &[],
                        Some("Settings → Staff"),
                    ),
                    // the rules as a plugin: the instance's plugin API (canvas_cli
                    // install / update / list), not FHIR; matched by the plugin's name.
                    // Uninstalling is left to a person (`canvas uninstall`).
                    cap(
                        ObjectKind::Plugin,
                        "Plugin",
                        true,
                        true,
                        Identity::NaturalKey,
                        &[],
                        Some(
                            "Canvas: Settings → Plugins, or `canvas disable` / `canvas uninstall`",
                        ),
                    ),
                ],
                TargetCapability {
                    // canvas-api.md §0: no Provenance write is documented (the report
                    // file is the record)
                    provenance: false,
                    // If-None-Exist is not documented for Canvas: apply searches first
                    conditional_create: false,
                    // canvas-api.md §9: no batch Bundles and no PATCH are documented: one
                    // request per change, a read before each update (the PUT carries the
                    // whole resource; a Task PUT clears what it omits)
                    batch: false,
                    patch: false,
                    // canvas-api.md §4: Task search by `modified` with date prefixes
                    modified_since: "modified",
                    // canvas-api.md §3: one CareTeam per patient, shared by everyone
                    care_teams: CareTeams::Shared,
                    patient_reads: PatientReads {
                        // §6: `_elements` is not documented for Canvas
                        elements: false,
                        // care teams are read by `queries` (to verify care-team roles)
                        care_teams_in_queries: true,
                        // §6: only Task searches take `modified`
                        changed_since: false,
                    },
                    // teams are searched by type and matched by name
                    match_fields: &[(ObjectKind::Team, "name")],
                    // no DELETE: a team that left the manifests is emptied and renamed
                    retire: vec![Retire {
                        kind: ObjectKind::Team,
                        rename: "name",
                        prefix: retire_prefix.to_owned(),
                        clear: &["responsibilities", "members"],
                        // a team careplane does not manage is retired once every team is
                        take_over: Some("set manageAllTeams and plan with --prune to retire it"),
                    }],
                    // a role assignment names roles by code; roles are made by hand
                    references: &[Reference {
                        from: ObjectKind::RoleAssignment,
                        field: "roles",
                        to: ObjectKind::Role,
                        key: "code",
                    }],
                    // canvas-api.md §4: a Task has no identifier, `meta` is not documented
                    // as writable, and labels and comments are visible to staff (comments
                    // cannot be removed): no mark careplane could leave unseen. A task with
                    // a team or an owner counts as routed.
                    task_marker: false,
                    schedulable_staff_search: true,
                },
            ),
            retire_prefix: retire_prefix.to_owned(),
            manage_all_teams,
        }
    }
}

fn is_responsibility(ch: &Value) -> bool {
    ch.pointer("/code/text").and_then(Value::as_str) == Some("responsibility")
}

/// canvas-api.md §2: responsibilities are plain text, no system.
fn responsibility_json(code: &str) -> Value {
    json!({"code": {"text": "responsibility"}, "valueCodeableConcept": {"text": code}, "exclude": false})
}

fn role_codes(practitioner: &Value) -> Vec<String> {
    practitioner
        .get("extension")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|e| e.get("url").and_then(Value::as_str) == Some(ROLES_EXTENSION))
        .flat_map(|e| {
            e.get("extension")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .filter_map(|c| c.pointer("/valueCoding/code").and_then(Value::as_str))
        .map(str::to_owned)
        .collect()
}

fn last_updated(r: &Value) -> Option<String> {
    util::meta(r, "lastUpdated").or_else(|| {
        r.get("lastModified")
            .and_then(Value::as_str)
            .map(str::to_owned)
    })
}

/// Fields Canvas computes itself and refuses or ignores on update (§2: `quantity` and
/// `member.entity.display` are read-only; `meta` is not part of Canvas's documented API).
fn strip_read_only(r: &mut Value) {
    if let Some(o) = r.as_object_mut() {
        o.remove("meta");
        o.remove("quantity");
    }
    if let Some(members) = r.get_mut("member").and_then(Value::as_array_mut) {
        for m in members {
            if let Some(e) = m.get_mut("entity").and_then(Value::as_object_mut) {
                e.remove("display");
            }
        }
    }
}

impl Canvas {
    fn team_fields(r: &Value) -> Fields {
        let mut f = Fields::new();
        f.insert("name".into(), r.get("name").cloned().unwrap_or(Value::Null));
        let resp = r
            .get("characteristic")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|c| is_responsibility(c))
            .filter_map(|c| {
                c.pointer("/valueCodeableConcept/text")
                    .and_then(Value::as_str)
            })
            .map(str::to_owned)
            .collect();
        f.insert("responsibilities".into(), sorted_strings(resp));
        let members = r
            .get("member")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|m| m.pointer("/entity/reference").and_then(Value::as_str))
            .map(str::to_owned)
            .collect();
        f.insert("members".into(), sorted_strings(members));
        f
    }
}

impl Dialect for Canvas {
    fn name(&self) -> &'static str {
        "canvas"
    }

    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn queries(&self, _project: &str) -> Vec<(Purpose, Query)> {
        // §5: Practitioner search hides inactive and non-schedulable staff unless asked.
        let staff = |active: &str| {
            Query::new("Practitioner")
                .param("include-non-schedulable-practitioners", "true")
                .param("active", active)
        };
        vec![
            (Purpose::StaffAndObjects, staff("true")),
            (Purpose::StaffAndObjects, staff("false")),
            (
                Purpose::Objects,
                Query::new("Group").param("type", "practitioner"),
            ),
            (
                Purpose::Objects,
                Query::new("Group").param("type", "person"),
            ),
            // Only to verify care-team roles by their use; nothing of it is printed but counts.
            (
                Purpose::Objects,
                Query::new("CareTeam").param("status", "active"),
            ),
        ]
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
        let mut resolve = |r: &Located<PractitionerRef>| {
            let place = "in the Canvas instance";
            let add =
                "add the staff member in Canvas first (inactive and non-schedulable staff count)";
            match staff.resolve_located(r, place, add) {
                Ok(reference) => {
                    labels.insert(reference.clone(), r.value.to_string());
                    Some(reference)
                }
                Err(d) => {
                    errors.push(d);
                    None
                }
            }
        };
        let object =
            |kind, name: &str, natural_key: String, source: &crate::model::Source| DesiredObject {
                kind,
                name: name.to_owned(),
                natural_key: Some(natural_key),
                fields: Fields::new(),
                field_sources: BTreeMap::new(),
                source: source.clone(),
                labels: BTreeMap::new(),
                additive: vec![],
                max_removal_share: None,
                only_declared: false,
                operation: Default::default(),
            };
        for r in &state.roles {
            let mut d = object(ObjectKind::Role, &r.name, r.code.clone(), &r.source);
            d.fields.insert("code".into(), json!(r.code));
            d.fields.insert("display".into(), json!(r.display));
            d.fields.insert(
                "domain".into(),
                serde_json::to_value(r.domain).unwrap_or_default(),
            );
            if let Some(a) = &r.abbreviation {
                d.fields.insert("abbreviation".into(), json!(a));
            }
            if let Some(p) = r.privilege_level {
                d.fields.insert("privilegeLevel".into(), json!(p));
            }
            if let Some(t) = r.role_type {
                d.fields
                    .insert("type".into(), serde_json::to_value(t).unwrap_or_default());
            }
            if !r.auth_groups.is_empty() {
                d.fields
                    .insert("authGroups".into(), sorted_strings(r.auth_groups.clone()));
            }
            out.push(d);
        }
        for r in &state.care_team_roles {
            let mut d = object(
                ObjectKind::CareTeamRole,
                &r.name,
                format!("{}|{}", r.system, r.code),
                &r.source,
            );
            d.fields.insert("system".into(), json!(r.system));
            d.fields.insert("code".into(), json!(r.code));
            d.fields.insert("display".into(), json!(r.display));
            out.push(d);
        }
        for t in &state.teams {
            let members: Vec<String> = t.members.iter().filter_map(&mut resolve).collect();
            let mut d = object(ObjectKind::Team, &t.name, t.display_name.clone(), &t.source);
            d.fields.insert("name".into(), json!(t.display_name));
            d.fields.insert(
                "responsibilities".into(),
                sorted_strings(t.responsibilities.iter().map(|r| r.value.code()).collect()),
            );
            d.fields.insert("members".into(), sorted_strings(members));
            d.field_sources.insert("name".into(), t.source.clone());
            if let Some(r) = t.responsibilities.first() {
                d.field_sources
                    .insert("responsibilities".into(), r.source.clone());
            }
            if let Some(m) = t.members.first() {
                d.field_sources.insert("members".into(), m.source.clone());
            }
            out.push(d);
        }
        for g in &state.patient_groups {
            out.push(util::person_group_desired(g, groups));
        }
        for a in &state.assignments {
            let Some(practitioner) = resolve(&a.practitioner) else {
                continue;
            };
            let codes = a
                .roles
                .iter()
                .filter_map(|r| state.role(&r.value).map(|role| role.code.clone()))
                .collect();
            let mut d = object(ObjectKind::RoleAssignment, &a.name, practitioner, &a.source);
            d.fields.insert("roles".into(), sorted_strings(codes));
            if let Some(r) = a.roles.first() {
                d.field_sources.insert("roles".into(), r.source.clone());
            }
            out.push(d);
        }
        for d in &mut out {
            if let Some(nk) = &d.natural_key
                && let Some(l) = labels.get(nk)
            {
                d.labels.insert(nk.clone(), l.clone());
            }
            for v in d
                .fields
                .values()
                .flat_map(|v| v.as_array().cloned().unwrap_or_default())
            {
                if let Some(s) = v.as_str()
                    && let Some(l) = labels.get(s)
                {
                    d.labels.insert(s.to_owned(), l.clone());
                }
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }

    fn identify(&self, _project: &str, r: &Value) -> Recognised {
        let rt = r
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let id = r
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let observed = |kind, natural_key: String, fields, managed| ObservedObject {
            kind,
            name: None,
            natural_key: Some(natural_key),
            resource_type: rt.to_owned(),
            id: id.clone(),
            version_id: None,
            last_updated: last_updated(r),
            fields,
            managed,
            partial: false,
            evidence: None,
        };
        match rt {
            "Task" => Recognised::Object(util::task_object(
                r,
                util::task_fields(r, TASK_GROUP_EXTENSION),
            )),
            "Group" if r["type"] == "person" => {
                let name = r["name"].as_str().unwrap_or_default().to_owned();
                Recognised::Object(observed(
                    ObjectKind::PatientGroup,
                    name,
                    util::person_group_fields(r),
                    false,
                ))
            }
            "Group" if r.get("type").and_then(Value::as_str) == Some("practitioner") => {
                let name = r
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let retired = name.starts_with(&self.retire_prefix);
                Recognised::Object(observed(
                    ObjectKind::Team,
                    name,
                    Self::team_fields(r),
                    self.manage_all_teams && !retired,
                ))
            }
            "Practitioner" => {
                let fields = Fields::from([("roles".to_owned(), sorted_strings(role_codes(r)))]);
                Recognised::Object(observed(
                    ObjectKind::RoleAssignment,
                    format!("Practitioner/{id}"),
                    fields,
                    false,
                ))
            }
            _ => Recognised::Other,
        }
    }

    fn aggregates(&self, resource_type: &str) -> bool {
        matches!(resource_type, "Practitioner" | "CareTeam")
    }

    fn aggregate(&self, _project: &str, resources: &[Value]) -> Vec<ObservedObject> {
        let mut roles: BTreeMap<String, usize> = BTreeMap::new();
        let mut care: BTreeMap<(String, String), usize> = BTreeMap::new();
        let mut seen_staff = std::collections::BTreeSet::new();
        for r in resources {
            match r.get("resourceType").and_then(Value::as_str) {
                Some("Practitioner") => {
                    // the same practitioner can come back from both active searches
                    if !seen_staff.insert(
                        r.get("id")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                    ) {
                        continue;
                    }
                    for c in role_codes(r) {
                        *roles.entry(c).or_default() += 1;
                    }
                }
                Some("CareTeam") => {
                    for p in r
                        .get("participant")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        for c in p
                            .pointer("/role/0/coding")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                        {
                            let sys = c.get("system").and_then(Value::as_str).unwrap_or_default();
                            let code = c.get("code").and_then(Value::as_str).unwrap_or_default();
                            *care.entry((sys.to_owned(), code.to_owned())).or_default() += 1;
                        }
                    }
                }
                _ => {}
            }
        }
        let partial = |kind, resource_type: &str, key: String, fields: Fields, evidence: String| {
            ObservedObject {
                kind,
                name: None,
                natural_key: Some(key.clone()),
                resource_type: resource_type.to_owned(),
                id: key,
                version_id: None,
                last_updated: None,
                fields,
                managed: false,
                partial: true,
                evidence: Some(evidence),
            }
        };
        let mut out: Vec<ObservedObject> = roles
            .into_iter()
            .map(|(code, n)| {
                partial(
                    ObjectKind::Role,
                    "Settings/Role",
                    code.clone(),
                    Fields::from([("code".to_owned(), json!(code))]),
                    format!("role code {code} is held by {n} staff member(s); the rest of the role's definition cannot be read through Canvas's API"),
                )
            })
            .collect();
        out.extend(care.into_iter().map(|((system, code), n)| {
            partial(
                ObjectKind::CareTeamRole,
                "Settings/CareTeamRole",
                format!("{system}|{code}"),
                Fields::from([("system".to_owned(), json!(system)), ("code".to_owned(), json!(code))]),
                format!("care-team role {code} is used {n} time(s) on active care teams; its display cannot be read through Canvas's API"),
            )
        }));
        out
    }

    fn build(&self, _project: &str, kind: ObjectKind, _name: &str, fields: &Fields) -> Value {
        match kind {
            ObjectKind::PatientGroup => {
                let base = json!({"resourceType": "Group", "type": "person", "actual": true});
                let set = fields
                    .iter()
                    .map(|(k, v)| (k.clone(), Some(v.clone())))
                    .collect();
                self.merge(kind, &base, &set)
            }
            ObjectKind::Team => {
                let base = json!({"resourceType": "Group", "type": "practitioner", "actual": true});
                let set = fields
                    .iter()
                    .map(|(k, v)| (k.clone(), Some(v.clone())))
                    .collect();
                self.merge(kind, &base, &set)
            }
            // Not creatable in Canvas (capability table): never planned as creates.
            _ => json!({}),
        }
    }

    fn merge(
        &self,
        kind: ObjectKind,
        live: &Value,
        fields: &BTreeMap<String, Option<Value>>,
    ) -> Value {
        let mut r = live.clone();
        strip_read_only(&mut r);
        match kind {
            ObjectKind::TaskRouting => {
                // §4: a Task PUT clears an omitted description/owner/restriction/input (all
                // sent back as read) and appends every note sent (so none is sent);
                // lastModified and the permalink are read-only.
                if let Some(o) = r.as_object_mut() {
                    o.remove("note");
                    o.remove("lastModified");
                }
                if let Some(exts) = r.get_mut("extension").and_then(Value::as_array_mut) {
                    exts.retain(|e| e["url"] != TASK_PERMALINK_EXTENSION);
                }
                return util::task_merge(&r, fields, TASK_GROUP_EXTENSION);
            }
            ObjectKind::PatientGroup => {
                if let Some(v) = fields.get("name") {
                    r["name"] = v.clone().unwrap_or(Value::Null);
                }
                if let Some(v) = fields.get("members") {
                    r["member"] =
                        Value::Array(util::merge_members(&r, &str_list(v.as_ref()), &json!({})));
                }
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
                    r["characteristic"] = Value::Array(util::replace_managed(
                        &r,
                        "characteristic",
                        is_responsibility,
                        add,
                    ));
                }
                if let Some(v) = fields.get("members") {
                    let members = util::merge_members(
                        &r,
                        &str_list(v.as_ref()),
                        &json!({"type": "Practitioner"}),
                    );
                    r["member"] = Value::Array(members);
                }
            }
            ObjectKind::RoleAssignment => {
                if let Some(v) = fields.get("roles") {
                    // §5: Practitioner PUT drops any extension left out, so every other
                    // extension is sent back exactly as read; only the roles one changes.
                    let codes: Vec<Value> = str_list(v.as_ref())
                        .into_iter()
                        .map(|c| json!({"url": "code", "valueCoding": {"system": ROLES_SYSTEM, "code": c}}))
                        .collect();
                    let mut exts: Vec<Value> = r
                        .get("extension")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default();
                    match exts
                        .iter()
                        .position(|e| e.get("url").and_then(Value::as_str) == Some(ROLES_EXTENSION))
                    {
                        Some(i) if codes.is_empty() => {
                            exts.remove(i);
                        }
                        Some(i) => exts[i]["extension"] = Value::Array(codes),
                        None if codes.is_empty() => {}
                        None => exts.push(json!({"url": ROLES_EXTENSION, "extension": codes})),
                    }
                    if let Some(o) = r.as_object_mut() {
                        if exts.is_empty() {
                            o.remove("extension");
                        } else {
                            o.insert("extension".into(), Value::Array(exts));
                        }
                    }
                }
            }
            _ => {}
        }
        r
    }

    fn find_query(&self, _project: &str, kind: ObjectKind, _name: &str) -> Query {
        // §2: Group search takes only _id and type; the name is compared by `same_object`.
        let t = if kind == ObjectKind::PatientGroup {
            "person"
        } else {
            "practitioner"
        };
        Query::new("Group").param("type", t)
    }

    fn adopt(&self, _: &str, _: ObjectKind, _: &str, _: &Value) -> Option<Value> {
        None // nothing on a Canvas resource can say who owns it
    }

    fn care_team_location(&self, _project: &str, patient: &str) -> super::CareTeamLocation {
        // canvas-api.md §3: one CareTeam per patient, its id = the patient id
        let pid = patient.strip_prefix("Patient/").unwrap_or(patient);
        super::CareTeamLocation::Read {
            resource_type: "CareTeam".into(),
            id: pid.to_owned(),
        }
    }

    fn care_team_merge(
        &self,
        _project: &str,
        patient: &str,
        live: Option<&Value>,
        change: &super::ParticipantChange,
    ) -> Value {
        // §3: a PUT replaces the active participants, so every active participant read
        // is sent back; `name` and `subject.display` are read-only; status and subject
        // are required.
        let pid = patient.strip_prefix("Patient/").unwrap_or(patient);
        let participants = util::merge_participants(live, change, CARETEAM_LEAD_EXTENSION);
        json!({
            "resourceType": "CareTeam",
            "id": pid,
            "status": "active",
            "subject": {"reference": patient, "type": "Patient"},
            "participant": participants,
        })
    }

    fn owns(&self, _project: &str, kind: ObjectKind, r: &Value) -> bool {
        match kind {
            ObjectKind::Team => {
                r.get("resourceType").and_then(Value::as_str) == Some("Group")
                    && r.get("type").and_then(Value::as_str) == Some("practitioner")
            }
            ObjectKind::RoleAssignment => {
                r.get("resourceType").and_then(Value::as_str) == Some("Practitioner")
            }
            ObjectKind::PatientGroup => r["resourceType"] == "Group" && r["type"] == "person",
            ObjectKind::TaskRouting => r["resourceType"] == "Task",
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_team_built_for_canvas_reads_back_to_the_same_fields() {
        let d = Canvas::default();
        let fields = Fields::from([
            ("name".into(), json!("Care Coordinators")),
            (
                "responsibilities".into(),
                json!(["COORDINATE_REFERRALS_FOR_PATIENT"]),
            ),
            (
                "members".into(),
                json!(["Practitioner/76428138e7644ce6b7eb426fdbbf2f39"]),
            ),
        ]);
        let mut g = d.build("p", ObjectKind::Team, "care-coordinators", &fields);
        assert_eq!(
            g["characteristic"][0],
            json!({"code":{"text":"responsibility"},"valueCodeableConcept":{"text":"COORDINATE_REFERRALS_FOR_PATIENT"},"exclude":false})
        );
        assert!(g.get("identifier").is_none() && g.get("meta").is_none());
        g["id"] = json!("g1");
        let seen = d.identify("p", &g).object().unwrap();
        assert_eq!(seen.natural_key.as_deref(), Some("Care Coordinators"));
        assert_eq!(seen.fields, fields);
        assert!(
            !seen.managed,
            "not managed unless the target says all teams are"
        );
    }

    #[test]
    fn role_merge_keeps_every_other_extension_and_field() {
        let d = Canvas::default();
        let live = json!({"resourceType":"Practitioner","id":"p1","meta":{"lastUpdated":"2026-01-01T00:00:00.000Z"},
            "extension":[
                {"url":"http://schemas.canvasmedical.com/fhir/extensions/practitioner-personal-meeting-room-link","valueUrl":"https://meet/x"},
                {"url":ROLES_EXTENSION,"extension":[{"url":"code","valueCoding":{"system":ROLES_SYSTEM,"code":"MA"}}]},
                {"url":"http://schemas.canvasmedical.com/fhir/extensions/practitioner-signature","valueAttachment":{"contentType":"image/png","data":"AA=="}}],
            "telecom":[{"id":"t1","system":"email","value":"a@b.org","rank":1}],"birthDate":"1980-01-01"});
        let out = d.merge(
            ObjectKind::RoleAssignment,
            &live,
            &BTreeMap::from([("roles".to_owned(), Some(json!(["MA", "RN"])))]),
        );
        assert_eq!(out["extension"][0], live["extension"][0]);
        assert_eq!(out["extension"][2], live["extension"][2]);
        assert_eq!(role_codes(&out), ["MA", "RN"]);
        assert_eq!(out["telecom"], live["telecom"]);
        assert_eq!(out["birthDate"], live["birthDate"]);
        assert!(out.get("meta").is_none());
    }

    #[test]
    fn retiring_empties_and_renames() {
        let d = Canvas::new("[old] ", true);
        let g = json!({"resourceType":"Group","id":"g","type":"practitioner","actual":true,"name":"Night shift",
            "member":[{"entity":{"reference":"Practitioner/a"}}]});
        let o = d.identify("p", &g).object().unwrap();
        assert!(o.managed);
        let f = d.capabilities().retire(&o).unwrap();
        assert_eq!(f["name"], "[old] Night shift");
        assert_eq!(f["members"], json!([]));
        // an already retired team is no longer managed, so it is not retired again
        let mut g2 = g.clone();
        g2["name"] = json!("[old] Night shift");
        assert!(!d.identify("p", &g2).object().unwrap().managed);
    }
}
