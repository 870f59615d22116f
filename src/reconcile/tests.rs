//! Unit tests of the pure planner (reconcile), written before the refactor as its gate.
//!
//! Every test builds the live state in memory (resources read back through the dialect's
//! own `identify`/`aggregate`, as `observe` does, or `Observed` fields set directly),
//! plans with `objects::diff`, `care_teams::changes`, `routing::objects` or the whole
//! `reconcile::plan`, and checks the guard with `ops::check_blast_radius`. No store, no server, no clock: each runs in
//! milliseconds. Each test asserts the exact changes (action, target, fields before/after
//! with their manifest positions, reason, precondition, notes), so a behaviour change in
//! the refactor fails it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_json::{Value, json};

use crate::dialect::canvas::Canvas;
use crate::dialect::r4::{self, R4};
use crate::dialect::{CareTeamLocation, Dialect, ParticipantChange, Purpose};
use crate::diff::{self, DiffResult, Options};
use crate::fhir::Query;
use crate::manifest::types::{MembershipMode, ProjectSpec};
use crate::manifest::{Diagnostic, Manifests};
use crate::model::{
    CareTeamAssignment, CareTeamRole, DesiredState, Located, PatientGroup, PractitionerRef,
    Responsibility, Role, RoleAssignment, RoleDomain, RoutingRule, Source, Team,
};
use crate::observe::Observed;
use crate::ops::OpsError;
use crate::plan::{
    Action, Change, FieldChange, Operation, Orphan, Plan, PlanCapability, Precondition, Reason,
    ReasonCode, Target, TargetInfo,
};
use crate::rules::{PatientFacts, Pseudonymizer};
use crate::target::ResolvedTarget;
use crate::vocab::{
    DesiredObject, Fields, Identity, KindCapability, Memberships, ObjectKind, ObservedObject,
    Recognised, StaffIndex,
};

const PROJECT: &str = "clinic";
const NPI_A: &str = "1111111111";
const NPI_B: &str = "2222222222";
const PAYMENTS: &str = "COLLECT_PATIENT_PAYMENTS";
const PCP_SYSTEM: &str = "http://snomed.info/sct";
const PCP_CODE: &str = "453231000124104";

// ---------------------------------------------------------------------------------------
// Builders

fn at(line: u64) -> Source {
    Source {
        file: "teams.yaml".into(),
        line,
        col: 3,
    }
}

fn located<T>(value: T, line: u64) -> Located<T> {
    Located {
        value,
        source: at(line),
    }
}

fn pseudo() -> Pseudonymizer {
    Pseudonymizer::with_key("unit-test-key")
}

fn run(
    desired: &[DesiredObject],
    observed: &Observed,
    dialect: &dyn Dialect,
    opts: Options,
) -> DiffResult {
    diff::diff(desired, observed, dialect, opts, &pseudo())
}

fn prune() -> Options {
    Options {
        prune: true,
        ..Options::default()
    }
}

fn adopt() -> Options {
    Options {
        adopt: true,
        ..Options::default()
    }
}

/// What `observe` makes of these resources, without a store: each one recognised by the
/// dialect, the aggregates, the staff directory from the Practitioners, sorted as observe
/// sorts.
fn observed_from(dialect: &dyn Dialect, resources: &[Value]) -> Observed {
    let mut o = Observed::default();
    for r in resources {
        match dialect.identify(PROJECT, r) {
            Recognised::Object(x) => o.objects.push(x),
            Recognised::Foreign(f) => o.foreign.push(*f),
            Recognised::Other => {}
        }
    }
    let staff: Vec<Value> = resources
        .iter()
        .filter(|r| r["resourceType"] == "Practitioner")
        .cloned()
        .collect();
    o.staff = StaffIndex::from_practitioners(&staff);
    o.objects.extend(dialect.aggregate(PROJECT, resources));
    o.objects.sort_by(|a, b| {
        (a.kind, &a.name, &a.natural_key, &a.id).cmp(&(b.kind, &b.name, &b.natural_key, &b.id))
    });
    o
}

fn practitioner(id: &str, npi: &str) -> Value {
    json!({"resourceType": "Practitioner", "id": id,
           "identifier": [{"system": StaffIndex::NPI_SYSTEM, "value": npi}]})
}

/// A Canvas practitioner holding role codes on the roles extension.
fn canvas_practitioner(id: &str, npi: &str, roles: &[&str]) -> Value {
    let mut p = practitioner(id, npi);
    p["meta"] = json!({"lastUpdated": "2026-01-02T03:04:05Z"});
    if !roles.is_empty() {
        let codes: Vec<Value> = roles
            .iter()
            .map(|c| json!({"url": "code", "valueCoding": {"system": crate::dialect::canvas::ROLES_SYSTEM, "code": c}}))
            .collect();
        p["extension"] =
            json!([{"url": crate::dialect::canvas::ROLES_EXTENSION, "extension": codes}]);
    }
    p
}

fn members_json(members: &[&str]) -> Value {
    Value::Array(
        members
            .iter()
            .map(|m| json!({"entity": {"reference": m}}))
            .collect(),
    )
}

fn responsibilities_json(codes: &[&str]) -> Value {
    Value::Array(
        codes
            .iter()
            .map(|c| json!({"code": {"text": "responsibility"}, "valueCodeableConcept": {"text": c}, "exclude": false}))
            .collect(),
    )
}

/// A team careplane wrote on an R4 server for `project` (tag + identifier).
fn r4_team_of(
    project: &str,
    id: &str,
    name: &str,
    display: &str,
    members: &[&str],
    resp: &[&str],
) -> Value {
    json!({"resourceType": "Group", "id": id, "type": "practitioner", "actual": true,
           "name": display,
           "meta": {"versionId": "4", "lastUpdated": "2026-01-02T03:04:05Z",
                    "tag": [{"system": r4::TAG_SYSTEM, "code": project}]},
           "identifier": [{"system": r4::id_system(project), "value": format!("team/{name}")}],
           "member": members_json(members),
           "characteristic": responsibilities_json(resp)})
}

fn r4_team(id: &str, name: &str, display: &str, members: &[&str], resp: &[&str]) -> Value {
    r4_team_of(PROJECT, id, name, display, members, resp)
}

/// A practitioner Group nobody tagged (R4: a look-alike; Canvas: a team).
fn plain_team(id: &str, display: &str, members: &[&str], resp: &[&str]) -> Value {
    json!({"resourceType": "Group", "id": id, "type": "practitioner", "actual": true,
           "name": display,
           "meta": {"versionId": "1", "lastUpdated": "2026-01-02T03:04:05Z"},
           "member": members_json(members),
           "characteristic": responsibilities_json(resp)})
}

fn team(name: &str, display: &str, members: &[&str], resp: &[Responsibility]) -> Team {
    Team {
        name: name.into(),
        display_name: display.into(),
        responsibilities: resp.iter().map(|r| located(*r, 5)).collect(),
        members: members
            .iter()
            .map(|n| located(PractitionerRef::Npi((*n).into()), 7))
            .collect(),
        source: at(3),
    }
}

fn state(teams: Vec<Team>) -> DesiredState {
    DesiredState {
        project: PROJECT.into(),
        teams,
        ..DesiredState::default()
    }
}

fn desired_of(
    dialect: &dyn Dialect,
    state: &DesiredState,
    observed: &Observed,
) -> Vec<DesiredObject> {
    dialect
        .desired(state, &observed.staff, &Memberships::new())
        .expect("every reference resolves")
}

fn field(
    name: &str,
    before: Option<Value>,
    after: Option<Value>,
    line: Option<u64>,
) -> FieldChange {
    FieldChange {
        field: name.into(),
        before,
        after,
        source: line.map(at),
        labels: BTreeMap::new(),
        membership: None,
        sealed: None,
    }
}

fn labelled(mut f: FieldChange, labels: &[(&str, &str)]) -> FieldChange {
    f.labels = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    f
}

fn target(kind: ObjectKind, name: &str, resource_type: &str, id: Option<&str>) -> Target {
    Target {
        kind,
        name: name.into(),
        resource_type: resource_type.into(),
        id: id.map(str::to_owned),
    }
}

fn reason(code: ReasonCode, line: Option<u64>, rule: &str) -> Reason {
    Reason {
        code,
        source: line.map(at),
        rule: rule.into(),
    }
}

fn absent() -> Precondition {
    Precondition {
        absent: true,
        ..Precondition::default()
    }
}

fn r4_seen(version: &str) -> Precondition {
    Precondition {
        version_id: Some(version.into()),
        last_updated: Some("2026-01-02T03:04:05Z".into()),
        absent: false,
    }
}

fn canvas_seen() -> Precondition {
    Precondition {
        version_id: None,
        last_updated: Some("2026-01-02T03:04:05Z".into()),
        absent: false,
    }
}

const LABEL_A: (&str, &str) = ("Practitioner/pa", "npi 1111111111");
const LABEL_B: (&str, &str) = ("Practitioner/pb", "npi 2222222222");

/// R4 with one kind's capability changed: the capability flags drive the plan, not the
/// dialect's code.
struct Table {
    caps: crate::vocab::Capabilities,
    inner: R4,
}

fn r4_with(kind: ObjectKind, change: impl FnOnce(&mut KindCapability)) -> Table {
    let inner = R4::default();
    let mut caps = inner.capabilities().clone();
    change(caps.0.iter_mut().find(|c| c.kind == kind).expect("kind"));
    Table { caps, inner }
}

impl Dialect for Table {
    fn name(&self) -> &'static str {
        "table"
    }
    fn capabilities(&self) -> &crate::vocab::Capabilities {
        &self.caps
    }
    fn queries(&self, project: &str) -> Vec<(Purpose, Query)> {
        self.inner.queries(project)
    }
    fn desired(
        &self,
        state: &DesiredState,
        staff: &StaffIndex,
        groups: &Memberships,
    ) -> Result<Vec<DesiredObject>, Vec<Diagnostic>> {
        self.inner.desired(state, staff, groups)
    }
    fn identify(&self, project: &str, resource: &Value) -> Recognised {
        self.inner.identify(project, resource)
    }
    fn build(&self, project: &str, kind: ObjectKind, name: &str, fields: &Fields) -> Value {
        self.inner.build(project, kind, name, fields)
    }
    fn merge(
        &self,
        kind: ObjectKind,
        live: &Value,
        fields: &BTreeMap<String, Option<Value>>,
    ) -> Value {
        self.inner.merge(kind, live, fields)
    }
    fn find_query(&self, project: &str, kind: ObjectKind, name: &str) -> Query {
        self.inner.find_query(project, kind, name)
    }
    fn owns(&self, project: &str, kind: ObjectKind, resource: &Value) -> bool {
        self.inner.owns(project, kind, resource)
    }
    fn aggregate(&self, project: &str, resources: &[Value]) -> Vec<ObservedObject> {
        self.inner.aggregate(project, resources)
    }
    fn adopt(&self, project: &str, kind: ObjectKind, name: &str, live: &Value) -> Option<Value> {
        self.inner.adopt(project, kind, name, live)
    }
    fn care_team_location(&self, project: &str, patient: &str) -> CareTeamLocation {
        self.inner.care_team_location(project, patient)
    }
    fn care_team_merge(
        &self,
        project: &str,
        patient: &str,
        live: Option<&Value>,
        change: &ParticipantChange,
    ) -> Value {
        self.inner.care_team_merge(project, patient, live, change)
    }
}

/// The R4 staff and the team `front-desk` ("Front Desk", member A, payments).
fn front_desk() -> DesiredState {
    state(vec![team(
        "front-desk",
        "Front Desk",
        &[NPI_A],
        &[Responsibility::CollectPatientPayments],
    )])
}

fn staff_ab() -> Vec<Value> {
    vec![practitioner("pa", NPI_A), practitioner("pb", NPI_B)]
}

fn with_staff(mut more: Vec<Value>) -> Vec<Value> {
    let mut all = staff_ab();
    all.append(&mut more);
    all
}

fn plan_r4(state: &DesiredState, resources: &[Value], opts: Options) -> DiffResult {
    let d = R4::default();
    let observed = observed_from(&d, resources);
    run(&desired_of(&d, state, &observed), &observed, &d, opts)
}

/// The one change of a diff that has exactly one, with no errors and no orphans.
fn only_change(d: &DiffResult) -> &Change {
    assert_eq!(d.errors, Vec::<Diagnostic>::new());
    assert_eq!(d.orphans, Vec::<Orphan>::new());
    assert_eq!(d.changes.len(), 1, "{:#?}", d.changes);
    &d.changes[0]
}

// ---------------------------------------------------------------------------------------
// One test per action

#[test]
fn a_declared_team_missing_on_r4_is_created_with_every_field_from_its_manifest() {
    let d = plan_r4(&front_desk(), &staff_ab(), Options::default());
    assert_eq!(
        only_change(&d),
        &Change {
            action: Action::Create,
            target: target(ObjectKind::Team, "front-desk", "Group", None),
            fields: vec![
                labelled(
                    field("members", None, Some(json!(["Practitioner/pa"])), Some(7)),
                    &[LABEL_A]
                ),
                field("name", None, Some(json!("Front Desk")), Some(3)),
                field("responsibilities", None, Some(json!([PAYMENTS])), Some(5)),
            ],
            reason: reason(
                ReasonCode::Missing,
                Some(3),
                "team 'front-desk' is declared but not on the target"
            ),
            operation: Operation::Object,
            precondition: absent(),
            notes: vec![],
        }
    );
}

#[test]
fn a_team_whose_live_members_differ_is_updated_in_just_that_field_against_the_version_seen() {
    let live = r4_team(
        "g1",
        "front-desk",
        "Front Desk",
        &["Practitioner/pa", "Practitioner/pb"],
        &[PAYMENTS],
    );
    let d = plan_r4(&front_desk(), &with_staff(vec![live]), Options::default());
    assert_eq!(
        only_change(&d),
        &Change {
            action: Action::Update,
            target: target(ObjectKind::Team, "front-desk", "Group", Some("g1")),
            fields: vec![labelled(
                field(
                    "members",
                    Some(json!(["Practitioner/pa", "Practitioner/pb"])),
                    Some(json!(["Practitioner/pa"])),
                    Some(7)
                ),
                // B is named from the staff directory: the manifests no longer mention them
                &[LABEL_A, LABEL_B]
            )],
            reason: reason(
                ReasonCode::Differs,
                Some(3),
                "live team differs from its manifest in members"
            ),
            operation: Operation::Object,
            precondition: r4_seen("4"),
            notes: vec![],
        }
    );
}

#[test]
fn a_team_that_matches_its_manifest_is_a_no_op_that_still_records_what_was_seen() {
    let live = r4_team(
        "g1",
        "front-desk",
        "Front Desk",
        &["Practitioner/pa"],
        &[PAYMENTS],
    );
    let d = plan_r4(&front_desk(), &with_staff(vec![live]), Options::default());
    assert_eq!(
        only_change(&d),
        &Change {
            action: Action::NoOp,
            target: target(ObjectKind::Team, "front-desk", "Group", Some("g1")),
            fields: vec![],
            reason: reason(ReasonCode::Matches, Some(3), "matches its manifest"),
            operation: Operation::Object,
            precondition: r4_seen("4"),
            notes: vec![],
        }
    );
}

#[test]
fn a_managed_team_no_manifest_declares_is_deleted_with_prune() {
    let live = r4_team("g7", "old-team", "Old Team", &["Practitioner/pb"], &[]);
    let d = plan_r4(&state(vec![]), &with_staff(vec![live]), prune());
    assert_eq!(
        only_change(&d),
        &Change {
            action: Action::Delete,
            target: target(ObjectKind::Team, "old-team", "Group", Some("g7")),
            fields: vec![
                labelled(
                    field("members", Some(json!(["Practitioner/pb"])), None, None),
                    &[LABEL_B]
                ),
                field("name", Some(json!("Old Team")), None, None),
                field("responsibilities", Some(json!([])), None, None),
            ],
            reason: reason(
                ReasonCode::Prune,
                None,
                "managed by careplane but no longer declared, and --prune was given"
            ),
            operation: Operation::Object,
            precondition: r4_seen("4"),
            notes: vec![],
        }
    );
}

#[test]
fn prune_is_off_by_default_so_an_undeclared_managed_team_is_kept_as_an_orphan() {
    let live = r4_team("g7", "old-team", "Old Team", &["Practitioner/pb"], &[]);
    let d = plan_r4(&state(vec![]), &with_staff(vec![live]), Options::default());
    assert_eq!(d.changes, vec![]);
    assert_eq!(d.errors, vec![]);
    assert_eq!(
        d.orphans,
        vec![Orphan {
            target: target(ObjectKind::Team, "old-team", "Group", Some("g7"))
        }]
    );
}

#[test]
fn a_same_named_team_careplane_does_not_own_is_adopted_with_the_adopt_option() {
    let foreign = plain_team("g9", "Front Desk", &["Practitioner/pa"], &[]);
    let d = plan_r4(&front_desk(), &with_staff(vec![foreign]), adopt());
    assert_eq!(
        only_change(&d),
        &Change {
            action: Action::Adopt,
            target: target(ObjectKind::Team, "front-desk", "Group", Some("g9")),
            fields: vec![field(
                "responsibilities",
                Some(json!([])),
                Some(json!([PAYMENTS])),
                Some(5)
            )],
            reason: reason(
                ReasonCode::Adopt,
                Some(3),
                "Group/g9 is named 'Front Desk' and not managed by careplane yet: adopt it (tag it as this project's) instead of creating another"
            ),
            operation: Operation::Object,
            precondition: Precondition {
                version_id: Some("1".into()),
                last_updated: Some("2026-01-02T03:04:05Z".into()),
                absent: false
            },
            notes: vec![],
        }
    );
}

#[test]
fn a_same_named_team_careplane_does_not_own_stops_the_plan_without_the_adopt_option() {
    let foreign = plain_team("g9", "Front Desk", &["Practitioner/pa"], &[]);
    let d = plan_r4(
        &front_desk(),
        &with_staff(vec![foreign]),
        Options::default(),
    );
    assert_eq!(d.changes, vec![]);
    assert_eq!(d.orphans, vec![]);
    assert_eq!(
        d.errors,
        vec![Diagnostic {
            source: at(3),
            message: "Group/g9 is already named 'Front Desk' on the target and is not managed by careplane".into(),
            help: Some("take it over with `careplane import` (or plan/apply --adopt), or rename this team".into()),
        }]
    );
}

#[test]
fn a_role_canvas_cannot_create_is_a_manual_checklist_item_with_every_declared_field() {
    let d = Canvas::default();
    let mut s = state(vec![]);
    s.roles.push(physician());
    let observed = observed_from(&d, &[canvas_practitioner("pa", NPI_A, &[])]);
    let r = run(
        &desired_of(&d, &s, &observed),
        &observed,
        &d,
        Options::default(),
    );
    assert_eq!(
        only_change(&r),
        &Change {
            action: Action::Manual,
            target: target(ObjectKind::Role, "physician", "Settings/Role", None),
            fields: vec![
                field("code", None, Some(json!("MD")), Some(2)),
                field("display", None, Some(json!("Physician")), Some(2)),
                field("domain", None, Some(json!("clinical")), Some(2)),
            ],
            reason: reason(
                ReasonCode::Missing,
                Some(2),
                "role 'physician' is declared but not seen on the target, and the target's API cannot create it: create it by hand"
            ),
            operation: Operation::Object,
            precondition: absent(),
            notes: vec![],
        }
    );
}

fn physician() -> Role {
    Role {
        name: "physician".into(),
        code: "MD".into(),
        display: "Physician".into(),
        abbreviation: None,
        domain: RoleDomain::Clinical,
        privilege_level: None,
        role_type: None,
        auth_groups: vec![],
        source: at(2),
    }
}

// ---------------------------------------------------------------------------------------
// Capability flags

#[test]
fn a_needed_update_the_target_cannot_make_is_a_manual_change_against_the_live_object() {
    let d = r4_with(ObjectKind::Team, |c| c.update = false);
    let live = r4_team(
        "g1",
        "front-desk",
        "Front Desk",
        &["Practitioner/pa", "Practitioner/pb"],
        &[PAYMENTS],
    );
    let observed = observed_from(&d, &with_staff(vec![live]));
    let r = run(
        &desired_of(&d, &front_desk(), &observed),
        &observed,
        &d,
        Options::default(),
    );
    let c = only_change(&r);
    assert_eq!(c.action, Action::Manual);
    assert_eq!(
        c.target,
        target(ObjectKind::Team, "front-desk", "Group", Some("g1"))
    );
    assert_eq!(
        c.reason,
        reason(
            ReasonCode::Differs,
            Some(3),
            "live team differs from its manifest in members; the target's API cannot change it: change it by hand"
        )
    );
    assert_eq!(c.precondition, r4_seen("4"));
    assert_eq!(
        c.fields
            .iter()
            .map(|f| (&f.field, &f.before, &f.after))
            .collect::<Vec<_>>(),
        vec![(
            &"members".to_owned(),
            &Some(json!(["Practitioner/pa", "Practitioner/pb"])),
            &Some(json!(["Practitioner/pa"]))
        )]
    );
}

#[test]
fn a_needed_create_the_target_cannot_make_is_a_manual_change_that_must_stay_absent() {
    let d = r4_with(ObjectKind::Team, |c| c.create = false);
    let observed = observed_from(&d, &staff_ab());
    let r = run(
        &desired_of(&d, &front_desk(), &observed),
        &observed,
        &d,
        Options::default(),
    );
    let c = only_change(&r);
    assert_eq!(c.action, Action::Manual);
    assert_eq!(
        c.target,
        target(ObjectKind::Team, "front-desk", "Group", None)
    );
    assert_eq!(c.precondition, absent());
    assert_eq!(
        c.reason,
        reason(
            ReasonCode::Missing,
            Some(3),
            "team 'front-desk' is declared but not seen on the target, and the target's API cannot create it: create it by hand"
        )
    );
    assert_eq!(c.fields.len(), 3);
}

#[test]
fn without_delete_and_without_retire_prune_keeps_the_managed_team_as_an_orphan() {
    let d = r4_with(ObjectKind::Team, |c| c.delete = false);
    let live = r4_team("g7", "old-team", "Old Team", &[], &[]);
    let observed = observed_from(&d, &with_staff(vec![live]));
    let r = run(&[], &observed, &d, prune());
    assert_eq!(r.changes, vec![]);
    assert_eq!(
        r.orphans,
        vec![Orphan {
            target: target(ObjectKind::Team, "old-team", "Group", Some("g7"))
        }]
    );
}

#[test]
fn a_kind_missing_from_the_capability_table_is_never_planned() {
    // R4 keeps roles in a catalog: a one-by-one Role object is not in its table
    let d = R4::default();
    let mut s = state(vec![]);
    s.roles.push(physician());
    let observed = observed_from(&d, &[]);
    let mut desired = desired_of(&Canvas::default(), &s, &observed);
    assert_eq!(desired.len(), 1);
    assert_eq!(desired[0].kind, ObjectKind::Role);
    let r = run(&desired, &observed, &d, prune());
    assert_eq!(r.changes, vec![]);
    // ...while R4's own mapping puts the role in its catalog
    desired = desired_of(&d, &s, &observed);
    let r = run(&desired, &observed, &d, prune());
    let c = only_change(&r);
    assert_eq!(
        (c.action, &c.target),
        (
            Action::Create,
            &target(ObjectKind::RoleCatalog, "roles", "CodeSystem", None)
        )
    );
    assert_eq!(
        c.fields,
        vec![field(
            "concept[MD]",
            None,
            Some(json!({"display": "Physician", "domain": "clinical"})),
            Some(2)
        )]
    );
}

#[test]
fn on_canvas_prune_retires_a_managed_team_by_emptying_and_renaming_it() {
    let d = Canvas::new("zz-retired ", true);
    let live = plain_team("g7", "Night shift", &["Practitioner/pa"], &[PAYMENTS]);
    let observed = observed_from(&d, &[canvas_practitioner("pa", NPI_A, &[]), live]);
    let r = run(&[], &observed, &d, prune());
    assert_eq!(
        only_change(&r),
        &Change {
            action: Action::Update,
            target: target(ObjectKind::Team, "Night shift", "Group", Some("g7")),
            fields: vec![
                labelled(
                    field(
                        "members",
                        Some(json!(["Practitioner/pa"])),
                        Some(json!([])),
                        None
                    ),
                    &[LABEL_A]
                ),
                field(
                    "name",
                    Some(json!("Night shift")),
                    Some(json!("zz-retired Night shift")),
                    None
                ),
                field(
                    "responsibilities",
                    Some(json!([PAYMENTS])),
                    Some(json!([])),
                    None
                ),
            ],
            reason: reason(
                ReasonCode::Retire,
                None,
                "retire: no longer declared, --prune was given, and the target has no DELETE (emptied and renamed instead)"
            ),
            operation: Operation::Object,
            precondition: canvas_seen(),
            notes: vec![],
        }
    );
    // a team already empty only changes its name
    let empty = plain_team("g8", "Weekend", &[], &[]);
    let observed = observed_from(&d, &[empty]);
    let r = run(&[], &observed, &d, prune());
    assert_eq!(
        only_change(&r).fields,
        vec![field(
            "name",
            Some(json!("Weekend")),
            Some(json!("zz-retired Weekend")),
            None
        )]
    );
    // a team already retired is not managed any more: not retired again, not an orphan
    let retired = plain_team("g9", "zz-retired Old", &[], &[]);
    let observed = observed_from(&d, &[retired]);
    let r = run(&[], &observed, &d, prune());
    assert_eq!((r.changes, r.orphans), (vec![], vec![]));
}

#[test]
fn on_canvas_without_prune_a_managed_team_is_an_orphan_and_without_manage_all_teams_nothing() {
    let live = plain_team("g7", "Night shift", &[], &[]);
    let managed = Canvas::new("zz-retired ", true);
    let observed = observed_from(&managed, std::slice::from_ref(&live));
    let r = run(&[], &observed, &managed, Options::default());
    assert_eq!(r.changes, vec![]);
    assert_eq!(
        r.orphans,
        vec![Orphan {
            target: target(ObjectKind::Team, "Night shift", "Group", Some("g7"))
        }]
    );
    let unmanaged = Canvas::default();
    let observed = observed_from(&unmanaged, &[live]);
    let r = run(&[], &observed, &unmanaged, prune());
    assert_eq!((r.changes, r.orphans), (vec![], vec![]));
}

#[test]
fn canvas_creates_are_not_conditional_and_are_checked_by_name_while_r4_creates_are() {
    let (r4, canvas) = (R4::default(), Canvas::default());
    assert!(r4.capabilities().target().conditional_create);
    assert!(!canvas.capabilities().target().conditional_create);
    let q = r4.find_query(PROJECT, ObjectKind::Team, "front-desk");
    assert_eq!(q.resource_type, "Group");
    assert_eq!(
        q.params,
        vec![
            (
                "identifier".to_owned(),
                "https://careplane.dev/id/clinic|team/front-desk".to_owned()
            ),
            (
                "_tag".to_owned(),
                "https://careplane.dev/project|clinic".to_owned()
            ),
        ]
    );
    let q = canvas.find_query(PROJECT, ObjectKind::Team, "front-desk");
    assert_eq!(
        (q.resource_type.as_str(), q.params),
        (
            "Group",
            vec![("type".to_owned(), "practitioner".to_owned())]
        )
    );
    let q = canvas.find_query(PROJECT, ObjectKind::PatientGroup, "diabetes");
    assert_eq!(q.params, vec![("type".to_owned(), "person".to_owned())]);
    let fields = Fields::from([("name".to_owned(), json!("Front Desk"))]);
    assert!(canvas.capabilities().same_object(
        ObjectKind::Team,
        &fields,
        &plain_team("g", "Front Desk", &[], &[])
    ));
    assert!(!canvas.capabilities().same_object(
        ObjectKind::Team,
        &fields,
        &plain_team("g", "Billing", &[], &[])
    ));
    // R4's identifier search already narrows it down
    assert!(r4.capabilities().same_object(
        ObjectKind::Team,
        &fields,
        &plain_team("g", "Billing", &[], &[])
    ));
    // and a create on either target must find the object still absent
    let observed = observed_from(&canvas, &[canvas_practitioner("pa", NPI_A, &[])]);
    let r = run(
        &desired_of(&canvas, &front_desk(), &observed),
        &observed,
        &canvas,
        Options::default(),
    );
    let c = only_change(&r);
    assert_eq!((c.action, &c.precondition), (Action::Create, &absent()));
}

// ---------------------------------------------------------------------------------------
// Identity: owned, foreign, look-alike

#[test]
fn r4_owns_only_resources_with_this_projects_tag_and_identifier() {
    let d = R4::default();
    // this project's identifier is not enough: without its tag the Group is not ours
    let mut untagged = r4_team("g6", "night", "Night", &[], &[]);
    untagged["meta"]["tag"] = json!([]);
    let mut tagged_elsewhere = r4_team("g8", "late", "Late", &[], &[]);
    tagged_elsewhere["meta"]["tag"][0]["code"] = json!("other-clinic");
    let observed = observed_from(
        &d,
        &[
            r4_team("g1", "front-desk", "Front Desk", &[], &[]),
            r4_team_of("other-clinic", "g2", "front-desk", "Front Desk", &[], &[]),
            plain_team("g3", "Billing", &[], &[]),
            json!({"resourceType": "Group", "id": "g4", "type": "practitioner"}),
            json!({"resourceType": "Group", "id": "g5", "type": "person", "name": "Diabetes"}),
            untagged,
            tagged_elsewhere,
        ],
    );
    let owned: Vec<(ObjectKind, Option<&str>, &str, bool)> = observed
        .objects
        .iter()
        .map(|o| (o.kind, o.name.as_deref(), o.id.as_str(), o.managed))
        .collect();
    assert_eq!(
        owned,
        vec![(ObjectKind::Team, Some("front-desk"), "g1", true)]
    );
    let foreign: Vec<(ObjectKind, &str, &str)> = observed
        .foreign
        .iter()
        .map(|f| (f.kind, f.natural_key.as_str(), f.id.as_str()))
        .collect();
    assert_eq!(
        foreign,
        vec![
            (ObjectKind::Team, "Front Desk", "g2"),
            (ObjectKind::Team, "Billing", "g3"),
            (ObjectKind::PatientGroup, "Diabetes", "g5"),
            (ObjectKind::Team, "Night", "g6"),
            (ObjectKind::Team, "Late", "g8"),
        ]
    );
}

#[test]
fn another_projects_team_is_a_look_alike_that_stops_the_plan_and_is_never_deleted() {
    let theirs = r4_team_of("other-clinic", "g2", "front-desk", "Front Desk", &[], &[]);
    let d = plan_r4(&front_desk(), &with_staff(vec![theirs]), prune());
    assert_eq!(d.changes, vec![]);
    assert_eq!(d.orphans, vec![]);
    assert_eq!(
        d.errors
            .iter()
            .map(|e| e.message.as_str())
            .collect::<Vec<_>>(),
        vec![
            "Group/g2 is already named 'Front Desk' on the target and is not managed by careplane"
        ]
    );
}

#[test]
fn a_look_alike_of_another_kind_does_not_block_a_create() {
    // a patient group named like the team is not the team
    let group =
        json!({"resourceType": "Group", "id": "g5", "type": "person", "name": "Front Desk"});
    let d = plan_r4(&front_desk(), &with_staff(vec![group]), Options::default());
    let c = only_change(&d);
    assert_eq!(
        (c.action, &c.target),
        (
            Action::Create,
            &target(ObjectKind::Team, "front-desk", "Group", None)
        )
    );
}

#[test]
fn on_r4_an_owned_team_is_matched_by_manifest_name_so_a_display_rename_is_an_update() {
    let live = r4_team(
        "g1",
        "front-desk",
        "Reception",
        &["Practitioner/pa"],
        &[PAYMENTS],
    );
    let d = plan_r4(&front_desk(), &with_staff(vec![live]), Options::default());
    let c = only_change(&d);
    assert_eq!(c.action, Action::Update);
    assert_eq!(
        c.target,
        target(ObjectKind::Team, "front-desk", "Group", Some("g1"))
    );
    assert_eq!(
        c.fields,
        vec![field(
            "name",
            Some(json!("Reception")),
            Some(json!("Front Desk")),
            Some(3)
        )]
    );
    assert_eq!(c.reason.rule, "live team differs from its manifest in name");
}

#[test]
fn on_canvas_a_team_is_matched_by_its_name_so_a_rename_is_a_new_team() {
    let d = Canvas::default();
    let staff = canvas_practitioner("pa", NPI_A, &[]);
    let same = plain_team("g1", "Front Desk", &["Practitioner/pa"], &[PAYMENTS]);
    let observed = observed_from(&d, &[staff.clone(), same]);
    let r = run(
        &desired_of(&d, &front_desk(), &observed),
        &observed,
        &d,
        Options::default(),
    );
    let c = only_change(&r);
    assert_eq!(
        (c.action, &c.target, &c.precondition),
        (
            Action::NoOp,
            &target(ObjectKind::Team, "front-desk", "Group", Some("g1")),
            &canvas_seen()
        )
    );
    let renamed = plain_team("g1", "Reception", &["Practitioner/pa"], &[]);
    let observed = observed_from(&d, &[staff.clone(), renamed]);
    let r = run(
        &desired_of(&d, &front_desk(), &observed),
        &observed,
        &d,
        Options::default(),
    );
    let c = only_change(&r);
    assert_eq!(
        (c.action, &c.target),
        (
            Action::Create,
            &target(ObjectKind::Team, "front-desk", "Group", None)
        )
    );
    // renamed while holding an exclusive value: the old team is another team holding it
    let renamed = plain_team("g1", "Reception", &["Practitioner/pa"], &[PAYMENTS]);
    let observed = observed_from(&d, &[staff, renamed]);
    let r = run(
        &desired_of(&d, &front_desk(), &observed),
        &observed,
        &d,
        Options::default(),
    );
    assert_eq!(
        r.errors
            .iter()
            .map(|e| e.message.as_str())
            .collect::<Vec<_>>(),
        vec![format!(
            "responsibilities value {PAYMENTS} is held by team 'Reception' (Group/g1), which these manifests do not declare, and the target allows one holder"
        )]
    );
}

#[test]
fn the_identity_flag_alone_decides_whether_a_live_team_matches() {
    // owned under another manifest name, with the declared display name
    let live = r4_team(
        "g1",
        "reception",
        "Front Desk",
        &["Practitioner/pa"],
        &[PAYMENTS],
    );
    let by_name = R4::default();
    let observed = observed_from(&by_name, &with_staff(vec![live.clone()]));
    let r = run(
        &desired_of(&by_name, &front_desk(), &observed),
        &observed,
        &by_name,
        Options::default(),
    );
    assert_eq!(
        r.changes
            .iter()
            .map(|c| (c.action, c.target.id.clone()))
            .collect::<Vec<_>>(),
        vec![(Action::Create, None)]
    );
    assert_eq!(
        r.orphans,
        vec![Orphan {
            target: target(ObjectKind::Team, "reception", "Group", Some("g1"))
        }]
    );
    let by_key = r4_with(ObjectKind::Team, |c| c.identity = Identity::NaturalKey);
    let observed = observed_from(&by_key, &with_staff(vec![live]));
    let r = run(
        &desired_of(&by_key, &front_desk(), &observed),
        &observed,
        &by_key,
        Options::default(),
    );
    let c = only_change(&r);
    assert_eq!(
        (c.action, &c.target),
        (
            Action::NoOp,
            &target(ObjectKind::Team, "front-desk", "Group", Some("g1"))
        )
    );
}

#[test]
fn two_live_objects_claiming_one_manifest_object_stop_the_plan_and_neither_is_orphaned() {
    let a = r4_team("g1", "front-desk", "Front Desk", &[], &[]);
    let b = r4_team("g2", "front-desk", "Front Desk", &[], &[]);
    let d = plan_r4(&front_desk(), &with_staff(vec![a, b]), prune());
    assert_eq!(d.changes, vec![]);
    assert_eq!(d.orphans, vec![]);
    assert_eq!(
        d.errors,
        vec![Diagnostic {
            source: at(3),
            message: "team 'front-desk' matches 2 resources on the target (Group/g1, Group/g2)"
                .into(),
            help: Some(
                "remove or rename the duplicates on the server (keep one), then plan again".into()
            ),
        }]
    );
}

// ---------------------------------------------------------------------------------------
// Canvas checklist items verified by use, and roles still to be created by hand

#[test]
fn a_canvas_role_seen_in_use_is_a_no_op_that_says_what_shows_it() {
    let d = Canvas::default();
    let mut s = state(vec![]);
    s.roles.push(physician());
    let observed = observed_from(&d, &[canvas_practitioner("pa", NPI_A, &["MD"])]);
    let r = run(
        &desired_of(&d, &s, &observed),
        &observed,
        &d,
        Options::default(),
    );
    assert_eq!(
        only_change(&r),
        &Change {
            action: Action::NoOp,
            target: target(ObjectKind::Role, "physician", "Settings/Role", Some("MD")),
            fields: vec![],
            reason: reason(
                ReasonCode::Matches,
                Some(2),
                "seen on the target: role code MD is held by 1 staff member(s); the rest of the role's definition cannot be read through Canvas's API"
            ),
            operation: Operation::Object,
            precondition: Precondition::default(),
            notes: vec![],
        }
    );
}

#[test]
fn a_canvas_role_assignment_needing_a_role_not_yet_created_says_so() {
    let d = Canvas::default();
    let mut s = state(vec![]);
    s.roles.push(physician());
    s.assignments.push(RoleAssignment {
        name: "dr-a".into(),
        practitioner: located(PractitionerRef::Npi(NPI_A.into()), 11),
        roles: vec![located("physician".to_owned(), 12)],
        source: at(10),
    });
    let observed = observed_from(&d, &[canvas_practitioner("pa", NPI_A, &["MA"])]);
    let r = run(
        &desired_of(&d, &s, &observed),
        &observed,
        &d,
        Options::default(),
    );
    assert_eq!(r.errors, vec![]);
    let summary: Vec<(Action, ObjectKind, &str)> = r
        .changes
        .iter()
        .map(|c| (c.action, c.target.kind, c.target.name.as_str()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (Action::Manual, ObjectKind::Role, "physician"),
            (Action::Update, ObjectKind::RoleAssignment, "dr-a"),
        ]
    );
    assert_eq!(
        r.changes[1],
        Change {
            action: Action::Update,
            target: target(ObjectKind::RoleAssignment, "dr-a", "Practitioner", Some("pa")),
            fields: vec![field("roles", Some(json!(["MA"])), Some(json!(["MD"])), Some(12))],
            reason: reason(ReasonCode::Differs, Some(10), "live role assignment differs from its manifest in roles"),
            operation: Operation::Object,
            precondition: canvas_seen(),
            notes: vec![
                "needs role MD ('physician'), which the target does not show yet: create it first (manual checklist), or this write will be refused".into()
            ],
        }
    );
}

// ---------------------------------------------------------------------------------------
// Exclusive fields: release before take

fn intake_and_billing() -> DesiredState {
    state(vec![
        team("intake", "Intake", &[], &[]),
        team(
            "billing",
            "Billing",
            &[],
            &[Responsibility::CollectPatientPayments],
        ),
    ])
}

#[test]
fn an_exclusive_value_moving_between_declared_teams_is_released_before_it_is_taken() {
    let d = Canvas::default();
    let observed = observed_from(
        &d,
        &[
            plain_team("g1", "Intake", &[], &[PAYMENTS]),
            plain_team("g2", "Billing", &[], &[]),
        ],
    );
    let r = run(
        &desired_of(&d, &intake_and_billing(), &observed),
        &observed,
        &d,
        Options::default(),
    );
    assert_eq!(r.errors, vec![]);
    assert_eq!(
        r.changes,
        vec![
            Change {
                action: Action::Update,
                target: target(ObjectKind::Team, "billing", "Group", Some("g2")),
                fields: vec![field(
                    "responsibilities",
                    Some(json!([])),
                    Some(json!([PAYMENTS])),
                    Some(5)
                )],
                reason: reason(
                    ReasonCode::Differs,
                    Some(3),
                    "live team differs from its manifest in responsibilities"
                ),
                operation: Operation::Object,
                precondition: canvas_seen(),
                notes: vec![format!(
                    "takes \"{PAYMENTS}\" (responsibilities) after 'intake' has released it"
                )],
            },
            Change {
                action: Action::Update,
                target: target(ObjectKind::Team, "intake", "Group", Some("g1")),
                fields: vec![field(
                    "responsibilities",
                    Some(json!([PAYMENTS])),
                    Some(json!([])),
                    Some(3)
                )],
                reason: reason(
                    ReasonCode::Differs,
                    Some(3),
                    "live team differs from its manifest in responsibilities"
                ),
                operation: Operation::Object,
                precondition: canvas_seen(),
                notes: vec![format!(
                    "releases \"{PAYMENTS}\" (responsibilities) first, so that 'billing' can take it"
                )],
            },
        ]
    );
    // apply's first write for the releasing team keeps what it keeps and gives up the rest
    let exclusive = d.capabilities().of(ObjectKind::Team).unwrap().exclusive;
    assert_eq!(exclusive, &["responsibilities"]);
    assert_eq!(
        crate::apply::released(&r.changes[1], exclusive),
        BTreeMap::from([(
            "responsibilities".to_owned(),
            (vec![], vec![json!(PAYMENTS)])
        )])
    );
    assert_eq!(
        crate::apply::released(&r.changes[0], exclusive),
        BTreeMap::new()
    );
    assert_eq!(crate::apply::released(&r.changes[1], &[]), BTreeMap::new());
}

#[test]
fn without_exclusive_fields_the_same_move_carries_no_ordering_notes() {
    let d = R4::default();
    let observed = observed_from(
        &d,
        &[
            r4_team("g1", "intake", "Intake", &[], &[PAYMENTS]),
            r4_team("g2", "billing", "Billing", &[], &[]),
        ],
    );
    let r = run(
        &desired_of(&d, &intake_and_billing(), &observed),
        &observed,
        &d,
        Options::default(),
    );
    assert_eq!(
        r.changes
            .iter()
            .map(|c| (c.action, c.target.name.as_str(), c.notes.len()))
            .collect::<Vec<_>>(),
        vec![
            (Action::Update, "billing", 0),
            (Action::Update, "intake", 0)
        ]
    );
}

#[test]
fn an_exclusive_value_held_by_a_team_the_manifests_do_not_declare_stops_the_plan() {
    let d = Canvas::default();
    let observed = observed_from(
        &d,
        &[
            plain_team("g2", "Billing", &[], &[]),
            plain_team("g3", "Legacy", &[], &[PAYMENTS]),
        ],
    );
    let s = state(vec![team(
        "billing",
        "Billing",
        &[],
        &[Responsibility::CollectPatientPayments],
    )]);
    let r = run(
        &desired_of(&d, &s, &observed),
        &observed,
        &d,
        Options::default(),
    );
    assert_eq!(
        r.errors,
        vec![Diagnostic {
            source: at(5),
            message: format!("responsibilities value {PAYMENTS} is held by team 'Legacy' (Group/g3), which these manifests do not declare, and the target allows one holder"),
            help: Some("declare that team here too, take the value off it on the target, or set manageAllTeams and plan with --prune to retire it".into()),
        }]
    );
}

// ---------------------------------------------------------------------------------------
// Order of the plan

#[test]
fn changes_come_out_catalogs_first_then_teams_then_assignments() {
    let mut s = front_desk();
    s.roles.push(physician());
    s.assignments.push(RoleAssignment {
        name: "dr-a".into(),
        practitioner: located(PractitionerRef::Npi(NPI_A.into()), 11),
        roles: vec![located("physician".to_owned(), 12)],
        source: at(10),
    });
    s.patient_groups
        .push(patient_group("diabetes", MembershipMode::Additive));
    let d = plan_r4(&s, &staff_ab(), Options::default());
    assert_eq!(
        d.changes
            .iter()
            .map(|c| (c.action, c.target.kind, c.target.name.as_str()))
            .collect::<Vec<_>>(),
        vec![
            (Action::Create, ObjectKind::RoleCatalog, "roles"),
            (Action::Create, ObjectKind::Team, "front-desk"),
            (Action::Create, ObjectKind::PatientGroup, "diabetes"),
            (Action::Create, ObjectKind::RoleAssignment, "dr-a"),
        ]
    );
    let levels: Vec<u8> = d.changes.iter().map(|c| c.target.kind.level()).collect();
    assert_eq!(levels, vec![0, 1, 1, 2]);
    assert_eq!(
        d.changes[3].fields,
        vec![
            field("active", None, Some(json!(true)), Some(10)),
            labelled(
                field(
                    "practitioner",
                    None,
                    Some(json!("Practitioner/pa")),
                    Some(11)
                ),
                &[LABEL_A]
            ),
            field("roles", None, Some(json!(["MD"])), Some(12)),
        ]
    );
}

// ---------------------------------------------------------------------------------------
// Patient groups and the blast-radius guard

fn patient_group(name: &str, mode: MembershipMode) -> PatientGroup {
    PatientGroup {
        name: name.into(),
        display_name: "Diabetes".into(),
        mode,
        max_removal_share: 0.2,
        rule: None,
        include: vec![],
        exclude: vec![],
        max_deviation: Default::default(),
        source: at(40),
    }
}

fn patients(ids: std::ops::RangeInclusive<u32>) -> Vec<String> {
    ids.map(|i| format!("Patient/p{i:02}")).collect()
}

fn r4_patient_group(id: &str, members: &[String]) -> Value {
    json!({"resourceType": "Group", "id": id, "type": "person", "actual": true, "name": "Diabetes",
           "meta": {"versionId": "2", "lastUpdated": "2026-01-02T03:04:05Z",
                    "tag": [{"system": r4::TAG_SYSTEM, "code": PROJECT}]},
           "identifier": [{"system": r4::id_system(PROJECT), "value": "patient-group/diabetes"}],
           "member": Value::Array(members.iter().map(|m| json!({"entity": {"reference": m}})).collect())})
}

/// Plan a group whose rule now selects `wanted` against a live group holding `live`.
fn plan_group(
    mode: MembershipMode,
    live: &[String],
    wanted: &[String],
    opts: Options,
) -> DiffResult {
    let d = R4::default();
    let mut s = state(vec![]);
    if !wanted.is_empty() || !opts.prune {
        s.patient_groups.push(patient_group("diabetes", mode));
    }
    let observed = observed_from(&d, &[r4_patient_group("g1", live)]);
    let groups = Memberships::from([(
        "diabetes".to_owned(),
        wanted.iter().cloned().collect::<BTreeSet<String>>(),
    )]);
    let desired = d.desired(&s, &observed.staff, &groups).unwrap();
    run(&desired, &observed, &d, opts)
}

fn plan_of(changes: Vec<Change>) -> Plan {
    let d = R4::default();
    Plan::new(
        PROJECT,
        TargetInfo {
            name: "test".into(),
            dialect: "fhir-r4".into(),
            endpoint: "memory".into(),
        },
        PlanCapability::from_table(d.capabilities()),
        "sha256:test",
        false,
        changes,
        vec![],
    )
}

#[test]
fn an_authoritative_group_losing_members_is_an_update_with_counts_and_sealed_lists() {
    let (live, wanted) = (patients(1..=10), patients(1..=7));
    let d = plan_group(
        MembershipMode::Authoritative,
        &live,
        &wanted,
        Options::default(),
    );
    let c = only_change(&d);
    assert_eq!(c.action, Action::Update);
    assert_eq!(
        c.target,
        target(ObjectKind::PatientGroup, "diabetes", "Group", Some("g1"))
    );
    assert_eq!(
        c.reason,
        reason(
            ReasonCode::Differs,
            Some(40),
            "live patient group differs from its manifest in members"
        )
    );
    assert_eq!(c.precondition, r4_seen("2"));
    assert_eq!(c.fields.len(), 1);
    let f = &c.fields[0];
    assert_eq!(
        (f.field.as_str(), &f.before, &f.after, &f.source),
        (
            "members",
            &Some(json!({"count": 10})),
            &Some(json!({"count": 7})),
            &Some(at(40))
        )
    );
    let m = f.membership.as_ref().expect("a membership delta");
    assert_eq!(
        (
            m.mode.as_str(),
            m.before,
            m.after,
            m.added,
            m.removed,
            m.kept,
            m.max_removal_share
        ),
        ("authoritative", 10, 7, 0, 3, 7, 0.2)
    );
    let p = pseudo();
    assert_eq!(
        m.sample_removed,
        patients(8..=10)
            .iter()
            .map(|r| p.pseudonym(r).unwrap())
            .collect::<Vec<_>>()
    );
    assert_eq!(m.sample_added, Vec::<String>::new());
    assert_eq!(m.digest_before, p.digest(&live.iter().cloned().collect()));
    assert_eq!(m.digest_after, p.digest(&wanted.iter().cloned().collect()));
    assert_eq!(
        f.sealed.as_deref(),
        Some(&(Some(json!(live)), Some(json!(wanted))))
    );
    // the plan as written never names a patient
    let text = serde_json::to_string(c).unwrap();
    assert!(!text.contains("Patient/"), "{text}");
}

#[test]
fn the_blast_radius_guard_refuses_a_group_losing_more_than_its_share() {
    let d = plan_group(
        MembershipMode::Authoritative,
        &patients(1..=10),
        &patients(1..=7),
        Options::default(),
    );
    let plan = plan_of(d.changes);
    match crate::ops::check_blast_radius(&plan, false) {
        Err(OpsError::BlastRadius {
            target,
            removed,
            before,
            share,
            limit,
        }) => {
            assert_eq!(target, "patient group 'diabetes' (Group/g1)");
            assert_eq!((removed, before), (3, 10));
            assert!((share - 30.0).abs() < 1e-9 && (limit - 20.0).abs() < 1e-9);
        }
        other => panic!("expected the guard to refuse, got {other:?}"),
    }
    assert!(crate::ops::check_blast_radius(&plan, true).is_ok());
}

#[test]
fn plan_out_warns_of_what_a_saved_plan_will_not_apply_as_it_is() {
    // a removal over the group's limit: apply will hold that rule's effects back
    let d = plan_group(
        MembershipMode::Authoritative,
        &patients(1..=10),
        &patients(1..=7),
        Options::default(),
    );
    let plan = plan_of(d.changes);
    let mut m = manifests(DesiredState::default());
    let why = crate::ops::unappliable(&plan, &m, false);
    assert_eq!(why.len(), 1, "{why:?}");
    assert!(
        why[0].contains("holds this rule's effects back (exit 3)"),
        "{why:?}"
    );
    // a project with several targets, planned without naming one
    let target = |path: &str| serde_json::from_value(json!({"type": "file", "path": path}));
    m.project.targets.insert("a".into(), target("a").unwrap());
    m.project.targets.insert("b".into(), target("b").unwrap());
    let quiet = plan_of(vec![]);
    let why = crate::ops::unappliable(&quiet, &m, false);
    assert_eq!(why.len(), 1, "{why:?}");
    assert!(why[0].contains("no --target was given"), "{why:?}");
    // naming the target (or one target only) leaves nothing to warn of
    assert!(crate::ops::unappliable(&quiet, &m, true).is_empty());
    m.project.targets.remove("b");
    assert!(crate::ops::unappliable(&quiet, &m, false).is_empty());
}

#[test]
fn the_blast_radius_guard_lets_a_removal_at_exactly_the_limit_through() {
    let d = plan_group(
        MembershipMode::Authoritative,
        &patients(1..=10),
        &patients(1..=8),
        Options::default(),
    );
    assert_eq!(
        d.changes[0].fields[0].membership.as_ref().unwrap().removed,
        2
    );
    assert!(crate::ops::check_blast_radius(&plan_of(d.changes), false).is_ok());
}

#[test]
fn an_additive_group_keeps_every_live_member_so_it_never_trips_the_guard() {
    let d = plan_group(
        MembershipMode::Additive,
        &patients(1..=10),
        &patients(1..=3),
        Options::default(),
    );
    let c = only_change(&d);
    assert_eq!((c.action, c.fields.len()), (Action::NoOp, 0));
    let d = plan_group(
        MembershipMode::Additive,
        &patients(1..=10),
        &patients(9..=12),
        Options::default(),
    );
    let c = only_change(&d);
    assert_eq!(c.action, Action::Update);
    let m = c.fields[0].membership.as_ref().unwrap();
    assert_eq!(
        (m.mode.as_str(), m.before, m.after, m.added, m.removed),
        ("additive", 10, 12, 2, 0)
    );
    assert!(crate::ops::check_blast_radius(&plan_of(d.changes), false).is_ok());
}

#[test]
fn deleting_a_whole_group_with_prune_is_not_held_back_by_the_guard() {
    let d = plan_group(
        MembershipMode::Authoritative,
        &patients(1..=10),
        &[],
        prune(),
    );
    let c = only_change(&d);
    assert_eq!(c.action, Action::Delete);
    let members = c.fields.iter().find(|f| f.field == "members").unwrap();
    assert_eq!(members.membership.as_ref().unwrap().removed, 10);
    assert_eq!(members.before, Some(json!({"count": 10})));
    assert!(crate::ops::check_blast_radius(&plan_of(d.changes), false).is_ok());
}

// ---------------------------------------------------------------------------------------
// Care-team assignments (ops::care_team_changes)

fn manifests(desired: DesiredState) -> Manifests {
    Manifests {
        dir: PathBuf::from("."),
        desired,
        project: ProjectSpec {
            default_target: None,
            targets: BTreeMap::new(),
            checks: BTreeMap::new(),
            effects: None,
        },
        checksum: "sha256:test".into(),
        files: BTreeMap::new(),
        skipped: Vec::new(),
    }
}

/// A target whose store is never touched: only its dialect is read.
fn resolved(dialect: Box<dyn Dialect>) -> ResolvedTarget {
    ResolvedTarget {
        info: TargetInfo {
            name: "test".into(),
            dialect: dialect.name().into(),
            endpoint: "memory".into(),
        },
        store: crate::fhir::Store::File(crate::fhir::file::FileStore::new(
            "/nonexistent/careplane-unit-test",
        )),
        dialect,
        concurrency: 1,
        plugin_api: None,
        batch_size: 1,
    }
}

fn pcp_key() -> String {
    format!("{PCP_SYSTEM}|{PCP_CODE}")
}

/// A patient whose care teams have these participants as PCP, each the lead of its own
/// care team (the usual one-participant team).
fn patient(id: &str, care_team: &[(&str, Option<&str>)]) -> PatientFacts {
    let led: Vec<(&str, Option<&str>, bool)> =
        care_team.iter().map(|(w, o)| (*w, *o, true)).collect();
    patient_led(id, &led)
}

/// A patient with these PCP participants: (who, owning project, lead).
fn patient_led(id: &str, care_team: &[(&str, Option<&str>, bool)]) -> PatientFacts {
    PatientFacts {
        id: id.into(),
        care_team: care_team
            .iter()
            .map(|(who, owner, lead)| crate::rules::CareTeamFact {
                member: (*who).to_owned(),
                role: pcp_key(),
                owner: owner.map(str::to_owned),
                lead: *lead,
            })
            .collect(),
        ..PatientFacts::default()
    }
}

fn care_team_state(authoritative: bool, npi: &str) -> DesiredState {
    let mut s = state(vec![]);
    s.care_team_roles.push(CareTeamRole {
        name: "pcp".into(),
        system: PCP_SYSTEM.into(),
        code: PCP_CODE.into(),
        display: "Primary care provider".into(),
        source: at(15),
    });
    s.care_team_assignments.push(CareTeamAssignment {
        name: "dr-a-pcp".into(),
        practitioner: located(PractitionerRef::Npi(npi.into()), 20),
        role: "pcp".into(),
        group: Some("diabetes".into()),
        rule: None,
        lead: true,
        authoritative,
        max_removal_share: 0.2,
        max_deviation: Default::default(),
        source: at(18),
    });
    s
}

fn care_team_changes_of(
    s: DesiredState,
    dialect: Box<dyn Dialect>,
    patients: Vec<PatientFacts>,
    selected: &[&str],
) -> Result<Vec<Change>, Vec<Diagnostic>> {
    let m = manifests(s);
    let t = resolved(dialect);
    let mut observed = Observed {
        staff: StaffIndex::from_practitioners(&staff_ab()),
        ..Observed::default()
    };
    observed.patients = patients.into_iter().map(|p| (p.id.clone(), p)).collect();
    let memberships = Memberships::from([(
        "diabetes".to_owned(),
        selected.iter().map(|p| format!("Patient/{p}")).collect(),
    )]);
    let staff = |r: &PractitionerRef| {
        observed
            .staff
            .resolve(r)
            .ok()
            .map(|id| format!("Practitioner/{id}"))
    };
    let roles = BTreeMap::from([("pcp".to_owned(), pcp_key())]);
    crate::reconcile::care_teams::changes(
        &m.desired,
        t.dialect.as_ref(),
        &observed,
        &memberships,
        &pseudo(),
        &staff,
        &roles,
        crate::rules::today(),
    )
}

fn participant() -> FieldChange {
    labelled(
        field(
            "participant",
            None,
            Some(json!({
                "practitioner": "Practitioner/pa",
                "role": {"system": PCP_SYSTEM, "code": PCP_CODE, "display": "Primary care provider"},
                "lead": true,
                "authoritative": false,
            })),
            Some(20),
        ),
        &[LABEL_A],
    )
}

#[test]
fn an_additive_care_team_assignment_adds_the_selected_patients_and_leaves_others_roles_alone() {
    let changes = care_team_changes_of(
        care_team_state(false, NPI_A),
        Box::new(R4::default()),
        vec![
            patient("p1", &[("Practitioner/pa", Some(PROJECT))]),
            patient("p2", &[]),
            patient("p3", &[("Practitioner/pb", Some(PROJECT))]),
            patient("p4", &[]),
        ],
        &["p1", "p2", "p3"],
    )
    .unwrap();
    assert_eq!(changes.len(), 1);
    let c = &changes[0];
    assert_eq!(c.action, Action::Update);
    assert_eq!(
        c.target,
        target(ObjectKind::CareTeamAssignment, "dr-a-pcp", "CareTeam", None)
    );
    assert_eq!(
        c.target.to_string(),
        "care-team assignment 'dr-a-pcp' (CareTeam, per patient)"
    );
    assert_eq!(
        c.reason,
        reason(
            ReasonCode::CareTeamAssignment,
            Some(18),
            "care-team assignment 'dr-a-pcp': npi 1111111111 as Primary care provider for the selected patients"
        )
    );
    assert_eq!(c.precondition, Precondition::default());
    assert_eq!(
        c.notes,
        vec![
            "1 selected patient(s) have someone else as Primary care provider: left alone (authoritative: false)"
        ]
    );
    assert_eq!(c.fields.len(), 2);
    let p = &c.fields[0];
    assert_eq!(
        (p.field.as_str(), &p.before, &p.after, &p.source),
        (
            "patients",
            &Some(json!({"count": 1})),
            &Some(json!({"count": 2})),
            &Some(at(18))
        )
    );
    let m = p.membership.as_ref().unwrap();
    assert_eq!(
        (
            m.mode.as_str(),
            m.before,
            m.after,
            m.added,
            m.removed,
            m.kept,
            m.max_removal_share
        ),
        ("additive", 1, 2, 1, 0, 1, 0.2)
    );
    assert_eq!(
        p.sealed,
        Some(Box::new((
            Some(json!(["Patient/p1"])),
            Some(json!(["Patient/p1", "Patient/p2"]))
        )))
    );
    assert_eq!(c.fields[1], participant());
}

#[test]
fn an_authoritative_care_team_assignment_takes_the_role_from_others_and_off_unselected_patients() {
    let changes = care_team_changes_of(
        care_team_state(true, NPI_A),
        Box::new(R4::default()),
        vec![
            patient("p1", &[("Practitioner/pa", Some(PROJECT))]),
            patient("p2", &[]),
            patient("p3", &[("Practitioner/pb", Some(PROJECT))]),
            patient("p4", &[("Practitioner/pa", Some(PROJECT))]),
        ],
        &["p1", "p2", "p3"],
    )
    .unwrap();
    let c = &changes[0];
    assert_eq!((c.action, c.notes.len()), (Action::Update, 0));
    let m = c.fields[0].membership.as_ref().unwrap();
    assert_eq!(
        (
            m.mode.as_str(),
            m.before,
            m.after,
            m.added,
            m.removed,
            m.kept
        ),
        ("authoritative", 2, 3, 2, 1, 1)
    );
    assert_eq!(
        c.fields[0].sealed,
        Some(Box::new((
            Some(json!(["Patient/p1", "Patient/p4"])),
            Some(json!(["Patient/p1", "Patient/p2", "Patient/p3"]))
        )))
    );
    // p3 joins where pb led: a lead handover (pa still leads p1; p4, left, is a removal)
    let lead = &c.fields[1];
    assert_eq!(lead.field, crate::plan::LEAD_FIELD);
    assert_eq!(
        lead.sealed.as_deref().cloned(),
        Some((
            Some(json!(["Patient/p1"])),
            Some(json!(["Patient/p1", "Patient/p3"]))
        ))
    );
    assert_eq!(
        c.fields[2].after.as_ref().unwrap()["authoritative"],
        json!(true)
    );
    // one of two removed is over the 20% share: the guard holds it back
    assert!(matches!(
        crate::ops::check_blast_radius(&plan_of(changes), false),
        Err(OpsError::BlastRadius {
            removed: 1,
            before: 2,
            ..
        })
    ));
}

#[test]
fn a_care_team_assignment_every_selected_patient_already_has_is_a_no_op() {
    let changes = care_team_changes_of(
        care_team_state(false, NPI_A),
        Box::new(R4::default()),
        vec![patient("p1", &[("Practitioner/pa", Some(PROJECT))])],
        &["p1"],
    )
    .unwrap();
    assert_eq!(
        changes,
        vec![Change {
            action: Action::NoOp,
            target: target(ObjectKind::CareTeamAssignment, "dr-a-pcp", "CareTeam", None),
            fields: vec![],
            reason: reason(
                ReasonCode::CareTeamAssignment,
                Some(18),
                "every selected patient has npi 1111111111 as Primary care provider, and as the lead"
            ),
            operation: Operation::CareTeamParticipant(crate::plan::Participant {
                practitioner: "Practitioner/pa".into(),
                role: crate::plan::Coding {
                    system: PCP_SYSTEM.into(),
                    code: PCP_CODE.into(),
                    display: "Primary care provider".into(),
                },
                lead: true,
                authoritative: false,
            }),
            precondition: Precondition::default(),
            notes: vec![],
        }]
    );
}

const CARDIO: &str = "http://snomed.info/sct|17561000";

/// A care-team participant fact: (who, role `system|code`, lead), on an untagged (Canvas)
/// care team.
fn member(who: &str, role: &str, lead: bool) -> crate::rules::CareTeamFact {
    crate::rules::CareTeamFact {
        member: who.into(),
        role: role.into(),
        owner: None,
        lead,
    }
}

fn with_team(id: &str, team: Vec<crate::rules::CareTeamFact>) -> PatientFacts {
    PatientFacts {
        id: id.into(),
        care_team: team,
        ..PatientFacts::default()
    }
}

/// The `lead` list field of a care-team change: (before, after, added, samples).
fn lead_field(c: &Change) -> Option<(usize, usize, usize, usize)> {
    c.fields
        .iter()
        .find(|f| f.field == crate::plan::LEAD_FIELD)
        .and_then(|f| f.membership.as_ref())
        .map(|m| (m.before, m.after, m.added, m.sample_added.len()))
}

#[test]
fn a_lead_assignment_whose_participant_is_on_the_team_but_not_lead_plans_a_handover() {
    // Canvas (every active care team counts): p1 led by pb (cardiology), pa PCP but not
    // lead; p2 has pa as PCP and nobody leads; p3 pa already leads
    let changes = care_team_changes_of(
        care_team_state(false, NPI_A),
        Box::new(Canvas::default()),
        vec![
            with_team(
                "p1",
                vec![
                    member("Practitioner/pb", CARDIO, true),
                    member("Practitioner/pa", &pcp_key(), false),
                ],
            ),
            with_team("p2", vec![member("Practitioner/pa", &pcp_key(), false)]),
            with_team(
                "p3",
                vec![
                    member("Practitioner/pa", &pcp_key(), true),
                    member("Practitioner/pb", CARDIO, false),
                ],
            ),
        ],
        &["p1", "p2", "p3"],
    )
    .unwrap();
    let c = &changes[0];
    assert_eq!(c.action, Action::Update);
    assert_eq!(
        c.reason,
        reason(
            ReasonCode::CareTeamLead,
            Some(18),
            "care-team assignment 'dr-a-pcp' makes npi 1111111111 the lead: 2 lead handover(s) on care teams where they are Primary care provider already, but someone else leads or nobody does"
        )
    );
    // nobody joins or leaves; p1 and p2 are handed over, p3 stays led
    let m = c.fields[0].membership.as_ref().unwrap();
    assert_eq!((m.before, m.after, m.added, m.removed), (3, 3, 0, 0));
    assert_eq!(lead_field(c), Some((1, 3, 2, 2)));
    let lead = &c.fields[1];
    assert_eq!(
        lead.sealed.as_deref().cloned(),
        Some((
            Some(json!(["Patient/p3"])),
            Some(json!(["Patient/p1", "Patient/p2", "Patient/p3"]))
        ))
    );
    // the preview counts them apart from adds and removes, pseudonymised
    let e = crate::plan::preview(&changes, &|_, _| Default::default());
    assert_eq!(e.len(), 1);
    assert_eq!((e[0].adds, e[0].removes, e[0].lead_handovers), (0, 0, 2));
    let pt = |p: &str| pseudo().pseudonym(p).unwrap();
    assert_eq!(
        e[0].sample_lead_handovers,
        vec![pt("Patient/p1"), pt("Patient/p2")]
    );
    assert!(e[0].sample_added.is_empty());
    // a handover removes nobody: the blast-radius guard lets it through
    assert!(crate::reconcile::effects::over_removal_limit(&changes, false).is_empty());
}

#[test]
fn a_lead_assignment_already_lead_everywhere_plans_nothing() {
    let changes = care_team_changes_of(
        care_team_state(false, NPI_A),
        Box::new(Canvas::default()),
        vec![with_team(
            "p1",
            vec![
                member("Practitioner/pa", &pcp_key(), true),
                member("Practitioner/pb", CARDIO, false),
            ],
        )],
        &["p1"],
    )
    .unwrap();
    assert_eq!(changes[0].action, Action::NoOp);
    assert!(crate::plan::preview(&changes, &|_, _| Default::default()).is_empty());
}

#[test]
fn joining_as_lead_hands_over_only_where_someone_else_leads() {
    // p1: pb leads (cardiology), pa joins as PCP and lead: an add and a handover;
    // p2: nobody on the team, pa joins as lead: an add only
    let facts = || {
        vec![
            with_team("p1", vec![member("Practitioner/pb", CARDIO, true)]),
            with_team("p2", vec![]),
        ]
    };
    let changes = care_team_changes_of(
        care_team_state(false, NPI_A),
        Box::new(Canvas::default()),
        facts(),
        &["p1", "p2"],
    )
    .unwrap();
    let c = &changes[0];
    assert_eq!(c.reason.code, ReasonCode::CareTeamAssignment);
    assert!(
        c.reason.rule.ends_with(", and as the lead: 1 lead handover(s), where someone else leads or they are on the team but not the lead"),
        "{}",
        c.reason.rule
    );
    assert_eq!(lead_field(c), Some((0, 1, 1, 1)));
    let e = crate::plan::preview(&changes, &|_, _| Default::default());
    assert_eq!((e[0].adds, e[0].removes, e[0].lead_handovers), (2, 0, 1));
    // without `lead: true`, joining takes nobody's lead
    let mut s = care_team_state(false, NPI_A);
    s.care_team_assignments[0].lead = false;
    let changes =
        care_team_changes_of(s, Box::new(Canvas::default()), facts(), &["p1", "p2"]).unwrap();
    assert_eq!(lead_field(&changes[0]), None);
    let e = crate::plan::preview(&changes, &|_, _| Default::default());
    assert_eq!((e[0].adds, e[0].lead_handovers), (2, 0));
}

#[test]
fn on_r4_only_careplanes_own_care_teams_count_as_holding_an_assignment_but_on_canvas_any_does() {
    // held on care teams without careplane's tag, or with another project's
    let facts = || {
        vec![
            patient("p1", &[("Practitioner/pa", None)]),
            patient("p2", &[("Practitioner/pa", Some("other-clinic"))]),
        ]
    };
    let r4 = care_team_changes_of(
        care_team_state(false, NPI_A),
        Box::new(R4::default()),
        facts(),
        &["p1", "p2"],
    )
    .unwrap();
    assert_eq!(r4[0].action, Action::Update);
    let m = r4[0].fields[0].membership.as_ref().unwrap();
    assert_eq!((m.before, m.added, m.after), (0, 2, 2));
    let canvas = care_team_changes_of(
        care_team_state(false, NPI_A),
        Box::new(Canvas::default()),
        facts(),
        &["p1", "p2"],
    )
    .unwrap();
    assert_eq!(canvas[0].action, Action::NoOp);
}

#[test]
fn a_care_team_assignment_for_staff_the_target_does_not_have_is_unplannable() {
    let err = care_team_changes_of(
        care_team_state(false, "9999999999"),
        Box::new(R4::default()),
        vec![],
        &[],
    )
    .unwrap_err();
    assert_eq!(
        err,
        vec![Diagnostic {
            source: at(20),
            message: "no single Practitioner on the target has npi 9999999999".into(),
            help: Some("careplane never creates staff: fix the reference".into()),
        }]
    );
}

// ---------------------------------------------------------------------------------------
// Task routing (ops::routing_objects, then diff)

fn routing_state(owner_npi: &str) -> DesiredState {
    let mut s = front_desk();
    s.routing_rules.push(RoutingRule {
        name: "refills".into(),
        order: 1,
        description: None,
        description_matches: Some("(?i)refill".into()),
        label: None,
        patient_group: None,
        team: Some("front-desk".into()),
        owner: Some(located(PractitionerRef::Npi(owner_npi.into()), 31)),
        add_labels: vec!["triaged".into()],
        mode: crate::model::rule::RoutingMode::Once,
        max_deviation: Default::default(),
        source: at(30),
    });
    s
}

fn task(
    id: &str,
    description: &str,
    labels: &[&str],
    team: Option<&str>,
    owner: Option<&str>,
) -> Value {
    let mut t = json!({"resourceType": "Task", "id": id, "status": "requested", "description": description,
        "meta": {"versionId": "3", "lastUpdated": "2026-01-02T03:04:05Z"},
        "input": labels.iter().map(|l| json!({"type": {"text": "label"}, "valueString": l})).collect::<Vec<_>>()});
    if let Some(g) = team {
        t["extension"] =
            json!([{"url": r4::TASK_TEAM_EXTENSION, "valueReference": {"reference": g}}]);
    }
    if let Some(o) = owner {
        t["owner"] = json!({"reference": o});
    }
    t
}

/// Routing planned the way `ops::plan_since` does: the dialect's desired objects plus the
/// routed tasks, diffed together.
fn plan_routing(
    s: DesiredState,
    resources: Vec<Value>,
) -> Result<(DiffResult, crate::reconcile::routing::Waiting), Vec<Diagnostic>> {
    let d = R4::default();
    let mut observed = observed_from(&d, &resources);
    observed.tasks = crate::rules::task_facts(&resources);
    let m = manifests(s);
    let t = resolved(Box::new(R4::default()));
    let memberships = Memberships::new();
    let (routed, waiting) = crate::reconcile::routing::objects(
        &m.desired,
        t.dialect.as_ref(),
        &observed,
        &memberships,
        false,
    )?;
    let mut desired = desired_of(&d, &m.desired, &observed);
    desired.extend(routed);
    Ok((run(&desired, &observed, &d, Options::default()), waiting))
}

#[test]
fn the_first_matching_routing_rule_sets_a_tasks_team_and_owner_and_adds_its_labels() {
    let (d, waiting) = plan_routing(
        routing_state(NPI_A),
        with_staff(vec![
            r4_team(
                "g1",
                "front-desk",
                "Front Desk",
                &["Practitioner/pa"],
                &[PAYMENTS],
            ),
            task("t1", "Refill request", &["urgent"], None, None),
            task("t2", "Lab results", &[], None, None),
        ]),
    )
    .unwrap();
    assert!(waiting.is_empty());
    assert_eq!(d.errors, vec![]);
    let routing: Vec<&Change> = d
        .changes
        .iter()
        .filter(|c| c.target.kind == ObjectKind::TaskRouting)
        .collect();
    assert_eq!(
        routing,
        vec![&Change {
            action: Action::Update,
            target: target(ObjectKind::TaskRouting, "Task/t1", "Task", Some("t1")),
            fields: vec![
                field(
                    "labels",
                    Some(json!(["urgent"])),
                    Some(json!(["triaged", "urgent"])),
                    Some(30)
                ),
                labelled(
                    field("owner", None, Some(json!("Practitioner/pa")), Some(30)),
                    &[LABEL_A]
                ),
                field("routedBy", None, Some(json!(PROJECT)), Some(30)),
                field("team", None, Some(json!("Group/g1")), Some(30)),
            ],
            reason: reason(
                ReasonCode::RoutingRule,
                Some(30),
                "routing rule 'refills' (order 1) is the first to match this open task; it sets labels, owner, routedBy, team"
            ),
            operation: Operation::RouteTask {
                rule: "refills".into(),
                order: 1,
            },
            precondition: r4_seen("3"),
            notes: vec![],
        }]
    );
    // the task that no rule matches is not touched, and the team itself is unchanged
    assert_eq!(
        d.changes
            .iter()
            .map(|c| (c.action, c.target.name.as_str()))
            .collect::<Vec<_>>(),
        vec![(Action::NoOp, "front-desk"), (Action::Update, "Task/t1")]
    );
}

/// Routing happens once per task (issue 10): a task that already has a team or an owner
/// was routed by someone and is left alone, whatever the rule says; in `mode: enforce` the
/// rule keeps it on its routing (here: already so, a no-op naming the rule).
#[test]
fn an_assigned_task_is_left_alone_and_in_enforce_mode_is_a_no_op_naming_the_rule() {
    let resources = || {
        with_staff(vec![
            r4_team(
                "g1",
                "front-desk",
                "Front Desk",
                &["Practitioner/pa"],
                &[PAYMENTS],
            ),
            task(
                "t1",
                "Refill request",
                &["triaged"],
                Some("Group/g1"),
                Some("Practitioner/pa"),
            ),
        ])
    };
    let (d, _) = plan_routing(routing_state(NPI_A), resources()).unwrap();
    assert!(
        d.changes
            .iter()
            .all(|c| c.target.kind != ObjectKind::TaskRouting),
        "{:#?}",
        d.changes
    );
    let mut enforce = routing_state(NPI_A);
    enforce.routing_rules[0].mode = crate::model::rule::RoutingMode::Enforce;
    let (d, _) = plan_routing(enforce, resources()).unwrap();
    let c = d
        .changes
        .iter()
        .find(|c| c.target.kind == ObjectKind::TaskRouting)
        .unwrap();
    // the mark is all that changes: the routing itself is already the rule's
    assert_eq!(c.action, Action::Update);
    assert_eq!(
        c.fields
            .iter()
            .map(|f| f.field.as_str())
            .collect::<Vec<_>>(),
        vec!["routedBy"]
    );
}

#[test]
fn a_task_careplane_routed_is_never_routed_again_even_after_a_person_re_routes_it() {
    // routed by careplane (marked), then moved by a person to another team, owner dropped
    let mut t = task(
        "t1",
        "Refill request",
        &["triaged"],
        Some("Group/other"),
        None,
    );
    crate::vocab::ownership::mark_routed(&mut t, PROJECT);
    let resources = with_staff(vec![
        r4_team(
            "g1",
            "front-desk",
            "Front Desk",
            &["Practitioner/pa"],
            &[PAYMENTS],
        ),
        t.clone(),
    ]);
    let (d, _) = plan_routing(routing_state(NPI_A), resources.clone()).unwrap();
    assert!(
        d.changes
            .iter()
            .all(|c| c.target.kind != ObjectKind::TaskRouting),
        "{:#?}",
        d.changes
    );
    // even a person clearing the team does not make careplane route it again
    t.as_object_mut().unwrap().remove("extension");
    let mut resources = resources;
    *resources.last_mut().unwrap() = t;
    let (d, _) = plan_routing(routing_state(NPI_A), resources).unwrap();
    assert!(
        d.changes
            .iter()
            .all(|c| c.target.kind != ObjectKind::TaskRouting)
    );
}

/// `routing_state`'s rules over `observed`, routed tasks diffed one at a time as the
/// planner does (`diff_streamed`): how many tasks were routed, and the diff.
fn diff_routed(observed: &crate::observe::Observed) -> (usize, DiffResult) {
    let d = R4::default();
    let m = manifests(routing_state(NPI_A));
    let (routed, _) =
        crate::reconcile::routing::routes(&m.desired, &d, observed, &Memberships::new(), false)
            .unwrap();
    let diff = diff::diff_streamed(
        &desired_of(&d, &m.desired, observed),
        &mut routed.iter().map(|r| r.object(&m.desired, observed, true)),
        observed,
        &d,
        Options::default(),
        &pseudo(),
    );
    (routed.len(), diff)
}

/// Open tasks as observe keeps them (compact, in `task_objects`) plan exactly as whole
/// observed objects do: routed ones are found (an update with the version seen, never a
/// create), marked and assigned ones are left alone, and routed tasks diffed one at a time
/// (`diff_streamed`) give the changes `diff` gives for all of them at once.
#[test]
fn compact_open_tasks_plan_as_whole_ones_do() {
    let mut marked = task("t3", "Refill request", &[], Some("Group/other"), None);
    crate::vocab::ownership::mark_routed(&mut marked, PROJECT);
    let resources = with_staff(vec![
        r4_team(
            "g1",
            "front-desk",
            "Front Desk",
            &["Practitioner/pa"],
            &[PAYMENTS],
        ),
        task("t1", "Refill request", &["urgent"], None, None),
        task("t2", "Refill please", &[], Some("Group/g9"), None),
        marked,
        task("t4", "Lab results", &[], None, None),
    ]);
    let (whole, _) = plan_routing(routing_state(NPI_A), resources.clone()).unwrap();
    let d = R4::default();
    let mut observed = observed_from(&d, &resources);
    observed.tasks = crate::rules::task_facts(&resources);
    let (tasks, others): (Vec<_>, Vec<_>) = std::mem::take(&mut observed.objects)
        .into_iter()
        .partition(|o| o.kind == ObjectKind::TaskRouting);
    observed.objects = others;
    observed.task_objects = tasks
        .into_iter()
        .map(crate::vocab::CompactObject::new)
        .collect();
    let (routed, compact) = diff_routed(&observed);
    assert_eq!(
        routed, 1,
        "t1 only: t2 is assigned, t3 marked, t4 matches no rule"
    );
    // streamed routing changes come folded, one per rule: unfolded, they are diff's
    assert_eq!(
        compact.changes.iter().map(Change::width).sum::<usize>(),
        whole.changes.len()
    );
    let unfolded: Vec<Change> = compact.changes.iter().flat_map(Change::unfolded).collect();
    assert_eq!(unfolded, whole.changes);
    assert_eq!(compact.errors, whole.errors);
    let c = unfolded
        .iter()
        .find(|c| c.target.kind == ObjectKind::TaskRouting)
        .unwrap();
    assert_eq!(
        (
            c.action,
            c.target.id.as_deref(),
            c.precondition.version_id.as_deref()
        ),
        (Action::Update, Some("t1"), Some("3"))
    );
}

/// A plan that routes many tasks holds one folded change per routing rule and shape
/// (`plan::fold`), not one per task: here 40 tasks, 10 of which had a label already (their
/// own values, same shape), fold into one change of width 40, and unfolded they are the
/// changes `diff` makes for all of them at once.
#[test]
fn many_routed_tasks_fold_into_one_change_per_rule() {
    let mut resources = vec![r4_team(
        "g1",
        "front-desk",
        "Front Desk",
        &["Practitioner/pa"],
        &[PAYMENTS],
    )];
    for i in 0..40 {
        let labels: &[&str] = if i % 4 == 0 { &["urgent"] } else { &[] };
        resources.push(task(
            &format!("t{i:02}"),
            "Refill request",
            labels,
            None,
            None,
        ));
    }
    let resources = with_staff(resources);
    let (whole, _) = plan_routing(routing_state(NPI_A), resources.clone()).unwrap();
    let mut observed = observed_from(&R4::default(), &resources);
    observed.tasks = crate::rules::task_facts(&resources);
    let (routed, streamed) = diff_routed(&observed);
    assert_eq!(routed, 40);
    let routing: Vec<&Change> = streamed
        .changes
        .iter()
        .filter(|c| c.target.kind == ObjectKind::TaskRouting)
        .collect();
    assert_eq!(routing.len(), 1, "one folded change for the rule");
    assert!(routing[0].unfolds());
    assert_eq!(routing[0].width(), 40);
    let mut unfolded: Vec<Change> = streamed.changes.iter().flat_map(Change::unfolded).collect();
    let key = |c: &Change| (c.target.kind, c.target.name.clone());
    unfolded.sort_by_key(key);
    let mut want = whole.changes.clone();
    want.sort_by_key(key);
    assert_eq!(unfolded, want);
    // the plan previews them as 40 tasks of the rule
    let preview = crate::plan::preview(&streamed.changes, &|_, _| Default::default());
    assert_eq!(preview.len(), 1);
    assert_eq!((preview[0].rule.as_str(), preview[0].adds), ("refills", 40));
}

#[test]
fn route_existing_also_routes_tasks_someone_assigned() {
    let s = routing_state(NPI_A);
    let d = R4::default();
    let resources = with_staff(vec![
        r4_team(
            "g1",
            "front-desk",
            "Front Desk",
            &["Practitioner/pa"],
            &[PAYMENTS],
        ),
        task("t1", "Refill request", &[], Some("Group/other"), None),
    ]);
    let mut observed = observed_from(&d, &resources);
    observed.tasks = crate::rules::task_facts(&resources);
    let routed = |backfill| {
        crate::reconcile::routing::objects(&s, &d, &observed, &Memberships::new(), backfill)
            .unwrap()
            .0
            .len()
    };
    assert_eq!(routed(false), 0);
    assert_eq!(routed(true), 1);
}

#[test]
fn a_task_already_routed_as_its_rule_says_is_a_no_op_naming_the_rule() {
    // enforce mode re-checks tasks careplane routed; this one is as the rule says
    let mut enforce = routing_state(NPI_A);
    enforce.routing_rules[0].mode = crate::model::rule::RoutingMode::Enforce;
    let mut t = task(
        "t1",
        "Refill request",
        &["triaged"],
        Some("Group/g1"),
        Some("Practitioner/pa"),
    );
    crate::vocab::ownership::mark_routed(&mut t, PROJECT);
    let (d, _) = plan_routing(
        enforce,
        with_staff(vec![
            r4_team(
                "g1",
                "front-desk",
                "Front Desk",
                &["Practitioner/pa"],
                &[PAYMENTS],
            ),
            t,
        ]),
    )
    .unwrap();
    let c = d
        .changes
        .iter()
        .find(|c| c.target.kind == ObjectKind::TaskRouting)
        .unwrap();
    assert_eq!(c.action, Action::NoOp);
    assert_eq!(
        c.reason,
        reason(
            ReasonCode::RoutingRule,
            Some(30),
            "routing rule 'refills' (order 1) is the first to match this open task; already done"
        )
    );
}

#[test]
fn tasks_for_a_team_not_on_the_target_yet_wait_for_the_next_apply() {
    let (d, waiting) = plan_routing(
        routing_state(NPI_A),
        with_staff(vec![task("t1", "Refill request", &[], None, None)]),
    )
    .unwrap();
    assert_eq!(
        waiting,
        BTreeMap::from([("front-desk".to_owned(), ("refills".to_owned(), 1))])
    );
    assert_eq!(
        d.changes
            .iter()
            .map(|c| (c.action, c.target.kind))
            .collect::<Vec<_>>(),
        vec![(Action::Create, ObjectKind::Team)]
    );
}

#[test]
fn a_routing_rule_whose_owner_the_target_does_not_have_is_unplannable() {
    let err = plan_routing(
        routing_state("9999999999"),
        with_staff(vec![
            r4_team(
                "g1",
                "front-desk",
                "Front Desk",
                &["Practitioner/pa"],
                &[PAYMENTS],
            ),
            task("t1", "Refill request", &[], None, None),
            task("t3", "refill again", &[], None, None),
        ]),
    )
    .map(|_| ())
    .unwrap_err();
    assert_eq!(
        err,
        vec![Diagnostic {
            source: at(31),
            message: "no single Practitioner on the target has npi 9999999999".into(),
            help: Some("careplane never creates staff: fix the reference".into()),
        }]
    );
}

#[test]
fn a_task_observed_by_r4_is_routing_state_that_careplane_never_creates_or_deletes() {
    let caps = R4::default().capabilities().clone();
    let routing = caps.of(ObjectKind::TaskRouting).unwrap();
    assert_eq!(
        (
            routing.create,
            routing.update,
            routing.delete,
            routing.identity
        ),
        (false, true, false, Identity::NaturalKey)
    );
    let o: ObservedObject = R4::default()
        .identify(
            PROJECT,
            &task("t1", "x", &["b", "a"], Some("Group/g1"), None),
        )
        .object()
        .unwrap();
    assert_eq!(
        (o.kind, o.natural_key.as_deref(), o.managed),
        (ObjectKind::TaskRouting, Some("Task/t1"), false)
    );
    assert_eq!(
        o.fields,
        Fields::from([
            ("labels".to_owned(), json!(["a", "b"])),
            ("owner".to_owned(), Value::Null),
            ("routedBy".to_owned(), Value::Null),
            ("team".to_owned(), json!("Group/g1")),
        ])
    );
    // an unmatched, unmanaged task is neither changed nor orphaned, even with prune
    let observed = observed_from(&R4::default(), &[task("t1", "x", &[], None, None)]);
    let r = run(&[], &observed, &R4::default(), prune());
    assert_eq!((r.changes, r.orphans), (vec![], vec![]));
}

#[test]
fn a_care_team_assignment_by_inline_rule_selects_the_patients_the_rule_holds_for() {
    let mut s = care_team_state(false, NPI_A);
    s.care_team_assignments[0].group = None;
    s.care_team_assignments[0].rule = Some(crate::manifest::types::Condition::Gender(
        crate::manifest::types::Gender::Female,
    ));
    let gendered = |id: &str, g: &str| PatientFacts {
        gender: Some(g.into()),
        ..patient(id, &[])
    };
    let changes = care_team_changes_of(
        s,
        Box::new(R4::default()),
        vec![
            gendered("p1", "female"),
            gendered("p2", "male"),
            gendered("p3", "female"),
        ],
        &[],
    )
    .unwrap();
    assert_eq!(
        changes[0].fields[0].sealed,
        Some(Box::new((
            Some(json!([])),
            Some(json!(["Patient/p1", "Patient/p3"]))
        )))
    );
}

// ---------------------------------------------------------------------------------------
// What a plan puts on the checklist

#[test]
fn manual_changes_and_verify_only_objects_are_the_checklist_and_never_count_as_changes() {
    let d = Canvas::default();
    let mut s = state(vec![]);
    s.roles.push(physician());
    s.roles.push(Role {
        name: "nurse".into(),
        code: "RN".into(),
        display: "Nurse".into(),
        ..physician()
    });
    let observed = observed_from(&d, &[canvas_practitioner("pa", NPI_A, &["RN"])]);
    let r = run(
        &desired_of(&d, &s, &observed),
        &observed,
        &d,
        Options::default(),
    );
    let mut plan = plan_of(r.changes);
    plan.capabilities = PlanCapability::from_table(d.capabilities());
    assert_eq!(
        plan.checklist()
            .map(|c| (c.action, c.target.name.as_str()))
            .collect::<Vec<_>>(),
        vec![(Action::NoOp, "nurse"), (Action::Manual, "physician")]
    );
    assert!(!plan.has_changes());
    assert_eq!((plan.summary.manual, plan.summary.no_op), (1, 1));
}

// ---------------------------------------------------------------------------------------
// The whole planner (reconcile::plan): its own notes and its inputs
// ---------------------------------------------------------------------------------------

fn planner_options(today: (i64, u32, u32)) -> super::Options {
    super::Options {
        prune: false,
        adopt: false,
        route_existing: false,
        today,
        pseudo: pseudo(),
        target: TargetInfo {
            name: "test".into(),
            dialect: "fhir-r4".into(),
            endpoint: "memory".into(),
        },
        checksum: "sha256:test".into(),
        manifests_commit: Some("abc123".into()),
        plugin: Default::default(),
    }
}

#[test]
fn the_planner_notes_tasks_that_wait_for_a_team_it_creates_and_records_its_inputs() {
    let d = R4::default();
    let resources = with_staff(vec![task("t1", "Refill request", &[], None, None)]);
    let mut observed = observed_from(&d, &resources);
    observed.tasks = crate::rules::task_facts(&resources);
    let plan = super::plan(
        &routing_state(NPI_A),
        &observed,
        &d,
        &planner_options((2026, 12, 2)),
    )
    .unwrap();
    let team = plan
        .changes
        .iter()
        .find(|c| c.target.kind == ObjectKind::Team)
        .unwrap();
    assert_eq!(team.action, Action::Create);
    assert_eq!(
        team.notes,
        vec![
            "routing rule 'refills' matches 1 open task(s) for this team: the next apply routes them, once the team exists"
        ]
    );
    assert!(
        plan.changes
            .iter()
            .all(|c| !matches!(c.operation, Operation::RouteTask { .. })),
        "the task waits: it is not routed in this plan"
    );
    // ...but the review counts it: apply --plan routes it once the team exists
    let e = plan
        .effects
        .iter()
        .find(|e| e.kind == ObjectKind::TaskRouting && e.rule == "refills")
        .expect("the waiting task is previewed");
    assert_eq!((e.adds, e.removes), (1, 0));
    assert!(e.notes[0].contains("wait for team"), "{:?}", e.notes);
    assert_eq!(plan.manifests_commit.as_deref(), Some("abc123"));
    assert_eq!(plan.manifests_checksum, "sha256:test");
    assert_eq!(plan.target.endpoint, "memory");
}

#[test]
fn the_planner_reads_the_date_it_is_given_not_the_clock() {
    use crate::manifest::types::{AgeRange, Condition};
    let mut s = state(vec![]);
    s.patient_groups.push(PatientGroup {
        name: "seniors".into(),
        display_name: "Seniors".into(),
        mode: crate::model::rule::MembershipMode::Authoritative,
        max_removal_share: 1.0,
        rule: Some(Condition::Age(AgeRange {
            min: Some(65),
            max: None,
        })),
        include: vec![],
        exclude: vec![],
        max_deviation: Default::default(),
        source: at(40),
    });
    let d = R4::default();
    let mut observed = observed_from(&d, &staff_ab());
    let born = PatientFacts {
        id: "p1".into(),
        birth_date: Some((1960, 6, 1)),
        ..PatientFacts::default()
    };
    observed.patients.insert("p1".into(), born);
    let members = |today| {
        let plan = super::plan(&s, &observed, &d, &planner_options(today)).unwrap();
        let c = plan
            .changes
            .iter()
            .find(|c| c.target.kind == ObjectKind::PatientGroup)
            .unwrap();
        c.fields
            .iter()
            .find_map(|f| f.membership.as_ref())
            .map(|m| m.after)
            .unwrap()
    };
    // 64 on 2025-05-31, 65 from 2025-06-01: the answer follows the date passed in
    assert_eq!(members((2025, 5, 31)), 0);
    assert_eq!(members((2025, 6, 1)), 1);
}

#[test]
fn memberships_routing_and_care_team_participants_are_effects_and_the_rest_configuration() {
    use crate::plan::Layer;
    let base = |kind, fields: Vec<FieldChange>, operation| Change {
        action: Action::Update,
        target: target(kind, "x", "Group", Some("g1")),
        fields,
        reason: reason(ReasonCode::Differs, Some(1), "r"),
        operation,
        precondition: Precondition::default(),
        notes: vec![],
    };
    let members = field("members", Some(json!(1)), Some(json!(2)), None);
    let name = field("name", Some(json!("A")), Some(json!("B")), None);
    // a group whose members move: an effect; its name (or name and members): configuration
    assert_eq!(
        base(
            ObjectKind::PatientGroup,
            vec![members.clone()],
            Operation::Object
        )
        .layer(),
        Layer::Effects
    );
    assert_eq!(
        base(
            ObjectKind::PatientGroup,
            vec![name.clone(), members],
            Operation::Object
        )
        .layer(),
        Layer::Configuration
    );
    assert_eq!(
        base(ObjectKind::Team, vec![name], Operation::Object).layer(),
        Layer::Configuration
    );
    let routed = base(
        ObjectKind::TaskRouting,
        vec![],
        Operation::RouteTask {
            rule: "refills".into(),
            order: 1,
        },
    );
    assert_eq!(routed.layer(), Layer::Effects);
    assert_eq!(routed.rule_name(), "refills");
    // a group created is configuration even though it comes with members
    let mut created = base(ObjectKind::PatientGroup, vec![], Operation::Object);
    created.action = Action::Create;
    assert_eq!(created.layer(), Layer::Configuration);
}
