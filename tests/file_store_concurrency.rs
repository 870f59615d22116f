//! Two careplane processes on one file store (issue 8): an apply holds the store's lock
//! from before it reads until its last write, so a second apply waits (one message on
//! stderr) and then plans from what the first one wrote. Nothing careplane does not own
//! changes, every file parses, and no temporary file is left behind.
//!
//! No server needed: `cargo test --test file_store_concurrency -- --nocapture` also prints
//! the loop's wall time and how often an apply waited.

// The test prints its measurements (not careplane output, so not through the redaction edge).
#![allow(clippy::disallowed_macros)]
mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const ROUNDS: usize = 20;
const WAITING: &str = "waiting for the file store lock";
const TAG_SYSTEM: &str = "https://careplane.dev/project";

fn bin() -> Command {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin("careplane"));
    c.env("NO_COLOR", "1")
        .env_remove("CAREPLANE_SERVER")
        .env_remove("CAREPLANE_TOKEN")
        .env_remove("CAREPLANE_LOCK_TIMEOUT")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Records careplane does not own, one per resource type it writes (plus the files it
/// only reads): untagged, or tagged for another project.
const FOREIGN: &[(&str, &str)] = &[
    (
        "Group.ndjson",
        r#"{"resourceType":"Group","id":"foreign-volunteers","meta":{"versionId":"4","lastUpdated":"2026-01-02T03:04:05.000Z"},"type":"practitioner","actual":true,"name":"Volunteers (not managed)","member":[{"entity":{"reference":"Practitioner/9c7f7c74414adadd027bcdc42753954a"}}]}"#,
    ),
    (
        "Group.ndjson",
        r#"{"resourceType":"Group","id":"other-project-team","meta":{"versionId":"2","lastUpdated":"2026-01-02T03:04:05.000Z","tag":[{"system":"https://careplane.dev/project","code":"other-clinic"}]},"identifier":[{"system":"https://careplane.dev/id/other-clinic","value":"team/front"}],"type":"practitioner","actual":true,"name":"Front (other project)"}"#,
    ),
    (
        "CodeSystem.ndjson",
        r#"{"resourceType":"CodeSystem","id":"foreign-codes","meta":{"versionId":"1","lastUpdated":"2026-01-02T03:04:05.000Z"},"url":"http://example.org/fhir/CodeSystem/local-codes","status":"active","content":"complete","concept":[{"code":"X","display":"Local"}]}"#,
    ),
    (
        "PractitionerRole.ndjson",
        r#"{"resourceType":"PractitionerRole","id":"foreign-volunteer-role","meta":{"versionId":"1","lastUpdated":"2026-01-02T03:04:05.000Z"},"active":true,"code":[{"text":"Volunteer"}]}"#,
    ),
    (
        "Task.ndjson",
        r#"{"resourceType":"Task","id":"foreign-task-done","meta":{"versionId":"1","lastUpdated":"2026-01-02T03:04:05.000Z"},"status":"completed","intent":"order","description":"Scan the paper chart"}"#,
    ),
    (
        "Task.ndjson",
        r#"{"resourceType":"Task","id":"foreign-task-open","meta":{"versionId":"1","lastUpdated":"2026-01-02T03:04:05.000Z"},"status":"requested","intent":"order","description":"Call the courier"}"#,
    ),
];

/// A copy of the example clinic in `root/clinic`, its store (`store`, plus [`FOREIGN`])
/// shared by two targets `a` and `b` whose teams and roles may differ (per-target overlays:
/// each target's documents carry `metadata.targets`). The two targets stand for two
/// careplane runs with different manifests against one store. Returns the directory and
/// the store.
fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/clinic");
    let dir = root.path().join("clinic");
    common::copy_dir(&example, &dir);
    let store = dir.join("store");
    for (file, line) in FOREIGN {
        let path = store.join(file);
        let mut text = std::fs::read_to_string(&path).unwrap_or_default();
        text.push_str(line);
        text.push('\n');
        std::fs::write(path, text).unwrap();
    }
    let project = dir.join("careplane.yaml");
    let text = std::fs::read_to_string(&project).unwrap();
    let local = "    local:\n      type: file\n      path: store\n";
    assert!(text.contains(local));
    let two = "    a:\n      type: file\n      path: store\n      values: local\n    b:\n      type: file\n      path: store\n";
    std::fs::write(
        &project,
        text.replace(local, two)
            .replace("defaultTarget: local", "defaultTarget: a"),
    )
    .unwrap();
    std::fs::remove_file(dir.join("teams.yaml")).unwrap();
    std::fs::remove_file(dir.join("roles.yaml")).unwrap();
    set_variant(&dir, "a", 0);
    set_variant(&dir, "b", 0);
    (root, dir, store)
}

/// Two versions of target `side`'s teams and roles: 1 renames a team, drops one of its
/// members and changes a role's display (so Group and CodeSystem are rewritten every
/// round).
fn set_variant(dir: &Path, side: &str, variant: usize) {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/clinic");
    let mut teams = std::fs::read_to_string(example.join("teams.yaml")).unwrap();
    let mut roles = std::fs::read_to_string(example.join("roles.yaml")).unwrap();
    if variant == 1 {
        let member = "    - npi: \"1462089370\"                               # Priya Fennimore, RN care manager\n";
        assert!(teams.contains(member) && teams.contains("displayName: Care Coordinators\n"));
        teams = teams.replace(member, "").replace(
            "displayName: Care Coordinators\n",
            "displayName: Care Coordination\n",
        );
        assert!(roles.contains("display: Care Coordinator\n"));
        roles = roles.replace(
            "display: Care Coordinator\n",
            "display: Care Coordinator (outreach)\n",
        );
    }
    let scoped = |t: String| t.replace("metadata:\n", &format!("metadata:\n  targets: [{side}]\n"));
    std::fs::write(dir.join(format!("teams-{side}.yaml")), scoped(teams)).unwrap();
    std::fs::write(dir.join(format!("roles-{side}.yaml")), scoped(roles)).unwrap();
}

fn owned(r: &Value) -> bool {
    r.pointer("/meta/tag")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|t| t["system"] == TAG_SYSTEM && t["code"] == "clinic")
}

/// Every `*.ndjson` line parses; no temporary file is left; the records careplane does
/// not own, keyed by file and id.
fn check_store(store: &Path) -> BTreeMap<(String, String), Value> {
    let mut foreign = BTreeMap::new();
    for e in std::fs::read_dir(store).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            !name.contains(".tmp"),
            "temporary file {name} left in the store"
        );
        if !name.ends_with(".ndjson") {
            continue;
        }
        let text = std::fs::read_to_string(store.join(&name)).unwrap();
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{name} ends mid-line"
        );
        for (i, line) in text.lines().enumerate() {
            let r: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{name} line {}: not JSON ({e})", i + 1));
            if !owned(&r) {
                let id = r["id"].as_str().unwrap().to_owned();
                assert!(
                    foreign.insert((name.clone(), id.clone()), r).is_none(),
                    "{name}: record {id} appears twice"
                );
            }
        }
    }
    foreign
}

fn spawn_apply(dir: &Path, side: &str) -> std::process::Child {
    bin()
        .args(["apply", "--auto-approve", "--target", side])
        .arg(dir)
        .env("CAREPLANE_LOCK_TIMEOUT", "60")
        .spawn()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstderr:\n{}\nstdout:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    )
}

fn waited(o: &Output) -> bool {
    let n = String::from_utf8_lossy(&o.stderr).matches(WAITING).count();
    assert!(n <= 1, "the wait message is printed once: {}", text(o));
    n == 1
}

/// `plan --detailed-exitcode`: whether the store matches target `side`'s manifests.
fn plan_is_empty(dir: &Path, side: &str) -> bool {
    let o = bin()
        .args(["plan", "--detailed-exitcode", "--target", side])
        .arg(dir)
        .output()
        .unwrap();
    match o.status.code() {
        Some(0) => true,
        Some(2) => false,
        _ => panic!("plan failed: {}", text(&o)),
    }
}

#[test]
fn two_concurrent_applies_never_lose_data() {
    let (_root, dir, store) = setup();
    let foreign = check_store(&store);
    assert_eq!(foreign.len(), 20 + 20 + 12 + 1 + FOREIGN.len());

    let mut busy = Duration::ZERO;
    let mut waits = 0;
    for round in 0..ROUNDS {
        set_variant(&dir, "a", round % 2);
        set_variant(&dir, "b", (round + 1) % 2);
        let started = Instant::now();
        let (ca, cb) = (spawn_apply(&dir, "a"), spawn_apply(&dir, "b"));
        let (oa, ob) = (
            ca.wait_with_output().unwrap(),
            cb.wait_with_output().unwrap(),
        );
        busy += started.elapsed();
        assert!(oa.status.success(), "round {round}, apply a: {}", text(&oa));
        assert!(ob.status.success(), "round {round}, apply b: {}", text(&ob));
        let (wa, wb) = (waited(&oa), waited(&ob));
        assert!(!(wa && wb), "round {round}: both applies waited");
        waits += usize::from(wa || wb);

        assert_eq!(
            check_store(&store),
            foreign,
            "round {round}: records careplane does not own changed"
        );
        // The two variants differ, so exactly one set of manifests matches the store:
        // the one applied last (the one that waited, if one did).
        let (ea, eb) = (plan_is_empty(&dir, "a"), plan_is_empty(&dir, "b"));
        assert!(
            ea != eb,
            "round {round}: the store matches {} of the two variants (a lost update)",
            if ea { "both" } else { "neither" }
        );
        assert!(!wa || ea, "round {round}: a waited, so it applied last");
        assert!(!wb || eb, "round {round}: b waited, so it applied last");
    }
    eprintln!(
        "{ROUNDS} rounds of two concurrent applies: {:.2} s in the applies ({:.0} ms a round); one apply waited in {waits} round(s)",
        busy.as_secs_f64(),
        busy.as_secs_f64() * 1000.0 / ROUNDS as f64
    );
}

fn snapshot(store: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(store)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "ndjson"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

#[test]
fn an_apply_waits_for_the_lock_and_gives_up_after_the_timeout() {
    let (_root, a, store) = setup();
    let before = snapshot(&store);
    let lock = File::create(store.join(".careplane.lock")).unwrap();
    lock.lock().unwrap();

    // held for longer than the timeout: one message, then a clear error; nothing written
    let started = Instant::now();
    let o = bin()
        .args(["apply", "--auto-approve"])
        .arg(&a)
        .env("CAREPLANE_LOCK_TIMEOUT", "1")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(waited(&o), "{}", text(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("gave up") && stderr.contains("CAREPLANE_LOCK_TIMEOUT"),
        "{}",
        text(&o)
    );
    assert_eq!(snapshot(&store), before);

    // reads do not wait: plan works while the lock is held
    let o = bin().arg("plan").arg(&a).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(!waited(&o));

    // released while the apply waits: it goes ahead
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        drop(lock);
    });
    let started = Instant::now();
    let o = bin()
        .args(["apply", "--auto-approve"])
        .arg(&a)
        .env("CAREPLANE_LOCK_TIMEOUT", "30")
        .output()
        .unwrap();
    releaser.join().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(waited(&o), "{}", text(&o));
    assert!(started.elapsed() >= Duration::from_millis(1400));
    assert!(plan_is_empty(&a, "a"));

    // a timeout that is not a number of seconds is an error naming the variable
    let o = bin()
        .args(["apply", "--auto-approve"])
        .arg(&a)
        .env("CAREPLANE_LOCK_TIMEOUT", "soon")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("CAREPLANE_LOCK_TIMEOUT"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_line_that_is_not_json_is_named_by_file_and_line() {
    let (_root, a, store) = setup();
    let path = store.join("Group.ndjson");
    let mut text_ = std::fs::read_to_string(&path).unwrap();
    text_.push_str("{\"resourceType\":\"Gro\n");
    std::fs::write(&path, text_).unwrap();
    let o = bin().arg("plan").arg(&a).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("Group.ndjson line 5: not JSON"),
        "{}",
        text(&o)
    );
}
