//! `careplane plugin build` (issue 14): the package for examples/clinic, checked with the
//! Canvas SDK itself (PyPI `canvas`, pinned in tests/plugin/requirements.txt and installed by
//! tests/ci-tools/setup.sh into target/ci-tools/canvas-venv): `canvas validate` (the SDK's
//! manifest schema, its static lint and a sandbox load of the handlers) and the handler's
//! pytest tests (tests/plugin/) on the SDK's event and effect types and test database.
//! When the SDK is not installed these tests fail saying so (never skipped as passed).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::canvas::{CLIENT_ID, CLIENT_SECRET, Sim};
use serde_json::{Value, json};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn careplane() -> assert_cmd::Command {
    let mut c = assert_cmd::Command::cargo_bin("careplane").unwrap();
    c.env("NO_COLOR", "1")
        .env_remove("CAREPLANE_SERVER")
        .env_remove("CAREPLANE_TOKEN")
        .env_remove("CAREPLANE_LOG");
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Builds examples/clinic's plugin into `<tmp>/careplane_clinic`.
fn build_clinic(tmp: &Path) -> PathBuf {
    let out = tmp.join("careplane_clinic");
    let o = careplane()
        .args(["plugin", "build"])
        .arg(root().join("examples/clinic"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("wrote plugin careplane_clinic"));
    out
}

fn venv_bin(name: &str) -> PathBuf {
    let bin = root().join("target/ci-tools/canvas-venv/bin").join(name);
    assert!(
        bin.exists(),
        "{} is missing: run `bash tests/ci-tools/setup.sh` (tests/run.sh does) to install the pinned Canvas SDK",
        bin.display()
    );
    bin
}

fn shown(o: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", text(&o.stdout), text(&o.stderr))
}

#[test]
fn the_clinic_rules_data_file() {
    let tmp = tempfile::tempdir().unwrap();
    let out = build_clinic(tmp.path());
    let data = std::fs::read_to_string(out.join("careplane_rules.json")).unwrap();
    insta::assert_snapshot!("clinic_rules_data", data);
    // the handler in the package is the reviewed file, byte for byte
    assert_eq!(
        std::fs::read_to_string(out.join("handlers/careplane_rules.py")).unwrap(),
        std::fs::read_to_string(root().join("src/dialect/plugin/handler.py")).unwrap()
    );
}

#[test]
fn a_condition_the_plugin_cannot_run_is_refused_at_its_position() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("careplane.yaml"),
        "apiVersion: careplane.dev/v1\nkind: Project\nmetadata: {name: demo}\nspec: {}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("groups.yaml"),
        "apiVersion: careplane.dev/v1\nkind: PatientGroup\nmetadata: {name: women}\nspec:\n  rule:\n    gender: female\n",
    )
    .unwrap();
    let o = careplane()
        .args(["plugin", "build"])
        .arg(&dir)
        .arg("--out")
        .arg(tmp.path().join("out"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", shown(&o));
    let e = text(&o.stderr);
    assert!(e.contains("groups.yaml:6:"), "{e}");
    assert!(e.contains("cannot run inside Canvas"), "{e}");
    assert!(!tmp.path().join("out").exists(), "nothing is written");
}

#[test]
fn the_sdks_canvas_validate_accepts_the_package() {
    let canvas = venv_bin("canvas");
    let tmp = tempfile::tempdir().unwrap();
    let out = build_clinic(tmp.path());
    let o = Command::new(canvas)
        .arg("validate")
        .arg(&out)
        .current_dir(tmp.path())
        .env("HOME", tmp.path())
        .output()
        .unwrap();
    let all = shown(&o);
    assert!(o.status.success(), "{all}");
    assert!(all.contains("has a valid CANVAS_MANIFEST.json"), "{all}");
    assert!(
        all.contains("All 2 handler(s) load cleanly in the sandbox"),
        "{all}"
    );
    assert!(!all.contains("Warning"), "{all}");
}

#[test]
fn the_handler_passes_its_tests_on_the_sdk() {
    let python = venv_bin("python");
    let tmp = tempfile::tempdir().unwrap();
    let out = build_clinic(tmp.path());
    let o = Command::new(python)
        .args(["-m", "pytest"])
        .current_dir(root().join("tests/plugin"))
        .env("CAREPLANE_PLUGIN_DIR", &out)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("HOME", tmp.path())
        .output()
        .unwrap();
    let all = shown(&o);
    assert!(o.status.success(), "{all}");
    assert!(all.contains(" passed"), "{all}");
}

/// Manifests with the guide's routing rule and opt-out group, on a Canvas target at `sim`.
fn canvas_project(sim: &Sim, dir: &Path) {
    common::write(
        dir,
        &[
            ("careplane.yaml", sim.project_file("")),
            (
                "rules.yaml",
                "apiVersion: careplane.dev/v1\nkind: Team\nmetadata: {name: bhc}\nspec: {displayName: Behavioral Health Coordinators}\n---\n\
apiVersion: careplane.dev/v1\nkind: RoutingRule\nmetadata: {name: psych}\nspec:\n  match: {description: \"Refer patient to Psychiatry (TBD)\"}\n  set: {team: bhc, addLabels: [Internal Referral]}\n---\n\
apiVersion: careplane.dev/v1\nkind: PatientGroup\nmetadata: {name: care-management}\nspec:\n  displayName: Care management (opt-out)\n  rule: {not: {consent: {code: A0001, status: rejected}}}\n"
                    .into(),
            ),
        ],
    );
}

#[test]
fn build_with_a_canvas_target_resolves_the_ids_plan_would_write_and_no_others() {
    let sim = Sim::start();
    let ids = sim.seed(json!({"resources": [
        {"resourceType": "Group", "type": "practitioner", "actual": true, "name": "Behavioral Health Coordinators"},
        {"resourceType": "Group", "type": "person", "actual": true, "name": "Some other group"},
        {"resourceType": "Group", "type": "person", "actual": true, "name": "Care management (opt-out)"}
    ]}));
    let tmp = tempfile::tempdir().unwrap();
    canvas_project(&sim, tmp.path());
    let out = tmp.path().join("careplane_clinic");
    let o = careplane()
        .args(["plugin", "build"])
        .arg(tmp.path())
        .args(["--target", "canvas", "--out"])
        .arg(&out)
        .env("SIM_ID", CLIENT_ID)
        .env("SIM_SECRET", CLIENT_SECRET)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", shown(&o));
    let data: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("careplane_rules.json")).unwrap())
            .unwrap();
    assert_eq!(data["target"], "canvas");
    assert_eq!(
        data["routing"][0]["set"]["team"]["groupId"],
        ids[0].as_str()
    );
    // the declared group, matched by name as plan matches Canvas groups; the other group
    // appears nowhere in the package
    assert_eq!(data["groups"][0]["groupId"], ids[2].as_str());
    assert!(
        !std::fs::read_to_string(out.join("careplane_rules.json"))
            .unwrap()
            .contains(&ids[1])
    );
    assert!(!text(&o.stdout).contains(CLIENT_SECRET) && !text(&o.stderr).contains(CLIENT_SECRET));
}

#[test]
fn build_refuses_a_target_that_does_not_run_plugins() {
    let tmp = tempfile::tempdir().unwrap();
    let o = careplane()
        .args(["plugin", "build"])
        .arg(root().join("examples/clinic"))
        .args(["--target", "local", "--out"])
        .arg(tmp.path().join("careplane_clinic"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", shown(&o));
    assert!(
        text(&o.stderr).contains("plugins run inside Canvas only"),
        "{}",
        shown(&o)
    );
    assert!(!tmp.path().join("careplane_clinic").exists());
}

/// The simulator's plugin endpoints answer the SDK's own CLI (`canvas install`, `list`,
/// `disable`, a second `install` that updates, `uninstall`) as canvas_cli expects.
#[test]
fn the_sdk_cli_installs_lists_disables_and_updates_the_package_on_the_simulator() {
    let canvas = venv_bin("canvas");
    let sim = Sim::start();
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir_all(home.join(".canvas")).unwrap();
    // canvas_cli/apps/auth/utils.py: credentials.ini, one section per instance host
    std::fs::write(
        home.join(".canvas/credentials.ini"),
        format!("[127.0.0.1]\nclient_id={CLIENT_ID}\nclient_secret={CLIENT_SECRET}\n"),
    )
    .unwrap();
    let out = build_clinic(tmp.path());
    let cli = |args: &[&str]| {
        let o = Command::new(&canvas)
            .args(args)
            .args(["--host", &sim.base])
            .current_dir(tmp.path())
            .env("HOME", &home)
            .output()
            .unwrap();
        assert!(o.status.success(), "canvas {args:?}: {}", shown(&o));
        text(&o.stdout)
    };
    let dir = out.to_str().unwrap();
    assert!(cli(&["install", dir]).contains("uploaded"));
    let version = {
        let m: Value = serde_json::from_str(
            &std::fs::read_to_string(out.join("CANVAS_MANIFEST.json")).unwrap(),
        )
        .unwrap();
        m["plugin_version"].as_str().unwrap().to_owned()
    };
    assert!(cli(&["list"]).contains(&format!("careplane_clinic@{version}\tenabled")));
    cli(&["disable", "careplane_clinic"]);
    assert_eq!(
        sim_get(&sim, "/__sim/plugin/careplane_clinic").1["is_enabled"],
        false
    );
    // a second install of the same name: 409, then extract-metadata and an update
    assert!(cli(&["install", dir]).contains("already exists, updating instead"));
    let (status, stored) = sim_get(&sim, "/__sim/plugin/careplane_clinic");
    assert_eq!(status, 200);
    assert_eq!(
        stored["files"]["careplane_rules.json"].as_str().unwrap(),
        std::fs::read_to_string(out.join("careplane_rules.json")).unwrap()
    );
    assert_eq!(
        stored["is_enabled"], true,
        "install --enable is the default"
    );
    cli(&["uninstall", "careplane_clinic"]);
    assert_eq!(sim_get(&sim, "/__sim/plugin/careplane_clinic").0, 404);
}

fn sim_get(sim: &Sim, path: &str) -> (u16, Value) {
    let rt = common::runtime();
    rt.block_on(async {
        let r = reqwest::get(format!("{}{path}", sim.base)).await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    })
}

#[test]
fn a_rebuild_over_a_package_shows_the_rule_level_change() {
    let tmp = tempfile::tempdir().unwrap();
    let out = build_clinic(tmp.path());
    let dir = tmp.path().join("clinic");
    for f in [
        "careplane.yaml",
        "teams.yaml",
        "routing.yaml",
        "patient-groups.yaml",
        "roles.yaml",
        "care-team-roles.yaml",
        "staff.yaml",
        "values.yaml",
    ] {
        let from = root().join("examples/clinic").join(f);
        if from.exists() {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::copy(&from, dir.join(f)).unwrap();
        }
    }
    let rebuild = || {
        let o = careplane()
            .args(["-q", "plugin", "build"])
            .arg(&dir)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", shown(&o));
        text(&o.stdout)
    };
    assert!(rebuild().contains("(no change from the package that was there)"));
    let routing = std::fs::read_to_string(dir.join("routing.yaml")).unwrap();
    std::fs::write(
        dir.join("routing.yaml"),
        routing.replace(
            "addLabels: [Internal Referral]",
            "addLabels: [Internal Referral, Psychiatry]",
        ),
    )
    .unwrap();
    let o = rebuild();
    assert!(o.contains("(updated the package that was there)"), "{o}");
    assert!(
        o.ends_with("  ~ routing rule psychiatry-referrals: set.addLabels\n"),
        "{o}"
    );
}

/// `curl`, as a test tool independent of careplane's client: (HTTP status, body).
fn curl(args: &[&str]) -> (u16, String) {
    let o = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl is needed");
    let t = text(&o.stdout);
    let (body, code) = t.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_owned())
}

#[test]
fn status_reports_a_missing_disabled_or_changed_plugin_and_exits_2() {
    let sim = Sim::start();
    sim.seed(json!({"resources": [
        {"resourceType": "Group", "type": "practitioner", "actual": true, "name": "Behavioral Health Coordinators"},
        {"resourceType": "Group", "type": "person", "actual": true, "name": "Care management (opt-out)"}
    ]}));
    let tmp = tempfile::tempdir().unwrap();
    canvas_project(&sim, tmp.path());
    let out = tmp.path().join("careplane_clinic");
    let run = |args: &[&str]| {
        let o = careplane()
            .args(["-q", "plugin"])
            .args(args)
            .arg(tmp.path())
            .args(["--target", "canvas"])
            .env("SIM_ID", CLIENT_ID)
            .env("SIM_SECRET", CLIENT_SECRET)
            .output()
            .unwrap();
        (o.status.code(), text(&o.stdout), shown(&o))
    };
    let (code, _, all) = run(&["build", "--out", out.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{all}");
    let (code, stdout, all) = run(&["status"]);
    assert_eq!(code, Some(2), "{all}");
    assert!(stdout.contains("not installed on target 'canvas'"), "{all}");

    // install it as `canvas install` does: POST /plugin-io/plugins/ with the tar.gz
    let tgz = tmp.path().join("pkg.tar.gz");
    let st = Command::new("tar")
        .arg("-czf")
        .arg(&tgz)
        .arg("-C")
        .arg(&out)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    let (_, tok) = curl(&[
        "-d",
        &format!(
            "grant_type=client_credentials&client_id={CLIENT_ID}&client_secret={CLIENT_SECRET}"
        ),
        &format!("{}/auth/token/", sim.base),
    ]);
    let token: Value = serde_json::from_str(&tok).unwrap();
    let bearer = format!(
        "Authorization: Bearer {}",
        token["access_token"].as_str().unwrap()
    );
    let plugins = format!("{}/plugin-io/plugins/", sim.base);
    let (code, body) = curl(&[
        "-H",
        &bearer,
        "-F",
        &format!("package=@{}", tgz.display()),
        &plugins,
    ]);
    assert_eq!(code, 201, "{body}");
    let (code, stdout, all) = run(&["status"]);
    assert_eq!(code, Some(0), "{all}");
    assert!(stdout.contains("in sync"), "{all}");

    // disabled on the instance
    let one = format!("{plugins}careplane_clinic/");
    assert_eq!(
        curl(&["-X", "PATCH", "-H", &bearer, "-d", "is_enabled=False", &one]).0,
        200
    );
    let (code, stdout, all) = run(&["status"]);
    assert_eq!(code, Some(2), "{all}");
    assert_eq!(
        stdout, "plugin careplane_clinic: disabled on the instance\n",
        "{all}"
    );

    // enabled again, and a rule's label changes in the manifests
    assert_eq!(
        curl(&["-X", "PATCH", "-H", &bearer, "-d", "is_enabled=True", &one]).0,
        200
    );
    let rules = std::fs::read_to_string(tmp.path().join("rules.yaml")).unwrap();
    std::fs::write(
        tmp.path().join("rules.yaml"),
        rules.replace("addLabels: [Internal Referral]", "addLabels: [Psychiatry]"),
    )
    .unwrap();
    let (code, stdout, all) = run(&["status"]);
    assert_eq!(code, Some(2), "{all}");
    assert!(
        stdout.contains("changed: installed version 1.0.0+"),
        "{all}"
    );

    // removed on the instance
    assert_eq!(curl(&["-X", "DELETE", "-H", &bearer, &one]).0, 204);
    let (code, stdout, all) = run(&["status"]);
    assert_eq!(code, Some(2), "{all}");
    assert!(stdout.contains("not installed"), "{all}");
    assert!(!all.contains(CLIENT_SECRET));
}

#[test]
fn install_uploads_the_package_through_the_plugin_api_then_updates_only_on_change() {
    let sim = Sim::start();
    sim.seed(json!({"resources": [
        {"resourceType": "Group", "type": "practitioner", "actual": true, "name": "Behavioral Health Coordinators"},
        {"resourceType": "Group", "type": "person", "actual": true, "name": "Care management (opt-out)"}
    ]}));
    let tmp = tempfile::tempdir().unwrap();
    canvas_project(&sim, tmp.path());
    let run = |args: &[&str]| {
        let o = careplane()
            .args(["-q", "plugin"])
            .args(args)
            .arg(tmp.path())
            .args(["--target", "canvas"])
            .env("SIM_ID", CLIENT_ID)
            .env("SIM_SECRET", CLIENT_SECRET)
            .output()
            .unwrap();
        (o.status.code(), text(&o.stdout), shown(&o))
    };
    // no terminal and no --auto-approve: refused, nothing installed
    let (code, _, all) = run(&["install"]);
    assert_eq!(code, Some(1), "{all}");
    assert_eq!(sim_get(&sim, "/__sim/plugin/careplane_clinic").0, 404);

    let (code, stdout, all) = run(&["install", "--auto-approve"]);
    assert_eq!(code, Some(0), "{all}");
    assert!(stdout.contains("will install version 1.0.0+"), "{all}");
    assert_eq!(run(&["status"]).0, Some(0));
    // the archive careplane wrote unpacks (gzip + ustar) to exactly the package's files
    let out = tmp.path().join("careplane_clinic");
    assert_eq!(run(&["build", "--out", out.to_str().unwrap()]).0, Some(0));
    let (_, stored) = sim_get(&sim, "/__sim/plugin/careplane_clinic");
    assert_eq!(stored["is_enabled"], true);
    let names: Vec<&str> = stored["files"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        names,
        [
            "CANVAS_MANIFEST.json",
            "README.md",
            "__init__.py",
            "careplane_rules.json",
            "handlers/__init__.py",
            "handlers/careplane_rules.py"
        ]
    );
    for f in names {
        assert_eq!(
            stored["files"][f].as_str().unwrap(),
            std::fs::read_to_string(out.join(f)).unwrap(),
            "{f}"
        );
    }

    // unchanged: nothing to do
    let (code, stdout, _) = run(&["install", "--auto-approve"]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("nothing to do"), "{stdout}");

    // a rule's label changes: an update (PATCH), then in sync again
    let rules = std::fs::read_to_string(tmp.path().join("rules.yaml")).unwrap();
    std::fs::write(
        tmp.path().join("rules.yaml"),
        rules.replace("addLabels: [Internal Referral]", "addLabels: [Psychiatry]"),
    )
    .unwrap();
    let before = sim.stats()["requests"]["POST plugin-io"].clone();
    let (code, stdout, all) = run(&["install", "--auto-approve"]);
    assert_eq!(code, Some(0), "{all}");
    assert!(stdout.contains("will update"), "{all}");
    assert_eq!(
        sim.stats()["requests"]["POST plugin-io"],
        before,
        "an update, not a second install"
    );
    assert_eq!(run(&["status"]).0, Some(0));
    let (_, stored) = sim_get(&sim, "/__sim/plugin/careplane_clinic");
    assert!(
        stored["files"]["careplane_rules.json"]
            .as_str()
            .unwrap()
            .contains("Psychiatry")
    );
}
