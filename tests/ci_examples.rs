//! The CI examples under examples/ci are valid YAML and every careplane command in them
//! is one this careplane accepts (so the examples cannot drift from the CLI).

use std::path::PathBuf;

use clap::Parser;

const SUBCOMMANDS: &[&str] = &["validate", "schema", "plan", "apply", "drift", "reconcile"];

fn files() -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/ci");
    let files: Vec<PathBuf> = ["careplane.yml", "drift.yml", "effects.yml", "gitlab-ci.yml"]
        .iter()
        .map(|f| root.join(f))
        .collect();
    assert!(files.iter().all(|f| f.exists()));
    files
}

/// The careplane invocations in a text: from `careplane <subcommand>` up to a redirection,
/// pipe or command separator.
fn invocations(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('#')
            || trimmed.starts_with("name:")
            || trimmed.starts_with("- name:")
        {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("careplane ") {
            let tail = &rest[i + "careplane ".len()..];
            rest = tail;
            let first = tail.split_whitespace().next().unwrap_or_default();
            if !SUBCOMMANDS.contains(&first) {
                continue;
            }
            let end = tail.find(['>', '|', ';', '&']).unwrap_or(tail.len());
            let mut args = vec!["careplane".to_owned()];
            args.extend(
                tail[..end]
                    .split_whitespace()
                    .map(|w| w.trim_matches('"').to_owned()),
            );
            out.push(args);
        }
    }
    out
}

#[test]
fn every_careplane_command_in_the_ci_examples_parses() {
    let mut seen = 0;
    for f in files() {
        let text = std::fs::read_to_string(&f).unwrap();
        careplane::manifest::yaml::parse_documents(&text)
            .unwrap_or_else(|e| panic!("{}: not valid YAML: {}", f.display(), e.message));
        for args in invocations(&text) {
            seen += 1;
            if let Err(e) = careplane::cli::Cli::try_parse_from(&args) {
                panic!(
                    "{}: `{}` is not a valid careplane command:\n{e}",
                    f.display(),
                    args.join(" ")
                );
            }
        }
    }
    assert!(seen >= 8, "found only {seen} careplane commands");
}

#[test]
fn the_github_workflows_gate_on_the_documented_exit_codes() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/ci");
    let plan = std::fs::read_to_string(root.join("careplane.yml")).unwrap();
    assert!(plan.contains("--detailed-exitcode"));
    assert!(plan.contains("apply \"$MANIFESTS\" --target \"$CAREPLANE_TARGET\" --plan plan.json"));
    let drift = std::fs::read_to_string(root.join("drift.yml")).unwrap();
    assert!(drift.contains("--label careplane-drift"));
    assert!(drift.contains("gh issue close"));
}

#[test]
fn the_apply_jobs_keep_the_apply_report_as_an_artifact() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/ci");
    let github = std::fs::read_to_string(root.join("careplane.yml")).unwrap();
    assert!(github.contains("--plan plan.json --report apply-report.json"));
    assert!(github.contains("name: careplane-apply-report\n          path: apply-report.json"));
    let gitlab = std::fs::read_to_string(root.join("gitlab-ci.yml")).unwrap();
    assert!(gitlab.contains("--plan plan.json --report apply-report.json"));
    assert!(gitlab.contains("paths: [apply-report.json]"));
}

// ---------------------------------------------------------------------------------------
// The workflow files against the CI systems' own JSON schemas, and their shell through
// shellcheck.

use serde_json::Value;
use std::path::Path;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The one YAML document of a file, as JSON (YAML 1.2 booleans: `on:` stays a string).
fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: cannot read: {e}", path.display()));
    let mut docs = careplane::manifest::yaml::parse_documents(&text)
        .unwrap_or_else(|e| panic!("{}: not valid YAML: {}", path.display(), e.message));
    assert_eq!(
        docs.len(),
        1,
        "{}: expected one YAML document",
        path.display()
    );
    docs.remove(0).value
}

/// Schema errors of `instance` against a schema vendored in tests/ci-schemas/.
fn schema_errors(schema_file: &str, instance: &Value) -> Vec<String> {
    let path = root().join("tests/ci-schemas").join(schema_file);
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft7)
        .build(&schema)
        .unwrap_or_else(|e| panic!("{schema_file} does not compile: {e}"));
    validator
        .iter_errors(instance)
        .map(|e| format!("at {}: {e}", e.instance_path()))
        .collect()
}

fn github_workflows() -> Vec<PathBuf> {
    vec![
        root().join("examples/ci/careplane.yml"),
        root().join("examples/ci/drift.yml"),
        root().join("examples/ci/effects.yml"),
        root().join(".github/workflows/release.yml"),
    ]
}

#[test]
fn the_github_workflows_match_the_github_workflow_schema() {
    for f in github_workflows() {
        let errors = schema_errors("github-workflows.json", &yaml(&f));
        assert!(errors.is_empty(), "{}:\n{}", f.display(), errors.join("\n"));
    }
}

#[test]
fn action_yml_matches_the_github_action_schema() {
    let f = root().join("action.yml");
    let errors = schema_errors("github-actions.json", &yaml(&f));
    assert!(errors.is_empty(), "{}:\n{}", f.display(), errors.join("\n"));
}

#[test]
fn the_gitlab_pipeline_matches_the_gitlab_ci_schema() {
    let f = root().join("examples/ci/gitlab-ci.yml");
    let errors = schema_errors("gitlab-ci.json", &yaml(&f));
    assert!(errors.is_empty(), "{}:\n{}", f.display(), errors.join("\n"));
    // Every script line is a string: an unquoted `"PRIVATE-TOKEN: …"` line would be a
    // mapping (which the schema above also rejects).
    let doc = yaml(&f);
    for (job, body) in doc.as_object().unwrap() {
        for key in ["before_script", "script", "after_script"] {
            if let Some(lines) = body.get(key).and_then(Value::as_array) {
                for line in lines {
                    assert!(
                        line.is_string(),
                        "gitlab-ci.yml: {job}.{key}: {line} is not a string"
                    );
                }
            }
        }
    }
}

#[test]
fn the_schemas_reject_what_gitlab_and_github_reject() {
    // the gitlab-ci.yml of before issue 12: a script line with an unquoted ": " is a map
    let bad = careplane::manifest::yaml::parse_documents(
        "job:\n  script:\n    - curl -H \"PRIVATE-TOKEN: $T\" https://x\n    - MR=$(curl -H \"PRIVATE-TOKEN: $T\" https://x)\n",
    )
    .unwrap()
    .remove(0)
    .value;
    assert!(!schema_errors("gitlab-ci.json", &bad).is_empty());
    // a step with both `uses` and `run`, and a job without `runs-on`
    let bad = careplane::manifest::yaml::parse_documents(
        "on: push\njobs:\n  a:\n    steps:\n      - uses: actions/checkout@v4\n        run: echo\n",
    )
    .unwrap()
    .remove(0)
    .value;
    assert!(!schema_errors("github-workflows.json", &bad).is_empty());
    // an action without `runs`
    let bad = serde_json::json!({"name": "x", "description": "y"});
    assert!(!schema_errors("github-actions.json", &bad).is_empty());
}

/// (where, shell, script) of every shell step: GitHub `run:` (bash, as GitHub runs it:
/// `bash -e -o pipefail`), GitLab `before_script` + `script` (sh: the example's alpine
/// image runs busybox sh).
fn shell_steps() -> Vec<(String, &'static str, String)> {
    let mut out = Vec::new();
    let mut github = github_workflows();
    github.push(root().join("action.yml"));
    for f in github {
        let doc = yaml(&f);
        let name = f.strip_prefix(root()).unwrap().display().to_string();
        let mut steps: Vec<(String, &Value)> = Vec::new();
        if let Some(jobs) = doc.get("jobs").and_then(Value::as_object) {
            for (job, body) in jobs {
                for (i, s) in body["steps"].as_array().into_iter().flatten().enumerate() {
                    steps.push((format!("{job}.steps[{i}]"), s));
                }
            }
        }
        for (i, s) in doc["runs"]["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            steps.push((format!("runs.steps[{i}]"), s));
        }
        for (at, step) in steps {
            if let Some(run) = step.get("run").and_then(Value::as_str) {
                let shell = step.get("shell").and_then(Value::as_str).unwrap_or("bash");
                assert_eq!(shell, "bash", "{name} {at}: only bash steps are checked");
                out.push((
                    format!("{name} {at}"),
                    "bash",
                    format!("set -eo pipefail\n{run}"),
                ));
            }
        }
    }
    let f = root().join("examples/ci/gitlab-ci.yml");
    let doc = yaml(&f);
    let lines = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|l| {
                l.as_str()
                    .unwrap_or_else(|| panic!("gitlab-ci.yml: script line {l} is not a string"))
                    .to_owned()
            })
            .collect()
    };
    let before = lines(&doc["default"]["before_script"]);
    for (job, body) in doc.as_object().unwrap() {
        if let Some(script) = body.get("script") {
            let mut all = before.clone();
            all.extend(lines(script));
            out.push((
                format!("examples/ci/gitlab-ci.yml {job}"),
                "sh",
                all.join("\n"),
            ));
        }
    }
    out
}

#[test]
fn no_workflow_expression_is_pasted_into_shell() {
    // `${{ … }}` inside `run:` is pasted into the script before the shell parses it (a
    // branch name or PR title becomes code); the workflows pass values through `env:`.
    for (at, _, script) in shell_steps() {
        assert!(
            !script.contains("${{"),
            "{at}: a ${{{{ }}}} expression inside run:; pass it through env:"
        );
    }
}

#[test]
fn every_shell_step_passes_shellcheck() {
    let version = std::process::Command::new("shellcheck")
        .arg("--version")
        .output();
    let Ok(version) = version else {
        panic!(
            "shellcheck is not installed, so the CI examples' shell cannot be checked: run \
             `bash tests/ci-tools/setup.sh` (as root it installs Debian's shellcheck), as tests/run.sh does"
        );
    };
    assert!(version.status.success());
    let steps = shell_steps();
    assert!(steps.len() >= 15, "found only {} shell steps", steps.len());
    let mut failures = Vec::new();
    for (at, shell, script) in steps {
        let mut child = std::process::Command::new("shellcheck")
            .args([
                "--shell",
                shell,
                "--severity",
                "style",
                "--format",
                "gcc",
                "-",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        if !out.status.success() {
            failures.push(format!(
                "{at} ({shell}):\n{}\n--- script ---\n{script}",
                String::from_utf8_lossy(&out.stdout)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "shellcheck:\n{}",
        failures.join("\n\n")
    );
}

/// The steps of a GitHub workflow job, by name.
fn job_steps(doc: &Value, job: &str) -> Vec<Value> {
    doc["jobs"][job]["steps"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn the_github_plan_and_apply_both_have_the_pseudonym_key() {
    let doc = yaml(&root().join("examples/ci/careplane.yml"));
    for job in ["plan", "apply"] {
        let runs_careplane = job_steps(&doc, job)
            .into_iter()
            .filter(|s| {
                s["run"]
                    .as_str()
                    .is_some_and(|r| r.contains("careplane plan") || r.contains("careplane apply"))
            })
            .collect::<Vec<_>>();
        assert!(!runs_careplane.is_empty(), "{job}: no careplane step");
        for s in runs_careplane {
            assert_eq!(
                s["env"]["CAREPLANE_PSEUDONYM_KEY"], "${{ secrets.CAREPLANE_PSEUDONYM_KEY }}",
                "{job}: step {} plans or applies without CAREPLANE_PSEUDONYM_KEY",
                s["name"]
            );
        }
    }
}

#[test]
fn the_github_comment_is_careplanes_own_and_stale_plans_and_forks_have_a_path() {
    let text = std::fs::read_to_string(root().join("examples/ci/careplane.yml")).unwrap();
    let doc = yaml(&root().join("examples/ci/careplane.yml"));
    assert!(
        !text.contains("--edit-last"),
        "--edit-last edits whatever comment was posted last"
    );
    assert_eq!(doc["env"]["MARKER"], "<!-- careplane-plan -->");
    let plan = job_steps(&doc, "plan");
    let comment = plan
        .iter()
        .find(|s| {
            s["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("Comment the plan"))
        })
        .unwrap();
    let run = comment["run"].as_str().unwrap();
    assert!(run.contains("startswith(\\\"$MARKER\\\")") && run.contains("--method PATCH"));
    // forks: the plan steps are skipped with a message, and that message exists
    let fork = "github.event.pull_request.head.repo.full_name == github.repository";
    for s in &plan {
        let r = s["run"].as_str().unwrap_or_default();
        if r.contains("careplane plan")
            || s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("actions/upload-artifact"))
        {
            assert_eq!(
                s["if"], fork,
                "step {} runs for fork PRs (no secrets)",
                s["name"]
            );
        }
    }
    assert!(plan.iter().any(|s| {
        s["run"]
            .as_str()
            .is_some_and(|r| r.contains("from forks get no secrets"))
    }));
    // a stale reviewed plan: a fresh plan on the PR and a failed job
    let apply = job_steps(&doc, "apply");
    let stale = apply
        .iter()
        .find(|s| s["if"] == "failure() && steps.apply.outcome == 'failure'")
        .expect("no step for a stale reviewed plan");
    let run = stale["run"].as_str().unwrap();
    assert!(
        run.contains("careplane plan")
            && run.contains("gh pr comment")
            && run.trim_end().ends_with("exit 1")
    );
}

#[test]
fn the_gitlab_drift_job_fails_on_drift_and_apply_fetches_the_merge_request_pipelines_plan() {
    let doc = yaml(&root().join("examples/ci/gitlab-ci.yml"));
    assert!(
        doc["drift"].get("allow_failure").is_none(),
        "allow_failure turns drift into a warning instead of a red pipeline"
    );
    let script: String = doc["apply"]["script"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    // merge-request pipelines run on refs/merge-requests/<iid>/head: the branch's latest
    // artifacts are not the reviewed plan
    assert!(!script.contains("jobs/artifacts/$MR_BRANCH"));
    assert!(
        script.contains("merge_requests/$mr/pipelines")
            && script.contains("/jobs/$job/artifacts/plan.json")
    );
    let text = std::fs::read_to_string(root().join("examples/ci/gitlab-ci.yml")).unwrap();
    assert!(text.contains("CAREPLANE_PSEUDONYM_KEY"));
    assert!(
        !text.contains("cargo install"),
        "CI must not compile careplane"
    );
}

/// The scheduled effects jobs run `reconcile --effects` (never plan or apply, so they never
/// write configuration), one at a time with the apply of a merge, and keep their record;
/// the drift jobs never count effects as drift.
#[test]
fn the_scheduled_effects_jobs_reconcile_effects_only_and_drift_stays_on_configuration() {
    let github = std::fs::read_to_string(root().join("examples/ci/effects.yml")).unwrap();
    let doc = yaml(&root().join("examples/ci/effects.yml"));
    assert!(doc["on"]["schedule"][0]["cron"].is_string());
    assert_eq!(doc["jobs"]["effects"]["concurrency"], "careplane-apply");
    let gitlab = std::fs::read_to_string(root().join("examples/ci/gitlab-ci.yml")).unwrap();
    let gl = yaml(&root().join("examples/ci/gitlab-ci.yml"));
    assert_eq!(gl["effects"]["resource_group"], "careplane-apply");
    assert_eq!(
        gl["effects"]["rules"][0]["if"],
        "$CI_PIPELINE_SOURCE == \"schedule\" && $CAREPLANE_SCHEDULE == \"effects\""
    );
    for (name, text) in [("effects.yml", &github), ("gitlab-ci.yml", &gitlab)] {
        let runs: Vec<Vec<String>> = invocations(text)
            .into_iter()
            .filter(|a| a[1] == "reconcile")
            .collect();
        assert_eq!(runs.len(), 1, "{name}");
        let cli = careplane::cli::Cli::try_parse_from(&runs[0]).unwrap();
        let careplane::cli::Command::Reconcile(a) = cli.command else {
            panic!("{name}: not reconcile")
        };
        assert!(a.effects && !a.allow_mass_removal, "{name}");
        assert!(a.report.is_some(), "{name}: keep the record of the writes");
    }
    assert!(!github.contains("careplane apply") && !github.contains("careplane plan"));
    for f in ["drift.yml", "gitlab-ci.yml"] {
        let text = std::fs::read_to_string(root().join("examples/ci").join(f)).unwrap();
        assert!(
            !invocations(&text)
                .iter()
                .any(|a| a.iter().any(|w| w == "--include-effects")),
            "{f}: the drift alert must stay on configuration"
        );
    }
}
