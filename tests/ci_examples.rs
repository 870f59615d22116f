//! The CI examples under examples/ci are valid YAML and every careplane command in them
//! is one this careplane accepts (so the examples cannot drift from the CLI).

use std::path::PathBuf;

use clap::Parser;

const SUBCOMMANDS: &[&str] = &["validate", "schema", "plan", "apply", "drift"];

fn files() -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/ci");
    let files: Vec<PathBuf> = ["careplane.yml", "drift.yml", "gitlab-ci.yml"]
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
