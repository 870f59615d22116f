//! The manifest document types: one `spec` struct per kind. These are the single source of
//! the JSON Schema (`careplane schema`) and of typed deserialization, so the editor, the
//! schema check and the semantic check all agree.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::{PractitionerRef, Responsibility, RoleDomain, RoleType};
// The rule types are part of the desired model; the manifests spell them.
pub use crate::model::rule::{
    AddressCondition, AgeRange, CareTeamCondition, Condition, ConsentCondition, ConsentStatus,
    Gender, IdentifierCondition, MaxDeviation, MembershipMode, RouteExpect, RoutingMode,
    RuleTestExpect,
};

pub const API_VERSION: &str = "careplane.dev/v1";

// The kinds careplane knows are rows of the registry, `manifest::kinds::REGISTRY`.

/// Every document's `metadata`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// Stable name of the object: lowercase letters, digits and dashes. Renaming it is
    /// a delete plus a create; change `displayName` instead to rename what staff see.
    #[schemars(regex(pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"))]
    pub name: String,
    /// Free text for reviewers; never sent to the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Per-target overlay: the document only exists for these targets (all when absent).
    /// Two documents of one kind may share a name if their targets do not overlap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub targets: Option<Vec<String>>,
}

/// A staff role (Canvas: Settings → Roles).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RoleSpec {
    /// Internal code, unique in the organisation (e.g. `MD`, `RN`, `MA`).
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.-]{1,32}$"))]
    pub code: String,
    /// Display name.
    #[schemars(length(min = 1))]
    pub display: String,
    /// Public abbreviation shown after staff names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abbreviation: Option<String>,
    pub domain: RoleDomain,
    /// Domain privilege level; the highest a staff member holds decides their abbreviation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub privilege_level: Option<i64>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub role_type: Option<RoleType>,
    /// Auth groups staff receive when the role is given to them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub auth_groups: Vec<String>,
}

/// A coded concept.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Coding {
    /// Code system URI; SNOMED CT when omitted.
    #[serde(default = "snomed")]
    pub system: String,
    #[schemars(length(min = 1))]
    pub code: String,
    #[schemars(length(min = 1))]
    pub display: String,
}

pub fn snomed() -> String {
    "http://snomed.info/sct".into()
}

/// The role a staff member plays in a patient's care (Canvas: Settings → Care Team Roles).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CareTeamRoleSpec {
    pub code: Coding,
}

/// A team: a group of staff that owns responsibilities (Canvas: Settings → Teams).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TeamSpec {
    /// The team's name as staff see it. Defaults to `metadata.name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub display_name: Option<String>,
    /// Responsibilities; each may belong to one team only.
    #[serde(default)]
    pub responsibilities: Vec<Responsibility>,
    /// Staff on the team, by NPI, email or id.
    #[serde(default)]
    pub members: Vec<PractitionerRef>,
}

/// Gives one staff member their roles.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleAssignmentSpec {
    pub practitioner: PractitionerRef,
    /// Names (`metadata.name`) of declared roles.
    #[schemars(length(min = 1))]
    pub roles: Vec<String>,
}

/// A patient group whose members follow a rule over live patient data.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PatientGroupSpec {
    /// The group's name as staff see it. Defaults to `metadata.name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub display_name: Option<String>,
    /// `additive` (default) or `authoritative`.
    #[serde(default)]
    pub mode: MembershipMode,
    /// Refuse to apply when the group would lose more than this share of its members
    /// (default 0.2) unless `--allow-mass-removal` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_removal_share: Option<f64>,
    /// How far this rule's effects recomputed by `apply --plan` may differ from the
    /// reviewed preview before they are held back (default `{share: 0.25, atLeast: 25}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_deviation: Option<MaxDeviation>,
    /// Who belongs. Omitted: only `include`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<Condition>,
    /// Patient ids that always belong.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// Patient ids that never belong (wins over `rule` and `include`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
}

/// Routes open tasks: the first rule (by `order`) whose `match` holds sets the task's
/// team, owner and labels.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RoutingRuleSpec {
    /// Rules are tried in ascending order (then by name); the first match wins. Default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<i64>,
    #[serde(rename = "match")]
    pub matches: RouteMatch,
    pub set: RouteSet,
    /// `mode: once` (default: route a task once, when careplane first sees it open and
    /// unassigned; never revert a person's re-route) or `mode: enforce`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<RoutingOptions>,
    /// How far this rule's effects recomputed by `apply --plan` may differ from the
    /// reviewed preview before they are held back (default `{share: 0.25, atLeast: 25}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_deviation: Option<MaxDeviation>,
}

/// How a routing rule treats tasks it routed before.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RoutingOptions {
    #[serde(default)]
    pub mode: RoutingMode,
}

/// Which open tasks (status `requested`) a rule applies to; every given test must hold.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RouteMatch {
    /// The task's title (`Task.description`), exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A regular expression the title must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description_matches: Option<String>,
    /// A label the task carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The task's patient is in this declared PatientGroup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_group: Option<String>,
}

/// What a matching rule sets.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RouteSet {
    /// A declared Team (`metadata.name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// The assignee.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<PractitionerRef>,
    /// Labels to add (existing labels stay).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add_labels: Vec<String>,
}

/// Puts a staff member on the care teams of the patients a group or rule selects, in a
/// care-team role.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CareTeamAssignmentSpec {
    pub practitioner: PractitionerRef,
    /// A declared CareTeamRole (`metadata.name`).
    pub care_team_role: String,
    /// Which patients: a declared PatientGroup, or a rule (as in PatientGroup).
    pub patients: PatientSelector,
    /// Make them the care team's lead (at most one lead per care team).
    #[serde(default)]
    pub lead: bool,
    /// Also take the role off patients no longer selected, and from anyone else holding
    /// it on a selected patient's team. Default false: careplane only adds, and leaves a
    /// role someone else holds alone.
    #[serde(default)]
    pub authoritative: bool,
    /// Refuse to apply when more than this share of current assignments would be removed
    /// (default 0.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_removal_share: Option<f64>,
    /// How far this rule's effects recomputed by `apply --plan` may differ from the
    /// reviewed preview before they are held back (default `{share: 0.25, atLeast: 25}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_deviation: Option<MaxDeviation>,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PatientSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<Condition>,
}

/// A test of the rules: fixture resources and what the rules must make of them
/// (`careplane test`). Fixtures are test data: they never reach a server.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleTestSpec {
    /// FHIR resources (JSON written as YAML): Patient, Consent, CareTeam, Practitioner, Task.
    pub fixtures: Vec<serde_json::Map<String, serde_json::Value>>,
    pub expect: RuleTestExpect,
}

/// Reserved kinds: accepted by the schema so editors know them; the rules engine is not
/// part of this version, and `validate` says so.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct ReservedSpec(pub serde_json::Map<String, serde_json::Value>);

/// Variable values for one environment: `NAME: value`. A target uses them with
/// `values: <metadata.name>`; manifests use them as `${NAME}`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
/// (Names: letters, digits and underscores, not starting with a digit; the schema says so.)
pub struct ValuesSpec(pub BTreeMap<String, String>);

/// The project file (`careplane.yaml`): project name and targets.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProjectSpec {
    /// Target used when `--target` is not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_target: Option<String>,
    /// Named targets.
    #[serde(default)]
    pub targets: BTreeMap<String, TargetSpec>,
    /// Care-model checks: a level per check, by id or name (`CP101: error`,
    /// `care-team-role-unused: off`). Unlisted checks keep their default severity.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub checks: BTreeMap<String, crate::check::config::Level>,
    /// Who keeps the effects of routing and patient-group rules current between applies:
    /// `plugin` (the rules run inside the target as a plugin careplane installs; the
    /// default on targets that run plugins, Canvas) or `watch` (`careplane watch` /
    /// `reconcile --effects` from outside; the default elsewhere, and the only choice
    /// there). Only one of the two is ever active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effects: Option<EffectsBy>,
}

/// Who keeps the effects of rules current between applies (`effects` in the project file).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "kebab-case")]
pub enum EffectsBy {
    /// A plugin careplane builds from the rules and installs on the target.
    Plugin,
    /// `careplane watch` or `careplane reconcile --effects`, from outside.
    #[default]
    Watch,
}

impl EffectsBy {
    /// The project's choice on a target: what it declares, else `plugin` where the
    /// target runs plugins and `watch` elsewhere. A target without plugins always gets
    /// `watch`.
    pub fn on(declared: Option<EffectsBy>, runs_plugins: bool) -> EffectsBy {
        match (declared, runs_plugins) {
            (_, false) => EffectsBy::Watch,
            (Some(e), true) => e,
            (None, true) => EffectsBy::Plugin,
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            EffectsBy::Plugin => "plugin",
            EffectsBy::Watch => "watch",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TargetType {
    /// A directory of NDJSON files, one per resource type (the embedded default).
    File,
    /// A FHIR R4 server over HTTP.
    Fhir,
    /// A Canvas Medical instance (its FHIR API, with Canvas's rules).
    Canvas,
}

/// Where careplane plans and applies. Secrets are named by environment variable, never
/// written here.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TargetSpec {
    #[serde(rename = "type")]
    pub target_type: TargetType,
    /// `file` targets: the store directory, relative to the manifest directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `fhir` targets: the FHIR base URL. `canvas` targets: optional, derived from
    /// `instance` (`https://fumage-<instance>.canvasmedical.com`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `canvas` targets: the instance (subdomain) name, e.g. `modernfamilypractice`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9-]*$"))]
    pub instance: Option<String>,
    /// `canvas` targets: the EMR host whose `/plugin-io/plugins/` is the plugin API (only
    /// its origin counts), e.g. `https://<instance>.canvasmedical.com`. Default: derived
    /// from `instance`; without `instance`, the token URL's host (OAuth2) or the FHIR URL's
    /// host (bearer token). The target's credentials are sent there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_url: Option<String>,
    /// `canvas` targets: prefix given to a team that `--prune` retires (Canvas has no
    /// DELETE). Default `zz-retired `.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub retire_prefix: Option<String>,
    /// `canvas` targets: every practitioner team in the instance is managed by these
    /// manifests, so `--prune` retires teams no manifest declares. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manage_all_teams: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,
    /// The `Values` document (by `metadata.name`) whose variables this target uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<String>,
    /// `fhir` targets: entries per search page (`_count`, default 100). Larger pages mean
    /// fewer requests where the server allows them. Canvas pages hold at most 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub page_size: Option<u32>,
    /// Maximum concurrent writes during apply (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 32))]
    pub concurrency: Option<u32>,
    /// `fhir` targets: writes per FHIR `batch` Bundle during apply (default 100), where
    /// the server's CapabilityStatement lists `batch`; 1 sends one request per write.
    /// Canvas has no batch: one request per write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub batch_size: Option<u32>,
    /// `fhir` and `canvas` targets: bounds on every request (timeouts, answer size, pages
    /// per search). The defaults suit most servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsSpec>,
}

/// Bounds on a target's HTTP traffic. A limit that fires stops the command with an error
/// that names it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LimitsSpec {
    /// Seconds to open a connection, TLS included (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 600))]
    pub connect_timeout_seconds: Option<u64>,
    /// Seconds to wait for an answer to start, and between two parts of its body
    /// (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub read_timeout_seconds: Option<u64>,
    /// Seconds for one whole request, answer included (default 120). Not retried when it
    /// fires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400))]
    pub request_timeout_seconds: Option<u64>,
    /// The largest answer accepted, in bytes (default 67108864, 64 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1024))]
    pub max_response_bytes: Option<u64>,
    /// The most pages one search may take (default 10000). A server that gives `total`
    /// bounds it further by what that total can need.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_pages: Option<u32>,
}

/// How to authenticate to a `fhir` target.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthSpec {
    /// Environment variable holding a bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_env: Option<String>,
    /// OAuth2 client credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth2: Option<OAuth2Spec>,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OAuth2Spec {
    /// Token endpoint. Required for `fhir` targets; `canvas` targets derive it from
    /// `instance` (`https://<instance>.canvasmedical.com/auth/token/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_url: Option<String>,
    /// Environment variable holding the client id.
    pub client_id_env: String,
    /// Environment variable holding the client secret.
    pub client_secret_env: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}
