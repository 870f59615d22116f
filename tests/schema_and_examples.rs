//! The committed schemas are current, the examples use them, and the example clinic plans
//! and applies on the embedded file store.

mod common;

use std::path::{Path, PathBuf};

use common::careplane;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_committed_manifest_schema_is_current() {
    let committed = std::fs::read_to_string(root().join("schema/careplane.schema.json")).unwrap();
    assert!(
        committed == careplane::manifest::schema::manifest_schema_text(),
        "schema/careplane.schema.json is stale: run `cargo run -- schema > schema/careplane.schema.json`"
    );
    let v: Value = serde_json::from_str(&committed).unwrap();
    assert_eq!(v["$schema"], "http://json-schema.org/draft-07/schema#");
}

#[test]
fn the_committed_plan_schema_is_current() {
    let committed = std::fs::read_to_string(root().join("schema/plan.schema.json")).unwrap();
    assert!(
        committed == careplane::plan::schema::plan_schema_text(),
        "schema/plan.schema.json is stale: run `cargo run -- schema --plan > schema/plan.schema.json`"
    );
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
}

#[test]
fn every_example_manifest_points_editors_at_the_schema_and_passes_it() {
    let mut files = Vec::new();
    yaml_files(&root().join("examples/clinic"), &mut files);
    assert!(files.len() >= 4);
    // the whole editor-facing schema (allOf + if/then), as yaml-language-server reads it
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("schema/careplane.schema.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::draft7::new(&schema).unwrap();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let first = text.lines().next().unwrap();
        let rel = first
            .strip_prefix("# yaml-language-server: $schema=")
            .unwrap_or_else(|| {
                panic!(
                    "{} does not start with the yaml-language-server line",
                    f.display()
                )
            });
        assert!(
            f.parent().unwrap().join(rel).exists(),
            "{}: {rel} does not exist",
            f.display()
        );
        let docs = careplane::manifest::yaml::parse_documents(&text).unwrap();
        for d in docs {
            let errors: Vec<String> = validator
                .iter_errors(&d.value)
                .map(|e| e.to_string())
                .collect();
            assert!(errors.is_empty(), "{}: {errors:?}", f.display());
        }
    }
}

#[test]
fn the_example_clinic_plans_applies_and_converges_on_the_file_store() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("clinic");
    common::copy_dir(&root().join("examples/clinic"), &dir);
    let store_before = std::fs::read_to_string(dir.join("store/Group.ndjson")).unwrap();

    let out = careplane()
        .arg("plan")
        .arg(&dir)
        .args(["--format", "json", "--detailed-exitcode"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["target"]["name"], "local");
    assert_eq!(plan["summary"]["create"], 20, "{:#}", plan["summary"]);
    // the lab team; the care-team assignment's patients are an effect, previewed apart
    assert_eq!(plan["summary"]["update"], 1);
    // the JSON plan follows its published schema
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("schema/plan.schema.json")).unwrap(),
    )
    .unwrap();
    let errors: Vec<String> = jsonschema::draft7::new(&schema)
        .unwrap()
        .iter_errors(&plan)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    // plan wrote nothing
    assert_eq!(
        std::fs::read_to_string(dir.join("store/Group.ndjson")).unwrap(),
        store_before
    );

    careplane()
        .arg("apply")
        .arg(&dir)
        .arg("--auto-approve")
        .assert()
        .success();
    careplane()
        .arg("plan")
        .arg(&dir)
        .arg("--detailed-exitcode")
        .assert()
        .code(0)
        .stdout(predicates::str::contains(
            "No changes. 21 object(s) match the manifests.",
        ));
    // the legacy group careplane does not own is exactly as seeded
    let legacy = |text: &str| {
        text.lines()
            .find(|l| l.contains("Night Shift"))
            .map(str::to_owned)
    };
    let after = std::fs::read_to_string(dir.join("store/Group.ndjson")).unwrap();
    assert_eq!(legacy(&after), legacy(&store_before));
    assert!(legacy(&after).is_some());
}

#[test]
fn the_markdown_plan_has_a_summary_table_and_each_change_with_its_manifest_line() {
    let out = careplane()
        .arg("plan")
        .arg(root().join("examples/clinic"))
        .args(["--format", "markdown"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let md = String::from_utf8(out.stdout).unwrap();
    assert!(md.contains("| kind | create | update | delete | manual | unchanged |"));
    assert!(md.contains("| team | 4 | 1 | 0 | 0 | 0 |"), "{md}");
    assert!(
        md.contains("| **total** | **20** | **1** | **0** | **0** | **0** |")
            && md.contains("| patient group | 2 | 0 | 0 | 0 | 0 |")
            && md.contains("16 members: +16"),
        "{md}"
    );
    assert_eq!(md.matches("<details>").count(), 21);
    assert!(
        md.contains(
            "| care-team assignment 'rowan-ashbourne-pcp' | 3 | 0 | patient care team(s) |"
        ),
        "{md}"
    );
    assert_eq!(
        md.matches("<details>").count(),
        md.matches("</details>").count()
    );
    // the lab team's drift: who left, who joined, where the manifest says so
    let lab = &md[md.find("update team 'lab-team'").unwrap()..];
    let lab = &lab[..lab.find("</details>").unwrap()];
    assert!(lab.contains("`teams.yaml:57:7`"), "{lab}");
    assert!(lab.contains("−\"Practitioner/"), "{lab}");
    assert!(lab.contains("(npi 1670425184)"), "{lab}");
    assert!(!lab.contains("&lt;br&gt;"), "{lab}");
    assert!(md.contains("· plan file `sha256:"), "{md}");
    assert!(md.trim_end().ends_with("</sub>"));
}

#[test]
fn the_canvas_example_keeps_the_same_organisation_as_the_clinic_example() {
    for f in [
        "roles.yaml",
        "care-team-roles.yaml",
        "teams.yaml",
        "staff.yaml",
    ] {
        let a = std::fs::read_to_string(root().join("examples/clinic").join(f)).unwrap();
        let b = std::fs::read_to_string(root().join("examples/canvas-clinic").join(f)).unwrap();
        assert!(
            a == b,
            "examples/canvas-clinic/{f} differs from examples/clinic/{f}: copy it over"
        );
    }
    careplane()
        .arg("validate")
        .arg(root().join("examples/canvas-clinic"))
        .assert()
        .success();
    // the guide's own group and routing rule run inside Canvas as the plugin
    let tmp = tempfile::tempdir().unwrap();
    let out = careplane()
        .args(["plugin", "build"])
        .arg(root().join("examples/canvas-clinic"))
        .arg("--out")
        .arg(tmp.path().join("careplane_clinic"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("1 routing rule(s), 1 patient group(s)"),
        "{text}"
    );
}

#[test]
fn the_committed_drift_schema_is_current() {
    let committed = std::fs::read_to_string(root().join("schema/drift.schema.json")).unwrap();
    assert!(
        committed == careplane::drift::schema_text(),
        "schema/drift.schema.json is stale: run `cargo run -- schema --drift > schema/drift.schema.json`"
    );
}
