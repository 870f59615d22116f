//! `careplane watch` against the real FHIR server: new open tasks get routed while it
//! runs, one log line each, and SIGTERM stops it cleanly.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

#[test]
fn watch_routes_new_tasks_and_stops_on_sigterm() {
    let server = Server::new();
    let project = unique("w");
    let staff = seed_staff(&server, &project, 1);
    let title = format!("Refill request {project}");
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            (
                "careplane.yaml",
                format!(
                    "apiVersion: careplane.dev/v1\nkind: Project\nmetadata:\n  name: {project}\nspec: {{}}\n"
                ),
            ),
            (
                "routing.yaml",
                format!(
                    "apiVersion: careplane.dev/v1\nkind: Team\nmetadata:\n  name: refills\nspec:\n  displayName: Refills {project}\n---\napiVersion: careplane.dev/v1\nkind: RoutingRule\nmetadata:\n  name: refills\nspec:\n  match:\n    description: \"{title}\"\n  set:\n    team: refills\n    addLabels: [Refill]\n"
                ),
            ),
        ],
    );
    assert!(apply(dir.path(), &[]).status.success()); // the team

    let mut child = Command::new(assert_cmd::cargo::cargo_bin("careplane"))
        .arg("watch")
        .arg(dir.path())
        .args(["--server", &fhir_url(), "--interval", "1"])
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let task = server.post(&json!({"resourceType": "Task", "status": "requested", "intent": "order", "description": title,
        "requester": {"reference": format!("Practitioner/{}", staff[0].id)}}));
    let id = task["id"].as_str().unwrap().to_owned();
    let started = Instant::now();
    let routed = loop {
        let t = server.get(&format!("Task/{id}"));
        if t["extension"].is_array() {
            break t;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the task was not routed in time"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(routed["input"][0]["valueString"], "Refill");
    // SIGTERM: a clean stop
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let (mut stdout, mut stderr) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        stdout.contains(&format!(
            "careplane watch: routed Task/{id} (routing rule 'refills'"
        )),
        "{stdout}"
    );
    assert_eq!(
        stdout.matches(&format!("Task/{id}")).count(),
        1,
        "one line per routed task: {stdout}"
    );
    assert!(stderr.contains("careplane watch: stopped"), "{stderr}");
    assert!(!stdout.contains(&title), "task titles are not logged");
}
