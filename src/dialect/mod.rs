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
pub mod plugin;
pub mod r4;

use std::collections::BTreeMap;

use serde_json::Value;

use crate::fhir::Query;
use crate::manifest::Diagnostic;
use crate::model::DesiredState;

use crate::vocab::{
    Capabilities, DesiredObject, Fields, Memberships, ObjectKind, ObservedObject, Recognised,
    StaffIndex,
};

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

/// Helpers shared by the dialects' mappings (and, re-exported, the JSON helpers).
pub mod util {
    use std::collections::HashSet;

    use serde_json::{Value, json};

    pub use crate::vocab::json::{meta, replace_managed, sorted_strings, str_list};

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
            operation: Default::default(),
        }
    }

    /// A Group's members set to `want` (references): entries still wanted are kept as
    /// they are (periods, extensions), missing ones are added with `extra` merged into
    /// their `entity`.
    pub fn merge_members(r: &Value, want: &[String], extra: &Value) -> Vec<Value> {
        // hash sets of references: linear in the group's size (a patient group may hold
        // tens of thousands of members)
        let wanted: HashSet<&str> = want.iter().map(String::as_str).collect();
        let kept: Vec<Value> = r
            .get("member")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|m| member_reference(m).is_some_and(|x| wanted.contains(x)))
            .cloned()
            .collect();
        add_members(kept, want, extra)
    }

    /// [`merge_members`], taking the members out of `r` (left `null`) instead of copying
    /// the ones kept.
    pub fn take_members(r: &mut Value, want: &[String], extra: &Value) -> Vec<Value> {
        let wanted: HashSet<&str> = want.iter().map(String::as_str).collect();
        let kept: Vec<Value> = match r.get_mut("member").map(Value::take) {
            Some(Value::Array(all)) => all
                .into_iter()
                .filter(|m| member_reference(m).is_some_and(|x| wanted.contains(x)))
                .collect(),
            _ => Vec::new(),
        };
        add_members(kept, want, extra)
    }

    fn member_reference(m: &Value) -> Option<&str> {
        m.pointer("/entity/reference").and_then(Value::as_str)
    }

    /// `members` (the entries kept), then every wanted reference none of them holds.
    fn add_members(mut members: Vec<Value>, want: &[String], extra: &Value) -> Vec<Value> {
        let mut present: HashSet<String> = members
            .iter()
            .filter_map(|m| member_reference(m).map(str::to_owned))
            .collect();
        for w in want {
            if present.insert(w.clone()) {
                let mut entity = json!({"reference": w});
                if let (Some(e), Some(x)) = (entity.as_object_mut(), extra.as_object()) {
                    e.extend(x.clone());
                }
                members.push(json!({ "entity": entity }));
            }
        }
        members
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn merge_members_keeps_wanted_entries_adds_missing_ones_once_in_order() {
            let live = json!({"member": [
                {"entity": {"reference": "Patient/a"}, "period": {"start": "2020"}},
                {"entity": {"reference": "Patient/gone"}},
                {"entity": {"reference": "Patient/b"}},
                {"entity": {"display": "no reference"}},
            ]});
            let want: Vec<String> = [
                "Patient/c",
                "Patient/b",
                "Patient/a",
                "Patient/c",
                "Patient/d",
            ]
            .map(String::from)
            .to_vec();
            let got = merge_members(&live, &want, &json!({"type": "Patient"}));
            assert_eq!(
                got,
                vec![
                    json!({"entity": {"reference": "Patient/a"}, "period": {"start": "2020"}}),
                    json!({"entity": {"reference": "Patient/b"}}),
                    json!({"entity": {"reference": "Patient/c", "type": "Patient"}}),
                    json!({"entity": {"reference": "Patient/d", "type": "Patient"}}),
                ]
            );
            assert!(merge_members(&live, &[], &json!({})).is_empty());
            // taking them out of the resource gives the same list, and leaves `null`
            let mut owned = live.clone();
            assert_eq!(
                take_members(&mut owned, &want, &json!({"type": "Patient"})),
                got
            );
            assert_eq!(owned, json!({"member": null}));
        }
    }
}
/// Every desired object on this target: the dialect's [`Dialect::desired`] plus the objects
/// of plain configuration kinds (`DesiredState::config`), which every dialect takes the
/// same way: their manifest fields verbatim, for the dialect's mapping to encode. A plain
/// kind the dialect has no capability row for is refused, one diagnostic per document.
pub fn desired(
    dialect: &dyn Dialect,
    state: &DesiredState,
    staff: &StaffIndex,
    groups: &Memberships,
) -> Result<Vec<DesiredObject>, Vec<Diagnostic>> {
    let config = config_objects(state, dialect.capabilities(), dialect.name());
    match (dialect.desired(state, staff, groups), config) {
        (Ok(mut out), Ok(config)) => {
            out.extend(config);
            Ok(out)
        }
        (Err(mut a), Err(b)) => {
            a.extend(b);
            Err(a)
        }
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}

/// The objects of plain configuration kinds as desired objects, or a diagnostic for each
/// one whose kind `caps` has no row for.
pub fn config_objects(
    state: &DesiredState,
    caps: &Capabilities,
    dialect: &str,
) -> Result<Vec<DesiredObject>, Vec<Diagnostic>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for o in &state.config {
        let kind = ObjectKind::of_manifest_kind(o.kind).filter(|k| caps.of(*k).is_some());
        let Some(kind) = kind else {
            errors.push(Diagnostic {
                source: o.source.clone(),
                message: format!(
                    "kind {} is not supported on this target (dialect {dialect})",
                    o.kind
                ),
                help: Some(
                    "remove the document, or limit it to the targets that support it with `metadata.targets`"
                        .into(),
                ),
            });
            continue;
        };
        out.push(DesiredObject {
            kind,
            name: o.name.clone(),
            natural_key: None,
            fields: o.fields.clone(),
            field_sources: o.field_sources.clone(),
            source: o.source.clone(),
            labels: BTreeMap::new(),
            additive: vec![],
            max_removal_share: None,
            only_declared: false,
            operation: Default::default(),
        });
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
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

    /// [`Dialect::merge`] of a `live` resource that is not needed afterwards: a dialect
    /// may reuse it instead of copying it (a patient group of 170,000 members is a few
    /// hundred MB parsed).
    fn merge_owned(
        &self,
        kind: ObjectKind,
        live: Value,
        fields: &BTreeMap<String, Option<Value>>,
    ) -> Value {
        self.merge(kind, &live, fields)
    }

    /// A search that finds the object if it already exists (for conditional create and
    /// for checking that a planned create is still valid).
    fn find_query(&self, project: &str, kind: ObjectKind, name: &str) -> Query;

    /// Objects only visible across many resources (a role code held by several staff
    /// members), read from everything the queries returned.
    fn aggregate(&self, project: &str, resources: &[Value]) -> Vec<ObservedObject>;

    /// Whether [`Dialect::aggregate`] reads resources of this type: observe keeps only
    /// those whole, and reduces every other resource as it arrives.
    fn aggregates(&self, _resource_type: &str) -> bool {
        true
    }

    /// Whether careplane may write to a live resource of this kind for `project` (writes
    /// to anything else are refused at apply time).
    fn owns(&self, project: &str, kind: ObjectKind, resource: &Value) -> bool;

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
    fn adopt(&self, project: &str, kind: ObjectKind, name: &str, live: &Value) -> Option<Value>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ConfigObject, Source};

    fn state(kind: &'static str) -> DesiredState {
        let at = |line| Source {
            file: "a.yaml".into(),
            line,
            col: 1,
        };
        DesiredState {
            config: vec![ConfigObject {
                kind,
                name: "north".into(),
                fields: Fields::from([("name".to_owned(), serde_json::json!("North"))]),
                field_sources: BTreeMap::from([("name".to_owned(), at(5))]),
                source: at(3),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_plain_kind_is_desired_where_the_dialect_has_a_row_and_refused_where_not() {
        // `RoleCatalog` stands in for a plain kind: R4's table has a row for it, Canvas's not
        let s = state("RoleCatalog");
        let r4 = r4::R4::default();
        let got = desired(&r4, &s, &StaffIndex::default(), &Memberships::new()).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].kind, ObjectKind::RoleCatalog);
        assert_eq!(got[0].name, "north");
        assert_eq!(got[0].fields["name"], "North");
        assert_eq!(got[0].field_sources["name"].line, 5);

        let canvas = canvas::Canvas::default();
        let errors = desired(&canvas, &s, &StaffIndex::default(), &Memberships::new())
            .expect_err("canvas has no row for it");
        assert_eq!(errors.len(), 1);
        assert_eq!(
            errors[0].message,
            "kind RoleCatalog is not supported on this target (dialect canvas)"
        );
        assert_eq!(errors[0].source.line, 3);

        // a manifest kind with no object kind at all is refused the same way
        let errors = config_objects(&state("Nowhere"), r4.capabilities(), "fhir-r4").unwrap_err();
        assert!(
            errors[0]
                .message
                .starts_with("kind Nowhere is not supported")
        );
    }
}
