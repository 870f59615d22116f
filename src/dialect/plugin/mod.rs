//! `careplane plugin build`: the manifests' routing and patient-group rules as a Canvas
//! plugin package (canvas-plugins SDK), pure: manifests + ids resolved from live state in,
//! files out. No code is generated per rule: the package is a fixed, hand-reviewed handler
//! module ([`HANDLER_PY`], `src/dialect/plugin/handler.py`) that interprets a data file
//! ([`DATA_FILE`]) written from the rules.
//!
//! Conditions and settings the handler cannot evaluate inside Canvas are refused here, at
//! their `file:line:col`, never silently dropped.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::manifest::types::{Condition, ConsentStatus};
use crate::manifest::{Diagnostic, ManifestErrors, Manifests, yaml};
use crate::model::{
    DesiredState, PractitionerRef, Source, rule::MembershipMode, rule::RoutingMode,
};

/// The handler module, copied unchanged into every package.
pub const HANDLER_PY: &str = include_str!("handler.py");
/// The canvas SDK version the handler is written and tested against (PyPI `canvas`).
pub const SDK_VERSION: &str = "0.261.0";
/// The rules, as data, next to CANVAS_MANIFEST.json.
pub const DATA_FILE: &str = "careplane_rules.json";
/// The data file's format; the handler refuses any other.
pub const FORMAT: u64 = 1;
/// The plan field that carries the rules data, sealed (never in a plan file: it holds the
/// patient ids of groups' include / exclude lists).
pub const RULES_FIELD: &str = "rules";
/// Where the handler sits inside the package.
pub const HANDLER_MODULE: &str = "handlers/careplane_rules.py";

/// Ids careplane found on the target for its own (managed) objects, by manifest name.
#[derive(Clone, Debug, Default)]
pub struct Resolved {
    /// The target the ids were read from.
    pub target: Option<String>,
    /// Team name → FHIR Group id (Canvas: the SDK's `Team.group_id`).
    pub teams: BTreeMap<String, String>,
    /// PatientGroup name → FHIR Group id.
    pub groups: BTreeMap<String, String>,
}

/// What careplane recorded of the plugin it last installed on a target (apply writes it;
/// the next plan's rule-level diff reads it).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Applied {
    pub plugin: String,
    pub version: String,
    /// The rules as per-field digests ([`fingerprint`]).
    pub rules: Value,
}

/// A plugin package: its name and files (path inside the package → contents).
#[derive(Clone, Debug)]
pub struct Package {
    pub name: String,
    pub files: BTreeMap<String, String>,
    /// The rules data (what [`DATA_FILE`] holds).
    pub rules: Value,
    /// SHA-256 over every file of the package (sorted by path): its content hash.
    pub hash: String,
    pub routing_rules: usize,
    pub group_rules: usize,
    /// Groups and teams left without an id (no target given, or not on it yet).
    pub unresolved: Vec<String>,
    /// The manifest's `plugin_version`.
    pub version: Option<String>,
}

impl Package {
    /// The `plugin_version` its CANVAS_MANIFEST.json carries (it follows the content).
    pub fn rules_version(&self) -> Option<&str> {
        self.version.as_deref()
    }
}

/// The plugin's name (a Python package name, as the SDK needs): `careplane_<project>`.
///
/// ```
/// assert_eq!(careplane::dialect::plugin::plugin_name("Maple-Hollow clinic"), "careplane_maple_hollow_clinic");
/// ```
pub fn plugin_name(project: &str) -> String {
    let mut s = String::from("careplane_");
    let mut last_us = true;
    for c in project.chars() {
        if c.is_ascii_alphanumeric() {
            s.push(c.to_ascii_lowercase());
            last_us = false;
        } else if !last_us {
            s.push('_');
            last_us = true;
        }
    }
    s.trim_end_matches('_').to_owned()
}

/// Finds positions inside the manifest documents (for refusals at `file:line:col`).
struct Positions<'a> {
    files: &'a BTreeMap<String, String>,
}

impl Positions<'_> {
    /// The position of `pointer` inside the document of `kind` named `name` in `at.file`;
    /// the object's own position when the document cannot be found.
    fn of(&self, at: &Source, kind: &str, name: &str, pointer: &str) -> Source {
        let found = self
            .files
            .get(&at.file)
            .and_then(|text| yaml::parse_documents(text).ok())
            .and_then(|docs| {
                docs.into_iter().find(|d| {
                    d.value["kind"] == kind
                        && d.value.pointer("/metadata/name") == Some(&json!(name))
                })
            })
            .map(|d| d.pos_of(pointer));
        match found {
            Some(p) => Source {
                file: at.file.clone(),
                line: p.line,
                col: p.col,
            },
            None => at.clone(),
        }
    }
}

fn refusal(source: Source, message: String, help: &str) -> Diagnostic {
    Diagnostic {
        source,
        message,
        help: Some(help.to_owned()),
    }
}

const CANVAS_ONLY_HELP: &str = "the plugin evaluates rules inside Canvas with the SDK's data models; express the rule with conditions the plugin supports (all, any, not, consent with status active or rejected, identifier, active, age, address, memberOf), or keep the project's rules on `careplane watch` (`effects: watch` in the project file)";

/// Checks one condition; `pointer` is where it sits in its document.
fn check_condition(c: &Condition, pointer: &str, refuse: &mut dyn FnMut(&str, String)) {
    match c {
        Condition::All(cs) => cs
            .iter()
            .enumerate()
            .for_each(|(i, c)| check_condition(c, &format!("{pointer}/all/{i}"), refuse)),
        Condition::Any(cs) => cs
            .iter()
            .enumerate()
            .for_each(|(i, c)| check_condition(c, &format!("{pointer}/any/{i}"), refuse)),
        Condition::Not(c) => check_condition(c, &format!("{pointer}/not"), refuse),
        Condition::Consent(cc) => match cc.status.unwrap_or(ConsentStatus::Active) {
            ConsentStatus::Active | ConsentStatus::Rejected => {}
            other => refuse(
                &format!("{pointer}/consent/status"),
                format!(
                    "a consent condition with status {} cannot run inside Canvas: Canvas records a consent as accepted or rejected only",
                    serde_json::to_value(other).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
                ),
            ),
        },
        Condition::Gender(_) => refuse(
            &format!("{pointer}/gender"),
            "a gender condition cannot run inside Canvas: the SDK's Patient has sex at birth, not the FHIR Patient.gender careplane's rule reads".into(),
        ),
        Condition::CareTeam(_) => refuse(
            &format!("{pointer}/careTeam"),
            "a careTeam condition cannot run inside Canvas yet: the plugin does not resolve staff and care-team roles the way careplane does".into(),
        ),
        Condition::Identifier(_)
        | Condition::Active(_)
        | Condition::Age(_)
        | Condition::Address(_)
        | Condition::MemberOf(_) => {}
    }
}

/// Rust `regex` syntax that Python's `re` reads differently or not at all.
fn regex_incompatibility(re: &str) -> Option<&'static str> {
    let checks: [(&str, &str); 6] = [
        ("\\p", "Unicode classes (\\p{..}) are not in Python's re"),
        ("\\P", "Unicode classes (\\P{..}) are not in Python's re"),
        ("\\z", "\\z is not in Python's re (use \\Z)"),
        ("[[:", "POSIX classes ([[:alpha:]]) are not in Python's re"),
        (
            "(?<",
            "named groups (?<name>..) read as look-behind in Python's re; use (?P<name>..)",
        ),
        ("(?U", "the swap-greed flag U is not in Python's re"),
    ];
    for (needle, why) in checks {
        if re.contains(needle) && !(needle == "(?<" && (re.contains("(?<=") || re.contains("(?<!")))
        {
            return Some(why);
        }
    }
    // Python accepts global inline flags only at the very start.
    let flags = regex::Regex::new(r"\(\?[imsx]+\)").ok()?;
    if flags.find_iter(re).any(|m| m.start() != 0) {
        return Some(
            "inline flags like (?i) not at the very start are an error in Python's re; use (?i:...) or move them to the start",
        );
    }
    None
}

fn owner_json(p: &PractitionerRef) -> Option<Value> {
    match p {
        PractitionerRef::Npi(n) => Some(json!({"npi": n})),
        PractitionerRef::Id(i) => Some(json!({"id": i})),
        PractitionerRef::Email(_) => None,
    }
}

/// The rules data file's contents, or the refusals (rules the handler cannot run).
pub fn rules_data(
    desired: &DesiredState,
    files: &BTreeMap<String, String>,
    resolved: &Resolved,
) -> Result<(Value, Vec<String>), Vec<Diagnostic>> {
    let pos = Positions { files };
    let mut refusals = Vec::new();
    let mut unresolved = Vec::new();
    let mut routing = Vec::new();
    for r in &desired.routing_rules {
        let at = |p: &str| pos.of(&r.source, "RoutingRule", &r.name, p);
        if r.mode == RoutingMode::Enforce {
            refusals.push(refusal(
                at("/spec/routing/mode"),
                format!("routing rule '{}' has mode enforce, which cannot run inside Canvas: the plugin routes a task once, when it is created", r.name),
                "use the default mode (once) for the plugin, or keep the project's rules on `careplane watch` (`effects: watch` in the project file)",
            ));
        }
        let mut m = serde_json::Map::new();
        if let Some(t) = &r.description {
            m.insert("title".into(), json!(t));
        }
        if let Some(re) = &r.description_matches {
            if let Some(why) = regex_incompatibility(re) {
                refusals.push(refusal(
                    at("/spec/match/descriptionMatches"),
                    format!("routing rule '{}': its regular expression cannot run the same inside Canvas: {why}", r.name),
                    "the plugin matches titles with Python's re.search; write the expression in the syntax both share",
                ));
            }
            m.insert("titleMatches".into(), json!(re));
        }
        if let Some(l) = &r.label {
            m.insert("label".into(), json!(l));
        }
        if let Some(g) = &r.patient_group {
            m.insert("patientGroup".into(), json!(g));
        }
        let mut set = serde_json::Map::new();
        if let Some(team) = &r.team {
            let display = desired
                .teams
                .iter()
                .find(|t| &t.name == team)
                .map(|t| t.display_name.clone())
                .unwrap_or_else(|| team.clone());
            let id = resolved.teams.get(team).cloned();
            if id.is_none() && !unresolved.contains(&format!("team {team}")) {
                unresolved.push(format!("team {team}"));
            }
            set.insert(
                "team".into(),
                json!({"name": team, "displayName": display, "groupId": id}),
            );
        }
        if let Some(owner) = &r.owner {
            match owner_json(&owner.value) {
                Some(o) => {
                    set.insert("owner".into(), o);
                }
                None => refusals.push(refusal(
                    owner.source.clone(),
                    format!("routing rule '{}': an owner named by email cannot be looked up inside Canvas", r.name),
                    "name the owner by npi or id for the plugin",
                )),
            }
        }
        if !r.add_labels.is_empty() {
            set.insert("addLabels".into(), json!(r.add_labels));
        }
        routing.push(json!({
            "name": r.name,
            "order": r.order,
            "source": r.source.to_string(),
            "match": m,
            "set": set,
        }));
    }
    let mut groups = Vec::new();
    for g in &desired.patient_groups {
        if let Some(rule) = &g.rule {
            let mut refuse = |p: &str, msg: String| {
                refusals.push(refusal(
                    pos.of(&g.source, "PatientGroup", &g.name, p),
                    format!("patient group '{}': {msg}", g.name),
                    CANVAS_ONLY_HELP,
                ))
            };
            check_condition(rule, "/spec/rule", &mut refuse);
        }
        let id = resolved.groups.get(&g.name).cloned();
        if id.is_none() {
            unresolved.push(format!("patient group {}", g.name));
        }
        groups.push(json!({
            "name": g.name,
            "displayName": g.display_name,
            "groupId": id,
            "mode": match g.mode { MembershipMode::Additive => "additive", MembershipMode::Authoritative => "authoritative" },
            "maxRemovalShare": g.max_removal_share,
            "rule": g.rule,
            "include": g.include.iter().map(|i| i.value.clone()).collect::<Vec<_>>(),
            "exclude": g.exclude.iter().map(|i| i.value.clone()).collect::<Vec<_>>(),
            "source": g.source.to_string(),
        }));
    }
    if !refusals.is_empty() {
        refusals.sort_by(|a, b| a.source.cmp(&b.source));
        return Err(refusals);
    }
    Ok((
        json!({
            "format": FORMAT,
            "project": desired.project,
            "target": resolved.target,
            "routing": routing,
            "groups": groups,
        }),
        unresolved,
    ))
}

/// JSON the SDK's file reader (`render_to_string`, a Django template engine) passes through
/// unchanged: braces and `%`/`#` inside strings are written as `\u` escapes, so no `{{`,
/// `{%` or `{#` can appear (structural braces are never followed by those).
pub fn template_safe_json(v: &Value) -> String {
    let text = serde_json::to_string_pretty(v).unwrap_or_default();
    let mut out = String::with_capacity(text.len());
    let (mut in_str, mut escaped) = (false, false);
    for c in text.chars() {
        if in_str {
            if escaped {
                escaped = false;
                out.push(c);
                continue;
            }
            match c {
                '\\' => {
                    escaped = true;
                    out.push(c);
                }
                '"' => {
                    in_str = false;
                    out.push(c);
                }
                '{' => out.push_str("\\u007b"),
                '}' => out.push_str("\\u007d"),
                '%' => out.push_str("\\u0025"),
                '#' => out.push_str("\\u0023"),
                _ => out.push(c),
            }
        } else {
            if c == '"' {
                in_str = true;
            }
            out.push(c);
        }
    }
    out.push('\n');
    out
}

fn readme(name: &str, project: &str, routing: usize, groups: usize) -> String {
    format!(
        "# {name}\n\nGenerated by `careplane plugin build` from the manifests of project `{project}`; do not edit: \
change the manifests and build again.\n\n\
- `handlers/careplane_rules.py`: careplane's fixed rule interpreter (the same file in every build).\n\
- `careplane_rules.json`: the rules, as data ({routing} routing rule(s), {groups} patient group(s)).\n\n\
Routing runs on TASK_CREATED only. Patient groups are kept on patient, consent, identifier \
and address events, for groups whose id was resolved from careplane's own groups.\n"
    )
}

/// Builds the package from loaded manifests and the ids resolved from the target.
pub fn build(m: &Manifests, resolved: &Resolved) -> Result<Package, ManifestErrors> {
    let desired = &m.desired;
    let (rules, unresolved) = rules_data(desired, &m.files, resolved).map_err(|d| m.errors(d))?;
    match package_from_rules(&desired.project, rules, unresolved) {
        Some(p) => Ok(p),
        None => Err(ManifestErrors {
            diagnostics: vec![Diagnostic {
                source: Source {
                    file: "careplane.yaml".into(),
                    line: 1,
                    col: 1,
                },
                message:
                    "nothing to build: the manifests declare no RoutingRule and no PatientGroup"
                        .into(),
                help: Some("the plugin carries routing and patient-group rules only".into()),
            }],
            files: m.files.clone(),
            skipped: m.skipped.clone(),
        }),
    }
}

/// The package for a rules data file (what [`rules_data`] makes): everything else in it
/// (handler, manifest, README) follows from the data and the project's name. `None` when
/// the data holds no rule.
pub fn package_from_rules(project: &str, rules: Value, unresolved: Vec<String>) -> Option<Package> {
    let name = plugin_name(project);
    let count = |k: &str| rules[k].as_array().map_or(0, Vec::len);
    let (routing, group_rules) = (count("routing"), count("groups"));
    let mut handlers = Vec::new();
    if routing > 0 {
        handlers.push(json!({
            "class": format!("{name}.handlers.careplane_rules:RouteNewTask"),
            "description": "careplane routing rules: routes a task when it is created (TASK_CREATED only)",
        }));
    }
    if group_rules > 0 {
        handlers.push(json!({
            "class": format!("{name}.handlers.careplane_rules:MaintainPatientGroups"),
            "description": "careplane patient-group rules: adds or deactivates the event's patient in careplane's groups",
        }));
    }
    if handlers.is_empty() {
        return None;
    }
    let mut files = BTreeMap::new();
    files.insert(DATA_FILE.to_owned(), template_safe_json(&rules));
    files.insert(HANDLER_MODULE.to_owned(), HANDLER_PY.to_owned());
    files.insert("handlers/__init__.py".to_owned(), String::new());
    files.insert("__init__.py".to_owned(), String::new());
    files.insert(
        "README.md".to_owned(),
        readme(&name, project, routing, group_rules),
    );
    // The version follows the content, so an update is visible on the instance.
    let content = content_hash(&files);
    let version = format!("1.0.0+{}", &content[..12]);
    let manifest = json!({
        "sdk_version": SDK_VERSION,
        "plugin_version": version,
        "name": name,
        "description": format!("careplane rules of project {project} (generated by careplane plugin build; do not edit)"),
        "components": {
            "handlers": handlers,
            "commands": [],
            "content": [],
            "effects": [],
            "views": [],
        },
        "variables": [],
        "tags": {},
        "references": [],
        "license": "",
        "diagram": false,
        "readme": "./README.md",
    });
    files.insert(
        "CANVAS_MANIFEST.json".to_owned(),
        format!(
            "{}\n",
            serde_json::to_string_pretty(&manifest).unwrap_or_default()
        ),
    );
    Some(Package {
        hash: content_hash(&files),
        name,
        files,
        rules,
        routing_rules: routing,
        group_rules,
        unresolved,
        version: Some(version),
    })
}

/// The ids of the teams and patient groups the manifests declare, among observed objects,
/// matched exactly as plan matches them (the kind's identity: the manifest name careplane
/// recorded, or the name the server shows).
pub fn resolve_ids(
    desired: &DesiredState,
    objects: &[crate::vocab::ObservedObject],
    caps: &crate::vocab::Capabilities,
    target: &str,
) -> Resolved {
    use crate::vocab::{Identity, ObjectKind};
    let find = |kind: ObjectKind, name: &str, shown: &str| {
        let identity = caps.of(kind).map(|c| c.identity);
        objects
            .iter()
            .find(|o| {
                o.kind == kind
                    && match identity {
                        Some(Identity::ManifestName) => o.name.as_deref() == Some(name),
                        _ => o.natural_key.as_deref() == Some(shown),
                    }
            })
            .map(|o| o.id.clone())
    };
    let mut r = Resolved {
        target: Some(target.to_owned()),
        ..Resolved::default()
    };
    for t in &desired.teams {
        if let Some(id) = find(ObjectKind::Team, &t.name, &t.display_name) {
            r.teams.insert(t.name.clone(), id);
        }
    }
    for g in &desired.patient_groups {
        if let Some(id) = find(ObjectKind::PatientGroup, &g.name, &g.display_name) {
            r.groups.insert(g.name.clone(), id);
        }
    }
    r
}

/// Fills the ids the rules data has none for (teams and groups an apply just created), by
/// manifest name. Returns how many were filled.
pub fn fill_ids(
    rules: &mut Value,
    teams: &BTreeMap<String, String>,
    groups: &BTreeMap<String, String>,
) -> usize {
    let mut n = 0;
    for r in rules["routing"].as_array_mut().into_iter().flatten() {
        let t = &mut r["set"]["team"];
        if t.is_object()
            && t["groupId"].is_null()
            && let Some(id) = t["name"].as_str().and_then(|name| teams.get(name))
        {
            t["groupId"] = json!(id);
            n += 1;
        }
    }
    for g in rules["groups"].as_array_mut().into_iter().flatten() {
        if g["groupId"].is_null()
            && let Some(id) = g["name"].as_str().and_then(|name| groups.get(name))
        {
            g["groupId"] = json!(id);
            n += 1;
        }
    }
    n
}

/// The teams and patient groups the rules data still has no id for, by manifest name
/// (each once, in the data's order): a team a routing rule sets, a group a group rule keeps.
pub fn missing_ids(rules: &Value) -> Vec<(crate::vocab::ObjectKind, String)> {
    use crate::vocab::ObjectKind;
    let mut out: Vec<(ObjectKind, String)> = Vec::new();
    let mut push = |kind, name: Option<&str>| {
        if let Some(name) = name
            && !out.iter().any(|(k, n)| *k == kind && n == name)
        {
            out.push((kind, name.to_owned()));
        }
    };
    for r in rules["routing"].as_array().into_iter().flatten() {
        let t = &r["set"]["team"];
        if t.is_object() && t["groupId"].is_null() {
            push(ObjectKind::Team, t["name"].as_str());
        }
    }
    for g in rules["groups"].as_array().into_iter().flatten() {
        if g["groupId"].is_null() {
            push(ObjectKind::PatientGroup, g["name"].as_str());
        }
    }
    out
}

/// SHA-256 over the files, sorted by path (path, NUL, contents, NUL).
pub fn content_hash(files: &BTreeMap<String, String>) -> String {
    let mut h = Sha256::new();
    for (path, text) in files {
        h.update(path.as_bytes());
        h.update([0]);
        h.update(text.as_bytes());
        h.update([0]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

pub mod archive;
pub mod live;

#[cfg(test)]
mod tests;

/// How one rule differs between two data files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuleChange {
    Added {
        what: &'static str,
        name: String,
    },
    Removed {
        what: &'static str,
        name: String,
    },
    /// The names of the fields that differ (never their values: include and exclude hold
    /// patient ids).
    Changed {
        what: &'static str,
        name: String,
        fields: Vec<String>,
    },
}

impl std::fmt::Display for RuleChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RuleChange::Added { what, name } => write!(f, "+ {what} {name}"),
            RuleChange::Removed { what, name } => write!(f, "- {what} {name}"),
            RuleChange::Changed { what, name, fields } => {
                write!(f, "~ {what} {name}: {}", fields.join(", "))
            }
        }
    }
}

/// Leaf paths (`set.addLabels`, `rule`) where two rule objects differ; `source` (a
/// manifest position) is not a difference of the rule.
fn changed_fields(old: &Value, new: &Value, prefix: &str, out: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) if prefix.matches('.').count() < 1 => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                if prefix.is_empty() && k == "source" {
                    continue;
                }
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                let (x, y) = (
                    a.get(k).unwrap_or(&Value::Null),
                    b.get(k).unwrap_or(&Value::Null),
                );
                if x != y {
                    if prefix.is_empty() && matches!((x, y), (Value::Object(_), Value::Object(_))) {
                        changed_fields(x, y, &path, out);
                    } else {
                        out.push(path);
                    }
                }
            }
        }
        _ if old != new => out.push(prefix.to_owned()),
        _ => {}
    }
}

/// The rules data with every value replaced by a digest of it (one level into `match` and
/// `set`), so [`rule_diff`] of two fingerprints names the same rules and fields as of the
/// data itself, while a recorded fingerprint holds no patient id, regex or label.
pub fn fingerprint(rules: &Value) -> Value {
    let digest = |v: &Value| -> Value {
        let h = Sha256::digest(v.to_string().as_bytes());
        json!(
            h.iter()
                .take(8)
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        )
    };
    let mut out = serde_json::Map::new();
    for key in ["routing", "groups"] {
        let rules: Vec<Value> = rules[key]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                let mut m = serde_json::Map::new();
                for (k, v) in r.as_object().into_iter().flatten() {
                    match (k.as_str(), v) {
                        ("source", _) => {}
                        ("name", _) => {
                            m.insert(k.clone(), v.clone());
                        }
                        (_, Value::Object(o)) => {
                            m.insert(
                                k.clone(),
                                Value::Object(
                                    o.iter().map(|(sk, sv)| (sk.clone(), digest(sv))).collect(),
                                ),
                            );
                        }
                        _ => {
                            m.insert(k.clone(), digest(v));
                        }
                    }
                }
                Value::Object(m)
            })
            .collect();
        out.insert(key.into(), Value::Array(rules));
    }
    Value::Object(out)
}

/// The rule-level difference between a previous data file and a new one.
pub fn rule_diff(old: &Value, new: &Value) -> Vec<RuleChange> {
    let mut out = Vec::new();
    for (key, what) in [("routing", "routing rule"), ("groups", "patient group")] {
        let named = |v: &Value| -> Vec<(String, Value)> {
            v[key]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| (r["name"].as_str().unwrap_or_default().to_owned(), r.clone()))
                .collect()
        };
        let (before, after) = (named(old), named(new));
        for (name, r) in &after {
            match before.iter().find(|(n, _)| n == name) {
                None => out.push(RuleChange::Added {
                    what,
                    name: name.clone(),
                }),
                Some((_, o)) => {
                    let mut fields = Vec::new();
                    changed_fields(o, r, "", &mut fields);
                    if !fields.is_empty() {
                        out.push(RuleChange::Changed {
                            what,
                            name: name.clone(),
                            fields,
                        });
                    }
                }
            }
        }
        for (name, _) in &before {
            if !after.iter().any(|(n, _)| n == name) {
                out.push(RuleChange::Removed {
                    what,
                    name: name.clone(),
                });
            }
        }
    }
    out
}
