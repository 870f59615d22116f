//! Rules as the desired model holds them (and as manifests spell them: these types are
//! also the manifest schema of patient-group rules and rule-test expectations).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::PractitionerRef;

/// How often a routing rule routes a task.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RoutingMode {
    /// Once: a task is routed the first time careplane sees it open and unassigned; a task
    /// someone routed (before or since) is never touched again (the default).
    #[default]
    Once,
    /// Enforce: every open task the rule matches is kept on the rule's routing, so a
    /// person's re-route is undone on the next pass.
    Enforce,
}

/// How far the effects of a rule recomputed at apply time may move from the preview a
/// reviewer saw in a saved plan (`maxDeviation` on PatientGroup, CareTeamAssignment and
/// RoutingRule). A rule whose fresh count (patients to add, or to remove; participants;
/// tasks to route) differs from the reviewed count by more than
/// `max(share × reviewed, atLeast)` has its effects held back by `apply --plan`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MaxDeviation {
    /// Share of the reviewed count (default 0.25).
    #[serde(default = "MaxDeviation::default_share")]
    #[schemars(range(min = 0.0))]
    pub share: f64,
    /// Absolute floor (default 25): a difference this small is always tolerated.
    #[serde(default = "MaxDeviation::default_at_least")]
    pub at_least: u64,
}

impl MaxDeviation {
    pub const DEFAULT: MaxDeviation = MaxDeviation {
        share: 0.25,
        at_least: 25,
    };
    fn default_share() -> f64 {
        Self::DEFAULT.share
    }
    fn default_at_least() -> u64 {
        Self::DEFAULT.at_least
    }
    /// The largest difference from `reviewed` this tolerates.
    pub fn tolerance(&self, reviewed: u64) -> u64 {
        ((self.share * reviewed as f64).floor() as u64).max(self.at_least)
    }
}

impl Default for MaxDeviation {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Who owns a patient group's member list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MembershipMode {
    /// careplane only adds members; it never removes anyone (the safe default).
    #[default]
    Additive,
    /// careplane owns the list: it adds and removes until the list is exactly the rule's
    /// result.
    Authoritative,
}

/// A membership rule. Combine with `all`, `any`, `not`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Condition {
    /// Every condition holds.
    All(Vec<Condition>),
    /// At least one condition holds.
    Any(Vec<Condition>),
    /// The condition does not hold.
    Not(Box<Condition>),
    /// The patient has a consent with this category code (and status, default `active`).
    Consent(ConsentCondition),
    /// The patient has an identifier with this system (and value).
    Identifier(IdentifierCondition),
    /// `Patient.active` is this value.
    Active(bool),
    /// `Patient.gender` is this value.
    Gender(Gender),
    /// Age in whole years today, inclusive bounds.
    Age(AgeRange),
    /// An address in this state.
    Address(AddressCondition),
    /// A member of another declared patient group (by `metadata.name`).
    MemberOf(String),
    /// On an active care team with this staff member (in this care-team role).
    CareTeam(CareTeamCondition),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CareTeamCondition {
    pub practitioner: PractitionerRef,
    /// A declared CareTeamRole (`metadata.name`); any role when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentCondition {
    /// The consent category code (Canvas: the consent coding's code, e.g. `A0001`).
    #[schemars(length(min = 1))]
    pub code: String,
    /// The category system; any when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// Consent status to look for (default `active`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ConsentStatus>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ConsentStatus {
    Draft,
    Proposed,
    Active,
    Rejected,
    Inactive,
    EnteredInError,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentifierCondition {
    #[schemars(length(min = 1))]
    pub system: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Gender {
    Male,
    Female,
    Other,
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgeRange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddressCondition {
    /// State or province (`Address.state`), compared case-insensitively.
    #[schemars(length(min = 1))]
    pub state: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleTestExpect {
    /// PatientGroup name → exactly these fixture patient ids.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub groups: BTreeMap<String, Vec<String>>,
    /// Fixture task id → what routing does to it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub routing: BTreeMap<String, RouteExpect>,
    /// CareTeamAssignment name → exactly the fixture patient ids on whose care teams it
    /// puts its staff member (by its patient group or its rule).
    #[serde(
        default,
        rename = "careTeams",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub care_teams: BTreeMap<String, Vec<String>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteExpect {
    /// The rule that must route the task; `none` for a task no rule routes.
    pub rule: String,
    /// The team it ends up with (a Team `metadata.name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// Its labels afterwards (existing and added), in any order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
}
