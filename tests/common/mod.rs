//! Shared helpers for the integration tests.
//!
//! Tests that need a FHIR server talk to the real one `tests/run.sh` starts
//! (`CAREPLANE_TEST_FHIR_URL`). Tests share that server and run in parallel, so each one
//! works under its own project name, staff identifiers and team names.
#![allow(dead_code)]

pub mod canvas;

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::{Value, json};

pub fn fhir_url() -> String {
    std::env::var("CAREPLANE_TEST_FHIR_URL").unwrap_or_else(|_| {
        panic!(
            "CAREPLANE_TEST_FHIR_URL is not set: run the suite with `bash tests/run.sh`, which starts the FHIR test server"
        )
    })
}

/// A suffix no other test (or earlier run against the same server) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}-{}-{}-{nanos:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The tests' own HTTP client: a fresh connection per request. A pooled connection that
/// the server closed while idle (Node's keep-alive timeout is 5 s) fails the next request
/// with IncompleteMessage, which made tests flaky.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// Plain HTTP to the test server, independent of careplane's own client.
pub struct Server {
    pub base: String,
    client: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

impl Server {
    pub fn new() -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Server {
            base: fhir_url(),
            client: client(),
            rt: runtime(),
        }
    }

    pub fn get(&self, path: &str) -> Value {
        self.rt.block_on(async {
            let r = self
                .client
                .get(format!("{}/{path}", self.base))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "GET {path}: {}", r.status());
            r.json().await.unwrap()
        })
    }

    /// Send a resource (POST to its type, or PUT to its id) and return the server's copy.
    fn send(&self, method: reqwest::Method, path: String, resource: &Value) -> Value {
        self.rt.block_on(async {
            let r = self
                .client
                .request(method.clone(), format!("{}/{path}", self.base))
                .header("Content-Type", "application/fhir+json")
                .body(resource.to_string())
                .send()
                .await
                .unwrap();
            let status = r.status();
            let body: Value = r.json().await.unwrap();
            assert!(status.is_success(), "{method} {path}: {status} {body}");
            body
        })
    }

    pub fn post(&self, resource: &Value) -> Value {
        let rt = resource["resourceType"].as_str().unwrap();
        self.send(reqwest::Method::POST, rt.to_owned(), resource)
    }

    pub fn put(&self, resource: &Value) -> Value {
        let rt = resource["resourceType"].as_str().unwrap();
        let id = resource["id"].as_str().unwrap();
        self.send(reqwest::Method::PUT, format!("{rt}/{id}"), resource)
    }

    /// All resources of a search (follows next links).
    pub fn search(&self, query: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut url = format!("{}/{query}", self.base);
        loop {
            let b: Value = self.rt.block_on(async {
                self.client
                    .get(&url)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap()
            });
            for e in b["entry"].as_array().into_iter().flatten() {
                out.push(e["resource"].clone());
            }
            match b["link"]
                .as_array()
                .and_then(|l| l.iter().find(|x| x["relation"] == "next"))
            {
                Some(n) => url = n["url"].as_str().unwrap().to_owned(),
                None => return out,
            }
        }
    }

    /// Owned resources of a project (any type careplane writes).
    pub fn owned(&self, rt: &str, project: &str) -> Vec<Value> {
        self.search(&format!(
            "{rt}?_tag=https://careplane.dev/project%7C{project}&_count=100"
        ))
    }
}

/// A staff member seeded on the server.
#[derive(Clone, Debug)]
pub struct Staff {
    pub id: String,
    pub npi: String,
    pub email: String,
}

/// Create `n` practitioners with identifiers unique to this test.
pub fn seed_staff(server: &Server, tag: &str, n: usize) -> Vec<Staff> {
    (0..n)
        .map(|i| {
            let npi = format!("{tag}-{i}");
            let email = format!("staff{i}.{tag}@example-clinic.org");
            let p = server.post(&json!({
                "resourceType": "Practitioner",
                "active": true,
                "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": npi}],
                "name": [{"family": format!("Test{i}"), "given": ["Staff"]}],
                "telecom": [{"system": "email", "value": email, "use": "work"}]
            }));
            Staff {
                id: p["id"].as_str().unwrap().to_owned(),
                npi,
                email,
            }
        })
        .collect()
}

pub fn write(dir: &Path, files: &[(&str, String)]) {
    for (name, text) in files {
        let p = dir.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(p, text).unwrap();
    }
}

/// The careplane binary, with colours off.
pub fn careplane() -> assert_cmd::Command {
    let mut c = assert_cmd::Command::cargo_bin("careplane").unwrap();
    c.env("NO_COLOR", "1")
        .env_remove("CAREPLANE_SERVER")
        .env_remove("CAREPLANE_TOKEN");
    c
}

/// A small organisation for `project`: two roles, a care-team role, two teams, assignments.
pub fn org(project: &str, staff: &[Staff]) -> Vec<(&'static str, String)> {
    let header = "# yaml-language-server: $schema=../schema/careplane.schema.json\n";
    vec![
        (
            "careplane.yaml",
            format!(
                "{header}apiVersion: careplane.dev/v1\nkind: Project\nmetadata:\n  name: {project}\nspec: {{}}\n"
            ),
        ),
        (
            "roles.yaml",
            format!(
                "{header}apiVersion: careplane.dev/v1\nkind: Role\nmetadata:\n  name: physician\nspec:\n  code: MD\n  display: Physician\n  domain: clinical\n  type: provider\n  privilegeLevel: 900\n  authGroups: [Clinical read/write]\n---\napiVersion: careplane.dev/v1\nkind: Role\nmetadata:\n  name: nurse\nspec:\n  code: RN\n  display: Registered nurse\n  domain: clinical\n  type: licensed\n---\napiVersion: careplane.dev/v1\nkind: CareTeamRole\nmetadata:\n  name: pcp\nspec:\n  code:\n    code: \"453231000124104\"\n    display: Primary care provider\n"
            ),
        ),
        (
            "teams.yaml",
            format!(
                "{header}apiVersion: careplane.dev/v1\nkind: Team\nmetadata:\n  name: care-coordinators\nspec:\n  displayName: Care Coordinators {project}\n  responsibilities:\n    - COORDINATE_REFERRALS_FOR_PATIENT\n  members:\n    - npi: \"{}\"\n    - email: {}\n---\napiVersion: careplane.dev/v1\nkind: Team\nmetadata:\n  name: lab\nspec:\n  displayName: Lab {project}\n  responsibilities: [COLLECT_SPECIMENS_FROM_PATIENT, COMPLETE_OPEN_LAB_ORDERS]\n  members:\n    - id: {}\n",
                staff[0].npi, staff[1].email, staff[2].id
            ),
        ),
        (
            "staff.yaml",
            format!(
                "{header}apiVersion: careplane.dev/v1\nkind: RoleAssignment\nmetadata:\n  name: staff-0\nspec:\n  practitioner:\n    npi: \"{}\"\n  roles: [physician]\n---\napiVersion: careplane.dev/v1\nkind: RoleAssignment\nmetadata:\n  name: staff-1\nspec:\n  practitioner:\n    email: {}\n  roles: [nurse, physician]\n",
                staff[0].npi, staff[1].email
            ),
        ),
    ]
}

/// Run `plan --format json` and parse the plan.
pub fn plan_json(dir: &Path, extra: &[&str]) -> Value {
    let out = careplane()
        .arg("plan")
        .arg(dir)
        .args(["--server", &fhir_url(), "--format", "json"])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "plan failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

pub fn apply(dir: &Path, extra: &[&str]) -> std::process::Output {
    careplane()
        .arg("apply")
        .arg(dir)
        .args(["--server", &fhir_url(), "--auto-approve"])
        .args(extra)
        .output()
        .unwrap()
}

/// `plan DIR --server … --out FILE`, which must succeed.
pub fn save_plan(dir: &Path, file: &Path) {
    careplane()
        .arg("plan")
        .arg(dir)
        .args(["--server", &fhir_url(), "--out"])
        .arg(file)
        .assert()
        .success();
}

/// `apply DIR --server … --plan FILE`.
pub fn apply_saved(dir: &Path, file: &Path) -> assert_cmd::assert::Assert {
    careplane()
        .arg("apply")
        .arg(dir)
        .args(["--server", &fhir_url(), "--plan"])
        .arg(file)
        .assert()
}

pub fn changes<'a>(plan: &'a Value, action: &str) -> Vec<&'a Value> {
    plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] == action)
        .collect()
}

/// Copy a directory tree (an example, to apply to without touching the original).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}
