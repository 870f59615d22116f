//! Snapshot tests (insta) of every output format, on the example clinic and its seeded
//! file store: human, JSON and Markdown plans, drift reports, and validation diagnostics
//! (plain and GitHub annotations). Review changes with `cargo insta review`.

mod common;

use common::{careplane, write};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Run the binary from the repository root (relative paths in the output), with a fixed
/// commit so the plan's footer and checksum are stable.
fn run(args: &[&str]) -> String {
    let out = careplane()
        .current_dir(ROOT)
        .env("GITHUB_SHA", "0123456789abcdef0123456789abcdef01234567")
        // keyed pseudonyms and digests are stable for a fixed key
        .env("CAREPLANE_PSEUDONYM_KEY", "snapshot-key")
        .args(args)
        .output()
        .unwrap();
    let mut s = String::from_utf8(out.stdout).unwrap();
    s.push_str(&String::from_utf8(out.stderr).unwrap());
    s
}

macro_rules! snapshot {
    ($name:expr, $value:expr) => {
        insta::with_settings!({filters => vec![(r"in \d+ ms", "in [N] ms")]}, {
            insta::assert_snapshot!($name, $value);
        })
    };
}

#[test]
fn plan_human() {
    snapshot!("plan_human", run(&["plan", "examples/clinic"]));
}

#[test]
fn plan_json() {
    snapshot!(
        "plan_json",
        run(&["plan", "examples/clinic", "--format", "json"])
    );
}

#[test]
fn plan_markdown() {
    snapshot!(
        "plan_markdown",
        run(&["plan", "examples/clinic", "--format", "markdown"])
    );
}

#[test]
fn drift_human_json_markdown() {
    snapshot!("drift_human", run(&["drift", "examples/clinic"]));
    snapshot!(
        "drift_json",
        run(&["drift", "examples/clinic", "--format", "json"])
    );
    snapshot!(
        "drift_markdown",
        run(&["drift", "examples/clinic", "--format", "markdown"])
    );
}

#[test]
fn validate_plain_and_github() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[(
            "teams.yaml",
            "apiVersion: careplane.dev/v1\nkind: Team\nmetadata:\n  name: a\nspec:\n  responsibilities: [REVIEW_COVERAGES, FLY]\n  colour: red\n---\napiVersion: careplane.dev/v1\nkind: Team\nmetadata:\n  name: b\nspec:\n  responsibilities: [REVIEW_COVERAGES]\n".into(),
        )],
    );
    let plain = careplane()
        .current_dir(dir.path())
        .args(["validate", "--format", "plain"])
        .output()
        .unwrap();
    snapshot!("validate_plain", String::from_utf8(plain.stderr).unwrap());
    let github = careplane()
        .current_dir(dir.path())
        .args(["validate", "--format", "github"])
        .output()
        .unwrap();
    snapshot!("validate_github", String::from_utf8(github.stdout).unwrap());
}

#[test]
fn apply_report_and_export() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("clinic");
    common::copy_dir(&std::path::Path::new(ROOT).join("examples/clinic"), &dir);
    let out = careplane()
        .arg("apply")
        .arg("clinic")
        .arg("--auto-approve")
        .current_dir(tmp.path())
        .output()
        .unwrap();
    let report = String::from_utf8(out.stdout).unwrap();
    let report = &report[report.find("Plan:").unwrap()..];
    insta::with_settings!({filters => vec![(r"[0-9a-f]{32}", "[id]")]}, {
        insta::assert_snapshot!("apply_report", report);
    });
    let out = careplane()
        .arg("export")
        .arg("clinic")
        .args(["--out", "exported"])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in [
        "roles.yaml",
        "care-team-roles.yaml",
        "teams.yaml",
        "staff.yaml",
    ] {
        let text = std::fs::read_to_string(tmp.path().join("exported").join(f)).unwrap();
        insta::assert_snapshot!(format!("export_{}", f.trim_end_matches(".yaml")), text);
    }
}
