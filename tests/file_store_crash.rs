//! A file-store apply killed at any moment (issue 13): the apply keeps its writes in memory
//! and writes each changed file once at its end, so a `kill -9` leaves every file either as
//! it was before the apply or as the apply wrote it, every line parses, a plan afterwards
//! works, and the next apply finishes the job (removing any temporary file left behind).
//!
//! No server needed.

// The test prints its measurement (not careplane output, so not through the redaction edge).
#![allow(clippy::disallowed_macros)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::{Value, json};

const STAFF: usize = 600;

fn bin() -> Command {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin("careplane"));
    c.env("NO_COLOR", "1")
        .env_remove("CAREPLANE_SERVER")
        .env_remove("CAREPLANE_TOKEN")
        .env_remove("CAREPLANE_LOCK_TIMEOUT")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// STAFF practitioners and one role assignment each, 30 teams: several hundred writes.
fn org(dir: &Path) {
    std::fs::create_dir_all(dir.join("store")).unwrap();
    let mut staff = String::new();
    for i in 0..STAFF {
        staff.push_str(
            &json!({"resourceType": "Practitioner", "id": format!("c{i:031}"), "active": true,
                "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": format!("2{i:09}")}]})
            .to_string(),
        );
        staff.push('\n');
    }
    std::fs::write(dir.join("store/Practitioner.ndjson"), staff).unwrap();
    let mut docs = vec![
        "apiVersion: careplane.dev/v1\nkind: Project\nmetadata:\n  name: crash\nspec:\n  defaultTarget: local\n  targets:\n    local: {type: file, path: store}\n".to_owned(),
        "apiVersion: careplane.dev/v1\nkind: Role\nmetadata:\n  name: rn\nspec:\n  code: RN\n  display: Nurse\n  domain: clinical\n".to_owned(),
    ];
    for k in 0..30 {
        let members: String = (k * 10..k * 10 + 10)
            .map(|i| format!("    - npi: \"2{i:09}\"\n"))
            .collect();
        docs.push(format!("apiVersion: careplane.dev/v1\nkind: Team\nmetadata:\n  name: team-{k}\nspec:\n  displayName: Team {k}\n  members:\n{members}"));
    }
    for i in 0..STAFF {
        docs.push(format!("apiVersion: careplane.dev/v1\nkind: RoleAssignment\nmetadata:\n  name: s{i}\nspec:\n  practitioner: {{npi: \"2{i:09}\"}}\n  roles: [rn]\n"));
    }
    std::fs::write(dir.join("org.yaml"), docs.join("---\n")).unwrap();
}

/// The data files' contents; panics on a line that does not parse.
fn snapshot(store: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(store).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if !name.ends_with(".ndjson") || name.starts_with('.') {
            continue;
        }
        let text = std::fs::read_to_string(store.join(&name)).unwrap();
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{name} ends mid-line"
        );
        for (i, line) in text.lines().enumerate() {
            serde_json::from_str::<Value>(line)
                .unwrap_or_else(|e| panic!("{name} line {}: not JSON ({e})", i + 1));
        }
        out.insert(name, text);
    }
    out
}

fn plan_is_empty(dir: &Path) -> bool {
    let s = bin()
        .arg("plan")
        .arg("--detailed-exitcode")
        .arg(dir)
        .status()
        .unwrap();
    match s.code() {
        Some(0) => true,
        Some(2) => false,
        other => panic!("plan failed: {other:?}"),
    }
}

#[test]
fn an_apply_killed_at_any_moment_leaves_the_store_as_before_or_as_after() {
    let root = tempfile::tempdir().unwrap();
    // how long a whole apply takes here, to spread the kills over it
    let probe = root.path().join("probe");
    org(&probe);
    let started = Instant::now();
    let s = bin()
        .args(["apply", "--auto-approve"])
        .arg(&probe)
        .status()
        .unwrap();
    assert!(s.success());
    let whole = started.elapsed();
    assert!(plan_is_empty(&probe));

    let mut before_seen = 0;
    let mut after_seen = 0;
    for k in 1..=8u32 {
        let dir = root.path().join(format!("run{k}"));
        org(&dir);
        let store = dir.join("store");
        let before = snapshot(&store);
        let mut child = bin()
            .args(["apply", "--auto-approve"])
            .arg(&dir)
            .spawn()
            .unwrap();
        std::thread::sleep(whole * k / 7);
        // SIGKILL: no destructor, no end of session
        let _ = child.kill();
        let _ = child.wait();
        let now = snapshot(&store);
        if now == before {
            before_seen += 1;
        } else {
            // something was written: then all of it was (one apply, one write per file)
            assert!(
                plan_is_empty(&dir),
                "kill {k}: the store changed but is not what the apply writes"
            );
            after_seen += 1;
        }
        // the next apply finishes the job and cleans up
        let s = bin()
            .args(["apply", "--auto-approve"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(s.success(), "kill {k}: the next apply failed");
        assert!(plan_is_empty(&dir));
        let left: Vec<String> = std::fs::read_dir(&store)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "kill {k}: temporary files left: {left:?}");
    }
    eprintln!(
        "a whole apply: {} ms; killed applies: {before_seen} left the store as before, {after_seen} as after",
        whole.as_millis()
    );
    assert!(before_seen > 0, "no kill landed before the apply's end");
}
