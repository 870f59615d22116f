//! The registry of manifest kinds: one row per `kind:` careplane reads. Loading, the JSON
//! Schema (`careplane schema`), the schema check, the foreign-document test and building
//! the desired model all iterate [`REGISTRY`]; nothing else lists kinds.
//!
//! A row names the kind, describes it, gives its `spec` schema and the function that
//! builds the desired model from one valid document. A **plain** configuration kind (one
//! document, one object on the target, fields without references) needs no build function
//! of its own: [`plain`] deserialises its spec struct (so serde's defaults and checks
//! apply) and carries it as a [`ConfigObject`] in `DesiredState::config`. Adding one:
//! 1. here: its `…Spec` struct (serde + schemars, like those in `types.rs`) and a row
//!    `KindEntry::plain::<LocationSpec>("Location", "…")`;
//! 2. `vocab/kind.rs`: a row for its object kind, slug = the kind in kebab-case;
//! 3. each dialect that stores it: a row in its mapping table (R4: `r4::PLAIN`). A dialect
//!    without one refuses such documents with a diagnostic naming the kind.

use schemars::{JsonSchema, SchemaGenerator};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::types::{
    CareTeamAssignmentSpec, CareTeamRoleSpec, PatientGroupSpec, ProjectSpec, RoleAssignmentSpec,
    RoleSpec, RoutingRuleSpec, RuleTestSpec, TeamSpec, ValuesSpec,
};
use super::{Checker, Doc};
use crate::check::care_model::{CareModelSpec, LabelsSpec};
use crate::model::{
    CareTeamAssignment, CareTeamRole, ConfigObject, DesiredState, Located, PatientGroup, Role,
    RoleAssignment, RoutingRule, RuleTest, Source, Team,
};

/// What building has produced so far: the desired model and the Project document.
pub(super) struct Building {
    pub desired: DesiredState,
    /// The Project spec, its `metadata.name` and where it is.
    pub project: Option<(ProjectSpec, String, Source)>,
}

/// One valid document being built.
pub(super) struct Ctx<'a, 'f> {
    pub kind: &'static str,
    /// `metadata.name`.
    pub name: String,
    pub doc: &'a Doc<'f>,
    pub ck: &'a mut Checker,
    pub out: &'a mut Building,
}

impl Ctx<'_, '_> {
    /// The spec as `T`, or `None` after an error at `/spec`.
    fn typed<T: DeserializeOwned>(&mut self) -> Option<T> {
        match T::deserialize(&self.doc.doc.value["spec"]) {
            Ok(s) => Some(s),
            Err(e) => {
                self.ck
                    .error(self.doc.at("/spec"), format!("invalid spec: {e}"), "");
                None
            }
        }
    }

    /// Where `pointer` (a JSON Pointer into the document) was written.
    fn at(&self, pointer: &str) -> Source {
        self.doc.at(pointer)
    }

    /// Each item of a list, with where it was written (`/spec/<field>/<i>`).
    fn located<T>(&self, field: &str, list: Vec<T>) -> Vec<Located<T>> {
        list.into_iter()
            .enumerate()
            .map(|(i, value)| Located {
                value,
                source: self.at(&format!("/spec/{field}/{i}")),
            })
            .collect()
    }

    fn error(&mut self, pointer: &str, message: String, help: &str) {
        let at = self.at(pointer);
        self.ck.error(at, message, help);
    }
}

/// One manifest kind.
pub struct KindEntry {
    /// The `kind:` value.
    pub kind: &'static str,
    /// What it is, for the schema (editors show it).
    pub description: &'static str,
    /// The schema of its `spec`; `None`: reserved (accepted by the schema, refused by
    /// `validate`).
    pub schema: Option<fn(&mut SchemaGenerator) -> Value>,
    /// Adds one valid document to the desired model (diagnostics go to the checker).
    pub(super) build: fn(&mut Ctx<'_, '_>),
    /// A plain configuration kind, carried as a [`ConfigObject`].
    pub plain: bool,
}

fn schema_of<T: JsonSchema>(g: &mut SchemaGenerator) -> Value {
    g.subschema_for::<T>().to_value()
}

impl KindEntry {
    const fn typed<T: JsonSchema>(
        kind: &'static str,
        description: &'static str,
        build: fn(&mut Ctx<'_, '_>),
    ) -> Self {
        KindEntry {
            kind,
            description,
            schema: Some(schema_of::<T>),
            build,
            plain: false,
        }
    }

    /// A plain configuration kind whose spec is `T`.
    #[allow(dead_code)] // no plain kind is registered yet
    const fn plain<T: JsonSchema + DeserializeOwned + Serialize>(
        kind: &'static str,
        description: &'static str,
    ) -> Self {
        KindEntry {
            kind,
            description,
            schema: Some(schema_of::<T>),
            build: plain::<T>,
            plain: true,
        }
    }

    /// A reserved kind: the schema accepts any spec, `validate` refuses the document.
    #[allow(dead_code)] // no kind is reserved in this version
    const fn reserved(kind: &'static str) -> Self {
        KindEntry {
            kind,
            description: "",
            schema: None,
            build: reserved,
            plain: false,
        }
    }
}

/// Every manifest kind, in the order the schema lists them.
pub const REGISTRY: &[KindEntry] = &[
    KindEntry::typed::<ProjectSpec>(
        "Project",
        "The project file: project name (the ownership tag) and named targets.",
        project,
    ),
    KindEntry::typed::<ValuesSpec>(
        "Values",
        "Variable values for one environment (`NAME: value`), used as ${NAME} in manifests.",
        // read before the other documents, by variable expansion
        |_| {},
    ),
    KindEntry::typed::<RuleTestSpec>(
        "RuleTest",
        "A test of the rules: fixtures and expected results (`careplane test`).",
        rule_test,
    ),
    KindEntry::typed::<RoleSpec>(
        "Role",
        "A staff role: internal code, display name, domain, default auth groups.",
        role,
    ),
    KindEntry::typed::<CareTeamRoleSpec>(
        "CareTeamRole",
        "A role a staff member can play in a patient's care team.",
        care_team_role,
    ),
    KindEntry::typed::<TeamSpec>("Team", "A team of staff that owns responsibilities.", team),
    KindEntry::typed::<RoleAssignmentSpec>(
        "RoleAssignment",
        "Gives one staff member their roles.",
        role_assignment,
    ),
    KindEntry::typed::<PatientGroupSpec>(
        "PatientGroup",
        "A patient group whose members follow a rule over live patient data.",
        patient_group,
    ),
    KindEntry::typed::<CareTeamAssignmentSpec>(
        "CareTeamAssignment",
        "Puts a staff member on the care teams of selected patients in a care-team role.",
        care_team_assignment,
    ),
    KindEntry::typed::<RoutingRuleSpec>(
        "RoutingRule",
        "Routes open tasks to a team, an owner and labels; the first matching rule wins.",
        routing_rule,
    ),
    KindEntry::typed::<CareModelSpec>(
        "CareModel",
        "Fit rules for the care-model checks: which role domains and types may hold which responsibilities and care-team roles (optional; careplane ships defaults).",
        care_model,
    ),
    KindEntry::typed::<LabelsSpec>(
        "Labels",
        "The task-label catalog: routing rules that match or add another label are flagged (optional; labels are unchecked without it).",
        labels,
    ),
];

/// The registry row of `kind`.
pub fn entry(kind: &str) -> Option<&'static KindEntry> {
    REGISTRY.iter().find(|e| e.kind == kind)
}

/// Every kind name, in registry order.
pub fn names() -> Vec<&'static str> {
    REGISTRY.iter().map(|e| e.kind).collect()
}

/// Whether `kind` is a careplane kind.
pub fn is_kind(kind: &str) -> bool {
    entry(kind).is_some()
}

fn project(c: &mut Ctx<'_, '_>) {
    let Some(spec) = c.typed::<ProjectSpec>() else {
        return;
    };
    let doc_src = c.at("");
    if let Some((_, _, first)) = &c.out.project {
        let message = format!("a second Project document (the first is at {first})");
        c.ck.error(
            doc_src,
            message,
            "keep one Project document per manifest directory",
        );
        return;
    }
    super::check_project(c.ck, c.doc, &spec);
    c.out.project = Some((spec, c.name.clone(), doc_src));
}

fn role(c: &mut Ctx<'_, '_>) {
    let Some(spec) = c.typed::<RoleSpec>() else {
        return;
    };
    let source = c.at("/metadata/name");
    c.out.desired.roles.push(Role {
        name: c.name.clone(),
        code: spec.code,
        display: spec.display,
        abbreviation: spec.abbreviation,
        domain: spec.domain,
        privilege_level: spec.privilege_level,
        role_type: spec.role_type,
        auth_groups: spec.auth_groups,
        source,
    });
}

fn care_team_role(c: &mut Ctx<'_, '_>) {
    let Some(spec) = c.typed::<CareTeamRoleSpec>() else {
        return;
    };
    let source = c.at("/spec/code/code");
    c.out.desired.care_team_roles.push(CareTeamRole {
        name: c.name.clone(),
        system: spec.code.system,
        code: spec.code.code,
        display: spec.code.display,
        source,
    });
}

fn team(c: &mut Ctx<'_, '_>) {
    let Some(spec) = c.typed::<TeamSpec>() else {
        return;
    };
    let team = Team {
        display_name: spec.display_name.unwrap_or_else(|| c.name.clone()),
        name: c.name.clone(),
        responsibilities: c.located("responsibilities", spec.responsibilities),
        members: c.located("members", spec.members),
        source: c.at("/metadata/name"),
    };
    c.out.desired.teams.push(team);
}

fn role_assignment(c: &mut Ctx<'_, '_>) {
    let Some(spec) = c.typed::<RoleAssignmentSpec>() else {
        return;
    };
    let a = RoleAssignment {
        name: c.name.clone(),
        practitioner: Located {
            value: spec.practitioner,
            source: c.at("/spec/practitioner"),
        },
        roles: c.located("roles", spec.roles),
        source: c.at("/metadata/name"),
    };
    c.out.desired.assignments.push(a);
}

fn care_team_assignment(c: &mut Ctx<'_, '_>) {
    let Some(spec) = c.typed::<CareTeamAssignmentSpec>() else {
        return;
    };
    if spec.patients.group.is_some() == spec.patients.rule.is_some() {
        let message = format!(
            "care-team assignment '{}' needs exactly one of patients.group and patients.rule",
            c.name
        );
        c.error(
            "/spec/patients",
            message,
            "select patients by a declared PatientGroup or by a rule",
        );
    }
    let a = CareTeamAssignment {
        practitioner: Located {
            value: spec.practitioner,
            source: c.at("/spec/practitioner"),
        },
        role: spec.care_team_role,
        group: spec.patients.group,
        rule: spec.patients.rule,
        lead: spec.lead,
        authoritative: spec.authoritative,
        max_removal_share: spec.max_removal_share.unwrap_or(0.2),
        max_deviation: spec.max_deviation.unwrap_or_default(),
        name: c.name.clone(),
        source: c.at("/metadata/name"),
    };
    c.out.desired.care_team_assignments.push(a);
}

fn rule_test(c: &mut Ctx<'_, '_>) {
    let Some(spec) = c.typed::<RuleTestSpec>() else {
        return;
    };
    let t = RuleTest {
        name: c.name.clone(),
        fixtures: spec.fixtures.into_iter().map(Value::Object).collect(),
        expect: spec.expect,
        source: c.at("/metadata/name"),
    };
    c.out.desired.rule_tests.push(t);
}

/// The first CareModel / Labels document wins; a second one is an error at its name.
fn second(c: &mut Ctx<'_, '_>, first: Option<&Source>) -> bool {
    let Some(first) = first else { return false };
    let message = format!("a second {} document (the first is at {first})", c.kind);
    c.error(
        "/metadata/name",
        message,
        "keep one per manifest directory (one set of rules for the care-model checks)",
    );
    true
}

fn care_model(c: &mut Ctx<'_, '_>) {
    let Some(spec) = c.typed::<CareModelSpec>() else {
        return;
    };
    let first = c.out.desired.care_model.as_ref().map(|m| m.source.clone());
    if second(c, first.as_ref()) {
        return;
    }
    // care-team roles are matched by name (any name); a responsibility written out must
    // be one of the 11 (a pattern with `*` may match none yet, e.g. `REVIEW_*_RESULTS`)
    let known: Vec<String> = crate::check::RESPONSIBILITIES
        .iter()
        .map(|x| x.code())
        .collect();
    for (i, r) in spec.responsibilities.iter().enumerate() {
        if r.pattern.contains('*') || known.contains(&r.pattern) {
            continue;
        }
        let hint = super::suggest::closest(&r.pattern, known.iter().map(String::as_str))
            .map(|g| format!("did you mean '{g}'? "))
            .unwrap_or_default();
        let message = format!("care-model rule '{}' is not a responsibility", r.pattern);
        c.error(
            &format!("/spec/responsibilities/{i}/match"),
            message,
            &format!(
                "{hint}write a responsibility code, or a pattern with `*` (e.g. `PROCESS_*_REQUESTS`)"
            ),
        );
    }
    let source = c.at("/metadata/name");
    c.out.desired.care_model = Some(crate::model::CareModelDecl {
        replace_defaults: spec.replace_defaults,
        responsibilities: spec.responsibilities,
        care_team_roles: spec.care_team_roles,
        source,
    });
}

fn labels(c: &mut Ctx<'_, '_>) {
    let Some(spec) = c.typed::<LabelsSpec>() else {
        return;
    };
    let first = c.out.desired.labels.as_ref().map(|m| m.source.clone());
    if second(c, first.as_ref()) {
        return;
    }
    for (i, l) in spec.labels.iter().enumerate() {
        if spec.labels[..i].contains(l) {
            let message = format!("label '{l}' is listed twice");
            c.error(
                &format!("/spec/labels/{i}"),
                message,
                "list each label once",
            );
        }
    }
    let source = c.at("/metadata/name");
    c.out.desired.labels = Some(crate::model::LabelCatalog {
        labels: spec.labels,
        source,
    });
}

fn routing_rule(c: &mut Ctx<'_, '_>) {
    let Some(spec) = c.typed::<RoutingRuleSpec>() else {
        return;
    };
    let m = &spec.matches;
    if m.description.is_none()
        && m.description_matches.is_none()
        && m.label.is_none()
        && m.patient_group.is_none()
    {
        let message = format!("routing rule '{}' matches every open task", c.name);
        c.error(
            "/spec/match",
            message,
            "say which tasks: description, descriptionMatches, label or patientGroup",
        );
    }
    if let Some(re) = &m.description_matches
        && let Err(e) = regex::Regex::new(re)
    {
        let message = format!(
            "not a regular expression: {}",
            e.to_string().lines().last().unwrap_or_default()
        );
        c.error(
            "/spec/match/descriptionMatches",
            message,
            "fix the pattern (Rust regex syntax)",
        );
    }
    if spec.set.team.is_none() && spec.set.owner.is_none() && spec.set.add_labels.is_empty() {
        let message = format!("routing rule '{}' sets nothing", c.name);
        c.error(
            "/spec/set",
            message,
            "set a team, an owner or labels to add",
        );
    }
    let r = RoutingRule {
        order: spec.order.unwrap_or(100),
        description: spec.matches.description,
        description_matches: spec.matches.description_matches,
        label: spec.matches.label,
        patient_group: spec.matches.patient_group,
        team: spec.set.team,
        owner: spec.set.owner.map(|value| Located {
            value,
            source: c.at("/spec/set/owner"),
        }),
        add_labels: spec.set.add_labels,
        mode: spec.routing.map(|r| r.mode).unwrap_or_default(),
        max_deviation: spec.max_deviation.unwrap_or_default(),
        name: c.name.clone(),
        source: c.at("/metadata/name"),
    };
    c.out.desired.routing_rules.push(r);
}

fn patient_group(c: &mut Ctx<'_, '_>) {
    let Some(spec) = c.typed::<PatientGroupSpec>() else {
        return;
    };
    if spec.rule.is_none() && spec.include.is_empty() {
        let message = format!("patient group '{}' has neither a rule nor include", c.name);
        c.error(
            "/spec",
            message,
            "add `rule:` (who belongs) or `include:` (patient ids)",
        );
    }
    let g = PatientGroup {
        display_name: spec.display_name.unwrap_or_else(|| c.name.clone()),
        mode: spec.mode,
        max_removal_share: spec.max_removal_share.unwrap_or(0.2),
        rule: spec.rule,
        include: c.located("include", spec.include),
        exclude: c.located("exclude", spec.exclude),
        max_deviation: spec.max_deviation.unwrap_or_default(),
        name: c.name.clone(),
        source: c.at("/metadata/name"),
    };
    c.out.desired.patient_groups.push(g);
}

/// Builds a plain configuration kind: the spec read as `T` (defaults filled in), written
/// back as its top-level fields.
fn plain<T: DeserializeOwned + Serialize>(c: &mut Ctx<'_, '_>) {
    let Some(spec) = c.typed::<T>() else {
        return;
    };
    let fields = match serde_json::to_value(&spec) {
        Ok(Value::Object(m)) => m.into_iter().collect(),
        _ => Default::default(),
    };
    let field_sources = c.doc.doc.value["spec"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, _)| {
            (
                k.clone(),
                c.at(&format!(
                    "/spec/{}",
                    k.replace('~', "~0").replace('/', "~1")
                )),
            )
        })
        .collect();
    let o = ConfigObject {
        kind: c.kind,
        name: c.name.clone(),
        fields,
        field_sources,
        source: c.at("/metadata/name"),
    };
    c.out.desired.config.push(o);
}

fn reserved(c: &mut Ctx<'_, '_>) {
    let message = format!(
        "kind {} is reserved for rule support, which this version of careplane does not apply",
        c.kind
    );
    c.error(
        "/kind",
        message,
        "remove the document for now; it would otherwise be silently ignored",
    );
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A minimal valid document of every registered kind.
    fn minimal(kind: &str) -> &'static str {
        match kind {
            "Project" => "spec: {targets: {local: {type: file, path: store}}}",
            "Values" => "spec: {REGION: north}",
            "RuleTest" => "spec: {fixtures: [], expect: {}}",
            "Role" => "spec: {code: MD, display: Physician, domain: clinical}",
            "CareTeamRole" => "spec: {code: {code: '1', display: PCP}}",
            "Team" => "spec: {responsibilities: [REVIEW_COVERAGES]}",
            "RoleAssignment" => "spec: {practitioner: {npi: '1234567893'}, roles: [x]}",
            "PatientGroup" => "spec: {include: [p1]}",
            "CareTeamAssignment" => {
                "spec: {practitioner: {id: a}, careTeamRole: x, patients: {group: x}}"
            }
            "RoutingRule" => "spec: {match: {label: x}, set: {team: x}}",
            "CareModel" => "spec: {}",
            "Labels" => "spec: {labels: [Urgent]}",
            other => panic!("no minimal document for {other}: add one to this test"),
        }
    }

    /// The documents a kind's minimal document refers to (declared roles, groups, teams).
    const SUPPORT: &str = "apiVersion: careplane.dev/v1\nkind: Role\nmetadata: {name: x}\nspec: {code: X, display: X, domain: clinical}\n---\napiVersion: careplane.dev/v1\nkind: CareTeamRole\nmetadata: {name: x}\nspec: {code: {code: '2', display: X}}\n---\napiVersion: careplane.dev/v1\nkind: PatientGroup\nmetadata: {name: x}\nspec: {include: [p0]}\n---\napiVersion: careplane.dev/v1\nkind: Team\nmetadata: {name: x}\nspec: {}\n";

    #[test]
    fn every_kind_is_registered_once_with_a_schema_and_a_description() {
        let names = names();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "kind names are unique");
        let schema = super::super::schema::manifest_schema();
        let listed: Vec<&str> = schema["properties"]["kind"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(
            listed, names,
            "the schema lists every kind, in registry order"
        );
        for e in REGISTRY {
            assert!(e.schema.is_some(), "{} has a spec schema", e.kind);
            assert!(!e.description.is_empty(), "{} is described", e.kind);
            let doc = &schema["definitions"][format!("{}Document", e.kind)];
            assert_eq!(doc["properties"]["kind"]["const"], e.kind);
            assert_eq!(doc["description"], e.description);
            assert!(is_kind(e.kind));
        }
        assert!(!is_kind("Nope"));
    }

    #[test]
    fn plain_kinds_have_an_object_kind() {
        for e in REGISTRY.iter().filter(|e| e.plain) {
            assert!(
                crate::vocab::ObjectKind::of_manifest_kind(e.kind).is_some(),
                "plain kind {} needs a row in vocab/kind.rs (slug = kebab-case kind)",
                e.kind
            );
        }
    }

    #[test]
    fn every_kind_builds_from_a_minimal_document() {
        for e in REGISTRY {
            let doc = format!(
                "apiVersion: careplane.dev/v1\nkind: {}\nmetadata: {{name: only}}\n{}\n",
                e.kind,
                minimal(e.kind)
            );
            let files = BTreeMap::from([
                ("a.yaml".to_owned(), doc),
                ("support.yaml".to_owned(), SUPPORT.to_owned()),
            ]);
            let m = super::super::load_from_memory(files, "p")
                .unwrap_or_else(|e| panic!("{:?}", e.diagnostics));
            let d = &m.desired;
            let built = match e.kind {
                "Project" => m.project.targets.contains_key("local"),
                "Values" => true, // read by variable expansion, not built
                "RuleTest" => d.rule_tests.iter().any(|x| x.name == "only"),
                "Role" => d.roles.iter().any(|x| x.name == "only" && x.code == "MD"),
                "CareTeamRole" => d.care_team_roles.iter().any(|x| x.name == "only"),
                "Team" => d
                    .teams
                    .iter()
                    .any(|x| x.name == "only" && x.display_name == "only"),
                "RoleAssignment" => d.assignments.iter().any(|x| x.name == "only"),
                "PatientGroup" => d.patient_groups.iter().any(|x| x.name == "only"),
                "CareTeamAssignment" => d.care_team_assignments.iter().any(|x| x.name == "only"),
                "RoutingRule" => d.routing_rules.iter().any(|x| x.name == "only"),
                "CareModel" => d.care_model.is_some(),
                "Labels" => d.labels.as_ref().is_some_and(|l| l.labels == ["Urgent"]),
                _ => d
                    .config
                    .iter()
                    .any(|x| x.kind == e.kind && x.name == "only"),
            };
            assert!(built, "{} built into the desired model", e.kind);
        }
    }

    #[test]
    fn a_plain_kind_is_carried_with_its_fields_and_where_they_were_written() {
        #[derive(Serialize, serde::Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields, rename_all = "camelCase")]
        struct PlaceSpec {
            display_name: String,
            #[serde(default)]
            open: bool,
        }
        let entry = KindEntry::plain::<PlaceSpec>("Place", "A place.");
        let text = "apiVersion: careplane.dev/v1\nkind: Place\nmetadata: {name: north}\nspec:\n  displayName: North\n";
        let doc = super::super::yaml::parse_documents(text).unwrap().remove(0);
        let d = Doc {
            file: "a.yaml",
            doc,
        };
        let mut ck = Checker { diags: vec![] };
        let mut out = Building {
            desired: DesiredState::default(),
            project: None,
        };
        (entry.build)(&mut Ctx {
            kind: entry.kind,
            name: "north".into(),
            doc: &d,
            ck: &mut ck,
            out: &mut out,
        });
        assert!(ck.diags.is_empty());
        let o = &out.desired.config[0];
        assert_eq!((o.kind, o.name.as_str()), ("Place", "north"));
        assert_eq!(
            o.fields,
            BTreeMap::from([
                ("displayName".to_owned(), serde_json::json!("North")),
                ("open".to_owned(), serde_json::json!(false)),
            ]),
            "defaults filled in"
        );
        assert_eq!(o.field_sources["displayName"].to_string(), "a.yaml:5:16");
        assert_eq!(o.source.to_string(), "a.yaml:3:18");
    }
}
