//! Stage 1: manifests → desired model.
//!
//! Reads every `*.yaml`/`*.yml` file under a directory, checks each document against the
//! JSON Schema, then checks what a schema cannot (duplicates, cross references, one team
//! per responsibility) and builds the [`DesiredState`]. Every problem is a [`Diagnostic`]
//! naming `file:line:col`; nothing here touches the network, so a manifest error can never
//! reach a server.

pub mod files;
pub mod ignore;
pub mod kinds;
pub mod schema;
pub mod suggest;
pub mod types;
pub mod vars;
pub mod yaml;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::model::{DesiredState, Source};
use types::{Metadata, ProjectSpec, TargetType};
use yaml::{Document, Pos};

/// One problem in the manifests, with where it is and what to do about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub source: Source,
    pub message: String,
    pub help: Option<String>,
}

/// Everything wrong with a manifest directory, plus the file texts for rendering snippets.
#[derive(Debug, thiserror::Error)]
#[error("{} error(s) in the manifests", diagnostics.len())]
pub struct ManifestErrors {
    pub diagnostics: Vec<Diagnostic>,
    pub files: BTreeMap<String, String>,
    /// Files whose documents were skipped as not careplane's, as in [`Manifests::skipped`]:
    /// shown beside the errors, since a skipped file is often why something is missing.
    pub skipped: Vec<String>,
}

/// Errors that stop loading before any document is read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read manifest directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no manifest files (*.yaml, *.yml) found under {0}")]
    Empty(PathBuf),
    #[error("{name}='{value}' is not a size: write a number of bytes, e.g. 8388608 or 8MiB")]
    Limit { name: &'static str, value: String },
    #[error(transparent)]
    Invalid(#[from] ManifestErrors),
}

/// The validated manifests.
#[derive(Clone, Debug)]
pub struct Manifests {
    pub dir: PathBuf,
    pub desired: DesiredState,
    pub project: ProjectSpec,
    /// `sha256:` over every manifest file's path and bytes: a saved plan remembers it.
    pub checksum: String,
    pub files: BTreeMap<String, String>,
    /// Files whose documents were skipped as not careplane's (another `apiVersion`, or
    /// none and no careplane kind): one sentence each, for a note.
    pub skipped: Vec<String>,
}

impl Manifests {
    /// Diagnostics found later (planning) about these manifests, with their texts for
    /// snippets and the files skipped as another tool's.
    pub fn errors(&self, diagnostics: Vec<Diagnostic>) -> ManifestErrors {
        ManifestErrors {
            diagnostics,
            files: self.files.clone(),
            skipped: self.skipped.clone(),
        }
    }
}

/// What decides how manifests read: the target (its `Values`) and `--var`s.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// The target whose `Values` fill `${NAME}` (default: the project's default target).
    pub target: Option<String>,
    /// `--var NAME=VALUE`, strongest first-come-last-wins.
    pub vars: Vec<(String, String)>,
}

/// Load and validate every manifest under `dir`, within the [`files::Limits`] the
/// environment sets (`CAREPLANE_MAX_MANIFEST_BYTES`).
pub fn load(dir: &Path, opts: &LoadOptions) -> Result<Manifests, LoadError> {
    load_with_limits(dir, opts, &files::Limits::from_env()?)
}

/// [`load`] with explicit limits. Only regular files inside `dir` are read (see
/// [`files`]); every entry refused is a diagnostic, and loading stops before any YAML is
/// parsed when there is one.
pub fn load_with_limits(
    dir: &Path,
    opts: &LoadOptions,
    limits: &files::Limits,
) -> Result<Manifests, LoadError> {
    let read = files::read_manifest_dir(dir, limits)?;
    let files = read.files;
    if !read.problems.is_empty() {
        return Err(LoadError::Invalid(ManifestErrors {
            diagnostics: read.problems,
            files,
            skipped: Vec::new(),
        }));
    }
    if files.is_empty() {
        return Err(LoadError::Empty(dir.to_path_buf()));
    }
    let default_project = dir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .map(|n| sanitize_name(&n))
        .unwrap_or_else(|| "careplane".into());
    match build(&files, &default_project, opts) {
        Ok((desired, project, used, skipped)) => Ok(Manifests {
            dir: dir.to_path_buf(),
            desired,
            project,
            checksum: checksum(&files, &used),
            files,
            skipped,
        }),
        Err((diagnostics, skipped)) => Err(LoadError::Invalid(ManifestErrors {
            diagnostics,
            files,
            skipped,
        })),
    }
}

/// `sha256:<hex>` over the manifest files (path, NUL, bytes, NUL), in path order, and the
/// values of the variables they used (so a plan made with other values is refused).
pub fn checksum(files: &BTreeMap<String, String>, used: &BTreeMap<String, String>) -> String {
    let mut h = Sha256::new();
    for (path, text) in files {
        h.update(path.as_bytes());
        h.update([0]);
        h.update(text.as_bytes());
        h.update([0]);
    }
    for (name, value) in used {
        h.update(b"${");
        h.update(name.as_bytes());
        h.update(b"}=");
        h.update(value.as_bytes());
        h.update([0]);
    }
    format!("sha256:{:x}", h.finalize())
}

fn sanitize_name(s: &str) -> String {
    let mut out: String = s
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    out = out.trim_matches('-').to_owned();
    if out.is_empty() {
        "careplane".into()
    } else {
        out
    }
}

/// One parsed document and the file it came from.
struct Doc<'a> {
    file: &'a str,
    doc: Document,
}

impl Doc<'_> {
    fn at(&self, pointer: &str) -> Source {
        self.source(self.doc.pos_of(pointer))
    }
    fn key_at(&self, pointer: &str) -> Source {
        self.source(self.doc.key_pos_of(pointer))
    }
    fn source(&self, pos: Pos) -> Source {
        Source {
            file: self.file.to_owned(),
            line: pos.line,
            col: pos.col,
        }
    }
}

struct Checker {
    diags: Vec<Diagnostic>,
}

impl Checker {
    fn error(&mut self, source: Source, message: impl Into<String>, help: impl Into<String>) {
        let help: String = help.into();
        self.diags.push(Diagnostic {
            source,
            message: message.into(),
            help: (!help.is_empty()).then_some(help),
        });
    }
}

fn schema_help(message: &str) -> String {
    if message.contains("is not one of") {
        "use one of the listed values (`careplane schema` prints them all)".into()
    } else if message.contains("Additional properties") || message.contains("unexpected") {
        "remove the field or fix its spelling; `careplane schema` lists the allowed fields".into()
    } else if message.contains("is a required property") {
        "add the missing field".into()
    } else if message.contains("does not match") {
        "names use lowercase letters, digits and dashes, e.g. `care-coordinators`".into()
    } else {
        "see `careplane schema` for what this field accepts".into()
    }
}

/// Parse, schema-check and cross-check all documents.
type Built = (
    DesiredState,
    ProjectSpec,
    BTreeMap<String, String>,
    Vec<String>,
);

/// The `apiVersion` prefix of careplane's documents.
pub const API_GROUP: &str = "careplane.dev/";

/// A document that is not careplane's: an `apiVersion` of another group (a Kubernetes
/// object, a Helm chart's), or no `apiVersion` and no careplane `kind` (a CI workflow, a
/// compose file). A careplane kind without `apiVersion` stays, for the schema to reject.
fn is_foreign(v: &serde_json::Value) -> bool {
    match v.get("apiVersion") {
        Some(serde_json::Value::String(a)) => {
            // a careplane kind under a misspelt careplane apiVersion is an error, never
            // skipped: a manifest must not vanish (and be pruned) over a typo
            let kind = v.get("kind").and_then(serde_json::Value::as_str);
            let careplane_kind = kind.is_some_and(kinds::is_kind);
            let lookalike = a.to_lowercase().contains("careplane")
                || suggest::closest(a, [concat!("careplane.dev/", "v1")]).is_some();
            let ours = a.starts_with(API_GROUP) || (careplane_kind && lookalike);
            !ours
        }
        Some(_) => false,
        None => {
            let kind = v.get("kind").and_then(serde_json::Value::as_str);
            (v.is_object() || v.is_array()) && !kind.is_some_and(kinds::is_kind)
        }
    }
}

fn build(
    files: &BTreeMap<String, String>,
    default_project: &str,
    opts: &LoadOptions,
) -> Result<Built, (Vec<Diagnostic>, Vec<String>)> {
    let mut ck = Checker { diags: Vec::new() };
    let validators = schema::KindValidators::new();
    let mut docs = Vec::new();
    for (file, text) in files {
        match yaml::parse_documents(text) {
            Ok(parsed) => docs.extend(parsed.into_iter().map(|doc| Doc { file, doc })),
            Err(e) => {
                let pos = e.pos.unwrap_or(Pos { line: 1, col: 1 });
                ck.error(
                    Source {
                        file: file.clone(),
                        line: pos.line,
                        col: pos.col,
                    },
                    format!("invalid YAML: {}", e.message),
                    if e.message.contains("budget") {
                        "the file is larger than careplane reads in one piece: split it into several files"
                    } else {
                        "fix the YAML syntax; each key may appear once per mapping"
                    },
                );
            }
        }
    }

    // Documents of other tools (workflows, Kubernetes objects) are skipped, with a note.
    let mut foreign: BTreeMap<String, usize> = BTreeMap::new();
    docs.retain(|d| {
        let skip = is_foreign(&d.doc.value);
        if skip {
            *foreign.entry(d.file.to_owned()).or_default() += 1;
        }
        !skip
    });
    let skipped: Vec<String> = foreign
        .into_iter()
        .map(|(file, n)| {
            format!("{file}: {n} document(s) that are not careplane manifests (apiVersion is not {API_GROUP}v1)")
        })
        .collect();

    let (used, chosen_target) = expand_variables(&mut ck, &mut docs, opts);

    // Schema first; documents that fail it are not cross-checked (their shape is unknown).
    let mut valid = Vec::new();
    for d in docs {
        let errors = validators.errors(&d.doc.value);
        if errors.is_empty() {
            valid.push(d);
            continue;
        }
        for (pointer, message) in errors {
            let source = match unexpected_field(&message) {
                Some(field) => d.key_at(&format!("{pointer}/{}", field.replace('/', "~1"))),
                None => d.at(&pointer),
            };
            let what = if pointer.is_empty() {
                String::new()
            } else {
                format!("{pointer}: ")
            };
            // an unquoted NPI is a number: say so, instead of the `oneOf` dump
            if message.contains("oneOf")
                && let Some((msg, help)) = suggest::npi_message(d.doc.value.pointer(&pointer))
            {
                ck.error(source, format!("{what}{msg}"), help);
                continue;
            }
            let help = match suggest::did_you_mean(&message) {
                Some(guess) => format!("{guess} If not, {}", schema_help(&message)),
                None => schema_help(&message),
            };
            ck.error(source, format!("{what}{message}"), help);
        }
    }

    let mut out = kinds::Building {
        desired: DesiredState::default(),
        project: None,
    };
    let mut names: HashMap<(String, String), Source> = HashMap::new();
    for d in &valid {
        let kind = d.doc.value["kind"].as_str().unwrap_or_default().to_owned();
        let metadata = match <Metadata as serde::Deserialize>::deserialize(&d.doc.value["metadata"])
        {
            Ok(m) => m,
            Err(e) => {
                ck.error(d.at("/metadata"), e.to_string(), "");
                continue;
            }
        };
        let name_src = d.at("/metadata/name");
        // Per-target overlays: a document that names its targets only exists for those.
        if let Some(only) = &metadata.targets {
            let declared: Vec<String> = valid
                .iter()
                .find(|x| x.doc.value["kind"] == "Project")
                .and_then(|x| x.doc.value.pointer("/spec/targets"))
                .and_then(serde_json::Value::as_object)
                .map(|t| t.keys().cloned().collect())
                .unwrap_or_default();
            for (i, t) in only.iter().enumerate() {
                if !declared.contains(t) {
                    ck.error(
                        d.at(&format!("/metadata/targets/{i}")),
                        format!(
                            "metadata.targets names '{t}', which the project file does not declare"
                        ),
                        if declared.is_empty() {
                            "declare targets in the Project document first".to_owned()
                        } else {
                            format!("use one of: {}", declared.join(", "))
                        },
                    );
                }
            }
            if !chosen_target.as_ref().is_some_and(|t| only.contains(t)) {
                continue;
            }
        }
        if let Some(first) = names.insert((kind.clone(), metadata.name.clone()), name_src.clone()) {
            ck.error(
                name_src.clone(),
                format!(
                    "duplicate {kind} name '{}' (first declared at {first})",
                    metadata.name
                ),
                "give each object of a kind its own metadata.name, or merge the two",
            );
            continue;
        }
        // the schema check let only registered kinds through
        let Some(entry) = kinds::entry(&kind) else {
            continue;
        };
        (entry.build)(&mut kinds::Ctx {
            kind: entry.kind,
            name: metadata.name,
            doc: d,
            ck: &mut ck,
            out: &mut out,
        });
    }
    let kinds::Building {
        mut desired,
        project,
    } = out;
    desired
        .routing_rules
        .sort_by(|a, b| (a.order, &a.name).cmp(&(b.order, &b.name)));
    check_cross_references(&mut ck, &desired);
    let (project, name) = match project {
        Some((spec, name, _)) => (spec, name),
        None => (ProjectSpec::default_spec(), default_project.to_owned()),
    };
    desired.project = name;
    if ck.diags.is_empty() {
        Ok((desired, project, used, skipped))
    } else {
        withhold_environment(&mut ck.diags, &used, opts);
        ck.diags.sort_by(|a, b| a.source.cmp(&b.source));
        ck.diags.dedup();
        Err((ck.diags, skipped))
    }
}

/// Error messages quote values (a schema error quotes the string it rejects), and a value
/// may have come from the environment through `${NAME}`, where CI runners keep secrets. Such
/// values are shown as the `${NAME}` the manifest wrote, never as the environment's text.
fn withhold_environment(
    diags: &mut [Diagnostic],
    used: &BTreeMap<String, String>,
    opts: &LoadOptions,
) {
    let mut from_env: Vec<(&String, &String)> = used
        .iter()
        .filter(|(name, value)| {
            // shorter values cannot be secrets, and replacing them would garble messages
            value.chars().count() >= 4
                && !opts.vars.iter().any(|(k, _)| k == *name)
                && std::env::var(name.as_str()).ok().as_ref() == Some(*value)
        })
        .collect();
    from_env.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
    for d in diags.iter_mut() {
        for (name, value) in &from_env {
            let shown = format!("${{{name}}}");
            d.message = d.message.replace(value.as_str(), &shown);
            if let Some(h) = &mut d.help {
                *h = h.replace(value.as_str(), &shown);
            }
        }
    }
}

/// Environment variables careplane itself reads credentials from.
const CREDENTIAL_ENV: &[&str] = &[
    "CAREPLANE_TOKEN",
    "CAREPLANE_PSEUDONYM_KEY",
    "CANVAS_CLIENT_SECRET",
];

/// Choose the target's `Values`, then expand `${NAME}` in every other document. Returns
/// the variables used and their values.
fn expand_variables(
    ck: &mut Checker,
    docs: &mut [Doc<'_>],
    opts: &LoadOptions,
) -> (BTreeMap<String, String>, Option<String>) {
    let kind_of = |d: &Doc<'_>| {
        d.doc
            .value
            .get("kind")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    let project = docs
        .iter()
        .find(|d| kind_of(d).as_deref() == Some("Project"));
    let targets = project
        .and_then(|d| d.doc.value.pointer("/spec/targets"))
        .and_then(serde_json::Value::as_object);
    let chosen = opts.target.clone().or_else(|| {
        let default = project
            .and_then(|d| d.doc.value.pointer("/spec/defaultTarget"))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned);
        default.or_else(|| {
            targets
                .filter(|t| t.len() == 1)
                .and_then(|t| t.keys().next().cloned())
        })
    });
    let mut values = BTreeMap::new();
    if let (Some(t), Some(p)) = (&chosen, project)
        && let Some(name) = targets
            .and_then(|ts| ts.get(t))
            .and_then(|x| x.get("values"))
            .and_then(serde_json::Value::as_str)
    {
        let found = docs.iter().find(|d| {
            kind_of(d).as_deref() == Some("Values")
                && d.doc
                    .value
                    .pointer("/metadata/name")
                    .and_then(serde_json::Value::as_str)
                    == Some(name)
        });
        match found
            .and_then(|d| d.doc.value.get("spec"))
            .and_then(serde_json::Value::as_object)
        {
            Some(spec) => {
                for (k, v) in spec {
                    values.insert(
                        k.clone(),
                        v.as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| v.to_string()),
                    );
                }
            }
            None => ck.error(
                p.at(&format!("/spec/targets/{t}/values")),
                format!("target '{t}' uses values '{name}', but no Values document has that name"),
                "add a `kind: Values` document with that metadata.name, or fix the name",
            ),
        }
    }
    // Environment variables that hold credentials (every target's bearerTokenEnv and
    // clientSecretEnv, and careplane's own) are never manifest variables: a manifest that
    // could read them could print them in a plan or write them to the server.
    let mut credentials: std::collections::BTreeSet<String> =
        CREDENTIAL_ENV.iter().map(|s| (*s).to_owned()).collect();
    for t in targets.into_iter().flat_map(|ts| ts.values()) {
        for ptr in ["/auth/bearerTokenEnv", "/auth/oauth2/clientSecretEnv"] {
            if let Some(v) = t.pointer(ptr).and_then(serde_json::Value::as_str) {
                credentials.insert(v.to_owned());
            }
        }
    }
    let env = |k: &str| {
        if credentials.contains(k) {
            None
        } else {
            std::env::var(k).ok()
        }
    };
    let resolver = vars::Resolver {
        cli: &opts.vars,
        values,
        env: &env,
    };
    let mut used = BTreeMap::new();
    let where_from = match &chosen {
        Some(t) => format!("for target '{t}'"),
        None => "(no target chosen)".to_owned(),
    };
    for d in docs
        .iter_mut()
        .filter(|d| kind_of(d).as_deref() != Some("Values"))
    {
        // most documents name no variable: nothing to walk
        if !vars::mentions(&d.doc.value) {
            continue;
        }
        let mut errors = Vec::new();
        vars::substitute(&mut d.doc.value, "", &resolver, &mut used, &mut errors);
        // Other targets' settings are not this run's business: a variable only they use
        // need not be defined now (their strings stay as written).
        if kind_of(d).as_deref() == Some("Project") {
            errors.retain(|e| {
                let pointer = match e {
                    vars::VarError::Undefined { pointer, .. }
                    | vars::VarError::Malformed { pointer } => pointer,
                };
                match pointer.strip_prefix("/spec/targets/") {
                    Some(rest) => {
                        chosen.as_deref() == Some(rest.split('/').next().unwrap_or_default())
                    }
                    None => true,
                }
            });
        }
        for e in errors {
            match e {
                vars::VarError::Undefined { pointer, name }
                    if credentials.contains(&name)
                        && !opts.vars.iter().any(|(k, _)| *k == name) =>
                {
                    ck.error(
                        d.at(&pointer),
                        format!("variable ${{{name}}} names an environment variable that holds a credential; manifests may not read credentials"),
                        "credentials reach careplane only through the target's auth settings; use another variable",
                    )
                }
                vars::VarError::Undefined { pointer, name } => ck.error(
                    d.at(&pointer),
                    format!("variable ${{{name}}} is not defined {where_from}"),
                    format!("pass --var {name}=…, set the environment variable {name}, or add it to the Values document the target names"),
                ),
                vars::VarError::Malformed { pointer } => ck.error(
                    d.at(&pointer),
                    "malformed variable reference: write ${NAME} (letters, digits, _), or $${ for a literal ${".to_owned(),
                    "fix the reference",
                ),
            }
        }
    }
    (used, chosen)
}

impl ProjectSpec {
    fn default_spec() -> Self {
        ProjectSpec {
            default_target: None,
            targets: BTreeMap::new(),
            checks: BTreeMap::new(),
            effects: None,
        }
    }
}

/// The property name in a jsonschema "Additional properties are not allowed ('x' was
/// unexpected)" message, to point at the key rather than the enclosing object.
fn unexpected_field(message: &str) -> Option<String> {
    if !message.contains("unexpected") {
        return None;
    }
    let start = message.find('\'')? + 1;
    let end = start + message[start..].find('\'')?;
    Some(message[start..end].to_owned())
}

fn check_project(ck: &mut Checker, d: &Doc<'_>, spec: &ProjectSpec) {
    for key in spec.checks.keys() {
        if let Some((message, help)) = crate::check::config::unknown_key(key) {
            ck.error(d.key_at(&format!("/spec/checks/{key}")), message, help);
        }
    }
    for (name, t) in &spec.targets {
        let at = d.at(&format!("/spec/targets/{name}"));
        match t.target_type {
            TargetType::File if t.path.is_none() => ck.error(
                at,
                format!("target '{name}' has type file but no path"),
                "add `path:` (the store directory, relative to the manifests)",
            ),
            TargetType::Fhir if t.url.is_none() => ck.error(
                at,
                format!("target '{name}' has type fhir but no url"),
                "add `url:` with the FHIR base URL",
            ),
            TargetType::Canvas if t.url.is_none() && t.instance.is_none() => ck.error(
                at,
                format!("target '{name}' has type canvas but neither instance nor url"),
                "add `instance:` (the subdomain of your Canvas instance) or an explicit `url:`",
            ),
            TargetType::Canvas
                if t.instance.is_none()
                    && t.auth.as_ref().and_then(|a| a.oauth2.as_ref()).is_some_and(|o| o.token_url.is_none()) =>
            {
                ck.error(
                    d.at(&format!("/spec/targets/{name}/auth/oauth2")),
                    format!("target '{name}' has an explicit url but no tokenUrl"),
                    "add `tokenUrl:` (https://<instance>.canvasmedical.com/auth/token/) or use `instance:`",
                )
            }
            TargetType::Fhir => {
                let url = t.url.as_deref().unwrap_or_default();
                // a `${VAR}` left in another target's url is checked when that target is used
                if !url.contains("${") && url::Url::parse(url).is_err() {
                    ck.error(
                        d.at(&format!("/spec/targets/{name}/url")),
                        format!("target '{name}': '{url}' is not a URL"),
                        "write the base URL, e.g. https://fhir.example.org/r4",
                    );
                }
            }
            _ => {}
        }
        if t.target_type == TargetType::Fhir
            && let Some(o) = t.auth.as_ref().and_then(|a| a.oauth2.as_ref())
            && o.token_url.is_none()
        {
            ck.error(
                d.at(&format!("/spec/targets/{name}/auth/oauth2")),
                format!("target '{name}': OAuth2 needs a tokenUrl"),
                "add `tokenUrl:` with the token endpoint of the authorization server",
            );
        }
        if t.target_type != TargetType::Canvas
            && (t.instance.is_some()
                || t.plugin_url.is_some()
                || t.retire_prefix.is_some()
                || t.manage_all_teams.is_some())
        {
            ck.error(
                d.at(&format!("/spec/targets/{name}")),
                format!("target '{name}': instance, pluginUrl, retirePrefix and manageAllTeams apply to canvas targets only"),
                "remove them, or set `type: canvas`",
            );
        }
        if t.target_type == TargetType::File
            && let Some(p) = &t.path
            && !p.contains("${")
            && std::path::Path::new(p).components().any(|c| {
                !matches!(
                    c,
                    std::path::Component::Normal(_) | std::path::Component::CurDir
                )
            })
        {
            ck.error(
                d.at(&format!("/spec/targets/{name}/path")),
                format!("target '{name}': the file store path '{p}' leaves the manifest directory"),
                "write a relative path inside the manifest directory, e.g. `path: store` (manifests never make careplane read or write files outside their directory)",
            );
        }
        if t.target_type == TargetType::File && t.limits.is_some() {
            ck.error(
                d.at(&format!("/spec/targets/{name}/limits")),
                format!("target '{name}': limits apply to fhir and canvas targets only"),
                "remove `limits:`; a file store has no network to bound",
            );
        }
        if let Some(auth) = &t.auth
            && auth.bearer_token_env.is_some()
            && auth.oauth2.is_some()
        {
            ck.error(
                d.at(&format!("/spec/targets/{name}/auth")),
                format!("target '{name}' names both a bearer token and OAuth2"),
                "keep one of bearerTokenEnv and oauth2",
            );
        }
    }
    if let Some(default) = &spec.default_target
        && !spec.targets.contains_key(default)
    {
        ck.error(
            d.at("/spec/defaultTarget"),
            format!("defaultTarget '{default}' is not one of the targets"),
            "name a target declared under spec.targets",
        );
    }
}

/// The groups a rule refers to with `memberOf`.
pub fn member_of(c: &types::Condition, out: &mut Vec<String>) {
    use types::Condition as C;
    match c {
        C::All(cs) | C::Any(cs) => cs.iter().for_each(|c| member_of(c, out)),
        C::Not(c) => member_of(c, out),
        C::MemberOf(g) => out.push(g.clone()),
        _ => {}
    }
}

/// The care-team roles a rule refers to.
fn care_team_roles_of(c: &types::Condition, out: &mut Vec<String>) {
    use types::Condition as C;
    match c {
        C::All(cs) | C::Any(cs) => cs.iter().for_each(|c| care_team_roles_of(c, out)),
        C::Not(c) => care_team_roles_of(c, out),
        C::CareTeam(ct) => out.extend(ct.role.clone()),
        _ => {}
    }
}

fn check_patient_groups(ck: &mut Checker, desired: &DesiredState) {
    let groups: HashMap<&str, &crate::model::PatientGroup> = desired
        .patient_groups
        .iter()
        .map(|g| (g.name.as_str(), g))
        .collect();
    let cyclic = memberof_cycles(&groups);
    let mut names: HashMap<&str, &Source> = HashMap::new();
    for g in &desired.patient_groups {
        if let Some(first) = names.insert(&g.display_name, &g.source) {
            ck.error(
                g.source.clone(),
                format!(
                    "patient group name '{}' is already used by the group at {first}",
                    g.display_name
                ),
                "choose another displayName",
            );
        }
        let mut refs = Vec::new();
        let mut roles = Vec::new();
        if let Some(rule) = &g.rule {
            member_of(rule, &mut refs);
            care_team_roles_of(rule, &mut roles);
        }
        for r in roles {
            if !desired.care_team_roles.iter().any(|x| x.name == r) {
                ck.error(
                    g.source.clone(),
                    format!(
                        "patient group '{}' refers to care-team role '{r}', which is not declared",
                        g.name
                    ),
                    "declare it with a `kind: CareTeamRole` document, or fix the name",
                );
            }
        }
        for r in &refs {
            if !groups.contains_key(r.as_str()) {
                ck.error(
                    g.source.clone(),
                    format!("patient group '{}' refers to memberOf '{r}', which is not a declared PatientGroup", g.name),
                    "declare that group, or fix the name",
                );
            }
        }
        // cycles: this group reaches itself through memberOf
        if cyclic.contains(g.name.as_str()) {
            ck.error(
                g.source.clone(),
                format!(
                    "patient group '{}' depends on itself through memberOf",
                    g.name
                ),
                "break the cycle: a group cannot (indirectly) be defined by its own members",
            );
        }
    }
}

/// The patient groups that depend on themselves through `memberOf`: those in a strongly
/// connected component of more than one group, or naming themselves. One pass over the
/// graph (Tarjan's algorithm, iterative), linear in groups plus references.
fn memberof_cycles<'a>(
    groups: &HashMap<&'a str, &crate::model::PatientGroup>,
) -> std::collections::HashSet<&'a str> {
    let names: Vec<&'a str> = {
        let mut n: Vec<&str> = groups.keys().copied().collect();
        n.sort_unstable();
        n
    };
    let index: HashMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let edges: Vec<Vec<usize>> = names
        .iter()
        .map(|n| {
            let mut refs = Vec::new();
            if let Some(rule) = &groups[n].rule {
                member_of(rule, &mut refs);
            }
            refs.iter()
                .filter_map(|r| index.get(r.as_str()).copied())
                .collect()
        })
        .collect();
    const UNSEEN: usize = usize::MAX;
    let mut order = vec![UNSEEN; names.len()];
    let mut low = vec![0; names.len()];
    let mut on_stack = vec![false; names.len()];
    let mut stack: Vec<usize> = Vec::new();
    let mut cyclic = std::collections::HashSet::new();
    let mut next = 0;
    for root in 0..names.len() {
        if order[root] != UNSEEN {
            continue;
        }
        // (node, index of the next edge to follow)
        let mut work = vec![(root, 0usize)];
        order[root] = next;
        low[root] = next;
        next += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(&mut (v, ref mut e)) = work.last_mut() {
            if let Some(&w) = edges[v].get(*e) {
                *e += 1;
                if order[w] == UNSEEN {
                    order[w] = next;
                    low[w] = next;
                    next += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(order[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == order[v] {
                let mut component = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 || edges[v].contains(&v) {
                    cyclic.extend(component.into_iter().map(|w| names[w]));
                }
            }
        }
    }
    cyclic
}

fn check_routing_rules(ck: &mut Checker, desired: &DesiredState) {
    for r in &desired.routing_rules {
        if let Some(t) = &r.team
            && !desired.teams.iter().any(|x| &x.name == t)
        {
            ck.error(
                r.source.clone(),
                format!(
                    "routing rule '{}' routes to team '{t}', which is not declared",
                    r.name
                ),
                "declare the Team, or fix the name",
            );
        }
        if let Some(g) = &r.patient_group
            && !desired.patient_groups.iter().any(|x| &x.name == g)
        {
            ck.error(
                r.source.clone(),
                format!(
                    "routing rule '{}' matches patient group '{g}', which is not declared",
                    r.name
                ),
                "declare the PatientGroup, or fix the name",
            );
        }
    }
}

fn check_rule_tests(ck: &mut Checker, desired: &DesiredState) {
    for t in &desired.rule_tests {
        for g in t.expect.groups.keys() {
            if !desired.patient_groups.iter().any(|x| &x.name == g) {
                ck.error(
                    t.source.clone(),
                    format!("rule test '{}' expects members of '{g}', which is not a declared PatientGroup", t.name),
                    "fix the name",
                );
            }
        }
        for a in t.expect.care_teams.keys() {
            if !desired.care_team_assignments.iter().any(|x| &x.name == a) {
                ck.error(
                    t.source.clone(),
                    format!("rule test '{}' expects the care teams of '{a}', which is not a declared CareTeamAssignment", t.name),
                    "fix the name",
                );
            }
        }
        for e in t.expect.routing.values() {
            if e.rule != "none" && !desired.routing_rules.iter().any(|r| r.name == e.rule) {
                ck.error(
                    t.source.clone(),
                    format!(
                        "rule test '{}' expects routing rule '{}', which is not declared",
                        t.name, e.rule
                    ),
                    "name a declared RoutingRule, or `none`",
                );
            }
        }
    }
}

fn check_cross_references(ck: &mut Checker, desired: &DesiredState) {
    check_rule_tests(ck, desired);
    check_patient_groups(ck, desired);
    check_routing_rules(ck, desired);
    for a in &desired.care_team_assignments {
        if !desired.care_team_roles.iter().any(|r| r.name == a.role) {
            ck.error(
                a.source.clone(),
                format!(
                    "care-team assignment '{}' uses care-team role '{}', which is not declared",
                    a.name, a.role
                ),
                "declare it with a `kind: CareTeamRole` document, or fix the name",
            );
        }
        // an inline rule refers to groups and care-team roles like a PatientGroup's does
        let (mut groups, mut roles) = (Vec::new(), Vec::new());
        if let Some(rule) = &a.rule {
            member_of(rule, &mut groups);
            care_team_roles_of(rule, &mut roles);
        }
        for g in groups {
            if !desired.patient_groups.iter().any(|x| x.name == g) {
                ck.error(
                    a.source.clone(),
                    format!("care-team assignment '{}' refers to memberOf '{g}', which is not a declared PatientGroup", a.name),
                    "declare that group, or fix the name",
                );
            }
        }
        for r in roles {
            if !desired.care_team_roles.iter().any(|x| x.name == r) {
                ck.error(
                    a.source.clone(),
                    format!("care-team assignment '{}' refers to care-team role '{r}', which is not declared", a.name),
                    "declare it with a `kind: CareTeamRole` document, or fix the name",
                );
            }
        }
        if let Some(g) = &a.group
            && !desired.patient_groups.iter().any(|x| &x.name == g)
        {
            ck.error(
                a.source.clone(),
                format!(
                    "care-team assignment '{}' selects patient group '{g}', which is not declared",
                    a.name
                ),
                "declare the PatientGroup, or fix the name",
            );
        }
    }
    let mut codes: HashMap<&str, &Source> = HashMap::new();
    for r in &desired.roles {
        if let Some(first) = codes.insert(&r.code, &r.source) {
            ck.error(
                r.source.clone(),
                format!(
                    "role code '{}' is already used by the role at {first}",
                    r.code
                ),
                "role codes are unique; give this role another code",
            );
        }
    }
    let mut ctr: HashMap<(&str, &str), &Source> = HashMap::new();
    for r in &desired.care_team_roles {
        if let Some(first) = ctr.insert((&r.system, &r.code), &r.source) {
            ck.error(
                r.source.clone(),
                format!(
                    "care-team role code {}|{} is already declared at {first}",
                    r.system, r.code
                ),
                "each care-team role needs its own code",
            );
        }
    }
    let mut owners: HashMap<_, (&str, &Source)> = HashMap::new();
    let mut display: HashMap<&str, &Source> = HashMap::new();
    for t in &desired.teams {
        if let Some(first) = display.insert(&t.display_name, &t.source) {
            ck.error(
                t.source.clone(),
                format!(
                    "team name '{}' is already used by the team at {first}",
                    t.display_name
                ),
                "staff tell teams apart by name; choose another displayName",
            );
        }
        for r in &t.responsibilities {
            match owners.get(&r.value) {
                Some((team, first)) if *team == t.name => ck.error(
                    r.source.clone(),
                    format!(
                        "responsibility {} is listed twice (first at {first})",
                        r.value.code()
                    ),
                    "remove the repeated entry",
                ),
                Some((team, first)) => ck.error(
                    r.source.clone(),
                    format!(
                        "responsibility {} is already claimed by team '{team}' at {first}",
                        r.value.code()
                    ),
                    "a responsibility belongs to one team only: remove it from one of the teams",
                ),
                None => {
                    owners.insert(r.value, (&t.name, &r.source));
                }
            }
        }
        let mut members: HashMap<_, &Source> = HashMap::new();
        for m in &t.members {
            if let Some(first) = members.insert(&m.value, &m.source) {
                ck.error(
                    m.source.clone(),
                    format!(
                        "{} is listed twice in team '{}' (first at {first})",
                        m.value, t.name
                    ),
                    "remove the repeated member",
                );
            }
        }
    }
    let mut staff: HashMap<_, &Source> = HashMap::new();
    for a in &desired.assignments {
        if let Some(first) = staff.insert(&a.practitioner.value, &a.practitioner.source) {
            ck.error(
                a.practitioner.source.clone(),
                format!(
                    "{} already has a RoleAssignment at {first}",
                    a.practitioner.value
                ),
                "list all of a staff member's roles in one RoleAssignment",
            );
        }
        let mut seen: HashMap<&str, &Source> = HashMap::new();
        for r in &a.roles {
            if desired.role(&r.value).is_none() {
                let known: Vec<&str> = desired.roles.iter().map(|r| r.name.as_str()).collect();
                ck.error(
                    r.source.clone(),
                    format!("role '{}' is not declared", r.value),
                    if known.is_empty() {
                        "declare it with a `kind: Role` document".to_owned()
                    } else {
                        format!(
                            "declare a Role named '{}' or use one of: {}",
                            r.value,
                            known.join(", ")
                        )
                    },
                );
            }
            if let Some(first) = seen.insert(&r.value, &r.source) {
                ck.error(
                    r.source.clone(),
                    format!("role '{}' is listed twice (first at {first})", r.value),
                    "remove the repeated role",
                );
            }
        }
    }
}

/// Parse the manifests in memory (for tests and `careplane test`): `files` maps relative
/// paths to YAML text.
pub fn load_from_memory(
    files: BTreeMap<String, String>,
    project: &str,
) -> Result<Manifests, ManifestErrors> {
    match build(&files, project, &LoadOptions::default()) {
        Ok((desired, project, used, skipped)) => Ok(Manifests {
            dir: PathBuf::from("."),
            desired,
            project,
            checksum: checksum(&files, &used),
            files,
            skipped,
        }),
        Err((diagnostics, skipped)) => Err(ManifestErrors {
            diagnostics,
            files,
            skipped,
        }),
    }
}
