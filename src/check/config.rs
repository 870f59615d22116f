//! Per-project configuration of the checks and per-line suppression.
//!
//! - The Project document's `checks:` maps a check (id or name) to a [`Level`]: `error`,
//!   `warning`, `info` or `off`. An unknown key is a manifest error ([`unknown_key`]).
//! - A comment `# careplane:ignore CP102 reason: night team fills up in January` on the
//!   line a finding points at, or on the line just above it, suppresses that finding.
//!   Several checks may be named, separated by commas. A marker without a reason (or
//!   naming no check) suppresses nothing and is itself a finding (CP109).
//!
//! Pure: text in, findings out.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{CHECKS, Finding, Severity, finding};
use crate::model::Source;

/// A check's level in a project: its severity, or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Fails `check` and `validate` (exit 1).
    Error,
    /// Shown; never fails.
    Warning,
    /// Shown by `check` only.
    Info,
    /// Not run.
    Off,
}

impl Level {
    fn severity(self) -> Option<Severity> {
        match self {
            Level::Error => Some(Severity::Error),
            Level::Warning => Some(Severity::Warning),
            Level::Info => Some(Severity::Info),
            Level::Off => None,
        }
    }
}

/// The comment that starts a suppression marker.
pub const MARKER: &str = "careplane:ignore";

/// The check an id or name names (case-insensitive): its id.
pub fn resolve(s: &str) -> Option<&'static str> {
    CHECKS
        .iter()
        .find(|(id, slug, _, _)| s.eq_ignore_ascii_case(id) || s.eq_ignore_ascii_case(slug))
        .map(|c| c.0)
}

/// For a `checks:` key that names no check: the sentence and the help (with the closest
/// id or name, if one is close).
pub fn unknown_key(key: &str) -> Option<(String, String)> {
    if resolve(key).is_some() {
        return None;
    }
    let names = CHECKS.iter().flat_map(|(id, slug, _, _)| [*id, *slug]);
    let guess = crate::manifest::suggest::closest(key, names);
    let help = match guess {
        Some(g) => format!("did you mean '{g}'? `careplane check --help` lists the checks"),
        None => format!(
            "name a check by id or name: {}",
            CHECKS.iter().map(|c| c.0).collect::<Vec<_>>().join(", ")
        ),
    };
    Some((format!("'{key}' in `checks` is not a check"), help))
}

/// Findings with the project's levels applied: `off` drops them, a level replaces the
/// severity. Keys that name no check are ignored here (the manifests refuse them).
pub fn with_levels(findings: Vec<Finding>, levels: &BTreeMap<String, Level>) -> Vec<Finding> {
    let by_id: BTreeMap<&str, Level> = levels
        .iter()
        .filter_map(|(k, l)| resolve(k).map(|id| (id, *l)))
        .collect();
    findings
        .into_iter()
        .filter_map(|mut f| match by_id.get(f.id) {
            None => Some(f),
            Some(l) => l.severity().map(|s| {
                f.severity = s;
                f
            }),
        })
        .collect()
}

/// One `careplane:ignore` marker in a manifest file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Marker {
    pub source: Source,
    /// The ids it names (resolved), and any word that names no check.
    pub checks: Vec<&'static str>,
    pub unknown: Vec<String>,
    pub reason: Option<String>,
}

/// Every marker in `files` (file name → text), by line.
pub fn markers(files: &BTreeMap<String, String>) -> Vec<Marker> {
    let mut out = Vec::new();
    // one search of the whole text first: most files (and 10 MB ones) have no marker
    for (file, text) in files.iter().filter(|(_, text)| text.contains(MARKER)) {
        for (i, line) in text.lines().enumerate() {
            // `# careplane:ignore`, after any `#` a quoted value may hold
            let Some(at) = line.find(MARKER) else {
                continue;
            };
            let Some(hash) = line[..at].trim_end().strip_suffix('#').map(str::len) else {
                continue;
            };
            let rest = &line[at + MARKER.len()..];
            let col = line[..hash].chars().count() as u64 + 1;
            let (names, reason) = match rest.find("reason:") {
                Some(at) => (&rest[..at], Some(rest[at + "reason:".len()..].trim())),
                None => (rest, None),
            };
            let mut checks = Vec::new();
            let mut unknown = Vec::new();
            for w in names
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|w| !w.is_empty())
            {
                match resolve(w) {
                    Some(id) => checks.push(id),
                    None => unknown.push(w.to_owned()),
                }
            }
            out.push(Marker {
                source: Source {
                    file: file.clone(),
                    line: i as u64 + 1,
                    col,
                },
                checks,
                unknown,
                reason: reason.filter(|r| !r.is_empty()).map(str::to_owned),
            });
        }
    }
    out
}

/// Findings without those a marker with a reason suppresses, plus a CP109 finding per
/// marker that names no check or gives no reason.
pub fn suppress(findings: Vec<Finding>, files: &BTreeMap<String, String>) -> Vec<Finding> {
    let markers = markers(files);
    let mut out: Vec<Finding> = findings
        .into_iter()
        .filter(|f| {
            !markers.iter().any(|m| {
                m.reason.is_some()
                    && m.source.file == f.source.file
                    && (m.source.line == f.source.line || m.source.line + 1 == f.source.line)
                    && m.checks.contains(&f.id)
            })
        })
        .collect();
    for m in &markers {
        if m.checks.is_empty() && m.unknown.is_empty() {
            out.push(finding(
                "CP109",
                &m.source,
                format!("`{MARKER}` names no check, so it suppresses nothing"),
                format!("write `# {MARKER} CP102 reason: why this finding is accepted`"),
            ));
        }
        for u in &m.unknown {
            let names = CHECKS.iter().flat_map(|(id, slug, _, _)| [*id, *slug]);
            let hint = crate::manifest::suggest::closest(u, names)
                .map(|g| format!("did you mean '{g}'? "))
                .unwrap_or_default();
            out.push(finding(
                "CP109",
                &m.source,
                format!("`{MARKER}` names '{u}', which is not a check"),
                format!("{hint}name the check by id or name, as `careplane check` prints it"),
            ));
        }
        if !m.checks.is_empty() && m.reason.is_none() {
            out.push(finding(
                "CP109",
                &m.source,
                format!(
                    "`{MARKER} {}` gives no reason, so it suppresses nothing",
                    m.checks.join(",")
                ),
                "add `reason: ...` saying why the clinic accepts this finding (reviewers read it)"
                    .into(),
            ));
        }
    }
    out
}
