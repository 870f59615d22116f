//! `careplane plugin build` (issue 14): the package for examples/clinic, checked with the
//! Canvas SDK itself (PyPI `canvas`, pinned in tests/plugin/requirements.txt and installed by
//! tests/ci-tools/setup.sh into target/ci-tools/canvas-venv): `canvas validate` (the SDK's
//! manifest schema, its static lint and a sandbox load of the handlers) and the handler's
//! pytest tests (tests/plugin/) on the SDK's event and effect types and test database.
//! When the SDK is not installed these tests fail saying so (never skipped as passed).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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
        std::fs::read_to_string(root().join("src/plugin/handler.py")).unwrap()
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
