//! `careplane watch` and `careplane reconcile --effects` against the real FHIR server (and
//! the Canvas simulator): new open tasks get routed while watch runs, one log line each, a
//! person's re-route is never reverted; memberships follow patients whose data changed,
//! configuration is never written; SIGTERM stops with a summary and exit 143.

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
    // a person re-routes it to another team while watch runs: never reverted
    let other = server.post(
        &json!({"resourceType": "Group", "type": "practitioner", "actual": true,
        "name": format!("Other {project}")}),
    );
    let mut rerouted = routed.clone();
    let other_ref = format!("Group/{}", other["id"].as_str().unwrap());
    for e in rerouted["extension"].as_array_mut().unwrap() {
        if e["url"].as_str().unwrap().ends_with("task-team") {
            e["valueReference"] = json!({"reference": other_ref});
        }
    }
    server.put(&rerouted);
    // a second task created now is routed within a pass or two; by then the re-routed one
    // has been seen by several passes
    let second = server.post(&json!({"resourceType": "Task", "status": "requested", "intent": "order", "description": title,
        "requester": {"reference": format!("Practitioner/{}", staff[0].id)}}));
    let second = second["id"].as_str().unwrap().to_owned();
    let started = Instant::now();
    while !server.get(&format!("Task/{second}"))["extension"].is_array() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the second task was not routed in time"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(2500));
    let kept = server.get(&format!("Task/{id}"));
    assert!(
        kept["extension"].to_string().contains(&other_ref),
        "the person's re-route was reverted: {kept}"
    );
    // SIGTERM: a clean stop, a summary, exit 143
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143), "{status:?}");
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
    assert!(
        stdout.contains("full, 0 failed): 2 task(s) routed; group members +0 -0"),
        "the summary: {stdout}"
    );
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

/// A world for effects: this test's patients (marked by an identifier system), each with
/// an active A0001 consent, an authoritative opt-out group over them (and a second one
/// with the default 20% removal limit), and a team.
struct Effects {
    server: Server,
    project: String,
    system: String,
    dir: tempfile::TempDir,
    patients: Vec<String>,
}

fn consent(pid: &str, status: &str) -> serde_json::Value {
    json!({
        "resourceType": "Consent", "status": status,
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "urn:test:consents", "code": "A0001"}]}],
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTOUT"}]},
        "patient": {"reference": format!("Patient/{pid}")}
    })
}

fn effects_world(strict_group: bool) -> Effects {
    let server = Server::new();
    let project = unique("fx");
    let system = format!("urn:test:{project}");
    let mut patients = Vec::new();
    for i in 0..3 {
        let p = server.post(&json!({"resourceType": "Patient", "active": true,
            "identifier": [{"system": system, "value": format!("{i}")}]}));
        let id = p["id"].as_str().unwrap().to_owned();
        server.post(&consent(&id, "active"));
        patients.push(id);
    }
    let group = |name: &str, limit: &str| {
        format!(
            "apiVersion: careplane.dev/v1\nkind: PatientGroup\nmetadata:\n  name: {name}\nspec:\n  displayName: {name} {project}\n  mode: authoritative\n{limit}  rule:\n    all:\n      - identifier: {{system: \"{system}\"}}\n      - not:\n          consent: {{code: A0001, status: rejected}}\n"
        )
    };
    let mut groups = group("opt-out", "  maxRemovalShare: 0.5\n");
    if strict_group {
        groups.push_str("---\n");
        groups.push_str(&group("strict", ""));
    }
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
            ("groups.yaml", groups),
            (
                "teams.yaml",
                format!(
                    "apiVersion: careplane.dev/v1\nkind: Team\nmetadata:\n  name: nurses\nspec:\n  displayName: Nurses {project}\n"
                ),
            ),
        ],
    );
    let out = apply(dir.path(), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Effects {
        server,
        project,
        system,
        dir,
        patients,
    }
}

impl Effects {
    /// The member patient ids of one of this project's groups.
    fn members(&self, name: &str) -> Vec<String> {
        let g = self
            .server
            .owned("Group", &self.project)
            .into_iter()
            .find(|g| g["name"] == format!("{name} {}", self.project))
            .unwrap();
        let mut m: Vec<String> = g["member"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| m["entity"]["reference"].as_str().unwrap()["Patient/".len()..].to_owned())
            .collect();
        m.sort();
        m
    }

    /// A person renames the team by hand (configuration drift effects passes leave alone).
    fn rename_team_by_hand(&self) {
        let mut team = self
            .server
            .owned("Group", &self.project)
            .into_iter()
            .find(|g| g["type"] == "practitioner")
            .unwrap();
        team["name"] = json!(format!("Renamed {}", self.project));
        self.server.put(&team);
    }

    fn team_name(&self) -> String {
        self.server
            .owned("Group", &self.project)
            .into_iter()
            .find(|g| g["type"] == "practitioner")
            .unwrap()["name"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// A new patient who matches, and the first patient opting out.
    fn activity(&self) -> String {
        let p = self
            .server
            .post(&json!({"resourceType": "Patient", "active": true,
            "identifier": [{"system": self.system, "value": "new"}]}));
        let new = p["id"].as_str().unwrap().to_owned();
        self.server.post(&consent(&self.patients[0], "rejected"));
        new
    }

    fn expected(&self, new: &str) -> Vec<String> {
        let mut want = vec![
            self.patients[1].clone(),
            self.patients[2].clone(),
            new.to_owned(),
        ];
        want.sort();
        want
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `reconcile --effects`: a new matching patient joins, a patient whose consent was
/// revoked leaves (authoritative group), the hand-renamed team stays as it is (counted as
/// configuration drift), and a group over its removal limit is held back (exit 3) while
/// the rest is applied. No patient id is printed.
#[test]
fn reconcile_effects_keeps_memberships_current_and_never_writes_configuration() {
    let w = effects_world(true);
    w.rename_team_by_hand();
    let new = w.activity();
    let out = careplane()
        .args(["reconcile", "--effects"])
        .arg(w.dir.path())
        .args(["--server", &fhir_url()])
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(3), "held back: {stdout}{stderr}");
    assert_eq!(w.members("opt-out"), w.expected(&new));
    // 1 of 3 (33%) is over the default 20%: held back, said so
    assert_eq!(w.members("strict").len(), 3);
    assert!(stderr.contains("would lose 1 of its 3 members"), "{stderr}");
    assert!(stderr.contains("--allow-mass-removal"), "{stderr}");
    // the configuration is the person's until a reviewed apply
    assert_eq!(w.team_name(), format!("Renamed {}", w.project));
    assert!(
        stderr.contains("1 configuration object(s) differ from the manifests"),
        "{stderr}"
    );
    assert!(
        stdout.contains("patient group 'opt-out': +1 -1 member(s)"),
        "{stdout}"
    );
    assert!(stdout.contains("group members +1 -1"), "{stdout}");
    for id in w.patients.iter().chain([&new]) {
        assert!(!stdout.contains(id.as_str()) && !stderr.contains(id.as_str()));
    }
    // allowed: the strict group follows too
    let out = careplane()
        .args(["reconcile", "--effects", "--allow-mass-removal"])
        .arg(w.dir.path())
        .args(["--server", &fhir_url()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(w.members("strict"), w.expected(&new));
    // usage: --effects is required
    let out = careplane()
        .args(["reconcile"])
        .arg(w.dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}

/// `watch`: after its first (full) pass it reads only what changed, and still catches a
/// new patient and a revoked consent within a few intervals; the hand-renamed team is
/// left alone; SIGTERM prints the summary and exits 143.
#[test]
fn watch_keeps_memberships_current_from_changed_patients_and_sums_up_on_sigterm() {
    let w = effects_world(false);
    w.rename_team_by_hand();
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("careplane"))
        .arg("watch")
        .arg(w.dir.path())
        .args([
            "--server",
            &fhir_url(),
            "--interval",
            "1",
            "--full-every",
            "1000",
        ])
        .env("NO_COLOR", "1")
        .env_remove("CAREPLANE_SERVER")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let new = w.activity();
    let started = Instant::now();
    while w.members("opt-out") != w.expected(&new) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "memberships did not follow: {:?}",
            w.members("opt-out")
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_millis(1500));
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
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
    assert_eq!(status.code(), Some(143), "{stdout}{stderr}");
    assert_eq!(w.team_name(), format!("Renamed {}", w.project));
    // one full pass (the first); the change came through an incremental one
    assert!(
        stdout.contains(" (1 full, 0 failed): 0 task(s) routed; group members +1 -1"),
        "{stdout}"
    );
    assert!(stderr.contains("careplane watch: stopped"), "{stderr}");
    for id in w.patients.iter().chain([&new]) {
        assert!(!stdout.contains(id.as_str()) && !stderr.contains(id.as_str()));
    }
}

/// On the Canvas simulator (no patient search by change time): `reconcile --effects`
/// adds a new patient to an authoritative group and takes out one who became inactive.
#[test]
fn reconcile_effects_on_canvas() {
    use common::canvas::{CLIENT_ID, CLIENT_SECRET, Sim};
    let sim = Sim::start();
    let patient = |i: u64, active: bool| {
        json!({"resourceType": "Patient", "id": format!("{:032x}", 0xbeef_0000_u64 + i), "active": active,
               "name": [{"family": "P", "given": ["T"]}], "birthDate": "1980-01-01"})
    };
    sim.seed(json!({"resources": (0..10).map(|i| patient(i, true)).collect::<Vec<_>>()}));
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            // effects kept from outside (the default on Canvas is the plugin, under which
            // an effects pass refuses: tests/plugin_managed.rs)
            (
                "careplane.yaml",
                sim.project_file("")
                    .replace("spec:\n  targets:", "spec:\n  effects: watch\n  targets:"),
            ),
            ("groups.yaml", "apiVersion: careplane.dev/v1\nkind: PatientGroup\nmetadata:\n  name: active-patients\nspec:\n  mode: authoritative\n  rule:\n    active: true\n".into()),
        ],
    );
    let run = |args: &[&str]| {
        careplane()
            .args(args)
            .arg(dir.path())
            .env("SIM_ID", CLIENT_ID)
            .env("SIM_SECRET", CLIENT_SECRET)
            .output()
            .unwrap()
    };
    assert!(run(&["apply", "--auto-approve"]).status.success());
    // one new active patient, one who became inactive
    sim.seed(json!({"resources": [patient(10, true), patient(0, false)]}));
    let out = run(&["reconcile", "--effects"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("patient group 'active-patients': +1 -1 member(s)"),
        "{}",
        text(&out.stdout)
    );
    let groups = sim.search("Group?type=person");
    let members: Vec<&str> = groups[0]["member"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["entity"]["reference"].as_str().unwrap())
        .collect();
    assert_eq!(members.len(), 10);
    assert!(members.contains(&format!("Patient/{:032x}", 0xbeef_0000_u64 + 10).as_str()));
    assert!(!members.contains(&format!("Patient/{:032x}", 0xbeef_0000_u64).as_str()));
}
