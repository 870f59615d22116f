//! Fit rules as data: which role domains and types may hold which responsibilities and
//! care-team roles (`kind: CareModel`), and the label catalog (`kind: Labels`).
//!
//! Both kinds are optional. Without a CareModel the shipped rules ([`CareModel::shipped`])
//! apply; a CareModel's rules come first, then the shipped ones, unless it says
//! `replaceDefaults: true`. The first rule whose `match` fits a responsibility (or a
//! care-team role's name) decides; nothing matching means anyone may hold it. Without a
//! Labels document no label is checked.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::{CareModelDecl, Responsibility, Role, RoleDomain, Source};
pub use crate::model::{FitRule, LabelCatalog};

/// `kind: CareModel`: who may hold which responsibilities and care-team roles.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CareModelSpec {
    /// Drop the shipped rules and use only these (default false: these come first, then
    /// the shipped ones, see `careplane check --help`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replace_defaults: bool,
    /// Rules for team responsibilities: `match` is a responsibility code or a pattern
    /// (`*` matches any run of characters, e.g. `REVIEW_*`). Shipped:
    /// COLLECT_SPECIMENS_FROM_PATIENT, COMMUNICATE_DIAGNOSTIC_RESULTS_TO_PATIENT,
    /// PROCESS_REFILL_REQUESTS, PROCESS_CHANGE_REQUESTS and COMPLETE_OPEN_LAB_ORDERS need a
    /// clinical or hybrid role; the others anyone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub responsibilities: Vec<FitRule>,
    /// Rules for care-team roles: `match` is a CareTeamRole's `metadata.name` or a
    /// pattern. Shipped: every care-team role (`*`) needs a clinical or hybrid role
    /// (Canvas: administrative staff cannot join patient care teams).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub care_team_roles: Vec<FitRule>,
}

/// `kind: Labels`: the task labels the clinic uses (Canvas: Settings → Task labels).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabelsSpec {
    /// Every label routing rules may match or add, as staff see it (Canvas ships
    /// `Emergent`, `Urgent`, `Routine`). Without a Labels document labels are not checked.
    #[schemars(length(min = 1))]
    pub labels: Vec<String>,
}

/// The fit rules in force, with where they came from.
#[derive(Clone, Debug, PartialEq)]
pub struct CareModel {
    pub responsibilities: Vec<FitRule>,
    pub care_team_roles: Vec<FitRule>,
    /// The CareModel document, when one is declared.
    pub source: Option<Source>,
    /// How many of the rules (at the front of each list) the document declares; the rest
    /// are shipped.
    pub declared: (usize, usize),
}

impl Default for CareModel {
    fn default() -> Self {
        CareModel::shipped()
    }
}

fn rule(pattern: &str, domains: &[RoleDomain], reason: &str) -> FitRule {
    FitRule {
        pattern: pattern.to_owned(),
        domains: domains.to_vec(),
        types: vec![],
        reason: Some(reason.to_owned()),
    }
}

impl CareModel {
    /// The shipped rules (team-based-care guide; Canvas: administrative staff cannot join
    /// patient care teams).
    pub fn shipped() -> Self {
        use RoleDomain::{Clinical, Hybrid};
        let clinical = [Clinical, Hybrid];
        CareModel {
            responsibilities: vec![
                rule(
                    "COMMUNICATE_DIAGNOSTIC_RESULTS_TO_PATIENT",
                    &clinical,
                    "results are clinical information, so the staff who communicate them hold a clinical or hybrid role",
                ),
                rule(
                    "COLLECT_SPECIMENS_FROM_PATIENT",
                    &clinical,
                    "collecting specimens is clinical work",
                ),
                rule(
                    "PROCESS_*_REQUESTS",
                    &clinical,
                    "refill and change requests are prescription decisions, clinical work",
                ),
                rule(
                    "COMPLETE_OPEN_LAB_ORDERS",
                    &clinical,
                    "changing a lab order is clinical work",
                ),
            ],
            care_team_roles: vec![rule(
                "*",
                &clinical,
                "administrative staff cannot join patient care teams",
            )],
            source: None,
            declared: (0, 0),
        }
    }

    /// The rules a CareModel document declares.
    pub fn from_decl(d: &CareModelDecl) -> Self {
        let spec = CareModelSpec {
            replace_defaults: d.replace_defaults,
            responsibilities: d.responsibilities.clone(),
            care_team_roles: d.care_team_roles.clone(),
        };
        Self::from_spec(&spec, d.source.clone())
    }

    /// The rules a CareModel document sets (declared at `source`).
    pub fn from_spec(spec: &CareModelSpec, source: Source) -> Self {
        let mut m = if spec.replace_defaults {
            CareModel {
                responsibilities: vec![],
                care_team_roles: vec![],
                source: None,
                declared: (0, 0),
            }
        } else {
            CareModel::shipped()
        };
        m.responsibilities
            .splice(0..0, spec.responsibilities.clone());
        m.care_team_roles.splice(0..0, spec.care_team_roles.clone());
        m.source = Some(source);
        m.declared = (spec.responsibilities.len(), spec.care_team_roles.len());
        m
    }

    /// The rule for a responsibility, if any.
    pub fn for_responsibility(&self, r: Responsibility) -> Option<&FitRule> {
        let code = r.code();
        self.responsibilities
            .iter()
            .find(|f| glob(&f.pattern, &code))
    }

    /// The rule for a care-team role (by name), if any.
    pub fn for_care_team_role(&self, name: &str) -> Option<&FitRule> {
        self.care_team_roles.iter().find(|f| glob(&f.pattern, name))
    }

    /// Where a rule comes from, for messages: the CareModel document or the shipped rules.
    pub fn origin(&self, rule: &FitRule) -> String {
        let declared = self.responsibilities[..self.declared.0]
            .iter()
            .chain(&self.care_team_roles[..self.declared.1])
            .any(|r| std::ptr::eq(r, rule));
        match (&self.source, declared) {
            (Some(s), true) => format!("the CareModel at {s}"),
            _ => "careplane's shipped care model".into(),
        }
    }
}

impl FitRule {
    /// Whether one role may hold what this rule is about.
    pub fn admits(&self, role: &Role) -> bool {
        (self.domains.is_empty() || self.domains.contains(&role.domain))
            && (self.types.is_empty() || role.role_type.is_some_and(|t| self.types.contains(&t)))
    }

    /// Who may hold it, in words: "a clinical or hybrid role".
    pub fn wants(&self) -> String {
        let words = |v: Vec<String>| match v.len() {
            0 => String::new(),
            1 => v[0].clone(),
            _ => format!("{} or {}", v[..v.len() - 1].join(", "), v[v.len() - 1]),
        };
        let domains = words(
            self.domains
                .iter()
                .map(|d| {
                    serde_json::to_value(d)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                })
                .collect(),
        );
        let types = words(
            self.types
                .iter()
                .map(|t| {
                    serde_json::to_value(t)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                })
                .collect(),
        );
        match (domains.is_empty(), types.is_empty()) {
            (true, true) => "any role".into(),
            (false, true) => format!("a {domains} role"),
            (true, false) => format!("a role of type {types}"),
            (false, false) => format!("a {domains} role of type {types}"),
        }
    }
}

/// `*` matches any run of characters (none included); everything else matches itself.
pub fn glob(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first) || s.len() < first.len() + last.len() || !s.ends_with(last) {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for p in &parts[1..parts.len() - 1] {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    true
}
