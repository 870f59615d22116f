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

/// `GET /healthz` on the health address: 200 once a pass succeeded, with its age.
fn health(addr: &str) -> Option<(u16, String)> {
    use std::io::Write;
    let mut conn = std::net::TcpStream::connect(addr).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    conn.read_to_string(&mut text).ok()?;
    let status = text.split(' ').nth(1)?.parse().ok()?;
    Some((status, text))
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// The health check a platform probes: healthy once a pass succeeded; unhealthy while
/// every pass fails (an unreachable server), with the reason in words.
#[test]
fn watch_serves_a_health_check_that_follows_its_passes() {
    let project = unique("wh");
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
                "apiVersion: careplane.dev/v1\nkind: Team\nmetadata:\n  name: t\nspec: {}\n---\napiVersion: careplane.dev/v1\nkind: RoutingRule\nmetadata:\n  name: r\nspec:\n  match:\n    description: \"x\"\n  set:\n    team: t\n".to_owned(),
            ),
        ],
    );
    let closed = free_addr(); // nothing listens there
    for (server, want) in [(format!("http://{closed}/fhir"), 503), (fhir_url(), 200)] {
        let addr = free_addr();
        let mut child = Command::new(assert_cmd::cargo::cargo_bin("careplane"))
            .arg("watch")
            .arg(dir.path())
            .args(["--server", &server, "--interval", "1", "--health", &addr])
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        let got = loop {
            if let Some((status, text)) = health(&addr)
                && (status == want || started.elapsed() > Duration::from_secs(15))
            {
                break (status, text);
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no health answer"
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = child.wait();
        assert_eq!(got.0, want, "{}", got.1);
        if want == 503 {
            assert!(got.1.contains("no good pass yet"), "{}", got.1);
        } else {
            assert!(got.1.contains("ok: last good pass"), "{}", got.1);
        }
    }
}
