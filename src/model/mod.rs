//! The desired state: what the manifests ask for, validated and cross-referenced.
//!
//! Nothing in here knows about FHIR. Every object remembers the manifest position it came
//! from (`Source`), which becomes the *reason* of any change it causes.

pub mod rule;

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A manifest position, `file:line:col`, with the file relative to the manifest directory.
///
/// ```
/// let s = careplane::model::Source { file: "teams.yaml".into(), line: 12, col: 7 };
/// assert_eq!(s.to_string(), "teams.yaml:12:7");
/// ```
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub struct Source {
    pub file: String,
    pub line: u64,
    pub col: u64,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

/// A value and where in the manifests it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located<T> {
    pub value: T,
    pub source: Source,
}

/// How a manifest names a staff member. careplane looks staff up; it never creates them.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum PractitionerRef {
    /// National Provider Identifier (identifier system `http://hl7.org/fhir/sid/us-npi`).
    Npi(String),
    /// Work email (`telecom` with system `email`).
    Email(String),
    /// The server's Practitioner id.
    Id(String),
}

impl fmt::Display for PractitionerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PractitionerRef::Npi(v) => write!(f, "npi {v}"),
            PractitionerRef::Email(v) => write!(f, "email {v}"),
            PractitionerRef::Id(v) => write!(f, "id {v}"),
        }
    }
}

/// Team responsibilities, as Canvas defines them: each drives where automated tasks go.
/// A responsibility belongs to at most one team.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Responsibility {
    CollectSpecimensFromPatient,
    CommunicateDiagnosticResultsToPatient,
    CoordinateReferralsForPatient,
    ProcessRefillRequests,
    ProcessChangeRequests,
    ScheduleLabVisitsForPatient,
    PopulationHealthCampaignOutreach,
    CollectPatientPayments,
    CompleteOpenLabOrders,
    ReviewEraPostingExceptions,
    ReviewCoverages,
}

impl Responsibility {
    pub fn code(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

/// Role domain: administrative staff cannot join patient care teams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RoleDomain {
    Clinical,
    Administrative,
    Hybrid,
}

/// Role type: providers can prescribe and order labs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RoleType {
    NonLicensed,
    Licensed,
    Provider,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Role {
    pub name: String,
    /// The role's internal code (e.g. `MD`, `RN`), unique in the organisation.
    pub code: String,
    pub display: String,
    pub abbreviation: Option<String>,
    pub domain: RoleDomain,
    pub privilege_level: Option<i64>,
    pub role_type: Option<RoleType>,
    pub auth_groups: Vec<String>,
    pub source: Source,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CareTeamRole {
    pub name: String,
    pub system: String,
    pub code: String,
    pub display: String,
    pub source: Source,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Team {
    pub name: String,
    /// The team's name as staff see it; defaults to `name`.
    pub display_name: String,
    pub responsibilities: Vec<Located<Responsibility>>,
    pub members: Vec<Located<PractitionerRef>>,
    pub source: Source,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RoleAssignment {
    pub name: String,
    pub practitioner: Located<PractitionerRef>,
    /// Names of declared roles.
    pub roles: Vec<Located<String>>,
    pub source: Source,
}

/// A patient group with a membership rule.
#[derive(Clone, Debug, PartialEq)]
pub struct PatientGroup {
    pub name: String,
    pub display_name: String,
    pub mode: rule::MembershipMode,
    pub max_removal_share: f64,
    /// How far `apply --plan` lets this rule's recomputed effects drift from the reviewed
    /// preview (`maxDeviation`; the default when the manifest sets none).
    pub max_deviation: rule::MaxDeviation,
    pub rule: Option<rule::Condition>,
    pub include: Vec<Located<String>>,
    pub exclude: Vec<Located<String>>,
    pub source: Source,
}

/// A routing rule for open tasks.
#[derive(Clone, Debug, PartialEq)]
pub struct RoutingRule {
    pub name: String,
    pub order: i64,
    pub description: Option<String>,
    /// A regular expression (validated) over the title.
    pub description_matches: Option<String>,
    pub label: Option<String>,
    pub patient_group: Option<String>,
    /// Declared team (`metadata.name`).
    pub team: Option<String>,
    pub owner: Option<Located<PractitionerRef>>,
    pub add_labels: Vec<String>,
    /// Route once (default) or keep enforcing.
    pub mode: rule::RoutingMode,
    /// How far `apply --plan` lets this rule's recomputed effects drift from the reviewed
    /// preview (`maxDeviation`; the default when the manifest sets none).
    pub max_deviation: rule::MaxDeviation,
    pub source: Source,
}

/// A care-team assignment rule.
#[derive(Clone, Debug, PartialEq)]
pub struct CareTeamAssignment {
    pub name: String,
    pub practitioner: Located<PractitionerRef>,
    /// Declared CareTeamRole name.
    pub role: String,
    pub group: Option<String>,
    pub rule: Option<rule::Condition>,
    pub lead: bool,
    pub authoritative: bool,
    pub max_removal_share: f64,
    /// How far `apply --plan` lets this rule's recomputed effects drift from the reviewed
    /// preview (`maxDeviation`; the default when the manifest sets none).
    pub max_deviation: rule::MaxDeviation,
    pub source: Source,
}

/// A rule test: fixtures and expectations.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleTest {
    pub name: String,
    pub fixtures: Vec<serde_json::Value>,
    pub expect: rule::RuleTestExpect,
    pub source: Source,
}

/// An object of a plain configuration kind: one manifest document that becomes one object
/// on the target, its fields written as the manifest spells them (no references to
/// resolve, no patients). Such kinds are carried generically, so adding one needs no model
/// type and no [`DesiredState`] field: the manifest registry (`manifest::kinds`) builds it
/// and each dialect maps it (or says it does not support the kind).
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigObject {
    /// The manifest kind (`kind:`), e.g. `Location`.
    pub kind: &'static str,
    /// `metadata.name`.
    pub name: String,
    /// The spec's top-level fields (defaults filled in), by their manifest names.
    pub fields: std::collections::BTreeMap<String, serde_json::Value>,
    /// Where each field was written.
    pub field_sources: std::collections::BTreeMap<String, Source>,
    pub source: Source,
}

/// Everything the manifests declare, after validation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DesiredState {
    /// The project name: the ownership tag on everything careplane writes.
    pub project: String,
    pub roles: Vec<Role>,
    pub care_team_roles: Vec<CareTeamRole>,
    pub teams: Vec<Team>,
    pub assignments: Vec<RoleAssignment>,
    pub patient_groups: Vec<PatientGroup>,
    /// Sorted by `order`, then name: the first match wins.
    pub routing_rules: Vec<RoutingRule>,
    /// Tests of the rules (`careplane test`); plans ignore them.
    pub rule_tests: Vec<RuleTest>,
    pub care_team_assignments: Vec<CareTeamAssignment>,
    /// Objects of plain configuration kinds, in manifest order.
    pub config: Vec<ConfigObject>,
    /// The fit rules of a `CareModel` document (the care-model checks' shipped rules
    /// otherwise).
    pub care_model: Option<CareModelDecl>,
    /// The label catalog of a `Labels` document (labels unchecked otherwise).
    pub labels: Option<LabelCatalog>,
}

/// One fit rule: staff fit when at least one of their roles is in one of `domains` (all
/// when empty) and, if `types` is given, of one of `types`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FitRule {
    /// A responsibility code or care-team role name; `*` matches any run of characters.
    #[serde(rename = "match")]
    #[schemars(length(min = 1))]
    pub pattern: String,
    /// Role domains that may hold it (any of them). Empty or absent: every domain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<RoleDomain>,
    /// Role types that may hold it (any of them). Empty or absent: every type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<RoleType>,
    /// Why, in a sentence: findings quote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A `CareModel` document: fit rules for the care-model checks (`crate::check`).
#[derive(Clone, Debug, PartialEq)]
pub struct CareModelDecl {
    pub replace_defaults: bool,
    pub responsibilities: Vec<FitRule>,
    pub care_team_roles: Vec<FitRule>,
    pub source: Source,
}

/// A `Labels` document: the task labels the clinic uses.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelCatalog {
    pub labels: Vec<String>,
    pub source: Source,
}

impl DesiredState {
    /// The deviation a rule's recomputed effects may have from a reviewed preview
    /// (`kind`: the manifest kind, `PatientGroup`, `CareTeamAssignment` or `RoutingRule`).
    pub fn max_deviation(&self, kind: &str, name: &str) -> rule::MaxDeviation {
        let found = match kind {
            "PatientGroup" => self
                .patient_groups
                .iter()
                .find(|g| g.name == name)
                .map(|g| g.max_deviation),
            "CareTeamAssignment" => self
                .care_team_assignments
                .iter()
                .find(|a| a.name == name)
                .map(|a| a.max_deviation),
            "RoutingRule" => self
                .routing_rules
                .iter()
                .find(|r| r.name == name)
                .map(|r| r.max_deviation),
            _ => None,
        };
        found.unwrap_or_default()
    }
    /// Whether the manifests declare rules the Canvas plugin can run (routing or
    /// patient-group rules).
    pub fn has_plugin_rules(&self) -> bool {
        !self.routing_rules.is_empty() || !self.patient_groups.is_empty()
    }
    pub fn role(&self, name: &str) -> Option<&Role> {
        self.roles.iter().find(|r| r.name == name)
    }
}
