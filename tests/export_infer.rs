//! `export --server URL` without a project file and without `--project` infers the project
//! from careplane's ownership tags when exactly one project is on the server (issue 12,
//! item 10). A wiremock server answers the tag searches; every other search is empty.

mod common;

use serde_json::{Value, json};
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const TAG: &str = "https://careplane.dev/project";

fn bundle(entries: Vec<Value>) -> ResponseTemplate {
    let body = json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": entries.len(),
        "entry": entries.into_iter().map(|r| json!({"resource": r, "search": {"mode": "match"}})).collect::<Vec<_>>(),
    });
    ResponseTemplate::new(200).set_body_raw(body.to_string(), "application/fhir+json")
}

fn tagged(rt: &str, id: &str, codes: &[&str]) -> Value {
    let tags: Vec<Value> = codes
        .iter()
        .map(|c| json!({"system": TAG, "code": c}))
        .chain([json!({"system": "urn:other", "code": "zzz"})])
        .collect();
    let mut r = json!({"resourceType": rt, "id": id, "meta": {"versionId": "1", "tag": tags}});
    if rt == "Group" {
        r["type"] = json!("practitioner");
        r["actual"] = json!(true);
        r["name"] = json!("A team");
    } else {
        r["status"] = json!("active");
        r["content"] = json!("complete");
        r["concept"] = json!([]);
    }
    r
}

async fn server(code_systems: Vec<Value>, groups: Vec<Value>) -> MockServer {
    let s = MockServer::start().await;
    let tag = format!("{TAG}|");
    Mock::given(method("GET"))
        .and(path("/CodeSystem"))
        .and(query_param("_tag", tag.as_str()))
        .respond_with(bundle(code_systems))
        .with_priority(1)
        .mount(&s)
        .await;
    Mock::given(method("GET"))
        .and(path("/Group"))
        .and(query_param("_tag", tag.as_str()))
        .respond_with(bundle(groups))
        .with_priority(1)
        .mount(&s)
        .await;
    Mock::given(method("GET"))
        .respond_with(bundle(vec![]))
        .with_priority(10)
        .mount(&s)
        .await;
    s
}

fn export(url: &str, out: &std::path::Path) -> std::process::Output {
    let empty = tempfile::tempdir().unwrap();
    assert_cmd::Command::cargo_bin("careplane")
        .unwrap()
        .env("NO_COLOR", "1")
        .env_remove("CAREPLANE_SERVER")
        .env_remove("CAREPLANE_TOKEN")
        .arg("export")
        .arg(empty.path())
        .arg("--out")
        .arg(out)
        .args(["--server", url])
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_only_project_on_the_server_is_the_exported_project() {
    let s = server(
        vec![tagged("CodeSystem", "cs1", &["alpha"])],
        // a tag code that is not a project name (it would be YAML) is not a project
        vec![tagged("Group", "g1", &["alpha", "x\nspec: evil"])],
    )
    .await;
    let out = tempfile::tempdir().unwrap();
    let o = tokio::task::spawn_blocking({
        let (u, p) = (s.uri(), out.path().to_owned());
        move || export(&u, &p)
    })
    .await
    .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        err.contains("exporting project 'alpha', the only careplane project on the server"),
        "{err}"
    );
    let project = std::fs::read_to_string(out.path().join("careplane.yaml")).unwrap();
    assert!(project.contains("metadata:\n  name: alpha\n"), "{project}");
    assert!(!project.contains("evil"), "{project}");
}

#[tokio::test(flavor = "multi_thread")]
async fn several_projects_on_the_server_need_project() {
    let s = server(
        vec![tagged("CodeSystem", "cs1", &["alpha"])],
        vec![tagged("Group", "g1", &["beta"])],
    )
    .await;
    let out = tempfile::tempdir().unwrap();
    let o = tokio::task::spawn_blocking({
        let (u, p) = (s.uri(), out.path().to_owned());
        move || export(&u, &p)
    })
    .await
    .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("2 careplane projects (alpha, beta); name one with --project"),
        "{err}"
    );
    assert!(!out.path().join("careplane.yaml").exists());
}

/// On the real FHIR server (`tests/run.sh`), which holds several projects: the tag search
/// (`_tag=<system>|`, any code) works there, and export asks for --project.
#[test]
fn on_the_real_server_several_projects_are_named() {
    let url = common::fhir_url();
    let mut names = Vec::new();
    for p in ["infer-a", "infer-b"] {
        let project = common::unique(p);
        let dir = tempfile::tempdir().unwrap();
        common::write(
            dir.path(),
            &[
                (
                    "careplane.yaml",
                    format!(
                        "apiVersion: careplane.dev/v1\nkind: Project\nmetadata:\n  name: {project}\nspec: {{}}\n"
                    ),
                ),
                (
                    "teams.yaml",
                    format!(
                        "apiVersion: careplane.dev/v1\nkind: Team\nmetadata:\n  name: t\nspec:\n  displayName: Infer {project}\n  responsibilities: []\n  members: []\n"
                    ),
                ),
            ],
        );
        let o = common::apply(dir.path(), &[]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        names.push(project);
    }
    let out = tempfile::tempdir().unwrap();
    let o = export(&url, out.path());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("careplane projects ("), "{err}");
    for n in &names {
        assert!(err.contains(n.as_str()), "{n} not named: {err}");
    }
}
