//! Hostile manifest directories (issue 8, item 3): a manifest is a regular file inside
//! DIR. Links to devices, FIFOs, files or directories outside DIR, and files over the size
//! cap are refused with the entry named, quickly, and without quoting anything that is not
//! a manifest. Every case runs `validate` and `plan` (file-store target), so every command
//! that loads manifests is covered. Each run has a watchdog (killed after 20 s: a hang
//! fails the test instead of blocking the suite) and a 2 GiB address-space ceiling (a
//! regression that reads `/dev/zero` fails instead of exhausting the machine).
#![cfg(unix)]

mod common;

use std::io::Read;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::write;

const SECRET: &str = "ghp_hostileManifestSecretValue1234";

fn manifest(name: &str) -> String {
    format!(
        "apiVersion: careplane.dev/v1\nkind: Role\nmetadata:\n  name: {name}\nspec:\n  code: {}\n  display: Role {name}\n  domain: clinical\n",
        name.to_uppercase()
    )
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Run the binary with a watchdog and a memory ceiling.
fn run(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Run {
    let bin = assert_cmd::cargo::cargo_bin("careplane");
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("ulimit -v 2097152 2>/dev/null; exec \"$0\" \"$@\"")
        .arg(bin)
        .args(args)
        .arg(dir)
        .env("NO_COLOR", "1")
        .env_remove("CAREPLANE_SERVER")
        .env_remove("CAREPLANE_TOKEN")
        .env_remove("CAREPLANE_MAX_MANIFEST_BYTES")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(20) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!(
                "careplane {args:?} on {} did not finish within 20 s (killed)",
                dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        code: status.code(),
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

/// Both loaders (`validate`, `plan` against the default file store) refuse `dir`, exit 1,
/// name `entry` and say `why`.
fn refused(dir: &Path, entry: &str, why: &str) {
    refused_with(dir, entry, why, &[]);
}

fn refused_with(dir: &Path, entry: &str, why: &str, env: &[(&str, &str)]) {
    for args in [
        &["validate"][..],
        &["validate", "--format", "github"][..],
        &["plan"][..],
    ] {
        let r = run(args, dir, env);
        let all = r.all();
        assert_eq!(r.code, Some(1), "{args:?}: {all}");
        assert!(
            all.contains(&format!("{entry}:1:1")) || all.contains(&format!("{entry},line=1,col=1")),
            "{args:?} must name {entry} at line 1: {all}"
        );
        assert!(all.contains(why), "{args:?} must say '{why}': {all}");
        assert!(!all.contains(SECRET), "{args:?} quoted the secret: {all}");
        assert!(
            !all.contains("out of memory"),
            "{args:?} read until memory ran out: {all}"
        );
    }
}

fn dir_with_a_manifest() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &[("roles.yaml", manifest("md"))]);
    dir
}

#[test]
fn a_link_to_dev_zero_is_refused_without_reading() {
    let dir = dir_with_a_manifest();
    symlink("/dev/zero", dir.path().join("zero.yaml")).unwrap();
    refused(dir.path(), "zero.yaml", "outside the manifest directory");
}

#[test]
fn a_link_to_dev_urandom_is_refused_without_reading() {
    let dir = dir_with_a_manifest();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    symlink("/dev/urandom", dir.path().join("sub/random.yml")).unwrap();
    refused(
        dir.path(),
        "sub/random.yml",
        "outside the manifest directory",
    );
}

#[test]
fn a_fifo_is_refused_without_opening_it() {
    let dir = dir_with_a_manifest();
    let fifo = dir.path().join("pipe.yaml");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    refused(dir.path(), "pipe.yaml", "not a regular file");
}

#[test]
fn a_link_to_a_secret_outside_is_refused_and_never_quoted() {
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("token");
    std::fs::write(&secret, format!("GITHUB_TOKEN={SECRET}\n")).unwrap();
    let dir = dir_with_a_manifest();
    symlink(&secret, dir.path().join("leak.yaml")).unwrap();
    refused(dir.path(), "leak.yaml", "outside the manifest directory");
    // a relative link that climbs out is the same
    let dir = dir_with_a_manifest();
    std::fs::create_dir(dir.path().join("nested")).unwrap();
    // nested/ → DIR → DIR's parent, then down into the other temporary directory
    let climb = Path::new("../..").join(
        secret
            .strip_prefix(dir.path().parent().unwrap())
            .expect("both temporary directories share a parent"),
    );
    symlink(&climb, dir.path().join("nested/leak.yaml")).unwrap();
    refused(
        dir.path(),
        "nested/leak.yaml",
        "outside the manifest directory",
    );
}

#[test]
fn a_linked_directory_that_leaves_dir_is_not_walked() {
    let outside = tempfile::tempdir().unwrap();
    // valid manifests out there: following the link would load them
    write(outside.path(), &[("more.yaml", manifest("rn"))]);
    std::fs::write(outside.path().join("secret.yaml"), format!("{SECRET}\n")).unwrap();
    let dir = dir_with_a_manifest();
    symlink(outside.path(), dir.path().join("shared")).unwrap();
    refused(
        dir.path(),
        "shared",
        "directory outside the manifest directory",
    );
}

#[test]
fn links_that_loop_are_refused() {
    let dir = dir_with_a_manifest();
    symlink("b.yaml", dir.path().join("a.yaml")).unwrap();
    symlink("a.yaml", dir.path().join("b.yaml")).unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    symlink("..", dir.path().join("sub/up")).unwrap();
    refused(dir.path(), "a.yaml", "dangles or loops");
    refused(dir.path(), "sub/up", "does not follow linked directories");
}

#[test]
fn a_file_over_the_cap_is_refused_and_the_cap_is_configurable() {
    // 9 MiB of comments: over the default 8 MiB cap
    let dir = dir_with_a_manifest();
    let big = "# padding padding padding padding padding padding padding padding\n"
        .repeat(9 * 1024 * 1024 / 66 + 1);
    std::fs::write(dir.path().join("big.yaml"), &big).unwrap();
    refused(dir.path(), "big.yaml", "larger than 8388608 bytes");
    // a lower cap from the environment refuses an ordinary file
    let dir = dir_with_a_manifest();
    write(
        dir.path(),
        &[("more.yaml", manifest("rn") + &"# x\n".repeat(300))],
    );
    refused_with(
        dir.path(),
        "more.yaml",
        "larger than 1024 bytes",
        &[("CAREPLANE_MAX_MANIFEST_BYTES", "1KiB")],
    );
    let r = run(
        &["validate"],
        dir.path(),
        &[("CAREPLANE_MAX_MANIFEST_BYTES", "lots")],
    );
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains("CAREPLANE_MAX_MANIFEST_BYTES"),
        "{}",
        r.stderr
    );
}

#[test]
fn every_refused_entry_is_reported_at_once() {
    let dir = dir_with_a_manifest();
    symlink("/dev/zero", dir.path().join("zero.yaml")).unwrap();
    let made = Command::new("mkfifo")
        .arg(dir.path().join("pipe.yml"))
        .status()
        .unwrap();
    assert!(made.success());
    let r = run(&["validate", "--format", "plain"], dir.path(), &[]);
    assert_eq!(r.code, Some(1), "{}", r.all());
    assert!(r.stderr.contains("zero.yaml:1:1"), "{}", r.stderr);
    assert!(r.stderr.contains("pipe.yml:1:1"), "{}", r.stderr);
    assert!(r.stderr.contains("2 error(s)"), "{}", r.stderr);
}

#[test]
fn a_link_to_a_manifest_inside_dir_is_followed() {
    // not a regression test: the rule that keeps ordinary layouts working
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &[("shared/roles.yaml", manifest("md"))]);
    // a non-manifest name, so the target itself is not read a second time
    std::fs::rename(
        dir.path().join("shared/roles.yaml"),
        dir.path().join("shared/roles.txt"),
    )
    .unwrap();
    symlink("shared/roles.txt", dir.path().join("roles.yaml")).unwrap();
    let r = run(&["validate"], dir.path(), &[]);
    assert_eq!(r.code, Some(0), "{}", r.all());
    assert!(
        r.stderr.contains("1 manifest file(s) valid"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("1 role(s)"), "{}", r.stderr);
}

#[test]
fn errors_show_environment_values_as_the_variable_never_as_its_text() {
    // a manifest may pull any environment variable in with ${NAME}; an error that quotes
    // the expanded string must not print a runner secret
    let dir = dir_with_a_manifest();
    write(
        dir.path(),
        &[(
            "team.yaml",
            "apiVersion: careplane.dev/v1\nkind: Team\nmetadata:\n  name: \"x-${RUNNER_SECRET}\"\nspec: {}\n".to_owned(),
        )],
    );
    for args in [
        &["validate"][..],
        &["validate", "--format", "github"][..],
        &["plan"][..],
    ] {
        let r = run(args, dir.path(), &[("RUNNER_SECRET", SECRET)]);
        assert_eq!(r.code, Some(1), "{args:?}: {}", r.all());
        let all = r.all();
        assert!(
            all.contains("team.yaml:4:") || all.contains("team.yaml,line=4,"),
            "{args:?}: {all}"
        );
        assert!(
            r.all().contains("${RUNNER_SECRET}"),
            "{args:?}: {}",
            r.all()
        );
        assert!(
            !r.all().contains(SECRET),
            "{args:?} quoted the secret: {}",
            r.all()
        );
    }
}

#[test]
fn a_file_store_outside_the_manifest_directory_is_refused() {
    let outside = tempfile::tempdir().unwrap();
    for path in [
        "../store".to_owned(),
        outside.path().display().to_string(),
        "store/../../x".to_owned(),
    ] {
        let dir = dir_with_a_manifest();
        write(
            dir.path(),
            &[(
                "careplane.yaml",
                format!(
                    "apiVersion: careplane.dev/v1\nkind: Project\nmetadata:\n  name: p\nspec:\n  targets:\n    local:\n      type: file\n      path: {path}\n"
                ),
            )],
        );
        for args in [&["validate"][..], &["plan"][..]] {
            let r = run(args, dir.path(), &[]);
            let all = r.all();
            assert_eq!(r.code, Some(1), "{path}: {all}");
            assert!(
                all.contains("careplane.yaml:") && all.contains("leaves the manifest directory"),
                "{path}: {all}"
            );
        }
        assert!(
            std::fs::read_dir(outside.path()).unwrap().next().is_none(),
            "nothing written outside"
        );
    }
}

#[test]
fn manifests_cannot_read_credential_variables() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            (
                "careplane.yaml",
                "apiVersion: careplane.dev/v1\nkind: Project\nmetadata:\n  name: p\nspec:\n  defaultTarget: local\n  targets:\n    local: {type: file, path: store}\n    prod:\n      type: fhir\n      url: https://fhir.example.org/r4\n      auth: {bearerTokenEnv: PROD_FHIR_TOKEN}\n".to_owned(),
            ),
            (
                "roles.yaml",
                "apiVersion: careplane.dev/v1\nkind: Role\nmetadata:\n  name: md\nspec:\n  code: MD\n  display: \"${PROD_FHIR_TOKEN}\"\n  domain: clinical\n---\napiVersion: careplane.dev/v1\nkind: Role\nmetadata:\n  name: rn\nspec:\n  code: RN\n  display: \"${CAREPLANE_TOKEN}\"\n  domain: clinical\n".to_owned(),
            ),
        ],
    );
    for args in [&["validate"][..], &["plan"][..]] {
        let r = run(
            args,
            dir.path(),
            &[("PROD_FHIR_TOKEN", SECRET), ("CAREPLANE_TOKEN", SECRET)],
        );
        let all = r.all();
        assert_eq!(r.code, Some(1), "{args:?}: {all}");
        assert_eq!(
            all.matches("holds a credential").count(),
            2,
            "{args:?}: both references refused: {all}"
        );
        assert!(!all.contains(SECRET), "{args:?}: {all}");
    }
}

#[test]
fn a_file_store_linked_out_of_the_manifest_directory_is_refused() {
    // The walk refuses a linked directory it sees; the default store `.careplane/store` is
    // hidden from the walk, so the target itself checks where the store leads.
    let outside = tempfile::tempdir().unwrap();
    let dir = dir_with_a_manifest();
    std::os::unix::fs::symlink(outside.path(), dir.path().join(".careplane")).unwrap();
    std::fs::create_dir(outside.path().join("store")).unwrap();
    let r = run(&["apply", "--auto-approve"], dir.path(), &[]);
    let all = r.all();
    assert_eq!(r.code, Some(1), "{all}");
    assert!(
        all.contains("leads outside the manifest directory"),
        "{all}"
    );
    assert!(
        std::fs::read_dir(outside.path().join("store"))
            .unwrap()
            .next()
            .is_none(),
        "nothing written outside: {all}"
    );
}
