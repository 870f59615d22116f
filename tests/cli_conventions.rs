//! CLI conventions (issue 12, items 6, 7, 9, 10): usage errors never exit 2, every
//! `--help` teaches (snapshots), completions, man pages and `--version`, `init` → `validate`
//! → `plan` → `show`, `--format json` summaries, `-q`, and the loader's friction fixes
//! (foreign documents, `.careplaneignore`, `--server` with a project file, did-you-mean,
//! NPI). No server: everything runs on the file store.

use std::path::Path;
use std::process::Output;

fn careplane() -> assert_cmd::Command {
    let mut c = assert_cmd::Command::cargo_bin("careplane").unwrap();
    c.env("NO_COLOR", "1")
        .env_remove("CAREPLANE_SERVER")
        .env_remove("CAREPLANE_TOKEN")
        .env_remove("CAREPLANE_LOG")
        .env_remove("CAREPLANE_PSEUDONYM_KEY");
    c
}

fn run(args: &[&str]) -> Output {
    careplane().args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn subcommands() -> Vec<String> {
    careplane::cli::command()
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect()
}

fn init(dir: &Path) {
    let o = run(&["init", dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
}

#[test]
fn usage_errors_exit_64_never_2_for_every_subcommand() {
    let subs = subcommands();
    assert!(subs.len() >= 13, "{subs:?}");
    for sub in &subs {
        let o = run(&[sub, "--no-such-flag"]);
        assert_eq!(o.status.code(), Some(64), "careplane {sub} --no-such-flag");
        assert!(text(&o.stderr).contains("unexpected argument"), "{sub}");
        assert!(o.stdout.is_empty(), "{sub}: the usage error goes to stderr");
    }
    for args in [
        &["no-such-command"][..],
        &[][..],
        &["show"][..],
        &["completions"][..],
        &["completions", "tcsh"][..],
        &["plan", "--format", "xml"][..],
        &["watch", "--interval", "0"][..],
        &["watch", "--full-every", "0"][..],
        &["reconcile"][..],
        &["plan", "--var", "not-a-pair"][..],
        &["-q", "-v", "validate"][..],
    ] {
        let o = run(args);
        assert_eq!(o.status.code(), Some(64), "careplane {args:?}");
    }
    // --help and --version are not errors
    for args in [
        &["--help"][..],
        &["-h"][..],
        &["--version"][..],
        &["plan", "--help"][..],
    ] {
        assert_eq!(run(args).status.code(), Some(0), "careplane {args:?}");
    }
}

#[test]
fn every_help_teaches_examples_exit_codes_and_environment() {
    let mut pages = vec![(String::from("root"), run(&["--help"]))];
    for sub in subcommands() {
        let o = run(&[&sub, "--help"]);
        pages.push((sub, o));
    }
    for (name, o) in pages {
        assert_eq!(o.status.code(), Some(0), "{name}");
        let page = text(&o.stdout);
        assert!(page.contains("Examples:\n"), "{name}: {page}");
        assert!(page.contains("Exit codes:\n"), "{name}");
        assert!(page.contains("64  usage error"), "{name}");
        if [
            "plan",
            "apply",
            "drift",
            "export",
            "import",
            "watch",
            "reconcile",
        ]
        .contains(&name.as_str())
        {
            for var in [
                "CAREPLANE_SERVER",
                "CAREPLANE_TOKEN",
                "CAREPLANE_LOG",
                "CAREPLANE_PSEUDONYM_KEY",
                "CANVAS_CLIENT_ID",
                "CANVAS_CLIENT_SECRET",
            ] {
                assert!(page.contains(var), "{name} --help does not name {var}");
            }
        }
        insta::assert_snapshot!(format!("help_{name}"), page);
    }
}

#[test]
fn version_names_the_git_commit() {
    let o = run(&["--version"]);
    let v = text(&o.stdout);
    let re = regex::Regex::new(r"^careplane \d+\.\d+\.\d+ \(commit ([0-9a-f]{12}|unknown)\)\n$")
        .unwrap();
    assert!(re.is_match(&v), "{v:?}");
}

#[test]
fn completions_and_man_pages_are_generated_from_the_parser() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let o = run(&["completions", shell]);
        assert_eq!(o.status.code(), Some(0), "{shell}");
        let script = text(&o.stdout);
        for sub in ["validate", "plan", "show", "init", "detailed-exitcode"] {
            assert!(script.contains(sub), "{shell} completion lacks {sub}");
        }
    }
    let o = run(&["man"]);
    assert_eq!(o.status.code(), Some(0));
    let page = text(&o.stdout);
    assert!(
        page.starts_with(".ie") || page.contains(".TH careplane"),
        "{page}"
    );
    assert!(page.contains("Exit codes"));

    let dir = tempfile::tempdir().unwrap();
    let o = run(&["man", "--out", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    for sub in subcommands() {
        let p = dir.path().join(format!("careplane-{sub}.1"));
        let page = std::fs::read_to_string(&p).unwrap_or_else(|_| panic!("{}", p.display()));
        assert!(page.contains(&format!(".TH careplane-{sub}")), "{sub}");
    }
    assert!(dir.path().join("careplane.1").is_file());
}

#[test]
fn init_into_an_empty_directory_then_validate_plan_show_and_apply_on_the_file_store() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("My Clinic");
    let d = dir.to_str().unwrap();
    init(&dir);
    for f in [
        "careplane.yaml",
        "teams.yaml",
        "values.yaml",
        "careplane.schema.json",
        ".github/workflows/careplane.yml",
    ] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    // the modeline points at a file that exists, beside the manifests
    let team = std::fs::read_to_string(dir.join("teams.yaml")).unwrap();
    assert!(team.starts_with("# yaml-language-server: $schema=careplane.schema.json\n"));
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("careplane.schema.json")).unwrap())
            .unwrap();
    assert!(schema.get("$schema").is_some() || schema.get("definitions").is_some());
    // the workflow is YAML and runs careplane commands that parse
    let wf = std::fs::read_to_string(dir.join(".github/workflows/careplane.yml")).unwrap();
    assert!(wf.contains("careplane validate") && wf.contains("careplane plan"));
    // it installs the release that wrote it, not whatever the default branch holds today
    let tag = format!("CAREPLANE_TAG: v{}\n", env!("CARGO_PKG_VERSION"));
    assert!(wf.contains(&tag), "{wf}");
    assert!(wf.contains("--tag \"$CAREPLANE_TAG\""), "{wf}");

    let o = run(&["validate", d]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("project 'my-clinic'"),
        "{}",
        text(&o.stderr)
    );

    let plan_file = tmp.path().join("plan.json");
    let p = plan_file.to_str().unwrap();
    let o = run(&["plan", d, "--out", p, "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("1 to create"),
        "{}",
        text(&o.stdout)
    );
    assert!(!text(&o.stderr).contains("warning:"), "{}", text(&o.stderr));

    // show renders the saved plan in all three formats
    let human = run(&["show", p]);
    assert_eq!(human.status.code(), Some(0));
    assert!(text(&human.stdout).contains("create team 'care-coordinators'"));
    let json = run(&["show", p, "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(
        v,
        serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&plan_file).unwrap())
            .unwrap()
    );
    let md = run(&["show", p, "--format", "markdown"]);
    assert!(
        text(&md.stdout).starts_with("### careplane plan"),
        "{}",
        text(&md.stdout)
    );
    let missing = run(&["show", tmp.path().join("nope.json").to_str().unwrap()]);
    assert_eq!(missing.status.code(), Some(1));

    // apply --format json: stdout is the apply record only
    let o = run(&["apply", d, "--plan", p, "--format", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let record: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(record.is_object(), "{record}");
    assert!(
        text(&o.stderr).contains("create team"),
        "the plan goes to stderr"
    );
    let o = run(&["plan", d, "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "applied: nothing left to do");

    // export --format json lists what it wrote
    let out = tmp.path().join("exported");
    let o = run(&[
        "export",
        d,
        "--out",
        out.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        v["files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "careplane.yaml"),
        "{v}"
    );
    // every exported manifest's modeline names a schema file that exists beside it
    for f in v["files"].as_array().unwrap() {
        let f = f.as_str().unwrap();
        let text = std::fs::read_to_string(out.join(f)).unwrap();
        if let Some(rest) = text.strip_prefix("# yaml-language-server: $schema=") {
            let target = rest.lines().next().unwrap();
            let schema = out.join(Path::new(f).parent().unwrap()).join(target);
            assert!(schema.is_file(), "{f}: {target} does not exist");
        }
    }
    assert!(out.join("careplane.schema.json").is_file());

    // a second init refuses and overwrites nothing
    std::fs::write(dir.join("teams.yaml"), "# mine\n").unwrap();
    let o = run(&["init", d]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        std::fs::read_to_string(dir.join("teams.yaml")).unwrap(),
        "# mine\n"
    );
}

#[test]
fn json_summaries_and_quiet() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().to_str().unwrap();
    init(tmp.path());
    let o = run(&["validate", d, "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["counts"]["teams"], 1);

    std::fs::write(
        tmp.path().join("bad.yaml"),
        "apiVersion: careplane.dev/v1\nkind: Team\nmetadata: {name: Bad}\nspec: {}\n",
    )
    .unwrap();
    let o = run(&["validate", d, "--format", "json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["errors"][0]["file"], format!("{d}/bad.yaml"));
    std::fs::remove_file(tmp.path().join("bad.yaml")).unwrap();

    // test: no tests is a note and exit 0; --format json is a document
    let o = run(&["test", d]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("no rule tests"));
    let o = run(&["test", d, "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["passed"], 0);
    assert_eq!(v["failed"], 0);

    // -q (and CAREPLANE_LOG=quiet) drop notes, keep results
    let o = run(&["validate", d]);
    assert!(!o.stderr.is_empty());
    let o = run(&["-q", "validate", d]);
    assert_eq!(o.status.code(), Some(0));
    assert!(o.stderr.is_empty(), "{}", text(&o.stderr));
    let o = careplane()
        .env("CAREPLANE_LOG", "quiet")
        .args(["plan", d])
        .output()
        .unwrap();
    assert!(o.stderr.is_empty(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("1 to create"));
}

#[test]
fn documents_of_other_tools_are_skipped_with_a_note() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().to_str().unwrap();
    init(tmp.path());
    std::fs::create_dir_all(tmp.path().join("deploy")).unwrap();
    std::fs::write(
        tmp.path().join("deploy/k8s.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicas: 1}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web}\n",
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("compose.yml"),
        "services:\n  web: {image: nginx}\n",
    )
    .unwrap();
    let o = run(&["validate", d]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(
        err.contains("note: skipped deploy/k8s.yaml: 2 document(s)"),
        "{err}"
    );
    assert!(
        err.contains("note: skipped compose.yml: 1 document(s)"),
        "{err}"
    );
    // a careplane kind under a misspelt careplane apiVersion is an error, not skipped
    for api in ["careplane/v1", "careplan.dev/v1", "Careplane.dev/v1"] {
        let f = tmp.path().join("typo.yaml");
        std::fs::write(
            &f,
            format!("apiVersion: {api}\nkind: Team\nmetadata: {{name: t3}}\nspec: {{}}\n"),
        )
        .unwrap();
        let o = run(&["validate", d, "--format", "plain"]);
        assert_eq!(o.status.code(), Some(1), "{api}: {}", text(&o.stderr));
        let err = text(&o.stderr);
        assert!(err.contains("typo.yaml"), "{api}");
        // the skipped files are named beside the errors, not only on success
        assert!(
            err.contains("note: skipped deploy/k8s.yaml: 2 document(s)"),
            "{api}: {err}"
        );
        std::fs::remove_file(&f).unwrap();
    }
    // a careplane kind without apiVersion is still an error, not skipped
    std::fs::write(
        tmp.path().join("team2.yaml"),
        "kind: Team\nmetadata: {name: t2}\nspec: {}\n",
    )
    .unwrap();
    let o = run(&["validate", d, "--format", "plain"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("team2.yaml"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn careplaneignore_excludes_paths_and_must_be_a_regular_file() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().to_str().unwrap();
    init(tmp.path());
    std::fs::create_dir_all(tmp.path().join("charts/templates")).unwrap();
    // a Helm template is not even YAML
    std::fs::write(
        tmp.path().join("charts/templates/x.yaml"),
        "{{ if .Values.x }}: [\n",
    )
    .unwrap();
    std::fs::write(tmp.path().join("draft.yaml"), "kind: Team\n").unwrap();
    let o = run(&["validate", d]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "without the ignore file both are errors"
    );
    std::fs::write(
        tmp.path().join(".careplaneignore"),
        "# not ours\ncharts/\n/draft.yaml\n",
    )
    .unwrap();
    let o = run(&["validate", d]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    #[cfg(unix)]
    {
        std::fs::remove_file(tmp.path().join(".careplaneignore")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", tmp.path().join(".careplaneignore")).unwrap();
        let o = run(&["validate", d, "--format", "plain"]);
        assert_eq!(o.status.code(), Some(1));
        assert!(
            text(&o.stderr)
                .contains(".careplaneignore:1:1: error: this entry is not a regular file"),
            "{}",
            text(&o.stderr)
        );
    }
}

#[test]
fn server_with_a_project_file_that_declares_targets_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().to_str().unwrap();
    init(tmp.path());
    // port 9 (discard): the refusal comes before any connection
    for cmd in [
        careplane()
            .args(["plan", d, "--server", "http://127.0.0.1:9/fhir"])
            .output()
            .unwrap(),
        careplane()
            .env("CAREPLANE_SERVER", "http://127.0.0.1:9/fhir")
            .args(["drift", d])
            .output()
            .unwrap(),
    ] {
        assert_eq!(cmd.status.code(), Some(1));
        let err = text(&cmd.stderr);
        assert!(err.contains("declares target(s) local"), "{err}");
        assert!(err.contains("use --target NAME"), "{err}");
    }
}

#[test]
fn plan_out_warns_when_the_saved_plan_would_be_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().to_str().unwrap();
    init(tmp.path());
    let project = std::fs::read_to_string(tmp.path().join("careplane.yaml")).unwrap();
    let project = project.replace(
        "    # A FHIR R4 server",
        "    other:\n      type: file\n      path: other-store\n    # A FHIR R4 server",
    );
    std::fs::write(tmp.path().join("careplane.yaml"), project).unwrap();
    let p = tmp.path().join("plan.json");
    let o = run(&["plan", d, "--out", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(
        err.contains("warning: this saved plan will not apply as it is"),
        "{err}"
    );
    assert!(err.contains("--target local"), "{err}");
    let o = run(&["-q", "plan", d, "--out", p.to_str().unwrap()]);
    assert!(text(&o.stderr).contains("warning:"), "-q keeps warnings");
    let o = run(&["plan", d, "--target", "local", "--out", p.to_str().unwrap()]);
    assert!(!text(&o.stderr).contains("warning:"), "{}", text(&o.stderr));
}

#[test]
fn misspellings_get_did_you_mean_and_an_unquoted_npi_a_sentence() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().to_str().unwrap();
    init(tmp.path());
    std::fs::write(
        tmp.path().join("more.yaml"),
        "apiVersion: careplane.dev/v1\nkind: Teem\nmetadata: {name: a}\nspec: {}\n---\n\
         apiVersion: careplane.dev/v1\nkind: Team\nmetadata: {name: b}\nspec:\n  displayNam: B\n  responsibilities: [COORDINATE_REFERALS_FOR_PATIENT]\n  members:\n    - npi: 1234567890\n",
    )
    .unwrap();
    let o = run(&["validate", d, "--format", "plain"]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(err.contains("did you mean 'Team'?"), "{err}");
    assert!(err.contains("did you mean 'displayName'?"), "{err}");
    assert!(
        err.contains("did you mean 'COORDINATE_REFERRALS_FOR_PATIENT'?"),
        "{err}"
    );
    assert!(
        err.contains("more.yaml:13:7: error: /spec/members/0: NPI must be a string of 10 digits"),
        "{err}"
    );
    assert!(err.contains("npi: \"1234567890\""), "{err}");
    assert!(!err.contains("oneOf"), "{err}");
}

#[test]
fn watch_once_prints_no_interval_banner() {
    let tmp = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/clinic");
    copy_dir(&src, tmp.path());
    let o = run(&["watch", tmp.path().to_str().unwrap(), "--once"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(
        !text(&o.stderr).contains("every 30 s"),
        "{}",
        text(&o.stderr)
    );
}

fn copy_dir(from: &Path, to: &Path) {
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

#[test]
fn help_never_shows_the_value_of_careplane_server() {
    let o = careplane()
        .env(
            "CAREPLANE_SERVER",
            "https://user:hunter2secret@fhir.example.org/r4",
        )
        .args(["plan", "--help"])
        .output()
        .unwrap();
    let page = text(&o.stdout);
    assert!(page.contains("[env: CAREPLANE_SERVER]"), "{page}");
    assert!(!page.contains("hunter2secret"), "{page}");
}

#[test]
fn verbose_turns_on_the_request_log() {
    // a port nothing listens on: each attempt is refused at once
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("t.yaml"),
        "apiVersion: careplane.dev/v1\nkind: Team\nmetadata: {name: t}\nspec: {}\n",
    )
    .unwrap();
    let url = format!("http://127.0.0.1:{port}/fhir");
    let d = tmp.path().to_str().unwrap();
    let quiet = run(&["plan", d, "--server", &url]);
    assert_eq!(quiet.status.code(), Some(1));
    assert!(
        !text(&quiet.stderr).contains("attempt 1 →"),
        "{}",
        text(&quiet.stderr)
    );
    let loud = run(&["-v", "plan", d, "--server", &url]);
    assert_eq!(loud.status.code(), Some(1));
    assert!(
        text(&loud.stderr).contains("attempt 1 →"),
        "{}",
        text(&loud.stderr)
    );
}

#[test]
fn a_saved_plan_with_patient_groups_applies_without_the_pseudonym_key() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/clinic"),
        tmp.path(),
    );
    let d = tmp.path().to_str().unwrap();
    let p = tmp.path().join("plan.json");
    let p = p.to_str().unwrap();
    let o = run(&["plan", d, "--target", "local", "--out", p]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    // memberships are effects, recomputed at apply: no key is needed to check them later
    assert!(!text(&o.stderr).contains("warning:"), "{}", text(&o.stderr));
    let saved = std::fs::read_to_string(p).unwrap();
    assert!(!saved.contains("Patient/"), "no patient ids in a plan file");
    let o = run(&["apply", d, "--target", "local", "--plan", p]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    let shown = text(&o.stdout);
    assert!(
        shown.contains(
            "patient group 'care-management': reviewed +16 -0, now +16 -0 patient(s): applied"
        ),
        "{shown}"
    );
    // applied whole: configuration and effects
    let o = run(&["plan", d, "--target", "local", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout));
}
