//! The rules plugin as a managed object of plan / apply / drift on a Canvas target (issue
//! 14), end to end on the Canvas simulator: plan shows the plugin; apply installs it (with
//! the id of the team it creates in the same apply); plan is then empty; changing a rule's
//! label updates the plugin and nothing else; drift after a disable on the instance exits
//! 2; an effects pass refuses while the plugin keeps the rules; `effects: watch` leaves the
//! plugin out and warns while it is still enabled.

mod common;

use std::path::Path;

use common::canvas::{CLIENT_ID, CLIENT_SECRET, Sim, practitioner};
use common::{careplane, write};
use serde_json::{Value, json};

const PSYCH: &str = "Refer patient to Psychiatry (TBD)";

/// The guide's routing rule and its opt-out patient group.
fn rules(label: &str) -> String {
    format!(
        "apiVersion: careplane.dev/v1\nkind: Team\nmetadata:\n  name: bh\nspec:\n  displayName: Behavioral Health Coordinators\n---\napiVersion: careplane.dev/v1\nkind: RoutingRule\nmetadata:\n  name: psych-referrals\nspec:\n  match:\n    description: \"{PSYCH}\"\n  set:\n    team: bh\n    addLabels: [{label}]\n---\napiVersion: careplane.dev/v1\nkind: PatientGroup\nmetadata:\n  name: care-management\nspec:\n  displayName: Care management (opt-out)\n  mode: authoritative\n  rule:\n    all:\n      - active: true\n      - not:\n          consent: {{code: A0001, status: rejected}}\n"
    )
}

fn setup(project_extra: &str) -> (Sim, tempfile::TempDir) {
    let sim = Sim::start();
    let staff: Vec<Value> = (0..2).map(|i| practitioner(i, &[])).collect();
    sim.seed(json!({"resources": staff}));
    let patients = sim.seed(json!({"resources": [
        {"resourceType": "Patient", "active": true, "name": [{"family": "P", "given": ["A"]}], "birthDate": "1970-01-01"},
        {"resourceType": "Patient", "active": true, "name": [{"family": "P", "given": ["B"]}], "birthDate": "1971-01-01"}
    ]}));
    // the second patient opted out of care management
    sim.seed(
        json!({"resources": [{"resourceType": "Consent", "status": "rejected",
        "scope": {}, "patient": {"reference": format!("Patient/{}", patients[1])},
        "category": [{"coding": [{"system": "http://example.org/consents", "code": "A0001"}]}],
        "provision": {"period": {"start": "2026-01-01"}}}]}),
    );
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            (
                "careplane.yaml",
                sim.project_file("").replace(
                    "spec:\n  targets:",
                    &format!("spec:\n{project_extra}  targets:"),
                ),
            ),
            ("rules.yaml", rules("Internal Referral")),
        ],
    );
    (sim, dir)
}

fn run(dir: &Path, args: &[&str]) -> std::process::Output {
    careplane()
        .args(args)
        .arg(dir)
        .env("SIM_ID", CLIENT_ID)
        .env("SIM_SECRET", CLIENT_SECRET)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn plan_json(dir: &Path) -> Value {
    let o = run(dir, &["plan", "--format", "json"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn plugin_change(plan: &Value) -> Option<Value> {
    plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["target"]["kind"] == "plugin")
        .cloned()
}

fn field<'a>(c: &'a Value, name: &str) -> Option<&'a Value> {
    c["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["field"] == name)
}

#[test]
fn the_plugin_is_planned_installed_updated_and_its_drift_reported() {
    let (sim, dir) = setup("");
    let dir = dir.path();

    // plan shows the plugin: a create, every rule added, and says who keeps the effects
    let plan = plan_json(dir);
    assert_eq!(plan["effects_by"], "plugin");
    let c = plugin_change(&plan).expect("the plan has the plugin");
    assert_eq!(c["action"], "create", "{c:#}");
    assert_eq!(c["target"]["name"], "careplane_clinic");
    assert_eq!(c["operation"]["type"], "plugin");
    assert_eq!(
        field(&c, "routing rule 'psych-referrals'").unwrap()["after"],
        "added"
    );
    assert_eq!(
        field(&c, "patient group 'care-management'").unwrap()["after"],
        "added"
    );
    // the rules data never rides in a plan file (include / exclude hold patient ids)
    assert!(!plan.to_string().contains("titleMatches"));
    assert!(
        c["notes"].to_string().contains("team bh"),
        "the team is created by this plan: {c:#}"
    );
    let human = run(dir, &["plan"]);
    let shown = text(&human.stdout);
    assert!(
        shown.contains("+ create plugin 'careplane_clinic' (Plugin, new)"),
        "{shown}"
    );
    assert!(
        shown.contains("kept by the plugin inside the target"),
        "{shown}"
    );

    // apply installs it, enabled, carrying the id of the team the same apply created
    let o = run(dir, &["apply", "--auto-approve"]);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    let installed = sim.plugin("careplane_clinic").expect("installed");
    assert_eq!(installed["is_enabled"], true);
    let team_id = sim
        .teams()
        .iter()
        .find(|t| t["name"] == "Behavioral Health Coordinators")
        .and_then(|t| t["id"].as_str().map(str::to_owned))
        .expect("the team exists");
    let data: Value =
        serde_json::from_str(installed["files"]["careplane_rules.json"].as_str().unwrap()).unwrap();
    assert_eq!(
        data["routing"][0]["set"]["team"]["groupId"],
        team_id.as_str()
    );
    assert!(data["groups"][0]["groupId"].is_string(), "{data:#}");
    // the apply's effects backfilled the group (the plugin keeps it from here): one opted out
    let groups = sim.search("Group?type=person");
    assert_eq!(
        groups[0]["member"].as_array().map(Vec::len),
        Some(1),
        "{groups:#?}"
    );
    // what apply installed is recorded for the next plan's rule diff: digests, no data
    let record = std::fs::read_to_string(dir.join(".careplane/plugins/canvas.json")).unwrap();
    assert!(record.contains(installed["version"].as_str().unwrap()));
    assert!(!record.contains("Internal Referral") && !record.contains(&team_id));

    // plan is then empty
    let o = run(dir, &["plan", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout));
    assert_eq!(plugin_change(&plan_json(dir)).unwrap()["action"], "no-op");

    // a rule's label changes: the plugin is updated, and nothing else
    write(dir, &[("rules.yaml", rules("Psych Referral"))]);
    let plan = plan_json(dir);
    let changed: Vec<&Value> = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] != "no-op")
        .collect();
    assert_eq!(changed.len(), 1, "{changed:#?}");
    let c = changed[0];
    assert_eq!(c["target"]["kind"], "plugin");
    assert_eq!(c["action"], "update");
    assert_eq!(
        field(c, "routing rule 'psych-referrals'").unwrap()["after"],
        "changed: set.addLabels"
    );
    assert!(field(c, "patient group 'care-management'").is_none());
    assert_eq!(
        field(c, "version").unwrap()["before"],
        installed["version"],
        "{c:#}"
    );
    assert!(
        c["notes"]
            .to_string()
            .contains("compared with the ones careplane installed"),
        "{c:#}"
    );
    // reviewed as a saved plan, then applied from it (the file carries no rules data)
    let saved = dir.join("reviewed.plan.json");
    let o = run(dir, &["plan", "--out", saved.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        !std::fs::read_to_string(&saved)
            .unwrap()
            .contains("Psych Referral")
    );
    let o = careplane()
        .args(["apply", "--auto-approve", "--plan"])
        .arg(&saved)
        .arg(dir)
        .env("SIM_ID", CLIENT_ID)
        .env("SIM_SECRET", CLIENT_SECRET)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    assert!(
        text(&o.stdout).contains("plugin 'careplane_clinic'"),
        "{}",
        text(&o.stdout)
    );
    let updated = sim.plugin("careplane_clinic").unwrap();
    assert_ne!(updated["version"], installed["version"]);
    assert!(
        updated["files"]["careplane_rules.json"]
            .as_str()
            .unwrap()
            .contains("Psych Referral")
    );
    assert_eq!(
        run(dir, &["plan", "--detailed-exitcode"]).status.code(),
        Some(0)
    );
    let o = run(dir, &["drift"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout));

    // disabled on the instance (canvas disable): drift exits 2 and names it
    assert_eq!(
        sim.plugin_api(
            reqwest::Method::PATCH,
            "careplane_clinic/",
            &[("is_enabled", "False")]
        ),
        200
    );
    let o = run(dir, &["drift", "--format", "json"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    let d = &report["drifted"][0];
    assert_eq!(d["kind"], "plugin", "{report:#}");
    assert_eq!(d["state"], "changed");
    assert_eq!(d["fields"][0]["field"], "enabled");
    assert_eq!(d["fields"][0]["actual"], false);
    // apply enables it again
    assert!(run(dir, &["apply", "--auto-approve"]).status.success());
    assert_eq!(sim.plugin("careplane_clinic").unwrap()["is_enabled"], true);

    // removed on the instance: drift says it is missing
    assert_eq!(
        sim.plugin_api(reqwest::Method::DELETE, "careplane_clinic/", &[]),
        204
    );
    let o = run(dir, &["drift", "--format", "json"]);
    assert_eq!(o.status.code(), Some(2));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["drifted"][0]["state"], "missing", "{report:#}");

    // while the plugin keeps the rules, an effects pass refuses
    let o = run(dir, &["reconcile", "--effects"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("kept by the plugin careplane_clinic"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn effects_watch_leaves_the_plugin_out_and_warns_while_it_is_enabled() {
    let (sim, dir) = setup("  effects: plugin\n");
    let dir = dir.path();
    assert!(run(dir, &["apply", "--auto-approve"]).status.success());
    assert!(sim.plugin("careplane_clinic").is_some());
    let project = std::fs::read_to_string(dir.join("careplane.yaml")).unwrap();
    write(
        dir,
        &[(
            "careplane.yaml",
            project.replace("effects: plugin", "effects: watch"),
        )],
    );
    let plan = plan_json(dir);
    assert_eq!(plan["effects_by"], "watch");
    assert!(plugin_change(&plan).is_none(), "{plan:#}");
    assert!(
        plan["warnings"][0]
            .as_str()
            .unwrap()
            .contains("both would maintain routing and patient groups"),
        "{plan:#}"
    );
    // watch's one-pass form runs now
    let o = run(dir, &["reconcile", "--effects"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    // disabled on the instance: no warning
    sim.plugin_api(
        reqwest::Method::PATCH,
        "careplane_clinic/",
        &[("is_enabled", "False")],
    );
    assert!(plan_json(dir).get("warnings").is_none());

    // back to effects: plugin, enabled, and then every rule leaves the manifests: careplane
    // never uninstalls, so the plan warns that the plugin still runs its old rules
    write(dir, &[("careplane.yaml", project.clone())]);
    assert!(run(dir, &["apply", "--auto-approve"]).status.success());
    assert_eq!(sim.plugin("careplane_clinic").unwrap()["is_enabled"], true);
    let team_only = rules("Internal Referral");
    let team_only = team_only.split("---").next().unwrap().to_owned();
    write(dir, &[("rules.yaml", team_only)]);
    let plan = plan_json(dir);
    assert!(plugin_change(&plan).is_none(), "{plan:#}");
    assert!(
        plan["warnings"][0]
            .as_str()
            .unwrap()
            .contains("declares no routing or patient-group rule any more"),
        "{plan:#}"
    );
}

/// A saved plan is checked whole before its first write, the plugin included: a plugin
/// uninstalled on the instance since the review makes the plan stale, and the team the
/// same plan creates is not written either.
#[test]
fn a_saved_plan_whose_plugin_is_stale_writes_nothing() {
    let (sim, dir) = setup("");
    let dir = dir.path();
    assert!(run(dir, &["apply", "--auto-approve"]).status.success());
    // reviewed: a new team and a changed label (the plugin updated from its version now)
    let intake = "apiVersion: careplane.dev/v1\nkind: Team\nmetadata:\n  name: intake\nspec:\n  displayName: Intake\n";
    write(
        dir,
        &[
            ("rules.yaml", rules("Psych Referral")),
            ("intake.yaml", intake.into()),
        ],
    );
    let saved = dir.join("reviewed.plan.json");
    let o = run(dir, &["plan", "--out", saved.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    // then uninstalled on the instance
    assert_eq!(
        sim.plugin_api(reqwest::Method::DELETE, "careplane_clinic/", &[]),
        204
    );
    let o = careplane()
        .args(["apply", "--auto-approve", "--plan"])
        .arg(&saved)
        .arg(dir)
        .env("SIM_ID", CLIENT_ID)
        .env("SIM_SECRET", CLIENT_SECRET)
        .output()
        .unwrap();
    let shown = format!("{}{}", text(&o.stdout), text(&o.stderr));
    assert!(!o.status.success(), "{shown}");
    assert!(shown.contains("it was uninstalled"), "{shown}");
    assert!(
        !sim.teams().iter().any(|t| t["name"] == "Intake"),
        "nothing written: {shown}"
    );
    assert!(sim.plugin("careplane_clinic").is_none());
}

/// `plugin status` / `plugin install` with no plugin change say what is true: with
/// `effects: plugin` and no rule left, nothing keeps rules (not `careplane watch`); with
/// `effects: watch` and rules, watch keeps them.
#[test]
fn plugin_status_without_a_plugin_change_says_who_keeps_the_rules() {
    let (_sim, dir) = setup("  effects: plugin\n");
    let dir = dir.path();
    let team_only = rules("Internal Referral");
    let team_only = team_only.split("---").next().unwrap().to_owned();
    write(dir, &[("rules.yaml", team_only)]);
    let o = run(dir, &["plugin", "status", "--target", "canvas"]);
    let said = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{said}{}", text(&o.stderr));
    assert!(!said.contains("careplane watch"), "{said}");
    assert!(
        said.contains("declares no routing or patient-group rule")
            && said.contains("effects: plugin"),
        "{said}"
    );
    let o = run(
        dir,
        &["plugin", "install", "--target", "canvas", "--auto-approve"],
    );
    let said = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{said}");
    assert!(!said.contains("careplane watch"), "{said}");
    assert!(said.contains("no plugin to install"), "{said}");

    // effects: watch with rules: watch keeps them
    write(dir, &[("rules.yaml", rules("Internal Referral"))]);
    let project = std::fs::read_to_string(dir.join("careplane.yaml")).unwrap();
    write(
        dir,
        &[(
            "careplane.yaml",
            project.replace("effects: plugin", "effects: watch"),
        )],
    );
    let o = run(dir, &["plugin", "status", "--target", "canvas"]);
    let said = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{said}{}", text(&o.stderr));
    assert!(
        said.contains("kept by `careplane watch`") && said.contains("effects: watch"),
        "{said}"
    );
}
