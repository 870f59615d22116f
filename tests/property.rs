//! Property: for any valid manifests, apply then plan finds nothing to do — from an empty
//! target and from the state another random set of manifests left behind (with --prune).
//! Runs on the embedded file store (many cases) and on the real FHIR server (fewer).
//!
//! And (issue 10): random clinical activity between a saved plan and its apply (new
//! patients, flipped consents, new tasks, comments on tasks, tasks re-routed by a person)
//! never makes the saved plan stale, and apply followed by plan leaves no configuration
//! changes.

mod common;

use std::collections::BTreeMap;

use careplane::dialect::r4::R4;
use careplane::fhir::Store;
use careplane::fhir::file::FileStore;
use careplane::fhir::http::HttpStore;
use careplane::manifest;
use careplane::model::Responsibility;
use careplane::ops;
use careplane::plan::TargetInfo;
use careplane::target::ResolvedTarget;
use common::{Server, Staff, fhir_url, seed_staff, unique};
use proptest::prelude::*;
use serde_json::json;

const RESPONSIBILITIES: [Responsibility; 11] = [
    Responsibility::CollectSpecimensFromPatient,
    Responsibility::CommunicateDiagnosticResultsToPatient,
    Responsibility::CoordinateReferralsForPatient,
    Responsibility::ProcessRefillRequests,
    Responsibility::ProcessChangeRequests,
    Responsibility::ScheduleLabVisitsForPatient,
    Responsibility::PopulationHealthCampaignOutreach,
    Responsibility::CollectPatientPayments,
    Responsibility::CompleteOpenLabOrders,
    Responsibility::ReviewEraPostingExceptions,
    Responsibility::ReviewCoverages,
];
const ROLES: [(&str, &str); 5] = [
    ("physician", "MD"),
    ("nurse", "RN"),
    ("assistant", "MA"),
    ("coordinator", "CC"),
    ("front-desk", "FD"),
];
const DOMAINS: [&str; 3] = ["clinical", "administrative", "hybrid"];
const STAFF: usize = 6;

#[derive(Clone, Debug)]
struct Org {
    roles: Vec<(usize, String, usize)>, // (role index, display, domain)
    care_team_roles: Vec<(usize, String)>, // (index, display)
    teams: Vec<(String, Vec<(usize, u8)>)>, // (display suffix, members as (staff, ref kind))
    owner: Vec<Option<usize>>,          // responsibility → team index
    assignments: Vec<(usize, u8, Vec<usize>)>, // (staff, ref kind, role positions)
}

fn org() -> impl Strategy<Value = Org> {
    (
        proptest::sample::subsequence((0..ROLES.len()).collect::<Vec<_>>(), 0..=ROLES.len()),
        proptest::collection::vec(
            ("[A-Z][a-z]{2,8}( [a-z]{2,6})?", 0..DOMAINS.len()),
            ROLES.len(),
        ),
        proptest::sample::subsequence((0..4usize).collect::<Vec<_>>(), 0..=3),
        proptest::collection::vec(
            (
                "[A-Z][a-z]{2,10}",
                proptest::collection::btree_map(0..STAFF, 0..3u8, 0..=STAFF),
            ),
            0..4,
        ),
        proptest::collection::vec(proptest::option::of(0..4usize), RESPONSIBILITIES.len()),
        proptest::collection::btree_map(
            0..STAFF,
            (
                0..3u8,
                proptest::collection::btree_set(0..ROLES.len(), 1..=3),
            ),
            0..=STAFF,
        ),
    )
        .prop_map(|(role_idx, role_meta, ctr, teams, owner, assign)| {
            let roles: Vec<(usize, String, usize)> = role_idx
                .iter()
                .map(|&i| (i, role_meta[i].0.clone(), role_meta[i].1))
                .collect();
            let teams: Vec<(String, Vec<(usize, u8)>)> = teams
                .into_iter()
                .enumerate()
                .map(|(i, (name, members))| (format!("{name} {i}"), members.into_iter().collect()))
                .collect();
            let n = teams.len();
            let owner = owner.into_iter().map(|o| o.filter(|t| *t < n)).collect();
            let assignments = if roles.is_empty() {
                vec![]
            } else {
                assign
                    .into_iter()
                    .map(|(s, (k, picks))| {
                        let mut chosen: Vec<usize> =
                            picks.into_iter().map(|p| p % roles.len()).collect();
                        chosen.sort();
                        chosen.dedup();
                        (s, k, chosen)
                    })
                    .collect()
            };
            Org {
                roles,
                care_team_roles: ctr
                    .into_iter()
                    .map(|i| (i, format!("Care role {i}")))
                    .collect(),
                teams,
                owner,
                assignments,
            }
        })
}

fn reference(s: &Staff, kind: u8) -> String {
    match kind {
        0 => format!("npi: \"{}\"", s.npi),
        1 => format!("email: {}", s.email),
        _ => format!("id: {}", s.id),
    }
}

fn manifests(o: &Org, project: &str, staff: &[Staff]) -> BTreeMap<String, String> {
    let mut docs = vec![format!(
        "apiVersion: careplane.dev/v1\nkind: Project\nmetadata:\n  name: {project}\nspec: {{}}\n"
    )];
    for (i, display, domain) in &o.roles {
        let (name, code) = ROLES[*i];
        docs.push(format!(
            "apiVersion: careplane.dev/v1\nkind: Role\nmetadata:\n  name: {name}\nspec:\n  code: {code}\n  display: {display:?}\n  domain: {}\n",
            DOMAINS[*domain]
        ));
    }
    for (i, display) in &o.care_team_roles {
        docs.push(format!(
            "apiVersion: careplane.dev/v1\nkind: CareTeamRole\nmetadata:\n  name: ctr-{i}\nspec:\n  code:\n    code: \"{}\"\n    display: {display}\n",
            1000 + i
        ));
    }
    for (t, (display, members)) in o.teams.iter().enumerate() {
        let resp: Vec<String> = RESPONSIBILITIES
            .iter()
            .zip(&o.owner)
            .filter(|(_, owner)| **owner == Some(t))
            .map(|(r, _)| r.code())
            .collect();
        let members: Vec<String> = members
            .iter()
            .map(|(s, k)| format!("    - {}\n", reference(&staff[*s], *k)))
            .collect();
        docs.push(format!(
            "apiVersion: careplane.dev/v1\nkind: Team\nmetadata:\n  name: team-{t}\nspec:\n  displayName: {display} {project}\n  responsibilities: [{}]\n  members:\n{}",
            resp.join(", "),
            if members.is_empty() { "    []\n".to_owned() } else { members.concat() }
        ).replace("  members:\n    []\n", "  members: []\n"));
    }
    for (s, k, picks) in &o.assignments {
        let roles: Vec<&str> = picks.iter().map(|p| ROLES[o.roles[*p].0].0).collect();
        docs.push(format!(
            "apiVersion: careplane.dev/v1\nkind: RoleAssignment\nmetadata:\n  name: staff-{s}\nspec:\n  practitioner:\n    {}\n  roles: [{}]\n",
            reference(&staff[*s], *k),
            roles.join(", ")
        ));
    }
    BTreeMap::from([("org.yaml".to_owned(), docs.join("---\n"))])
}

fn converge(
    target: &ResolvedTarget,
    o: &Org,
    project: &str,
    staff: &[Staff],
) -> Result<(), TestCaseError> {
    let m = manifest::load_from_memory(manifests(o, project, staff), project).map_err(|e| {
        TestCaseError::fail(format!("generated manifests invalid: {:?}", e.diagnostics))
    })?;
    let rt = common::runtime();
    rt.block_on(async {
        let (plan, _) = ops::plan(&m, target, true)
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let report = ops::apply(&plan, target).await;
        prop_assert_eq!(report.failed(), 0, "{:?}", report);
        let (again, _) = ops::plan(&m, target, true)
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(!again.has_changes(), "not converged: {:#?}", again.changes);
        prop_assert!(again.orphans.is_empty());
        Ok(())
    })
}

fn file_staff(dir: &std::path::Path) -> Vec<Staff> {
    let staff: Vec<Staff> = (0..STAFF)
        .map(|i| Staff {
            id: format!("p{i:031x}"),
            npi: format!("10000000{i:02}"),
            email: format!("s{i}@example-clinic.org"),
        })
        .collect();
    let lines: Vec<String> = staff
        .iter()
        .map(|s| {
            json!({"resourceType": "Practitioner", "id": s.id, "meta": {"versionId": "1"},
                   "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": s.npi}],
                   "telecom": [{"system": "email", "value": s.email}]})
            .to_string()
        })
        .collect();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("Practitioner.ndjson"), lines.join("\n") + "\n").unwrap();
    staff
}

/// Rules whose effects follow live data: a patient group over consents, a routing rule
/// over task titles.
const EFFECT_RULES: &str = "apiVersion: careplane.dev/v1\nkind: PatientGroup\nmetadata:\n  name: opted-in\nspec:\n  mode: authoritative\n  maxRemovalShare: 1.0\n  rule:\n    not:\n      consent: {code: A0001, status: rejected}\n---\napiVersion: careplane.dev/v1\nkind: RoutingRule\nmetadata:\n  name: labs\nspec:\n  match:\n    descriptionMatches: \"^Lab draw\"\n  set:\n    addLabels: [Lab]\n";

fn with_effects(o: &Org, project: &str, staff: &[Staff]) -> manifest::Manifests {
    let mut files = manifests(o, project, staff);
    files.insert("effects.yaml".into(), EFFECT_RULES.into());
    manifest::load_from_memory(files, project).expect("generated manifests are valid")
}

/// What the clinic does between review and merge.
#[derive(Clone, Debug)]
struct Activity {
    new_patients: usize,
    flips: Vec<usize>,
    new_tasks: usize,
    comments: Vec<usize>,
    reroutes: Vec<usize>,
}

fn activity() -> impl Strategy<Value = Activity> {
    (
        0..25usize,
        proptest::collection::vec(0..PATIENTS, 0..6),
        0..6usize,
        proptest::collection::vec(0..TASKS, 0..4),
        proptest::collection::vec(0..TASKS, 0..3),
    )
        .prop_map(
            |(new_patients, flips, new_tasks, comments, reroutes)| Activity {
                new_patients,
                flips,
                new_tasks,
                comments,
                reroutes,
            },
        )
}

const PATIENTS: usize = 20;
const TASKS: usize = 8;

fn consent(pid: &str, status: &str) -> serde_json::Value {
    json!({"resourceType": "Consent", "status": status,
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "urn:test:consents", "code": "A0001"}]}],
        "patient": {"reference": format!("Patient/{pid}")}})
}

/// A patient and their consent: (patient id, consent id).
async fn new_patient(store: &Store, i: usize) -> (String, String) {
    let p = store
        .create(
            &json!({"resourceType": "Patient", "active": true, "birthDate": "1970-01-01"}),
            None,
        )
        .await
        .unwrap();
    let c = store
        .create(
            &consent(
                &p.id,
                if i.is_multiple_of(5) {
                    "rejected"
                } else {
                    "active"
                },
            ),
            None,
        )
        .await
        .unwrap();
    (p.id, c.id)
}

async fn new_task(store: &Store, i: usize) -> String {
    store
        .create(
            &json!({"resourceType": "Task", "status": "requested", "intent": "order",
            "description": format!("Lab draw {i}")}),
            None,
        )
        .await
        .unwrap()
        .id
}

/// Change a resource as a person would (no precondition: the person's client does not
/// know careplane's plan).
async fn touch(store: &Store, rt: &str, id: &str, f: impl FnOnce(&mut serde_json::Value)) {
    let Some(mut r) = store.read(rt, id).await.unwrap() else {
        return;
    };
    f(&mut r);
    store
        .update(&r, &careplane::fhir::Precondition::default())
        .await
        .unwrap();
}

fn saved_plan_survives_activity(
    target: &ResolvedTarget,
    first: &Org,
    second: &Org,
    act: &Activity,
    staff: &[Staff],
) -> Result<(), TestCaseError> {
    use careplane::plan::{Action, Plan};
    let rt = common::runtime();
    rt.block_on(async {
        let store = &target.store;
        let mut patients = Vec::new();
        for i in 0..PATIENTS {
            patients.push(new_patient(store, i).await);
        }
        let mut tasks = Vec::new();
        for i in 0..TASKS {
            tasks.push(new_task(store, i).await);
        }
        let m1 = with_effects(first, "prop", staff);
        let (plan, _) = ops::plan(&m1, target, true)
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(ops::apply(&plan, target).await.failed(), 0);

        // review: the second manifests' plan, saved and read back as a file would be
        let m2 = with_effects(second, "prop", staff);
        let (plan, _) = ops::plan(&m2, target, true)
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let saved: Plan = serde_json::from_str(&careplane::plan::file::to_json(&plan)).unwrap();

        // the clinic's day
        for i in 0..act.new_patients {
            new_patient(store, PATIENTS + i).await;
        }
        for &i in &act.flips {
            touch(store, "Consent", &patients[i].1, |c| {
                c["status"] = json!(if c["status"] == "rejected" {
                    "active"
                } else {
                    "rejected"
                });
            })
            .await;
        }
        for i in 0..act.new_tasks {
            new_task(store, TASKS + i).await;
        }
        for &i in &act.comments {
            touch(store, "Task", &tasks[i], |t| {
                t["note"] = json!([{"text": "called the patient"}]);
            })
            .await;
        }
        for &i in &act.reroutes {
            touch(store, "Task", &tasks[i], |t| {
                t["owner"] = json!({"reference": format!("Practitioner/{}", staff[0].id)});
            })
            .await;
        }

        let stale = ops::stale_objects(&saved, target).await;
        prop_assert!(
            stale.is_empty(),
            "activity made the saved plan stale: {:?}",
            stale
        );
        let done = ops::apply_saved(
            &saved,
            &m2,
            target,
            Default::default(),
            true,
            &Default::default(),
        )
        .await;
        let report = &done.applied.report;
        prop_assert!(!report.is_refused(), "{:?}", report.refused);
        prop_assert_eq!(report.failed(), 0, "{:?}", report);
        let (again, _) = ops::plan(&m2, target, true)
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let left: Vec<_> = again
            .configuration()
            .filter(|c| c.action.is_change() && c.action != Action::Manual)
            .collect();
        prop_assert!(
            left.is_empty(),
            "configuration left after apply: {:#?}",
            left
        );
        prop_assert!(again.orphans.is_empty());
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn file_store_activity_between_plan_and_apply_never_makes_a_saved_plan_stale(
        first in org(), second in org(), act in activity()
    ) {
        let dir = tempfile::tempdir().unwrap();
        let staff = file_staff(dir.path());
        let target = ResolvedTarget {
            info: TargetInfo { name: "local".into(), dialect: "fhir-r4".into(), endpoint: dir.path().display().to_string() },
            store: Store::File(FileStore::new(dir.path())),
            dialect: Box::new(R4::default()),
            concurrency: 4,
            plugin_api: None,
            batch_size: careplane::target::DEFAULT_BATCH_SIZE,
        };
        saved_plan_survives_activity(&target, &first, &second, &act, &staff)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn file_store_apply_then_plan_is_empty(first in org(), second in org()) {
        let dir = tempfile::tempdir().unwrap();
        let staff = file_staff(dir.path());
        let target = ResolvedTarget {
            info: TargetInfo { name: "local".into(), dialect: "fhir-r4".into(), endpoint: dir.path().display().to_string() },
            store: Store::File(FileStore::new(dir.path())),
            dialect: Box::new(R4::default()),
            concurrency: 4,
            plugin_api: None,
            batch_size: careplane::target::DEFAULT_BATCH_SIZE,
        };
        converge(&target, &first, "prop", &staff)?;
        converge(&target, &second, "prop", &staff)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    #[test]
    fn fhir_server_apply_then_plan_is_empty(first in org(), second in org()) {
        let server = Server::new();
        let project = unique("prop");
        let staff = seed_staff(&server, &project, STAFF);
        let store = HttpStore::new(&fhir_url(), careplane::fhir::auth::Auth::None).unwrap().with_page_size(7);
        let target = ResolvedTarget {
            info: TargetInfo { name: "server".into(), dialect: "fhir-r4".into(), endpoint: fhir_url() },
            store: Store::Http(store),
            dialect: Box::new(R4::default()),
            concurrency: 4,
            plugin_api: None,
            batch_size: careplane::target::DEFAULT_BATCH_SIZE,
        };
        converge(&target, &first, &project, &staff)?;
        converge(&target, &second, &project, &staff)?;
    }
}
