//! action.yml's own shell, run here as GitHub would run it (bash -e -o pipefail, the
//! runner's environment variables, GITHUB_OUTPUT / GITHUB_PATH files): the install step
//! verifies the archive's sha256 before unpacking it (a `curl` stand-in serves a local
//! "release"), and the plan step sets has_changes / plan / markdown / summary.
//! The release names it downloads are the ones the release workflow publishes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const TRIPLE: &str = "x86_64-unknown-linux-musl";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    careplane::manifest::yaml::parse_documents(&text)
        .unwrap()
        .remove(0)
        .value
}

fn step(id: &str) -> Value {
    let action = yaml(&root().join("action.yml"));
    action["runs"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("action.yml has no step {id}"))
}

fn need(tool: &str) {
    assert!(
        Command::new(tool).arg("--version").output().is_ok(),
        "{tool} is not installed: run `bash tests/ci-tools/setup.sh` (as root it installs it \
         from Debian's packages), as tests/run.sh does"
    );
}

/// Runs one step's `run:` with its `env:` (inputs substituted by `inputs`), in `dir`.
fn run_step(
    step: &Value,
    inputs: &[(&str, &str)],
    dir: &Path,
    path: &str,
) -> (Output, String, String) {
    let script = step["run"].as_str().unwrap();
    let output = dir.join("github_output");
    let gh_path = dir.join("github_path");
    std::fs::write(&output, "").unwrap();
    std::fs::write(&gh_path, "").unwrap();
    let mut cmd = Command::new("bash");
    cmd.args([
        "--noprofile",
        "--norc",
        "-e",
        "-o",
        "pipefail",
        "-c",
        script,
    ])
    .current_dir(dir)
    .env_clear()
    .env("PATH", path)
    .env("HOME", dir)
    .env("RUNNER_OS", "Linux")
    .env("RUNNER_ARCH", "X64")
    .env("RUNNER_TEMP", dir.join("runner-temp"))
    .env("GITHUB_OUTPUT", &output)
    .env("GITHUB_PATH", &gh_path);
    std::fs::create_dir_all(dir.join("runner-temp")).unwrap();
    for (name, expr) in step["env"].as_object().unwrap() {
        let expr = expr.as_str().unwrap();
        // `${{ inputs.x }}`, or the repository fallback expression
        let value = inputs
            .iter()
            .find(|(k, _)| {
                expr.contains(&format!("inputs.{k} ")) || expr.contains(&format!("inputs.{k} }}}}"))
            })
            .map(|(_, v)| *v)
            .unwrap_or("");
        cmd.env(name, value);
    }
    let out = cmd.output().unwrap();
    (
        out,
        std::fs::read_to_string(&output).unwrap(),
        std::fs::read_to_string(&gh_path).unwrap(),
    )
}

/// A release v0.1.0 of OWNER/careplane in `dir/release`, served by a `curl` stand-in
/// (in `dir/bin`) that maps each https://github.com/.../download/v0.1.0/<file> URL to it.
fn fake_release(dir: &Path) -> (String, String) {
    let release = dir.join("release");
    let stage = dir.join("stage");
    std::fs::create_dir_all(&release).unwrap();
    std::fs::create_dir_all(&stage).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_careplane"), stage.join("careplane")).unwrap();
    let archive = format!("careplane-0.1.0-{TRIPLE}.tar.gz");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&stage)
        .args(["-czf"])
        .arg(release.join(&archive))
        .arg("careplane")
        .status()
        .unwrap();
    assert!(st.success());
    let sum = Command::new("sha256sum")
        .arg(release.join(&archive))
        .output()
        .unwrap();
    let sha = String::from_utf8(sum.stdout).unwrap()[..64].to_owned();
    std::fs::write(release.join("SHA256SUMS"), format!("{sha}  {archive}\n")).unwrap();
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let curl = format!(
        "#!/usr/bin/env bash\n# curl stand-in: -o FILE URL, from a local release\nset -e\nout=''; url=''\nwhile [ $# -gt 0 ]; do case \"$1\" in -o) out=\"$2\"; shift 2;; --retry|--proto) shift 2;; -*) shift;; *) url=\"$1\"; shift;; esac; done\ncase \"$url\" in https://github.com/OWNER/careplane/releases/download/v0.1.0/*) cp \"{}/${{url##*/}}\" \"$out\";; *) echo \"curl stand-in: unexpected URL $url\" >&2; exit 22;; esac\n",
        release.display()
    );
    std::fs::write(bin.join("curl"), curl).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(bin.join("curl"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    (sha, path)
}

#[test]
fn install_checks_the_sha256_before_unpacking() {
    need("sha256sum");
    let dir = tempfile::tempdir().unwrap();
    let (sha, path) = fake_release(dir.path());
    let install = step("install");

    // from the release's SHA256SUMS
    let (out, outputs, gh_path) = run_step(
        &install,
        &[("version", "0.1.0"), ("repository", "OWNER/careplane")],
        dir.path(),
        &path,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr)
    );
    let installed = PathBuf::from(gh_path.trim());
    assert!(installed.join("careplane").exists());
    assert!(outputs.contains("version=careplane "), "{outputs}");

    // a pinned sha256 that matches
    let (out, _, _) = run_step(
        &install,
        &[
            ("version", "v0.1.0"),
            ("sha256", &sha),
            ("repository", "OWNER/careplane"),
        ],
        dir.path(),
        &path,
    );
    assert!(out.status.success());

    // a pinned sha256 that does not: refused, nothing put on PATH
    let wrong = "0".repeat(64);
    let (out, _, gh_path) = run_step(
        &install,
        &[
            ("version", "0.1.0"),
            ("sha256", &wrong),
            ("repository", "OWNER/careplane"),
        ],
        dir.path(),
        &path,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("checksum mismatch"));
    assert_eq!(gh_path, "");

    // "latest" is refused
    let (out, _, _) = run_step(
        &install,
        &[("version", "latest"), ("repository", "OWNER/careplane")],
        dir.path(),
        &path,
    );
    assert!(!out.status.success());
}

#[test]
fn plan_sets_has_changes_plan_markdown_and_summary() {
    need("jq");
    let dir = tempfile::tempdir().unwrap();
    let clinic = dir.path().join("clinic");
    copy_dir(&root().join("examples/clinic"), &clinic);
    let bin = Path::new(env!("CARGO_BIN_EXE_careplane")).parent().unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let plan = step("plan");
    let (out, outputs, _) = run_step(
        &plan,
        &[
            ("directory", "clinic"),
            ("target", ""),
            ("out", "careplane-plan.json"),
        ],
        dir.path(),
        &path,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(outputs.contains("has_changes=true\n"), "{outputs}");
    assert!(outputs.contains("plan=careplane-plan.json\n"));
    assert!(outputs.contains("markdown=careplane-plan.md\n"));
    assert!(
        outputs.contains("summary=20 to create, 1 to update, 0 to delete, 0 manual\n"),
        "{outputs}"
    );
    assert!(dir.path().join("careplane-plan.json").exists());
    assert!(
        std::fs::read_to_string(dir.path().join("careplane-plan.md"))
            .unwrap()
            .contains("careplane plan")
    );

    // an error (a missing directory) fails the step instead of reading as "no changes"
    let (out, _, _) = run_step(
        &plan,
        &[("directory", "nowhere"), ("out", "p.json")],
        dir.path(),
        &path,
    );
    assert!(!out.status.success());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[test]
fn the_action_and_gitlab_download_what_the_release_publishes() {
    let release = std::fs::read_to_string(root().join(".github/workflows/release.yml")).unwrap();
    assert!(release.contains(r#"name="careplane-${TAG#v}-$TARGET""#));
    assert!(release.contains("dist/SHA256SUMS"));
    assert!(
        release.contains(r#"files=(careplane README.md)"#)
            && !release.contains(r#"-czf "dist/$name.tar.gz" ."#),
        "archive members must be named without ./ (tar -xzf ARCHIVE careplane)"
    );
    let doc = yaml(&root().join(".github/workflows/release.yml"));
    let targets: Vec<String> = doc["jobs"]["build"]["strategy"]["matrix"]["include"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["target"].as_str().unwrap().to_owned())
        .collect();
    let install = step("install")["run"].as_str().unwrap().to_owned();
    assert!(install.contains(r#"archive="careplane-$VERSION-$triple.tar.gz""#));
    assert!(install.contains(r#"base="https://github.com/$REPO/releases/download/v$VERSION""#));
    for t in &targets {
        assert!(
            install.contains(&format!("triple={t} ;;")),
            "action.yml cannot install {t}"
        );
    }
    let gitlab = std::fs::read_to_string(root().join("examples/ci/gitlab-ci.yml")).unwrap();
    assert!(
        gitlab
            .contains(r#"archive="careplane-$CAREPLANE_VERSION-x86_64-unknown-linux-musl.tar.gz""#)
    );
    assert!(gitlab.contains(r#""$CAREPLANE_RELEASES/v$CAREPLANE_VERSION/$archive""#));
}

#[test]
fn the_image_is_static_distroless_non_root_and_built_as_ci_builds_it() {
    let docker = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let stages: Vec<&str> = docker.lines().filter(|l| l.starts_with("FROM ")).collect();
    let last = stages.last().unwrap();
    assert!(last.starts_with("FROM gcr.io/distroless/static"), "{last}");
    // every runtime stage runs as a non-root user, and the binary is the musl one
    for stage in docker
        .split("\nFROM ")
        .filter(|s| s.starts_with("gcr.io/distroless"))
    {
        assert!(
            stage.contains("\nUSER 65532:65532"),
            "a distroless stage without USER 65532"
        );
    }
    assert!(
        docker.contains(
            r#"cargo build --release --locked --target "$(uname -m)-unknown-linux-musl""#
        )
    );
    assert!(docker.contains("AS test"));
    // the release's prebuilt stage reads the layout the release workflow writes
    let release = std::fs::read_to_string(root().join(".github/workflows/release.yml")).unwrap();
    assert!(docker.contains("COPY --chmod=0755 dist/linux-${TARGETARCH}/careplane"));
    assert!(
        release.contains(r#"mkdir -p "dist/linux-$arch""#) && release.contains("target: prebuilt")
    );
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    for needed in ["src", "Cargo.toml", "Cargo.lock", "dist", "examples"] {
        assert!(
            !ignore.lines().any(|l| l.trim_end_matches('/') == needed),
            ".dockerignore drops {needed}"
        );
    }
    assert!(ignore.lines().any(|l| l == "target/"));
}
