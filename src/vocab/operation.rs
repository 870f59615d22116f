//! What apply does for one change, typed: apply dispatches on this, never on an object
//! kind's name, and never reads it back out of a display field.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The operation behind a change.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Operation {
    /// Write one object's managed fields (the change's `fields`), as its `action` says.
    #[default]
    Object,
    /// Put a participant on (or take them off) the care teams of the selected patients;
    /// the `patients` field's lists (sealed, never in the plan file) say who joins and who
    /// leaves. One read-modify-write per patient.
    CareTeamParticipant(Participant),
    /// Route one open task (team, owner, labels in `fields`) by a routing rule.
    RouteTask {
        /// The routing rule's `metadata.name`.
        rule: String,
        /// Its `order`.
        order: i64,
    },
    /// Install (create) or update the rules plugin through the target's plugin API, enabled:
    /// the package is built from the rules data the change carries sealed (never in a plan
    /// file), with the ids of teams and groups this apply creates filled in.
    Plugin {
        /// The SDK version the package is written for (`sdk_version` in its manifest).
        sdk_version: String,
    },
}

/// The participant of a care-team assignment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Participant {
    /// `Practitioner/<id>`.
    pub practitioner: String,
    pub role: Coding,
    /// The care team's lead for these patients.
    pub lead: bool,
    /// Take the role off anyone else holding it, and off patients no longer selected.
    pub authoritative: bool,
}

/// A coding (`system`, `code`, `display`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Coding {
    pub system: String,
    pub code: String,
    pub display: String,
}
