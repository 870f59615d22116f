//! Honest apply reports against the real FHIR server:
//! - a write whose answer was lost (the server wrote it, the connection dropped before the
//!   answer) is re-read and counted as done, not reported as somebody else's edit;
//! - a stale saved plan is refused whole: nothing is written, every stale object is named.

// The test prints its measurements (not careplane output, so not through the redaction edge).
#![allow(clippy::disallowed_macros)]
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use serde_json::{Value, json};

/// A small HTTP/1.1 proxy in front of the test server that loses the answer to every
/// `drop_every`-th write (POST/PUT/PATCH/DELETE): it forwards the request, reads the server's
/// whole answer, and then closes the client's connection without sending it.
struct LossyProxy {
    base: String,
    dropped: Arc<AtomicUsize>,
}

fn read_request(r: &mut BufReader<TcpStream>) -> Option<(String, Vec<String>, Vec<u8>)> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut headers = Vec::new();
    let mut length = 0usize;
    for _ in 0..200 {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end().to_owned();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().ok()?;
        }
        headers.push(h);
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body).ok()?;
    Some((line.trim_end().to_owned(), headers, body))
}

fn handle(
    client: TcpStream,
    upstream: &str,
    writes: &AtomicUsize,
    drop_every: usize,
    dropped: &AtomicUsize,
    delay: std::time::Duration,
) {
    let _ = client.set_read_timeout(Some(std::time::Duration::from_secs(30)));
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let Some((line, headers, body)) = read_request(&mut reader) else {
        return;
    };
    if matches!(
        line.split(' ').next(),
        Some("POST" | "PUT" | "PATCH" | "DELETE")
    ) {
        std::thread::sleep(delay); // a slow server: each write takes this long
    }
    let Ok(mut server) = TcpStream::connect(upstream) else {
        return;
    };
    let mut req = format!("{line}\r\n");
    for h in headers.iter().filter(|h| {
        let k = h.split(':').next().unwrap_or_default().to_ascii_lowercase();
        k != "connection" && k != "host"
    }) {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str(&format!("Host: {upstream}\r\nConnection: close\r\n\r\n"));
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(&body);
    if server.write_all(&bytes).is_err() {
        return;
    }
    // the answer, whole (the server closes after it: Connection: close)
    let mut answer = Vec::new();
    let _ = server.read_to_end(&mut answer);
    let method = line.split(' ').next().unwrap_or_default();
    if matches!(method, "POST" | "PUT" | "PATCH" | "DELETE")
        && (writes.fetch_add(1, Ordering::SeqCst) + 1).is_multiple_of(drop_every)
    {
        dropped.fetch_add(1, Ordering::SeqCst);
        return; // the write landed; its answer is lost
    }
    let mut client = client;
    let _ = client.write_all(&answer);
}

impl LossyProxy {
    fn start(drop_every: usize) -> LossyProxy {
        Self::start_with(drop_every, std::time::Duration::ZERO)
    }

    /// A proxy that loses no answer but takes `delay` for every write.
    fn slow(delay: std::time::Duration) -> LossyProxy {
        Self::start_with(usize::MAX, delay)
    }

    fn start_with(drop_every: usize, delay: std::time::Duration) -> LossyProxy {
        let upstream_url = fhir_url();
        let rest = upstream_url
            .strip_prefix("http://")
            .expect("the test server speaks plain HTTP");
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let upstream = host.to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}/{path}", listener.local_addr().unwrap());
        let dropped = Arc::new(AtomicUsize::new(0));
        let writes = Arc::new(AtomicUsize::new(0));
        let d = dropped.clone();
        std::thread::spawn(move || {
            // bounded: far more connections than any test here makes
            for conn in listener.incoming().take(20_000) {
                let Ok(conn) = conn else { continue };
                let (upstream, writes, d) = (upstream.clone(), writes.clone(), d.clone());
                std::thread::spawn(move || handle(conn, &upstream, &writes, drop_every, &d, delay));
            }
        });
        LossyProxy { base, dropped }
    }
}

fn apply_via(base: &str, dir: &std::path::Path) -> std::process::Output {
    careplane()
        .arg("apply")
        .arg(dir)
        .args(["--server", base, "--auto-approve"])
        .output()
        .unwrap()
}

/// The project file of `project` with two targets: `srv`, the default, at `base`, written
/// one request per change (`batchSize: 1`), so each lost answer is one change's; and
/// `direct`, the test server itself.
fn single_requests(dir: &std::path::Path, project: &str, base: &str) {
    write(
        dir,
        &[(
            "careplane.yaml",
            format!(
                "apiVersion: careplane.dev/v1\nkind: Project\nmetadata:\n  name: {project}\nspec:\n  defaultTarget: srv\n  targets:\n    srv: {{type: fhir, url: \"{base}\", batchSize: 1}}\n    direct: {{type: fhir, url: \"{}\"}}\n",
                fhir_url()
            ),
        )],
    );
}

/// `plan DIR --format json` against the test server itself (`direct`).
fn plan_direct(dir: &std::path::Path) -> Value {
    let out = careplane()
        .arg("plan")
        .arg(dir)
        .args(["--target", "direct", "--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn apply_single(dir: &std::path::Path) -> std::process::Output {
    careplane()
        .arg("apply")
        .arg(dir)
        .args(["--auto-approve"])
        .output()
        .unwrap()
}

#[test]
fn writes_whose_answer_was_lost_are_counted_as_done() {
    lost_answers(false);
}

/// The same with batch Bundles: a Bundle whose answer was lost is sent again (small,
/// and every entry safe to repeat), and each of its changes meets its own first write.
#[test]
fn batched_writes_whose_answer_was_lost_are_counted_as_done() {
    lost_answers(true);
}

fn lost_answers(batched: bool) {
    let server = Server::new();
    let project = unique("lossy");
    let staff = seed_staff(&server, &project, 3);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &org(&project, &staff));
    let proxy = LossyProxy::start(3);
    let apply_via = |base: &str, dir: &std::path::Path| {
        if batched {
            apply_via(base, dir)
        } else {
            apply_single(dir)
        }
    };
    if !batched {
        single_requests(dir.path(), &project, &proxy.base);
    }
    // a lost answer is one change's (single requests) or a whole Bundle's
    let most = |lost: usize, changes: usize| if batched { changes } else { lost };

    // creates: the retried conditional create finds the object our first attempt made
    let out = apply_via(&proxy.base, dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let lost_creates = proxy.dropped.load(Ordering::SeqCst);
    assert!(lost_creates >= 1, "the proxy lost no answer");
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("Apply complete. 6 change(s) applied"),
        "{stdout}"
    );
    assert!(!stdout.contains("changed on the server"), "{stdout}");
    // every lost answer but the Provenance's is noted on its change
    let noted = stdout.matches("re-read shows the write landed").count();
    assert!(
        noted >= 1 && noted <= most(lost_creates, 6),
        "{noted} of {lost_creates}: {stdout}"
    );
    assert!(stdout.contains("Recorded as Provenance/"), "{stdout}");

    // updates: the retried If-Match PUT meets the version our own first attempt made
    let edit = |file: &str, from: &str, to: &str| {
        let p = dir.path().join(file);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains(from));
        std::fs::write(&p, text.replace(from, to)).unwrap();
    };
    edit(
        "teams.yaml",
        "displayName: Care Coordinators",
        "displayName: Coordination",
    );
    edit("teams.yaml", "displayName: Lab", "displayName: Laboratory");
    edit(
        "roles.yaml",
        "display: Registered nurse",
        "display: RN (registered)",
    );
    edit("staff.yaml", "roles: [nurse, physician]", "roles: [nurse]");
    let out = apply_via(&proxy.base, dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let lost_updates = proxy.dropped.load(Ordering::SeqCst) - lost_creates;
    assert!(lost_updates >= 1, "the proxy lost no answer to an update");
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("Apply complete. 4 change(s) applied"),
        "{stdout}"
    );
    let noted_updates = stdout.matches("re-read shows the write landed").count();
    // batched, the lost answer may be a Bundle of reads (sent again, nothing to note)
    assert!(
        (batched || noted_updates >= 1) && noted_updates <= most(lost_updates, 4),
        "{noted_updates} of {lost_updates}: {stdout}"
    );
    assert!(stdout.contains("Recorded as Provenance/"), "{stdout}");
    // one record per apply, none duplicated by a retried create
    assert_eq!(server.owned("Provenance", &project).len(), 2);

    // what landed is what the manifests say: nothing left to do
    let left = if batched {
        plan_json(dir.path(), &[])
    } else {
        plan_direct(dir.path())
    };
    assert!(
        left["changes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["action"] == "no-op"),
        "{left:#}"
    );
    eprintln!(
        "lost answers: {lost_creates} in the first apply ({noted} noted on changes), {lost_updates} in the second ({noted_updates}); all counted as done"
    );
}

/// Everything careplane owns for `project`: reference → versionId.
fn versions(server: &Server, project: &str) -> std::collections::BTreeMap<String, String> {
    ["CodeSystem", "Group", "PractitionerRole"]
        .iter()
        .flat_map(|rt| server.owned(rt, project))
        .map(|r| {
            (
                format!(
                    "{}/{}",
                    r["resourceType"].as_str().unwrap(),
                    r["id"].as_str().unwrap()
                ),
                r["meta"]["versionId"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn a_stale_saved_plan_writes_nothing_and_names_every_stale_object() {
    let server = Server::new();
    let project = unique("stale");
    let staff = seed_staff(&server, &project, 3);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &org(&project, &staff));
    assert!(apply(dir.path(), &[]).status.success());

    // a plan with five updates: both teams, the role catalog, both role assignments
    let edit = |file: &str, from: &str, to: &str| {
        let p = dir.path().join(file);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains(from));
        std::fs::write(&p, text.replace(from, to)).unwrap();
    };
    edit(
        "teams.yaml",
        "displayName: Care Coordinators",
        "displayName: Coordination",
    );
    edit("teams.yaml", "displayName: Lab", "displayName: Laboratory");
    edit(
        "roles.yaml",
        "display: Registered nurse",
        "display: RN (registered)",
    );
    edit(
        "staff.yaml",
        "roles: [physician]\n",
        "roles: [physician, nurse]\n",
    );
    edit("staff.yaml", "roles: [nurse, physician]", "roles: [nurse]");
    let plan_file = dir.path().join("plan.json");
    save_plan(dir.path(), &plan_file);
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&plan_file).unwrap()).unwrap();
    assert_eq!(changes(&saved, "update").len(), 5, "{saved:#}");

    // two of them are edited by hand after the plan was made
    let groups = server.owned("Group", &project);
    let by_name = |n: &str| {
        groups
            .iter()
            .find(|g| g["identifier"][0]["value"] == format!("team/{n}"))
            .unwrap()
            .clone()
    };
    for name in ["lab", "care-coordinators"] {
        let mut g = by_name(name);
        g["name"] = json!(format!("Edited by hand: {name}"));
        server.put(&g);
    }
    let before = versions(&server, &project);

    let report_file = dir.path().join("report.json");
    let out = careplane()
        .arg("apply")
        .arg(dir.path())
        .args(["--server", &fhir_url(), "--plan"])
        .arg(&plan_file)
        .arg("--report")
        .arg(&report_file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("Nothing was written"), "{stdout}");
    for name in ["lab", "care-coordinators"] {
        let id = by_name(name)["id"].as_str().unwrap().to_owned();
        assert!(
            stdout.contains(&format!(
                "team '{name}' (Group/{id}) changed on the server after the plan was made"
            )),
            "{name} is not named: {stdout}"
        );
    }
    assert_eq!(stdout.matches("✗ stale").count(), 2, "{stdout}");
    // nothing was written: every version as it was
    assert_eq!(versions(&server, &project), before);
    assert_eq!(
        server.owned("Provenance", &project).len(),
        1,
        "only the first apply's record"
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&report_file).unwrap()).unwrap();
    assert_eq!(report["result"], "refused");
    assert_eq!(report["stale"].as_array().unwrap().len(), 2);
    assert!(report["resources"].as_array().unwrap().is_empty());
}

/// Ctrl-C during a slow apply: no new write starts, the ones in flight finish, a summary
/// says what landed and what did not, the exit status is 130 (SIGTERM: 143), and the next
/// plan shows exactly what remains: nothing is half-written.
#[test]
fn an_interrupted_apply_finishes_what_is_in_flight_and_says_what_did_not_start() {
    use std::process::{Command, Stdio};
    let server = Server::new();
    let project = unique("int");
    let staff = seed_staff(&server, &project, 2);
    let dir = tempfile::tempdir().unwrap();
    // twelve teams to create, one write each
    let mut files = vec![(
        "careplane.yaml",
        format!(
            "apiVersion: careplane.dev/v1\nkind: Project\nmetadata:\n  name: {project}\nspec: {{}}\n"
        ),
    )];
    let teams: String = (0..12)
        .map(|i| {
            format!(
                "---\napiVersion: careplane.dev/v1\nkind: Team\nmetadata:\n  name: t{i}\nspec:\n  displayName: Team {i} {project}\n  members: [{{id: {}}}]\n",
                staff[0].id
            )
        })
        .collect();
    files.push(("teams.yaml", teams));
    write(dir.path(), &files);
    let proxy = LossyProxy::slow(std::time::Duration::from_millis(700));
    // one request per change (in batch Bundles the twelve creates are one request)
    single_requests(dir.path(), &project, &proxy.base);
    for (signal, code) in [("INT", 130), ("TERM", 143)] {
        let child = Command::new(assert_cmd::cargo::cargo_bin("careplane"))
            .arg("apply")
            .arg(dir.path())
            .args(["--auto-approve"])
            .env("NO_COLOR", "1")
            .env_remove("CAREPLANE_SERVER")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // signal as soon as the first write is reported done (writes go 4 at a time and
        // take 0.7 s each, so most have not started yet)
        let mut child = child;
        let err_pipe = child.stderr.take().unwrap();
        let pid = child.id();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            let mut all = String::new();
            let mut sent = false;
            for line in std::io::BufReader::new(err_pipe)
                .lines()
                .map_while(Result::ok)
            {
                if !sent && line.starts_with("careplane: [1/") {
                    Command::new("kill")
                        .args([&format!("-{signal}"), &pid.to_string()])
                        .status()
                        .unwrap();
                    sent = true;
                }
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        let out = child.wait_with_output().unwrap();
        let stderr = reader.join().unwrap();
        assert_eq!(out.status.code(), Some(code), "{stderr}");
        assert!(stderr.contains("careplane: interrupted"), "{stderr}");
        let summary = stderr
            .lines()
            .find(|l| l.starts_with("careplane: apply interrupted:"))
            .unwrap_or_else(|| panic!("no summary: {stderr}"));
        // what landed is exactly what the summary says, and the rest is still planned
        let landed = server.owned("Group", &project).len();
        let remaining = plan_direct(dir.path());
        let creates = changes(&remaining, "create").len();
        assert_eq!(landed + creates, 12, "{summary}");
        if signal == "INT" {
            assert!(landed > 0 && creates > 0, "interrupted mid-way: {summary}");
            assert!(
                summary.contains(&format!("{landed} change(s) applied"))
                    && summary.contains(&format!("{creates} not started")),
                "{summary}"
            );
        }
    }
}
