//! `careplane export [DIR] --out OUT`: write manifests for what is live on the target.
//! DIR supplies the project file (project name, targets, values); with `--server` and no
//! project file, `--project` names the project.

use std::path::PathBuf;

use super::plan::prepare;
use super::{EXIT_ERROR, EXIT_OK, TargetArgs, default_dir, err, note, print_error};
use crate::manifest::LoadError;
use crate::ops::OpsError;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory with the project file (default: the current directory).
    pub dir: Option<PathBuf>,
    /// Where to write the manifests (must not hold YAML files yet).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Project name when there is no project file (with --server). Default: the one
    /// careplane project whose tags are on the server.
    #[arg(long)]
    pub project: Option<String>,
    /// How to report what was written: a sentence on stderr, or JSON on stdout.
    #[arg(long, value_enum, default_value_t = super::test::Format::Human)]
    pub format: super::test::Format,
}

/// The manifest schema, written beside exported manifests (their modeline points at it).
const SCHEMA_FILE: &str = "careplane.schema.json";

/// `metadata.name` rules: lowercase letters, digits and dashes, starting with a letter or
/// digit, at most 63 characters.
fn is_project_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && !s.ends_with('-')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// The project of the careplane objects on a server without a project file: the code of
/// careplane's ownership tag (`https://careplane.dev/project|<project>`) on its role
/// catalogs and teams, when exactly one project is there. None: "careplane"; several: an
/// error naming them (project names are configuration, never patient data).
async fn infer_project(store: &crate::fhir::Store) -> Result<String, String> {
    use crate::dialect::r4::TAG_SYSTEM;
    use crate::fhir::Query;
    let mut projects = std::collections::BTreeSet::new();
    for q in [
        Query::new("CodeSystem").param("_tag", format!("{TAG_SYSTEM}|")),
        Query::new("Group")
            .param("type", "practitioner")
            .param("_tag", format!("{TAG_SYSTEM}|")),
    ] {
        let found = store.search(&q).await.map_err(|e| {
            format!(
                "cannot find which careplane project the server holds ({e}); name it with --project"
            )
        })?;
        for r in found {
            let tags = r.pointer("/meta/tag").and_then(|t| t.as_array());
            for t in tags.into_iter().flatten() {
                // only a code that is a valid project name: it is written into YAML
                if t["system"] == TAG_SYSTEM
                    && let Some(code) = t["code"].as_str()
                    && is_project_name(code)
                {
                    projects.insert(code.to_owned());
                }
            }
        }
    }
    match projects.len() {
        0 => {
            note(
                "note: the server holds no careplane project yet; exporting as project 'careplane' (name another with --project)\n",
            );
            Ok("careplane".into())
        }
        1 => {
            let p = projects.into_iter().next().unwrap_or_default();
            note(&format!(
                "note: exporting project '{p}', the only careplane project on the server\n"
            ));
            Ok(p)
        }
        _ => Err(format!(
            "the server holds objects of {} careplane projects ({}); name one with --project",
            projects.len(),
            projects.into_iter().collect::<Vec<_>>().join(", ")
        )),
    }
}

/// A kept project file's editor modeline, pointed at the schema written beside the
/// exported manifests (the original's relative path need not exist from OUT).
fn local_modeline(file: &str, text: &str) -> String {
    const MODELINE: &str = "# yaml-language-server: $schema=";
    let Some(rest) = text.strip_prefix(MODELINE) else {
        return text.to_owned();
    };
    let depth = file.matches('/').count();
    let rest = rest.split_once('\n').map_or("", |(_, r)| r);
    format!("{MODELINE}{}{SCHEMA_FILE}\n{rest}", "../".repeat(depth))
}

pub(crate) fn has_yaml(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.ends_with(".yaml") || n.ends_with(".yml")
        })
    })
}

pub async fn run(a: Args) -> u8 {
    let dir = default_dir(a.dir);
    if has_yaml(&a.out) {
        err(&format!(
            "error: {} already holds manifests; export writes into an empty directory so nothing is overwritten\n",
            a.out.display()
        ));
        return EXIT_ERROR;
    }
    let loaded = prepare(&dir, &a.target);
    let (project, target, project_files) = match loaded {
        Ok((m, target)) => {
            // keep the project file and the Values documents as they are
            let keep: Vec<(String, String)> = m
                .files
                .iter()
                .filter(|(_, text)| {
                    let docs = crate::manifest::yaml::parse_documents(text).unwrap_or_default();
                    !docs.is_empty()
                        && docs
                            .iter()
                            .all(|d| matches!(d.value["kind"].as_str(), Some("Project" | "Values")))
                })
                .map(|(f, t)| (f.clone(), local_modeline(f, t)))
                .collect();
            (m.desired.project.clone(), target, keep)
        }
        Err(OpsError::Load(LoadError::Empty(_))) if a.target.server.is_some() => {
            let url = a.target.server.clone().unwrap_or_default();
            let target = match crate::target::server(&url) {
                Ok(t) => t,
                Err(e) => {
                    print_error(&OpsError::Target(e), &dir);
                    return EXIT_ERROR;
                }
            };
            let project = match &a.project {
                Some(p) => p.clone(),
                None => match infer_project(&target.store).await {
                    Ok(p) => p,
                    Err(msg) => {
                        err(&format!("error: {msg}\n"));
                        return EXIT_ERROR;
                    }
                },
            };
            let file = format!(
                "apiVersion: careplane.dev/v1\nkind: Project\nmetadata:\n  name: {project}\nspec:\n  defaultTarget: server\n  targets:\n    server:\n      type: fhir\n      url: {}\n",
                serde_json::to_string(&url).unwrap_or_default()
            );
            (project, target, vec![("careplane.yaml".to_owned(), file)])
        }
        Err(e) => {
            print_error(&e, &dir);
            return EXIT_ERROR;
        }
    };
    let mut files = match crate::ops::export(&target, &project).await {
        Ok(f) => f,
        Err(e) => {
            print_error(&e, &dir);
            return EXIT_ERROR;
        }
    };
    files.extend(project_files);
    // the exported manifests' editor modeline names this file, beside them
    files.insert(
        SCHEMA_FILE.to_owned(),
        crate::manifest::schema::manifest_schema_text(),
    );
    if let Err(e) = std::fs::create_dir_all(&a.out) {
        err(&format!("error: cannot create {}: {e}\n", a.out.display()));
        return EXIT_ERROR;
    }
    for (name, text) in &files {
        let path = a.out.join(name);
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        if let Err(e) = crate::output::write_file(&path, text) {
            err(&format!("error: cannot write {}: {e}\n", path.display()));
            return EXIT_ERROR;
        }
    }
    if a.format == super::test::Format::Json {
        let names: Vec<String> = files.keys().cloned().collect();
        super::out(&crate::render::summary::export(
            &a.out.display().to_string(),
            &target.info.name,
            &names,
        ));
        return EXIT_OK;
    }
    super::note(&format!(
        "Exported {} file(s) to {} from target '{}': plan them against the same target to check that nothing would change; `careplane import` takes over objects careplane does not manage yet.\n",
        files.len(),
        a.out.display(),
        target.info.name
    ));
    EXIT_OK
}
