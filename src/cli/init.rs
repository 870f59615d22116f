//! `careplane init [DIR]`: start a project that validates and plans as written: a project
//! file with a file-store target, a first team, a Values document, the manifest schema
//! beside them (the editor modeline points at it) and a GitHub Actions workflow. Nothing
//! existing is overwritten.

use std::path::{Path, PathBuf};

use super::{EXIT_ERROR, EXIT_OK, default_dir, err, note};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to start the project (default: the current directory; created if missing).
    pub dir: Option<PathBuf>,
    /// The project name (the ownership tag; never rename it once applied). Default: the
    /// directory's name.
    #[arg(long)]
    pub project: Option<String>,
}

const MODELINE: &str = "# yaml-language-server: $schema=careplane.schema.json\n";

/// Lowercase letters, digits and dashes, as `metadata.name` requires.
fn project_name(dir: &Path, given: Option<&str>) -> String {
    let raw = given.map(str::to_owned).unwrap_or_else(|| {
        std::fs::canonicalize(dir)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_default()
    });
    let mut name: String = raw
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    while name.contains("--") {
        name = name.replace("--", "-");
    }
    let name = name.trim_matches('-').to_owned();
    if name.is_empty() {
        "clinic".to_owned()
    } else if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        format!("clinic-{name}")
    } else {
        name
    }
}

/// The files `init` writes: (path relative to DIR, text).
pub fn files(project: &str) -> Vec<(&'static str, String)> {
    let project_file = format!(
        "{MODELINE}#\n\
         # The project file. metadata.name is the ownership tag: everything careplane writes\n\
         # is tagged with it, and careplane only updates or deletes what carries it. Never\n\
         # rename the project once applied.\n\
         apiVersion: careplane.dev/v1\n\
         kind: Project\n\
         metadata:\n  name: {project}\n\
         spec:\n  defaultTarget: local\n  targets:\n\
         \x20   # A directory of NDJSON files next to the manifests: safe to experiment with.\n\
         \x20   local:\n      type: file\n      path: store\n      values: local\n\
         \x20   # A FHIR R4 server: credentials are named by environment variable, never written here.\n\
         \x20   # production:\n\
         \x20   #   type: fhir\n\
         \x20   #   url: https://fhir.example.org/r4\n\
         \x20   #   values: production\n\
         \x20   #   auth: {{bearerTokenEnv: PRODUCTION_FHIR_TOKEN}}\n"
    );
    let team = format!(
        "{MODELINE}#\n\
         # A first team. Add responsibilities (`careplane schema` lists them) and members\n\
         # (existing staff, by `npi: \"1234567890\"` (quoted) or `email:`).\n\
         apiVersion: careplane.dev/v1\n\
         kind: Team\n\
         metadata:\n  name: care-coordinators\n  description: Referral follow-up and outreach.\n\
         spec:\n  displayName: Care Coordinators\n  responsibilities: []\n  members: []\n"
    );
    let values = format!(
        "{MODELINE}#\n\
         # Values for ${{NAME}} in the manifests, one document per target (`values:` in\n\
         # careplane.yaml). --var NAME=VALUE and the environment win over these.\n\
         apiVersion: careplane.dev/v1\n\
         kind: Values\n\
         metadata:\n  name: local\n\
         spec: {{}}\n"
    );
    // The workflow installs the careplane that wrote it: the same release tag, from the
    // repository Cargo.toml names (a build without one leaves a marked placeholder).
    let repository = match env!("CARGO_PKG_REPOSITORY") {
        "" => {
            "https://example.invalid/careplane.git # set: the careplane repository (README, \"Install\")"
        }
        url => url,
    };
    let version = env!("CARGO_PKG_VERSION");
    let workflow = format!(
        "# careplane on pull requests: validate (errors inline) and plan (the plan as a job\n\
         # summary). Keep this file in the repository root's .github/workflows/ and set\n\
         # MANIFESTS to this project's directory. Add the target's credentials as secrets\n\
         # and `--target` once the project file names a real server.\n\
         name: careplane\n\
         on:\n  pull_request:\n\
         permissions:\n  contents: read\n\
         env:\n  MANIFESTS: .\n\
         \x20 # the careplane that wrote this file: its repository and release tag\n\
         \x20 CAREPLANE_GIT: {repository}\n\
         \x20 CAREPLANE_TAG: v{version}\n\
         jobs:\n  plan:\n    runs-on: ubuntu-latest\n    steps:\n\
         \x20     - uses: actions/checkout@v4\n\
         \x20     - name: Install careplane\n\
         \x20       run: cargo install --locked --git \"$CAREPLANE_GIT\" --tag \"$CAREPLANE_TAG\" careplane\n\
         \x20     - name: Validate\n\
         \x20       run: careplane validate \"$MANIFESTS\" --format github\n\
         \x20     - name: Plan\n\
         \x20       run: |\n\
         \x20         set +e\n\
         \x20         careplane plan \"$MANIFESTS\" --format markdown --detailed-exitcode > plan.md\n\
         \x20         code=$?\n\
         \x20         set -e\n\
         \x20         cat plan.md >> \"$GITHUB_STEP_SUMMARY\"\n\
         \x20         # 0: no changes, 2: changes; anything else (1 error, 64 usage) fails the job.\n\
         \x20         if [ \"$code\" != 0 ] && [ \"$code\" != 2 ]; then exit \"$code\"; fi\n"
    );
    vec![
        ("careplane.yaml", project_file),
        ("teams.yaml", team),
        ("values.yaml", values),
        (
            "careplane.schema.json",
            crate::manifest::schema::manifest_schema_text(),
        ),
        (".github/workflows/careplane.yml", workflow),
    ]
}

pub fn run(a: Args) -> u8 {
    let dir = default_dir(a.dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        err(&format!("error: cannot create {}: {e}\n", dir.display()));
        return EXIT_ERROR;
    }
    let project = project_name(&dir, a.project.as_deref());
    let files = files(&project);
    let existing: Vec<&str> = files
        .iter()
        .map(|(f, _)| *f)
        .filter(|f| dir.join(f).symlink_metadata().is_ok())
        .collect();
    if !existing.is_empty() || super::export::has_yaml(&dir) {
        err(&format!(
            "error: {} already holds {}; init writes only into a directory without manifests, so nothing is overwritten\n",
            dir.display(),
            if existing.is_empty() {
                "manifests (*.yaml)".to_owned()
            } else {
                existing.join(", ")
            }
        ));
        return EXIT_ERROR;
    }
    for (name, text) in &files {
        let path = dir.join(name);
        if let Some(parent) = path.parent()
            && let Err(e) = std::fs::create_dir_all(parent)
        {
            err(&format!("error: cannot create {}: {e}\n", parent.display()));
            return EXIT_ERROR;
        }
        if let Err(e) = crate::output::write_file(&path, text) {
            err(&format!("error: cannot write {}: {e}\n", path.display()));
            return EXIT_ERROR;
        }
    }
    let shown = dir.display();
    note(&format!(
        "Started project '{project}' in {shown}: {}.\nNext: careplane validate {shown} && careplane plan {shown}\n",
        files.iter().map(|(f, _)| *f).collect::<Vec<_>>().join(", ")
    ));
    EXIT_OK
}
