//! A private Canvas API simulator per test (tests/canvas-simulator, a stand-in for Canvas
//! written from canvas-api.md; there is no real Canvas server to test against).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const CLIENT_ID: &str = "careplane-test";
pub const CLIENT_SECRET: &str = "careplane-secret-s3cr3t";

pub struct Sim {
    pub base: String,
    child: Child,
    client: reqwest::Client,
    rt: tokio::runtime::Runtime,
    token: std::cell::RefCell<Option<String>>,
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Sim {
    pub fn start() -> Sim {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/canvas-simulator/canvas-simulator.cjs");
        for _ in 0..5 {
            let port = free_port();
            let child = Command::new("node")
                .arg(&script)
                .env("PORT", port.to_string())
                .env("SIM_CLIENT_ID", CLIENT_ID)
                .env("SIM_CLIENT_SECRET", CLIENT_SECRET)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("node is needed for the Canvas simulator (tests/run.sh checks for it)");
            let mut sim = Sim {
                base: format!("http://127.0.0.1:{port}"),
                child,
                client: super::client(),
                rt: super::runtime(),
                token: std::cell::RefCell::new(None),
            };
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(10) {
                let up = sim.rt.block_on(async {
                    sim.client
                        .get(format!("{}/__sim/health", sim.base))
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success())
                });
                if up {
                    return sim;
                }
                if let Ok(Some(_)) = sim.child.try_wait() {
                    break; // port taken: try another
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = sim.child.kill();
        }
        panic!("the Canvas simulator did not start");
    }

    fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        auth: bool,
    ) -> (u16, Value) {
        let token = auth.then(|| self.token());
        self.rt.block_on(async {
            let mut req = self.client.request(method, format!("{}{path}", self.base));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            if let Some(b) = body {
                req = req
                    .header("Content-Type", "application/json")
                    .body(b.to_string());
            }
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let text = r.text().await.unwrap();
            (status, serde_json::from_str(&text).unwrap_or(Value::Null))
        })
    }

    fn token(&self) -> String {
        if let Some(t) = self.token.borrow().as_ref() {
            return t.clone();
        }
        let t = self.rt.block_on(async {
            let r = self
                .client
                .post(format!("{}/auth/token/", self.base))
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", CLIENT_ID),
                    ("client_secret", CLIENT_SECRET),
                ])
                .send()
                .await
                .unwrap();
            let v: Value = r.json().await.unwrap();
            v["access_token"].as_str().unwrap().to_owned()
        });
        *self.token.borrow_mut() = Some(t.clone());
        t
    }

    /// Seed resources and Settings; returns the ids in order.
    pub fn seed(&self, body: Value) -> Vec<String> {
        let (status, v) = self.call(reqwest::Method::POST, "/__sim/seed", Some(&body), false);
        assert_eq!(status, 200, "seed: {v}");
        v["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_owned())
            .collect()
    }

    /// A resource exactly as the simulator stores it.
    pub fn stored(&self, rt: &str, id: &str) -> Value {
        let (status, v) = self.call(
            reqwest::Method::GET,
            &format!("/__sim/resource/{rt}/{id}"),
            None,
            false,
        );
        assert_eq!(status, 200, "stored {rt}/{id}: {v}");
        v
    }

    pub fn stats(&self) -> Value {
        self.call(reqwest::Method::GET, "/__sim/stats", None, false)
            .1
    }

    pub fn post_control(&self, path: &str, body: Value) {
        let (status, v) = self.call(reqwest::Method::POST, path, Some(&body), false);
        assert_eq!(status, 200, "{path}: {v}");
    }

    /// A call to the plugin API (`/plugin-io/plugins/<path>`) with a valid token and a
    /// form body, as canvas_cli's `enable` / `disable` send it: the status.
    pub fn plugin_api(&self, method: reqwest::Method, path: &str, form: &[(&str, &str)]) -> u16 {
        let token = self.token();
        self.rt.block_on(async {
            self.client
                .request(method, format!("{}/plugin-io/plugins/{path}", self.base))
                .bearer_auth(token)
                .form(form)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    }

    /// A plugin as the simulator stores it (name, version, is_enabled, files), if installed.
    pub fn plugin(&self, name: &str) -> Option<Value> {
        let (status, v) = self.call(
            reqwest::Method::GET,
            &format!("/__sim/plugin/{name}"),
            None,
            false,
        );
        (status == 200).then_some(v)
    }

    /// A FHIR call with a valid token: (status, body).
    pub fn fhir(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.call(method, path, body, true)
    }

    /// All resources a search finds (follows next links, which Canvas makes relative).
    pub fn search(&self, query: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut path = format!("/{query}");
        loop {
            let (status, b) = self.fhir(reqwest::Method::GET, &path, None);
            assert_eq!(status, 200, "{path}: {b}");
            out.extend(
                b["entry"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| e["resource"].clone()),
            );
            match b["link"]
                .as_array()
                .and_then(|l| l.iter().find(|x| x["relation"] == "next"))
            {
                Some(n) => path = n["url"].as_str().unwrap().to_owned(),
                None => return out,
            }
        }
    }

    pub fn teams(&self) -> Vec<Value> {
        self.search("Group?type=practitioner&_count=100")
    }

    /// The project file of a Canvas target pointing at this simulator.
    pub fn project_file(&self, extra: &str) -> String {
        format!(
            "apiVersion: careplane.dev/v1\nkind: Project\nmetadata:\n  name: clinic\nspec:\n  targets:\n    canvas:\n      type: canvas\n      url: {base}\n{extra}      auth:\n        oauth2:\n          tokenUrl: {base}/auth/token/\n          clientIdEnv: SIM_ID\n          clientSecretEnv: SIM_SECRET\n",
            base = self.base
        )
    }
}

/// A Canvas practitioner: 32-hex id, NPI, work email, the documented extensions.
pub fn practitioner(i: usize, roles: &[&str]) -> Value {
    let mut p = json!({
        "resourceType": "Practitioner",
        "id": format!("{:032x}", 0xca11_0000_u64 + i as u64),
        "active": true,
        "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": format!("{}", 1_000_000_000 + i)}],
        "name": [{"use": "usual", "family": format!("Staff{i}"), "given": ["Test"]}],
        "telecom": [
            {"id": format!("t{i}a"), "system": "phone", "value": "555-0100", "use": "work"},
            {"id": format!("t{i}b"), "system": "email", "value": format!("staff{i}@canvas.example.org"), "use": "work", "rank": 1}
        ],
        "birthDate": "1980-01-01",
        "extension": [
            {"url": "http://schemas.canvasmedical.com/fhir/extensions/practitioner-user-username", "valueString": format!("staff{i}")},
            {"url": "http://schemas.canvasmedical.com/fhir/extensions/practitioner-personal-meeting-room-link", "valueUrl": format!("https://meet.example.org/staff{i}")},
            {"url": "http://schemas.canvasmedical.com/fhir/extensions/practitioner-signature", "valueAttachment": {"contentType": "image/png", "data": "iVBORw0KGgo="}}
        ]
    });
    if !roles.is_empty() {
        let codes: Vec<Value> = roles
            .iter()
            .map(|c| json!({"url": "code", "valueCoding": {"system": "http://schemas.canvasmedical.com/fhir/roles", "code": c}}))
            .collect();
        p["extension"].as_array_mut().unwrap().push(json!({"url": "http://schemas.canvasmedical.com/fhir/extensions/roles", "extension": codes}));
    }
    p
}

pub fn practitioner_id(i: usize) -> String {
    format!("{:032x}", 0xca11_0000_u64 + i as u64)
}
